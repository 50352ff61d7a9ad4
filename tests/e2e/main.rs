//! End-to-end tests that cross binaries: producers (the client crate), real
//! `taskline-worker` processes and the `taskline` CLI, against real Redis
//! deployments (one server, Sentinel, a multi-master cluster) started on
//! free ports by the test kit. Tests of one crate stay in that crate.
//!
//! One test binary with a module per area; shared helpers live in
//! `support`.

mod support;

mod cluster_failover;
