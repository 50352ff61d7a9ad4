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

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
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

/// Blocks on wake lists over a dedicated connection.
pub struct Waiter {
    client: Client,
    conn: Option<MultiplexedConnection>,
}

impl Waiter {
    /// A waiter for the Redis at `client` (connects lazily).
    pub fn new(client: Client) -> Self {
        Self { client, conn: None }
    }

    /// Waits up to `block` (rounded up to whole milliseconds, at least 1 ms)
    /// for a token on any of `keys`.
    pub async fn wait(&mut self, keys: &[String], block: Duration) -> Woken {
        let block = block.max(Duration::from_millis(1));
        let conn = match self.connection(block).await {
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

    async fn connection(&mut self, block: Duration) -> Option<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                // Longer than any block this waiter will ask for, so the
                // client's own timeout never cuts a legitimate block short.
                .set_response_timeout(Some(block.max(Duration::from_secs(60)) + WATCHDOG_GRACE * 2));
            match self.client.get_multiplexed_async_connection_with_config(&config).await {
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

/// Runs a [`Waiter`] in its own task so that a wait survives the caller
/// looking away: the claimer can react to a freed slot while a BLPOP is in
/// flight without abandoning it (an abandoned BLPOP would hold the
/// dedicated connection until it timed out). At most one wait is in flight.
pub struct WakeListener {
    requests: mpsc::Sender<Duration>,
    results: mpsc::Receiver<Woken>,
    pending: bool,
    /// Ends the task when the listener is dropped, even mid-wait, so that
    /// its connection closes with its owner.
    _stop: DropGuard,
}

impl WakeListener {
    /// Starts the listener task for `keys` (within a Tokio runtime); it ends
    /// when the listener is dropped.
    pub fn spawn(mut waiter: Waiter, keys: Vec<String>) -> Self {
        let stop = CancellationToken::new();
        let stop_guard = stop.clone().drop_guard();
        let (request_tx, mut request_rx) = mpsc::channel::<Duration>(1);
        let (result_tx, result_rx) = mpsc::channel::<Woken>(1);
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
                if result_tx.send(woken).await.is_err() {
                    return;
                }
            }
        });
        Self { requests: request_tx, results: result_rx, pending: false, _stop: stop_guard }
    }

    /// Starts a wait of up to `block` unless one is already in flight, then
    /// resolves with the next result. Cancel-safe: if the caller stops
    /// waiting, the wait goes on and its result is returned by the next
    /// call.
    pub async fn next(&mut self, block: Duration) -> Woken {
        if !self.pending {
            if self.requests.send(block).await.is_err() {
                return Woken::Failed;
            }
            self.pending = true;
        }
        let woken = self.results.recv().await.unwrap_or(Woken::Failed);
        self.pending = false;
        woken
    }
}
