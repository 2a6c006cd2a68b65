//! The proxy: a transparent forwarder in front of Runway's API, for applications that set
//! `RUNWAYML_BASE_URL` to it (both official SDKs read it).
//!
//! - Only origin-form requests under `/v1/` are forwarded, to the one configured
//!   upstream origin: absolute-form URIs and `CONNECT` (400/405), other paths (404) and
//!   dot segments (400) are refused, so it is never an open proxy and never reaches
//!   another host or another path of the upstream's.
//! - Method, path, query, headers (hop-by-hop ones aside) and body go up as they came;
//!   status, headers and body come back as they were. Bodies stream both ways with
//!   hyper's back-pressure: memory does not grow with a body's size.
//! - Redirects go back to the client, never followed. `Authorization` is forwarded and
//!   never logged, stored or counted.
//! - The client going away drops the request's future, and with it the upstream request.
//! - An upstream that cannot be reached answers 502, one that does not answer within
//!   `response_timeout` 504: both are answers the SDKs retry.
//! - What passes is observed on the side, never in its way (`tee`, `observe`): a
//!   `POST`'s body is scanned for its `model` (`scan`), a JSON answer's first 64 KiB
//!   kept, and one observation per answer handed to a consumer that alone touches the
//!   pipeline; a full queue drops observations (counted), never delays a request.
//!   Endpoints are counted as bounded templates (`endpoint`).
//! - A create call's answer (a JSON body of at most 64 KiB, its length stated or not) is
//!   read whole and its task written to the journal before it goes to the client (`journal`):
//!   a task whose create answer reached the application survives a `kill -9`.

mod egress;
mod endpoint;
mod forward;
mod journal;
mod observe;
pub(crate) mod scan;
mod serve;
mod tee;
mod upstream;

pub use forward::Forwarder;
pub use journal::{Apply, Journal, SETTLE};
pub use observe::{add_source, consume, Follow, Observation, Observer, CAPACITY as OBSERVATIONS};
pub use serve::{serve, Limits};
