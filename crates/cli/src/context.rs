//! What every command works with: a connected client, the URL it came
//! from, and how to print.

use std::time::Duration;

use taskline::{Client, ClientOptions, RedisTarget, SentinelTarget};

use crate::cli::Cli;
use crate::error::{CliError, mask_password};

/// How long the CLI waits for Redis to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the command line names: `--cluster`, `--sentinels` with
/// `--master-name`, or `--redis-url` (one server).
fn target(cli: &Cli) -> Result<RedisTarget, CliError> {
    let url = cli.redis_url.as_str();
    match (cli.cluster.is_empty(), cli.sentinels.is_empty()) {
        (false, false) => Err(CliError::Usage("give --cluster or --sentinels, not both".into())),
        (false, true) => Ok(RedisTarget::cluster(cli.cluster.iter().map(|u| u.trim().to_string()))),
        (true, false) => {
            let Some(master_name) = cli.master_name.clone() else {
                return Err(CliError::Usage(
                    "--sentinels needs --master-name: the name the sentinels monitor the primary under"
                        .into(),
                ));
            };
            Ok(RedisTarget::Sentinel(SentinelTarget {
                sentinels: cli.sentinels.iter().map(|u| u.trim().to_string()).collect(),
                master_name,
                password: cli.master_password.clone(),
                ..SentinelTarget::default()
            }))
        }
        (true, true) => {
            if !["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|s| url.starts_with(s)) {
                return Err(CliError::Usage(format!(
                    "invalid --redis-url {:?}: expected redis://host:port[/db], rediss://... (TLS) or unix:///path",
                    mask_password(url)
                )));
            }
            Ok(RedisTarget::server(url))
        }
    }
}

/// A connected command context.
pub struct Ctx {
    /// The client every command talks through.
    pub client: Client,
    /// Where Redis is, passwords masked: what errors name.
    pub url: String,
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Ctx {
    /// Connects to the Redis named on the command line.
    pub async fn connect(cli: &Cli) -> Result<Ctx, CliError> {
        let options = ClientOptions {
            prefix: cli.prefix.clone(),
            connection_timeout: CONNECT_TIMEOUT,
            ..ClientOptions::default()
        };
        let target = target(cli)?;
        let shown = target.to_string();
        let client = Client::builder_for(target)
            .options(options)
            .connect()
            .await
            .map_err(|err| CliError::from(err).with_url(&shown))?;
        Ok(Ctx { client, url: shown, json: cli.json })
    }

    /// Fails with [`CliError::UnknownQueue`] unless `queue` is a queue: in
    /// the registry, or with any key. Read commands call this first so that
    /// a typo is reported instead of shown as an empty queue.
    pub async fn require_queue(&self, queue: &str) -> Result<(), CliError> {
        if self.client.queue_known(queue).await? {
            return Ok(());
        }
        let known = self.client.queues().await?;
        let prefix = self.client.options().prefix.clone();
        let hint = if known.is_empty() {
            "no queues are known under this prefix at all; check --prefix and --redis-url".to_string()
        } else {
            format!("known queues: {}", known.join(", "))
        };
        Err(CliError::UnknownQueue { queue: queue.to_string(), prefix, hint })
    }
}
