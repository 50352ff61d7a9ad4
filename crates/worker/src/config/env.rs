//! Environment overrides: `TASKLINE_<SECTION>__<FIELD>` variables set
//! fields over the file's, and an error about a field they set names the
//! variable.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{Config, ConfigError, ENV_PREFIX, ENV_SEPARATOR};

/// The `TASKLINE_*__*` variables of an environment, with the field each sets.
pub(super) struct EnvOverrides {
    /// `(variable, dotted field path)`, e.g. `("TASKLINE_WORKER__LEASE", "worker.lease")`.
    fields: Vec<(String, String)>,
    vars: HashMap<String, String>,
}

/// The dotted field path an override variable sets, or `None` when the
/// variable is not an override (wrong prefix or no `__`). Like the `config`
/// crate, this lowercases the name.
pub(super) fn env_field_path(var: &str) -> Option<String> {
    let lower = var.to_lowercase();
    let rest = lower.strip_prefix(&ENV_PREFIX.to_lowercase())?;
    rest.contains(ENV_SEPARATOR).then(|| rest.replace(ENV_SEPARATOR, "."))
}

impl EnvOverrides {
    /// The overrides among `env`: other variables are ignored, empty values
    /// count as unset, and a name that is not a plain field path is an error.
    pub(super) fn new(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut fields = Vec::new();
        let mut vars = HashMap::new();
        for (var, value) in env {
            let Some(path) = env_field_path(&var) else { continue };
            // An empty value means unset, as in most deployment templates.
            if value.is_empty() {
                continue;
            }
            // Refuse anything the config crate would read as more than a
            // plain path (brackets index arrays).
            let plain =
                path.split('.').all(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'));
            if !plain {
                return Err(ConfigError::new(
                    var,
                    "not a configuration field; write TASKLINE_<SECTION>__<FIELD>, \
                     e.g. TASKLINE_QUEUES__EMAILS__CONCURRENCY",
                ));
            }
            fields.push((var.clone(), path));
            vars.insert(var, value);
        }
        fields.sort();
        Ok(Self { fields, vars })
    }

    /// The overrides as a source of the `config` crate, to merge over the file.
    pub(super) fn source(&self) -> config::Environment {
        // No `try_parsing`: values stay strings (an id "007" keeps its
        // zeros), and the deserializer still parses numbers and booleans
        // for fields of those types.
        config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
            .prefix_separator("_")
            .separator(ENV_SEPARATOR)
            .source(Some(self.vars.clone().into_iter().collect()))
    }

    /// The variable that set `field` or a field inside or around it.
    fn variable_for(&self, field: &str) -> Option<&str> {
        let related = |path: &str| {
            path == field
                || path.strip_prefix(field).is_some_and(|r| r.starts_with('.'))
                || field.strip_prefix(path).is_some_and(|r| r.starts_with('.'))
        };
        self.fields.iter().find(|(_, path)| related(path)).map(|(var, _)| var.as_str())
    }

    /// Mentions the override variable in an error about a field it set.
    pub(super) fn attribute(&self, mut err: ConfigError) -> ConfigError {
        if let Some(var) = self.variable_for(&err.field) {
            let _ = write!(err.message, " (set by the environment variable {var})");
        }
        err
    }

    /// Environment names are lowercased, so `TASKLINE_QUEUES__EMAILS__...`
    /// cannot reach a queue named `Emails`: it would quietly create a second
    /// queue. Refuse that.
    pub(super) fn check_case(&self, config: &Config) -> Result<(), ConfigError> {
        for (var, path) in &self.fields {
            let mut parts = path.splitn(3, '.');
            let (Some(section), Some(name)) = (parts.next(), parts.next()) else { continue };
            let names: Vec<&String> = match section {
                "queues" => config.queues.keys().collect(),
                "handlers" => config.handlers.keys().collect(),
                _ => continue,
            };
            if let Some(twin) = names.iter().find(|n| n.as_str() != name && n.to_lowercase() == name) {
                return Err(ConfigError::new(
                    var.clone(),
                    format!(
                        "environment names are lowercased, so this sets {section}.{name}, not {section}.{twin}; \
                         use lowercase {section} names to override them from the environment"
                    ),
                ));
            }
        }
        Ok(())
    }
}
