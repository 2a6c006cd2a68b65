//! The task list: the file in which the application writes the id of every task it
//! creates (the file source follows it), and the [`Handler`] that turns its lines into
//! tasks the API source polls ([`super::api`]). An id read from it becomes a tracked
//! task in the ledger, committed with the list's position, unless it is another
//! shard's, already counted or tracked, or over `max_tracked`. A line may carry Runway's
//! estimate of the task's cost (a create call's answer, `{"id", "estimatedCost"}`,
//! written as it is): given to [`Ledger::estimate_seen`] unless the task is another
//! shard's.

use crate::clock::unix_now;
use crate::ledger::{ApiTask, Ledger, LineResult, SourceId};
use crate::lines::Line;
use crate::pipeline::Handler;
use crate::record::ParseError;

/// The task list's handler: how its ids are taken.
#[derive(Debug, Clone, Copy)]
pub struct TaskList {
    /// `(index, count)`: this instance polls the ids whose hash is `index` mod `count`.
    pub shard: (u64, u64),
    pub max_tracked: usize,
}

impl Handler for TaskList {
    fn count(
        &self,
        ledger: &mut Ledger,
        source: SourceId,
        lines: &[Line<'_>],
        results: &mut Vec<LineResult>,
        _: Option<f64>,
    ) {
        let now = unix_now();
        for line in lines {
            let entry = match line {
                Line::Complete(l) => parse_task_list_line(l),
                Line::TooLong(_) => Err(ParseError::LineTooLong),
            };
            results.push(match entry {
                Ok(e) => {
                    let task = ApiTask {
                        id: e.id,
                        added_at: now,
                        model: e.model,
                        duration: e.duration,
                        ..ApiTask::default()
                    };
                    let id = task.id.clone();
                    let result = ledger.track_api_task(source, task, self.shard, self.max_tracked);
                    if let (Some(credits), false) =
                        (e.estimated_cost, result == LineResult::OtherShard)
                    {
                        ledger.estimate_seen(&id, credits);
                    }
                    result
                }
                Err(e) => ledger.reject(source, e),
            });
        }
    }
}

/// One line of the task list: a task id, and what the application knows of it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct TaskListEntry {
    pub id: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub duration: Option<f64>,
    /// Runway's estimate (`estimatedCost.credits`, or `estimated_cost.credits`): a
    /// number of credits in range, else none (the id is still taken).
    #[serde(
        default,
        rename = "estimatedCost",
        alias = "estimated_cost",
        deserialize_with = "estimate"
    )]
    pub estimated_cost: Option<f64>,
}

/// `{"credits": <number>}` as its credits when they are a number in range; anything
/// else (a string, `NaN`, negative, past [`crate::record::MAX_CREDITS`], another shape)
/// as none.
fn estimate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    Ok(v.get("credits")
        .and_then(serde_json::Value::as_f64)
        .filter(|c| (0.0..=crate::record::MAX_CREDITS).contains(c)))
}

/// Parses a task-list line: a bare task id, or a JSON object with `id` (and
/// optionally `model`, `duration` and `estimatedCost`). An id is 1 to 128 of `[A-Za-z0-9_-]`, so that
/// it is safe in a URL path ([`crate::runway_api::is_task_id`]).
pub fn parse_task_list_line(line: &[u8]) -> Result<TaskListEntry, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line)
        .map_err(|_| ParseError::InvalidUtf8)?
        .trim();
    if text.is_empty() {
        return Err(ParseError::EmptyLine);
    }
    let entry = if text.starts_with('{') {
        serde_json::from_str::<TaskListEntry>(text).map_err(|_| ParseError::InvalidJson)?
    } else {
        TaskListEntry {
            id: text.to_string(),
            model: None,
            duration: None,
            estimated_cost: None,
        }
    };
    if crate::runway_api::is_task_id(&entry.id) {
        Ok(entry)
    } else {
        Err(ParseError::InvalidTaskId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_list_lines() {
        assert_eq!(
            parse_task_list_line(b"17f20503-6c24-4c16-946b-35dbbce2af2f\r")
                .unwrap()
                .id,
            "17f20503-6c24-4c16-946b-35dbbce2af2f"
        );
        let e =
            parse_task_list_line(br#"{"id":"abc","model":"gen4_turbo","duration":10,"other":1}"#)
                .unwrap();
        assert_eq!(
            (e.id.as_str(), e.model.as_deref(), e.duration),
            ("abc", Some("gen4_turbo"), Some(10.0))
        );
        for (line, err) in [
            (&b""[..], ParseError::EmptyLine),
            (b"  ", ParseError::EmptyLine),
            (b"../etc/passwd", ParseError::InvalidTaskId),
            (b"a b", ParseError::InvalidTaskId),
            (b"{\"id\":\"x/y\"}", ParseError::InvalidTaskId),
            (b"{\"id\":", ParseError::InvalidJson),
            (b"{\"model\":\"m\"}", ParseError::InvalidJson),
            (b"\xff", ParseError::InvalidUtf8),
        ] {
            assert_eq!(
                parse_task_list_line(line),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            parse_task_list_line(&[b'a'; 129]),
            Err(ParseError::InvalidTaskId)
        );
    }
}

#[cfg(test)]
mod estimate_tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::{FieldMap, RecordParser};

    /// A task-list line may carry the create call's answer as it is: its estimate is
    /// the task's until an answer gives another, and prices a terminal answer without a
    /// cost before the pricing table does.
    #[test]
    fn a_task_list_line_may_carry_runways_estimate() {
        let mut l = Ledger::new(
            Arc::new(crate::classify::Table::builtin()),
            Arc::new(crate::pricing::Pricing::builtin()),
            crate::ledger::Limits::default(),
        );
        let api = l.add_source("task_list");
        let handler = TaskList {
            shard: (0, 1),
            max_tracked: 100,
        };
        let lines = [
            r#"{"id":"a","model":"gen4_turbo","duration":10,"estimatedCost":{"credits":35}}"#,
            r#"{"id":"b","model":"gen4_turbo","estimated_cost":{"credits":36}}"#,
            r#"{"id":"c","model":"gen4_turbo","duration":10,"estimatedCost":{"credits":"NaN"}}"#,
            r#"{"id":"d","model":"gen4_turbo","duration":10,"estimatedCost":{"credits":1e308}}"#,
        ];
        let lines: Vec<Line<'_>> = lines.iter().map(|l| Line::Complete(l.as_bytes())).collect();
        let mut results = Vec::new();
        handler.count(&mut l, api, &lines, &mut results, None);
        assert_eq!(results, [LineResult::Tracked; 4]);
        assert_eq!(l.totals().api_credits_in_flight, 71.0);
        let p = RecordParser::new(&FieldMap::default()).unwrap();
        for id in ["a", "b", "c", "d"] {
            // The API source fills the model and duration the list gave.
            let body = format!(
                r#"{{"id":"{id}","status":"SUCCEEDED","model":"gen4_turbo","duration":10}}"#
            );
            let record = p.parse(body.as_bytes()).unwrap();
            l.end_api_task(api, id, Ok(&record), None);
        }
        // c's and d's estimates were not numbers in range: the table's (5 x 10 each).
        let t = l.totals();
        let c = t
            .credits
            .iter()
            .find(|c| c.status == "SUCCEEDED" && c.model == "gen4_turbo")
            .unwrap();
        let by = c.by_origin();
        assert_eq!(
            (c.charged, by.estimated_cost, by.pricing),
            (171.0, 71.0, 100.0)
        );
    }

    #[test]
    fn an_estimate_on_a_task_list_line() {
        let e = parse_task_list_line(br#"{"id":"a","estimatedCost":{"credits":12.5}}"#).unwrap();
        assert_eq!(e.estimated_cost, Some(12.5));
        for v in [r#""12""#, "-1", "1e308", "null", "[1]"] {
            let line = format!(r#"{{"id":"a","estimatedCost":{{"credits":{v}}}}}"#);
            let e = parse_task_list_line(line.as_bytes()).unwrap();
            assert_eq!((e.id.as_str(), e.estimated_cost), ("a", None), "{line}");
        }
        let e = parse_task_list_line(br#"{"id":"a","estimatedCost":7}"#).unwrap();
        assert_eq!(e.estimated_cost, None, "not the create answer's shape");
    }
}
