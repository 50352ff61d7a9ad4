//! Progress and checkpoints from handlers outside Rust, as report lines:
//! a `command` child writes them on its stderr (and finds the last
//! checkpoint in its environment); an `http` endpoint streams them in its
//! 2xx response body before the result, flushing each line as it goes.
//!
//! | line | effect |
//! |---|---|
//! | `taskline:progress {"done": 120, "total": 400, "unit": "rows", "message": "..."}` | `ctx.progress` (coalesced like a Rust handler's) |
//! | `taskline:checkpoint <any JSON>` | `ctx.checkpoint`, stored before the next line is read |
//!
//! A command's next attempt gets the last checkpoint in
//! `TASKLINE_CHECKPOINT` (empty when there is none); an endpoint's, in the
//! `Taskline-Checkpoint` request header. Report lines are not part of the
//! error text (stderr) or the result (a response body); every other line
//! is. A report line can never be part of a JSON text, which has no raw
//! newlines and cannot start a line with `taskline:`. A malformed report
//! line is logged and kept as text.

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
    buffer: Capped,
    ctx: JobContext,
) -> Capped {
    let mut lines = ReportLines::new(buffer, ctx);
    let Some(mut pipe) = pipe else { return lines.finish().await };
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.push(&chunk[..n]).await,
        }
    }
    lines.finish().await
}

/// Splits a byte stream into lines as it arrives: report lines go to the
/// job's context at once (so progress is live), every other byte into the
/// buffer.
pub(crate) struct ReportLines {
    buffer: Capped,
    ctx: JobContext,
    pending: Vec<u8>,
}

impl ReportLines {
    /// Lines for `ctx`; other text into `buffer`.
    pub(crate) fn new(buffer: Capped, ctx: JobContext) -> Self {
        Self { buffer, ctx, pending: Vec::new() }
    }

    /// Takes the next chunk; handles every line it completes.
    pub(crate) async fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            handle_line(&line, &mut self.buffer, &self.ctx).await;
        }
        if self.pending.len() > MAX_LINE {
            self.buffer.push(&self.pending);
            self.pending.clear();
        }
    }

    /// True when the buffer has dropped text for its limit.
    pub(crate) fn overflowed(&self) -> bool {
        self.buffer.overflowed()
    }

    /// Handles the last, unterminated line and returns the other text.
    pub(crate) async fn finish(mut self) -> Capped {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            handle_line(&line, &mut self.buffer, &self.ctx).await;
        }
        self.buffer
    }
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
