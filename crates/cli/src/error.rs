//! The CLI's errors and the exit code each one means.
//!
//! Exit codes are a contract with scripts: 0 ok, 1 operational error (Redis
//! unreachable, unknown queue, missing job, jobs not acted on, a declined
//! confirmation), 2 usage or bad input, 3 `doctor` found broken invariants.
//! Every message says what to do next.

use std::process::ExitCode;

/// Exit code of an operational error.
pub const EXIT_OPERATIONAL: u8 = 1;
/// Exit code of a usage error or bad input (also clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `doctor` when invariants are broken (after `--repair`:
/// when some remain).
pub const EXIT_VIOLATIONS: u8 = 3;

/// Everything that ends a command with a non-zero exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or input; nothing was changed.
    #[error("{0}")]
    Usage(String),

    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {reason}; is it running? set --redis-url or REDIS_URL")]
    Unreachable {
        /// The URL, password masked.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },

    /// Something answered at the address, but not in the Redis protocol (a
    /// web server, SSH, another database): most likely a wrong port.
    #[error(
        "the server at {url} did not answer as Redis; check the host and port in --redis-url or REDIS_URL"
    )]
    NotRedis {
        /// The URL, password masked.
        url: String,
    },

    /// The queue is neither registered nor has any key: most likely a typo.
    #[error("unknown queue {queue:?}: no queue of that name under prefix {prefix:?}; {hint}")]
    UnknownQueue {
        /// The name given.
        queue: String,
        /// The key prefix searched.
        prefix: String,
        /// The known queues, or what to check when there are none.
        hint: String,
    },

    /// The command ran but could not do all it was asked (a job missing, a
    /// job not dead, ...).
    #[error("{0}")]
    Failed(String),

    /// A destructive command without `--yes` while stdin is not a terminal.
    #[error(
        "refusing to {action} without confirmation: stdin is not a terminal, so nothing was changed; pass --yes to confirm"
    )]
    Unconfirmed {
        /// What would have been done.
        action: String,
    },

    /// `doctor` found broken invariants; they were printed on stdout.
    #[error("queue {queue} breaks {count} invariant(s); {advice}")]
    Violations {
        /// The queue checked.
        queue: String,
        /// How many violations remain.
        count: usize,
        /// What to do next.
        advice: String,
    },

    /// The operator answered no.
    #[error("not confirmed; nothing was changed")]
    Declined,

    /// An error from the client crate.
    #[error(transparent)]
    Client(#[from] taskline::Error),

    /// Reading input or writing output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        use taskline::Error as E;
        let code = match self {
            CliError::Usage(_) | CliError::Unconfirmed { .. } => EXIT_USAGE,
            CliError::Violations { .. } => EXIT_VIOLATIONS,
            CliError::Client(
                E::InvalidQueueName { .. }
                | E::InvalidJobName { .. }
                | E::InvalidJobId { .. }
                | E::InvalidOption { .. }
                | E::InvalidPayload(_)
                | E::PayloadTooLarge { .. },
            ) => EXIT_USAGE,
            _ => EXIT_OPERATIONAL,
        };
        ExitCode::from(code)
    }

    /// True when stdout was closed under us (`taskline events | head`):
    /// not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// Rewrites a connection failure from the client crate as
    /// [`CliError::Unreachable`], or a reply that is not the Redis protocol
    /// as [`CliError::NotRedis`], naming `url`.
    pub fn with_url(self, url: &str) -> CliError {
        match self {
            // The parser's own message spans lines and names byte values:
            // of no use to an operator who typed the wrong port.
            CliError::Client(taskline::Error::Redis(err))
                if matches!(err.kind(), redis::ErrorKind::Parse) =>
            {
                CliError::NotRedis { url: mask_password(url) }
            }
            CliError::Client(err) if err.is_connection_error() => {
                CliError::Unreachable { url: mask_password(url), reason: connection_reason(&err) }
            }
            other => other,
        }
    }
}

/// What a connection error says, without the client crate's own advice.
fn connection_reason(err: &taskline::Error) -> String {
    match err {
        taskline::Error::Redis(e) => e.to_string(),
        taskline::Error::ConnectTimeout(d) => {
            format!("no connection within {}", humantime::format_duration(*d))
        }
        other => other.to_string(),
    }
}

/// The one way Taskline masks a URL's secrets (the client crate's).
pub use taskline::connection::mask_url as mask_password;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_password("redis://u:p@h:1/0"), "redis://u:****@h:1/0");
        assert_eq!(mask_password("rediss://:p@h"), "rediss://:****@h");
        assert_eq!(mask_password("redis://h:6379"), "redis://h:6379");
        assert_eq!(mask_password("unix:///s.sock?db=1&pass=x"), "unix:///s.sock?db=1&pass=****");
    }
}
