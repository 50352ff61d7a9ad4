//! The container files (`Dockerfile`, `docker-compose.yml`) checked
//! without Docker: their structure, and that they agree with the worker's
//! configuration (the stop grace period outlasts the mounted config's
//! shutdown timeout, the health check asks the port the worker serves).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;
use taskline_worker::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).expect("read docker-compose.yml");
    serde_yaml::from_str(&text).expect("docker-compose.yml is YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose.get("services").and_then(|s| s.get(name)).unwrap_or_else(|| panic!("no service {name}"))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => {
            items.iter().map(|v| v.as_str().expect("a string").to_string()).collect()
        }
        Some(Value::String(text)) => text.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// A service's `environment`, written as a map or as `KEY=value` items.
fn environment(service: &Value) -> HashMap<String, String> {
    match service.get("environment") {
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).expect("scalar").trim().to_string(),
                };
                (k.as_str().expect("a name").to_string(), value)
            })
            .collect(),
        Some(Value::Sequence(_)) => strings(service.get("environment"))
            .into_iter()
            .filter_map(|item| item.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
        _ => HashMap::new(),
    }
}

#[test]
fn redis_persists_with_aof_on_a_named_volume() {
    let compose = compose();
    let redis = service(&compose, "redis");
    let command = strings(redis.get("command"));
    let aof = command.iter().position(|a| a == "--appendonly").expect("--appendonly in the command");
    assert_eq!(command.get(aof + 1).map(String::as_str), Some("yes"), "{command:?}");
    let volumes = strings(redis.get("volumes"));
    let data = volumes.iter().find(|v| v.ends_with(":/data")).expect("a volume on /data");
    let name = data.split(':').next().expect("volume name");
    assert!(compose["volumes"].get(name).is_some(), "volume {name} is declared at the top level");
    assert!(redis.get("healthcheck").is_some(), "the worker waits for a healthy Redis");
}

#[test]
fn the_worker_service_scales_stops_gracefully_and_has_a_healthcheck() {
    let compose = compose();
    let worker = service(&compose, "worker");
    assert!(worker.get("container_name").is_none(), "a fixed container_name prevents --scale");
    for port in strings(worker.get("ports")) {
        assert!(!port.contains(':'), "a fixed host port {port:?} prevents --scale; use expose");
    }
    assert!(worker.get("build").is_some(), "the worker is built from the Dockerfile");
    assert_eq!(worker["stop_signal"].as_str(), Some("SIGTERM"));

    // The configuration the container runs: config/ is mounted where the
    // command's --config points, with the service's environment on top.
    let mount = strings(worker.get("volumes"))
        .into_iter()
        .find(|v| v.starts_with("./config:"))
        .expect("config/ is mounted");
    let target = mount.split(':').nth(1).expect("mount target").to_string();
    let command = strings(worker.get("command"));
    let at = command.iter().position(|a| a == "--config").expect("--config in the command");
    let file = command[at + 1].strip_prefix(&format!("{target}/")).expect("--config is inside the mount");
    let env = environment(worker);
    let config = Config::load_with_env(&repo().join("config").join(file), env.clone())
        .unwrap_or_else(|e| panic!("the mounted config with the service's environment: {e}"));

    let grace = humantime::parse_duration(worker["stop_grace_period"].as_str().expect("stop_grace_period"))
        .expect("a duration");
    let drain = config.worker.shutdown_timeout;
    assert!(
        grace >= drain + Duration::from_secs(10),
        "stop_grace_period {grace:?} must outlast shutdown_timeout {drain:?} with room to release jobs"
    );

    let addr = config.worker.metrics_addr.expect("metrics_addr is set, so /healthz is served");
    assert!(addr.ip().is_unspecified(), "metrics listen on every interface: {addr}");
    let probe = strings(worker["healthcheck"].get("test")).join(" ");
    assert!(probe.contains("/healthz"), "{probe}");
    assert!(probe.contains(&addr.port().to_string()), "the probe asks port {}: {probe}", addr.port());
    assert!(strings(worker.get("expose")).contains(&addr.port().to_string()));
    assert!(env.get("TASKLINE_REDIS__URL").is_some_and(|u| u.contains("redis:")), "workers use the service");
}

#[test]
fn the_dockerfile_builds_like_ci_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    let stages: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(stages[0].ends_with(" AS builder"), "{stages:?}");
    let build = lines.iter().find(|l| l.contains("cargo build")).expect("a cargo build step");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).expect("read .ci/run");
    assert!(ci.contains("--workspace") && ci.contains("--locked"), "CI builds the workspace, locked");
    for flag in ["--locked", "--workspace", "--release"] {
        assert!(build.contains(flag), "the image builds like CI ({flag}): {build}");
    }

    let runtime = lines.iter().rposition(|l| l.starts_with("FROM ")).expect("a runtime stage");
    let last = &lines[runtime..];
    let user = last.iter().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER in the runtime stage");
    let user = user.split(':').next().expect("user");
    assert!(user != "root" && user != "0", "the runtime user is not root: {user}");
    let copied =
        last.iter().find(|l| l.starts_with("COPY --from=builder")).expect("binaries from the builder");
    for binary in ["/taskline-worker", "/taskline "] {
        assert!(copied.contains(binary), "the image holds {binary}: {copied}");
    }
    assert!(last.iter().any(|l| l.starts_with("ENTRYPOINT") && l.contains("taskline-worker")));
}
