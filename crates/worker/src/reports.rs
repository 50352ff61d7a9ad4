//! Progress and checkpoints from `command` handlers: a child reports them
//! as lines on its stderr, and finds the last checkpoint in its
//! environment.
//!
//! | stderr line | effect |
//! |---|---|
//! | `taskline:progress {"done": 120, "total": 400, "unit": "rows", "message": "..."}` | `ctx.progress` (coalesced like a Rust handler's) |
//! | `taskline:checkpoint <any JSON>` | `ctx.checkpoint`, stored before the next line is read |
//!
//! The next attempt gets the last checkpoint in `TASKLINE_CHECKPOINT`
//! (empty when there is none). These lines are not part of the error text;
//! every other line is. A malformed report line is logged and kept as
//! error text.

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tracing::warn;

use crate::handler::JobContext;
use crate::output::Capped;

/// Prefix of a progress report line.
pub const PROGRESS_PREFIX: &str = "taskline:progress ";
/// Prefix of a checkpoint line.
pub const CHECKPOINT_PREFIX: &str = "taskline:checkpoint ";

/// The longest line inspected for a report; longer text is error text.
const MAX_LINE: usize = 64 * 1024;

#[derive(Deserialize)]
struct ProgressLine {
    done: u64,
    #[serde(default)]
    total: u64,
    #[serde(default)]
    unit: String,
    message: Option<String>,
}

/// Reads a child's stderr to its end: report lines go to `ctx`, the rest
/// into `buffer`.
pub(crate) async fn read_stderr(
    pipe: Option<impl AsyncRead + Unpin>,
    mut buffer: Capped,
    ctx: JobContext,
) -> Capped {
    let Some(mut pipe) = pipe else { return buffer };
    let mut chunk = vec![0u8; 16 * 1024];
    let mut pending = Vec::new();
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            handle_line(&line, &mut buffer, &ctx).await;
        }
        if pending.len() > MAX_LINE {
            buffer.push(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        handle_line(&pending, &mut buffer, &ctx).await;
    }
    buffer
}

async fn handle_line(line: &[u8], buffer: &mut Capped, ctx: &JobContext) {
    let text = String::from_utf8_lossy(line);
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if let Some(json) = trimmed.strip_prefix(PROGRESS_PREFIX) {
        match serde_json::from_str::<ProgressLine>(json) {
            Ok(p) => {
                let unit = if p.unit.is_empty() { "steps" } else { p.unit.as_str() };
                match p.message {
                    Some(message) => ctx.progress_with_message(p.done, p.total, unit, message),
                    None => ctx.progress(p.done, p.total, unit),
                }
                return;
            }
            Err(e) => warn!(error = %e, "malformed progress line on the command's stderr"),
        }
    } else if let Some(json) = trimmed.strip_prefix(CHECKPOINT_PREFIX) {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(state) => {
                if let Err(e) = ctx.checkpoint(&state).await {
                    warn!(error = %e, "the command's checkpoint was not stored");
                }
                return;
            }
            Err(e) => warn!(error = %e, "malformed checkpoint line on the command's stderr"),
        }
    }
    buffer.push(line);
}
