//! Logs written through Runway's real SDKs (`tests/fixtures/sdk/`, made by
//! `scripts/sdk-fixtures/run.sh` with pinned `runwayml` and `@runwayml/sdk` against a
//! stand-in API): every shape is counted exactly with the default configuration, by the
//! counts `expected.json` derives from the stand-in's task table. The logs also hold
//! workflow invocations and realtime sessions, logged the same ways: counted apart, by
//! the stand-in's tables, and never as tasks.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;

/// One fixture's counts (counts and credits alike as numbers).
#[derive(serde::Deserialize)]
struct Expected {
    task_pointer: String,
    records: Counts,
    tasks: Counts,
    failures: Counts,
    credits_charged: Counts,
    credits_lost: Counts,
    cost_mismatches: Counts,
    model: String,
    workflow_invocations: Counts,
    workflow_partial: Counts,
    workflow_node_failures: Counts,
    workflow_credits: Counts,
    realtime_sessions: Counts,
    realtime_session_failures: Counts,
}

type Counts = BTreeMap<String, f64>;

/// Every sample of a family as `(labels, value)`.
fn samples<'a>(text: &'a str, family: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
        .filter_map(|l| {
            let (labels, v) = l.rsplit_once("} ")?;
            Some((labels, v.parse().ok()?))
        })
        .collect()
}

/// The values of `label` across a family's samples, summed, leaving out zeroes.
fn by_label(text: &str, family: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in samples(text, family) {
        let key = format!("{label}=\"");
        let value = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&key))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{family}{{{labels}}} has no {label}"));
        *out.entry(value.to_string()).or_default() += v;
    }
    out.retain(|_, v| *v != 0.0);
    out
}

/// Without the zeroes, as [`by_label`] gives them.
fn nonzero(m: &Counts) -> Counts {
    m.iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn expected() -> BTreeMap<String, Expected> {
    serde_json::from_str(&std::fs::read_to_string(fixture("sdk/expected.json")).unwrap()).unwrap()
}

#[test]
fn every_sdk_log_shape_is_counted_exactly() {
    let expected = expected();
    assert!(expected.len() >= 9, "{} fixtures", expected.len());
    for (name, want) in &expected {
        let path = fixture(&format!("sdk/{name}"));
        let mut env = vec![];
        if !want.task_pointer.is_empty() {
            env.push((
                "RUNWAY_EXPORTER__RECORD__TASK_POINTER",
                want.task_pointer.as_str(),
            ));
        }
        let (code, out, err) = run_env(&["scan", path.to_str().unwrap()], &env);
        assert_eq!(code, 0, "{name}: {err}");
        check(name, &out, want);
    }
}

/// The metrics `out` of a whole fixture log are `want`'s.
fn check(name: &str, out: &str, want: &Expected) {
    {
        let checks = [
            ("runway_exporter_records_total", "result", &want.records),
            ("runway_tasks_total", "status", &want.tasks),
            // A code under a spelling that was not read would show as "none" here.
            ("runway_task_failures_total", "failure_code", &want.failures),
            (
                "runway_credits_charged_total",
                "status",
                &want.credits_charged,
            ),
            (
                "runway_credits_lost_total",
                "failure_code",
                &want.credits_lost,
            ),
            (
                "runway_task_cost_mismatches_total",
                "failure_code",
                &want.cost_mismatches,
            ),
            (
                "runway_workflow_invocations_total",
                "status",
                &want.workflow_invocations,
            ),
            (
                "runway_workflow_invocations_total",
                "partial",
                &want.workflow_partial,
            ),
            (
                "runway_workflow_node_failures_total",
                "failure_code",
                &want.workflow_node_failures,
            ),
            (
                "runway_workflow_credits_total",
                "status",
                &want.workflow_credits,
            ),
            (
                "runway_realtime_sessions_total",
                "status",
                &want.realtime_sessions,
            ),
            (
                "runway_realtime_session_failures_total",
                "failure_code",
                &want.realtime_session_failures,
            ),
        ];
        for (family, label, counts) in checks {
            assert_eq!(
                by_label(out, family, label),
                nonzero(counts),
                "{name}: {family} by {label}"
            );
        }
        // Every credit was reported by the task itself: nothing estimated or unpriced.
        assert!(
            by_label(out, "runway_credits_estimated_total", "status").is_empty(),
            "{name}"
        );
        assert!(
            by_label(out, "runway_exporter_credits_unpriced_total", "status").is_empty(),
            "{name}"
        );
        assert_eq!(
            sample(out, "runway_exporter_invalid_numbers_total"),
            Some(0.0),
            "{name}"
        );
        let models = by_label(out, "runway_tasks_total", "model");
        assert_eq!(
            models.keys().collect::<Vec<_>>(),
            vec![&want.model],
            "{name}: model labels"
        );
    }
}

/// The daemon stopped mid-log, twice: between an invocation's RUNNING record and its
/// CANCELLED one (which only its id, committed with the state, tells from a task's),
/// and between a session's NOT_READY and FAILED records. The counts at the end are the
/// fixture's, exactly.
#[test]
fn invocations_and_sessions_are_counted_exactly_across_restarts_mid_log() {
    let name = "node-stringify.log";
    let want = &expected()[name];
    let text = std::fs::read_to_string(fixture(&format!("sdk/{name}"))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = |id: &str, status: &str| {
        let status = format!(r#""status":"{status}""#);
        lines
            .iter()
            .position(|l| l.contains(id) && l.contains(&status))
            .unwrap()
    };
    let cuts = [
        at("4000-9000-000000000004", "CANCELLED"),
        at("4000-a000-000000000002", "FAILED"),
        lines.len(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let cfg = format!(
        "[state]\ndir = \"{}\"\ncommit_interval = \"100ms\"\n[file]\npaths = [\"{}\"]\npoll_interval = \"50ms\"\n",
        dir.path().join("state").display(),
        log.display()
    );
    let mut d = Daemon::start(dir.path(), &cfg, &[]);
    let mut from = 0;
    for (i, cut) in cuts.into_iter().enumerate() {
        let part: String = lines[from..cut].iter().map(|l| format!("{l}\n")).collect();
        append(&log, part.as_bytes());
        from = cut;
        let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
            sum(m, "runway_exporter_records_total", &[]) as usize >= cut
        });
        if i + 1 == cuts.len() {
            check(name, &m, want);
            break;
        }
        // A clean stop commits what was read; the next start restores it.
        d.signal("TERM");
        assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
        d = Daemon::start(dir.path(), &cfg, &[]);
    }
}
