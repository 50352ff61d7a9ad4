//! Deserializers of the fields whose text is not serde's default reading:
//! durations with units (`"30s"`, and `"none"` where a field is optional),
//! socket addresses, rate limits and jitter names. Each error says what to
//! write, with an example.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use taskline::{Jitter, RateLimit};

/// A duration written as a string with units: `"30s"`, `"5m"`, `"1h30m"`.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match d.deserialize_any(DurationVisitor { allow_none: false })? {
        Some(duration) => Ok(duration),
        None => Err(de::Error::custom("invalid duration: a value is required, e.g. \"30s\"")),
    }
}

/// Like [`duration`], and `"none"` means `None`.
pub(super) fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor { allow_none: true })
}

/// Reads durations and says what to write instead of what went wrong in
/// serde's terms.
///
/// Hand-written rather than `humantime-serde`, which parses with the same
/// `humantime` but reports less: for `"-1s"` it says `invalid value: string
/// "-1s", expected a duration` (no reason, no example), for `30` (an
/// integer) the same words about a *string* `"30"` (the `config` crate hands
/// it over as text) instead of the hint to write `"30s"`, and it has no
/// `"none"` for optional fields. Compared on "30 seconds", "-1s", 30, "",
/// 1.5, "none" and a date through the same `config` crate.
struct DurationVisitor {
    allow_none: bool,
}

impl DurationVisitor {
    fn integer<E: de::Error>(n: impl fmt::Display) -> Result<Option<Duration>, E> {
        Err(E::custom(format!(
            "invalid duration {n}: a duration is a string with a unit, e.g. \"{n}s\" for seconds or \"{n}ms\" \
             for milliseconds"
        )))
    }
}

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"30s\", \"5m\" or \"1h30m\"")?;
        if self.allow_none {
            f.write_str(", or \"none\"")?;
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if self.allow_none && text == "none" {
            return Ok(None);
        }
        humantime::parse_duration(text).map(Some).map_err(|e| {
            E::custom(format!("invalid duration {text:?}: {e}; write e.g. \"30s\", \"5m\" or \"1h30m\""))
        })
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Self::integer(n)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Self::integer(n)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "invalid duration {n}: a duration is a string with a unit, e.g. \"30s\", \"1s500ms\" or \"5m\""
        )))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// `"50/1s"`: see [`RateLimit`]'s `FromStr`.
pub(super) fn optional_rate_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateLimit>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<RateLimit>().map(Some).map_err(|e| de::Error::custom(e.to_string()))
}

/// An optional `"ip:port"` socket address; `"none"` or unset means `None`.
pub(super) fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "none" || text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "invalid address {text:?}: write an IP address and a port, e.g. \"127.0.0.1:9464\", \
             \"0.0.0.0:9464\" or \"[::1]:9464\" (host names are not accepted)"
        ))
    })
}

/// A list of strings: a TOML array, or one comma-separated string (what an
/// environment variable can hold), with blanks around items dropped.
pub(super) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    let items = match ListOrText::deserialize(d).map_err(|_| {
        de::Error::custom(
            "expected a list of URLs, e.g. [\"redis://10.0.0.1:7000\"], or one comma-separated string",
        )
    })? {
        ListOrText::List(items) => items,
        ListOrText::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(items.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// A jitter name with a message that lists the choices.
pub(super) fn jitter<'de, D: Deserializer<'de>>(d: D) -> Result<Jitter, D::Error> {
    let name = String::deserialize(d)?;
    [Jitter::None, Jitter::Full, Jitter::Equal].into_iter().find(|j| jitter_name(*j) == name).ok_or_else(
        || de::Error::custom(format!("unknown jitter {name:?}; use \"none\", \"full\" or \"equal\"")),
    )
}

/// The name of a jitter in the configuration file.
pub(super) fn jitter_name(jitter: Jitter) -> &'static str {
    match jitter {
        Jitter::None => "none",
        Jitter::Full => "full",
        Jitter::Equal => "equal",
    }
}
