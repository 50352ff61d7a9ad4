//! Scenarios behind what the chaos runs found, reduced to one client and
//! one `redis-server`. Each names its finding in RELIABILITY.md. A scenario
//! that still fails is `#[ignore]`d with the reason, so CI stays green and
//! `cargo test -p taskline-chaos --test findings -- --ignored` shows it;
//! remove the `ignore` with the fix.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use taskline::{ClaimOptions, Client, NewJob};
use taskline_testkit::RedisServer;

/// Finding F1. After a Redis restart the server accepts connections while
/// it replays its AOF and answers every command with `LOADING`. The worker
/// resends an outcome only when `Error::is_connection_error()` says so, and
/// that is false for `LOADING`: the worker drops the completion ("could not
/// record the outcome; the lease will expire and the job run again") and
/// the job runs a second time. Nothing is lost, but every outcome sent
/// during a restart's load becomes a needless duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_refused_while_redis_loads_its_aof_is_retryable() {
    let server =
        Arc::new(RedisServer::builder().appendonly(true).config("enable-debug-command", "yes").start());
    let client = Client::connect(&server.url()).await.expect("connect");
    client.enqueue("f1", NewJob::new("x", &serde_json::json!({})).expect("job")).await.expect("enqueue");
    let options = ClaimOptions { count: 1, lease: Duration::from_secs(120), worker: "w1".into() };
    let claim = client.claim("f1", &options).await.expect("claim");
    let lease = claim.jobs[0].lease.clone();

    // Enough data that replaying the AOF takes a while, then into the AOF.
    let mut conn = server.connection().await;
    for batch in 0..15 {
        let _: () = redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(100_000)
            .arg(format!("filler{batch}"))
            .arg(64)
            .query_async(&mut conn)
            .await
            .expect("populate");
    }
    let _: String = redis::cmd("BGREWRITEAOF").query_async(&mut conn).await.expect("rewrite");
    loop {
        let info: String = redis::cmd("INFO").arg("persistence").query_async(&mut conn).await.expect("info");
        if info.contains("aof_rewrite_in_progress:0") && !info.contains("aof_rewrite_scheduled:1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let restarted = Arc::new(AtomicBool::new(false));
    let (s, done) = (server.clone(), restarted.clone());
    let restart = tokio::task::spawn_blocking(move || {
        s.restart();
        done.store(true, Ordering::SeqCst);
    });
    let mut refused = Vec::new();
    let mut landed = false;
    while !landed {
        match client.complete(&lease, None).await {
            Ok(_) => landed = true,
            Err(err) if err.is_connection_error() => {}
            Err(err) => refused.push(err.to_string()),
        }
        if restarted.load(Ordering::SeqCst) && !landed && refused.len() > 1_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    restart.await.expect("restart");
    assert!(
        refused.is_empty(),
        "{} errors during the AOF load were classified as final, so a worker would drop the outcome; first: {}",
        refused.len(),
        refused[0]
    );
    assert!(landed, "the completion lands once Redis has loaded");
}
