//! The commit loop and the publisher: every `state.commit_interval` the ledger is
//! committed, and what the commit holds is rendered once and served until the next.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::http::HttpState;
use crate::ledger::Totals;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::state;

/// How often an idle exporter says again that its committed state is current.
const IDLE_REFRESH: Duration = Duration::from_secs(60);

/// The one writer of the metrics registry: after each commit it publishes the totals,
/// renders the registry and hands the page to the endpoints. It also owns whether the
/// exporter counts as committing (a readiness condition).
pub(super) struct Publisher {
    registry: Registry,
    metrics: Metrics,
    /// The recent failures and HTTP errors of the last publish, served with every page
    /// after it.
    recent: Arc<crate::http::Recent>,
    http: Arc<HttpState>,
}

impl Publisher {
    pub(super) fn new(registry: Registry, metrics: Metrics, http: Arc<HttpState>) -> Publisher {
        Publisher {
            registry,
            metrics,
            recent: Arc::default(),
            http,
        }
    }

    /// Serves the ledger's totals as they are (what was restored, at start-up).
    pub(super) fn restored(&mut self, pipeline: &Pipeline) {
        let totals = pipeline.with_ledger(|l| l.totals());
        self.publish(totals);
    }

    /// A commit that holds `totals` succeeded, in `took`, leaving a state file of
    /// `state_bytes`.
    fn committed(&mut self, totals: Totals, took: Duration, state_bytes: Option<u64>) {
        let m = &mut self.metrics;
        m.last_commit_duration.set(took.as_secs_f64());
        if let Some(size) = state_bytes {
            m.state_file_bytes
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        m.last_commit_timestamp.set(unix_now());
        self.publish(totals);
    }

    /// A round with nothing new to commit: the state on disk still holds everything
    /// counted. At most every [`IDLE_REFRESH`] that is said again (the commit time set
    /// to now and the page rendered anew), so an idle exporter's last commit does not
    /// age into `RunwayExporterCommitFailing` (its age check is 300 s) while it writes
    /// nothing.
    fn unchanged(&mut self) {
        let m = &mut self.metrics;
        if unix_now() - m.last_commit_timestamp.get() >= IDLE_REFRESH.as_secs_f64() {
            m.last_commit_timestamp.set(unix_now());
            self.render();
        }
    }

    /// Whether the last commit succeeded: a failure is counted and makes the exporter
    /// not ready until one succeeds.
    pub(super) fn commit_result(&mut self, ok: bool) {
        if !ok {
            self.metrics.commit_errors.inc();
            self.render();
        }
        self.http.committing.store(ok, Ordering::Release);
    }

    /// Publishes `totals` and serves them.
    fn publish(&mut self, mut totals: Totals) {
        self.recent = Arc::new(crate::http::Recent {
            failures: std::mem::take(&mut totals.recent),
            http_errors: std::mem::take(&mut totals.proxy_recent_errors),
        });
        self.metrics.publish(totals);
        self.render();
    }

    /// Renders the registry once, and serves it with the recent failures.
    fn render(&self) {
        let text = crate::metrics::render(&self.registry);
        self.http.exposition.publish(text, self.recent.clone());
    }
}

/// Commits the ledger every `interval` and publishes what each commit holds; once more
/// when cancelled. Reading goes on while commits fail, and the next successful commit
/// holds everything read meanwhile.
///
/// The loop runs on a thread of its own ([`Committer::run`] under `spawn_blocking`): a
/// commit writes the state file, and a publish renders and compresses the page (5-7 ms
/// for the 6,300 lines of a ledger at its label caps), neither of which may hold up one
/// of the runtime's two workers while it serves scrapes.
pub(super) struct Committer {
    pipeline: Arc<Pipeline>,
    publisher: Publisher,
    dir: PathBuf,
    interval: Duration,
    /// The time of the loop's last round on the steady clock, for the systemd watchdog
    /// (a step of the wall clock must not make the loop look stuck).
    heartbeat: Arc<AtomicU64>,
    /// The proxy's journal of created tasks, reconciled before each commit and
    /// rid of what the commit holds once it is durable; and how its tasks are applied.
    journal: Option<(Arc<crate::proxy::Journal>, crate::proxy::Apply)>,
}

impl Committer {
    pub(super) fn new(
        pipeline: Arc<Pipeline>,
        publisher: Publisher,
        dir: PathBuf,
        interval: Duration,
        heartbeat: Arc<AtomicU64>,
        journal: Option<(Arc<crate::proxy::Journal>, crate::proxy::Apply)>,
    ) -> Committer {
        Committer {
            pipeline,
            publisher,
            dir,
            interval,
            heartbeat,
            journal,
        }
    }

    /// The loop; blocks its thread, waiting for each tick (or `token`) on `runtime`.
    pub(super) fn run(mut self, runtime: Handle, token: CancellationToken) {
        let mut tick = {
            let _in_runtime = runtime.enter();
            tokio::time::interval(self.interval)
        };
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            let stop = runtime.block_on(async {
                tokio::select! {
                    _ = token.cancelled() => true,
                    _ = tick.tick() => false,
                }
            });
            self.heartbeat
                .store(crate::clock::steady_now() as u64, Ordering::Relaxed);
            match self.commit_once() {
                Ok(()) if failing => {
                    tracing::info!(dir = %self.dir.display(), "Commits succeed again.");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::error!(error = %e, "Cannot commit the state; not ready until a commit succeeds. Lines are still read and will be committed then. Check that the state directory is writable and not full.");
                    failing = true;
                }
                Err(_) => {}
            }
            if stop {
                return;
            }
        }
    }

    /// One commit, published when it held a change. A commit that panicked (a bug)
    /// counts as failed.
    fn commit_once(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let (pipeline, dir) = (&self.pipeline, &self.dir);
        let settled = self.journal.as_ref().map(|(journal, apply)| {
            let now = (unix_now(), crate::proxy::SETTLE);
            pipeline.with_ledger(|l| journal.reconcile(l, now, *apply))
        });
        match std::panic::catch_unwind(AssertUnwindSafe(|| pipeline.commit(dir))) {
            Ok(Ok(committed)) => {
                if let (Some((journal, _)), Some(settled)) = (&self.journal, settled) {
                    journal.forget(settled);
                }
                match committed {
                    Some(totals) => {
                        let size =
                            std::fs::metadata(self.dir.join(state::FILE_NAME)).map(|m| m.len());
                        self.publisher
                            .committed(totals, started.elapsed(), size.ok());
                    }
                    None => self.publisher.unchanged(),
                }
                self.publisher.commit_result(true);
                Ok(())
            }
            Ok(Err(e)) => {
                self.publisher.commit_result(false);
                Err(e.into())
            }
            Err(_) => {
                // A debug build (the tests') stops at a bug a commit found, such as a
                // committed value changed behind the ledger's back.
                if cfg!(debug_assertions) {
                    tracing::error!("The commit panicked.");
                    std::process::abort();
                }
                self.publisher.commit_result(false);
                Err(anyhow::anyhow!("the commit panicked (a bug)"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn served(http: &HttpState) -> String {
        let body = http.exposition.text();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(body.collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn last_commit(page: &str) -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix("runway_exporter_last_commit_timestamp_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// An idle exporter commits nothing, and its last commit must not age into
    /// `RunwayExporterCommitFailing` (300 s): a round with nothing new says again, at
    /// most every minute, that the committed state is current, and serves it.
    #[test]
    fn an_idle_round_refreshes_the_last_commit_at_most_every_minute() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry, false).unwrap();
        let http = Arc::new(HttpState {
            exposition: crate::http::Exposition::new(None),
            telemetry_path: "/metrics".into(),
            sources_ready: Default::default(),
            committing: std::sync::atomic::AtomicBool::new(true),
            security: Default::default(),
        });
        let mut publisher = Publisher::new(registry, metrics, http.clone());
        let long_ago = unix_now() - 301.0;
        publisher.metrics.last_commit_timestamp.set(long_ago);
        publisher.render();
        assert_eq!(last_commit(&served(&http)), long_ago);

        publisher.unchanged();
        let refreshed = last_commit(&served(&http));
        assert!(unix_now() - refreshed < 5.0, "{refreshed}");
        // Within the minute: neither set nor rendered again.
        let recent = refreshed - 30.0;
        publisher.metrics.last_commit_timestamp.set(recent);
        publisher.unchanged();
        assert_eq!(publisher.metrics.last_commit_timestamp.get(), recent);
        assert_eq!(last_commit(&served(&http)), refreshed, "not rendered again");
    }
}
