//! The operations kit checked with the real tools: Prometheus rules and their unit
//! tests (promtool).

use std::path::Path;
use std::process::Command;

use crate::harness::*;

fn promtool(args: &[&str]) -> String {
    let out = Command::new(require_tool("promtool"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus"))
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_rules_are_valid_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "rules.yml"]);
    assert!(checked.contains("SUCCESS: 31 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_and_has_a_runbook() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(dir.join("config/prometheus/rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(dir.join("config/prometheus/tests/alerts_test.yml")).unwrap();
    let runbook = std::fs::read_to_string(dir.join("docs/runbook.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 11, "{alerts:?}");
    // The proxy's: a burst of 429s to create calls, the daily task quota reached.
    assert!(alerts.contains(&"RunwayDailyQuotaReached"), "{alerts:?}");
    for alert in alerts {
        let tested = tests.matches(&format!("alertname: {alert}\n")).count();
        assert!(tested >= 1, "{alert} has no promtool test");
        assert!(
            runbook.contains(&format!("\n## {alert}\n")),
            "{alert} has no runbook section in docs/runbook.md"
        );
        assert!(
            rules.contains(&format!(
                "runbook: \"docs/runbook.md#{}\"",
                alert.to_lowercase()
            )),
            "{alert} does not link its runbook"
        );
    }
}

/// Every `runbook` annotation, in the rules and in their tests' expectations, names a
/// heading of the file it points at (a path from the repository's root).
#[test]
fn every_runbook_annotation_resolves() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for file in [
        "config/prometheus/rules.yml",
        "config/prometheus/tests/alerts_test.yml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for line in text.lines() {
            let Some(link) = line.trim().strip_prefix("runbook: ") else {
                continue;
            };
            let link = link.trim_matches('"');
            let broken = crate::docs::unresolved(&dir.join("annotation"), link);
            assert_eq!(broken, None, "{file}: runbook {link}");
            checked += 1;
        }
    }
    // At least one in the rules and one in the tests for each alert: the reader found
    // them all, not none.
    let rules = std::fs::read_to_string(dir.join("config/prometheus/rules.yml")).unwrap();
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(
        alerts >= 11 && checked >= 2 * alerts,
        "{checked} runbook annotations for {alerts} alerts"
    );
}

/// The unit with its binary path pointed at the binary under test, in a temp dir.
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/runway-exporter.service"),
    )
    .unwrap();
    let path = dir.join("runway-exporter.service");
    std::fs::write(&path, unit.replace("/usr/bin/runway-exporter", BIN)).unwrap();
    path
}

/// With the proxy on, the application's API calls go through the exporter: after a crash
/// it must be back before the SDKs' second retry (runwayml's comes 0.375 + 0.75 s after
/// the first failure at the earliest; a start takes ~0.1 s, allowed 0.5 s here), and
/// systemd must never stop restarting it.
#[test]
fn the_systemd_unit_restarts_within_the_sdks_retries_and_never_gives_up() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/runway-exporter.service"),
    )
    .unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    assert_eq!(value("Restart"), "on-failure");
    let restart = humantime::parse_duration(value("RestartSec")).unwrap();
    let start = std::time::Duration::from_millis(500);
    assert!(
        restart + start <= std::time::Duration::from_millis(1125),
        "RestartSec={restart:?}"
    );
    assert_eq!(value("StartLimitIntervalSec"), "0");
}

#[test]
fn the_systemd_unit_verifies_and_is_rated_ok_or_better() {
    let analyze = require_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success() && !text.contains("runway-exporter.service:"),
        "systemd-analyze verify:\n{text}"
    );
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for runway-exporter.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure level {level}");
    let unit = std::fs::read_to_string(&unit).unwrap();
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=",
        "ConfigurationDirectory=",
        "LoadCredential=",
        "ExecStartPre=",
        "ExecReload=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(directive), "{directive} missing");
    }
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_pings_the_watchdog_and_says_it_stops() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = Daemon::start_env(
        dir.path(),
        &config(dir.path(), ""),
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // Watchdog pings may come before READY (the watchdog starts with the process).
    let ready = (0..50).any(|_| {
        let m = next();
        assert!(m.contains("READY=1") || m.contains("WATCHDOG=1"), "{m:?}");
        m.contains("READY=1")
    });
    assert!(ready, "no READY=1");
    // Pings at half the watchdog interval (150 ms): at least three within a few.
    let mut pings = 0;
    while pings < 3 {
        let m = next();
        assert!(m.contains("WATCHDOG=1"), "{m:?}");
        pings += 1;
    }
    d.signal("TERM");
    let mut stopping = false;
    for _ in 0..20 {
        let m = next();
        if m.contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
}
