//! Runway's own estimates of tasks not yet counted: the last `estimatedCost.credits`
//! seen for each task id (in a non-terminal record, a task-list line, a create answer),
//! kept until the task's terminal record is counted, so that a task whose terminal
//! record has no `cost` is charged Runway's figure before the pricing table's.
//!
//! Bounded: at most [`MAX_ESTIMATES`] ids, each by its 64-bit xxh3 hash (the dedupe
//! window's, so an id's length costs nothing), about 60 bytes an id held (a hash map
//! entry and an entry of the eviction order), so under 1 MiB when full. When full, the
//! id first seen longest ago is *evicted* (counted): its task, if it ever ends without a
//! cost, falls back to the pricing table. A task's estimate leaves when its terminal
//! record is counted (or found a duplicate), so in a healthy stream only the tasks
//! still running are held. Committed with the state (see [`SavedEstimates`]).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

/// Most task ids held. Runway runs at most a tier's concurrency limit of tasks per
/// model at once (tens to hundreds); this leaves room for hours of tasks whose terminal
/// record never reaches this exporter (another host's log, a crash).
pub const MAX_ESTIMATES: usize = 16_384;

/// The estimates held, by id hash, oldest first for eviction.
#[derive(Debug)]
pub struct Estimates {
    capacity: usize,
    /// Id hash to `(place in the eviction order, credits)`.
    by_id: FxHashMap<u64, (u64, f64)>,
    /// Place to id hash: the first is the next to go.
    order: BTreeMap<u64, u64>,
    next: u64,
    evicted: u64,
}

/// The estimates as committed: `held` oldest first, and the evictions so far. Absent in
/// a state file written before estimates were kept: none held, none evicted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedEstimates {
    pub held: Vec<SavedEstimate>,
    pub evicted: u64,
}

/// One held estimate: the task id's hash and its credits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavedEstimate {
    pub id: u64,
    pub credits: f64,
}

impl Default for Estimates {
    fn default() -> Self {
        Estimates::new(MAX_ESTIMATES)
    }
}

impl Estimates {
    pub fn new(capacity: usize) -> Estimates {
        Estimates {
            capacity: capacity.max(1),
            by_id: FxHashMap::default(),
            order: BTreeMap::new(),
            next: 0,
            evicted: 0,
        }
    }

    /// The estimate held for an id hash.
    pub fn get(&self, id: u64) -> Option<f64> {
        self.by_id.get(&id).map(|&(_, credits)| credits)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Ids evicted to make room, ever.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Holds `credits` as the id's last estimate; a new id keeps its place in the
    /// eviction order when its estimate changes, and evicts the oldest when full.
    pub fn insert(&mut self, id: u64, credits: f64) {
        if let Some(held) = self.by_id.get_mut(&id) {
            held.1 = credits;
            return;
        }
        if self.by_id.len() >= self.capacity {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.by_id.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.by_id.insert(id, (self.next, credits));
        self.order.insert(self.next, id);
        self.next += 1;
    }

    /// The estimate held for an id, no longer held.
    pub fn take(&mut self, id: u64) -> Option<f64> {
        let (place, credits) = self.by_id.remove(&id)?;
        self.order.remove(&place);
        Some(credits)
    }

    pub fn saved(&self) -> SavedEstimates {
        SavedEstimates {
            held: self
                .order
                .values()
                .map(|id| SavedEstimate {
                    id: *id,
                    credits: self.by_id[id].1,
                })
                .collect(),
            evicted: self.evicted,
        }
    }

    /// Adds saved estimates (oldest first) and evictions; an estimate that is not a
    /// number of credits in range is refused. More than fit evict the oldest, counted.
    pub fn restore(&mut self, saved: &SavedEstimates) -> Result<(), String> {
        if let Some(bad) = saved.held.iter().find(|e| !valid(e.credits)) {
            return Err(format!("estimate {}", bad.credits));
        }
        self.evicted += saved.evicted;
        for e in &saved.held {
            self.insert(e.id, e.credits);
        }
        Ok(())
    }
}

/// Whether `credits` is a number of credits Runway could estimate (0 to
/// [`crate::record::MAX_CREDITS`]; NaN is not).
pub fn valid(credits: f64) -> bool {
    (0.0..=crate::record::MAX_CREDITS).contains(&credits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_id_is_evicted_and_counted() {
        let mut e = Estimates::new(3);
        for id in 1..=3 {
            e.insert(id, id as f64);
        }
        // A new estimate for a held id keeps its place: 1 is still the oldest.
        e.insert(1, 10.0);
        assert_eq!(e.get(1), Some(10.0));
        e.insert(4, 4.0);
        assert_eq!((e.len(), e.evicted()), (3, 1));
        assert_eq!((e.get(1), e.get(2), e.get(4)), (None, Some(2.0), Some(4.0)));
        assert_eq!(e.take(2), Some(2.0));
        assert_eq!((e.take(2), e.len()), (None, 2));
        // Taken ids leave no trace in the order: the next two inserts evict one id, 3.
        e.insert(5, 5.0);
        e.insert(6, 6.0);
        assert_eq!((e.len(), e.evicted(), e.get(3)), (3, 2, None));
        assert_eq!(
            (e.get(4), e.get(5), e.get(6)),
            (Some(4.0), Some(5.0), Some(6.0))
        );
    }

    #[test]
    fn saved_estimates_restore_in_order() {
        let mut e = Estimates::new(3);
        for id in [7, 3, 9] {
            e.insert(id, id as f64 / 2.0);
        }
        e.insert(8, 1.0);
        let saved = e.saved();
        assert_eq!(
            saved.held.iter().map(|s| s.id).collect::<Vec<_>>(),
            [3, 9, 8]
        );
        let mut back = Estimates::new(3);
        back.restore(&saved).unwrap();
        assert_eq!(back.saved(), saved);
        // Into a smaller capacity: the oldest go, counted.
        let mut small = Estimates::new(2);
        small.restore(&saved).unwrap();
        assert_eq!((small.get(3), small.evicted()), (None, 2));
        for bad in [f64::NAN, -1.0, 1e308] {
            let mut s = saved.clone();
            s.held[0].credits = bad;
            assert!(Estimates::new(3).restore(&s).is_err(), "{bad}");
        }
    }
}
