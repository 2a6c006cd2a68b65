//! The wall clock, as the state file, the metrics and the Runway API write it, and the
//! steady clock, for what measures time elapsed in this process. A leaf.
//!
//! The wall clock can be **stepped** while the exporter runs (an NTP client correcting
//! it, `date -s`, a VM resumed): it jumps back or forward. The steady clock
//! ([`steady_now`]) reads as the wall clock did when the process first asked, plus the
//! monotonic time since (`CLOCK_MONOTONIC`, slewed by NTP as the wall clock is, but
//! never stepped): until a step the two agree, after it they differ by the step. What
//! counts elapsed time (the windows of the recent failures, the commit loop's heartbeat)
//! reads the steady clock, so a step neither empties nor fills them; what states a time
//! (a record's, a commit's, the day of the usage) reads the wall clock.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 before 1970: a clock that wrong is not worth a panic).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Now on the steady clock, in Unix seconds: the wall clock at the first call in this
/// process plus the monotonic time since; never stepped. (The monotonic clock does not
/// count a suspend: after one the steady clock is behind by its length.)
pub fn steady_now() -> f64 {
    static ANCHOR: OnceLock<(f64, Instant)> = OnceLock::new();
    let (wall, at) = ANCHOR.get_or_init(|| (unix_now(), Instant::now()));
    wall + at.elapsed().as_secs_f64()
}

/// One reading of both clocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// [`unix_now`]: what a time is stated in.
    pub wall: f64,
    /// [`steady_now`]: what elapsed time is measured on.
    pub steady: f64,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall: unix_now(),
            steady: steady_now(),
        }
    }

    /// Both clocks at `t` (no step): for tests.
    pub fn at(t: f64) -> Now {
        Now { wall: t, steady: t }
    }

    /// A wall-clock time `t` on the steady clock: moved by the steps since the anchor.
    pub fn steady_of(self, t: f64) -> f64 {
        t + (self.steady - self.wall)
    }
}

/// Latest time a record may state, in Unix seconds: the year 9999 (beyond it a value is
/// a bug or an attack).
const MAX_UNIX: f64 = 253_402_300_799.0;

/// A time written as text: RFC 3339 with a `Z` or an offset (`2024-11-06T12:00:01Z`,
/// `...01.123+02:00`). A time without an offset is not taken: whose clock it was read
/// off is unknown.
pub fn parse_time(text: &str) -> Option<f64> {
    let edge = |b: Option<&u8>| b.is_some_and(u8::is_ascii_whitespace);
    let text = if edge(text.as_bytes().first()) || edge(text.as_bytes().last()) {
        text.trim()
    } else {
        text
    };
    let unix = match canonical(text.as_bytes()) {
        Some(unix) => unix,
        None => {
            let t = speedate::DateTime::parse_str_rfc3339(text).ok()?;
            t.time.tz_offset?;
            t.timestamp_tz() as f64 + f64::from(t.time.microsecond) / 1e6
        }
    };
    (0.0..=MAX_UNIX).contains(&unix).then_some(unix)
}

/// The shape the API and the SDKs write, `YYYY-MM-DDTHH:MM:SS[.f+](Z|±HH:MM)`, read in
/// about 330 instructions with the day count (callgrind): it is read twice for every
/// timed task, and a general parser (speedate's, jiff's) took 500 to 700. Anything else, or anything out of
/// range, is `None` and left to speedate; a test checks that both agree.
fn canonical(b: &[u8]) -> Option<f64> {
    let digit = |i: usize| -> Option<i64> {
        let d = b.get(i)?.wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let year = two(0)? * 100 + two(2)?;
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b.get(i) != Some(&c)) || !matches!(b.get(10), Some(b'T' | b't')) {
        return None;
    }
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut fraction = 0.0;
    if b.get(i) == Some(&b'.') {
        // Nanoseconds at most; further digits are read past and dropped.
        let (start, mut value, mut scale) = (i + 1, 0i64, 1i64);
        i = start;
        while let Some(d) = digit(i) {
            if scale < 1_000_000_000 {
                value = value * 10 + d;
                scale *= 10;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        fraction = value as f64 / scale as f64;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (two(i + 1)?, two(i + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((seconds - offset) as f64 + fraction)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (the civil-from-
/// days algorithm of Howard Hinnant's "chrono-compatible low-level date algorithms").
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A Unix time as RFC 3339 in UTC, to the second (`2024-11-06T12:00:01Z`); `None`
/// outside 1970 to 9999.
pub fn format_time(unix: f64) -> Option<String> {
    if !(0.0..=MAX_UNIX).contains(&unix) {
        return None;
    }
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix as u64);
    Some(humantime::format_rfc3339_seconds(t).to_string())
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

    /// What speedate reads a text as, for the texts it takes with an offset.
    fn by_speedate(text: &str) -> Option<f64> {
        let t = speedate::DateTime::parse_str_rfc3339(text).ok()?;
        t.time.tz_offset?;
        Some(t.timestamp_tz() as f64 + f64::from(t.time.microsecond) / 1e6)
    }

    proptest::proptest! {
        /// The fast path reads every canonical time as speedate does, and leaves every
        /// other text (a byte changed anywhere) to it.
        #[test]
        fn the_fast_path_agrees_with_speedate(
            year in 1970i64..=9999,
            month in 1i64..=12,
            day in 1i64..=31,
            hms in (0i64..24, 0i64..60, 0i64..60),
            millis in proptest::option::of(0u32..1000),
            offset in proptest::option::of((proptest::bool::ANY, 0i64..24, 0i64..60)),
            flip in (0usize..40, 0u8..=255),
        ) {
            let fraction = millis.map(|m| format!(".{m:03}")).unwrap_or_default();
            let zone = match offset {
                None => "Z".to_string(),
                Some((west, h, m)) => format!("{}{h:02}:{m:02}", if west { '-' } else { '+' }),
            };
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}{zone}",
                hms.0, hms.1, hms.2
            );
            let ours = canonical(text.as_bytes());
            if day <= days_in_month(year, month) {
                let theirs = by_speedate(&text).unwrap();
                proptest::prop_assert!((ours.unwrap() - theirs).abs() < 1e-6, "{text}");
            } else {
                proptest::prop_assert_eq!(ours, None, "{}", text);
            }
            // One byte changed: ours reads it as speedate does, or leaves it.
            let mut bytes = text.clone().into_bytes();
            if let Some(b) = bytes.get_mut(flip.0) {
                *b = flip.1;
            }
            if let (Some(ours), Ok(s)) = (canonical(&bytes), std::str::from_utf8(&bytes)) {
                let theirs = by_speedate(s);
                proptest::prop_assert!(theirs.is_some_and(|t| (t - ours).abs() < 1e-6), "{:?}", s);
            }
        }
    }

    #[test]
    fn times_as_text_and_back() {
        assert_eq!(
            format_time(1_730_894_401.7).as_deref(),
            Some("2024-11-06T12:00:01Z")
        );
        assert_eq!(format_time(-1.0), None);
        assert_eq!(format_time(f64::NAN), None);
        assert_eq!(format_time(1e300), None);
    }

    #[test]
    fn the_steady_clock_follows_the_wall_clock_without_its_steps() {
        let (a, b) = (steady_now(), steady_now());
        assert!(b >= a);
        // No step here: the two clocks agree (to the slew of a test run).
        assert!((steady_now() - unix_now()).abs() < 1.0);
        // A reading after a step back of an hour: a wall time of now is an hour later
        // on the steady clock.
        let now = Now {
            wall: 1_000.0,
            steady: 4_600.0,
        };
        assert_eq!(now.steady_of(1_000.0), 4_600.0);
        assert_eq!(Now::at(5.0).steady_of(5.0), 5.0);
    }

    #[test]
    fn utc_days() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_633_600); // 2025-12-02T00:00:00Z
        assert_eq!(utc_day(t), "2025-12-02");
        assert_eq!(utc_day(t - Duration::from_secs(1)), "2025-12-01");
    }
}
