//! `taskline enqueue`: add one job, print its id.

use std::io::{IsTerminal, Read};

use serde_json::json;
use taskline::{Group, JobId, NewJob, UniqueMode};

use crate::cli::EnqueueArgs;
use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{print, print_json};

/// The payload text from `--payload`, `--payload-file` (`-` = stdin) or
/// piped stdin, checked to be JSON. Bad input is a usage error (exit 2),
/// found before anything is sent.
pub fn read_payload(args: &EnqueueArgs) -> Result<String, CliError> {
    let (text, source) = match (&args.payload, args.payload_file.as_deref()) {
        (Some(text), _) => (text.clone(), "--payload".to_string()),
        (None, Some("-")) => (read_stdin()?, "stdin".to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read --payload-file {path}: {e}")))?;
            (text, format!("file {path}"))
        }
        (None, None) if std::io::stdin().is_terminal() => {
            return Err(CliError::Usage(
                "no payload: pass --payload JSON, --payload-file FILE, or pipe JSON on stdin".into(),
            ));
        }
        (None, None) => (read_stdin()?, "stdin".to_string()),
    };
    if text.trim().is_empty() {
        return Err(CliError::Usage(format!(
            "the payload from {source} is empty; pass JSON such as '{{}}' or 'null' for a job without data"
        )));
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| CliError::Usage(format!("the payload from {source} is not valid JSON: {e}")))?;
    Ok(text)
}

fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::Usage(format!("cannot read the payload from stdin: {e}")))?;
    Ok(text)
}

/// Enqueues the job and prints its id (JSON: id, queue, name, state).
pub async fn enqueue(ctx: &Ctx, args: EnqueueArgs, payload: String) -> Result<(), CliError> {
    let mut job =
        NewJob::from_json(args.name.clone(), payload)?.priority(args.priority).version(args.payload_version);
    let mut delayed = false;
    if let Some(delay) = &args.delay {
        let delay = humantime::parse_duration(delay).map_err(|e| {
            CliError::Usage(format!("invalid --delay {delay:?}: {e}; write e.g. 30s, 10m, 1h 30m"))
        })?;
        delayed = !delay.is_zero();
        job = job.delay(delay);
    }
    if let Some(attempts) = args.max_attempts {
        if attempts == 0 {
            return Err(CliError::Usage("--max-attempts must be at least 1".into()));
        }
        job = job.max_attempts(attempts);
    }
    if let Some(key) = args.unique_key {
        job = job.unique(key, UniqueMode::UntilFinished);
    }
    if let Some(group) = args.group {
        job = job.group(Group::new(group));
    }
    if let Some(id) = args.id {
        job = job.id(JobId::new(id)?);
    }
    if let Some(correlation_id) = args.correlation_id {
        job = job.correlation_id(correlation_id);
    }
    let id = ctx.client.enqueue(&args.queue, job).await?;
    if ctx.json {
        let state = if delayed { "delayed" } else { "ready" };
        print_json(&json!({"id": id.as_str(), "queue": args.queue, "name": args.name, "state": state}))
    } else {
        print(id.as_str())
    }
}
