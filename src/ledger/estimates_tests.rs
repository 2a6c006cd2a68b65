//! Tests of Runway's own estimates: a terminal task without a cost is charged its last
//! `estimatedCost` (a non-terminal record's, its own, the API's; a task-list line's is
//! tested with the task list) before the pricing table's, counted by origin; the
//! estimates held are bounded.

use std::sync::Arc;

use super::*;
use crate::record::{FieldMap, RecordParser};

struct T {
    l: Ledger,
    file: SourceId,
    api: SourceId,
    p: RecordParser,
}

impl T {
    fn new() -> T {
        let mut l = Ledger::new(
            Arc::new(Table::builtin()),
            Arc::new(Pricing::builtin()),
            Limits::default(),
        );
        let file = l.add_source("file");
        let api = l.add_source("api");
        let p = RecordParser::new(&FieldMap::default()).unwrap();
        T { l, file, api, p }
    }

    fn log(&mut self, line: &str) -> LineResult {
        let record = self.p.parse(line.as_bytes()).unwrap();
        self.l.count(self.file, &record)
    }

    /// Lines through the batch path, as the file source counts them.
    fn log_batch(&mut self, lines: &[String]) {
        let records: Vec<_> = lines.iter().map(|l| self.p.parse(l.as_bytes())).collect();
        let mut results = Vec::new();
        self.l.count_batch(self.file, &records, &mut results, None);
    }

    /// Tracks `id` as the task list does, with its model and duration.
    fn track(&mut self, id: &str, model: &str, duration: f64) -> LineResult {
        let task = ApiTask {
            id: id.into(),
            model: Some(model.into()),
            duration: Some(duration),
            ..ApiTask::default()
        };
        self.l.track_api_task(self.api, task, (0, 1), 100)
    }

    /// The API answered `body` for a polled task: not ended, or ended.
    fn answer(&mut self, id: &str, body: &str) -> LineResult {
        let record = self.p.parse(body.as_bytes()).unwrap();
        if record.status.is_terminal() {
            self.l.end_api_task(self.api, id, Ok(&record), None)
        } else {
            self.l.api_answer(self.api, id, &record, None)
        }
    }

    /// (charged, from estimatedCost, from the pricing table) of one status and model.
    fn credits(&self, status: &str, model: &str) -> (f64, f64, f64) {
        let t = self.l.totals();
        t.credits
            .iter()
            .find(|c| c.status == status && c.model == model)
            .map_or((0.0, 0.0, 0.0), |c| {
                let by = c.by_origin();
                (c.charged, by.estimated_cost, by.pricing)
            })
    }

    fn unpriced(&self) -> Unpriced {
        self.l.totals().credits_unpriced
    }
}

#[test]
fn a_non_terminal_records_estimate_comes_before_the_pricing_table() {
    let mut t = T::new();
    // gen4_turbo is 5 credits/s: the table says 50, Runway said 40 then 45.
    t.log(r#"{"id":"a","status":"PENDING","model":"gen4_turbo","estimatedCost":{"credits":40}}"#);
    t.log(r#"{"id":"a","status":"RUNNING","model":"gen4_turbo","estimatedCost":{"credits":45}}"#);
    assert_eq!(t.l.estimates().len(), 1);
    t.log(r#"{"id":"a","status":"SUCCEEDED","model":"gen4_turbo","duration":10}"#);
    // Without an estimate of its own: the table's.
    t.log(r#"{"id":"b","status":"SUCCEEDED","model":"gen4_turbo","duration":10}"#);
    assert_eq!(t.credits("SUCCEEDED", "gen4_turbo"), (95.0, 45.0, 50.0));
    assert_eq!(t.l.estimates().len(), 0, "counted: let go");
    // A model the table does not price is priced by Runway's estimate, not unpriced;
    // a lost failure is charged it, a refunded one is not.
    t.log(r#"{"id":"c","status":"RUNNING","model":"veo3.1","estimatedCost":{"credits":64}}"#);
    t.log(r#"{"id":"c","status":"SUCCEEDED","model":"veo3.1"}"#);
    t.log(r#"{"id":"d","status":"RUNNING","model":"veo3.1","estimatedCost":{"credits":32}}"#);
    t.log(r#"{"id":"d","status":"FAILED","failureCode":"SAFETY.OUTPUT.VIDEO","model":"veo3.1"}"#);
    t.log(r#"{"id":"e","status":"RUNNING","model":"veo3.1","estimatedCost":{"credits":16}}"#);
    t.log(r#"{"id":"e","status":"FAILED","failureCode":"INTERNAL","model":"veo3.1"}"#);
    assert_eq!(t.credits("SUCCEEDED", "veo3.1"), (64.0, 64.0, 0.0));
    assert_eq!(t.credits("FAILED", "veo3.1"), (32.0, 32.0, 0.0));
    assert_eq!(t.unpriced(), Unpriced::default());
    assert_eq!(t.l.estimates().len(), 0);
}

#[test]
fn the_terminal_records_own_estimate_then_the_last_seen_and_a_cost_before_both() {
    let mut t = T::new();
    t.log(r#"{"id":"a","status":"RUNNING","model":"gen4_turbo","estimatedCost":{"credits":40}}"#);
    t.log(r#"{"id":"a","status":"SUCCEEDED","model":"gen4_turbo","estimatedCost":{"credits":42}}"#);
    t.log(r#"{"id":"b","status":"SUCCEEDED","model":"gen4_turbo","estimated_cost":{"credits":7}}"#);
    assert_eq!(t.credits("SUCCEEDED", "gen4_turbo"), (49.0, 49.0, 0.0));
    // A reported cost, or the event's credits field, is never an estimate.
    t.log(r#"{"id":"c","status":"RUNNING","model":"m","estimatedCost":{"credits":40}}"#);
    t.log(r#"{"id":"c","status":"SUCCEEDED","model":"m","cost":{"credits":30}}"#);
    t.log(r#"{"id":"d","status":"RUNNING","model":"m","estimatedCost":{"credits":40}}"#);
    t.log(r#"{"id":"d","status":"SUCCEEDED","model":"m","credits":20}"#);
    assert_eq!(t.credits("SUCCEEDED", "m"), (50.0, 0.0, 0.0));
    assert_eq!(t.l.estimates().len(), 0);
}

#[test]
fn counted_tasks_hold_no_estimate_and_duplicates_let_theirs_go() {
    let mut t = T::new();
    t.log(r#"{"id":"a","status":"SUCCEEDED","model":"m","cost":{"credits":3}}"#);
    // A late non-terminal record of a counted task is not held.
    t.log(r#"{"id":"a","status":"RUNNING","model":"m","estimatedCost":{"credits":40}}"#);
    t.log(r#"{"id":"a","status":"PENDING","model":"m","estimatedCost":{"credits":40}}"#);
    assert_eq!(t.l.estimates().len(), 0);
    // Through the batch path as well: RUNNING and PENDING, before and after the end.
    let lines = [
        r#"{"id":"b","status":"RUNNING","model":"m","estimatedCost":{"credits":9}}"#,
        r#"{"id":"b","status":"SUCCEEDED","model":"m"}"#,
        r#"{"id":"b","status":"RUNNING","model":"m","estimatedCost":{"credits":9}}"#,
        r#"{"id":"b","status":"PENDING","model":"m","estimatedCost":{"credits":9}}"#,
    ]
    .map(String::from);
    t.log_batch(&lines);
    assert_eq!(t.credits("SUCCEEDED", "m"), (12.0, 9.0, 0.0));
    assert_eq!(t.l.estimates().len(), 0);
}

#[test]
fn the_api_pollers_last_estimate_prices_a_terminal_answer_without_a_cost() {
    let mut t = T::new();
    assert_eq!(t.track("a", "gen4_turbo", 10.0), LineResult::Tracked);
    t.answer(
        "a",
        r#"{"id":"a","status":"RUNNING","estimatedCost":{"credits":30}}"#,
    );
    // An answer without an estimate keeps the last one.
    t.answer("a", r#"{"id":"a","status":"RUNNING"}"#);
    assert_eq!(t.l.totals().api_credits_in_flight, 30.0);
    assert_eq!(
        t.l.estimates().len(),
        0,
        "kept with the polled task, not held twice"
    );
    t.answer(
        "a",
        r#"{"id":"a","status":"SUCCEEDED","model":"gen4_turbo"}"#,
    );
    assert_eq!(t.credits("SUCCEEDED", "gen4_turbo"), (30.0, 30.0, 0.0));
}

#[test]
fn the_entry_point_takes_an_estimate_for_any_task_id() {
    let mut t = T::new();
    // As a proxy would, from a create call's answer: the task's log line comes later.
    t.l.estimate_seen("a", 12.5);
    let g = t.l.generation();
    t.l.estimate_seen("a", 12.5);
    assert_eq!(t.l.generation(), g, "an unchanged estimate changes nothing");
    t.log(r#"{"id":"a","status":"SUCCEEDED","model":"gen4_image"}"#);
    assert_eq!(t.credits("SUCCEEDED", "gen4_image"), (12.5, 12.5, 0.0));
    // A task counted already: ignored.
    t.l.estimate_seen("a", 99.0);
    assert_eq!(t.l.estimates().len(), 0);
}

#[test]
fn hostile_estimates_are_ignored() {
    let mut t = T::new();
    for bad in [1e308, -1.0, f64::NAN, f64::INFINITY, 1e9 + 1.0] {
        t.l.estimate_seen("a", bad);
    }
    for v in [
        "1e308",
        "-5",
        r#""NaN""#,
        r#""12""#,
        "null",
        "[1]",
        r#"{"credits":1}"#,
    ] {
        let line = format!(r#"{{"id":"b","status":"RUNNING","estimatedCost":{{"credits":{v}}}}}"#);
        t.log(&line);
    }
    assert_eq!(t.l.estimates().len(), 0);
    t.log(r#"{"id":"a","status":"SUCCEEDED","model":"gen4_turbo","duration":10}"#);
    t.log(r#"{"id":"b","status":"SUCCEEDED","model":"gen4_turbo","duration":10}"#);
    assert_eq!(t.credits("SUCCEEDED", "gen4_turbo"), (100.0, 0.0, 100.0));
}

#[test]
fn a_flood_of_ids_is_bounded_and_its_evictions_counted() {
    let mut t = T::new();
    // Ids of every length, up to a megabyte: each is held by its hash.
    let huge = "h".repeat(1 << 20);
    t.l.estimate_seen(&huge, 5.0);
    let flood = MAX_ESTIMATES + 1_000;
    let lines: Vec<String> = (0..flood)
        .map(|i| format!(r#"{{"id":"t{i}","status":"RUNNING","estimatedCost":{{"credits":1}}}}"#))
        .collect();
    t.log_batch(&lines);
    let saved = t.l.totals().estimates;
    assert_eq!(t.l.estimates().len(), MAX_ESTIMATES);
    assert_eq!(saved.held.len(), MAX_ESTIMATES);
    assert_eq!(saved.evicted, 1_001, "the huge id and the first 1,000");
    // The newest are held, the oldest evicted.
    t.log(&format!(
        r#"{{"id":"t{}","status":"SUCCEEDED","model":"veo3.1"}}"#,
        flood - 1
    ));
    t.log(r#"{"id":"t0","status":"SUCCEEDED","model":"veo3.1"}"#);
    assert_eq!(t.credits("SUCCEEDED", "veo3.1"), (1.0, 1.0, 0.0));
    assert_eq!(t.unpriced().succeeded, 1);
}

#[test]
fn held_estimates_and_the_split_survive_a_restore() {
    let mut t = T::new();
    t.log(r#"{"id":"a","status":"RUNNING","model":"gen4_turbo","estimatedCost":{"credits":40}}"#);
    t.log(r#"{"id":"b","status":"RUNNING","model":"gen4_turbo","estimatedCost":{"credits":41}}"#);
    t.log(r#"{"id":"b","status":"SUCCEEDED","model":"gen4_turbo"}"#);
    t.log(r#"{"id":"c","status":"SUCCEEDED","model":"gen4_turbo","duration":2}"#);
    let saved = t.l.totals();
    let windows = SavedWindows {
        dedupe: t.l.dedupe().hashes().collect(),
        started: t.l.started_ids().hashes().collect(),
    };
    let mut back = T::new();
    back.l.restore(&saved, windows).unwrap();
    assert_eq!(back.l.totals(), saved);
    back.log(r#"{"id":"a","status":"SUCCEEDED","model":"gen4_turbo"}"#);
    assert_eq!(back.credits("SUCCEEDED", "gen4_turbo"), (91.0, 81.0, 10.0));
    // Totals written before the split: all of their estimate is the table's.
    let mut old = saved.clone();
    for c in &mut old.credits {
        c.estimated_by = None;
    }
    old.estimates = SavedEstimates::default();
    let mut back = T::new();
    back.l.restore(&old, SavedWindows::default()).unwrap();
    assert_eq!(back.credits("SUCCEEDED", "gen4_turbo"), (51.0, 0.0, 51.0));
    assert_eq!(back.l.estimates().len(), 0);
}
