//! `taskline`: the operator's tool for Taskline queues.
//!
//! Thin by design: parse the command line ([`cli`]), connect ([`context`]),
//! run one command ([`commands`]), and turn the outcome into an exit code
//! ([`error`]): 0 ok, 1 operational error, 2 usage or bad input. Every
//! Redis access goes through the `taskline` client crate.
//!
//! # Layout
//!
//! - [`cli`]: the clap definitions (every flag and its help).
//! - [`commands`]: one module per command group.
//! - [`context`]: the connected client, the unknown-queue check.
//! - [`view`]: a job as JSON, as a detailed record, as table rows.
//! - [`output`]: tables, times, JSON, stdout.
//! - [`interact`]: confirmations, progress bars, the audit line (stderr).
//! - [`error`]: the error enum and its exit codes.
//! - [`serve`]: `taskline serve`, the HTTP API for frontends and its demo page.

mod cli;
mod commands;
mod context;
mod error;
mod interact;
mod output;
mod serve;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("taskline: error: cannot start the async runtime: {err}");
            return ExitCode::from(error::EXIT_OPERATIONAL);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("taskline: error: {err}");
            err.exit_code()
        }
    }
}
