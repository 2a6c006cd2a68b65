//! runway-exporter: Runway task outcomes as Prometheus counters.
//!
//! The architecture in ten lines:
//!
//! 1. A *source* produces lines: [`source::file`] tails task logs (and `scan` reads them once).
//! 2. [`lines`] splits blocks into lines without copying, bounding line length.
//! 3. [`record`] turns one line into a [`record::TaskRecord`], looking only at a few fields.
//! 4. [`classify`] maps the failure code to category, retry advice and credit rule (a table).
//! 5. [`ledger`] counts: first terminal record per task id, bounded dedupe, capped labels,
//!    credits from the record or the [`pricing`] table; every line ends in one result.
//! 6. [`metrics`] owns the Prometheus families on a caller-supplied registry; the ledger
//!    publishes its totals into them, so `/metrics` shows only published values.
//! 7. [`http`] serves `/metrics`, `/`, `/-/healthy`, `/-/ready`.
//! 8. [`app`] builds the pieces from [`config`] and owns the tasks and their shutdown.
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
pub mod record;
pub mod source;
pub mod state;
pub mod webconfig;
