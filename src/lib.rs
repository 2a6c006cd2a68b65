//! runway-exporter: Runway task outcomes as Prometheus counters.
//!
//! The architecture in ten lines (ARCHITECTURE.md has the rest):
//!
//! 1. A *source* reads blocks: [`source::file`] tails task logs and the task list (and
//!    `scan` reads files once); [`source::api`] polls the Runway API.
//! 2. [`lines`] splits blocks into lines without copying, bounding line length.
//! 3. [`pipeline`] hands a source's lines to its [`pipeline::Handler`] under the
//!    ledger's lock: a task log's parses them with [`record`] and counts them; the task
//!    list's ([`source::task_list`]) tracks the task ids.
//! 4. [`classify`] maps the failure code to category, retry advice and credit rule (a
//!    table); [`pricing`] estimates credits a record does not report; [`runway_api`]
//!    knows Runway's endpoints, models and task statuses (a table from the pinned SDKs).
//! 5. [`ledger`] owns the committed state in parts (outcomes, its own counters, file
//!    checkpoints, the API book); every change bumps its generation by construction.
//! 6. [`state`] commits it (two-phase, fsync'd) and restores it; only committed totals
//!    are published: `app`'s committer renders each commit's snapshot ([`metrics`])
//!    once, text and gzip, and [`http`] serves that page as bytes.
//! 7. [`http`] serves `/metrics`, `/`, `/-/healthy`, `/-/ready`, with TLS and basic auth.
//! 8. [`app`] builds the pieces from [`config`], starts them, and shuts them down.
//!
//! Leaves ([`clock`], [`labels`], [`lines`], [`sync`]) import nothing of the crate; every module
//! imports only lower layers (`tests/it/architecture.rs`).
//!
//! The modules are the crate's own: the library exports only what the binary
//! (`src/main.rs`), the integration tests (`tests/it/`) and the benches
//! (`benches/pipeline.rs`) use, re-exported below, so that the compiler sees every
//! item nothing uses (`dead_code` is denied).
#![forbid(unsafe_code)]
#![deny(dead_code)]

mod app;
mod classify;
mod clock;
mod config;
mod deadletter;
mod http;
mod labels;
mod ledger;
mod lines;
mod metrics;
mod pipeline;
mod pricing;
mod proxy;
mod record;
// The proxy uses the endpoint templates and the model-kind lookups so far; the create
// endpoints' estimate and model places are for its create-call observation to come.
#[allow(dead_code)]
mod runway_api;
mod source;
mod state;
mod sync;
mod webconfig;

pub use app::{api_key, build_pipeline, restore, run, scan, Restored, ScanFormat};
pub use classify::{normalize_code, Table};
pub use clock::utc_day;
pub use config::{ConfigError, LogFormat, Overrides, Settings, StartAt};
pub use ledger::{Ledger, Limits};
pub use lines::LineSplitter;
pub use metrics::{render, Metrics};
pub use pipeline::Pipeline;
pub use pricing::Pricing;
pub use record::{FieldMap, RecordParser};
pub use source::file::Tailer;
