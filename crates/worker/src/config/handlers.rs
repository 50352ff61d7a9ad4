//! The `[handlers.<job name>]` tables: built-in handlers configured in TOML.
//!
//! Every kind shares `queue`, `kind`, `timeout` and `max_version`; the other
//! fields belong to one kind each (`url` to `"http"`, `program` to
//! `"command"`, ...). They are flat fields of one table, as users write
//! them, and [`crate::config::Config::validate`] refuses a field that belongs to
//! another kind, naming it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use taskline::names::plain_name_problem;

use super::deserialize::optional_duration;
use super::render::field_path;
use super::validate::{positive, quoted_list};
use super::{ConfigError, QueueConfig, mask_url};
use crate::interpolate;

/// Longest handler (job) name accepted, in bytes; the client's limit.
const MAX_HANDLER_NAME_LEN: usize = 200;

/// Default of `max_result_bytes`: 64 KiB.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 * 1024;

/// Default of `kill_grace`: how long a command has between SIGTERM and
/// SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Default of `transient_exit_codes`: `EX_TEMPFAIL` from `sysexits.h`.
pub const DEFAULT_TRANSIENT_EXIT_CODES: [i32; 1] = [75];

/// Fields whose value is an array; every other array is a mistake (see
/// `first_array` in `errors.rs`).
pub(super) const ARRAY_FIELDS: [&str; 2] = ["args", "transient_exit_codes"];

/// A built-in handler for one job name (`[handlers.<job name>]`).
///
/// The kind-specific fields are `None` or empty unless `kind` uses them;
/// [`crate::config::Config::validate`] guarantees that the required ones of
/// the kind are set and that no other kind's field is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// The queue whose jobs of this name it runs; must be a configured queue.
    pub queue: String,
    /// What the handler does.
    pub kind: HandlerKind,
    /// Per-attempt timeout of jobs that set none; `None` falls back to the
    /// queue's `timeout`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Newest payload version the handler understands; newer jobs are
    /// released back (see `worker.version_retry_delay`). `None` accepts all.
    #[serde(default)]
    pub max_version: Option<u32>,

    /// `http`: where the job is POSTed (`http://` or `https://`).
    #[serde(default)]
    pub url: Option<EndpointUrl>,
    /// `http`: extra request headers. Values may reference environment
    /// variables as `${NAME}`; they are expanded at start and never printed.
    #[serde(default)]
    pub headers: NamedValues,

    /// `command`: the program to run, a path or a name looked up on `PATH`.
    #[serde(default)]
    pub program: Option<String>,
    /// `command`: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// `command`: environment variables of the child, on top of the few it
    /// inherits; values may reference `${NAME}` like `headers`.
    #[serde(default)]
    pub env: NamedValues,
    /// `command`: the child's working directory; `None` keeps the worker's.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// `command`: time between SIGTERM and SIGKILL when a run is cancelled;
    /// `None` means [`DEFAULT_KILL_GRACE`].
    #[serde(default, deserialize_with = "optional_duration")]
    pub kill_grace: Option<Duration>,
    /// `command`: exit codes that are transient failures (retried); other
    /// non-zero codes are permanent. `None` means
    /// [`DEFAULT_TRANSIENT_EXIT_CODES`].
    #[serde(default)]
    pub transient_exit_codes: Option<Vec<i32>>,

    /// `http` and `command`: most bytes of a response body or stdout kept as
    /// the job's result; `None` means [`DEFAULT_MAX_RESULT_BYTES`].
    #[serde(default)]
    pub max_result_bytes: Option<usize>,
}

/// An http handler's `url`. `Debug` masks a password in it, as
/// `--check-config` does.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct EndpointUrl(pub String);

impl std::ops::Deref for EndpointUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&mask_url(&self.0), f)
    }
}

/// Named text values (`headers`, `env`): the values as written, `${NAME}`
/// references unexpanded. `Debug` masks the values of secret-looking names
/// (see [`looks_secret`]), as `--check-config` does.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct NamedValues(pub BTreeMap<String, String>);

impl std::ops::Deref for NamedValues {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for NamedValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (k, shown_value(k, v)))).finish()
    }
}

/// `value` as it may be shown: masked when `name` looks secret.
pub(super) fn shown_value<'a>(name: &str, value: &'a str) -> &'a str {
    if looks_secret(name) { "****" } else { value }
}

/// The kind of a built-in handler (`kind = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerKind {
    /// `"simulate"`: a handler for demos, tests and benchmarks whose payload
    /// says what to do (sleep, fail, panic, return a result).
    Simulate,
    /// `"http"`: POSTs the payload to `url` and maps the response status to
    /// the job's outcome.
    Http,
    /// `"command"`: runs `program` with the payload on stdin and maps the
    /// exit status to the job's outcome.
    Command,
}

impl HandlerKind {
    /// Every kind, by its name in the configuration file.
    pub const ALL: [HandlerKind; 3] = [HandlerKind::Simulate, HandlerKind::Http, HandlerKind::Command];

    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simulate => "simulate",
            Self::Http => "http",
            Self::Command => "command",
        }
    }

    /// The kind-specific fields this kind takes.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Simulate => &[],
            Self::Http => &["url", "headers", "max_result_bytes"],
            Self::Command => &[
                "program",
                "args",
                "env",
                "working_dir",
                "kill_grace",
                "transient_exit_codes",
                "max_result_bytes",
            ],
        }
    }
}

impl<'de> Deserialize<'de> for HandlerKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::ALL.into_iter().find(|k| k.as_str() == name).ok_or_else(|| {
            let known: Vec<String> = Self::ALL.iter().map(|k| format!("{:?}", k.as_str())).collect();
            de::Error::custom(format!("unknown handler kind {name:?}; the kinds are {}", known.join(", ")))
        })
    }
}

impl HandlerConfig {
    /// `max_result_bytes`, or its default.
    pub fn result_limit(&self) -> usize {
        self.max_result_bytes.unwrap_or(DEFAULT_MAX_RESULT_BYTES)
    }

    /// `kill_grace`, or its default.
    pub fn kill_grace_or_default(&self) -> Duration {
        self.kill_grace.unwrap_or(DEFAULT_KILL_GRACE)
    }

    /// `transient_exit_codes`, or the default.
    pub fn transient_codes(&self) -> Vec<i32> {
        self.transient_exit_codes.clone().unwrap_or_else(|| DEFAULT_TRANSIENT_EXIT_CODES.to_vec())
    }

    /// The kind-specific fields that are set, by name.
    fn set_fields(&self) -> Vec<&'static str> {
        let set = [
            ("url", self.url.is_some()),
            ("headers", !self.headers.is_empty()),
            ("program", self.program.is_some()),
            ("args", !self.args.is_empty()),
            ("env", !self.env.is_empty()),
            ("working_dir", self.working_dir.is_some()),
            ("kill_grace", self.kill_grace.is_some()),
            ("transient_exit_codes", self.transient_exit_codes.is_some()),
            ("max_result_bytes", self.max_result_bytes.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect()
    }

    pub(super) fn validate(
        &self,
        name: &str,
        queues: &BTreeMap<String, QueueConfig>,
    ) -> Result<(), ConfigError> {
        let field = |leaf: &[&str]| handler_field(name, leaf);
        if let Some(problem) = plain_name_problem(name, MAX_HANDLER_NAME_LEN) {
            return Err(ConfigError::new(
                field_path(&["handlers", name]),
                format!("invalid job name {name:?}: {problem}"),
            ));
        }
        if !queues.contains_key(&self.queue) {
            let known: Vec<&str> = queues.keys().map(String::as_str).collect();
            return Err(ConfigError::new(
                field(&["queue"]),
                format!(
                    "a handler for no queue: {:?} is not a configured queue (configured: {}); \
                     add a [{}] table or fix the name",
                    self.queue,
                    quoted_list(&known),
                    field_path(&["queues", &self.queue])
                ),
            ));
        }
        if let Some(timeout) = self.timeout {
            positive(&field(&["timeout"]), timeout)?;
        }
        let kind = self.kind;
        if let Some(stray) = self.set_fields().into_iter().find(|f| !kind.fields().contains(f)) {
            let owners: Vec<&str> = HandlerKind::ALL
                .into_iter()
                .filter(|k| k.fields().contains(&stray))
                .map(HandlerKind::as_str)
                .collect();
            return Err(ConfigError::new(
                field(&[stray]),
                format!(
                    "not a field of kind = {:?}; it belongs to kind = {}: remove it or change the kind",
                    kind.as_str(),
                    quoted_list(&owners)
                ),
            ));
        }
        if self.max_result_bytes == Some(0) {
            return Err(ConfigError::new(field(&["max_result_bytes"]), "must be at least 1, got 0"));
        }
        match kind {
            HandlerKind::Simulate => Ok(()),
            HandlerKind::Http => self.validate_http(&field),
            HandlerKind::Command => self.validate_command(&field),
        }
    }

    fn validate_http(&self, field: &dyn Fn(&[&str]) -> String) -> Result<(), ConfigError> {
        let Some(url) = &self.url else {
            return Err(ConfigError::new(
                field(&["url"]),
                "missing; kind = \"http\" needs the endpoint, e.g. url = \"http://127.0.0.1:8080/jobs/send_email\"",
            ));
        };
        check_http_url(url).map_err(|message| ConfigError::new(field(&["url"]), message))?;
        for (header, value) in self.headers.iter() {
            let at = || field(&["headers", header]);
            let lower = header.to_ascii_lowercase();
            if lower == "idempotency-key" || lower.starts_with("taskline-") {
                return Err(ConfigError::new(
                    at(),
                    format!("{header:?} is set by the worker on every request; remove it"),
                ));
            }
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    at(),
                    format!("{header:?} is not a valid HTTP header name (letters, digits and - only)"),
                ));
            }
            interpolate::check(value).map_err(|m| ConfigError::new(at(), m))?;
            if value.chars().any(char::is_control) {
                return Err(ConfigError::new(at(), "a header value cannot hold control characters"));
            }
        }
        Ok(())
    }

    fn validate_command(&self, field: &dyn Fn(&[&str]) -> String) -> Result<(), ConfigError> {
        match &self.program {
            Some(program) if !program.trim().is_empty() => {}
            _ => {
                return Err(ConfigError::new(
                    field(&["program"]),
                    "missing; kind = \"command\" needs the program to run, e.g. program = \"/usr/local/bin/send-email\"",
                ));
            }
        }
        for (var, value) in self.env.iter() {
            let at = field(&["env", var]);
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(ConfigError::new(
                    at,
                    format!("{var:?} is not a usable environment variable name"),
                ));
            }
            interpolate::check(value).map_err(|m| ConfigError::new(at, m))?;
        }
        if let Some(codes) = &self.transient_exit_codes
            && let Some(bad) = codes.iter().find(|c| !(1..=255).contains(*c))
        {
            return Err(ConfigError::new(
                field(&["transient_exit_codes"]),
                format!("{bad} is not a failing exit code; list codes from 1 to 255, e.g. [75]"),
            ));
        }
        Ok(())
    }
}

/// The dotted path of field `leaf` of handler `name`:
/// `handlers.send_email.headers.Authorization`.
pub(crate) fn handler_field(name: &str, leaf: &[&str]) -> String {
    let mut parts = vec!["handlers", name];
    parts.extend_from_slice(leaf);
    field_path(&parts)
}

/// Whether a header or variable name suggests that its value is a secret.
pub fn looks_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["auth", "token", "secret", "password", "passwd", "key", "cookie", "credential"]
        .iter()
        .any(|word| lower.contains(word))
}

/// Why `url` cannot be an http handler's endpoint, if it cannot.
fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!(
            "{:?} is not a URL ({e}); write e.g. \"http://127.0.0.1:8080/jobs/send_email\"",
            mask_url(url)
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{:?} is not an http:// or https:// URL with a host; write e.g. \"https://mailer.internal/jobs\"",
            mask_url(url)
        ));
    }
    Ok(())
}
