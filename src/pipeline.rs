//! One path for every source: blocks of bytes -> lines -> the source's [`Handler`] ->
//! the ledger.
//!
//! A source calls [`Pipeline::process`] with each block it reads; the ledger is locked
//! once per block, not per line, and the block's lines go to the source's handler in
//! one call: a task log's ([`TaskLog`], the default) parses and counts them
//! [`BATCH`] at a time; the task list's (`source::task_list`) tracks the ids. Rejected lines are counted in the ledger, logged at
//! most once per reason every [`WARN_EVERY`], and written to the dead-letter file when
//! one is configured. Sources report what happens to their files through
//! [`Pipeline::event`], the one place that both logs and counts it.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::deadletter::DeadLetter;
use crate::ledger::{FileKey, Ledger, LineResult, Position, SourceId, Totals, BATCH};
use crate::lines::{glued_records, Line, LineSplitter};
use crate::metrics::Metrics;
use crate::record::{ParseError, RecordParser};
use crate::sync::{lock, read, write};

/// Without a dead-letter file, rejected lines of one block that are looked at for
/// logging (which is rate-limited anyway); the rest are only counted.
const MAX_LOGGED_PER_BLOCK: usize = 64;

/// How often each kind of rejected line is logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a source's lines are: counts a block's lines under the ledger's lock, pushing
/// one result per line (a rejected line counted as such in the ledger). `seen_at`: when
/// the lines were read, if they were read live (Unix seconds; `None` for a backlog).
pub trait Handler: Send + Sync + std::fmt::Debug {
    fn count(
        &self,
        ledger: &mut Ledger,
        source: SourceId,
        lines: &[Line<'_>],
        results: &mut Vec<LineResult>,
        seen_at: Option<f64>,
    );
}

/// The lines of a task log: records parsed with the configured field map and counted.
#[derive(Debug)]
pub struct TaskLog {
    parser: std::sync::RwLock<RecordParser>,
}

impl TaskLog {
    pub fn new(parser: RecordParser) -> TaskLog {
        TaskLog {
            parser: std::sync::RwLock::new(parser),
        }
    }
}

impl Handler for TaskLog {
    /// Parses and counts [`BATCH`] lines at a time ([`Ledger::count_batch`]). A line
    /// rejected as invalid JSON that holds records glued one after the other
    /// ([`glued_records`]) is counted as those records, its batch a line at a time.
    fn count(
        &self,
        ledger: &mut Ledger,
        source: SourceId,
        lines: &[Line<'_>],
        results: &mut Vec<LineResult>,
        seen_at: Option<f64>,
    ) {
        let parser = read(&self.parser);
        let mut records = Vec::with_capacity(BATCH.min(lines.len()));
        for batch in lines.chunks(BATCH) {
            records.clear();
            records.extend(batch.iter().map(|line| match line {
                Line::Complete(l) => parser.parse(l),
                Line::TooLong(_) => Err(ParseError::LineTooLong),
            }));
            let glued = batch
                .iter()
                .zip(&records)
                .any(|lr| glued_line(lr).is_some());
            match glued {
                false => ledger.count_batch(source, &records, results, seen_at),
                true => {
                    for (line, record) in batch.iter().zip(&records) {
                        let line = (&mut *ledger, source, line, seen_at);
                        results.push(count_line(&parser, line, record));
                    }
                }
            }
        }
    }
}

/// The records glued on a line rejected as invalid JSON, when it holds several.
fn glued_line<'a>(
    (line, record): (
        &Line<'a>,
        &Result<crate::record::TaskRecord<'_>, ParseError>,
    ),
) -> Option<Vec<&'a [u8]>> {
    match (line, record) {
        (Line::Complete(l), Err(ParseError::InvalidJson)) => glued_records(l),
        _ => None,
    }
}

/// Counts one line, parsed as `record`: as the records glued on it when it holds
/// several. Its result is its first rejection, else its first record's.
fn count_line(
    parser: &RecordParser,
    (ledger, source, line, seen_at): (&mut Ledger, SourceId, &Line<'_>, Option<f64>),
    record: &Result<crate::record::TaskRecord<'_>, ParseError>,
) -> LineResult {
    let mut results = Vec::new();
    match glued_line((line, record)) {
        Some(glued) => {
            let records: Vec<_> = glued.iter().map(|r| parser.parse(r)).collect();
            ledger.count_batch(source, &records, &mut results, seen_at);
        }
        None => ledger.count_batch(source, std::slice::from_ref(record), &mut results, seen_at),
    }
    let rejected = results
        .iter()
        .find(|r| matches!(r, LineResult::Rejected(_)));
    *rejected.unwrap_or(&results[0])
}

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

/// The rejected lines of a block, kept for logging and the dead-letter file: with a
/// dead-letter file every one, cut to what it keeps (at most the block plus one
/// over-long line's prefix is held); without, the first few, by length only.
struct Rejected {
    keep: Option<usize>,
    lines: Vec<(ParseError, Vec<u8>, usize)>,
}

impl Rejected {
    fn new(keep: Option<usize>) -> Rejected {
        Rejected {
            keep,
            lines: Vec::new(),
        }
    }

    fn note(&mut self, lines: &[Line<'_>], results: &[LineResult]) {
        for (line, result) in lines.iter().zip(results) {
            let (LineResult::Rejected(e), Line::Complete(text) | Line::TooLong(text)) =
                (result, line)
            else {
                continue;
            };
            match self.keep {
                Some(cut) => {
                    self.lines
                        .push((*e, text[..text.len().min(cut)].to_vec(), text.len()))
                }
                None if self.lines.len() < MAX_LOGGED_PER_BLOCK => {
                    self.lines.push((*e, Vec::new(), text.len()))
                }
                None => {}
            }
        }
    }
}

/// Panics when a commit would hold other than `held` though the ledger says nothing
/// changed.
fn assert_unchanged(held: crate::state::Digest, ledger: &Ledger) {
    let now = crate::state::digest(ledger);
    assert!(
        now == held,
        "a committed value changed without the ledger seeing it (it would be neither committed nor published): committed {held:?}, now {now:?}. Change committed values only through the ledger's methods (own_mut, checkpoints_mut and the others), which track every change."
    );
}

/// The shared part of every source: parser, ledger, dead letter.
#[derive(Debug)]
pub struct Pipeline {
    task_log: std::sync::Arc<TaskLog>,
    /// The handlers of the sources whose lines are not a task log, by [`SourceId`].
    handlers: std::sync::RwLock<std::collections::BTreeMap<usize, std::sync::Arc<dyn Handler>>>,
    ledger: Mutex<Ledger>,
    dead_letter: Option<Mutex<DeadLetter>>,
    warn: Mutex<WarnState>,
    /// The ledger generation of the last successful commit, and in a debug build what
    /// it held.
    committed: Mutex<Option<(u64, Option<crate::state::Digest>)>>,
    next_file_key: std::sync::atomic::AtomicU64,
}

impl Pipeline {
    pub fn new(parser: RecordParser, ledger: Ledger, dead_letter: Option<DeadLetter>) -> Self {
        Pipeline {
            task_log: std::sync::Arc::new(TaskLog::new(parser)),
            handlers: Default::default(),
            ledger: Mutex::new(ledger),
            dead_letter: dead_letter.map(Mutex::new),
            warn: Mutex::new(WarnState::default()),
            committed: Mutex::new(None),
            next_file_key: Default::default(),
        }
    }

    /// Gives `source` its own handler (the task list's).
    pub fn set_handler(&self, source: SourceId, handler: std::sync::Arc<dyn Handler>) {
        let mut handlers = write(&self.handlers);
        handlers.insert(source.0, handler);
    }

    fn handler(&self, source: SourceId) -> std::sync::Arc<dyn Handler> {
        let handlers = read(&self.handlers);
        match handlers.get(&source.0) {
            Some(h) => h.clone(),
            None => self.task_log.clone(),
        }
    }

    /// A key for a followed file, unique across sources.
    pub fn next_file_key(&self) -> FileKey {
        self.next_file_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the record parser (a reload); counters are untouched.
    pub fn set_parser(&self, parser: RecordParser) {
        *write(&self.task_log.parser) = parser;
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
        metrics.publish(totals);
    }

    /// Splits, parses and counts one block read from `source`. With a `cursor` (the
    /// file's key and how far it is read after this block), the file's position moves
    /// with the counts, under the same lock, so a commit never separates them.
    /// `seen_at`: when the block was read, if it was read live (see [`Handler`]).
    pub fn process(
        &self,
        source: SourceId,
        splitter: &mut LineSplitter,
        block: &[u8],
        cursor: Option<(FileKey, u64)>,
        seen_at: Option<f64>,
    ) {
        self.count_lines(
            source,
            (block.len() as u64, seen_at),
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
        self.count_lines(source, (0, None), splitter, cursor, |sp, f, _| sp.finish(f));
    }

    /// Counts the lines `split` yields from `bytes` read (`seen_at`, if live): the one
    /// completed from a held partial line through the callback, then the block's own, in
    /// order, each through the source's [`Handler`].
    fn count_lines<'b>(
        &self,
        source: SourceId,
        (bytes, seen_at): (u64, Option<f64>),
        splitter: &mut LineSplitter,
        cursor: Option<(FileKey, u64)>,
        split: impl FnOnce(&mut LineSplitter, &mut dyn FnMut(Line<'_>), &mut Vec<Line<'b>>),
    ) {
        let handler = self.handler(source);
        let mut rejected =
            Rejected::new(self.dead_letter.as_ref().map(|d| lock(d).max_line_bytes()));
        {
            let mut ledger = lock(&self.ledger);
            let mut results = Vec::new();
            let mut count = 0u64;
            let mut block_lines = Vec::new();
            split(
                splitter,
                &mut |line| {
                    count += 1;
                    let lines = [line];
                    results.clear();
                    handler.count(&mut ledger, source, &lines, &mut results, seen_at);
                    rejected.note(&lines, &results);
                },
                &mut block_lines,
            );
            results.clear();
            handler.count(&mut ledger, source, &block_lines, &mut results, seen_at);
            rejected.note(&block_lines, &results);
            count += block_lines.len() as u64;
            ledger.own_mut().read(source, bytes, count, unix_now());
            if let Some((key, read)) = cursor {
                let offset = read - splitter.pending() as u64;
                ledger
                    .checkpoints_mut()
                    .advance(key, offset, splitter.skipping());
            }
        }
        if !rejected.lines.is_empty() {
            self.report_rejected(source, &rejected.lines);
        }
    }

    /// Rejects one line of `source` read live for `error` found by its caller (a line
    /// that parses but must not be counted): counted, logged at most every
    /// [`WARN_EVERY`] per reason and written to the dead-letter file, as the lines
    /// [`Pipeline::process`] rejects.
    pub fn reject(&self, source: SourceId, error: ParseError, line: &[u8]) {
        self.with_ledger(|l| {
            l.reject(source, error);
            l.own_mut().read(source, line.len() as u64, 1, unix_now());
        });
        let cut = self.dead_letter.as_ref().map(|d| lock(d).max_line_bytes());
        let sample = cut.map_or_else(Vec::new, |cut| line[..line.len().min(cut)].to_vec());
        self.report_rejected(source, &[(error, sample, line.len())]);
    }

    fn report_rejected(&self, source: SourceId, rejected: &[(ParseError, Vec<u8>, usize)]) {
        let name = self.with_ledger(|l| l.own.source(source).name.clone());
        {
            let mut w = lock(&self.warn);
            let now = Instant::now();
            for (e, _, len) in rejected {
                let i = e.index();
                match w.last[i] {
                    Some(t) if now.duration_since(t) < WARN_EVERY => w.suppressed[i] += 1,
                    _ => {
                        let suppressed = std::mem::take(&mut w.suppressed[i]);
                        w.last[i] = Some(now);
                        tracing::warn!(
                            source = %name,
                            reason = e.as_str(),
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
                match dl.write(&name, e.as_str(), sample, *len) {
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
        lock(&self.ledger).untrack(key);
    }

    /// Updates a tracked file's fingerprint (it grows with a young file).
    pub fn set_fingerprint(&self, key: FileKey, fp_len: u32, fp: u64) {
        lock(&self.ledger).set_fingerprint(key, fp_len, fp);
    }

    /// Commits the ledger to the state file in `dir` when it changed since the last
    /// commit (a step of the wall clock, noted first, is a change); returns the
    /// committed totals to publish, or `None` when unchanged.
    ///
    /// A debug build checks, at every commit it skips, that what a commit would hold
    /// is what the last one held: a committed value changed other than through the
    /// ledger's tracking panics here, so any test that changes it fails.
    pub fn commit(&self, dir: &Path) -> Result<Option<Totals>, crate::state::StateError> {
        let pending = {
            let mut ledger = lock(&self.ledger);
            ledger.note_clock(crate::clock::Now::read());
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
            let held = pending.digest;
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
                ledger.set_files_tracked(source, files as u64);
            }
            SourceEvent::Up(up) => {
                ledger.set_source_up(source, up);
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

    /// A pipeline over a new ledger with the built-in tables.
    fn pipeline(dead_letter: Option<DeadLetter>) -> Pipeline {
        let ledger = Ledger::new(
            Arc::new(Table::builtin()),
            Arc::new(Pricing::builtin()),
            Limits::default(),
        );
        let parser = RecordParser::new(&FieldMap::default()).unwrap();
        Pipeline::new(parser, ledger, dead_letter)
    }

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
        let p = pipeline(Some(dl));
        let source = p.add_source("file");
        let mut block = Vec::new();
        for i in 0..5000 {
            block.extend(format!("not json {i}\n{{\"status\":\"CANCELLED\"}}\n").as_bytes());
        }
        let mut splitter = LineSplitter::new(1024);
        p.process(source, &mut splitter, &block, None, None);
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
    fn records_glued_on_one_line_are_counted_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let dl = DeadLetter::open(DeadLetterConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            max_line_bytes: 1024,
        })
        .unwrap();
        let p = pipeline(Some(dl));
        let source = p.add_source("file");
        let task = |id: &str, status: &str| format!("{{\"id\":\"{id}\",\"status\":\"{status}\"}}");
        // More than a batch, then a line of glued records: two tasks, the first again
        // after a space, and one cut short; then one more line.
        let mut block: String = (0..40)
            .map(|i| format!("{}\n", task(&format!("a{i}"), "SUCCEEDED")))
            .collect();
        let (g1, g2) = (task("g1", "FAILED"), task("g2", "SUCCEEDED"));
        let glued = format!("{g1}{g2} {g1}{{\"id\":\"c\",\"sta");
        block += &format!("{glued}\n{}\n", task("z", "SUCCEEDED"));
        let mut splitter = LineSplitter::new(1024);
        p.process(source, &mut splitter, block.as_bytes(), None, None);
        p.with_ledger(|l| {
            // Counted, duplicate, non-terminal, rejected.
            assert_eq!(l.own.source(source).results[..4], [43, 1, 0, 1]);
        });
        // The line goes to the dead-letter file once, whole.
        let dead = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = dead
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{dead}");
        assert_eq!(lines[0]["line"].as_str(), Some(glued.as_str()));
    }

    #[test]
    fn a_committed_value_changed_behind_the_ledgers_back_fails_the_commit() {
        let p = pipeline(None);
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
