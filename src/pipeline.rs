//! One path for every source: blocks of bytes -> lines -> records -> the ledger.
//!
//! A source calls [`Pipeline::process`] with each block it reads; the ledger is locked
//! once per block, not per line. Rejected lines are counted in the ledger, logged at
//! most once per reason every [`WARN_EVERY`], and written to the dead-letter file when
//! one is configured. Sources report what happens to their files through
//! [`Pipeline::event`], the one place that both logs and counts it.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::deadletter::DeadLetter;
use crate::ledger::{FileKey, Ledger, LineResult, Position, SourceId, Totals, BATCH};
use crate::lines::{Line, LineSplitter};
use crate::metrics::Metrics;
use crate::record::{ParseError, RecordParser};

/// Without a dead-letter file, rejected lines of one block that are looked at for
/// logging (which is rate-limited anyway); the rest are only counted.
const MAX_LOGGED_PER_BLOCK: usize = 64;

/// How often each kind of rejected line is logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Something that happened to a source's files.
#[derive(Debug, Clone, Copy)]
pub enum SourceEvent<'a> {
    /// A file started being followed, at `offset`.
    Opened { path: &'a Path, offset: u64 },
    /// The file at a followed path was replaced by a new one.
    Rotated { path: &'a Path },
    /// A followed file became shorter than the position read.
    Truncated {
        key: FileKey,
        path: &'a Path,
        size: u64,
        offset: u64,
    },
    /// A followed file is gone and was read to its end.
    Removed { path: &'a Path },
    /// A checkpointed file was found neither by the patterns nor by `rotated`.
    Lost { path: &'a Path, offset: u64 },
    /// Matching files were not followed (`files` more than before, `first` among
    /// them): `max_files` are followed already.
    FileLimit {
        first: &'a Path,
        files: usize,
        max_files: usize,
    },
    /// A file could not be read.
    ReadError {
        path: &'a Path,
        error: &'a std::io::Error,
    },
    /// How many files are followed now.
    Tracked { files: usize },
    /// The source is running (or not).
    Up(bool),
}

#[derive(Debug, Default)]
struct WarnState {
    last: [Option<Instant>; ParseError::ALL.len()],
    suppressed: [u64; ParseError::ALL.len()],
}

/// Panics when a commit would hold other than `held` though the ledger says nothing
/// changed.
fn assert_unchanged(held: crate::state::Digest, ledger: &Ledger) {
    let now = crate::state::digest(ledger);
    assert!(
        now == held,
        "a committed value changed without the ledger seeing it (it would be neither committed nor published): committed {held:?}, now {now:?}. Change committed values only through Ledger::committed_mut or its methods."
    );
}

/// The shared part of every source: parser, ledger, dead letter.
#[derive(Debug)]
pub struct Pipeline {
    parser: std::sync::RwLock<RecordParser>,
    ledger: Mutex<Ledger>,
    dead_letter: Option<Mutex<DeadLetter>>,
    warn: Mutex<WarnState>,
    /// The ledger generation of the last successful commit, and in a debug build what
    /// it held.
    committed: Mutex<Option<(u64, Option<crate::state::Digest>)>>,
    /// The task-list source, whose lines are task ids to poll.
    task_list: std::sync::OnceLock<TaskListRules>,
    next_file_key: std::sync::atomic::AtomicU64,
}

/// How task ids from the task list are taken.
#[derive(Debug, Clone, Copy)]
pub struct TaskListRules {
    pub source: SourceId,
    pub shard: (u64, u64),
    pub max_tracked: usize,
}

use crate::clock::unix_now;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while counting cannot leave the plain counters half-written in a way
    // worth dying for: keep serving what is there.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pipeline {
    pub fn new(parser: RecordParser, ledger: Ledger, dead_letter: Option<DeadLetter>) -> Self {
        Pipeline {
            parser: std::sync::RwLock::new(parser),
            ledger: Mutex::new(ledger),
            dead_letter: dead_letter.map(Mutex::new),
            warn: Mutex::new(WarnState::default()),
            committed: Mutex::new(None),
            task_list: std::sync::OnceLock::new(),
            next_file_key: Default::default(),
        }
    }

    /// Makes `rules.source` the task list: its lines are task ids to poll.
    pub fn set_task_list(&self, rules: TaskListRules) {
        let _ = self.task_list.set(rules);
    }

    /// A key for a followed file, unique across sources.
    pub fn next_file_key(&self) -> FileKey {
        self.next_file_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the record parser (a reload); counters are untouched.
    pub fn set_parser(&self, parser: RecordParser) {
        *self.parser.write().unwrap_or_else(|e| e.into_inner()) = parser;
    }

    /// Registers a source with the ledger.
    pub fn add_source(&self, name: &str) -> SourceId {
        lock(&self.ledger).add_source(name)
    }

    /// Runs `f` on the ledger, under its lock.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        f(&mut lock(&self.ledger))
    }

    /// Publishes the ledger's current totals into `metrics` (without a state file,
    /// as `scan` does).
    pub fn publish(&self, metrics: &mut Metrics) {
        let totals = lock(&self.ledger).totals();
        metrics.publish(&totals);
    }

    /// Splits, parses and counts one block read from `source`. With a `cursor` (the
    /// file's key and how far it is read after this block), the file's position moves
    /// with the counts, under the same lock, so a commit never separates them.
    pub fn process(
        &self,
        source: SourceId,
        splitter: &mut LineSplitter,
        block: &[u8],
        cursor: Option<(FileKey, u64)>,
    ) {
        self.count_lines(
            source,
            block.len() as u64,
            splitter,
            cursor,
            |sp, f, lines| sp.split(block, f, lines),
        );
    }

    /// Counts a partial line held by `splitter` as a complete line: the end of a
    /// file read once (`scan`), or of a rotated file that stayed quiet.
    pub fn finish(
        &self,
        source: SourceId,
        splitter: &mut LineSplitter,
        cursor: Option<(FileKey, u64)>,
    ) {
        self.count_lines(source, 0, splitter, cursor, |sp, f, _| sp.finish(f));
    }

    /// Counts the lines `split` yields: the one completed from a held partial line
    /// through the callback, then the block's own, in order. The block's lines of a
    /// task log go to the ledger [`BATCH`] at a time ([`Ledger::count_batch`]).
    fn count_lines<'b>(
        &self,
        source: SourceId,
        bytes: u64,
        splitter: &mut LineSplitter,
        cursor: Option<(FileKey, u64)>,
        split: impl FnOnce(&mut LineSplitter, &mut dyn FnMut(Line<'_>), &mut Vec<Line<'b>>),
    ) {
        let mut rejected: Vec<(ParseError, Vec<u8>, usize)> = Vec::new();
        // With a dead-letter file every rejected line is kept, cut to what it keeps:
        // at most the block (plus one over-long line's prefix) is held.
        let keep = self.dead_letter.as_ref().map(|d| lock(d).max_line_bytes());
        let mut note_rejected = |e: ParseError, text: &[u8]| match keep {
            Some(cut) => rejected.push((e, text[..text.len().min(cut)].to_vec(), text.len())),
            None if rejected.len() < MAX_LOGGED_PER_BLOCK => {
                rejected.push((e, Vec::new(), text.len()))
            }
            None => {}
        };
        {
            let mut ledger = lock(&self.ledger);
            let mut count = 0u64;
            let task_list = self.task_list.get().filter(|t| t.source == source).copied();
            let now = unix_now();
            let parser = self.parser.read().unwrap_or_else(|e| e.into_inner());
            let mut block_lines = Vec::new();
            let mut one = |line: Line<'_>| {
                count += 1;
                let (result, text) = match (line, task_list) {
                    (Line::Complete(l), Some(t)) => (
                        crate::record::parse_task_list_line(l)
                            .map(|e| ledger.track_api_task(source, e, t.shard, t.max_tracked, now)),
                        l,
                    ),
                    (Line::Complete(l), None) => {
                        (parser.parse(l).map(|r| ledger.count(source, &r)), l)
                    }
                    (Line::TooLong(prefix), _) => (Err(ParseError::LineTooLong), prefix),
                };
                if let Err(e) = result {
                    ledger.reject(source, e);
                    note_rejected(e, text);
                }
            };
            split(splitter, &mut one, &mut block_lines);
            if task_list.is_some() {
                block_lines.into_iter().for_each(one);
            } else {
                let mut records = Vec::with_capacity(BATCH);
                let mut results = Vec::with_capacity(BATCH);
                for batch in block_lines.chunks(BATCH) {
                    records.clear();
                    records.extend(batch.iter().map(|line| match line {
                        Line::Complete(l) => parser.parse(l),
                        Line::TooLong(_) => Err(ParseError::LineTooLong),
                    }));
                    results.clear();
                    ledger.count_batch(source, &records, &mut results);
                    for (line, result) in batch.iter().zip(&results) {
                        if let (
                            LineResult::Rejected(e),
                            Line::Complete(text) | Line::TooLong(text),
                        ) = (result, line)
                        {
                            note_rejected(*e, text);
                        }
                    }
                    count += batch.len() as u64;
                }
            }
            ledger.own_mut().read(source, bytes, count, unix_now());
            if let Some((key, read)) = cursor {
                let offset = read - splitter.pending() as u64;
                ledger
                    .checkpoints_mut()
                    .advance(key, offset, splitter.skipping());
            }
        }
        if !rejected.is_empty() {
            self.report_rejected(source, &rejected);
        }
    }

    fn report_rejected(&self, source: SourceId, rejected: &[(ParseError, Vec<u8>, usize)]) {
        let name = self.with_ledger(|l| l.own.source(source).name.clone());
        {
            let mut w = lock(&self.warn);
            let now = Instant::now();
            for (e, _, len) in rejected {
                let i = ParseError::ALL.iter().position(|x| x == e).unwrap_or(0);
                match w.last[i] {
                    Some(t) if now.duration_since(t) < WARN_EVERY => w.suppressed[i] += 1,
                    _ => {
                        let suppressed = std::mem::take(&mut w.suppressed[i]);
                        w.last[i] = Some(now);
                        tracing::warn!(
                            source = %name,
                            reason = e.reason(),
                            line_bytes = len,
                            suppressed_since_last = suppressed,
                            "Line rejected; counted in runway_exporter_parse_errors_total."
                        );
                    }
                }
            }
        }
        if let Some(dl) = &self.dead_letter {
            let mut dl = lock(dl);
            let mut written = 0u64;
            let mut failed = 0u64;
            for (e, sample, len) in rejected {
                match dl.write(&name, e.reason(), sample, *len) {
                    Ok(()) => written += 1,
                    Err(err) => {
                        failed += 1;
                        tracing::debug!(error = %err, "Cannot write to the dead-letter file.");
                    }
                }
            }
            if let Err(err) = dl.flush() {
                tracing::debug!(error = %err, "Cannot flush the dead-letter file.");
            }
            self.with_ledger(|l| {
                l.own_mut().dead_letters(written, failed);
            });
        }
    }

    /// Starts tracking a file's position.
    pub fn track(&self, key: FileKey, position: Position) {
        lock(&self.ledger).checkpoints_mut().track(key, position);
    }

    /// Stops tracking a file's position.
    pub fn untrack(&self, key: FileKey) {
        let mut l = lock(&self.ledger);
        if l.checkpoints.get(key).is_some() {
            l.checkpoints_mut().untrack(key);
        }
    }

    /// Updates a tracked file's fingerprint (it grows with a young file).
    pub fn set_fingerprint(&self, key: FileKey, fp_len: u32, fp: u64) {
        let mut l = lock(&self.ledger);
        let stale = l
            .checkpoints
            .get(key)
            .is_some_and(|p| (p.fp_len, p.fp) != (fp_len, fp));
        if stale {
            l.checkpoints_mut().set_fingerprint(key, fp_len, fp);
        }
    }

    /// Commits the ledger to the state file in `dir` when it changed since the last
    /// commit; returns the committed totals to publish, or `None` when unchanged.
    ///
    /// A debug build checks, at every commit it skips, that what a commit would hold
    /// is what the last one held: a committed value changed other than through the
    /// ledger's tracking panics here, so any test that changes it fails.
    pub fn commit(&self, dir: &Path) -> Result<Option<Totals>, crate::state::StateError> {
        let pending = {
            let ledger = lock(&self.ledger);
            let mut last = lock(&self.committed);
            if let Some((generation, held)) = *last {
                if generation == ledger.generation() {
                    if let Some(held) = held {
                        assert_unchanged(held, &ledger);
                    }
                    return Ok(None);
                }
            }
            let pending = crate::state::begin(dir, &ledger)?;
            *last = None;
            let held = cfg!(debug_assertions).then(|| crate::state::digest(&ledger));
            (pending, (ledger.generation(), held))
        };
        let (pending, committed) = pending;
        let totals = pending.finish()?;
        *lock(&self.committed) = Some(committed);
        Ok(Some(totals))
    }

    /// Logs and counts what happened to a source's files. Only an event that changes a
    /// committed value touches it (a change by construction, see [`Ledger`]): the
    /// periodic ones of an idle source (a rescan that finds the same files) must not
    /// cause a commit.
    pub fn event(&self, source: SourceId, event: SourceEvent<'_>) {
        let mut ledger = lock(&self.ledger);
        let name = ledger.own.source(source).name.clone();
        match event {
            SourceEvent::Opened { path, offset } => {
                tracing::info!(source = %name, path = %path.display(), offset, "Following file.");
            }
            SourceEvent::Rotated { path } => {
                ledger.own_mut().rotated(source);
                tracing::info!(source = %name, path = %path.display(), "File rotated; reading the new file from the start.");
            }
            SourceEvent::Truncated {
                key,
                path,
                size,
                offset,
            } => {
                // The position goes back to 0 under the same lock as the count, so a
                // commit never holds one without the other.
                ledger.checkpoints_mut().rewind(key);
                ledger.own_mut().truncated(source);
                tracing::warn!(source = %name, path = %path.display(), size, offset, "File truncated; reading from the start.");
            }
            SourceEvent::Removed { path } => {
                tracing::info!(source = %name, path = %path.display(), "File removed; stopped following it.");
            }
            SourceEvent::Lost { path, offset } => {
                tracing::warn!(source = %name, path = %path.display(), offset, "Checkpointed file not found: it was rotated away or deleted while the exporter was stopped, and lines after the offset were not read. Add its rotated name to file.rotated to read them.");
            }
            SourceEvent::FileLimit {
                first,
                files,
                max_files,
            } => {
                ledger.own_mut().files_refused(source, files as u64);
                tracing::warn!(source = %name, first = %first.display(), files, max_files, "Too many matching files; not following these. Raise max_files or narrow the paths.");
            }
            SourceEvent::ReadError { path, error } => {
                tracing::warn!(source = %name, path = %path.display(), error = %error, "Cannot read file; will retry.");
            }
            SourceEvent::Tracked { files } => {
                if ledger.own.source(source).files_tracked != files as u64 {
                    ledger.own_mut().set_files_tracked(source, files as u64);
                }
            }
            SourceEvent::Up(up) => {
                if ledger.own.source(source).up != up {
                    ledger.own_mut().set_up(source, up);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Table;
    use crate::deadletter::DeadLetterConfig;
    use crate::ledger::{DeadLetters, Limits};
    use crate::pricing::Pricing;
    use crate::record::FieldMap;
    use std::sync::Arc;

    #[test]
    fn every_rejected_line_reaches_the_dead_letter_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let dl = DeadLetter::open(DeadLetterConfig {
            path: path.clone(),
            max_bytes: 64 << 20,
            max_line_bytes: 8,
        })
        .unwrap();
        let ledger = Ledger::new(
            Arc::new(Table::builtin()),
            Arc::new(Pricing::builtin()),
            Limits::default(),
        );
        let p = Pipeline::new(
            RecordParser::new(&FieldMap::default()).unwrap(),
            ledger,
            Some(dl),
        );
        let source = p.add_source("file");
        let mut block = Vec::new();
        for i in 0..5000 {
            block.extend(format!("not json {i}\n{{\"status\":\"CANCELLED\"}}\n").as_bytes());
        }
        let mut splitter = LineSplitter::new(1024);
        p.process(source, &mut splitter, &block, None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5000);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            (first["line"].as_str(), first["bytes"].as_u64()),
            (Some("not json"), Some(10))
        );
        p.with_ledger(|l| {
            assert_eq!(
                l.own.dead_letter(),
                DeadLetters {
                    written: 5000,
                    failed: 0
                }
            );
            assert_eq!(l.own.source(source).results[..4], [5000, 0, 0, 5000]);
            assert_eq!(l.own.source(source).read_bytes, block.len() as u64);
        });
        // The dead-letter counts are added after the lines' own counts, outside their
        // lock: a commit that came in between must still see them as a change.
        let state = tempfile::tempdir().unwrap();
        assert!(p.commit(state.path()).unwrap().is_some());
        assert!(p.commit(state.path()).unwrap().is_none(), "nothing changed");
        p.report_rejected(source, &[(ParseError::InvalidJson, b"x".to_vec(), 1)]);
        let totals = p.commit(state.path()).unwrap().expect("a change to commit");
        assert_eq!(totals.dead_letter.written, 5001);
    }

    #[test]
    fn a_committed_value_changed_behind_the_ledgers_back_fails_the_commit() {
        let ledger = Ledger::new(
            Arc::new(Table::builtin()),
            Arc::new(Pricing::builtin()),
            Limits::default(),
        );
        let p = Pipeline::new(
            RecordParser::new(&FieldMap::default()).unwrap(),
            ledger,
            None,
        );
        let source = p.add_source("file");
        let state = tempfile::tempdir().unwrap();
        assert!(p.commit(state.path()).unwrap().is_some());
        // Through the ledger: committed. Reading it, or a no-op event: nothing to commit.
        p.with_ledger(|l| l.own_mut().dead_letters(0, 1));
        let committed = p.commit(state.path()).unwrap().unwrap();
        assert_eq!(committed.dead_letter.failed, 1);
        p.with_ledger(|l| assert_eq!(l.own.dead_letter().failed, 1));
        p.event(source, SourceEvent::Up(false));
        p.event(source, SourceEvent::Tracked { files: 0 });
        assert!(p.commit(state.path()).unwrap().is_none());
        // Behind its back (what a counter added outside `Committed`, or changed through
        // interior mutability, would do): the skipped commit says so.
        p.with_ledger(|l| l.committed_unmarked().own.dead_letters(1, 0));
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.commit(state.path())));
        let message = caught.expect_err("the check must catch it");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("a committed value changed without the ledger seeing it"),
            "{message}"
        );
    }

    #[test]
    fn every_mutable_borrow_of_a_tracked_value_counts_as_a_change() {
        let mut t = crate::ledger::Tracked::<Vec<u32>>::default();
        assert_eq!(t.generation(), 0);
        assert!(t.is_empty());
        assert_eq!(t.generation(), 0, "reading is not a change");
        t.push(1);
        t[0] += 1;
        assert_eq!(t.generation(), 2);
    }
}
