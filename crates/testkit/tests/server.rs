//! Behaviour of `RedisServer` against real `redis-server` processes.

use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::time::Duration;

use redis::AsyncCommands;
use taskline_testkit::{RedisServer, hash_slot};

/// Whether a process with this pid exists (`kill -0`).
fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run kill -0")
        .success()
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

async fn ping(con: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(con).await
}

#[tokio::test]
async fn start_answers_ping_on_its_own_port_and_dir() {
    let server = RedisServer::start();
    let port = server.port();
    assert_ne!(port, 6379);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/"));

    let mut con = server.connection().await;
    assert_eq!(ping(&mut con).await.unwrap(), "PONG");

    // It is the process we own, configured as promised.
    assert_eq!(server.info_field("server", "process_id"), Some(server.pid().unwrap().to_string()));
    assert_eq!(server.info_field("server", "tcp_port"), Some(port.to_string()));
    assert_eq!(server.info_field("server", "nonexistent"), None);
    assert_eq!(server.info_field("persistence", "aof_enabled").as_deref(), Some("0"));
    let save: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("save").query_async(&mut con).await.unwrap();
    assert_eq!(save, ["save", ""]);
    let dir: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("dir").query_async(&mut con).await.unwrap();
    assert_eq!(std::fs::canonicalize(&dir[1]).unwrap(), std::fs::canonicalize(server.dir()).unwrap());

    assert!(server.is_running());
    assert!(!server.is_cluster());
    assert!(server.log_path().starts_with(server.dir()));
    assert!(server.log().contains("Ready to accept connections"));
    assert_eq!(server.log_tail(1).lines().count(), 1);
}

#[tokio::test]
async fn servers_started_together_get_different_ports() {
    let servers: Vec<RedisServer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(RedisServer::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for server in &servers {
        let mut con = server.connection().await;
        let _: () = con.set("owner", server.port()).await.unwrap();
    }
    for server in &servers {
        let mut con = server.connection().await;
        let owner: u16 = con.get("owner").await.unwrap();
        assert_eq!(owner, server.port());
    }
}

#[tokio::test]
async fn restart_keeps_aof_data_on_the_same_port() {
    let server = RedisServer::builder().appendonly(true).appendfsync("always").start();
    assert_eq!(server.info_field("persistence", "aof_enabled").as_deref(), Some("1"));
    let port = server.port();
    let first_pid = server.pid().unwrap();
    let mut con = server.connection().await;
    let _: () = con.set("job:1", "payload").await.unwrap();
    let _: () = con.rpush("ready", &["a", "b"]).await.unwrap();

    server.restart();

    assert_eq!(server.port(), port);
    let second_pid = server.pid().unwrap();
    assert_ne!(second_pid, first_pid);
    assert!(!process_exists(first_pid));
    let mut con = server.connection().await;
    let job: String = con.get("job:1").await.unwrap();
    assert_eq!(job, "payload");
    let ready: Vec<String> = con.lrange("ready", 0, -1).await.unwrap();
    assert_eq!(ready, ["a", "b"]);
    // Both runs wrote to the same log.
    assert_eq!(server.log().matches("Ready to accept connections").count(), 2);
}

#[tokio::test]
async fn restart_without_aof_loses_data() {
    let server = RedisServer::start();
    let mut con = server.connection().await;
    let _: () = con.set("k", "v").await.unwrap();
    server.restart();
    let mut con = server.connection().await;
    let v: Option<String> = con.get("k").await.unwrap();
    assert_eq!(v, None);
}

#[tokio::test]
async fn graceful_shutdown_and_restart_keep_aof_data() {
    let server = RedisServer::builder().appendonly(true).start();
    let mut con = server.connection().await;
    let _: () = con.set("k", "v").await.unwrap();

    let pid = server.pid().unwrap();
    server.shutdown();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(!process_exists(pid));
    assert!(refuses_connections(server.port()));
    assert!(server.log().contains("ready to exit, bye bye"));
    server.shutdown(); // stopping a stopped server is a no-op

    server.restart_graceful(); // starts it, since it was stopped
    let mut con = server.connection().await;
    let v: String = con.get("k").await.unwrap();
    assert_eq!(v, "v");
}

#[tokio::test]
async fn kill_makes_connections_fail() {
    let server = RedisServer::start();
    let mut con = server.connection().await;
    assert_eq!(ping(&mut con).await.unwrap(), "PONG");
    let pid = server.pid().unwrap();

    server.kill();

    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(!process_exists(pid));
    assert!(ping(&mut con).await.is_err(), "old connection still works");
    assert!(server.client().get_multiplexed_async_connection().await.is_err());
    assert!(refuses_connections(server.port()));
    server.kill(); // killing a stopped server is a no-op

    server.restart();
    let mut con = server.connection().await;
    assert_eq!(ping(&mut con).await.unwrap(), "PONG");
}

#[tokio::test]
async fn pause_freezes_the_server_until_resume() {
    let server = RedisServer::start();
    let mut con = server.connection().await;
    assert_eq!(ping(&mut con).await.unwrap(), "PONG");

    server.pause();
    assert!(server.is_paused());
    assert!(server.is_running());
    let frozen = tokio::time::timeout(Duration::from_millis(200), ping(&mut con)).await;
    assert!(frozen.is_err(), "paused server answered: {frozen:?}");
    // The kernel still accepts connections, nobody answers them.
    let mut other = server
        .client()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(200)))
                .set_response_timeout(Some(Duration::from_millis(200))),
        )
        .await;
    if let Ok(other) = other.as_mut() {
        assert!(ping(other).await.is_err());
    }

    server.resume();
    assert!(!server.is_paused());
    let answer = tokio::time::timeout(Duration::from_secs(2), ping(&mut con))
        .await
        .expect("resumed server does not answer");
    assert_eq!(answer.unwrap(), "PONG");
    server.resume(); // resuming a running server is a no-op
}

#[test]
fn drop_kills_the_process_and_removes_the_dir() {
    let server = RedisServer::start();
    let pid = server.pid().unwrap();
    let port = server.port();
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    assert!(dir.exists());

    drop(server);

    assert!(!process_exists(pid), "redis-server {pid} survived drop");
    assert!(refuses_connections(port));
    assert!(!dir.exists());
}

#[test]
fn drop_kills_a_paused_process() {
    let server = RedisServer::start();
    let pid = server.pid().unwrap();
    server.pause();
    drop(server);
    assert!(!process_exists(pid), "paused redis-server {pid} survived drop");
}

#[test]
fn drop_during_a_panic_still_kills_the_process() {
    let mut pid = None;
    let message = panic_message(|| {
        let server = RedisServer::start();
        pid = server.pid();
        panic!("test failure");
    });
    assert_eq!(message, "test failure");
    assert!(!process_exists(pid.unwrap()));
}

#[test]
fn failed_start_panics_with_the_server_output() {
    let message = panic_message(|| {
        RedisServer::builder().config("maxmemory-policy", "not-a-policy").start();
    });
    assert!(message.contains("exited during start-up"), "{message}");
    assert!(message.contains("not-a-policy"), "{message}");
    assert!(message.contains("FATAL CONFIG"), "{message}");
}

#[test]
fn a_start_slower_than_the_ready_timeout_panics_naming_the_option() {
    // No redis-server answers within zero time of its spawn.
    let message = panic_message(|| {
        RedisServer::builder().ready_timeout(Duration::ZERO).start();
    });
    assert!(message.contains("was not ready within 0ns"), "{message}");
    assert!(message.contains("RedisServerBuilder::ready_timeout"), "{message}");
}

#[tokio::test]
async fn restart_waits_as_long_as_the_ready_timeout_allows() {
    let server = RedisServer::builder().appendonly(true).ready_timeout(Duration::from_secs(60)).start();
    let mut con = server.connection().await;
    let _: () = con.set("k", "v").await.expect("set");
    server.restart();
    let mut con = server.connection().await;
    let v: String = con.get("k").await.expect("get");
    assert_eq!(v, "v");
}

#[test]
fn missing_binary_panics_with_advice() {
    let message = panic_message(|| {
        RedisServer::builder().binary("/nonexistent/redis-server").start();
    });
    assert!(message.contains("/nonexistent/redis-server"), "{message}");
    assert!(message.contains("TASKLINE_REDIS_SERVER"), "{message}");
}

#[tokio::test]
async fn cluster_mode_owns_every_slot_and_rejects_cross_slot_scripts() {
    let server = RedisServer::builder().cluster_enabled(true).start();
    assert!(server.is_cluster());
    assert_eq!(server.info_field("cluster", "cluster_enabled").as_deref(), Some("1"));
    let mut con = server.connection().await;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut con).await.unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");

    // The local function agrees with the server.
    let keys = [
        "foo",
        "bar",
        "",
        "{user1000}.following",
        "{user1000}.followers",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "taskline:{emails}:ready",
        "taskline:{emails}:job:018f3c",
        "{",
        "}{",
        "naïve-ключ",
    ];
    for key in keys {
        assert_eq!(server.key_slot(key), hash_slot(key.as_bytes()), "key {key:?}");
    }
    assert_eq!(server.key_slot("foo"), 12182);
    assert_eq!(server.key_slot(b"\xff\x00binary"), hash_slot(b"\xff\x00binary"));

    // Keys in different slots: rejected, whether declared or not.
    let two_keys = redis::Script::new("redis.call('SET', KEYS[1], 1) return redis.call('GET', KEYS[2])");
    let crossed: redis::RedisResult<Option<String>> =
        two_keys.key("foo").key("bar").invoke_async(&mut con).await;
    let error = crossed.unwrap_err();
    assert_eq!(error.code(), Some("CROSSSLOT"), "{error}");
    // A key the script did not declare, in another slot: rejected only for
    // scripts with a `#!lua` shebang; Redis 7 lets scripts without one
    // (compatibility mode) reach across slots on a single node.
    let strict = redis::Script::new("#!lua\nreturn redis.call('GET', ARGV[1])");
    let sneaky: redis::RedisResult<Option<String>> =
        strict.key("foo").arg("bar").invoke_async(&mut con).await;
    let error = sneaky.unwrap_err().to_string();
    assert!(error.contains("do not hash to the same slot"), "{error}");
    let lenient = redis::Script::new("return redis.call('GET', ARGV[1])");
    let allowed: redis::RedisResult<Option<String>> =
        lenient.key("foo").arg("bar").invoke_async(&mut con).await;
    assert_eq!(allowed.unwrap(), None);

    // One hash tag: accepted.
    let same_tag: Option<String> =
        two_keys.key("taskline:{emails}:a").key("taskline:{emails}:a").invoke_async(&mut con).await.unwrap();
    assert_eq!(same_tag.as_deref(), Some("1"));
}

#[tokio::test]
async fn cluster_mode_survives_restart() {
    let server = RedisServer::builder().cluster_enabled(true).appendonly(true).start();
    let mut con = server.connection().await;
    let _: () = con.set("{q}:k", "v").await.unwrap();

    server.restart();

    assert_eq!(server.info_field("cluster", "cluster_enabled").as_deref(), Some("1"));
    let mut con = server.connection().await;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut con).await.unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    let v: String = con.get("{q}:k").await.unwrap();
    assert_eq!(v, "v");
}

#[test]
#[should_panic(expected = "cluster_enabled(true)")]
fn key_slot_needs_a_cluster_server() {
    RedisServer::start().key_slot("foo");
}
