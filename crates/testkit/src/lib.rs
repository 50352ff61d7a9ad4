//! Test support for Taskline: real `redis-server` processes, no mocks.
//!
//! # Layout
//!
//! - [`server`]: [`RedisServer`], one `redis-server` child process per test
//!   on a free port of `127.0.0.1`, with its own temporary directory and log
//!   file. It can be killed, shut down, restarted on the same port and
//!   directory (AOF data survives), paused and resumed, or run as a one-node
//!   Redis Cluster. Dropping it kills the process; if the test is panicking,
//!   the tail of the server log is printed with the failure.
//! - `process` (private): the plumbing under it: spawning, readiness
//!   probing (the answering server must be *our* process), signals via the
//!   `kill` utility, free ports.
//! - [`cluster`]: [`RedisCluster`], a real multi-master Redis Cluster (3
//!   masters with a replica each by default) made by `redis-cli --cluster
//!   create`; nodes can be killed (a replica takes over), failed over,
//!   restarted, and a slot moved to another master while clients use it.
//! - [`sentinel`]: [`SentinelSet`], a primary, its replicas and three
//!   sentinels; the primary can be killed or failed over and the sentinels
//!   promote a replica.
//! - [`slot`]: [`hash_slot`], the Redis Cluster hash-slot function computed
//!   locally, to check that a queue's keys share one slot.
//!
//! The binary is `redis-server` from `PATH`, or the path in the
//! `TASKLINE_REDIS_SERVER` environment variable. The Redis that may listen on
//! the default port 6379 is never used.
//!
//! # Example
//!
//! ```no_run
//! use taskline_testkit::RedisServer;
//!
//! # async fn example() {
//! let server = RedisServer::builder().appendonly(true).start();
//! let mut con = server.connection().await;
//! let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut con).await.unwrap();
//!
//! server.restart(); // SIGKILL, then the same port and directory again
//! let mut con = server.connection().await;
//! let v: String = redis::cmd("GET").arg("k").query_async(&mut con).await.unwrap();
//! assert_eq!(v, "v");
//! # }
//! ```

pub mod cluster;
mod process;
pub mod sentinel;
pub mod server;
pub mod slot;
pub mod worker_binary;
pub mod worker_process;

pub use cluster::{ClusterNode, NodeRole, RedisCluster, RedisClusterBuilder};
pub use sentinel::{SentinelSet, SentinelSetBuilder};
pub use server::{REDIS_SERVER_ENV, RedisServer, RedisServerBuilder};
pub use slot::{SLOT_COUNT, hash_slot};
pub use worker_binary::build_worker_next_to;
pub use worker_process::WorkerProcess;
