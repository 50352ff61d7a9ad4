//! The idle wait: block on the queues' wake lists instead of polling.
//!
//! Scripts push a token to `<prefix>:{Q}:wake` when a ready list turns
//! non-empty, when a claim leaves work behind, and when a delayed job becomes
//! the earliest due. An idle worker BLPOPs every wake list at once, so it
//! costs Redis one command per idle period yet wakes within milliseconds.
//!
//! The BLPOP runs on its own connection (a blocking command would stall a
//! shared multiplexed one) whose response timeout is longer than the block,
//! under a watchdog: if no answer comes well after the block should have
//! ended (a half-open connection, a silently re-sent command), the
//! connection is dropped and made again.
//!
//! On a Redis Cluster one BLPOP cannot wait on keys of two slots (Redis
//! answers CROSSSLOT even when one node serves both), so the wait is split
//! into groups ([`wake_groups`]): one per queue, each with a connection of
//! its own to the master that serves the queue, found again after an error
//! (a failover, a moved slot). The listener runs the groups side by side
//! and hands out whichever answers first. Each group's connection is owned
//! by its waiter for as long as the worker idles, not taken from a pool: a
//! pool (deadpool-redis) would check every connection out and back per wait
//! and, by default, ping it on each checkout (`UNWATCH` + `PING`), tripling
//! the commands of an idle worker for no gain: the watchdog already
//! replaces a dead connection.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use taskline::Client;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

/// Extra time past the block before the watchdog gives up on an answer.
const WATCHDOG_GRACE: Duration = Duration::from_secs(3);

/// Why a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    /// A token arrived for this wake key.
    Key(String),
    /// The block timed out: nothing arrived.
    Timeout,
    /// Redis could not be asked; the caller should back off.
    Failed,
}

/// The wake keys one BLPOP may wait on together: all of them on one
/// server or behind Sentinel, one key per group on a cluster.
pub fn wake_groups(client: &Client, keys: &[String]) -> Vec<Vec<String>> {
    if client.is_cluster() { keys.iter().map(|k| vec![k.clone()]).collect() } else { vec![keys.to_vec()] }
}

/// Blocks on wake lists over a dedicated connection to the node that
/// serves them.
pub struct Waiter {
    client: Client,
    conn: Option<MultiplexedConnection>,
}

impl Waiter {
    /// A waiter on the Redis of `client` (connects lazily, to the node of
    /// the keys it is asked to wait on).
    pub fn new(client: Client) -> Self {
        Self { client, conn: None }
    }

    /// Waits up to `block` (rounded up to whole milliseconds, at least 1 ms)
    /// for a token on any of `keys`.
    pub async fn wait(&mut self, keys: &[String], block: Duration) -> Woken {
        let block = block.max(Duration::from_millis(1));
        let Some(route) = keys.first() else {
            tokio::time::sleep(block).await;
            return Woken::Timeout;
        };
        let conn = match self.connection(route, block).await {
            Some(conn) => conn,
            None => return Woken::Failed,
        };
        let mut cmd = redis::cmd("BLPOP");
        for key in keys {
            cmd.arg(key);
        }
        // Seconds with a fraction: Redis 6+ accepts sub-second blocks.
        cmd.arg(format!("{:.3}", block.as_secs_f64()));
        let reply: Result<redis::RedisResult<Option<(String, String)>>, _> =
            tokio::time::timeout(block + WATCHDOG_GRACE, cmd.query_async(conn)).await;
        match reply {
            Ok(Ok(Some((key, _token)))) => Woken::Key(key),
            Ok(Ok(None)) => Woken::Timeout,
            Ok(Err(err)) => {
                warn!(error = %err, "blocking wait failed; reconnecting");
                self.conn = None;
                Woken::Failed
            }
            Err(_) => {
                warn!(?block, "blocking wait got no answer in time; dropping the connection (watchdog)");
                self.conn = None;
                Woken::Failed
            }
        }
    }

    async fn connection(&mut self, key: &str, block: Duration) -> Option<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            // Longer than any block this waiter will ask for, so the
            // client's own timeout never cuts a legitimate block short.
            let response_timeout = block.max(Duration::from_secs(60)) + WATCHDOG_GRACE * 2;
            match self.client.blocking_connection(key, response_timeout).await {
                Ok(conn) => {
                    debug!("blocking connection ready");
                    self.conn = Some(conn);
                }
                Err(err) => {
                    warn!(error = %err, "cannot open the blocking connection");
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }
}

/// Runs one [`Waiter`] per wake group, each in its own task, so that a
/// wait survives the caller looking away: the claimer can react to a freed
/// slot while a BLPOP is in flight without abandoning it (an abandoned BLPOP
/// would hold the dedicated connection until it timed out). At most one
/// wait per group is in flight.
pub struct WakeListener {
    requests: Vec<mpsc::Sender<Duration>>,
    results: mpsc::Receiver<(usize, Woken)>,
    pending: Vec<bool>,
    /// Ends the tasks when the listener is dropped, even mid-wait, so that
    /// their connections close with their owner.
    _stop: DropGuard,
}

impl WakeListener {
    /// Starts a listener task per group of `(waiter, keys)` (within a Tokio
    /// runtime); they end when the listener is dropped.
    pub fn spawn(groups: Vec<(Waiter, Vec<String>)>) -> Self {
        let stop = CancellationToken::new();
        let stop_guard = stop.clone().drop_guard();
        let (result_tx, result_rx) = mpsc::channel::<(usize, Woken)>(groups.len().max(1));
        let mut requests = Vec::with_capacity(groups.len());
        for (index, (mut waiter, keys)) in groups.into_iter().enumerate() {
            let (request_tx, mut request_rx) = mpsc::channel::<Duration>(1);
            requests.push(request_tx);
            let (stop, result_tx) = (stop.clone(), result_tx.clone());
            tokio::spawn(async move {
                loop {
                    let block = tokio::select! {
                        _ = stop.cancelled() => return,
                        block = request_rx.recv() => match block {
                            Some(block) => block,
                            None => return,
                        },
                    };
                    let woken = tokio::select! {
                        _ = stop.cancelled() => return,
                        woken = waiter.wait(&keys, block) => woken,
                    };
                    if result_tx.send((index, woken)).await.is_err() {
                        return;
                    }
                }
            });
        }
        let pending = vec![false; requests.len()];
        Self { requests, results: result_rx, pending, _stop: stop_guard }
    }

    /// Starts a wait of up to `block` in every group that has none in
    /// flight, then resolves with the first result of any group.
    /// Cancel-safe: if the caller stops waiting, the waits go on and their
    /// results are returned by the next calls.
    pub async fn next(&mut self, block: Duration) -> Woken {
        for (request, pending) in self.requests.iter().zip(self.pending.iter_mut()) {
            if !*pending {
                if request.send(block).await.is_err() {
                    return Woken::Failed;
                }
                *pending = true;
            }
        }
        match self.results.recv().await {
            Some((index, woken)) => {
                self.pending[index] = false;
                woken
            }
            None => Woken::Failed,
        }
    }
}
