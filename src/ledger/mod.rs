//! The ledger: counting semantics, in one place.
//!
//! - A task is *counted* once, when its first *terminal* record (`SUCCEEDED`, `FAILED`,
//!   `CANCELLED`) is seen. A later terminal record with the same id is a *duplicate*;
//!   `PENDING`, `THROTTLED` and `RUNNING` records are *non-terminal*. A record without an
//!   id cannot be deduplicated and is counted each time.
//! - The *dedupe window* remembers the ids of the last `dedupe_window` counted tasks, as
//!   64-bit xxh3 hashes (a stable hash, so the window can be persisted): memory is about
//!   `dedupe_window x 19` bytes whatever the input, and two distinct ids collide with a
//!   probability of about `dedupe_window / 2^64` per new id.
//! - Every line read ends in exactly one *result* (`counted`, `duplicate`,
//!   `non_terminal`, `rejected`), and every rejected line has one parse-error reason, so
//!   the results add up to the lines read.
//! - *Credits.* A counted task's *charged* credits are its own reported cost
//!   (`cost.credits`) when the record has it, else the event's credits field, for every
//!   terminal status; else an *estimate* (SUCCEEDED tasks, and FAILED ones whose code's
//!   documented rule is `lost`): first Runway's own, the task's last `estimatedCost`
//!   (the terminal record's, else the last one [`Ledger::estimate_seen`] took: from a
//!   non-terminal record, a task-list line, the API's answers), then the pricing
//!   table's; else the task is *unpriced*. What FAILED tasks were charged is also *lost*
//!   (paid for, nothing produced). Estimates are counted apart as well, by [`Origin`],
//!   so exact and estimated credits can be told apart. Estimates of tasks not yet
//!   counted are held in [`Estimates`] (bounded, evictions counted). A reported
//!   cost that contradicts the code's rule (a `lost` code that cost 0, a `refunded` one
//!   that cost more) is counted by code: evidence to correct the table with.
//! - *Deleted tasks.* Runway forgets a task once it is deleted (`DELETE /v1/tasks/{id}`,
//!   which cancels it if it has not ended). A polled task the API answers 404 for after
//!   it was seen `PENDING`, `THROTTLED` or `RUNNING` (the [`ApiBook`] keeps how far each
//!   got, committed with the state), or one whose `DELETE` is seen after it was seen
//!   not ended (polled, its `RUNNING` record seen, or its estimate held), is counted
//!   `CANCELLED` like a terminal record (once, its id in the dedupe window), charged its
//!   last `estimatedCost` (else the table's estimate, as estimated credits) if it was
//!   seen running, nothing otherwise. A 404 for a task never seen is `not_found`; a
//!   `DELETE` of a task never seen not ended (an old finished task) is no outcome.
//! - Label values are bounded: failure codes are normalised ([`crate::classify`]); model
//!   names are checked; past `max_failure_codes` codes (beyond the table's own) or
//!   `max_models` models, new values fold into `other` and bump `label_overflow`.
//!
//! The ledger is plain data: the metrics module publishes its totals; it never touches
//! Prometheus itself.

mod api_book;
mod checkpoints;
mod created;
mod dedupe;
#[cfg(test)]
mod deleted_tests;
mod estimates;
#[cfg(test)]
mod estimates_tests;
#[cfg(test)]
mod flows_tests;
mod http_errors;
mod outcomes;
mod own;
mod proxy_book;
mod recent;
mod timing;

pub use api_book::ApiBook;
pub use checkpoints::Checkpoints;
pub use created::{CreatedBook, CreatedTask, SavedCreated};
pub use dedupe::DedupeWindow;
#[cfg(test)]
use estimates::MAX_ESTIMATES;
pub use estimates::{Estimates, SavedEstimate, SavedEstimates};
pub use http_errors::{HttpError, RECENT_HTTP_ERRORS};
pub use outcomes::{CodeSeries, FlowCredits, FlowTotals, InvocationSeries, SessionSeries};
pub use own::OwnCounters;
pub use proxy_book::{
    CreatedSeries, LatencySeries, ProxyBook, ProxyErrorSeries, ProxyRequestSeries, RequestKey,
    LATENCY_BUCKETS,
};
pub use recent::{CodeClass, FailedTask, RecentFailures, Slot, RECENT_TASKS};
pub use timing::{
    DurationSeries, Histogram, QueueSeries, UntimedSeries, CLOCK_SKEW, DURATION_BUCKETS,
    QUEUE_BUCKETS,
};

use std::sync::Arc;

use crate::classify::{Category, CreditRule, Retry, Table};
use crate::pricing::Pricing;
use crate::record::{ParseError, RawTime, Status, TaskRecord};
use outcomes::Outcomes;

pub use crate::labels::{model_label, INVALID_MODEL, OTHER, UNKNOWN_MODEL};

/// What became of one line. Label values of `runway_exporter_records_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineResult {
    Counted,
    Duplicate,
    NonTerminal,
    Rejected(ParseError),
    /// A task id from the task list, now polled.
    Tracked,
    /// A task id that another shard polls.
    OtherShard,
    /// A polled task the API does not know (404).
    NotFound,
    /// A polled task still not finished after `max_task_age`.
    Expired,
    /// A task id not polled because `max_tracked` tasks are polled already.
    OverLimit,
}

/// What became of a line, without the reason of a rejection: the `result` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultKind {
    Counted,
    Duplicate,
    NonTerminal,
    Rejected,
    Tracked,
    OtherShard,
    NotFound,
    Expired,
    OverLimit,
}

crate::labels::label_enum!(ResultKind {
    Counted => "counted",
    Duplicate => "duplicate",
    NonTerminal => "non_terminal",
    Rejected => "rejected",
    Tracked => "tracked",
    OtherShard => "other_shard",
    NotFound => "not_found",
    Expired => "expired",
    OverLimit => "over_limit",
});

/// Number of [`ResultKind`]s.
pub const RESULT_KINDS: usize = ResultKind::ALL.len();

impl LineResult {
    pub fn kind(self) -> ResultKind {
        match self {
            LineResult::Counted => ResultKind::Counted,
            LineResult::Duplicate => ResultKind::Duplicate,
            LineResult::NonTerminal => ResultKind::NonTerminal,
            LineResult::Rejected(_) => ResultKind::Rejected,
            LineResult::Tracked => ResultKind::Tracked,
            LineResult::OtherShard => ResultKind::OtherShard,
            LineResult::NotFound => ResultKind::NotFound,
            LineResult::Expired => ResultKind::Expired,
            LineResult::OverLimit => ResultKind::OverLimit,
        }
    }

    /// The kind's place in [`ResultKind::ALL`] (and in `SourceTotals::results`).
    pub fn index(self) -> usize {
        self.kind() as usize
    }
}

/// A task the API source polls until it ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiTask {
    pub id: String,
    /// When its id was read from the task list (Unix seconds).
    pub added_at: f64,
    pub model: Option<String>,
    pub duration: Option<f64>,
    /// The API's `estimatedCost.credits` for the task while it runs.
    pub estimated_cost: Option<f64>,
    /// How far the API's answers saw it get (`None`: no answer yet): what it is charged
    /// if it is deleted before it ends.
    pub reached: Option<Reached>,
    /// Its `createdAt` (Unix seconds), from the API's answers.
    pub created_at: Option<f64>,
}

/// How far a polled task was seen to get before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// `PENDING` or `THROTTLED`: waiting for a slot, so never charged.
    Queued,
    /// `RUNNING`: a task cancelled while running is charged (Runway does not refund it).
    Running,
}

impl Reached {
    /// What an answer with `status` shows; a `RUNNING` task stays `Running` after.
    fn after(before: Option<Reached>, status: Status) -> Option<Reached> {
        match status {
            Status::Running => Some(Reached::Running),
            Status::Pending | Status::Throttled => before.or(Some(Reached::Queued)),
            _ => before,
        }
    }
}

/// What `GET /v1/organization` said last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Organization {
    pub credit_balance: f64,
    pub models: Vec<ModelLimits>,
    /// The tier's `maxMonthlyCreditSpend`.
    pub max_monthly_credit_spend: Option<f64>,
}

/// One model's generations today and its tier's limits; a limit of `None` is no limit
/// (the API's `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLimits {
    pub model: String,
    pub daily_generations: f64,
    pub max_daily_generations: Option<f64>,
    pub max_concurrent_generations: Option<f64>,
}

/// What `POST /v1/organization/usage` said last: Runway's own count of the credits used
/// in the current UTC day, by model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    pub models: Vec<ModelUsage>,
}

/// Credits one model used.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUsage {
    pub model: String,
    pub credits: f64,
}

/// How many records [`Ledger::count_batch`] looks up in the dedupe window at once.
pub const BATCH: usize = 32;

/// Ledger bounds, from the `[ledger]` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub dedupe_window: usize,
    pub max_failure_codes: usize,
    pub max_models: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            dedupe_window: 1_000_000,
            max_failure_codes: 100,
            max_models: 128,
        }
    }
}

/// Interned failure-code label value with its classification.
#[derive(Debug, Clone)]
pub struct CodeInfo {
    pub label: String,
    pub category: Category,
    pub retry: Retry,
    pub credits: CreditRule,
}

/// Key of `runway_task_failures_total`: a code folded into `other` keeps the
/// classification of its real code, so `other` may appear with several categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailureKey {
    pub code: u32,
    pub category: Category,
    pub retry: Retry,
    pub credits: CreditRule,
    pub model: u32,
}

/// Per-source totals of the self metrics. `files_tracked`, `last_record_unix` and `up`
/// are gauges of the running process: saved, but not restored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceTotals {
    pub name: String,
    pub results: [u64; RESULT_KINDS],
    pub parse_errors: [u64; ParseError::ALL.len()],
    pub read_bytes: u64,
    pub rotations: u64,
    pub truncations: u64,
    pub files_tracked: u64,
    pub file_limit_hits: u64,
    pub last_record_unix: f64,
    pub up: bool,
}

/// Where reading a file has got to, committed with the counters it produced.
///
/// `offset` is the end of the last complete line counted (a partial line after it is
/// read again after a restart); `skipping` says the bytes up to `offset` are the start
/// of an over-long line whose rest is to be skipped. The *fingerprint* is the xxh3
/// hash of the file's first `fp_len` bytes (at most [`FINGERPRINT_BYTES`]): with device
/// and inode it is the file's identity, so that a new file on a reused inode is not
/// taken for the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The source that follows the file (`file`, `task_list`).
    pub source: String,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub fp_len: u32,
    pub fp: u64,
    pub offset: u64,
    pub skipping: bool,
}

/// Bytes at the start of a file that make its fingerprint.
pub const FINGERPRINT_BYTES: usize = 256;

/// Identifies a followed file in [`Checkpoints`].
pub type FileKey = u64;

/// A failure series with its labels resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureSeries {
    pub failure_code: String,
    pub category: String,
    pub retry: String,
    pub credits: String,
    pub model: String,
    pub value: u64,
}

/// Every counter of the ledger with its labels resolved: what is committed to the
/// state file (converted to the file's own types, `state::format`: a field added here
/// goes there too), what is published, and what a restart restores. Every count has a
/// name: no tuples, no positional arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub tasks: Vec<TaskSeries>,
    pub failures: Vec<FailureSeries>,
    /// Credits charged to the counted tasks, and the estimated part of them.
    pub credits: Vec<CreditSeries>,
    pub credits_lost: Vec<LostSeries>,
    /// FAILED tasks whose reported cost contradicts their code's credit rule.
    pub cost_mismatches: Vec<MismatchSeries>,
    /// Records with a credits, cost or duration field that was not a number in range.
    pub invalid_numbers: u64,
    pub credits_unpriced: Unpriced,
    pub unknown_failure_codes: u64,
    pub label_overflow: LabelOverflow,
    pub dead_letter: DeadLetters,
    pub sources: Vec<SourceTotals>,
    pub dedupe_ids: u64,
    pub api_requests: Vec<RequestSeries>,
    pub api_tasks_tracked: u64,
    pub organization: Option<Organization>,
    pub usage: Option<Usage>,
    /// Sum of the estimated costs of the tasks being polled.
    pub api_credits_in_flight: f64,
    /// How long tasks took, from `createdAt` to their terminal record.
    pub durations: Vec<DurationSeries>,
    /// How long tasks waited, from `createdAt` to their first `RUNNING` record.
    pub queues: Vec<QueueSeries>,
    /// Tasks not timed, by measure and reason.
    pub untimed: Vec<UntimedSeries>,
    /// The last failed tasks of each failure code (the status page's).
    pub recent: Vec<RecentFailures>,
    /// Runway's estimates of tasks not yet counted, and how many were evicted.
    pub estimates: SavedEstimates,
    /// Workflow invocations and realtime sessions (`flows`).
    pub flows: FlowTotals,
    /// The application's requests the proxy passed on, by endpoint, method and code.
    pub proxy_requests: Vec<ProxyRequestSeries>,
    /// The upstream's latency of those requests, by endpoint.
    pub proxy_latency: Vec<LatencySeries>,
    /// Tasks created through the proxy, by create endpoint and model.
    pub proxy_created: Vec<CreatedSeries>,
    /// The proxy's error answers, by endpoint, code and retry advice.
    pub proxy_errors: Vec<ProxyErrorSeries>,
    /// The last HTTP error answers the proxy passed back (the status page's).
    pub proxy_recent_errors: Vec<HttpError>,
    /// The tasks created through the proxy and not yet seen to end.
    pub proxy_open: SavedCreated,
}

/// Counted tasks of one status and model.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSeries {
    pub status: String,
    pub model: String,
    pub tasks: u64,
}

/// Credits charged to the counted tasks of one status and model.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditSeries {
    pub status: String,
    pub model: String,
    pub charged: f64,
    /// The part of `charged` that is an estimate: `estimated_by` summed (the state file
    /// keeps it for older releases, which read only this).
    pub estimated: f64,
    /// `estimated` by origin. Absent in a file written before the split: all of
    /// `estimated` is then counted as the pricing table's.
    pub estimated_by: Option<EstimatedBy>,
}

impl CreditSeries {
    /// The estimated credits by origin (see `estimated_by`).
    pub fn by_origin(&self) -> EstimatedBy {
        self.estimated_by.unwrap_or(EstimatedBy {
            estimated_cost: 0.0,
            pricing: self.estimated,
        })
    }
}

/// Where an estimate came from: the `origin` label of `runway_credits_estimated_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Runway's own `estimatedCost` for the task.
    EstimatedCost,
    /// The pricing table.
    Pricing,
}

crate::labels::label_enum!(Origin {
    EstimatedCost => "estimated_cost",
    Pricing => "pricing",
});

/// Estimated credits by [`Origin`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EstimatedBy {
    pub estimated_cost: f64,
    pub pricing: f64,
}

impl EstimatedBy {
    pub fn get(&self, origin: Origin) -> f64 {
        match origin {
            Origin::EstimatedCost => self.estimated_cost,
            Origin::Pricing => self.pricing,
        }
    }

    pub fn total(&self) -> f64 {
        self.estimated_cost + self.pricing
    }

    fn add(&mut self, origin: Origin, credits: f64) {
        match origin {
            Origin::EstimatedCost => self.estimated_cost += credits,
            Origin::Pricing => self.pricing += credits,
        }
    }

    fn add_all(&mut self, o: &EstimatedBy) {
        self.estimated_cost += o.estimated_cost;
        self.pricing += o.pricing;
    }
}

/// Credits FAILED tasks of one code and model were charged.
#[derive(Debug, Clone, PartialEq)]
pub struct LostSeries {
    pub failure_code: String,
    pub model: String,
    pub credits: f64,
}

/// FAILED tasks of one code whose cost contradicts the code's credit rule (`credits`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MismatchSeries {
    pub failure_code: String,
    pub credits: String,
    pub tasks: u64,
}

/// Requests to the Runway API of one endpoint answered with one code.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSeries {
    pub endpoint: String,
    pub code: String,
    pub requests: u64,
}

/// Terminal tasks whose credits neither the record nor the pricing table gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpriced {
    pub succeeded: u64,
    /// FAILED tasks whose code loses its credits.
    pub failed: u64,
    /// Tasks deleted while running (CANCELLED, not refunded).
    pub cancelled: u64,
}

/// Records whose label value was folded into `other`, by label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelOverflow {
    pub failure_code: u64,
    pub model: u64,
}

/// Rejected lines written to the dead-letter file, or that could not be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetters {
    pub written: u64,
    pub failed: u64,
}

impl Unpriced {
    fn add(&mut self, o: &Unpriced) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
    }
}

impl LabelOverflow {
    fn add(&mut self, o: &LabelOverflow) {
        self.failure_code += o.failure_code;
        self.model += o.model;
    }
}

impl DeadLetters {
    fn add(&mut self, o: &DeadLetters) {
        self.written += o.written;
        self.failed += o.failed;
    }
}

/// A saved ledger that cannot be restored.
#[derive(Debug, thiserror::Error)]
#[error("saved counters are not valid: {0}")]
pub struct RestoreError(String);

/// The saved windows of hashes, oldest first: the dedupe window and the ids whose
/// queue time was observed.
#[derive(Debug, Default)]
pub struct SavedWindows {
    pub dedupe: Vec<u64>,
    pub started: Vec<u64>,
}

/// Identifies a source registered with [`Ledger::add_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(pub usize);

/// Counters of task outcomes and of the exporter itself, as plain numbers.
///
/// What a commit holds is in [`Committed`]'s parts, behind [`Tracked`]: read through
/// `Deref` (`ledger.checkpoints`), changed only through [`Ledger::own_mut`],
/// [`Ledger::checkpoints_mut`] and the methods here, every one of which goes through
/// `Tracked`'s `DerefMut`. So every change marks the ledger changed by construction,
/// and a part added to `Committed` is covered without a line more. A value kept outside it is not committed, with one
/// documented exception, `scanned_at`, which rides along with the next commit. A debug
/// build checks at every commit it skips that the state is indeed unchanged
/// ([`crate::pipeline::Pipeline::commit`]), so a test that changes a committed value
/// some other way fails.
#[derive(Debug)]
pub struct Ledger {
    table: Arc<Table>,
    pricing: Arc<Pricing>,
    limits: Limits,
    book: Tracked<Committed>,
    /// When the file patterns were last expanded (Unix seconds): a file not among the
    /// positions was not there then. Committed with the rest but never a reason for a
    /// commit: a rescan that finds the same files changes nothing that matters.
    scanned_at: std::collections::BTreeMap<String, f64>,
}

/// A value whose every mutable borrow counts as a change: [`Tracked::generation`]
/// grows with each `deref_mut`, so no writer can forget to say it changed something. A
/// writer that wants a no-op to stay one reads first (through `Deref`).
#[derive(Debug, Default)]
pub struct Tracked<T> {
    value: T,
    generation: u64,
}

impl<T> Tracked<T> {
    /// A number that grows with every mutable borrow.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl<T> std::ops::Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Tracked<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.generation = self.generation.wrapping_add(1);
        &mut self.value
    }
}

/// Everything the ledger commits (but `scanned_at`), in its owned parts: each part's
/// fields are private and change only through its methods.
#[derive(Debug)]
pub struct Committed {
    /// Task outcomes ([`outcomes`]): the counters, their labels, the dedupe window and
    /// the parts counted with them (timing, recent failures, held estimates, flows).
    outcomes: Outcomes,
    /// The exporter's own counters: per source, and the dead-letter file's.
    pub own: OwnCounters,
    /// The followed files' positions.
    pub checkpoints: Checkpoints,
    /// The API source's tasks, requests and organization.
    pub api: ApiBook,
    /// The proxy's counts of the application's requests.
    pub proxy: ProxyBook,
    /// The tasks created through the proxy and not yet seen to end.
    pub created: CreatedBook,
}

impl std::ops::Deref for Ledger {
    type Target = Committed;
    fn deref(&self) -> &Committed {
        &self.book
    }
}

impl Ledger {
    pub fn new(table: Arc<Table>, pricing: Arc<Pricing>, limits: Limits) -> Ledger {
        let outcomes = Outcomes::new(&table, limits);
        Ledger {
            table,
            pricing,
            limits,
            book: Tracked {
                value: Committed {
                    outcomes,
                    own: OwnCounters::default(),
                    checkpoints: Checkpoints::default(),
                    api: ApiBook::default(),
                    proxy: ProxyBook::default(),
                    created: CreatedBook::default(),
                },
                generation: 0,
            },
            scanned_at: Default::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes new tables and limits (a reload). Counters keep their values and their
    /// series; a code is counted under the new table's classification from now on.
    pub fn reconfigure(&mut self, table: Arc<Table>, pricing: Arc<Pricing>, limits: Limits) {
        self.table = table;
        self.pricing = pricing;
        self.limits = limits;
        self.book.outcomes.reconfigure(&self.table, limits);
    }

    /// Registers a source; its totals start at 0 and `up` false.
    pub fn add_source(&mut self, name: &str) -> SourceId {
        match self.own.sources().iter().position(|s| s.name == name) {
            Some(i) => SourceId(i),
            None => self.book.own.add_source(name),
        }
    }

    /// The exporter's own counters, to change: the ledger counts as changed from then
    /// on. A caller that may find nothing to change reads first (`ledger.own`), so that
    /// a no-op does not cause a commit.
    pub fn own_mut(&mut self) -> &mut OwnCounters {
        &mut self.book.own
    }

    /// The file checkpoints, to change (as [`Ledger::own_mut`]).
    pub fn checkpoints_mut(&mut self) -> &mut Checkpoints {
        &mut self.book.checkpoints
    }

    /// Whether a source runs; a change only when it differs (no commit for a no-op).
    pub fn set_source_up(&mut self, source: SourceId, up: bool) {
        if self.own.source(source).up != up {
            self.book.own.set_up(source, up);
        }
    }

    /// How many files a source follows; a change only when it differs.
    pub fn set_files_tracked(&mut self, source: SourceId, files: u64) {
        if self.own.source(source).files_tracked != files {
            self.book.own.set_files_tracked(source, files);
        }
    }

    /// Stops tracking a file's position; a change only when it was tracked.
    pub fn untrack(&mut self, key: FileKey) {
        if self.checkpoints.get(key).is_some() {
            self.book.checkpoints.untrack(key);
        }
    }

    /// A young file's fingerprint grew; a change only when it differs.
    pub fn set_fingerprint(&mut self, key: FileKey, fp_len: u32, fp: u64) {
        let stale = self
            .checkpoints
            .get(key)
            .is_some_and(|p| (p.fp_len, p.fp) != (fp_len, fp));
        if stale {
            self.book.checkpoints.set_fingerprint(key, fp_len, fp);
        }
    }

    /// Takes the polled tasks of a restored state.
    pub fn restore_api_tasks(&mut self, tasks: impl IntoIterator<Item = ApiTask>) {
        for task in tasks {
            self.book.api.insert(task);
        }
    }

    /// The committed values, changed without the ledger seeing it: for the test of the
    /// check that catches it.
    #[cfg(test)]
    pub(crate) fn committed_unmarked(&mut self) -> &mut Committed {
        &mut self.book.value
    }

    /// A number that changes whenever a committed value may have.
    pub fn generation(&self) -> u64 {
        self.book.generation()
    }

    /// When each source's file patterns were last expanded.
    pub fn scanned_at(&self) -> &std::collections::BTreeMap<String, f64> {
        &self.scanned_at
    }

    /// Notes a source's pattern expansion: committed with the next commit, but not a
    /// reason for one (see the field).
    pub fn note_scan(&mut self, source: &str, at: f64) {
        self.scanned_at.insert(source.to_string(), at);
    }

    pub fn dedupe(&self) -> &DedupeWindow {
        self.outcomes.dedupe()
    }

    pub fn code_info(&self, id: u32) -> &CodeInfo {
        self.outcomes.code_info(id)
    }

    pub fn model_name(&self, id: u32) -> &str {
        self.outcomes.model_name(id)
    }

    pub fn dedupe_len(&self) -> usize {
        self.outcomes.dedupe().len()
    }

    /// Records a result that is not a parsed line's (task-list and API outcomes).
    pub fn record_result(&mut self, source: SourceId, result: LineResult) -> LineResult {
        self.book.own.result(source, result);
        result
    }

    /// Takes a task id from the task list: polled from now on (`Tracked`), or not.
    pub fn track_api_task(
        &mut self,
        source: SourceId,
        task: ApiTask,
        shard: (u64, u64),
        max_tracked: usize,
    ) -> LineResult {
        let result = if xxhash_rust::xxh3::xxh3_64(task.id.as_bytes()) % shard.1 != shard.0 {
            LineResult::OtherShard
        } else if self.api.task(&task.id).is_some() || self.seen(&task.id) {
            LineResult::Duplicate
        } else if self.api.len() >= max_tracked {
            LineResult::OverLimit
        } else {
            self.book.api.insert(task);
            LineResult::Tracked
        };
        self.record_result(source, result)
    }

    /// Ends a polled task: counts its terminal record, or records how it ended
    /// (`NotFound`, `Expired`). Counting and forgetting happen together.
    pub fn end_api_task(
        &mut self,
        source: SourceId,
        id: &str,
        outcome: Result<&TaskRecord<'_>, LineResult>,
        at: Option<f64>,
    ) -> LineResult {
        if self.api.task(id).is_none() {
            return LineResult::Duplicate;
        }
        let last = self.book.api.remove(id).and_then(|t| t.estimated_cost);
        if outcome.is_err() {
            self.take_created(id);
        }
        match outcome {
            Ok(record) => self.count_with(source, record, None, Seen::at(at), last),
            Err(result) => self.record_result(source, result),
        }
    }

    /// Ends a polled task the API answered 404 for. Runway forgets a task once it is
    /// cancelled or deleted, so one seen waiting or running was deleted: it ends
    /// `CANCELLED` as in [`Ledger::task_deleted`], at an unknown time (not timed, reason
    /// `deleted`). One never seen so is an id the API does not know: `NotFound`.
    pub fn api_task_gone(&mut self, source: SourceId, id: &str) -> LineResult {
        match self.api.task(id) {
            None => LineResult::Duplicate,
            Some(t) if t.reached.is_none() => {
                self.end_api_task(source, id, Err(LineResult::NotFound), None)
            }
            Some(_) => self.end_deleted(source, id, None),
        }
    }

    /// A task deleted at `at` (Unix seconds): Runway answered a `DELETE /v1/tasks/{id}`
    /// with success, which cancels a task not yet ended, and also deletes one that ended
    /// long ago. So it is counted `CANCELLED` only when it was seen not ended
    /// ([`Ledger::seen_unended`]) and not counted yet: once (its id enters the dedupe
    /// window), and it is no longer polled. A task counted already is a `Duplicate`
    /// that changes nothing; one the exporter never saw running, or forgot, is not an
    /// outcome at all (`None`: only the request is counted). Its credits are those known
    /// now: a task seen `RUNNING` (polled, or its record seen) is charged its last
    /// `estimatedCost.credits` (else the pricing table's estimate, else it is unpriced),
    /// marked estimated; one seen only waiting or created never ran as far as the
    /// exporter knows, and is charged nothing. Its duration runs from its `createdAt`,
    /// when an answer gave it.
    pub fn task_deleted(&mut self, source: SourceId, id: &str, at: f64) -> Option<LineResult> {
        if !self.seen(id) && !self.seen_unended(id) {
            return None;
        }
        Some(self.end_deleted(source, id, Some(at)))
    }

    /// Whether task `id` was seen not ended, by any source: it is polled, a `RUNNING`
    /// record of it was seen (the queue-time window), it was created through the proxy
    /// and not seen to end, or Runway's estimate is held for it (a non-terminal
    /// record's, a create call's answer through the proxy).
    fn seen_unended(&self, id: &str) -> bool {
        self.api.task(id).is_some()
            || self.created.get(id).is_some()
            || self.outcomes.started_ids().contains(id)
            || self
                .outcomes
                .estimates()
                .get(DedupeWindow::hash(id))
                .is_some()
    }

    /// Ends a deleted task at `at` (`None`: unknown), forgetting it if it is polled. A
    /// task not polled counts as seen running when its `RUNNING` record was seen, and
    /// takes the estimate held for it.
    fn end_deleted(&mut self, source: SourceId, id: &str, at: Option<f64>) -> LineResult {
        let held = self.take_estimate(id);
        let mut task = match self.api.task(id) {
            Some(_) => self.book.api.remove(id).unwrap_or_default(),
            None => ApiTask {
                id: id.to_string(),
                reached: self
                    .outcomes
                    .started_ids()
                    .contains(id)
                    .then_some(Reached::Running),
                estimated_cost: held,
                ..ApiTask::default()
            },
        };
        if let Some(created) = self.take_created(id) {
            task.model = task.model.or(created.model);
        }
        let result = if self.book.outcomes.mark_counted(id) {
            self.count_deleted(&task, at)
        } else {
            LineResult::Duplicate
        };
        self.record_result(source, result)
    }

    /// Counts a deleted task, not counted before, as `CANCELLED` (see
    /// [`Ledger::task_deleted`]).
    fn count_deleted(&mut self, task: &ApiTask, at: Option<f64>) -> LineResult {
        let record = TaskRecord {
            id: Some(std::borrow::Cow::Borrowed(&task.id)),
            status: Status::Cancelled,
            failure_code: crate::record::RawCode::Missing,
            model: task.model.as_deref().map(std::borrow::Cow::Borrowed),
            credits: None,
            duration: task.duration,
            cost: None,
            estimated_cost: task.estimated_cost,
            created_at: task.created_at.map(RawTime::Number),
            timestamp: None,
            invalid_number: false,
            kind: crate::record::RecordKind::Task,
        };
        let price = match task.reached {
            Some(Reached::Running) => task
                .estimated_cost
                .filter(|c| estimates::valid(*c))
                .map(|c| Price::Estimated(c, Origin::EstimatedCost))
                .unwrap_or_else(|| {
                    self.table_price(model_label(task.model.as_deref()), task.duration)
                }),
            _ => Price::Nothing,
        };
        self.count_terminal(&record, Seen::at(at), Ending::Deleted(price))
    }

    /// Takes a polled task's answer that it has not ended, seen at `at` (`None`: it may
    /// have changed long before): its estimated cost, how far it got and its
    /// `createdAt` (for a deletion), and its queue time when it is the task's first
    /// `RUNNING` answer.
    pub fn api_answer(
        &mut self,
        source: SourceId,
        id: &str,
        record: &TaskRecord<'_>,
        at: Option<f64>,
    ) -> LineResult {
        if let Some(credits) = record.estimated_cost {
            self.estimate_seen(id, credits);
        }
        self.note_api_progress(id, record);
        if record.status == Status::Running {
            self.time_start(record, None, Seen::at(at));
        }
        self.record_result(source, LineResult::NonTerminal)
    }

    /// Notes Runway's estimate of what task `id` will cost (`estimatedCost.credits`):
    /// the one entry point for every source that sees one (a non-terminal record, a
    /// task-list line, the API's answer, a create call's answer). The last one seen is
    /// what the task is charged if its terminal record has no cost (see the module
    /// doc): kept with the task if the API source polls it, else held in [`Estimates`]
    /// until the task is counted. Ignored when it is not a number of credits in range,
    /// or the task was counted already. A change only when it is new, so an unchanged
    /// estimate never causes a commit.
    pub fn estimate_seen(&mut self, id: &str, credits: f64) {
        self.note_estimate(id, credits, None);
    }

    /// [`Ledger::estimate_seen`]; `counted`: whether the task was counted, when the
    /// caller looked already.
    fn note_estimate(&mut self, id: &str, credits: f64, counted: Option<bool>) {
        if !estimates::valid(credits) {
            return;
        }
        if let Some(t) = self.api.task(id) {
            if t.estimated_cost != Some(credits) {
                self.book.api.set_estimate(id, Some(credits));
            }
            return;
        }
        if counted.unwrap_or_else(|| self.seen(id)) {
            return;
        }
        let h = DedupeWindow::hash(id);
        if self.outcomes.estimates().get(h) != Some(credits) {
            self.book.outcomes.hold_estimate(h, credits);
        }
    }

    /// The estimate held for a task id, let go (no change when none is held).
    fn take_estimate(&mut self, id: &str) -> Option<f64> {
        let h = DedupeWindow::hash(id);
        self.outcomes.estimates().get(h)?;
        self.book.outcomes.take_estimate(h)
    }

    /// Task ids whose estimate is held until they are counted.
    pub fn estimates(&self) -> &Estimates {
        self.outcomes.estimates()
    }

    /// Notes how far a polled task got, and its `createdAt` when the book has none yet;
    /// a change only when something is new, so a task still running causes no commit.
    fn note_api_progress(&mut self, id: &str, record: &TaskRecord<'_>) {
        let Some(t) = self.api.task(id) else { return };
        let reached = Reached::after(t.reached, record.status);
        let created_at = t
            .created_at
            .or_else(|| record.created_at.as_ref().and_then(RawTime::unix));
        if (reached, created_at) != (t.reached, t.created_at) {
            self.book.api.set_progress(id, reached, created_at);
        }
    }

    /// Takes what `GET /v1/organization` said; a change only when it differs.
    pub fn set_organization(&mut self, org: Organization) {
        if self.api.organization() != Some(&org) {
            self.book.api.set_organization(Some(org));
        }
    }

    /// Takes what `POST /v1/organization/usage` said; a change only when it differs.
    pub fn set_usage(&mut self, usage: Usage) {
        if self.api.usage() != Some(&usage) {
            self.book.api.set_usage(Some(usage));
        }
    }

    /// Counts `n` answers the proxy passed back to the application, of one endpoint
    /// template, method and code, and the upstream's `latencies` in seconds (of those
    /// it answered).
    pub fn count_proxy_requests(&mut self, series: RequestKey<'_>, n: u64, latencies: &[f64]) {
        self.book.proxy.count(series, n, latencies);
    }

    /// Counts an error answer (400 or more) the proxy passed back or gave, by endpoint
    /// template, code and retry advice (a label of [`crate::classify::Retry`]).
    pub fn count_proxy_error(&mut self, endpoint: &str, code: &str, retry: &str) {
        self.book.proxy.count_error(endpoint, code, retry, 1);
    }

    /// Keeps an HTTP error answer (`code` 400 or more) the proxy passed back at `at`,
    /// with its body when the proxy kept it, among the last ones (the status page's).
    pub fn proxy_error(
        &mut self,
        at: f64,
        method: &str,
        endpoint: &str,
        code: u16,
        body: Option<&[u8]>,
    ) {
        if code >= 400 {
            self.book.proxy.error(at, method, endpoint, code, body);
        }
    }

    /// Counts a task created through the proxy's `endpoint` for `model` (any text: made a
    /// label here, and folded into `other` past the cap of distinct models).
    pub fn count_proxy_created(&mut self, endpoint: &str, model: Option<&str>) {
        self.book
            .proxy
            .count_created(endpoint, model_label(model), 1);
    }

    /// A task created through the proxy (a create call's answer): counted in
    /// `runway_tasks_created_total`, held open (its model labels its records that lack
    /// one) and, with `follow` (the API source runs, with at most this many tracked
    /// tasks), tracked by the API source until it ends. A task created again (the same
    /// id: a replayed journal line) changes nothing. `source` records the tracking. An
    /// estimate that is no number of credits in range is dropped, as
    /// [`Ledger::estimate_seen`] drops one.
    pub fn proxy_created(&mut self, source: SourceId, task: CreatedTask, follow: Option<usize>) {
        if self.created.get(&task.id).is_some() || self.seen(&task.id) {
            return;
        }
        let estimate = task.estimate.filter(|c| estimates::valid(*c));
        let task = CreatedTask { estimate, ..task };
        self.count_proxy_created(&task.endpoint, task.model.as_deref());
        let tracked = follow.is_some_and(|max| {
            let api = ApiTask {
                id: task.id.clone(),
                added_at: task.created_at,
                model: task.model.clone(),
                estimated_cost: task.estimate,
                ..ApiTask::default()
            };
            self.track_api_task(source, api, (0, 1), max) == LineResult::Tracked
        });
        if let (false, Some(credits)) = (tracked, task.estimate) {
            self.estimate_seen(&task.id, credits);
        }
        self.book.created.insert(task);
    }

    /// The application asked the proxy for task `id` at `at` (Unix seconds): a task
    /// created through the proxy is then not asked for by the API source for a while.
    pub fn proxy_sighting(&mut self, id: &str, at: f64) {
        if self.created.sighted(id).is_some_and(|s| s < at) {
            self.book.created.sight(id, at);
        }
    }

    /// The model a created task's create call named, for a record that has none.
    fn created_model(&self, record: &TaskRecord<'_>) -> Option<String> {
        if record.model.is_some() || self.created.is_empty() {
            return None;
        }
        let id = record.id.as_deref()?;
        self.created.get(id)?.model.clone()
    }

    /// A created task no longer open, if it was; `None` (no change) otherwise.
    fn take_created(&mut self, id: &str) -> Option<CreatedTask> {
        self.created.get(id)?;
        self.book.created.remove(id)
    }

    /// A created task seen to end by a record: no longer open, and no longer followed
    /// by the API source; the estimate kept with the followed task, if any.
    fn end_created(&mut self, id: &str) -> Option<f64> {
        self.take_created(id)?;
        self.api.task(id)?;
        self.book.api.remove(id)?.estimated_cost
    }

    /// Counts a request to the Runway API by endpoint and answer code.
    pub fn count_api_request(&mut self, endpoint: &str, code: &str) {
        self.book.api.count_requests(endpoint, code, 1);
    }

    /// Notes a step of the wall clock, so that the recent failures are saved and shown
    /// on the wall clock of now: a change (committed) only when it moved by a second or
    /// more since last noted.
    pub fn note_clock(&mut self, now: crate::clock::Now) {
        if self.outcomes.clock_stepped(now) {
            self.book.outcomes.note_clock(now);
        }
    }

    /// Whether a task id was counted recently (it is in the dedupe window).
    pub fn seen(&self, id: &str) -> bool {
        self.outcomes.dedupe().contains(id)
    }

    /// Records a line that yielded no record.
    pub fn reject(&mut self, source: SourceId, error: ParseError) -> LineResult {
        self.book.own.reject(source, error)
    }

    /// Counts one record, by the semantics in the module doc, seen at an unknown time.
    pub fn count(&mut self, source: SourceId, record: &TaskRecord<'_>) -> LineResult {
        self.count_seen(source, record, None)
    }

    /// Counts one record seen at `at` (Unix seconds; `None`: unknown, as in a backlog):
    /// the time of a record without a timestamp of its own.
    pub fn count_seen(
        &mut self,
        source: SourceId,
        record: &TaskRecord<'_>,
        at: Option<f64>,
    ) -> LineResult {
        let seen = Seen::at(at);
        self.count_with(source, record, None, seen, None)
    }

    /// Counts the parsed lines of a batch, in order, and records the rest as rejected:
    /// the same as [`count`](Self::count) and [`reject`](Self::reject) line by line,
    /// but the ids of every [`BATCH`] records go through the dedupe window first, one
    /// after another in a loop of their own, so that the CPU overlaps the window's cache
    /// misses (counting in between made each line wait for its own). Results go to
    /// `results`.
    pub fn count_batch(
        &mut self,
        source: SourceId,
        records: &[Result<TaskRecord<'_>, ParseError>],
        results: &mut Vec<LineResult>,
        at: Option<f64>,
    ) {
        let seen = Seen::at(at);
        for batch in records.chunks(BATCH) {
            let mut hashes = [None; BATCH];
            for (h, r) in hashes.iter_mut().zip(batch) {
                if let Ok(TaskRecord {
                    id: Some(id),
                    status,
                    ..
                }) = r
                {
                    if status.is_terminal() || *status == Status::Running {
                        *h = Some((DedupeWindow::hash(id), *status));
                    }
                }
            }
            let fresh = self.book.outcomes.mark_batch(hashes);
            for (r, f) in batch.iter().zip(fresh) {
                results.push(match r {
                    Ok(r) => self.count_with(source, r, Some(f), seen, None),
                    Err(e) => self.reject(source, *e),
                });
            }
        }
    }

    /// `fresh`: whether the record's id was new to the dedupe window, when the caller
    /// looked already; `None` looks now. `last`: the task's last `estimatedCost` that
    /// the caller knows of (the API source's).
    fn count_with(
        &mut self,
        source: SourceId,
        record: &TaskRecord<'_>,
        fresh: Option<bool>,
        seen: Seen,
        last: Option<f64>,
    ) -> LineResult {
        let result = self.count_record(record, fresh, seen, last);
        self.book.own.result(source, result);
        result
    }

    /// Every counter with its labels resolved, sorted.
    pub fn totals(&self) -> Totals {
        Totals {
            dead_letter: self.own.dead_letter(),
            sources: self.own.sources().to_vec(),
            api_requests: self
                .api
                .requests()
                .map(|((e, c), v)| RequestSeries {
                    endpoint: e.clone(),
                    code: c.clone(),
                    requests: *v,
                })
                .collect(),
            api_tasks_tracked: self.api.len() as u64,
            organization: self.api.organization().cloned(),
            usage: self.api.usage().cloned(),
            api_credits_in_flight: self.api.in_flight(),
            proxy_requests: self.proxy.requests(),
            proxy_latency: self.proxy.latency(),
            proxy_created: self.proxy.created(),
            proxy_errors: self.proxy.errors(),
            proxy_recent_errors: self.proxy.recent_errors(),
            proxy_open: self.created.saved(),
            ..self.outcomes.totals()
        }
    }

    /// Restores saved counters and a saved dedupe window (oldest first) into this new
    /// ledger, all or nothing: on an error it is left as it was. Saved label values are
    /// kept even past a cap lowered since they were saved.
    pub fn restore(&mut self, t: &Totals, windows: SavedWindows) -> Result<(), RestoreError> {
        let mut next = Ledger::new(self.table.clone(), self.pricing.clone(), self.limits);
        // Sources registered already keep their ids.
        for s in self.own.sources() {
            next.add_source(&s.name);
        }
        next.add_saved(t)?;
        next.book.outcomes.restore_windows(windows);
        *self = next;
        Ok(())
    }

    /// Adds saved counters to this ledger; stops at the first that is not valid.
    fn add_saved(&mut self, t: &Totals) -> Result<(), RestoreError> {
        let book = &mut *self.book;
        book.outcomes.add_saved(t, &self.table, self.limits)?;
        for series in &t.api_requests {
            let key = (series.endpoint.clone(), series.code.clone());
            book.api.count_requests(&key.0, &key.1, series.requests);
        }
        book.proxy
            .restore(&t.proxy_requests, &t.proxy_latency, &t.proxy_created)
            .map_err(RestoreError)?;
        for s in &t.proxy_errors {
            book.proxy
                .count_error(&s.endpoint, &s.code, &s.retry, s.requests);
        }
        book.proxy.restore_errors(&t.proxy_recent_errors);
        book.created.restore(&t.proxy_open);
        book.api.set_organization(t.organization.clone());
        book.api.set_usage(t.usage.clone());
        book.own.restore(&t.sources, &t.dead_letter);
        Ok(())
    }

    fn count_record(
        &mut self,
        record: &TaskRecord<'_>,
        fresh: Option<bool>,
        seen: Seen,
        last: Option<f64>,
    ) -> LineResult {
        let labelled;
        let record = match self.created_model(record) {
            Some(model) => {
                labelled = TaskRecord {
                    model: Some(std::borrow::Cow::Owned(model)),
                    ..record.clone()
                };
                &labelled
            }
            None => record,
        };
        let (table, limits) = (&*self.table, self.limits);
        let outcomes = &mut self.book.outcomes;
        outcomes.count_invalid_number(record.invalid_number);
        if let Some(result) = outcomes.count_flow(record, fresh, table, limits) {
            return result;
        }
        if !record.status.is_terminal() {
            // `fresh` of a RUNNING record is whether its task was not counted yet.
            let running = record.status == Status::Running;
            if let (Some(id), Some(c)) = (record.id.as_deref(), record.estimated_cost) {
                self.note_estimate(id, c, fresh.filter(|_| running).map(|f| !f));
            }
            if running {
                self.time_start(record, fresh, seen);
            }
            return LineResult::NonTerminal;
        }
        // The task's own estimate: its terminal record's, else the last one seen (held,
        // or kept with the task the API source follows for the proxy).
        let held = record.id.as_deref().and_then(|id| self.take_estimate(id));
        let followed = record.id.as_deref().and_then(|id| self.end_created(id));
        let estimate = record.estimated_cost.or(last).or(followed).or(held);
        if let Some(id) = &record.id {
            if !fresh.unwrap_or_else(|| self.book.outcomes.mark_counted(id)) {
                return LineResult::Duplicate;
            }
        }
        self.count_terminal(record, seen, Ending::Record(estimate))
    }

    /// Counts a terminal record that is its task's first: its status and model, time,
    /// failure and credits, from the record or as `ending` says.
    fn count_terminal(
        &mut self,
        record: &TaskRecord<'_>,
        seen: Seen,
        ending: Ending,
    ) -> LineResult {
        let model_name = model_label(record.model.as_deref());
        let (table, limits) = (&*self.table, self.limits);
        let outcomes = &mut self.book.outcomes;
        let model = outcomes.count_task(record.status, model_name, limits.max_models);
        outcomes.time_end(record, model, seen, matches!(ending, Ending::Deleted(_)));
        let failure = (record.status == Status::Failed).then(|| {
            let end = seen.of(record);
            outcomes.count_failure(table, record, model, end, limits.max_failure_codes)
        });
        let rule = failure.map(|(_, rule)| rule);
        let price = match (ending, record.cost) {
            (Ending::Deleted(price), _) => price,
            (Ending::Record(_), Some(cost)) => Price::Reported(cost),
            (Ending::Record(estimate), None) => {
                self.price_without_cost(record, model_name, rule, estimate)
            }
        };
        let outcomes = &mut self.book.outcomes;
        let credits = outcomes.add_credits(record.status, model, price);
        if let Some(failure) = failure {
            outcomes.count_lost(failure, model, credits, record.cost);
        }
        LineResult::Counted
    }

    /// Times the first `RUNNING` record of a task (see [`Outcomes::time_start`]).
    fn time_start(&mut self, record: &TaskRecord<'_>, not_counted: Option<bool>, seen: Seen) {
        let max_models = self.limits.max_models;
        (self.book.outcomes).time_start(record, not_counted, seen, max_models);
    }

    /// The ids whose queue time was observed.
    pub fn started_ids(&self) -> &DedupeWindow {
        self.outcomes.started_ids()
    }

    /// The credits of a terminal task that reports no cost: the event's credits field
    /// (what the application says the task was charged), whatever its status; else an
    /// estimate, for a SUCCEEDED task and a FAILED one whose code loses its credits:
    /// Runway's own (`estimate`, the task's last `estimatedCost`), else the pricing
    /// table's. Refunded failures and cancelled tasks are not estimated: as far as
    /// Runway's rules tell, they were charged nothing.
    fn price_without_cost(
        &self,
        record: &TaskRecord<'_>,
        model: &str,
        rule: Option<CreditRule>,
        estimate: Option<f64>,
    ) -> Price {
        if let Some(c) = record.credits {
            return Price::Reported(c);
        }
        let charged = match rule {
            None => record.status == Status::Succeeded,
            Some(rule) => rule == CreditRule::Lost,
        };
        if !charged {
            return Price::Nothing;
        }
        match estimate.filter(|c| estimates::valid(*c)) {
            Some(c) => Price::Estimated(c, Origin::EstimatedCost),
            None => self.table_price(model, record.duration),
        }
    }

    /// The pricing table's estimate for a charged task, or `Unknown`.
    fn table_price(&self, model: &str, duration: Option<f64>) -> Price {
        match self.pricing.estimate(model, duration) {
            Some(c) if estimates::valid(c) => Price::Estimated(c, Origin::Pricing),
            _ => Price::Unknown,
        }
    }
}

/// When a record was seen: `at`, the time a live line was read or the API answered
/// (`None`: unknown, as in a backlog or a `scan`); `now`, this host's clock.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Option<f64>,
    now: f64,
}

impl Seen {
    fn at(at: Option<f64>) -> Seen {
        Seen {
            at,
            now: crate::clock::unix_now(),
        }
    }

    /// The time of `record`: its own timestamp, else when it was seen. A timestamp
    /// before 2000 or ahead of the clock (a field of that name that holds something
    /// else, or a wrong clock) is taken as none.
    fn of(self, record: &TaskRecord<'_>) -> Option<f64> {
        const Y2000: f64 = 946_684_800.0;
        let plausible = Y2000..=self.now + CLOCK_SKEW;
        record
            .timestamp
            .as_ref()
            .and_then(RawTime::unix)
            .filter(|t| plausible.contains(t))
            .or(self.at)
    }
}

/// Credits charged to the counted tasks of one `(status, model)`, and the part of them
/// that was estimated, by origin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Credits {
    pub charged: f64,
    pub estimated: EstimatedBy,
}

/// How a counted task ended: by its own terminal record (with the task's last
/// `estimatedCost`, if one was seen), or deleted (its credits decided from what was seen
/// of it before).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Record(Option<f64>),
    Deleted(Price),
}

/// Where a counted task's credits came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Price {
    /// The task's cost, or the event's credits field.
    Reported(f64),
    /// Runway's `estimatedCost` for the task, or the pricing table's.
    Estimated(f64, Origin),
    /// Charged, but at an unknown price.
    Unknown,
    /// Not charged.
    Nothing,
}

#[cfg(test)]
mod tests {
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

    /// Counts `line` seen at `at`.
    fn seen(l: &mut Ledger, s: SourceId, p: &RecordParser, line: &str, at: Option<f64>) {
        l.count_seen(s, &p.parse(line.as_bytes()).unwrap(), at);
    }

    /// (observations, sum) of the duration histogram of one status and model.
    fn timed(l: &Ledger, status: &str, model: &str) -> (u64, f64) {
        l.totals()
            .durations
            .iter()
            .find(|d| d.status == status && d.model == model)
            .map_or((0, 0.0), |d| (d.histogram.count(), d.histogram.sum))
    }

    fn queued(l: &Ledger, model: &str) -> (u64, f64) {
        l.totals()
            .queues
            .iter()
            .find(|d| d.model == model)
            .map_or((0, 0.0), |d| (d.histogram.count(), d.histogram.sum))
    }

    fn untimed(l: &Ledger, measure: &str, reason: &str) -> u64 {
        l.totals()
            .untimed
            .iter()
            .find(|u| u.measure == measure && u.reason == reason)
            .map_or(0, |u| u.tasks)
    }

    #[test]
    fn each_task_is_timed_once_from_its_own_time_or_when_it_was_seen() {
        let (mut l, s, p) = ledger(Limits::default());
        let now = crate::clock::unix_now();
        let created = |ago: f64| {
            let t = jiff::Timestamp::from_millisecond(((now - ago) * 1000.0) as i64).unwrap();
            t.to_string()
        };
        let c100 = created(100.0);
        // Its own timestamp: 100 s before it, seen or not.
        let own = format!(
            r#"{{"id":"a","status":"SUCCEEDED","model":"m","createdAt":"{c100}","ts":{}}}"#,
            now - 40.0
        );
        seen(&mut l, s, &p, &own, None);
        // Seen live, without a timestamp: until it was seen.
        let live = format!(r#"{{"id":"b","status":"SUCCEEDED","model":"m","createdAt":"{c100}"}}"#);
        seen(&mut l, s, &p, &live, Some(now));
        let (n, sum) = timed(&l, "SUCCEEDED", "m");
        assert_eq!(n, 2);
        assert!((sum - 160.0).abs() < 0.01, "{sum}");
        // The same tasks again: counted once, timed once.
        seen(&mut l, s, &p, &own, None);
        seen(&mut l, s, &p, &live, Some(now));
        assert_eq!(timed(&l, "SUCCEEDED", "m").0, 2);
        // Not timed: a backlog line without a time, no createdAt, a future createdAt, an
        // end before the start, more than a day.
        let lines = [
            (
                format!(r#"{{"id":"c","status":"FAILED","createdAt":"{c100}"}}"#),
                None,
                "no_end",
            ),
            (
                r#"{"id":"d","status":"FAILED","ts":5}"#.to_string(),
                Some(now),
                "no_start",
            ),
            (
                format!(
                    r#"{{"id":"e","status":"FAILED","createdAt":"{}"}}"#,
                    created(-120.0)
                ),
                Some(now),
                "future_start",
            ),
            (
                format!(
                    r#"{{"id":"f","status":"FAILED","createdAt":"{c100}","ts":{}}}"#,
                    now - 200.0
                ),
                None,
                "end_before_start",
            ),
            (
                format!(
                    r#"{{"id":"g","status":"FAILED","createdAt":"{}"}}"#,
                    created(90_000.0)
                ),
                Some(now),
                "too_long",
            ),
        ];
        for (line, at, reason) in &lines {
            seen(&mut l, s, &p, line, *at);
            assert_eq!(untimed(&l, "duration", reason), 1, "{line}");
        }
        assert_eq!(timed(&l, "FAILED", "unknown").0, 0);
        assert_eq!(l.totals().tasks.iter().map(|t| t.tasks).sum::<u64>(), 7);
    }

    #[test]
    fn the_queue_time_is_taken_from_the_first_running_record_of_a_task() {
        let (mut l, s, p) = ledger(Limits::default());
        let now = crate::clock::unix_now();
        let c = jiff::Timestamp::from_millisecond(((now - 30.0) * 1000.0) as i64).unwrap();
        let running = |id: &str| {
            format!(
                r#"{{"id":"{id}","status":"RUNNING","model":"m","createdAt":"{c}","progress":0.1}}"#
            )
        };
        seen(
            &mut l,
            s,
            &p,
            &format!(r#"{{"id":"q","status":"PENDING","createdAt":"{c}"}}"#),
            Some(now - 29.0),
        );
        seen(&mut l, s, &p, &running("q"), Some(now - 20.0));
        seen(&mut l, s, &p, &running("q"), Some(now - 10.0));
        seen(&mut l, s, &p, &running("q"), Some(now));
        let (n, sum) = queued(&l, "m");
        assert_eq!(n, 1);
        assert!((sum - 10.0).abs() < 0.01, "{sum}");
        // From a backlog: not timed, and once per task too.
        seen(&mut l, s, &p, &running("r"), None);
        seen(&mut l, s, &p, &running("r"), None);
        assert_eq!(untimed(&l, "queue", "no_end"), 1);
        // Without an id there is no telling a task's first: not timed, said why.
        let anonymous = format!(r#"{{"status":"RUNNING","model":"m","createdAt":"{c}"}}"#);
        seen(&mut l, s, &p, &anonymous, Some(now));
        seen(&mut l, s, &p, &anonymous, Some(now));
        assert_eq!(queued(&l, "m").0, 1);
        assert_eq!(untimed(&l, "queue", "no_id"), 2);
        // A RUNNING record after its task ended (out of order): not timed.
        let ended = format!(r#"{{"id":"z","status":"SUCCEEDED","createdAt":"{c}"}}"#);
        seen(&mut l, s, &p, &ended, Some(now));
        seen(&mut l, s, &p, &running("z"), Some(now));
        assert_eq!(queued(&l, "m").0, 1);
        // Non-terminal records are still not counted as tasks: only z's end is.
        assert_eq!(l.totals().tasks.iter().map(|t| t.tasks).sum::<u64>(), 1);
    }

    fn failures(l: &Ledger, code: &str, model: &str) -> u64 {
        (l.totals().failures.iter())
            .filter(|f| f.failure_code == code && f.model == model)
            .map(|f| f.value)
            .sum()
    }

    fn tasks(l: &Ledger, status: Status) -> u64 {
        (l.totals().tasks.iter())
            .filter(|t| t.status == status.as_str())
            .map(|t| t.tasks)
            .sum()
    }

    #[test]
    fn first_terminal_record_counts_once() {
        let (mut l, s, p) = ledger(Limits::default());
        let lines = [
            (r#"{"id":"a","status":"PENDING"}"#, LineResult::NonTerminal),
            (
                r#"{"id":"a","status":"THROTTLED"}"#,
                LineResult::NonTerminal,
            ),
            (
                r#"{"id":"a","status":"RUNNING","progress":0.5}"#,
                LineResult::NonTerminal,
            ),
            (
                r#"{"id":"a","status":"FAILED","failureCode":"SAFETY.INPUT.TEXT","model":"gen4_turbo","duration":10}"#,
                LineResult::Counted,
            ),
            (
                r#"{"id":"a","status":"FAILED","failureCode":"SAFETY.INPUT.TEXT","model":"gen4_turbo"}"#,
                LineResult::Duplicate,
            ),
            (r#"{"id":"a","status":"SUCCEEDED"}"#, LineResult::Duplicate),
            (r#"{"status":"CANCELLED"}"#, LineResult::Counted),
            (r#"{"status":"CANCELLED"}"#, LineResult::Counted),
            ("garbage", LineResult::Rejected(ParseError::InvalidJson)),
        ];
        for (line, want) in lines {
            assert_eq!(feed(&mut l, s, &p, line), want, "{line}");
        }
        assert_eq!(failures(&l, "SAFETY.INPUT.TEXT", "gen4_turbo"), 1);
        assert_eq!(tasks(&l, Status::Failed), 1);
        assert_eq!(tasks(&l, Status::Cancelled), 2);
        assert_eq!(tasks(&l, Status::Succeeded), 0);
        let src = l.own.source(s);
        assert_eq!(src.results[..4], [3, 2, 3, 1]);
        assert_eq!(src.results.iter().sum::<u64>(), lines.len() as u64);
        // SAFETY credits are lost: 5 credits/s x 10 s estimated from the pricing table.
        let lost = l.totals().credits_lost;
        let lost = lost
            .iter()
            .find(|c| {
                (c.failure_code.as_str(), c.model.as_str()) == ("SAFETY.INPUT.TEXT", "gen4_turbo")
            })
            .unwrap();
        assert_eq!(lost.credits, 50.0);
    }

    #[test]
    fn credits_from_record_else_estimate_else_unpriced() {
        let (mut l, s, p) = ledger(Limits::default());
        for line in [
            r#"{"id":"1","status":"SUCCEEDED","model":"gen4_turbo","credits":25,"duration":10}"#,
            r#"{"id":"2","status":"SUCCEEDED","model":"gen4_turbo","duration":10}"#,
            r#"{"id":"3","status":"SUCCEEDED","model":"gen4_turbo"}"#,
            r#"{"id":"4","status":"SUCCEEDED","model":"mystery","duration":10}"#,
            r#"{"id":"5","status":"SUCCEEDED","model":"gen4_image"}"#,
            r#"{"id":"6","status":"FAILED","failureCode":"INTERNAL","model":"gen4_turbo","credits":25}"#,
            r#"{"id":"7","status":"FAILED","failureCode":"SAFETY.OUTPUT.VIDEO","model":"veo3"}"#,
            r#"{"id":"8","status":"FAILED","failureCode":"INTERNAL","model":"gen4_turbo","duration":10}"#,
            r#"{"id":"9","status":"CANCELLED","model":"gen4_turbo","credits":5}"#,
            r#"{"id":"10","status":"CANCELLED","model":"gen4_turbo","duration":10}"#,
            r#"{"id":"11","status":"FAILED","failureCode":"NEW.CODE","credits":7}"#,
        ] {
            assert_eq!(feed(&mut l, s, &p, line), LineResult::Counted);
        }
        let totals = l.totals();
        let m = |name: &str| {
            let c = (totals.credits.iter())
                .find(|c| c.status == "SUCCEEDED" && c.model == name)
                .unwrap();
            Credits {
                charged: c.charged,
                estimated: c.estimated_by.unwrap(),
            }
        };
        let credits = |charged, pricing| Credits {
            charged,
            estimated: EstimatedBy {
                estimated_cost: 0.0,
                pricing,
            },
        };
        assert_eq!(m("gen4_turbo"), credits(75.0, 50.0));
        assert_eq!(m("gen4_image"), credits(5.0, 5.0));
        assert_eq!(m("mystery"), credits(0.0, 0.0));
        assert_eq!(
            totals.credits_unpriced,
            Unpriced {
                succeeded: 2,
                failed: 1,
                cancelled: 0,
            }
        );
        // The event's credits field is what the application says a task was charged,
        // whatever its status (and, without a cost from Runway, no evidence against the
        // table); refunded failures and cancelled tasks are never estimated.
        assert_eq!(lost(&l, "INTERNAL"), 25.0);
        assert_eq!(lost(&l, "NEW.CODE"), 7.0);
        assert_eq!(charged(&l, Status::Failed), 32.0);
        assert_eq!(estimated(&l, Status::Failed), 0.0);
        assert_eq!(charged(&l, Status::Cancelled), 5.0);
        assert_eq!(estimated(&l, Status::Cancelled), 0.0);
        assert_eq!(mismatches(&l, "INTERNAL"), 0);
    }

    fn credits_of(l: &Ledger, status: Status, which: fn(&Credits) -> f64) -> f64 {
        (l.totals().credits.iter())
            .filter(|c| c.status == status.as_str())
            .map(|c| {
                which(&Credits {
                    charged: c.charged,
                    estimated: c.estimated_by.unwrap(),
                })
            })
            .sum()
    }

    fn charged(l: &Ledger, status: Status) -> f64 {
        credits_of(l, status, |c| c.charged)
    }

    fn estimated(l: &Ledger, status: Status) -> f64 {
        credits_of(l, status, |c| c.estimated.total())
    }

    fn lost(l: &Ledger, code: &str) -> f64 {
        (l.totals().credits_lost.iter())
            .filter(|c| c.failure_code == code)
            .map(|c| c.credits)
            .sum()
    }

    fn mismatches(l: &Ledger, code: &str) -> u64 {
        (l.totals().cost_mismatches.iter())
            .filter(|m| m.failure_code == code)
            .map(|m| m.tasks)
            .sum()
    }

    #[test]
    fn the_reported_cost_is_what_is_counted() {
        let (mut l, s, p) = ledger(Limits::default());
        for line in [
            // The cost wins over the event's credits and over the pricing table.
            r#"{"id":"1","status":"SUCCEEDED","model":"gen4_turbo","duration":10,"credits":99,"cost":{"credits":75}}"#,
            r#"{"id":"2","status":"CANCELLED","model":"gen4_turbo","cost":{"credits":50}}"#,
            r#"{"id":"3","status":"CANCELLED","cost":{"credits":0}}"#,
            r#"{"id":"4","status":"FAILED","failureCode":"INTERNAL","cost":{"credits":20}}"#,
            r#"{"id":"5","status":"FAILED","failureCode":"SAFETY.INPUT.TEXT","model":"gen4_turbo","duration":10,"cost":{"credits":0}}"#,
            r#"{"id":"6","status":"FAILED","failureCode":"SAFETY.OUTPUT.VIDEO","cost":{"credits":40}}"#,
            r#"{"id":"7","status":"FAILED","failureCode":"ASSET.INVALID","cost":{"credits":0}}"#,
            r#"{"id":"8","status":"FAILED","failureCode":"NEW.CODE","cost":{"credits":3}}"#,
            // Without a cost: the estimate (SAFETY loses its credits), counted as such.
            r#"{"id":"9","status":"FAILED","failureCode":"SAFETY.INPUT.IMAGE","model":"gen4_turbo","duration":2}"#,
            // A duplicate with another cost changes nothing.
            r#"{"id":"1","status":"SUCCEEDED","model":"gen4_turbo","cost":{"credits":1000}}"#,
        ] {
            feed(&mut l, s, &p, line);
        }
        assert_eq!(charged(&l, Status::Succeeded), 75.0);
        assert_eq!(charged(&l, Status::Cancelled), 50.0);
        assert_eq!(charged(&l, Status::Failed), 20.0 + 40.0 + 3.0 + 10.0);
        assert_eq!(estimated(&l, Status::Failed), 10.0);
        assert_eq!(estimated(&l, Status::Succeeded), 0.0);
        // Lost: whatever FAILED tasks were charged, whatever the table's rule says.
        assert_eq!(lost(&l, "INTERNAL"), 20.0);
        assert_eq!(lost(&l, "SAFETY.INPUT.TEXT"), 0.0);
        assert_eq!(lost(&l, "SAFETY.OUTPUT.VIDEO"), 40.0);
        assert_eq!(lost(&l, "NEW.CODE"), 3.0);
        assert_eq!(lost(&l, "SAFETY.INPUT.IMAGE"), 10.0);
        // Evidence against the table: a refunded code that cost, a lost one that did not.
        assert_eq!(mismatches(&l, "INTERNAL"), 1);
        assert_eq!(mismatches(&l, "SAFETY.INPUT.TEXT"), 1);
        assert_eq!(mismatches(&l, "SAFETY.OUTPUT.VIDEO"), 0);
        assert_eq!(mismatches(&l, "ASSET.INVALID"), 0);
        assert_eq!(
            mismatches(&l, "NEW.CODE"),
            0,
            "an unknown rule cannot be contradicted"
        );
        assert_eq!(l.totals().credits_unpriced, Unpriced::default());
        // The totals carry them with their labels, and a restore brings them back.
        let t = l.totals();
        assert!(t.credits.contains(&CreditSeries {
            status: "CANCELLED".into(),
            model: "gen4_turbo".into(),
            charged: 50.0,
            estimated: 0.0,
            estimated_by: Some(EstimatedBy::default()),
        }));
        let mismatch = |code: &str, rule: &str| MismatchSeries {
            failure_code: code.into(),
            credits: rule.into(),
            tasks: 1,
        };
        assert!(t
            .cost_mismatches
            .contains(&mismatch("INTERNAL", "refunded")));
        assert!(t
            .cost_mismatches
            .contains(&mismatch("SAFETY.INPUT.TEXT", "lost")));
        let (mut again, _, _) = ledger(Limits::default());
        let dedupe = l.dedupe().hashes().collect();
        again
            .restore(
                &t,
                SavedWindows {
                    dedupe,
                    started: Vec::new(),
                },
            )
            .unwrap();
        assert_eq!(again.totals(), t);
    }

    #[test]
    fn absurd_numbers_never_reach_a_counter() {
        let (mut l, s, p) = ledger(Limits::default());
        for (i, v) in ["1e308", "1.7976931348623157e308", "-5", "\"NaN\"", "1e10"]
            .iter()
            .enumerate()
        {
            for line in [
                format!(
                    r#"{{"id":"c{i}","status":"SUCCEEDED","model":"gen4_turbo","cost":{{"credits":{v}}}}}"#
                ),
                format!(
                    r#"{{"id":"r{i}","status":"SUCCEEDED","model":"gen4_turbo","credits":{v}}}"#
                ),
                format!(
                    r#"{{"id":"d{i}","status":"FAILED","failureCode":"SAFETY.INPUT.TEXT","model":"veo3","duration":{v}}}"#
                ),
            ] {
                assert_eq!(feed(&mut l, s, &p, &line), LineResult::Counted, "{line}");
            }
        }
        let t = l.totals();
        assert!(
            t.credits
                .iter()
                .all(|c| c.charged.is_finite() && c.charged == 0.0),
            "{:?}",
            t.credits
        );
        assert_eq!(t.invalid_numbers, 15);
        assert_eq!(
            t.credits_unpriced,
            Unpriced {
                succeeded: 10,
                failed: 5,
                cancelled: 0,
            }
        );
        // The state file's header is JSON, where an infinite number would be written as
        // null and not read back: the totals must survive the round trip.
        let (back, _) = crate::state::through_header(&t, &[]);
        assert_eq!(back, t);
    }

    #[test]
    fn zeroes_exported_for_every_known_code_and_status() {
        let (l, _, _) = ledger(Limits::default());
        for code in Table::builtin().known_codes() {
            assert_eq!(failures(&l, code, UNKNOWN_MODEL), 0);
            assert!(
                l.totals().failures.iter().any(|f| &f.failure_code == code),
                "{code}"
            );
        }
        let tasks = l.totals().tasks;
        for status in Status::TERMINAL {
            assert!(tasks
                .iter()
                .any(|t| t.status == status.as_str() && t.model == UNKNOWN_MODEL));
        }
    }

    #[test]
    fn caps_fold_into_other_and_count_overflow() {
        let limits = Limits {
            dedupe_window: 10,
            max_failure_codes: 3,
            max_models: 2,
        };
        let (mut l, s, p) = ledger(limits);
        for i in 0..10 {
            let line =
                format!(r#"{{"status":"FAILED","failureCode":"NEW.CODE{i}","model":"m{i}"}}"#);
            assert_eq!(feed(&mut l, s, &p, &line), LineResult::Counted);
        }
        // Known codes are not limited by the cap.
        feed(
            &mut l,
            s,
            &p,
            r#"{"status":"FAILED","failureCode":"ASSET.INVALID","model":"m0"}"#,
        );
        assert_eq!(
            failures(&l, "NEW.CODE2", "m0") + failures(&l, "NEW.CODE2", OTHER),
            1
        );
        assert_eq!(failures(&l, OTHER, OTHER), 7);
        assert_eq!(failures(&l, "ASSET.INVALID", "m0"), 1);
        let totals = l.totals();
        assert_eq!(
            totals.label_overflow,
            LabelOverflow {
                failure_code: 7,
                model: 8
            }
        );
        assert_eq!(totals.unknown_failure_codes, 10);
        let distinct_codes: std::collections::BTreeSet<_> =
            totals.failures.iter().map(|f| &f.failure_code).collect();
        assert!(distinct_codes.len() <= Table::builtin().known_codes().len() + 3 + 3);
    }

    #[test]
    fn model_labels_are_checked() {
        assert_eq!(model_label(None), UNKNOWN_MODEL);
        assert_eq!(model_label(Some("  ")), UNKNOWN_MODEL);
        assert_eq!(model_label(Some("gen4.5")), "gen4.5");
        assert_eq!(model_label(Some(" gen4_turbo ")), "gen4_turbo");
        assert_eq!(model_label(Some("bad model")), INVALID_MODEL);
        assert_eq!(model_label(Some("x\"}")), INVALID_MODEL);
        assert_eq!(model_label(Some(&"m".repeat(65))), INVALID_MODEL);
    }

    proptest::proptest! {
        /// Counting in batches (the dedupe verdicts of a batch settled first) ends with
        /// the same results and totals as counting line by line: repeated ids within a
        /// batch and across batches, ids evicted from a small window, lines without an
        /// id, non-terminal and rejected lines.
        #[test]
        fn batches_count_like_single_lines(
            lines in proptest::collection::vec((0u8..6, 0u8..8), 0..120),
            cuts in proptest::collection::vec(1usize..=2 * BATCH + 1, 1..40),
        ) {
            let limits = Limits { dedupe_window: 3, ..Limits::default() };
            let (mut one, s1, p) = ledger(limits);
            let (mut many, s2, _) = ledger(limits);
            let lines: Vec<String> = lines
                .iter()
                .map(|(id, kind)| match kind {
                    0 => format!(r#"{{"id":"t{id}","status":"RUNNING"}}"#),
                    1 => format!(r#"{{"status":"SUCCEEDED","model":"m{id}"}}"#),
                    2 => format!(r#"{{"id":"t{id}","status":"FAILED","failureCode":"SAFETY.INPUT.TEXT"}}"#),
                    3 => format!(r#"{{"id":"t{id}","status":"#),
                    4 => format!(r#"{{"id":"t{id}","status":"CANCELLED"}}"#),
                    _ => format!(r#"{{"id":"t{id}","status":"SUCCEEDED","model":"gen4_turbo","duration":5}}"#),
                })
                .collect();
            let records: Vec<_> = lines.iter().map(|l| p.parse(l.as_bytes())).collect();
            let expected: Vec<LineResult> = records
                .iter()
                .map(|r| match r {
                    Ok(r) => one.count(s1, r),
                    Err(e) => one.reject(s1, *e),
                })
                .collect();
            let mut got = Vec::new();
            let mut rest = &records[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at((*cut).min(rest.len()));
                many.count_batch(s2, batch, &mut got, None);
                rest = tail;
            }
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert_eq!(many.totals(), one.totals());
            proptest::prop_assert_eq!(many.dedupe().hashes().collect::<Vec<_>>(), one.dedupe().hashes().collect::<Vec<_>>());
        }
    }
}
