//! The state file's header as it is on disk (versions 2 to 4): plain serde types of
//! their own, apart from the ledger's in-memory types, converted to and from them by
//! the functions below.
//!
//! The format is a contract with every state file already written: a release must read
//! what the releases before it wrote. So nothing here derives from the ledger, and the
//! ledger's types derive no serde at all. Each conversion takes its value apart whole
//! (`let ledger::X { a, b } = x`) and builds the other side whole, so a field of a
//! ledger type added, renamed or removed without its counterpart here is a compile
//! error, never a silent change of the file; and a change here shows in the golden file
//! (`tests/fixtures/state-golden`, compared byte for byte) and in the fixtures each
//! version wrote (`tests/fixtures/state-v*`).
//!
//! # Adding a field (no new version)
//!
//! A new counter is a new field at the end of its struct here, marked
//! `#[serde(default)]` (a file written before it has none: it reads as zero, empty or
//! `None`), plus the same field in the ledger's type and one name in the conversion's
//! field list. Files written before it still read, and the golden file changes by the
//! new field only: give it a value in `golden()` in `state.rs` and write the golden
//! file again (`RUNWAY_WRITE_GOLDEN_STATE=1 cargo test --lib state::tests::the_golden`)
//! in the same commit, saying so.
//!
//! # Bumping the version
//!
//! Only when an older release must not read the file as it is: a field renamed, removed
//! or given another meaning or shape (an older release ignores fields it does not know,
//! and would read a changed one wrongly or not at all). Then `VERSION` goes up, the
//! types as they were move to a module of their own (as `state::v1` holds version 1)
//! with a conversion to these, the fixture of the last version is kept, and a fixture
//! written by the new release is added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::classify::{Category, CreditRule, Retry};
use crate::ledger::{self, ResultKind, RESULT_KINDS};
use crate::record::ParseError;

/// The first line of a state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub written_at: f64,
    pub totals: Totals,
    pub positions: Vec<Position>,
    #[serde(default)]
    pub scanned_at: BTreeMap<String, f64>,
    /// Tasks the API source polls.
    #[serde(default)]
    pub api_tasks: Vec<ApiTask>,
    pub dedupe: u64,
    pub dedupe_checksum: u64,
    /// Ids whose queue time was observed (version 3).
    #[serde(default)]
    pub started: u64,
    #[serde(default = "super::empty_checksum")]
    pub started_checksum: u64,
}

/// Every counter of the ledger, as committed ([`ledger::Totals`] in memory). A new
/// counter goes at the end, with `#[serde(default)]` (see the module's doc).
#[derive(Debug, Serialize, Deserialize)]
pub struct Totals {
    pub tasks: Vec<TaskSeries>,
    pub failures: Vec<FailureSeries>,
    pub credits: Vec<CreditSeries>,
    pub credits_lost: Vec<LostSeries>,
    pub cost_mismatches: Vec<MismatchSeries>,
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
    pub api_credits_in_flight: f64,
    /// Version 3.
    #[serde(default)]
    pub durations: Vec<DurationSeries>,
    /// Version 3.
    #[serde(default)]
    pub queues: Vec<QueueSeries>,
    /// Version 3.
    #[serde(default)]
    pub untimed: Vec<UntimedSeries>,
    /// Version 3.
    #[serde(default)]
    pub recent: Vec<RecentFailures>,
    /// Runway's estimates of tasks not yet counted (issue 22).
    #[serde(default)]
    pub estimates: SavedEstimates,
    /// Workflow invocations and realtime sessions (issue 22).
    #[serde(default)]
    pub flows: FlowTotals,
    /// The application's requests the proxy passed on (issue 24).
    #[serde(default)]
    pub proxy_requests: Vec<ProxyRequestSeries>,
    /// The upstream's latency of those requests, by endpoint.
    #[serde(default)]
    pub proxy_latency: Vec<LatencySeries>,
    /// Tasks created through the proxy, by create endpoint and model.
    #[serde(default)]
    pub proxy_created: Vec<CreatedSeries>,
    /// The proxy's error answers, by endpoint, code and retry advice.
    #[serde(default)]
    pub proxy_errors: Vec<ProxyErrorSeries>,
    /// The last HTTP error answers the proxy passed back (the status page's).
    #[serde(default)]
    pub proxy_recent_errors: Vec<HttpError>,
    /// Tasks created through the proxy and not yet seen to end (issue 24).
    #[serde(default)]
    pub proxy_open: SavedCreated,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProxyErrorSeries {
    pub endpoint: String,
    pub code: String,
    pub retry: String,
    pub requests: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HttpError {
    pub at: f64,
    pub method: String,
    pub endpoint: String,
    pub code: u16,
    pub message: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedCreated {
    pub tasks: Vec<CreatedTask>,
    pub evicted: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedTask {
    pub id: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    pub created_at: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProxyRequestSeries {
    pub endpoint: String,
    pub method: String,
    pub code: String,
    pub requests: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedSeries {
    pub endpoint: String,
    pub model: String,
    pub tasks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LatencySeries {
    pub endpoint: String,
    pub buckets: Vec<u64>,
    pub sum: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FlowTotals {
    pub invocations: Vec<InvocationSeries>,
    pub node_failures: Vec<CodeSeries>,
    pub credits: Vec<FlowCredits>,
    pub sessions: Vec<SessionSeries>,
    pub session_failures: Vec<CodeSeries>,
    /// Hashes of the ids remembered as invocations, as sessions, and as invocations
    /// whose cost was counted, oldest first.
    pub workflow_ids: Vec<u64>,
    pub session_ids: Vec<u64>,
    pub costed_ids: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InvocationSeries {
    pub status: String,
    pub partial: bool,
    pub invocations: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CodeSeries {
    pub failure_code: String,
    pub category: String,
    pub retry: String,
    pub credits: String,
    pub value: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FlowCredits {
    pub status: String,
    pub credits: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionSeries {
    pub status: String,
    pub sessions: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TaskSeries {
    pub status: String,
    pub model: String,
    pub tasks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FailureSeries {
    pub failure_code: String,
    pub category: String,
    pub retry: String,
    pub credits: String,
    pub model: String,
    pub value: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreditSeries {
    pub status: String,
    pub model: String,
    pub charged: f64,
    /// The sum of `estimated_by`, kept so that older releases read the total.
    pub estimated: f64,
    /// The estimated credits split by where the estimate came from (issue 22); absent
    /// in older files, where every estimate came from the pricing table.
    #[serde(default)]
    pub estimated_by: Option<EstimatedBy>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EstimatedBy {
    pub estimated_cost: f64,
    pub pricing: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedEstimates {
    /// Oldest first.
    pub held: Vec<SavedEstimate>,
    pub evicted: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedEstimate {
    /// The task id's hash.
    pub id: u64,
    pub credits: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LostSeries {
    pub failure_code: String,
    pub model: String,
    pub credits: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MismatchSeries {
    pub failure_code: String,
    pub credits: String,
    pub tasks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestSeries {
    pub endpoint: String,
    pub code: String,
    pub requests: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Unpriced {
    pub succeeded: u64,
    pub failed: u64,
    #[serde(default)]
    pub cancelled: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LabelOverflow {
    pub failure_code: u64,
    pub model: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetters {
    pub written: u64,
    pub failed: u64,
}

/// A source's counts; `results` and `parse_errors` by name, the non-zero ones only.
#[derive(Debug, Serialize, Deserialize)]
pub struct SourceTotals {
    pub name: String,
    #[serde(with = "results_by_name")]
    pub results: [u64; RESULT_KINDS],
    #[serde(with = "parse_errors_by_name")]
    pub parse_errors: [u64; ParseError::ALL.len()],
    pub read_bytes: u64,
    pub rotations: u64,
    pub truncations: u64,
    pub files_tracked: u64,
    pub file_limit_hits: u64,
    pub last_record_unix: f64,
    pub up: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Organization {
    pub credit_balance: f64,
    pub models: Vec<ModelLimits>,
    pub max_monthly_credit_spend: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModelLimits {
    pub model: String,
    pub daily_generations: f64,
    pub max_daily_generations: Option<f64>,
    pub max_concurrent_generations: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Usage {
    pub date: String,
    pub models: Vec<ModelUsage>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModelUsage {
    pub model: String,
    pub credits: f64,
}

/// A duration histogram: its buckets (not cumulative, the last for `+Inf`) and sum
/// beside its labels.
#[derive(Debug, Serialize, Deserialize)]
pub struct DurationSeries {
    pub status: String,
    pub model: String,
    pub buckets: Vec<u64>,
    pub sum: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueueSeries {
    pub model: String,
    pub buckets: Vec<u64>,
    pub sum: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UntimedSeries {
    pub measure: String,
    pub reason: String,
    pub tasks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecentFailures {
    pub failure_code: String,
    #[serde(default)]
    pub class: Option<CodeClass>,
    pub tasks: Vec<FailedTask>,
    pub minutes: Vec<Slot>,
    pub hours: Vec<Slot>,
    #[serde(default)]
    pub clock_step: i64,
}

/// A failure code's classification, by the label values of its parts.
#[derive(Debug, Serialize, Deserialize)]
pub struct CodeClass {
    #[serde(with = "category")]
    pub category: Category,
    #[serde(with = "retry")]
    pub retry: Retry,
    #[serde(with = "credit_rule")]
    pub credits: CreditRule,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FailedTask {
    pub id: String,
    pub model: String,
    pub at: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Slot {
    pub slot: u64,
    pub tasks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Position {
    #[serde(default = "default_position_source")]
    pub source: String,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub fp_len: u32,
    pub fp: u64,
    pub offset: u64,
    pub skipping: bool,
}

/// Positions written before there were several sources are of the file source.
fn default_position_source() -> String {
    "file".into()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApiTask {
    pub id: String,
    pub added_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached: Option<Reached>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reached {
    Queued,
    Running,
}

/// A value converted between its type here and the ledger's.
pub trait Convert<T> {
    fn convert(self) -> T;
}

/// Values that are the same on disk and in memory.
macro_rules! as_is {
    ($($ty:ty),*) => {$(
        impl Convert<$ty> for $ty {
            fn convert(self) -> $ty {
                self
            }
        }
    )*};
}
as_is!(u64, u32, u16, i64, f64, bool, String, Category, Retry, CreditRule);

impl<const N: usize> Convert<[u64; N]> for [u64; N] {
    fn convert(self) -> [u64; N] {
        self
    }
}

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

/// Conversions both ways between a type here and the ledger's type of the same name
/// and fields. Each side is taken apart whole, so a field on one side only is a compile
/// error.
macro_rules! same_fields {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        impl Convert<$ty> for ledger::$ty {
            fn convert(self) -> $ty {
                let ledger::$ty { $($field),* } = self;
                $ty { $($field: $field.convert()),* }
            }
        }

        impl Convert<ledger::$ty> for $ty {
            fn convert(self) -> ledger::$ty {
                let $ty { $($field),* } = self;
                ledger::$ty { $($field: $field.convert()),* }
            }
        }
    )*};
}

same_fields! {
    Totals {
        tasks, failures, credits, credits_lost, cost_mismatches, invalid_numbers,
        credits_unpriced, unknown_failure_codes, label_overflow, dead_letter, sources,
        dedupe_ids, api_requests, api_tasks_tracked, organization, usage,
        api_credits_in_flight, durations, queues, untimed, recent, estimates, flows,
        proxy_requests, proxy_latency, proxy_created, proxy_errors,
        proxy_recent_errors, proxy_open,
    }
    HttpError { at, method, endpoint, code, message }
    SavedCreated { tasks, evicted }
    CreatedTask { id, endpoint, model, estimate, created_at }
    ProxyRequestSeries { endpoint, method, code, requests }
    ProxyErrorSeries { endpoint, code, retry, requests }
    CreatedSeries { endpoint, model, tasks }
    FlowTotals {
        invocations, node_failures, credits, sessions, session_failures, workflow_ids,
        session_ids, costed_ids,
    }
    InvocationSeries { status, partial, invocations }
    CodeSeries { failure_code, category, retry, credits, value }
    FlowCredits { status, credits }
    SessionSeries { status, sessions }
    TaskSeries { status, model, tasks }
    FailureSeries { failure_code, category, retry, credits, model, value }
    CreditSeries { status, model, charged, estimated, estimated_by }
    EstimatedBy { estimated_cost, pricing }
    SavedEstimates { held, evicted }
    SavedEstimate { id, credits }
    LostSeries { failure_code, model, credits }
    MismatchSeries { failure_code, credits, tasks }
    RequestSeries { endpoint, code, requests }
    Unpriced { succeeded, failed, cancelled }
    LabelOverflow { failure_code, model }
    DeadLetters { written, failed }
    SourceTotals {
        name, results, parse_errors, read_bytes, rotations, truncations, files_tracked,
        file_limit_hits, last_record_unix, up,
    }
    Organization { credit_balance, models, max_monthly_credit_spend }
    ModelLimits { model, daily_generations, max_daily_generations, max_concurrent_generations }
    Usage { date, models }
    ModelUsage { model, credits }
    UntimedSeries { measure, reason, tasks }
    RecentFailures { failure_code, class, tasks, minutes, hours, clock_step }
    CodeClass { category, retry, credits }
    FailedTask { id, model, at }
    Slot { slot, tasks }
    Position { source, path, dev, ino, fp_len, fp, offset, skipping }
    ApiTask { id, added_at, model, duration, estimated_cost, reached, created_at }
}

impl Convert<DurationSeries> for ledger::DurationSeries {
    fn convert(self) -> DurationSeries {
        let ledger::DurationSeries {
            status,
            model,
            histogram: ledger::Histogram { buckets, sum },
        } = self;
        DurationSeries {
            status,
            model,
            buckets,
            sum,
        }
    }
}

impl Convert<ledger::DurationSeries> for DurationSeries {
    fn convert(self) -> ledger::DurationSeries {
        let DurationSeries {
            status,
            model,
            buckets,
            sum,
        } = self;
        ledger::DurationSeries {
            status,
            model,
            histogram: ledger::Histogram { buckets, sum },
        }
    }
}

impl Convert<LatencySeries> for ledger::LatencySeries {
    fn convert(self) -> LatencySeries {
        let ledger::LatencySeries {
            endpoint,
            histogram: ledger::Histogram { buckets, sum },
        } = self;
        LatencySeries {
            endpoint,
            buckets,
            sum,
        }
    }
}

impl Convert<ledger::LatencySeries> for LatencySeries {
    fn convert(self) -> ledger::LatencySeries {
        let LatencySeries {
            endpoint,
            buckets,
            sum,
        } = self;
        ledger::LatencySeries {
            endpoint,
            histogram: ledger::Histogram { buckets, sum },
        }
    }
}

impl Convert<QueueSeries> for ledger::QueueSeries {
    fn convert(self) -> QueueSeries {
        let ledger::QueueSeries {
            model,
            histogram: ledger::Histogram { buckets, sum },
        } = self;
        QueueSeries {
            model,
            buckets,
            sum,
        }
    }
}

impl Convert<ledger::QueueSeries> for QueueSeries {
    fn convert(self) -> ledger::QueueSeries {
        let QueueSeries {
            model,
            buckets,
            sum,
        } = self;
        ledger::QueueSeries {
            model,
            histogram: ledger::Histogram { buckets, sum },
        }
    }
}

impl Convert<Reached> for ledger::Reached {
    fn convert(self) -> Reached {
        match self {
            ledger::Reached::Queued => Reached::Queued,
            ledger::Reached::Running => Reached::Running,
        }
    }
}

impl Convert<ledger::Reached> for Reached {
    fn convert(self) -> ledger::Reached {
        match self {
            Reached::Queued => ledger::Reached::Queued,
            Reached::Running => ledger::Reached::Running,
        }
    }
}

/// Counts written by name, the non-zero ones only, so that a name added later still
/// reads back; a name this build does not know is refused.
fn to_named<'a, S: serde::Serializer>(
    names: impl Iterator<Item = &'a str>,
    values: &[u64],
    s: S,
) -> Result<S::Ok, S::Error> {
    let m: BTreeMap<&str, u64> = names
        .zip(values.iter().copied())
        .filter(|(_, v)| *v > 0)
        .collect();
    m.serialize(s)
}

fn from_named<'de, D: serde::Deserializer<'de>, const N: usize>(
    names: &[&str],
    d: D,
) -> Result<[u64; N], D::Error> {
    let m = BTreeMap::<String, u64>::deserialize(d)?;
    let mut out = [0; N];
    for (k, v) in m {
        let i = names
            .iter()
            .position(|n| *n == k)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown count {k:?}")))?;
        out[i] = v;
    }
    Ok(out)
}

/// Parse errors by reason ([`ParseError::as_str`]).
mod parse_errors_by_name {
    use super::ParseError;
    const N: usize = ParseError::ALL.len();

    pub fn serialize<S: serde::Serializer>(r: &[u64; N], s: S) -> Result<S::Ok, S::Error> {
        super::to_named(ParseError::ALL.iter().map(|e| e.as_str()), r, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u64; N], D::Error> {
        let names: Vec<&str> = ParseError::ALL.iter().map(|e| e.as_str()).collect();
        super::from_named(&names, d)
    }
}

/// Line results by name ([`ResultKind::as_str`]).
mod results_by_name {
    use super::{ResultKind, RESULT_KINDS};

    pub fn serialize<S: serde::Serializer>(
        r: &[u64; RESULT_KINDS],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        super::to_named(ResultKind::ALL.iter().map(|k| k.as_str()), r, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u64; RESULT_KINDS], D::Error> {
        let names: Vec<&str> = ResultKind::ALL.iter().map(|k| k.as_str()).collect();
        super::from_named(&names, d)
    }
}

/// A label enum written as its label value, read back by it (an unknown value is
/// refused).
macro_rules! by_label {
    ($($module:ident: $ty:ty),*) => {$(
        mod $module {
            use serde::Deserialize;

            pub fn serialize<S: serde::Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(v.as_str())
            }

            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = String::deserialize(d)?;
                <$ty>::parse(&s)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown value {s:?}")))
            }
        }
    )*};
}
by_label!(category: crate::classify::Category, retry: crate::classify::Retry, credit_rule: crate::classify::CreditRule);
