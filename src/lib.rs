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
//! Leaves ([`clock`], [`labels`], [`lines`]) import nothing of the crate; every module
//! imports only lower layers (`tests/it/architecture.rs`).
#![forbid(unsafe_code)]

pub mod app;
pub mod classify;
pub mod clock;
pub mod config;
pub mod deadletter;
pub mod http;
pub mod labels;
pub mod ledger;
pub mod lines;
pub mod metrics;
pub mod pipeline;
pub mod pricing;
pub mod proxy;
pub mod record;
pub mod runway_api;
pub mod source;
pub mod state;
pub mod webconfig;
