//! Tests of deleted tasks: a polled task that the API stops knowing (404) after it was
//! seen waiting or running, and a `DELETE` the exporter sees.

use std::sync::Arc;

use super::*;
use crate::record::{FieldMap, RecordParser};

struct Api {
    l: Ledger,
    file: SourceId,
    api: SourceId,
    p: RecordParser,
}

impl Api {
    fn new() -> Api {
        let mut l = Ledger::new(
            Arc::new(Table::builtin()),
            Arc::new(Pricing::builtin()),
            Limits::default(),
        );
        let file = l.add_source("file");
        let api = l.add_source("api");
        let p = RecordParser::new(&FieldMap::default()).unwrap();
        Api { l, file, api, p }
    }

    /// Tracks `id` as the task list would, with what the list says of it.
    fn track(&mut self, id: &str, model: Option<&str>, duration: Option<f64>) {
        let task = ApiTask {
            id: id.into(),
            added_at: crate::clock::unix_now(),
            model: model.map(str::to_string),
            duration,
            ..ApiTask::default()
        };
        assert_eq!(
            self.l.track_api_task(self.api, task, (0, 1), 100),
            LineResult::Tracked
        );
    }

    /// The API answered `body`, a task not ended.
    fn answer(&mut self, id: &str, body: &str) {
        let record = self.p.parse(body.as_bytes()).unwrap();
        self.l.api_answer(self.api, id, &record, None);
    }

    fn log(&mut self, line: &str) -> LineResult {
        let record = self.p.parse(line.as_bytes()).unwrap();
        self.l.count(self.file, &record)
    }

    fn series<T: Clone>(&self, v: &[T], keep: impl Fn(&T) -> bool) -> Option<T> {
        v.iter().find(|s| keep(s)).cloned()
    }

    fn tasks(&self, status: &str) -> u64 {
        let t = self.l.totals();
        t.tasks
            .iter()
            .filter(|s| s.status == status)
            .map(|s| s.tasks)
            .sum()
    }

    /// (charged, estimated) of the CANCELLED tasks of `model`.
    fn cancelled_credits(&self, model: &str) -> (f64, f64) {
        let t = self.l.totals();
        self.series(&t.credits, |c| c.status == "CANCELLED" && c.model == model)
            .map_or((0.0, 0.0), |c| (c.charged, c.estimated))
    }

    fn untimed(&self, reason: &str) -> u64 {
        let t = self.l.totals();
        self.series(&t.untimed, |u| {
            u.measure == "duration" && u.reason == reason
        })
        .map_or(0, |u| u.tasks)
    }

    fn timed_cancelled(&self) -> u64 {
        let t = self.l.totals();
        t.durations
            .iter()
            .filter(|d| d.status == "CANCELLED")
            .map(|d| d.histogram.count())
            .sum()
    }
}

#[test]
fn a_task_gone_after_it_ran_is_cancelled_and_charged_its_estimate() {
    let mut a = Api::new();
    a.track("run", Some("gen4_turbo"), Some(10.0));
    a.answer("run", r#"{"id":"run","status":"PENDING"}"#);
    a.answer(
        "run",
        r#"{"id":"run","status":"RUNNING","createdAt":"2026-12-01T10:00:00Z","estimatedCost":{"credits":42}}"#,
    );
    assert_eq!(a.l.api_task_gone(a.api, "run"), LineResult::Counted);
    assert_eq!(a.tasks("CANCELLED"), 1);
    // Runway's own estimate, not the table's 50 for 10 s of gen4_turbo; marked estimated.
    assert_eq!(a.cancelled_credits("gen4_turbo"), (42.0, 42.0));
    assert!(a.l.api.task("run").is_none(), "no longer polled");
    assert_eq!(a.l.api.in_flight(), 0.0);
    // Deleted at an unknown time: not timed, and said why.
    assert_eq!(a.untimed("deleted"), 1);
    assert_eq!(a.timed_cancelled(), 0);
    // Counted once: the application's own terminal record of it is a duplicate.
    assert_eq!(
        a.log(r#"{"id":"run","status":"FAILED","failureCode":"INTERNAL"}"#),
        LineResult::Duplicate
    );
    assert_eq!(a.tasks("FAILED"), 0);
    assert_eq!(
        a.l.own.source(a.api).results[ResultKind::Counted as usize],
        1
    );
    assert_eq!(
        a.l.own.source(a.api).results[ResultKind::NotFound as usize],
        0
    );
}

#[test]
fn a_task_gone_while_it_waited_is_cancelled_and_charged_nothing() {
    let mut a = Api::new();
    a.track("wait", Some("gen4_turbo"), Some(10.0));
    a.answer(
        "wait",
        r#"{"id":"wait","status":"THROTTLED","estimatedCost":{"credits":42}}"#,
    );
    assert_eq!(a.l.api_task_gone(a.api, "wait"), LineResult::Counted);
    assert_eq!(a.tasks("CANCELLED"), 1);
    assert_eq!(
        a.cancelled_credits("gen4_turbo"),
        (0.0, 0.0),
        "it never ran"
    );
    assert_eq!(a.l.totals().credits_unpriced.cancelled, 0);
}

#[test]
fn a_task_gone_after_it_ran_without_an_estimate_is_priced_by_the_table_or_unpriced() {
    let mut a = Api::new();
    a.track("priced", Some("gen4_turbo"), Some(10.0));
    a.track("unpriced", Some("mystery"), None);
    for id in ["priced", "unpriced"] {
        a.answer(id, &format!(r#"{{"id":"{id}","status":"RUNNING"}}"#));
        assert_eq!(a.l.api_task_gone(a.api, id), LineResult::Counted);
    }
    assert_eq!(a.cancelled_credits("gen4_turbo"), (50.0, 50.0));
    assert_eq!(a.cancelled_credits("mystery"), (0.0, 0.0));
    assert_eq!(a.l.totals().credits_unpriced.cancelled, 1);
    assert_eq!(a.tasks("CANCELLED"), 2);
}

#[test]
fn a_task_never_seen_is_not_found_not_cancelled() {
    let mut a = Api::new();
    a.track("unknown", Some("gen4_turbo"), Some(10.0));
    assert_eq!(a.l.api_task_gone(a.api, "unknown"), LineResult::NotFound);
    assert_eq!(a.tasks("CANCELLED"), 0);
    assert!(a.l.api.task("unknown").is_none());
    assert!(!a.l.seen("unknown"), "an unknown id is not counted");
    // Asked again (a second answer in flight): nothing more.
    assert_eq!(a.l.api_task_gone(a.api, "unknown"), LineResult::Duplicate);
    assert_eq!(
        a.l.own.source(a.api).results[ResultKind::NotFound as usize],
        1
    );
}

#[test]
fn a_task_the_log_counted_first_is_left_as_it_was_by_the_404() {
    let mut a = Api::new();
    a.track("logged", Some("gen4_turbo"), Some(10.0));
    a.answer(
        "logged",
        r#"{"id":"logged","status":"RUNNING","estimatedCost":{"credits":42}}"#,
    );
    assert_eq!(
        a.log(r#"{"id":"logged","status":"FAILED","failureCode":"INTERNAL","model":"gen4_turbo"}"#),
        LineResult::Counted
    );
    let before = a.l.totals();
    assert_eq!(a.l.api_task_gone(a.api, "logged"), LineResult::Duplicate);
    let after = a.l.totals();
    assert_eq!(after.tasks, before.tasks);
    assert_eq!(after.credits, before.credits);
    assert_eq!(after.untimed, before.untimed);
    assert_eq!(after.api_tasks_tracked, 0, "no longer polled");
}

#[test]
fn a_delete_seen_ends_the_task_cancelled_at_its_time() {
    let mut a = Api::new();
    // Whole seconds, as createdAt below is.
    let now = crate::clock::unix_now().floor();
    a.track("del", Some("gen4_turbo"), Some(10.0));
    let created = jiff::Timestamp::from_second(now as i64 - 30).unwrap();
    a.answer(
        "del",
        &format!(
            r#"{{"id":"del","status":"RUNNING","createdAt":"{created}","estimatedCost":{{"credits":40}}}}"#
        ),
    );
    assert_eq!(
        a.l.task_deleted(a.api, "del", now),
        Some(LineResult::Counted)
    );
    assert_eq!(a.cancelled_credits("gen4_turbo"), (40.0, 40.0));
    // The end is known: timed from createdAt, 30 s.
    let t = a.l.totals();
    let d = t
        .durations
        .iter()
        .find(|d| d.status == "CANCELLED" && d.model == "gen4_turbo")
        .unwrap();
    assert_eq!((d.histogram.count(), d.histogram.sum), (1, 30.0));
    assert!(a.l.api.task("del").is_none());
    // A second DELETE, or the 404 after it: nothing more.
    assert_eq!(
        a.l.task_deleted(a.api, "del", now),
        Some(LineResult::Duplicate)
    );
    assert_eq!(a.tasks("CANCELLED"), 1);

    // A task the exporter does not poll, seen waiting with Runway's estimate (a log's
    // record, a create call's answer): cancelled, charged nothing, and untimed for want
    // of a start.
    assert_eq!(
        a.log(r#"{"id":"other","status":"PENDING","estimatedCost":{"credits":30}}"#),
        LineResult::NonTerminal
    );
    assert_eq!(
        a.l.task_deleted(a.api, "other", now),
        Some(LineResult::Counted)
    );
    assert_eq!(a.tasks("CANCELLED"), 2);
    assert_eq!(a.cancelled_credits("unknown"), (0.0, 0.0));
    assert_eq!(a.untimed("no_start"), 1);
    assert_eq!(
        a.log(r#"{"id":"other","status":"CANCELLED"}"#),
        LineResult::Duplicate
    );
    // A finished task deleted after it was counted: nothing changes.
    assert_eq!(
        a.log(r#"{"id":"done","status":"SUCCEEDED","cost":{"credits":5}}"#),
        LineResult::Counted
    );
    assert_eq!(
        a.l.task_deleted(a.api, "done", now),
        Some(LineResult::Duplicate)
    );
    assert_eq!(a.tasks("CANCELLED"), 2);
}

#[test]
fn what_was_seen_of_a_polled_task_survives_a_restart() {
    let mut a = Api::new();
    a.track("run", Some("gen4_turbo"), None);
    a.answer(
        "run",
        r#"{"id":"run","status":"RUNNING","createdAt":"2026-12-01T10:00:00Z","estimatedCost":{"credits":42}}"#,
    );
    // A PENDING answer after RUNNING does not undo that it ran.
    a.answer(
        "run",
        r#"{"id":"run","status":"PENDING","estimatedCost":{"credits":42}}"#,
    );
    let saved: Vec<ApiTask> = a.l.api.tasks().cloned().collect();
    let (_, back) = crate::state::through_header(&Totals::default(), &saved);
    assert_eq!(back[0].reached, Some(Reached::Running));
    let mut b = Api::new();
    b.l.restore_api_tasks(back);
    assert_eq!(b.l.api_task_gone(b.api, "run"), LineResult::Counted);
    assert_eq!(b.cancelled_credits("gen4_turbo"), (42.0, 42.0));
}

#[test]
fn a_delete_of_a_task_never_seen_unended_is_no_outcome() {
    let mut a = Api::new();
    let now = crate::clock::unix_now();
    // An old finished task the exporter never saw (or forgot): deleting it is a request,
    // not a cancellation.
    assert_eq!(a.l.task_deleted(a.api, "old", now), None);
    assert_eq!(a.tasks("CANCELLED"), 0);
    let results: u64 = a.l.own.source(a.api).results.iter().sum();
    assert_eq!(results, 0, "no result recorded");
    // Its record read later is still counted as what it was.
    assert_eq!(
        a.log(r#"{"id":"old","status":"SUCCEEDED","cost":{"credits":5}}"#),
        LineResult::Counted
    );
    assert_eq!(a.tasks("CANCELLED"), 0);

    // A task whose RUNNING record a log (or the proxy) showed, not polled: cancelled,
    // and charged its estimate, as a polled one is.
    assert_eq!(
        a.log(r#"{"id":"ran","status":"RUNNING","createdAt":"2026-12-01T10:00:00Z","estimatedCost":{"credits":42}}"#),
        LineResult::NonTerminal
    );
    assert_eq!(
        a.l.task_deleted(a.api, "ran", now),
        Some(LineResult::Counted)
    );
    assert_eq!(a.tasks("CANCELLED"), 1);
    assert_eq!(a.cancelled_credits("unknown"), (42.0, 42.0));
    assert_eq!(a.l.estimates().len(), 0, "the held estimate was taken");
}
