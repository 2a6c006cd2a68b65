//! The Runway API source: polls every *tracked* task until it ends, and the
//! organization's credits and limits.
//!
//! Runway has no endpoint that lists tasks and no webhooks, so the application lists
//! the ids of the tasks it creates in a *task list*, which the file source follows
//! ([`super::task_list`]): an id read from it becomes a tracked task in the ledger,
//! committed with the list's position. A task created through the proxy is tracked the
//! same way (`crate::proxy`), and is asked for only once the application has not asked
//! the proxy for it for a `poll_interval` (its create counts as asking): a task the
//! application polls itself is not polled a second time. This module polls
//! `GET /v1/tasks/{id}` for each tracked task and feeds the answer to the same parser,
//! classifier and ledger as a task log; a task *ends* when it is terminal (counted),
//! gone (404: `CANCELLED` when it was seen waiting or running, for Runway forgets a
//! task once it is cancelled or deleted; else unknown to the API, `not_found`) or older
//! than `max_task_age` (`expired`), and it is forgotten in the same lock as it is
//! counted, so it is counted exactly once. A task's age is its wall-clock age (from
//! `added_at`) when this process first schedules it, plus the monotonic time since: a
//! step of the wall clock neither expires every task (a day forward) nor keeps them
//! longer (back).
//!
//! Politeness: one task is polled every `poll_interval` (with up to 25 % jitter) and
//! never more often than `min_poll_interval`; requests start at most
//! `requests_per_second` and at most `max_in_flight` are under way. An error answer is
//! read the way Runway's SDKs read it (`retry_hint`, `fate`): `x-should-retry:
//! true` or `false` decides when present; else 408, 409, 429 and 5xx are retried. A
//! retried answer waits what `retry-after-ms`, else `retry-after`, asks (cut to
//! `backoff_max`; an unusable value is no wait), else backs off exponentially with up to
//! 50 % jitter, as timeouts and connection errors do. That wait is the task's; a 429 (a
//! quota, the account's) and a 503 (the service unavailable) hold every request for it
//! too. An answer not to be retried is about its task (a 400, another 4xx,
//! `x-should-retry: false`): that task alone is asked again only every
//! `auth_retry_interval`; it stays tracked, so it is counted if it ever answers, or
//! ends as `expired`. Only the answers that condemn the key (401, 403) or the API (405;
//! and a 400 to every tracked task since the API last accepted a request, which is a
//! retired `api_version`) mark the source down: one ERROR is logged, and every task is
//! retried only every `auth_retry_interval` until the API accepts a request again.
//! Every request is counted by endpoint and answer code.
//!
//! Credits: a terminal task's `cost.credits` is counted as what it was charged; the
//! `estimatedCost.credits` of a task still running is kept with the tracked task, and
//! their sum is the credits in flight. Beside the tasks, `GET /v1/organization` gives the
//! balance and the tier's limits, and `POST /v1/organization/usage` Runway's own count of
//! the credits used today (UTC), by model. Those two are asked every
//! `organization_interval` and `usage_interval`; an error answer is read as a task's
//! ([`fate`], [`RetryHint::wait_or`]): retried after its own wait or the backoff, held
//! for `auth_retry_interval` when it is not to be retried. A model of the usage report
//! that no task can have (`runway_api`'s `model_has_tasks`, from `config/runway-api.toml`) is labelled `tasks="false"`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::config::Api;
use crate::ledger::{Ledger, LineResult, Organization, SourceId, Usage};
use crate::pipeline::{Pipeline, SourceEvent};
use crate::record::{FieldMap, ParseError, RecordParser, Status, TaskRecord};

/// The source name of the poller, the `source` label of its metrics.
pub const SOURCE: &str = "api";
/// The source name of the task list.
pub const TASK_LIST_SOURCE: &str = "task_list";
/// Environment variable holding the API key.
pub const KEY_ENV: &str = "RUNWAYML_API_SECRET";

/// The API key. Never printed: its `Debug` says only that it is there.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// From `api_key_file`, else the environment. The error never holds the key.
    pub fn load(settings: &Api) -> Result<ApiKey, String> {
        let key = match &settings.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("api.api_key_file {}: {e}", path.display()))?,
            None => std::env::var(KEY_ENV)
                .map_err(|_| format!("no API key: set {KEY_ENV} or api.api_key_file"))?,
        };
        let key = key.trim().to_string();
        if key.is_empty() || key.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("the API key is empty or holds characters a header cannot".into());
        }
        Ok(ApiKey(key))
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// Largest answer body read from the API: a task, the organization or a month of usage
/// is a few KB; a bigger body is refused as it arrives, so memory stays bounded.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What one request came back with.
#[derive(Debug)]
enum Answer {
    Ok(Vec<u8>),
    /// A 200 whose body passed [`MAX_BODY_BYTES`].
    TooLarge,
    Status {
        code: u16,
        hint: RetryHint,
    },
    Timeout,
    Failed,
}

impl Answer {
    fn code_label(&self) -> Cow<'static, str> {
        match self {
            Answer::Ok(_) => "200".into(),
            Answer::TooLarge => "too_large".into(),
            Answer::Status { code, .. } => code.to_string().into(),
            Answer::Timeout => "timeout".into(),
            Answer::Failed => "error".into(),
        }
    }
}

/// What an error answer's headers say about retrying it, read as the SDKs read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RetryHint {
    /// How long the API asks to be left alone: `retry-after-ms`, else `retry-after`.
    wait: Option<Duration>,
    /// `x-should-retry`: `true` or `false`; any other value says nothing.
    should_retry: Option<bool>,
}

/// Longest wait a header is read as (the poller then bounds it by `backoff_max`).
const MAX_HINT: Duration = Duration::from_secs(86_400);

/// Reads `retry-after-ms` (milliseconds, a float), then `retry-after` (seconds, a float,
/// or an HTTP date), then `x-should-retry`. A wait that is not a finite number more than
/// 0 (negative, `NaN`, a date past) is no wait, and the next header is read; a huge one
/// (`1e308`, the year 9999) is cut to [`MAX_HINT`].
fn retry_hint(headers: &reqwest::header::HeaderMap) -> RetryHint {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let millis = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| wait_of(ms / 1000.0));
    let wait = millis.or_else(|| {
        let v = text("retry-after")?;
        match v.parse::<f64>() {
            Ok(secs) => wait_of(secs),
            Err(_) => httpdate::parse_http_date(v)
                .ok()?
                .duration_since(std::time::SystemTime::now())
                .ok()
                .and_then(|d| wait_of(d.as_secs_f64())),
        }
    });
    let should_retry = match text("x-should-retry") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    RetryHint { wait, should_retry }
}

impl RetryHint {
    /// The wait before asking again: the answer's own, at most `cap`, else `backoff`.
    fn wait_or(self, cap: Duration, backoff: impl FnOnce() -> Duration) -> Duration {
        self.wait.map(|w| w.min(cap)).unwrap_or_else(backoff)
    }
}

/// A wait of `secs` seconds, if it is one: finite and more than 0; at most [`MAX_HINT`].
fn wait_of(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_HINT.as_secs_f64())))
}

/// What an error answer means for the task it is about (a 404 is handled before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Passing: the task is asked again after the answer's wait or its backoff.
    Retry,
    /// Not to be retried soon (a 400 or another 4xx about this task, or
    /// `x-should-retry: false`): this task alone waits `auth_retry_interval`.
    Hold,
    /// The key (401, 403) or the API (405: not Runway's) is wrong: the source is down
    /// and every task waits `auth_retry_interval`.
    Refused,
}

/// The SDKs' rule: `x-should-retry` decides when present, else 408, 409, 429 and 5xx
/// are retried; of the others, the answers that condemn the key or the API are set apart.
/// Only `x-should-retry: true` saves a 401, 403 or 405 from marking the source down.
fn fate(code: u16, should_retry: Option<bool>) -> Fate {
    match (should_retry, code) {
        (Some(true), _) => Fate::Retry,
        (_, 401 | 403 | 405) => Fate::Refused,
        (Some(false), _) => Fate::Hold,
        (None, 408 | 409 | 429 | 500..) => Fate::Retry,
        (None, _) => Fate::Hold,
    }
}

/// Whether an error answer holds every request, not only its task's: a 429 (Runway's
/// quotas are the account's) and a 503 (the service says it is unavailable).
fn holds_source(code: u16) -> bool {
    matches!(code, 429 | 503)
}

/// `base x 2^failures`, at most `max`, less the `jitter` fraction (0 to 0.5).
pub fn backoff_delay(base: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.min(20));
    exp.min(max).mul_f64(1.0 - jitter.clamp(0.0, 0.5))
}

/// Exponential backoff from `backoff_base` to `backoff_max`, with up to 50 % jitter
/// taken off.
fn jittered_backoff(settings: &Api, failures: u32) -> Duration {
    let jitter = rand::rng().random_range(0.0..0.5);
    backoff_delay(
        settings.backoff_base,
        settings.backoff_max,
        failures,
        jitter,
    )
}

/// A client for the two endpoints.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: ApiKey,
    version: String,
}

impl Client {
    pub fn new(settings: &Api, key: ApiKey) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("runway-exporter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: settings.base_url.trim_end_matches('/').to_string(),
            key,
            version: settings.api_version.clone(),
        })
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let request = request
            .header(reqwest::header::AUTHORIZATION, self.key.bearer())
            .header("X-Runway-Version", &self.version);
        match request.send().await {
            Ok(r) if r.status().is_success() => read_capped(r).await,
            Ok(r) => Answer::Status {
                code: r.status().as_u16(),
                hint: retry_hint(r.headers()),
            },
            Err(e) if e.is_timeout() => Answer::Timeout,
            Err(_) => Answer::Failed,
        }
    }
}

/// A 200's body, read a chunk at a time up to [`MAX_BODY_BYTES`].
async fn read_capped(mut r: reqwest::Response) -> Answer {
    if r.content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Answer::TooLarge;
    }
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_BODY_BYTES => {
                return Answer::TooLarge
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Answer::Ok(body),
            Err(e) if e.is_timeout() => return Answer::Timeout,
            Err(_) => return Answer::Failed,
        }
    }
}

/// When a task is polled next, and how many retryable failures in a row it had.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    next: Instant,
    last_start: Option<Instant>,
    failures: u32,
    in_flight: bool,
    /// The task's last answer in this process: when, and its status.
    last_answer: Option<(Instant, Status)>,
    /// When this process first scheduled the task, and its age then (seconds, at least
    /// 0: a task read just before a step back of the wall clock is new, not a day to go).
    aged: (Instant, f64),
}

impl Schedule {
    /// The task's age at `now`: never moved by a step of the wall clock.
    fn age(&self, now: Instant) -> f64 {
        self.aged.1 + now.saturating_duration_since(self.aged.0).as_secs_f64()
    }
}

/// The poller's state; [`run`] drives it.
pub struct Poller {
    settings: Api,
    client: Client,
    pipeline: Arc<Pipeline>,
    source: SourceId,
    parser: RecordParser,
    schedule: HashMap<String, Schedule>,
    /// No request starts before this (a 429's or a 503's wait, or the API refusing
    /// the key).
    hold_until: Instant,
    down: bool,
    /// Whether the API accepted a request in this run (a 200 or a 404).
    accepted: bool,
    /// The tracked tasks held ([`Fate::Hold`]) since the API last accepted a request.
    refused: HashSet<String>,
}

impl Poller {
    pub fn new(settings: Api, client: Client, pipeline: Arc<Pipeline>) -> Poller {
        let source = pipeline.add_source(SOURCE);
        Poller {
            settings,
            client,
            pipeline,
            source,
            parser: RecordParser::new(&FieldMap::default())
                .expect("the default field map is valid"),
            schedule: HashMap::new(),
            hold_until: Instant::now(),
            down: false,
            accepted: false,
            refused: HashSet::new(),
        }
    }

    /// `poll_interval` with up to 25 % jitter either way, never under the minimum.
    fn interval(&self) -> Duration {
        let j = rand::rng().random_range(0.75..1.25);
        self.settings
            .poll_interval
            .mul_f64(j)
            .max(self.settings.min_poll_interval)
    }

    fn backoff(&self, failures: u32) -> Duration {
        jittered_backoff(&self.settings, failures)
    }

    /// Brings the schedule in line with the ledger's tracked tasks; ends expired ones.
    fn sync(&mut self, now: Instant) {
        let max_age = self.settings.max_task_age.as_secs_f64();
        let unix = unix_now();
        let source = self.source;
        let schedule = &self.schedule;
        let (tracked, expired) = self.pipeline.with_ledger(|l| {
            let expired: Vec<String> = l
                .api
                .tasks()
                .filter(|t| {
                    let age = schedule.get(&t.id).map(|s| s.age(now));
                    age.unwrap_or(unix - t.added_at) > max_age
                })
                .map(|t| t.id.clone())
                .collect();
            for id in &expired {
                l.end_api_task(source, id, Err(LineResult::Expired), None);
            }
            // Never less than 0: read before a step back of the clock, it is new.
            let tracked = l.api.tasks().map(|t| {
                let age = (unix - t.added_at).max(0.0);
                (t.id.clone(), age, l.created.sighted(&t.id))
            });
            (tracked.collect::<Vec<_>>(), expired)
        });
        for id in expired {
            tracing::info!(task = %id, "Task still not finished after max_task_age; no longer polled (expired).");
        }
        self.schedule
            .retain(|id, s| s.in_flight || tracked.binary_search_by(|(t, ..)| t.cmp(id)).is_ok());
        let schedule = &self.schedule;
        self.refused.retain(|id| schedule.contains_key(id));
        let quiet = self.settings.poll_interval.as_secs_f64();
        for (id, age, sighted) in tracked {
            let s = self.schedule.entry(id).or_insert(Schedule {
                next: now,
                last_start: None,
                failures: 0,
                in_flight: false,
                last_answer: None,
                aged: (now, age),
            });
            // The application asked the proxy for it lately: not asked again until it
            // has been quiet for a poll interval.
            let wait = sighted.map_or(0.0, |at| at + quiet - unix);
            if wait > 0.0 && !s.in_flight {
                s.next = s.next.max(now + Duration::from_secs_f64(wait));
            }
        }
    }

    fn set_up(&mut self, up: bool) {
        if up {
            self.accepted = true;
            self.refused.clear();
        }
        if self.down == up {
            self.down = !up;
            let source = self.source;
            self.pipeline.event(source, SourceEvent::Up(up));
            if up {
                tracing::info!("The Runway API accepts the requests again.");
            }
        }
    }

    fn count_request(&self, endpoint: &str, answer: &Answer) {
        let code = answer.code_label().into_owned();
        self.pipeline
            .with_ledger(|l| l.count_api_request(endpoint, &code));
    }

    /// The time of an answer with `status` that follows `last` (the task's answer
    /// before it in this process): now, when `last` was recent (two poll intervals)
    /// and still in the status before (not ended, for a terminal answer; `PENDING` or
    /// `THROTTLED`, for a `RUNNING` one). The change happened between the two, so the
    /// time is at most that late. After a restart, a backoff or a first answer, the
    /// change may be long past: no time.
    fn answer_time(
        &self,
        last: Option<(Instant, Status)>,
        status: Status,
        now: Instant,
    ) -> Option<f64> {
        let (at, before) = last?;
        let recent = now.duration_since(at) <= self.settings.poll_interval * 2;
        let was_before = match status {
            Status::Running => matches!(before, Status::Pending | Status::Throttled),
            s if s.is_terminal() => !before.is_terminal(),
            _ => false,
        };
        (recent && was_before).then(unix_now)
    }

    /// Handles the answer for one task.
    fn answered(&mut self, id: String, answer: Answer, now: Instant) {
        self.count_request("tasks", &answer);
        let source = self.source;
        let Some(mut s) = self.schedule.get(&id).copied() else {
            return;
        };
        s.in_flight = false;
        let earliest = s
            .last_start
            .map(|t| t + self.settings.min_poll_interval)
            .unwrap_or(now);
        // An answer that says nothing of when to ask again (error answers read their
        // hints in `error_answer`): back off.
        let retry = |s: &mut Schedule, this: &Self| {
            s.failures += 1;
            s.next = (now + this.backoff(s.failures - 1)).max(earliest);
        };
        match answer {
            Answer::Ok(body) => {
                self.set_up(true);
                match self.parser.parse(&body) {
                    // Counted for the task asked about or not at all: an answer naming
                    // another task (a confused cache or proxy) says nothing about this one.
                    Ok(record) if record.id.as_deref().is_some_and(|other| other != id) => {
                        let e = ParseError::OtherTaskId;
                        self.pipeline.with_ledger(|l| l.reject(source, e));
                        tracing::warn!(task = %id, "The API answered with another task's id; not counted, retrying.");
                        retry(&mut s, self);
                    }
                    Ok(mut record) if record.status.is_terminal() => {
                        let at = self.answer_time(s.last_answer, record.status, now);
                        let ended = self.pipeline.with_ledger(|l| {
                            with_task_fields(l, &id, &mut record);
                            l.end_api_task(source, &id, Ok(&record), at)
                        });
                        tracing::debug!(task = %id, result = ?ended, "Task ended.");
                        self.schedule.remove(&id);
                        return;
                    }
                    Ok(mut record) => {
                        let at = self.answer_time(s.last_answer, record.status, now);
                        self.pipeline.with_ledger(|l| {
                            with_task_fields(l, &id, &mut record);
                            l.api_answer(source, &id, &record, at)
                        });
                        s.last_answer = Some((now, record.status));
                        s.failures = 0;
                        s.next = (now + self.interval()).max(earliest);
                    }
                    Err(e) => {
                        self.pipeline.with_ledger(|l| l.reject(source, e));
                        tracing::warn!(task = %id, reason = e.as_str(), "The API answered with a task that cannot be read; retrying.");
                        retry(&mut s, self);
                    }
                }
            }
            // Gone, unless the API itself says to ask again.
            Answer::Status { code: 404, hint } if hint.should_retry != Some(true) => {
                self.set_up(true);
                let ended = self.pipeline.with_ledger(|l| l.api_task_gone(source, &id));
                match ended {
                    LineResult::NotFound => {
                        tracing::info!(task = %id, "The API does not know the task (404); no longer polled.")
                    }
                    _ => {
                        tracing::info!(task = %id, result = ?ended, "The task was deleted (404 after it was seen waiting or running): it ends CANCELLED; no longer polled.")
                    }
                }
                self.schedule.remove(&id);
                return;
            }
            Answer::Status { code, hint } => {
                self.error_answer(&id, &mut s, code, hint, now);
                s.next = s.next.max(earliest);
            }
            Answer::TooLarge => {
                let e = ParseError::LineTooLong;
                self.pipeline.with_ledger(|l| l.reject(source, e));
                tracing::warn!(task = %id, max_bytes = MAX_BODY_BYTES, "The API answered with a body too large to read; retrying.");
                retry(&mut s, self);
            }
            Answer::Timeout | Answer::Failed => retry(&mut s, self),
        }
        self.schedule.insert(id, s);
    }

    /// Schedules `id` after an error answer (not a 404, unless `x-should-retry: true`):
    /// see [`fate`]. A 429 or a 503
    /// also holds every request for its wait.
    fn error_answer(
        &mut self,
        id: &str,
        s: &mut Schedule,
        code: u16,
        hint: RetryHint,
        now: Instant,
    ) {
        let wait = hint.wait_or(self.settings.backoff_max, || self.backoff(s.failures));
        if holds_source(code) {
            self.hold_until = self.hold_until.max(now + wait);
        }
        let long = self.settings.auth_retry_interval.max(wait);
        match fate(code, hint.should_retry) {
            Fate::Retry => {
                s.failures += 1;
                s.next = now + wait;
            }
            Fate::Hold if !self.refuses_every_task(id) => {
                tracing::warn!(task = %id, code, "The API refuses this task's request; it alone is asked again every auth_retry_interval.");
                s.next = now + long;
            }
            Fate::Hold | Fate::Refused => {
                if !self.down {
                    tracing::error!(code, "The Runway API refuses the requests: check the API key (RUNWAYML_API_SECRET or api.api_key_file), api.api_version and api.base_url. Retrying every auth_retry_interval.");
                }
                self.set_up(false);
                self.hold_until = self.hold_until.max(now + long);
                s.next = now + long;
            }
        }
    }

    /// Notes that the API refused `id`'s request, and says whether it has now refused
    /// every tracked task since it last accepted a request: then the request itself is
    /// wrong (an `api_version` Runway no longer takes), not one task. One task alone
    /// is taken for that only before the API accepted anything in this run.
    fn refuses_every_task(&mut self, id: &str) -> bool {
        self.refused.insert(id.to_string());
        (!self.accepted || self.refused.len() >= 2)
            && self.schedule.keys().all(|k| self.refused.contains(k))
    }

    /// The due task polled longest ago, if any.
    fn next_due(&self, now: Instant) -> Option<String> {
        self.schedule
            .iter()
            .filter(|(_, s)| !s.in_flight && s.next <= now)
            .min_by_key(|(_, s)| s.next)
            .map(|(id, _)| id.clone())
    }

    /// When something is next due, for the loop to sleep until.
    fn wake_at(&self) -> Option<Instant> {
        self.schedule
            .values()
            .filter(|s| !s.in_flight)
            .map(|s| s.next)
            .min()
            .map(|t| t.max(self.hold_until))
    }
}

/// Fills what the API's task has not and the task list said (model, duration), and the
/// id it was polled by when the answer has none.
fn with_task_fields<'a>(l: &Ledger, id: &'a str, record: &mut TaskRecord<'a>) {
    if record.id.is_none() {
        record.id = Some(Cow::Borrowed(id));
    }
    let Some(t) = l.api.task(id) else { return };
    if record.model.is_none() {
        record.model = t.model.clone().map(Cow::Owned);
    }
    if record.duration.is_none() {
        record.duration = t.duration;
    }
}

/// Polls until `token` is cancelled.
pub async fn run(mut p: Poller, token: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Answer)>();
    let permits = Arc::new(tokio::sync::Semaphore::new(p.settings.max_in_flight));
    let spacing = Duration::from_secs_f64(1.0 / p.settings.requests_per_second);
    let mut last_start = Instant::now() - spacing;
    // How often tracked tasks are looked for when nothing else wakes the loop.
    let resync = p.settings.min_poll_interval.min(Duration::from_millis(500));
    let source = p.source;
    p.pipeline.event(source, SourceEvent::Up(true));
    loop {
        let now = Instant::now();
        p.sync(now);
        // Start what is due, within the rate, the in-flight cap and any hold.
        while now >= p.hold_until && now >= last_start + spacing {
            let Some(id) = p.next_due(now) else { break };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            if let Some(s) = p.schedule.get_mut(&id) {
                s.in_flight = true;
                s.last_start = Some(now);
            }
            last_start = now;
            let (client, tx) = (p.client.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = client.get(&format!("/v1/tasks/{id}")).await;
                drop(permit);
                let _ = tx.send((id, answer));
            });
        }
        let wake = p
            .wake_at()
            .map(|t| t.max(last_start + spacing))
            .unwrap_or(now + resync)
            .min(now + resync);
        tokio::select! {
            _ = token.cancelled() => break,
            Some((id, answer)) = rx.recv() => p.answered(id, answer, Instant::now()),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    p.pipeline.event(source, SourceEvent::Up(false));
}

/// The part of `GET /v1/organization` that becomes gauges. A limit that is `null` (or
/// missing) is no limit.
fn organization(body: &[u8]) -> Option<Organization> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let credit_balance = v.get("creditBalance").and_then(credits)?;
    let limits = v.pointer("/tier/models").and_then(|m| m.as_object());
    let usage = v.pointer("/usage/models").and_then(|m| m.as_object());
    let mut names: Vec<&String> = limits
        .into_iter()
        .flat_map(|m| m.keys())
        .chain(usage.into_iter().flat_map(|m| m.keys()))
        .collect();
    names.sort();
    names.dedup();
    let mut models = Vec::new();
    for name in names.into_iter().take(MAX_MODELS) {
        let num = |root: Option<&serde_json::Map<String, serde_json::Value>>, key: &str| {
            root.and_then(|m| m.get(name))
                .and_then(|m| m.get(key))
                .and_then(credits)
        };
        models.push(crate::ledger::ModelLimits {
            model: crate::ledger::model_label(Some(name)).to_string(),
            daily_generations: num(usage, "dailyGenerations").unwrap_or(0.0),
            max_daily_generations: num(limits, "maxDailyGenerations"),
            max_concurrent_generations: num(limits, "maxConcurrentGenerations"),
        });
    }
    Some(Organization {
        credit_balance,
        models,
        max_monthly_credit_spend: v.pointer("/tier/maxMonthlyCreditSpend").and_then(credits),
    })
}

/// Models taken from one organization or usage answer at most.
const MAX_MODELS: usize = 100;

/// Largest organization number taken from the API (a balance, a limit, a day's usage):
/// whole numbers of credits are exact in an f64 up to 2^53, about 9e15.
const MAX_ORGANIZATION_NUMBER: f64 = 1e15;

/// A number of credits (or generations) from the API: finite and not absurd; usage
/// amounts may be negative (refunds).
fn credits(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|n| n.abs() <= MAX_ORGANIZATION_NUMBER)
}

/// The part of `POST /v1/organization/usage` for the day `date`: the credits used by
/// each model, and 0 for the models the answer lists without usage that day.
fn usage(body: &[u8], date: &str) -> Option<Usage> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut used: std::collections::BTreeMap<String, f64> = v
        .get("models")?
        .as_array()?
        .iter()
        .filter_map(|m| m.as_str())
        .take(MAX_MODELS)
        .map(|m| (crate::ledger::model_label(Some(m)).to_string(), 0.0))
        .collect();
    let day = v
        .get("results")?
        .as_array()?
        .iter()
        .find(|r| r.get("date").and_then(|d| d.as_str()) == Some(date));
    let entries = day
        .and_then(|d| d.get("usedCredits"))
        .and_then(|u| u.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in entries {
        let (Some(model), Some(amount)) = (
            e.get("model").and_then(|m| m.as_str()),
            e.get("amount").and_then(credits),
        ) else {
            continue;
        };
        let label = crate::ledger::model_label(Some(model)).to_string();
        if used.len() < MAX_MODELS || used.contains_key(&label) {
            *used.entry(label).or_default() += amount;
        }
    }
    Some(Usage {
        date: date.to_string(),
        models: used
            .into_iter()
            .map(|(model, credits)| crate::ledger::ModelUsage { model, credits })
            .collect(),
    })
}

/// Asks for the organization's credits and limits every `organization_interval`.
pub async fn run_organization(
    settings: Api,
    client: Client,
    pipeline: Arc<Pipeline>,
    token: CancellationToken,
) {
    let client = &client;
    poll_every(
        (&settings, settings.organization_interval, "organization"),
        &pipeline,
        &token,
        || async move { (client.get("/v1/organization").await, ()) },
        |body, ()| organization(body),
        crate::ledger::Ledger::set_organization,
    )
    .await;
}

/// Asks for Runway's own count of today's credits (UTC) every `usage_interval`.
pub async fn run_usage(
    settings: Api,
    client: Client,
    pipeline: Arc<Pipeline>,
    token: CancellationToken,
) {
    let client = &client;
    poll_every(
        (&settings, settings.usage_interval, "organization_usage"),
        &pipeline,
        &token,
        || async move {
            let now = std::time::SystemTime::now();
            let today = crate::clock::utc_day(now);
            let body = serde_json::json!({
                "startDate": today,
                "beforeDate": crate::clock::utc_day(now + Duration::from_secs(86_400)),
            });
            (
                client.post_json("/v1/organization/usage", &body).await,
                today,
            )
        },
        |body, today| usage(body, &today),
        crate::ledger::Ledger::set_usage,
    )
    .await;
}

/// Asks `request` every `interval` (0: never) until cancelled and counts each request
/// under `endpoint` (both with the `[api]` settings, in the first argument); a 200's body is `read` (with what the request said of itself), and
/// what could be read is stored in the ledger. An answer that cannot be read is asked
/// again when [`next_ask`] says.
async fn poll_every<C, T, F, Fut>(
    (settings, interval, endpoint): (&Api, Duration, &str),
    pipeline: &Pipeline,
    token: &CancellationToken,
    request: F,
    read: impl Fn(&[u8], C) -> Option<T>,
    store: impl Fn(&mut crate::ledger::Ledger, T),
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (Answer, C)>,
{
    if interval.is_zero() {
        return;
    }
    let mut next = Instant::now();
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let (answer, context) = tokio::select! {
            _ = token.cancelled() => return,
            a = request() => a,
        };
        let code = answer.code_label().into_owned();
        let value = match &answer {
            Answer::Ok(body) => read(body, context),
            _ => None,
        };
        let ok = value.is_some();
        pipeline.with_ledger(|l| {
            l.count_api_request(endpoint, &code);
            if let Some(v) = value {
                store(l, v);
            }
        });
        if !ok && failures == 0 {
            tracing::warn!(endpoint, code = %code, "Cannot read the answer of the Runway API; retrying.");
        }
        let wait = next_ask(settings, interval, &answer, ok, &mut failures);
        next = Instant::now() + wait;
    }
}

/// How long a periodic request (organization, usage) waits after `answer` (`read`: a
/// 200 that could be read), with `failures` the answers in a row that could not be.
/// An error answer is read as a task's is ([`fate`], [`RetryHint::wait_or`]): retried
/// after its own wait (at most `backoff_max`) or the backoff; held (not to be retried,
/// or the key refused) for `auth_retry_interval`. Never sooner than `interval` unless
/// retried; a read answer waits `interval`.
fn next_ask(
    settings: &Api,
    interval: Duration,
    answer: &Answer,
    read: bool,
    failures: &mut u32,
) -> Duration {
    if read {
        *failures = 0;
        return interval;
    }
    let backoff = || jittered_backoff(settings, *failures);
    let wait = match answer {
        Answer::Status { code, hint } => {
            let wait = hint.wait_or(settings.backoff_max, backoff);
            match fate(*code, hint.should_retry) {
                Fate::Retry => wait,
                Fate::Hold | Fate::Refused => wait.max(settings.auth_retry_interval).max(interval),
            }
        }
        _ => backoff(),
    };
    *failures = failures.saturating_add(1);
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_body() {
        let body = br#"{"creditBalance":12345,"tier":{"maxMonthlyCreditSpend":100000,"models":{"gen4_turbo":{"maxConcurrentGenerations":2,"maxDailyGenerations":200},"veo3":{"maxConcurrentGenerations":null,"maxDailyGenerations":null},"gen4.5":{"maxConcurrentGenerations":1e308,"maxDailyGenerations":-1e300},"big":{"maxDailyGenerations":5e12},"bad model":{"maxConcurrentGenerations":1,"maxDailyGenerations":1}}},"usage":{"models":{"gen4_turbo":{"dailyGenerations":17}}}}"#;
        let org = organization(body).unwrap();
        assert_eq!(org.credit_balance, 12345.0);
        assert_eq!(org.max_monthly_credit_spend, Some(100000.0));
        let models: Vec<_> = org
            .models
            .iter()
            .map(|m| {
                (
                    m.model.as_str(),
                    m.daily_generations,
                    m.max_daily_generations,
                    m.max_concurrent_generations,
                )
            })
            .collect();
        assert!(models.contains(&("gen4_turbo", 17.0, Some(200.0), Some(2.0))));
        // null is no limit, and so is a number no tier has.
        assert!(models.contains(&("veo3", 0.0, None, None)));
        assert!(models.contains(&("gen4.5", 0.0, None, None)));
        assert!(models.contains(&("big", 0.0, Some(5e12), None)));
        let rich = organization(br#"{"creditBalance":2500000000}"#).unwrap();
        assert_eq!(
            rich.credit_balance, 2.5e9,
            "a balance past a task's bound is read"
        );
        assert!(org.models.iter().any(|m| m.model == "invalid"));
        let unlimited =
            organization(br#"{"creditBalance":1,"tier":{"maxMonthlyCreditSpend":null}}"#).unwrap();
        assert_eq!(unlimited.max_monthly_credit_spend, None);
        assert_eq!(organization(b"{}"), None);
        assert_eq!(organization(br#"{"creditBalance":"NaN"}"#), None);
        assert_eq!(organization(b"not json"), None);
    }

    #[test]
    fn usage_body_for_one_day() {
        let body = br#"{"models":["gen4_turbo","veo3","gen4_image"],"results":[
            {"date":"2026-11-30","usedCredits":[{"model":"gen4_turbo","amount":999}]},
            {"date":"2026-12-01","usedCredits":[{"model":"gen4_turbo","amount":150},{"model":"veo3","amount":-40},{"model":"x y","amount":5},{"model":"veo3","amount":1e300},{"amount":3}]}]}"#;
        let u = usage(body, "2026-12-01").unwrap();
        assert_eq!(u.date, "2026-12-01");
        let models: Vec<_> = u
            .models
            .iter()
            .map(|m| (m.model.as_str(), m.credits))
            .collect();
        assert_eq!(
            models,
            [
                ("gen4_image", 0.0),
                ("gen4_turbo", 150.0),
                ("invalid", 5.0),
                ("veo3", -40.0),
            ]
        );
        // A day without usage: every listed model at 0.
        let u = usage(body, "2026-12-02").unwrap();
        assert!(u.models.iter().all(|m| m.credits == 0.0) && u.models.len() == 3);
        assert_eq!(usage(b"{}", "2026-12-01"), None);
        assert_eq!(usage(b"[]", "2026-12-01"), None);
        let many: Vec<String> = (0..500).map(|i| format!("\"m{i}\"")).collect();
        let body = format!(r#"{{"models":[{}],"results":[]}}"#, many.join(","));
        assert_eq!(
            usage(body.as_bytes(), "2026-12-01").unwrap().models.len(),
            MAX_MODELS
        );
    }

    fn hint(headers: &[(&'static str, &str)]) -> RetryHint {
        let mut h = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            h.insert(*name, value.parse().unwrap());
        }
        retry_hint(&h)
    }

    fn wait(headers: &[(&'static str, &str)]) -> Option<Duration> {
        hint(headers).wait
    }

    #[test]
    fn retry_after_ms_first_then_seconds_or_a_date() {
        let secs = Duration::from_secs;
        assert_eq!(wait(&[("retry-after", "7")]), Some(secs(7)));
        assert_eq!(
            wait(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "250.5"), ("retry-after", "9")]),
            Some(Duration::from_micros(250_500)),
            "milliseconds first, a float"
        );
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + secs(30));
        let d = wait(&[("retry-after", &later)]).unwrap();
        assert!(d > secs(25) && d <= secs(30), "{d:?}");
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn absurd_waits_are_no_wait_or_bounded() {
        let secs = Duration::from_secs;
        for bad in ["-5", "NaN", "inf", "-inf", "0", "", "1e"] {
            assert_eq!(wait(&[("retry-after-ms", bad)]), None, "ms {bad:?}");
            assert_eq!(wait(&[("retry-after", bad)]), None, "s {bad:?}");
            assert_eq!(
                wait(&[("retry-after-ms", bad), ("retry-after", "3")]),
                Some(secs(3)),
                "an unusable retry-after-ms falls back to retry-after"
            );
        }
        for huge in ["1e308", "99999999999999999999", "18446744073709551616"] {
            assert_eq!(wait(&[("retry-after-ms", huge)]), Some(MAX_HINT), "{huge}");
            assert_eq!(wait(&[("retry-after", huge)]), Some(MAX_HINT), "{huge}");
        }
        assert_eq!(
            wait(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            Some(MAX_HINT)
        );
        assert_eq!(
            wait(&[("retry-after", "Thu, 01 Jan 1970 00:00:00 GMT")]),
            None,
            "a date past"
        );
    }

    #[test]
    fn x_should_retry_is_true_false_or_nothing() {
        let sr = |v: &str| hint(&[("x-should-retry", v)]).should_retry;
        assert_eq!(sr("true"), Some(true));
        assert_eq!(sr("false"), Some(false));
        assert_eq!(sr("yes"), None);
        assert_eq!(sr("1"), None);
        assert_eq!(hint(&[]).should_retry, None);
    }

    #[test]
    fn the_fate_of_an_error_answer() {
        use Fate::*;
        // The SDKs retry 408, 409, 429 and 5xx; Runway says not to retry 400 and 405.
        for code in [408, 409, 429, 500, 502, 503, 504, 599] {
            assert_eq!(fate(code, None), Retry, "{code}");
            assert_eq!(fate(code, Some(false)), Hold, "{code}");
        }
        for code in [400, 402, 410, 422, 451] {
            assert_eq!(fate(code, None), Hold, "{code}: about this task");
            assert_eq!(fate(code, Some(true)), Retry, "{code}");
        }
        for code in [401, 403, 405] {
            assert_eq!(fate(code, None), Refused, "{code}: the key or the API");
            assert_eq!(fate(code, Some(false)), Refused, "{code}");
            assert_eq!(fate(code, Some(true)), Retry, "{code}");
        }
        assert!(holds_source(429) && holds_source(503));
        assert!(!holds_source(502) && !holds_source(500) && !holds_source(400));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_less_at_most_half() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let d = |n, j| backoff_delay(base, max, n, j);
        assert_eq!(d(0, 0.0), Duration::from_secs(1));
        assert_eq!(d(1, 0.0), Duration::from_secs(2));
        assert_eq!(d(5, 0.0), Duration::from_secs(32));
        assert_eq!(d(9, 0.0), Duration::from_secs(300), "capped");
        assert_eq!(d(40, 0.0), Duration::from_secs(300), "no overflow");
        assert_eq!(d(3, 0.5), Duration::from_secs(4));
        assert_eq!(
            d(3, 0.9),
            Duration::from_secs(4),
            "jitter takes off at most half"
        );
    }

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey("sk-secret-123".into());
        assert!(!format!("{key:?}").contains("secret"));
    }
}
