//! The HTTP endpoints, on hyper 1.x: the metrics, `/` (the status page of recent
//! failures, `status`), `/api/v1/failures` (its JSON), `/-/healthy` and `/-/ready` (503
//! until the sources are running).
//!
//! The connections themselves (TLS, basic auth) are `server`'s, who may hold one is
//! `places`', and bcrypt checks run on `passwords`' own threads, in the order `turns`
//! decides.

mod exposition;
mod passwords;
mod places;
mod server;
mod status;
mod turns;

pub use exposition::{Exposition, Recent};
pub use server::{serve, Limits};

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, VARY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};

/// What the endpoints serve.
pub struct HttpState {
    /// The metrics: the last published page, then the live process metrics.
    pub exposition: Exposition,
    pub telemetry_path: String,
    /// The sources have opened their files at their start positions.
    pub sources_ready: AtomicBool,
    /// The last commit succeeded (or none was tried yet).
    pub committing: AtomicBool,
    /// TLS and basic auth; a reload replaces them for the connections that follow.
    pub security: std::sync::RwLock<crate::webconfig::WebSecurity>,
}

impl HttpState {
    /// Ready: sources running and the state being committed.
    pub fn ready(&self) -> bool {
        self.sources_ready.load(Ordering::Acquire) && self.committing.load(Ordering::Acquire)
    }
}

/// Whether the client takes a gzip body: `gzip` (or `x-gzip`), or else `*`, listed with
/// a weight above 0. A weight is read as RFC 9110 writes it (`0` to `1`, at most three
/// decimals): a coding with any other weight (`q=NaN`, `q=2`, `q=1e0`) is not taken.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut wildcard = false;
    for coding in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let taken = parts.try_fold(true, |taken, p| match p.split_once('=') {
            Some((q, w)) if q.trim().eq_ignore_ascii_case("q") => {
                qvalue(w.trim()).map(|w| taken && w > 0)
            }
            _ => Some(taken),
        });
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            return taken == Some(true);
        }
        wildcard |= name == "*" && taken == Some(true);
    }
    wildcard
}

/// An RFC 9110 weight in thousandths: `0`, `0.5`, `1.000`; `None` for anything else.
fn qvalue(w: &str) -> Option<u16> {
    let (int, frac) = w.split_once('.').unwrap_or((w, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Content type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A response body sent as the chunks it was made of, in order: the shared metrics text
/// goes out as it is cached, followed by the process metrics, without first being copied
/// together into a new buffer.
#[derive(Debug, Default)]
pub struct Chunks(std::collections::VecDeque<Bytes>);

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.0.push_back(chunk);
        }
    }

    /// Bytes in all the chunks.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|c| c.len() as u64).sum()
    }
}

impl<T: Into<Bytes>> From<T> for Chunks {
    fn from(body: T) -> Self {
        let mut c = Chunks::default();
        c.push(body.into());
        c
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .pop_front()
                .map(|c| Ok(hyper::body::Frame::data(c))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len())
    }
}

/// Content-Security-Policy of every answer but the status page: nothing may load, run
/// or frame it.
const POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// Every answer: its type, and headers that keep a browser from reading it as anything
/// else (`nosniff`), keeping it (`no-store`: every answer is live) or running or framing
/// anything in it (the policy).
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Chunks>,
) -> Response<Chunks> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    r
}

/// Answers one request.
pub fn handle(state: &HttpState, req: &Request<Incoming>) -> Response<Chunks> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "Method not allowed.\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    if path == state.telemetry_path {
        let gzipped = accepts_gzip(req.headers())
            .then(|| state.exposition.gzip())
            .flatten();
        let mut r = match gzipped {
            Some(body) => {
                let mut r = respond(StatusCode::OK, TEXT_FORMAT, body);
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            None => respond(StatusCode::OK, TEXT_FORMAT, state.exposition.text()),
        };
        r.headers_mut()
            .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        return r;
    }
    match path {
        "/" => {
            let now = crate::clock::Now::read();
            let page = state.exposition.with_recent(|r| {
                status::page(&r.failures, &r.http_errors, now, &state.telemetry_path)
            });
            let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", page);
            r.headers_mut().insert(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(status::POLICY),
            );
            r
        }
        "/api/v1/failures" => {
            let now = crate::clock::Now::read();
            let json = state
                .exposition
                .with_recent(|r| status::json(&r.failures, &r.http_errors, now));
            let mut body = serde_json::to_vec_pretty(&json).unwrap_or_default();
            body.push(b'\n');
            respond(StatusCode::OK, "application/json; charset=utf-8", body)
        }
        "/-/healthy" => respond(StatusCode::OK, "text/plain; charset=utf-8", "Healthy.\n"),
        "/-/ready" if state.ready() => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", "Ready.\n")
        }
        "/-/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "Not ready.\n",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "Not found.\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_taken_only_with_a_weight_rfc_9110_allows_above_zero() {
        for yes in [
            "gzip",
            "GZIP",
            "x-gzip",
            "deflate, gzip;q=0.8",
            "gzip; q=1",
            "gzip;Q=1.000",
            "gzip;q=0.001",
            "br;q=NaN, *;q=0.5",
            "*",
        ] {
            assert!(accepts(&[yes]), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip;q=NaN",
            "gzip;q=nan",
            "gzip;q=inf",
            "gzip;q=2",
            "gzip;q=1.001",
            "gzip;q=-1",
            "gzip;q=1e0",
            "gzip;q=0.0001",
            "gzip;q=",
            "gzip;q=.5",
            "gzip;q=0.5x",
            "gzip;q=0.5;q=0",
            // gzip named and refused: the wildcard does not bring it back.
            "gzip;q=0, *",
            "*;q=0",
        ] {
            assert!(!accepts(&[no]), "{no}");
        }
        assert!(accepts(&["br", "gzip"]), "over two header lines");
    }

    #[test]
    fn every_answer_says_nosniff_no_store_and_its_policy() {
        for status in [
            StatusCode::OK,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            let r = respond(status, "text/plain; charset=utf-8", "x");
            let h = r.headers();
            assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[CACHE_CONTROL], "no-store");
            assert_eq!(h[CONTENT_SECURITY_POLICY], POLICY);
        }
    }
}
