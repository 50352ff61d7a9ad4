//! One module per command group; [`run`] dispatches a parsed command line.

mod control;
mod dlq;
mod doctor;
mod enqueue;
mod events;
mod jobs;
mod limits;
mod queues;

use crate::cli::{Cli, Command, DlqCommand};
use crate::context::Ctx;
use crate::error::CliError;

/// Connects and runs the command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    // Inputs that need no Redis are checked first, so bad input is exit 2
    // even when Redis is down.
    let payload = match &cli.command {
        Command::Enqueue(args) => Some(enqueue::read_payload(args)?),
        Command::Serve(args) => {
            crate::serve::check(args)?;
            None
        }
        _ => None,
    };
    let limit_changes = match &cli.command {
        Command::Limits(args) => Some(limits::parse_changes(args)?),
        _ => None,
    };
    let ctx = Ctx::connect(&cli).await?;
    let result = match cli.command {
        Command::Queues => queues::queues(&ctx).await,
        Command::Jobs(args) => jobs::jobs(&ctx, args).await,
        Command::Job { queue, id } => jobs::job(&ctx, &queue, &id).await,
        Command::Enqueue(args) => enqueue::enqueue(&ctx, args, payload.unwrap_or_default()).await,
        Command::Dlq(DlqCommand::List { queue, filter, limit }) => {
            dlq::list(&ctx, &queue, &filter, limit).await
        }
        Command::Dlq(DlqCommand::Show { queue, id }) => dlq::show(&ctx, &queue, &id).await,
        Command::Dlq(DlqCommand::Replay(select)) => dlq::replay(&ctx, select).await,
        Command::Dlq(DlqCommand::Purge { select, yes }) => dlq::purge(&ctx, select, yes).await,
        Command::Pause { queue } => control::set_paused(&ctx, &queue, true).await,
        Command::Resume { queue } => control::set_paused(&ctx, &queue, false).await,
        Command::Limits(args) => limits::limits(&ctx, &args.queue, limit_changes.unwrap_or_default()).await,
        Command::Drain { queue, yes } => control::drain(&ctx, &queue, yes).await,
        Command::Events(args) => events::events(&ctx, args).await,
        Command::Serve(args) => crate::serve::serve(&ctx, args).await,
        Command::Doctor { queue, repair } => doctor::doctor(&ctx, &queue, repair).await,
    };
    result.map_err(|err| err.with_url(&ctx.url))
}

/// Parses a job id argument (bad ids are exit 2).
fn job_id(id: &str) -> Result<taskline::JobId, CliError> {
    Ok(taskline::JobId::new(id)?)
}
