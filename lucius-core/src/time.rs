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

    /// `self - d`, saturating at the beginning of time.
    #[must_use]
    pub fn minus(self, d: Millis) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.0).unwrap_or(i64::MAX)),
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
        self.to_string()
    }

    /// The `time` crate's rendering: the reference [`fmt::Display`] is tested against, and
    /// the fallback for years outside 0000–9999.
    fn to_rfc3339_slow(self) -> String {
        let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        dt.format(&fmt).unwrap_or_else(|_| self.0.to_string())
    }

    /// Parses RFC 3339 (any offset, any fraction; sub-millisecond digits are dropped).
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let dt =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000))
            .ok()
            .map(Timestamp)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, written without allocating (this renders every timestamp
/// of every directive and job view).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        // Days to civil date (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            return f.write_str(&self.to_rfc3339_slow());
        }
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, ms_of_day / 3_600_000);
        put(14, 2, ms_of_day / 60_000 % 60);
        put(17, 2, ms_of_day / 1000 % 60);
        put(20, 3, ms_of_day % 1000);
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

/// Serde as an RFC 3339 string: `#[serde(with = "lucius_core::time::rfc3339")]`.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    /// Writes the RFC 3339 rendering.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    /// Reads an RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
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
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn display_matches_the_time_crate_and_parses_back(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            // Years 0000 to 9999.
            let t = Timestamp(ms);
            prop_assert_eq!(t.to_string(), t.to_rfc3339_slow());
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
        }
    }

    #[test]
    fn rfc3339_edges() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp(1_709_251_199_999).to_string(),
            "2024-02-29T23:59:59.999Z"
        );
        // Outside 0000–9999 the time crate renders it.
        let far = Timestamp(253_402_300_800_000);
        assert_eq!(far.to_string(), far.to_rfc3339_slow());
        assert_eq!(
            Timestamp::parse_rfc3339("2024-03-05T01:00:00+01:00"),
            Timestamp::parse_rfc3339("2024-03-05T00:00:00Z")
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2024-03-05T00:00:00.0019Z"),
            Some(Timestamp(1_709_596_800_001))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

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
