//! The HTTP endpoints, on hyper 1.x: the metrics, `/` (a landing page), `/-/healthy` and
//! `/-/ready` (503 until the sources are running).
//!
//! The connections themselves (TLS, basic auth) are `server`'s, who may hold one is
//! `places`', and bcrypt checks run on `passwords`' own threads.

mod passwords;
mod places;
mod server;

pub use server::{serve, Limits};

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::Registry;

/// What the endpoints serve.
pub struct HttpState {
    /// Everything but the process metrics: changes only through [`HttpState::update_metrics`].
    pub registry: Registry,
    /// The process metrics, rendered at every scrape.
    pub process_registry: Option<Registry>,
    /// Grows with every change to `registry`.
    pub published_generation: std::sync::atomic::AtomicU64,
    /// `registry` rendered, and the generation it was rendered at.
    pub rendered: std::sync::Mutex<Option<(u64, Bytes)>>,
    /// The whole scrape body gzipped, with the generation and the time it was made.
    pub gzipped: std::sync::Mutex<Option<(u64, Instant, Bytes)>>,
    pub telemetry_path: String,
    /// The sources have opened their files at their start positions.
    pub sources_ready: AtomicBool,
    /// The last commit succeeded (or none was tried yet).
    pub committing: AtomicBool,
    /// Held for writing while a commit is published, for reading while a scrape is
    /// gathered: a scrape shows one commit whole, never half of the next.
    pub publishing: std::sync::RwLock<()>,
    /// TLS and basic auth; a reload replaces them for the connections that follow.
    pub security: std::sync::RwLock<crate::webconfig::WebSecurity>,
}

impl HttpState {
    /// Changes `registry` (a publish): under the write gate, so that no scrape sees
    /// half of it, and marks the rendered text stale.
    pub fn update_metrics(&self, f: impl FnOnce()) {
        let _gate = self.publishing.write().unwrap_or_else(|e| e.into_inner());
        f();
        self.published_generation.fetch_add(1, Ordering::Release);
    }

    /// The metrics text: `registry` rendered once per change (scrapes between two
    /// commits share it, as it is: never copied), then the live process metrics.
    pub fn render_metrics(&self) -> Chunks {
        let main = {
            let mut cache = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.published_generation.load(Ordering::Acquire);
            match cache.as_ref() {
                Some((generation, text)) if *generation == current => text.clone(),
                _ => {
                    let _gate = self.publishing.read().unwrap_or_else(|e| e.into_inner());
                    let generation = self.published_generation.load(Ordering::Acquire);
                    let text = Bytes::from(crate::metrics::render(&self.registry));
                    *cache = Some((generation, text.clone()));
                    text
                }
            }
        };
        let mut body = Chunks::from(main);
        if let Some(process) = &self.process_registry {
            body.push(Bytes::from(crate::metrics::render(process)));
        }
        body
    }

    /// The scrape body gzipped (Prometheus asks for it). It is compressed once per
    /// publish and shared, like the text, but also at least every [`GZIP_MAX_AGE`], as it
    /// carries the process metrics, which change between publishes.
    pub fn render_metrics_gzip(&self) -> Chunks {
        let mut cache = self.gzipped.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.published_generation.load(Ordering::Acquire);
        if let Some((generation, at, body)) = cache.as_ref() {
            if *generation == current && at.elapsed() < GZIP_MAX_AGE {
                return Chunks::from(body.clone());
            }
        }
        let text = self.render_metrics();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() as usize / 8),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let written = text.0.iter().try_for_each(|chunk| gz.write_all(chunk));
        let body = match written.and_then(|()| gz.finish()) {
            Ok(body) => Bytes::from(body),
            Err(_) => return text,
        };
        // `current` was read before rendering: at worst the next scrape compresses again.
        *cache = Some((current, Instant::now(), body.clone()));
        Chunks::from(body)
    }

    /// Ready: sources running and the state being committed.
    pub fn ready(&self) -> bool {
        self.sources_ready.load(Ordering::Acquire) && self.committing.load(Ordering::Acquire)
    }
}

/// How long a compressed scrape body is shared at most when nothing was published.
pub const GZIP_MAX_AGE: Duration = Duration::from_secs(1);

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

fn landing_page(state: &HttpState) -> String {
    let path = &state.telemetry_path;
    format!(
        "<!DOCTYPE html>\n<html><head><title>runway-exporter</title></head><body>\n\
         <h1>runway-exporter</h1>\n<p>Runway task outcomes as Prometheus metrics. Version {} (revision {}).</p>\n\
         <ul>\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body></html>\n",
        crate::metrics::VERSION,
        crate::metrics::REVISION,
    )
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
            let mut r = respond(StatusCode::OK, TEXT_FORMAT, state.render_metrics_gzip());
            r.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            respond(StatusCode::OK, TEXT_FORMAT, state.render_metrics())
        };
        r.headers_mut()
            .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        return r;
    }
    match path {
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            landing_page(state),
        ),
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
