//! The registry of Lua scripts: one per atomic operation in `lua/`.
//!
//! Script files may pull shared helpers from `lua/includes/` with a line
//! `-- @include "name"`; the source sent to Redis is the file with each such
//! line replaced by the include's text. Scripts run by EVALSHA; `redis`
//! reloads a script transparently when the server answers NOSCRIPT (after a
//! restart, a failover or `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

/// Shared helpers, by include name.
const INCLUDES: &[(&str, &str)] = &[
    ("clock", include_str!("../../../lua/includes/clock.lua")),
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

/// Replaces each `-- @include "name"` line with the include's text, after a
/// `#!lua` first line. The shebang opts into Redis 7's strict script mode: on
/// Redis Cluster a script that touches keys of two slots fails instead of
/// quietly working on one node, and writes are refused under OOM like any
/// write command. It requires Redis 7.0 or newer.
pub(crate) fn assemble(source: &str) -> String {
    let mut out = String::with_capacity(source.len() * 2);
    out.push_str("#!lua\n");
    for line in source.lines() {
        match include_name(line) {
            Some(name) => {
                let text = INCLUDES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| *t)
                    .unwrap_or_else(|| panic!("unknown Lua include {name:?}"));
                out.push_str(text);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
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
}
