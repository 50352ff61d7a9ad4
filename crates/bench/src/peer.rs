//! The BullMQ peer: `bench/bullmq/bench.mjs` run against the same Redis in
//! the same run, so every report can carry Taskline/BullMQ ratios.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::scenarios::Params;

/// Why the peer did not run, or its parsed JSON report.
pub enum Peer {
    /// Not run, with the reason shown to the user.
    Skipped(String),
    /// The peer's report (`{"peer":"bullmq","results":{...}}`).
    Ran(serde_json::Value),
}

/// The peer script's folder, found from the workspace root.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/bullmq")
}

/// Runs the peer with the same parameters, if Node.js and its packages are
/// there.
pub fn run(url: &str, params: &Params, scenarios: &[&str], prefix: &str) -> Peer {
    let dir = peer_dir();
    if Command::new("node").arg("--version").output().is_err() {
        return Peer::Skipped(
            "Node.js is not installed (`node` not on PATH); install it to compare with BullMQ".into(),
        );
    }
    if !dir.join("node_modules").is_dir() {
        return Peer::Skipped(format!("BullMQ is not installed: run `npm ci` in {}", dir.display()));
    }
    match invoke(&dir, url, params, scenarios, prefix) {
        Ok(report) => Peer::Ran(report),
        Err(err) => Peer::Skipped(format!("the BullMQ peer failed: {err:#}")),
    }
}

fn invoke(
    dir: &Path,
    url: &str,
    params: &Params,
    scenarios: &[&str],
    prefix: &str,
) -> Result<serde_json::Value> {
    let output = Command::new("node")
        .arg(dir.join("bench.mjs"))
        .args(["--url", url])
        .args(["--jobs", &params.jobs.to_string()])
        .args(["--concurrency", &params.concurrency.to_string()])
        .args(["--payload-bytes", &params.payload_bytes.to_string()])
        .args(["--rate", &params.rate.to_string()])
        .args(["--latency-seconds", &params.latency_seconds.to_string()])
        .args(["--scenarios", &scenarios.join(",")])
        .args(["--prefix", prefix])
        .output()
        .context("cannot start node")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("exit {}: {}", output.status, stderr.lines().last().unwrap_or(""));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line =
        stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON line on stdout")?;
    serde_json::from_str(line).context("the peer's JSON does not parse")
}
