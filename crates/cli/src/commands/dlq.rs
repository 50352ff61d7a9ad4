//! `taskline dlq list | show | replay | purge`: the dead letter queue.
//!
//! Replay and purge act on ids, on `--all`, or on the dead jobs matching
//! filters; the selection is made first (a read-only scan), then acted on
//! in chunks of 1,000 ids with a progress bar on a terminal. Purge asks for
//! confirmation. Both log one audit line on stderr.

use std::time::SystemTime;

use serde_json::{Value, json};
use taskline::operator::OPERATOR_CHUNK;
use taskline::{DeadFilter, JobId, JobState};

use crate::cli::{FilterArgs, SelectArgs};
use crate::commands::job_id;
use crate::context::Ctx;
use crate::error::CliError;
use crate::interact::{audit, confirm, progress, scanning};
use crate::output::{plural, print, print_json, thousands};
use crate::view::{job_detail, job_json, jobs_table};

/// Lists dead jobs matching the filters, oldest death first.
pub async fn list(ctx: &Ctx, queue: &str, filter: &FilterArgs, limit: usize) -> Result<(), CliError> {
    ctx.require_queue(queue).await?;
    let filter = dead_filter(ctx, filter).await?;
    let limit = (limit > 0).then_some(limit);
    let found = ctx.client.find_dead(queue, &filter, limit).await?;
    if ctx.json {
        return print_json(&Value::Array(found.jobs.iter().map(job_json).collect()));
    }
    if found.jobs.is_empty() {
        let which = if filter.is_empty() { "" } else { " match" };
        return print(&format!("no dead jobs{which} in queue {queue}"));
    }
    let mut text = jobs_table(JobState::Dead, &found.jobs).render();
    let shown = found.jobs.len() as u64;
    let (one, many) = if filter.is_empty() {
        ("dead job", "dead jobs")
    } else {
        ("matching dead job", "matching dead jobs")
    };
    if shown < found.matched {
        text.push_str(&format!(
            "(showing {} of {}; --limit 0 shows all)\n",
            thousands(shown),
            plural(found.matched, one, many)
        ));
    } else {
        text.push_str(&format!("({})\n", plural(shown, one, many)));
    }
    print(&text)
}

/// Prints one dead job's full record; a job that is not dead is an error.
pub async fn show(ctx: &Ctx, queue: &str, id: &str) -> Result<(), CliError> {
    let id = job_id(id)?;
    ctx.require_queue(queue).await?;
    let job = ctx.client.get_job(queue, &id).await?;
    if job.state != JobState::Dead {
        return Err(CliError::Failed(format!(
            "job {id} of queue {queue} is {}, not in the dead letter queue; `taskline job {queue} {id}` shows it",
            job.state
        )));
    }
    if ctx.json { print_json(&job_json(&job)) } else { print(&job_detail(&job)) }
}

/// Replays the selected dead jobs: back to ready, fresh attempt budget,
/// history kept.
pub async fn replay(ctx: &Ctx, select: SelectArgs) -> Result<(), CliError> {
    let queue = select.queue.clone();
    let selection = Selection::parse(ctx, &select).await?;
    ctx.require_queue(&queue).await?;
    let ids = selection.ids(ctx, &queue).await?;
    if ids.is_empty() {
        return report(ctx, "replayed", 0, &queue, &[], &selection).await;
    }
    let bar = progress(ids.len() as u64, "replaying");
    let (mut replayed, mut not_dead) = (0u64, Vec::new());
    for chunk in ids.chunks(OPERATOR_CHUNK) {
        let done = ctx.client.replay(&queue, chunk).await?;
        replayed += u64::from(done.replayed);
        not_dead.extend(done.not_dead);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    audit("replay", &format!("queue={queue} replayed={replayed} not_dead={}", not_dead.len()));
    report(ctx, "replayed", replayed, &queue, &not_dead, &selection).await
}

/// Purges the selected dead jobs for good, after confirmation.
pub async fn purge(ctx: &Ctx, select: SelectArgs, yes: bool) -> Result<(), CliError> {
    let queue = select.queue.clone();
    let selection = Selection::parse(ctx, &select).await?;
    ctx.require_queue(&queue).await?;
    let ids = selection.ids(ctx, &queue).await?;
    if ids.is_empty() {
        return report(ctx, "purged", 0, &queue, &[], &selection).await;
    }
    confirm(&format!("purge {} from queue {queue}", plural(ids.len() as u64, "dead job", "dead jobs")), yes)?;
    let bar = progress(ids.len() as u64, "purging");
    let (mut purged, mut not_dead) = (0u64, Vec::new());
    for chunk in ids.chunks(OPERATOR_CHUNK) {
        let done = ctx.client.purge_dead(&queue, chunk).await?;
        purged += u64::from(done.purged);
        not_dead.extend(done.not_dead);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    audit("purge", &format!("queue={queue} purged={purged} not_dead={}", not_dead.len()));
    report(ctx, "purged", purged, &queue, &not_dead, &selection).await
}

/// Prints the outcome of a replay or purge. Ids named on the command line
/// that were not dead make the command fail (exit 1) after the rest was
/// done; for a selection by filter that only means someone else moved them
/// meanwhile, which is reported but not an error.
async fn report(
    ctx: &Ctx,
    verb: &str,
    done: u64,
    queue: &str,
    not_dead: &[JobId],
    selection: &Selection,
) -> Result<(), CliError> {
    if ctx.json {
        let ids: Vec<&str> = not_dead.iter().map(JobId::as_str).collect();
        print_json(&json!({ verb: done, "queue": queue, "not_dead": ids }))?;
    } else {
        print(&format!("{verb} {} from queue {queue}", plural(done, "dead job", "dead jobs")))?;
    }
    if not_dead.is_empty() {
        return Ok(());
    }
    let states = ctx.client.get_jobs(queue, not_dead).await?;
    let described: Vec<String> = not_dead
        .iter()
        .zip(states)
        .map(|(id, job)| match job {
            Some(job) => format!("{id} ({})", job.state),
            None => format!("{id} (no such job)"),
        })
        .collect();
    let message = format!("not in the dead letter queue, left alone: {}", described.join(", "));
    match selection {
        Selection::Ids(_) => Err(CliError::Failed(message)),
        Selection::Matching(_) => {
            eprintln!("taskline: note: {message} (moved by someone else during this command)");
            Ok(())
        }
    }
}

/// Which dead jobs a replay or purge acts on.
enum Selection {
    /// These ids.
    Ids(Vec<JobId>),
    /// Every dead job matching the filter (`--all`: an empty filter).
    Matching(DeadFilter),
}

impl Selection {
    /// Ids, `--all`, or filters: exactly one kind, else a usage error.
    async fn parse(ctx: &Ctx, select: &SelectArgs) -> Result<Selection, CliError> {
        let filtered = !select.filter.is_empty();
        match (!select.ids.is_empty(), select.all, filtered) {
            (true, false, false) => {
                Ok(Selection::Ids(select.ids.iter().map(|id| job_id(id)).collect::<Result<_, _>>()?))
            }
            (false, true, false) => Ok(Selection::Matching(DeadFilter::default())),
            (false, false, true) => Ok(Selection::Matching(dead_filter(ctx, &select.filter).await?)),
            (false, false, false) => Err(CliError::Usage(
                "say which dead jobs: job ids, --all, or filters (--name, --error-contains, --kind, --since)"
                    .into(),
            )),
            _ => Err(CliError::Usage(
                "give job ids, --all, or filters (--name, --error-contains, --kind, --since), not a mix"
                    .into(),
            )),
        }
    }

    /// The ids selected, scanning the dead letter queue when filtered.
    async fn ids(&self, ctx: &Ctx, queue: &str) -> Result<Vec<JobId>, CliError> {
        match self {
            Selection::Ids(ids) => Ok(ids.clone()),
            Selection::Matching(filter) => {
                let bar = scanning("selecting");
                let ids = ctx
                    .client
                    .find_dead_ids(queue, filter, |seen, total| {
                        bar.set_length(total);
                        bar.set_position(seen);
                    })
                    .await?;
                bar.finish_and_clear();
                Ok(ids)
            }
        }
    }
}

/// The client's filter from the command line's; `--since` is a duration
/// back from now on the Redis server's clock, or an RFC 3339 time.
async fn dead_filter(ctx: &Ctx, args: &FilterArgs) -> Result<DeadFilter, CliError> {
    let since = match &args.since {
        None => None,
        Some(text) => Some(match parse_time(text) {
            Some(t) => t,
            None => {
                let ago = humantime::parse_duration(text).map_err(|_| {
                    CliError::Usage(format!(
                        "invalid --since {text:?}: write a duration back from now (30m, 2h, 7d) \
                         or an RFC 3339 time (2025-01-31T08:00:00Z)"
                    ))
                })?;
                let now = ctx.client.server_time().await?;
                now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH)
            }
        }),
    };
    Ok(DeadFilter {
        name: args.name.clone(),
        error_contains: args.error_contains.clone(),
        since,
        kind: args.kind.clone(),
    })
}

/// An RFC 3339 time: `2025-01-31T08:00:00Z`, with fractions, or with a
/// `+02:00` style offset. Without an offset (`2025-01-31 08:00:00`, or a
/// date alone) it is UTC, like every time the CLI prints.
fn parse_time(text: &str) -> Option<SystemTime> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t.into());
    }
    let pieces = jiff::fmt::temporal::Pieces::parse(text).ok()?;
    if pieces.offset().is_some() || pieces.time_zone_annotation().is_some() {
        // An offset the parse above refused (`+02:60`): not a time to guess at.
        return None;
    }
    let civil = pieces.date().to_datetime(pieces.time().unwrap_or_default());
    let utc = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(utc.timestamp().into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_times_with_offsets() {
        let utc = parse_time("2025-01-31T06:00:00Z").expect("utc");
        assert_eq!(parse_time("2025-01-31T08:00:00+02:00"), Some(utc));
        assert_eq!(parse_time("2025-01-31T01:00:00-05:00"), Some(utc));
        assert_eq!(parse_time("2025-01-31 06:00:00"), Some(utc), "no offset: UTC");
        assert_eq!(parse_time("2025-01-31T00:00:00Z"), parse_time("2025-01-31"));
        let fraction = parse_time("2025-01-31T06:00:00.250Z").expect("fraction");
        assert_eq!(fraction.duration_since(utc).ok(), Some(Duration::from_millis(250)));
        assert_eq!(parse_time("2025-01-31T08:00:00+02:60"), None, "no such offset");
        assert_eq!(parse_time("2025-01-31T08:00:00[Europe/Paris]"), None, "a zone, no offset: not guessed");
        assert_eq!(parse_time("2h"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
