//! The per-queue lifecycle event stream (`<prefix>:{Q}:events`): read a
//! range, read the latest events, or follow new ones as they arrive.
//!
//! The scripts record every lifecycle step (`enqueued`, `claimed`,
//! `completed`, `retrying`, `dead`, `replayed`, `purged`, `drained`,
//! `released`, ...); one stream entry may list several jobs of one step
//! (enqueues, claims and completions are recorded one entry per script
//! call). Reading returns one [`Event`] per job. The stream is capped near
//! `events_max_len` events, so it is a recent history, not an audit log:
//! the job hash is the truth.
//!
//! # Wire format
//!
//! The layouts this module reads, and the only place that reads them:
//!
//! - **Current** (written by `lua/includes/events.lua`, which documents the
//!   writer side): `event` and the step's extras (`worker`, `reason`,
//!   `due_at`, `error`, ...), shared by every job of the entry, then the
//!   jobs in `ids`, `names` and `attempts` (each the jobs' values joined by
//!   single spaces) and, when any job has one, `correlation_ids` (a JSON
//!   array, `""` for a job without). An entry of one job has the same
//!   shape; its lists are its values as they are.
//! - **Legacy** (entries of earlier versions, which streams may still hold
//!   until trimming drops them): `id` groups. The fields before the first
//!   `id` are shared; each `id` starts one job's own fields (`name`,
//!   `attempt`, `correlation_id` and any extras), after the current lists'
//!   jobs when an entry has both. Nothing writes it any more; the reader
//!   can go once no stream written before the current layout is kept.
//!
//! Following uses `XREAD BLOCK` on a connection of its own: a blocking read
//! on the client's shared multiplexed connection would stall every other
//! call, and the shared connection's response timeout (default 5 s, and
//! `redis`'s own default of 500 ms) would cut the block short.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::job::from_epoch_millis;

/// How long one `XREAD BLOCK` of an [`EventFollower`] waits.
pub const FOLLOW_BLOCK: Duration = Duration::from_secs(5);

/// Extra time past the block before the follower gives up on an answer.
const WATCHDOG_GRACE: Duration = Duration::from_secs(3);

/// Most entries one read of an [`EventFollower`] returns.
const FOLLOW_BATCH: usize = 500;

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The stream entry id (`<ms>-<seq>`); pass it back to read what follows.
    /// The jobs listed by one entry share it, so reading after it skips all
    /// of them: pass back the id of the last event of an entry you have.
    pub stream_id: String,
    /// When the event was recorded, on the Redis server's clock (the
    /// stream id's time part).
    pub at: SystemTime,
    /// What happened: `enqueued`, `claimed`, `completed`, `retrying`,
    /// `dead`, `replayed`, `purged`, `drained`, `released`, ...
    pub event: String,
    /// The job id.
    pub job_id: String,
    /// The job name.
    pub name: String,
    /// The attempt the event is about (0 before the first claim).
    pub attempt: u32,
    /// The job's correlation id, if it has one.
    pub correlation_id: Option<String>,
    /// Every other field of the entry (`worker`, `reason`, `due_at`, ...).
    pub extra: BTreeMap<String, String>,
}

impl Client {
    /// The events of up to `count` stream entries of `queue` after the
    /// stream id `after` (or from the oldest kept when `None`), oldest
    /// first. An entry may list several jobs, so there may be more events
    /// than `count`; an entry is never split.
    pub async fn read_events(&self, queue: &str, after: Option<&str>, count: usize) -> Result<Vec<Event>> {
        let (_, keys) = self.queue_keys(queue)?;
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let mut conn = self.conn();
        let value: Value = redis::cmd("XRANGE")
            .arg(keys.events())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        decode_entries(value)
    }

    /// The latest `count` events of `queue`, oldest first.
    pub async fn last_events(&self, queue: &str, count: usize) -> Result<Vec<Event>> {
        let (_, keys) = self.queue_keys(queue)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let value: Value = redis::cmd("XREVRANGE")
            .arg(keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        // Newest entry first: put the entries in stream order, then keep
        // the newest `count` of their events.
        let entries = match value {
            Value::Array(mut entries) => {
                entries.reverse();
                Value::Array(entries)
            }
            other => other,
        };
        let mut events = decode_entries(entries)?;
        let older = events.len().saturating_sub(count);
        events.drain(..older);
        Ok(events)
    }

    /// Starts following the events of `queue` that come after the stream id
    /// `after` (after the newest event now in the stream when `None`).
    ///
    /// The follower blocks on a connection of its own to the node that
    /// serves the queue (the primary, behind Sentinel), found again after
    /// an error, so it follows a failover or a moved slot.
    pub async fn follow_events(&self, queue: &str, after: Option<String>) -> Result<EventFollower> {
        let (_, keys) = self.queue_keys(queue)?;
        let last_id = match after {
            Some(id) => id,
            None => self.last_events(queue, 1).await?.pop().map_or_else(|| "0-0".into(), |e| e.stream_id),
        };
        let mut follower = EventFollower {
            redis: self.conn(),
            conn: None,
            key: keys.events(),
            last_id,
            block: FOLLOW_BLOCK,
        };
        follower.connection().await?;
        Ok(follower)
    }
}

/// Follows one queue's event stream with `XREAD BLOCK` on its own
/// connection; made by [`Client::follow_events`].
pub struct EventFollower {
    redis: Connection,
    conn: Option<MultiplexedConnection>,
    key: String,
    last_id: String,
    block: Duration,
}

impl std::fmt::Debug for EventFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFollower").field("key", &self.key).field("last_id", &self.last_id).finish()
    }
}

impl EventFollower {
    /// Waits up to [`FOLLOW_BLOCK`] for events after the last one seen and
    /// returns them (none when the wait timed out). After an error the
    /// connection is dropped and the next call makes a new one, carrying on
    /// from the last event seen, so a caller may retry after a pause.
    pub async fn next_batch(&mut self) -> Result<Vec<Event>> {
        let block = self.block;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(FOLLOW_BATCH)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.last_id);
        let conn = self.connection().await?;
        // The watchdog: a half-open connection must not hang the follower.
        let reply = tokio::time::timeout(block + WATCHDOG_GRACE, cmd.query_async::<Value>(conn)).await;
        let value = match reply {
            Ok(Ok(value)) => value,
            Ok(Err(err)) => {
                self.conn = None;
                return Err(err.into());
            }
            Err(_) => {
                self.conn = None;
                return Err(Error::Redis(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "XREAD BLOCK got no answer in time",
                ))));
            }
        };
        let events = decode_read(value)?;
        if let Some(last) = events.last() {
            self.last_id = last.stream_id.clone();
        }
        Ok(events)
    }

    /// Sets how long one read waits (default [`FOLLOW_BLOCK`], at least
    /// 1 ms). The dedicated connection is remade to fit the new block.
    pub fn set_block(&mut self, block: Duration) {
        self.block = block.max(Duration::from_millis(1));
        self.conn = None;
    }

    /// The stream id of the last event returned (`0-0` before any).
    pub fn last_id(&self) -> &str {
        &self.last_id
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            // Longer than the block: redis' default (500 ms) would cut it short.
            let conn = self.redis.dedicated(&self.key, self.block + WATCHDOG_GRACE * 2).await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connection was just made"))
    }
}

/// Decodes an `XREAD` reply of one stream (RESP2 array or RESP3 map; nil
/// on timeout) into its events, one per job listed, in stream order.
///
/// # Errors
///
/// [`Error::Protocol`] when the reply is not a stream read.
pub fn decode_read(value: Value) -> Result<Vec<Event>> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            Some(Value::Array(mut pair)) if pair.len() == 2 => decode_entries(pair.pop().expect("two items")),
            Some(other) => Err(malformed(format!("stream entry {other:?}"))),
            None => Ok(Vec::new()),
        },
        Value::Map(streams) => match streams.into_iter().next() {
            Some((_, entries)) => decode_entries(entries),
            None => Ok(Vec::new()),
        },
        other => Err(malformed(format!("XREAD reply {other:?}"))),
    }
}

/// Decodes stream entries (an `XRANGE` or `XREVRANGE` reply, or one stream
/// of `XREAD`) into their events, one per job listed, in the entries' order.
///
/// # Errors
///
/// [`Error::Protocol`] when the reply is not a list of stream entries.
pub fn decode_entries(value: Value) -> Result<Vec<Event>> {
    let entries = match value {
        Value::Array(entries) => entries,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(malformed(format!("entries {other:?}"))),
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        events.extend(parse_entry(entry)?);
    }
    Ok(events)
}

/// The fields that list an entry's jobs in the current layout (see the
/// module docs).
const LISTED_FIELDS: [&str; 4] = ["ids", "names", "attempts", "correlation_ids"];

/// One entry's events: one per job listed in its `ids` field (the current
/// layout), then one per legacy `id` group, each with the fields shared by
/// the entry (those before the first `id`) and its own.
fn parse_entry(entry: Value) -> Result<Vec<Event>> {
    let Value::Array(parts) = entry else {
        return Err(malformed(format!("entry {entry:?}")));
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(malformed("entry without id and fields".into()));
    };
    let stream_id = text(id)?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        Value::Map(pairs) => pairs,
        other => return Err(malformed(format!("fields {other:?}"))),
    };
    let mut shared = BTreeMap::new();
    let mut lists = BTreeMap::new();
    let mut groups: Vec<BTreeMap<String, String>> = Vec::new();
    for (k, v) in pairs {
        let (k, v) = (text(k)?, text(v)?);
        if k == "id" {
            groups.push(BTreeMap::from([(k, v)]));
        } else if let Some(job) = groups.last_mut() {
            job.insert(k, v);
        } else if LISTED_FIELDS.contains(&k.as_str()) {
            lists.insert(k, v);
        } else {
            shared.insert(k, v);
        }
    }
    let mut jobs = listed_jobs(&lists);
    jobs.extend(groups);
    if jobs.is_empty() {
        // An entry that names no job still reads as one event.
        jobs.push(BTreeMap::new());
    }
    let ms = stream_id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()).unwrap_or(0);
    let events = jobs.into_iter().map(|own| {
        let mut map = shared.clone();
        map.extend(own);
        let mut take = |field: &str| map.remove(field).unwrap_or_default();
        Event {
            at: from_epoch_millis(ms),
            event: take("event"),
            job_id: take("id"),
            name: take("name"),
            attempt: take("attempt").parse().unwrap_or(0),
            correlation_id: Some(take("correlation_id")).filter(|c| !c.is_empty()),
            extra: map,
            stream_id: stream_id.clone(),
        }
    });
    Ok(events.collect())
}

/// The jobs of an entry's `ids`, `names`, `attempts` and `correlation_ids`
/// fields, in order. A list that does not match the ids one for one (a
/// name with a space, written into a job hash by hand) is left out rather
/// than shifting every later job's values; the lists of one job are its
/// values whole, spaces and all.
fn listed_jobs(lists: &BTreeMap<String, String>) -> Vec<BTreeMap<String, String>> {
    let Some(ids) = lists.get("ids").filter(|ids| !ids.is_empty()) else {
        return Vec::new();
    };
    let ids: Vec<&str> = ids.split(' ').collect();
    let aligned = |field: &str| -> Option<Vec<&str>> {
        let list = lists.get(field)?;
        let values: Vec<&str> = if ids.len() == 1 { vec![list.as_str()] } else { list.split(' ').collect() };
        (values.len() == ids.len()).then_some(values)
    };
    let (names, attempts) = (aligned("names"), aligned("attempts"));
    let correlation_ids = lists
        .get("correlation_ids")
        .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
        .filter(|cids| cids.len() == ids.len());
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let mut job = BTreeMap::from([("id".to_string(), id.to_string())]);
            if let Some(names) = &names {
                job.insert("name".into(), names[i].to_string());
            }
            if let Some(attempts) = &attempts {
                job.insert("attempt".into(), attempts[i].to_string());
            }
            if let Some(cids) = &correlation_ids {
                job.insert("correlation_id".into(), cids[i].clone());
            }
            job
        })
        .collect()
}

fn text(value: Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(malformed(format!("value {other:?}"))),
    }
}

fn malformed(detail: String) -> Error {
    Error::Protocol { script: "events stream", detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// Legacy layout: one `id` group.
    #[test]
    fn entries_decode_known_and_extra_fields() {
        let entry = Value::Array(vec![
            bulk("1700000000123-0"),
            Value::Array(
                ["event", "dead", "id", "j1", "name", "send", "attempt", "2", "reason", "permanent"]
                    .into_iter()
                    .map(bulk)
                    .collect(),
            ),
        ]);
        let events = decode_entries(Value::Array(vec![entry])).expect("decode");
        let e = &events[0];
        assert_eq!(
            (e.event.as_str(), e.job_id.as_str(), e.name.as_str(), e.attempt),
            ("dead", "j1", "send", 2)
        );
        assert_eq!(e.correlation_id, None);
        assert_eq!(e.extra.get("reason").map(String::as_str), Some("permanent"));
        assert_eq!(e.at, from_epoch_millis(1_700_000_000_123));
    }

    /// Legacy layout: several `id` groups after the shared fields.
    #[test]
    fn a_batch_entry_yields_one_event_per_job_with_the_shared_fields() {
        let fields = [
            "event",
            "claimed",
            "worker",
            "w1",
            "id",
            "j1",
            "name",
            "send",
            "attempt",
            "1",
            "id",
            "j2",
            "name",
            "mail",
            "attempt",
            "3",
            "correlation_id",
            "c2",
        ];
        let entry =
            Value::Array(vec![bulk("1700000000123-4"), Value::Array(fields.into_iter().map(bulk).collect())]);
        let events = decode_entries(Value::Array(vec![entry])).expect("decode");
        let seen: Vec<_> = events
            .iter()
            .map(|e| {
                let worker = e.extra.get("worker").map(String::as_str);
                (
                    e.event.as_str(),
                    e.job_id.as_str(),
                    e.name.as_str(),
                    e.attempt,
                    e.correlation_id.as_deref(),
                    worker,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("claimed", "j1", "send", 1, None, Some("w1")),
                ("claimed", "j2", "mail", 3, Some("c2"), Some("w1")),
            ]
        );
        assert!(events.iter().all(|e| e.stream_id == "1700000000123-4" && e.extra.len() == 1));
    }

    fn entry(stream_id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![bulk(stream_id), Value::Array(fields.iter().copied().map(bulk).collect())])
    }

    /// The current layout, for one job, reads as its legacy form did.
    #[test]
    fn a_current_entry_of_one_job_reads_like_its_legacy_form() {
        let current = [
            "event",
            "dead",
            "reason",
            "permanent",
            "ids",
            "j1",
            "names",
            "send",
            "attempts",
            "2",
            "correlation_ids",
            r#"["c1"]"#,
        ];
        let legacy = [
            "event",
            "dead",
            "id",
            "j1",
            "name",
            "send",
            "attempt",
            "2",
            "correlation_id",
            "c1",
            "reason",
            "permanent",
        ];
        let read =
            |fields: &[&str]| decode_entries(Value::Array(vec![entry("5-1", fields)])).expect("decode");
        let events = read(&current);
        assert_eq!(events, read(&legacy));
        let e = &events[0];
        assert_eq!(
            (e.event.as_str(), e.job_id.as_str(), e.name.as_str(), e.attempt, e.correlation_id.as_deref()),
            ("dead", "j1", "send", 2, Some("c1"))
        );
        assert_eq!(e.extra, BTreeMap::from([("reason".to_string(), "permanent".to_string())]));
        // One job's name is read whole, even with a space written by hand.
        let spaced = read(&["event", "failed", "ids", "j1", "names", "a b", "attempts", "1"]);
        assert_eq!((spaced[0].name.as_str(), spaced[0].attempt), ("a b", 1));
    }

    /// The current layout's lists, then legacy `id` groups (an entry of a
    /// version that wrote both).
    #[test]
    fn listed_jobs_come_first_then_the_id_groups() {
        let fields = [
            "event",
            "completed",
            "ids",
            "j1 j2 j3",
            "names",
            "send mail send",
            "attempts",
            "1 2 1",
            "correlation_ids",
            r#"["", "c2", ""]"#,
            "id",
            "j4",
            "name",
            "bill",
            "attempt",
            "5",
            "correlation_id",
            "c4",
        ];
        let events = decode_entries(Value::Array(vec![entry("1700000000123-0", &fields)])).expect("decode");
        let seen: Vec<_> = events
            .iter()
            .map(|e| {
                (e.event.as_str(), e.job_id.as_str(), e.name.as_str(), e.attempt, e.correlation_id.as_deref())
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("completed", "j1", "send", 1, None),
                ("completed", "j2", "mail", 2, Some("c2")),
                ("completed", "j3", "send", 1, None),
                ("completed", "j4", "bill", 5, Some("c4")),
            ]
        );
        assert!(events.iter().all(|e| e.extra.is_empty()), "the lists are not extras: {events:?}");
    }

    #[test]
    fn a_list_that_does_not_match_the_ids_is_left_out_not_shifted() {
        // "a b" is one name with a space in it: three names for two ids.
        let fields = ["event", "claimed", "ids", "j1 j2", "names", "a b c", "attempts", "3 4"];
        let events = decode_entries(Value::Array(vec![entry("1-0", &fields)])).expect("decode");
        let seen: Vec<_> = events.iter().map(|e| (e.job_id.as_str(), e.name.as_str(), e.attempt)).collect();
        assert_eq!(seen, vec![("j1", "", 3), ("j2", "", 4)]);
        // Correlation ids that are not a JSON list of strings are left out too.
        let fields = ["event", "claimed", "ids", "j1 j2", "names", "a b", "correlation_ids", "[\"c1\""];
        let events = decode_entries(Value::Array(vec![entry("1-0", &fields)])).expect("decode");
        let seen: Vec<_> =
            events.iter().map(|e| (e.job_id.as_str(), e.name.as_str(), e.correlation_id.clone())).collect();
        assert_eq!(seen, vec![("j1", "a", None), ("j2", "b", None)]);
    }

    #[test]
    fn replies_that_are_not_stream_entries_are_protocol_errors() {
        for bad in [
            Value::Int(3),
            Value::Array(vec![Value::Int(3)]),
            Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Int(7)])]),
        ] {
            let err = decode_entries(bad.clone()).expect_err("not entries");
            assert!(matches!(err, Error::Protocol { script: "events stream", .. }), "{bad:?}: {err:?}");
        }
        let err = decode_read(Value::Int(3)).expect_err("not a stream read");
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    }

    #[test]
    fn a_timed_out_read_is_empty() {
        assert_eq!(decode_read(Value::Nil).expect("nil"), Vec::new());
    }
}
