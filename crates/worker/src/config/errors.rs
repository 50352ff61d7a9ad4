//! Errors of the `config` crate and of the TOML parser, turned into
//! [`ConfigError`]s that name a field (`queues.emails.weight`) or a line,
//! in TOML's words rather than serde's.

use config::Source as _;

use super::ConfigError;
use super::env::EnvOverrides;
use super::handlers;
use super::render::field_path;

/// The error for an array where no field takes one.
pub(super) const ARRAY_MESSAGE: &str = "invalid type: array, expected a table or a single value";

/// The `[redis]` fields that take a list of URLs.
const REDIS_LIST_FIELDS: [&[&str]; 2] = [&["redis", "cluster"], &["redis", "sentinel", "nodes"]];

/// Whether the field at `path` takes an array: a handler's list fields
/// (`args`, ...) and the URL lists of `[redis]`.
fn takes_array(path: &[&str]) -> bool {
    let handler_list = path.len() == 3 && path[0] == "handlers" && handlers::ARRAY_FIELDS.contains(&path[2]);
    handler_list || REDIS_LIST_FIELDS.contains(&path)
}

/// Turns an error of the `config` crate into one that names the field.
pub(super) fn convert_error(err: config::ConfigError, overrides: &EnvOverrides) -> ConfigError {
    if let config::ConfigError::FileParse { cause, .. } = &err {
        return syntax_error(&cause.to_string());
    }
    let (key, message) = describe(err);
    // serde speaks of Rust types ("expected struct QueueConfig", "a map");
    // say what to write in TOML.
    let message =
        match message.split_once(", expected struct ").or_else(|| message.split_once(", expected a map")) {
            Some((head, _)) => format!("{head}, expected a table"),
            None => message,
        };
    let key = key.unwrap_or_default();
    // An index in the key means serde read an array as a struct's fields in
    // order; no field takes an array, so say that instead.
    if let Some((field, _)) = key.split_once('[') {
        // ...except the list fields, whose elements have a type.
        let parts: Vec<&str> = field.split('.').collect();
        let list_field = takes_array(&parts)
            || field.rsplit('.').next().is_some_and(|leaf| handlers::ARRAY_FIELDS.contains(&leaf));
        let message = if list_field { format!("an element: {message}") } else { ARRAY_MESSAGE.to_string() };
        return overrides.attribute(ConfigError::new(field, message));
    }
    let join = |leaf: &str| if key.is_empty() { leaf.to_string() } else { format!("{key}.{leaf}") };
    let converted = match message.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
        Some((name, rest)) => ConfigError::new(
            join(name),
            format!("unknown field{rest}; check the spelling against config/README.md"),
        ),
        None if key.is_empty() => ConfigError::new("(root)", message),
        None => ConfigError::new(key.clone(), message),
    };
    overrides.attribute(converted)
}

/// The key and the bare message of a `config` crate error.
fn describe(err: config::ConfigError) -> (Option<String>, String) {
    match err {
        config::ConfigError::Type { unexpected, expected, key, .. } => {
            (key, format!("invalid type: {unexpected}, expected {expected}"))
        }
        config::ConfigError::At { error, key, .. } => {
            let (inner_key, message) = describe(*error);
            (key.or(inner_key), message)
        }
        config::ConfigError::NotFound(key) => (Some(key), "missing; this field is required".into()),
        config::ConfigError::Message(message) => (None, message),
        other => (None, other.to_string()),
    }
}

/// The path of some array in a merged configuration tree, if there is one.
pub(super) fn first_array(tree: config::Map<String, config::Value>) -> Option<String> {
    let mut stack: Vec<(Vec<String>, config::Value)> = tree.into_iter().map(|(k, v)| (vec![k], v)).collect();
    while let Some((path, value)) = stack.pop() {
        match value.kind {
            config::ValueKind::Array(_)
                if takes_array(&path.iter().map(String::as_str).collect::<Vec<_>>()) => {}
            config::ValueKind::Array(_) => {
                return Some(field_path(&path.iter().map(String::as_str).collect::<Vec<_>>()));
            }
            config::ValueKind::Table(table) => {
                for (key, value) in table {
                    let mut inner = path.clone();
                    inner.push(key);
                    stack.push((inner, value));
                }
            }
            _ => {}
        }
    }
    None
}

/// A TOML syntax error: `line L, column C` as the field, the last line of
/// the parser's report (without its source excerpt) as the message.
fn syntax_error(report: &str) -> ConfigError {
    let location = report
        .lines()
        .next()
        .and_then(|first| first.split_once(" at "))
        .map(|(_, at)| at.trim().to_string())
        .filter(|at| at.starts_with("line "));
    let what = report.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(report).trim();
    let what = if what == "recursion limit" { "tables or arrays nested too deeply" } else { what };
    ConfigError::new(location.unwrap_or_else(|| UNLOCATED.into()), format!("invalid TOML: {what}"))
}

/// The field of a TOML error the parser reported without a place.
const UNLOCATED: &str = "(toml)";

/// Gives a TOML error that the parser reported without a place (a number
/// out of range, for one) the line where it is: the end of the shortest
/// prefix of `text`, in whole lines, that fails the same way. Only on the
/// error path, and configuration files are small.
pub(super) fn locate(mut err: ConfigError, text: &str, overrides: &EnvOverrides) -> ConfigError {
    if err.field != UNLOCATED {
        return err;
    }
    let mut end = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        end += line.len();
        let prefix = config::File::from_str(&text[..end], config::FileFormat::Toml);
        if let Err(e) = prefix.collect()
            && convert_error(e, overrides).message == err.message
        {
            err.field = format!("line {}", index + 1);
            break;
        }
    }
    err
}
