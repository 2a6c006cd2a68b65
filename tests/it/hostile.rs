//! A hostile log, and hostile clients of the proxy's port: the daemon counts every bad
//! line, caps its labels, bounds its memory and keeps serving; the proxy refuses what
//! is not an API request, drops slow clients, bounds its connections and never makes a
//! request wait for the state directory.

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

/// The proxy's port under a flood of requests it refuses (paths outside `/v1/`,
/// absolute-form targets, `CONNECT`, dot segments, garbage bytes): each is answered
/// and closed, nothing reaches the upstream, no series is added, each refusal is counted
/// by its reason, memory stays flat, and a good request is still served.
#[test]
fn a_flood_of_refused_requests_leaves_the_proxy_bounded_and_serving() {
    use crate::proxy::{call, proxy_daemon, Upstream};
    const FLOOD: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    assert_eq!(call(proxy, "GET", "/v1/tasks/ok-1"), 200);
    let series = |m: &str| m.lines().filter(|l| !l.starts_with('#')).count();
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sum(m, "runway_api_requests_total", &[]) == 1.0
    });
    let (before, rss) = (series(&m), d.peak_rss());
    let close = "Connection: close\r\n\r\n";
    let bad = [
        format!("GET /admin HTTP/1.1\r\nHost: x\r\n{close}"),
        format!("GET http://evil.example/v1/tasks/x HTTP/1.1\r\nHost: evil.example\r\n{close}"),
        format!("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n{close}"),
        format!("GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n{close}"),
    ];
    let started = std::time::Instant::now();
    let mut seed = 0x9E3779B97F4A7C15u64;
    for i in 0..FLOOD {
        let answer = if i % 5 == 4 {
            // Random bytes, as a broken or hostile client sends.
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .chain(*b"\r\n\r\n")
                .collect();
            hit(proxy, &bytes)
        } else {
            hit(proxy, bad[i % 5].as_bytes())
        };
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{i}: {answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the flood took too long"
        );
    }
    let took = started.elapsed();
    assert_eq!(up.seen().len(), 1, "a refused request reached the upstream");
    // Still serving, and counting.
    assert_eq!(call(proxy, "GET", "/v1/tasks/ok-1"), 200);
    // A malformed request is counted once its connection has closed: wait for it.
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sum(m, "runway_api_requests_total", &[]) == 2.0
            && sum(m, "runway_exporter_proxy_refused_total", &[]) == FLOOD as f64
    });
    assert_eq!(sum(&m, "runway_api_requests_total", &[]), 2.0, "{m}");
    assert_eq!(series(&m), before, "the flood added series");
    // Each refusal counted by its reason (the five reasons' series were there before).
    for reason in [
        "connect",
        "absolute_form",
        "not_api",
        "dot_segment",
        "malformed",
    ] {
        let with = format!("reason=\"{reason}\"");
        let refused = sum(&m, "runway_exporter_proxy_refused_total", &[&with]);
        assert_eq!(refused, (FLOOD / 5) as f64, "{reason}: {m}");
    }
    let grown = d.peak_rss().saturating_sub(rss);
    println!(
        "{FLOOD} refused requests in {took:?}; peak RSS +{} KiB",
        grown / 1024
    );
    assert!(grown < 8 << 20, "peak RSS grew by {grown} bytes");
}

/// Sends `bytes` on a new connection and reads until the proxy closes it; a connection
/// reset (the proxy closing on bytes it did not read) reads as what came before.
fn hit(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "no answer in 20 s"
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client that dribbles its headers is closed after `header_read_timeout`, while
/// others are served meanwhile.
#[test]
fn a_slowloris_client_is_closed_after_the_header_timeout() {
    use crate::proxy::{call, proxy_daemon, Upstream};
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let extra = "header_read_timeout = \"500ms\"\n";
    let (_d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), extra);
    let slow: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(proxy).unwrap();
                s.write_all(b"GET /v1/tasks/ok-1 HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
                let started = std::time::Instant::now();
                // One header byte every 50 ms (the pace of the attack, not a
                // synchronisation), until the proxy closes the connection.
                while started.elapsed() < Duration::from_secs(10) {
                    if s.write_all(b"X").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                started.elapsed()
            })
        })
        .collect();
    // Others are served while the slow clients dribble.
    for _ in 0..20 {
        assert_eq!(call(proxy, "GET", "/v1/tasks/ok-1"), 200);
    }
    for t in slow {
        let closed_after = t.join().unwrap();
        assert!(
            closed_after < Duration::from_secs(5),
            "a slow client kept its connection {closed_after:?}"
        );
    }
    assert!(
        up.seen().iter().all(|s| s.target == "/v1/tasks/ok-1"),
        "a dribbled request reached the upstream"
    );
    assert_eq!(up.seen().len(), 20);
}

/// Past `max_connections` a client waits (in the kernel's backlog) and is served once a
/// connection ends.
#[test]
fn a_client_over_max_connections_waits_and_is_served_after() {
    use crate::proxy::{call, proxy_daemon, Upstream};
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let extra = "max_connections = 2\n";
    let (_d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), extra);
    // Two requests held by the upstream take both places.
    let held: Vec<_> = (0..2)
        .map(|i| std::thread::spawn(move || call(proxy, "GET", &format!("/v1/tasks/hold-{i}"))))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while up.seen().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the held requests never arrived"
        );
        // A poll interval, not a synchronisation: the loop ends on the condition.
        std::thread::sleep(Duration::from_millis(10));
    }
    // A third is connected (the backlog) but not served while both places are taken.
    let mut third = std::net::TcpStream::connect(proxy).unwrap();
    third
        .write_all(b"GET /v1/tasks/ok-9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waiting = std::io::Read::read(&mut third, &mut byte);
    assert!(
        matches!(&waiting, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the third connection was answered while both places were taken: {waiting:?}"
    );
    assert_eq!(up.seen().len(), 2);
    up.release();
    for h in held {
        assert_eq!(h.join().unwrap(), 200);
    }
    // Then it is served.
    third
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut third, &mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(up.seen().len(), 3);
}

/// The state directory becoming unusable while requests pass: requests are answered as
/// fast as before, the failing commits are counted and logged, and what the proxy saw
/// meanwhile is committed once the directory is back. (The tests run as root, whom a
/// read-only mode does not stop: the directory is replaced by a file.)
#[test]
fn an_unwritable_state_directory_does_not_delay_requests() {
    use crate::proxy::{call, proxy_daemon, Upstream};
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (mut d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    let slowest = |n: usize| {
        (0..n)
            .map(|_| {
                let started = std::time::Instant::now();
                assert_eq!(call(proxy, "GET", "/v1/tasks/run-1"), 200);
                started.elapsed()
            })
            .max()
            .unwrap()
    };
    let before = slowest(N);
    let (state, aside) = (dir.path().join("state"), dir.path().join("state-aside"));
    std::fs::rename(&state, &aside).unwrap();
    std::fs::write(&state, b"not a directory").unwrap();
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sample(m, "runway_exporter_commit_errors_total").unwrap_or(0.0) >= 1.0
    });
    assert!(
        sample(&m, "runway_exporter_commit_errors_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    let during = slowest(N);
    println!("slowest of {N} requests: {before:?} before, {during:?} while commits fail");
    // A request waiting on a failing commit would stall for seconds; the bound leaves
    // room for a loaded machine (the slowest of 50 round trips).
    assert!(during < Duration::from_secs(3), "{during:?}");
    let failing = d.wait_log(
        "Cannot commit the state; not ready until a commit succeeds. Lines are still read and will be committed then. Check that the state directory is writable and not full.",
        Duration::from_secs(5),
    );
    assert!(failing["error"].is_string(), "{failing}");
    // The directory is back: what was seen meanwhile is committed.
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(&aside, &state).unwrap();
    let series = r#"runway_api_requests_total{code="200",endpoint="/v1/tasks/{id}",method="GET"}"#;
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sample(m, series) == Some(2.0 * N as f64)
    });
    assert_eq!(sample(&m, series), Some(2.0 * N as f64), "{m}");
}
