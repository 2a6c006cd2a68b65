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
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_rules_are_valid_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "rules.yml"]);
    assert!(checked.contains("SUCCESS: 12 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_and_has_a_runbook() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(dir.join("config/prometheus/rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(dir.join("config/prometheus/tests/alerts_test.yml")).unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for alert in alerts {
        let tested = tests.matches(&format!("alertname: {alert}\n")).count();
        assert!(tested >= 1, "{alert} has no promtool test");
        assert!(
            readme.contains(&format!("### {alert}")),
            "{alert} has no runbook section in README.md"
        );
        assert!(
            rules.contains(&format!("README.md#{}", alert.to_lowercase())),
            "{alert} does not link its runbook"
        );
    }
}
