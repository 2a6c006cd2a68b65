//! The API source's book: the tasks it polls, its requests by answer, and what the
//! organization endpoints said last. Changed only through [`super::Ledger`]'s methods.

use std::collections::BTreeMap;

use super::{ApiTask, Organization, Reached, Usage};

#[derive(Debug, Default)]
pub struct ApiBook {
    /// Tasks polled until they end, by id.
    tasks: BTreeMap<String, ApiTask>,
    /// Requests by `(endpoint, code)`.
    requests: BTreeMap<(String, String), u64>,
    organization: Option<Organization>,
    usage: Option<Usage>,
}

impl ApiBook {
    /// The polled tasks, by id.
    pub fn tasks(&self) -> impl Iterator<Item = &ApiTask> {
        self.tasks.values()
    }

    pub fn task(&self, id: &str) -> Option<&ApiTask> {
        self.tasks.get(id)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Requests by `(endpoint, code)`.
    pub fn requests(&self) -> impl Iterator<Item = (&(String, String), &u64)> {
        self.requests.iter()
    }

    pub fn organization(&self) -> Option<&Organization> {
        self.organization.as_ref()
    }

    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The estimated costs of the tasks being polled, summed.
    pub fn in_flight(&self) -> f64 {
        self.tasks
            .values()
            .filter_map(|t| t.estimated_cost)
            .fold(0.0, |a, b| a + b)
    }

    pub(super) fn insert(&mut self, task: ApiTask) {
        self.tasks.insert(task.id.clone(), task);
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<ApiTask> {
        self.tasks.remove(id)
    }

    pub(super) fn set_estimate(&mut self, id: &str, estimate: Option<f64>) {
        if let Some(task) = self.tasks.get_mut(id) {
            task.estimated_cost = estimate;
        }
    }

    pub(super) fn set_progress(
        &mut self,
        id: &str,
        reached: Option<Reached>,
        created_at: Option<f64>,
    ) {
        if let Some(task) = self.tasks.get_mut(id) {
            task.reached = reached;
            task.created_at = created_at;
        }
    }

    pub(super) fn count_requests(&mut self, endpoint: &str, code: &str, n: u64) {
        *self
            .requests
            .entry((endpoint.to_string(), code.to_string()))
            .or_default() += n;
    }

    pub(super) fn set_organization(&mut self, org: Option<Organization>) {
        self.organization = org;
    }

    pub(super) fn set_usage(&mut self, usage: Option<Usage>) {
        self.usage = usage;
    }
}
