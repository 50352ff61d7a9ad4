//! Integration tests of the `taskline` binary: each runs the real binary
//! against its own `redis-server` (on a free port, killed on drop), seeds
//! state through the client crate, and asserts the output (human and
//! `--json`), the exit code and the resulting Redis state.
//!
//! One test binary with a module per area; shared helpers live in
//! `support`, and `http` drives `taskline serve` (the `serve` tests, and
//! the demo page in headless chromium in `browser`).

mod http;
mod support;

mod browser;
mod cluster;
mod control;
mod dlq;
mod dlq_kinds;
mod doctor;
mod enqueue;
mod errors;
mod events;
mod jobs;
mod limits;
mod operator;
mod queues;
mod serve;
