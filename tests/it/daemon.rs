//! The daemon: following files, the endpoints, shutdown.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

const FAILED_SAFETY: &str = "{\"id\":\"ID\",\"status\":\"FAILED\",\"failureCode\":\"SAFETY.INPUT.TEXT\",\"model\":\"gen4_turbo\",\"duration\":10}\n";

fn failed(id: &str) -> String {
    FAILED_SAFETY.replace("ID", id)
}

fn safety(m: &str) -> f64 {
    sum(
        m,
        "runway_task_failures_total",
        &["failure_code=\"SAFETY.INPUT.TEXT\""],
    )
}

#[test]
fn appended_lines_show_on_metrics_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    // Lines already there when the daemon starts at the end are not counted; the
    // partial last line is, once its newline arrives.
    append(
        &log,
        format!("{}{}", failed("old-1"), failed("old-2")).as_bytes(),
    );
    append(
        &log,
        b"{\"id\":\"p1\",\"status\":\"FAILED\",\"failureCode\":\"SAFETY.INPUT.TEXT\"",
    );
    let mut d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    let m = d.metrics();
    assert_eq!(safety(&m), 0.0, "start-at end skips what was there");

    append(&log, b"}\n");
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 1.0);
    assert_eq!(safety(&m), 1.0, "the partial line is read whole");

    for i in 0..5 {
        append(&log, failed(&format!("new-{i}")).as_bytes());
        let (m, took) = d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 2.0 + i as f64);
        assert_eq!(safety(&m), 2.0 + i as f64);
        // About 300 ms on an idle machine (a poll and a commit); 2 s is for a loaded one.
        // A liveness bound: a reader that stopped following the file never shows the
        // line.
        assert!(
            took < Duration::from_secs(2),
            "line {i} took {took:?} to show"
        );
    }
    // A partial line without its newline is held, and the next record written after
    // it on the same line (a writer that left the newline out): both are read, once.
    append(&log, failed("held").trim_end().as_bytes());
    append(&log, failed("after").as_bytes());
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 8.0);
    assert_eq!(
        safety(&m),
        8.0,
        "held and after, glued on one line, read each"
    );
    assert_eq!(
        sum(
            &m,
            "runway_exporter_records_total",
            &["result=\"rejected\""]
        ),
        0.0
    );
    assert_eq!(
        sample(&m, "runway_exporter_source_up{source=\"file\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "runway_exporter_files_tracked{source=\"file\"}"),
        Some(1.0)
    );

    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    assert!(d.logs().iter().any(|l| l["message"] == "Shutting down."));
}

#[test]
fn start_at_beginning_and_new_files_matching_the_glob() {
    let dir = tempfile::tempdir().unwrap();
    append(
        &dir.path().join("a.log"),
        format!("{}{}", failed("a1"), failed("a2")).as_bytes(),
    );
    append(&dir.path().join("ignored.txt"), failed("x").as_bytes());
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), ""),
        &["--start-at", "beginning"],
    );
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 2.0);
    assert_eq!(safety(&m), 2.0);
    // A file created later is new: read from its start, whatever start_at says.
    append(
        &dir.path().join("b.log"),
        format!("{}{}", failed("b1"), failed("a1")).as_bytes(),
    );
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| {
        safety(m) >= 3.0 && sum(m, "runway_exporter_records_total", &["duplicate"]) >= 1.0
    });
    assert_eq!(safety(&m), 3.0, "a1 again is a duplicate");
    assert_eq!(
        sample(&m, "runway_exporter_files_tracked{source=\"file\"}"),
        Some(2.0)
    );
}

#[test]
fn endpoints_and_zeroes_from_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), "[web]\ntelemetry_path = \"/m\"\n"),
        &[],
    );
    let (status, body) = get(d.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("href=\"/m\"") && body.contains(env!("CARGO_PKG_VERSION")),
        "{body}"
    );
    assert_eq!(get(d.addr, "/-/healthy").unwrap().0, 200);
    assert_eq!(get(d.addr, "/-/ready").unwrap().0, 200);
    assert_eq!(get(d.addr, "/metrics").unwrap().0, 404);
    let (status, m) = get(d.addr, "/m").unwrap();
    assert_eq!(status, 200);
    promtool_check_metrics(&m);
    for family in [
        "runway_tasks_total",
        "runway_task_failures_total",
        "runway_credits_charged_total",
        "runway_credits_lost_total",
        "runway_exporter_build_info",
        "runway_exporter_records_total",
        "runway_exporter_read_bytes_total",
        "runway_exporter_parse_errors_total",
        "runway_exporter_unknown_failure_codes_total",
        "runway_exporter_label_overflow_total",
        "runway_exporter_file_rotations_total",
        "runway_exporter_file_truncations_total",
        "runway_exporter_commit_errors_total",
        "runway_exporter_last_commit_timestamp_seconds",
        "runway_exporter_source_up",
        "process_resident_memory_bytes",
    ] {
        assert!(
            m.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
    }
    // Every known code and status at 0 before the first task.
    for code in [
        "SAFETY.INPUT.TEXT",
        "SAFETY.OUTPUT.VIDEO",
        "INTERNAL.BAD_OUTPUT.CODE01",
        "INPUT_PREPROCESSING.SAFETY.TEXT",
        "INPUT_PREPROCESSING.INTERNAL",
        "ASSET.INVALID",
        "THIRD_PARTY.UNAVAILABLE",
        "INTERNAL",
        "none",
    ] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("runway_task_failures_total{")
                    && l.contains(&format!("failure_code=\"{code}\""))
                    && l.ends_with(" 0")),
            "{code} not at 0"
        );
    }
    for status in ["SUCCEEDED", "FAILED", "CANCELLED"] {
        assert_eq!(
            sample(
                &m,
                &format!("runway_tasks_total{{model=\"unknown\",status=\"{status}\"}}")
            ),
            Some(0.0)
        );
    }
    for reason in [
        "invalid_json",
        "invalid_utf8",
        "unknown_status",
        "empty_line",
        "line_too_long",
    ] {
        assert_eq!(
            sample(
                &m,
                &format!(
                    "runway_exporter_parse_errors_total{{reason=\"{reason}\",source=\"file\"}}"
                )
            ),
            Some(0.0)
        );
    }
}

#[test]
fn sigint_is_a_clean_stop_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    d.signal("INT");
    assert_eq!(d.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn sighup_reloads_sources_and_tables_and_keeps_every_count() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    append(&a, b"");
    append(&b, failed("b-before-1").as_bytes());
    let cfg = |paths: &str, extra: &str| {
        format!(
            "[state]\ndir = \"{}\"\ncommit_interval = \"100ms\"\n[file]\npaths = [{paths}]\npoll_interval = \"50ms\"\n{extra}",
            dir.path().join("state").display()
        )
    };
    let only_a = cfg(&format!("\"{}\"", a.display()), "");
    let mut d = Daemon::start(dir.path(), &only_a, &[]);
    let config_path = dir.path().join("runway-exporter.toml");

    // Under load: a writer keeps appending to a.log through both reloads.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 1000 {
                append(&a, failed(&format!("a-{n}")).as_bytes());
                n += 1;
            }
            n
        })
    };
    let table = dir.path().join("codes.toml");
    std::fs::write(
        &table,
        "api_version = \"2024-11-06\"\n[[rule]]\nmatch = \"SAFETY.INPUT.*\"\ncategory = \"safety_input\"\nretry = \"never\"\ncredits = \"lost\"\n[[rule]]\nmatch = \"CUSTOM.CODE\"\ncategory = \"third_party\"\nretry = \"after_delay\"\ncredits = \"refunded\"\n",
    )
    .unwrap();
    let both = cfg(
        &format!("\"{}\", \"{}\"", a.display(), b.display()),
        &format!("[tables]\nfailure_codes = \"{}\"\n", table.display()),
    );
    let mut last = 0.0;
    let mut monotonic = |m: &str| {
        let now = sum(m, "runway_exporter_records_total", &[]);
        assert!(now >= last, "records went from {last} to {now}");
        last = now;
    };
    monotonic(&d.metrics());
    std::fs::write(&config_path, &both).unwrap();
    d.signal("HUP");
    d.wait_log(
        "Configuration reloaded; counters kept.",
        Duration::from_secs(10),
    );
    monotonic(&d.metrics());
    // b.log is followed from the next round on (start_at = end: what was there then
    // is not counted).
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        sample(m, "runway_exporter_files_tracked{source=\"file\"}") == Some(2.0)
    });
    monotonic(&m);
    append(
        &b,
        b"{\"id\":\"b-1\",\"status\":\"FAILED\",\"failureCode\":\"CUSTOM.CODE\"}\n",
    );
    // A bad configuration is refused, and the running one goes on.
    std::fs::write(&config_path, "[file\npaths = nonsense").unwrap();
    d.signal("HUP");
    d.wait_log(
        "Reload refused: the new configuration is not valid. The running one stays.",
        Duration::from_secs(10),
    );
    append(&b, failed("b-2").as_bytes());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap() as f64;
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sum(m, "runway_exporter_records_total", &["counted"]) >= written + 2.0
    });
    monotonic(&m);
    assert_eq!(
        sum(&m, "runway_exporter_records_total", &["counted"]),
        written + 2.0,
        "every line once"
    );
    assert_eq!(
        sum(&m, "runway_exporter_records_total", &["duplicate"]),
        0.0
    );
    assert_eq!(
        safety(&m),
        written + 1.0,
        "a.log and b-2; b-before-1 was there before the reload"
    );
    assert_eq!(
        sum(
            &m,
            "runway_task_failures_total",
            &["failure_code=\"CUSTOM.CODE\"", "category=\"third_party\""]
        ),
        1.0,
        "the new table classifies new codes"
    );
    assert_eq!(
        sample(&m, "runway_exporter_files_tracked{source=\"file\"}"),
        Some(2.0)
    );
    assert_eq!(get(d.addr, "/-/healthy").unwrap().0, 200);
}

#[test]
fn truncation_restarts_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    append(&log, format!("{}{}", failed("t1"), failed("t2")).as_bytes());
    d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 2.0);
    std::fs::write(&log, failed("t3")).unwrap();
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 3.0);
    assert_eq!(safety(&m), 3.0);
    assert_eq!(
        sample(
            &m,
            "runway_exporter_file_truncations_total{source=\"file\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_then_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let mut d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    append(&log, failed("r1").as_bytes());
    d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 1.0);
    let rotated = dir.path().join("app.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, failed("r2").as_bytes());
    append(&log, failed("r3").as_bytes());
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 3.0);
    assert_eq!(safety(&m), 3.0);
    // Seen as one rotation, or (when a poll fell between the rename and the create)
    // as a removal followed by a new file.
    let rotations = sample(&m, "runway_exporter_file_rotations_total{source=\"file\"}").unwrap();
    let removed = d
        .logs()
        .iter()
        .any(|l| l["message"] == "File removed; stopped following it.");
    assert!(
        rotations == 1.0 || (rotations == 0.0 && removed),
        "{rotations} rotations"
    );
}

#[test]
fn polling_alone_follows_appends_and_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let d = Daemon::start(dir.path(), &config(dir.path(), "notify = false\n"), &[]);
    append(&log, failed("p1").as_bytes());
    append(&dir.path().join("new.log"), failed("p2").as_bytes());
    let (m, took) = d.scrape_until(Duration::from_secs(5), |m| safety(m) >= 2.0);
    assert_eq!(safety(&m), 2.0);
    // About 500 ms idle (a glob, a poll and a commit); the default glob interval
    // (5 s) in place of the configured one would be over the bound.
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

fn get_encoded(addr: std::net::SocketAddr, path: &str, accept: &str) -> (String, Vec<u8>) {
    get_raw(addr, path, &format!("Accept-Encoding: {accept}\r\n")).unwrap()
}

#[test]
fn scrapes_are_gzipped_for_clients_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    append(&dir.path().join("app.log"), failed("g1").as_bytes());
    d.scrape_until(Duration::from_secs(10), |m| safety(m) == 1.0);
    // Without process_* (live, so they differ between two scrapes) the two bodies agree.
    let stable = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.contains("process_"))
            .map(String::from)
            .collect()
    };

    let (head, body) = get_encoded(d.addr, "/metrics", "deflate, gzip;q=0.8");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).unwrap();
    assert!(
        body.len() * 3 < text.len(),
        "{} -> {}",
        body.len(),
        text.len()
    );
    promtool_check_metrics(&text);
    let (_, plain) = get(d.addr, "/metrics").unwrap();
    assert_eq!(stable(&text), stable(&plain));
    assert_eq!(safety(&text), 1.0);

    // Refused with q=0, or not asked for: plain text.
    for accept in ["gzip;q=0", "identity", "br", "gzip;q=NaN", "gzip;q=2"] {
        let (head, body) = get_encoded(d.addr, "/metrics", accept);
        assert!(!head.contains("content-encoding"), "{accept}: {head}");
        assert_eq!(stable(&String::from_utf8(body).unwrap()), stable(&plain));
    }

    // A new count reaches the gzipped body at the next publish, not a second later.
    append(&dir.path().join("app.log"), failed("g2").as_bytes());
    d.scrape_until(Duration::from_secs(10), |m| safety(m) == 2.0);
    let (_, body) = get_encoded(d.addr, "/metrics", "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).unwrap();
    assert_eq!(safety(&text), 2.0);
}

/// With notifications, a file created in a directory that a reload added is found at
/// once: the watcher follows the new pattern's directory (it was watched only at start,
/// so such a file waited for the next glob, a minute here).
#[test]
fn a_reload_adds_its_directories_to_the_watched_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (first, added) = (dir.path().join("first"), dir.path().join("added"));
    std::fs::create_dir(&first).unwrap();
    std::fs::create_dir(&added).unwrap();
    let cfg = |paths: &str| {
        format!(
            "[state]\ndir = \"{}\"\ncommit_interval = \"100ms\"\n[file]\npaths = [{paths}]\nstart_at = \"beginning\"\nnotify = true\npoll_interval = \"60s\"\nglob_interval = \"60s\"\n",
            dir.path().join("state").display()
        )
    };
    let pattern = |d: &Path| format!("\"{}/*.log\"", d.display());
    let mut d = Daemon::start(dir.path(), &cfg(&pattern(&first)), &[]);
    std::fs::write(
        dir.path().join("runway-exporter.toml"),
        cfg(&format!("{}, {}", pattern(&first), pattern(&added))),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_log(
        "Configuration reloaded; counters kept.",
        Duration::from_secs(10),
    );
    // Found by the round that applies the reload, or through the watcher.
    append(&added.join("one.log"), failed("one").as_bytes());
    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        sum(m, "runway_exporter_records_total", &["counted"]) >= 1.0
    });
    assert_eq!(sum(&m, "runway_exporter_records_total", &["counted"]), 1.0);
    // A file created there later is found through the watcher, not the 60 s glob.
    let t = std::time::Instant::now();
    append(&added.join("two.log"), failed("two").as_bytes());
    let (m, took) = d.scrape_until(Duration::from_secs(30), |m| {
        sum(m, "runway_exporter_records_total", &["counted"]) >= 2.0
    });
    assert_eq!(sum(&m, "runway_exporter_records_total", &["counted"]), 2.0);
    assert!(
        took < Duration::from_secs(10),
        "a new file in the added directory waited {:?} ({:?} since written)",
        took,
        t.elapsed()
    );
}

/// RFC 3339 for `ago` seconds before now.
fn rfc3339_ago(ago: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    jiff::Timestamp::from_millisecond(((now - ago) * 1000.0) as i64)
        .unwrap()
        .to_string()
}

/// A record without a timestamp of its own has the time it was read, when it was read
/// live; a backlog's has none (it would be read long after it was written).
#[test]
fn live_lines_are_timed_when_read_and_a_backlog_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let line = |id: &str, status: &str, ago: f64| {
        format!(
            r#"{{"id":"{id}","status":"{status}","model":"gen4_turbo","createdAt":"{}"}}"#,
            rfc3339_ago(ago)
        ) + "\n"
    };
    append(&log, line("backlog", "SUCCEEDED", 100.0).as_bytes());
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), "start_at = \"beginning\"\n"),
        &[],
    );
    let untimed = |m: &str| {
        sum(
            m,
            "runway_exporter_untimed_tasks_total",
            &["measure=\"duration\"", "reason=\"no_end\""],
        )
    };
    d.scrape_until(Duration::from_secs(10), |m| untimed(m) == 1.0);
    // Appended now: created 50 s ago, ended when read (within a poll, 100 ms here).
    append(&log, line("live", "SUCCEEDED", 50.0).as_bytes());
    append(&log, line("queued", "RUNNING", 20.0).as_bytes());
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        sum(m, "runway_task_duration_seconds_count", &[]) == 1.0
            && sum(m, "runway_task_queue_seconds_count", &[]) == 1.0
    });
    let took = sum(&m, "runway_task_duration_seconds_sum", &[]);
    assert!((50.0..55.0).contains(&took), "{took}");
    let waited = sum(&m, "runway_task_queue_seconds_sum", &[]);
    assert!((20.0..25.0).contains(&waited), "{waited}");
    assert_eq!(
        sample(
            &m,
            "runway_task_duration_seconds_bucket{model=\"gen4_turbo\",status=\"SUCCEEDED\",le=\"60\"}"
        ),
        Some(1.0)
    );
    assert_eq!(untimed(&m), 1.0);
    promtool_check_metrics(&m);
}

/// Issue 21: some pages' gzip bodies were cut short (the sync flush of the compressed
/// page was left unfinished for some contents, 3 % of real pages). The page grows here
/// from a few KB to about 600 KB, through the bands that broke, republished every 20 ms,
/// while four threads scrape it with gzip: every body is one whole gzip member whose
/// text is a whole exposition, and a sample of them passes promtool. (Which pages broke
/// depends on their bytes: 350 pages of this daemon happened to miss them all, so the
/// old flush is caught by the exposition's unit tests, on the bands that broke.)
#[test]
fn every_gzip_scrape_decodes_while_pages_grow_and_are_republished() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let extra = "[ledger]\nmax_failure_codes = 1000\nmax_models = 1000\n";
    let cfg = config(dir.path(), extra).replace("\"200ms\"", "\"20ms\"");
    let d = Daemon::start(dir.path(), &cfg, &[]);
    let done = std::sync::atomic::AtomicBool::new(false);
    // Every 50th body of each thread is kept for promtool, and the largest size seen.
    let kept = std::sync::Mutex::new((Vec::new(), 0));
    let scrape = || {
        let mut scrapes = 0;
        while !done.load(std::sync::atomic::Ordering::Acquire) && scrapes < 50_000 {
            let (head, body) = get_encoded(d.addr, "/metrics", "gzip");
            assert!(head.contains("content-encoding: gzip"), "{head}");
            let mut text = String::new();
            let read = std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(&body[..]),
                &mut text,
            );
            assert!(read.is_ok(), "scrape {scrapes}: {read:?}");
            assert!(
                text.ends_with('\n') && text.contains("process_"),
                "cut short"
            );
            assert!(text.lines().all(|l| l.starts_with('#') || l.contains(' ')));
            let mut kept = kept.lock().unwrap();
            kept.1 = kept.1.max(text.len());
            if scrapes % 50 == 0 {
                kept.0.push(text);
            }
            scrapes += 1;
        }
    };
    let mut task = 0;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(scrape);
        }
        // 3,500 (code, model) pairs in 70 batches, each counted before the next.
        for batch in 0..70 {
            let lines: String = (0..50)
                .map(|_| {
                    task += 1;
                    let (code, model) = (task % 997, task % 991);
                    format!(
                        "{{\"id\":\"t{task}\",\"status\":\"FAILED\",\"failureCode\":\"CODE_{code}\",\"model\":\"m{model}\"}}\n"
                    )
                })
                .collect();
            append(&log, lines.as_bytes());
            let want = 50.0 * (batch + 1) as f64;
            let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
                sum(m, "runway_tasks_total", &[]) >= want
            });
            assert_eq!(sum(&m, "runway_tasks_total", &[]), want);
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    let (bodies, largest) = kept.into_inner().unwrap();
    assert!(largest > 600_000, "the page grew to {largest} bytes only");
    let step = (bodies.len() / 8).max(1);
    for text in bodies.iter().step_by(step) {
        promtool_check_metrics(text);
    }
}

/// Every answer tells a browser not to sniff, keep, frame or run anything in it; the
/// status page's policy allows only its own inline style; JSON says its charset.
#[test]
fn every_answer_carries_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    d.scrape_until(Duration::from_secs(10), |m| {
        m.contains("runway_tasks_total")
    });
    let paths = [
        "/",
        "/metrics",
        "/api/v1/failures",
        "/-/healthy",
        "/-/ready",
        "/nope",
    ];
    for (path, encoding) in paths.iter().flat_map(|p| [(p, ""), (p, "gzip")]) {
        let (head, _) = get_encoded(d.addr, path, encoding);
        for header in [
            "x-content-type-options: nosniff\r\n",
            "cache-control: no-store\r\n",
            "content-security-policy: default-src 'none'; ",
        ] {
            assert!(head.contains(header), "{path} {encoding}: {head}");
        }
        let policy = head
            .lines()
            .find_map(|l| l.strip_prefix("content-security-policy: "))
            .unwrap();
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        // Only the page has a style, named by its hash.
        assert_eq!(
            policy.contains("style-src 'sha256-"),
            *path == "/",
            "{path}"
        );
    }
    let (head, _) = get_encoded(d.addr, "/api/v1/failures", "");
    assert!(
        head.contains("content-type: application/json; charset=utf-8\r\n"),
        "{head}"
    );
}
