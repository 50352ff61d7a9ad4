//! `taskline dlq list | replay | purge --kind`: dead jobs by how they
//! failed. Issue 26: a permanent failure is recorded with the handler's
//! reason (`unknown_job`, ...), so `--error-contains permanent` could not
//! find it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskline::{Failure, JobId, JobState, NewJob};
use taskline_worker::{Config, JobContext, Worker, handler_fn};
use tokio_util::sync::CancellationToken;

use crate::support::{Env, claim_options, cmd, job_exists, key, sorted};

/// Dead jobs of queue `mail`, one per way of dying.
struct Deaths {
    /// Outlived its 100 ms timeout under a real worker (one attempt).
    timed_out: JobId,
    /// No handler for its name under a real worker: `unknown_job`.
    unknown: JobId,
    /// Failed permanently without a reason: `permanent`.
    permanent: JobId,
    /// Failed transiently with its one attempt spent: `attempts_exhausted`.
    exhausted: JobId,
    /// Its lease expired and the reaper buried it.
    lease_expired: JobId,
}

/// Runs a real worker until `timed_out` and `unknown` are dead, then makes
/// the others through the client.
async fn deaths(env: &Env) -> Deaths {
    let toml = format!(
        "[redis]\nurl = \"{}\"\n[queues.mail]\ntimeout = \"100ms\"\nmax_attempts = 1\n",
        env.server.url()
    );
    let config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}"));
    let slow = handler_fn(|ctx: JobContext, _: Value| async move {
        ctx.cancelled().await;
        Ok(None)
    });
    let worker = Worker::builder(config).handler("mail", "slow", slow).build().expect("worker");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown, CancellationToken::new()).await }
    });
    let timed_out = env.ready("mail", "slow", json!({})).await;
    let unknown = env.ready("mail", "nobody", json!({})).await;
    let started = Instant::now();
    while env.client.counts("mail").await.expect("counts").dead < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "the worker did not bury both jobs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.expect("join").expect("worker run");

    let permanent = env.dead("mail", &[("send", "bad address")]).await.remove(0);
    let one_attempt = || NewJob::new("send", &json!({})).expect("job").max_attempts(1);
    let exhausted = env.client.enqueue("mail", one_attempt()).await.expect("enqueue");
    let claim = env.client.claim("mail", &claim_options(1)).await.expect("claim");
    let retry = Failure::transient("smtp down", Duration::from_secs(1));
    env.client.fail(&claim.jobs[0].lease, &retry).await.expect("fail");

    let lease_expired = env.client.enqueue("mail", one_attempt()).await.expect("enqueue");
    env.client.claim("mail", &claim_options(1)).await.expect("claim");
    // The lease ran out long ago: the reaper takes it.
    let _: i64 =
        cmd(&mut env.raw().await, &["ZADD", &key("mail", "active"), "XX", "1", lease_expired.as_str()]).await;
    let reaped = env.client.reap("mail", 10, Duration::ZERO).await.expect("reap");
    assert_eq!(reaped.dead, 1, "{reaped:?}");
    Deaths { timed_out, unknown, permanent, exhausted, lease_expired }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_selects_dead_jobs_by_how_they_failed() {
    let env = Env::start().await;
    let d = deaths(&env).await;
    let list = |kind: &str| {
        let run = env.run(&["dlq", "list", "mail", "--kind", kind, "--json"]).ok();
        let ids =
            run.json().as_array().expect("array").iter().map(|j| j["id"].to_string()).collect::<Vec<_>>();
        sorted(ids.iter().map(|id| id.trim_matches('"').to_string()))
    };
    assert_eq!(
        list("permanent"),
        sorted([&d.permanent, &d.unknown]),
        "every permanent failure, whatever its reason"
    );
    assert_eq!(list("unknown_job"), sorted([&d.unknown]));
    assert_eq!(list("timeout"), sorted([&d.timed_out]));
    assert_eq!(list("lease_expired"), sorted([&d.lease_expired]));
    assert_eq!(list("transient"), sorted([&d.timed_out, &d.exhausted, &d.lease_expired]));
    assert_eq!(list("attempts_exhausted"), sorted([&d.timed_out, &d.exhausted, &d.lease_expired]));
    assert_eq!(list("http_500"), Vec::<String>::new(), "a reason family no job died of");

    let run = env.run(&["dlq", "list", "mail", "--kind", "permanent", "--name", "send"]).ok();
    assert!(
        run.stdout.contains(d.permanent.as_str()) && run.stdout.contains("(1 matching dead job)"),
        "{run:#?}"
    );

    let run = env.run(&["dlq", "list", "mail", "--kind", "bogus"]).code(2);
    assert!(run.stderr.contains("invalid value 'bogus' for '--kind <KIND>'"), "{}", run.stderr);
    for kind in [
        "transient",
        "permanent",
        "timeout",
        "lease_expired",
        "attempts_exhausted",
        "unknown_job",
        "http_<status>",
    ] {
        assert!(run.stderr.contains(kind), "lists {kind}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_purge_act_on_the_kind_selected() {
    let env = Env::start().await;
    let d = deaths(&env).await;

    let run = env.run(&["dlq", "replay", "mail", "--kind", "unknown_job"]).ok();
    assert_eq!(run.stdout.trim(), "replayed 1 dead job from queue mail");
    assert_eq!(env.client.get_job("mail", &d.unknown).await.expect("job").state, JobState::Ready);
    assert_eq!(env.client.get_job("mail", &d.permanent).await.expect("job").state, JobState::Dead);

    let run = env.run(&["dlq", "purge", "mail", "--kind", "lease_expired", "--yes"]).ok();
    assert_eq!(run.stdout.trim(), "purged 1 dead job from queue mail");
    assert!(!job_exists(&env, "mail", d.lease_expired.as_str()).await);
    for kept in [&d.timed_out, &d.permanent, &d.exhausted] {
        assert_eq!(env.client.get_job("mail", kept).await.expect("job").state, JobState::Dead, "{kept}");
    }

    let run = env.run(&["dlq", "purge", "mail", "--kind", "timeout"]).code(2);
    assert!(run.stderr.contains("refusing to purge"), "{}", run.stderr);
    let run = env.run(&["dlq", "replay", "mail", d.timed_out.as_str(), "--kind", "timeout"]).code(2);
    assert!(run.stderr.contains("not a mix") && run.stderr.contains("--kind"), "{}", run.stderr);
    let run = env.run(&["dlq", "replay", "mail", "--kind", "later"]).code(2);
    assert!(run.stderr.contains("invalid value 'later' for '--kind <KIND>'"), "{}", run.stderr);
}
