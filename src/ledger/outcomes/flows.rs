//! Workflow invocations and realtime sessions: counted apart from tasks.
//!
//! A part of the outcomes (`Flows`, private fields), with the [`Outcomes`] methods that
//! count them: they share the outcomes' failure codes (interned under the same cap, the
//! same `label_overflow`) and the tasks' dedupe window, so they live in a child module
//! of `outcomes`.
//!
//! - A record is one of them when its own fields say so ([`RecordKind`], read by
//!   [`crate::record`]), or when its id was seen before on a record that did: the ids of
//!   the last [`MAX_FLOW_IDS`] invocations and sessions are remembered (and committed),
//!   because a FAILED or CANCELLED invocation without `nodeErrors`, and a RUNNING, FAILED
//!   or CANCELLED session, have no field a task lacks.
//! - Like a task, an invocation or a session is counted once, at its first terminal
//!   record, its id in the tasks' dedupe window (ids are UUIDs either way); a record
//!   without an id is counted each time. An invocation is counted by status and by
//!   whether it is *partial* (SUCCEEDED with failed nodes); each of its failed nodes by
//!   code, classified by the tasks' failure-code table, the code interned under the same
//!   `max_failure_codes` cap. One record's nodes make at most
//!   `MAX_NODE_CODES` (16, `record::flow`) codes; the nodes of further codes count as
//!   `other`, and bump `label_overflow`.
//! - An invocation's `cost` is omitted until every node is terminal: its credits are
//!   counted from the first terminal record that has a cost (once per id, by the status
//!   of that record), whether or not that record is the one counted.
//! - A session is counted by status; a FAILED one also by code, as node failures are.

use rustc_hash::FxHashMap;

use super::super::{DedupeWindow, Limits, LineResult, RestoreError, OTHER};
use super::{Interner, Outcomes};
use crate::classify::{Category, CreditRule, Retry, Table};
use crate::record::{RawCode, RecordKind, SessionStatus, Status, TaskRecord};

/// Invocation and session ids remembered, each (and invocations whose cost was counted):
/// about 19 bytes each in memory, at most 20 in the state file.
pub const MAX_FLOW_IDS: usize = 4096;

/// A failure code with its classification.
type CodeKey = (u32, Category, Retry, CreditRule);

/// The counters of invocations and sessions, and the ids that tell them apart.
#[derive(Debug)]
pub(super) struct Flows {
    workflow_ids: DedupeWindow,
    session_ids: DedupeWindow,
    /// Invocations whose cost was counted.
    costed: DedupeWindow,
    invocations: FxHashMap<(Status, bool), u64>,
    node_failures: FxHashMap<CodeKey, u64>,
    credits: FxHashMap<Status, f64>,
    sessions: FxHashMap<SessionStatus, u64>,
    session_failures: FxHashMap<CodeKey, u64>,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            workflow_ids: DedupeWindow::new(MAX_FLOW_IDS),
            session_ids: DedupeWindow::new(MAX_FLOW_IDS),
            costed: DedupeWindow::new(MAX_FLOW_IDS),
            invocations: FxHashMap::default(),
            node_failures: FxHashMap::default(),
            credits: FxHashMap::default(),
            sessions: FxHashMap::default(),
            session_failures: FxHashMap::default(),
        }
    }
}

/// What the flows' counters hold, with labels resolved: committed and published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowTotals {
    pub invocations: Vec<InvocationSeries>,
    pub node_failures: Vec<CodeSeries>,
    pub credits: Vec<FlowCredits>,
    pub sessions: Vec<SessionSeries>,
    pub session_failures: Vec<CodeSeries>,
    /// The remembered ids, as hashes, oldest first.
    pub workflow_ids: Vec<u64>,
    pub session_ids: Vec<u64>,
    pub costed_ids: Vec<u64>,
}

/// Counted invocations of one status, partial or not.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationSeries {
    pub status: String,
    pub partial: bool,
    pub invocations: u64,
}

/// Failed nodes (or sessions) of one code.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeSeries {
    pub failure_code: String,
    pub category: String,
    pub retry: String,
    pub credits: String,
    pub value: u64,
}

/// Credits of invocations, by the status of the record their cost came on.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowCredits {
    pub status: String,
    pub credits: f64,
}

/// Counted sessions of one status.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSeries {
    pub status: String,
    pub sessions: u64,
}

/// What a record is, once its id is looked up too.
enum Flow<'r, 'a> {
    Workflow(Option<&'r crate::record::NodeErrors<'a>>),
    Session(SessionStatus),
}

impl Outcomes {
    /// Whether `record` is an invocation or a session, by its fields or its id.
    fn flow<'r, 'a>(&self, record: &'r TaskRecord<'a>) -> Option<Flow<'r, 'a>> {
        let flows = &self.flows;
        match &record.kind {
            RecordKind::Workflow(errors) => Some(Flow::Workflow(Some(errors))),
            RecordKind::Session(s) => Some(Flow::Session(*s)),
            // The usual case costs a look at two lengths.
            RecordKind::Task if flows.workflow_ids.is_empty() && flows.session_ids.is_empty() => {
                None
            }
            RecordKind::Task => {
                let h = DedupeWindow::hash(record.id.as_deref()?);
                if flows.workflow_ids.contains_hash(h) {
                    Some(Flow::Workflow(None))
                } else if flows.session_ids.contains_hash(h) {
                    Some(Flow::Session(SessionStatus::of_task(record.status)))
                } else {
                    None
                }
            }
        }
    }

    /// Counts `record` as an invocation or a session when it is one (the module doc);
    /// `None` when it is a task. `fresh` as in `count_record`.
    pub(in crate::ledger) fn count_flow(
        &mut self,
        record: &TaskRecord<'_>,
        fresh: Option<bool>,
        table: &Table,
        limits: Limits,
    ) -> Option<LineResult> {
        let flow = self.flow(record)?;
        let flows = &mut self.flows;
        if let Some(id) = record.id.as_deref() {
            match flow {
                Flow::Workflow(_) => flows.workflow_ids.insert(id),
                Flow::Session(_) => flows.session_ids.insert(id),
            };
        }
        if !record.status.is_terminal() {
            return Some(LineResult::NonTerminal);
        }
        if let Flow::Workflow(_) = flow {
            self.count_workflow_cost(record);
        }
        if let Some(id) = &record.id {
            if !fresh.unwrap_or_else(|| self.dedupe.insert(id)) {
                return Some(LineResult::Duplicate);
            }
        }
        match flow {
            Flow::Workflow(errors) => self.count_invocation(record.status, errors, table, limits),
            Flow::Session(status) => {
                self.count_session(status, &record.failure_code, table, limits)
            }
        }
        Some(LineResult::Counted)
    }

    /// An invocation's credits, from the first terminal record of its id with a cost.
    fn count_workflow_cost(&mut self, record: &TaskRecord<'_>) {
        let Some(cost) = record.cost else { return };
        let flows = &mut self.flows;
        if record
            .id
            .as_deref()
            .is_none_or(|id| flows.costed.insert(id))
        {
            *flows.credits.entry(record.status).or_default() += cost;
        }
    }

    fn count_invocation(
        &mut self,
        status: Status,
        errors: Option<&crate::record::NodeErrors<'_>>,
        table: &Table,
        limits: Limits,
    ) {
        let partial = status == Status::Succeeded && errors.is_some_and(|e| e.nodes() > 0);
        *self.flows.invocations.entry((status, partial)).or_default() += 1;
        let Some(errors) = errors else { return };
        for (code, nodes) in &errors.codes {
            let key = self.code_key(code, table, limits);
            *self.flows.node_failures.entry(key).or_default() += nodes;
        }
        if errors.overflow > 0 {
            let other = self.codes.ids[OTHER];
            let key = self.class_key(other);
            self.label_overflow.failure_code += 1;
            *self.flows.node_failures.entry(key).or_default() += errors.overflow;
        }
    }

    fn count_session(
        &mut self,
        status: SessionStatus,
        code: &RawCode<'_>,
        table: &Table,
        limits: Limits,
    ) {
        *self.flows.sessions.entry(status).or_default() += 1;
        if status == SessionStatus::Failed {
            let key = self.code_key(code, table, limits);
            *self.flows.session_failures.entry(key).or_default() += 1;
        }
    }

    /// A code interned under the cap (a folded one bumps `label_overflow` and keeps its
    /// own classification), with its classification.
    fn code_key(&mut self, code: &RawCode<'_>, table: &Table, limits: Limits) -> CodeKey {
        let code = code.normalize();
        let (id, folded) = self.intern_code(table, &code, limits.max_failure_codes);
        if !folded {
            return self.class_key(id);
        }
        let class = table.classify(&code);
        (id, class.category, class.retry, class.credits)
    }

    /// An interned code's key, by its cached classification.
    fn class_key(&self, id: u32) -> CodeKey {
        let info = &self.code_info[id as usize];
        (id, info.category, info.retry, info.credits)
    }

    /// Every terminal status of invocations and sessions at 0, and every known code's
    /// node failures, so that `rate()` works before the first.
    pub(super) fn export_flow_zeroes(&mut self) {
        let outcomes = self;
        for status in Status::TERMINAL {
            outcomes
                .flows
                .invocations
                .entry((status, false))
                .or_default();
            outcomes.flows.credits.entry(status).or_default();
        }
        outcomes
            .flows
            .invocations
            .entry((Status::Succeeded, true))
            .or_default();
        for status in SessionStatus::TERMINAL {
            outcomes.flows.sessions.entry(status).or_default();
        }
        for (id, info) in outcomes.code_info.iter().enumerate() {
            if info.label != OTHER {
                let key = (id as u32, info.category, info.retry, info.credits);
                outcomes.flows.node_failures.entry(key).or_default();
            }
        }
    }

    /// The flows' counters with labels resolved, sorted.
    pub(super) fn flow_totals(&self) -> FlowTotals {
        let flows = &self.flows;
        let code_series = |m: &FxHashMap<CodeKey, u64>| {
            let mut v: Vec<CodeSeries> = m
                .iter()
                .map(|((c, category, retry, credits), n)| CodeSeries {
                    failure_code: self.code_info(*c).label.clone(),
                    category: category.as_str().into(),
                    retry: retry.as_str().into(),
                    credits: credits.as_str().into(),
                    value: *n,
                })
                .collect();
            v.sort_by(|a, b| (&a.failure_code, &a.category).cmp(&(&b.failure_code, &b.category)));
            v
        };
        let mut t = FlowTotals {
            invocations: (flows.invocations.iter())
                .map(|((s, partial), n)| InvocationSeries {
                    status: s.as_str().into(),
                    partial: *partial,
                    invocations: *n,
                })
                .collect(),
            node_failures: code_series(&flows.node_failures),
            credits: (flows.credits.iter())
                .map(|(s, c)| FlowCredits {
                    status: s.as_str().into(),
                    credits: *c,
                })
                .collect(),
            sessions: (flows.sessions.iter())
                .map(|(s, n)| SessionSeries {
                    status: s.as_str().into(),
                    sessions: *n,
                })
                .collect(),
            session_failures: code_series(&flows.session_failures),
            workflow_ids: flows.workflow_ids.hashes().collect(),
            session_ids: flows.session_ids.hashes().collect(),
            costed_ids: flows.costed.hashes().collect(),
        };
        t.invocations
            .sort_by(|a, b| (&a.status, a.partial).cmp(&(&b.status, b.partial)));
        t.credits.sort_by(|a, b| a.status.cmp(&b.status));
        t.sessions.sort_by(|a, b| a.status.cmp(&b.status));
        t
    }

    /// Adds saved flow counters and ids; stops at the first value that is not valid.
    pub(super) fn add_saved_flows(&mut self, t: &FlowTotals) -> Result<(), RestoreError> {
        let bad = |what: &str, v: &str| RestoreError(format!("{what} {v:?}"));
        let status = |s: &str| {
            Status::read(s)
                .filter(|s| s.is_terminal())
                .ok_or_else(|| bad("status", s))
        };
        let outcomes = self;
        let code_key = |codes: &mut Interner, s: &CodeSeries| {
            Ok::<_, RestoreError>((
                codes.force(&s.failure_code),
                Category::parse(&s.category).ok_or_else(|| bad("category", &s.category))?,
                Retry::parse(&s.retry).ok_or_else(|| bad("retry", &s.retry))?,
                CreditRule::parse(&s.credits).ok_or_else(|| bad("credits", &s.credits))?,
            ))
        };
        for s in &t.invocations {
            let key = (status(&s.status)?, s.partial);
            *outcomes.flows.invocations.entry(key).or_default() += s.invocations;
        }
        for s in &t.node_failures {
            let key = code_key(&mut outcomes.codes, s)?;
            *outcomes.flows.node_failures.entry(key).or_default() += s.value;
        }
        for s in &t.session_failures {
            let key = code_key(&mut outcomes.codes, s)?;
            *outcomes.flows.session_failures.entry(key).or_default() += s.value;
        }
        for s in &t.credits {
            *outcomes
                .flows
                .credits
                .entry(status(&s.status)?)
                .or_default() += s.credits;
        }
        for s in &t.sessions {
            let st = SessionStatus::parse(&s.status)
                .filter(|s| s.is_terminal())
                .ok_or_else(|| bad("session status", &s.status))?;
            *outcomes.flows.sessions.entry(st).or_default() += s.sessions;
        }
        let flows = &mut outcomes.flows;
        let windows = [
            (&mut flows.workflow_ids, &t.workflow_ids),
            (&mut flows.session_ids, &t.session_ids),
            (&mut flows.costed, &t.costed_ids),
        ];
        for (window, saved) in windows {
            for h in saved {
                window.insert_hash(*h);
            }
        }
        Ok(())
    }
}
