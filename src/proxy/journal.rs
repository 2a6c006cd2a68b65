//! The journal of created tasks: a task whose create answer reached the application is
//! never lost, even when the exporter is killed (`kill -9`) before its next commit.
//!
//! - The proxy reads a create call's answer (a `POST` answered 2xx with a JSON body of a
//!   stated length of at most 64 KiB) whole, takes its task id, and appends one line
//!   (id, endpoint, model, estimate, time) to `proxy-created.journal` in the state
//!   directory with a plain `write`, *before* the answer goes to the client. The page
//!   cache survives the process: no `fsync` (a power cut may lose the lines of the last
//!   seconds, as it may lose the application's own).
//! - Before each commit the committer *reconciles* the journal with the ledger (one lock,
//!   [`Journal::reconcile`]): a line whose task the ledger knows (open, followed, or
//!   counted) is settled; a line older than [`SETTLE`] that it does not know (its
//!   observation was dropped) is applied as a create now. After the commit is durable
//!   the settled lines leave the journal ([`Journal::forget`]; the file is written anew
//!   and renamed over). At start-up, every line is applied (a replay) before the first
//!   commit.
//! - Bounded: at most [`MAX_LINES`] lines; when full, or when the write fails (a full
//!   disk), the answer still goes to the client at once: the failure is counted
//!   (`runway_exporter_proxy_journal_failures_total`) and logged once until a write
//!   succeeds again.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prometheus::{IntCounter, Registry};

use crate::ledger::{CreatedTask, Ledger, SourceId};

/// The journal's file name in the state directory.
pub const FILE_NAME: &str = "proxy-created.journal";
/// Most lines held; past it a create is not journaled (counted).
pub const MAX_LINES: usize = 16_384;
/// A line not applied this long after it was written is applied by the reconciler
/// (seconds): its observation was dropped, or is very late (applying twice is a no-op).
pub const SETTLE: f64 = 10.0;

/// One journal line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub id: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// When the create answer came (Unix seconds).
    pub at: f64,
}

/// The journal: its file, and its lines by place.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
    failures: IntCounter,
}

/// How created tasks are applied: on the proxy's source, followed as
/// `crate::proxy::Follow` says.
pub type Apply = (SourceId, Option<usize>);

#[derive(Debug)]
struct Inner {
    /// Open for appending; `None` after a failure to open it (tried again on the next
    /// write).
    file: Option<File>,
    lines: BTreeMap<u64, Entry>,
    next: u64,
    /// Whether the last write failed (logged once until one succeeds).
    failing: bool,
}

impl Entry {
    /// The entry of a create call's answer (its JSON body, whole) to a request for
    /// `model` through `endpoint` at `at`, when it names a task `id`: the model is the
    /// request's, else the answer's `routing.model` (the model router's choice); the
    /// estimate its `estimatedCost` (else `routing.estimatedCost`) when a number.
    pub fn of_create(endpoint: &str, model: Option<&str>, at: f64, answer: &[u8]) -> Option<Entry> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Routing {
            model: Option<String>,
            estimated_cost: Option<Credits>,
        }
        #[derive(serde::Deserialize)]
        struct Credits {
            credits: Option<serde_json::Value>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            id: Option<String>,
            routing: Option<Routing>,
            estimated_cost: Option<Credits>,
        }
        let Created {
            id,
            routing,
            estimated_cost,
        } = serde_json::from_slice::<Created>(answer).ok()?;
        let (routed, routed_cost) = routing.map_or((None, None), |r| (r.model, r.estimated_cost));
        let estimate = estimated_cost
            .or(routed_cost)
            .and_then(|c| c.credits)
            .and_then(|v| v.as_f64());
        Some(Entry {
            id: id?,
            endpoint: endpoint.to_string(),
            model: model.map(str::to_string).or(routed),
            estimate,
            at,
        })
    }

    /// The created task it says.
    pub fn task(self) -> CreatedTask {
        CreatedTask {
            id: self.id,
            endpoint: self.endpoint,
            model: self.model,
            estimate: self.estimate,
            created_at: self.at,
        }
    }
}

/// Settled lines, to forget once the commit that holds them is durable.
#[derive(Debug, Default)]
pub struct Settled(Vec<u64>);

impl Journal {
    /// Opens the journal in `dir`, keeping the lines already there (unreadable ones are
    /// skipped and logged). Its failure counter is registered on `live`.
    pub fn open(dir: &Path, live: &Registry) -> prometheus::Result<Journal> {
        let failures = IntCounter::new(
            "runway_exporter_proxy_journal_failures_total",
            "Create answers passed to the application without their task in the journal (a failed write, or the journal full); such a task is lost if the exporter is killed before its next commit.",
        )?;
        live.register(Box::new(failures.clone()))?;
        let path = dir.join(FILE_NAME);
        let mut lines = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut bad = 0usize;
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    match serde_json::from_slice::<Entry>(line) {
                        Ok(e) if lines.len() < MAX_LINES => {
                            lines.insert(lines.len() as u64, e);
                        }
                        _ => bad += 1,
                    }
                }
                if bad > 0 {
                    tracing::warn!(path = %path.display(), lines = bad, "Journal lines that cannot be read (a line cut by a crash) were skipped.");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Cannot read the journal of created tasks.")
            }
        }
        let next = lines.len() as u64;
        let journal = Journal {
            path,
            inner: Mutex::new(Inner {
                file: None,
                lines,
                next,
                failing: false,
            }),
            failures,
        };
        Ok(journal)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Lines held now.
    #[cfg(test)]
    fn lines(&self) -> usize {
        self.inner().lines.len()
    }

    /// Appends `entry`: one `write` of one line. Never fails the request: a failure is
    /// counted and logged (once until a write succeeds).
    pub fn append(&self, entry: Entry) {
        let mut line = match serde_json::to_vec(&entry) {
            Ok(l) => l,
            Err(_) => return self.failures.inc(),
        };
        line.push(b'\n');
        let mut inner = self.inner();
        let written = if inner.lines.len() >= MAX_LINES {
            Err(std::io::Error::other(format!(
                "the journal holds {MAX_LINES} lines (commits are failing?)"
            )))
        } else {
            self.write(&mut inner, &line)
        };
        match written {
            Ok(()) => {
                let place = inner.next;
                inner.next += 1;
                inner.lines.insert(place, entry);
                inner.failing = false;
            }
            Err(e) => {
                self.failures.inc();
                if !inner.failing {
                    tracing::warn!(path = %self.path.display(), error = %e, "Cannot journal a created task; it is still counted, but lost if the exporter is killed before its next commit.");
                }
                inner.failing = true;
            }
        }
    }

    fn write(&self, inner: &mut Inner, line: &[u8]) -> std::io::Result<()> {
        if inner.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            inner.file = Some(file);
        }
        let file = inner.file.as_mut().expect("opened above");
        let written = file.write_all(line);
        if written.is_err() {
            // A partial line is skipped when read; the next write starts a new file
            // handle.
            inner.file = None;
        }
        written
    }

    /// Settles the lines the ledger knows, and applies as created those it does not
    /// that are older than `settle` seconds at `now` (0: every line, at start-up). Run
    /// under the ledger's lock, before a commit: every settled line's task is in that
    /// commit.
    pub fn reconcile(&self, l: &mut Ledger, (now, settle): (f64, f64), apply: Apply) -> Settled {
        let inner = self.inner();
        let mut settled = Vec::new();
        for (place, e) in &inner.lines {
            let known = |l: &Ledger| {
                l.created.get(&e.id).is_some() || l.api.task(&e.id).is_some() || l.seen(&e.id)
            };
            if !known(l) && now - e.at >= settle {
                l.proxy_created(apply.0, e.clone().task(), apply.1);
            }
            if known(l) {
                settled.push(*place);
            }
        }
        Settled(settled)
    }

    /// Forgets settled lines (their commit is durable): the file is written anew, then
    /// renamed over the journal.
    pub fn forget(&self, settled: Settled) {
        if settled.0.is_empty() {
            return;
        }
        // The lines kept, taken under the lock; the file is written without it, so a
        // create answer never waits for a rewrite. `forget` has one caller (the
        // committer), so no line is settled meanwhile.
        let (kept, upto) = {
            let mut inner = self.inner();
            for place in settled.0 {
                inner.lines.remove(&place);
            }
            (lines_text(inner.lines.values()), inner.next)
        };
        let tmp = self.path.with_extension("journal.tmp");
        let written = std::fs::write(&tmp, kept);
        // Under the lock again: the lines appended meanwhile (to the old file) join the
        // new one, which then takes its place; appends go to it from now on.
        let mut inner = self.inner();
        let renamed = written.and_then(|()| {
            let since = lines_text(inner.lines.range(upto..).map(|(_, e)| e));
            OpenOptions::new()
                .append(true)
                .open(&tmp)?
                .write_all(&since)?;
            std::fs::rename(&tmp, &self.path)
        });
        inner.file = None;
        if let Err(e) = renamed {
            tracing::warn!(path = %self.path.display(), error = %e, "Cannot rewrite the journal of created tasks; its settled lines stay (applying them again is a no-op).");
        }
    }
}

/// Journal lines, one JSON object a line.
fn lines_text<'e>(entries: impl Iterator<Item = &'e Entry>) -> Vec<u8> {
    let mut text = Vec::new();
    for e in entries {
        if let Ok(line) = serde_json::to_vec(e) {
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at: f64) -> Entry {
        Entry {
            id: id.into(),
            endpoint: "/v1/text_to_video".into(),
            model: Some("veo3".into()),
            estimate: Some(40.0),
            at,
        }
    }

    fn ledger() -> (Ledger, SourceId) {
        let mut l = Ledger::new(
            std::sync::Arc::new(crate::classify::Table::builtin()),
            std::sync::Arc::new(crate::pricing::Pricing::builtin()),
            crate::ledger::Limits::default(),
        );
        let s = l.add_source("proxy");
        (l, s)
    }

    #[test]
    fn lines_survive_until_a_commit_settles_them_and_unknown_ones_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, s) = ledger();
        let live = Registry::new();
        let j = Journal::open(dir.path(), &live).unwrap();
        j.append(entry("a", 100.0));
        j.append(entry("b", 105.0));
        // A process killed now: a new journal reads both lines.
        let again = Journal::open(dir.path(), &Registry::new()).unwrap();
        assert_eq!(again.lines(), 2);
        // Young and unknown: left; old and unknown: applied, then settled.
        let settled = j.reconcile(&mut l, (112.0, SETTLE), (s, None));
        assert_eq!(settled.0, [0]);
        assert_eq!(l.created.get("a").unwrap().model.as_deref(), Some("veo3"));
        assert!(l.created.get("b").is_none());
        j.forget(settled);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("\"b\""), "{text}");
        // Appends after a rewrite go to the new file.
        j.append(entry("c", 106.0));
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        assert_eq!(back.lines(), 2);
        // At start-up every line is applied, whatever its age, once.
        let settled = back.reconcile(&mut l, (1000.0, 0.0), (s, None));
        assert_eq!(settled.0.len(), 2);
        let created: u64 = l.proxy.created().iter().map(|c| c.tasks).sum();
        assert_eq!(created, 3);
        let settled = back.reconcile(&mut l, (1000.0, 0.0), (s, None));
        assert_eq!(settled.0.len(), 2);
        let created: u64 = l.proxy.created().iter().map(|c| c.tasks).sum();
        assert_eq!(created, 3, "a replayed line is applied once");
    }

    #[test]
    fn appends_during_a_rewrite_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, s) = ledger();
        let j = std::sync::Arc::new(Journal::open(dir.path(), &Registry::new()).unwrap());
        for i in 0..200 {
            j.append(entry(&format!("old-{i}"), 100.0));
        }
        // Applied and settled: the rewrites below drop these while new lines come.
        let settled = j.reconcile(&mut l, (1000.0, 0.0), (s, None));
        assert_eq!(settled.0.len(), 200);
        let writer = {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    j.append(entry(&format!("new-{i}"), 2000.0));
                }
            })
        };
        j.forget(settled);
        // Rewrites for as long as the writer runs (a rewrite happens only when a line
        // settled: one old line each time).
        let mut i = 0;
        while !writer.is_finished() {
            i += 1;
            j.append(entry(&format!("mid-{i}"), 100.0));
            let settled = j.reconcile(&mut l, (1000.0, SETTLE), (s, None));
            j.forget(settled);
        }
        writer.join().unwrap();
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        assert_eq!(
            back.lines(),
            2000,
            "every line appended and not settled is in the file"
        );
    }

    /// A stand-in upstream answering every request with a small JSON task.
    async fn upstream() -> std::net::SocketAddr {
        use bytes::Bytes;
        use http_body_util::Full;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|_req| async {
                    let body = br#"{"id":"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9","estimatedCost":{"credits":40}}"#;
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(body)))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// A proxy in front of `up`, journaling in `journal`; its address.
    async fn proxy(
        up: std::net::SocketAddr,
        journal: Option<std::sync::Arc<Journal>>,
        token: &tokio_util::sync::CancellationToken,
    ) -> std::net::SocketAddr {
        let settings = crate::config::Proxy {
            upstream: format!("http://{up}"),
            ..Default::default()
        };
        let (observer, rx) = super::super::Observer::new(1, &Registry::new()).unwrap();
        // Nobody takes observations: they are dropped (counted), as in a proxy whose
        // consumer is busy; what one costs is not measured here.
        drop(rx);
        let forwarder = super::super::Forwarder::new(&settings, observer, journal).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = super::super::Limits {
            max_connections: 16,
            header_read_timeout: std::time::Duration::from_secs(5),
            grace: std::time::Duration::from_secs(1),
        };
        let serve = super::super::serve(listener, forwarder.into(), None, limits, token.clone());
        tokio::spawn(serve);
        addr
    }

    /// What journaling costs a create call: the same create calls, alternating between a
    /// proxy that journals and one that does not, in one run; latencies printed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cost_of_journaling_a_create_call() {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        let dir = tempfile::tempdir().unwrap();
        let up = upstream().await;
        let token = tokio_util::sync::CancellationToken::new();
        let journal = std::sync::Arc::new(Journal::open(dir.path(), &Registry::new()).unwrap());
        let with = proxy(up, Some(journal.clone()), &token).await;
        let without = proxy(up, None, &token).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        const N: usize = 2000;
        let mut took = [Vec::with_capacity(N), Vec::with_capacity(N)];
        for i in 0..2 * N {
            let addr = [with, without][i % 2];
            let request = hyper::Request::post(format!("http://{addr}/v1/image_to_video"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"promptText":"x","model":"gen4_turbo"}"#,
                )))
                .unwrap();
            let started = std::time::Instant::now();
            let answer = client.request(request).await.unwrap();
            assert_eq!(answer.status(), 200);
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            took[i % 2].push(started.elapsed().as_secs_f64() * 1e6);
            assert!(body.starts_with(br#"{"id":"#));
        }
        assert_eq!(journal.lines(), N, "every create journaled");
        let quantile = |v: &mut Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q) as usize]
        };
        let [mut a, mut b] = took;
        let (a50, a99) = (quantile(&mut a, 0.5), quantile(&mut a, 0.99));
        let (b50, b99) = (quantile(&mut b, 0.5), quantile(&mut b, 0.99));
        eprintln!(
            "create call through the proxy, {N} each, microseconds: with the journal p50 {a50:.0} p99 {a99:.0}; without p50 {b50:.0} p99 {b99:.0}; ratio p50 {:.2} p99 {:.2}",
            a50 / b50,
            a99 / b99
        );
        token.cancel();
    }

    #[test]
    fn a_failed_write_is_counted_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let live = Registry::new();
        // The journal's path is a directory: every write fails.
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        let j = Journal::open(dir.path(), &live).unwrap();
        j.append(entry("a", 1.0));
        j.append(entry("b", 2.0));
        assert_eq!(j.failures.get(), 2);
        assert_eq!(j.lines(), 0);
    }
}
