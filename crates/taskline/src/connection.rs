//! Where Taskline's Redis lives, and the connection every call shares.
//!
//! Three deployments, named by a [`RedisTarget`]:
//!
//! - **One server** (`redis://` or `rediss://` URL), through the `redis`
//!   crate's `ConnectionManager`, which reconnects by itself. A one-node
//!   cluster that owns every slot counts as one server.
//! - **Sentinel**: the primary is found by asking the sentinels
//!   (`SENTINEL GET-MASTER-ADDR-BY-NAME`, then `ROLE` on the answer, so a
//!   replica is never taken for the primary). When a call fails in a way
//!   that says the primary may have moved (the connection broke or was
//!   refused, a `READONLY` or `MASTERDOWN` reply from a demoted node), the
//!   failed call returns its error as before and the primary is looked up
//!   again in the background; later calls go to the new one. Nothing is
//!   resent here: every Taskline script is safe to resend, and its caller
//!   decides (the worker resends outcomes, producers resend with the same
//!   job id).
//! - **Cluster**: the `redis` crate's async cluster connection, seeded with
//!   a few node URLs. It routes each script call by its first key (every key
//!   of a queue shares the queue's hash tag, so one slot), follows `MOVED`
//!   and `ASK` while slots migrate, and retries `TRYAGAIN` and
//!   `CLUSTERDOWN` with backoff.
//!
//! Blocking reads (a worker's idle wait, `watch`) never go through the
//! shared connection: `Connection::dedicated` opens a connection of their
//! own to the node that serves a given key.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, Value,
};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// What a [`crate::Client`] connects to.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server: `redis://[user:password@]host:port[/db]`, or
    /// `rediss://...` for TLS (append `#insecure` to skip certificate
    /// verification).
    Server(String),
    /// A primary watched by Redis Sentinel.
    Sentinel(SentinelTarget),
    /// A Redis Cluster.
    Cluster(ClusterTarget),
}

/// A primary found through Redis Sentinel.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SentinelTarget {
    /// The sentinels, as `redis://[user:password@]host:port` URLs (the
    /// credentials, if any, are the sentinels' own). Any one that answers
    /// is enough.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    pub master_name: String,
    /// ACL user on the data nodes (primary and replicas), if any.
    pub username: Option<String>,
    /// Password on the data nodes, if any.
    pub password: Option<String>,
    /// Database number on the data nodes (default 0).
    pub db: i64,
    /// Connect to the data nodes with TLS.
    pub tls: bool,
    /// With `tls`, skip certificate verification (self-signed test servers).
    pub tls_insecure: bool,
}

/// A Redis Cluster, reached through seed nodes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ClusterTarget {
    /// Seed nodes as `redis://[user:password@]host:port` URLs (or
    /// `rediss://` for TLS), following the `redis` crate's convention: any
    /// reachable node of the cluster will do, the client learns the rest;
    /// credentials and TLS are taken from the first.
    pub nodes: Vec<String>,
}

impl RedisTarget {
    /// One server at `url`.
    pub fn server(url: impl Into<String>) -> Self {
        RedisTarget::Server(url.into())
    }

    /// A cluster reached through `nodes`.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        RedisTarget::Cluster(ClusterTarget { nodes: nodes.into_iter().map(Into::into).collect() })
    }

    /// The primary named `master_name`, found through `sentinels`; no
    /// credentials or TLS on the data nodes (set the fields of
    /// [`SentinelTarget`] for those).
    pub fn sentinel<S: Into<String>>(
        sentinels: impl IntoIterator<Item = S>,
        master_name: impl Into<String>,
    ) -> Self {
        RedisTarget::Sentinel(SentinelTarget {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master_name: master_name.into(),
            ..SentinelTarget::default()
        })
    }
}

/// Shows the target with every password masked, so it can be logged.
impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |urls: &[String]| urls.iter().map(|u| mask_url(u)).collect::<Vec<_>>().join(",");
        match self {
            RedisTarget::Server(url) => f.write_str(&mask_url(url)),
            RedisTarget::Cluster(c) => write!(f, "cluster {}", list(&c.nodes)),
            RedisTarget::Sentinel(s) => {
                write!(f, "sentinel {} master {:?}", list(&s.sentinels), s.master_name)
            }
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

/// `url` with its password (and any `pass` / `password` query parameter)
/// replaced by `****`. User info without a `:` is masked whole: it may be a
/// token.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let mut out = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    let rest = match rest.rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => out += &format!("{user}:****@"),
                None => out += "****@",
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") => {
                        format!("{k}=****")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out + path + "?" + &params.join("&")
        }
        None => out + rest,
    }
}

/// Reply and connect timeouts of the shared connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub response: Duration,
    pub connect: Duration,
}

/// The shared connection of a client: cheap to clone, every clone the same
/// multiplexed connection (one per node on a cluster).
#[derive(Clone)]
pub(crate) enum Connection {
    Server(ServerConnection),
    Sentinel(SentinelConnection),
    Cluster(ClusterHandle),
}

/// A cluster: the crate's cluster connection, and the first seed's
/// connection details (credentials, TLS) for dedicated connections to its
/// nodes.
#[derive(Clone)]
pub(crate) struct ClusterHandle {
    conn: ClusterConnection,
    seed: ConnectionInfo,
}

/// One server: the connection manager, and how to open dedicated
/// connections to the same server.
#[derive(Clone)]
pub(crate) struct ServerConnection {
    conn: ConnectionManager,
    client: redis::Client,
}

impl Connection {
    /// Connects to `target`, checking that it is the kind of deployment it
    /// claims to be.
    pub(crate) async fn open(target: &RedisTarget, timeouts: Timeouts) -> Result<Connection> {
        let connecting = async {
            match target {
                RedisTarget::Server(url) => open_server(url, timeouts).await,
                RedisTarget::Sentinel(sentinel) => SentinelConnection::open(sentinel, timeouts).await,
                RedisTarget::Cluster(cluster) => open_cluster(cluster, timeouts).await,
            }
        };
        // Sentinel and cluster discovery take a few round trips of their own.
        tokio::time::timeout(timeouts.connect * 2 + timeouts.response, connecting)
            .await
            .map_err(|_| Error::ConnectTimeout(timeouts.connect))?
    }

    /// A new connection of its own to the node that serves `key` (the
    /// primary, on Sentinel), with a reply timeout of `response_timeout`:
    /// for blocking reads, which would stall the shared connection.
    pub(crate) async fn dedicated(
        &self,
        key: &str,
        response_timeout: Duration,
    ) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(response_timeout));
        let client = match self {
            Connection::Server(server) => server.client.clone(),
            Connection::Sentinel(sentinel) => sentinel.current().1,
            Connection::Cluster(cluster) => cluster.node_client_for_key(key).await?,
        };
        client.get_multiplexed_async_connection_with_config(&config).await
    }

    /// `host:port` of the node that serves `key` now: the master of its
    /// slot on a cluster, the primary behind Sentinel; `None` for one
    /// server (its URL says it).
    pub(crate) async fn node_of(&self, key: &str) -> RedisResult<Option<String>> {
        match self {
            Connection::Server(_) => Ok(None),
            Connection::Sentinel(sentinel) => {
                Ok(Some(address(sentinel.current().1.get_connection_info().addr())))
            }
            Connection::Cluster(cluster) => {
                let (host, port) = cluster.master_for_key(key).await?;
                Ok(Some(format!("{host}:{port}")))
            }
        }
    }

    /// Runs `cmd` on the primary that serves `key`'s slot (on one server or
    /// Sentinel, simply runs it): for commands without keys that must still
    /// go to a queue's node, such as `SCAN` over a queue's keys.
    pub(crate) async fn query_for_key<T: redis::FromRedisValue>(
        &self,
        key: &str,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match self {
            Connection::Cluster(cluster) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                    key.as_bytes(),
                    SlotAddr::Master,
                )));
                let value = cluster.conn.clone().route_command(cmd.clone(), routing).await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            other => cmd.query_async(&mut other.clone()).await,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(server) => server.conn.req_packed_command(cmd),
            Connection::Sentinel(sentinel) => sentinel.req_packed_command(cmd),
            Connection::Cluster(cluster) => cluster.conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(server) => server.conn.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(sentinel) => sentinel.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(cluster) => cluster.conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(server) => server.conn.get_db(),
            Connection::Sentinel(sentinel) => sentinel.current().0.get_db(),
            Connection::Cluster(cluster) => cluster.conn.get_db(),
        }
    }
}

fn manager_config(timeouts: Timeouts) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeouts.response))
        .set_connection_timeout(Some(timeouts.connect))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1))
}

async fn open_server(url: &str, timeouts: Timeouts) -> Result<Connection> {
    let client = redis::Client::open(url)?;
    let mut conn = ConnectionManager::new_with_config(client.clone(), manager_config(timeouts)).await?;
    refuse_cluster_member(&mut conn, &mask_url(url)).await?;
    Ok(Connection::Server(ServerConnection { conn, client }))
}

/// A node of a multi-node cluster given as one server would answer MOVED
/// for most queues: say what to configure instead. (A one-node cluster that
/// serves every slot works as one server.)
///
/// A user whose ACL denies INFO or CLUSTER INFO skips the check: it is
/// advice, not a rule.
async fn refuse_cluster_member(conn: &mut ConnectionManager, shown: &str) -> Result<()> {
    let info: String = match redis::cmd("INFO").arg("cluster").query_async(conn).await {
        Ok(info) => info,
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    if field(&info, "cluster_enabled") != Some("1") {
        return Ok(());
    }
    let cluster: String = match redis::cmd("CLUSTER").arg("INFO").query_async(conn).await {
        Ok(info) => info,
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    match field(&cluster, "cluster_known_nodes").and_then(|n| n.parse::<u32>().ok()) {
        Some(nodes) if nodes > 1 => Err(Error::WrongDeployment(format!(
            "{shown} is a node of a Redis Cluster of {nodes} nodes: connect as a cluster \
             (the worker's `[redis] cluster = [...]`, the CLI's `--cluster`), not as one server"
        ))),
        _ => Ok(()),
    }
}

async fn open_cluster(target: &ClusterTarget, timeouts: Timeouts) -> Result<Connection> {
    if target.nodes.is_empty() {
        return Err(Error::WrongDeployment("a cluster needs at least one seed node URL".into()));
    }
    let shown: Vec<String> = target.nodes.iter().map(|u| mask_url(u)).collect();
    let client = ClusterClient::builder(target.nodes.iter().map(String::as_str))
        .connection_timeout(timeouts.connect)
        .response_timeout(timeouts.response)
        .build()?;
    let mut conn = client.get_async_connection().await.map_err(|err| describe_cluster_error(err, &shown))?;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await?;
    if field(&info, "cluster_state") != Some("ok") {
        return Err(Error::WrongDeployment(format!(
            "the cluster at {} reports cluster_state:{} ({} of 16384 slots served): \
             fix it first (`redis-cli --cluster check <node>`)",
            shown.join(","),
            field(&info, "cluster_state").unwrap_or("?"),
            field(&info, "cluster_slots_ok").unwrap_or("?"),
        )));
    }
    let seed = target.nodes[0].as_str().into_connection_info()?;
    Ok(Connection::Cluster(ClusterHandle { conn, seed }))
}

/// Turns the cluster client's refusal of a plain server into advice.
fn describe_cluster_error(err: redis::RedisError, shown: &[String]) -> Error {
    let text = err.to_string();
    if text.contains("cluster support disabled") || text.contains("ERR unknown command") {
        Error::WrongDeployment(format!(
            "{} has cluster support disabled: it is one server, so connect with its URL \
             (the worker's `[redis] url`, the CLI's `--redis-url`), not as a cluster",
            shown.join(",")
        ))
    } else if err.is_io_error() || err.is_connection_refusal() || err.is_timeout() {
        Error::WrongDeployment(format!(
            "no seed node of the cluster answered ({}): {text}; check the addresses",
            shown.join(",")
        ))
    } else {
        Error::Redis(err)
    }
}

impl ClusterHandle {
    /// Host and port of the master that serves `key`'s slot now.
    async fn master_for_key(&self, key: &str) -> RedisResult<(String, u16)> {
        let mut conn = self.conn.clone();
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut conn).await?;
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
        master_of_slot(&slots, slot).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "no master serves the slot",
                format!("slot {slot}"),
            ))
        })
    }

    /// A client for the master that serves `key`'s slot now, with the
    /// seed nodes' credentials and TLS.
    async fn node_client_for_key(&self, key: &str) -> RedisResult<redis::Client> {
        let (host, port) = self.master_for_key(key).await?;
        let addr = match self.seed.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => {
                ConnectionAddr::TcpTls { host, port, insecure: *insecure, tls_params: None }
            }
            _ => ConnectionAddr::Tcp(host, port),
        };
        redis::Client::open(self.seed.clone().set_addr(addr))
    }
}

/// `host:port` (or the socket path) of a connection address.
fn address(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}

/// The master's host and port for `slot` in a `CLUSTER SLOTS` reply.
fn master_of_slot(slots: &Value, slot: u16) -> Option<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(parts) = range else {
            return None;
        };
        let start: u16 = redis::from_redis_value(parts.first()?.clone()).ok()?;
        let end: u16 = redis::from_redis_value(parts.get(1)?.clone()).ok()?;
        if !(start..=end).contains(&slot) {
            return None;
        }
        let Value::Array(node) = parts.get(2)? else {
            return None;
        };
        let host: String = redis::from_redis_value(node.first()?.clone()).ok()?;
        let port: u16 = redis::from_redis_value(node.get(1)?.clone()).ok()?;
        Some((host, port))
    })
}

/// The primary behind Sentinel: the current connection and a way to find
/// the next one.
#[derive(Clone)]
pub(crate) struct SentinelConnection {
    shared: Arc<SentinelShared>,
}

struct SentinelShared {
    /// The connection to the primary, its client (for dedicated
    /// connections), and a generation that counts rediscoveries.
    current: RwLock<(ConnectionManager, redis::Client, u64)>,
    /// Asks the sentinels; a tokio mutex, held across the discovery's
    /// awaits by the one task that rediscovers.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The generation a rediscovery is running for, if one is.
    rediscovering: Mutex<Option<u64>>,
    timeouts: Timeouts,
    master_name: String,
}

impl SentinelConnection {
    async fn open(target: &SentinelTarget, timeouts: Timeouts) -> Result<Connection> {
        if target.sentinels.is_empty() || target.master_name.is_empty() {
            return Err(Error::WrongDeployment(
                "Sentinel needs at least one sentinel URL and the master name".into(),
            ));
        }
        let mut node = redis::RedisConnectionInfo::default().set_db(target.db);
        if let Some(user) = &target.username {
            node = node.set_username(user);
        }
        if let Some(password) = &target.password {
            node = node.set_password(password);
        }
        let mut node_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
        if target.tls {
            let mode = if target.tls_insecure { redis::TlsMode::Insecure } else { redis::TlsMode::Secure };
            node_info = node_info.set_tls_mode(mode);
        }
        let mut sentinel = SentinelClient::build(
            target.sentinels.clone(),
            target.master_name.clone(),
            Some(node_info),
            SentinelServerType::Master,
        )?;
        let shown: Vec<String> = target.sentinels.iter().map(|u| mask_url(u)).collect();
        let client = sentinel.async_get_client().await.map_err(|err| {
            Error::WrongDeployment(format!(
                "the sentinels {} named no reachable primary for {:?}: {err}; check the sentinel \
                 addresses and the master name",
                shown.join(","),
                target.master_name
            ))
        })?;
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config(timeouts)).await?;
        let shared = SentinelShared {
            current: RwLock::new((conn, client, 0)),
            sentinel: tokio::sync::Mutex::new(sentinel),
            rediscovering: Mutex::new(None),
            timeouts,
            master_name: target.master_name.clone(),
        };
        Ok(Connection::Sentinel(SentinelConnection { shared: Arc::new(shared) }))
    }

    /// The connection, client and generation in use now.
    fn current(&self) -> (ConnectionManager, redis::Client, u64) {
        self.shared.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a call through the connection of `generation`: an error that
    /// says the primary may have moved starts a rediscovery.
    fn after<T>(&self, result: &RedisResult<T>, generation: u64) {
        if let Err(err) = result
            && primary_may_have_moved(err)
        {
            self.rediscover(generation);
        }
    }

    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut conn, _, generation) = self.current();
            let result = conn.req_packed_command(cmd).await;
            self.after(&result, generation);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut conn, _, generation) = self.current();
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            self.after(&result, generation);
            result
        })
    }

    /// Starts one background task (at most one per generation) that asks
    /// the sentinels for the primary until one answers as master, then
    /// swaps the connection. It holds only a weak reference: it ends when
    /// the client is dropped.
    fn rediscover(&self, generation: u64) {
        {
            let mut running = self.shared.rediscovering.lock().unwrap_or_else(|p| p.into_inner());
            if running.is_some_and(|g| g >= generation) {
                return;
            }
            *running = Some(generation);
        }
        let weak: Weak<SentinelShared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                let Some(shared) = weak.upgrade() else { return };
                match shared.discover().await {
                    Ok((conn, client)) => {
                        let mut current = shared.current.write().unwrap_or_else(|p| p.into_inner());
                        *current = (conn, client, generation + 1);
                        info!(master = %shared.master_name, "Sentinel: connected to the primary");
                        return;
                    }
                    Err(err) => {
                        warn!(master = %shared.master_name, error = %err, "Sentinel: no primary yet; asking again")
                    }
                }
                drop(shared);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        });
    }
}

impl SentinelShared {
    async fn discover(&self) -> RedisResult<(ConnectionManager, redis::Client)> {
        let client = self.sentinel.lock().await.async_get_client().await?;
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config(self.timeouts)).await?;
        Ok((conn, client))
    }
}

/// Errors after which the primary may be another node: the connection
/// broke or was refused, or the node answered as a replica (`READONLY`) or
/// as one that lost its primary (`MASTERDOWN`).
fn primary_may_have_moved(err: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{MasterDown, ReadOnly};
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(err.kind(), redis::ErrorKind::Server(ReadOnly | MasterDown))
}

/// One `field:value` line of an INFO-style reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(mask_url("redis://user:secret@h:1/0"), "redis://user:****@h:1/0");
        assert_eq!(mask_url("rediss://secret@h:1"), "rediss://****@h:1");
        assert_eq!(mask_url("redis://h:1"), "redis://h:1");
        let target = RedisTarget::cluster(["redis://:pw@a:1", "redis://b:2"]);
        assert_eq!(target.to_string(), "cluster redis://:****@a:1,redis://b:2");
    }

    #[test]
    fn finds_the_master_of_a_slot() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![Value::BulkString(host.as_bytes().to_vec()), Value::Int(port), Value::Nil])
        };
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("10.0.0.2", 7001)]),
        ]);
        assert_eq!(master_of_slot(&slots, 0), Some(("10.0.0.1".into(), 7000)));
        assert_eq!(master_of_slot(&slots, 5461), Some(("10.0.0.2".into(), 7001)));
        assert_eq!(master_of_slot(&Value::Nil, 1), None);
    }
}
