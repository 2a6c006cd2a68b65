//! The exporter's own counters: what each source read and what became of it, and the
//! dead-letter file's entries.

use super::{DeadLetters, LineResult, SourceId, SourceTotals};
use crate::record::ParseError;

#[derive(Debug, Default)]
pub struct OwnCounters {
    sources: Vec<SourceTotals>,
    dead_letter: DeadLetters,
}

impl OwnCounters {
    pub fn sources(&self) -> &[SourceTotals] {
        &self.sources
    }

    pub fn source(&self, id: SourceId) -> &SourceTotals {
        &self.sources[id.0]
    }

    pub fn dead_letter(&self) -> DeadLetters {
        self.dead_letter
    }

    /// The source of that name, registered if new (its totals at 0, `up` false).
    pub(super) fn add_source(&mut self, name: &str) -> SourceId {
        if let Some(i) = self.sources.iter().position(|s| s.name == name) {
            return SourceId(i);
        }
        self.sources.push(SourceTotals {
            name: name.to_string(),
            ..Default::default()
        });
        SourceId(self.sources.len() - 1)
    }

    /// What became of one line or task id.
    pub(super) fn result(&mut self, id: SourceId, result: LineResult) {
        self.sources[id.0].results[result.index()] += 1;
    }

    /// A line rejected for `error`.
    pub(super) fn reject(&mut self, id: SourceId, error: ParseError) -> LineResult {
        self.sources[id.0].parse_errors[error.index()] += 1;
        let result = LineResult::Rejected(error);
        self.result(id, result);
        result
    }

    /// A block of `bytes` read, holding `records` records, at `now`.
    pub fn read(&mut self, id: SourceId, bytes: u64, records: u64, now: f64) {
        let s = &mut self.sources[id.0];
        s.read_bytes += bytes;
        if records > 0 {
            s.last_record_unix = now;
        }
    }

    pub fn rotated(&mut self, id: SourceId) {
        self.sources[id.0].rotations += 1;
    }

    pub fn truncated(&mut self, id: SourceId) {
        self.sources[id.0].truncations += 1;
    }

    pub fn files_refused(&mut self, id: SourceId, files: u64) {
        self.sources[id.0].file_limit_hits += files;
    }

    pub(super) fn set_files_tracked(&mut self, id: SourceId, files: u64) {
        self.sources[id.0].files_tracked = files;
    }

    pub(super) fn set_up(&mut self, id: SourceId, up: bool) {
        self.sources[id.0].up = up;
    }

    pub fn dead_letters(&mut self, written: u64, failed: u64) {
        self.dead_letter.written += written;
        self.dead_letter.failed += failed;
    }

    /// No "last record time" (a one-shot `scan`: its output stays the same).
    pub fn forget_last_records(&mut self) {
        self.sources
            .iter_mut()
            .for_each(|s| s.last_record_unix = 0.0);
    }

    /// Adds saved counters (the gauges of a running process are not restored).
    pub(super) fn restore(&mut self, saved: &[SourceTotals], dead_letter: &DeadLetters) {
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        for saved in saved {
            let id = self.add_source(&saved.name);
            let s = &mut self.sources[id.0];
            add(&mut s.results, &saved.results);
            add(&mut s.parse_errors, &saved.parse_errors);
            s.read_bytes += saved.read_bytes;
            s.rotations += saved.rotations;
            s.truncations += saved.truncations;
            s.file_limit_hits += saved.file_limit_hits;
        }
        self.dead_letter.add(dead_letter);
    }
}
