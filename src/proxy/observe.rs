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
//! A batch is applied with the ledger locked once for its requests (counted by endpoint,
//! method and code), and once for each run of task answers between two creations or
//! deletions, counted as one block of lines as a log's are (at most [`MAX_BLOCK`]
//! bytes): in the batch's order wherever order matters.
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
use super::endpoint::Target;
use super::journal::{Checked, Entry, Journal};
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
    /// The path (without the query) and its template.
    pub target: Target,
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
    /// A create answer's task as the forwarder read it to journal it (so the consumer
    /// does not parse nor check the answer again), with its journal line's place when
    /// written.
    pub created: Option<(Checked, Option<u64>)>,
}

impl Observation {
    /// Whether it is a create call's answer: a `POST` answered 2xx to a path that
    /// creates tasks ([`Target::creates_tasks`]).
    pub fn is_create_call(&self) -> bool {
        self.method == Method::POST
            && (200..300).contains(&self.code)
            && self.target.creates_tasks()
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
    (pipeline, journal): (Arc<Pipeline>, Option<Arc<Journal>>),
    (source, follow, only_created): (SourceId, Follow, bool),
    runtime: &tokio::runtime::Handle,
    drain: &tokio_util::sync::CancellationToken,
) {
    let mut applier = Applier::new((&pipeline, journal), (source, follow, only_created));
    let mut batch = Vec::with_capacity(BATCH);
    while next_batch(&mut rx, &mut batch, runtime, drain) {
        let full = batch.len() == BATCH;
        applier.apply(&batch);
        batch.clear();
        if !full {
            rest(runtime, drain);
        }
    }
    rx.close();
    while let Ok(o) = rx.try_recv() {
        batch.push(o);
    }
    applier.apply(&batch);
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

/// Task answers gathered into one block at most this long before they are counted.
const MAX_BLOCK: usize = 1 << 20;

/// Applies batches of observations (see the module doc), locking the ledger once a batch
/// for the requests, and once for each run of task answers between two creations or
/// deletions: the answers of a run are counted as one block of lines, as a log's are.
struct Applier<'p> {
    pipeline: &'p Pipeline,
    /// Told which journal lines' creates are applied.
    journal: Option<Arc<Journal>>,
    source: SourceId,
    follow: Follow,
    only_created: bool,
    splitter: LineSplitter,
    /// The task answers of the current run, a line each.
    block: Vec<u8>,
    /// When the run's last answer came.
    block_at: f64,
}

/// Answers of one endpoint, method and code in a batch, with their upstream latencies.
struct Tally {
    endpoint: &'static str,
    method: &'static str,
    code: u16,
    n: u64,
    latencies: Vec<f64>,
}

impl<'p> Applier<'p> {
    fn new(
        (pipeline, journal): (&'p Pipeline, Option<Arc<Journal>>),
        (source, follow, only_created): (SourceId, Follow, bool),
    ) -> Self {
        Applier {
            pipeline,
            journal,
            source,
            follow,
            only_created,
            splitter: LineSplitter::new(super::tee::MAX_KEPT + 1),
            block: Vec::new(),
            block_at: 0.0,
        }
    }

    /// Applies `batch`, in its order where order matters (a task's creation before its
    /// answers, its answers before its deletion).
    fn apply(&mut self, batch: &[Observation]) {
        if batch.is_empty() {
            return;
        }
        self.count_requests(batch);
        let mut asked = Vec::new();
        for o in batch {
            self.task_effect(o, &mut asked);
        }
        self.flush(&mut asked);
    }

    /// Counts every answer of `batch` as a request, and its error answers, under one lock.
    fn count_requests(&self, batch: &[Observation]) {
        let mut tallies: Vec<Tally> = Vec::new();
        for o in batch {
            let endpoint = o.target.endpoint();
            let method = endpoint::method(&o.method);
            let at = tallies
                .iter()
                .position(|t| (t.endpoint, t.method, t.code) == (endpoint, method, o.code));
            let tally = match at {
                Some(i) => &mut tallies[i],
                None => {
                    let code = o.code;
                    let latencies = Vec::new();
                    tallies.push(Tally {
                        endpoint,
                        method,
                        code,
                        n: 0,
                        latencies,
                    });
                    tallies.last_mut().expect("just pushed")
                }
            };
            tally.n += 1;
            tally.latencies.extend(o.latency.map(|d| d.as_secs_f64()));
        }
        self.pipeline.with_ledger(|l| {
            for t in &tallies {
                let code = t.code.to_string();
                l.count_proxy_requests((t.endpoint, t.method, &code), t.n, &t.latencies);
            }
            for o in batch.iter().filter(|o| o.code >= 400) {
                let template = o.target.endpoint();
                let code = o.code.to_string();
                let retry = crate::classify::http_retry(o.code, o.should_retry);
                l.count_proxy_error(template, &code, retry.as_str());
                let method = endpoint::method(&o.method);
                l.proxy_error(o.at, method, template, o.code, o.answer.as_deref());
            }
        });
    }

    /// What `o` says of a task: a creation, an answer (gathered in the run), a deletion;
    /// the task ids of `GET`s go to `asked`.
    fn task_effect<'b>(&mut self, o: &'b Observation, asked: &mut Vec<(&'b str, f64)>) {
        if o.is_create_call() {
            self.flush(asked);
            self.created(o);
            return;
        }
        let Some(id) = o.target.task_id() else {
            return;
        };
        if o.method == Method::GET {
            asked.push((id, o.at));
        }
        if !self.ours(id) {
            return;
        }
        match (&o.method, o.code, &o.answer) {
            (&Method::GET, 200, Some(answer)) if names_task(answer, id) => {
                push_line(&mut self.block, answer);
                // Answers end in the queue in the order their bodies ended, not quite
                // that of `at` (their headers' time): the run is seen at its latest.
                self.block_at = self.block_at.max(o.at);
                // With `only_created`, an answer that ends its task makes the next ones
                // not ours: each is counted before the next is judged.
                if self.only_created || self.block.len() >= MAX_BLOCK {
                    self.flush(asked);
                }
            }
            (&Method::GET, 200, Some(answer)) => {
                let line = one_line(answer);
                self.pipeline
                    .reject(self.source, ParseError::OtherTaskId, &line);
            }
            (&Method::DELETE, 200..=299, _) => {
                self.flush(asked);
                let (source, at) = (self.source, o.at);
                self.pipeline
                    .with_ledger(|l| l.task_deleted(source, id, at));
            }
            _ => {}
        }
    }

    /// Whether the task's answers and deletion are counted here: always, unless
    /// `only_created` and it was not created through this proxy.
    fn ours(&self, id: &str) -> bool {
        !self.only_created || self.pipeline.with_ledger(|l| l.created.get(id).is_some())
    }

    /// Ends the run: the application still asks for the tasks in `asked`
    /// (`Ledger::proxy_sighting`), and the run's answers are counted.
    fn flush(&mut self, asked: &mut Vec<(&str, f64)>) {
        if !asked.is_empty() {
            self.pipeline.with_ledger(|l| {
                for (id, at) in asked.drain(..) {
                    l.proxy_sighting(id, at);
                }
            });
        }
        if !self.block.is_empty() {
            let (block, at) = (&self.block, Some(self.block_at));
            self.pipeline
                .process(self.source, &mut self.splitter, block, None, at);
            self.block.clear();
            self.block_at = 0.0;
        }
    }

    /// A create call's answer: when it names a task `id`, a task created through its
    /// endpoint at its time (see [`Entry::of_create`]; the forwarder's reading when it
    /// journaled it), followed as `follow` says, and its journal line marked applied.
    /// An `id` that is no task id is rejected (`invalid_task_id`), as a log line's.
    fn created(&self, o: &Observation) {
        let (entry, place) = match &o.created {
            Some((entry, place)) => (entry.clone(), *place),
            None => {
                let Some(answer) = &o.answer else {
                    return;
                };
                let template = o.target.endpoint();
                let Some(entry) = Entry::of_create(template, o.model.as_deref(), o.at, answer)
                else {
                    return;
                };
                // An id that is no task id would go into the URL of a poll: rejected, as
                // in a log.
                let Some(entry) = entry.checked(o.at) else {
                    let line = one_line(answer);
                    return self
                        .pipeline
                        .reject(self.source, ParseError::InvalidTaskId, &line);
                };
                (entry, None)
            }
        };
        // Runway's estimate for the new task is what it is charged if it ends without a
        // cost (`estimate_seen` ignores what is not a number of credits in range).
        self.pipeline.with_ledger(|l| {
            l.proxy_created(self.source, entry.task(), self.follow);
            if let (Some(journal), Some(place)) = (&self.journal, place) {
                journal.applied(place);
            }
        });
    }
}

/// Whether a task answer names task `id` (its top-level `id`). One naming another task,
/// or none (a confused cache or stand-in), says nothing about this task; an answer that
/// is not JSON is left to the parser to reject.
fn names_task(answer: &[u8], id: &str) -> bool {
    use sonic_rs::JsonValueTrait;
    // sonic-rs checks each value it skips on the way to `id` by recursion, with no depth
    // limit: nesting deep enough to overflow this thread's stack is the parser's to
    // reject (`too_deep`), as a log line's.
    if crate::record::too_deep(answer) {
        return true;
    }
    match sonic_rs::get_from_slice(answer, ["id"]) {
        Ok(named) => named.as_str() == Some(id),
        Err(e) if e.is_not_found() => false,
        Err(_) => true,
    }
}

/// The answer as one line: JSON's whitespace may hold line breaks, its strings cannot.
fn one_line(answer: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(answer.len() + 1);
    push_line(&mut line, answer);
    line
}

/// Appends the answer to `block` as one line ([`one_line`]).
fn push_line(block: &mut Vec<u8>, answer: &[u8]) {
    let start = block.len();
    block.extend_from_slice(answer);
    // Found by memchr: most answers are compact JSON, with no break to blank.
    let appended = &mut block[start..];
    for at in memchr::memchr2_iter(b'\n', b'\r', answer) {
        appended[at] = b' ';
    }
    block.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation() -> Observation {
        Observation {
            method: Method::GET,
            target: Target::new("/v1/tasks/t1".into()),
            code: 200,
            latency: Some(Duration::from_millis(20)),
            at: 1.0,
            model: None,
            answer: None,
            should_retry: None,
            created: None,
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
        assert_eq!(first.target, Target::new("/v1/image_to_video".into()));
        assert_eq!(first.code, 200);
        assert_eq!(
            first.answer.as_deref(),
            Some(&br#"{"id":"t1","status":"RUNNING"}"#[..])
        );
        token.cancel();
    }

    /// A pipeline over a new ledger with the built-in tables, and its source `proxy`.
    fn pipeline() -> (Pipeline, SourceId) {
        use crate::ledger::{Ledger, Limits};
        let ledger = Ledger::new(
            Arc::new(crate::classify::Table::builtin()),
            Arc::new(crate::pricing::Pricing::builtin()),
            Limits::default(),
        );
        let fields = crate::record::FieldMap::default();
        let parser = crate::record::RecordParser::new(&fields).unwrap();
        let pipeline = Pipeline::new(parser, ledger, None);
        let source = add_source(&pipeline);
        (pipeline, source)
    }

    const T1: &str = "17f20503-6c24-4c16-946b-35dbbce2af2f";
    const T2: &str = "27f20503-6c24-4c16-946b-35dbbce2af2f";

    fn seen(method: Method, path: &str, code: u16, answer: &str) -> Observation {
        Observation {
            method,
            target: Target::new(path.into()),
            code,
            latency: (code != 502).then(|| Duration::from_millis(20)),
            answer: Some(Bytes::copy_from_slice(answer.as_bytes())),
            ..observation()
        }
    }

    #[test]
    fn a_batch_is_applied_in_its_order_and_its_requests_counted_once_each() {
        let (pipeline, source) = pipeline();
        let mut applier = Applier::new((&pipeline, None), (source, None, false));
        let task = format!("/v1/tasks/{T1}");
        let ended = format!(
            r#"{{"id":"{T1}","status":"SUCCEEDED","createdAt":"2026-12-06T09:00:00Z","cost":{{"credits":40}}}}"#
        );
        let created = Observation {
            model: Some("gen4_turbo".into()),
            ..seen(
                Method::POST,
                "/v1/image_to_video",
                200,
                &format!(r#"{{"id":"{T1}"}}"#),
            )
        };
        let running = format!(r#"{{"id":"{T1}","status":"RUNNING"}}"#);
        let batch = [
            // Created, then polled twice to its end in the same batch: the answers come
            // after the creation, so the task is counted under the create call's model.
            created,
            seen(Method::GET, &task, 200, &running.replace("{", "{\n")),
            seen(Method::GET, &task, 200, &ended),
            // An answer naming another task: rejected, not counted as T2's.
            seen(Method::GET, &format!("/v1/tasks/{T2}"), 200, &ended),
            seen(Method::GET, &task, 502, r#"{"error":"x"}"#),
        ];
        applier.apply(&batch);
        let t = pipeline.with_ledger(|l| l.totals());
        let tasks: Vec<_> = (t.tasks.iter().filter(|s| s.tasks > 0))
            .map(|s| (&*s.status, &*s.model, s.tasks))
            .collect();
        assert_eq!(tasks, [("SUCCEEDED", "gen4_turbo", 1)]);
        let requests: Vec<_> = (t.proxy_requests.iter())
            .map(|s| (&*s.endpoint, &*s.method, &*s.code, s.requests))
            .collect();
        assert_eq!(
            requests,
            [
                ("/v1/image_to_video", "POST", "200", 1),
                ("/v1/tasks/{id}", "GET", "200", 3),
                ("/v1/tasks/{id}", "GET", "502", 1),
            ]
        );
        let latencies: u64 = t.proxy_latency.iter().map(|l| l.histogram.count()).sum();
        assert_eq!(latencies, 4, "the 502 had no upstream answer");
        assert_eq!(t.proxy_errors.len(), 1);
        let proxy = t.sources.iter().find(|s| s.name == SOURCE).unwrap();
        assert_eq!(proxy.parse_errors[ParseError::OtherTaskId.index()], 1);
    }

    #[test]
    fn a_long_run_of_task_answers_is_counted_in_blocks_of_bounded_size() {
        let (pipeline, source) = pipeline();
        let mut applier = Applier::new((&pipeline, None), (source, None, false));
        // Each answer a distinct task padded to 60 KiB: a batch of them is far more
        // than one block holds.
        let pad = "x".repeat(60 << 10);
        let batch: Vec<Observation> = (0..40)
            .map(|i| {
                let id = format!("{i:08}-6c24-4c16-946b-35dbbce2af2f");
                let answer = format!(
                    r#"{{"id":"{id}","status":"FAILED","failureCode":"INTERNAL","pad":"{pad}"}}"#
                );
                seen(Method::GET, &format!("/v1/tasks/{id}"), 200, &answer)
            })
            .collect();
        let mut asked = Vec::new();
        for o in &batch {
            applier.task_effect(o, &mut asked);
            assert!(applier.block.len() < MAX_BLOCK + super::super::tee::MAX_KEPT + 2);
        }
        applier.flush(&mut asked);
        let t = pipeline.with_ledger(|l| l.totals());
        let failed: u64 = t.tasks.iter().map(|s| s.tasks).sum();
        assert_eq!(failed, 40);
    }

    #[test]
    fn with_created_here_the_answers_after_a_task_ended_are_requests_only() {
        let (pipeline, source) = pipeline();
        let mut applier = Applier::new((&pipeline, None), (source, None, true));
        let task = format!("/v1/tasks/{T1}");
        let ended = format!(r#"{{"id":"{T1}","status":"SUCCEEDED","cost":{{"credits":40}}}}"#);
        let created = seen(
            Method::POST,
            "/v1/image_to_video",
            200,
            &format!(r#"{{"id":"{T1}"}}"#),
        );
        let other = seen(
            Method::GET,
            &format!("/v1/tasks/{T2}"),
            200,
            &ended.replace(T1, T2),
        );
        let batch = [
            created,
            seen(Method::GET, &task, 200, &ended),
            seen(Method::GET, &task, 200, &ended),
            // Not created here: another replica's to count.
            other,
        ];
        applier.apply(&batch);
        let t = pipeline.with_ledger(|l| l.totals());
        let proxy = t.sources.iter().find(|s| s.name == SOURCE).unwrap();
        assert_eq!(proxy.results.iter().sum::<u64>(), 1, "{:?}", proxy.results);
        let requests: u64 = t.proxy_requests.iter().map(|s| s.requests).sum();
        assert_eq!(requests, 4);
    }

    #[test]
    fn an_answer_nested_too_deep_is_rejected_not_a_crash() {
        // Past the stack of the consumer's thread, had sonic-rs's skip been let at it.
        let deep = format!(r#"{{"x":{}"#, "[".repeat(65_000));
        assert!(deep.len() < super::super::tee::MAX_KEPT);
        assert!(names_task(deep.as_bytes(), T1), "left to the parser");
        let (pipeline, source) = pipeline();
        let mut applier = Applier::new((&pipeline, None), (source, None, false));
        applier.apply(&[seen(Method::GET, &format!("/v1/tasks/{T1}"), 200, &deep)]);
        let t = pipeline.with_ledger(|l| l.totals());
        let proxy = t.sources.iter().find(|s| s.name == SOURCE).unwrap();
        assert_eq!(proxy.parse_errors[ParseError::TooDeep.index()], 1);
    }

    #[test]
    fn a_created_task_evicted_before_the_commit_is_not_created_again_from_its_journal_line() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path(), &Registry::new()).unwrap());
        let (pipeline, source) = pipeline();
        let mut applier = Applier::new((&pipeline, Some(journal.clone())), (source, None, false));
        let at = crate::clock::unix_now() - 100.0;
        let answer = format!(r#"{{"id":"{T1}","estimatedCost":{{"credits":25}}}}"#);
        let endpoint = "/v1/image_to_video";
        let entry = Entry::of_create(endpoint, Some("gen4_turbo"), at, answer.as_bytes());
        let entry = entry.unwrap().checked(at).unwrap();
        // As the forwarder does: checked, journaled, then observed with the entry and
        // its place.
        let place = journal.append(entry.clone());
        assert!(place.is_some());
        let create = Observation {
            at,
            model: Some("gen4_turbo".into()),
            created: Some((entry, place)),
            ..seen(Method::POST, endpoint, 200, &answer)
        };
        applier.apply(&[create]);
        // Newer creations fill the book of open tasks until T1 is evicted from it.
        pipeline.with_ledger(|l| {
            for i in 0.. {
                if l.created.get(T1).is_none() {
                    break;
                }
                let id = format!("{i:08}-6c24-4c16-946b-35dbbce2af2f");
                let task = crate::ledger::CreatedTask {
                    id,
                    endpoint: endpoint.into(),
                    created_at: at,
                    ..Default::default()
                };
                l.proxy_created(source, task, None);
            }
        });
        let created = || -> u64 {
            let t = pipeline.with_ledger(|l| l.totals());
            t.proxy_created.iter().map(|c| c.tasks).sum()
        };
        let before = created();
        // The reconcile before the next commit, long after: T1's line is settled, not
        // applied as a create the ledger does not know.
        let settle = (at + 1000.0, super::super::journal::SETTLE);
        pipeline.with_ledger(|l| journal.reconcile(l, settle, (source, None)));
        assert_eq!(created(), before, "T1 was counted once");
    }

    #[test]
    fn answers_become_one_line() {
        assert_eq!(
            one_line(b"{\n  \"id\": \"a\"\r\n}"),
            b"{   \"id\": \"a\"  }\n"
        );
    }
}
