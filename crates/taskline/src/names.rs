//! Validated names: queues, job names, job ids and key prefixes.
//!
//! Names end up inside Redis keys, so they are checked before anything is
//! sent. A queue name becomes the Redis Cluster hash tag `{queue}`, which is
//! why braces are refused: they would change which slot the keys hash to.

use std::fmt;

use crate::error::{Error, Result};

/// Longest queue name accepted, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 100;
/// Longest job name accepted, in bytes.
pub const MAX_JOB_NAME_LEN: usize = 200;
/// Longest caller-chosen job id accepted, in bytes.
pub const MAX_JOB_ID_LEN: usize = 200;

/// A queue name that is safe to embed in Redis keys: 1 to 100 bytes of ASCII
/// letters, digits and `-_.:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    /// Validates `name` as a queue name.
    pub fn new(name: &str) -> Result<Self> {
        let reason = if name.is_empty() {
            Some("it is empty".to_string())
        } else if name.len() > MAX_QUEUE_NAME_LEN {
            Some(format!("it is {} bytes long, the limit is {MAX_QUEUE_NAME_LEN}", name.len()))
        } else {
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
                .map(|c| format!("it contains {c:?}; use only ASCII letters, digits and - _ . :"))
        };
        match reason {
            Some(reason) => Err(Error::InvalidQueueName { name: name.to_string(), reason }),
            None => Ok(Self(name.to_string())),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a job name: 1 to 200 bytes, no whitespace or control characters.
pub(crate) fn validate_job_name(name: &str) -> Result<()> {
    plain_name_problem(name, MAX_JOB_NAME_LEN)
        .map_or(Ok(()), |reason| Err(Error::InvalidJobName { name: name.to_string(), reason }))
}

/// Checks a caller-chosen job id: 1 to 200 bytes, no whitespace or control
/// characters.
pub(crate) fn validate_job_id(id: &str) -> Result<()> {
    plain_name_problem(id, MAX_JOB_ID_LEN)
        .map_or(Ok(()), |reason| Err(Error::InvalidJobId { id: id.to_string(), reason }))
}

/// What is wrong with `text` as a name of at most `max` bytes without
/// whitespace or control characters, if anything (shared with the worker's
/// configuration checks, so names are judged alike everywhere).
pub fn plain_name_problem(text: &str, max: usize) -> Option<String> {
    if text.is_empty() {
        Some("it is empty".to_string())
    } else if text.len() > max {
        Some(format!("it is {} bytes long, the limit is {max}", text.len()))
    } else {
        text.chars()
            .find(|c| c.is_whitespace() || c.is_control())
            .map(|c| format!("it contains {c:?}; whitespace and control characters are not allowed"))
    }
}

/// Checks a key prefix: non-empty ASCII without braces or whitespace, since
/// the queue's `{hash tag}` must be the first braces in every key.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    let bad = prefix.is_empty()
        || prefix.len() > 64
        || prefix.chars().any(|c| !c.is_ascii_graphic() || c == '{' || c == '}');
    if bad {
        return Err(Error::InvalidOption {
            option: "prefix",
            reason: format!("{prefix:?} must be 1 to 64 printable ASCII characters without braces or spaces"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_queue_names() {
        for name in ["emails", "a", "billing.v2", "tenant:42", "x-y_z", &"q".repeat(100)] {
            assert_eq!(QueueName::new(name).expect(name).as_str(), name);
        }
    }

    #[test]
    fn rejects_queue_names_that_would_break_keys() {
        for name in ["", "a{b", "a}b", "has space", "tab\t", "é", &"q".repeat(101)] {
            let err = QueueName::new(name).expect_err(name);
            assert!(matches!(err, Error::InvalidQueueName { .. }), "{name:?}: {err}");
        }
    }

    #[test]
    fn queue_name_error_says_what_to_do() {
        let message = QueueName::new("a b").expect_err("space").to_string();
        assert!(message.contains("use only ASCII letters"), "{message}");
    }

    #[test]
    fn job_names_and_ids() {
        assert!(validate_job_name("send_email").is_ok());
        assert!(validate_job_name("émail.envoyer").is_ok());
        assert!(validate_job_name("").is_err());
        assert!(validate_job_name("two words").is_err());
        assert!(validate_job_id("order-42").is_ok());
        assert!(validate_job_id("line\nbreak").is_err());
        assert!(validate_job_id(&"i".repeat(201)).is_err());
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("taskline").is_ok());
        assert!(validate_prefix("app:jobs").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a{b}").is_err());
        assert!(validate_prefix("a b").is_err());
    }
}
