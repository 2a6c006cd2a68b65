//! Following task logs: globs, appends, rotation, truncation.
//!
//! Words, as this module uses them:
//! - A *followed file* is an open descriptor with the *offset* read up to and a
//!   [`LineSplitter`] holding its partial last line. It is found by expanding the
//!   configured patterns; at most `max_files` are followed.
//! - *Identity* is the (device, inode) pair of the open descriptor. When the path now
//!   names a file with another identity, the file was *rotated* (renamed or deleted and
//!   created anew): the old descriptor is read to its end first, then the new file is
//!   followed from its start. When the path is gone, the old descriptor is read to its
//!   end. Either way the old file is *retired*: still read through its descriptor
//!   until it has been quiet for `rotate_wait` (a writer may not have reopened its
//!   log yet), and picked up again where it was if it reappears under a matching name.
//! - A file is *truncated* when it is shorter than the offset (copytruncate): it is
//!   read again from the start.
//! - Where a file *starts*: a file found at start-up starts at `start_at` (`end` means
//!   after its last complete line, so a line being written is read whole); a file that
//!   appears later is new and starts at 0.
//!
//! Reading is blocking I/O, done on tokio's blocking pool; change notifications from
//! `notify` (inotify) wake the reader early, and a poll every `poll_interval` covers
//! file systems without notifications. All that happens to files is reported through
//! [`Pipeline::event`], which logs and counts; this module never touches Prometheus.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::{FileSettings, StartAt};
use crate::ledger::{FileKey, Position, SourceId, FINGERPRINT_BYTES};
use crate::lines::LineSplitter;
use crate::pipeline::{Pipeline, SourceEvent};
use crate::source::identity::FileId;
use crate::source::watch::Watch;

/// The source name of the file tailer, the `source` label of its metrics.
pub const SOURCE: &str = "file";

struct Retired {
    path: PathBuf,
    followed: Followed,
    last_data: Instant,
}

struct Followed {
    key: FileKey,
    file: File,
    id: FileId,
    /// Bytes read from the file (the splitter may hold the last few, a partial line).
    read: u64,
    splitter: LineSplitter,
}

impl Followed {
    /// Reads to the end through the pipeline, moving the committed position along;
    /// with `guarded`, a block read across a truncation is not counted.
    fn drain(
        &mut self,
        pipeline: &Pipeline,
        source: SourceId,
        buf: &mut [u8],
        guarded: bool,
    ) -> std::io::Result<Drained> {
        let guard = guarded.then_some(self.id);
        let d = drain(
            pipeline,
            source,
            &mut self.file,
            &mut self.splitter,
            buf,
            Some((self.key, self.read)),
            guard,
        )?;
        self.read += d.bytes;
        Ok(d)
    }
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// What [`drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Bytes read and counted.
    pub bytes: u64,
    /// The file's first bytes changed under the reader (truncated and written again
    /// while it was being read): the last block read was not counted.
    pub replaced: bool,
}

/// Reads `file` from its current position to its end through the pipeline. With a
/// `key`, the file's committed position follows (`read` is how far the file was read
/// before). With a `guard` (the file's identity when it was opened), every block is
/// counted only if the file still starts with the same bytes after it was read, so a
/// block read across a truncation is never counted.
pub fn drain(
    pipeline: &Pipeline,
    source: SourceId,
    file: &mut File,
    splitter: &mut LineSplitter,
    buf: &mut [u8],
    key: Option<(FileKey, u64)>,
    guard: Option<FileId>,
) -> std::io::Result<Drained> {
    let mut total = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => {
                return Ok(Drained {
                    bytes: total,
                    replaced: false,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(id) = guard {
            if !id.matches_or_err(file)? {
                return Ok(Drained {
                    bytes: total,
                    replaced: true,
                });
            }
        }
        total += n as u64;
        let cursor = key.map(|(k, read)| (k, read + total));
        pipeline.process(source, splitter, &buf[..n], cursor);
    }
}

/// The offset just after the last newline of a file of `len` bytes, looking at most
/// 64 KiB back; `len` when no newline is that close (the splitter then skips to the
/// next newline, so no fragment is read as a line).
fn end_of_last_line(file: &mut File, len: u64) -> std::io::Result<(u64, bool)> {
    const BACK: u64 = 64 * 1024;
    let from = len.saturating_sub(BACK);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    file.by_ref().take(len - from).read_to_end(&mut tail)?;
    Ok(match memchr::memrchr(b'\n', &tail) {
        Some(i) => (from + i as u64 + 1, false),
        None if from == 0 => (0, false),
        None => (len, true),
    })
}

/// Expands the patterns: every existing regular file that matches, sorted.
pub fn expand(patterns: &[String]) -> Vec<PathBuf> {
    expand_all(patterns).0
}

/// The paths that match `patterns`, sorted: the regular files (following links), and
/// the rest (directories, FIFOs, devices), which are never opened: a FIFO would block
/// the reader in `open`.
pub fn expand_all(patterns: &[String]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut out = Vec::new();
    for p in patterns {
        match glob::glob(p) {
            Ok(paths) => out.extend(paths.flatten()),
            Err(_) => out.push(PathBuf::from(p)),
        }
    }
    out.sort();
    out.dedup();
    let mut other = Vec::new();
    out.retain(|p| match std::fs::metadata(p) {
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            other.push(p.clone());
            false
        }
        Err(_) => false,
    });
    (out, other)
}

/// What a restart knows from the state file.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// When the state file was written (Unix seconds).
    pub written_at: f64,
    /// When the patterns were last expanded before that (0 when unknown).
    pub scanned_at: f64,
    /// Positions whose file is there but starts with other bytes now: its lines may
    /// be in a rotated copy (copytruncate while the exporter was stopped).
    pub replaced: Vec<Position>,
    pub positions: Vec<Position>,
}

/// Where to start a file found by a pattern.
enum Start {
    /// Resume a checkpointed file.
    Resume(Position),
    /// At `start_at` for a file found at start-up, else from the start.
    Fresh,
    /// From the start.
    Beginning,
}

/// The file tailer's state; [`Tailer::poll`] does one round of reading.
pub struct Tailer {
    name: String,
    settings: FileSettings,
    pipeline: Arc<Pipeline>,
    source: SourceId,
    files: BTreeMap<PathBuf, Followed>,
    /// Rotated or removed files, still read through their descriptors until they have
    /// been quiet for `rotate_wait`: a writer may not have reopened its log yet.
    retired: Vec<Retired>,
    buf: Vec<u8>,
    started: bool,
    last_glob: Option<Instant>,
    refused: usize,
    /// Matching paths that could not be opened or are not regular files, said once each
    /// until they can be.
    unreadable: std::collections::HashSet<PathBuf>,
    /// Checkpointed files not found yet; looked for in the first round only.
    checkpoint: Option<Checkpoint>,
}

impl Tailer {
    pub fn new(
        settings: FileSettings,
        pipeline: Arc<Pipeline>,
        checkpoint: Option<Checkpoint>,
    ) -> Tailer {
        Self::for_source(SOURCE, settings, pipeline, checkpoint)
    }

    /// A tailer whose metrics and positions carry another source name (the task list).
    pub fn for_source(
        name: &str,
        settings: FileSettings,
        pipeline: Arc<Pipeline>,
        checkpoint: Option<Checkpoint>,
    ) -> Tailer {
        let source = pipeline.add_source(name);
        Tailer {
            name: name.to_string(),
            buf: vec![0; settings.read_block_bytes],
            settings,
            pipeline,
            source,
            files: BTreeMap::new(),
            retired: Vec::new(),
            started: false,
            last_glob: None,
            refused: 0,
            unreadable: Default::default(),
            checkpoint,
        }
    }

    pub fn source(&self) -> SourceId {
        self.source
    }

    /// Takes new settings (a reload): files no longer matched by the patterns stop
    /// being followed (their positions are forgotten), and files of new patterns start
    /// as files found at start-up do (`start_at`).
    pub fn reconfigure(&mut self, settings: FileSettings) {
        let matched: std::collections::HashSet<PathBuf> =
            expand(&settings.paths).into_iter().collect();
        let dropped: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !matched.contains(*p))
            .cloned()
            .collect();
        for path in dropped {
            if let Some(f) = self.files.remove(&path) {
                self.pipeline.untrack(f.key);
                tracing::info!(source = %self.name, path = %path.display(), "No longer matched after a reload; stopped following it.");
            }
        }
        if settings.read_block_bytes != self.buf.len() {
            self.buf = vec![0; settings.read_block_bytes];
        }
        self.settings = settings;
        self.started = false;
        self.last_glob = None;
    }

    /// Opens the files found at start-up at their start positions (checkpointed, or
    /// `start_at`) without reading them, so that the positions can be committed before
    /// any line is read: a crash after that commit resumes from them, instead of
    /// deciding `start_at = end` again at a later end.
    pub fn start(&mut self) {
        if !self.started {
            self.rescan();
        }
    }

    /// Where a file found at start-up starts, by the checkpoint: its position when it
    /// is the same file (same device and inode, and the same first bytes); its start
    /// when only the inode is the same (a new file on a reused inode, or a file
    /// truncated and written again while the exporter was stopped).
    fn checkpointed(&mut self, file: &File, id: (u64, u64)) -> Start {
        let Some(cp) = self.checkpoint.as_mut() else {
            return Start::Fresh;
        };
        let Some(i) = cp.positions.iter().position(|p| (p.dev, p.ino) == id) else {
            return Start::Fresh;
        };
        let p = cp.positions.swap_remove(i);
        if FileId::of_position(&p).matches(file) {
            Start::Resume(p)
        } else {
            cp.replaced.push(p);
            Start::Beginning
        }
    }

    /// Whether a file without a checkpoint is new since the last commit: then it is
    /// read from its start whatever `start_at` says, so that a log created while the
    /// exporter was stopped is not skipped.
    fn created_since_checkpoint(&self, meta: &std::fs::Metadata) -> bool {
        let Some(cp) = &self.checkpoint else {
            return false;
        };
        let created = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        // Every file that existed at the last expansion was found by it; file times
        // come from a coarse clock that may lag the one scanned_at was read from.
        let since = if cp.scanned_at > 0.0 {
            cp.scanned_at
        } else {
            cp.written_at
        };
        created.is_some_and(|c| c >= since - 0.05)
    }

    /// Opens a file and starts following it; `retire` puts it straight among the
    /// retired files (a rotated name found at start-up).
    fn open(&mut self, path: &Path, start: Start, retire: bool) -> std::io::Result<()> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mut splitter = LineSplitter::new(self.settings.max_line_bytes);
        let key = self.pipeline.next_file_key();
        let (offset, skipping, truncated) = match start {
            Start::Resume(p) if meta.len() < p.offset => (0, false, Some(p.offset)),
            Start::Resume(p) => (p.offset, p.skipping, None),
            Start::Fresh
                if !self.started
                    && self.settings.start_at == StartAt::End
                    && !self.created_since_checkpoint(&meta) =>
            {
                let (offset, mid_line) = end_of_last_line(&mut file, meta.len())?;
                (offset, mid_line, None)
            }
            Start::Fresh | Start::Beginning => (0, false, None),
        };
        if skipping {
            splitter.skip_to_newline();
        }
        file.seek(SeekFrom::Start(offset))?;
        let id = FileId::of(&file)?;
        self.pipeline.track(
            key,
            Position {
                source: self.name.clone(),
                path: path.display().to_string(),
                dev: id.dev,
                ino: id.ino,
                fp_len: id.fp_len,
                fp: id.fp,
                offset,
                skipping,
            },
        );
        if let Some(old) = truncated {
            self.pipeline.event(
                self.source,
                SourceEvent::Truncated {
                    key,
                    path,
                    size: meta.len(),
                    offset: old,
                },
            );
        }
        self.pipeline
            .event(self.source, SourceEvent::Opened { path, offset });
        let followed = Followed {
            key,
            file,
            id,
            read: offset,
            splitter,
        };
        if retire {
            self.retired.push(Retired {
                path: path.to_path_buf(),
                followed,
                last_data: Instant::now(),
            });
        } else {
            self.files.insert(path.to_path_buf(), followed);
        }
        Ok(())
    }

    /// Expands the patterns and follows new matches, within `max_files`.
    fn rescan(&mut self) {
        let scan_started = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut refused = Vec::new();
        let (paths, passed_over) = expand_all(&self.settings.paths);
        for path in passed_over {
            // Once per path, like a file that cannot be opened.
            if self.unreadable.insert(path.clone()) {
                tracing::warn!(source = %self.name, path = %path.display(), "Matches file.paths but is not a regular file (a directory, FIFO or device); not followed.");
            }
        }
        for path in paths {
            if self.files.contains_key(&path) {
                continue;
            }
            let file = match File::open(&path) {
                Ok(file) => {
                    self.unreadable.remove(&path);
                    file
                }
                Err(error) => {
                    // Once per path until it can be opened: a rescan every few seconds
                    // must not repeat it.
                    if self.unreadable.insert(path.clone()) {
                        self.pipeline.event(
                            self.source,
                            SourceEvent::ReadError {
                                path: &path,
                                error: &error,
                            },
                        );
                    }
                    continue;
                }
            };
            let Ok(meta) = file.metadata() else { continue };
            let id = identity(&meta);
            // A retired file that shows up under a matching name (app.log -> app.log.1
            // with a pattern that matches both) goes on from where it was.
            if let Some(i) = self
                .retired
                .iter()
                .position(|r| r.followed.id.inode() == id)
            {
                let r = self.retired.swap_remove(i);
                self.files.insert(path, r.followed);
                continue;
            }
            if self.files.values().any(|f| f.id.inode() == id) {
                continue;
            }
            if self.files.len() >= self.settings.max_files {
                refused.push(path);
                continue;
            }
            let start = self.checkpointed(&file, id);
            if let Err(error) = self.open(&path, start, false) {
                self.pipeline.event(
                    self.source,
                    SourceEvent::ReadError {
                        path: &path,
                        error: &error,
                    },
                );
            }
        }
        if !self.started {
            self.resume_rotated();
        }
        // Counted once for each file refused beyond the last rescan's, and said once.
        if refused.len() > self.refused {
            self.pipeline.event(
                self.source,
                SourceEvent::FileLimit {
                    first: &refused[0],
                    files: refused.len() - self.refused,
                    max_files: self.settings.max_files,
                },
            );
        }
        self.refused = refused.len();
        self.started = true;
        self.last_glob = Some(Instant::now());
        // Not a change worth a commit by itself: a file found by this expansion is
        // tracked, and that is one.
        let name = self.name.clone();
        self.pipeline.with_ledger(|l| {
            l.note_scan(&name, scan_started);
        });
        self.pipeline.event(
            self.source,
            SourceEvent::Tracked {
                files: self.files.len(),
            },
        );
    }

    /// At start-up: checkpointed files renamed while the exporter was stopped are read
    /// to their end under a `rotated` name; the rest are reported lost.
    fn resume_rotated(&mut self) {
        // Oldest first (app.log.2 before app.log.1), as the lines were written.
        let mut rotated = expand(&self.settings.rotated);
        rotated.reverse();
        for path in rotated {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let id = identity(&meta);
            if self.files.values().any(|f| f.id.inode() == id) {
                continue;
            }
            let start = match self.checkpointed(&file, id) {
                // Renamed while the exporter was stopped: go on where it was.
                Start::Resume(p) => Some(Start::Resume(p)),
                _ => match self.copy_of_checkpointed(&file, meta.len()) {
                    // A copy of a checkpointed file (copytruncate while stopped).
                    Some(p) => Some(Start::Resume(Position {
                        dev: id.0,
                        ino: id.1,
                        ..p
                    })),
                    // Created and rotated after the last commit: none of it is counted.
                    None if self.created_since_checkpoint(&meta) => Some(Start::Beginning),
                    // Older than the checkpoint: read before it was rotated.
                    None => None,
                },
            };
            if let Some(start) = start {
                if let Err(error) = self.open(&path, start, true) {
                    self.pipeline.event(
                        self.source,
                        SourceEvent::ReadError {
                            path: &path,
                            error: &error,
                        },
                    );
                }
            }
        }
        if let Some(cp) = self.checkpoint.as_mut() {
            cp.replaced.clear();
            for p in cp.positions.drain(..) {
                self.pipeline.event(
                    self.source,
                    SourceEvent::Lost {
                        path: Path::new(&p.path),
                        offset: p.offset,
                    },
                );
            }
        }
    }

    /// A checkpointed position (of a file gone or rewritten) whose first bytes this
    /// file has, and which it is long enough to hold.
    fn copy_of_checkpointed(&mut self, file: &File, len: u64) -> Option<Position> {
        let cp = self.checkpoint.as_mut()?;
        let matches = |p: &Position| {
            let id = FileId::of_position(p);
            id.fingerprinted() && len >= p.offset && id.matches(file)
        };
        if let Some(i) = cp.replaced.iter().position(matches) {
            return Some(cp.replaced.swap_remove(i));
        }
        let i = cp.positions.iter().position(matches)?;
        Some(cp.positions.swap_remove(i))
    }

    /// One round: find new files when due (or `force_glob`), then read every followed
    /// file to its end, handling rotation, removal and truncation.
    pub fn poll(&mut self, force_glob: bool) {
        let due = self
            .last_glob
            .is_none_or(|t| t.elapsed() >= self.settings.glob_interval);
        if force_glob || due {
            self.rescan();
        }
        // Retired files hold older lines than the files that replaced them: read them
        // first, so that the first terminal record of a task is the one counted.
        self.poll_retired();
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        let mut changed = false;
        for path in paths {
            changed |= self.poll_file(&path);
        }
        if changed {
            // A rotated path may already have its new file: follow it now.
            self.rescan();
        }
    }

    /// Reads retired files; forgets those quiet for `rotate_wait`, counting a last
    /// line left without its newline.
    fn poll_retired(&mut self) {
        let wait = self.settings.rotate_wait;
        let mut i = 0;
        while i < self.retired.len() {
            let r = &mut self.retired[i];
            match r
                .followed
                .drain(&self.pipeline, self.source, &mut self.buf, false)
            {
                Ok(Drained { bytes: 0, .. }) => {}
                Ok(_) => r.last_data = Instant::now(),
                Err(error) => {
                    self.pipeline.event(
                        self.source,
                        SourceEvent::ReadError {
                            path: &r.path,
                            error: &error,
                        },
                    );
                }
            }
            if r.last_data.elapsed() >= wait {
                let mut r = self.retired.swap_remove(i);
                let f = &mut r.followed;
                self.pipeline
                    .finish(self.source, &mut f.splitter, Some((f.key, f.read)));
                self.pipeline.untrack(f.key);
                continue;
            }
            i += 1;
        }
    }

    /// Whether the file's content was replaced in place (copytruncate, then written
    /// past the old offset before this poll): its first bytes changed.
    fn replaced_in_place(f: &Followed) -> bool {
        !f.id.matches(&f.file)
    }

    /// Truncation: the open file is shorter than what was read, or its first bytes are
    /// no longer the ones it started with. The file is then read again from its start;
    /// returns where it was, to look for a copy holding the rest.
    fn check_truncated(&mut self, path: &Path, force: bool) -> Option<Position> {
        let f = self.files.get_mut(path)?;
        let m = f.file.metadata().ok()?;
        // Shorter than what was read, or than the bytes fingerprinted (which may not
        // have been read yet), or starting with other bytes now.
        let shorter = m.len() < f.read.max(f.id.fp_len as u64);
        if !(force || shorter || Self::replaced_in_place(f)) {
            return None;
        }
        let before = Position {
            source: self.name.clone(),
            path: path.display().to_string(),
            dev: f.id.dev,
            ino: f.id.ino,
            fp_len: f.id.fp_len,
            fp: f.id.fp,
            offset: f.read - f.splitter.pending() as u64,
            skipping: f.splitter.skipping(),
        };
        self.pipeline.event(
            self.source,
            SourceEvent::Truncated {
                key: f.key,
                path,
                size: m.len(),
                offset: before.offset,
            },
        );
        f.read = 0;
        f.splitter.reset();
        f.id.fp_len = 0;
        if let Err(error) = f.file.seek(SeekFrom::Start(0)) {
            self.pipeline.event(
                self.source,
                SourceEvent::ReadError {
                    path,
                    error: &error,
                },
            );
        }
        Some(before)
    }

    /// After a copytruncate: when a `rotated` file is a copy of the truncated one (same
    /// first bytes, at least as long as what was counted), the lines not yet read are
    /// read from the copy. Only lines written between the copy and the truncation are
    /// then lost, in neither file.
    fn finish_from_copy(&mut self, before: Position) {
        let before_id = FileId::of_position(&before);
        if !before_id.fingerprinted() {
            return;
        }
        for path in expand(&self.settings.rotated) {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let id = identity(&meta);
            let known = id == before_id.inode()
                || self.files.values().any(|f| f.id.inode() == id)
                || self.retired.iter().any(|r| r.followed.id.inode() == id);
            if known || meta.len() < before.offset {
                continue;
            }
            if before_id.matches(&file) {
                let resume = Position {
                    dev: id.0,
                    ino: id.1,
                    ..before
                };
                if let Err(error) = self.open(&path, Start::Resume(resume), true) {
                    self.pipeline.event(
                        self.source,
                        SourceEvent::ReadError {
                            path: &path,
                            error: &error,
                        },
                    );
                }
                // The copy's lines are older than what the truncated file holds now.
                self.poll_retired();
                return;
            }
        }
    }

    /// Reads one followed file; true when it stopped being followed.
    fn poll_file(&mut self, path: &Path) -> bool {
        let mut replaced = false;
        // A file replaced under the reader is handled as a truncation and read again:
        // twice at most per round, the next round goes on.
        for _ in 0..2 {
            if let Some(before) = self.check_truncated(path, replaced) {
                self.finish_from_copy(before);
            }
            let Some(f) = self.files.get_mut(path) else {
                return false;
            };
            match f.drain(&self.pipeline, self.source, &mut self.buf, true) {
                Ok(d) => replaced = d.replaced,
                Err(error) => {
                    self.pipeline.event(
                        self.source,
                        SourceEvent::ReadError {
                            path,
                            error: &error,
                        },
                    );
                    return false;
                }
            }
            if !replaced {
                break;
            }
        }
        let Some(f) = self.files.get_mut(path) else {
            return false;
        };
        // A young file's fingerprint grows with it, up to FINGERPRINT_BYTES.
        if (f.id.fp_len as usize) < FINGERPRINT_BYTES && f.read > f.id.fp_len as u64 {
            let len = f.read.min(FINGERPRINT_BYTES as u64) as u32;
            if f.id.grow(&f.file, len) {
                self.pipeline.set_fingerprint(f.key, len, f.id.fp);
            }
        }
        // Rotation or removal: the path no longer names the open file. What was
        // appended to the old file before it was replaced has just been read.
        let replaced = match std::fs::metadata(path) {
            Ok(m) => identity(&m) != f.id.inode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
        };
        if !replaced {
            return false;
        }
        let exists = path.exists();
        if let Some(followed) = self.files.remove(path) {
            self.retired.push(Retired {
                path: path.to_path_buf(),
                followed,
                last_data: Instant::now(),
            });
        }
        if exists {
            self.pipeline
                .event(self.source, SourceEvent::Rotated { path });
        } else {
            self.pipeline
                .event(self.source, SourceEvent::Removed { path });
        }
        // The replacement (if any) is new: it starts at 0.
        self.started = true;
        true
    }
}

/// Follows the configured files until `token` is cancelled.
/// `first_poll` is sent once the files found at start-up are open at their start
/// positions, so that from then on every appended line is counted.
/// New settings from `reload` take effect at the next round (see [`Tailer::reconfigure`]).
pub async fn run(
    mut tailer: Tailer,
    token: CancellationToken,
    mut first_poll: Option<tokio::sync::oneshot::Sender<()>>,
    mut reload: Option<tokio::sync::watch::Receiver<FileSettings>>,
) {
    let mut watch = Watch::new(tailer.settings.notify);
    let (wake, glob_now) = (watch.wake.clone(), watch.glob_now.clone());
    let pipeline = tailer.pipeline.clone();
    let source = tailer.source;
    pipeline.event(source, SourceEvent::Up(true));
    let poll_interval = tailer.settings.poll_interval;
    loop {
        let force = glob_now.swap(false, Ordering::Relaxed);
        let new_settings = reload
            .as_mut()
            .filter(|r| r.has_changed().unwrap_or(false))
            .map(|r| r.borrow_and_update().clone());
        tailer = match tokio::task::spawn_blocking(move || {
            if let Some(s) = new_settings {
                tailer.reconfigure(s);
            }
            // Directories of patterns added by a reload, or created since the last round.
            watch.follow(&tailer.settings.paths);
            tailer.poll(force);
            (tailer, watch)
        })
        .await
        {
            Ok((t, w)) => {
                watch = w;
                t
            }
            Err(e) => {
                tracing::error!(error = %e, "The file reader panicked; the file source stops.");
                pipeline.event(source, SourceEvent::Up(false));
                return;
            }
        };
        if let Some(tx) = first_poll.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = token.cancelled() => {
                // A last round, so that a removed file's unread lines are counted
                // before the final commit (the shutdown grace period bounds it).
                let _ = tokio::task::spawn_blocking(move || tailer.poll(false)).await;
                break;
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll_interval) => {}
            Ok(()) = async {
                match reload.as_mut() {
                    Some(r) => r.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                // Marked unseen again so that the next round applies it.
                if let Some(r) = reload.as_mut() {
                    r.mark_changed();
                }
            }
        }
    }
    pipeline.event(source, SourceEvent::Up(false));
}

/// Reads files once from their start to their end (`scan`); a last line without a
/// newline counts as a line.
pub fn scan(
    pipeline: &Pipeline,
    paths: &[PathBuf],
    max_line_bytes: usize,
    block: usize,
) -> std::io::Result<()> {
    let source = pipeline.add_source(SOURCE);
    let mut buf = vec![0u8; block];
    for path in paths {
        let mut file = File::open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut splitter = LineSplitter::new(max_line_bytes);
        drain(
            pipeline,
            source,
            &mut file,
            &mut splitter,
            &mut buf,
            None,
            None,
        )
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        pipeline.finish(source, &mut splitter, None);
    }
    pipeline.event(source, SourceEvent::Tracked { files: paths.len() });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_dirs_are_the_literal_parents() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let got = crate::source::watch::watch_dirs(&[
            format!("{d}/app.log"),
            format!("{d}/sub/*.log"),
            format!("{d}/nope/x.log"),
        ]);
        assert_eq!(got, vec![dir.path().to_path_buf(), dir.path().join("sub")]);
    }

    #[test]
    fn start_at_end_begins_after_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"one\ntwo\nthr").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(end_of_last_line(&mut f, 11).unwrap(), (8, false));
        std::fs::write(&p, b"partial").unwrap();
        assert_eq!(end_of_last_line(&mut f, 7).unwrap(), (0, false));
        let big = vec![b'x'; 100_000];
        std::fs::write(&p, &big).unwrap();
        assert_eq!(end_of_last_line(&mut f, 100_000).unwrap(), (100_000, true));
    }
}
