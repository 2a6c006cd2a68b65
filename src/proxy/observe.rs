//! What the proxy observes, applied beside the forwarding, never in front of it.
//!
//! Each answer the proxy passes back makes one [`Observation`] (see `tee`), handed to
//! the [`Observer`] with `try_send` on a bounded channel: a full channel drops it and
//! counts the drop (`runway_exporter_proxy_observations_dropped_total`); a request never
//! waits for it. One consumer ([`consume`], on a thread of its own) takes observations
//! off the channel and applies them to the pipeline: the only place the proxy touches
//! the ledger, so a slow commit or a locked ledger delays observations, not requests.
//! The consumer takes them in batches of up to [`BATCH`], and after a batch that was not
//! full rests [`BATCH_PAUSE`] before the next: under load a request's hand-over is then
//! a push on the queue, not a wake-up of the consumer's thread (a system call on the
//! forwarding thread); an observation is applied at most a pause after it is made.
//!
//! Applied, for each observation:
//! - every answer: `runway_api_requests_total{endpoint,method,code}` and the upstream's
//!   latency (request start to answer headers) in `runway_api_request_duration_seconds`,
//!   committed with the ledger (they survive a restart); an error answer (400 or more,
//!   the proxy's own 502 and 504 included) also in
//!   `runway_api_errors_total{endpoint,code,retry}`, its retry advice
//!   [`crate::classify::http_retry`]'s (the answer's `x-should-retry` decides when
//!   present);
//!   an answer of 400 or more is also kept among the last HTTP errors with its
//!   `error` message, for the status page;
//! - a `GET /v1/tasks/{id}` answered 200: the task record, counted as a line of the
//!   source `proxy` (parsed as the API poller parses answers), so the ledger's dedupe
//!   counts a task seen by the proxy and by a log once; an answer whose `id` is not the
//!   path's (or that has none) is not counted as a task but rejected, reason
//!   `other_task_id` (counted, logged at most every 10 s);
//! - a `DELETE /v1/tasks/{id}` answered 2xx: the task ends `CANCELLED` when it was seen
//!   not ended; an old task never seen so is no outcome
//!   ([`crate::ledger::Ledger::task_deleted`]);
//! - a `POST` to a create endpoint (or a path the table does not know) answered 2xx with
//!   a JSON task `id` (a create call; [`Observation::is_create_call`]): one task in
//!   `runway_tasks_created_total{endpoint,model}`, the model the request's top-level
//!   `model`, else the answer's `routing.model`, else `unknown`; the task is held open
//!   ([`crate::ledger::CreatedBook`]: its records that lack a model get this one) and,
//!   with [`Follow`], tracked by the API source until it ends;
//! - a `GET /v1/tasks/{id}`, whatever its answer: the application still asks for that
//!   task, so the API source, following it, waits (`Ledger::proxy_sighting`);
//! - with `proxy.count = "created_here"` the task answers and deletions of tasks not
//!   created through this proxy are counted as requests only (another replica's
//!   exporter counts them).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use prometheus::{IntCounter, IntCounterVec, Registry};
use tokio::sync::mpsc;

use super::endpoint;
use crate::ledger::SourceId;
use crate::lines::LineSplitter;
use crate::pipeline::Pipeline;
use crate::record::ParseError;

/// The source name of what the proxy observes.
pub const SOURCE: &str = "proxy";
/// Observations waiting for the consumer at most; more are dropped and counted.
pub const CAPACITY: usize = 4096;
/// Observations the consumer takes off the queue at once at most.
pub const BATCH: usize = 256;
/// The consumer's rest after a batch that was not full. At [`CAPACITY`] observations a
/// rest, the queue overflows only past 2 million answers a second.
pub const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// One answer the proxy passed back.
#[derive(Debug, Clone)]
pub struct Observation {
    pub method: Method,
    /// The path (without the query).
    pub path: String,
    pub code: u16,
    /// Request start to the upstream's answer headers; `None`: the upstream did not
    /// answer (the proxy's own 502 or 504).
    pub latency: Option<Duration>,
    /// Unix seconds when the answer headers came.
    pub at: f64,
    /// The request body's top-level `model` (a `POST`'s).
    pub model: Option<String>,
    /// The answer's body when it is JSON, whole and at most `tee::MAX_KEPT` bytes.
    pub answer: Option<Bytes>,
    /// The answer's `x-should-retry` header, when it says `true` or `false`.
    pub should_retry: Option<bool>,
}

impl Observation {
    /// Whether it is a create call's answer: a `POST` answered 2xx to a path that
    /// creates tasks ([`endpoint::creates_tasks`]).
    pub fn is_create_call(&self) -> bool {
        self.method == Method::POST
            && (200..300).contains(&self.code)
            && endpoint::creates_tasks(&self.path)
    }
}

/// The sending side: never waits, counts what it cannot hand over.
#[derive(Debug)]
pub struct Observer {
    tx: mpsc::Sender<Observation>,
    dropped: IntCounter,
    too_large: IntCounter,
    refused: IntCounterVec,
}

/// Why the proxy refused a request without forwarding it: the values of
/// `runway_exporter_proxy_refused_total`'s `reason`, each present from the start.
pub const REFUSALS: [&str; 5] = [
    "connect",
    "absolute_form",
    "not_api",
    "dot_segment",
    "malformed",
];

impl Observer {
    /// An observer with room for `capacity` observations; its counters are registered
    /// on `live` (a registry rendered at each scrape: they must move while the ledger
    /// may be locked).
    pub fn new(
        capacity: usize,
        live: &Registry,
    ) -> prometheus::Result<(Observer, mpsc::Receiver<Observation>)> {
        let dropped = IntCounter::new(
            "runway_exporter_proxy_observations_dropped_total",
            "Answers the proxy passed back but could not observe: the observation queue was full.",
        )?;
        let too_large = IntCounter::new(
            "runway_exporter_proxy_answers_unobserved_total",
            "JSON answers the proxy passed back whole but did not read: larger than 64 KiB.",
        )?;
        let refused = IntCounterVec::new(
            prometheus::Opts::new(
                "runway_exporter_proxy_refused_total",
                "Requests the proxy answered itself without forwarding, by reason: connect (CONNECT), absolute_form (a target naming a host), not_api (a path outside /v1/), dot_segment (. or .. in the path), malformed (not HTTP/1.1; the connection is closed).",
            ),
            &["reason"],
        )?;
        for reason in REFUSALS {
            refused.with_label_values(&[reason]);
        }
        live.register(Box::new(dropped.clone()))?;
        live.register(Box::new(too_large.clone()))?;
        live.register(Box::new(refused.clone()))?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let observer = Observer {
            tx,
            dropped,
            too_large,
            refused,
        };
        Ok((observer, rx))
    }

    /// A request refused for `reason` (one of [`REFUSALS`]).
    pub fn refused(&self, reason: &'static str) {
        debug_assert!(REFUSALS.contains(&reason), "{reason}");
        self.refused.with_label_values(&[reason]).inc();
    }

    /// Hands `o` over, or drops and counts it: never waits.
    pub fn send(&self, o: Observation) {
        if self.tx.try_send(o).is_err() {
            self.dropped.inc();
        }
    }

    /// An answer too large to keep.
    pub fn too_large(&self) {
        self.too_large.inc();
    }
}

/// Registers the source `proxy`, whose lines are task records as the API answers them.
pub fn add_source(pipeline: &Pipeline) -> SourceId {
    let source = pipeline.add_source(SOURCE);
    let fields = crate::record::FieldMap::default();
    let parser = crate::record::RecordParser::new(&fields).expect("the default field map is valid");
    let handler = crate::pipeline::TaskLog::new(parser);
    pipeline.set_handler(source, Arc::new(handler));
    source
}

/// How created tasks are followed: `Some(max_tracked)` when the API source runs (a key
/// is configured), so every task created through the proxy is tracked until it ends.
pub type Follow = Option<usize>;

/// Applies observations until `drain` is cancelled (or every sender is gone), then
/// closes the queue and applies what is still in it: at shutdown, every observation
/// made before is applied before the last commit (a later one is dropped and counted).
/// Blocking: run it on a thread of its own, `runtime` the daemon's.
/// `only_created` (`proxy.count = "created_here"`): the answers and deletions of tasks
/// not created through this proxy are counted as requests only.
pub fn consume(
    mut rx: mpsc::Receiver<Observation>,
    pipeline: Arc<Pipeline>,
    (source, follow, only_created): (SourceId, Follow, bool),
    runtime: &tokio::runtime::Handle,
    drain: &tokio_util::sync::CancellationToken,
) {
    let mut splitter = LineSplitter::new(super::tee::MAX_KEPT + 1);
    let ours = |id: &str| !only_created || pipeline.with_ledger(|l| l.created.get(id).is_some());
    let mut batch = Vec::with_capacity(BATCH);
    while next_batch(&mut rx, &mut batch, runtime, drain) {
        let full = batch.len() == BATCH;
        for o in batch.drain(..) {
            apply(&pipeline, (source, follow), &mut splitter, o, &ours);
        }
        if !full {
            rest(runtime, drain);
        }
    }
    rx.close();
    while let Ok(o) = rx.try_recv() {
        apply(&pipeline, (source, follow), &mut splitter, o, &ours);
    }
}

/// Waits for observations and takes up to [`BATCH`] of them into `batch`; `false` when
/// `drain` is cancelled (or every sender is gone) and the queue is empty.
fn next_batch(
    rx: &mut mpsc::Receiver<Observation>,
    batch: &mut Vec<Observation>,
    runtime: &tokio::runtime::Handle,
    drain: &tokio_util::sync::CancellationToken,
) -> bool {
    runtime.block_on(async {
        tokio::select! {
            biased;
            taken = rx.recv_many(batch, BATCH) => taken > 0,
            _ = drain.cancelled() => false,
        }
    })
}

/// The consumer's rest between batches ([`BATCH_PAUSE`]), cut short by `drain`.
fn rest(runtime: &tokio::runtime::Handle, drain: &tokio_util::sync::CancellationToken) {
    runtime.block_on(async {
        tokio::select! {
            _ = tokio::time::sleep(BATCH_PAUSE) => {}
            _ = drain.cancelled() => {}
        }
    })
}

/// Applies one observation (see the module doc).
fn apply(
    pipeline: &Pipeline,
    (source, follow): (SourceId, Follow),
    splitter: &mut LineSplitter,
    o: Observation,
    ours: &dyn Fn(&str) -> bool,
) {
    let template = endpoint::endpoint(&o.path);
    let method = endpoint::method(&o.method);
    let code = o.code.to_string();
    let latency = o.latency.map(|d| d.as_secs_f64());
    let retry = (o.code >= 400).then(|| crate::classify::http_retry(o.code, o.should_retry));
    let asked = (o.method == Method::GET)
        .then(|| endpoint::task_id(&o.path))
        .flatten();
    pipeline.with_ledger(|l| {
        l.count_proxy_request(template, method, &code, latency);
        if let Some(retry) = retry {
            l.count_proxy_error(template, &code, retry.as_str());
            l.proxy_error(o.at, method, template, o.code, o.answer.as_deref());
        }
        if let Some(id) = asked {
            l.proxy_sighting(id, o.at);
        }
    });
    if o.is_create_call() {
        if let Some(answer) = &o.answer {
            let request = (template, o.model.as_deref(), o.at);
            created(pipeline, (source, follow), request, answer);
        }
        return;
    }
    let Some(id) = endpoint::task_id(&o.path).filter(|id| ours(id)) else {
        return;
    };
    match (o.method, o.code, o.answer) {
        (Method::GET, 200, Some(answer)) => {
            let line = one_line(&answer);
            match names_task(&answer, id) {
                true => pipeline.process(source, splitter, &line, None, Some(o.at)),
                false => pipeline.reject(source, ParseError::OtherTaskId, &line),
            }
        }
        (Method::DELETE, 200..=299, _) => {
            pipeline.with_ledger(|l| l.task_deleted(source, id, o.at));
        }
        _ => {}
    }
}

/// A create call's answer: when it names a task `id`, a task created through
/// `endpoint` at `at` (see [`super::journal::Entry::of_create`]); followed as `follow`
/// says. An `id` that is no task id is rejected (`invalid_task_id`), as a log line's.
fn created(
    pipeline: &Pipeline,
    (source, follow): (SourceId, Follow),
    (endpoint, model, at): (&str, Option<&str>, f64),
    answer: &[u8],
) {
    let Some(entry) = super::journal::Entry::of_create(endpoint, model, at, answer) else {
        return;
    };
    // An id that is no task id would go into the URL of a poll: rejected, as in a log.
    let Some(entry) = entry.checked(at) else {
        return pipeline.reject(source, ParseError::InvalidTaskId, &one_line(answer));
    };
    // Runway's estimate for the new task is what it is charged if it ends without a
    // cost (`estimate_seen` ignores what is not a number of credits in range).
    pipeline.with_ledger(|l| l.proxy_created(source, entry.task(), follow));
}

/// Whether a task answer names task `id` (its top-level `id`). One naming another task,
/// or none (a confused cache or stand-in), says nothing about this task; an answer that
/// is not JSON is left to the parser to reject.
fn names_task(answer: &[u8], id: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Named {
        id: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Named>(answer) {
        Ok(named) => named.id.as_ref().and_then(|v| v.as_str()) == Some(id),
        Err(_) => true,
    }
}

/// The answer as one line: JSON's whitespace may hold line breaks, its strings cannot.
fn one_line(answer: &[u8]) -> Vec<u8> {
    let mut line: Vec<u8> = answer
        .iter()
        .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b })
        .collect();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation() -> Observation {
        Observation {
            method: Method::GET,
            path: "/v1/tasks/t1".into(),
            code: 200,
            latency: Some(Duration::from_millis(20)),
            at: 1.0,
            model: None,
            answer: None,
            should_retry: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let live = Registry::new();
        let (observer, mut rx) = Observer::new(1, &live).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            observer.send(observation());
        }
        // No consumer: one waits, the rest are dropped at once.
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(observer.dropped.get(), 9_999);
        assert!(rx.try_recv().is_ok());
        let text = crate::metrics::render(&live);
        assert!(
            text.contains("runway_exporter_proxy_observations_dropped_total 9999"),
            "{text}"
        );
    }

    #[test]
    fn observations_are_taken_in_batches_and_the_last_ones_at_drain() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (observer, mut rx) = Observer::new(CAPACITY, &Registry::new()).unwrap();
        for _ in 0..BATCH + 44 {
            observer.send(observation());
        }
        let drain = tokio_util::sync::CancellationToken::new();
        let mut batch = Vec::new();
        assert!(next_batch(&mut rx, &mut batch, rt.handle(), &drain));
        assert_eq!(batch.len(), BATCH, "one wake-up takes a whole batch");
        batch.clear();
        assert!(next_batch(&mut rx, &mut batch, rt.handle(), &drain));
        assert_eq!(batch.len(), 44);
        batch.clear();
        // Drained and empty: no more batches, and the rest does not wait out its pause
        // (a cancelled token ends it; a hung rest would hang the test).
        drain.cancel();
        rest(rt.handle(), &drain);
        assert!(!next_batch(&mut rx, &mut batch, rt.handle(), &drain));
    }

    /// A stand-in upstream answering every request with a small JSON task.
    async fn upstream() -> std::net::SocketAddr {
        use http_body_util::Full;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|_req| async {
                    let body = Full::new(Bytes::from_static(br#"{"id":"t1","status":"RUNNING"}"#));
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(body)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_pass_while_no_observation_is_taken_and_drops_are_counted() {
        use http_body_util::{BodyExt, Full};
        let up = upstream().await;
        let settings = crate::config::Proxy {
            upstream: format!("http://{up}"),
            ..Default::default()
        };
        let live = Registry::new();
        // Room for one observation, and no consumer: observation is stuck.
        let (observer, mut rx) = Observer::new(1, &live).unwrap();
        let forwarder = super::super::Forwarder::new(&settings, observer, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let limits = super::super::Limits {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(1),
        };
        let serve = super::super::serve(listener, forwarder, None, limits, token.clone());
        tokio::spawn(serve.unwrap());
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        const N: usize = 300;
        let started = std::time::Instant::now();
        for _ in 0..N {
            let request = hyper::Request::post(format!("http://{addr}/v1/image_to_video"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"promptText":"x","model":"gen4_turbo"}"#,
                )))
                .unwrap();
            let answer = client.request(request).await.unwrap();
            assert_eq!(answer.status(), 200);
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], br#"{"id":"t1","status":"RUNNING"}"#);
        }
        let took = started.elapsed();
        eprintln!("{N} requests with observation stuck: {took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        // Every answer past the first is dropped, and counted (the count may trail the
        // last answer's bytes by the tee's drop).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let dropped = || {
            let text = crate::metrics::render(&live);
            text.lines()
                .find_map(|l| l.strip_prefix("runway_exporter_proxy_observations_dropped_total "))
                .map(|v| v.parse::<u64>().unwrap())
        };
        while dropped() != Some(N as u64 - 1) && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert_eq!(dropped(), Some(N as u64 - 1));
        let first = rx.try_recv().unwrap();
        assert_eq!(first.model.as_deref(), Some("gen4_turbo"));
        assert_eq!(first.path, "/v1/image_to_video");
        assert_eq!(first.code, 200);
        assert_eq!(
            first.answer.as_deref(),
            Some(&br#"{"id":"t1","status":"RUNNING"}"#[..])
        );
        token.cancel();
    }

    #[test]
    fn answers_become_one_line() {
        assert_eq!(
            one_line(b"{\n  \"id\": \"a\"\r\n}"),
            b"{   \"id\": \"a\"  }\n"
        );
    }
}
