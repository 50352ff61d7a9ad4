//! The `--check-config` output: the effective configuration as TOML, every
//! field shown, unset optional fields as comments that say what applies
//! instead, and secrets masked (the Redis password, secret-looking header
//! and `env` values). Without secrets the text loads back equal.
//!
//! Written by hand rather than through the `toml` crate: its serializer
//! cannot write the comments, would print `backoff` and `retention` as
//! `[queues.<name>.backoff]` sub-tables rather than the inline tables of
//! `config/worker.toml`, and picks literal or multi-line strings where an
//! escaped one-line string is clearer (a newline in `args`). See
//! [`toml_string`] for its lower-level writer.

use std::fmt::Write as _;
use std::time::Duration;

use super::deserialize::jitter_name;
use super::handlers::shown_value;
use super::mask_url;
use super::{
    Config, DEFAULT_KILL_GRACE, DEFAULT_MAX_RESULT_BYTES, DEFAULT_TRANSIENT_EXIT_CODES, DurabilityMode,
    HandlerConfig, HandlerKind, NamedValues, QueueConfig, RedisConfig, WorkerSettings,
};

impl Config {
    /// The effective configuration as TOML, every field included, with the
    /// Redis password masked as `****`; for `--check-config`. Unset optional
    /// fields appear as comments. Without secrets, the text loads back into
    /// an equal configuration.
    pub fn redacted(&self) -> String {
        let mut out = String::from("# Effective taskline-worker configuration; secrets are masked.\n");
        write_redis(&mut out, &self.redis);
        write_worker(&mut out, &self.worker);
        for (name, queue) in &self.queues {
            write_queue(&mut out, name, queue);
        }
        for (name, handler) in &self.handlers {
            write_handler(&mut out, name, handler);
        }
        out
    }
}

fn write_redis(out: &mut String, r: &RedisConfig) {
    *out += "\n[redis]\n";
    match (r.cluster.is_empty(), &r.sentinel) {
        (false, _) => {
            let nodes: Vec<String> = r.cluster.iter().map(|u| toml_string(&mask_url(u))).collect();
            line(out, "cluster", &format!("[{}]", nodes.join(", ")));
        }
        (true, Some(_)) => {
            let _ = writeln!(out, "# url is not used: the primary is found through [redis.sentinel]");
        }
        (true, None) => line(out, "url", &toml_string(&mask_url(&r.url))),
    }
    line(out, "durability", &toml_string(r.durability.as_str()));
    if r.durability == DurabilityMode::Replicated {
        line(out, "replicas", &r.replicas.to_string());
        line(out, "replication_timeout", &toml_duration(r.replication_timeout));
    }
    line(out, "prefix", &toml_string(&r.prefix));
    line(out, "response_timeout", &toml_duration(r.response_timeout));
    line(out, "connection_timeout", &toml_duration(r.connection_timeout));
    line(out, "coalesce_calls", &r.coalesce_calls.to_string());
    if let Some(s) = &r.sentinel {
        *out += "\n[redis.sentinel]\n";
        let nodes: Vec<String> = s.nodes.iter().map(|u| toml_string(&mask_url(u))).collect();
        line(out, "nodes", &format!("[{}]", nodes.join(", ")));
        line(out, "master_name", &toml_string(&s.master_name));
        optional(out, "username", s.username.as_deref().map(toml_string), "no ACL user on the data nodes");
        optional(
            out,
            "password",
            s.password.as_ref().map(|_| toml_string("****")),
            "no password on the data nodes",
        );
        line(out, "db", &s.db.to_string());
        line(out, "tls", &s.tls.to_string());
        line(out, "tls_insecure", &s.tls_insecure.to_string());
    }
}

fn write_worker(out: &mut String, w: &WorkerSettings) {
    *out += "\n[worker]\n";
    optional(out, "id", w.id.as_deref().map(toml_string), "generated at start (hostname-pid-random)");
    line(out, "concurrency", &w.concurrency.to_string());
    line(out, "lease", &toml_duration(w.lease));
    let derived = format!("lease / 3 = {}", format_duration(w.heartbeat_interval()));
    optional(out, "heartbeat", w.heartbeat.map(toml_duration), &derived);
    line(out, "shutdown_timeout", &toml_duration(w.shutdown_timeout));
    line(out, "reap_interval", &toml_duration(w.reap_interval));
    line(out, "idle_wait", &toml_duration(w.idle_wait));
    line(out, "claim_batch", &w.claim_batch.to_string());
    line(out, "max_payload_bytes", &w.max_payload_bytes.to_string());
    line(out, "events_max_len", &w.events_max_len.to_string());
    line(out, "progress_interval", &toml_duration(w.progress_interval));
    line(out, "max_checkpoint_bytes", &w.max_checkpoint_bytes.to_string());
    line(out, "log_format", &toml_string(w.log_format.as_str()));
    line(out, "log_payloads", &w.log_payloads.to_string());
    line(out, "version_retry_delay", &toml_duration(w.version_retry_delay));
    line(out, "max_version_retries", &w.max_version_retries.to_string());
    let addr = w.metrics_addr.map(|addr| toml_string(&addr.to_string()));
    optional(out, "metrics_addr", addr, "no /metrics, /healthz, /readyz server");
}

fn write_queue(out: &mut String, name: &str, q: &QueueConfig) {
    let _ = writeln!(out, "\n[{}]", field_path(&["queues", name]));
    line(out, "weight", &q.weight.to_string());
    line(out, "strict", &q.strict.to_string());
    line(out, "concurrency", &q.concurrency.to_string());
    line(out, "max_attempts", &q.max_attempts.to_string());
    optional(out, "timeout", q.timeout.map(toml_duration), "no per-attempt timeout");
    let b = &q.backoff;
    let backoff = format!(
        "{{ initial = {}, factor = {}, max = {}, jitter = {} }}",
        toml_duration(b.initial),
        toml_float(b.factor),
        toml_duration(b.max),
        toml_string(jitter_name(b.jitter)),
    );
    line(out, "backoff", &backoff);
    // `"none"` rather than a comment: inside an inline table there is no room for one.
    let max_age = q.retention.max_age.map_or_else(|| toml_string("none"), toml_duration);
    line(out, "retention", &format!("{{ keep_last = {}, max_age = {max_age} }}", q.retention.keep_last));
    optional(out, "dlq_alert", q.dlq_alert.map(|n| n.to_string()), "no dead-letter depth alert");
    let rate_limit = q.rate_limit.map(|r| toml_string(&r.to_string()));
    optional(out, "rate_limit", rate_limit, "no global rate limit");
    let global = q.global_concurrency.map(|n| n.to_string());
    optional(out, "global_concurrency", global, "no limit across workers");
    line(out, "priority_min_share", &toml_float(q.priority_min_share));
}

/// A handler's table. Header and `env` values are shown as written
/// (references unexpanded), except those whose name suggests a secret,
/// which are masked. Only the kind's own fields are shown.
fn write_handler(out: &mut String, name: &str, h: &HandlerConfig) {
    let _ = writeln!(out, "\n[{}]", field_path(&["handlers", name]));
    line(out, "queue", &toml_string(&h.queue));
    line(out, "kind", &toml_string(h.kind.as_str()));
    optional(out, "timeout", h.timeout.map(toml_duration), "the queue's timeout applies");
    let max_version = h.max_version.map(|v| v.to_string());
    optional(out, "max_version", max_version, "every payload version is accepted");
    match h.kind {
        HandlerKind::Simulate => {}
        HandlerKind::Http => {
            if let Some(url) = &h.url {
                line(out, "url", &toml_string(&mask_url(url)));
            }
            line(out, "headers", &masked_table(&h.headers));
        }
        HandlerKind::Command => {
            if let Some(program) = &h.program {
                line(out, "program", &toml_string(program));
            }
            let args: Vec<String> = h.args.iter().map(|a| toml_string(a)).collect();
            line(out, "args", &format!("[{}]", args.join(", ")));
            line(out, "env", &masked_table(&h.env));
            let dir = h.working_dir.as_ref().map(|dir| toml_string(&dir.display().to_string()));
            optional(out, "working_dir", dir, "the worker's working directory");
            let default_grace = format_duration(DEFAULT_KILL_GRACE);
            optional(out, "kill_grace", h.kill_grace.map(toml_duration), &default_grace);
            let codes = |codes: &[i32]| {
                format!("[{}]", codes.iter().map(i32::to_string).collect::<Vec<_>>().join(", "))
            };
            let default_codes = codes(&DEFAULT_TRANSIENT_EXIT_CODES);
            optional(
                out,
                "transient_exit_codes",
                h.transient_exit_codes.as_deref().map(codes),
                &default_codes,
            );
        }
    }
    if h.kind != HandlerKind::Simulate {
        let limit = h.max_result_bytes.map(|n| n.to_string());
        optional(out, "max_result_bytes", limit, &DEFAULT_MAX_RESULT_BYTES.to_string());
    }
}

/// An inline TOML table of `values`, those of secret-looking names masked.
fn masked_table(values: &NamedValues) -> String {
    let entries: Vec<String> = values
        .iter()
        .map(|(key, value)| format!("{} = {}", field_path(&[key]), toml_string(shown_value(key, value))))
        .collect();
    if entries.is_empty() { "{}".into() } else { format!("{{ {} }}", entries.join(", ")) }
}

/// A duration the way it is written in the file: `"1h30m"`, `"1s500ms"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect()
}

/// `key = value`.
fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

/// `key = value` when the field is set, else a comment that says what
/// applies instead; a comment rather than a placeholder, so the text loads
/// back with the field unset.
fn optional(out: &mut String, key: &str, value: Option<String>, unset: &str) {
    match value {
        Some(value) => line(out, key, &value),
        None => {
            let _ = writeln!(out, "# {key} is not set: {unset}");
        }
    }
}

fn toml_duration(d: Duration) -> String {
    toml_string(&format_duration(d))
}

/// A TOML float. Not `toml_writer`'s, which prints `1e-7` as `0.0000001`
/// and `1e300` with 300 digits.
fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        // `{:?}` keeps the fraction: 2.0, not 2 (which TOML reads as an integer).
        format!("{x:?}")
    }
}

/// A TOML basic string: one line, `"`, `\\` and control characters escaped.
///
/// Not `toml_writer`'s basic string (the writer under the `toml` crate's
/// serializer), which is the same except that it leaves U+0080 to U+009F
/// unescaped: a terminal may act on them (U+0085 is a line break) in
/// `--check-config` output and in the field of an error.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A dotted key with segments quoted where TOML needs it:
/// `queues."billing.v2".weight`. Also the field of a [`super::ConfigError`].
pub(crate) fn field_path(parts: &[&str]) -> String {
    let bare =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    parts.iter().map(|p| if bare(p) { p.to_string() } else { toml_string(p) }).collect::<Vec<_>>().join(".")
}
