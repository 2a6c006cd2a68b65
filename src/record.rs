//! One line -> [`TaskRecord`]: pure, zero-copy where the line allows it.
//!
//! A *task record* is one JSON value (a line, or an object pretty-printed over several
//! lines, which [`crate::lines`] hands over as one) that yields a `status`, and
//! optionally `id`, `failureCode`, `cost.credits`, `estimatedCost.credits`,
//! `createdAt`, `model`, `credits`, `duration` and the event's own time (`timestamp`).
//! Two formats:
//!
//! - **JSON** (the default). The task itself is the bare object of `GET /v1/tasks/{id}`
//!   (current or older flat shape, where absent fields are `null`), or nested in a log
//!   event at `task_pointer` (`"/task"`). The *task fields* `id`, `status`,
//!   `failure_code`, `cost`, `estimated_cost` and `created_at` are JSON pointers
//!   relative to the task; the *event fields* `model`, `credits`, `duration` and
//!   `timestamp` are pointers from the line's root, because Runway's task object has
//!   none of them and the application adds them to its event. At its default, the
//!   event's time is looked for at `/timestamp`, `/time` and `/ts` (the names loggers
//!   use), in that order. Times are read only when a task is timed ([`RawTime`]). Only those few paths are looked at: everything else is skipped by the
//!   parser without being built, and strings without escapes are borrowed from the line.
//! - *Spellings.* The SDKs write a task in camelCase (the API's JSON, Python's
//!   `to_json`, Node's `JSON.stringify`) or in snake_case (pydantic's `model_dump*`:
//!   `failure_code`, `estimated_cost`). Every task-field pointer is also looked up in its
//!   snake_case spelling (`/failureCode` -> `/failure_code`); and with no `task_pointer`,
//!   a task under `taskDetails` or `task_details` (the SDKs' `TaskFailedError`) is read
//!   too: a record that has them is a wrapper around its task, so the task under them
//!   comes first, and every task field is taken from the object the status came from
//!   (never one from the wrapper, one from its task). The configured spelling wins over
//!   its snake_case *alias*, and a value wins over a `null`, so a code is never lost to a
//!   spelling not looked at.
//! - **Regex**: a regular expression with named captures `status` (required), `id`,
//!   `failure_code`, `cost`, `estimated_cost`, `model`, `credits`, `duration`,
//!   `created_at`, `timestamp` for plain-text logs.
//!
//! A line that yields no record ends as a [`ParseError`], whose [`ParseError::as_str`] is
//! the `reason` label of `runway_exporter_parse_errors_total`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::labels::trim;

mod flow;
pub use flow::{NodeErrors, SessionStatus};

/// What kind of object a record is: a task, or one of the objects that are not tasks
/// but carry failure codes (how they are told apart: `record/flow.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RecordKind<'a> {
    #[default]
    Task,
    /// A workflow invocation, with its node errors (none when it has no `nodeErrors`).
    Workflow(NodeErrors<'a>),
    /// A realtime session, in its own status; the record's `status` is then the task
    /// status nearest to it, terminal exactly when the session's is.
    Session(SessionStatus),
}

/// A task's status as Runway reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Throttled,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

crate::labels::label_enum!(Status {
    Pending => "PENDING",
    Throttled => "THROTTLED",
    Running => "RUNNING",
    Succeeded => "SUCCEEDED",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl Status {
    /// The terminal statuses, the `status` label values of `runway_tasks_total`.
    pub const TERMINAL: [Status; 3] = [Status::Succeeded, Status::Failed, Status::Cancelled];

    /// Whether a task in this status is finished; its first terminal record is counted.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    /// Reads Runway's status string, ignoring ASCII case (Runway writes them upper-case:
    /// the exact match first).
    pub fn read(s: &str) -> Option<Status> {
        Status::parse(s).or_else(|| {
            Status::ALL
                .iter()
                .copied()
                .find(|st| st.as_str().eq_ignore_ascii_case(s))
        })
    }
}

/// The `failureCode` field as found on the line, before normalisation.
#[derive(Debug, Clone, PartialEq)]
pub enum RawCode<'a> {
    /// Missing, `null` or empty.
    Missing,
    Str(Cow<'a, str>),
    /// A number, object, array or boolean where a string belongs.
    NotAString,
}

impl RawCode<'_> {
    /// The code as [`crate::classify::normalize_code`] takes it.
    pub fn normalize(&self) -> crate::classify::NormalizedCode<'_> {
        match self {
            RawCode::Missing => crate::classify::NormalizedCode::None,
            RawCode::NotAString => crate::classify::NormalizedCode::Invalid,
            RawCode::Str(s) => crate::classify::normalize_code(Some(s)),
        }
    }
}

/// A time as a record wrote it, read only when a task is timed: text (RFC 3339, or a
/// number in a regex capture) or a JSON number (Unix seconds, milliseconds or
/// microseconds: [`crate::clock::time_from_number`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RawTime<'a> {
    Text(Cow<'a, str>),
    Number(f64),
}

impl RawTime<'_> {
    /// The time in Unix seconds; `None` when it is not a time with a known offset.
    pub fn unix(&self) -> Option<f64> {
        match self {
            RawTime::Text(t) => crate::clock::parse_time(t).or_else(|| {
                let n = t.trim().parse::<f64>().ok()?;
                crate::clock::time_from_number(n)
            }),
            RawTime::Number(n) => crate::clock::time_from_number(*n),
        }
    }
}

/// What one record says about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord<'a> {
    pub id: Option<Cow<'a, str>>,
    pub status: Status,
    pub failure_code: RawCode<'a>,
    pub model: Option<Cow<'a, str>>,
    /// The event's credits field (what the application says the task cost).
    pub credits: Option<f64>,
    pub duration: Option<f64>,
    /// The task's own final cost (`cost.credits` of a terminal task): the truth.
    pub cost: Option<f64>,
    /// What Runway estimates a task still running will cost (`estimatedCost.credits`).
    pub estimated_cost: Option<f64>,
    /// When the task was created (`createdAt`).
    pub created_at: Option<RawTime<'a>>,
    /// When the event was written, by the application's clock (`timestamp`).
    pub timestamp: Option<RawTime<'a>>,
    /// A credits, cost or duration field was there but not a number from 0 to
    /// [`MAX_CREDITS`] (or [`MAX_DURATION`]): it is ignored, and the ledger counts it.
    pub invalid_number: bool,
    /// A task, unless the record's own fields say otherwise.
    pub kind: RecordKind<'a>,
}

/// Largest credit value taken from a record: a task of 10 million USD. Beyond it a value
/// is a bug or an attack (`1e308` twice would make a counter infinite).
pub const MAX_CREDITS: f64 = 1e9;
/// Longest duration taken from a record, in seconds (a day of video).
pub const MAX_DURATION: f64 = 86_400.0;

/// Why a line yielded no record. The variants' [`as_str`](ParseError::as_str) values are
/// label values and part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    EmptyLine,
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error("line is not a valid JSON value")]
    InvalidJson,
    #[error("line has no status field")]
    MissingStatus,
    #[error("status is not one of Runway's task statuses")]
    UnknownStatus,
    #[error("line does not match the configured regex")]
    RegexMismatch,
    #[error("line is longer than max_line_bytes")]
    LineTooLong,
    #[error("task-list line has no valid task id")]
    InvalidTaskId,
    #[error("JSON nested deeper than MAX_DEPTH")]
    TooDeep,
    #[error("the API answered with another task's id")]
    OtherTaskId,
}

crate::labels::label_enum!(ParseError, no_display {
    EmptyLine => "empty_line",
    InvalidUtf8 => "invalid_utf8",
    InvalidJson => "invalid_json",
    MissingStatus => "missing_status",
    UnknownStatus => "unknown_status",
    RegexMismatch => "regex_mismatch",
    LineTooLong => "line_too_long",
    InvalidTaskId => "invalid_task_id",
    TooDeep => "too_deep",
    OtherTaskId => "other_task_id",
});

/// Where the fields of a record are, as the `[record]` configuration says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMap {
    /// `json` or `regex`.
    pub format: LineFormat,
    /// Where the task object is in a JSON line; empty for a bare task object.
    pub task_pointer: String,
    /// Task fields, relative to the task object.
    pub id: String,
    pub status: String,
    pub failure_code: String,
    pub cost: String,
    pub estimated_cost: String,
    /// Event fields, from the line's root.
    pub model: String,
    pub credits: String,
    pub duration: String,
    /// Task field: when the task was created.
    pub created_at: String,
    /// Event field: when the event was written; at the default, `/time` and `/ts` too.
    pub timestamp: String,
    /// With `format = "regex"`: the expression, with named captures.
    pub regex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    Json,
    Regex,
}

impl Default for FieldMap {
    fn default() -> Self {
        FieldMap {
            format: LineFormat::Json,
            task_pointer: String::new(),
            id: "/id".into(),
            status: "/status".into(),
            failure_code: "/failureCode".into(),
            cost: "/cost/credits".into(),
            estimated_cost: "/estimatedCost/credits".into(),
            model: "/model".into(),
            credits: "/credits".into(),
            duration: "/duration".into(),
            created_at: "/createdAt".into(),
            timestamp: "/timestamp".into(),
            regex: String::new(),
        }
    }
}

/// A field map that cannot work, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record.{key}: {problem}")]
pub struct FieldMapError {
    pub key: &'static str,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id = 0,
    Status,
    FailureCode,
    Model,
    Credits,
    Duration,
    Cost,
    EstimatedCost,
    CreatedAt,
    Timestamp,
    /// The marks of a workflow invocation (`record/flow.rs`): not in `Captures::values`.
    NodeErrors,
    Output,
}
const FIELDS: usize = 10;
/// The regex capture names, in [`Field`] order.
const FIELD_NAMES: [&str; FIELDS] = [
    "id",
    "status",
    "failure_code",
    "model",
    "credits",
    "duration",
    "cost",
    "estimated_cost",
    "created_at",
    "timestamp",
];

/// Where the event's time is also looked for when `timestamp` is at its default, after
/// it: the names loggers give it.
const TIMESTAMP_ALIASES: [&str; 2] = ["/time", "/ts"];

/// Where the task may be found when no `task_pointer` is configured, besides the root:
/// the SDKs' `TaskFailedError` carries it as `taskDetails` (Node) or `task_details`
/// (Python).
const TASK_DETAILS: [&str; 2] = ["/taskDetails", "/task_details"];

/// How far a pointer is from the configured one: 0 for the configured pointer, more for
/// an alias. A capture of a nearer pointer wins.
type Rank = u8;

/// A captured JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Null,
    Other,
}

/// One step of the path tree: the members (or array elements) to descend into.
#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<(String, Option<usize>, Node)>,
    /// For each key length (the last slot: that length or longer), a bit per child
    /// whose name has it: most keys of a line match no child, and are told so by one
    /// load instead of a comparison with every child.
    by_len: [u32; KEY_LEN_SLOTS],
    leaf: Option<(Field, Rank)>,
}
const KEY_LEN_SLOTS: usize = 32;
/// Children of one node: a bit each in `by_len`.
const MAX_CHILDREN: usize = 32;

impl Node {
    fn insert(&mut self, tokens: &[String], field: Field, rank: Rank) -> Result<(), String> {
        match tokens.split_first() {
            None => {
                if self.leaf.is_some() || !self.children.is_empty() {
                    return Err("overlaps another field's pointer".into());
                }
                self.leaf = Some((field, rank));
                Ok(())
            }
            Some((head, rest)) => {
                if self.leaf.is_some() {
                    return Err("overlaps another field's pointer".into());
                }
                let pos = match self.children.iter().position(|(k, _, _)| k == head) {
                    Some(p) => p,
                    None if self.children.len() == MAX_CHILDREN => {
                        return Err("too many fields under one object".into())
                    }
                    None => {
                        let index = head.parse::<usize>().ok();
                        self.children.push((head.clone(), index, Node::default()));
                        let pos = self.children.len() - 1;
                        self.by_len[head.len().min(KEY_LEN_SLOTS - 1)] |= 1 << pos;
                        pos
                    }
                };
                self.children[pos].2.insert(rest, field, rank)
            }
        }
    }
}

/// `failureCode` -> `failure_code`: how pydantic's `model_dump` names a field.
fn snake_case(token: &str) -> String {
    let mut out = String::with_capacity(token.len() + 4);
    for c in token.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits an RFC 6901 JSON pointer into unescaped tokens.
fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON pointer: it must start with '/'"
        ));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return Err(format!("{pointer:?}: '~' must be followed by 0 or 1")),
                }
            }
            Ok(out)
        })
        .collect()
}

/// The rank of a task field found under the `root`th task root in the `spelling`th
/// spelling (0 as configured, 1 snake_case): the root is `rank / 2`.
fn rank(root: usize, spelling: usize) -> Rank {
    (root * 2 + spelling) as Rank
}

/// Adds a task field's aliases: its snake_case spelling at each task root, and the
/// configured spelling at the roots other than the last (the configured one). An alias
/// that overlaps a configured pointer is left out: what the operator configured wins.
fn insert_aliases(root: &mut Node, task_roots: &[Vec<String>], tokens: &[String], field: Field) {
    let snake: Vec<String> = tokens.iter().map(|t| snake_case(t)).collect();
    let configured_root = task_roots.len() - 1;
    for (r, task) in task_roots.iter().enumerate() {
        for (s, spelling) in [tokens, &snake].into_iter().enumerate() {
            if (r == configured_root && s == 0) || (s == 1 && snake == tokens) {
                continue; // the configured pointer itself, or no other spelling
            }
            let _ = root.insert(&[task.as_slice(), spelling].concat(), field, rank(r, s));
        }
    }
}

/// Adds the fields that mark a workflow invocation, at each task root: `nodeErrors`
/// (and `node_errors`) and `output`. Where a configured pointer overlaps one, the mark is
/// left out.
fn insert_marks(root: &mut Node, task_roots: &[Vec<String>]) {
    for (r, task) in task_roots.iter().enumerate() {
        let marks = [
            ("nodeErrors", Field::NodeErrors, 0),
            ("node_errors", Field::NodeErrors, 1),
            ("output", Field::Output, 0),
        ];
        for (name, field, spelling) in marks {
            let path = [task.as_slice(), &[name.to_string()]].concat();
            let _ = root.insert(&path, field, rank(r, spelling));
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Json(Node),
    Regex(Box<regex::Regex>, [Option<usize>; FIELDS]),
}

/// Turns lines into [`TaskRecord`]s as a [`FieldMap`] says.
#[derive(Debug, Clone)]
pub struct RecordParser {
    kind: Kind,
}

impl RecordParser {
    pub fn new(map: &FieldMap) -> Result<RecordParser, FieldMapError> {
        let err = |key, problem| FieldMapError { key, problem };
        match map.format {
            LineFormat::Json => {
                let task = pointer_tokens(&map.task_pointer).map_err(|p| err("task_pointer", p))?;
                // Where a task may be, first choice first: with no task_pointer, the SDK
                // errors' `taskDetails` / `task_details` (a bare task has neither, so a
                // record that does is a wrapper around its task), then the configured
                // place, last.
                let mut task_roots = Vec::new();
                if map.task_pointer.is_empty() {
                    task_roots.extend(TASK_DETAILS.iter().filter_map(|p| pointer_tokens(p).ok()));
                }
                task_roots.push(task);
                let configured_root = task_roots.len() - 1;
                let defaults = FieldMap::default();
                let mut root = Node::default();
                let mut aliases = Vec::new();
                let fields: [(&'static str, &str, Field, bool); FIELDS] = [
                    ("id", &map.id, Field::Id, true),
                    ("status", &map.status, Field::Status, true),
                    ("failure_code", &map.failure_code, Field::FailureCode, true),
                    ("model", &map.model, Field::Model, false),
                    ("credits", &map.credits, Field::Credits, false),
                    ("duration", &map.duration, Field::Duration, false),
                    // Last, and at their defaults giving way where they overlap: a field
                    // map written before they existed (say credits = "/cost/credits")
                    // stays valid.
                    ("cost", &map.cost, Field::Cost, true),
                    (
                        "estimated_cost",
                        &map.estimated_cost,
                        Field::EstimatedCost,
                        true,
                    ),
                    ("created_at", &map.created_at, Field::CreatedAt, true),
                    ("timestamp", &map.timestamp, Field::Timestamp, false),
                ];
                for (key, pointer, field, in_task) in fields {
                    let gives_way = match field {
                        Field::Cost => *pointer == defaults.cost,
                        Field::EstimatedCost => *pointer == defaults.estimated_cost,
                        Field::CreatedAt => *pointer == defaults.created_at,
                        Field::Timestamp => *pointer == defaults.timestamp,
                        _ => false,
                    };
                    if pointer.is_empty() {
                        if field == Field::Status {
                            return Err(err(key, "the status pointer is required".into()));
                        }
                        continue; // an empty pointer turns an optional field off
                    }
                    let tokens = pointer_tokens(pointer).map_err(|p| err(key, p))?;
                    let (configured, rank) = match in_task {
                        true => (
                            [task_roots[configured_root].as_slice(), &tokens].concat(),
                            rank(configured_root, 0),
                        ),
                        false => (tokens.clone(), 0),
                    };
                    match root.insert(&configured, field, rank) {
                        Ok(()) => {}
                        Err(_) if gives_way => continue,
                        Err(p) => return Err(err(key, format!("{pointer:?} {p}"))),
                    }
                    if in_task {
                        aliases.push((tokens, field));
                    } else if field == Field::Timestamp && gives_way {
                        for (rank, alias) in (1..).zip(TIMESTAMP_ALIASES) {
                            let tokens = pointer_tokens(alias).unwrap_or_default();
                            let _ = root.insert(&tokens, field, rank);
                        }
                    }
                }
                // After every configured pointer, so that those win where they overlap.
                for (tokens, field) in aliases {
                    insert_aliases(&mut root, &task_roots, &tokens, field);
                }
                insert_marks(&mut root, &task_roots);
                Ok(RecordParser {
                    kind: Kind::Json(root),
                })
            }
            LineFormat::Regex => {
                if map.regex.is_empty() {
                    return Err(err("regex", "format = \"regex\" needs a regex".into()));
                }
                let re = regex::Regex::new(&map.regex).map_err(|e| err("regex", e.to_string()))?;
                let mut groups = [None; FIELDS];
                for (slot, name) in groups.iter_mut().zip(FIELD_NAMES) {
                    *slot = re.capture_names().position(|n| n == Some(name));
                }
                if groups[Field::Status as usize].is_none() {
                    return Err(err(
                        "regex",
                        "the regex needs a named capture (?P<status>...)".into(),
                    ));
                }
                Ok(RecordParser {
                    kind: Kind::Regex(Box::new(re), groups),
                })
            }
        }
    }

    /// Parses one line, without its newline (a trailing `\r` is ignored).
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<TaskRecord<'a>, ParseError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(ParseError::EmptyLine);
        }
        // SIMD validation (sonic-rs's own choice for byte input): a third of the cost of
        // `str::from_utf8` on a 330-byte line.
        let text = simdutf8::basic::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
        if matches!(self.kind, Kind::Json(_)) && too_deep(line) {
            return Err(ParseError::TooDeep);
        }
        let mut fields = Captures::default();
        match &self.kind {
            Kind::Json(root) => {
                let mut de = sonic_rs::Deserializer::from_str(text);
                NodeSeed {
                    node: root,
                    out: &mut fields,
                }
                .deserialize(&mut de)
                .map_err(|_| ParseError::InvalidJson)?;
                de.end().map_err(|_| ParseError::InvalidJson)?;
            }
            Kind::Regex(re, groups) => {
                let caps = re.captures(text).ok_or(ParseError::RegexMismatch)?;
                for (i, (slot, group)) in fields.values.iter_mut().zip(groups).enumerate() {
                    if let Some(m) = group.and_then(|g| caps.get(g)) {
                        *slot = captured(i, m.as_str());
                    }
                }
            }
        }
        let (values, mark) = fields.one_task();
        build(values, mark)
    }
}

/// A regex capture as the value of field number `field`: text, or for the number fields
/// a number (text that is not one is invalid, and an empty capture is no value).
fn captured(field: usize, text: &str) -> Option<Scalar<'_>> {
    const NUMBERS: [usize; 4] = [
        Field::Credits as usize,
        Field::Duration as usize,
        Field::Cost as usize,
        Field::EstimatedCost as usize,
    ];
    if !NUMBERS.contains(&field) {
        return Some(Scalar::Str(Cow::Borrowed(text)));
    }
    match trim(text) {
        "" => None,
        t => Some(t.parse().map_or(Scalar::Other, Scalar::Num)),
    }
}

/// Deepest JSON nesting parsed. The parser walks a value it skips one stack frame per
/// level: a line nested 200,000 deep (400 KB) overflowed even the main thread's stack,
/// and a tokio worker's at a tenth of that, in a crash loop at the same offset.
pub const MAX_DEPTH: usize = 512;

/// Whether `line` nests brackets deeper than [`MAX_DEPTH`] (outside strings). A line
/// shorter than `2 x MAX_DEPTH` bytes cannot, and one with fewer opening brackets than
/// that is passed after one SIMD count: the usual line costs one comparison.
pub(crate) fn too_deep(line: &[u8]) -> bool {
    if line.len() < 2 * MAX_DEPTH || memchr::memchr2_iter(b'[', b'{', line).count() <= MAX_DEPTH {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in line {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A number field's value, when it is there and from 0 to `max`; a value that is there
/// but not such a number (a string among them) sets `invalid`.
#[inline]
fn number(v: &Option<Scalar<'_>>, max: f64, invalid: &mut bool) -> Option<f64> {
    let n = match v {
        None | Some(Scalar::Null) => return None,
        Some(Scalar::Num(n)) => *n,
        // An empty string is no value, as null is; but in JSON a number is a number:
        // `"12"` is not 12 (a regex's captures are read as numbers in `captured`).
        Some(Scalar::Str(s)) if trim(s).is_empty() => return None,
        Some(Scalar::Str(_) | Scalar::Other) => f64::NAN,
    };
    // NaN fails both comparisons.
    let valid = (0.0..=max).contains(&n);
    *invalid |= !valid;
    valid.then_some(n)
}

/// A record's status: a task's, or one only a realtime session has.
fn read_status(status: Option<Scalar<'_>>) -> Result<(Status, Option<SessionStatus>), ParseError> {
    let s = match status {
        Some(Scalar::Str(s)) => s,
        None | Some(Scalar::Null) => return Err(ParseError::MissingStatus),
        Some(_) => return Err(ParseError::UnknownStatus),
    };
    let s = trim(&s);
    if let Some(status) = Status::read(s) {
        return Ok((status, None));
    }
    let own = SessionStatus::read_own(s).ok_or(ParseError::UnknownStatus)?;
    Ok((own.as_task(), Some(own)))
}

/// A `failureCode` value as found.
fn raw_code(code: Option<Scalar<'_>>) -> RawCode<'_> {
    match code {
        None | Some(Scalar::Null) => RawCode::Missing,
        Some(Scalar::Str(s)) if trim(&s).is_empty() => RawCode::Missing,
        Some(Scalar::Str(s)) => RawCode::Str(s),
        Some(_) => RawCode::NotAString,
    }
}

fn build<'a>(
    fields: [Option<Scalar<'a>>; FIELDS],
    mark: flow::Mark<'a>,
) -> Result<TaskRecord<'a>, ParseError> {
    let [id, status, code, model, credits, duration, cost, estimated_cost, created_at, timestamp] =
        fields;
    let (status, session) = read_status(status)?;
    let kind = match (session, mark) {
        (Some(s), _) => RecordKind::Session(s),
        (None, flow::Mark::NodeErrors(errors)) => RecordKind::Workflow(errors),
        (None, flow::Mark::MapOutput) => RecordKind::Workflow(NodeErrors::default()),
        (None, flow::Mark::None) => RecordKind::Task,
    };
    let text = |v: Option<Scalar<'a>>| -> Option<Cow<'a, str>> {
        match v {
            Some(Scalar::Str(s)) if !trim(&s).is_empty() => Some(s),
            Some(Scalar::Num(n)) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    };
    let mut invalid_number = false;
    let credits = number(&credits, MAX_CREDITS, &mut invalid_number);
    let duration = number(&duration, MAX_DURATION, &mut invalid_number);
    let cost = number(&cost, MAX_CREDITS, &mut invalid_number);
    let estimated_cost = number(&estimated_cost, MAX_CREDITS, &mut invalid_number);
    let failure_code = raw_code(code);
    let time = |v: Option<Scalar<'a>>| match v {
        Some(Scalar::Str(s)) => Some(RawTime::Text(s)),
        Some(Scalar::Num(n)) => Some(RawTime::Number(n)),
        _ => None,
    };
    Ok(TaskRecord {
        id: text(id),
        status,
        failure_code,
        model: text(model),
        credits,
        duration,
        cost,
        estimated_cost,
        created_at: time(created_at),
        timestamp: time(timestamp),
        invalid_number,
        kind,
    })
}

/// The values captured from one record, and the rank of the pointer each came from.
#[derive(Default)]
struct Captures<'de> {
    values: [Option<Scalar<'de>>; FIELDS],
    ranks: [Rank; FIELDS],
    /// A workflow invocation's `nodeErrors`, and an `output` object, with their ranks.
    node_errors: Option<(NodeErrors<'de>, Rank)>,
    map_output: Option<Rank>,
}

/// The fields of the task itself (the others are the event's).
const TASK_FIELDS: [Field; 5] = [
    Field::Id,
    Field::FailureCode,
    Field::Cost,
    Field::EstimatedCost,
    Field::CreatedAt,
];

impl<'de> Captures<'de> {
    /// The values, the task fields only from the task root the status came from: a
    /// wrapper's own `id`, `status` or `cost` never mix with its task's.
    fn one_task(mut self) -> ([Option<Scalar<'de>>; FIELDS], flow::Mark<'de>) {
        let root = |f: Field| self.ranks[f as usize] / 2;
        let status_root = root(Field::Status);
        for f in TASK_FIELDS {
            if root(f) != status_root {
                self.values[f as usize] = None;
            }
        }
        let mark = match (self.node_errors, self.map_output) {
            (Some((errors, rank)), _) if rank / 2 == status_root => flow::Mark::NodeErrors(errors),
            (_, Some(rank)) if rank / 2 == status_root => flow::Mark::MapOutput,
            _ => flow::Mark::None,
        };
        (self.values, mark)
    }

    /// Keeps a mark of a workflow invocation; a nearer pointer's wins.
    fn mark(&mut self, mark: flow::Mark<'de>, rank: Rank) {
        match mark {
            flow::Mark::NodeErrors(e)
                if self.node_errors.as_ref().is_none_or(|(_, r)| rank <= *r) =>
            {
                self.node_errors = Some((e, rank));
            }
            flow::Mark::MapOutput if self.map_output.is_none_or(|r| rank <= r) => {
                self.map_output = Some(rank);
            }
            _ => {}
        }
    }
}

/// Walks one JSON value along the path tree, capturing the leaves and skipping the rest.
struct NodeSeed<'n, 'o, 'de> {
    node: &'n Node,
    out: &'o mut Captures<'de>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.node.leaf {
            Some((field @ (Field::NodeErrors | Field::Output), rank)) => {
                let mark = match field {
                    Field::NodeErrors => flow::NodeErrorsSeed.deserialize(d)?,
                    _ => flow::OutputSeed.deserialize(d)?,
                };
                self.out.mark(mark, rank);
                Ok(())
            }
            Some((field, rank)) => {
                let value = d.deserialize_any(ScalarVisitor)?;
                let i = field as usize;
                // A nearer pointer's value wins, and any value wins over a null; among
                // equals (a key repeated), the last.
                let wins = match &self.out.values[i] {
                    None | Some(Scalar::Null) => true,
                    Some(_) => !matches!(value, Scalar::Null) && rank <= self.out.ranks[i],
                };
                if wins {
                    self.out.values[i] = Some(value);
                    self.out.ranks[i] = rank;
                }
                Ok(())
            }
            None => d.deserialize_any(self),
        }
    }
}

macro_rules! ignore_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> { Ok(Default::default()) })*
    };
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    ignore_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(KeySeed(self.node))? {
            match child {
                Some(i) => map.next_value_seed(NodeSeed {
                    node: &self.node.children[i].2,
                    out: &mut *self.out,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let child = self
                .node
                .children
                .iter()
                .find(|(_, i, _)| *i == Some(index));
            let more = match child {
                Some((_, _, node)) => seq
                    .next_element_seed(NodeSeed {
                        node,
                        out: &mut *self.out,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }
}

/// Matches an object key against a node's children without allocating.
struct KeySeed<'n>(&'n Node);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let mut candidates = self.0.by_len[key.len().min(KEY_LEN_SLOTS - 1)];
        while candidates != 0 {
            let i = candidates.trailing_zeros() as usize;
            let name = self.0.children[i].0.as_bytes();
            // The first byte before the memcmp call: keys of one length mostly differ there.
            if name.first() == key.as_bytes().first() && name == key.as_bytes() {
                return Ok(Some(i));
            }
            candidates &= candidates - 1;
        }
        Ok(None)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The fast `trim` gives `str::trim`'s answer, also for Unicode and ASCII
        /// whitespace that `u8::is_ascii_whitespace` does not know (U+000B).
        #[test]
        fn trim_is_str_trim(s in "[ \t\n\u{b}\u{c}\r\u{a0}\u{3000}\u{2028}aZ.é_-]{0,8}") {
            proptest::prop_assert_eq!(trim(&s), s.trim());
        }
    }

    fn json() -> RecordParser {
        RecordParser::new(&FieldMap::default()).unwrap()
    }

    fn nested() -> RecordParser {
        RecordParser::new(&FieldMap {
            task_pointer: "/task".into(),
            ..FieldMap::default()
        })
        .unwrap()
    }

    #[test]
    fn current_task_shapes() {
        let p = json();
        let r = p
            .parse(br#"{"id":"t1","createdAt":"2024-11-06T00:00:00Z","status":"FAILED","failure":"Blocked","failureCode":"SAFETY.INPUT.TEXT"}"#)
            .unwrap();
        assert_eq!(r.id.as_deref(), Some("t1"));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.failure_code, RawCode::Str("SAFETY.INPUT.TEXT".into()));
        assert!(
            matches!(r.id, Some(Cow::Borrowed(_))),
            "ids without escapes are borrowed"
        );
        let r = p
            .parse(br#"{"id":"t2","status":"SUCCEEDED","output":["https://x/y.mp4"],"model":"gen4_turbo","credits":50,"duration":10}"#)
            .unwrap();
        assert_eq!(
            (r.status, r.model.as_deref(), r.credits, r.duration),
            (
                Status::Succeeded,
                Some("gen4_turbo"),
                Some(50.0),
                Some(10.0)
            )
        );
        let r = p
            .parse(br#"{"id":"t3","status":"RUNNING","progress":0.4}"#)
            .unwrap();
        assert_eq!(r.status, Status::Running);
        assert_eq!(r.failure_code, RawCode::Missing);
    }

    #[test]
    fn older_flat_shape_with_nulls() {
        let r = json()
            .parse(br#"{"id":"t4","status":"FAILED","createdAt":"x","progress":null,"output":null,"failure":"oops","failureCode":null}"#)
            .unwrap();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.failure_code, RawCode::Missing);
        assert_eq!(r.model, None);
    }

    #[test]
    fn nested_task_and_event_fields() {
        let line = br#"{"ts":"2024-11-06T00:00:00Z","model":"gen4.5","credits":60,"task":{"id":"n1","status":"failed","failureCode":"SAFETY.OUTPUT.VIDEO","model":"ignored"},"id":"outer"}"#;
        let r = nested().parse(line).unwrap();
        assert_eq!(r.id.as_deref(), Some("n1"));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.model.as_deref(), Some("gen4.5"));
        assert_eq!(r.credits, Some(60.0));
        // A nested parser does not look for the status at the root.
        assert_eq!(
            nested().parse(br#"{"status":"FAILED"}"#),
            Err(ParseError::MissingStatus)
        );
    }

    #[test]
    fn numbers_given_as_strings_are_invalid_not_read() {
        for field in ["credits", "duration"] {
            for v in [
                r#""12""#,
                r#""NaN""#,
                r#"" 12 ""#,
                r#""1e3""#,
                "true",
                "[12]",
            ] {
                let line = format!(r#"{{"id":"s1","status":"SUCCEEDED","{field}":{v}}}"#);
                let r = json().parse(line.as_bytes()).unwrap();
                assert_eq!((r.credits, r.duration), (None, None), "{line}");
                assert!(r.invalid_number, "{line}");
            }
        }
        let r = json()
            .parse(br#"{"id":"s2","status":"FAILED","cost":{"credits":"12"},"estimatedCost":{"credits":"7"}}"#)
            .unwrap();
        assert_eq!(
            (r.cost, r.estimated_cost, r.invalid_number),
            (None, None, true)
        );
        // A regex captures text: its number fields are read as numbers.
        let map = FieldMap {
            format: LineFormat::Regex,
            regex: r"status=(?P<status>\w+) credits=(?P<credits>\S*)".into(),
            ..FieldMap::default()
        };
        let re = RecordParser::new(&map).unwrap();
        let r = re.parse(b"status=SUCCEEDED credits=12.5").unwrap();
        assert_eq!((r.credits, r.invalid_number), (Some(12.5), false));
        let r = re.parse(b"status=SUCCEEDED credits=").unwrap();
        assert_eq!((r.credits, r.invalid_number), (None, false));
        let r = re.parse(b"status=SUCCEEDED credits=twelve").unwrap();
        assert_eq!((r.credits, r.invalid_number), (None, true));
    }

    #[test]
    fn cost_and_estimated_cost_of_todays_task_type() {
        let r = json()
            .parse(br#"{"id":"c1","status":"FAILED","failureCode":"INTERNAL","cost":{"credits":20},"credits":99}"#)
            .unwrap();
        assert_eq!(
            (r.cost, r.credits, r.invalid_number),
            (Some(20.0), Some(99.0), false)
        );
        let r = json()
            .parse(br#"{"id":"c2","status":"RUNNING","estimatedCost":{"credits":12.5}}"#)
            .unwrap();
        assert_eq!((r.cost, r.estimated_cost), (None, Some(12.5)));
        let r = json()
            .parse(br#"{"id":"c3","status":"CANCELLED","cost":{"credits":0}}"#)
            .unwrap();
        assert_eq!(r.cost, Some(0.0));
        let r = nested()
            .parse(br#"{"cost":{"credits":5},"task":{"id":"c4","status":"SUCCEEDED","cost":{"credits":75}}}"#)
            .unwrap();
        assert_eq!(r.cost, Some(75.0), "the cost is a task field");
    }

    #[test]
    fn absurd_numbers_are_ignored_and_flagged() {
        for bad in [
            "1e308",
            "-1",
            "-0.5",
            "1e10",
            "\"NaN\"",
            "\"inf\"",
            "\"-inf\"",
            "\"12x\"",
            "true",
            "[1]",
            "{\"a\":1}",
        ] {
            for field in ["credits", "duration"] {
                let line = format!(r#"{{"id":"x","status":"SUCCEEDED","{field}":{bad}}}"#);
                let r = json().parse(line.as_bytes()).unwrap();
                assert_eq!(
                    (r.credits, r.duration, r.invalid_number),
                    (None, None, true),
                    "{line}"
                );
            }
            let line = format!(r#"{{"id":"x","status":"SUCCEEDED","cost":{{"credits":{bad}}}}}"#);
            let r = json().parse(line.as_bytes()).unwrap();
            assert_eq!((r.cost, r.invalid_number), (None, true), "{line}");
        }
        // In range, as a number; null and "" are simply absent.
        for (good, want) in [
            ("1e9", Some(1e9)),
            ("null", None),
            ("\"\"", None),
            ("0", Some(0.0)),
        ] {
            let line = format!(r#"{{"status":"SUCCEEDED","cost":{{"credits":{good}}}}}"#);
            let r = json().parse(line.as_bytes()).unwrap();
            assert_eq!((r.cost, r.invalid_number), (want, false), "{line}");
        }
        let r = json()
            .parse(br#"{"status":"SUCCEEDED","duration":86401}"#)
            .unwrap();
        assert!(r.invalid_number, "a duration past a day");
    }

    #[test]
    fn snake_case_dumps_are_read_like_camel_case() {
        // pydantic's model_dump_json(): snake_case, an absent code written as null.
        let line = br#"{"id":"s1","created_at":"2024-11-06T12:00:00Z","status":"FAILED","failure":"Blocked","failure_code":"SAFETY.INPUT.TEXT","cost":{"credits":50},"estimated_cost":null}"#;
        let wrapped = format!(
            r#"{{"model":"gen4_turbo","task":{}}}"#,
            String::from_utf8_lossy(line)
        );
        for r in [json().parse(line), nested().parse(wrapped.as_bytes())] {
            let r = r.unwrap();
            assert_eq!(r.failure_code, RawCode::Str("SAFETY.INPUT.TEXT".into()));
            assert_eq!((r.status, r.cost), (Status::Failed, Some(50.0)));
        }
        let r = json()
            .parse(br#"{"status":"RUNNING","estimated_cost":{"credits":8}}"#)
            .unwrap();
        assert_eq!(r.estimated_cost, Some(8.0));
    }

    #[test]
    fn the_configured_spelling_wins_and_a_value_wins_over_null() {
        let p = json();
        let code = |line: &str| match p.parse(line.as_bytes()).unwrap().failure_code {
            RawCode::Str(s) => s.into_owned(),
            other => format!("{other:?}"),
        };
        let s = |c: &str| RawCode::Str(c.to_string().into());
        assert_eq!(
            code(r#"{"status":"FAILED","failure_code":"ASSET.INVALID","failureCode":"INTERNAL"}"#),
            "INTERNAL"
        );
        assert_eq!(
            code(r#"{"status":"FAILED","failureCode":"INTERNAL","failure_code":"ASSET.INVALID"}"#),
            "INTERNAL"
        );
        assert_eq!(
            code(r#"{"status":"FAILED","failureCode":null,"failure_code":"ASSET.INVALID"}"#),
            "ASSET.INVALID"
        );
        assert_eq!(
            code(r#"{"status":"FAILED","failure_code":"ASSET.INVALID","failureCode":null}"#),
            "ASSET.INVALID"
        );
        assert_eq!(
            code(r#"{"status":"FAILED","failure_code":null}"#),
            "Missing"
        );
        // A key repeated at the same place: the last one, as before.
        assert_eq!(
            code(r#"{"status":"FAILED","failureCode":"A","failureCode":"B"}"#),
            "B"
        );
        // A custom pointer gets its snake_case alias too.
        let p = RecordParser::new(&FieldMap {
            failure_code: "/errorInfo/failureCode".into(),
            ..FieldMap::default()
        })
        .unwrap();
        let r = p
            .parse(br#"{"status":"FAILED","error_info":{"failure_code":"SAFETY.OUTPUT.VIDEO"}}"#)
            .unwrap();
        assert_eq!(r.failure_code, s("SAFETY.OUTPUT.VIDEO"));
        // An alias that overlaps a configured pointer is left out, not an error.
        let p = RecordParser::new(&FieldMap {
            model: "/failure_code".into(),
            ..FieldMap::default()
        })
        .unwrap();
        let r = p
            .parse(br#"{"status":"FAILED","failure_code":"gen4_turbo","failureCode":"INTERNAL"}"#)
            .unwrap();
        assert_eq!(
            (r.model.as_deref(), r.failure_code),
            (Some("gen4_turbo"), s("INTERNAL"))
        );
    }

    #[test]
    fn sdk_errors_carry_the_task_as_task_details() {
        // Node: JSON.stringify(err) of a TaskFailedError; Python: its task_details dumped.
        for line in [
            r#"{"taskDetails":{"id":"e1","status":"FAILED","failureCode":"SAFETY.INPUT.IMAGE","cost":{"credits":40}},"model":"gen4_turbo"}"#,
            r#"{"error":"Task failed","task_details":{"id":"e1","status":"FAILED","failure_code":"SAFETY.INPUT.IMAGE","cost":{"credits":40}},"model":"gen4_turbo"}"#,
        ] {
            let r = json().parse(line.as_bytes()).unwrap();
            assert_eq!(r.id.as_deref(), Some("e1"), "{line}");
            assert_eq!(r.status, Status::Failed);
            assert_eq!(r.failure_code, RawCode::Str("SAFETY.INPUT.IMAGE".into()));
            assert_eq!(
                (r.cost, r.model.as_deref()),
                (Some(40.0), Some("gen4_turbo"))
            );
        }
        // With a task_pointer configured, only that place holds the task.
        assert_eq!(
            nested().parse(br#"{"taskDetails":{"status":"FAILED"}}"#),
            Err(ParseError::MissingStatus)
        );
    }

    /// The record's times in Unix seconds.
    fn times(r: &TaskRecord<'_>) -> (Option<f64>, Option<f64>) {
        let unix = |t: &Option<RawTime<'_>>| t.as_ref().and_then(RawTime::unix);
        (unix(&r.created_at), unix(&r.timestamp))
    }

    #[test]
    fn times_are_found_in_every_shape_the_sdks_and_loggers_write() {
        const T: f64 = 1_730_894_401.0; // 2024-11-06T12:00:01Z
        type Case<'a> = (&'a RecordParser, &'a str, (Option<f64>, Option<f64>));
        let (json, nested) = (&json(), &nested());
        let cases: [Case<'_>; 9] = [
            (
                json,
                r#"{"id":"a","createdAt":"2024-11-06T12:00:01.000Z","status":"SUCCEEDED"}"#,
                (Some(T), None),
            ),
            (
                json,
                r#"{"id":"a","created_at":"2024-11-06T12:00:01Z","status":"SUCCEEDED","ts":1730894461}"#,
                (Some(T), Some(T + 60.0)),
            ),
            (
                json,
                r#"{"id":"a","createdAt":"2024-11-06T12:00:01Z","status":"RUNNING","time":1730894461500}"#,
                (Some(T), Some(T + 60.5)),
            ),
            // The configured name first, then /time, then /ts.
            (
                json,
                r#"{"ts":1,"time":"2024-11-06T12:00:02Z","timestamp":"2024-11-06T13:00:01+01:00","status":"FAILED"}"#,
                (None, Some(T)),
            ),
            (
                json,
                r#"{"ts":1730894401,"time":null,"status":"FAILED"}"#,
                (None, Some(T)),
            ),
            // An SDK error: the task's own createdAt, the event's time.
            (
                json,
                r#"{"createdAt":"1999-01-01T00:00:00Z","taskDetails":{"id":"e","createdAt":"2024-11-06T12:00:01Z","status":"FAILED"},"timestamp":"2024-11-06T12:00:11Z"}"#,
                (Some(T), Some(T + 10.0)),
            ),
            (
                nested,
                r#"{"event":"runway_task","time":"2024-11-06T12:00:31Z","task":{"id":"n","created_at":"2024-11-06T12:00:01Z","status":"FAILED"}}"#,
                (Some(T), Some(T + 30.0)),
            ),
            // Not times: a naive time, a boolean, an object, a negative number.
            (
                json,
                r#"{"createdAt":"2024-11-06T12:00:01","timestamp":true,"status":"FAILED"}"#,
                (None, None),
            ),
            (
                json,
                r#"{"createdAt":{"at":1},"timestamp":-5,"status":"FAILED"}"#,
                (None, None),
            ),
        ];
        for (p, line, want) in cases {
            assert_eq!(times(&p.parse(line.as_bytes()).unwrap()), want, "{line}");
        }
        // A configured timestamp pointer is the only one looked at; an empty one none.
        for (pointer, want) in [("/at", Some(T)), ("", None)] {
            let p = RecordParser::new(&FieldMap {
                timestamp: pointer.into(),
                ..FieldMap::default()
            })
            .unwrap();
            let r = p
                .parse(br#"{"at":1730894401,"ts":5,"time":5,"status":"FAILED"}"#)
                .unwrap();
            assert_eq!(times(&r).1, want, "{pointer:?}");
        }
        // A field map that already uses /time for something else stays valid.
        let p = RecordParser::new(&FieldMap {
            model: "/time".into(),
            ..FieldMap::default()
        })
        .unwrap();
        let r = p
            .parse(br#"{"time":"gen4","ts":1730894401,"status":"FAILED"}"#)
            .unwrap();
        assert_eq!((r.model.as_deref(), times(&r).1), (Some("gen4"), Some(T)));
        // Regex captures.
        let p = RecordParser::new(&FieldMap {
            format: LineFormat::Regex,
            regex: r"(?P<timestamp>\S+) (?P<status>\w+) created=(?P<created_at>\S+)".into(),
            ..FieldMap::default()
        })
        .unwrap();
        let r = p
            .parse(b"1730894461 SUCCEEDED created=2024-11-06T12:00:01Z")
            .unwrap();
        assert_eq!(times(&r), (Some(T), Some(T + 60.0)));
    }

    #[test]
    fn a_wrapper_and_its_task_details_never_mix() {
        let p = json();
        let r = p
            .parse(br#"{"id":"req-1","taskDetails":{"id":"t2","status":"FAILED","failureCode":"ASSET.INVALID"}}"#)
            .unwrap();
        assert_eq!((r.id.as_deref(), r.status), (Some("t2"), Status::Failed));
        let r = p
            .parse(br#"{"status":"error","task_details":{"id":"t3","status":"FAILED","failure_code":"SAFETY.INPUT.TEXT"}}"#)
            .unwrap();
        assert_eq!((r.id.as_deref(), r.status), (Some("t3"), Status::Failed));
        assert_eq!(r.failure_code, RawCode::Str("SAFETY.INPUT.TEXT".into()));
        let r = p
            .parse(br#"{"cost":{"credits":999},"taskDetails":{"id":"t4","status":"FAILED","cost":{"credits":0}}}"#)
            .unwrap();
        assert_eq!(r.cost, Some(0.0));
        // The task under taskDetails has no id: the wrapper's is not taken for it.
        let r = p
            .parse(br#"{"id":"req-5","failureCode":"INTERNAL","taskDetails":{"status":"FAILED"}}"#)
            .unwrap();
        assert_eq!((r.id, r.failure_code), (None, RawCode::Missing));
        // A record with a status of its own whose taskDetails has none: the status is the
        // wrapper's, and the fields the details also have are left out rather than
        // taken from the other object (one value per field is kept while reading, the
        // nearer root's).
        let r = p
            .parse(br#"{"id":"t6","status":"SUCCEEDED","taskDetails":{"id":"x","cost":{"credits":3}}}"#)
            .unwrap();
        assert_eq!((r.status, r.id, r.cost), (Status::Succeeded, None, None));
    }

    #[test]
    fn a_field_map_from_before_costs_stays_valid() {
        // credits = "/cost/credits" was how today's task type was read before `cost`
        // existed: the default cost pointer gives way to it instead of refusing the map.
        let p = RecordParser::new(&FieldMap {
            credits: "/cost/credits".into(),
            ..FieldMap::default()
        })
        .unwrap();
        let r = p
            .parse(br#"{"status":"SUCCEEDED","cost":{"credits":7}}"#)
            .unwrap();
        assert_eq!((r.credits, r.cost), (Some(7.0), None));
        let p = RecordParser::new(&FieldMap {
            model: "/estimatedCost".into(),
            ..FieldMap::default()
        })
        .unwrap();
        assert!(p.parse(br#"{"status":"RUNNING"}"#).is_ok());
        // A cost pointer set on purpose that overlaps is still an error, naming the key.
        let e = RecordParser::new(&FieldMap {
            credits: "/spend".into(),
            cost: "/spend/credits".into(),
            ..FieldMap::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "cost");
    }

    #[test]
    fn deep_nesting_is_rejected_before_the_parser_sees_it() {
        let deep = |d: usize, key: &str| {
            format!(
                r#"{{"id":"d","status":"SUCCEEDED","{key}":{}1{}}}"#,
                "[".repeat(d),
                "]".repeat(d)
            )
        };
        // On a thread with a small stack (a tokio worker has 2 MiB): nothing overflows.
        let lines: Vec<String> = vec![
            deep(200_000, "x"),
            deep(MAX_DEPTH + 1, "taskDetails"),
            deep(MAX_DEPTH + 1, "cost"),
            format!(
                r#"{{"status":"SUCCEEDED","x":{}1{}}}"#,
                "{\"a\":".repeat(300_000),
                "}".repeat(300_000)
            ),
            // At the cap, the parser's own recursion fits a small stack too.
            deep(MAX_DEPTH - 1, "x"),
        ];
        let results = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let p = json();
                lines
                    .iter()
                    .map(|l| p.parse(l.as_bytes()).map(|r| r.status))
                    .collect::<Vec<_>>()
            })
            .unwrap()
            .join()
            .unwrap();
        let mut want = vec![Err(ParseError::TooDeep); 4];
        want.push(Ok(Status::Succeeded));
        assert_eq!(results, want);
        // Brackets inside strings do not count.
        let p = json();
        let in_string = format!(r#"{{"status":"SUCCEEDED","x":"{}"}}"#, "[".repeat(5000));
        assert_eq!(
            p.parse(in_string.as_bytes()).map(|r| r.status),
            Ok(Status::Succeeded)
        );
    }

    #[test]
    fn pretty_printed_objects_parse_as_one_record() {
        let text = "{\n  \"id\": \"p1\",\n  \"status\": \"FAILED\",\r\n  \"failureCode\": \"ASSET.INVALID\",\n  \"cost\": {\n    \"credits\": 0\n  }\n}";
        let r = json().parse(text.as_bytes()).unwrap();
        assert_eq!((r.id.as_deref(), r.cost), (Some("p1"), Some(0.0)));
        assert_eq!(r.failure_code, RawCode::Str("ASSET.INVALID".into()));
    }

    #[test]
    fn custom_pointers_escapes_and_array_indices() {
        let p = RecordParser::new(&FieldMap {
            task_pointer: "/events/1".into(),
            id: "/meta/task~1id".into(),
            status: "/state".into(),
            failure_code: "/err/code".into(),
            model: "/a~0b".into(),
            credits: String::new(),
            ..FieldMap::default()
        })
        .unwrap();
        let r = p
            .parse(br#"{"events":[{"state":"RUNNING"},{"meta":{"task/id":"x\"y"},"state":"FAILED","err":{"code":"asset.invalid"}}],"a~b":"m","credits":9}"#)
            .unwrap();
        assert_eq!(r.id.as_deref(), Some("x\"y"));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.failure_code.normalize().as_str(), "ASSET.INVALID");
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.credits, None, "an empty pointer turns the field off");
    }

    #[test]
    fn keys_of_the_same_length_and_long_keys() {
        // Keys are told apart by their length first: same-length keys, and keys as
        // long as or longer than the last length slot (which share it), must still
        // match only their own field.
        let long = "s".repeat(KEY_LEN_SLOTS + 8);
        let p = RecordParser::new(&FieldMap {
            id: "/ab".into(),
            status: format!("/{long}"),
            failure_code: format!("/{}", "c".repeat(KEY_LEN_SLOTS - 1)),
            model: "/ba".into(),
            ..FieldMap::default()
        })
        .unwrap();
        let line = format!(
            r#"{{"aa":"no","ba":"m1","ab":"t1","{}":"RUNNING","{long}":"FAILED","{}":"x","{}":"SAFETY.INPUT.TEXT"}}"#,
            "s".repeat(KEY_LEN_SLOTS + 9),
            "c".repeat(KEY_LEN_SLOTS),
            "c".repeat(KEY_LEN_SLOTS - 1),
        );
        let r = p.parse(line.as_bytes()).unwrap();
        assert_eq!(r.id.as_deref(), Some("t1"));
        assert_eq!(r.model.as_deref(), Some("m1"));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.failure_code, RawCode::Str("SAFETY.INPUT.TEXT".into()));
    }

    #[test]
    fn errors_by_reason() {
        let p = json();
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::EmptyLine),
            (b"   \r", ParseError::EmptyLine),
            (b"{\"status\":\"FAILED\"", ParseError::InvalidJson),
            (b"not json", ParseError::InvalidJson),
            (b"{\"status\":\"FAILED\"} trailing", ParseError::InvalidJson),
            (b"{\"status\":\"FA\xffILED\"}", ParseError::InvalidUtf8),
            (
                b"{\"x\":\"\xc3\x28\",\"status\":\"FAILED\"}",
                ParseError::InvalidUtf8,
            ),
            (b"{\"status\":\"FAILED\",\0}", ParseError::InvalidJson),
            (b"{\"status\":\"FAI\0LED\"}", ParseError::InvalidJson),
            (b"{\"id\":\"x\"}", ParseError::MissingStatus),
            (b"{\"status\":null}", ParseError::MissingStatus),
            (b"[1,2]", ParseError::MissingStatus),
            (b"42", ParseError::MissingStatus),
            (b"{\"status\":\"EXPLODED\"}", ParseError::UnknownStatus),
            (b"{\"status\":7}", ParseError::UnknownStatus),
        ];
        for (line, want) in cases {
            assert_eq!(
                p.parse(line),
                Err(*want),
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn odd_field_values_do_not_reject_the_record() {
        let r = json()
            .parse(br#"{"id":123,"status":"FAILED","failureCode":{"a":1},"model":"","credits":-5,"duration":"abc"}"#)
            .unwrap();
        assert_eq!(r.id.as_deref(), Some("123"));
        assert_eq!(r.failure_code, RawCode::NotAString);
        assert_eq!(r.failure_code.normalize().as_str(), "invalid");
        assert_eq!((r.model, r.credits, r.duration), (None, None, None));
        let r = json()
            .parse(br#"{"status":"FAILED","failureCode":""}"#)
            .unwrap();
        assert_eq!(r.failure_code.normalize().as_str(), "none");
    }

    #[test]
    fn regex_format() {
        let p = RecordParser::new(&FieldMap {
            format: LineFormat::Regex,
            regex: r"task=(?P<id>\S+) status=(?P<status>\w+)(?: code=(?P<failure_code>\S+))?(?: model=(?P<model>\S+))?".into(),
            ..FieldMap::default()
        })
        .unwrap();
        let r = p
            .parse(b"2024-11-06 task=abc status=FAILED code=SAFETY.INPUT.IMAGE model=gen4_turbo")
            .unwrap();
        assert_eq!(r.id.as_deref(), Some("abc"));
        assert_eq!(r.failure_code.normalize().as_str(), "SAFETY.INPUT.IMAGE");
        assert_eq!(r.model.as_deref(), Some("gen4_turbo"));
        let r = p.parse(b"task=abc status=SUCCEEDED").unwrap();
        assert_eq!(
            (r.status, r.failure_code),
            (Status::Succeeded, RawCode::Missing)
        );
        assert_eq!(p.parse(b"hello"), Err(ParseError::RegexMismatch));
    }

    #[test]
    fn bad_field_maps_name_the_key() {
        let cases = [
            (
                FieldMap {
                    id: "id".into(),
                    ..FieldMap::default()
                },
                "id",
            ),
            (
                FieldMap {
                    status: String::new(),
                    ..FieldMap::default()
                },
                "status",
            ),
            (
                FieldMap {
                    model: "/id".into(),
                    ..FieldMap::default()
                },
                "model",
            ),
            (
                FieldMap {
                    task_pointer: "/t".into(),
                    id: "".into(),
                    status: "".into(),
                    ..FieldMap::default()
                },
                "status",
            ),
            (
                FieldMap {
                    failure_code: "/a/~2".into(),
                    ..FieldMap::default()
                },
                "failure_code",
            ),
            (
                FieldMap {
                    format: LineFormat::Regex,
                    ..FieldMap::default()
                },
                "regex",
            ),
            (
                FieldMap {
                    format: LineFormat::Regex,
                    regex: "(".into(),
                    ..FieldMap::default()
                },
                "regex",
            ),
            (
                FieldMap {
                    format: LineFormat::Regex,
                    regex: "(?P<id>x)".into(),
                    ..FieldMap::default()
                },
                "regex",
            ),
        ];
        for (map, key) in cases {
            assert_eq!(RecordParser::new(&map).unwrap_err().key, key, "{map:?}");
        }
    }
}
