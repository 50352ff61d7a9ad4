//! The registry of Lua scripts: one per atomic operation in `lua/`.
//!
//! Scripts and the shared helpers in `lua/includes/` name the includes they
//! use with lines `-- @include "name"`: a script right after its header,
//! an include after its own header. Each names only what it uses itself;
//! [`assemble`] works out the rest. The source sent to Redis is the script
//! with its include lines replaced by the includes' texts, each include
//! once and after every include it names, so every helper is defined
//! before the code that calls it. Scripts run by EVALSHA; `redis` reloads
//! a script transparently when the server answers NOSCRIPT (after a
//! restart, a failover or `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

/// Shared helpers, by include name.
const INCLUDES: &[(&str, &str)] = &[
    ("clock", include_str!("../../../lua/includes/clock.lua")),
    ("numbers", include_str!("../../../lua/includes/numbers.lua")),
    ("keys", include_str!("../../../lua/includes/keys.lua")),
    ("fields", include_str!("../../../lua/includes/fields.lua")),
    ("events", include_str!("../../../lua/includes/events.lua")),
    ("ready", include_str!("../../../lua/includes/ready.lua")),
    ("active", include_str!("../../../lua/includes/active.lua")),
    ("fence", include_str!("../../../lua/includes/fence.lua")),
    ("finish", include_str!("../../../lua/includes/finish.lua")),
    ("flow", include_str!("../../../lua/includes/flow.lua")),
    ("groups", include_str!("../../../lua/includes/groups.lua")),
    ("claim_jobs", include_str!("../../../lua/includes/claim_jobs.lua")),
    ("running", include_str!("../../../lua/includes/running.lua")),
];

/// Every operation script, by file stem.
pub(crate) const SOURCES: &[(&str, &str)] = &[
    ("enqueue", include_str!("../../../lua/enqueue.lua")),
    ("claim", include_str!("../../../lua/claim.lua")),
    ("complete", include_str!("../../../lua/complete.lua")),
    ("fail", include_str!("../../../lua/fail.lua")),
    ("extend", include_str!("../../../lua/extend.lua")),
    ("release", include_str!("../../../lua/release.lua")),
    ("reap", include_str!("../../../lua/reap.lua")),
    ("replay", include_str!("../../../lua/replay.lua")),
    ("counts", include_str!("../../../lua/counts.lua")),
    ("purge", include_str!("../../../lua/purge.lua")),
    ("drain", include_str!("../../../lua/drain.lua")),
    ("trim", include_str!("../../../lua/trim.lua")),
    ("settings", include_str!("../../../lua/settings.lua")),
    ("progress", include_str!("../../../lua/progress.lua")),
    ("checkpoint", include_str!("../../../lua/checkpoint.lua")),
    ("repair", include_str!("../../../lua/repair.lua")),
];

/// The loaded scripts, one field per operation.
pub(crate) struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub complete: Script,
    pub fail: Script,
    pub extend: Script,
    pub release: Script,
    pub reap: Script,
    pub replay: Script,
    pub counts: Script,
    pub purge: Script,
    pub drain: Script,
    pub trim: Script,
    pub settings: Script,
    pub progress: Script,
    pub checkpoint: Script,
    pub repair: Script,
}

/// The scripts, assembled once per process.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let load = |name: &str| Script::new(&assemble(source(name)));
    Scripts {
        enqueue: load("enqueue"),
        claim: load("claim"),
        complete: load("complete"),
        fail: load("fail"),
        extend: load("extend"),
        release: load("release"),
        reap: load("reap"),
        replay: load("replay"),
        counts: load("counts"),
        purge: load("purge"),
        drain: load("drain"),
        trim: load("trim"),
        settings: load("settings"),
        progress: load("progress"),
        checkpoint: load("checkpoint"),
        repair: load("repair"),
    }
});

/// The assembled text of `script`, for sending it whole by EVAL when a
/// server answers NOSCRIPT.
///
/// # Panics
///
/// If `script` is not one of [`SCRIPTS`].
pub(crate) fn source_of(script: &Script) -> &'static str {
    static BY_HASH: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
        SOURCES
            .iter()
            .map(|(_, source)| {
                let text = assemble(source);
                (Script::new(&text).get_hash().to_string(), text)
            })
            .collect()
    });
    BY_HASH
        .iter()
        .find(|(hash, _)| hash == script.get_hash())
        .map(|(_, text)| text.as_str())
        .expect("every script run is one of SCRIPTS")
}

/// Whether `script` records something a caller relies on, so that
/// [`crate::Durability::Replicated`] waits for replicas after it. The
/// others either read (counts) or change only what a lost write cannot
/// harm beyond running a job again (claim, extend, reap, trim) or losing a
/// progress report.
pub(crate) fn records_promise(script: &Script) -> bool {
    let s = &*SCRIPTS;
    let without = [&s.counts, &s.claim, &s.extend, &s.reap, &s.trim, &s.progress];
    !without.iter().any(|other| other.get_hash() == script.get_hash())
}

fn source(name: &str) -> &'static str {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("script {name} is not registered in SOURCES"))
}

/// The script `source` as Redis runs it: each `-- @include "name"` line
/// replaced by the includes it brings in (see the module docs), after a
/// `#!lua` first line. The shebang opts into Redis 7's strict script mode:
/// on Redis Cluster a script that touches keys of two slots fails instead
/// of quietly working on one node, and writes are refused under OOM like
/// any write command. It requires Redis 7.0 or newer.
///
/// # Panics
///
/// On an include name that is not in `lua/includes/`, and on includes that
/// include each other in a cycle: both are mistakes in the Lua sources,
/// found by the first test that loads the script.
pub(crate) fn assemble(source: &str) -> String {
    assemble_with(source, INCLUDES)
}

/// [`assemble`] with the includes given, by name.
fn assemble_with(source: &str, includes: &[(&str, &str)]) -> String {
    let mut assembly =
        Assembly { includes, out: String::with_capacity(source.len() * 4), ..Assembly::default() };
    assembly.out.push_str("#!lua\n");
    for line in source.lines() {
        match include_name(line) {
            Some(name) => assembly.expand(name, "the script"),
            None => assembly.push_line(line),
        }
    }
    assembly.out
}

/// One script being assembled.
#[derive(Default)]
struct Assembly<'a> {
    /// Every include, by name.
    includes: &'a [(&'a str, &'a str)],
    /// The text so far.
    out: String,
    /// The includes already in `out`: each goes in once.
    expanded: Vec<&'a str>,
    /// The includes being expanded, outermost first: a name met again
    /// while it is here is a cycle.
    open: Vec<&'a str>,
}

impl<'a> Assembly<'a> {
    /// Appends include `name`, after the includes it names that are not in
    /// yet; `by` names whoever included it, for the panic message.
    fn expand(&mut self, name: &'a str, by: &str) {
        if self.expanded.contains(&name) {
            return;
        }
        if self.open.contains(&name) {
            let chain: Vec<&str> = self.open.iter().copied().chain([name]).collect();
            panic!("Lua includes form a cycle: {}", chain.join(" -> "));
        }
        let text = self
            .includes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("unknown Lua include {name:?}, included by {by}"));
        self.open.push(name);
        for dependency in text.lines().filter_map(include_name) {
            self.expand(dependency, &format!("include {name:?}"));
        }
        self.open.pop();
        for line in text.lines().filter(|line| include_name(line).is_none()) {
            self.push_line(line);
        }
        self.expanded.push(name);
    }

    fn push_line(&mut self, line: &str) {
        self.out.push_str(line);
        self.out.push('\n');
    }
}

fn include_name(line: &str) -> Option<&str> {
    line.trim().strip_prefix("-- @include \"")?.strip_suffix('"')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    fn lua_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../lua")
    }

    fn stems(dir: PathBuf) -> BTreeSet<String> {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|entry| {
                let path = entry.expect("dir entry").path();
                (path.extension()? == "lua").then(|| path.file_stem()?.to_str().map(String::from))?
            })
            .collect()
    }

    #[test]
    fn every_lua_file_is_registered() {
        let registered: BTreeSet<String> = SOURCES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(stems(lua_dir()), registered, "lua/*.lua and SOURCES must match");
        let includes: BTreeSet<String> = INCLUDES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(stems(lua_dir().join("includes")), includes, "lua/includes and INCLUDES must match");
    }

    /// Numbers `i` of every `KEYS[i]` written in `text`.
    fn key_indexes(text: &str) -> BTreeSet<u32> {
        text.match_indices("KEYS[")
            .filter_map(|(at, _)| {
                let rest = &text[at + 5..];
                rest[..rest.find(']')?].parse().ok()
            })
            .collect()
    }

    #[test]
    fn every_script_documents_its_contract() {
        for (name, source) in SOURCES {
            let header_end = source.find("]]").unwrap_or_else(|| panic!("{name}: no --[[ header ]]"));
            assert!(source.starts_with("--[["), "{name}: the header must open the file");
            let (header, body) = source.split_at(header_end);
            assert!(header.contains(&format!("{name}:")), "{name}: header must name the operation");
            for section in ["ARGV[1]", "Reply:", "Errors:"] {
                assert!(header.contains(section), "{name}: header lacks {section}");
            }
            assert_eq!(
                key_indexes(header),
                key_indexes(body),
                "{name}: the KEYS documented and the KEYS used differ"
            );
        }
        for (name, source) in INCLUDES {
            assert!(source.starts_with(&format!("--[[\n  include {name}:")), "include {name}: header");
            // Include lines follow the header, which stays with its code.
            let header = &source[..source.find("]]").unwrap_or(0)];
            assert!(header.lines().all(|l| include_name(l).is_none()), "include {name}: include in header");
        }
    }

    #[test]
    fn includes_are_expanded() {
        let text = assemble(source("complete"));
        assert!(text.starts_with("#!lua\n"), "strict mode shebang first");
        assert!(!text.contains("-- @include"));
        assert!(text.contains("local function fence("));
        assert!(text.contains("local function claim_jobs("));
    }

    /// Includes for the assembler's own tests: `top` uses `mid` and `base`,
    /// `mid` uses `base`.
    const TOY: &[(&str, &str)] = &[
        ("base", "-- base\nlocal function base() end"),
        ("mid", "-- mid\n-- @include \"base\"\nlocal function mid() base() end"),
        ("top", "-- top\n-- @include \"mid\"\n-- @include \"base\"\nlocal function top() mid() end"),
    ];

    #[test]
    fn each_include_comes_once_after_what_it_includes() {
        let text = assemble_with("-- head\n-- @include \"top\"\n-- @include \"mid\"\nreturn top()", TOY);
        assert_eq!(
            text,
            "#!lua\n-- head\n-- base\nlocal function base() end\n-- mid\nlocal function mid() base() end\n\
             -- top\nlocal function top() mid() end\nreturn top()\n"
        );
    }

    #[test]
    #[should_panic(expected = "Lua includes form a cycle: a -> b -> a")]
    fn a_cycle_of_includes_panics() {
        let cycle = [("a", "-- @include \"b\"\nlocal x"), ("b", "-- @include \"a\"\nlocal y")];
        assemble_with("-- @include \"a\"", &cycle);
    }

    #[test]
    #[should_panic(expected = "unknown Lua include \"nope\", included by include \"mid\"")]
    fn an_unknown_include_panics_naming_who_included_it() {
        let broken = [("mid", "-- @include \"nope\"")];
        assemble_with("-- @include \"mid\"", &broken);
    }

    /// Lua source without its comments and the contents of its string
    /// literals (kept as empty quotes), so that only code is searched.
    fn code_only(lua: &str) -> String {
        let mut out = String::with_capacity(lua.len());
        let mut rest = lua;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("--[[") {
                rest = after.find("]]").map_or("", |end| &after[end + 2..]);
            } else if rest.starts_with("--") {
                rest = rest.find('\n').map_or("", |end| &rest[end..]);
            } else if c == '\'' || c == '"' {
                let mut escaped = false;
                let end = rest[1..]
                    .char_indices()
                    .find(|&(_, ch)| {
                        let closes = ch == c && !escaped;
                        escaped = ch == '\\' && !escaped;
                        closes
                    })
                    .map_or(rest.len() - 1, |(at, _)| at + 1);
                out.push(c);
                out.push(c);
                rest = &rest[(end + 1).min(rest.len())..];
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    /// The names an include defines at its top level (`local function f`,
    /// `local A, B = ...`).
    fn top_level_names(code: &str) -> Vec<String> {
        let mut names = Vec::new();
        for line in code.lines() {
            let Some(declared) = line.strip_prefix("local ") else { continue };
            let declared = declared.strip_prefix("function ").unwrap_or(declared);
            let end = declared.find(['=', '(']).unwrap_or(declared.len());
            names.extend(declared[..end].split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()));
        }
        names
    }

    /// Byte offsets of `name` in `code` as a whole identifier that is not
    /// a field (`t.name`, `t:name`).
    fn uses(code: &str, name: &str) -> Vec<usize> {
        let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        code.match_indices(name)
            .map(|(at, _)| at)
            .filter(|&at| {
                let before = code[..at].chars().next_back();
                let after = code[at + name.len()..].chars().next();
                !before.is_some_and(|c| is_ident(c) || c == '.' || c == ':') && !after.is_some_and(is_ident)
            })
            .collect()
    }

    /// Every name an include defines that a script uses is defined exactly
    /// once in the assembled script, before its first use: no include uses
    /// a helper it does not name (directly or through another include).
    #[test]
    fn every_helper_is_defined_once_before_it_is_used() {
        let defined: Vec<(&str, String)> = INCLUDES
            .iter()
            .flat_map(|(include, text)| {
                top_level_names(&code_only(text)).into_iter().map(move |n| (*include, n))
            })
            .collect();
        for (script, text) in SOURCES {
            let code = code_only(&assemble(text));
            for (include, name) in &defined {
                let found = uses(&code, name);
                let Some(&first) = found.first() else { continue };
                let definitions: Vec<usize> = code
                    .lines()
                    .scan(0, |at, line| {
                        let start = *at;
                        *at += line.len() + 1;
                        Some((start, line))
                    })
                    .filter(|(_, line)| top_level_names(line).contains(name))
                    .map(|(start, _)| start)
                    .collect();
                assert_eq!(
                    definitions.len(),
                    1,
                    "{script}: {name} (include {include}) is defined {} times",
                    definitions.len()
                );
                let line_end = code[definitions[0]..].find('\n').map_or(code.len(), |e| definitions[0] + e);
                assert!(
                    (definitions[0]..line_end).contains(&first),
                    "{script}: {name} (include {include}) is used before its definition"
                );
            }
        }
    }

    /// The key names of `lua/includes/keys.lua` and of `keys.rs` agree.
    #[tokio::test]
    async fn lua_and_rust_name_the_keys_alike() {
        use crate::keys::QueueKeys;
        use crate::names::QueueName;
        let server = taskline_testkit::RedisServer::start();
        let mut conn = server.connection().await;
        let keys = QueueKeys::new("taskline", &QueueName::new("billing.v2:eu").expect("valid"));
        let lua = assemble(
            "-- @include \"keys\"\nlocal b, x = ARGV[1], ARGV[2]\n\
             return {key_job(b, x), key_done(b, x), key_unique(b, x), key_ready(b, '7'), key_wake(b),\n\
             key_meta(b), key_rate(b), key_blocked(b), key_groups(b), key_gwait(b, x)}",
        );
        let named: Vec<String> = Script::new(&lua)
            .arg(keys.prefix())
            .arg("a:b")
            .invoke_async(&mut conn)
            .await
            .expect("run keys.lua");
        let x = "a:b";
        assert_eq!(
            named,
            vec![
                keys.job(x),
                keys.done(x),
                keys.unique(x),
                keys.ready(7),
                keys.wake(),
                keys.meta(),
                keys.rate(),
                keys.blocked(),
                keys.groups(),
                keys.gwait(x),
            ]
        );
    }
}
