//! The metric families, on a caller-supplied [`Registry`] (no globals).
//!
//! What a commit holds is exported from an immutable *snapshot* of the ledger's totals
//! ([`Snapshot`], a collector in the const-metrics way of node_exporter): a publish
//! swaps the snapshot, and a scrape renders the families from it. There is no second
//! set of counters to keep in step with the ledger, and `/metrics` shows exactly the
//! last publish. The committer's own gauges (last commit, state file size, commit
//! errors) and `build_info` are plain metrics beside it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Gauge, GaugeVec, IntCounter, IntGauge, Opts, Registry};

use crate::ledger::{
    Histogram, Origin, ResultKind, Totals, DURATION_BUCKETS, LATENCY_BUCKETS, QUEUE_BUCKETS,
};
use crate::record::ParseError;
/// The exporter's own version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from, when the build could tell.
pub const REVISION: &str = match option_env!("RUNWAY_EXPORTER_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// One exported family: its name, help, type and its `N` label names. A sample's label
/// values are `[&str; N]` ([`Families::add`]), so a count that disagrees with the
/// names fails to compile.
struct Def<const N: usize> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: [&'static str; N],
}

/// A family, whatever its count of labels: what a collector describes.
trait Family: Sync {
    fn name(&self) -> &'static str;
    fn help(&self) -> &'static str;
    fn labels(&self) -> &[&'static str];
}

impl<const N: usize> Family for Def<N> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn labels(&self) -> &[&'static str] {
        &self.labels
    }
}

const fn counter<const N: usize>(
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
) -> Def<N> {
    Def {
        name,
        help,
        kind: MetricType::COUNTER,
        labels,
    }
}

const fn gauge<const N: usize>(
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
) -> Def<N> {
    Def {
        name,
        help,
        kind: MetricType::GAUGE,
        labels,
    }
}

const fn histogram<const N: usize>(
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
) -> Def<N> {
    Def {
        name,
        help,
        kind: MetricType::HISTOGRAM,
        labels,
    }
}

const TASKS: Def<2> = counter(
    "runway_tasks_total",
    "Terminal task outcomes, counted once per task id.",
    ["status", "model"],
);
const FAILURES: Def<5> = counter(
    "runway_task_failures_total",
    "FAILED tasks by failure code; category, retry and credits come from the failure-code table.",
    ["failure_code", "category", "retry", "credits", "model"],
);
const CHARGED: Def<2> = counter("runway_credits_charged_total", "Credits terminal tasks were charged: the task's reported cost, else the event's credits field, else estimated from the pricing table.", ["status", "model"]);
const ESTIMATED: Def<3> = counter("runway_credits_estimated_total", "The part of runway_credits_charged_total that is an estimate, not a reported cost, by origin: estimated_cost (Runway's own estimatedCost for the task, its last seen) or pricing (the pricing table).", ["status", "model", "origin"]);
const LOST: Def<2> = counter("runway_credits_lost_total", "Credits FAILED tasks were charged (paid for, nothing produced); without a reported cost, estimated for the codes whose credits are lost.", ["failure_code", "model"]);
const DURATION: Def<2> = histogram("runway_task_duration_seconds", "Seconds from a task's createdAt to its terminal record (the record's own timestamp, else when it was read live or the API answered), once per task.", ["model", "status"]);
const QUEUE: Def<1> = histogram("runway_task_queue_seconds", "Seconds from a task's createdAt to its first RUNNING record: the time it waited for a concurrency slot, once per task.", ["model"]);
const UNTIMED: Def<2> = counter("runway_exporter_untimed_tasks_total", "Tasks not observed in runway_task_duration_seconds (measure=duration) or runway_task_queue_seconds (measure=queue) because their times could not be trusted, by reason.", ["measure", "reason"]);
const MISMATCHES: Def<2> = counter("runway_task_cost_mismatches_total", "FAILED tasks whose reported cost contradicts the failure-code table's credits rule (lost but 0, or refunded but more than 0).", ["failure_code", "credits"]);
const INVALID_NUMBERS: Def<0> = counter("runway_exporter_invalid_numbers_total", "Records whose credits, cost or duration field was not a number in range (0 to 1e9 credits, 0 to 86400 s); the value was ignored.", []);
const UNPRICED: Def<1> = counter("runway_exporter_credits_unpriced_total", "Charged or lost tasks whose credits neither the record (for a task deleted while running, its last estimatedCost) nor the pricing table gave; their credits are not in the credit counters.", ["status"]);
const INVOCATIONS: Def<2> = counter("runway_workflow_invocations_total", "Terminal workflow invocation outcomes, counted once per invocation id; partial=\"true\": SUCCEEDED with failed nodes.", ["status", "partial"]);
const NODE_FAILURES: Def<4> = counter("runway_workflow_node_failures_total", "Failed nodes of counted workflow invocations (nodeErrors) by failure code; category, retry and credits come from the failure-code table.", ["failure_code", "category", "retry", "credits"]);
const WORKFLOW_CREDITS: Def<1> = counter("runway_workflow_credits_total", "Credits workflow invocations cost (cost.credits, which Runway omits until every node is terminal), once per invocation, by the status of the record the cost came on.", ["status"]);
const SESSIONS: Def<1> = counter(
    "runway_realtime_sessions_total",
    "Realtime sessions that ended, counted once per session id.",
    ["status"],
);
const SESSION_FAILURES: Def<4> = counter("runway_realtime_session_failures_total", "FAILED realtime sessions by failure code; category, retry and credits come from the failure-code table.", ["failure_code", "category", "retry", "credits"]);
const RECORDS: Def<2> = counter(
    "runway_exporter_records_total",
    "Lines read, by what became of them: counted, duplicate, non_terminal or rejected.",
    ["source", "result"],
);
const READ_BYTES: Def<1> = counter(
    "runway_exporter_read_bytes_total",
    "Bytes of complete lines read.",
    ["source"],
);
const PARSE_ERRORS: Def<2> = counter(
    "runway_exporter_parse_errors_total",
    "Rejected lines by reason.",
    ["source", "reason"],
);
const UNKNOWN_CODES: Def<0> = counter(
    "runway_exporter_unknown_failure_codes_total",
    "FAILED tasks whose failure code the failure-code table does not know.",
    [],
);
const OVERFLOW: Def<1> = counter(
    "runway_exporter_label_overflow_total",
    "Records whose label value was folded into \"other\" by a cardinality cap.",
    ["label"],
);
const ROTATIONS: Def<1> = counter(
    "runway_exporter_file_rotations_total",
    "Files replaced by a new file at the same path.",
    ["source"],
);
const TRUNCATIONS: Def<1> = counter(
    "runway_exporter_file_truncations_total",
    "Files found shorter than the position read; read again from the start.",
    ["source"],
);
const FILES_TRACKED: Def<1> = gauge(
    "runway_exporter_files_tracked",
    "Files currently followed.",
    ["source"],
);
const FILE_LIMIT: Def<1> = counter(
    "runway_exporter_file_limit_hits_total",
    "Matching files not followed because max_files was reached.",
    ["source"],
);
const API_REQUESTS: Def<2> = counter(
    "runway_exporter_api_requests_total",
    "Requests to the Runway API by endpoint and HTTP status code.",
    ["endpoint", "code"],
);
const PROXY_REQUESTS: Def<3> = counter(
    "runway_api_requests_total",
    "The application's requests to the Runway API seen by the proxy, by endpoint template, method and answer code.",
    ["endpoint", "method", "code"],
);
const PROXY_LATENCY: Def<1> = histogram(
    "runway_api_request_duration_seconds",
    "The Runway API's latency to the application's requests seen by the proxy (request start to answer headers), by endpoint template.",
    ["endpoint"],
);
const PROXY_CREATED: Def<2> = counter(
    "runway_tasks_created_total",
    "Tasks created through the proxy (a POST answered 2xx with a task id), by create endpoint and model (the request's, else the answer's routing.model).",
    ["endpoint", "model"],
);
const PROXY_ERRORS: Def<3> = counter(
    "runway_api_errors_total",
    "The application's requests to the Runway API answered with an HTTP error (400 or more, the proxy's own 502 and 504 included), by endpoint template, code and retry advice: never or after_delay (Runway's table for 400, 401, 404, 405, 429, 502, 503, 504, else the SDKs' rule; the answer's x-should-retry header decides when present).",
    ["endpoint", "code", "retry"],
);
const PROXY_OPEN: Def<0> = gauge(
    "runway_proxy_tasks_open",
    "Tasks created through the proxy and not yet seen to end (by the application's polls, a log, a DELETE or the API source following them).",
    [],
);
const PROXY_OPEN_EVICTED: Def<0> = counter(
    "runway_exporter_proxy_tasks_open_evicted_total",
    "Open tasks created through the proxy dropped to make room for newer ones (at most 16384 are held); such a task is counted, if ever, under its record's own model.",
    [],
);
const LAST_RECORD: Def<1> = gauge(
    "runway_exporter_last_record_timestamp_seconds",
    "Unix time a line was last read from the source.",
    ["source"],
);
const SOURCE_UP: Def<1> = gauge(
    "runway_exporter_source_up",
    "1 when the source is running and can read its input.",
    ["source"],
);
const ESTIMATES_HELD: Def<0> = gauge(
    "runway_exporter_estimates_held",
    "Task ids whose estimatedCost is held until their terminal record is counted.",
    [],
);
const ESTIMATES_EVICTED: Def<0> = counter(
    "runway_exporter_estimates_evicted_total",
    "Held estimatedCost values dropped to make room for newer task ids; such a task, ending without a cost, is estimated from the pricing table.",
    [],
);
const DEDUPE_IDS: Def<0> = gauge(
    "runway_exporter_dedupe_ids",
    "Task ids remembered in the dedupe window.",
    [],
);
const DEAD_LETTER: Def<1> = counter(
    "runway_exporter_dead_letter_lines_total",
    "Rejected lines written to, or dropped from, the dead-letter file.",
    ["result"],
);
const CREDIT_BALANCE: Def<0> = gauge(
    "runway_organization_credit_balance",
    "Credits left in the Runway organization (GET /v1/organization).",
    [],
);
const DAILY_GENERATIONS: Def<1> = gauge(
    "runway_organization_daily_generations",
    "Generations in a rolling 24 hours, not since midnight (usage.models[].dailyGenerations), by model.",
    ["model"],
);
const MAX_DAILY: Def<1> = gauge(
    "runway_organization_max_daily_generations",
    "The tier's limit on generations in a rolling 24 hours, by model; no sample when null (no limit).",
    ["model"],
);
const MAX_CONCURRENT: Def<1> = gauge(
    "runway_organization_max_concurrent_generations",
    "The tier's limit on generations running at once, by model (more wait as THROTTLED); no sample when null (no limit).",
    ["model"],
);
const MAX_MONTHLY: Def<0> = gauge(
    "runway_organization_max_monthly_credit_spend",
    "The most credits that can be purchased in a 30-day window (tier.maxMonthlyCreditSpend; it caps auto-billing, not spending); no sample when null (no limit).",
    [],
);
const DAILY_CREDITS: Def<2> = gauge("runway_organization_daily_credits_used", "Credits used in the current UTC day by model, by Runway's own accounting (POST /v1/organization/usage); tasks=\"false\" for products that create no task (realtime avatars, voice processing).", ["model", "tasks"]);
const IN_FLIGHT: Def<0> = gauge(
    "runway_api_credits_in_flight",
    "Estimated credits (estimatedCost) of the tasks still being polled.",
    [],
);
const API_TASKS: Def<0> = gauge(
    "runway_api_tasks_tracked",
    "Tasks from the task list being polled until they end.",
    [],
);

/// The families of every snapshot.
const FAMILIES: &[&dyn Family] = &[
    &TASKS,
    &FAILURES,
    &CHARGED,
    &ESTIMATED,
    &LOST,
    &MISMATCHES,
    &INVOCATIONS,
    &NODE_FAILURES,
    &WORKFLOW_CREDITS,
    &SESSIONS,
    &SESSION_FAILURES,
    &DURATION,
    &QUEUE,
    &UNTIMED,
    &INVALID_NUMBERS,
    &UNPRICED,
    &RECORDS,
    &READ_BYTES,
    &PARSE_ERRORS,
    &UNKNOWN_CODES,
    &OVERFLOW,
    &ROTATIONS,
    &TRUNCATIONS,
    &FILES_TRACKED,
    &FILE_LIMIT,
    &API_REQUESTS,
    &LAST_RECORD,
    &SOURCE_UP,
    &DEDUPE_IDS,
    &ESTIMATES_HELD,
    &ESTIMATES_EVICTED,
    &DEAD_LETTER,
];
/// The API source's families, with it only.
const API_FAMILIES: &[&dyn Family] = &[
    &CREDIT_BALANCE,
    &DAILY_GENERATIONS,
    &MAX_DAILY,
    &MAX_CONCURRENT,
    &MAX_MONTHLY,
    &DAILY_CREDITS,
    &IN_FLIGHT,
    &API_TASKS,
];

/// Families being filled from a snapshot.
#[derive(Default)]
struct Families(HashMap<&'static str, MetricFamily>);

impl Families {
    /// A metric of `def`'s family, with label values in the order of its label names.
    fn metric<const N: usize>(
        &mut self,
        def: &'static Def<N>,
        values: &[&str; N],
        fill: impl FnOnce(&mut Metric),
    ) {
        let family = self.0.entry(def.name).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(def.name.to_string());
            f.set_help(def.help.to_string());
            f.set_field_type(def.kind);
            f
        });
        let mut labels: Vec<LabelPair> = def
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            })
            .collect();
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        let mut metric = Metric::from_label(labels);
        fill(&mut metric);
        family.mut_metric().push(metric);
    }

    /// One histogram with the bucket bounds `bounds` (`+Inf` is the count).
    fn histogram<const N: usize>(
        &mut self,
        def: &'static Def<N>,
        values: &[&str; N],
        h: &Histogram,
        bounds: &[f64],
    ) {
        self.metric(def, values, |metric| {
            let mut cumulative = 0;
            let buckets = bounds
                .iter()
                .zip(&h.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut b = prometheus::proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut p = prometheus::proto::Histogram::default();
            p.set_bucket(buckets);
            p.set_sample_count(h.count());
            p.set_sample_sum(h.sum);
            metric.set_histogram(p);
        });
    }

    /// One sample; label values in the order of the family's label names.
    fn add<const N: usize>(&mut self, def: &'static Def<N>, values: &[&str; N], value: f64) {
        self.metric(def, values, |metric| match def.kind {
            MetricType::COUNTER => {
                let mut c = prometheus::proto::Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            _ => {
                let mut g = prometheus::proto::Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
        });
    }
}

/// The workflow invocations' and realtime sessions' families.
fn flow_families(f: &mut Families, t: &crate::ledger::FlowTotals) {
    for s in &t.invocations {
        let partial = if s.partial { "true" } else { "false" };
        f.add(&INVOCATIONS, &[&s.status, partial], s.invocations as f64);
    }
    let codes = [
        (&NODE_FAILURES, &t.node_failures),
        (&SESSION_FAILURES, &t.session_failures),
    ];
    for (def, series) in codes {
        for s in series {
            let labels = [s.failure_code.as_str(), &s.category, &s.retry, &s.credits];
            f.add(def, &labels, s.value as f64);
        }
    }
    for s in &t.credits {
        f.add(&WORKFLOW_CREDITS, &[&s.status], s.credits);
    }
    for s in &t.sessions {
        f.add(&SESSIONS, &[&s.status], s.sessions as f64);
    }
}

/// The families of a snapshot of the totals.
fn families(t: &Totals, api: bool) -> Vec<MetricFamily> {
    let mut f = Families::default();
    for s in &t.tasks {
        f.add(&TASKS, &[&s.status, &s.model], s.tasks as f64);
    }
    for s in &t.failures {
        let labels = [
            s.failure_code.as_str(),
            &s.category,
            &s.retry,
            &s.credits,
            &s.model,
        ];
        f.add(&FAILURES, &labels, s.value as f64);
    }
    for s in &t.credits {
        f.add(&CHARGED, &[&s.status, &s.model], s.charged);
        let by = s.by_origin();
        for origin in Origin::ALL {
            let labels = [s.status.as_str(), &s.model, origin.as_str()];
            f.add(&ESTIMATED, &labels, by.get(*origin));
        }
    }
    for s in &t.credits_lost {
        f.add(&LOST, &[&s.failure_code, &s.model], s.credits);
    }
    for s in &t.cost_mismatches {
        f.add(&MISMATCHES, &[&s.failure_code, &s.credits], s.tasks as f64);
    }
    flow_families(&mut f, &t.flows);
    f.add(&INVALID_NUMBERS, &[], t.invalid_numbers as f64);
    let unpriced = &t.credits_unpriced;
    f.add(&UNPRICED, &["SUCCEEDED"], unpriced.succeeded as f64);
    f.add(&UNPRICED, &["FAILED"], unpriced.failed as f64);
    f.add(&UNPRICED, &["CANCELLED"], unpriced.cancelled as f64);
    let overflow = &t.label_overflow;
    f.add(&OVERFLOW, &["failure_code"], overflow.failure_code as f64);
    f.add(&OVERFLOW, &["model"], overflow.model as f64);
    f.add(&UNKNOWN_CODES, &[], t.unknown_failure_codes as f64);
    for s in &t.durations {
        let labels = [s.model.as_str(), &s.status];
        f.histogram(&DURATION, &labels, &s.histogram, &DURATION_BUCKETS);
    }
    for s in &t.queues {
        f.histogram(&QUEUE, &[&s.model], &s.histogram, &QUEUE_BUCKETS);
    }
    for s in &t.untimed {
        f.add(&UNTIMED, &[&s.measure, &s.reason], s.tasks as f64);
    }
    for s in &t.sources {
        let name = s.name.as_str();
        for (i, (result, v)) in ResultKind::ALL.iter().zip(s.results).enumerate() {
            // The four results every line can have, and the others once they occur.
            if i < 4 || v > 0 {
                f.add(&RECORDS, &[name, result.as_str()], v as f64);
            }
        }
        for (e, v) in ParseError::ALL.iter().zip(s.parse_errors) {
            f.add(&PARSE_ERRORS, &[name, e.as_str()], v as f64);
        }
        f.add(&READ_BYTES, &[name], s.read_bytes as f64);
        f.add(&ROTATIONS, &[name], s.rotations as f64);
        f.add(&TRUNCATIONS, &[name], s.truncations as f64);
        f.add(&FILE_LIMIT, &[name], s.file_limit_hits as f64);
        f.add(&FILES_TRACKED, &[name], s.files_tracked as f64);
        f.add(&SOURCE_UP, &[name], if s.up { 1.0 } else { 0.0 });
        if s.last_record_unix > 0.0 {
            f.add(&LAST_RECORD, &[name], s.last_record_unix);
        }
    }
    f.add(&DEDUPE_IDS, &[], t.dedupe_ids as f64);
    f.add(&ESTIMATES_HELD, &[], t.estimates.held.len() as f64);
    f.add(&ESTIMATES_EVICTED, &[], t.estimates.evicted as f64);
    let dead = &t.dead_letter;
    f.add(&DEAD_LETTER, &["written"], dead.written as f64);
    f.add(&DEAD_LETTER, &["failed"], dead.failed as f64);
    for s in &t.api_requests {
        f.add(&API_REQUESTS, &[&s.endpoint, &s.code], s.requests as f64);
    }
    for s in &t.proxy_requests {
        let labels = [s.endpoint.as_str(), &s.method, &s.code];
        f.add(&PROXY_REQUESTS, &labels, s.requests as f64);
    }
    for s in &t.proxy_errors {
        let labels = [s.endpoint.as_str(), &s.code, &s.retry];
        f.add(&PROXY_ERRORS, &labels, s.requests as f64);
    }
    for s in &t.proxy_created {
        f.add(&PROXY_CREATED, &[&s.endpoint, &s.model], s.tasks as f64);
    }
    // With the proxy's other series: once it has passed a request.
    if !t.proxy_requests.is_empty() || !t.proxy_open.tasks.is_empty() {
        f.add(&PROXY_OPEN, &[], t.proxy_open.tasks.len() as f64);
        f.add(&PROXY_OPEN_EVICTED, &[], t.proxy_open.evicted as f64);
    }
    for s in &t.proxy_latency {
        f.histogram(
            &PROXY_LATENCY,
            &[&s.endpoint],
            &s.histogram,
            &LATENCY_BUCKETS,
        );
    }
    if api {
        api_families(&mut f, t);
    }
    f.0.into_values().collect()
}

/// What the API said last. A limit that is `null` (none) has no sample; so has a usage
/// answer of another day than today (UTC): the poll failing across midnight, or a
/// restart on another day.
fn api_families(f: &mut Families, t: &Totals) {
    f.add(&API_TASKS, &[], t.api_tasks_tracked as f64);
    f.add(&IN_FLIGHT, &[], t.api_credits_in_flight);
    let org = t.organization.as_ref();
    f.add(&CREDIT_BALANCE, &[], org.map_or(0.0, |o| o.credit_balance));
    for m in org.iter().flat_map(|o| &o.models) {
        let model = [m.model.as_str()];
        f.add(&DAILY_GENERATIONS, &model, m.daily_generations);
        if let Some(v) = m.max_daily_generations {
            f.add(&MAX_DAILY, &model, v);
        }
        if let Some(v) = m.max_concurrent_generations {
            f.add(&MAX_CONCURRENT, &model, v);
        }
    }
    if let Some(cap) = org.and_then(|o| o.max_monthly_credit_spend) {
        f.add(&MAX_MONTHLY, &[], cap);
    }
    let today = crate::clock::utc_day(std::time::SystemTime::now());
    for usage in t.usage.iter().filter(|u| u.date == today) {
        for m in &usage.models {
            let tasks = if crate::runway_api::api().model_has_tasks(&m.model) {
                "true"
            } else {
                "false"
            };
            f.add(&DAILY_CREDITS, &[m.model.as_str(), tasks], m.credits);
        }
    }
}

/// The last published totals, as a collector: each gather renders them.
pub struct Snapshot {
    totals: Arc<RwLock<Arc<Totals>>>,
    api: bool,
    descs: Vec<Desc>,
}

impl Snapshot {
    fn new(api: bool) -> prometheus::Result<Snapshot> {
        let defs = FAMILIES.iter().chain(API_FAMILIES.iter().filter(|_| api));
        let descs = defs
            .map(|d| {
                let labels = d.labels().iter().map(|l| l.to_string()).collect();
                Desc::new(
                    d.name().to_string(),
                    d.help().to_string(),
                    labels,
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Snapshot {
            totals: Arc::default(),
            api,
            descs,
        })
    }

    fn handle(&self) -> Snapshot {
        Snapshot {
            totals: self.totals.clone(),
            api: self.api,
            descs: self.descs.clone(),
        }
    }
}

impl Collector for Snapshot {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let totals = crate::sync::read(&self.totals).clone();
        families(&totals, self.api)
    }
}

/// The exporter's metrics: the snapshot of the committed totals, and the committer's
/// own.
pub struct Metrics {
    snapshot: Snapshot,
    pub build_info: GaugeVec,
    pub commit_errors: IntCounter,
    pub last_commit_timestamp: Gauge,
    pub last_commit_duration: Gauge,
    pub state_file_bytes: IntGauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Registers every family on `registry` (the API source's when `api`).
    pub fn new(registry: &Registry, api: bool) -> prometheus::Result<Metrics> {
        let r = registry;
        let snapshot = Snapshot::new(api)?;
        r.register(Box::new(snapshot.handle()))?;
        let m = Metrics {
            snapshot,
            build_info: register(
                r,
                labelled(
                    opts(
                        "runway_exporter_build_info",
                        "Build information; the value is always 1.",
                    ),
                    ["version", "revision", "api_version"],
                    [
                        VERSION,
                        REVISION,
                        crate::classify::Table::builtin().api_version(),
                    ],
                )?,
            )?,
            commit_errors: register(
                r,
                IntCounter::with_opts(opts(
                    "runway_exporter_commit_errors_total",
                    "Failed commits of the state file.",
                ))?,
            )?,
            last_commit_timestamp: register(
                r,
                Gauge::with_opts(opts(
                    "runway_exporter_last_commit_timestamp_seconds",
                    "Unix time the committed state was last known to hold everything counted: a successful commit, or a round with nothing new (said again at least every minute while idle).",
                ))?,
            )?,
            last_commit_duration: register(
                r,
                Gauge::with_opts(opts(
                    "runway_exporter_last_commit_duration_seconds",
                    "How long the last successful commit of the state file took.",
                ))?,
            )?,
            state_file_bytes: register(
                r,
                IntGauge::with_opts(opts(
                    "runway_exporter_state_file_bytes",
                    "Size of the state file after the last successful commit.",
                ))?,
            )?,
        };
        Ok(m)
    }

    /// Publishes `t`, the totals of the last commit: the next gather renders them.
    pub fn publish(&mut self, t: Totals) {
        *crate::sync::write(&self.snapshot.totals) = Arc::new(t);
    }
}

/// A gauge family of `N` label names, set to 1 for one set of `N` label values (the
/// counts agree at compile time).
fn labelled<const N: usize>(
    opts: Opts,
    names: [&str; N],
    values: [&str; N],
) -> prometheus::Result<GaugeVec> {
    let vec = GaugeVec::new(opts, &names)?;
    vec.with_label_values(&values).set(1.0);
    Ok(vec)
}

/// The registry rendered in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(16 * 1024);
    // Encoding our own families into a Vec cannot fail.
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// The registry as JSON: `[{name, help, type, samples: [{labels, value}]}]`.
pub fn render_json(registry: &Registry) -> serde_json::Value {
    use prometheus::proto::MetricType;
    let families = registry
        .gather()
        .into_iter()
        .map(|f| {
            let kind = f.get_field_type();
            let samples: Vec<serde_json::Value> = f
                .get_metric()
                .iter()
                .map(|m| {
                    let labels: serde_json::Map<String, serde_json::Value> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_string(), l.value().into()))
                        .collect();
                    let value = match kind {
                        MetricType::COUNTER => m.get_counter().get_value(),
                        MetricType::GAUGE => m.get_gauge().get_value(),
                        _ => f64::NAN,
                    };
                    serde_json::json!({ "labels": labels, "value": value })
                })
                .collect();
            serde_json::json!({
                "name": f.name(),
                "help": f.help(),
                "type": format!("{kind:?}").to_lowercase(),
                "samples": samples,
            })
        })
        .collect();
    serde_json::Value::Array(families)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Organization, Usage};

    fn rendered(t: &Totals) -> String {
        let registry = Registry::new();
        let mut m = Metrics::new(&registry, true).unwrap();
        m.publish(t.clone());
        render(&registry)
    }

    /// The organization's help says what Runway says: a purchase cap over 30 days, not a
    /// spending cap; a rolling 24 hours, not a day; null is no limit.
    #[test]
    fn organization_help_says_what_runway_says() {
        assert!(MAX_MONTHLY.help.contains("purchased in a 30-day window"));
        assert!(!MAX_MONTHLY.help.contains("spend limit"));
        assert!(DAILY_GENERATIONS.help.contains("rolling 24 hours"));
        assert!(MAX_DAILY.help.contains("rolling 24 hours"));
        for help in [MAX_DAILY.help, MAX_CONCURRENT.help, MAX_MONTHLY.help] {
            assert!(help.contains("null (no limit)"), "{help}");
        }
    }

    #[test]
    fn usage_of_another_day_and_null_limits_have_no_sample() {
        let usage = |date: &str| Usage {
            date: date.into(),
            models: vec![crate::ledger::ModelUsage {
                model: "gen4_turbo".into(),
                credits: 150.0,
            }],
        };
        let t = Totals {
            usage: Some(usage("1999-01-01")),
            organization: Some(Organization {
                credit_balance: 10.0,
                models: vec![crate::ledger::ModelLimits {
                    model: "veo3".into(),
                    daily_generations: 3.0,
                    max_daily_generations: None,
                    max_concurrent_generations: Some(2.0),
                }],
                max_monthly_credit_spend: None,
            }),
            ..Totals::default()
        };
        let text = rendered(&t);
        assert!(
            !text.contains("runway_organization_daily_credits_used{"),
            "{text}"
        );
        assert!(!text.contains("runway_organization_max_daily_generations{"));
        assert!(!text.contains("runway_organization_max_monthly_credit_spend "));
        assert!(text.contains("runway_organization_max_concurrent_generations{model=\"veo3\"} 2"));
        // The render reads the clock itself: one that straddled a UTC midnight is redone.
        let text = loop {
            let today = crate::clock::utc_day(std::time::SystemTime::now());
            let text = rendered(&Totals {
                usage: Some(usage(&today)),
                ..t.clone()
            });
            if crate::clock::utc_day(std::time::SystemTime::now()) == today {
                break text;
            }
        };
        assert!(text.contains(
            "runway_organization_daily_credits_used{model=\"gen4_turbo\",tasks=\"true\"} 150"
        ));
        let text = loop {
            let today = crate::clock::utc_day(std::time::SystemTime::now());
            let mut avatars = usage(&today);
            avatars.models[0].model = "gwm1_avatars".into();
            let text = rendered(&Totals {
                usage: Some(avatars),
                ..t.clone()
            });
            if crate::clock::utc_day(std::time::SystemTime::now()) == today {
                break text;
            }
        };
        assert!(
            text.contains(
                "runway_organization_daily_credits_used{model=\"gwm1_avatars\",tasks=\"false\"} 150"
            ),
            "realtime avatars create no task: {text}"
        );
    }
}
