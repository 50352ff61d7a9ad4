//! `taskline queues`: every known queue at a glance.

use serde_json::{Value, json};
use taskline::QueueSummary;

use crate::context::Ctx;
use crate::error::CliError;
use crate::output::{Table, print, print_json, thousands};

/// Lifetime counters shown, from each queue's `meta` hash.
const COUNTERS: [&str; 7] = ["enqueued", "completed", "retried", "dead", "replayed", "purged", "drained"];

/// Prints every queue of the registry with its counts, paused flag,
/// completions in the last minute and lifetime counters.
pub async fn queues(ctx: &Ctx) -> Result<(), CliError> {
    let mut summaries = Vec::new();
    // Which node serves each queue, on a cluster or behind Sentinel.
    let mut nodes = Vec::new();
    for queue in ctx.client.queues().await? {
        summaries.push(ctx.client.queue_summary(&queue).await?);
        nodes.push(ctx.client.node_of(&queue).await?);
    }
    if ctx.json {
        let rows = summaries
            .iter()
            .zip(&nodes)
            .map(|(s, node)| {
                let mut row = summary_json(s);
                if let Some(node) = node {
                    row["node"] = json!(node);
                }
                row
            })
            .collect();
        return print_json(&Value::Array(rows));
    }
    let show_nodes = nodes.iter().any(Option::is_some);
    if summaries.is_empty() {
        let prefix = &ctx.client.options().prefix;
        return print(&format!(
            "no queues under prefix {prefix:?} (a queue appears once a job is enqueued to it; check --prefix)"
        ));
    }
    let mut columns = vec![
        "QUEUE",
        "STATE",
        ">READY",
        ">DELAYED",
        ">ACTIVE",
        ">COMPLETED",
        ">DEAD",
        ">DONE/MIN",
        ">ENQUEUED",
        ">DONE",
        ">RETRIED",
        ">DIED",
    ];
    if show_nodes {
        columns.insert(1, "NODE");
    }
    let mut table = Table::new(&columns);
    for (s, node) in summaries.iter().zip(&nodes) {
        let c = &s.counts;
        let per_minute = if s.completed_last_minute_is_lower_bound {
            format!(">={}", thousands(s.completed_last_minute))
        } else {
            thousands(s.completed_last_minute)
        };
        let mut row = vec![
            s.queue.clone(),
            if c.paused { "paused" } else { "running" }.to_string(),
            thousands(c.ready),
            thousands(c.delayed),
            thousands(c.active),
            thousands(c.completed),
            thousands(c.dead),
            per_minute,
            thousands(s.counter("enqueued")),
            thousands(s.counter("completed")),
            thousands(s.counter("retried")),
            thousands(s.counter("dead")),
        ];
        if show_nodes {
            row.insert(1, node.clone().unwrap_or_default());
        }
        table.row(row);
    }
    let mut text = table.render();
    text.push_str(
        "\nREADY..DEAD: jobs in each state now. DONE/MIN: completed in the last minute. \
         ENQUEUED, DONE, RETRIED, DIED: lifetime totals.\n",
    );
    if show_nodes {
        text.push_str("NODE: the master that serves the queue (one queue lives on one node).\n");
    }
    print(&text)
}

fn summary_json(s: &QueueSummary) -> Value {
    let c = &s.counts;
    let totals: serde_json::Map<String, Value> =
        COUNTERS.iter().map(|name| (name.to_string(), json!(s.counter(name)))).collect();
    json!({
        "queue": s.queue,
        "paused": c.paused,
        "counts": {
            "ready": c.ready,
            "delayed": c.delayed,
            "active": c.active,
            "completed": c.completed,
            "dead": c.dead,
        },
        "completed_last_minute": s.completed_last_minute,
        "completed_last_minute_is_lower_bound": s.completed_last_minute_is_lower_bound,
        "totals": totals,
    })
}
