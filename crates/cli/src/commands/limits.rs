//! `taskline limits`: show a queue's queue-wide limits, or override them at
//! run time (see `taskline::flow`).

use serde_json::json;
use taskline::{FlowLimits, FlowSettings, RateLimit};

use crate::cli::LimitsArgs;
use crate::context::Ctx;
use crate::error::CliError;
use crate::interact::audit;
use crate::output::{print, print_json};

/// What the command line asks to change; nothing set shows the limits.
#[derive(Debug, Default)]
pub struct Changes {
    /// `--rate`: `Some(None)` lifts the limit.
    rate: Option<Option<RateLimit>>,
    /// `--concurrency`: `Some(None)` lifts the limit.
    concurrency: Option<Option<u32>>,
    /// `--clear`.
    clear: bool,
}

/// Parses `--rate` and `--concurrency` before Redis is contacted, so bad
/// input is exit 2 even when Redis is down.
pub fn parse_changes(args: &LimitsArgs) -> Result<Changes, CliError> {
    let rate = match args.rate.as_deref() {
        None => None,
        Some("none") => Some(None),
        Some(text) => Some(Some(text.parse::<RateLimit>()?)),
    };
    let concurrency = match args.concurrency.as_deref() {
        None => None,
        Some("none") => Some(None),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n > 0 => Some(Some(n)),
            _ => {
                return Err(CliError::Usage(format!(
                    "--concurrency {text:?}: give a number of jobs of at least 1, or `none` for no limit"
                )));
            }
        },
    };
    Ok(Changes { rate, concurrency, clear: args.clear })
}

/// Applies the changes (if any), then shows the limits in force.
pub async fn limits(ctx: &Ctx, queue: &str, changes: Changes) -> Result<(), CliError> {
    ctx.require_queue(queue).await?;
    let client = &ctx.client;
    if changes.clear {
        client.clear_runtime_limits(queue).await?;
        audit("limits", &format!("queue={queue} clear"));
    }
    if let Some(rate) = changes.rate {
        client.set_rate_limit(queue, rate).await?;
        audit("limits", &format!("queue={queue} rate={}", describe_rate(rate)));
    }
    if let Some(concurrency) = changes.concurrency {
        client.set_global_concurrency(queue, concurrency).await?;
        audit("limits", &format!("queue={queue} concurrency={}", describe_count(concurrency)));
    }
    let settings = client.flow_settings(queue).await?;
    if ctx.json {
        return print_json(&to_json(queue, &settings));
    }
    print(&render(queue, &settings))
}

fn describe_rate(rate: Option<RateLimit>) -> String {
    rate.map_or_else(|| "none".to_string(), |r| r.to_string())
}

fn describe_count(n: Option<u32>) -> String {
    n.map_or_else(|| "none".to_string(), |n| n.to_string())
}

fn describe(limits: &FlowLimits) -> (String, String) {
    (describe_rate(limits.rate), describe_count(limits.concurrency))
}

fn render(queue: &str, s: &FlowSettings) -> String {
    let (rate, concurrency) = describe(&s.effective);
    let (config_rate, config_concurrency) = describe(&s.configured);
    let source = |overridden: bool| if overridden { "runtime override" } else { "workers' config" };
    let share = match s.share_every {
        0 => "strict priority".to_string(),
        n => format!("each lower level gets 1 job in {n}"),
    };
    let mut text = format!(
        "queue {queue}\n  rate limit          {rate:<12} ({})\n  global concurrency  {concurrency:<12} ({})\n  priority share      {share}",
        source(s.runtime_rate.is_some()),
        source(s.runtime_concurrency.is_some()),
    );
    if s.runtime_rate.is_some() || s.runtime_concurrency.is_some() {
        text.push_str(&format!(
            "\n  configured          rate {config_rate}, concurrency {config_concurrency} (`taskline limits {queue} --clear` returns to it)"
        ));
    }
    text
}

fn to_json(queue: &str, s: &FlowSettings) -> serde_json::Value {
    let limits = |l: &FlowLimits| {
        json!({
            "rate": l.rate.map(|r| json!({"max": r.max, "per_ms": r.per.as_millis() as u64})),
            "concurrency": l.concurrency,
        })
    };
    json!({
        "queue": queue,
        "effective": limits(&s.effective),
        "configured": limits(&s.configured),
        "rate_overridden": s.runtime_rate.is_some(),
        "concurrency_overridden": s.runtime_concurrency.is_some(),
        "priority_share_every": s.share_every,
    })
}
