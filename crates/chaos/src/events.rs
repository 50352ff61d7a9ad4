//! Tailing the queue's event stream while the run goes on.
//!
//! Every claim, lease expiry, release and outcome appends an event (in the
//! same script as the state change). Reading them as they come gives each
//! job a timeline with times, attempts and workers. Read live, the timeline
//! also keeps a claim that a Redis crash later rolled back (with
//! `appendfsync everysec`), which the job hash can no longer show.
//!
//! If the stream is trimmed past what was read (the reader fell more than
//! the stream's bound behind), [`EventLog::gap`] is set and the accounting
//! falls back to the job hashes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use taskline::operator::events::decode_read;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::behaviour::job_index;

/// Entries per read.
const BATCH: usize = 5_000;
/// How long one read blocks while the run goes on.
const BLOCK_MS: usize = 500;
/// How often the reader checks that nothing was trimmed before it read it.
const GAP_CHECK: Duration = Duration::from_secs(2);

/// The lifecycle events the accounting uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A worker leased the job.
    Claimed,
    /// The reaper took the job from a worker whose lease ran out.
    LeaseExpired,
    /// A worker gave the job back unrun (graceful shutdown).
    Released,
    /// An attempt failed and a retry is scheduled.
    Retrying,
    /// The job completed.
    Completed,
    /// The job went to the DLQ.
    Dead,
}

impl EventKind {
    fn parse(name: &str) -> Option<EventKind> {
        Some(match name {
            "claimed" => EventKind::Claimed,
            "lease_expired" => EventKind::LeaseExpired,
            "released" => EventKind::Released,
            "retrying" => EventKind::Retrying,
            "completed" => EventKind::Completed,
            "dead" => EventKind::Dead,
            _ => return None,
        })
    }
}

/// One event of one job.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The stream entry's time (Redis's clock), ms since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The attempt the event names.
    pub attempt: u32,
    /// The worker named by the event (index into [`EventLog::worker`]),
    /// `u32::MAX` when it names none.
    pub worker: u32,
}

/// Every event read, by job index.
#[derive(Debug, Default)]
pub struct EventLog {
    /// Each job's events in stream order.
    pub jobs: Vec<Vec<Event>>,
    /// Events read (an entry may list several jobs: one event each).
    pub read: u64,
    /// True if entries were trimmed before they could be read.
    pub gap: bool,
    workers: Vec<String>,
    worker_index: HashMap<String, u32>,
    last_id: (u64, u64),
}

impl EventLog {
    fn new(jobs: usize) -> EventLog {
        EventLog { jobs: vec![Vec::new(); jobs], ..EventLog::default() }
    }

    /// The instance id behind a worker index.
    pub fn worker(&self, index: u32) -> Option<&str> {
        self.workers.get(index as usize).map(String::as_str)
    }

    /// How many times job `index` was claimed.
    pub fn claims(&self, index: usize) -> u32 {
        self.jobs
            .get(index)
            .map_or(0, |events| events.iter().filter(|e| e.kind == EventKind::Claimed).count()) as u32
    }

    fn ingest(&mut self, event: &taskline::Event) {
        let Some(id) = parse_id(&event.stream_id) else { return };
        self.last_id = self.last_id.max(id);
        self.read += 1;
        let (Some(kind), Some(index)) = (EventKind::parse(&event.event), job_index(&event.job_id)) else {
            return;
        };
        let worker = match event.extra.get("worker") {
            Some(name) => {
                let next = self.workers.len() as u32;
                let index = *self.worker_index.entry(name.clone()).or_insert(next);
                if index == next {
                    self.workers.push(name.clone());
                }
                index
            }
            None => u32::MAX,
        };
        if let Some(events) = self.jobs.get_mut(index) {
            events.push(Event { at_ms: id.0, kind, attempt: event.attempt, worker });
        }
    }
}

/// The reader task and its log.
#[derive(Debug)]
pub struct EventTail {
    log: Arc<Mutex<EventLog>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EventTail {
    /// Starts reading stream `key` on the Redis of `client` from the start,
    /// for a workload of `jobs` jobs.
    pub fn spawn(client: redis::Client, key: String, jobs: usize) -> EventTail {
        let log = Arc::new(Mutex::new(EventLog::new(jobs)));
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(read_loop(client, key, log.clone(), stopping));
        EventTail { log, stop, task }
    }

    /// Reads what is left and returns the log.
    pub async fn finish(self) -> EventLog {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *log)
    }
}

async fn read_loop(
    client: redis::Client,
    key: String,
    log: Arc<Mutex<EventLog>>,
    stopping: watch::Receiver<bool>,
) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut last_check = Instant::now();
    let mut failures = 0;
    loop {
        let stop = *stopping.borrow();
        if stop && failures > 50 {
            return; // Redis is gone for good; report what was read
        }
        if conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5)));
            match client.get_multiplexed_async_connection_with_config(&config).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let last = {
            let log = log.lock().unwrap_or_else(|p| p.into_inner());
            format!("{}-{}", log.last_id.0, log.last_id.1)
        };
        if last_check.elapsed() > GAP_CHECK || stop {
            last_check = Instant::now();
            if let Ok(Some(deleted)) = max_deleted_id(c, &key).await
                && Some(deleted) > parse_id(&last)
            {
                log.lock().unwrap_or_else(|p| p.into_inner()).gap = true;
            }
        }
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(BATCH);
        if !stop {
            read.arg("BLOCK").arg(BLOCK_MS);
        }
        read.arg("STREAMS").arg(&key).arg(&last);
        let reply: redis::RedisResult<redis::Value> = read.query_async(c).await;
        match reply.map(decode_read) {
            Ok(Ok(events)) => {
                failures = 0;
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                for event in &events {
                    log.ingest(event);
                }
                if stop && events.is_empty() {
                    return;
                }
            }
            Ok(Err(_)) | Err(_) => {
                failures += 1;
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The newest id trimmed from the stream (`max-deleted-entry-id` of
/// `XINFO STREAM`, Redis 7), if the stream exists.
async fn max_deleted_id(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<Option<(u64, u64)>> {
    let info: redis::Value = redis::cmd("XINFO").arg("STREAM").arg(key).query_async(conn).await?;
    let pairs: Vec<(redis::Value, redis::Value)> = match info {
        redis::Value::Map(pairs) => pairs,
        redis::Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        _ => return Ok(None),
    };
    for (name, value) in pairs {
        let name: String = redis::from_redis_value(name).unwrap_or_default();
        if name == "max-deleted-entry-id" {
            let id: String = redis::from_redis_value(value).unwrap_or_default();
            return Ok(parse_id(&id));
        }
    }
    Ok(None)
}

/// A stream id `ms-seq`.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(parse_id("10-2") > parse_id("10-1"));
        assert!(parse_id("11-0") > parse_id("10-9"));
        assert_eq!(parse_id("junk"), None);
    }
}
