//! What the proxy counted of the application's own requests to the API: answers by
//! endpoint template, method and code, and the upstream's latency by endpoint. A part of
//! the committed state, so these counters survive a restart like every other.
//!
//! The endpoint is a bounded template (`crate::proxy::endpoint`), the method one of a
//! few, the code a 3-digit status: the series stay few whatever the traffic.

use std::collections::BTreeMap;

use super::timing::Histogram;

/// Bucket bounds of the upstream's latency (request start to answer headers), seconds:
/// a task poll answers in tens of ms, a create call with an upload in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Answers the proxy passed back, of one endpoint, method and code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyRequestSeries {
    pub endpoint: String,
    pub method: String,
    pub code: String,
    pub requests: u64,
}

/// The upstream's latency for one endpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySeries {
    pub endpoint: String,
    pub histogram: Histogram,
}

/// The proxy's counters.
#[derive(Debug, Default)]
pub struct ProxyBook {
    requests: BTreeMap<(String, String, String), u64>,
    latency: BTreeMap<String, Histogram>,
}

impl ProxyBook {
    /// One answer; `latency` in seconds, `None` when there was no upstream answer.
    pub(super) fn count(&mut self, endpoint: &str, method: &str, code: &str, latency: Option<f64>) {
        let key = (endpoint.to_string(), method.to_string(), code.to_string());
        let n = self.requests.entry(key).or_default();
        *n = n.saturating_add(1);
        if let Some(seconds) = latency {
            self.latency
                .entry(endpoint.to_string())
                .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
                .observe(&LATENCY_BUCKETS, seconds);
        }
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
    ) -> Result<(), String> {
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
