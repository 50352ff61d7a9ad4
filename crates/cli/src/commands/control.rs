//! `taskline pause | resume | drain`: a queue's flow.

use serde_json::json;

use crate::context::Ctx;
use crate::error::CliError;
use crate::interact::{audit, confirm, progress};
use crate::output::{plural, print, print_json};

/// Pauses or resumes a queue across all workers.
pub async fn set_paused(ctx: &Ctx, queue: &str, paused: bool) -> Result<(), CliError> {
    ctx.require_queue(queue).await?;
    if paused {
        ctx.client.pause(queue).await?;
    } else {
        ctx.client.resume(queue).await?;
    }
    let verb = if paused { "paused" } else { "resumed" };
    audit(if paused { "pause" } else { "resume" }, &format!("queue={queue}"));
    if ctx.json {
        print_json(&json!({"queue": queue, "paused": paused}))
    } else if paused {
        print(&format!("{verb} queue {queue}: workers lease nothing from it until `taskline resume {queue}`"))
    } else {
        print(&format!("{verb} queue {queue}"))
    }
}

/// Deletes every ready job of a queue, after confirmation.
pub async fn drain(ctx: &Ctx, queue: &str, yes: bool) -> Result<(), CliError> {
    ctx.require_queue(queue).await?;
    let ready = ctx.client.counts(queue).await?.ready;
    if ready > 0 {
        confirm(&format!("delete {} from queue {queue}", plural(ready, "ready job", "ready jobs")), yes)?;
    }
    let bar = progress(ready, "draining");
    let drained = ctx.client.drain_ready_with_progress(queue, |handled| bar.set_position(handled)).await?;
    bar.finish_and_clear();
    if drained.drained + drained.skipped > 0 {
        audit("drain", &format!("queue={queue} drained={} skipped={}", drained.drained, drained.skipped));
    }
    if ctx.json {
        return print_json(&json!({"queue": queue, "drained": drained.drained, "skipped": drained.skipped}));
    }
    let mut text =
        format!("drained {} from queue {queue}", plural(drained.drained, "ready job", "ready jobs"));
    if drained.skipped > 0 {
        text.push_str(&format!(
            " (and dropped {} without a ready job behind them)",
            plural(drained.skipped, "stray entry", "stray entries")
        ));
    }
    print(&text)
}
