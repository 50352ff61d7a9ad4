//! `taskline doctor QUEUE [--repair]`: the invariant checker, and its
//! repairs.
//!
//! Exit 0 when the queue is sound (after `--repair`: when nothing remains),
//! 3 when violations are found (remain), 1 and 2 as every command.

use serde_json::{Value, json};
use taskline::{QueueReport, Repair, RepairReport, Violation};

use crate::context::Ctx;
use crate::error::CliError;
use crate::interact::audit;
use crate::output::{Table, plural, print, print_json};

/// Checks `queue` and, with `repair`, fixes what can be fixed safely.
pub async fn doctor(ctx: &Ctx, queue: &str, repair: bool) -> Result<(), CliError> {
    ctx.require_queue(queue).await?;
    if repair {
        let report = ctx.client.repair_queue(queue).await?;
        if report.repaired() > 0 {
            audit(
                "doctor-repair",
                &format!(
                    "queue={queue} repaired={} remaining={}",
                    report.repaired(),
                    report.remaining.violations.len()
                ),
            );
        }
        print_repairs(ctx, queue, &report)?;
        return verdict(
            queue,
            &report.remaining,
            "inspect each with `taskline job`, fix it by hand, then run `taskline doctor` again",
        );
    }
    let report = ctx.client.check_queue(queue).await?;
    if ctx.json {
        print_json(&json!({
            "queue": queue,
            "jobs": report.jobs,
            "sound": report.is_sound(),
            "violations": violations_json(&report.violations),
        }))?;
    } else if report.is_sound() {
        print(&sound_line(queue, &report))?;
    } else {
        print(&violations_table(&report.violations))?;
    }
    verdict(
        queue,
        &report,
        &format!(
            "run `taskline doctor {queue} --repair` to fix what can be fixed safely \
             (on a busy queue, check again first: a job that moved during the check can be reported by mistake)"
        ),
    )
}

/// Ok when `report` is sound, else [`CliError::Violations`] with `advice`.
fn verdict(queue: &str, report: &QueueReport, advice: &str) -> Result<(), CliError> {
    if report.is_sound() {
        return Ok(());
    }
    Err(CliError::Violations {
        queue: queue.to_string(),
        count: report.violations.len(),
        advice: advice.to_string(),
    })
}

fn print_repairs(ctx: &Ctx, queue: &str, report: &RepairReport) -> Result<(), CliError> {
    if ctx.json {
        return print_json(&json!({
            "queue": queue,
            "jobs": report.found.jobs,
            "violations": violations_json(&report.found.violations),
            "repairs": report.repairs.iter().map(repair_json).collect::<Vec<_>>(),
            "remaining": violations_json(&report.remaining.violations),
            "sound": report.remaining.is_sound(),
        }));
    }
    if report.repairs.is_empty() {
        return print(&sound_line(queue, &report.found));
    }
    let mut table = Table::new(&["KIND", "JOB", "REPAIR", "DETAIL"]);
    for repair in &report.repairs {
        let status = if repair.outcome.is_repaired() { "repaired" } else { "skipped" };
        table.row(vec![
            repair.violation.kind().to_string(),
            subject(&repair.violation),
            status.to_string(),
            repair.outcome.detail().to_string(),
        ]);
    }
    let mut text = table.render();
    text.push_str(&format!(
        "\nrepaired {} of {} in queue {queue}\n",
        report.repaired(),
        plural(report.repairs.len() as u64, "violation", "violations")
    ));
    if report.remaining.is_sound() {
        text.push_str(&sound_line(queue, &report.remaining));
    } else {
        text.push_str("\nstill broken:\n");
        text.push_str(&violations_table(&report.remaining.violations));
    }
    print(&text)
}

fn sound_line(queue: &str, report: &QueueReport) -> String {
    format!("queue {queue} is sound: {}, each in exactly one place", plural(report.jobs, "job", "jobs"))
}

fn violations_table(violations: &[Violation]) -> String {
    let mut table = Table::new(&["KIND", "JOB", "PROBLEM"]);
    for violation in violations {
        table.row(vec![violation.kind().to_string(), subject(violation), violation.to_string()]);
    }
    table.render()
}

/// The job id, `level N` for a hidden ready level, `group G` for a mutex
/// group's slot count.
fn subject(violation: &Violation) -> String {
    match violation {
        Violation::HiddenReadyLevel { level } => format!("level {level}"),
        Violation::GroupSlots { group, .. } => format!("group {group}"),
        other => other.job_id().unwrap_or_default().to_string(),
    }
}

fn violations_json(violations: &[Violation]) -> Vec<Value> {
    violations.iter().map(violation_json).collect()
}

fn violation_json(violation: &Violation) -> Value {
    let (level, group) = match violation {
        Violation::HiddenReadyLevel { level } => (Some(level), None),
        Violation::GroupSlots { group, .. } => (None, Some(group)),
        _ => (None, None),
    };
    json!({
        "kind": violation.kind(),
        "job_id": violation.job_id(),
        "level": level,
        "group": group,
        "problem": violation.to_string(),
    })
}

fn repair_json(repair: &Repair) -> Value {
    json!({
        "violation": violation_json(&repair.violation),
        "repaired": repair.outcome.is_repaired(),
        "detail": repair.outcome.detail(),
    })
}
