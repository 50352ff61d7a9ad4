//! Talking to the operator on stderr: confirmations before destructive
//! actions, progress bars on long ones, and one audit line per action.
//!
//! stdout carries only the command's result (a table, a count, JSON), so
//! scripts can read it while a person still sees prompts and progress.

use std::io::{BufRead, IsTerminal, Write};
use std::time::SystemTime;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use taskline::operator::OPERATOR_CHUNK;

use crate::error::CliError;
use crate::output::time_ms;

/// Asks before `action` (e.g. `purge 12 dead jobs from queue emails`):
/// passes with `yes`; on a terminal asks and passes on `y`/`yes`; without
/// a terminal refuses, so a script cannot destroy data by accident.
pub fn confirm(action: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(CliError::Unconfirmed { action: action.to_string() });
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{action}? This cannot be undone. [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::Declined),
    }
}

/// A progress bar on stderr, drawn only on a terminal and only for work of
/// more than one chunk; otherwise it draws nothing.
pub fn progress(total: u64, what: &str) -> ProgressBar {
    if total <= OPERATOR_CHUNK as u64 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {human_pos}/{human_len} ({eta} left)")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// A spinner-less counter for work whose size is not known up front (a
/// scan): a bar that grows its length as the scan learns it.
pub fn scanning(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    progress(u64::MAX, what)
}

/// Logs what a state-changing command did, one line on stderr:
/// `taskline: 2025-01-01T00:00:00.000Z purge queue=emails purged=12 user=ops`.
pub fn audit(action: &str, details: &str) {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "?".into());
    eprintln!("taskline: {} {action} {details} user={user}", time_ms(SystemTime::now()));
}
