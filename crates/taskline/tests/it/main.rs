//! Integration tests of the client crate against real `redis-server`
//! processes (one per test, on a free port, killed on drop).
//!
//! One test binary with a module per area; shared helpers live in
//! `support`.

mod support;

mod auth;
mod cluster;
mod coalesce;
mod durability;
mod enqueue;
mod events;
mod faults;
mod flow;
mod lifecycle;
mod payload_props;
mod progress;
mod repair;
mod sentinel;
mod shards;
mod tls;
mod watch;
