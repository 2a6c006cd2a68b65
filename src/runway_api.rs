//! Runway's API surface as the pinned SDKs know it: pure lookups over one table.
//!
//! The table is `config/runway-api.toml`, generated from the pinned `runwayml` SDK's own
//! code and types by `scripts/sdk-tables/` (and checked for drift by
//! `scripts/sdk-tables/run.sh --check` in `scripts/test.sh`), compiled in and parsed once.
//! It says:
//!
//! - the *routes*: every request the SDK makes, as a path template (`/v1/tasks/{id}`).
//!   [`RunwayApi::endpoint_template`] maps any path to its template, or to `other`, so a
//!   path becomes a bounded label value;
//! - the *create endpoints*: a `POST` whose answer is a new task, with the models it
//!   takes, where its answer carries Runway's estimate and where the task's model is
//!   named ([`RunwayApi::create_endpoint`]);
//! - the *task statuses* of `GET /v1/tasks/{id}`;
//! - the model names, by [`ModelKind`]: *current* (a create call takes it), *legacy* (none
//!   does any more, but old logs and the usage report name it), *usage-only* (only the
//!   usage report names it). A usage model is *task-less* when its spend is on a product
//!   without tasks (realtime sessions, voice processing): [`RunwayApi::model_has_tasks`].
//!
//! Paths are matched as the SDKs send them: byte for byte, without decoding
//! percent-escapes, with no `.`/`..` segments, no empty segments, no trailing slash, and
//! at most [`MAX_PATH_BYTES`]; the query string is ignored. Anything else is `other`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use serde::Deserialize;

use crate::labels::OTHER;

/// The table shipped with the binary.
pub const BUILTIN: &str = include_str!("../config/runway-api.toml");

/// Longest path looked up; a longer one is `other` without being read.
pub const MAX_PATH_BYTES: usize = 512;
/// Segments of a route template at most (`/v1/organization/webapp/audit_logs/{event_id}`
/// has five).
const MAX_SEGMENTS: usize = 8;

/// Longest task id taken from any source that names one to follow (the task list, the
/// proxy's journal).
pub const MAX_TASK_ID_BYTES: usize = 128;

/// Whether `id` can be a task id to follow: 1 to [`MAX_TASK_ID_BYTES`] of
/// `[A-Za-z0-9_-]`, so that it is safe in the path `GET /v1/tasks/{id}`.
pub fn is_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TASK_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The built-in table, parsed on first use.
pub fn api() -> &'static RunwayApi {
    static API: LazyLock<RunwayApi> = LazyLock::new(|| {
        RunwayApi::parse(BUILTIN).expect("the built-in config/runway-api.toml is valid")
    });
    &API
}

/// Where a create call's answer carries Runway's estimate of the task's credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum EstimateAt {
    /// `estimatedCost.credits`.
    #[serde(rename = "estimatedCost")]
    EstimatedCost,
    /// `routing.estimatedCost.credits` (the model router, `/v1/generate/*`).
    #[serde(rename = "routing.estimatedCost")]
    RoutingEstimatedCost,
    /// The answer has no estimate.
    #[serde(rename = "none")]
    Nowhere,
}

/// Where the model of a task made by a create call is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ModelFrom {
    /// The request body's `model`, one of [`Endpoint::models`].
    #[serde(rename = "body")]
    Body,
    /// The answer's `routing.model`: the model router chose it.
    #[serde(rename = "routing.model")]
    RoutingModel,
    /// The path: a recipe, named by the usage report as its last path segment (the one
    /// entry of [`Endpoint::models`]).
    #[serde(rename = "path")]
    Path,
}

/// A task-creating endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    path: String,
    estimated_cost: EstimateAt,
    model_from: ModelFrom,
    models: Vec<String>,
}

impl Endpoint {
    /// The path, `/v1/image_to_video`: also its endpoint template.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the answer carries the estimate.
    pub fn estimated_cost(&self) -> EstimateAt {
        self.estimated_cost
    }

    /// Where the task's model is named.
    pub fn model_from(&self) -> ModelFrom {
        self.model_from
    }

    /// The models it takes (sorted); empty when the router chooses.
    pub fn models(&self) -> &[String] {
        &self.models
    }
}

/// What a model name is to Runway, as the pinned SDKs know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A create call takes it.
    Current,
    /// No create call takes it any more; old logs and the usage report name it.
    Legacy,
    /// Only the usage report names it (a task-less product, or a usage name for tasks
    /// that carry another model).
    UsageOnly,
    /// Not in the table: newer than the pinned SDKs, or not Runway's.
    Unknown,
}

/// The table's file format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    sdk: String,
    task_statuses: Vec<String>,
    usage_models: Vec<String>,
    route: Vec<RouteRow>,
    create: Vec<Endpoint>,
    legacy: BTreeMap<String, String>,
    taskless: BTreeMap<String, String>,
    usage_alias: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RouteRow {
    path: String,
}

/// A route template's segments after `/`: literal, or a parameter (`{id}`).
#[derive(Debug)]
struct Template {
    path: String,
    segments: Vec<Option<String>>,
}

/// The table, indexed for its lookups.
#[derive(Debug)]
pub struct RunwayApi {
    sdk: String,
    task_statuses: Vec<String>,
    usage_models: Vec<String>,
    creates: HashMap<String, Endpoint>,
    /// Hashed with Fx: looked up for every request the proxy passes; the table's own
    /// routes, so no input can grow it.
    literal_routes: rustc_hash::FxHashSet<String>,
    templates: Vec<Template>,
    kinds: HashMap<String, ModelKind>,
    taskless: HashSet<String>,
}

/// What is wrong with a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("runway-api table: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("runway-api table: {0}")]
    Invalid(String),
}

impl RunwayApi {
    /// Parses and checks a table: every create path is a route, no model is both current
    /// and legacy, every usage model is known.
    pub fn parse(text: &str) -> Result<RunwayApi, TableError> {
        let file: File = toml::from_str(text)?;
        let kinds = model_kinds(&file)?;
        let mut literal_routes = rustc_hash::FxHashSet::default();
        let mut templates = Vec::new();
        for r in file.route {
            let t = Template::new(r.path)?;
            if t.segments.iter().all(Option::is_some) {
                literal_routes.insert(t.path);
            } else {
                templates.push(t);
            }
        }
        let mut creates = HashMap::new();
        for e in file.create {
            if !literal_routes.contains(&e.path) {
                let msg = format!("create {:?} is no route", e.path);
                return Err(TableError::Invalid(msg));
            }
            creates.insert(e.path.clone(), e);
        }
        Ok(RunwayApi {
            sdk: file.sdk,
            task_statuses: file.task_statuses,
            usage_models: file.usage_models,
            creates,
            literal_routes,
            templates,
            kinds,
            taskless: file.taskless.into_keys().collect(),
        })
    }

    /// The SDK the table was generated from, `runwayml 5.24.0`.
    pub fn sdk(&self) -> &str {
        &self.sdk
    }

    /// The task statuses of `GET /v1/tasks/{id}`, sorted.
    pub fn task_statuses(&self) -> &[String] {
        &self.task_statuses
    }

    /// The model names of the organization's usage report, sorted.
    pub fn usage_models(&self) -> &[String] {
        &self.usage_models
    }

    /// The create endpoint a request is a call of: `POST` (exactly) and its path, query
    /// string aside. A create path (a literal route, checked by [`RunwayApi::parse`]) is found by one
    /// lookup, without taking it apart: so is its template.
    pub fn create_endpoint(&self, method: &str, path: &str) -> Option<&Endpoint> {
        if method != "POST" {
            return None;
        }
        let exact = self.creates.get(path);
        exact.or_else(|| self.creates.get(checked_path(path)?))
    }

    /// The route template of a path, as a bounded label value: the path itself for a
    /// literal route (`/v1/image_to_video`), the template for one with parameters
    /// (`/v1/tasks/{id}`), `other` for anything else. A literal route (a template
    /// too) is found by one lookup, without taking it apart.
    pub fn endpoint_template(&self, target: &str) -> &str {
        if let Some(route) = self.literal_routes.get(target) {
            return route;
        }
        let Some(Split { path, parts, n }) = split_path(target) else {
            return OTHER;
        };
        if let Some(p) = self.literal_routes.get(path) {
            return p;
        }
        self.templates
            .iter()
            .find(|t| t.matches(&parts[..n]))
            .map_or(OTHER, |t| &t.path)
    }

    /// What a model name is.
    pub fn model_kind(&self, name: &str) -> ModelKind {
        self.kinds.get(name).copied().unwrap_or(ModelKind::Unknown)
    }

    /// Whether spend the usage report names under this model can be explained by tasks:
    /// false only for a task-less product. A name the table does not know counts as
    /// having tasks, so its spend is compared with tasks (and shows when none explain it).
    pub fn model_has_tasks(&self, usage_model: &str) -> bool {
        !self.taskless.contains(usage_model)
    }
}

/// Each model name's kind; an error when a name is both current and legacy, or a usage
/// model is none of current, legacy, task-less or a usage alias.
fn model_kinds(file: &File) -> Result<HashMap<String, ModelKind>, TableError> {
    let mut kinds = HashMap::new();
    for m in file.create.iter().flat_map(|e| &e.models) {
        kinds.insert(m.clone(), ModelKind::Current);
    }
    for m in file.legacy.keys() {
        if kinds.insert(m.clone(), ModelKind::Legacy).is_some() {
            let msg = format!("{m:?} is both current and legacy");
            return Err(TableError::Invalid(msg));
        }
    }
    for m in file.taskless.keys().chain(file.usage_alias.keys()) {
        kinds.entry(m.clone()).or_insert(ModelKind::UsageOnly);
    }
    match file.usage_models.iter().find(|m| !kinds.contains_key(*m)) {
        Some(m) => Err(TableError::Invalid(format!(
            "usage model {m:?} is unclassified"
        ))),
        None => Ok(kinds),
    }
}

impl Template {
    fn new(path: String) -> Result<Template, TableError> {
        let bad = || TableError::Invalid(format!("route {path:?} is not a /v1/ path template"));
        let rest = path.strip_prefix('/').ok_or_else(bad)?;
        let mut segments = Vec::new();
        for s in rest.split('/') {
            if s.starts_with('{') && s.ends_with('}') {
                segments.push(None);
            } else if is_segment(s) {
                segments.push(Some(s.to_owned()));
            } else {
                return Err(bad());
            }
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(bad());
        }
        Ok(Template { path, segments })
    }

    /// Whether a path's segments (after `/`) fit: a parameter matches any one segment,
    /// a literal itself.
    fn matches(&self, parts: &[&str]) -> bool {
        self.segments.len() == parts.len()
            && (self.segments.iter().zip(parts)).all(|(seg, p)| seg.as_ref().is_none_or(|l| l == p))
    }
}

/// The path part of a request target, if it is one the table can name ([`split_path`]).
fn checked_path(target: &str) -> Option<&str> {
    split_path(target).map(|split| split.path)
}

/// A request target's path and its segments (after `/`).
struct Split<'t> {
    path: &'t str,
    parts: [&'t str; MAX_SEGMENTS],
    n: usize,
}

/// The path part of a request target split into its segments, if it is one the table
/// can name: absolute, at most [`MAX_PATH_BYTES`] before the query and [`MAX_SEGMENTS`]
/// segments (no route has more), every segment a plain [`is_segment`]. Split once for
/// all the templates (a path is split for every request the proxy passes).
fn split_path(target: &str) -> Option<Split<'_>> {
    let end = memchr::memchr2(b'?', b'#', target.as_bytes()).unwrap_or(target.len());
    let path = &target[..end];
    if path.len() > MAX_PATH_BYTES {
        return None;
    }
    let mut parts = [""; MAX_SEGMENTS];
    let mut n = 0;
    for segment in path.strip_prefix('/')?.split('/') {
        if !is_segment(segment) {
            return None;
        }
        *parts.get_mut(n)? = segment;
        n += 1;
    }
    Some(Split { path, parts, n })
}

/// The bytes of a plain segment, `[A-Za-z0-9._~-]`, as a table (one load a byte).
const SEGMENT_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'~' | b'-');
        b += 1;
    }
    table
};

/// A segment of the SDKs' paths and ids: non-empty, not `.` or `..`, of
/// `[A-Za-z0-9._~-]` (so no percent-escape, which is never decoded).
fn is_segment(s: &str) -> bool {
    !matches!(s, "" | "." | "..") && s.bytes().all(|b| SEGMENT_BYTES[usize::from(b)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f";

    #[test]
    fn the_builtin_table_parses_and_names_the_sdk() {
        let api = api();
        assert_eq!(api.sdk(), "runwayml 5.24.0");
        assert!(
            api.creates.len() >= 20,
            "{} create endpoints",
            api.creates.len()
        );
        assert_eq!(api.usage_models().len(), 76);
    }

    #[test]
    fn every_create_path_is_its_own_template_and_only_those_create() {
        let api = api();
        for path in api.creates.keys() {
            assert_eq!(api.endpoint_template(path), path);
            assert!(api.create_endpoint("POST", path).is_some(), "{path}");
        }
        for template in [
            "/v1/tasks/{id}",
            "/v1/uploads",
            "other",
            "",
            "/v1/image_to_video/",
        ] {
            assert!(
                api.create_endpoint("POST", template).is_none(),
                "{template}"
            );
        }
        // A literal route is its own template; a template with parameters, or what is no
        // route, is not a literal route's.
        for route in api.literal_routes.iter() {
            assert_eq!(api.endpoint_template(route), route);
        }
        assert!(api.literal_routes.contains("/v1/uploads"));
        for not in [
            "/v1/tasks/{id}",
            "/v1/tasks/abc",
            "other",
            "",
            "/v1/uploads/",
        ] {
            assert!(!api.literal_routes.contains(not), "{not}");
        }
    }

    #[test]
    fn create_endpoints_are_found_by_post_and_path() {
        let api = api();
        let e = api.create_endpoint("POST", "/v1/image_to_video").unwrap();
        assert_eq!(e.path(), "/v1/image_to_video");
        assert_eq!(e.estimated_cost(), EstimateAt::EstimatedCost);
        assert_eq!(e.model_from(), ModelFrom::Body);
        assert!(e.models().iter().any(|m| m == "gen4_turbo"));
        assert!(e.models().iter().any(|m| m == "veo3.1"));
        assert!(
            e.models().windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        for kind in ["video", "image", "audio"] {
            let e = api
                .create_endpoint("POST", &format!("/v1/generate/{kind}"))
                .unwrap();
            assert_eq!(e.estimated_cost(), EstimateAt::RoutingEstimatedCost);
            assert_eq!(e.model_from(), ModelFrom::RoutingModel);
            assert!(e.models().is_empty());
        }
        let e = api
            .create_endpoint("POST", "/v1/recipes/product_ad")
            .unwrap();
        assert_eq!(
            (e.model_from(), e.models()),
            (ModelFrom::Path, &["product_ad".to_owned()][..])
        );
        let e = api.create_endpoint("POST", "/v1/avatar_videos").unwrap();
        assert_eq!(e.estimated_cost(), EstimateAt::Nowhere);
        // With a query string: the same endpoint.
        assert!(api
            .create_endpoint("POST", "/v1/text_to_video?x=1")
            .is_some());
    }

    #[test]
    fn other_requests_are_no_create_call() {
        let api = api();
        for (method, path) in [
            ("GET", "/v1/image_to_video"),
            ("post", "/v1/image_to_video"),
            ("POST", TASK),
            ("POST", "/v1/organization/usage"),
            ("POST", "/v1/workflows/abc"),
            ("POST", "/v1/realtime_sessions"),
            ("POST", "/v1/image_to_video/"),
            ("POST", "/v1//image_to_video"),
            ("POST", "/v1/image%5Fto_video"),
            ("POST", "/v1/x/../image_to_video"),
            ("POST", "/v1/./image_to_video"),
            ("POST", "v1/image_to_video"),
            ("POST", "http://evil.example/v1/image_to_video"),
            ("POST", "/V1/IMAGE_TO_VIDEO"),
            ("POST", ""),
        ] {
            assert!(
                api.create_endpoint(method, path).is_none(),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn every_path_becomes_a_bounded_template() {
        let api = api();
        for (path, template) in [
            (TASK, "/v1/tasks/{id}"),
            ("/v1/tasks/abc?foo=bar&x=/../..", "/v1/tasks/{id}"),
            ("/v1/tasks/abc#frag", "/v1/tasks/{id}"),
            ("/v1/image_to_video", "/v1/image_to_video"),
            (
                "/v1/workflow_invocations/w1",
                "/v1/workflow_invocations/{id}",
            ),
            ("/v1/routers/r1/requests", "/v1/routers/{id}/requests"),
            ("/v1/voices/preview", "/v1/voices/preview"),
            ("/v1/voices/v9", "/v1/voices/{id}"),
            ("/v1/organization", "/v1/organization"),
            // Hostile or unknown: other.
            ("/v1/tasks/", OTHER),
            ("/v1/tasks", OTHER),
            ("/v1/tasks/abc/", OTHER),
            ("/v1/tasks/abc/cancel", OTHER),
            ("/v1/tasks/..", OTHER),
            ("/v1/tasks/.", OTHER),
            ("/v1/tasks/a%2Fb", OTHER),
            ("/v1/tasks/a%2e%2e", OTHER),
            ("/v1/tasks//abc", OTHER),
            ("/v1/tasks/abc/../../organization", OTHER),
            ("/v1/tasks/ab c", OTHER),
            ("/v1/tasks/é", OTHER),
            ("/v2/tasks/abc", OTHER),
            // More segments than any route has.
            ("/v1/a/b/c/d/e/f/g/h/i/j", OTHER),
            ("/", OTHER),
            ("", OTHER),
            ("*", OTHER),
            ("http://evil.example/v1/tasks/abc", OTHER),
        ] {
            assert_eq!(api.endpoint_template(path), template, "{path:?}");
        }
    }

    #[test]
    fn a_segment_is_made_of_unreserved_bytes_only() {
        let api = api();
        let unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
        for byte in 0u8..128 {
            let c = char::from(byte);
            let path = format!("/v1/tasks/a{c}b");
            // `?` and `#` end the path: what follows is no segment.
            let ends = matches!(c, '?' | '#');
            let want = match unreserved.contains(c) || ends {
                true => "/v1/tasks/{id}",
                false => OTHER,
            };
            assert_eq!(api.endpoint_template(&path), want, "byte {byte}");
        }
        for c in ['é', '\u{80}', '\u{ff}', '\u{2028}', '\u{10ffff}'] {
            assert_eq!(api.endpoint_template(&format!("/v1/tasks/a{c}b")), OTHER);
        }
    }

    #[test]
    fn a_very_long_path_is_other_and_the_limit_is_exact() {
        let api = api();
        let id = "a".repeat(MAX_PATH_BYTES - "/v1/tasks/".len());
        let at_limit = format!("/v1/tasks/{id}");
        assert_eq!(at_limit.len(), MAX_PATH_BYTES);
        assert_eq!(api.endpoint_template(&at_limit), "/v1/tasks/{id}");
        assert_eq!(api.endpoint_template(&format!("{at_limit}a")), OTHER);
        // A query string does not count against the limit.
        assert_eq!(
            api.endpoint_template(&format!("{at_limit}?{}", "q".repeat(10_000))),
            "/v1/tasks/{id}"
        );
        let huge = format!("/v1/tasks/{}", "x/".repeat(1 << 20));
        assert_eq!(api.endpoint_template(&huge), OTHER);
        assert!(api.create_endpoint("POST", &huge).is_none());
    }

    #[test]
    fn models_are_current_legacy_usage_only_or_unknown() {
        let api = api();
        for m in [
            "gen4.5",
            "gen4_turbo",
            "veo3.1",
            "aleph2",
            "gen4_image",
            "act_two",
            "product_ad",
            "gwm1_avatars",
        ] {
            assert_eq!(api.model_kind(m), ModelKind::Current, "{m}");
        }
        for m in ["veo3", "gen4_aleph", "gen3a_turbo"] {
            assert_eq!(api.model_kind(m), ModelKind::Legacy, "{m}");
        }
        for m in [
            "voice_processing",
            "eleven_scribe_v2",
            "gwm1_avatar_async_text_to_video",
        ] {
            assert_eq!(api.model_kind(m), ModelKind::UsageOnly, "{m}");
        }
        for m in ["gen5", "", "VEO3", "veo3 ", "unknown"] {
            assert_eq!(api.model_kind(m), ModelKind::Unknown, "{m:?}");
        }
    }

    #[test]
    fn only_taskless_usage_has_no_tasks() {
        let api = api();
        for m in ["voice_processing", "eleven_scribe_v2", "gwm1_avatars"] {
            assert!(!api.model_has_tasks(m), "{m}");
        }
        for m in [
            "gen4.5",
            "veo3",
            "gwm1_avatar_async_audio_to_video",
            "product_ugc",
            "never_heard_of",
        ] {
            assert!(api.model_has_tasks(m), "{m}");
        }
        let taskless: Vec<_> = api
            .usage_models()
            .iter()
            .filter(|m| !api.model_has_tasks(m))
            .collect();
        assert_eq!(
            taskless,
            ["eleven_scribe_v2", "gwm1_avatars", "voice_processing"]
        );
    }

    #[test]
    fn every_usage_and_priced_model_is_known() {
        let api = api();
        for m in api.usage_models() {
            assert_ne!(api.model_kind(m), ModelKind::Unknown, "{m}");
        }
        let pricing: toml::Table = toml::from_str(include_str!("../config/pricing.toml")).unwrap();
        let priced = pricing["models"].as_table().unwrap();
        for m in priced.keys() {
            let kind = api.model_kind(m);
            assert!(
                matches!(kind, ModelKind::Current | ModelKind::Legacy),
                "{m}: {kind:?}"
            );
        }
    }

    /// The exporter reads every status the SDK knows, and knows none the SDK does not.
    #[test]
    fn the_task_statuses_are_the_ones_records_read() {
        let mut ours: Vec<&str> = crate::record::Status::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        ours.sort_unstable();
        assert_eq!(api().task_statuses(), ours);
    }

    const MINI: &str = r#"
sdk = "t"
task_statuses = ["RUNNING"]
usage_models = ["a", "old"]
[[route]]
path = "/v1/a"
[[create]]
path = "/v1/a"
estimated_cost = "estimatedCost"
model_from = "body"
models = ["a"]
[legacy]
old = "why"
[taskless]
[usage_alias]
"#;

    #[test]
    fn a_table_that_contradicts_itself_is_refused() {
        assert!(RunwayApi::parse(MINI).is_ok());
        let both = MINI.replace("old = \"why\"", "a = \"why\"");
        assert!(RunwayApi::parse(&both)
            .unwrap_err()
            .to_string()
            .contains("both current and legacy"));
        let unclassified = MINI.replace("[\"a\", \"old\"]", "[\"a\", \"old\", \"new\"]");
        assert!(RunwayApi::parse(&unclassified)
            .unwrap_err()
            .to_string()
            .contains("\"new\""));
        let no_route = MINI.replace("[[route]]\npath = \"/v1/a\"", "[[route]]\npath = \"/v1/b\"");
        assert!(RunwayApi::parse(&no_route)
            .unwrap_err()
            .to_string()
            .contains("no route"));
        let bad_template = MINI.replace(
            "[[route]]\npath = \"/v1/a\"",
            "[[route]]\npath = \"/v1/a\"\n[[route]]\npath = \"v1/../x\"",
        );
        assert!(RunwayApi::parse(&bad_template).is_err());
        let unknown_where = MINI.replace("\"estimatedCost\"", "\"cost\"");
        assert!(RunwayApi::parse(&unknown_where).is_err());
    }
}
