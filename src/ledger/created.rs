//! The tasks created through the proxy and not yet seen to end: what each create call
//! said (endpoint, model, Runway's estimate, when), by task id.
//!
//! - *Labels*: a task record without a model (an SDK's task object, a `GET
//!   /v1/tasks/{id}` answer) is counted under the model its create call named.
//! - *Open tasks*: their number is `runway_proxy_tasks_open`; a task leaves when it is
//!   counted (or found a duplicate), deleted, or ends unseen (`not_found`, `expired`).
//! - *Sightings*: when the proxy last saw the application ask for each task (its
//!   create, then each `GET /v1/tasks/{id}`): the API source, following a task, asks
//!   only when the application has stopped asking. Not committed: after a restart
//!   every followed task is asked for once.
//!
//! Bounded: at most [`MAX_CREATED`] tasks; when full, the one created longest ago is
//! *evicted* (counted): it is then counted, if ever, under its record's own model.
//! Committed with the state (see [`SavedCreated`]).

use std::collections::{BTreeMap, HashMap};

/// Most tasks held. Runway runs at most a tier's concurrency limit of tasks per model at
/// once; this leaves room for hours of tasks that the application abandoned and no key
/// lets the exporter follow. About 200 bytes a task: under 4 MiB when full.
pub const MAX_CREATED: usize = 16_384;

/// One task created through the proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreatedTask {
    pub id: String,
    /// The create endpoint's template (`/v1/image_to_video`).
    pub endpoint: String,
    pub model: Option<String>,
    /// Runway's `estimatedCost.credits` in the create answer.
    pub estimate: Option<f64>,
    /// When the create answer came (Unix seconds).
    pub created_at: f64,
}

/// The created tasks as committed: oldest first, and the evictions so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedCreated {
    pub tasks: Vec<CreatedTask>,
    pub evicted: u64,
}

/// The open tasks, by id, oldest first for eviction.
#[derive(Debug)]
pub struct CreatedBook {
    capacity: usize,
    /// Id to `(place in the eviction order, task, last sighting in Unix seconds)`.
    by_id: HashMap<String, (u64, CreatedTask, f64)>,
    /// Place to id: the first is the next to go.
    order: BTreeMap<u64, String>,
    next: u64,
    evicted: u64,
}

impl Default for CreatedBook {
    fn default() -> Self {
        CreatedBook::new(MAX_CREATED)
    }
}

impl CreatedBook {
    pub fn new(capacity: usize) -> CreatedBook {
        CreatedBook {
            capacity: capacity.max(1),
            by_id: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&CreatedTask> {
        self.by_id.get(id).map(|(_, t, _)| t)
    }

    /// When the application last asked for the task (its create, else a `GET`).
    pub fn sighted(&self, id: &str) -> Option<f64> {
        self.by_id.get(id).map(|(_, _, at)| *at)
    }

    /// Holds a new task (a task already held keeps its place and first create), evicting
    /// the oldest when full.
    pub(super) fn insert(&mut self, task: CreatedTask) {
        if self.by_id.contains_key(&task.id) {
            return;
        }
        if self.by_id.len() >= self.capacity {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.by_id.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.order.insert(self.next, task.id.clone());
        let at = task.created_at;
        self.by_id.insert(task.id.clone(), (self.next, task, at));
        self.next += 1;
    }

    /// The application asked for the task at `at`.
    pub(super) fn sight(&mut self, id: &str, at: f64) {
        if let Some(entry) = self.by_id.get_mut(id) {
            entry.2 = entry.2.max(at);
        }
    }

    /// The task, no longer open.
    pub(super) fn remove(&mut self, id: &str) -> Option<CreatedTask> {
        let (place, task, _) = self.by_id.remove(id)?;
        self.order.remove(&place);
        Some(task)
    }

    pub fn saved(&self) -> SavedCreated {
        SavedCreated {
            tasks: self
                .order
                .values()
                .map(|id| self.by_id[id].1.clone())
                .collect(),
            evicted: self.evicted,
        }
    }

    /// Adds saved tasks (oldest first) and evictions.
    pub(super) fn restore(&mut self, saved: &SavedCreated) {
        for t in &saved.tasks {
            self.insert(t.clone());
        }
        self.evicted = self.evicted.saturating_add(saved.evicted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, at: f64) -> CreatedTask {
        CreatedTask {
            id: id.into(),
            endpoint: "/v1/text_to_video".into(),
            model: Some("veo3".into()),
            estimate: Some(40.0),
            created_at: at,
        }
    }

    #[test]
    fn bounded_oldest_evicted_and_counted_and_saved_in_order() {
        let mut b = CreatedBook::new(2);
        b.insert(task("a", 1.0));
        b.insert(task("b", 2.0));
        b.insert(task("a", 9.0));
        assert_eq!(
            b.get("a").unwrap().created_at,
            1.0,
            "the first create stays"
        );
        b.insert(task("c", 3.0));
        assert_eq!((b.len(), b.saved().evicted), (2, 1));
        assert!(b.get("a").is_none());
        b.sight("b", 5.0);
        b.sight("b", 4.0);
        assert_eq!(b.sighted("b"), Some(5.0));
        assert_eq!(b.remove("b").unwrap().id, "b");
        let saved = b.saved();
        assert_eq!(saved.tasks, [task("c", 3.0)]);
        let mut back = CreatedBook::new(2);
        back.restore(&saved);
        assert_eq!(back.saved(), saved);
        assert_eq!(back.sighted("c"), Some(3.0));
    }
}
