//! How a job looks: as JSON, as a detailed record, as a table row.

use serde_json::{Value, json};
use taskline::{Job, JobState};

use crate::output::{Table, json_text, json_time, time, time_ms};

/// The full record as JSON. Payload, result, progress and checkpoint are
/// embedded as JSON values; times are RFC 3339 strings (UTC, ms) or null.
pub fn job_json(job: &Job) -> Value {
    let errors: Vec<Value> = job
        .errors
        .iter()
        .map(|e| {
            json!({
                "attempt": e.attempt,
                "kind": e.kind.as_str(),
                "message": e.message,
                "worker": e.worker,
                "at": time_ms(e.at),
            })
        })
        .collect();
    json!({
        "id": job.id.as_str(),
        "queue": job.queue,
        "name": job.facts.name,
        "state": job.state.as_str(),
        "payload": json_text(&job.facts.payload),
        "version": job.facts.version,
        "priority": job.facts.priority,
        "attempt": job.facts.attempt,
        "max_attempts": job.facts.max_attempts,
        "timeout_ms": job.facts.timeout.map(|t| t.as_millis() as u64),
        "backoff": job.facts.backoff.map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
        "unique_key": job.unique_key,
        "group": job.group,
        "correlation_id": job.facts.correlation_id,
        "worker": job.worker,
        "created_at": json_time(Some(job.facts.created_at)),
        "due_at": json_time(job.due_at),
        "started_at": json_time(job.started_at),
        "finished_at": json_time(job.finished_at),
        "progress": job.progress.as_deref().map(json_text),
        "checkpoint": job.facts.checkpoint.as_deref().map(json_text),
        "result": job.result.as_deref().map(json_text),
        "errors": errors,
        "dead_reason": job.dead_reason,
        "last_dead_reason": job.last_dead_reason,
        "replays": job.replays,
        "replayed_at": json_time(job.replayed_at),
        "releases": job.facts.releases,
    })
}

/// The full record for people: a field list, the payload, then every
/// attempt's error.
pub fn job_detail(job: &Job) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", job.id.to_string()),
        ("queue", job.queue.clone()),
        ("name", job.facts.name.clone()),
        ("state", state_line(job)),
        ("attempt", format!("{} of {}", job.facts.attempt, job.facts.max_attempts)),
        ("priority", job.facts.priority.to_string()),
        ("version", job.facts.version.to_string()),
        ("created", time_ms(job.facts.created_at)),
    ];
    let mut optional = |label, value: Option<String>| {
        if let Some(value) = value {
            fields.push((label, value));
        }
    };
    optional("due", job.due_at.map(time_ms));
    optional("started", job.started_at.map(time_ms));
    optional("finished", job.finished_at.map(time_ms));
    optional("worker", job.worker.clone());
    optional("correlation id", job.facts.correlation_id.clone());
    optional("unique key", job.unique_key.clone());
    optional("mutex group", job.group.clone());
    optional("timeout", job.facts.timeout.map(|t| humantime::format_duration(t).to_string()));
    optional("backoff", job.facts.backoff.map(|b| serde_json::to_string(&b).unwrap_or_default()));
    if job.replays > 0 {
        let mut line = format!("{} (last {})", job.replays, job.replayed_at.map(time_ms).unwrap_or_default());
        if let Some(reason) = &job.last_dead_reason {
            line.push_str(&format!(", it had died: {reason}"));
        }
        optional("replays", Some(line));
    }
    optional("releases", (job.facts.releases > 0).then(|| job.facts.releases.to_string()));
    optional("progress", job.progress.clone());
    optional("checkpoint", job.facts.checkpoint.clone());
    optional("result", job.result.clone());

    let width = fields.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in &fields {
        out.push_str(&format!("{label:<width$}  {value}\n"));
    }
    out.push_str("payload\n");
    out.push_str(&indent(&pretty(&job.facts.payload), "  "));
    if job.errors.is_empty() {
        out.push_str("errors: none\n");
    } else {
        out.push_str(&format!("errors ({}):\n", job.errors.len()));
        let mut table = Table::new(&[">ATTEMPT", "KIND", "AT", "WORKER", "MESSAGE"]);
        for e in &job.errors {
            table.row(vec![
                e.attempt.to_string(),
                e.kind.as_str().to_string(),
                time_ms(e.at),
                e.worker.clone(),
                e.message.replace('\n', " "),
            ]);
        }
        out.push_str(&indent(&table.render(), "  "));
    }
    out
}

/// `dead (permanent)`, `active (lease held by w1)`, ...
fn state_line(job: &Job) -> String {
    match (job.state, &job.dead_reason) {
        (JobState::Dead, Some(reason)) => format!("dead ({reason})"),
        (state, _) => state.to_string(),
    }
}

/// JSON text pretty-printed (as is when it does not parse).
fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|line| format!("{by}{line}\n")).collect()
}

/// A table of jobs in `state`, with the column that matters for it.
pub fn jobs_table(state: JobState, jobs: &[Job]) -> Table {
    let extra: &[&str] = match state {
        JobState::Ready => &[],
        JobState::Delayed => &["DUE", "LAST ERROR"],
        JobState::Active => &["STARTED", "WORKER"],
        JobState::Completed => &["FINISHED"],
        JobState::Dead => &["DIED", "REASON", "LAST ERROR"],
    };
    let mut headers = vec!["ID", "NAME", ">ATTEMPT", ">PRIO", "CREATED"];
    headers.extend_from_slice(extra);
    let mut table = Table::new(&headers);
    for job in jobs {
        let opt_time = |t: Option<std::time::SystemTime>| t.map(time).unwrap_or_default();
        let last_error = || job.errors.last().map(|e| one_line(&e.message, 60)).unwrap_or_default();
        let mut row = vec![
            job.id.to_string(),
            job.facts.name.clone(),
            format!("{}/{}", job.facts.attempt, job.facts.max_attempts),
            job.facts.priority.to_string(),
            time(job.facts.created_at),
        ];
        match state {
            JobState::Ready => {}
            JobState::Delayed => row.extend([opt_time(job.due_at), last_error()]),
            JobState::Active => {
                row.extend([opt_time(job.started_at), job.worker.clone().unwrap_or_default()])
            }
            JobState::Completed => row.push(opt_time(job.finished_at)),
            JobState::Dead => row.extend([
                opt_time(job.finished_at),
                job.dead_reason.clone().unwrap_or_default(),
                last_error(),
            ]),
        }
        table.row(row);
    }
    table
}

/// `text` on one line, cut to `max` characters with an ellipsis.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.replace(['\n', '\r'], " ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
