//! Shared helpers: a private Redis and a client per test, and the
//! invariant assertion every test runs after it changes state.

use std::time::Duration;

use taskline::{ClaimOptions, Client, ClientBuilder};
use taskline_testkit::RedisServer;

/// A private redis-server and a client connected to it.
pub struct Harness {
    /// The server; dropping it kills the process.
    pub server: RedisServer,
    /// A client with default options.
    pub client: Client,
}

impl Harness {
    /// Starts a server and connects a default client.
    pub async fn start() -> Harness {
        Self::start_with(|b| b).await
    }

    /// Starts a server and connects a client configured by `configure`.
    pub async fn start_with(configure: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Harness {
        let server = RedisServer::start();
        let client = configure(Client::builder(&server.url())).connect().await.expect("connect client");
        Harness { server, client }
    }

    /// A raw connection for seeding and inspecting state.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        self.server.connection().await
    }

    /// Panics with every violation if `queue` breaks an invariant (each
    /// job in exactly one place, state field agreeing).
    pub async fn assert_sound(&self, queue: &str) {
        assert_sound(&self.client, queue).await;
    }
}

/// Panics with every violation if `queue` breaks an invariant.
pub async fn assert_sound(client: &Client, queue: &str) {
    let report = client.check_queue(queue).await.expect("check_queue");
    assert!(
        report.is_sound(),
        "queue {queue} breaks invariants:\n{}",
        report.violations.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n")
    );
}

/// Claim options for a test worker named `worker`.
pub fn claim(count: u32, worker: &str) -> ClaimOptions {
    ClaimOptions { count, lease: Duration::from_secs(30), worker: worker.to_string() }
}

/// Runs a raw command and returns its reply.
pub async fn cmd<T: redis::FromRedisValue>(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Every event of the stream `events_key`, oldest first: one per job that
/// an entry lists (the reader the client uses).
pub async fn stream_events(
    conn: &mut redis::aio::MultiplexedConnection,
    events_key: &str,
) -> Vec<taskline::Event> {
    let entries: redis::Value = cmd(conn, &["XRANGE", events_key, "-", "+"]).await;
    taskline::operator::events::decode_entries(entries).expect("decode the event stream")
}
