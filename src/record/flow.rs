//! Records that are not tasks: workflow invocations and realtime sessions.
//!
//! Runway's types (`runwayml` 5.24.0, `@runwayml/sdk` 4.20.1) say what sets them apart:
//!
//! - A *workflow invocation* (`GET /v1/workflow_invocations/{id}`) has the statuses of a
//!   task, but its `output` (RUNNING, SUCCEEDED) is an object, node id -> URLs, where a
//!   task's is an array of URLs, and it may carry `nodeErrors`, an object node id ->
//!   `{message, failureCode?, nodeName?}`, which no task has. A record with either is an
//!   invocation.
//! - A *realtime session* (`/v1/realtime_sessions/{id}`) has statuses of its own:
//!   `NOT_READY`, `READY` and `COMPLETED` are no task's, so a record with one is a
//!   session; its `RUNNING`, `FAILED` and `CANCELLED` look like a task's.
//!
//! A PENDING, THROTTLED, CANCELLED or FAILED invocation without `nodeErrors`, and a
//! RUNNING, FAILED or CANCELLED session, look like a task on their own: the ledger
//! recognises them by their id, seen before with one of the marks above.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::RawCode;

/// A realtime session's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    NotReady,
    Ready,
    Running,
    Completed,
    Failed,
    Cancelled,
}

crate::labels::label_enum!(SessionStatus {
    NotReady => "NOT_READY",
    Ready => "READY",
    Running => "RUNNING",
    Completed => "COMPLETED",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl SessionStatus {
    /// The statuses a session ends in, the `status` values of
    /// `runway_realtime_sessions_total`.
    pub const TERMINAL: [SessionStatus; 3] = [
        SessionStatus::Completed,
        SessionStatus::Failed,
        SessionStatus::Cancelled,
    ];

    /// A session status no task has, ignoring ASCII case.
    pub fn read_own(s: &str) -> Option<SessionStatus> {
        [
            SessionStatus::NotReady,
            SessionStatus::Ready,
            SessionStatus::Completed,
        ]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// The session status of a record read as a task's status.
    pub fn of_task(s: super::Status) -> SessionStatus {
        use super::Status;
        match s {
            Status::Pending | Status::Throttled => SessionStatus::NotReady,
            Status::Running => SessionStatus::Running,
            Status::Succeeded => SessionStatus::Completed,
            Status::Failed => SessionStatus::Failed,
            Status::Cancelled => SessionStatus::Cancelled,
        }
    }

    /// The task status nearest to it: terminal exactly when this one is (what the
    /// dedupe window goes by).
    pub fn as_task(self) -> super::Status {
        use super::Status;
        match self {
            SessionStatus::NotReady | SessionStatus::Ready => Status::Pending,
            SessionStatus::Running => Status::Running,
            SessionStatus::Completed => Status::Succeeded,
            SessionStatus::Failed => Status::Failed,
            SessionStatus::Cancelled => Status::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.as_task().is_terminal()
    }
}

/// Distinct failure codes kept from one record's `nodeErrors`; the nodes of any further
/// code are counted in [`NodeErrors::overflow`].
pub const MAX_NODE_CODES: usize = 16;

/// A workflow invocation's `nodeErrors`, summed by code: bounded whatever the record
/// holds (a million nodes make at most [`MAX_NODE_CODES`] entries).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeErrors<'a> {
    /// Each distinct code with its number of failed nodes, in the order first seen.
    pub codes: Vec<(RawCode<'a>, u64)>,
    /// Failed nodes whose code came after [`MAX_NODE_CODES`] distinct ones.
    pub overflow: u64,
}

impl<'a> NodeErrors<'a> {
    /// Failed nodes in all.
    pub fn nodes(&self) -> u64 {
        self.codes.iter().map(|(_, n)| n).sum::<u64>() + self.overflow
    }

    fn add(&mut self, code: RawCode<'a>) {
        match self.codes.iter().position(|(c, _)| *c == code) {
            Some(i) => self.codes[i].1 += 1,
            None if self.codes.len() < MAX_NODE_CODES => self.codes.push((code, 1)),
            None => self.overflow += 1,
        }
    }
}

/// What a workflow-invocation mark of a record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark<'a> {
    /// `nodeErrors` (an object: `null` or anything else is no mark).
    NodeErrors(NodeErrors<'a>),
    /// `output` as an object.
    MapOutput,
    /// Nothing that tells.
    None,
}

/// Reads `nodeErrors`: the values of an object, each read for its `failureCode` (or
/// `failure_code`).
pub(super) struct NodeErrorsSeed;

impl<'de> DeserializeSeed<'de> for NodeErrorsSeed {
    type Value = Mark<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Mark<'de>, D::Error> {
        d.deserialize_any(NodeErrorsVisitor)
    }
}

struct NodeErrorsVisitor;

macro_rules! no_mark {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Mark<'de>, E> { Ok(Mark::None) })*
    };
}

impl<'de> Visitor<'de> for NodeErrorsVisitor {
    type Value = Mark<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    no_mark!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<Mark<'de>, E> {
        Ok(Mark::None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Mark<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Mark::None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Mark<'de>, A::Error> {
        let mut errors = NodeErrors::default();
        while map.next_key::<IgnoredAny>()?.is_some() {
            errors.add(map.next_value_seed(NodeSeed)?);
        }
        Ok(Mark::NodeErrors(errors))
    }
}

/// One node's error: its code.
struct NodeSeed;

impl<'de> DeserializeSeed<'de> for NodeSeed {
    type Value = RawCode<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawCode<'de>, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! not_a_node {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<RawCode<'de>, E> { Ok(RawCode::Missing) })*
    };
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = RawCode<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node error")
    }
    not_a_node!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<RawCode<'de>, E> {
        Ok(RawCode::Missing)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawCode<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawCode::Missing)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawCode<'de>, A::Error> {
        let mut code = RawCode::Missing;
        while let Some(is_code) = map.next_key_seed(CodeKey)? {
            if is_code {
                let v: super::Scalar<'de> = map.next_value_seed(ScalarSeed)?;
                let c = super::raw_code(Some(v));
                // A value wins over a null, whichever spelling.
                if c != RawCode::Missing {
                    code = c;
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(code)
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = super::Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(super::ScalarVisitor)
    }
}

/// Whether an object key is `failureCode` or `failure_code`, without allocating.
struct CodeKey;

impl<'de> DeserializeSeed<'de> for CodeKey {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for CodeKey {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == "failureCode" || key == "failure_code")
    }
}

/// Reads `output`: a mark when it is an object (a task's is an array).
pub(super) struct OutputSeed;

impl<'de> DeserializeSeed<'de> for OutputSeed {
    type Value = Mark<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Mark<'de>, D::Error> {
        d.deserialize_any(OutputVisitor)
    }
}

struct OutputVisitor;

impl<'de> Visitor<'de> for OutputVisitor {
    type Value = Mark<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    no_mark!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<Mark<'de>, E> {
        Ok(Mark::None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Mark<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Mark::None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Mark<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Mark::MapOutput)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FieldMap, ParseError, RecordKind, RecordParser, Status};
    use super::*;

    fn parse(map: &FieldMap, line: &str) -> Result<RecordKind<'static>, ParseError> {
        let p = RecordParser::new(map).unwrap();
        let line: &'static str = Box::leak(line.to_string().into_boxed_str());
        p.parse(line.as_bytes()).map(|r| r.kind)
    }

    fn code(s: &'static str) -> RawCode<'static> {
        RawCode::Str(s.into())
    }

    #[test]
    fn the_sdk_shapes_of_invocations_and_sessions_are_told_from_tasks() {
        let m = FieldMap::default();
        let wf = |codes: Vec<(RawCode<'static>, u64)>| {
            RecordKind::Workflow(NodeErrors { codes, overflow: 0 })
        };
        let cases = [
            // Tasks: `output` an array, or null in the older flat shape.
            (
                r#"{"id":"t","status":"SUCCEEDED","output":["u"]}"#,
                RecordKind::Task,
            ),
            (
                r#"{"id":"t","status":"FAILED","output":null,"failureCode":"INTERNAL"}"#,
                RecordKind::Task,
            ),
            // Invocations: an `output` object, `nodeErrors` (camelCase or pydantic's).
            (
                r#"{"id":"w","status":"RUNNING","output":{},"progress":0.1}"#,
                wf(vec![]),
            ),
            (
                r#"{"id":"w","status":"FAILED","nodeErrors":{"a":{"message":"m","failureCode":"SAFETY.INPUT.TEXT"},"b":{"message":"m"},"c":{"message":"m","failure_code":null,"failureCode":"SAFETY.INPUT.TEXT"}}}"#,
                wf(vec![(code("SAFETY.INPUT.TEXT"), 2), (RawCode::Missing, 1)]),
            ),
            (
                r#"{"id":"w","status":"SUCCEEDED","output":{"n":["u"]},"node_errors":{"a":{"message":"m","failure_code":"INTERNAL","node_name":null}}}"#,
                wf(vec![(code("INTERNAL"), 1)]),
            ),
            (
                r#"{"id":"w","status":"SUCCEEDED","nodeErrors":null}"#,
                RecordKind::Task,
            ),
            // Sessions: statuses no task has.
            (
                r#"{"id":"r","status":"NOT_READY","queued":true}"#,
                RecordKind::Session(SessionStatus::NotReady),
            ),
            (
                r#"{"id":"r","status":"READY","sessionKey":"k"}"#,
                RecordKind::Session(SessionStatus::Ready),
            ),
            (
                r#"{"id":"r","status":"completed","duration":61}"#,
                RecordKind::Session(SessionStatus::Completed),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(&m, line), Ok(want), "{line}");
        }
        let p = RecordParser::new(&m).unwrap();
        let r = p.parse(br#"{"id":"r","status":"COMPLETED"}"#).unwrap();
        assert_eq!(r.status, Status::Succeeded, "terminal, as the session is");
        // Nested at task_pointer, the marks are read there, not beside it.
        let nested = FieldMap {
            task_pointer: "/task".into(),
            ..FieldMap::default()
        };
        let line = r#"{"output":{},"task":{"id":"w","status":"RUNNING","output":{}}}"#;
        assert_eq!(parse(&nested, line), Ok(wf(vec![])));
        let line = r#"{"output":{},"task":{"id":"t","status":"RUNNING"}}"#;
        assert_eq!(parse(&nested, line), Ok(RecordKind::Task));
        // An SDK error's wrapper: the marks of the task it wraps only.
        let line = r#"{"output":{},"taskDetails":{"id":"t","status":"FAILED"}}"#;
        assert_eq!(parse(&m, line), Ok(RecordKind::Task));
    }

    #[test]
    fn hostile_node_errors_are_bounded() {
        let m = FieldMap::default();
        // Deeper than MAX_DEPTH inside nodeErrors: rejected as any line is.
        let deep = format!(
            r#"{{"id":"w","status":"FAILED","nodeErrors":{{"a":{}{}}}}}"#,
            "[".repeat(600),
            "]".repeat(600)
        );
        assert_eq!(parse(&m, &deep), Err(ParseError::TooDeep));
        // Nested within the limit, where a code belongs: a code that is not a string.
        let nested = format!(
            r#"{{"id":"w","status":"FAILED","nodeErrors":{{"a":{{"failureCode":{}1{}}}}}}}"#,
            "[".repeat(400),
            "]".repeat(400)
        );
        let want = RecordKind::Workflow(NodeErrors {
            codes: vec![(RawCode::NotAString, 1)],
            overflow: 0,
        });
        assert_eq!(parse(&m, &nested), Ok(want));
        // Many distinct codes: MAX_NODE_CODES kept, the rest counted as overflow.
        let mut line = String::from(r#"{"id":"w","status":"FAILED","nodeErrors":{"#);
        for i in 0..1000 {
            line.push_str(&format!(r#""n{i}":{{"failureCode":"C.X{}"}},"#, i % 100));
        }
        line.push_str(r#""z":1}}"#);
        let RecordKind::Workflow(e) = parse(&m, &line).unwrap() else {
            panic!("not a workflow")
        };
        assert_eq!(e.codes.len(), MAX_NODE_CODES);
        assert_eq!(e.nodes(), 1001, "every node counted");
        // The nodes of codes past the 16th, and the odd one (no code, a 101st kind).
        assert_eq!(e.overflow, 1000 - 10 * MAX_NODE_CODES as u64 + 1);
    }
}
