//! How long tasks take: a part of the outcomes, counted with them.
//!
//! - A task's **duration** is from its `createdAt` to its terminal record, observed
//!   once per task (with the outcome it is counted with) in
//!   `runway_task_duration_seconds{model,status}`.
//! - Its **queue time** is from `createdAt` to its first `RUNNING` record (the time it
//!   waited as `PENDING` or `THROTTLED` for a concurrency slot), observed once per task id
//!   in `runway_task_queue_seconds{model}`; the ids already observed are remembered in a
//!   window of their own, as large as the dedupe window and committed with it.
//!
//! A record's time is its own timestamp when it has one, else the time it was *seen*:
//! the time a live line was read, or the time the API answered (see the sources). A
//! task whose times cannot be trusted is not observed but counted, by measure and
//! [`Untimed`] reason.

use rustc_hash::FxHashMap;

use super::DedupeWindow;
use crate::record::{RawTime, Status, TaskRecord};

/// Bucket bounds of task durations, in seconds: a video takes from seconds to an hour.
pub const DURATION_BUCKETS: [f64; 19] = [
    5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0, 900.0,
    1200.0, 1800.0, 2700.0, 3600.0,
];
/// Bucket bounds of queue times, in seconds: none at all to an hour at a busy limit.
pub const QUEUE_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Longest duration or queue time observed: a task that took longer than a day is a
/// wrong time, not a slow task.
pub const MAX_SECONDS: f64 = 86_400.0;
/// How far a `createdAt` may be ahead of this host's clock (the two clocks differ).
pub const CLOCK_SKEW: f64 = 60.0;

/// Why a task was not timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Untimed {
    /// No `createdAt`, or one that is not a time with an offset.
    NoStart,
    /// The record has no time of its own and was not seen live (a backlog, a `scan`).
    NoEnd,
    /// `createdAt` is later than now (by more than [`CLOCK_SKEW`]).
    FutureStart,
    /// The record's time is before `createdAt`.
    EndBeforeStart,
    /// More than [`MAX_SECONDS`].
    TooLong,
    /// A `RUNNING` record without a task id: there is no telling its task's first.
    NoId,
    /// A task deleted at an unknown time: the API answered 404 for it after it was seen
    /// waiting or running.
    Deleted,
}

crate::labels::label_enum!(Untimed {
    NoStart => "no_start",
    NoEnd => "no_end",
    FutureStart => "future_start",
    EndBeforeStart => "end_before_start",
    TooLong => "too_long",
    NoId => "no_id",
    Deleted => "deleted",
});

/// What is timed: the `measure` label of the untimed counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    Duration,
    Queue,
}

crate::labels::label_enum!(Measure {
    Duration => "duration",
    Queue => "queue",
});

/// One histogram's counts: per bucket, not cumulative, the last for `+Inf`; and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub(super) fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            buckets: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub(super) fn observe(&mut self, bounds: &[f64], seconds: f64) {
        let i = bounds.partition_point(|b| *b < seconds);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.sum += seconds;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// Whether a saved histogram has the shape of `bounds` and a possible sum.
    fn fits(&self, bounds: &[f64]) -> bool {
        self.buckets.len() == bounds.len() + 1
            && self.sum.is_finite()
            && self.sum >= 0.0
            && self.sum <= MAX_SECONDS * self.count() as f64
    }

    /// Whether a saved histogram has the shape of `bounds` and a finite, positive sum
    /// (for measures other than task times, which [`Histogram::fits`] also bounds).
    pub(super) fn fits_shape(&self, bounds: &[f64]) -> bool {
        self.buckets.len() == bounds.len() + 1 && self.sum.is_finite() && self.sum >= 0.0
    }

    pub(super) fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
        self.sum += other.sum;
    }
}

/// Seconds from a task's creation to `end`, when both can be trusted.
pub fn interval(created: Option<&RawTime<'_>>, end: Option<f64>, now: f64) -> Result<f64, Untimed> {
    let end = end.ok_or(Untimed::NoEnd)?;
    let start = created.and_then(RawTime::unix).ok_or(Untimed::NoStart)?;
    if start > now + CLOCK_SKEW {
        return Err(Untimed::FutureStart);
    }
    let seconds = end - start;
    if seconds < 0.0 {
        Err(Untimed::EndBeforeStart)
    } else if seconds > MAX_SECONDS {
        Err(Untimed::TooLong)
    } else {
        Ok(seconds)
    }
}

/// Durations and queue times by interned model id, and what could not be timed.
#[derive(Debug)]
pub(super) struct Timings {
    durations: FxHashMap<(Status, u32), Histogram>,
    queues: FxHashMap<u32, Histogram>,
    /// By [`Measure::index`] and [`Untimed::index`].
    untimed: [[u64; Untimed::ALL.len()]; Measure::ALL.len()],
    /// Ids whose first `RUNNING` record was seen.
    started: DedupeWindow,
}

/// A timed series, with its model's label value.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationSeries {
    pub status: String,
    pub model: String,
    pub histogram: Histogram,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSeries {
    pub model: String,
    pub histogram: Histogram,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UntimedSeries {
    pub measure: String,
    pub reason: String,
    pub tasks: u64,
}

impl Timings {
    pub(super) fn new(window: usize) -> Timings {
        Timings {
            durations: FxHashMap::default(),
            queues: FxHashMap::default(),
            untimed: Default::default(),
            started: DedupeWindow::new(window),
        }
    }

    /// Times a counted terminal record that ended at `end`.
    pub(super) fn ended(
        &mut self,
        record: &TaskRecord<'_>,
        model: u32,
        end: Option<f64>,
        now: f64,
    ) {
        match interval(record.created_at.as_ref(), end, now) {
            Ok(s) => self
                .durations
                .entry((record.status, model))
                .or_insert_with(|| Histogram::new(&DURATION_BUCKETS))
                .observe(&DURATION_BUCKETS, s),
            Err(reason) => self.untimed(Measure::Duration, reason),
        }
    }

    /// Whether a `RUNNING` record of task `id` is its first.
    pub(super) fn first_run(&mut self, id: &str) -> bool {
        self.started.insert(id)
    }

    /// A task not timed for `reason`.
    pub(super) fn untimed(&mut self, measure: Measure, reason: Untimed) {
        let n = &mut self.untimed[measure.index()][reason.index()];
        *n = n.saturating_add(1);
    }

    /// Times the first `RUNNING` record of a task, seen at `start`.
    pub(super) fn started(
        &mut self,
        record: &TaskRecord<'_>,
        model: u32,
        start: Option<f64>,
        now: f64,
    ) {
        match interval(record.created_at.as_ref(), start, now) {
            Ok(s) => self
                .queues
                .entry(model)
                .or_insert_with(|| Histogram::new(&QUEUE_BUCKETS))
                .observe(&QUEUE_BUCKETS, s),
            Err(reason) => self.untimed(Measure::Queue, reason),
        }
    }

    pub(super) fn started_ids(&self) -> &DedupeWindow {
        &self.started
    }

    pub(super) fn set_window(&mut self, window: usize) {
        self.started.set_capacity(window);
    }

    /// The duration series, sorted, with the models named by `model`.
    pub(super) fn durations(&self, model: impl Fn(u32) -> String) -> Vec<DurationSeries> {
        let mut durations: Vec<DurationSeries> = self
            .durations
            .iter()
            .map(|((s, m), h)| DurationSeries {
                status: s.as_str().into(),
                model: model(*m),
                histogram: h.clone(),
            })
            .collect();
        durations.sort_by(|a, b| (&a.status, &a.model).cmp(&(&b.status, &b.model)));
        durations
    }

    /// The queue series, sorted, with the models named by `model`.
    pub(super) fn queues(&self, model: impl Fn(u32) -> String) -> Vec<QueueSeries> {
        let mut queues: Vec<QueueSeries> = self
            .queues
            .iter()
            .map(|(m, h)| QueueSeries {
                model: model(*m),
                histogram: h.clone(),
            })
            .collect();
        queues.sort_by(|a, b| a.model.cmp(&b.model));
        queues
    }

    /// The untimed counts that are not 0, sorted.
    pub(super) fn untimed_series(&self) -> Vec<UntimedSeries> {
        let mut untimed = Vec::new();
        for m in Measure::ALL {
            for r in Untimed::ALL {
                let tasks = self.untimed[m.index()][r.index()];
                if tasks > 0 {
                    untimed.push(UntimedSeries {
                        measure: m.as_str().into(),
                        reason: r.as_str().into(),
                        tasks,
                    });
                }
            }
        }
        untimed.sort();
        untimed
    }

    /// Adds saved series (models interned by `model`); an error names what does not fit.
    pub(super) fn restore(
        &mut self,
        durations: &[DurationSeries],
        queues: &[QueueSeries],
        untimed: &[UntimedSeries],
        mut model: impl FnMut(&str) -> u32,
    ) -> Result<(), String> {
        for s in durations {
            let status = Status::read(&s.status)
                .filter(|s| s.is_terminal())
                .ok_or_else(|| format!("duration status {:?}", s.status))?;
            if !s.histogram.fits(&DURATION_BUCKETS) {
                return Err(format!("duration histogram of {:?}", s.model));
            }
            self.durations
                .entry((status, model(&s.model)))
                .or_insert_with(|| Histogram::new(&DURATION_BUCKETS))
                .add(&s.histogram);
        }
        for s in queues {
            if !s.histogram.fits(&QUEUE_BUCKETS) {
                return Err(format!("queue histogram of {:?}", s.model));
            }
            self.queues
                .entry(model(&s.model))
                .or_insert_with(|| Histogram::new(&QUEUE_BUCKETS))
                .add(&s.histogram);
        }
        for s in untimed {
            let (m, r) = Measure::parse(&s.measure)
                .zip(Untimed::parse(&s.reason))
                .ok_or_else(|| format!("untimed {:?} {:?}", s.measure, s.reason))?;
            let n = &mut self.untimed[m.index()][r.index()];
            *n = n.saturating_add(s.tasks);
        }
        Ok(())
    }

    /// Adds saved started ids, oldest first.
    pub(super) fn restore_started(&mut self, hashes: impl IntoIterator<Item = u64>) {
        for h in hashes {
            self.started.insert_hash(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    const NOW: f64 = 1_730_894_401.0; // 2024-11-06T12:00:01Z

    fn at(text: &str) -> RawTime<'_> {
        RawTime::Text(Cow::Borrowed(text))
    }

    #[test]
    fn intervals_and_why_not() {
        let created = at("2024-11-06T12:00:01Z");
        assert_eq!(
            interval(Some(&created), Some(NOW + 42.5), NOW + 60.0),
            Ok(42.5)
        );
        assert_eq!(interval(Some(&created), Some(NOW), NOW), Ok(0.0));
        assert_eq!(interval(Some(&created), None, NOW), Err(Untimed::NoEnd));
        assert_eq!(interval(None, Some(NOW), NOW), Err(Untimed::NoStart));
        let naive = at("2024-11-06T12:00:01");
        assert_eq!(
            interval(Some(&naive), Some(NOW), NOW),
            Err(Untimed::NoStart)
        );
        let future = at("2024-11-06T12:05:01Z");
        assert_eq!(
            interval(Some(&future), Some(NOW + 400.0), NOW),
            Err(Untimed::FutureStart)
        );
        let skewed = at("2024-11-06T12:00:31Z");
        assert_eq!(interval(Some(&skewed), Some(NOW + 40.0), NOW), Ok(10.0));
        assert_eq!(
            interval(Some(&created), Some(NOW - 1.0), NOW),
            Err(Untimed::EndBeforeStart)
        );
        assert_eq!(
            interval(Some(&created), Some(NOW + 86_401.0), NOW + 1e6),
            Err(Untimed::TooLong)
        );
        for hostile in [
            RawTime::Number(f64::NAN),
            RawTime::Number(1e308),
            RawTime::Number(-5.0),
        ] {
            assert_eq!(
                interval(Some(&hostile), Some(NOW), NOW),
                Err(Untimed::NoStart)
            );
        }
    }

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket() {
        let mut h = Histogram::new(&QUEUE_BUCKETS);
        for s in [0.0, 1.0, 1.5, 3600.0, 3600.5] {
            h.observe(&QUEUE_BUCKETS, s);
        }
        // le=1 holds 0 and 1 (bounds are inclusive), le=2 holds 1.5, +Inf holds 3600.5.
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[QUEUE_BUCKETS.len() - 1], 1);
        assert_eq!(h.buckets[QUEUE_BUCKETS.len()], 1);
        assert_eq!((h.count(), h.sum), (5, 7203.0));
        assert!(h.fits(&QUEUE_BUCKETS));
        assert!(!h.fits(&DURATION_BUCKETS));
        for sum in [f64::NAN, -1.0, f64::INFINITY, 1e12] {
            assert!(
                !Histogram { sum, ..h.clone() }.fits(&QUEUE_BUCKETS),
                "{sum}"
            );
        }
    }
}
