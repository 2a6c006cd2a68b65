//! A hostile log: the daemon counts every bad line, caps its labels, bounds its memory
//! and keeps serving.

use std::io::Write;
use std::time::Duration;

use crate::harness::*;

#[test]
fn hostile_log_is_counted_capped_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let dead = dir.path().join("rejected.jsonl");
    append(&log, b"");
    let extra = format!(
        "[ledger]\nmax_models = 20\n[dead_letter]\npath = \"{}\"\nmax_bytes = 65536\nmax_line_bytes = 256\n",
        dead.display()
    );
    let d = Daemon::start(dir.path(), &config(dir.path(), &extra), &[]);
    let before = d.peak_rss();

    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut expected_lines = 0u64;
    let mut w = |bytes: &[u8], lines: u64| {
        f.write_all(bytes).unwrap();
        expected_lines += lines;
    };
    // 100 lines of invalid JSON, 100 of invalid UTF-8, 100 with NUL bytes.
    for i in 0..100 {
        w(
            format!("{{\"id\":\"j{i}\",\"status\":\"FAILED\"\n").as_bytes(),
            1,
        );
        w(
            format!("{{\"id\":\"u{i}\",\"status\":\"FAILED\",\"failure\":\"\u{0}").as_bytes(),
            0,
        );
        w(b"\xff\xfe\"}\n", 1);
        w(
            format!("{{\"id\":\"n{i}\",\0\"status\":\"FAILED\"}}\n").as_bytes(),
            1,
        );
    }
    // 5,000 distinct failure codes, some not even of Runway's shape.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for i in 0..5000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let code = if i % 10 == 0 {
            format!("bad code {seed:x}")
        } else {
            format!("RANDOM.C{seed:X}")
        };
        w(format!("{{\"id\":\"r{i}\",\"status\":\"FAILED\",\"failureCode\":\"{code}\",\"model\":\"m{}\"}}\n", i % 50).as_bytes(), 1);
    }
    // A 10 MB line, then a good one.
    let mut big = b"{\"id\":\"big\",\"status\":\"FAILED\",\"failure\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    big.extend(b"\"}\n");
    w(&big, 1);
    w(
        b"{\"id\":\"good\",\"status\":\"FAILED\",\"failureCode\":\"ASSET.INVALID\"}\n",
        1,
    );
    // A line nested 100,000 deep (200 KB, under max_line_bytes): rejected, not a stack
    // overflow and a crash loop at the same offset.
    w(
        format!(
            "{{\"id\":\"deep\",\"status\":\"SUCCEEDED\",\"x\":{}{}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .as_bytes(),
        1,
    );
    // An object opened over several lines and never closed: 2.5 MB of its lines (with
    // brackets in strings), one rejected record, then a record read as usual.
    w(b"{\n", 0);
    for _ in 0..100_000 {
        w(b"  \"k\": [1, {\"a\": \"}]\"}],\n", 0);
    }
    w(b"{\"id\":\"after-open\",\"status\":\"SUCCEEDED\"}\n", 2);
    drop(f);

    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        sum(m, "runway_exporter_records_total", &[]) >= expected_lines as f64
    });
    assert_eq!(
        sum(&m, "runway_exporter_records_total", &[]),
        expected_lines as f64,
        "every line ends in one result"
    );
    let err = |reason: &str| {
        sample(
            &m,
            &format!("runway_exporter_parse_errors_total{{reason=\"{reason}\",source=\"file\"}}"),
        )
        .unwrap()
    };
    assert_eq!(
        err("invalid_json"),
        200.0,
        "unterminated objects and NUL bytes"
    );
    assert_eq!(err("invalid_utf8"), 100.0);
    assert_eq!(
        err("line_too_long"),
        2.0,
        "the 10 MB line and the open object"
    );
    assert_eq!(err("too_deep"), 1.0);
    assert_eq!(
        sum(&m, "runway_exporter_records_total", &["result=\"counted\""]),
        5002.0
    );
    assert_eq!(
        sum(
            &m,
            "runway_task_failures_total",
            &["failure_code=\"ASSET.INVALID\""]
        ),
        1.0
    );

    // Labels are capped: 100 codes beyond the table's own, 20 models; the rest is "other".
    let codes: std::collections::BTreeSet<&str> = m
        .lines()
        .filter(|l| l.starts_with("runway_task_failures_total{"))
        .filter_map(|l| l.split("failure_code=\"").nth(1)?.split('"').next())
        .collect();
    let known = 14; // the table's exact codes and examples, and "none"
    assert!(
        codes.len() <= known + 100 + 2,
        "{} failure codes exported",
        codes.len()
    );
    assert!(codes.contains("other") && codes.contains("invalid"));
    let models: std::collections::BTreeSet<&str> = m
        .lines()
        .filter(|l| l.starts_with("runway_tasks_total{"))
        .filter_map(|l| l.split("model=\"").nth(1)?.split('"').next())
        .collect();
    assert!(models.len() <= 20 + 2, "{models:?}");
    assert_eq!(
        sample(
            &m,
            "runway_exporter_label_overflow_total{label=\"failure_code\"}"
        ),
        Some(4500.0 - 100.0)
    );
    assert_eq!(
        sample(&m, "runway_exporter_label_overflow_total{label=\"model\"}"),
        Some(5000.0 - 20.0 * 100.0)
    );
    assert_eq!(
        sample(&m, "runway_exporter_unknown_failure_codes_total"),
        Some(5000.0)
    );

    // Memory stayed bounded: neither the 10 MB line nor the open object was held
    // (max_line_bytes is 1 MiB).
    let grown = d.peak_rss().saturating_sub(before);
    assert!(grown < 8 * 1024 * 1024, "peak RSS grew by {grown} bytes");

    // The rejected lines are in the dead-letter file, cut and capped.
    let text = std::fs::read_to_string(&dead).unwrap();
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.iter().any(|e| e["reason"] == "line_too_long"));
    assert!(entries
        .iter()
        .all(|e| e["line"].as_str().unwrap().len() <= 256 * 3));
    assert!(std::fs::metadata(&dead).unwrap().len() <= 65536);

    // Still serving, still counting.
    append(&log, b"{\"id\":\"after\",\"status\":\"CANCELLED\"}\n");
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| {
        sum(m, "runway_tasks_total", &["CANCELLED"]) >= 1.0
    });
    assert_eq!(sum(&m, "runway_tasks_total", &["CANCELLED"]), 1.0);
    assert_eq!(get(d.addr, "/-/healthy").unwrap().0, 200);
}

/// Every model Runway reports fits the default `ledger.max_models` (128; the usage
/// report names 76): 128 models, each with every terminal status and 10 failure codes,
/// keep their own labels, nothing folds into "other", and what that costs is printed
/// (RSS and /metrics size) and bounded.
#[test]
fn every_model_runway_reports_keeps_its_label() {
    const MODELS: usize = 128;
    const CODES: [&str; 10] = [
        "SAFETY.INPUT.TEXT",
        "SAFETY.INPUT.IMAGE",
        "SAFETY.OUTPUT.VIDEO",
        "SAFETY.OUTPUT.IMAGE",
        "INTERNAL.BAD_OUTPUT.CODE01",
        "INPUT_PREPROCESSING.SAFETY.TEXT",
        "INPUT_PREPROCESSING.INTERNAL",
        "ASSET.INVALID",
        "THIRD_PARTY.UNAVAILABLE",
        "INTERNAL",
    ];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| m.contains("runway_exporter_"));
    let (rss, bytes) = (d.rss(), m.len());
    let mut lines = String::new();
    for i in 0..MODELS {
        let mut line = |id: String, status: &str, code: &str| {
            lines.push_str(&format!(
                "{{\"id\":\"{id}\",\"status\":\"{status}\",\"failureCode\":{code},\"model\":\"model_{i}\",\"cost\":{{\"credits\":5}}}}\n"
            ));
        };
        line(format!("s{i}"), "SUCCEEDED", "null");
        line(format!("c{i}"), "CANCELLED", "null");
        for (j, code) in CODES.iter().enumerate() {
            line(format!("f{i}-{j}"), "FAILED", &format!("\"{code}\""));
        }
    }
    append(&log, lines.as_bytes());
    let total = (MODELS * (2 + CODES.len())) as f64;
    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        sum(m, "runway_exporter_records_total", &["result=\"counted\""]) >= total
    });
    assert_eq!(
        sum(&m, "runway_exporter_records_total", &["result=\"counted\""]),
        total
    );
    let models: std::collections::BTreeSet<&str> = m
        .lines()
        .filter(|l| l.starts_with("runway_tasks_total{"))
        .filter_map(|l| l.split("model=\"").nth(1)?.split('"').next())
        .collect();
    let ours = models.iter().filter(|m| m.starts_with("model_")).count();
    assert_eq!(ours, MODELS, "{models:?}");
    assert!(!models.contains("other"));
    assert_eq!(
        sample(&m, "runway_exporter_label_overflow_total{label=\"model\"}").unwrap_or(0.0),
        0.0
    );
    let grown_rss = d.rss().saturating_sub(rss);
    let grown_bytes = m.len().saturating_sub(bytes);
    println!(
        "{MODELS} models x (2 statuses + {} failure codes): RSS +{} KiB, /metrics +{} KiB ({} series lines)",
        CODES.len(),
        grown_rss / 1024,
        grown_bytes / 1024,
        m.lines().filter(|l| !l.starts_with('#')).count()
    );
    assert!(
        grown_rss < 32 * 1024 * 1024,
        "RSS grew by {grown_rss} bytes"
    );
}
