//! Logs written through Runway's real SDKs (`tests/fixtures/sdk/`, made by
//! `scripts/sdk-fixtures/run.sh` with pinned `runwayml` and `@runwayml/sdk` against a
//! stand-in API): every shape is counted exactly with the default configuration, by the
//! counts `expected.json` derives from the stand-in's task table.

use std::collections::BTreeMap;

use crate::harness::*;

#[derive(serde::Deserialize)]
struct Expected {
    task_pointer: String,
    records: BTreeMap<String, u64>,
    tasks: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    credits_charged: BTreeMap<String, f64>,
    credits_lost: BTreeMap<String, f64>,
    cost_mismatches: BTreeMap<String, u64>,
    model: String,
}

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

fn floats(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .map(|(k, v)| (k.clone(), *v))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

fn u64s(m: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    m.iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

#[test]
fn every_sdk_log_shape_is_counted_exactly() {
    let expected: BTreeMap<String, Expected> =
        serde_json::from_str(&std::fs::read_to_string(fixture("sdk/expected.json")).unwrap())
            .unwrap();
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
        let records: BTreeMap<String, f64> =
            by_label(&out, "runway_exporter_records_total", "result");
        assert_eq!(records, u64s(&want.records), "{name}: records by result");
        assert_eq!(
            by_label(&out, "runway_tasks_total", "status"),
            u64s(&want.tasks),
            "{name}: tasks by status"
        );
        assert_eq!(
            by_label(&out, "runway_task_failures_total", "failure_code"),
            u64s(&want.failures),
            "{name}: failures by code (a code under a spelling not read would show as none)"
        );
        assert_eq!(
            by_label(&out, "runway_credits_charged_total", "status"),
            floats(&want.credits_charged),
            "{name}: credits charged by status"
        );
        assert_eq!(
            by_label(&out, "runway_credits_lost_total", "failure_code"),
            floats(&want.credits_lost),
            "{name}: credits lost by code"
        );
        assert_eq!(
            by_label(&out, "runway_task_cost_mismatches_total", "failure_code"),
            u64s(&want.cost_mismatches),
            "{name}: cost-rule mismatches by code"
        );
        // Every credit was reported by the task itself: nothing estimated or unpriced.
        assert!(
            by_label(&out, "runway_credits_estimated_total", "status").is_empty(),
            "{name}"
        );
        assert!(
            by_label(&out, "runway_exporter_credits_unpriced_total", "status").is_empty(),
            "{name}"
        );
        assert_eq!(
            sample(&out, "runway_exporter_invalid_numbers_total"),
            Some(0.0),
            "{name}"
        );
        let models = by_label(&out, "runway_tasks_total", "model");
        assert_eq!(
            models.keys().collect::<Vec<_>>(),
            vec![&want.model],
            "{name}: model labels"
        );
    }
}
