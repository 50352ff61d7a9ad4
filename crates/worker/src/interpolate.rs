//! `${NAME}` references to environment variables in configured values
//! (HTTP header values, a command's `env`), so that secrets stay out of
//! configuration files.
//!
//! `${` always opens a reference, closed by `}`; the name is letters,
//! digits and `_`, not starting with a digit. A `$` not followed by `{` is
//! kept as it is. Values are expanded once, when the worker starts; an
//! unset variable stops it with an error that names the variable.
//!
//! Hand-written on purpose (issue 26 asked): the crates that do this change
//! what a configured value means. `subst` and `shellexpand` also expand a
//! bare `$NAME` (and names starting with a digit), so a header value or a
//! password holding `$5` or `$x` would change or fail to load; both take
//! defaults (`${NAME:x}`, `${NAME:-x}`), so a misspelt reference could end
//! in a silent default; `subst` also reads `\` as an escape. `envsubst`
//! leaves a `${NAME}` it has no value for in place instead of failing, so
//! the worker would send the literal text. Ours is one short pass with
//! today's messages, which name the variable and never include a value.

/// One piece of a template: literal text or a variable name.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `template` into pieces, or says what is wrong with it.
fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        pieces.push(Piece::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed \"${{\" in {template:?}; write ${{NAME}}"));
        };
        let name = &after[..end];
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "\"${{{name}}}\" is not a variable reference; names are letters, digits and _, e.g. ${{MAILER_TOKEN}}"
            ));
        }
        pieces.push(Piece::Var(name));
        rest = &after[end + 1..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// Checks the syntax of `template` without looking anything up.
pub fn check(template: &str) -> Result<(), String> {
    parse(template).map(|_| ())
}

/// Whether `template` holds at least one reference.
pub fn has_references(template: &str) -> bool {
    parse(template).is_ok_and(|pieces| pieces.iter().any(|p| matches!(p, Piece::Var(_))))
}

/// `template` with every `${NAME}` replaced by `lookup(NAME)`; an unset
/// variable is an error naming it.
pub fn expand(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(format!(
                        "the environment variable {name} is not set; export it to the worker, or remove ${{{name}}}"
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// [`expand`] with the process environment.
pub fn expand_env(template: &str) -> Result<String, String> {
    expand(template, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn references_are_replaced_and_other_text_kept() {
        assert_eq!(expand("Bearer ${TOKEN}", lookup), Ok("Bearer s3cret".into()));
        assert_eq!(expand("${TOKEN}${TOKEN}", lookup), Ok("s3crets3cret".into()));
        assert_eq!(expand("cost: $5, {x}", lookup), Ok("cost: $5, {x}".into()));
        assert!(has_references("a ${TOKEN}"));
        assert!(!has_references("a $TOKEN"));
    }

    #[test]
    fn unset_variables_and_bad_syntax_are_named() {
        let err = expand("Bearer ${MISSING}", lookup).expect_err("unset");
        assert!(err.contains("MISSING is not set"), "{err}");
        assert!(check("${OPEN").expect_err("unclosed").contains("unclosed"));
        assert!(check("${1X}").expect_err("digit").contains("not a variable reference"));
        assert!(check("${}").is_err());
    }
}
