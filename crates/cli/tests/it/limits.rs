//! `taskline limits`: show the queue-wide limits, override them at run
//! time, clear the overrides; bad input is exit 2 before Redis is asked.

use std::time::Duration;

use serde_json::json;
use taskline::{FlowLimits, RateLimit};

use crate::support::{Env, claim_options};

#[tokio::test]
async fn limits_are_shown_overridden_and_cleared() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;
    let configured =
        FlowLimits { rate: Some(RateLimit { max: 100, per: Duration::from_secs(1) }), concurrency: None };
    env.client.apply_configured_flow("emails", &configured, 20).await.expect("a worker's config");

    let shown = env.run(&["limits", "emails"]).ok();
    assert!(shown.stdout.contains("rate limit          100/1000ms"), "{}", shown.stdout);
    assert!(shown.stdout.contains("(workers' config)"), "{}", shown.stdout);
    assert!(shown.stdout.contains("1 job in 20"), "{}", shown.stdout);

    let run = env.run(&["limits", "emails", "--rate", "1/1m", "--concurrency", "3", "--json"]).ok();
    assert!(run.stderr.contains("limits queue=emails rate=1/60000ms"), "audit line: {}", run.stderr);
    let json = run.json();
    assert_eq!(json["effective"], json!({"rate": {"max": 1, "per_ms": 60_000}, "concurrency": 3}));
    assert_eq!(json["configured"]["rate"], json!({"max": 100, "per_ms": 1_000}));
    assert_eq!(
        (json["rate_overridden"].clone(), json["concurrency_overridden"].clone()),
        (json!(true), json!(true))
    );
    env.ready("emails", "send", json!({})).await;
    let claimed = env.client.claim("emails", &claim_options(5)).await.expect("claim");
    assert_eq!(claimed.jobs.len(), 1, "the override is in force for every worker at once");

    let shown = env.run(&["limits", "emails"]).ok();
    assert!(shown.stdout.contains("--clear"), "the way back is shown: {}", shown.stdout);
    let json = env.run(&["limits", "emails", "--clear", "--json"]).ok().json();
    assert_eq!(json["effective"]["rate"], json!({"max": 100, "per_ms": 1_000}));
    assert_eq!(json["effective"]["concurrency"], json!(null));

    let json = env.run(&["limits", "emails", "--rate", "none", "--json"]).ok().json();
    assert_eq!(json["effective"]["rate"], json!(null), "`none` lifts the limit");
}

#[tokio::test]
async fn bad_limits_are_usage_errors_that_change_nothing() {
    let env = Env::start().await;
    env.ready("emails", "send", json!({})).await;
    for (args, needle) in [
        (vec!["limits", "emails", "--rate", "fast"], "N/PERIOD"),
        (vec!["limits", "emails", "--rate", "0/1s"], "pause the queue instead"),
        (vec!["limits", "emails", "--concurrency", "0"], "at least 1"),
        (vec!["limits", "emails", "--concurrency", "lots"], "at least 1"),
        (vec!["limits", "emails", "--clear", "--rate", "5/1s"], "cannot be used with"),
    ] {
        let run = env.run(&args).code(2);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    let settings = env.client.flow_settings("emails").await.expect("settings");
    assert_eq!(settings.effective, FlowLimits::default(), "nothing was written");
    let run = env.run(&["limits", "emials", "--rate", "5/1s"]).code(1);
    assert!(run.stderr.contains("unknown queue \"emials\""), "{}", run.stderr);
}
