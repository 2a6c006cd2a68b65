//! Task outcomes: a part of the committed state, counted by the semantics in the
//! ledger's module doc.
//!
//! It owns the counters of tasks, failures and credits, the interning of their label
//! values (failure codes and models, each under its cap, a folded value bumping
//! `label_overflow`), the classification cached for each interned code, the dedupe
//! window, and the parts counted with them: [`Timings`], [`Recent`], [`Estimates`] and
//! the flows (workflow invocations and realtime sessions, [`flows`], which share the
//! codes and the dedupe window). Its fields are private: the ledger decides what a
//! record means and calls the methods here, which change them.

mod flows;

pub use flows::{CodeSeries, FlowCredits, FlowTotals, InvocationSeries, SessionSeries};

use rustc_hash::FxHashMap;

use super::recent::Recent;
use super::timing::{Measure, Timings, Untimed};
use super::{
    CodeClass, CodeInfo, CreditSeries, Credits, DedupeWindow, Estimates, FailureKey, FailureSeries,
    LabelOverflow, Limits, LostSeries, MismatchSeries, Price, RestoreError, SavedWindows, Seen,
    TaskSeries, Totals, Unpriced, BATCH, INVALID_MODEL, OTHER, UNKNOWN_MODEL,
};
use crate::classify::{Category, CreditRule, NormalizedCode, Retry, Table};
use crate::labels::model_label;
use crate::record::{Status, TaskRecord};

/// Interns label values up to a cap, folding the rest into `other`.
#[derive(Debug, Default)]
struct Interner {
    ids: FxHashMap<String, u32>,
    names: Vec<String>,
    /// Values that do not count against the cap (sentinels, the table's codes).
    exempt: usize,
}

impl Interner {
    fn with_exempt<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut i = Interner::default();
        for v in values {
            i.force(v);
        }
        i.exempt = i.names.len();
        i
    }

    fn force(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(value.to_string(), id);
        self.names.push(value.to_string());
        id
    }

    /// The id of `value`, or of `other` (and `true`) when the cap is reached.
    fn get(&mut self, value: &str, cap: usize) -> (u32, bool) {
        if let Some(&id) = self.ids.get(value) {
            return (id, false);
        }
        if self.names.len() - self.exempt >= cap {
            return (self.ids[OTHER], true);
        }
        (self.force(value), false)
    }
}

/// Task outcomes: the counters, the label interning behind them and the dedupe window.
#[derive(Debug)]
pub(super) struct Outcomes {
    dedupe: DedupeWindow,
    codes: Interner,
    code_info: Vec<CodeInfo>,
    models: Interner,
    tasks: FxHashMap<(Status, u32), u64>,
    failures: FxHashMap<FailureKey, u64>,
    /// Credits of counted tasks by `(status, model)`.
    credits: FxHashMap<(Status, u32), Credits>,
    credits_lost: FxHashMap<(u32, u32), f64>,
    /// `(code, the code's credit rule)`: see the ledger's module doc.
    cost_mismatches: FxHashMap<(u32, CreditRule), u64>,
    invalid_numbers: u64,
    credits_unpriced: Unpriced,
    unknown_failure_codes: u64,
    label_overflow: LabelOverflow,
    /// How long the counted tasks took.
    timing: Timings,
    /// The last failed tasks of each code.
    recent: Recent,
    /// Runway's estimates of the tasks not yet counted.
    estimates: Estimates,
    /// Workflow invocations and realtime sessions.
    flows: flows::Flows,
}

impl Outcomes {
    /// No outcome yet: the table's codes interned, every known series at 0.
    pub(super) fn new(table: &Table, limits: Limits) -> Outcomes {
        let codes = Interner::with_exempt(
            [crate::classify::NONE, crate::classify::INVALID, OTHER]
                .into_iter()
                .chain(table.known_codes().iter().map(String::as_str)),
        );
        let mut outcomes = Outcomes {
            dedupe: DedupeWindow::new(limits.dedupe_window),
            codes,
            code_info: Vec::new(),
            models: Interner::with_exempt([UNKNOWN_MODEL, INVALID_MODEL, OTHER]),
            tasks: FxHashMap::default(),
            failures: FxHashMap::default(),
            credits: FxHashMap::default(),
            credits_lost: FxHashMap::default(),
            cost_mismatches: FxHashMap::default(),
            invalid_numbers: 0,
            credits_unpriced: Unpriced::default(),
            unknown_failure_codes: 0,
            label_overflow: LabelOverflow::default(),
            timing: Timings::new(limits.dedupe_window),
            recent: Recent::default(),
            estimates: Estimates::default(),
            flows: flows::Flows::default(),
        };
        outcomes.sync_code_info(table);
        outcomes.export_zeroes();
        outcomes
    }

    /// Takes a new table and limits (a reload): counters keep their values and series;
    /// codes are classified by the new table from now on.
    pub(super) fn reconfigure(&mut self, table: &Table, limits: Limits) {
        self.dedupe.set_capacity(limits.dedupe_window);
        self.timing.set_window(limits.dedupe_window);
        self.code_info.clear();
        self.sync_code_info(table);
        for code in table.known_codes() {
            self.codes.force(code);
        }
        self.sync_code_info(table);
        self.export_zeroes();
    }

    /// Classifies interned codes that have no info yet.
    fn sync_code_info(&mut self, table: &Table) {
        for label in &self.codes.names[self.code_info.len()..] {
            let class = if label == OTHER || label == crate::classify::INVALID {
                table.classify(&NormalizedCode::Invalid)
            } else {
                table.classify_code(label)
            };
            self.code_info.push(CodeInfo {
                label: label.clone(),
                category: class.category,
                retry: class.retry,
                credits: class.credits,
            });
        }
    }

    /// Every known status and failure code at 0, with `model="unknown"`, so that `rate()`
    /// and alerts work before the first task.
    fn export_zeroes(&mut self) {
        let model = self.models.ids[UNKNOWN_MODEL];
        for status in Status::TERMINAL {
            self.tasks.entry((status, model)).or_default();
            self.credits.entry((status, model)).or_default();
        }
        for (code, info) in self.code_info.iter().enumerate() {
            if info.label == OTHER {
                continue;
            }
            let key = FailureKey {
                code: code as u32,
                category: info.category,
                retry: info.retry,
                credits: info.credits,
                model,
            };
            self.failures.entry(key).or_default();
            if info.credits == CreditRule::Lost {
                self.credits_lost.entry((code as u32, model)).or_default();
            }
            if info.credits != CreditRule::Unknown {
                let key = (code as u32, info.credits);
                self.cost_mismatches.entry(key).or_default();
            }
        }
        self.export_flow_zeroes();
    }

    pub(super) fn dedupe(&self) -> &DedupeWindow {
        &self.dedupe
    }

    pub(super) fn code_info(&self, id: u32) -> &CodeInfo {
        &self.code_info[id as usize]
    }

    pub(super) fn model_name(&self, id: u32) -> &str {
        &self.models.names[id as usize]
    }

    /// The ids whose queue time was observed.
    pub(super) fn started_ids(&self) -> &DedupeWindow {
        self.timing.started_ids()
    }

    /// Task ids whose estimate is held until they are counted.
    pub(super) fn estimates(&self) -> &Estimates {
        &self.estimates
    }

    /// Holds Runway's estimate of a task not yet counted, by its id's hash.
    pub(super) fn hold_estimate(&mut self, hash: u64, credits: f64) {
        self.estimates.insert(hash, credits);
    }

    /// The estimate held for an id's hash, let go.
    pub(super) fn take_estimate(&mut self, hash: u64) -> Option<f64> {
        self.estimates.take(hash)
    }

    /// Whether the wall clock moved by a second or more since last noted.
    pub(super) fn clock_stepped(&self, now: crate::clock::Now) -> bool {
        self.recent.stepped(now)
    }

    /// Notes a step of the wall clock (see [`Outcomes::clock_stepped`]).
    pub(super) fn note_clock(&mut self, now: crate::clock::Now) {
        self.recent.set_step(now);
    }

    /// Enters a counted task's id into the dedupe window: whether it was new there.
    pub(super) fn mark_counted(&mut self, id: &str) -> bool {
        self.dedupe.insert(id)
    }

    /// Puts a batch's ids (hashes, with their record's status) through the dedupe window,
    /// warmed first: for a terminal record, whether it is its task's first; for a
    /// `RUNNING` one, whether its task was not counted yet, at its place in the batch;
    /// `true` for a record without a hash.
    pub(super) fn mark_batch(&mut self, hashes: [Option<(u64, Status)>; BATCH]) -> [bool; BATCH] {
        let dedupe = &mut self.dedupe;
        dedupe.warm(hashes.iter().flatten().map(|(h, _)| *h));
        hashes.map(|h| match h {
            Some((h, status)) if status.is_terminal() => dedupe.insert_hash(h),
            Some((h, _)) => !dedupe.contains_hash(h),
            None => true,
        })
    }

    /// Counts a record whose credits, cost or duration field was not a number in range
    /// (`invalid`), or nothing.
    pub(super) fn count_invalid_number(&mut self, invalid: bool) {
        self.invalid_numbers += invalid as u64;
    }

    /// Counts a task of `status` under its model (interned under `max_models`): the
    /// model's id.
    pub(super) fn count_task(&mut self, status: Status, model: &str, max_models: usize) -> u32 {
        let (model, folded) = self.models.get(model, max_models);
        self.label_overflow.model += folded as u64;
        *self.tasks.entry((status, model)).or_default() += 1;
        model
    }

    /// Times a counted task's end (`end`: its time, `None` if unknown); a deleted task
    /// of unknown end is untimed, reason `deleted`.
    pub(super) fn time_end(
        &mut self,
        record: &TaskRecord<'_>,
        model: u32,
        seen: Seen,
        deleted: bool,
    ) {
        match (deleted, seen.of(record)) {
            (true, None) => self.timing.untimed(Measure::Duration, Untimed::Deleted),
            (_, end) => self.timing.ended(record, model, end, seen.now),
        }
    }

    /// Times the first `RUNNING` record of a task (its queue time): once per task id,
    /// so never for a record without one, nor for a task already counted as ended
    /// (`not_counted`: whether it was not, when the caller looked already).
    pub(super) fn time_start(
        &mut self,
        record: &TaskRecord<'_>,
        not_counted: Option<bool>,
        seen: Seen,
        max_models: usize,
    ) {
        let Some(id) = record.id.as_deref() else {
            self.timing.untimed(Measure::Queue, Untimed::NoId);
            return;
        };
        let counted = !not_counted.unwrap_or_else(|| !self.dedupe.contains(id));
        if counted || !self.timing.first_run(id) {
            return;
        }
        let name = model_label(record.model.as_deref());
        let (model, _) = self.models.get(name, max_models);
        self.timing
            .started(record, model, seen.of(record), seen.now);
    }

    /// Counts a FAILED task of `model` by its code, and keeps it among the recent
    /// failures; returns the code's id and credit rule.
    pub(super) fn count_failure(
        &mut self,
        table: &Table,
        record: &TaskRecord<'_>,
        model: u32,
        end: Option<f64>,
        max_codes: usize,
    ) -> (u32, CreditRule) {
        let code = record.failure_code.normalize();
        let (code_id, folded) = self.intern_code(table, &code, max_codes);
        // The interned code's classification is cached; a code folded into "other"
        // keeps its own.
        let (category, retry, credits) = if folded {
            let class = table.classify(&code);
            (class.category, class.retry, class.credits)
        } else {
            let info = &self.code_info[code_id as usize];
            (info.category, info.retry, info.credits)
        };
        self.unknown_failure_codes += (category == Category::Unknown) as u64;
        let key = FailureKey {
            code: code_id,
            category,
            retry,
            credits,
            model,
        };
        *self.failures.entry(key).or_default() += 1;
        // Both clocks read again here, not for every record: a failure is rarer.
        let now = crate::clock::Now::read();
        let name = model_label(record.model.as_deref());
        (self.recent).failed(code_id, record.id.as_deref(), name, end, now);
        (code_id, credits)
    }

    /// Interns a code under `max_codes` (a folded one bumps `label_overflow`); returns
    /// its id and whether it was folded into `other`.
    fn intern_code(
        &mut self,
        table: &Table,
        code: &NormalizedCode<'_>,
        max_codes: usize,
    ) -> (u32, bool) {
        let (code_id, folded) = self.codes.get(code.as_str(), max_codes);
        self.label_overflow.failure_code += folded as u64;
        if code_id as usize >= self.code_info.len() {
            self.sync_code_info(table);
        }
        (code_id, folded)
    }

    /// Adds a counted task's credits as `price` says (an unknown price counts it
    /// unpriced, by status); returns the credits charged.
    pub(super) fn add_credits(&mut self, status: Status, model: u32, price: Price) -> f64 {
        let credits = match price {
            Price::Reported(c) | Price::Estimated(c, _) => c,
            Price::Nothing => 0.0,
            Price::Unknown => {
                let unpriced = &mut self.credits_unpriced;
                match status {
                    Status::Failed => unpriced.failed += 1,
                    Status::Cancelled => unpriced.cancelled += 1,
                    _ => unpriced.succeeded += 1,
                }
                0.0
            }
        };
        let c = self.credits.entry((status, model)).or_default();
        c.charged += credits;
        if let Price::Estimated(e, origin) = price {
            c.estimated.add(origin, e);
        }
        credits
    }

    /// A FAILED task's `credits` (charged) are lost to its code; a reported `cost` that
    /// contradicts the code's `rule` counts a mismatch.
    pub(super) fn count_lost(
        &mut self,
        (code, rule): (u32, CreditRule),
        model: u32,
        credits: f64,
        cost: Option<f64>,
    ) {
        if credits > 0.0 {
            *self.credits_lost.entry((code, model)).or_default() += credits;
        }
        let contradicts = match rule {
            CreditRule::Lost => cost == Some(0.0),
            CreditRule::Refunded => cost.is_some_and(|c| c > 0.0),
            CreditRule::Unknown => false,
        };
        if contradicts {
            *self.cost_mismatches.entry((code, rule)).or_default() += 1;
        }
    }

    /// The outcomes' part of the totals, labels resolved and sorted; the other parts'
    /// fields are left at their defaults.
    pub(super) fn totals(&self) -> Totals {
        let model = |id: &u32| self.model_name(*id).to_string();
        let model_id = |id: u32| self.model_name(id).to_string();
        let code = |id: &u32| self.code_info(*id).label.clone();
        let mut t = Totals {
            tasks: (self.tasks.iter())
                .map(|((s, m), v)| TaskSeries {
                    status: s.as_str().into(),
                    model: model(m),
                    tasks: *v,
                })
                .collect(),
            failures: (self.failures.iter())
                .map(|(k, v)| FailureSeries {
                    failure_code: code(&k.code),
                    category: k.category.as_str().into(),
                    retry: k.retry.as_str().into(),
                    credits: k.credits.as_str().into(),
                    model: model(&k.model),
                    value: *v,
                })
                .collect(),
            credits: (self.credits.iter())
                .map(|((s, m), c)| CreditSeries {
                    status: s.as_str().into(),
                    model: model(m),
                    charged: c.charged,
                    estimated: c.estimated.total(),
                    estimated_by: Some(c.estimated),
                })
                .collect(),
            credits_lost: (self.credits_lost.iter())
                .map(|((c, m), v)| LostSeries {
                    failure_code: code(c),
                    model: model(m),
                    credits: *v,
                })
                .collect(),
            cost_mismatches: (self.cost_mismatches.iter())
                .map(|((c, rule), v)| MismatchSeries {
                    failure_code: code(c),
                    credits: rule.as_str().into(),
                    tasks: *v,
                })
                .collect(),
            invalid_numbers: self.invalid_numbers,
            credits_unpriced: self.credits_unpriced,
            unknown_failure_codes: self.unknown_failure_codes,
            label_overflow: self.label_overflow,
            dedupe_ids: self.dedupe.len() as u64,
            durations: self.timing.durations(model_id),
            queues: self.timing.queues(model_id),
            untimed: self.timing.untimed_series(),
            recent: self.recent.totals(|c| {
                let info = self.code_info(c);
                let class = CodeClass {
                    category: info.category,
                    retry: info.retry,
                    credits: info.credits,
                };
                (info.label.clone(), class)
            }),
            estimates: self.estimates.saved(),
            flows: self.flow_totals(),
            ..Totals::default()
        };
        t.tasks
            .sort_by(|a, b| (&a.status, &a.model).cmp(&(&b.status, &b.model)));
        t.failures.sort_by(|a, b| {
            (&a.failure_code, &a.model, &a.category).cmp(&(&b.failure_code, &b.model, &b.category))
        });
        t.credits
            .sort_by(|a, b| (&a.status, &a.model).cmp(&(&b.status, &b.model)));
        t.cost_mismatches.sort();
        t.credits_lost
            .sort_by(|a, b| (&a.failure_code, &a.model).cmp(&(&b.failure_code, &b.model)));
        t
    }

    /// Takes saved windows of hashes (oldest first): the dedupe window and the ids whose
    /// queue time was observed.
    pub(super) fn restore_windows(&mut self, windows: SavedWindows) {
        for h in windows.dedupe {
            self.dedupe.insert_hash(h);
        }
        self.timing.restore_started(windows.started);
    }

    /// Adds the outcomes' part of saved totals; stops at the first value that is not
    /// valid. Saved label values are kept even past a cap lowered since they were
    /// saved; timed models and recent failures' codes fold under the caps.
    pub(super) fn add_saved(
        &mut self,
        t: &Totals,
        table: &Table,
        limits: Limits,
    ) -> Result<(), RestoreError> {
        self.add_saved_counts(t)?;
        self.estimates.restore(&t.estimates).map_err(RestoreError)?;
        // Timed models and recent failures' codes are those of the restored counters,
        // or fold under the caps: a saved file cannot grow them past what counting can.
        let (models, max_models) = (&mut self.models, limits.max_models);
        (self.timing)
            .restore(&t.durations, &t.queues, &t.untimed, |m| {
                models.get(m, max_models).0
            })
            .map_err(RestoreError)?;
        let codes = &self.codes;
        let known = |c: &str| codes.ids.get(c).copied();
        (self.recent).restore(&t.recent, known, crate::clock::Now::read());
        self.add_saved_flows(&t.flows)?;
        self.sync_code_info(table);
        Ok(())
    }

    /// Adds saved counters of tasks, failures and credits.
    fn add_saved_counts(&mut self, t: &Totals) -> Result<(), RestoreError> {
        let bad = |what: &str, v: &str| RestoreError(format!("{what} {v:?}"));
        let status = |s: &str| {
            Status::read(s)
                .filter(|s| s.is_terminal())
                .ok_or_else(|| bad("status", s))
        };
        for series in &t.tasks {
            let key = (status(&series.status)?, self.models.force(&series.model));
            *self.tasks.entry(key).or_default() += series.tasks;
        }
        for f in &t.failures {
            let key = FailureKey {
                code: self.codes.force(&f.failure_code),
                category: Category::parse(&f.category)
                    .ok_or_else(|| bad("category", &f.category))?,
                retry: Retry::parse(&f.retry).ok_or_else(|| bad("retry", &f.retry))?,
                credits: CreditRule::parse(&f.credits).ok_or_else(|| bad("credits", &f.credits))?,
                model: self.models.force(&f.model),
            };
            *self.failures.entry(key).or_default() += f.value;
        }
        for series in &t.credits {
            let key = (status(&series.status)?, self.models.force(&series.model));
            let c = self.credits.entry(key).or_default();
            c.charged += series.charged;
            c.estimated.add_all(&series.by_origin());
        }
        for series in &t.cost_mismatches {
            let rule = CreditRule::parse(&series.credits)
                .ok_or_else(|| bad("credits", &series.credits))?;
            let key = (self.codes.force(&series.failure_code), rule);
            *self.cost_mismatches.entry(key).or_default() += series.tasks;
        }
        self.invalid_numbers += t.invalid_numbers;
        for series in &t.credits_lost {
            let key = (
                self.codes.force(&series.failure_code),
                self.models.force(&series.model),
            );
            *self.credits_lost.entry(key).or_default() += series.credits;
        }
        self.credits_unpriced.add(&t.credits_unpriced);
        self.label_overflow.add(&t.label_overflow);
        self.unknown_failure_codes += t.unknown_failure_codes;
        Ok(())
    }
}
