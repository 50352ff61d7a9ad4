//! Integration tests of the worker runtime against real `redis-server`
//! processes: in-process workers with Rust handlers (`runtime`) and real
//! `taskline-worker` processes killed and signalled (`process`), and the
//! configuration loader (`config`).

mod support;

mod config;
mod process;
mod runtime;
