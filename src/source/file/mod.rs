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
//! The parts: [`discovery`] expands the patterns into the files to follow; `recovery`
//! decides where a file found at start-up starts, by the state file's checkpoint;
//! `follow` reads open files and handles rotation and truncation; file identity is
//! [`crate::source::identity::FileId`] and change notifications
//! [`crate::source::watch`]. This module holds the [`Tailer`] and its loop ([`run`]).
//!
//! Reading is blocking I/O, done on tokio's blocking pool; change notifications from
//! `notify` (inotify) wake the reader early, and a poll every `poll_interval` covers
//! file systems without notifications. All that happens to files is reported through
//! [`Pipeline::event`], which logs and counts; this module never touches Prometheus.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::FileSettings;
use crate::ledger::{FileKey, SourceId};
use crate::lines::LineSplitter;
use crate::pipeline::{Pipeline, SourceEvent};
use crate::source::identity::FileId;
use crate::source::watch::Watch;

pub mod discovery;
mod follow;
mod recovery;

pub use discovery::expand;
use follow::{Followed, Retired};
pub use recovery::Checkpoint;
use recovery::Start;

/// The source name of the file tailer, the `source` label of its metrics.
pub const SOURCE: &str = "file";

/// What [`drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Bytes read and counted.
    pub bytes: u64,
    /// The file's first bytes changed under the reader (truncated and written again
    /// while it was being read): the last block read was not counted.
    pub replaced: bool,
}

/// How long after a reader last reached a file's end the lines it reads still count as
/// *live*: written at most this long before they were read, so the time they were read
/// is their time (to time a task whose record has no timestamp of its own). At least
/// this, and two poll intervals (see [`Tailer::live_window`]).
pub const LIVE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// How [`drain`] reads a file. With a `key`, the file's committed position follows
/// (`read` is how far the file was read before). With a `guard` (the file's identity
/// when it was opened), every block is counted only if the file still starts with the
/// same bytes after it was read, so a block read across a truncation is never counted.
/// `live_until`: the blocks read until then are live (the reader was at the file's end
/// shortly before).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub key: Option<(FileKey, u64)>,
    pub guard: Option<FileId>,
    pub live_until: Option<Instant>,
}

/// Reads `file` from its current position to its end through the pipeline, as
/// `reading` says.
pub fn drain(
    pipeline: &Pipeline,
    source: SourceId,
    file: &mut File,
    splitter: &mut LineSplitter,
    buf: &mut [u8],
    reading: Reading,
) -> std::io::Result<Drained> {
    let Reading {
        key,
        guard,
        live_until,
    } = reading;
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
        let live = live_until.is_some_and(|t| Instant::now() <= t);
        let seen_at = live.then(crate::clock::unix_now);
        pipeline.process(source, splitter, &buf[..n], cursor, seen_at);
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

    /// One round: find new files when due (or `force_glob`), then read every followed
    /// file to its end, handling rotation, removal and truncation.
    pub fn poll(&mut self, force_glob: bool) {
        if self.rescan_due(force_glob) {
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
}

impl Tailer {
    /// Whether the next [`Tailer::poll`] expands the patterns again: when forced (a file
    /// was created, renamed or removed) or every `glob_interval`.
    /// How long after reaching a file's end its reads are live: [`LIVE_WINDOW`], or two
    /// poll intervals when they are longer (a poll then reads what was written since the
    /// last, and no more than that late).
    pub fn live_window(&self) -> std::time::Duration {
        LIVE_WINDOW.max(self.settings.poll_interval * 2)
    }

    pub fn rescan_due(&self, force_glob: bool) -> bool {
        force_glob
            || self
                .last_glob
                .is_none_or(|t| t.elapsed() >= self.settings.glob_interval)
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
            let reloaded = new_settings.is_some();
            if let Some(s) = new_settings {
                tailer.reconfigure(s);
            }
            // Directories of patterns added by a reload, or created since: looked for
            // when the patterns are, and before them, so that no file created in a new
            // directory after the rescan goes unnoticed.
            if reloaded || tailer.rescan_due(force) {
                watch.follow(&tailer.settings.paths);
            }
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
            Reading::default(),
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
