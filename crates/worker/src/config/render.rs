//! The `--check-config` output: the effective configuration as TOML, every
//! field shown, unset optional fields as comments that say what applies
//! instead, and secrets masked (the Redis password, secret-looking header
//! and `env` values). Without secrets the text loads back equal.

use std::fmt::Write as _;
use std::time::Duration;

use super::deserialize::jitter_name;
use super::handlers::shown_value;
use super::{
    Config, DEFAULT_KILL_GRACE, DEFAULT_MAX_RESULT_BYTES, DEFAULT_TRANSIENT_EXIT_CODES, HandlerConfig,
    HandlerKind, NamedValues,
};

impl Config {
    /// The effective configuration as TOML, every field included, with the
    /// Redis password masked as `****`; for `--check-config`. Unset optional
    /// fields appear as comments. Without secrets, the text loads back into
    /// an equal configuration.
    pub fn redacted(&self) -> String {
        let mut out = String::from("# Effective taskline-worker configuration; secrets are masked.\n");
        let r = &self.redis;
        out += "\n[redis]\n";
        line(&mut out, "url", &toml_string(&mask_url(&r.url)));
        line(&mut out, "prefix", &toml_string(&r.prefix));
        line(&mut out, "response_timeout", &toml_duration(r.response_timeout));
        line(&mut out, "connection_timeout", &toml_duration(r.connection_timeout));
        line(&mut out, "coalesce_calls", &r.coalesce_calls.to_string());

        let w = &self.worker;
        out += "\n[worker]\n";
        match &w.id {
            Some(id) => line(&mut out, "id", &toml_string(id)),
            None => out += "# id is not set: generated at start (hostname-pid-random)\n",
        }
        line(&mut out, "concurrency", &w.concurrency.to_string());
        line(&mut out, "lease", &toml_duration(w.lease));
        match w.heartbeat {
            Some(h) => line(&mut out, "heartbeat", &toml_duration(h)),
            None => {
                let derived = format_duration(w.heartbeat_interval());
                let _ = writeln!(out, "# heartbeat is not set: lease / 3 = {derived}");
            }
        }
        line(&mut out, "shutdown_timeout", &toml_duration(w.shutdown_timeout));
        line(&mut out, "reap_interval", &toml_duration(w.reap_interval));
        line(&mut out, "idle_wait", &toml_duration(w.idle_wait));
        line(&mut out, "claim_batch", &w.claim_batch.to_string());
        line(&mut out, "max_payload_bytes", &w.max_payload_bytes.to_string());
        line(&mut out, "events_max_len", &w.events_max_len.to_string());
        line(&mut out, "progress_interval", &toml_duration(w.progress_interval));
        line(&mut out, "max_checkpoint_bytes", &w.max_checkpoint_bytes.to_string());
        line(&mut out, "log_format", &toml_string(w.log_format.as_str()));
        line(&mut out, "log_payloads", &w.log_payloads.to_string());
        line(&mut out, "version_retry_delay", &toml_duration(w.version_retry_delay));
        line(&mut out, "max_version_retries", &w.max_version_retries.to_string());
        match w.metrics_addr {
            Some(addr) => line(&mut out, "metrics_addr", &toml_string(&addr.to_string())),
            None => out += "# metrics_addr is not set: no /metrics, /healthz, /readyz server\n",
        }

        for (name, q) in &self.queues {
            let _ = writeln!(out, "\n[{}]", field_path(&["queues", name]));
            line(&mut out, "weight", &q.weight.to_string());
            line(&mut out, "strict", &q.strict.to_string());
            line(&mut out, "concurrency", &q.concurrency.to_string());
            line(&mut out, "max_attempts", &q.max_attempts.to_string());
            match q.timeout {
                Some(t) => line(&mut out, "timeout", &toml_duration(t)),
                None => out += "# timeout is not set: no per-attempt timeout\n",
            }
            let b = &q.backoff;
            let backoff = format!(
                "{{ initial = {}, factor = {}, max = {}, jitter = {} }}",
                toml_duration(b.initial),
                toml_float(b.factor),
                toml_duration(b.max),
                toml_string(jitter_name(b.jitter)),
            );
            line(&mut out, "backoff", &backoff);
            let max_age = q.retention.max_age.map_or_else(|| toml_string("none"), toml_duration);
            let retention = format!("{{ keep_last = {}, max_age = {max_age} }}", q.retention.keep_last);
            line(&mut out, "retention", &retention);
            match q.dlq_alert {
                Some(n) => line(&mut out, "dlq_alert", &n.to_string()),
                None => out += "# dlq_alert is not set: no dead-letter depth alert\n",
            }
            match q.rate_limit {
                Some(r) => line(&mut out, "rate_limit", &toml_string(&r.to_string())),
                None => out += "# rate_limit is not set: no global rate limit\n",
            }
            match q.global_concurrency {
                Some(n) => line(&mut out, "global_concurrency", &n.to_string()),
                None => out += "# global_concurrency is not set: no limit across workers\n",
            }
            line(&mut out, "priority_min_share", &toml_float(q.priority_min_share));
        }

        for (name, h) in &self.handlers {
            h.write_toml(&mut out, name);
        }
        out
    }
}

impl HandlerConfig {
    /// Appends this handler's table to `--check-config` output. Header and
    /// `env` values are shown as written (references unexpanded), except
    /// those whose name suggests a secret, which are masked.
    fn write_toml(&self, out: &mut String, name: &str) {
        let _ = writeln!(out, "\n[{}]", field_path(&["handlers", name]));
        line(out, "queue", &toml_string(&self.queue));
        line(out, "kind", &toml_string(self.kind.as_str()));
        match self.timeout {
            Some(t) => line(out, "timeout", &toml_duration(t)),
            None => *out += "# timeout is not set: the queue's timeout applies\n",
        }
        match self.max_version {
            Some(v) => line(out, "max_version", &v.to_string()),
            None => *out += "# max_version is not set: every payload version is accepted\n",
        }
        match self.kind {
            HandlerKind::Simulate => {}
            HandlerKind::Http => {
                if let Some(url) = &self.url {
                    line(out, "url", &toml_string(&mask_url(url)));
                }
                line(out, "headers", &masked_table(&self.headers));
            }
            HandlerKind::Command => {
                if let Some(program) = &self.program {
                    line(out, "program", &toml_string(program));
                }
                let args: Vec<String> = self.args.iter().map(|a| toml_string(a)).collect();
                line(out, "args", &format!("[{}]", args.join(", ")));
                line(out, "env", &masked_table(&self.env));
                match &self.working_dir {
                    Some(dir) => line(out, "working_dir", &toml_string(&dir.display().to_string())),
                    None => *out += "# working_dir is not set: the worker's working directory\n",
                }
                // Unset fields stay comments, so the text loads back equal.
                match self.kill_grace {
                    Some(grace) => line(out, "kill_grace", &toml_duration(grace)),
                    None => {
                        let _ =
                            writeln!(out, "# kill_grace is not set: {}", format_duration(DEFAULT_KILL_GRACE));
                    }
                }
                let codes = |codes: &[i32]| {
                    format!("[{}]", codes.iter().map(i32::to_string).collect::<Vec<_>>().join(", "))
                };
                match &self.transient_exit_codes {
                    Some(list) => line(out, "transient_exit_codes", &codes(list)),
                    None => {
                        let _ = writeln!(
                            out,
                            "# transient_exit_codes is not set: {}",
                            codes(&DEFAULT_TRANSIENT_EXIT_CODES)
                        );
                    }
                }
            }
        }
        if self.kind != HandlerKind::Simulate {
            match self.max_result_bytes {
                Some(n) => line(out, "max_result_bytes", &n.to_string()),
                None => {
                    let _ = writeln!(out, "# max_result_bytes is not set: {DEFAULT_MAX_RESULT_BYTES}");
                }
            }
        }
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

/// `url` with its password (and any `pass` / `password` query parameter)
/// replaced by `****`. User info without a `:` is masked whole: it may be a
/// token.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let mut out = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    let rest = match rest.rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => out += &format!("{user}:****@"),
                None => out += "****@",
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") => {
                        format!("{k}=****")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out + path + "?" + &params.join("&")
        }
        None => out + rest,
    }
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

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

fn toml_duration(d: Duration) -> String {
    toml_string(&format_duration(d))
}

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

/// A TOML basic string.
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
/// `queues."billing.v2".weight`.
pub(crate) fn field_path(parts: &[&str]) -> String {
    let bare =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    parts.iter().map(|p| if bare(p) { p.to_string() } else { toml_string(p) }).collect::<Vec<_>>().join(".")
}
