//! Building the `taskline-worker` binary for tests of other crates (the
//! bench, the chaos runner), which run it as a real process but cannot
//! name it with `CARGO_BIN_EXE_*` because it belongs to another package.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `taskline-worker` into the directory of `binary` (a test's own
/// binary from `CARGO_BIN_EXE_*`: same target dir and profile) and returns
/// its path. A no-op build when it is fresh.
pub fn build_worker_next_to(binary: &Path) -> PathBuf {
    let bin_dir = binary.parent().expect("the binary has a directory");
    let target_dir = bin_dir.parent().expect("the profile directory has a parent");
    let profile = bin_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", "taskline-worker", "--bin", "taskline-worker"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command.status().expect("run cargo build -p taskline-worker");
    assert!(status.success(), "cargo build -p taskline-worker failed: {status}");
    let worker = bin_dir.join(format!("taskline-worker{}", std::env::consts::EXE_SUFFIX));
    assert!(worker.is_file(), "no worker binary at {} after the build", worker.display());
    worker
}
