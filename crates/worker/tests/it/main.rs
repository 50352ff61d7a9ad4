//! Integration tests of the worker runtime against real `redis-server`
//! processes: in-process workers with Rust handlers (`runtime`) and real
//! `taskline-worker` processes killed and signalled (`process`), the
//! metrics and health endpoints (`metrics`), the configuration loader
//! (`config`, `config_props`), flow control (`flow`), the `http` and
//! `command` handler kinds against real local servers and child processes
//! (`http`, `command`), the container files (`containers`), and leases
//! across Redis stalls (`stalls`).

mod scrape;
mod support;

mod command;
mod config;
mod config_props;
mod containers;
mod flow;
mod http;
mod metrics;
mod process;
mod progress;
mod resume;
mod runtime;
mod stalls;
