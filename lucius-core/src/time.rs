//! Time as data: [`Timestamp`] (milliseconds since the Unix epoch) and [`Millis`] durations.
//!
//! The core never reads a clock; callers pass `now` in (see [`crate::ports::Clock`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A span of time in milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating at the end of time.
    #[must_use]
    pub fn plus(self, d: Millis) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.0).unwrap_or(i64::MAX)),
        )
    }

    /// How long ago `earlier` was, zero if it lies in the future.
    pub fn since(self, earlier: Timestamp) -> Millis {
        Millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Calendar year and month (UTC) of this instant.
    pub fn year_month(self) -> (i32, u8) {
        let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        (dt.year(), u8::from(dt.month()))
    }

    /// RFC 3339 rendering (UTC, millisecond precision), for wire formats.
    pub fn to_rfc3339(self) -> String {
        let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        dt.format(&fmt).unwrap_or_else(|_| self.0.to_string())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Millis {
    /// Zero.
    pub const ZERO: Millis = Millis(0);

    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Millis {
        Millis(s.saturating_mul(1000))
    }

    /// From fractional seconds (negative and NaN become zero).
    pub fn from_secs_f64(s: f64) -> Millis {
        if s.is_finite() && s > 0.0 {
            Millis((s * 1000.0).round().min(u64::MAX as f64) as u64)
        } else {
            Millis(0)
        }
    }

    /// As a `std::time::Duration`.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_month_of_known_instants() {
        assert_eq!(Timestamp(0).year_month(), (1970, 1));
        // 2024-02-29T23:59:59.999Z
        assert_eq!(Timestamp(1_709_251_199_999).year_month(), (2024, 2));
        // 2024-03-01T00:00:00Z
        assert_eq!(Timestamp(1_709_251_200_000).year_month(), (2024, 3));
    }

    #[test]
    fn rfc3339_rendering() {
        assert_eq!(
            Timestamp(1_709_251_200_123).to_rfc3339(),
            "2024-03-01T00:00:00.123Z"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp(i64::MAX).plus(Millis(5)), Timestamp(i64::MAX));
        assert_eq!(Timestamp(5).since(Timestamp(10)), Millis(0));
        assert_eq!(Millis::from_secs_f64(2.5), Millis(2500));
        assert_eq!(Millis::from_secs_f64(-1.0), Millis(0));
    }
}
