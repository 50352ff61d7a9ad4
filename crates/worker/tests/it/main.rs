//! Integration tests of the worker runtime against real `redis-server`
//! processes: in-process workers with Rust handlers (`runtime`) and real
//! `taskline-worker` processes killed and signalled (`process`), the
//! metrics and health endpoints (`metrics`), and the
//! configuration loader (`config`).

mod support;

mod config;
mod flow;
mod metrics;
mod process;
mod runtime;
