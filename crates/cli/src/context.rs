//! What every command works with: a connected client, the URL it came
//! from, and how to print.

use std::time::Duration;

use taskline::{Client, ClientOptions};

use crate::cli::Cli;
use crate::error::{CliError, mask_password};

/// How long the CLI waits for Redis to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connected command context.
pub struct Ctx {
    /// The client every command talks through.
    pub client: Client,
    /// The Redis URL (for the dedicated connection of `events --follow`).
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
        let url = cli.redis_url.as_str();
        if !["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|s| url.starts_with(s)) {
            return Err(CliError::Usage(format!(
                "invalid --redis-url {:?}: expected redis://host:port[/db], rediss://... (TLS) or unix:///path",
                mask_password(url)
            )));
        }
        let client = Client::builder(url)
            .options(options)
            .connect()
            .await
            .map_err(|err| CliError::from(err).with_url(url))?;
        Ok(Ctx { client, url: cli.redis_url.clone(), json: cli.json })
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
