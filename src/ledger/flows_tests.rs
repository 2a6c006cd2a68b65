//! Tests of workflow invocations and realtime sessions, counted apart from tasks.

use std::sync::Arc;

use super::*;
use crate::record::{FieldMap, RecordParser};

fn ledger(limits: Limits) -> (Ledger, SourceId, RecordParser) {
    let mut l = Ledger::new(
        Arc::new(Table::builtin()),
        Arc::new(Pricing::builtin()),
        limits,
    );
    let s = l.add_source("file");
    (l, s, RecordParser::new(&FieldMap::default()).unwrap())
}

fn feed(l: &mut Ledger, s: SourceId, p: &RecordParser, line: &str) -> LineResult {
    match p.parse(line.as_bytes()) {
        Ok(r) => l.count(s, &r),
        Err(e) => l.reject(s, e),
    }
}

fn invocations(t: &Totals, status: &str, partial: bool) -> u64 {
    let s = t.flows.invocations.iter();
    s.filter(|s| s.status == status && s.partial == partial)
        .map(|s| s.invocations)
        .sum()
}

fn codes(series: &[CodeSeries]) -> Vec<(String, String, String, u64)> {
    let s = series.iter().filter(|s| s.value > 0);
    s.map(|s| {
        (
            s.failure_code.clone(),
            s.category.clone(),
            s.retry.clone(),
            s.value,
        )
    })
    .collect()
}

fn flow_credits(t: &Totals, status: &str) -> f64 {
    let s = t.flows.credits.iter().filter(|s| s.status == status);
    s.map(|s| s.credits).sum()
}

fn tasks_counted(t: &Totals) -> u64 {
    t.tasks.iter().map(|s| s.tasks).sum()
}

fn sessions(t: &Totals, status: &str) -> u64 {
    let s = t.flows.sessions.iter().filter(|s| s.status == status);
    s.map(|s| s.sessions).sum()
}

/// An invocation polled as the SDK returns it (`GET /v1/workflow_invocations/{id}`).
const INVOCATION: [&str; 5] = [
    r#"{"id":"w1","createdAt":"2024-11-06T12:00:00Z","status":"PENDING"}"#,
    r#"{"id":"w1","createdAt":"2024-11-06T12:00:00Z","status":"RUNNING","output":{},"progress":0.3,"nodeErrors":{"n2":{"message":"Blocked","failureCode":"SAFETY.INPUT.TEXT","nodeName":"Video"}}}"#,
    // FAILED before every node ended: no nodeErrors on this one, no cost yet.
    r#"{"id":"w1","createdAt":"2024-11-06T12:00:00Z","status":"FAILED","failure":"A node failed.","failureCode":"INTERNAL"}"#,
    r#"{"id":"w1","createdAt":"2024-11-06T12:00:00Z","status":"FAILED","failure":"A node failed.","cost":{"credits":40}}"#,
    r#"{"id":"w1","createdAt":"2024-11-06T12:00:00Z","status":"FAILED","failure":"A node failed.","cost":{"credits":40}}"#,
];

#[test]
fn an_invocation_is_counted_once_apart_from_tasks_its_cost_when_it_arrives() {
    let (mut l, s, p) = ledger(Limits::default());
    let results: Vec<_> = INVOCATION.iter().map(|x| feed(&mut l, s, &p, x)).collect();
    use LineResult::*;
    assert_eq!(
        results,
        [NonTerminal, NonTerminal, Counted, Duplicate, Duplicate]
    );
    let t = l.totals();
    assert_eq!(tasks_counted(&t), 0, "never a task");
    assert!(t.failures.iter().all(|f| f.value == 0), "no task failure");
    assert_eq!(invocations(&t, "FAILED", false), 1);
    // The cost came on the second terminal record, and is counted once.
    assert_eq!(flow_credits(&t, "FAILED"), 40.0);
    assert!(t.credits.iter().all(|c| c.charged == 0.0));
}

#[test]
fn a_partial_run_and_its_node_failures_by_the_tasks_table() {
    let (mut l, s, p) = ledger(Limits::default());
    let line = r#"{"id":"w2","createdAt":"2024-11-06T12:00:00Z","status":"SUCCEEDED","output":{"n1":["https://x/a.mp4"]},"cost":{"credits":25},"nodeErrors":{"n2":{"message":"m","failureCode":"SAFETY.INPUT.TEXT"},"n3":{"message":"m","failureCode":"safety.input.text"},"n4":{"message":"Bad input"},"n5":{"message":"m","failureCode":"THIRD_PARTY.UNAVAILABLE"}}}"#;
    assert_eq!(feed(&mut l, s, &p, line), LineResult::Counted);
    let t = l.totals();
    assert_eq!(invocations(&t, "SUCCEEDED", true), 1);
    assert_eq!(invocations(&t, "SUCCEEDED", false), 0);
    assert_eq!(flow_credits(&t, "SUCCEEDED"), 25.0);
    assert_eq!(tasks_counted(&t), 0);
    // The same labels a FAILED task of each code gets.
    let task_class = |code: &str| {
        let f = t.failures.iter().find(|f| f.failure_code == code).unwrap();
        (f.category.clone(), f.retry.clone())
    };
    let mut want = Vec::new();
    for (code, n) in [
        ("SAFETY.INPUT.TEXT", 2),
        ("THIRD_PARTY.UNAVAILABLE", 1),
        ("none", 1),
    ] {
        let (category, retry) = task_class(code);
        want.push((code.to_string(), category, retry, n));
    }
    assert_eq!(codes(&t.flows.node_failures), want);
    // A SUCCEEDED invocation without failed nodes is not partial.
    let whole = r#"{"id":"w3","createdAt":"2024-11-06T12:00:00Z","status":"SUCCEEDED","output":{"n1":["u"]}}"#;
    assert_eq!(feed(&mut l, s, &p, whole), LineResult::Counted);
    assert_eq!(invocations(&l.totals(), "SUCCEEDED", false), 1);
}

/// A realtime session polled as the SDK returns it (`GET /v1/realtime_sessions/{id}`).
const SESSION: [&str; 5] = [
    r#"{"id":"r1","createdAt":"2024-11-06T12:00:00Z","status":"NOT_READY","queued":true}"#,
    r#"{"id":"r1","createdAt":"2024-11-06T12:00:00Z","status":"READY","expiresAt":"2024-11-06T12:10:00Z","sessionKey":"k"}"#,
    r#"{"id":"r1","createdAt":"2024-11-06T12:00:00Z","status":"RUNNING"}"#,
    r#"{"id":"r1","createdAt":"2024-11-06T12:00:00Z","status":"FAILED","failure":"Lost.","failureCode":"INTERNAL"}"#,
    r#"{"id":"r1","createdAt":"2024-11-06T12:00:00Z","status":"FAILED","failure":"Lost.","failureCode":"INTERNAL"}"#,
];

#[test]
fn a_session_is_counted_apart_never_as_a_task() {
    let (mut l, s, p) = ledger(Limits::default());
    let results: Vec<_> = SESSION.iter().map(|x| feed(&mut l, s, &p, x)).collect();
    use LineResult::*;
    assert_eq!(
        results,
        [NonTerminal, NonTerminal, NonTerminal, Counted, Duplicate]
    );
    let done =
        r#"{"id":"r2","createdAt":"2024-11-06T12:00:00Z","status":"COMPLETED","duration":61}"#;
    assert_eq!(feed(&mut l, s, &p, done), Counted);
    let t = l.totals();
    assert_eq!(tasks_counted(&t), 0);
    assert!(t.failures.iter().all(|f| f.value == 0));
    assert_eq!((sessions(&t, "FAILED"), sessions(&t, "COMPLETED")), (1, 1));
    let (category, retry) = {
        let f = t
            .failures
            .iter()
            .find(|f| f.failure_code == "INTERNAL")
            .unwrap();
        (f.category.clone(), f.retry.clone())
    };
    assert_eq!(
        codes(&t.flows.session_failures),
        [("INTERNAL".to_string(), category, retry, 1)]
    );
    // A RUNNING session is no task's queue time.
    assert!(t.queues.iter().all(|q| q.histogram.count() == 0));
}

#[test]
fn counters_and_remembered_ids_survive_a_restore() {
    let (mut l, s, p) = ledger(Limits::default());
    for line in INVOCATION[..3].iter().chain(&SESSION[..3]) {
        feed(&mut l, s, &p, line);
    }
    let saved = l.totals();
    let (back, _) = crate::state::through_header(&saved, &[]);
    let windows = SavedWindows {
        dedupe: l.dedupe().hashes().collect(),
        started: Vec::new(),
    };
    let (mut r, s, p) = ledger(Limits::default());
    r.restore(&back, windows).unwrap();
    assert_eq!(r.totals(), saved);
    // After the restart, the later records are still known for what they are.
    for line in INVOCATION[3..].iter().chain(&SESSION[3..]) {
        feed(&mut r, s, &p, line);
    }
    let t = r.totals();
    assert_eq!(tasks_counted(&t), 0);
    assert_eq!(invocations(&t, "FAILED", false), 1);
    assert_eq!(flow_credits(&t, "FAILED"), 40.0);
    assert_eq!(sessions(&t, "FAILED"), 1);
    // A state file written before flows were counted reads as none: the fixtures of
    // every version (tests/it/durability.rs) restore them at zero.
}

#[test]
fn node_failure_codes_are_bounded_by_the_caps() {
    let limits = Limits {
        max_failure_codes: 3,
        ..Limits::default()
    };
    let (mut l, s, p) = ledger(limits);
    // A million nodes, each with a code of its own, and one code of absurd length.
    let n = 1_000_000;
    let mut line = String::from(
        r#"{"id":"w9","status":"FAILED","failure":"x","nodeErrors":{"long":{"message":"m","failureCode":""#,
    );
    line.push_str(&"A".repeat(100_000));
    line.push_str(r#""}"#);
    for i in 0..n {
        line.push_str(&format!(
            r#","n{i}":{{"message":"m","failureCode":"X.C{i}"}}"#
        ));
    }
    line.push_str("}}");
    let started = std::time::Instant::now();
    assert_eq!(feed(&mut l, s, &p, &line), LineResult::Counted);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let t = l.totals();
    let failed: Vec<_> = t
        .flows
        .node_failures
        .iter()
        .filter(|s| s.value > 0)
        .collect();
    assert_eq!(failed.iter().map(|s| s.value).sum::<u64>(), n + 1);
    let labels: std::collections::BTreeSet<_> =
        failed.iter().map(|s| s.failure_code.as_str()).collect();
    // The absurd code is "invalid"; three new codes under the cap; the rest "other".
    let want: std::collections::BTreeSet<_> = ["invalid", "X.C0", "X.C1", "X.C2", "other"]
        .into_iter()
        .collect();
    assert_eq!(labels, want);
    assert!(t.label_overflow.failure_code >= 1);
    // The cap is shared with tasks: a new task code now folds into "other" too.
    let task = r#"{"id":"t1","status":"FAILED","failureCode":"Y.NEW"}"#;
    feed(&mut l, s, &p, task);
    let t = l.totals();
    assert!(t.failures.iter().all(|f| f.failure_code != "Y.NEW"));
}

#[test]
fn absurd_costs_never_reach_a_counter() {
    let (mut l, s, p) = ledger(Limits::default());
    for (i, cost) in ["1e308", "-5", "\"12\""].iter().enumerate() {
        let line = format!(
            r#"{{"id":"w{i}","status":"SUCCEEDED","output":{{}},"cost":{{"credits":{cost}}}}}"#
        );
        feed(&mut l, s, &p, &line);
    }
    let t = l.totals();
    assert!(t.flows.credits.iter().all(|c| c.credits == 0.0));
    assert_eq!(invocations(&t, "SUCCEEDED", false), 3);
    assert_eq!(t.invalid_numbers, 3);
}
