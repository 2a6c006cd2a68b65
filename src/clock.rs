//! The wall clock, as the state file, the metrics and the Runway API write it. A leaf.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 before 1970: a clock that wrong is not worth a panic).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Latest time a record may state, in Unix seconds: the year 9999 (beyond it a value is
/// a bug or an attack).
const MAX_UNIX: f64 = 253_402_300_799.0;

/// A time written as text: RFC 3339 with a `Z` or an offset (`2024-11-06T12:00:01Z`,
/// `...01.123+02:00`). A time without an offset is not taken: whose clock it was read
/// off is unknown.
pub fn parse_time(text: &str) -> Option<f64> {
    let t: jiff::Timestamp = text.trim().parse().ok()?;
    let unix = t.as_millisecond() as f64 / 1000.0;
    (0.0..=MAX_UNIX).contains(&unix).then_some(unix)
}

/// A time written as a number: Unix seconds, or milliseconds or microseconds where the
/// value is too large to be seconds (`Date.now()` writes milliseconds). Negative,
/// not finite or beyond the year 9999 in every reading: not a time.
pub fn time_from_number(n: f64) -> Option<f64> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let unix = match n {
        n if n < 1e11 => n,
        n if n < 1e14 => n / 1e3,
        n => n / 1e6,
    };
    (unix <= MAX_UNIX).then_some(unix)
}

/// The UTC day of a time, `YYYY-MM-DD`.
pub fn utc_day(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_as_text() {
        let at = 1_730_894_401.0; // 2024-11-06T12:00:01Z
        for text in [
            "2024-11-06T12:00:01Z",
            "2024-11-06T12:00:01.000Z",
            "2024-11-06T13:00:01+01:00",
            "2024-11-06T07:00:01-05:00",
            " 2024-11-06T12:00:01z ",
            "2024-11-06 12:00:01Z",
        ] {
            assert_eq!(parse_time(text), Some(at), "{text}");
        }
        assert_eq!(parse_time("2024-11-06T12:00:01.25Z"), Some(at + 0.25));
        for bad in [
            "",
            "x",
            "2024-11-06T12:00:01",
            "2024-13-06T12:00:01Z",
            "1969-12-31T23:59:59Z",
            "99999-01-01T00:00:00Z",
            "2024-11-06T12:00:01Z trailing",
            &"9".repeat(10_000),
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_as_numbers() {
        assert_eq!(time_from_number(1_730_894_401.5), Some(1_730_894_401.5));
        assert_eq!(time_from_number(1_730_894_401_500.0), Some(1_730_894_401.5));
        assert_eq!(
            time_from_number(1_730_894_401_500_000.0),
            Some(1_730_894_401.5)
        );
        assert_eq!(time_from_number(0.0), Some(0.0));
        for bad in [
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            1e30,
        ] {
            assert_eq!(time_from_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn utc_days() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_633_600); // 2025-12-02T00:00:00Z
        assert_eq!(utc_day(t), "2025-12-02");
        assert_eq!(utc_day(t - Duration::from_secs(1)), "2025-12-01");
    }
}
