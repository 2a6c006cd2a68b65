//! Typed settings, loaded in layers with the `config` crate and validated.
//!
//! Layers, each overriding the one before: the defaults below, the TOML file given with
//! `--config`, environment variables `RUNWAY_EXPORTER__<SECTION>__<KEY>` (lists
//! comma-separated), and the command-line flags. `config/runway-exporter.toml` documents
//! every key. A setting that cannot work is a [`ConfigError`] naming the key; `main`
//! turns it into exit code 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::{Table, TableError};
use crate::ledger::Limits;
use crate::pricing::{Pricing, PricingError};
use crate::record::{FieldMap, FieldMapError, RecordParser};

/// Environment variable prefix; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "RUNWAY_EXPORTER";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load the configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error(transparent)]
    FieldMap(#[from] FieldMapError),
    #[error("tables.failure_codes: {0}")]
    Table(#[from] TableError),
    #[error("tables.pricing: {0}")]
    Pricing(#[from] PricingError),
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// Where a file with no saved position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Web {
    pub listen_address: String,
    pub telemetry_path: String,
    /// The exporter-toolkit web config (TLS, basic auth).
    pub config_file: Option<PathBuf>,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen_address: "127.0.0.1:10145".into(),
            telemetry_path: "/metrics".into(),
            config_file: None,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub level: String,
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    pub dir: PathBuf,
    /// How often counters are committed and published to `/metrics`.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long shutdown may take before the exporter exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for State {
    fn default() -> Self {
        State {
            dir: "/var/lib/runway-exporter".into(),
            commit_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSettings {
    /// Paths and glob patterns of task logs.
    pub paths: Vec<String>,
    /// Paths and patterns of rotated logs (`app.log.1`): read at start-up only to finish
    /// a checkpointed file renamed while the exporter was stopped.
    pub rotated: Vec<String>,
    pub start_at: StartAt,
    /// Use change notifications (inotify); off means polling only, as on file systems
    /// without them (NFS, some container mounts).
    pub notify: bool,
    /// How often followed files are checked when no change notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the patterns are expanded again to find new files.
    #[serde(with = "humantime_serde")]
    pub glob_interval: Duration,
    /// A rotated or removed file is still read until it has been quiet this long.
    #[serde(with = "humantime_serde")]
    pub rotate_wait: Duration,
    pub max_line_bytes: usize,
    pub max_files: usize,
    pub read_block_bytes: usize,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            paths: Vec::new(),
            rotated: Vec::new(),
            start_at: StartAt::End,
            notify: true,
            poll_interval: Duration::from_millis(250),
            glob_interval: Duration::from_secs(5),
            rotate_wait: Duration::from_secs(5),
            max_line_bytes: 1024 * 1024,
            max_files: 256,
            read_block_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSettings {
    pub dedupe_window: usize,
    pub max_failure_codes: usize,
    pub max_models: usize,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        let l = Limits::default();
        LedgerSettings {
            dedupe_window: l.dedupe_window,
            max_failure_codes: l.max_failure_codes,
            max_models: l.max_models,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tables {
    /// Replaces the built-in failure-code table.
    pub failure_codes: Option<PathBuf>,
    /// Replaces the built-in pricing table.
    pub pricing: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// Off when unset.
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
    pub max_line_bytes: usize,
}

impl Default for DeadLetterSettings {
    fn default() -> Self {
        DeadLetterSettings {
            path: None,
            max_bytes: 16 * 1024 * 1024,
            max_line_bytes: 4096,
        }
    }
}

/// The Runway API source: poll the tasks whose ids the application lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// The task list: one task id per line, or JSON lines with an `id` field (and
    /// optionally `model` and `duration`). Off when unset.
    pub task_list: Option<PathBuf>,
    pub base_url: String,
    /// A file holding the API key (systemd `LoadCredential`); else `RUNWAYML_API_SECRET`.
    pub api_key_file: Option<PathBuf>,
    /// The `X-Runway-Version` header.
    pub api_version: String,
    /// How often one task is polled (with up to 25 % jitter either way).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// No task is polled more often than this. Runway asks for 5 s; lower it only
    /// against a test server.
    #[serde(with = "humantime_serde")]
    pub min_poll_interval: Duration,
    /// Requests per second at most, across all tasks.
    pub requests_per_second: f64,
    /// Requests in flight at most.
    pub max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First delay after a retryable failure; doubles up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Also the longest wait a `retry-after-ms` or `retry-after` header is honoured for.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// After an answer not to be retried: a 400 (or `x-should-retry: false`) about one
    /// task holds that task this long; 401/403/405 (the key or the API is wrong) hold
    /// every task.
    #[serde(with = "humantime_serde")]
    pub auth_retry_interval: Duration,
    /// A task not finished after this long ends as `expired`.
    #[serde(with = "humantime_serde")]
    pub max_task_age: Duration,
    /// How often `GET /v1/organization` is asked; 0 turns it off.
    #[serde(with = "humantime_serde")]
    pub organization_interval: Duration,
    /// How often `POST /v1/organization/usage` is asked for today's credits; 0 turns it
    /// off.
    #[serde(with = "humantime_serde")]
    pub usage_interval: Duration,
    /// `i/n`: poll only the ids whose hash falls in shard i of n.
    pub shard: String,
    /// Tasks polled at once at most; more ids end as `over_limit`.
    pub max_tracked: usize,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            task_list: None,
            base_url: "https://api.dev.runwayml.com".into(),
            api_key_file: None,
            api_version: "2024-11-06".into(),
            poll_interval: Duration::from_secs(6),
            min_poll_interval: Duration::from_secs(5),
            requests_per_second: 10.0,
            max_in_flight: 8,
            request_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            auth_retry_interval: Duration::from_secs(60),
            max_task_age: Duration::from_secs(24 * 3600),
            organization_interval: Duration::from_secs(60),
            usage_interval: Duration::from_secs(300),
            shard: "0/1".into(),
            max_tracked: 100_000,
        }
    }
}

impl Api {
    /// The shard as `(i, n)`.
    pub fn shard(&self) -> Result<(u64, u64), ConfigError> {
        let bad = || {
            invalid(
                "api.shard",
                format!("{:?}: want i/n with 0 <= i < n, e.g. 0/2", self.shard),
            )
        };
        let (i, n) = self.shard.split_once('/').ok_or_else(bad)?;
        let (i, n): (u64, u64) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || i >= n {
            return Err(bad());
        }
        Ok((i, n))
    }
}

/// `[proxy]`: the exporter in front of Runway's API (`RUNWAYML_BASE_URL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    pub enabled: bool,
    pub listen: String,
    /// The one origin requests go to.
    pub upstream: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// From the request's last byte sent to the answer's headers.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// The TLS handshake and each request's headers must arrive within this.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// TLS for applications on other hosts: both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Which tasks' outcomes this exporter counts: every task the proxy sees, or (with
    /// several replicas, each with its exporter) only those created through it.
    pub count: ProxyCount,
}

/// `proxy.count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyCount {
    /// Every task whose answers or deletion the proxy sees.
    #[default]
    All,
    /// Only the tasks created through this proxy (followed to their end with the API
    /// key); the answers of other tasks are counted as requests only.
    CreatedHere,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            enabled: false,
            listen: "127.0.0.1:10146".into(),
            upstream: "https://api.dev.runwayml.com".into(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            tls_cert_file: None,
            tls_key_file: None,
            count: ProxyCount::All,
        }
    }
}

impl Proxy {
    /// The scheme and authority of `upstream`, which must be an origin
    /// (`https://host[:port]`, no path but `/`, no query, no user information).
    pub fn origin(
        &self,
    ) -> Result<(hyper::http::uri::Scheme, hyper::http::uri::Authority), String> {
        use hyper::http::uri::Scheme;
        let upstream = &self.upstream;
        let bad = |why: &str| {
            format!("{upstream:?}: {why} (want an origin, e.g. https://api.dev.runwayml.com)")
        };
        let uri: hyper::Uri = upstream.parse().map_err(|_| bad("not a URI"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed"));
        }
        if !matches!(
            uri.path_and_query().map(|p| p.as_str()),
            None | Some("/") | Some("")
        ) {
            return Err(bad("a path or query is not allowed"));
        }
        Ok((scheme, authority))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "proxy.listen",
                format!(
                    "{:?}: {e} (want host:port, e.g. 127.0.0.1:10146)",
                    self.listen
                ),
            )
        })?;
        self.origin().map_err(|e| invalid("proxy.upstream", e))?;
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "proxy.tls_cert_file",
                "set both tls_cert_file and tls_key_file, or neither",
            ));
        }
        Ok(())
    }
}

/// A bounded key: the range its value must be in.
struct Bounded {
    key: &'static str,
    range: Range,
    /// Why the range is what it is, said with a refusal; may be empty.
    note: &'static str,
}

/// A range (both ends included) and where in the settings its value is.
enum Range {
    Duration {
        min: Duration,
        max: Duration,
        /// 0 is also accepted, and turns the feature off.
        zero_is_off: bool,
        get: fn(&Settings) -> Duration,
    },
    Count {
        min: u64,
        max: u64,
        get: fn(&Settings) -> u64,
    },
    Rate {
        min: f64,
        max: f64,
        get: fn(&Settings) -> f64,
    },
}

impl Range {
    /// What is wrong with the value in `s`, if it is outside the range.
    fn refuses(&self, s: &Settings) -> Option<String> {
        match *self {
            Range::Duration {
                min,
                max,
                zero_is_off,
                get,
            } => {
                let v = get(s);
                let off = if zero_is_off { "0s (off) or " } else { "" };
                let fits = (zero_is_off && v.is_zero()) || (min..=max).contains(&v);
                let range = match max {
                    Duration::MAX => format!("at least {min:?}"),
                    max => format!("from {min:?} to {max:?}"),
                };
                (!fits).then(|| format!("{v:?} is not {off}{range}"))
            }
            Range::Count { min, max, get } => {
                let v = get(s);
                (!(min..=max).contains(&v)).then(|| format!("{v} is not from {min} to {max}"))
            }
            Range::Rate { min, max, get } => {
                let v = get(s);
                (!(min..=max).contains(&v)).then(|| format!("{v} is not from {min} to {max}"))
            }
        }
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// A duration key's entry of [`RANGES`].
const fn duration(
    key: &'static str,
    min: Duration,
    max: Duration,
    get: fn(&Settings) -> Duration,
) -> Bounded {
    let range = Range::Duration {
        min,
        max,
        zero_is_off: false,
        get,
    };
    Bounded {
        key,
        range,
        note: "",
    }
}

/// A count's entry of [`RANGES`].
const fn count(key: &'static str, min: u64, max: u64, get: fn(&Settings) -> u64) -> Bounded {
    let range = Range::Count { min, max, get };
    Bounded {
        key,
        range,
        note: "",
    }
}

/// The one table of the numeric and duration keys' ranges: [`Settings::validate`]
/// checks it first, and its refusal names the key and the range. What relates two
/// keys (`api.poll_interval` at least `api.min_poll_interval`, `api.backoff_base` at
/// most `api.backoff_max`) is checked after it.
const RANGES: &[Bounded] = &[
    duration("web.header_read_timeout", ms(100), hours(1), |s| {
        s.web.header_read_timeout
    }),
    duration("state.commit_interval", ms(10), hours(1), |s| {
        s.state.commit_interval
    }),
    duration("state.shutdown_grace", ms(100), hours(1), |s| {
        s.state.shutdown_grace
    }),
    duration("file.poll_interval", ms(10), hours(1), |s| {
        s.file.poll_interval
    }),
    duration("file.glob_interval", ms(10), hours(24), |s| {
        s.file.glob_interval
    }),
    duration("file.rotate_wait", ms(0), hours(24), |s| s.file.rotate_wait),
    duration("api.poll_interval", ms(10), hours(24), |s| {
        s.api.poll_interval
    }),
    duration("api.min_poll_interval", ms(10), hours(24), |s| {
        s.api.min_poll_interval
    }),
    duration("api.request_timeout", ms(100), hours(1), |s| {
        s.api.request_timeout
    }),
    duration(
        "api.backoff_base",
        Duration::from_nanos(1),
        hours(24),
        |s| s.api.backoff_base,
    ),
    duration("api.backoff_max", ms(1), hours(24), |s| s.api.backoff_max),
    duration("api.auth_retry_interval", ms(10), hours(24), |s| {
        s.api.auth_retry_interval
    }),
    duration("api.max_task_age", ms(1000), hours(24 * 90), |s| {
        s.api.max_task_age
    }),
    Bounded {
        key: "api.organization_interval",
        range: Range::Duration {
            min: ms(100),
            max: Duration::MAX,
            zero_is_off: true,
            get: |s| s.api.organization_interval,
        },
        note: "",
    },
    Bounded {
        key: "api.usage_interval",
        range: Range::Duration {
            min: ms(100),
            max: Duration::MAX,
            zero_is_off: true,
            get: |s| s.api.usage_interval,
        },
        note: "",
    },
    count("web.max_connections", 1, 100_000, |s| {
        s.web.max_connections as u64
    }),
    count("file.max_line_bytes", 64, 1 << 30, |s| {
        s.file.max_line_bytes as u64
    }),
    count("file.max_files", 1, 100_000, |s| s.file.max_files as u64),
    count("file.read_block_bytes", 4096, 64 << 20, |s| {
        s.file.read_block_bytes as u64
    }),
    Bounded {
        key: "ledger.dedupe_window",
        range: Range::Count {
            min: 1,
            max: 100_000_000,
            get: |s| s.ledger.dedupe_window as u64,
        },
        note: "0 would count every repeated record again; the most is about 1.9 GB",
    },
    // 0 would fold every code or model into "other": refused.
    count("ledger.max_failure_codes", 1, 100_000, |s| {
        s.ledger.max_failure_codes as u64
    }),
    count("ledger.max_models", 1, 100_000, |s| {
        s.ledger.max_models as u64
    }),
    // Checked with or without a path: a reload that adds the path keeps the size.
    count("dead_letter.max_bytes", 4096, 1 << 40, |s| {
        s.dead_letter.max_bytes
    }),
    count("dead_letter.max_line_bytes", 1, 1 << 30, |s| {
        s.dead_letter.max_line_bytes as u64
    }),
    Bounded {
        key: "api.requests_per_second",
        range: Range::Rate {
            min: 0.01,
            max: 1000.0,
            get: |s| s.api.requests_per_second,
        },
        note: "a request every 100 s at least",
    },
    count("api.max_in_flight", 1, 10_000, |s| {
        s.api.max_in_flight as u64
    }),
    count("api.max_tracked", 1, 100_000_000, |s| {
        s.api.max_tracked as u64
    }),
    duration("proxy.connect_timeout", ms(100), hours(1), |s| {
        s.proxy.connect_timeout
    }),
    duration("proxy.response_timeout", ms(100), hours(1), |s| {
        s.proxy.response_timeout
    }),
    duration("proxy.header_read_timeout", ms(100), hours(1), |s| {
        s.proxy.header_read_timeout
    }),
    count("proxy.max_connections", 1, 65_536, |s| {
        s.proxy.max_connections as u64
    }),
];

/// Every setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub web: Web,
    pub log: Log,
    pub state: State,
    pub file: FileSettings,
    pub record: FieldMap,
    pub ledger: LedgerSettings,
    pub tables: Tables,
    pub dead_letter: DeadLetterSettings,
    pub api: Api,
    pub proxy: Proxy,
}

/// The command-line flags that override the file (Prometheus exporter conventions).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve the metrics on.
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    pub listen_address: Option<String>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH")]
    pub telemetry_path: Option<String>,
    /// Exporter-toolkit web configuration file (TLS, basic auth).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Task log to follow; repeatable; globs allowed. Replaces file.paths.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<String>,
    /// Where a file with no saved position starts.
    #[arg(long = "start-at", value_enum)]
    pub start_at: Option<StartAt>,
    /// Directory for the state file.
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace).
    #[arg(long = "log.level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long = "log.format", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Task list to poll the Runway API for (one task id per line).
    #[arg(long = "api.task-list", value_name = "FILE")]
    pub api_task_list: Option<PathBuf>,
    /// Base URL of the Runway API.
    #[arg(long = "api.base-url", value_name = "URL")]
    pub api_base_url: Option<String>,
}

impl Settings {
    /// Loads the layers and validates the result.
    pub fn load(o: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_with_env(o, config::Environment::with_prefix(ENV_PREFIX))
    }

    fn load_with_env(o: &Overrides, env: config::Environment) -> Result<Settings, ConfigError> {
        let mut b =
            config::Config::builder().add_source(config::Config::try_from(&Settings::default())?);
        if let Some(path) = &o.config {
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            b = b.add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml));
        }
        b = b.add_source(
            env.prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("file.paths")
                .with_list_parse_key("file.rotated")
                .try_parsing(true),
        );
        let set = |b: config::ConfigBuilder<_>, key: &str, v: Option<String>| match v {
            Some(v) => b.set_override(key, v),
            None => Ok(b),
        };
        b = set(b, "web.listen_address", o.listen_address.clone())?;
        b = set(b, "web.telemetry_path", o.telemetry_path.clone())?;
        b = set(
            b,
            "web.config_file",
            o.web_config_file.as_ref().map(|p| p.display().to_string()),
        )?;
        b = set(
            b,
            "state.dir",
            o.state_dir.as_ref().map(|p| p.display().to_string()),
        )?;
        b = set(b, "log.level", o.log_level.clone())?;
        b = set(
            b,
            "api.task_list",
            o.api_task_list.as_ref().map(|p| p.display().to_string()),
        )?;
        b = set(b, "api.base_url", o.api_base_url.clone())?;
        b = set(b, "file.start_at", o.start_at.map(|s| ser_name(&s)))?;
        b = set(b, "log.format", o.log_format.map(|s| ser_name(&s)))?;
        if !o.files.is_empty() {
            b = b.set_override("file.paths", o.files.clone())?;
        }
        let settings: Settings = b.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_ranges()?;
        self.web.listen_address.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "web.listen_address",
                format!(
                    "{:?}: {e} (want host:port, e.g. 127.0.0.1:10145)",
                    self.web.listen_address
                ),
            )
        })?;
        let path = &self.web.telemetry_path;
        if !path.starts_with('/') || path == "/" || path.starts_with("/-/") {
            return Err(invalid(
                "web.telemetry_path",
                format!("{path:?}: must start with '/' and not be '/' or under '/-/'"),
            ));
        }
        self.web_security()?;
        self.proxy.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?}: {e}", self.log.level)))?;
        for p in self.file.paths.iter().chain(&self.file.rotated) {
            glob::Pattern::new(p).map_err(|e| invalid("file.paths", format!("{p:?}: {e}")))?;
        }
        RecordParser::new(&self.record)?;
        let api = &self.api;
        self.api.shard()?;
        let url = api.base_url.trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 8 {
            return Err(invalid(
                "api.base_url",
                format!("{:?}: want an http(s) URL", api.base_url),
            ));
        }
        if api.poll_interval < api.min_poll_interval {
            return Err(invalid(
                "api.poll_interval",
                "must be at least api.min_poll_interval",
            ));
        }
        if api.backoff_max < api.backoff_base {
            return Err(invalid(
                "api.backoff_base",
                "must be at most api.backoff_max",
            ));
        }
        self.failure_table()?;
        self.pricing()?;
        Ok(())
    }

    /// The bounds of every numeric and duration key ([`RANGES`]), checked first: each
    /// in a range that works, so that a typo (a lost unit, a zero too many) is refused
    /// with the key named instead of hanging, spinning or exhausting memory.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        for bounded in RANGES {
            if let Some(problem) = bounded.range.refuses(self) {
                let note = match bounded.note {
                    "" => String::new(),
                    note => format!(" ({note})"),
                };
                return Err(invalid(bounded.key, format!("{problem}{note}")));
            }
        }
        Ok(())
    }

    /// The failure-code table: the configured file or the built-in one.
    pub fn failure_table(&self) -> Result<Table, ConfigError> {
        Ok(match &self.tables.failure_codes {
            Some(path) => Table::from_file(path)?,
            None => Table::builtin(),
        })
    }

    /// TLS and basic auth from `web.config_file`, or none.
    pub fn web_security(&self) -> Result<crate::webconfig::WebSecurity, ConfigError> {
        match &self.web.config_file {
            Some(path) => crate::webconfig::WebSecurity::load(path)
                .map_err(|e| invalid("web.config_file", e.to_string())),
            None => Ok(Default::default()),
        }
    }

    /// The pricing table: the configured file or the built-in one.
    pub fn pricing(&self) -> Result<Pricing, ConfigError> {
        Ok(match &self.tables.pricing {
            Some(path) => Pricing::from_file(path)?,
            None => Pricing::builtin(),
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            dedupe_window: self.ledger.dedupe_window,
            max_failure_codes: self.ledger.max_failure_codes,
            max_models: self.ledger.max_models,
        }
    }

    /// The effective configuration as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

fn ser_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(toml_text: &str, env: &[(&str, &str)], o: Overrides) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml_text).unwrap();
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with_env(
            &Overrides {
                config: Some(path),
                ..o
            },
            config::Environment::with_prefix(ENV_PREFIX).source(Some(vars)),
        )
    }

    #[test]
    fn the_proxy_is_off_by_default_and_the_environment_turns_it_on() {
        let s = load("", &[], Overrides::default()).unwrap();
        assert!(!s.proxy.enabled);
        assert_eq!(s.proxy.listen, "127.0.0.1:10146");
        assert_eq!(s.proxy.upstream, "https://api.dev.runwayml.com");
        let on = load(
            "",
            &[("RUNWAY_EXPORTER__PROXY__ENABLED", "true")],
            Overrides::default(),
        )
        .unwrap();
        assert!(on.proxy.enabled);
    }

    #[test]
    fn the_proxy_upstream_must_be_an_origin() {
        let upstream = |u: &str| {
            load(
                &format!("[proxy]\nupstream = {u:?}\n"),
                &[],
                Overrides::default(),
            )
            .map(|s| s.proxy.origin().unwrap().1.to_string())
        };
        assert_eq!(
            upstream("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080"
        );
        for bad in [
            "api.dev.runwayml.com",
            "ftp://x",
            "https://u:p@x",
            "https://x/v1",
            "https://x/?a=1",
            "",
        ] {
            let e = upstream(bad).unwrap_err().to_string();
            assert!(e.starts_with("proxy.upstream:"), "{bad}: {e}");
        }
        let half_tls = load(
            "[proxy]\ntls_cert_file = \"/c.pem\"\n",
            &[],
            Overrides::default(),
        );
        assert!(half_tls
            .unwrap_err()
            .to_string()
            .starts_with("proxy.tls_cert_file"));
        let zero = load("[proxy]\nmax_connections = 0\n", &[], Overrides::default());
        assert!(zero
            .unwrap_err()
            .to_string()
            .starts_with("proxy.max_connections"));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = load("", &[], Overrides::default()).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.web.listen_address, "127.0.0.1:10145");
        assert_eq!(s.web.telemetry_path, "/metrics");
        assert_eq!(s.file.start_at, StartAt::End);
        assert_eq!(s.file.max_line_bytes, 1 << 20);
        assert_eq!(s.ledger.dedupe_window, 1_000_000);
        assert_eq!(s.state.commit_interval, Duration::from_secs(1));
    }

    #[test]
    fn the_shipped_example_documents_every_key_with_its_default() {
        let text = include_str!("../config/runway-exporter.toml");
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| r.contains(" = ") || r.starts_with('['))
                    .unwrap_or(l)
            })
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let documented: toml::Value = toml::from_str(&uncommented).unwrap();
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        let keys = |v: &toml::Value| -> Vec<String> {
            let mut out = Vec::new();
            for (section, table) in v.as_table().unwrap() {
                for (key, _) in table.as_table().unwrap() {
                    out.push(format!("{section}.{key}"));
                }
            }
            out.sort();
            out
        };
        let mut documented_keys = keys(&documented);
        for optional in [
            "web.config_file",
            "tables.failure_codes",
            "tables.pricing",
            "dead_letter.path",
            "api.task_list",
            "api.api_key_file",
            "proxy.tls_cert_file",
            "proxy.tls_key_file",
        ] {
            documented_keys.retain(|k| k != optional);
        }
        assert_eq!(documented_keys, keys(&defaults));
        for (section, table) in defaults.as_table().unwrap() {
            for (key, value) in table.as_table().unwrap() {
                assert_eq!(
                    documented.get(section).and_then(|t| t.get(key)),
                    Some(value),
                    "{section}.{key}"
                );
            }
        }
    }

    #[test]
    fn layers_override_in_order() {
        let s = load(
            "[web]\nlisten_address = \"127.0.0.1:1\"\ntelemetry_path = \"/m\"\n[file]\npaths = [\"/a\"]\n[ledger]\nmax_models = 5",
            &[
                ("RUNWAY_EXPORTER__WEB__LISTEN_ADDRESS", "127.0.0.1:2"),
                ("RUNWAY_EXPORTER__LEDGER__MAX_MODELS", "7"),
                ("RUNWAY_EXPORTER__FILE__PATHS", "/x,/y"),
            ],
            Overrides {
                telemetry_path: Some("/flag".into()),
                start_at: Some(StartAt::Beginning),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.web.listen_address, "127.0.0.1:2", "env beats the file");
        assert_eq!(s.web.telemetry_path, "/flag", "flags beat the file");
        assert_eq!(s.ledger.max_models, 7);
        assert_eq!(s.file.paths, vec!["/x", "/y"]);
        assert_eq!(s.file.start_at, StartAt::Beginning);
        let s = load(
            "",
            &[("RUNWAY_EXPORTER__WEB__LISTEN_ADDRESS", "127.0.0.1:2")],
            Overrides {
                listen_address: Some("127.0.0.1:3".into()),
                files: vec!["/f1".into(), "/f2".into()],
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(
            s.web.listen_address, "127.0.0.1:3",
            "flags beat the environment"
        );
        assert_eq!(s.file.paths, vec!["/f1", "/f2"]);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let cases = [
            ("[web]\nlisten_address = \"nope\"", "web.listen_address"),
            ("[web]\ntelemetry_path = \"metrics\"", "web.telemetry_path"),
            ("[file]\nmax_line_bytes = 1", "file.max_line_bytes"),
            ("[file]\npoll_interval = \"fast\"", "poll_interval"),
            ("[file]\npaths = [\"/a/[\"]", "file.paths"),
            ("[ledger]\ndedupe_window = \"many\"", "dedupe_window"),
            ("[ledger]\nmystery = 1", "mystery"),
            ("[record]\nstatus = \"status\"", "record.status"),
            ("[record]\nformat = \"regex\"", "record.regex"),
            (
                "[tables]\nfailure_codes = \"/nonexistent/x.toml\"",
                "tables.failure_codes",
            ),
            (
                "[tables]\npricing = \"/nonexistent/p.toml\"",
                "tables.pricing",
            ),
            ("[log]\nlevel = \"[[[\"", "log.level"),
            (
                "[state]\ncommit_interval = \"1ms\"",
                "state.commit_interval",
            ),
            ("not toml at all [", "config"),
            ("[ledger]\ndedupe_window = 0", "ledger.dedupe_window"),
            (
                "[api]\nrequests_per_second = 1e-300",
                "api.requests_per_second",
            ),
            (
                "[api]\nrequests_per_second = 1e300",
                "api.requests_per_second",
            ),
            (
                "[api]\nrequests_per_second = -1.0",
                "api.requests_per_second",
            ),
            ("[api]\nrequest_timeout = \"1ns\"", "api.request_timeout"),
            ("[api]\nusage_interval = \"1ns\"", "api.usage_interval"),
            (
                "[api]\norganization_interval = \"1ms\"",
                "api.organization_interval",
            ),
            (
                "[web]\nheader_read_timeout = \"0s\"",
                "web.header_read_timeout",
            ),
            ("[web]\nmax_connections = 10000000", "web.max_connections"),
            ("[state]\nshutdown_grace = \"100d\"", "state.shutdown_grace"),
            (
                "[file]\nmax_line_bytes = 10000000000000",
                "file.max_line_bytes",
            ),
            ("[ledger]\nmax_models = 1000000000", "ledger.max_models"),
            ("[api]\nmax_task_age = \"0s\"", "api.max_task_age"),
            (
                "[dead_letter]\nmax_line_bytes = 0",
                "dead_letter.max_line_bytes",
            ),
            ("[dead_letter]\nmax_bytes = 0", "dead_letter.max_bytes"),
            (
                "[dead_letter]\npath = \"/tmp/d\"\nmax_bytes = 0",
                "dead_letter.max_bytes",
            ),
            (
                "[ledger]\nmax_failure_codes = 0",
                "ledger.max_failure_codes",
            ),
            ("[ledger]\nmax_models = 0", "ledger.max_models"),
        ];
        for (text, key) in cases {
            let err = load(text, &[], Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text:?}: {err:?} should name {key:?}");
        }
    }

    /// The numeric and duration keys of the settings (a duration is a string
    /// humantime reads), read from what the defaults serialise to.
    fn numeric_keys() -> Vec<String> {
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        let mut keys = Vec::new();
        for (section, table) in defaults.as_table().unwrap() {
            for (key, value) in table.as_table().unwrap() {
                let numeric = match value {
                    toml::Value::Integer(_) | toml::Value::Float(_) => true,
                    toml::Value::String(s) => humantime::parse_duration(s).is_ok(),
                    _ => false,
                };
                if numeric {
                    keys.push(format!("{section}.{key}"));
                }
            }
        }
        keys
    }

    #[test]
    fn every_numeric_key_has_one_range() {
        let keys = numeric_keys();
        assert!(keys.len() >= 25, "{keys:?}");
        let mut ranged: Vec<&str> = RANGES.iter().map(|b| b.key).collect();
        ranged.sort_unstable();
        let n = ranged.len();
        ranged.dedup();
        assert_eq!(ranged.len(), n, "a key is in RANGES twice");
        for key in &keys {
            assert!(
                ranged.contains(&key.as_str()),
                "{key} has no range in RANGES"
            );
        }
        for key in ranged {
            assert!(
                keys.iter().any(|k| k == key),
                "RANGES names {key}, no numeric key"
            );
        }
    }

    /// The TOML that sets `key` (`section.name`) to `value`.
    fn set(key: &str, value: &str) -> String {
        let (section, name) = key.split_once('.').unwrap();
        format!("[{section}]\n{name} = {value}")
    }

    #[test]
    fn a_value_just_outside_each_range_is_refused_naming_the_key() {
        let ns = Duration::from_nanos(1);
        let dur = |d: Duration| format!("{:?}", humantime::format_duration(d).to_string());
        let mut checked = 0;
        for b in RANGES {
            let outside: Vec<String> = match b.range {
                Range::Duration {
                    min,
                    max,
                    zero_is_off,
                    ..
                } => {
                    // Nothing is below a minimum of 0, or of 1ns when 0 is accepted.
                    let nothing_below = min.is_zero() || (zero_is_off && min == ns);
                    let below = (!nothing_below).then(|| dur(min - ns));
                    let above = (max != Duration::MAX).then(|| dur(max + ns));
                    below.into_iter().chain(above).collect()
                }
                Range::Count { min, max, .. } => {
                    let below = (min > 0).then(|| (min - 1).to_string());
                    below.into_iter().chain([(max + 1).to_string()]).collect()
                }
                Range::Rate { min, max, .. } => {
                    vec![format!("{:?}", min * 0.999), format!("{:?}", max * 1.001)]
                }
            };
            assert!(
                !outside.is_empty(),
                "{}: nothing is outside its range",
                b.key
            );
            for value in outside {
                let text = set(b.key, &value);
                let err = match load(&text, &[], Overrides::default()) {
                    Ok(_) => panic!("{text:?} is accepted"),
                    Err(e) => e.to_string(),
                };
                assert!(
                    err.starts_with(&format!("{}: ", b.key)),
                    "{text:?}: {err:?} should name {}",
                    b.key
                );
                checked += 1;
            }
        }
        assert!(checked >= 40, "{checked}");
    }

    #[test]
    fn a_web_config_is_checked_when_the_config_is() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web.yml");
        let o = |p: &std::path::Path| Overrides {
            web_config_file: Some(p.to_path_buf()),
            ..Overrides::default()
        };
        std::fs::write(&web, "# nothing yet\n\n").unwrap();
        load("", &[], o(&web)).unwrap();
        std::fs::write(&web, "basic_auth_users:\n  a: not-a-hash\n").unwrap();
        let err = load("", &[], o(&web)).unwrap_err().to_string();
        assert!(
            err.contains("web.config_file") && err.contains("bcrypt"),
            "{err}"
        );
    }
}
