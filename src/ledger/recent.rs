//! Recent failures, for a person paged at night: per failure code, the last
//! [`RECENT_TASKS`] failed tasks (id, model, time) and how many failed in each of the
//! last 60 minutes and 24 hours. A part of the outcomes, counted with them (once per
//! task) and committed with them, so the status page survives a restart.
//!
//! A failure's time is its record's (see `timing`); a backlog record without one has
//! none: it is listed, but counted in no window (it may be from any time). A failure
//! older than a day is listed but in no window either.
//!
//! The windows are slots of the steady clock (see `clock`): a failure's time is moved
//! onto it when counted, and the windows end at its now, so a failure stays in them for
//! an hour and a day of elapsed time whatever a step of the wall clock does meanwhile
//! (back: it is not "in the future" and dropped; forward: it does not age by the step).
//! The listed times stay the records' own. What is saved and shown has the slots moved
//! onto the wall clock, by the step the ledger last noted (each commit notes a step of a
//! second or more, see `Ledger::note_clock`), and a restart moves them back onto its own
//! steady clock: the windows survive a restart after a step. Only a step between the
//! last commit and a restart moves them (a slot then ahead of the clock is dropped).
//!
//! An id that is not a plausible task id (more than [`MAX_ID_BYTES`], or not printable
//! ASCII) is kept as `invalid`: whatever a log holds, the page shows only short,
//! printable values.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::classify::{Category, CreditRule, Retry};
use crate::clock::Now;

/// Failed tasks remembered per failure code.
pub const RECENT_TASKS: usize = 10;
/// Longest task id kept (Runway's are 36-character UUIDs).
pub const MAX_ID_BYTES: usize = 64;
const MINUTES: usize = 60;
const HOURS: usize = 24;

/// One failed task, as the status page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedTask {
    pub id: String,
    pub model: String,
    /// Unix seconds; `None` when the record did not say and it was not read live.
    pub at: Option<f64>,
}

/// What the failure-code table says about a code, as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeClass {
    pub category: Category,
    pub retry: Retry,
    pub credits: CreditRule,
}

/// Failures in one minute (or hour): `slot` is minutes (or hours) since 1970.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub slot: u64,
    pub tasks: u64,
}

/// What is remembered of one failure code: its last tasks, oldest first, and its
/// failures by minute and by hour (only the slots that hold any).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentFailures {
    pub failure_code: String,
    /// What the failure-code table in use says about the code (saved, but not
    /// restored: the table in use says it again).
    pub class: Option<CodeClass>,
    pub tasks: Vec<FailedTask>,
    pub minutes: Vec<Slot>,
    pub hours: Vec<Slot>,
    /// Seconds the wall clock was ahead of the steady clock when the slots were
    /// written: they are of the wall clock then, and the windows end at the steady
    /// clock's now moved by as much (not restored: the slots are moved instead).
    pub clock_step: i64,
}

impl RecentFailures {
    /// Failures in the 60 minutes up to `now` (this minute and the 59 before).
    pub fn last_hour(&self, now: Now) -> u64 {
        let minute = shift(slot_of(now.steady, 60.0), self.clock_step, 60);
        within(&self.minutes, minute, MINUTES)
    }

    /// Failures in the 24 hours up to `now` (this hour and the 23 before).
    pub fn last_day(&self, now: Now) -> u64 {
        let hour = shift(slot_of(now.steady, 3600.0), self.clock_step, 3600);
        within(&self.hours, hour, HOURS)
    }
}

/// `slot` (of `width` seconds) moved by `step` seconds, to the nearest slot.
fn shift(slot: u64, step: i64, width: i64) -> u64 {
    let by = (step as f64 / width as f64).round() as i64;
    slot.saturating_add_signed(by)
}

fn slot_of(at: f64, width: f64) -> u64 {
    (at.max(0.0) / width) as u64
}

fn within(slots: &[Slot], current: u64, span: usize) -> u64 {
    let first = current.saturating_sub(span as u64 - 1);
    slots
        .iter()
        .filter(|s| (first..=current).contains(&s.slot))
        .fold(0, |a, s| a.saturating_add(s.tasks))
}

/// A ring of `N` slots, each holding the count of the slot it was last used for.
#[derive(Debug, Clone)]
struct Ring<const N: usize>([Slot; N]);

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Ring([Slot::default(); N])
    }
}

impl<const N: usize> Ring<N> {
    /// Adds to `slot`, unless its place holds a newer slot: an old failure never wipes
    /// out the counts of a newer one.
    fn add(&mut self, slot: u64, tasks: u64) {
        let s = &mut self.0[(slot % N as u64) as usize];
        if slot > s.slot {
            *s = Slot { slot, tasks: 0 };
        }
        if slot == s.slot {
            s.tasks = s.tasks.saturating_add(tasks);
        }
    }

    fn used(&self) -> Vec<Slot> {
        let mut used: Vec<Slot> = self.0.iter().copied().filter(|s| s.tasks > 0).collect();
        used.sort_by_key(|s| s.slot);
        used
    }
}

#[derive(Debug, Default, Clone)]
struct Code {
    tasks: VecDeque<FailedTask>,
    minutes: Ring<MINUTES>,
    hours: Ring<HOURS>,
}

impl Code {
    fn add(&mut self, id: &str, model: &str, at: Option<f64>) {
        // The oldest entry's strings are reused: no allocation once the ring is full.
        let mut task = if self.tasks.len() == RECENT_TASKS {
            self.tasks.pop_front().unwrap_or_else(empty)
        } else {
            empty()
        };
        task.id.clear();
        task.id.push_str(id);
        task.model.clear();
        task.model.push_str(model);
        task.at = at;
        self.tasks.push_back(task);
    }

    fn count(&mut self, at: f64, tasks: u64) {
        self.minutes.add(slot_of(at, 60.0), tasks);
        self.hours.add(slot_of(at, 3600.0), tasks);
    }
}

/// `slots` moved by `step` seconds.
fn moved(mut slots: Vec<Slot>, step: i64, width: i64) -> Vec<Slot> {
    for s in &mut slots {
        s.slot = shift(s.slot, step, width);
    }
    slots
}

fn empty() -> FailedTask {
    FailedTask {
        id: String::new(),
        model: String::new(),
        at: None,
    }
}

/// An id as the page may show it.
fn shown_id(id: Option<&str>) -> &str {
    match id {
        None => "",
        Some(id) if id.len() <= MAX_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic()) => id,
        Some(_) => "invalid",
    }
}

/// The recent failures of every code, by interned code id. The rings count on the
/// steady clock; `step` is how far the wall clock was ahead of it when last noted, so
/// that what is saved and shown is of the wall clock (see [`RecentFailures`]).
#[derive(Debug, Default)]
pub(super) struct Recent {
    codes: FxHashMap<u32, Code>,
    step: i64,
}

impl Recent {
    /// A counted FAILED task of `code` (its model already a label value), at `at` (a
    /// plausible wall-clock time, see `Seen::of`), counted at `now`: listed at `at`,
    /// counted in the slots of `at` moved onto the steady clock.
    pub(super) fn failed(
        &mut self,
        code: u32,
        id: Option<&str>,
        model: &str,
        at: Option<f64>,
        now: Now,
    ) {
        let at = at.filter(|t| t.is_finite());
        let c = self.codes.entry(code).or_default();
        c.add(shown_id(id), model, at);
        let window = now.steady - 86_400.0..=now.steady + super::CLOCK_SKEW;
        if let Some(at) = at.map(|t| now.steady_of(t)).filter(|t| window.contains(t)) {
            c.count(at, 1);
        }
    }

    /// Every code's, sorted by code, named and classified by `label`.
    pub(super) fn totals(&self, label: impl Fn(u32) -> (String, CodeClass)) -> Vec<RecentFailures> {
        let mut all: Vec<RecentFailures> = self
            .codes
            .iter()
            .map(|(code, c)| RecentFailures {
                failure_code: label(*code).0,
                class: Some(label(*code).1),
                tasks: c.tasks.iter().cloned().collect(),
                minutes: moved(c.minutes.used(), self.step, 60),
                hours: moved(c.hours.used(), self.step, 3600),
                clock_step: self.step,
            })
            .collect();
        all.sort_by(|a, b| a.failure_code.cmp(&b.failure_code));
        all
    }

    /// Whether the wall clock is a second or more away from where [`Self::step`] has
    /// it at `now` (it was stepped since): then [`Self::set_step`] should note it.
    pub(super) fn stepped(&self, now: Now) -> bool {
        (now.wall - now.steady - self.step as f64).abs() >= 1.0
    }

    /// Notes how far the wall clock is from the steady clock at `now`.
    pub(super) fn set_step(&mut self, now: Now) {
        self.step = (now.wall - now.steady).round() as i64;
    }

    /// Adds what was saved, codes interned by `code`; keeps what fits the bounds of a
    /// live one (the last tasks, the slots) and never more. The saved slots are of the
    /// wall clock, moved onto the steady clock here. A slot later than now (a clock set
    /// back while stopped, or a file made up) is dropped: it would hold its place
    /// forever. Codes `code` does not know are left out.
    pub(super) fn restore(
        &mut self,
        saved: &[RecentFailures],
        code: impl Fn(&str) -> Option<u32>,
        now: Now,
    ) {
        self.set_step(now);
        let (minute, hour) = (slot_of(now.wall, 60.0), slot_of(now.wall, 3600.0));
        for r in saved {
            let Some(id) = code(&r.failure_code) else {
                continue;
            };
            let c = self.codes.entry(id).or_default();
            let from = r.tasks.len().saturating_sub(RECENT_TASKS);
            for t in &r.tasks[from..] {
                let at = t.at.filter(|t| t.is_finite());
                let model = crate::labels::model_label(Some(&t.model));
                c.add(shown_id(Some(&t.id)), model, at);
            }
            for s in r.minutes.iter().filter(|s| s.slot <= minute) {
                c.minutes.add(shift(s.slot, -self.step, 60), s.tasks);
            }
            for s in r.hours.iter().filter(|s| s.slot <= hour) {
                c.hours.add(shift(s.slot, -self.step, 3600), s.tasks);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_730_894_400.0; // 2024-11-06T12:00:00Z, on an hour
    const CLASS: CodeClass = CodeClass {
        category: Category::Unknown,
        retry: Retry::Unknown,
        credits: CreditRule::Unknown,
    };

    #[test]
    fn the_last_tasks_and_the_counts_of_the_last_hour_and_day() {
        let mut r = Recent::default();
        for i in 0..25u32 {
            // One failure every 5 minutes, the newest now.
            let at = NOW - 300.0 * f64::from(24 - i);
            r.failed(
                7,
                Some(&format!("t{i}")),
                "gen4_turbo",
                Some(at),
                Now::at(NOW),
            );
        }
        r.failed(7, Some(&"x".repeat(65)), "m", Some(NOW), Now::at(NOW));
        r.failed(7, Some("with space"), "m", Some(NOW), Now::at(NOW));
        r.failed(7, None, "m", Some(f64::NAN), Now::at(NOW));
        // Times that would wipe out or block the counts: far past, far future, none.
        r.failed(7, Some("old"), "m", Some(0.0), Now::at(NOW));
        r.failed(7, Some("future"), "m", Some(1e12), Now::at(NOW));
        r.failed(7, Some("backlog"), "m", None, Now::at(NOW));
        let all = r.totals(|c| (format!("code{c}"), CLASS));
        assert_eq!(all.len(), 1);
        let c = &all[0];
        assert_eq!(c.failure_code, "code7");
        let ids: Vec<&str> = c.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            ["t21", "t22", "t23", "t24", "invalid", "invalid", "", "old", "future", "backlog"]
        );
        assert_eq!((c.tasks[6].at, c.tasks[9].at), (None, None));
        // Within the hour: the 12 at NOW-55min..NOW, and the two at NOW; those without
        // a time, too old or ahead of the clock are in no window.
        assert_eq!(c.last_hour(Now::at(NOW)), 14);
        // The hour buckets: 2 hours (11:00-11:59 and 12:00): the 25 and the two.
        assert_eq!(c.last_day(Now::at(NOW)), 27);
        assert_eq!(c.last_hour(Now::at(NOW + 3600.0)), 0);
        assert_eq!(c.last_day(Now::at(NOW + 86_400.0 * 2.0)), 0);
    }

    #[test]
    fn a_step_of_the_wall_clock_neither_empties_nor_fills_the_windows() {
        let mut r = Recent::default();
        // Three failures read live at NOW, then the wall clock is stepped back an hour
        // (the steady clock goes on): two more, read 30 s later, at the new wall time.
        for i in 0..3 {
            r.failed(1, Some(&format!("a{i}")), "m", Some(NOW), Now::at(NOW));
        }
        let back = Now {
            wall: NOW + 30.0 - 3600.0,
            steady: NOW + 30.0,
        };
        for i in 0..2 {
            r.failed(1, Some(&format!("b{i}")), "m", Some(back.wall), back);
        }
        let c = &r.totals(|_| ("C".into(), CLASS))[0];
        assert_eq!((c.last_hour(back), c.last_day(back)), (5, 5));
        // The tasks keep their own (wall-clock) times.
        assert_eq!(c.tasks[4].at, Some(back.wall));
        // Stepped forward a day: the five are still of the last hour, and leave it an
        // hour after they were counted, not at the step.
        let ahead = Now {
            wall: NOW + 60.0 + 86_400.0,
            steady: NOW + 60.0,
        };
        r.failed(1, Some("c"), "m", Some(ahead.wall), ahead);
        let c = &r.totals(|_| ("C".into(), CLASS))[0];
        assert_eq!(c.last_hour(ahead), 6);
        let later = Now {
            wall: NOW + 3600.0 + 120.0 + 86_400.0,
            steady: NOW + 3600.0 + 120.0,
        };
        assert_eq!((c.last_hour(later), c.last_day(later)), (0, 6));
        // Saved at that step (noted), the slots are of the wall clock, and a restart
        // (the steady clock starts again from the wall clock) finds them all.
        assert!(r.stepped(later));
        r.set_step(later);
        assert!(!r.stepped(later));
        let saved = r.totals(|_| ("C".into(), CLASS));
        assert_eq!(saved[0].clock_step, 86_400);
        assert_eq!(
            (saved[0].last_hour(later), saved[0].last_day(later)),
            (0, 6)
        );
        let (restart, mut back) = (Now::at(ahead.wall + 60.0), Recent::default());
        back.restore(&saved, |_| Some(1), restart);
        let c = &back.totals(|_| ("C".into(), CLASS))[0];
        assert_eq!((c.last_hour(restart), c.last_day(restart)), (6, 6));
    }

    #[test]
    fn a_restore_gives_back_what_was_saved_within_the_bounds() {
        let mut r = Recent::default();
        for i in 0..12 {
            r.failed(
                1,
                Some(&format!("a{i}")),
                "m",
                Some(NOW + f64::from(i)),
                Now::at(NOW + 60.0),
            );
        }
        let saved = r.totals(|_| ("SAFETY.INPUT.TEXT".into(), CLASS));
        let mut back = Recent::default();
        back.restore(&saved, |_| Some(1), Now::read());
        assert_eq!(back.totals(|_| ("SAFETY.INPUT.TEXT".into(), CLASS)), saved);
        // A hostile saved entry: too many tasks, bad ids and models, absurd times.
        let hostile = RecentFailures {
            failure_code: "X".into(),
            class: None,
            tasks: (0..1000)
                .map(|i| FailedTask {
                    id: format!("<script>{i}"),
                    model: "a b c".into(),
                    at: Some(f64::INFINITY),
                })
                .collect(),
            minutes: vec![
                Slot {
                    slot: u64::MAX,
                    tasks: 5
                };
                500
            ],
            hours: vec![],
            clock_step: i64::MIN,
        };
        let mut r = Recent::default();
        r.restore(&[hostile], |_| Some(2), Now::read());
        let t = r.totals(|_| ("X".into(), CLASS));
        assert_eq!(t[0].tasks.len(), RECENT_TASKS);
        assert_eq!(
            t[0].tasks.last().unwrap().id,
            "<script>999",
            "escaped when shown"
        );
        assert!(t[0]
            .tasks
            .iter()
            .all(|t| t.model == "invalid" && t.at.is_none()));
        assert!(t[0].minutes.is_empty(), "a slot in the future is dropped");
    }
}
