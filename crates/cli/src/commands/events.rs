//! `taskline events`: the latest lifecycle events of a queue, and with
//! `--follow` every new one as it happens.

use std::time::Duration;

use serde_json::{Value, json};
use taskline::Event;

use crate::cli::EventsArgs;
use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{print, print_json_line, time_ms};

/// Pause before following again after Redis went away.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Prints the latest `--count` events, then follows when asked.
pub async fn events(ctx: &Ctx, args: EventsArgs) -> Result<(), CliError> {
    ctx.require_queue(&args.queue).await?;
    let latest = ctx.client.last_events(&args.queue, args.count).await?;
    for event in &latest {
        show(ctx, event)?;
    }
    if !args.follow {
        if latest.is_empty() && !ctx.json {
            print(&format!("no events in queue {} (the stream keeps only recent events)", args.queue))?;
        }
        return Ok(());
    }
    // From the last event shown; with none shown, from the stream's start:
    // everything in it now arrived after the (empty) look above.
    let after = Some(latest.last().map_or_else(|| "0-0".to_string(), |e| e.stream_id.clone()));
    let mut follower = ctx.client.follow_events(&args.queue, after).await?;
    loop {
        match follower.next_batch().await {
            Ok(batch) => {
                for event in &batch {
                    show(ctx, event)?;
                }
            }
            Err(err) if err.is_connection_error() => {
                eprintln!("taskline: lost Redis ({err}); following again in {}s", RETRY_PAUSE.as_secs());
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn show(ctx: &Ctx, event: &Event) -> Result<(), CliError> {
    if ctx.json {
        return print_json_line(&event_json(event));
    }
    let mut line = format!("{}  {:<9}  {}  {}", time_ms(event.at), event.event, event.job_id, event.name);
    if event.attempt > 0 {
        line.push_str(&format!("  attempt={}", event.attempt));
    }
    if let Some(correlation_id) = &event.correlation_id {
        line.push_str(&format!("  correlation_id={correlation_id}"));
    }
    for (field, value) in &event.extra {
        line.push_str(&format!("  {field}={}", value.replace('\n', " ")));
    }
    print(&line)
}

/// An event as one JSON object: the stream id, the time, the known fields
/// and every extra field.
fn event_json(event: &Event) -> Value {
    let mut object = json!({
        "stream_id": event.stream_id,
        "at": time_ms(event.at),
        "event": event.event,
        "id": event.job_id,
        "name": event.name,
        "attempt": event.attempt,
        "correlation_id": event.correlation_id,
    });
    if let Value::Object(map) = &mut object {
        for (field, value) in &event.extra {
            map.entry(field.clone()).or_insert_with(|| Value::String(value.clone()));
        }
    }
    object
}
