//! The worker's configuration: a TOML file, then `TASKLINE_*` environment
//! overrides, deserialized into typed structs and validated before anything
//! connects to Redis.
//!
//! `config/worker.toml` is the annotated example and `config/README.md` the
//! reference of every field. In short:
//!
//! - Every field has a default except the queues themselves: a file holding
//!   only `[queues.default]` is a complete configuration.
//! - Durations are strings with units (`"30s"`, `"5m"`, `"1h30m"`).
//! - Unknown fields are errors, so a misspelt option never silently falls
//!   back to its default.
//! - An environment variable `TASKLINE_<SECTION>__<FIELD>` (two underscores
//!   between levels) overrides a field, e.g. `TASKLINE_QUEUES__EMAILS__CONCURRENCY=8`.
//!   Variables without `__` (such as `TASKLINE_REDIS_SERVER`) are not
//!   overrides and are ignored.
//! - Every error is a [`ConfigError`] that names the file and the field.
//!
//! # Layout
//!
//! - this file: [`ConfigError`] and the loaders, which run the steps below
//!   in order.
//! - `schema`: the structs, their defaults and serde attributes.
//! - `deserialize`: durations with units, addresses, rate limits, jitter.
//! - `env`: the `TASKLINE_*` overrides, and the variable an error names.
//! - `errors`: errors of the `config` crate and the TOML parser, turned
//!   into ones that name a field or a line.
//! - `validate`: every value and cross-reference.
//! - `render`: the `--check-config` output, secrets masked.
//! - `handlers`: the `[handlers.<job name>]` tables.

use std::collections::HashMap;
use std::path::Path;

use config::Source as _;

mod deserialize;
mod env;
mod errors;
mod handlers;
mod render;
mod schema;
mod validate;

use env::{EnvOverrides, env_field_path};
use errors::{ARRAY_MESSAGE, convert_error, first_array, locate};
pub(crate) use handlers::handler_field;
pub use handlers::{
    DEFAULT_KILL_GRACE, DEFAULT_MAX_RESULT_BYTES, DEFAULT_TRANSIENT_EXIT_CODES, EndpointUrl, HandlerConfig,
    HandlerKind, NamedValues, looks_secret,
};
pub(crate) use render::field_path;
pub use render::format_duration;
pub use schema::{
    BackoffConfig, Config, DEFAULT_URL, DurabilityMode, LogFormat, QueueConfig, RedisConfig, RetentionConfig,
    SentinelConfig, WorkerSettings,
};
pub use taskline::connection::mask_url;

/// Prefix of environment variables that override configuration fields.
pub const ENV_PREFIX: &str = "TASKLINE_";

/// Separator between nesting levels in an override variable's name.
pub const ENV_SEPARATOR: &str = "__";

/// The file name reported by [`Config::from_toml_str`] and [`Config::validate`].
const STRING_FILE: &str = "<string>";
const UNLOADED_FILE: &str = "<config>";

/// The top-level tables of a configuration file.
const SECTIONS: [&str; 4] = ["redis", "worker", "queues", "handlers"];

/// A configuration that cannot be used: where it is and what is wrong.
///
/// Displayed as `<file>: <field>: <message>`, for example
/// `config/worker.toml: worker.lease: invalid duration "30 parsecs": ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    /// The file the configuration came from; `<string>` for
    /// [`Config::from_toml_str`], `<config>` for a bare [`Config::validate`].
    pub file: String,
    /// Dotted path of the offending field (`queues.emails.weight`), or
    /// `line L, column C` for a TOML syntax error, `(file)` when the file
    /// itself cannot be read, or the variable's name for a bad environment
    /// variable.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: UNLOADED_FILE.into(), field: field.into(), message: message.into() }
    }

    fn in_file(mut self, file: &str) -> Self {
        self.file = file.into();
        self
    }
}

impl Config {
    /// Loads `path`, applies the `TASKLINE_*` overrides of the process
    /// environment, and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut env = HashMap::new();
        for (key, value) in std::env::vars_os() {
            // Names that are not Unicode cannot be overrides; skip them.
            let Ok(key) = key.into_string() else { continue };
            if env_field_path(&key).is_none() {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| ConfigError::new(key.clone(), "the value is not valid UTF-8").in_file(&file))?;
            env.insert(key, value);
        }
        Self::load_with_env(path, env)
    }

    /// Like [`Config::load`], with the environment given as a map (for
    /// tests). Entries that are not overrides are ignored.
    pub fn load_with_env(path: &Path, env: HashMap<String, String>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new("(file)", format!("cannot read the configuration file: {e}")).in_file(&file)
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::new("(file)", format!("the file is not UTF-8 text: {e}")).in_file(&file)
        })?;
        Self::parse(&text, &file, env)
    }

    /// Parses and validates TOML text, without environment overrides.
    /// Errors name the file `<string>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, STRING_FILE, HashMap::new())
    }

    fn parse(text: &str, file: &str, env: HashMap<String, String>) -> Result<Config, ConfigError> {
        let overrides = EnvOverrides::new(env).map_err(|e| e.in_file(file))?;
        let source = config::File::from_str(text, config::FileFormat::Toml);
        // The builder reads top-level keys as path expressions, and a key
        // like "a[400000000]" would make it allocate a huge array: refuse
        // unknown sections before the builder sees them.
        let top = source
            .collect()
            .map_err(|e| locate(convert_error(e, &overrides), text, &overrides).in_file(file))?;
        if let Some(key) = top.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            let sections: Vec<String> = SECTIONS.iter().map(|s| format!("`{s}`")).collect();
            let message = format!("unknown field, expected one of {}", sections.join(", "));
            return Err(ConfigError::new(field_path(&[key]), message).in_file(file));
        }
        let convert = |e| convert_error(e, &overrides).in_file(file);
        let merged = config::Config::builder()
            .add_source(source)
            .add_source(overrides.source())
            .build()
            .map_err(convert)?;
        let tree = merged.collect().map_err(convert)?;
        let config: Config = merged.try_deserialize().map_err(convert)?;
        // serde lets a struct be written as an array of its fields in order;
        // no field takes an array, so any array is a mistake.
        if let Some(path) = first_array(tree) {
            return Err(overrides.attribute(ConfigError::new(path, ARRAY_MESSAGE)).in_file(file));
        }
        overrides.check_case(&config).map_err(|e| e.in_file(file))?;
        config.validate().map_err(|e| overrides.attribute(e).in_file(file))?;
        Ok(config)
    }
}
