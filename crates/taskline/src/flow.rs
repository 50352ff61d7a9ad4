//! Queue-wide flow control held in Redis, so that it holds across every
//! worker process: a global rate limit, global concurrency and the
//! priority minimum share (see `lua/includes/flow.lua`).
//!
//! Each setting has two sources. Workers write the values of their TOML
//! when they start ([`Client::apply_configured_flow`]); an operator can
//! override the rate and the concurrency at run time
//! ([`Client::set_rate_limit`], [`Client::set_global_concurrency`]), and
//! the override wins until [`Client::clear_runtime_limits`], however many
//! workers start meanwhile. Every claim reads the settings, so a change
//! applies at once, without restarting workers.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::scripts::SCRIPTS;

/// At most `max` job starts per `per`, across all workers, measured on the
/// Redis server's clock over a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Most starts in any window of length `per`.
    pub max: u32,
    /// The window.
    pub per: Duration,
}

impl RateLimit {
    /// Checks the limit can be enforced: at least one start per window of
    /// at least a millisecond.
    pub fn validate(&self) -> Result<()> {
        if self.max == 0 {
            return Err(Error::InvalidOption {
                option: "rate limit",
                reason: "0 starts per period would never run a job; pause the queue instead".into(),
            });
        }
        if self.per < Duration::from_millis(1) {
            return Err(Error::InvalidOption {
                option: "rate limit",
                reason: "the period must be at least 1ms".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.max, self.per.as_millis())
    }
}

impl FromStr for RateLimit {
    type Err = Error;

    /// Parses `N/PERIOD`: `50/1s`, `1000/1m`, `10/250ms`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidOption { option: "rate limit", reason };
        let (max, per) = text
            .split_once('/')
            .ok_or_else(|| bad(format!("{text:?} is not N/PERIOD, e.g. 50/1s or 1000/1m")))?;
        let max = max
            .trim()
            .parse::<u32>()
            .map_err(|e| bad(format!("{max:?} in {text:?} is not a count of starts: {e}")))?;
        let per = parse_period(per.trim()).ok_or_else(|| {
            bad(format!("{per:?} in {text:?} is not a period; use a number and ms, s, m or h, e.g. 1s"))
        })?;
        let limit = RateLimit { max, per };
        limit.validate()?;
        Ok(limit)
    }
}

/// `250ms`, `1s`, `2m`, `1h`.
fn parse_period(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).map(Duration::from_millis)
}

/// Queue-wide limits (`None` = no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowLimits {
    /// The global rate limit.
    pub rate: Option<RateLimit>,
    /// Most jobs of the queue active at once across all workers.
    pub concurrency: Option<u32>,
}

/// A queue's flow-control settings as stored in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSettings {
    /// What claims obey now: the runtime overrides where set, else the
    /// configured values.
    pub effective: FlowLimits,
    /// The values the last worker to start wrote from its TOML.
    pub configured: FlowLimits,
    /// An operator's runtime override of the rate, if any (`Some(None)`:
    /// overridden to "no limit").
    pub runtime_rate: Option<Option<RateLimit>>,
    /// An operator's runtime override of the concurrency, if any.
    pub runtime_concurrency: Option<Option<u32>>,
    /// Priority minimum share: each lower level gets one job in this many
    /// (0 = strict priority).
    pub share_every: u32,
}

/// Turns `priority_min_share` (a fraction, 0 = strict priority) into the
/// stored "one job in N" form.
pub fn share_every(min_share: f64) -> u32 {
    if min_share <= 0.0 { 0 } else { (1.0 / min_share).round().max(1.0) as u32 }
}

impl Client {
    /// Overrides `queue`'s global rate limit at run time (`None`: no
    /// limit), for every worker, until [`Client::clear_runtime_limits`].
    pub async fn set_rate_limit(&self, queue: &str, rate: Option<RateLimit>) -> Result<FlowLimits> {
        if let Some(rate) = rate {
            rate.validate()?;
        }
        let (max, period) = rate_fields(rate);
        self.write_settings(queue, "runtime", &[("rt_rate_max", max), ("rt_rate_period_ms", period)]).await
    }

    /// Overrides `queue`'s global concurrency at run time (`None`: no
    /// limit), for every worker, until [`Client::clear_runtime_limits`].
    pub async fn set_global_concurrency(&self, queue: &str, concurrency: Option<u32>) -> Result<FlowLimits> {
        if concurrency == Some(0) {
            return Err(Error::InvalidOption {
                option: "global concurrency",
                reason: "0 would never run a job; pause the queue instead".into(),
            });
        }
        let value = concurrency.map_or("0".to_string(), |n| n.to_string());
        self.write_settings(queue, "runtime", &[("rt_concurrency", value)]).await
    }

    /// Drops the runtime overrides: `queue` goes back to its configured
    /// limits.
    pub async fn clear_runtime_limits(&self, queue: &str) -> Result<FlowLimits> {
        let unset = String::new();
        let fields =
            [("rt_rate_max", unset.clone()), ("rt_rate_period_ms", unset.clone()), ("rt_concurrency", unset)];
        self.write_settings(queue, "runtime", &fields).await
    }

    /// Writes the limits of a worker's configuration (its TOML) for
    /// `queue`. Workers call this when they start; runtime overrides stay
    /// in force over these values.
    pub async fn apply_configured_flow(
        &self,
        queue: &str,
        limits: &FlowLimits,
        share_every: u32,
    ) -> Result<FlowLimits> {
        if let Some(rate) = limits.rate {
            rate.validate()?;
        }
        let (max, period) = rate_fields(limits.rate);
        let concurrency = limits.concurrency.unwrap_or(0).to_string();
        let fields = [
            ("rate_max", max),
            ("rate_period_ms", period),
            ("concurrency", concurrency),
            ("share_every", share_every.to_string()),
        ];
        self.write_settings(queue, "config", &fields).await
    }

    /// Reads `queue`'s flow-control settings.
    pub async fn flow_settings(&self, queue: &str) -> Result<FlowSettings> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut conn = self.conn();
        let f: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(keys.meta())
            .arg(&[
                "rate_max",
                "rate_period_ms",
                "concurrency",
                "rt_rate_max",
                "rt_rate_period_ms",
                "rt_concurrency",
                "share_every",
            ])
            .query_async(&mut conn)
            .await?;
        let number = |i: usize| f[i].unwrap_or(0);
        let configured =
            FlowLimits { rate: stored_rate(number(0), number(1)), concurrency: stored_count(number(2)) };
        let runtime_rate = f[3].map(|max| stored_rate(max, number(4)));
        let runtime_concurrency = f[5].map(stored_count);
        let effective = FlowLimits {
            rate: runtime_rate.unwrap_or(configured.rate),
            concurrency: runtime_concurrency.unwrap_or(configured.concurrency),
        };
        Ok(FlowSettings {
            effective,
            configured,
            runtime_rate,
            runtime_concurrency,
            share_every: f[6].unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        })
    }

    async fn write_settings(
        &self,
        queue: &str,
        source: &str,
        fields: &[(&str, String)],
    ) -> Result<FlowLimits> {
        let (_, keys) = self.queue_keys(queue)?;
        let mut args: Vec<Vec<u8>> = vec![keys.prefix().into(), source.into()];
        for (field, value) in fields {
            args.push(field.as_bytes().to_vec());
            args.push(value.as_bytes().to_vec());
        }
        let value = self.run(&SCRIPTS.settings, &[keys.meta()], args).await?;
        let mut reply = Reply::new(value, "settings")?;
        let mut next = |what| reply.int(what).map(|n| n.max(0) as u64);
        let (max, period, concurrency) = (next("rate_max")?, next("rate_period_ms")?, next("concurrency")?);
        Ok(FlowLimits { rate: stored_rate(max, period), concurrency: stored_count(concurrency) })
    }
}

/// A rate limit from its stored fields (0 in either: none).
fn stored_rate(max: u64, period_ms: u64) -> Option<RateLimit> {
    (max > 0 && period_ms > 0).then(|| RateLimit {
        max: max.min(u64::from(u32::MAX)) as u32,
        per: Duration::from_millis(period_ms),
    })
}

/// A concurrency limit from its stored field (0: none).
fn stored_count(n: u64) -> Option<u32> {
    (n > 0).then(|| n.min(u64::from(u32::MAX)) as u32)
}

/// The stored fields of a rate limit: "0" for none.
fn rate_fields(rate: Option<RateLimit>) -> (String, String) {
    match rate {
        Some(r) => (r.max.to_string(), r.per.as_millis().to_string()),
        None => ("0".into(), "0".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_with_units() {
        let r: RateLimit = "50/1s".parse().expect("valid");
        assert_eq!(r, RateLimit { max: 50, per: Duration::from_secs(1) });
        let r: RateLimit = "1000/2m".parse().expect("valid");
        assert_eq!(r.per, Duration::from_secs(120));
        let r: RateLimit = " 10 / 250ms ".parse().expect("valid");
        assert_eq!(r, RateLimit { max: 10, per: Duration::from_millis(250) });
    }

    #[test]
    fn bad_rate_limits_say_what_is_wrong() {
        for (text, needle) in [
            ("50", "N/PERIOD"),
            ("x/1s", "count of starts"),
            ("5/1 fortnight", "not a period"),
            ("5/s", "not a period"),
            ("0/1s", "never run"),
            ("5/0s", "at least 1ms"),
        ] {
            let err = text.parse::<RateLimit>().expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn min_share_becomes_one_in_n() {
        assert_eq!(share_every(0.0), 0);
        assert_eq!(share_every(0.05), 20);
        assert_eq!(share_every(0.1), 10);
        assert_eq!(share_every(1.0), 1);
    }
}
