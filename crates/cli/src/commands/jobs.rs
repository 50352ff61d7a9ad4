//! `taskline jobs` (a list) and `taskline job` (one full record).

use serde_json::Value;
use taskline::JobState;
use taskline::operator::OPERATOR_CHUNK;

use crate::cli::JobsArgs;
use crate::commands::job_id;
use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{plural, print, print_json};
use crate::view::{job_detail, job_json, jobs_table};

/// Lists up to `--limit` jobs of a queue in one state, in the order the
/// state keeps them (ready: claim order; delayed: due time; active: lease
/// deadline; completed and dead: oldest first), optionally by name.
pub async fn jobs(ctx: &Ctx, args: JobsArgs) -> Result<(), CliError> {
    let state: JobState = args.state.parse().map_err(CliError::Usage)?;
    ctx.require_queue(&args.queue).await?;
    let mut found = Vec::new();
    let mut offset = 0;
    while (found.len() as u64) < args.limit {
        // Without a name filter every job listed is shown: ask for just enough.
        let page = match args.name {
            None => args.limit - found.len() as u64,
            Some(_) => OPERATOR_CHUNK as u64,
        };
        let ids = ctx.client.list_jobs(&args.queue, state, offset, page).await?;
        offset += ids.len() as u64;
        let done = (ids.len() as u64) < page;
        for job in ctx.client.get_jobs(&args.queue, &ids).await?.into_iter().flatten() {
            if args.name.as_ref().is_none_or(|name| *name == job.facts.name)
                && (found.len() as u64) < args.limit
            {
                found.push(job);
            }
        }
        if done {
            break;
        }
    }
    if ctx.json {
        return print_json(&Value::Array(found.iter().map(job_json).collect()));
    }
    if found.is_empty() {
        let which = args.name.map(|n| format!(" named {n:?}")).unwrap_or_default();
        return print(&format!("no {state} jobs{which} in queue {}", args.queue));
    }
    let mut text = jobs_table(state, &found).render();
    if found.len() as u64 == args.limit {
        text.push_str(&format!("(first {}; --limit to see more)\n", plural(args.limit, "job", "jobs")));
    }
    print(&text)
}

/// Prints one job's full record.
pub async fn job(ctx: &Ctx, queue: &str, id: &str) -> Result<(), CliError> {
    let id = job_id(id)?;
    ctx.require_queue(queue).await?;
    let job = ctx.client.get_job(queue, &id).await?;
    if ctx.json { print_json(&job_json(&job)) } else { print(&job_detail(&job)) }
}
