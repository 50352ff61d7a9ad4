//! Every Redis key name Taskline uses is built here, and only here.
//!
//! All keys of queue `Q` share the hash tag `{Q}`: `<prefix>:{Q}:<suffix>`,
//! so every script touches a single Redis Cluster slot. Scripts get
//! [`QueueKeys::prefix`] as `ARGV[1]` and derive the keys they cannot be
//! given in advance (a job hash for a popped id, a group's waiting list)
//! through `lua/includes/keys.lua`, which names them as this module does
//! (a test in `scripts.rs` checks that the two agree); every derived key
//! is in the queue's slot too.

use crate::names::QueueName;

/// The key names of one queue.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    /// Keys of `queue` under the global key prefix `prefix` (e.g. `taskline`).
    pub fn new(prefix: &str, queue: &QueueName) -> Self {
        Self { prefix: format!("{prefix}:{{{queue}}}:") }
    }

    /// `<prefix>:{Q}:`, the stem every key of the queue starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Hash: paused flag, counters, queue settings.
    pub fn meta(&self) -> String {
        self.key("meta")
    }

    /// Zset of priority levels that may hold ready jobs.
    pub fn levels(&self) -> String {
        self.key("levels")
    }

    /// List of ready job ids at one priority level.
    pub fn ready(&self, level: u8) -> String {
        self.key(&format!("ready:{level}"))
    }

    /// List of wake-up tokens that idle workers block on (BLPOP).
    pub fn wake(&self) -> String {
        self.key("wake")
    }

    /// Zset of scheduled and backing-off jobs, score = due time (ms).
    pub fn delayed(&self) -> String {
        self.key("delayed")
    }

    /// Zset of leased jobs, score = lease deadline (ms).
    pub fn active(&self) -> String {
        self.key("active")
    }

    /// Zset of completed jobs kept by retention, score = finish time (ms).
    pub fn completed(&self) -> String {
        self.key("completed")
    }

    /// Zset of dead jobs (the DLQ), score = time of death (ms).
    pub fn dead(&self) -> String {
        self.key("dead")
    }

    /// Stream of lifecycle events, capped.
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// Hash of one job.
    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    /// Short-lived marker of a job completed and deleted at once (retention
    /// keep_last = 0): holds the completing lease token, so a resent
    /// completion is recognized.
    pub fn done(&self, id: &str) -> String {
        self.key(&format!("done:{id}"))
    }

    /// String lock that holds a unique key, value = the holding job's id.
    pub fn unique(&self, unique_key: &str) -> String {
        self.key(&format!("unique:{unique_key}"))
    }

    /// Zset, the rate limit's log: lease tokens of recent starts, score =
    /// start time (ms); at most `rate_max` entries.
    pub fn rate(&self) -> String {
        self.key("rate")
    }

    /// String marker, set while a claim is held back by global concurrency
    /// with jobs waiting: the next attempt to end deletes it and wakes a
    /// worker.
    pub fn blocked(&self) -> String {
        self.key("blocked")
    }

    /// Hash of mutex groups: group -> slots held by its ready or active jobs.
    pub fn groups(&self) -> String {
        self.key("groups")
    }

    /// List of one mutex group's ready jobs waiting for a slot.
    pub fn gwait(&self, group: &str) -> String {
        self.key(&format!("gwait:{group}"))
    }

    /// `SCAN MATCH` pattern of every ready list of the queue ([`Self::ready`]).
    pub fn ready_pattern(&self) -> String {
        self.key("ready:*")
    }

    /// `SCAN MATCH` pattern of every group waiting list ([`Self::gwait`]).
    pub fn gwait_pattern(&self) -> String {
        self.key("gwait:*")
    }
}

/// The set of every queue name that was ever enqueued to (cross-queue,
/// written outside scripts and never needed for correctness).
pub fn queue_registry(prefix: &str) -> String {
    format!("{prefix}:queues")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_queue_hash_tag() {
        let keys = QueueKeys::new("taskline", &QueueName::new("emails").expect("valid"));
        assert_eq!(keys.prefix(), "taskline:{emails}:");
        assert_eq!(keys.meta(), "taskline:{emails}:meta");
        assert_eq!(keys.ready(3), "taskline:{emails}:ready:3");
        assert_eq!(keys.job("abc"), "taskline:{emails}:job:abc");
        assert_eq!(keys.unique("u:1"), "taskline:{emails}:unique:u:1");
        assert_eq!(keys.gwait("g:1"), "taskline:{emails}:gwait:g:1");
        assert_eq!(keys.groups(), "taskline:{emails}:groups");
        assert_eq!(keys.rate(), "taskline:{emails}:rate");
        assert_eq!(keys.blocked(), "taskline:{emails}:blocked");
        assert_eq!(keys.ready_pattern(), "taskline:{emails}:ready:*");
        assert_eq!(queue_registry("taskline"), "taskline:queues");
    }
}
