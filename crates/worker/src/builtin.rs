//! Builds the handlers configured in TOML, one per `[handlers.<job name>]`,
//! for [`crate::WorkerBuilder::build`]. Problems only visible at start (an
//! unset `${NAME}` variable, a program not on `PATH`) are configuration
//! errors that name the field.

use std::sync::Arc;

use crate::command::CommandHandler;
use crate::config::{ConfigError, HandlerConfig, HandlerKind, handler_field};
use crate::handler::{Handler, WithMaxVersion};
use crate::http::{HttpHandler, shared_client};
use crate::simulate::SimulateHandler;

/// Makes configured handlers; holds the HTTP client that every http
/// handler shares (one connection pool per worker).
#[derive(Default)]
pub(crate) struct Builtins {
    http_client: Option<reqwest::Client>,
}

impl Builtins {
    /// The handler of `[handlers.<name>]`.
    pub fn build(&mut self, name: &str, config: &HandlerConfig) -> Result<Arc<dyn Handler>, ConfigError> {
        let max_version = config.max_version.unwrap_or(u32::MAX);
        Ok(match config.kind {
            HandlerKind::Simulate => Arc::new(WithMaxVersion::new(SimulateHandler, max_version)),
            HandlerKind::Http => {
                let client = self.http_client(name)?;
                Arc::new(WithMaxVersion::new(HttpHandler::from_config(name, config, client)?, max_version))
            }
            HandlerKind::Command => {
                Arc::new(WithMaxVersion::new(CommandHandler::from_config(name, config)?, max_version))
            }
        })
    }

    fn http_client(&mut self, name: &str) -> Result<reqwest::Client, ConfigError> {
        if let Some(client) = &self.http_client {
            return Ok(client.clone());
        }
        let client = shared_client().map_err(|e| {
            ConfigError::new(handler_field(name, &[]), format!("cannot set up the HTTP client: {e}"))
        })?;
        self.http_client = Some(client.clone());
        Ok(client)
    }
}
