//! Validation: every value and every cross-reference, after the file and
//! the environment are merged. Each error names the field and says what to
//! write instead.

use std::time::Duration;

use taskline::QueueName;
use taskline::names::plain_name_problem;

use super::render::field_path;
use super::{
    Config, ConfigError, DEFAULT_URL, DurabilityMode, QueueConfig, RedisConfig, WorkerSettings,
    format_duration, mask_url,
};

impl Config {
    /// Checks every value and every cross-reference. The loaders call it;
    /// errors it returns name the file `<config>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.worker.validate()?;
        if self.queues.is_empty() {
            return Err(ConfigError::new(
                "queues",
                "no queues are configured; add at least one, e.g. a [queues.default] table",
            ));
        }
        for (name, queue) in &self.queues {
            queue.validate(name)?;
        }
        for (name, handler) in &self.handlers {
            handler.validate(name, &self.queues)?;
        }
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !SCHEMES.iter().any(|s| self.url.starts_with(s)) {
            return Err(ConfigError::new(
                "redis.url",
                format!(
                    "{:?} is not a Redis URL; it must start with {}, e.g. \"redis://127.0.0.1:6379\"",
                    mask_url(&self.url),
                    quoted_list(&SCHEMES)
                ),
            ));
        }
        // The same rule as the client's: the queue's {hash tag} must be the
        // first braces of every key.
        let p = &self.prefix;
        if p.is_empty() || p.len() > 64 || p.chars().any(|c| !c.is_ascii_graphic() || c == '{' || c == '}') {
            return Err(ConfigError::new(
                "redis.prefix",
                format!("{p:?} must be 1 to 64 printable ASCII characters without braces or spaces"),
            ));
        }
        positive("redis.response_timeout", self.response_timeout)?;
        positive("redis.connection_timeout", self.connection_timeout)?;
        self.validate_deployment()?;
        if self.durability == DurabilityMode::Replicated {
            at_least_one("redis.replicas", self.replicas)?;
            positive("redis.replication_timeout", self.replication_timeout)?;
        }
        Ok(())
    }

    /// One of `url`, `cluster` and `[redis.sentinel]`, each well formed.
    fn validate_deployment(&self) -> Result<(), ConfigError> {
        let custom_url = self.url != DEFAULT_URL;
        let chosen = [custom_url, !self.cluster.is_empty(), self.sentinel.is_some()];
        if chosen.iter().filter(|c| **c).count() > 1 {
            let field = if self.sentinel.is_some() { "redis.sentinel" } else { "redis.cluster" };
            return Err(ConfigError::new(
                field,
                "set only one of redis.url (one server), redis.cluster (seed nodes of a Redis Cluster) \
                 and [redis.sentinel] (a primary behind Sentinel)",
            ));
        }
        for (i, url) in self.cluster.iter().enumerate() {
            if !["redis://", "rediss://"].iter().any(|s| url.starts_with(s)) {
                return Err(ConfigError::new(
                    format!("redis.cluster[{i}]"),
                    format!(
                        "{:?} is not a cluster node URL; write \"redis://host:port\" or \"rediss://host:port\"",
                        mask_url(url)
                    ),
                ));
            }
        }
        if let Some(sentinel) = &self.sentinel {
            if sentinel.nodes.is_empty() {
                return Err(ConfigError::new(
                    "redis.sentinel.nodes",
                    "no sentinels; list at least one, e.g. nodes = [\"redis://10.0.0.1:26379\"]",
                ));
            }
            if let Some(url) =
                sentinel.nodes.iter().find(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
            {
                return Err(ConfigError::new(
                    "redis.sentinel.nodes",
                    format!("{:?} is not a sentinel URL; write \"redis://host:26379\"", mask_url(url)),
                ));
            }
            if sentinel.master_name.is_empty() {
                return Err(ConfigError::new(
                    "redis.sentinel.master_name",
                    "missing; the name the sentinels monitor the primary under (`sentinel monitor <name> ...`)",
                ));
            }
        }
        Ok(())
    }
}

impl WorkerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.id
            && let Some(problem) = plain_name_problem(id, 100)
        {
            return Err(ConfigError::new("worker.id", format!("{id:?}: {problem}")));
        }
        at_least_one("worker.concurrency", self.concurrency)?;
        if self.lease < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "worker.lease",
                format!(
                    "{} is too short; a lease must be at least 1s so heartbeats can keep it alive",
                    format_duration(self.lease)
                ),
            ));
        }
        if let Some(heartbeat) = self.heartbeat {
            positive("worker.heartbeat", heartbeat)?;
            if heartbeat >= self.lease {
                return Err(ConfigError::new(
                    "worker.heartbeat",
                    format!(
                        "{} must be shorter than worker.lease ({}), or leases expire between heartbeats; \
                         leave it unset for lease / 3",
                        format_duration(heartbeat),
                        format_duration(self.lease)
                    ),
                ));
            }
        }
        positive("worker.reap_interval", self.reap_interval)?;
        positive("worker.idle_wait", self.idle_wait)?;
        at_least_one("worker.claim_batch", self.claim_batch)?;
        if self.max_payload_bytes == 0 {
            return Err(ConfigError::new("worker.max_payload_bytes", "must be at least 1"));
        }
        positive("worker.progress_interval", self.progress_interval)?;
        if self.max_checkpoint_bytes == 0 {
            return Err(ConfigError::new("worker.max_checkpoint_bytes", "must be at least 1"));
        }
        positive("worker.version_retry_delay", self.version_retry_delay)
    }
}

impl QueueConfig {
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let field = |leaf: &[&str]| {
            let mut parts = vec!["queues", name];
            parts.extend_from_slice(leaf);
            field_path(&parts)
        };
        if let Err(err) = QueueName::new(name) {
            let reason = match err {
                taskline::Error::InvalidQueueName { reason, .. } => reason,
                other => other.to_string(),
            };
            return Err(ConfigError::new(field(&[]), format!("invalid queue name {name:?}: {reason}")));
        }
        at_least_one(&field(&["weight"]), self.weight)?;
        at_least_one(&field(&["concurrency"]), self.concurrency)?;
        at_least_one(&field(&["max_attempts"]), self.max_attempts)?;
        let b = &self.backoff;
        if !(b.factor.is_finite() && b.factor >= 1.0) {
            return Err(ConfigError::new(
                field(&["backoff", "factor"]),
                format!("{} must be a finite number >= 1.0 (2.0 doubles each delay)", b.factor),
            ));
        }
        if b.max < b.initial {
            return Err(ConfigError::new(
                field(&["backoff", "max"]),
                format!(
                    "{} is below backoff.initial ({}); the cap must be at least the first delay",
                    format_duration(b.max),
                    format_duration(b.initial)
                ),
            ));
        }
        if let Some(timeout) = self.timeout {
            positive(&field(&["timeout"]), timeout)?;
        }
        if self.dlq_alert == Some(0) {
            return Err(ConfigError::new(
                field(&["dlq_alert"]),
                "must be at least 1, got 0; leave it unset for no alert",
            ));
        }
        if self.global_concurrency == Some(0) {
            return Err(ConfigError::new(
                field(&["global_concurrency"]),
                "must be at least 1, got 0; leave it unset for no limit, or pause the queue",
            ));
        }
        let share = self.priority_min_share;
        if !(share.is_finite() && (0.0..=0.5).contains(&share)) {
            return Err(ConfigError::new(
                field(&["priority_min_share"]),
                format!("{share} must be between 0.0 (strict priority) and 0.5, e.g. 0.05 for one job in 20"),
            ));
        }
        Ok(())
    }
}

fn at_least_one(field: &str, value: u32) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be at least 1, got 0"));
    }
    Ok(())
}

/// `value` is longer than zero.
pub(super) fn positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be longer than zero, e.g. \"1s\""));
    }
    Ok(())
}

/// `"a", "b", "c"`: the choices or names in a message.
pub(super) fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}
