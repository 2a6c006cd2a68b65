//! The HTTP endpoints, on hyper 1.x: the metrics, `/` (the status page of recent
//! failures, `status`), `/api/v1/failures` (its JSON), `/-/healthy` and `/-/ready` (503
//! until the sources are running).
//!
//! The connections themselves (TLS, basic auth) are `server`'s, who may hold one is
//! `places`', and bcrypt checks run on `passwords`' own threads.

mod exposition;
mod passwords;
mod places;
mod server;
mod status;

pub use exposition::Exposition;
pub use server::{serve, Limits};

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY,
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

/// Whether the client takes a gzip body (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
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

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Chunks>,
) -> Response<Chunks> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
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
        let mut r = if accepts_gzip(req.headers()) {
            let mut r = respond(StatusCode::OK, TEXT_FORMAT, state.exposition.gzip());
            r.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            respond(StatusCode::OK, TEXT_FORMAT, state.exposition.text())
        };
        r.headers_mut()
            .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        return r;
    }
    match path {
        "/" => {
            let now = crate::clock::Now::read();
            let page = state
                .exposition
                .with_recent(|r| status::page(r, now, &state.telemetry_path));
            respond(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        "/api/v1/failures" => {
            let now = crate::clock::Now::read();
            let json = state.exposition.with_recent(|r| status::json(r, now));
            let mut body = serde_json::to_vec_pretty(&json).unwrap_or_default();
            body.push(b'\n');
            respond(StatusCode::OK, "application/json", body)
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
