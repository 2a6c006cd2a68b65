//! The wall clock, as the state file, the metrics and the Runway API write it. A leaf.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 before 1970: a clock that wrong is not worth a panic).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
    fn utc_days() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_633_600); // 2025-12-02T00:00:00Z
        assert_eq!(utc_day(t), "2025-12-02");
        assert_eq!(utc_day(t - Duration::from_secs(1)), "2025-12-01");
    }
}
