//! What the proxy counted of the application's own requests to the API: answers by
//! endpoint template, method and code, its error answers (400 or more) by endpoint,
//! code and retry advice, and the upstream's latency by endpoint; and its last HTTP
//! error answers for the status page (`http_errors`). A part of the committed state,
//! so these survive a restart like every other counter.
//!
//! The endpoint is a bounded template (`crate::proxy::endpoint`), the method one of a
//! few, the code a 3-digit status: the series stay few whatever the traffic.

use std::collections::BTreeMap;

use super::http_errors::{HttpError, HttpErrors};
use super::timing::Histogram;

/// Bucket bounds of the upstream's latency (request start to answer headers), seconds:
/// a task poll answers in tens of ms, a create call with an upload in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The series of an answer the proxy passed back: its endpoint template, method and code.
pub type RequestKey<'a> = (&'a str, &'a str, &'a str);

/// Answers the proxy passed back, of one endpoint, method and code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequestSeries {
    pub endpoint: String,
    pub method: String,
    pub code: String,
    pub requests: u64,
}

/// Error answers (400 or more) the proxy passed back or gave, of one endpoint, code and
/// retry advice (`crate::classify::http_retry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyErrorSeries {
    pub endpoint: String,
    pub code: String,
    pub retry: String,
    pub requests: u64,
}

/// Tasks created through the proxy, of one create endpoint and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSeries {
    pub endpoint: String,
    pub model: String,
    pub tasks: u64,
}

/// Distinct models counted among created tasks at most; more fold into `other`.
pub const MAX_CREATED_MODELS: usize = 200;

/// The upstream's latency for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySeries {
    pub endpoint: String,
    pub histogram: Histogram,
}

/// The proxy's counters.
#[derive(Debug, Default)]
pub struct ProxyBook {
    requests: BTreeMap<(String, String, String), u64>,
    latency: BTreeMap<String, Histogram>,
    created: BTreeMap<(String, String), u64>,
    errors: BTreeMap<(String, String, String), u64>,
    recent_errors: HttpErrors,
}

impl ProxyBook {
    /// `n` answers of one endpoint, method and code; the `latencies` (seconds) of those
    /// the upstream answered.
    pub(super) fn count(&mut self, series: RequestKey<'_>, n: u64, latencies: &[f64]) {
        let (endpoint, method, code) = series;
        let key = (endpoint.to_string(), method.to_string(), code.to_string());
        let n_now = self.requests.entry(key).or_default();
        *n_now = n_now.saturating_add(n);
        if latencies.is_empty() {
            return;
        }
        let histogram = self
            .latency
            .entry(endpoint.to_string())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS));
        for seconds in latencies {
            histogram.observe(&LATENCY_BUCKETS, *seconds);
        }
    }

    /// `n` error answers of `endpoint` and `code`, with their retry advice.
    pub(super) fn count_error(&mut self, endpoint: &str, code: &str, retry: &str, n: u64) {
        let key = (endpoint.to_string(), code.to_string(), retry.to_string());
        let e = self.errors.entry(key).or_default();
        *e = e.saturating_add(n);
    }

    pub fn errors(&self) -> Vec<ProxyErrorSeries> {
        self.errors
            .iter()
            .map(|((endpoint, code, retry), n)| ProxyErrorSeries {
                endpoint: endpoint.clone(),
                code: code.clone(),
                retry: retry.clone(),
                requests: *n,
            })
            .collect()
    }

    /// One task created through `endpoint` for `model` (a label already).
    pub(super) fn count_created(&mut self, endpoint: &str, model: &str, n: u64) {
        let known = self.created.keys().any(|(_, m)| m == model);
        let distinct = || {
            let mut models: Vec<&str> = self.created.keys().map(|(_, m)| m.as_str()).collect();
            models.sort_unstable();
            models.dedup();
            models.len()
        };
        let model = if known || distinct() < MAX_CREATED_MODELS {
            model
        } else {
            super::OTHER
        };
        let n_now = self
            .created
            .entry((endpoint.to_string(), model.to_string()))
            .or_default();
        *n_now = n_now.saturating_add(n);
    }

    /// An answer with an HTTP error `code` (400 or more; others are left out), its
    /// body when the proxy kept it: kept among the last ones, for the status page.
    pub(super) fn error(
        &mut self,
        at: f64,
        method: &str,
        endpoint: &str,
        code: u16,
        body: Option<&[u8]>,
    ) {
        self.recent_errors.seen(at, method, endpoint, code, body);
    }

    /// The last HTTP error answers, oldest first.
    pub fn recent_errors(&self) -> Vec<HttpError> {
        self.recent_errors.list()
    }

    /// Adds the saved last HTTP error answers.
    pub(super) fn restore_errors(&mut self, saved: &[HttpError]) {
        self.recent_errors.restore(saved);
    }

    pub fn created(&self) -> Vec<CreatedSeries> {
        self.created
            .iter()
            .map(|((endpoint, model), n)| CreatedSeries {
                endpoint: endpoint.clone(),
                model: model.clone(),
                tasks: *n,
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<ProxyRequestSeries> {
        self.requests
            .iter()
            .map(|((endpoint, method, code), n)| ProxyRequestSeries {
                endpoint: endpoint.clone(),
                method: method.clone(),
                code: code.clone(),
                requests: *n,
            })
            .collect()
    }

    pub fn latency(&self) -> Vec<LatencySeries> {
        self.latency
            .iter()
            .map(|(endpoint, h)| LatencySeries {
                endpoint: endpoint.clone(),
                histogram: h.clone(),
            })
            .collect()
    }

    /// Adds saved counters; a histogram of another shape is an error.
    pub(super) fn restore(
        &mut self,
        requests: &[ProxyRequestSeries],
        latency: &[LatencySeries],
        created: &[CreatedSeries],
    ) -> Result<(), String> {
        for s in created {
            self.count_created(&s.endpoint, &s.model, s.tasks);
        }
        for s in requests {
            let key = (s.endpoint.clone(), s.method.clone(), s.code.clone());
            let n = self.requests.entry(key).or_default();
            *n = n.saturating_add(s.requests);
        }
        for s in latency {
            if !s.histogram.fits_shape(&LATENCY_BUCKETS) {
                return Err(format!(
                    "proxy latency of {}: not a histogram of its buckets",
                    s.endpoint
                ));
            }
            self.latency
                .entry(s.endpoint.clone())
                .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
                .add(&s.histogram);
        }
        Ok(())
    }
}
