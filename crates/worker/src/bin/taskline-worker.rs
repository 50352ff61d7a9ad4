//! `taskline-worker`: runs the handlers configured in a TOML file.
//!
//! Thin by design: parse arguments, load the config, hand over to
//! [`taskline_worker::Worker::run`], and turn signals into shutdown.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use taskline_worker::config::LogFormat;
use taskline_worker::{Config, Worker, WorkerError, logging};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Runs Taskline jobs from Redis: claims them under a lease, runs their
/// handlers, retries transient failures, and dead-letters the rest.
#[derive(Debug, Parser)]
#[command(name = "taskline-worker", version)]
struct Args {
    /// The TOML configuration file (every field is documented in
    /// config/worker.toml). Env vars TASKLINE_<SECTION>__<FIELD> override it.
    #[arg(long, short, env = "TASKLINE_CONFIG", default_value = "config/worker.toml")]
    config: PathBuf,

    /// Validate the configuration, print the effective config (secrets
    /// masked) and exit, without connecting to Redis.
    #[arg(long)]
    check_config: bool,

    /// Log as JSON lines (overrides worker.log_format).
    #[arg(long)]
    json_logs: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("taskline-worker: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    // Building checks what only the running machine can tell (variables
    // that `${NAME}` references, programs on PATH), so --check-config
    // builds too. Nothing connects to Redis yet.
    let worker = match Worker::builder(config.clone()).build() {
        Ok(worker) => worker,
        Err(WorkerError::Config(mut err)) => {
            err.file = args.config.display().to_string();
            eprintln!("taskline-worker: invalid configuration: {err}");
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("taskline-worker: cannot build the worker: {err}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}", config.redacted());
        eprintln!("taskline-worker: {} is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    let format = if args.json_logs { LogFormat::Json } else { config.worker.log_format };
    logging::init(format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(worker)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = format!("{err:#}"), "worker failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(worker: Worker) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let hurry = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone(), hurry.clone()));
    let report = worker.run(shutdown, hurry).await.context("worker stopped with an error")?;
    if report.released_at_shutdown > 0 {
        info!(
            released = report.released_at_shutdown,
            "jobs still running at the deadline were released back"
        );
    }
    Ok(())
}

/// First SIGTERM or SIGINT: graceful shutdown. Second: stop waiting for
/// running jobs and release them now.
async fn watch_signals(shutdown: CancellationToken, hurry: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        warn!("cannot install signal handlers; stop the worker with SIGKILL only as a last resort");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    info!("signal received: shutting down gracefully (send it again to release running jobs now)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    warn!("second signal: releasing running jobs now");
    hurry.cancel();
}
