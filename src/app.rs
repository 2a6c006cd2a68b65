//! Builds the pieces from the settings and owns the tasks and their shutdown.
//!
//! Every task is spawned on one [`TaskTracker`] with a child of one
//! [`CancellationToken`]. SIGTERM or SIGINT cancels the token: the sources stop
//! reading, the proxy stops accepting, lets its requests in progress finish (80 % of
//! `shutdown_grace`) and applies every observation queued, then the last commit is made
//! and published, the HTTP server closes, and the tracker is given `shutdown_grace` in
//! all to drain before the process exits 0.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, Overrides, Settings};
use crate::deadletter::{DeadLetter, DeadLetterConfig};
use crate::http::{self, HttpState};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::record::RecordParser;
use crate::source::{api, file};
use crate::state;

mod commit;
use commit::{Committer, Publisher};

/// The output formats of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Prometheus,
    Json,
}

/// The pipeline the settings describe, without any source.
pub fn build_pipeline(settings: &Settings) -> anyhow::Result<Pipeline> {
    let table = settings.failure_table()?;
    let pricing = settings.pricing()?;
    let parser = RecordParser::new(&settings.record).map_err(ConfigError::from)?;
    let ledger = Ledger::new(Arc::new(table), Arc::new(pricing), settings.limits());
    let dead_letter = match &settings.dead_letter.path {
        Some(path) => Some(
            DeadLetter::open(DeadLetterConfig {
                path: path.clone(),
                max_bytes: settings.dead_letter.max_bytes,
                max_line_bytes: settings.dead_letter.max_line_bytes,
            })
            .with_context(|| format!("cannot open the dead-letter file {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Pipeline::new(parser, ledger, dead_letter))
}

/// The API key, when the API source is on: with `api.task_list` (a missing or unusable
/// key is a configuration error, for `run` and `check-config` alike), or with the proxy
/// when a key is given (`api.api_key_file` or the environment), to follow the tasks
/// created through it. The error never holds the key.
pub fn api_key(settings: &Settings) -> Result<Option<api::ApiKey>, ConfigError> {
    let offered = settings.api.api_key_file.is_some() || std::env::var_os(api::KEY_ENV).is_some();
    let created_here = settings.proxy.count == crate::config::ProxyCount::CreatedHere;
    if settings.proxy.enabled && created_here && !offered {
        return Err(ConfigError::Invalid {
            key: "proxy.count",
            problem: format!("\"created_here\" follows the tasks created through the proxy to their end: it needs the API key (api.api_key_file or {})", api::KEY_ENV),
        });
    }
    if settings.api.task_list.is_none() && !(settings.proxy.enabled && offered) {
        return Ok(None);
    }
    api::ApiKey::load(&settings.api)
        .map(Some)
        .map_err(|problem| ConfigError::Invalid {
            key: "api",
            problem,
        })
}

/// `scan`: reads the files from the start through the pipeline and renders the metrics.
pub fn scan(settings: &Settings, paths: &[PathBuf], format: ScanFormat) -> anyhow::Result<String> {
    let pipeline = build_pipeline(settings)?;
    file::scan(
        &pipeline,
        paths,
        settings.file.max_line_bytes,
        settings.file.read_block_bytes,
    )?;
    // A one-shot run has no "last record time" worth exporting: keep the output stable.
    pipeline.with_ledger(|l| l.own_mut().forget_last_records());
    let registry = Registry::new();
    let mut metrics = Metrics::new(&registry, false)?;
    pipeline.publish(&mut metrics);
    Ok(match format {
        ScanFormat::Prometheus => crate::metrics::render(&registry),
        ScanFormat::Json => {
            let mut s = serde_json::to_string_pretty(&crate::metrics::render_json(&registry))?;
            s.push('\n');
            s
        }
    })
}

/// What a restart knows: the saved state, split by source.
#[derive(Debug, Default)]
pub struct Restored {
    /// Checkpoints by source name (`file`, `task_list`).
    pub checkpoints: std::collections::BTreeMap<String, file::Checkpoint>,
    pub restored: bool,
}

impl Restored {
    /// The checkpoint of one source, when there was a state file.
    pub fn checkpoint(&mut self, source: &str) -> Option<file::Checkpoint> {
        if !self.restored {
            return None;
        }
        Some(self.checkpoints.remove(source).unwrap_or_default())
    }
}

/// Loads the newest usable generation of the state into the pipeline's ledger
/// (counters, dedupe window, polled tasks); returns the sources' checkpoints. A
/// generation whose counts the ledger refuses is damaged like an unreadable one.
pub fn restore(pipeline: &Pipeline, dir: &Path) -> Restored {
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::error!(dir = %dir.display(), error = %e, "Cannot create the state directory; counting goes on, but nothing is committed until it exists.");
    }
    let mut dedupe_ids = 0;
    let loaded = state::load(dir, |saved| {
        dedupe_ids = saved.dedupe.len();
        let windows = crate::ledger::SavedWindows {
            dedupe: std::mem::take(&mut saved.dedupe),
            started: std::mem::take(&mut saved.started),
        };
        pipeline
            .with_ledger(|l| {
                l.restore(&saved.totals, windows)?;
                l.restore_api_tasks(saved.api_tasks.iter().cloned());
                Ok::<_, crate::ledger::RestoreError>(())
            })
            .map_err(|e| e.to_string())
    });
    let Some(saved) = loaded else {
        return Restored::default();
    };
    tracing::info!(dir = %dir.display(), files = saved.positions.len(), dedupe_ids, api_tasks = saved.api_tasks.len(), "State restored.");
    let mut checkpoints = std::collections::BTreeMap::<String, file::Checkpoint>::new();
    for p in saved.positions {
        checkpoints
            .entry(p.source.clone())
            .or_default()
            .positions
            .push(p);
    }
    for (source, at) in &saved.scanned_at {
        checkpoints.entry(source.clone()).or_default().scanned_at = *at;
    }
    for cp in checkpoints.values_mut() {
        cp.written_at = saved.written_at;
    }
    Restored {
        checkpoints,
        restored: true,
    }
}

/// Pings the systemd watchdog (`WatchdogSec=`) at half its interval, as long as the
/// committer's loop keeps beating (on the steady clock): a stuck exporter stops pinging
/// and is restarted.
async fn watchdog(
    period: Duration,
    heartbeat: Arc<std::sync::atomic::AtomicU64>,
    stale: Duration,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let age = crate::clock::steady_now() - heartbeat.load(Ordering::Relaxed) as f64;
        if age <= stale.as_secs_f64() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::warn!(
                age_seconds = age,
                "The commit loop is stuck; not pinging the systemd watchdog."
            );
        }
    }
}

/// Applies a new configuration on SIGHUP, without resetting any counter.
pub struct Reloader {
    http: Arc<HttpState>,
    overrides: Overrides,
    current: Settings,
    pipeline: Arc<Pipeline>,
    file_settings: tokio::sync::watch::Sender<crate::config::FileSettings>,
}

impl Reloader {
    /// Loads and checks the configuration again; a bad one is refused and the running
    /// one stays. Applied: the failure-code and pricing tables, `[record]`, `[ledger]`,
    /// `[file]` and the web config file (TLS, basic auth: for new connections). Other
    /// sections need a restart, and a change there is logged.
    pub fn reload(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let result = Settings::load(&self.overrides).and_then(|s| {
            let table = s.failure_table()?;
            let pricing = s.pricing()?;
            let parser = RecordParser::new(&s.record)?;
            let security = s.web_security()?;
            Ok((s, table, pricing, parser, security))
        });
        match result {
            Err(e) => {
                tracing::error!(error = %e, "Reload refused: the new configuration is not valid. The running one stays.");
            }
            Ok((new, table, pricing, parser, security)) => {
                let limits = new.limits();
                *crate::sync::write(&self.http.security) = security;
                self.pipeline.set_parser(parser);
                self.pipeline
                    .with_ledger(|l| l.reconfigure(Arc::new(table), Arc::new(pricing), limits));
                let _ = self.file_settings.send(new.file.clone());
                let web_restart = crate::config::Web {
                    config_file: self.current.web.config_file.clone(),
                    ..new.web.clone()
                } != self.current.web;
                let needs_restart: Vec<&str> = [
                    ("web", web_restart),
                    ("log", new.log != self.current.log),
                    ("state", new.state != self.current.state),
                    ("api", new.api != self.current.api),
                    ("proxy", new.proxy != self.current.proxy),
                    ("dead_letter", new.dead_letter != self.current.dead_letter),
                ]
                .into_iter()
                .filter_map(|(section, changed)| changed.then_some(section))
                .collect();
                if !needs_restart.is_empty() {
                    tracing::warn!(sections = ?needs_restart, "Reloaded; these sections changed and take effect only after a restart.");
                }
                tracing::info!("Configuration reloaded; counters kept.");
                self.current = new;
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// The signals the daemon handles, caught from before anything starts: a signal sent
/// as soon as the port answers must not find its default action (SIGHUP's ends the
/// process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Waits for SIGTERM or SIGINT; SIGHUP reloads the configuration.
    async fn shutdown(&mut self, reloader: &mut Reloader) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => reloader.reload(),
            }
        }
    }
}

/// The daemon: build the pieces, start them, run until a signal, shut down.
pub async fn run(settings: Settings, overrides: Overrides) -> anyhow::Result<()> {
    let mut signals = Signals::catch()?;
    let built = Built::new(&settings).await?;
    let mut running = built.start(&settings, overrides).await?;
    let signal = running.until_signal(&mut signals).await;
    running
        .shut_down(signal, settings.state.shutdown_grace)
        .await;
    Ok(())
}

/// Everything the daemon is made of, before any task runs.
struct Built {
    pipeline: Arc<Pipeline>,
    publisher: Publisher,
    http: Arc<HttpState>,
    listener: TcpListener,
    /// The file source, and with the API source its client and task list (if any).
    tailer: file::Tailer,
    api: Option<(api::Client, Option<file::Tailer>)>,
    proxy: Option<ProxyListener>,
}

/// The proxy's listener and forwarder, when `[proxy]` is enabled, and the observations
/// its answers make.
struct ProxyListener {
    listener: TcpListener,
    forwarder: crate::proxy::Forwarder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    observations: tokio::sync::mpsc::Receiver<crate::proxy::Observation>,
    journal: Arc<crate::proxy::Journal>,
}

impl ProxyListener {
    /// `live`: the registry rendered at each scrape, for the observer's own counters.
    /// `state_dir` holds the journal of created tasks.
    async fn bind(
        settings: &crate::config::Proxy,
        live: &Registry,
        state_dir: &Path,
    ) -> anyhow::Result<Option<ProxyListener>> {
        if !settings.enabled {
            return Ok(None);
        }
        let (observer, observations) =
            crate::proxy::Observer::new(crate::proxy::OBSERVATIONS, live)
                .context("cannot register the proxy's metrics")?;
        let journal = Arc::new(
            crate::proxy::Journal::open(state_dir, live)
                .context("cannot register the proxy's metrics")?,
        );
        let forwarder = crate::proxy::Forwarder::new(settings, observer, Some(journal.clone()))
            .map_err(|e| ConfigError::Invalid {
                key: "proxy.upstream",
                problem: e.to_string(),
            })?;
        let tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
            (Some(cert), Some(key)) => Some(
                crate::webconfig::WebSecurity::server_tls(cert, key).map_err(|problem| {
                    ConfigError::Invalid {
                        key: "proxy.tls_cert_file",
                        problem,
                    }
                })?,
            ),
            _ => None,
        };
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("cannot listen on {} (proxy.listen)", settings.listen))?;
        Ok(Some(ProxyListener {
            listener,
            forwarder,
            tls,
            observations,
            journal,
        }))
    }
}

impl ProxyListener {
    /// Serves until the sources stop, the observations applied on a thread of their
    /// own. Requests in progress at shutdown get [`PROXY_GRACE`] of
    /// `state.shutdown_grace`; the rest is left for the drain and the last commit.
    /// The journal's tasks (a kill before their commit) are created before a request is
    /// served; the next commit holds them. Returns the journal, for the committer.
    fn start(
        self,
        settings: &Settings,
        pipeline: &Arc<Pipeline>,
        (tracker, tokens): (&TaskTracker, &Tokens),
        follow: crate::proxy::Follow,
    ) -> anyhow::Result<(ProxyTasks, ProxyJournal)> {
        let limits = crate::proxy::Limits {
            max_connections: settings.proxy.max_connections,
            header_read_timeout: settings.proxy.header_read_timeout,
            grace: settings.state.shutdown_grace.mul_f64(PROXY_GRACE),
        };
        let address = self
            .listener
            .local_addr()
            .context("cannot read the proxy's address")?;
        tracing::info!(address = %address, upstream = %settings.proxy.upstream, tls = self.tls.is_some(), "Proxy listening.");
        let (pipeline, observations) = (pipeline.clone(), self.observations);
        let journal = Some(self.journal.clone());
        let source = crate::proxy::add_source(&pipeline);
        let now = crate::clock::unix_now();
        pipeline.with_ledger(|l| self.journal.reconcile(l, (now, 0.0), (source, follow)));
        let only_created = settings.proxy.count == crate::config::ProxyCount::CreatedHere;
        let (runtime, drain) = (tokio::runtime::Handle::current(), CancellationToken::new());
        let stop = drain.clone();
        let consumer = tracker.spawn_blocking(move || {
            crate::proxy::consume(
                observations,
                (pipeline, journal),
                (source, follow, only_created),
                &runtime,
                &stop,
            )
        });
        let serve = crate::proxy::serve(
            self.listener,
            self.forwarder,
            self.tls,
            limits,
            tokens.sources.child_token(),
        )
        .context("cannot start the proxy's threads")?;
        let serve = tracker.spawn(serve);
        let tasks = ProxyTasks {
            serve,
            consumer,
            drain,
        };
        Ok((tasks, (self.journal, (source, follow))))
    }
}

/// The journal of created tasks, with the proxy's source and how its tasks are followed.
type ProxyJournal = (Arc<crate::proxy::Journal>, crate::proxy::Apply);

/// The share of `state.shutdown_grace` the proxy's requests in progress get to finish.
const PROXY_GRACE: f64 = 0.8;

/// The proxy's running tasks: its accept loop and its observations' consumer.
struct ProxyTasks {
    serve: tokio::task::JoinHandle<()>,
    consumer: tokio::task::JoinHandle<()>,
    /// Tells the consumer to apply what is queued and stop.
    drain: CancellationToken,
}

impl ProxyTasks {
    /// Once the sources are told to stop: waits for the requests in progress (the accept
    /// loop's grace), then for the consumer to apply every observation they made.
    async fn drain(self) {
        tracing::info!("Proxy: draining (requests in progress, then their observations).");
        let _ = self.serve.await;
        self.drain.cancel();
        let _ = self.consumer.await;
    }
}

impl Built {
    async fn new(settings: &Settings) -> anyhow::Result<Built> {
        let pipeline = Arc::new(build_pipeline(settings)?);
        let registry = Registry::new();
        // The API source needs its key before anything starts: a missing key is a
        // configuration error (exit 64), and the error never holds the key.
        let client = match api_key(settings)? {
            Some(key) => Some(api::Client::new(&settings.api, key).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let metrics =
            Metrics::new(&registry, client.is_some()).context("cannot register the metrics")?;
        let live = Registry::new();
        let http = http_state(settings, live.clone())?;
        let publisher = Publisher::new(registry, metrics, http.clone());
        let addr = settings.web.listen_address.clone();
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (web.listen_address)"))?;
        let proxy = ProxyListener::bind(&settings.proxy, &live, &settings.state.dir).await?;
        if settings.file.paths.is_empty() {
            tracing::warn!("No task logs configured (file.paths or --file): only the exporter's own metrics will change.");
        }
        let mut restored = restore(&pipeline, &settings.state.dir);
        let tailer = file::Tailer::new(
            settings.file.clone(),
            pipeline.clone(),
            restored.checkpoint(file::SOURCE),
        );
        let api = match (client, &settings.api.task_list) {
            (Some(client), Some(path)) => {
                let list = task_list(settings, path, &pipeline, &mut restored)?;
                Some((client, Some(list)))
            }
            (Some(client), None) => Some((client, None)),
            (None, _) => None,
        };
        Ok(Built {
            pipeline,
            publisher,
            http,
            listener,
            tailer,
            api,
            proxy,
        })
    }

    /// Claims the start positions and commits them before reading a line (see
    /// `Tailer::start`), serves what was restored, and starts every task.
    async fn start(mut self, settings: &Settings, overrides: Overrides) -> anyhow::Result<Running> {
        let (p, dir) = (self.pipeline.clone(), settings.state.dir.clone());
        let (mut tailer, mut api) = (self.tailer, self.api);
        let (tailer, api, first) = tokio::task::spawn_blocking(move || {
            tailer.start();
            if let Some((_, Some(list))) = api.as_mut() {
                list.start();
            }
            let first = p.commit(&dir);
            (tailer, api, first)
        })
        .await
        .context("the start-up commit task failed")?;
        if let Err(e) = &first {
            tracing::error!(error = %e, "Cannot commit the state at start-up; not ready until a commit succeeds.");
        }
        self.publisher.commit_result(first.is_ok());
        // What was restored is what the last commit held: serve it from the start.
        self.publisher.restored(&self.pipeline);
        let local = self
            .listener
            .local_addr()
            .context("cannot read the listening address")?;

        // Sources stop first, then the last commit, then the HTTP server.
        let tokens = Tokens::default();
        let tracker = TaskTracker::new();
        let limits = http::Limits {
            max_connections: settings.web.max_connections,
            header_read_timeout: settings.web.header_read_timeout,
            grace: settings.state.shutdown_grace,
        };
        tracker.spawn(http::serve(
            self.listener,
            self.http.clone(),
            limits,
            tokens.http.child_token(),
        ));
        // With the API source, every task created through the proxy is followed.
        let follow = api.is_some().then_some(settings.api.max_tracked);
        let (proxy, journal) = match self.proxy {
            Some(proxy) => {
                let (tasks, journal) =
                    proxy.start(settings, &self.pipeline, (&tracker, &tokens), follow)?;
                (Some(tasks), Some(journal))
            }
            None => (None, None),
        };
        let (first_poll_tx, first_poll) = tokio::sync::oneshot::channel();
        let (file_settings, file_settings_rx) = tokio::sync::watch::channel(settings.file.clone());
        let file_task = tracker.spawn(file::run(
            tailer,
            tokens.sources.clone(),
            Some(first_poll_tx),
            Some(file_settings_rx),
        ));
        if let Some((client, list)) = api {
            spawn_api(
                &tracker,
                settings,
                client,
                list,
                &self.pipeline,
                &tokens.sources,
            );
        }
        let heartbeat = Arc::new(std::sync::atomic::AtomicU64::new(
            crate::clock::steady_now() as u64,
        ));
        let committer = Committer::new(
            self.pipeline.clone(),
            self.publisher,
            settings.state.dir.clone(),
            settings.state.commit_interval,
            heartbeat.clone(),
            journal,
        );
        let (runtime, token) = (tokio::runtime::Handle::current(), tokens.commits.clone());
        let commit_task = tracker.spawn_blocking(move || committer.run(runtime, token));
        if let Some(period) = sd_notify::watchdog_enabled() {
            let stale = settings.state.commit_interval * 2 + Duration::from_secs(5);
            tracker.spawn(watchdog(
                period,
                heartbeat,
                stale,
                tokens.http.child_token(),
            ));
        }
        tracing::info!(address = %local, telemetry_path = %settings.web.telemetry_path, version = crate::metrics::VERSION, "Listening.");
        let reloader = Reloader {
            http: self.http.clone(),
            overrides,
            current: settings.clone(),
            pipeline: self.pipeline,
            file_settings,
        };
        Ok(Running {
            http: self.http,
            tracker,
            tokens,
            proxy,
            file_task,
            commit_task,
            first_poll,
            reloader,
        })
    }
}

/// The HTTP endpoints' state: the committed metrics, rendered once per commit, and the
/// live process metrics (a registry of their own, rendered at each scrape).
fn http_state(settings: &Settings, process_registry: Registry) -> anyhow::Result<Arc<HttpState>> {
    #[cfg(target_os = "linux")]
    process_registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .context("cannot register the process metrics")?;
    Ok(Arc::new(HttpState {
        exposition: http::Exposition::new(Some(process_registry)),
        telemetry_path: settings.web.telemetry_path.clone(),
        sources_ready: Default::default(),
        committing: std::sync::atomic::AtomicBool::new(true),
        security: std::sync::RwLock::new(settings.web_security()?),
    }))
}

/// The task list's follower, its lines handled as task ids to poll.
fn task_list(
    settings: &Settings,
    path: &Path,
    pipeline: &Arc<Pipeline>,
    restored: &mut Restored,
) -> anyhow::Result<file::Tailer> {
    let list_settings = crate::config::FileSettings {
        paths: vec![path.display().to_string()],
        rotated: Vec::new(),
        ..settings.file.clone()
    };
    let list = file::Tailer::for_source(
        api::TASK_LIST_SOURCE,
        list_settings,
        pipeline.clone(),
        restored.checkpoint(api::TASK_LIST_SOURCE),
    );
    let handler = crate::source::task_list::TaskList {
        shard: settings.api.shard()?,
        max_tracked: settings.api.max_tracked,
    };
    pipeline.set_handler(list.source(), Arc::new(handler));
    Ok(list)
}

/// The API source's tasks: the task list's follower, the poller, the organization and
/// usage pollers.
fn spawn_api(
    tracker: &TaskTracker,
    settings: &Settings,
    client: api::Client,
    list: Option<file::Tailer>,
    pipeline: &Arc<Pipeline>,
    sources: &CancellationToken,
) {
    if let Some(list) = list {
        tracker.spawn(file::run(list, sources.clone(), None, None));
    }
    let poller = api::Poller::new(settings.api.clone(), client.clone(), pipeline.clone());
    tracker.spawn(api::run(poller, sources.clone()));
    tracker.spawn(api::run_organization(
        settings.api.clone(),
        client.clone(),
        pipeline.clone(),
        sources.clone(),
    ));
    tracker.spawn(api::run_usage(
        settings.api.clone(),
        client,
        pipeline.clone(),
        sources.clone(),
    ));
}

/// What stops what, in order: the sources, then the last commit, then the rest.
#[derive(Default)]
struct Tokens {
    sources: CancellationToken,
    commits: CancellationToken,
    http: CancellationToken,
}

/// The running daemon.
struct Running {
    http: Arc<HttpState>,
    tracker: TaskTracker,
    tokens: Tokens,
    proxy: Option<ProxyTasks>,
    file_task: tokio::task::JoinHandle<()>,
    commit_task: tokio::task::JoinHandle<()>,
    /// Sent once the files are open at their start positions.
    first_poll: tokio::sync::oneshot::Receiver<()>,
    reloader: Reloader,
}

impl Running {
    /// Becomes ready once the files are open, reloads on SIGHUP, and returns the signal
    /// that stops it.
    async fn until_signal(&mut self, signals: &mut Signals) -> &'static str {
        tokio::select! {
            s = signals.shutdown(&mut self.reloader) => return s,
            _ = &mut self.first_poll => {}
        }
        // The files are open at their start positions: appended lines are counted.
        self.http.sources_ready.store(true, Ordering::Release);
        tracing::info!("Ready.");
        // Type=notify: systemd considers the service started now.
        if let Err(e) = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("Following task logs."),
        ]) {
            tracing::warn!(error = %e, "Cannot notify systemd (NOTIFY_SOCKET).");
        }
        signals.shutdown(&mut self.reloader).await
    }

    /// Stops the sources (the proxy's requests in progress finish and its observations
    /// are applied), makes the last commit, then stops the rest, within `grace`.
    async fn shut_down(self, signal: &'static str, grace: Duration) {
        tracing::info!(signal, "Shutting down.");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.http.sources_ready.store(false, Ordering::Release);
        self.tracker.close();
        let (tokens, tracker) = (self.tokens, self.tracker);
        let proxy_drain = self.proxy.as_ref().map(|p| p.drain.clone());
        let stop = async {
            tokens.sources.cancel();
            let _ = self.file_task.await;
            // What the proxy saw before the signal is in the last commit.
            if let Some(proxy) = self.proxy {
                proxy.drain().await;
            }
            tokens.commits.cancel();
            let _ = self.commit_task.await;
            tokens.http.cancel();
            tracker.wait().await;
        };
        if tokio::time::timeout(grace, stop).await.is_err() {
            tracing::warn!(grace = ?grace, "Tasks still running after the grace period; exiting anyway.");
            // The commit loop's thread outlives the runtime's workers: it makes its last
            // commit now, which the runtime waits for when it is dropped.
            if let Some(drain) = proxy_drain {
                drain.cancel();
            }
            tokens.commits.cancel();
        }
    }
}
