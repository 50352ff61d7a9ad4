//! Retry backoff: exponential growth with a cap, plus jitter.
//!
//! A pure policy: given the number of the attempt that just failed, it says
//! how long to wait before the next one. The worker computes the delay and
//! passes it to `fail`; the script schedules it on the server's clock.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How randomness is mixed into a backoff delay, so that many jobs failing
/// together (a downstream outage) do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the exponential delay.
    None,
    /// Uniform in `[0, delay]`: spreads retries the most.
    Full,
    /// Half the delay plus uniform in `[0, delay / 2]`: spread, yet never
    /// sooner than half the delay.
    #[default]
    Equal,
}

/// Exponential backoff: `initial * factor^(attempt - 1)`, capped at `max`,
/// then jittered. The default is 1 s doubling to a 5 min cap with equal
/// jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay after the first failed attempt (before jitter).
    #[serde(rename = "initial_ms", with = "millis")]
    pub initial: Duration,
    /// Growth per further attempt (>= 1.0).
    pub factor: f64,
    /// Upper bound of the delay (before jitter).
    #[serde(rename = "max_ms", with = "millis")]
    pub max: Duration,
    /// How randomness is applied.
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(300),
            jitter: Jitter::Equal,
        }
    }
}

impl Backoff {
    /// The delay before the retry that follows failed attempt number
    /// `attempt` (1 for the first attempt), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let factor = if self.factor.is_finite() { self.factor.max(1.0) } else { 1.0 };
        let secs = self.initial.as_secs_f64() * factor.powi(exponent);
        let max = self.max.max(self.initial);
        if !secs.is_finite() || secs >= max.as_secs_f64() { max } else { Duration::from_secs_f64(secs) }
    }

    /// The jittered delay after failed attempt `attempt`, drawing randomness
    /// from `rng` (pass a seeded generator in tests).
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let base = self.base_delay(attempt);
        let base_ms = base.as_millis().min(u64::MAX as u128) as u64;
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => Duration::from_millis(rng.random_range(0..=base_ms)),
            Jitter::Equal => {
                let half = base_ms / 2;
                Duration::from_millis(base_ms - half + rng.random_range(0..=half))
            }
        }
    }

    /// The jittered delay after failed attempt `attempt`, with thread-local
    /// randomness.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// Checks the policy's numbers: factor >= 1 and max >= initial.
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(crate::Error::InvalidOption {
                option: "backoff.factor",
                reason: format!("{} must be a finite number >= 1.0", self.factor),
            });
        }
        if self.max < self.initial {
            return Err(crate::Error::InvalidOption {
                option: "backoff.max",
                reason: format!(
                    "{:?} is below backoff.initial {:?}; the cap must be at least the first delay",
                    self.max, self.initial
                ),
            });
        }
        Ok(())
    }
}

/// Serializes a `Duration` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_doubles_from_one_second_to_a_five_minute_cap() {
        let b = Backoff::default();
        let got: Vec<Duration> = (1..=11).map(|a| b.base_delay(a)).collect();
        let want: Vec<Duration> =
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300].into_iter().map(secs).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn huge_attempt_numbers_stay_at_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.base_delay(u32::MAX), secs(300));
        assert_eq!(b.base_delay(0), secs(1), "attempt 0 is treated like the first");
    }

    #[test]
    fn no_jitter_is_exact() {
        let b = Backoff { jitter: Jitter::None, ..Backoff::default() };
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(b.delay_with(3, &mut rng), secs(4));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_base_and_spreads() {
        let b = Backoff { jitter: Jitter::Full, ..Backoff::default() };
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..1_000).map(|_| b.delay_with(4, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= secs(8)));
        let below_half = delays.iter().filter(|d| **d < secs(4)).count();
        assert!((350..650).contains(&below_half), "uniform spread expected, {below_half} below half");
    }

    #[test]
    fn equal_jitter_never_goes_below_half() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(2);
        let delays: Vec<Duration> = (0..1_000).map(|_| b.delay_with(4, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d >= secs(4) && *d <= secs(8)));
        assert!(delays.iter().any(|d| *d != delays[0]), "jitter must vary the delay");
    }

    #[test]
    fn custom_factor_and_cap() {
        let b =
            Backoff { initial: Duration::from_millis(100), factor: 3.0, max: secs(1), jitter: Jitter::None };
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(300));
        assert_eq!(b.base_delay(3), Duration::from_millis(900));
        assert_eq!(b.base_delay(4), secs(1));
    }

    #[test]
    fn validation_rejects_nonsense() {
        assert!(Backoff::default().validate().is_ok());
        assert!(Backoff { factor: 0.5, ..Backoff::default() }.validate().is_err());
        assert!(Backoff { factor: f64::NAN, ..Backoff::default() }.validate().is_err());
        assert!(Backoff { max: Duration::ZERO, ..Backoff::default() }.validate().is_err());
    }

    #[test]
    fn serializes_in_milliseconds() {
        let json = serde_json::to_string(&Backoff::default()).expect("serialize");
        assert_eq!(json, r#"{"initial_ms":1000,"factor":2.0,"max_ms":300000,"jitter":"equal"}"#);
        let back: Backoff = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, Backoff::default());
    }
}
