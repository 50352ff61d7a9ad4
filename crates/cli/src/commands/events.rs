//! `taskline events`: the latest lifecycle events of a queue, and with
//! `--follow` every new one as it happens.

use std::time::Duration;

use serde_json::{Value, json};
use taskline::Event;

use crate::cli::EventsArgs;
use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{epoch_ms_text, print, print_json_line, time_ms};

/// Pause before following again after Redis went away.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Prints the latest `--count` past events, then, with `--follow`, only
/// the events newer than those. `--count 0` shows no past event: alone it
/// prints nothing, with `--follow` only what happens from now on.
pub async fn events(ctx: &Ctx, args: EventsArgs) -> Result<(), CliError> {
    ctx.require_queue(&args.queue).await?;
    let latest = ctx.client.last_events(&args.queue, args.count).await?;
    for event in &latest {
        show(ctx, event)?;
    }
    if !args.follow {
        // Only a look that asked for events and found none can tell the
        // stream is empty; `--count 0` asked for none.
        if latest.is_empty() && args.count > 0 && !ctx.json {
            print(&format!("no events in queue {} (the stream keeps only recent events)", args.queue))?;
        }
        return Ok(());
    }
    let after = match latest.last() {
        // From the last event shown.
        Some(last) => Some(last.stream_id.clone()),
        // None asked for: from the stream's end now.
        None if args.count == 0 => None,
        // None found: the stream was empty, so everything in it by now
        // arrived after the look above.
        None => Some("0-0".to_string()),
    };
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
        // A time (`due_at`): the stream holds epoch milliseconds.
        let time = field.ends_with("_at").then(|| epoch_ms_text(value)).flatten();
        let value = time.unwrap_or_else(|| value.replace('\n', " "));
        line.push_str(&format!("  {field}={value}"));
    }
    print(&line)
}

/// An event as one JSON object: the stream id, the time, the known fields
/// and every extra field as the stream holds it (times such as `due_at` in
/// epoch milliseconds, as text).
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
