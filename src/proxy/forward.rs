//! One request: refused, or forwarded to the upstream and its answer streamed back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;

use super::endpoint::Target;
use super::journal::{Entry, Journal};
use super::observe::{Observation, Observer};
use super::tee::MAX_KEPT;
use super::tee::{AnswerTee, ModelSlot, RequestTee};
use super::upstream::{Answer, Read, Resumed, Upstream};

/// What the client gets: the upstream's body as it streams (observed on the side), or
/// a small answer of ours.
pub type Body = Either<AnswerTee, Resumed<RequestTee>>;

/// An upstream origin or client that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProxyError(String);

/// Forwards requests to one upstream origin, on connections of its own: one forwarder
/// a proxy thread ([`Forwarder::sibling`]).
pub struct Forwarder {
    upstream: Upstream<RequestTee>,
    response_timeout: Duration,
    observer: Arc<Observer>,
    /// Where create answers are journaled before they go to the client.
    journal: Option<Arc<Journal>>,
}

/// Why a request is answered by the proxy itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `CONNECT`: a tunnel to anywhere.
    Connect,
    /// `http://other.host/...`: the request names a host of its own.
    AbsoluteForm,
    /// A path outside `/v1/`.
    NotApi,
    /// `.` or `..` segments, which could leave `/v1/` on the upstream.
    DotSegment,
    /// The upstream could not be reached, or broke off before answering.
    Unreachable,
    /// The upstream did not answer within `response_timeout`.
    Timeout,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::AbsoluteForm | Refusal::DotSegment => StatusCode::BAD_REQUEST,
            Refusal::NotApi => StatusCode::NOT_FOUND,
            Refusal::Unreachable => StatusCode::BAD_GATEWAY,
            Refusal::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::Connect => "runway-exporter proxy: CONNECT is not supported",
            Refusal::AbsoluteForm => {
                "runway-exporter proxy: absolute-form request targets are refused; send the path only"
            }
            Refusal::NotApi => "runway-exporter proxy: only paths under /v1/ are forwarded",
            Refusal::DotSegment => "runway-exporter proxy: paths with . or .. segments are refused",
            Refusal::Unreachable => "runway-exporter proxy: the upstream API could not be reached",
            Refusal::Timeout => "runway-exporter proxy: the upstream API did not answer in time",
        }
    }

    /// Its `reason` in `runway_exporter_proxy_refused_total`; `None` for the upstream's
    /// failures, counted as the application's requests instead (with their 502 or 504).
    fn reason(self) -> Option<&'static str> {
        match self {
            Refusal::Connect => Some("connect"),
            Refusal::AbsoluteForm => Some("absolute_form"),
            Refusal::NotApi => Some("not_api"),
            Refusal::DotSegment => Some("dot_segment"),
            Refusal::Unreachable | Refusal::Timeout => None,
        }
    }

    /// The answer, in the shape of Runway's own errors (`{"error": "..."}`).
    pub fn answer(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.message() }).to_string();
        let mut response = Response::new(Either::Right(Resumed::new(Bytes::from(body), None)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self == Refusal::Connect {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
        }
        response
    }
}

/// The headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const HOPS: usize = 9;

/// The place in [`HOP_BY_HOP`] of a lowercase header name: one comparison of its bytes,
/// by length first.
fn hop_by_hop(lowercase: &str) -> Option<usize> {
    let place = match lowercase {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    };
    // The match and the list agree (a place out of the list fails here, in the tests).
    debug_assert_eq!(HOP_BY_HOP[place].as_str(), lowercase);
    Some(place)
}

/// Whether a `Connection` option names a header beyond the hop-by-hop ones: not one of
/// [`HOP_BY_HOP`] (`Keep-Alive`, whatever its case), not empty. (`close` names one: a
/// field named `Close` goes too, as RFC 9110 18.4 reserves it for.)
fn names_more(option: &str) -> bool {
    let hop = |h: &HeaderName| h.as_str().eq_ignore_ascii_case(option);
    !option.is_empty() && !HOP_BY_HOP.iter().any(hop)
}

/// Removes the hop-by-hop headers and those the `Connection` header names: one pass over
/// the names present, one over the options, then one lookup an option that names more
/// (work in the header's length, however many options it lists: a hostile one of 64 KiB
/// of commas costs one pass). A message with none, or whose `Connection` names only
/// hop-by-hop headers (`keep-alive`: almost every one), allocates nothing.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name.as_str()) {
            present[i] = true;
        }
    }
    let more = present[0] && options(headers.get_all(header::CONNECTION)).any(names_more);
    // Values are reference-counted: kept while the map changes.
    let connection: Vec<HeaderValue> = match more {
        true => headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect(),
        false => Vec::new(),
    };
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(name);
    }
    for option in options(&connection).filter(|o| names_more(o)) {
        // A name that is no header name is no header: `remove` finds nothing.
        headers.remove(option);
    }
}

/// The options of `Connection` values: comma-separated, trimmed (some empty).
fn options<'h>(values: impl IntoIterator<Item = &'h HeaderValue>) -> impl Iterator<Item = &'h str> {
    let values = values.into_iter().filter_map(|v| v.to_str().ok());
    values.flat_map(|v| v.split(',')).map(str::trim)
}

/// `.` and `..`, also percent-encoded (any case): segments that could leave `/v1/`.
const DOT_SEGMENTS: [&str; 6] = [".", "..", "%2e", "%2e%2e", ".%2e", "%2e."];

/// The request target checked: `Ok` with the path and query to forward.
pub fn check_target(method: &Method, uri: &Uri) -> Result<PathAndQuery, Refusal> {
    if method == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(Refusal::AbsoluteForm);
    }
    let path = uri.path();
    if !path.starts_with("/v1/") {
        return Err(Refusal::NotApi);
    }
    let dot = |segment: &str| DOT_SEGMENTS.iter().any(|d| segment.eq_ignore_ascii_case(d));
    // A dot segment has a `.` or a `%`: most paths have neither.
    let suspect = memchr::memchr2(b'.', b'%', path.as_bytes()).is_some();
    if suspect && path.split('/').any(dot) {
        return Err(Refusal::DotSegment);
    }
    uri.path_and_query().cloned().ok_or(Refusal::NotApi)
}

impl Forwarder {
    /// A forwarder to the `[proxy]` settings' upstream, its answers observed by
    /// `observer`, its create answers journaled in `journal`.
    pub fn new(
        settings: &crate::config::Proxy,
        observer: Observer,
        journal: Option<Arc<Journal>>,
    ) -> Result<Forwarder, ProxyError> {
        let (scheme, authority) = settings.origin().map_err(ProxyError)?;
        let (connect_timeout, response_timeout) =
            (settings.connect_timeout, settings.response_timeout);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let origin = super::upstream::origin(scheme, authority);
        let matcher = hyper_util::client::proxy::matcher::Matcher::from_env();
        let route = super::egress::Route::to(&origin, &matcher, http, connect_timeout);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| ProxyError(format!("cannot load the system's TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(route);
        Ok(Forwarder {
            upstream: Upstream::new(https, origin),
            response_timeout,
            observer: Arc::new(observer),
            journal,
        })
    }

    /// A forwarder for another proxy thread: the same upstream, observer and journal,
    /// connections of its own.
    pub fn sibling(&self) -> Forwarder {
        Forwarder {
            upstream: self.upstream.sibling(),
            response_timeout: self.response_timeout,
            observer: self.observer.clone(),
            journal: self.journal.clone(),
        }
    }

    /// Forwards one request and gives back the upstream's answer as it streams, or the
    /// proxy's own answer when the request is refused or the upstream fails.
    pub async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        let target = match check_target(request.method(), request.uri()) {
            Ok(t) => t,
            Err(refusal) => {
                if let Some(reason) = refusal.reason() {
                    self.observer.refused(reason);
                }
                return refusal.answer();
            }
        };
        let started = Instant::now();
        let method = request.method().clone();
        let route = Target::new(target.path().to_string());
        let (mut parts, body) = request.into_parts();
        // Only a create call's body says which model: the others are not scanned.
        let model = ModelSlot::default();
        let body = RequestTee::new(body, method == Method::POST, model.clone());
        parts.uri = Uri::from(target);
        strip_hop_by_hop(&mut parts.headers);
        // `Expect: 100-continue` is this connection's: hyper answers it as the body is read.
        parts.headers.remove(header::EXPECT);
        // `Host` is the upstream's, whatever the client sent (set by `Upstream::send`).
        let upstream = Request::from_parts(parts, body);
        let answer =
            match tokio::time::timeout(self.response_timeout, self.upstream.send(upstream)).await {
                Err(_) => return self.failed(Refusal::Timeout, method, route),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "The upstream request failed.");
                    return self.failed(Refusal::Unreachable, method, route);
                }
                Ok(Ok(answer)) => answer,
            };
        let observation = Observation {
            method,
            target: route,
            code: answer.status().as_u16(),
            latency: Some(started.elapsed()),
            at: crate::clock::unix_now(),
            model: None,
            answer: None,
            should_retry: should_retry(answer.headers()),
            created: None,
        };
        let (mut parts, body) = answer.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let json = is_json(&parts.headers);
        // A stated length within what is kept, or none (chunked): read before it goes on.
        let fits = hyper::body::Body::size_hint(&body)
            .upper()
            .is_none_or(|n| n <= MAX_KEPT as u64);
        let create = observation.is_create_call();
        if let (Some(journal), true) = (&self.journal, create && json && fits) {
            let body = self.journaled(body, observation, model, journal).await;
            return match body {
                Ok(body) => Response::from_parts(parts, Either::Right(body)),
                Err((method, route)) => self.failed(Refusal::Unreachable, method, route),
            };
        }
        let body = AnswerTee::new(body, json, observation, model, self.observer.clone());
        Response::from_parts(parts, Either::Left(body))
    }

    /// A create call's answer, read whole (when it is within [`MAX_KEPT`]), its task
    /// journaled before it goes to the client, then observed; a longer one goes on as
    /// it comes, unobserved (counted as too large, as [`AnswerTee`] does); `Err` with the
    /// request's method and path when the upstream broke off or stalled.
    async fn journaled(
        &self,
        body: Answer<RequestTee>,
        mut observation: Observation,
        model: ModelSlot,
        journal: &Journal,
    ) -> Result<Resumed<RequestTee>, (Method, Target)> {
        let read = tokio::time::timeout(self.response_timeout, body.read_within(MAX_KEPT));
        observation.model = model.get().cloned().flatten();
        let bytes = match read.await {
            Ok(Read::Whole(bytes)) => bytes,
            Ok(Read::Longer(body)) => {
                self.observer.too_large();
                self.observer.send(observation);
                return Ok(body);
            }
            Ok(Read::Broken) | Err(_) => return Err((observation.method, observation.target)),
        };
        let endpoint = observation.target.endpoint();
        let (at, model) = (observation.at, observation.model.as_deref());
        let entry = Entry::of_create(endpoint, model, at, &bytes);
        // One that is no task's is not journaled; the consumer rejects it.
        if let Some(entry) = entry.and_then(|e| e.checked(crate::clock::unix_now())) {
            let place = journal.append(entry.clone());
            observation.created = Some((entry, place));
        }
        observation.answer = Some(bytes.clone());
        self.observer.send(observation);
        Ok(Resumed::new(bytes, None))
    }

    /// A connection closed for bytes that are not HTTP/1.1: counted as refused.
    pub fn malformed(&self) {
        self.observer.refused("malformed");
    }

    /// The proxy's own answer to a request the upstream did not answer, observed.
    fn failed(&self, refusal: Refusal, method: Method, target: Target) -> Response<Body> {
        let answer = refusal.answer();
        self.observer.send(Observation {
            method,
            target,
            code: answer.status().as_u16(),
            latency: None,
            at: crate::clock::unix_now(),
            model: None,
            answer: None,
            should_retry: None,
            created: None,
        });
        answer
    }
}

/// The answer's `x-should-retry` header as the SDKs read it: `true`, `false`, or none.
fn should_retry(headers: &HeaderMap) -> Option<bool> {
    // A name made once: a `&str` would be parsed as a header name at every answer.
    static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
    match headers.get(&SHOULD_RETRY)?.as_bytes() {
        b"true" => Some(true),
        b"false" => Some(false),
        _ => None,
    }
}

/// Whether an answer is JSON (`application/json`, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    let media = memchr::memchr(b';', value).map_or(value, |end| &value[..end]);
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, uri: &str) -> Result<String, Refusal> {
        check_target(&method, &uri.parse().unwrap()).map(|p| p.to_string())
    }

    #[test]
    fn only_origin_form_paths_under_v1_are_forwarded() {
        assert_eq!(
            target(Method::GET, "/v1/tasks/abc?x=1"),
            Ok("/v1/tasks/abc?x=1".into())
        );
        assert_eq!(
            target(Method::POST, "/v1/image_to_video"),
            Ok("/v1/image_to_video".into())
        );
        assert_eq!(target(Method::CONNECT, "/v1/tasks"), Err(Refusal::Connect));
        assert_eq!(
            target(Method::GET, "http://evil.example/v1/tasks/1"),
            Err(Refusal::AbsoluteForm)
        );
        assert_eq!(target(Method::GET, "/v2/tasks"), Err(Refusal::NotApi));
        assert_eq!(target(Method::GET, "/v1"), Err(Refusal::NotApi));
        assert_eq!(target(Method::GET, "/"), Err(Refusal::NotApi));
        assert_eq!(target(Method::GET, "/metrics"), Err(Refusal::NotApi));
        for sneaky in [
            "/v1/../admin",
            "/v1/./x",
            "/v1/%2e%2e/admin",
            "/v1/%2E./x",
            "/v1/a/..",
        ] {
            assert_eq!(
                target(Method::GET, sneaky),
                Err(Refusal::DotSegment),
                "{sneaky}"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        h.insert("x-runway-version", HeaderValue::from_static("2024-11-06"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["authorization", "x-runway-version"]);
    }

    #[test]
    fn every_hop_by_hop_header_goes_and_its_near_namesakes_stay() {
        let hop = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ];
        let near = [
            "t",
            "tf",
            "trailers",
            "upgrade-insecure-requests",
            "keep-alive-x",
            "x-connection",
            "proxy-authorizatio",
            "expect",
        ];
        let mut h = HeaderMap::new();
        for name in hop.iter().chain(&near) {
            h.insert(*name, HeaderValue::from_static("x"));
        }
        strip_hop_by_hop(&mut h);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        let mut want = near.to_vec();
        want.sort_unstable();
        assert_eq!(kept, want);
        // None there: nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn each_hop_by_hop_name_has_its_place_and_connection_options_any_case() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name.as_str()), Some(i), "{name}");
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}");
            assert!(h.contains_key(header::AUTHORIZATION), "{name}");
        }
        for (connection, gone) in [
            ("Keep-Alive", &[][..]),
            // A field named `Close` goes with its option (RFC 9110 18.4).
            ("close", &["close"]),
            ("KEEP-ALIVE, Close, , TE", &["close"]),
            ("keep-alive, X-Hop", &["x-hop"]),
            (
                "X-HOP,x-a-name-longer-than-any-hop-by-hop",
                &["x-hop", "x-a-name-longer-than-any-hop-by-hop"],
            ),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(connection));
            let names = [
                "close",
                "x-a-name-longer-than-any-hop-by-hop",
                "x-hop",
                "x-kept",
            ];
            for name in names {
                h.insert(name, HeaderValue::from_static("1"));
            }
            strip_hop_by_hop(&mut h);
            let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            kept.sort_unstable();
            let mut want = names.to_vec();
            want.retain(|n| !gone.contains(n));
            assert_eq!(kept, want, "{connection}");
        }
    }

    #[test]
    fn json_is_the_media_type_whatever_its_case_spaces_and_parameters() {
        let json = |value: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_bytes(value).unwrap(),
            );
            is_json(&h)
        };
        for yes in [
            &b"application/json"[..],
            b"Application/JSON",
            b" application/json ; charset=utf-8",
            b"application/json;charset=\xff",
        ] {
            assert!(json(yes), "{yes:?}");
        }
        for no in [
            &b"application/jsonx"[..],
            b"application/json-seq",
            b"text/json",
            b"application/ json",
            b"",
            b";application/json",
            b"application/problem+json",
        ] {
            assert!(!json(no), "{no:?}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn a_connection_header_of_many_options_removes_what_it_names_and_nothing_else() {
        let mut h = HeaderMap::new();
        let mut options: Vec<String> = (0..20_000).map(|i| format!("x-opt-{i}")).collect();
        options.extend([
            ",".repeat(30_000),
            "X-Named-Late".into(),
            "not a name!".into(),
        ]);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_str(&options.join(",")).unwrap(),
        );
        for i in 0..90 {
            let name = HeaderName::from_bytes(format!("x-kept-{i}").as_bytes()).unwrap();
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert("x-opt-19999", HeaderValue::from_static("1"));
        h.insert("x-named-late", HeaderValue::from_static("1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key("x-opt-19999"));
        assert!(!h.contains_key("x-named-late"));
        assert_eq!(h.len(), 91, "the 90 x-kept-* and authorization stay");
    }

    #[test]
    fn refusals_answer_in_runways_error_shape() {
        let r = Refusal::NotApi.answer();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            Refusal::Unreachable.answer().status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            Refusal::Timeout.answer().status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert!(Refusal::Connect
            .answer()
            .headers()
            .contains_key(header::ALLOW));
    }
}
