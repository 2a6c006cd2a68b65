//! The metric families, on a caller-supplied [`Registry`] (no globals), and the
//! publishing of the ledger's totals into them.
//!
//! *Publishing* copies the ledger's plain totals into the Prometheus counters, by
//! adding what each series gained since the last publish. The ledger only ever grows,
//! so published counters never go backwards, and `/metrics` shows exactly the values of
//! the last publish. Child counters are kept in a map instead of being looked up by
//! their labels every time.

use std::collections::HashMap;

use prometheus::core::{Atomic, GenericCounter, GenericCounterVec, Number};
use prometheus::{
    CounterVec, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::ledger::{LineResult, Totals};
use crate::record::ParseError;

/// The exporter's own version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from, when the build could tell.
pub const REVISION: &str = match option_env!("RUNWAY_EXPORTER_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Gauges of the API source.
pub struct ApiGauges {
    pub credit_balance: Gauge,
    pub daily_generations: GaugeVec,
    pub max_daily_generations: GaugeVec,
    pub max_concurrent_generations: GaugeVec,
    /// No labels: a vector only so that an unlimited tier can have no sample.
    pub max_monthly_credit_spend: GaugeVec,
    pub daily_credits_used: GaugeVec,
    pub tasks_tracked: IntGauge,
    pub credits_in_flight: Gauge,
}

impl ApiGauges {
    fn new(r: &Registry) -> prometheus::Result<ApiGauges> {
        Ok(ApiGauges {
            credit_balance: register(
                r,
                Gauge::with_opts(opts(
                    "runway_organization_credit_balance",
                    "Credits left in the Runway organization (GET /v1/organization).",
                ))?,
            )?,
            daily_generations: register(
                r,
                GaugeVec::new(
                    opts(
                        "runway_organization_daily_generations",
                        "Generations today, by model.",
                    ),
                    &["model"],
                )?,
            )?,
            max_daily_generations: register(
                r,
                GaugeVec::new(
                    opts(
                        "runway_organization_max_daily_generations",
                        "The tier's daily generation limit, by model; no sample when unlimited.",
                    ),
                    &["model"],
                )?,
            )?,
            max_concurrent_generations: register(
                r,
                GaugeVec::new(
                    opts(
                        "runway_organization_max_concurrent_generations",
                        "The tier's concurrent generation limit, by model; no sample when unlimited.",
                    ),
                    &["model"],
                )?,
            )?,
            max_monthly_credit_spend: register(
                r,
                GaugeVec::new(
                    opts(
                        "runway_organization_max_monthly_credit_spend",
                        "The tier's monthly credit spend limit (tier.maxMonthlyCreditSpend); no sample when unlimited.",
                    ),
                    &[],
                )?,
            )?,
            daily_credits_used: register(
                r,
                GaugeVec::new(
                    opts(
                        "runway_organization_daily_credits_used",
                        "Credits used in the current UTC day by model, by Runway's own accounting (POST /v1/organization/usage).",
                    ),
                    &["model"],
                )?,
            )?,
            credits_in_flight: register(
                r,
                Gauge::with_opts(opts(
                    "runway_api_credits_in_flight",
                    "Estimated credits (estimatedCost) of the tasks still being polled.",
                ))?,
            )?,
            tasks_tracked: register(
                r,
                IntGauge::with_opts(opts(
                    "runway_api_tasks_tracked",
                    "Tasks from the task list being polled until they end.",
                ))?,
            )?,
        })
    }
}

impl ApiGauges {
    /// Sets the gauges to what the API said last. A limit that is `null` (none) has no
    /// sample, and one that went away since the last publish loses its sample.
    fn publish(&self, t: &Totals) {
        self.tasks_tracked.set(t.api_tasks_tracked as i64);
        self.credits_in_flight.set(t.api_credits_in_flight);
        if let Some(org) = &t.organization {
            self.credit_balance.set(org.credit_balance);
            for vec in [
                &self.daily_generations,
                &self.max_daily_generations,
                &self.max_concurrent_generations,
                &self.max_monthly_credit_spend,
            ] {
                vec.reset();
            }
            for m in &org.models {
                let model = [m.model.as_str()];
                self.daily_generations
                    .with_label_values(&model)
                    .set(m.daily_generations);
                for (vec, limit) in [
                    (&self.max_daily_generations, m.max_daily_generations),
                    (
                        &self.max_concurrent_generations,
                        m.max_concurrent_generations,
                    ),
                ] {
                    if let Some(v) = limit {
                        vec.with_label_values(&model).set(v);
                    }
                }
            }
            if let Some(cap) = org.max_monthly_credit_spend {
                self.max_monthly_credit_spend
                    .with_label_values(&[] as &[&str])
                    .set(cap);
            }
        }
        if let Some(usage) = &t.usage {
            self.daily_credits_used.reset();
            // "Today" only while it is: a usage answer of an earlier day (the poll failing
            // across midnight, or a restart on another day) has no sample.
            let today = crate::clock::utc_day(std::time::SystemTime::now());
            let current = usage.date == today;
            for m in usage.models.iter().filter(|_| current) {
                self.daily_credits_used
                    .with_label_values(&[m.model.as_str()])
                    .set(m.credits);
            }
        }
    }
}

/// Every metric family of the exporter.
pub struct Metrics {
    pub tasks: IntCounterVec,
    pub task_failures: IntCounterVec,
    pub credits_charged: CounterVec,
    pub credits_estimated: CounterVec,
    pub credits_lost: CounterVec,
    pub cost_mismatches: IntCounterVec,
    pub invalid_numbers: IntCounter,
    pub credits_unpriced: IntCounterVec,
    pub build_info: GaugeVec,
    pub records: IntCounterVec,
    pub read_bytes: IntCounterVec,
    pub parse_errors: IntCounterVec,
    pub unknown_failure_codes: IntCounter,
    pub label_overflow: IntCounterVec,
    pub file_rotations: IntCounterVec,
    pub file_truncations: IntCounterVec,
    pub files_tracked: GaugeVec,
    pub file_limit_hits: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub commit_errors: IntCounter,
    pub last_commit_timestamp: Gauge,
    pub last_record_timestamp: GaugeVec,
    pub source_up: GaugeVec,
    pub dedupe_ids: IntGauge,
    pub last_commit_duration: Gauge,
    pub state_file_bytes: IntGauge,
    /// The API source's gauges, registered only when it is on.
    pub api: Option<ApiGauges>,
    pub dead_letter_lines: IntCounterVec,
    published: Published,
}

/// A published series: its family's index and its label values.
type SeriesKey = (usize, Vec<String>);
/// Child counters already looked up, with the value last published into each.
type Handles<P> = HashMap<SeriesKey, (GenericCounter<P>, <P as Atomic>::T)>;

#[derive(Default)]
struct Published {
    ints: Handles<prometheus::core::AtomicU64>,
    floats: Handles<prometheus::core::AtomicF64>,
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
    /// Registers every family on `registry` (the API gauges when `api`).
    pub fn new(registry: &Registry, api: bool) -> prometheus::Result<Metrics> {
        let r = registry;
        let m = Metrics {
            tasks: register(r, IntCounterVec::new(opts("runway_tasks_total", "Terminal task outcomes, counted once per task id."), &["status", "model"])?)?,
            task_failures: register(r, IntCounterVec::new(opts("runway_task_failures_total", "FAILED tasks by failure code; category, retry and credits come from the failure-code table."), &["failure_code", "category", "retry", "credits", "model"])?)?,
            credits_charged: register(r, CounterVec::new(opts("runway_credits_charged_total", "Credits terminal tasks were charged: the task's reported cost, else the event's credits field, else estimated from the pricing table."), &["status", "model"])?)?,
            credits_estimated: register(r, CounterVec::new(opts("runway_credits_estimated_total", "The part of runway_credits_charged_total estimated from the pricing table (the task reported no cost)."), &["status", "model"])?)?,
            credits_lost: register(r, CounterVec::new(opts("runway_credits_lost_total", "Credits FAILED tasks were charged (paid for, nothing produced); without a reported cost, estimated for the codes whose credits are lost."), &["failure_code", "model"])?)?,
            cost_mismatches: register(r, IntCounterVec::new(opts("runway_task_cost_mismatches_total", "FAILED tasks whose reported cost contradicts the failure-code table's credits rule (lost but 0, or refunded but more than 0)."), &["failure_code", "credits"])?)?,
            invalid_numbers: register(r, IntCounter::with_opts(opts("runway_exporter_invalid_numbers_total", "Records whose credits, cost or duration field was not a number in range (0 to 1e9 credits, 0 to 86400 s); the value was ignored."))?)?,
            credits_unpriced: register(r, IntCounterVec::new(opts("runway_exporter_credits_unpriced_total", "Charged or lost tasks whose credits neither the record nor the pricing table gave; their credits are not in the credit counters."), &["status"])?)?,
            build_info: register(r, GaugeVec::new(opts("runway_exporter_build_info", "Build information; the value is always 1."), &["version", "revision", "api_version"])?)?,
            records: register(r, IntCounterVec::new(opts("runway_exporter_records_total", "Lines read, by what became of them: counted, duplicate, non_terminal or rejected."), &["source", "result"])?)?,
            read_bytes: register(r, IntCounterVec::new(opts("runway_exporter_read_bytes_total", "Bytes of complete lines read."), &["source"])?)?,
            parse_errors: register(r, IntCounterVec::new(opts("runway_exporter_parse_errors_total", "Rejected lines by reason."), &["source", "reason"])?)?,
            unknown_failure_codes: register(r, IntCounter::with_opts(opts("runway_exporter_unknown_failure_codes_total", "FAILED tasks whose failure code the failure-code table does not know."))?)?,
            label_overflow: register(r, IntCounterVec::new(opts("runway_exporter_label_overflow_total", "Records whose label value was folded into \"other\" by a cardinality cap."), &["label"])?)?,
            file_rotations: register(r, IntCounterVec::new(opts("runway_exporter_file_rotations_total", "Files replaced by a new file at the same path."), &["source"])?)?,
            file_truncations: register(r, IntCounterVec::new(opts("runway_exporter_file_truncations_total", "Files found shorter than the position read; read again from the start."), &["source"])?)?,
            files_tracked: register(r, GaugeVec::new(opts("runway_exporter_files_tracked", "Files currently followed."), &["source"])?)?,
            file_limit_hits: register(r, IntCounterVec::new(opts("runway_exporter_file_limit_hits_total", "Matching files not followed because max_files was reached."), &["source"])?)?,
            api_requests: register(r, IntCounterVec::new(opts("runway_exporter_api_requests_total", "Requests to the Runway API by endpoint and HTTP status code."), &["endpoint", "code"])?)?,
            commit_errors: register(r, IntCounter::with_opts(opts("runway_exporter_commit_errors_total", "Failed commits of the state file."))?)?,
            last_commit_timestamp: register(r, Gauge::with_opts(opts("runway_exporter_last_commit_timestamp_seconds", "Unix time of the last successful commit (or publish, without a state file)."))?)?,
            last_record_timestamp: register(r, GaugeVec::new(opts("runway_exporter_last_record_timestamp_seconds", "Unix time a line was last read from the source."), &["source"])?)?,
            source_up: register(r, GaugeVec::new(opts("runway_exporter_source_up", "1 when the source is running and can read its input."), &["source"])?)?,
            dedupe_ids: register(r, IntGauge::with_opts(opts("runway_exporter_dedupe_ids", "Task ids remembered in the dedupe window."))?)?,
            last_commit_duration: register(r, Gauge::with_opts(opts("runway_exporter_last_commit_duration_seconds", "How long the last successful commit of the state file took."))?)?,
            state_file_bytes: register(r, IntGauge::with_opts(opts("runway_exporter_state_file_bytes", "Size of the state file after the last successful commit."))?)?,
            dead_letter_lines: register(r, IntCounterVec::new(opts("runway_exporter_dead_letter_lines_total", "Rejected lines written to, or dropped from, the dead-letter file."), &["result"])?)?,
            published: Published::default(),
            api: if api { Some(ApiGauges::new(r)?) } else { None },
        };
        m.build_info
            .with_label_values(&[
                VERSION,
                REVISION,
                crate::classify::Table::builtin().api_version(),
            ])
            .set(1.0);
        Ok(m)
    }

    /// Brings every published series up to `t`: the totals of the last commit.
    pub fn publish(&mut self, t: &Totals) {
        let p = &mut self.published;
        for series in &t.tasks {
            let labels = [series.status.as_str(), &series.model];
            sync(&mut p.ints, 0, &self.tasks, &labels, series.tasks);
        }
        for f in &t.failures {
            let labels = [
                f.failure_code.as_str(),
                &f.category,
                &f.retry,
                &f.credits,
                &f.model,
            ];
            sync(&mut p.ints, 1, &self.task_failures, &labels, f.value);
        }
        for series in &t.credits {
            let labels = [series.status.as_str(), &series.model];
            sync(
                &mut p.floats,
                2,
                &self.credits_charged,
                &labels,
                series.charged,
            );
            let estimated = series.estimated;
            sync(
                &mut p.floats,
                14,
                &self.credits_estimated,
                &labels,
                estimated,
            );
        }
        for series in &t.cost_mismatches {
            let labels = [series.failure_code.as_str(), &series.credits];
            sync(
                &mut p.ints,
                15,
                &self.cost_mismatches,
                &labels,
                series.tasks,
            );
        }
        let inc = t.invalid_numbers.saturating_sub(self.invalid_numbers.get());
        self.invalid_numbers.inc_by(inc);
        for series in &t.credits_lost {
            let labels = [series.failure_code.as_str(), &series.model];
            sync(
                &mut p.floats,
                3,
                &self.credits_lost,
                &labels,
                series.credits,
            );
        }
        let unpriced = &t.credits_unpriced;
        for (status, v) in [
            ("SUCCEEDED", unpriced.succeeded),
            ("FAILED", unpriced.failed),
        ] {
            sync(&mut p.ints, 4, &self.credits_unpriced, &[status], v);
        }
        let overflow = &t.label_overflow;
        for (label, v) in [
            ("failure_code", overflow.failure_code),
            ("model", overflow.model),
        ] {
            sync(&mut p.ints, 5, &self.label_overflow, &[label], v);
        }
        let inc = t
            .unknown_failure_codes
            .saturating_sub(self.unknown_failure_codes.get());
        self.unknown_failure_codes.inc_by(inc);
        for s in &t.sources {
            let name = s.name.as_str();
            for (i, (result, v)) in LineResult::RESULTS.iter().zip(s.results).enumerate() {
                // The four results every line can have, and the others once they occur.
                if i < 4 || v > 0 {
                    sync(&mut p.ints, 6, &self.records, &[name, result], v);
                }
            }
            for (e, v) in ParseError::ALL.iter().zip(s.parse_errors) {
                sync(&mut p.ints, 7, &self.parse_errors, &[name, e.reason()], v);
            }
            sync(&mut p.ints, 8, &self.read_bytes, &[name], s.read_bytes);
            sync(&mut p.ints, 9, &self.file_rotations, &[name], s.rotations);
            sync(
                &mut p.ints,
                10,
                &self.file_truncations,
                &[name],
                s.truncations,
            );
            sync(
                &mut p.ints,
                11,
                &self.file_limit_hits,
                &[name],
                s.file_limit_hits,
            );
            self.files_tracked
                .with_label_values(&[name])
                .set(s.files_tracked as f64);
            self.source_up
                .with_label_values(&[name])
                .set(if s.up { 1.0 } else { 0.0 });
            if s.last_record_unix > 0.0 {
                self.last_record_timestamp
                    .with_label_values(&[name])
                    .set(s.last_record_unix);
            }
        }
        self.dedupe_ids.set(t.dedupe_ids as i64);
        let dead = &t.dead_letter;
        for (result, v) in [("written", dead.written), ("failed", dead.failed)] {
            sync(&mut p.ints, 12, &self.dead_letter_lines, &[result], v);
        }
        for series in &t.api_requests {
            let labels = [series.endpoint.as_str(), &series.code];
            sync(
                &mut p.ints,
                13,
                &self.api_requests,
                &labels,
                series.requests,
            );
        }
        if let Some(api) = &self.api {
            api.publish(t);
        }
    }
}

/// Adds to the series what it gained since the last publish.
fn sync<P: Atomic>(
    cache: &mut Handles<P>,
    family: usize,
    vec: &GenericCounterVec<P>,
    labels: &[&str],
    total: P::T,
) where
    P::T: std::ops::Sub<Output = P::T> + PartialOrd + Copy,
{
    let key = (
        family,
        labels.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    let (counter, last) = cache
        .entry(key)
        .or_insert_with(|| (vec.with_label_values(labels), P::T::from_i64(0)));
    if total > *last {
        counter.inc_by(total - *last);
        *last = total;
    }
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
        m.publish(t);
        render(&registry)
    }

    #[test]
    fn usage_of_another_day_and_null_limits_have_no_sample() {
        let today = crate::clock::utc_day(std::time::SystemTime::now());
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
        let t = Totals {
            usage: Some(usage(&today)),
            ..t
        };
        assert!(rendered(&t)
            .contains("runway_organization_daily_credits_used{model=\"gen4_turbo\"} 150"));
    }
}
