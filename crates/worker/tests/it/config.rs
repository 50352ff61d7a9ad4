//! The worker configuration: the example file, defaults, every rejection,
//! environment overrides, redaction, and hostile input.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use taskline::Jitter;
use taskline_worker::config::{
    BackoffConfig, Config, ConfigError, HandlerKind, LogFormat, QueueConfig, RetentionConfig,
    format_duration, mask_url,
};
use tempfile::NamedTempFile;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/worker.toml")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A temporary `.toml` file holding `text`.
fn file_with(text: impl AsRef<[u8]>) -> NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
    file.write_all(text.as_ref()).expect("write temp file");
    file
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Loads `text` from a file with `vars` as the environment, expecting an
/// error; checks that the error names the file.
fn load_err(text: &str, vars: &[(&str, &str)]) -> ConfigError {
    let file = file_with(text);
    let err = Config::load_with_env(file.path(), env(vars)).expect_err("the configuration must be rejected");
    let name = file.path().display().to_string();
    assert_eq!(err.file, name, "{err}");
    assert!(err.to_string().starts_with(&format!("{name}: {}: ", err.field)), "{err}");
    err
}

fn load_ok(text: &str, vars: &[(&str, &str)]) -> Config {
    let file = file_with(text);
    Config::load_with_env(file.path(), env(vars)).unwrap_or_else(|e| panic!("{e}"))
}

const QUEUE: &str = "[queues.q]\n";

// ---------------------------------------------------------------------------
// The example and the defaults

#[test]
fn the_example_file_loads_and_validates() {
    let config = Config::load_with_env(&example_path(), HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    config.validate().expect("validate again");
    assert!(config.queues.len() >= 2, "the example shows several queues");
    assert!(config.queues.values().any(|q| q.strict), "the example shows a strict queue");
    assert!(config.handlers.values().any(|h| h.kind == HandlerKind::Simulate));
    // Loading with the real process environment works too (a CI runner may
    // set unrelated TASKLINE_* variables such as TASKLINE_REDIS_SERVER).
    Config::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_example_file_shows_every_field() {
    let text = std::fs::read_to_string(example_path()).expect("read the example");
    let fields = [
        "url",
        "prefix",
        "response_timeout",
        "connection_timeout",
        "id",
        "concurrency",
        "lease",
        "heartbeat",
        "shutdown_timeout",
        "reap_interval",
        "idle_wait",
        "claim_batch",
        "max_payload_bytes",
        "events_max_len",
        "log_format",
        "log_payloads",
        "version_retry_delay",
        "max_version_retries",
        "weight",
        "strict",
        "max_attempts",
        "backoff",
        "initial",
        "factor",
        "max",
        "jitter",
        "timeout",
        "retention",
        "keep_last",
        "max_age",
        "queue",
        "kind",
        "max_version",
    ];
    for field in fields {
        let shown = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{field} ="))
                || l.contains(&format!(" {field} = "))
                || l.contains(&format!("{{ {field} = "))
        });
        assert!(shown, "config/worker.toml does not show the field {field}");
    }
}

#[test]
fn a_minimal_file_gets_every_default() {
    let config = Config::from_toml_str("[queues.default]\n").unwrap_or_else(|e| panic!("{e}"));
    let mut want = Config::default();
    want.queues.insert("default".into(), QueueConfig::default());
    assert_eq!(config, want);

    let r = &config.redis;
    assert_eq!(r.url, "redis://127.0.0.1:6379");
    assert_eq!(r.prefix, "taskline");
    assert_eq!((r.response_timeout, r.connection_timeout), (secs(5), secs(5)));

    let w = &config.worker;
    assert_eq!(w.id, None);
    assert_eq!(w.concurrency, 50);
    assert_eq!(w.lease, secs(30));
    assert_eq!(w.heartbeat, None);
    assert_eq!(w.heartbeat_interval(), secs(10));
    assert_eq!(w.shutdown_timeout, secs(30));
    assert_eq!(w.reap_interval, secs(15));
    assert_eq!(w.idle_wait, secs(5));
    assert_eq!(w.claim_batch, 10);
    assert_eq!(w.max_payload_bytes, 524_288);
    assert_eq!(w.events_max_len, 10_000);
    assert_eq!(w.log_format, LogFormat::Text);
    assert!(!w.log_payloads);
    assert_eq!(w.version_retry_delay, secs(30));
    assert_eq!(w.max_version_retries, 10);

    let q = &config.queues["default"];
    assert_eq!((q.weight, q.strict, q.concurrency, q.max_attempts, q.timeout), (1, false, 10, 5, None));
    let b = &q.backoff;
    assert_eq!((b.initial, b.factor, b.max, b.jitter), (secs(1), 2.0, secs(300), Jitter::Equal));
    assert_eq!(b.to_backoff(), taskline::Backoff::default());
    assert_eq!((q.retention.keep_last, q.retention.max_age), (1000, Some(secs(24 * 3600))));
    assert_eq!(q.retention.to_retention(), taskline::Retention::default());
    assert!(config.handlers.is_empty());
}

#[test]
fn fields_are_read_and_converted() {
    let config = Config::from_toml_str(
        r#"
        [worker]
        id = "worker-7"
        log_format = "json"
        heartbeat = "2s"
        [queues.emails]
        timeout = "1h30m"
        backoff = { initial = "250ms", factor = 3, max = "1m", jitter = "full" }
        retention = { keep_last = 0, max_age = "none" }
        [queues."billing.v2"]
        strict = true
        [handlers."email.send"]
        queue = "emails"
        kind = "simulate"
        timeout = "10s"
        max_version = 2
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.worker.id.as_deref(), Some("worker-7"));
    assert_eq!(config.worker.log_format, LogFormat::Json);
    assert_eq!(config.worker.heartbeat_interval(), secs(2));
    let q = &config.queues["emails"];
    assert_eq!(q.timeout, Some(secs(5400)));
    assert_eq!(
        q.backoff.to_backoff(),
        taskline::Backoff {
            initial: Duration::from_millis(250),
            factor: 3.0,
            max: secs(60),
            jitter: Jitter::Full
        }
    );
    assert_eq!(q.retention, RetentionConfig { keep_last: 0, max_age: None });
    assert!(config.queues["billing.v2"].strict);
    let h = &config.handlers["email.send"];
    assert_eq!(
        (h.queue.as_str(), h.kind, h.timeout, h.max_version),
        ("emails", HandlerKind::Simulate, Some(secs(10)), Some(2))
    );
}

#[test]
fn the_shortest_lease_is_one_second() {
    let config =
        Config::from_toml_str("[worker]\nlease = \"1s\"\n[queues.q]").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.worker.heartbeat_interval(),
        Duration::from_millis(333) + Duration::from_nanos(333_333)
    );
}

#[test]
fn every_accepted_redis_scheme() {
    for url in
        ["redis://h:6379/0", "rediss://h:6380", "redis+unix:///run/redis.sock", "unix:///run/redis.sock"]
    {
        let config =
            Config::from_toml_str(&format!("redis.url = {url:?}\n{QUEUE}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.redis.url, url);
    }
}

// ---------------------------------------------------------------------------
// Rejections

#[test]
fn invalid_values_are_rejected_naming_the_file_and_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("[queues.q]\nweight = 0", "queues.q.weight", "at least 1"),
        ("[queues.q]\nconcurrency = 0", "queues.q.concurrency", "at least 1"),
        ("[worker]\nconcurrency = 0\n[queues.q]", "worker.concurrency", "at least 1"),
        ("[worker]\nclaim_batch = 0\n[queues.q]", "worker.claim_batch", "at least 1"),
        ("[queues.q]\nmax_attempts = 0", "queues.q.max_attempts", "at least 1"),
        ("[queues.q]\nbackoff = { factor = 0.5 }", "queues.q.backoff.factor", ">= 1.0"),
        ("[queues.q]\nbackoff = { factor = nan }", "queues.q.backoff.factor", ">= 1.0"),
        (
            "[queues.q.backoff]\ninitial = \"10s\"\nmax = \"5s\"",
            "queues.q.backoff.max",
            "below backoff.initial",
        ),
        ("[worker]\nheartbeat = \"30s\"\n[queues.q]", "worker.heartbeat", "shorter than worker.lease"),
        ("[worker]\nlease = \"5s\"\nheartbeat = \"6s\"\n[queues.q]", "worker.heartbeat", "shorter"),
        ("[worker]\nlease = \"500ms\"\n[queues.q]", "worker.lease", "at least 1s"),
        ("[redis]\nurl = \"redis://h\"", "queues", "no queues"),
        ("[queues]", "queues", "no queues"),
        ("[queues.\"a b\"]", "queues.\"a b\"", "use only ASCII letters"),
        ("[queues.\"x{y}\"]", "queues.\"x{y}\"", "invalid queue name"),
        (
            "[queues.q]\n[handlers.send]\nqueue = \"emails\"\nkind = \"simulate\"",
            "handlers.send.queue",
            "a handler for no queue",
        ),
        ("[queues.q]\n[handlers.send]\nkind = \"simulate\"", "handlers.send.queue", "required"),
        ("[queues.q]\n[handlers.send]\nqueue = \"q\"", "handlers.send.kind", "required"),
        (
            "[queues.q]\n[handlers.send]\nqueue = \"q\"\nkind = \"grpc\"",
            "handlers.send.kind",
            "unknown handler kind \"grpc\"; the kinds are \"simulate\", \"http\", \"command\"",
        ),
        (
            "[queues.q]\n[handlers.\"two words\"]\nqueue = \"q\"\nkind = \"simulate\"",
            "handlers.\"two words\"",
            "whitespace",
        ),
        ("[redis]\nurl = \"http://h:6379\"\n[queues.q]", "redis.url", "redis://"),
        ("[redis]\nurl = \"127.0.0.1:6379\"\n[queues.q]", "redis.url", "rediss://"),
        ("[redis]\nprefix = \"a{b}\"\n[queues.q]", "redis.prefix", "braces"),
        ("[redis]\nresponse_timeout = \"0s\"\n[queues.q]", "redis.response_timeout", "longer than zero"),
        ("[worker]\nreap_interval = \"0s\"\n[queues.q]", "worker.reap_interval", "longer than zero"),
        ("[worker]\nidle_wait = \"0s\"\n[queues.q]", "worker.idle_wait", "longer than zero"),
        ("[worker]\nid = \"\"\n[queues.q]", "worker.id", "empty"),
        ("[worker]\nlog_format = \"xml\"\n[queues.q]", "worker.log_format", "\"text\" or \"json\""),
        (
            "[queues.q]\nbackoff = { jitter = \"some\" }",
            "queues.q.backoff.jitter",
            "\"none\", \"full\" or \"equal\"",
        ),
        ("[queues.q]\ntimeout = \"0s\"", "queues.q.timeout", "longer than zero"),
        ("[queues.q]\nrate_limit = \"50\"", "queues.q.rate_limit", "N/PERIOD, e.g. 50/1s"),
        ("[queues.q]\nrate_limit = \"50/1 week\"", "queues.q.rate_limit", "not a period"),
        ("[queues.q]\nrate_limit = \"0/1s\"", "queues.q.rate_limit", "pause the queue instead"),
        ("[queues.q]\nrate_limit = 50", "queues.q.rate_limit", "N/PERIOD"),
        ("[queues.q]\nglobal_concurrency = 0", "queues.q.global_concurrency", "at least 1"),
        ("[queues.q]\npriority_min_share = 0.9", "queues.q.priority_min_share", "between 0.0"),
        ("[queues.q]\npriority_min_share = -0.1", "queues.q.priority_min_share", "between 0.0"),
        // Wrong types.
        ("[queues.q]\nconcurrency = \"many\"", "queues.q.concurrency", "invalid type"),
        ("[queues.q]\nweight = -1", "queues.q.weight", "invalid type"),
        ("[queues.q]\nweight = 5000000000", "queues.q.weight", "invalid type"),
        ("[queues.q]\nstrict = [1]", "queues.q.strict", ""),
        ("[queues.q]\nbackoff = 5", "queues.q.backoff", "expected a table"),
        ("queues = 5", "queues", "expected a table"),
        ("worker = \"x\"\n[queues.q]", "worker", ""),
        ("[queues]\nq = 3", "queues.q", ""),
        ("[queues]\nq = []", "queues.q", "invalid type: array"),
        ("[queues.q]\nbackoff = [\"1s\", 2.0]", "queues.q.backoff", "invalid type: array"),
        ("[queues.q]\nretention = [[]]", "queues.q.retention", "invalid type: array"),
    ];
    for (text, field, fragment) in cases {
        let err = load_err(text, &[]);
        assert_eq!(err.field, *field, "{text:?} gave {err}");
        assert!(err.message.contains(fragment), "{text:?} gave {err}, expected {fragment:?}");
        // Without a file, the same error names "<string>".
        let err = Config::from_toml_str(text).expect_err(text);
        assert_eq!((err.file.as_str(), err.field.as_str()), ("<string>", *field), "{err}");
    }
}

#[test]
fn a_bad_duration_names_the_field_and_the_value() {
    let err = load_err("[worker]\nlease = \"30 parsecs\"\n[queues.q]", &[]);
    let want = format!("{}: worker.lease: invalid duration \"30 parsecs\": ", err.file);
    assert!(err.to_string().starts_with(&want), "{err}");

    let err = load_err("[queues.q]\nbackoff = { max = 300 }", &[]);
    assert_eq!(err.field, "queues.q.backoff.max");
    assert!(err.message.contains("\"300s\""), "a bare number gets a hint: {err}");

    let err = load_err("[queues.q]\ntimeout = 1.5", &[]);
    assert_eq!(err.field, "queues.q.timeout", "{err}");

    let err = load_err("[queues.q]\nretention = { max_age = \"never\" }", &[]);
    assert_eq!(err.field, "queues.q.retention.max_age", "{err}");

    let err = load_err("[worker]\nshutdown_timeout = 1979-05-27\n[queues.q]", &[]);
    assert_eq!(err.field, "worker.shutdown_timeout", "{err}");
}

/// The messages of the hand-written duration deserializer, which say more
/// than `humantime-serde` would (the value, the reason, what to write); see
/// `DurationVisitor`.
#[test]
fn duration_errors_name_the_value_and_say_what_to_write() {
    let cases = [
        (
            "\"-1s\"",
            "invalid duration \"-1s\": expected number at 0; write e.g. \"30s\", \"5m\" or \"1h30m\"",
        ),
        ("\"\"", "invalid duration \"\": value was empty; write e.g. \"30s\""),
        ("\"none\"", "invalid duration \"none\": "),
        ("30", "invalid duration 30: a duration is a string with a unit, e.g. \"30s\" for seconds"),
        ("1.5", "invalid duration 1.5: a duration is a string with a unit, e.g. \"30s\""),
        ("true", "invalid type: boolean `true`, expected a duration string such as \"30s\""),
    ];
    for (value, want) in cases {
        let err = load_err(&format!("[worker]\nlease = {value}\n{QUEUE}"), &[]);
        assert_eq!(err.field, "worker.lease", "{value}: {err}");
        assert!(err.message.starts_with(want), "{value}: {err}");
    }
    let config = load_ok(&format!("[worker]\nlease = \"30 seconds\"\n{QUEUE}timeout = \"none\"\n"), &[]);
    assert_eq!((config.worker.lease, config.queues["q"].timeout), (secs(30), None));
}

#[test]
fn unknown_fields_are_rejected_naming_them() {
    let cases = [
        ("colour = \"blue\"\n[queues.q]", "colour"),
        ("[wroker]\n[queues.q]", "wroker"),
        ("[worker]\nleas = \"30s\"\n[queues.q]", "worker.leas"),
        ("[redis]\npassword = \"x\"\n[queues.q]", "redis.password"),
        ("[queues.q]\nwieght = 2", "queues.q.wieght"),
        ("[queues.q]\nbackoff = { jiter = \"full\" }", "queues.q.backoff.jiter"),
        ("[queues.q.retention]\nkeep = 1", "queues.q.retention.keep"),
        (
            "[queues.q]\n[handlers.h]\nqueue = \"q\"\nkind = \"simulate\"\nendpoint = \"http://x\"",
            "handlers.h.endpoint",
        ),
    ];
    for (text, field) in cases {
        let err = load_err(text, &[]);
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.starts_with("unknown field"), "{err}");
    }
}

#[test]
fn unreadable_files_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    let err = Config::load_with_env(&missing, HashMap::new()).expect_err("missing file");
    assert_eq!((err.file, err.field.as_str()), (missing.display().to_string(), "(file)"));

    let file = file_with([0xff, 0xfe, b'[', 0x80]);
    let err = Config::load_with_env(file.path(), HashMap::new()).expect_err("not UTF-8");
    assert_eq!(err.field, "(file)");
    assert!(err.message.contains("UTF-8"), "{err}");
}

#[test]
fn a_syntax_error_gives_its_line_and_column() {
    let err = load_err("[queues.q]\nweight = = 2\n", &[]);
    assert!(err.field.starts_with("line 2, column"), "{err}");
    assert!(err.message.starts_with("invalid TOML"), "{err}");
    assert!(!err.message.contains('\n'), "one line: {err}");

    let err = load_err("[queues.q]\nweight = 1\nweight = 2\n", &[]);
    assert!(err.field.starts_with("line 3"), "{err}");
    assert!(err.message.contains("duplicate key"), "{err}");
}

/// Found by the property test (`config_props`): the TOML parser reports an
/// integer out of range without a place, and the error said `(toml)`.
#[test]
fn an_integer_out_of_range_gives_its_line() {
    let err = load_err("[queues.q]\nweight = 1\nconcurrency = -99999999999999999999999\n", &[]);
    assert_eq!(err.field, "line 3", "{err}");
    assert!(err.message.contains("number too small"), "{err}");
}

// ---------------------------------------------------------------------------
// Environment overrides

const EMAILS: &str = "[queues.emails]\nconcurrency = 2\nweight = 3\n";

#[test]
fn env_overrides_nested_fields() {
    let config = load_ok(
        EMAILS,
        &[
            ("TASKLINE_QUEUES__EMAILS__CONCURRENCY", "8"),
            ("TASKLINE_QUEUES__EMAILS__STRICT", "true"),
            ("TASKLINE_QUEUES__EMAILS__BACKOFF__FACTOR", "3.5"),
            ("TASKLINE_QUEUES__EMAILS__RETENTION__MAX_AGE", "none"),
            ("TASKLINE_WORKER__LEASE", "10s"),
            ("TASKLINE_WORKER__ID", "007"),
            ("TASKLINE_WORKER__LOG_FORMAT", "json"),
            ("TASKLINE_REDIS__URL", "redis://:pw@redis.internal:6379/2"),
        ],
    );
    let q = &config.queues["emails"];
    assert_eq!((q.concurrency, q.weight, q.strict), (8, 3, true), "the file's weight stays");
    assert_eq!(q.backoff.factor, 3.5);
    assert_eq!(q.retention.max_age, None);
    assert_eq!(config.worker.lease, secs(10));
    assert_eq!(
        config.worker.heartbeat_interval(),
        Duration::from_millis(3333) + Duration::from_nanos(333_333)
    );
    assert_eq!(config.worker.id.as_deref(), Some("007"), "string values are not reparsed as numbers");
    assert_eq!(config.worker.log_format, LogFormat::Json);
    assert_eq!(config.redis.url, "redis://:pw@redis.internal:6379/2");
}

#[test]
fn env_can_add_a_queue_and_a_handler() {
    let config = load_ok(
        EMAILS,
        &[
            ("TASKLINE_QUEUES__REPORTS__WEIGHT", "2"),
            ("TASKLINE_HANDLERS__BUILD_REPORT__QUEUE", "reports"),
            ("TASKLINE_HANDLERS__BUILD_REPORT__KIND", "simulate"),
        ],
    );
    let want = QueueConfig { weight: 2, ..QueueConfig::default() };
    assert_eq!(config.queues["reports"], want);
    assert_eq!(config.handlers["build_report"].queue, "reports");
}

#[test]
fn unrelated_env_vars_are_ignored() {
    let config = load_ok(
        EMAILS,
        &[
            ("TASKLINE_REDIS_SERVER", "/usr/bin/redis-server"),
            ("TASKLINE_LOG", "debug"),
            ("TASKLINE_", "x"),
            ("TASKLINE", "x"),
            ("REDIS_URL", "not a url"),
            ("PATH", "/usr/bin"),
            ("XTASKLINE_WORKER__LEASE", "nonsense"),
            ("TASKLINE_WORKER__LEASE", ""),
        ],
    );
    assert_eq!(config.worker.lease, secs(30), "an empty override counts as unset");
    assert_eq!(config.queues["emails"].concurrency, 2);
}

#[test]
fn a_bad_env_value_names_the_field_the_variable_and_the_file() {
    let err = load_err(EMAILS, &[("TASKLINE_WORKER__LEASE", "soon")]);
    assert_eq!(err.field, "worker.lease");
    assert!(err.message.contains("invalid duration \"soon\""), "{err}");
    assert!(err.message.contains("TASKLINE_WORKER__LEASE"), "{err}");

    let err = load_err(EMAILS, &[("TASKLINE_QUEUES__EMAILS__CONCURRENCY", "eight")]);
    assert_eq!(err.field, "queues.emails.concurrency");
    assert!(err.message.contains("TASKLINE_QUEUES__EMAILS__CONCURRENCY"), "{err}");

    let err = load_err(EMAILS, &[("TASKLINE_QUEUES__EMAILS__WEIGHT", "0")]);
    assert_eq!(err.field, "queues.emails.weight");
    assert!(err.message.contains("TASKLINE_QUEUES__EMAILS__WEIGHT"), "validation errors too: {err}");

    let err = load_err(EMAILS, &[("TASKLINE_WORKER__LEASES", "10s")]);
    assert_eq!(err.field, "worker.leases");
    assert!(err.message.starts_with("unknown field"), "{err}");
    assert!(err.message.contains("TASKLINE_WORKER__LEASES"), "{err}");

    let err = load_err(EMAILS, &[("TASKLINE_WROKER__LEASE", "10s")]);
    assert_eq!(err.field, "wroker");
}

#[test]
fn env_cannot_silently_miss_a_queue_with_capitals() {
    let err = load_err("[queues.Emails]\n", &[("TASKLINE_QUEUES__EMAILS__CONCURRENCY", "8")]);
    assert_eq!(err.field, "TASKLINE_QUEUES__EMAILS__CONCURRENCY");
    assert!(err.message.contains("lowercase"), "{err}");
}

#[test]
fn malformed_override_names_are_rejected_not_obeyed() {
    for var in [
        "TASKLINE_QUEUES__A[400000000]__X",
        "TASKLINE_QUEUES____X",
        "TASKLINE_QUEUES__a b__x",
        "TASKLINE_WORKER__",
    ] {
        let err = load_err(EMAILS, &[(var, "1")]);
        assert_eq!(err.field, var, "{err}");
    }
}

// ---------------------------------------------------------------------------
// Printing

#[test]
fn redacted_masks_the_password_and_shows_every_field() {
    let mut config = Config::from_toml_str(EMAILS).expect("valid");
    config.redis.url = "redis://admin:s3cr3t@redis.internal:6379/0".into();
    let text = config.redacted();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("url = \"redis://admin:****@redis.internal:6379/0\""), "{text}");
    assert!(!format!("{config:?}").contains("s3cr3t"), "Debug masks the password too");
    for field in
        ["lease = \"30s\"", "# heartbeat is not set: lease / 3 = 10s", "[queues.emails]", "max_age = \"24h\""]
    {
        assert!(text.contains(field), "{field:?} missing from\n{text}");
    }
    // The printed configuration is itself a valid configuration.
    let reread = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(reread.redis.url, "redis://admin:****@redis.internal:6379/0");
}

#[test]
fn redacted_output_loads_back_into_the_same_config() {
    let config = Config::load_with_env(&example_path(), HashMap::new()).expect("example");
    let text = config.redacted();
    assert_eq!(Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}")), config);

    let mut odd = Config::from_toml_str("[queues.\"billing.v2\"]\n[queues.\"tenant:42\"]\n").expect("valid");
    odd.worker.id = Some("w\"1\\é".into());
    odd.worker.heartbeat = Some(Duration::from_millis(1500));
    odd.queues.get_mut("tenant:42").expect("queue").backoff = BackoffConfig {
        initial: Duration::from_micros(1500),
        factor: 1.25,
        max: secs(5400),
        jitter: Jitter::None,
    };
    odd.queues.get_mut("tenant:42").expect("queue").retention.max_age = None;
    let text = odd.redacted();
    assert_eq!(Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}")), odd);
}

/// Control characters, U+0080 to U+009F too, are escaped where a value or a
/// name is printed: a terminal may act on them (U+0085 is a line break).
/// Pins why `toml_string` is hand-written rather than `toml_writer`'s.
#[test]
fn control_characters_are_escaped_in_printed_config_and_error_fields() {
    let text = "[queues.q]\n[handlers.c]\nqueue = \"q\"\nkind = \"command\"\nprogram = \"sh\"\n\
        args = [\"a\\nb\", \"\\u0007\\u0008\\u0085\"]\nenv = { MODE = \"x\\u009Fy\" }\n";
    let config = Config::from_toml_str(text).unwrap_or_else(|e| panic!("{e}"));
    let printed = config.redacted();
    assert!(printed.contains(r#"args = ["a\nb", "\u0007\u0008\u0085"]"#), "{printed}");
    assert!(printed.contains(r#"env = { MODE = "x\u009Fy" }"#), "{printed}");
    assert!(!printed.contains(['\u{7}', '\u{8}', '\u{85}', '\u{9f}']), "{printed:?}");
    assert_eq!(Config::from_toml_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}")), config);

    let err = Config::from_toml_str("[queues.\"a\\u0085b\"]\n").expect_err("not a queue name");
    assert_eq!(err.field, r#"queues."a\u0085b""#, "{err}");
}

#[test]
fn urls_are_masked() {
    let cases = [
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://:pw@h:6379", "redis://:****@h:6379"),
        ("rediss://user:p@ss:w@rd@h:6380/1", "rediss://user:****@h:6380/1"),
        ("redis://token@h", "redis://****@h"),
        ("redis+unix:///run/r.sock?db=1&pass=pw", "redis+unix:///run/r.sock?db=1&pass=****"),
        ("unix:///run/r.sock?password=pw&user=u", "unix:///run/r.sock?password=****&user=u"),
    ];
    for (url, want) in cases {
        assert_eq!(mask_url(url), want);
    }
}

#[test]
fn durations_print_the_way_they_are_written() {
    let cases = [(0, "0s"), (1_500, "1s500ms"), (90_000, "1m30s"), (5_400_000, "1h30m"), (86_400_000, "24h")];
    for (ms, text) in cases {
        assert_eq!(format_duration(Duration::from_millis(ms)), text);
        assert_eq!(humantime::parse_duration(text).expect(text), Duration::from_millis(ms));
    }
    // The spellings config/README.md promises.
    let config = Config::from_toml_str(
        "[worker]\nlease = \"1h 30m\"\nshutdown_timeout = \"2hr\"\nreap_interval = \"1min\"\n[queues.q]\ntimeout = \"2days\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.worker.lease, secs(5400));
    assert_eq!(config.worker.shutdown_timeout, secs(7200));
    assert_eq!(config.worker.reap_interval, secs(60));
    assert_eq!(config.queues["q"].timeout, Some(secs(2 * 86_400)));
}

// ---------------------------------------------------------------------------
// Hostile input: always an error (or a config), never a panic

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn garbage_is_rejected_without_panicking() {
    let deep = 100_000;
    let texts = [
        String::new(),
        "# only a comment".into(),
        "\0\0\0".into(),
        format!("a = {}{}", "[".repeat(deep), "]".repeat(deep)),
        format!("a = {}1{}", "{b=".repeat(deep), "}".repeat(deep)),
        format!("[{}]", vec!["a"; deep].join(".")),
        format!("[queues.{}]", vec!["a"; deep].join(".")),
        format!("[queues.q]\nbackoff = {}1{}", "{b=".repeat(120), "}".repeat(120)),
        format!("[queues.q]\n{}", "[[queues.q.x]]\n".repeat(1000)),
        "\"a[400000000]\" = 1\n[queues.q]".into(),
        "\"queues[400000000]\" = 1".into(),
        "\"worker.lease\" = \"1s\"\n[queues.q]".into(),
        "[queues.q]\nweight = 99999999999999999999999".into(),
        "[queues.q]\nweight = inf".into(),
        "[queues.q]\nbackoff = { factor = inf }".into(),
        "[queues.q]\nbackoff = { max = \"99999999999999999999h\" }".into(),
        "[[queues]]\nweight = 1".into(),
        "queues = { q = [] }".into(),
        "[handlers.h]\nqueue = { x = 1 }\nkind = []\n[queues.q]".into(),
        format!("[queues.q]\nweight = \"{}\"", "9".repeat(100_000)),
    ];
    for text in &texts {
        let err = Config::from_toml_str(text).expect_err(&text[..text.len().min(80)]);
        assert!(!err.field.is_empty() && !err.message.is_empty(), "{err}");
    }

    let mut rng = Lcg(42);
    for _ in 0..300 {
        let len = (rng.next() % 2_000) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = Config::from_toml_str(&String::from_utf8_lossy(&bytes));
        let file = file_with(&bytes);
        let _ = Config::load_with_env(file.path(), HashMap::new());
    }
}

#[test]
fn mutations_of_the_example_never_panic() {
    let example = std::fs::read(example_path()).expect("example");
    let alphabet = b"[]{}=\"'.,#\n 0aZ-_\\:";
    let mut rng = Lcg(7);
    for _ in 0..500 {
        let mut bytes = example.clone();
        for _ in 0..=(rng.next() % 8) {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = alphabet[(rng.next() as usize) % alphabet.len()];
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(config) = Config::from_toml_str(&text) {
            // Whatever loads must validate and print.
            config.validate().expect("a loaded config is valid");
            let _ = config.redacted();
        }
    }
}

#[test]
fn handler_kinds_are_listed() {
    assert_eq!(HandlerKind::ALL.map(HandlerKind::as_str), ["simulate", "http", "command"]);
}

// ---------------------------------------------------------------------------
// Metrics address and DLQ alert

#[test]
fn metrics_addr_and_dlq_alert_are_unset_by_default() {
    let config = load_ok(QUEUE, &[]);
    assert_eq!(config.worker.metrics_addr, None);
    assert_eq!(config.queues["q"].dlq_alert, None);
}

#[test]
fn metrics_addr_and_dlq_alert_load_from_the_file_and_the_environment() {
    let config = load_ok("[worker]\nmetrics_addr = \"0.0.0.0:9464\"\n[queues.q]\ndlq_alert = 100\n", &[]);
    assert_eq!(config.worker.metrics_addr, Some("0.0.0.0:9464".parse().expect("addr")));
    assert_eq!(config.queues["q"].dlq_alert, Some(100));

    let config = load_ok(
        QUEUE,
        &[("TASKLINE_WORKER__METRICS_ADDR", "[::1]:9100"), ("TASKLINE_QUEUES__Q__DLQ_ALERT", "5")],
    );
    assert_eq!(config.worker.metrics_addr, Some("[::1]:9100".parse().expect("addr")));
    assert_eq!(config.queues["q"].dlq_alert, Some(5));
}

#[test]
fn a_bad_metrics_addr_is_rejected() {
    for bad in ["localhost:9464", "9464", "127.0.0.1", "127.0.0.1:99999", "http://127.0.0.1:9464"] {
        let err = load_err(&format!("[worker]\nmetrics_addr = \"{bad}\"\n{QUEUE}"), &[]);
        assert_eq!(err.field, "worker.metrics_addr", "{bad}: {err}");
        assert!(err.message.contains("127.0.0.1:9464"), "the message shows the form: {err}");
    }
    let err = load_err(QUEUE, &[("TASKLINE_WORKER__METRICS_ADDR", "nowhere")]);
    assert_eq!(err.field, "worker.metrics_addr", "{err}");
    assert!(err.message.contains("TASKLINE_WORKER__METRICS_ADDR"), "{err}");
}

#[test]
fn flow_limits_survive_redaction() {
    let text = "[queues.q]\nrate_limit = \"50/1s\"\nglobal_concurrency = 5\npriority_min_share = 0.1\n";
    let config = load_ok(text, &[]);
    let q = &config.queues["q"];
    assert_eq!(q.rate_limit, Some(taskline::RateLimit { max: 50, per: Duration::from_secs(1) }));
    assert_eq!((q.global_concurrency, q.priority_min_share), (Some(5), 0.1));
    let redacted = config.redacted();
    assert_eq!(Config::from_toml_str(&redacted).unwrap_or_else(|e| panic!("{e}\n{redacted}")), config);
    let unset = load_ok(QUEUE, &[]).redacted();
    assert!(unset.contains("# rate_limit is not set"), "{unset}");
    assert!(unset.contains("priority_min_share = 0.05"), "the default share is shown: {unset}");
}

#[test]
fn a_dlq_alert_of_zero_is_rejected() {
    let err = load_err("[queues.q]\ndlq_alert = 0\n", &[]);
    assert_eq!(err.field, "queues.q.dlq_alert", "{err}");
    assert!(err.message.contains("at least 1"), "{err}");
    let err = load_err("[queues.q]\ndlq_alert = -3\n", &[]);
    assert_eq!(err.field, "queues.q.dlq_alert", "{err}");
}

#[test]
fn metrics_addr_and_dlq_alert_survive_redaction() {
    let config = load_ok("[worker]\nmetrics_addr = \"127.0.0.1:9464\"\n[queues.q]\ndlq_alert = 7\n", &[]);
    let text = config.redacted();
    assert!(text.contains("metrics_addr = \"127.0.0.1:9464\""), "{text}");
    assert!(text.contains("dlq_alert = 7"), "{text}");
    assert_eq!(Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}")), config);
    let unset = load_ok(QUEUE, &[]).redacted();
    assert!(unset.contains("# metrics_addr is not set"), "{unset}");
    assert!(unset.contains("# dlq_alert is not set"), "{unset}");
}

#[test]
fn the_example_file_shows_the_metrics_fields() {
    let text = std::fs::read_to_string(example_path()).expect("read the example");
    for field in ["metrics_addr = ", "dlq_alert = "] {
        assert!(text.contains(field), "config/worker.toml does not show {field:?}");
    }
    let reference = std::fs::read_to_string(example_path().with_file_name("README.md")).expect("README");
    for field in ["| `metrics_addr` |", "| `dlq_alert` |"] {
        assert!(reference.contains(field), "config/README.md does not document {field:?}");
    }
}

// ---------------------------------------------------------------------------
// Where Redis is: one server, a cluster, Sentinel; durability

#[test]
fn a_cluster_is_a_list_of_seed_urls_in_the_file_or_one_comma_separated_variable() {
    let text =
        format!("[redis]\ncluster = [\"redis://10.0.0.1:7000\", \"redis://:s3cr3t@10.0.0.2:7000\"]\n{QUEUE}");
    let config = load_ok(&text, &[]);
    assert_eq!(config.redis.cluster, ["redis://10.0.0.1:7000", "redis://:s3cr3t@10.0.0.2:7000"]);
    assert!(matches!(config.redis.target(), taskline::RedisTarget::Cluster(c) if c.nodes.len() == 2));
    let shown = config.redacted();
    assert!(
        shown.contains("cluster = [\"redis://10.0.0.1:7000\", \"redis://:****@10.0.0.2:7000\"]"),
        "{shown}"
    );
    assert!(!shown.contains("s3cr3t"), "the password is masked: {shown}");

    let config = load_ok(QUEUE, &[("TASKLINE_REDIS__CLUSTER", "redis://a:7000, redis://b:7001")]);
    assert_eq!(config.redis.cluster, ["redis://a:7000", "redis://b:7001"]);
}

#[test]
fn a_sentinel_table_names_the_sentinels_and_the_master() {
    let text = format!(
        "[redis]\ndurability = \"replicated\"\nreplicas = 2\nreplication_timeout = \"500ms\"\n\
         [redis.sentinel]\nnodes = [\"redis://10.0.0.1:26379\"]\nmaster_name = \"mymaster\"\npassword = \"s3cret\"\n{QUEUE}"
    );
    let config = load_ok(&text, &[]);
    match config.redis.target() {
        taskline::RedisTarget::Sentinel(s) => {
            assert_eq!((s.master_name.as_str(), s.password.as_deref()), ("mymaster", Some("s3cret")));
            assert_eq!(s.sentinels, ["redis://10.0.0.1:26379"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        config.redis.client_durability(),
        taskline::Durability::Replicated { replicas: 2, timeout: Duration::from_millis(500) }
    );
    let shown = config.redacted();
    assert!(shown.contains("[redis.sentinel]") && shown.contains("master_name = \"mymaster\""), "{shown}");
    assert!(!shown.contains("s3cret") && !format!("{config:?}").contains("s3cret"), "{shown}");
    // Loads again from its own rendering.
    let again = Config::from_toml_str(&shown.replace("\"****\"", "\"x\"")).expect("the rendering loads");
    assert_eq!(again.redis.sentinel.expect("sentinel").master_name, "mymaster");
}

#[test]
fn a_deployment_set_twice_or_half_is_refused_with_the_field() {
    let both = format!("[redis]\nurl = \"redis://h:1\"\ncluster = [\"redis://a:1\"]\n{QUEUE}");
    let err = load_err(&both, &[]);
    assert_eq!(err.field, "redis.cluster");
    assert!(err.message.contains("set only one of redis.url"), "{err}");

    let err = load_err(&format!("[redis]\ncluster = [\"http://a:1\"]\n{QUEUE}"), &[]);
    assert_eq!(err.field, "redis.cluster[0]");
    assert!(err.message.contains("not a cluster node URL"), "{err}");

    let err = load_err(&format!("[redis.sentinel]\nnodes = [\"redis://a:26379\"]\n{QUEUE}"), &[]);
    assert_eq!(err.field, "redis.sentinel.master_name");
    let err = load_err(&format!("[redis.sentinel]\nmaster_name = \"m\"\n{QUEUE}"), &[]);
    assert_eq!(err.field, "redis.sentinel.nodes");

    let err = load_err(&format!("[redis]\ndurability = \"sometimes\"\n{QUEUE}"), &[]);
    assert_eq!(err.field, "redis.durability");
    assert!(err.message.contains("\"primary\" (the default) or \"replicated\""), "{err}");
    let err = load_err(&format!("[redis]\ndurability = \"replicated\"\nreplicas = 0\n{QUEUE}"), &[]);
    assert_eq!(err.field, "redis.replicas");
    // A list where none is taken is still refused as before.
    let err = load_err(&format!("[redis]\nprefix = [\"a\"]\n{QUEUE}"), &[]);
    assert_eq!(err.field, "redis.prefix");
}
