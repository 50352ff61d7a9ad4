//! Property tests of payloads through enqueue and claim, against one real
//! `redis-server` shared by every case: an arbitrary payload either fails
//! with a clear error (not JSON, over the size limit) before anything is
//! sent, or is claimed back byte for byte.

use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use taskline::{Client, Error, NewJob};
use taskline_testkit::RedisServer;

use crate::support::claim;

/// The client's payload limit: small, so some generated payloads exceed it.
const LIMIT: usize = 2 * 1024;
const QUEUE: &str = "props";
const CASES: u32 = 128;

/// Arbitrary JSON: scalars (finite numbers, any Unicode text, long strings
/// that cross the limit) nested in arrays and objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop::collection::vec(any::<char>(), 0..(LIMIT * 3 / 2))
            .prop_map(|chars| Value::String(chars.into_iter().collect())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Arbitrary payload text: any string, JSON text, and JSON text with one
/// character inserted or removed (mostly no longer JSON).
fn payload_text() -> impl Strategy<Value = String> {
    let mutated = (json_value(), any::<prop::sample::Index>(), any::<Option<char>>()).prop_map(
        |(value, at, insert)| {
            let mut chars: Vec<char> = serde_json::to_string(&value).expect("serializes").chars().collect();
            let at = at.index(chars.len() + 1);
            match insert {
                Some(c) => chars.insert(at, c),
                None if at < chars.len() => {
                    chars.remove(at);
                }
                None => {}
            }
            chars.into_iter().collect()
        },
    );
    prop_oneof![
        any::<String>(),
        json_value().prop_map(|v| serde_json::to_string(&v).expect("serializes")),
        mutated,
    ]
}

/// Enqueues `job`, claims it back and completes it; the claimed payload.
async fn round_trip(client: &Client, job: NewJob) -> Result<String, Error> {
    let id = client.enqueue(QUEUE, job).await?;
    let mut claimed = client.claim(QUEUE, &claim(1, "props")).await.expect("claim").jobs;
    assert_eq!(claimed.len(), 1, "the enqueued job is claimed");
    let job = claimed.remove(0);
    assert_eq!(job.lease.job_id, id);
    client.complete(&job.lease, None).await.expect("complete");
    Ok(job.facts.payload)
}

/// How many cases ended each way, so a test can tell that its inputs
/// reached every outcome.
#[derive(Debug, Default)]
struct Tally {
    accepted: Cell<u32>,
    not_json: Cell<u32>,
    too_large: Cell<u32>,
}

fn bump(counter: &Cell<u32>) {
    counter.set(counter.get() + 1);
}

/// Checks one payload: `text` is the JSON text the client must store.
async fn check(
    client: &Client,
    job: Result<NewJob, Error>,
    text: &str,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let parses = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    let result = match job {
        Ok(job) => round_trip(client, job).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(payload) => {
            prop_assert!(parses && text.len() <= LIMIT, "accepted a payload it must refuse");
            prop_assert_eq!(payload, text, "the claimed payload differs from the one enqueued");
            bump(&tally.accepted);
        }
        Err(err @ Error::InvalidPayload(_)) => {
            prop_assert!(!parses, "refused valid JSON: {}", err);
            prop_assert!(err.to_string().contains("not valid JSON"), "unclear: {}", err);
            bump(&tally.not_json);
        }
        Err(err @ Error::PayloadTooLarge { .. }) => {
            prop_assert!(parses && text.len() > LIMIT, "refused as too large: {}", err);
            prop_assert!(err.to_string().contains(&format!("{}-byte limit", LIMIT)), "unclear: {}", err);
            bump(&tally.too_large);
        }
        Err(other) => return Err(TestCaseError::fail(format!("unexpected error: {other}"))),
    }
    Ok(())
}

/// Runs `strategy` through `test` with one server, client and runtime;
/// returns how the cases ended.
fn run_cases<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> (NewJobResult, String)) -> Tally {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client =
        runtime.block_on(Client::builder(&server.url()).max_payload_bytes(LIMIT).connect()).expect("connect");
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    let tally = Tally::default();
    runner
        .run(&strategy, |value| {
            let (job, text) = test(value);
            runtime.block_on(check(&client, job, &text, &tally))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(crate::support::assert_sound(&client, QUEUE));
    tally
}

type NewJobResult = Result<NewJob, Error>;

#[test]
fn arbitrary_json_values_round_trip_exactly_or_are_refused_as_too_large() {
    let tally = run_cases(json_value(), |value| {
        let text = serde_json::to_string(&value).expect("serializes");
        (NewJob::new("job", &value), text)
    });
    assert!(tally.accepted.get() > 0 && tally.too_large.get() > 0, "the inputs missed an outcome: {tally:?}");
}

#[test]
fn arbitrary_payload_text_round_trips_exactly_or_is_refused_clearly() {
    let tally = run_cases(payload_text(), |text| (NewJob::from_json("job", text.clone()), text));
    let Tally { accepted, not_json, too_large } = &tally;
    assert!(
        accepted.get() > 0 && not_json.get() > 0 && too_large.get() > 0,
        "the inputs missed an outcome: {tally:?}"
    );
}
