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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{FileSettings, StartAt};
use crate::ledger::SourceId;
use crate::pipeline::{Pipeline, SourceEvent};
use crate::source::lines::LineSplitter;

/// The source name of the file tailer, the `source` label of its metrics.
pub const SOURCE: &str = "file";

struct Retired {
    path: PathBuf,
    followed: Followed,
    last_data: Instant,
}

struct Followed {
    file: File,
    identity: (u64, u64),
    offset: u64,
    splitter: LineSplitter,
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Reads `file` from its current position to its end through the pipeline; returns the
/// bytes read.
pub fn drain(
    pipeline: &Pipeline,
    source: SourceId,
    file: &mut File,
    splitter: &mut LineSplitter,
    buf: &mut [u8],
) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pipeline.process(source, splitter, &buf[..n]);
        total += n as u64;
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
    let mut out = Vec::new();
    for p in patterns {
        match glob::glob(p) {
            Ok(paths) => out.extend(paths.flatten().filter(|p| p.is_file())),
            Err(_) => {
                let path = PathBuf::from(p);
                if path.is_file() {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The file tailer's state; [`Tailer::poll`] does one round of reading.
pub struct Tailer {
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
}

impl Tailer {
    pub fn new(settings: FileSettings, pipeline: Arc<Pipeline>) -> Tailer {
        let source = pipeline.add_source(SOURCE);
        Tailer {
            buf: vec![0; settings.read_block_bytes],
            settings,
            pipeline,
            source,
            files: BTreeMap::new(),
            retired: Vec::new(),
            started: false,
            last_glob: None,
            refused: 0,
        }
    }

    pub fn source(&self) -> SourceId {
        self.source
    }

    fn open(&mut self, path: &Path) -> std::io::Result<()> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mut splitter = LineSplitter::new(self.settings.max_line_bytes);
        let offset = if !self.started && self.settings.start_at == StartAt::End {
            let (offset, mid_line) = end_of_last_line(&mut file, meta.len())?;
            if mid_line {
                splitter.skip_to_newline();
            }
            offset
        } else {
            0
        };
        file.seek(SeekFrom::Start(offset))?;
        self.pipeline
            .event(self.source, SourceEvent::Opened { path, offset });
        self.files.insert(
            path.to_path_buf(),
            Followed {
                file,
                identity: identity(&meta),
                offset,
                splitter,
            },
        );
        Ok(())
    }

    /// Expands the patterns and follows new matches, within `max_files`.
    fn rescan(&mut self) {
        let mut refused = 0;
        for path in expand(&self.settings.paths) {
            if self.files.contains_key(&path) {
                continue;
            }
            // A retired file that shows up under a matching name (app.log -> app.log.1
            // with a pattern that matches both) goes on from where it was.
            let id = std::fs::metadata(&path).map(|m| identity(&m)).ok();
            if let Some(i) = self
                .retired
                .iter()
                .position(|r| Some(r.followed.identity) == id)
            {
                let r = self.retired.swap_remove(i);
                self.files.insert(path, r.followed);
                continue;
            }
            if self.files.values().any(|f| Some(f.identity) == id) {
                continue;
            }
            if self.files.len() >= self.settings.max_files {
                refused += 1;
                if refused > self.refused {
                    self.pipeline.event(
                        self.source,
                        SourceEvent::FileLimit {
                            path: &path,
                            max_files: self.settings.max_files,
                        },
                    );
                }
                continue;
            }
            if let Err(error) = self.open(&path) {
                self.pipeline.event(
                    self.source,
                    SourceEvent::ReadError {
                        path: &path,
                        error: &error,
                    },
                );
            }
        }
        self.refused = refused;
        self.started = true;
        self.last_glob = Some(Instant::now());
        self.pipeline.event(
            self.source,
            SourceEvent::Tracked {
                files: self.files.len(),
            },
        );
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
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        let mut changed = false;
        for path in paths {
            changed |= self.poll_file(&path);
        }
        if changed {
            // A rotated path may already have its new file: follow it now.
            self.rescan();
        }
        self.poll_retired();
    }

    /// Reads retired files; forgets those quiet for `rotate_wait`, counting a last
    /// line left without its newline.
    fn poll_retired(&mut self) {
        let wait = self.settings.rotate_wait;
        let mut i = 0;
        while i < self.retired.len() {
            let r = &mut self.retired[i];
            match drain(
                &self.pipeline,
                self.source,
                &mut r.followed.file,
                &mut r.followed.splitter,
                &mut self.buf,
            ) {
                Ok(0) => {}
                Ok(n) => {
                    r.followed.offset += n;
                    r.last_data = Instant::now();
                }
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
                self.pipeline.finish(self.source, &mut r.followed.splitter);
                continue;
            }
            i += 1;
        }
    }

    /// Reads one followed file; true when it stopped being followed.
    fn poll_file(&mut self, path: &Path) -> bool {
        let Some(f) = self.files.get_mut(path) else {
            return false;
        };
        // Truncation: the open file is shorter than what was read.
        match f.file.metadata() {
            Ok(m) if m.len() < f.offset => {
                self.pipeline.event(
                    self.source,
                    SourceEvent::Truncated {
                        path,
                        size: m.len(),
                        offset: f.offset,
                    },
                );
                f.offset = 0;
                f.splitter.reset();
                if let Err(error) = f.file.seek(SeekFrom::Start(0)) {
                    self.pipeline.event(
                        self.source,
                        SourceEvent::ReadError {
                            path,
                            error: &error,
                        },
                    );
                }
            }
            _ => {}
        }
        match drain(
            &self.pipeline,
            self.source,
            &mut f.file,
            &mut f.splitter,
            &mut self.buf,
        ) {
            Ok(n) => f.offset += n,
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
        // Rotation or removal: the path no longer names the open file. What was
        // appended to the old file before it was replaced has just been read.
        let replaced = match std::fs::metadata(path) {
            Ok(m) => identity(&m) != f.identity,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
        };
        if !replaced {
            return false;
        }
        // Read once more: the writer may have appended between the drain and the check.
        if let Ok(n) = drain(
            &self.pipeline,
            self.source,
            &mut f.file,
            &mut f.splitter,
            &mut self.buf,
        ) {
            f.offset += n;
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

/// The directories to watch for change notifications: the parent of each pattern's
/// literal prefix that exists.
fn watch_dirs(patterns: &[String]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = patterns
        .iter()
        .filter_map(|p| {
            let literal: PathBuf = Path::new(p)
                .components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect();
            let dir = if literal.as_os_str() == p.as_str() {
                literal.parent()?.to_path_buf()
            } else {
                literal
            };
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            dir.is_dir().then_some(dir)
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Follows the configured files until `token` is cancelled.
/// `first_poll` is sent once the files found at start-up are open at their start
/// positions, so that from then on every appended line is counted.
pub async fn run(
    mut tailer: Tailer,
    token: CancellationToken,
    mut first_poll: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let wake = Arc::new(Notify::new());
    let glob_now = Arc::new(AtomicBool::new(false));
    let _watcher = if !tailer.settings.notify {
        None
    } else {
        let (wake, glob_now) = (wake.clone(), glob_now.clone());
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res {
                if matches!(
                    event.kind,
                    notify::EventKind::Create(_)
                        | notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                        | notify::EventKind::Remove(_)
                ) {
                    glob_now.store(true, Ordering::Relaxed);
                }
                wake.notify_one();
            }
        });
        match watcher {
            Ok(mut w) => {
                use notify::Watcher;
                for dir in watch_dirs(&tailer.settings.paths) {
                    if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch directory; polling it instead.");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "File change notifications unavailable; polling instead.");
                None
            }
        }
    };
    let pipeline = tailer.pipeline.clone();
    let source = tailer.source;
    pipeline.event(source, SourceEvent::Up(true));
    let poll_interval = tailer.settings.poll_interval;
    loop {
        let force = glob_now.swap(false, Ordering::Relaxed);
        tailer = match tokio::task::spawn_blocking(move || {
            tailer.poll(force);
            tailer
        })
        .await
        {
            Ok(t) => t,
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
            _ = token.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll_interval) => {}
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
        drain(pipeline, source, &mut file, &mut splitter, &mut buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        pipeline.finish(source, &mut splitter);
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
        let got = watch_dirs(&[
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
