//! The `command` handler kind: runs a program per job, the payload on its
//! stdin and the job's facts in its environment, and maps how it ended to
//! the job's outcome.
//!
//! | the child | outcome |
//! |---|---|
//! | exits 0 | completed; stdout, when it is JSON (up to `max_result_bytes`), is the result |
//! | exits with a code of `transient_exit_codes` (default 75, `EX_TEMPFAIL`) | transient: retried |
//! | dies by a signal | transient |
//! | is cancelled (timeout, shutdown, lost lease) | transient: SIGTERM, SIGKILL after `kill_grace` |
//! | exits with any other code | permanent: the job goes to the dead-letter queue |
//!
//! The tail of stderr is the recorded error. Lines on stderr may also
//! report progress and checkpoints (see [`crate::reports`]). The child runs in its own
//! process group, and the whole group is signalled, so grandchildren stop
//! with it (see [`crate::process_group`]).
//!
//! The child's environment is not the worker's: it gets only `PATH`, `HOME`,
//! `LANG`, `LC_ALL`, `TZ`, `TMPDIR` and `USER` from the worker (so the
//! worker's own secrets, such as its Redis URL, do not leak into every
//! command), then the configured `env`, then the job's facts
//! (`TASKLINE_JOB_ID`, ...).

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{ChildStdin, Command};
use tracing::warn;

use crate::config::{ConfigError, HandlerConfig, handler_field};
use crate::handler::{BoxFuture, Handler, HandlerResult, JobContext, JobError};
use crate::interpolate;
use crate::output::{Capped, ERROR_TEXT_BYTES, json_result};
use crate::process_group::ProcessGroup;
use crate::reports;

/// Variables a child inherits from the worker; everything else is set
/// explicitly.
pub const INHERITED_ENV: [&str; 7] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// How long the output of a child that exited is still read, when a
/// process outside its group (one that called `setsid`) holds its pipes.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// A `command` handler: one program with fixed arguments and environment.
#[derive(Debug)]
pub struct CommandHandler {
    program: PathBuf,
    args: Vec<String>,
    /// Configured variables, `${NAME}` expanded: may hold secrets, so the
    /// handler is never logged.
    env: Vec<(String, String)>,
    working_dir: Option<PathBuf>,
    kill_grace: Duration,
    transient_exit_codes: Vec<i32>,
    max_result_bytes: usize,
}

impl CommandHandler {
    /// Builds the handler of `[handlers.<name>]`: finds the program (on
    /// `PATH` for a bare name), checks `working_dir`, and expands `${NAME}`
    /// in `env` values from the process environment.
    pub fn from_config(name: &str, config: &HandlerConfig) -> Result<Self, ConfigError> {
        let field = |leaf: &[&str]| handler_field(name, leaf);
        let program = config.program.as_deref().unwrap_or_default();
        let program = find_program(program).map_err(|m| ConfigError::new(field(&["program"]), m))?;
        if let Some(dir) = &config.working_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                field(&["working_dir"]),
                format!("{} is not a directory; create it or fix the path", dir.display()),
            ));
        }
        let mut env = Vec::new();
        for (var, template) in config.env.iter() {
            let value =
                interpolate::expand_env(template).map_err(|m| ConfigError::new(field(&["env", var]), m))?;
            env.push((var.clone(), value));
        }
        Ok(Self {
            program,
            args: config.args.clone(),
            env,
            working_dir: config.working_dir.clone(),
            kill_grace: config.kill_grace_or_default(),
            transient_exit_codes: config.transient_codes(),
            max_result_bytes: config.result_limit(),
        })
    }

    fn command(&self, ctx: &JobContext) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).env_clear();
        for var in INHERITED_ENV {
            if let Some(value) = std::env::var_os(var) {
                command.env(var, value);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let facts = [
            ("TASKLINE_JOB_ID", ctx.id.to_string()),
            ("TASKLINE_JOB_NAME", ctx.name.clone()),
            ("TASKLINE_QUEUE", ctx.queue.clone()),
            ("TASKLINE_ATTEMPT", ctx.attempt.to_string()),
            ("TASKLINE_MAX_ATTEMPTS", ctx.max_attempts.to_string()),
            ("TASKLINE_PAYLOAD_VERSION", ctx.version.to_string()),
            ("TASKLINE_CORRELATION_ID", ctx.correlation_id.clone().unwrap_or_default()),
            ("TASKLINE_WORKER_ID", ctx.worker.clone()),
            // The last checkpoint (JSON), empty without one: see `reports`.
            ("TASKLINE_CHECKPOINT", ctx.checkpoint.clone().unwrap_or_default()),
        ];
        command.envs(facts);
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that signals reach its children too.
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

impl Handler for CommandHandler {
    fn handle(&self, ctx: JobContext, payload: String) -> BoxFuture<HandlerResult> {
        let command = self.command(&ctx);
        let run = Run {
            program: self.program.display().to_string(),
            kill_grace: self.kill_grace,
            transient_exit_codes: self.transient_exit_codes.clone(),
            max_result_bytes: self.max_result_bytes,
        };
        Box::pin(run.run(command, ctx, payload))
    }
}

/// What one run needs to know besides the command itself.
struct Run {
    program: String,
    kill_grace: Duration,
    transient_exit_codes: Vec<i32>,
    max_result_bytes: usize,
}

impl Run {
    async fn run(self, mut command: Command, ctx: JobContext, payload: String) -> HandlerResult {
        let program = &self.program;
        let mut child =
            command.spawn().map_err(|e| JobError::transient(format!("cannot start {program}: {e}")))?;
        let Some(group) = ProcessGroup::of(&child) else {
            return Err(JobError::transient(format!("{program} ended before it could be watched")));
        };
        let writer = tokio::spawn(write_stdin(child.stdin.take(), payload));
        let stdout = tokio::spawn(read_all(child.stdout.take(), Capped::head(self.max_result_bytes)));
        let stderr = tokio::spawn(reports::read_stderr(
            child.stderr.take(),
            Capped::tail(ERROR_TEXT_BYTES),
            ctx.clone(),
        ));
        let status = tokio::select! {
            status = child.wait() => Some(status),
            _ = ctx.cancelled() => None,
        };
        let Some(status) = status else {
            // In its own task: the runner stops waiting for this run soon
            // after cancelling it, and the grace period may be longer.
            tokio::spawn(group.terminate(child, self.kill_grace));
            writer.abort();
            return Err(JobError::transient(format!(
                "{program} was cancelled (timeout, shutdown or lost lease) and sent SIGTERM"
            )));
        };
        group.kill_leftovers();
        let status = status.map_err(|e| JobError::transient(format!("cannot wait for {program}: {e}")))?;
        writer.abort();
        let stdout = drained(stdout, "stdout").await;
        let stderr = drained(stderr, "stderr").await;
        classify(status, &stdout, &stderr, &self.transient_exit_codes)
    }
}

/// The outcome of a child that ended with `status`: see the module docs.
pub fn classify(
    status: ExitStatus,
    stdout: &Capped,
    stderr: &Capped,
    transient_codes: &[i32],
) -> HandlerResult {
    if status.success() {
        return Ok(json_result(stdout, "the command's stdout"));
    }
    let text = stderr.text();
    let detail = if text.is_empty() { "(nothing on stderr)".to_string() } else { text };
    if let Some(code) = status.code() {
        let message = format!("exit code {code}: {detail}");
        if transient_codes.contains(&code) {
            return Err(JobError::transient(message));
        }
        return Err(JobError::permanent(message).with_reason(format!("exit_{code}")));
    }
    let signal = status.signal().map_or_else(
        || "an unknown signal".to_string(),
        |n| Signal::try_from(n).map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_string()),
    );
    Err(JobError::transient(format!("killed by {signal}: {detail}")))
}

/// Writes the payload and closes stdin. A child that exits without reading
/// it all is not an error (the write fails with a broken pipe).
async fn write_stdin(stdin: Option<ChildStdin>, payload: String) {
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(payload.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
}

/// Reads `pipe` to its end into `buffer`, which keeps what it is made to.
async fn read_all(pipe: Option<impl AsyncRead + Unpin>, mut buffer: Capped) -> Capped {
    let Some(mut pipe) = pipe else { return buffer };
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return buffer,
            Ok(n) => buffer.push(&chunk[..n]),
        }
    }
}

/// What a reader task read, once its pipe closed.
async fn drained(reader: tokio::task::JoinHandle<Capped>, what: &str) -> Capped {
    match tokio::time::timeout(DRAIN_LIMIT, reader).await {
        Ok(Ok(buffer)) => buffer,
        _ => {
            warn!("the command exited but its {what} stayed open (a detached process holds it); not read");
            Capped::head(0)
        }
    }
}

/// The program to run: a path (relative to the worker's working directory)
/// or a name looked up on `PATH`, executable either way.
fn find_program(program: &str) -> Result<PathBuf, String> {
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = Path::new(program);
        if !executable(path) {
            return Err(format!("{program:?} is not an executable file; fix the path or chmod +x it"));
        }
        return std::path::absolute(path).map_err(|e| format!("{program:?}: {e}"));
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search).map(|dir| dir.join(program)).find(|path| executable(path)).ok_or_else(
        || {
            format!(
                "{program:?} is not found on PATH ({}); install it, or give its full path",
                search.to_string_lossy()
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use taskline::FailureKind;

    use super::*;

    fn text(limit: usize, bytes: &str) -> Capped {
        let mut buffer = Capped::tail(limit);
        buffer.push(bytes.as_bytes());
        buffer
    }

    #[test]
    fn exit_statuses_map_to_outcomes() {
        let out = text(100, r#"{"ok":true}"#);
        let err = text(100, "boom\n");
        let codes = [75];
        assert_eq!(
            classify(ExitStatus::from_raw(0), &out, &err, &codes),
            Ok(Some(serde_json::json!({"ok": true})))
        );
        // Raw wait statuses: the exit code is in the second byte.
        let e = classify(ExitStatus::from_raw(75 << 8), &out, &err, &codes).expect_err("75");
        assert_eq!((e.kind, e.message.as_str()), (FailureKind::Transient, "exit code 75: boom"));
        let e = classify(ExitStatus::from_raw(3 << 8), &out, &text(10, ""), &codes).expect_err("3");
        assert_eq!(
            (e.kind, e.message.as_str()),
            (FailureKind::Permanent, "exit code 3: (nothing on stderr)")
        );
        assert_eq!(e.reason.as_deref(), Some("exit_3"));
        let e = classify(ExitStatus::from_raw(9), &out, &err, &codes).expect_err("SIGKILL");
        assert_eq!((e.kind, e.message.as_str()), (FailureKind::Transient, "killed by SIGKILL: boom"));
    }

    #[test]
    fn programs_are_found_on_path_or_by_path() {
        assert!(find_program("sh").expect("sh on PATH").is_absolute());
        assert!(find_program("/bin/sh").is_ok());
        let err = find_program("no-such-program-taskline").expect_err("missing");
        assert!(err.contains("not found on PATH"), "{err}");
        let err = find_program("/etc/passwd").expect_err("not executable");
        assert!(err.contains("not an executable file"), "{err}");
    }
}
