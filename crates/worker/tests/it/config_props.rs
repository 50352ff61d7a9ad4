//! Property tests of the configuration loader (`Config::from_toml_str`):
//! arbitrary text, and the example file mutated at random, never make it
//! panic; every input is either a valid configuration or an error that
//! names where the problem is and what it is.

use proptest::prelude::*;
use proptest::sample::Index;
use taskline_worker::config::{Config, ConfigError};

const EXAMPLE: &str = include_str!("../../../../config/worker.toml");
const SECTIONS: [&str; 4] = ["redis", "worker", "queues", "handlers"];

/// One random edit of a TOML text, line-wise or character-wise.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(Index),
    DuplicateLine(Index),
    /// Replace what follows the first `=` of a line.
    ReplaceValue(Index, String),
    InsertText(Index, String),
    Truncate(Index),
}

fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        (any::<u64>(), prop::sample::select(vec!["ms", "s", "m", "h", "d", "parsecs", ""]))
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
        any::<String>().prop_map(|s| format!("{s:?}")),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::DeleteLine),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), value_text()).prop_map(|(i, v)| Edit::ReplaceValue(i, v)),
        (any::<Index>(), any::<String>()).prop_map(|(i, s)| Edit::InsertText(i, s)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
        }
        Edit::DuplicateLine(i) => {
            let at = i.index(lines.len());
            lines.insert(at, lines[at].clone());
        }
        Edit::ReplaceValue(i, value) => {
            let at = i.index(lines.len());
            if let Some((key, _)) = lines[at].split_once('=') {
                lines[at] = format!("{key}= {value}");
            }
        }
        Edit::InsertText(i, inserted) => {
            let mut chars: Vec<char> = text.chars().collect();
            let at = i.index(chars.len() + 1);
            chars.splice(at..at, inserted.chars());
            return chars.into_iter().collect();
        }
        Edit::Truncate(i) => return text.chars().take(i.index(text.chars().count() + 1)).collect(),
    }
    lines.join("\n")
}

/// An error must say where (a field path, or a line and column for a
/// syntax error) and what.
fn assert_names_the_problem(input: &str, err: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert_eq!(&err.file, "<string>");
    prop_assert!(!err.message.trim().is_empty(), "no message: {:?}", err);
    let field = err.field.as_str();
    let first = field.split(['.', '[']).next().unwrap_or_default().trim_matches('"');
    prop_assert!(
        field.starts_with("line ") || SECTIONS.contains(&first) || input.contains(first),
        "the error names no place in the input: {:?}",
        err
    );
    prop_assert!(err.to_string().starts_with(&format!("<string>: {field}: ")), "{}", err);
    Ok(())
}

fn check(input: &str) -> Result<(), TestCaseError> {
    match Config::from_toml_str(input) {
        Ok(config) => prop_assert!(config.validate().is_ok(), "loaded but invalid"),
        Err(err) => assert_names_the_problem(input, &err)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_a_config_or_a_clear_error(input in any::<String>()) {
        check(&input)?;
    }

    #[test]
    fn the_example_mutated_is_a_config_or_a_clear_error(edits in prop::collection::vec(edit(), 1..4)) {
        let input = edits.iter().fold(EXAMPLE.to_string(), |text, e| apply(&text, e));
        check(&input)?;
    }
}

#[test]
fn the_example_itself_loads() {
    Config::from_toml_str(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
}
