//! Times and durations as the scripts take and store them: whole
//! milliseconds, times since the Unix epoch on the Redis server's clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest delay, unique-key TTL or distance of `run_at` accepted: 100
/// years. Times are stored as milliseconds that Lua handles as doubles, and
/// this keeps them far inside the exactly representable range.
pub const MAX_SCHEDULE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A duration as whole milliseconds for a script argument.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Milliseconds since the Unix epoch, as the scripts store times.
pub(crate) fn from_epoch_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A time as milliseconds since the Unix epoch: 0 for times before it,
/// saturating (never wrapping) for times beyond `u64` milliseconds.
pub(crate) fn to_epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Serde adapter: `SystemTime` as integer milliseconds since the epoch.
pub(crate) mod epoch_millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `t` as integer milliseconds since the epoch.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::to_epoch_millis(*t))
    }

    /// Reads milliseconds since the epoch, integer or float.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        // cjson may write large integers as floats (1.7e+12): accept both.
        Ok(super::from_epoch_millis(f64::deserialize(d)? as u64))
    }
}
