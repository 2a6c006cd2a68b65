//! Following open files: reading them to their end, and what happens to them while
//! they are followed (rotation, removal, truncation, a young file's growing
//! fingerprint). Rotated and removed files are *retired*: still read until quiet.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::StartAt;
use crate::ledger::{FileKey, Position, FINGERPRINT_BYTES};
use crate::lines::LineSplitter;
use crate::pipeline::{Pipeline, SourceEvent};
use crate::source::identity::{FileId, Inode};

use super::{drain, end_of_last_line, Drained, Reading, Start, Tailer};
use crate::ledger::SourceId;

pub(super) struct Retired {
    pub(super) path: PathBuf,
    pub(super) followed: Followed,
    pub(super) last_data: Instant,
}

pub(super) struct Followed {
    pub(super) key: FileKey,
    pub(super) file: File,
    pub(super) id: FileId,
    /// Bytes read from the file (the splitter may hold the last few, a partial line).
    pub(super) read: u64,
    pub(super) splitter: LineSplitter,
    /// When a read last reached the file's end (see [`super::LIVE_WINDOW`]); for a
    /// file opened before its first read, see [`Tailer::born_live`].
    pub(super) caught_up: Option<Instant>,
}

impl Followed {
    /// Reads to the end through the pipeline, moving the committed position along;
    /// with `guarded`, a block read across a truncation is not counted.
    pub(super) fn drain(
        &mut self,
        pipeline: &Pipeline,
        source: SourceId,
        buf: &mut [u8],
        guarded: bool,
        live_window: std::time::Duration,
    ) -> std::io::Result<Drained> {
        let reading = Reading {
            key: Some((self.key, self.read)),
            guard: guarded.then_some(self.id),
            live_until: self.caught_up.map(|t| t + live_window),
        };
        let d = drain(
            pipeline,
            source,
            &mut self.file,
            &mut self.splitter,
            buf,
            reading,
        )?;
        self.read += d.bytes;
        if !d.replaced {
            self.caught_up = Some(Instant::now());
        }
        Ok(d)
    }
}

impl Tailer {
    /// Whether what a file holds when it is opened is live: only for a file found while
    /// running that was created within the live window (a new log, or the new file of a
    /// rotation), as if the reader had been at its end when it was created. (A file
    /// copied into the patterns that recently is taken as live too: backfill old logs
    /// under a name the patterns do not match, or with their timestamps.)
    fn born_live(&self, meta: &std::fs::Metadata) -> Option<Instant> {
        if !self.started {
            return None;
        }
        let age = meta.created().ok()?.elapsed().unwrap_or_default();
        (age <= self.live_window())
            .then(|| Instant::now().checked_sub(age))
            .flatten()
    }

    /// Opens a file and starts following it; `retire` puts it straight among the
    /// retired files (a rotated name found at start-up).
    pub(super) fn open(&mut self, path: &Path, start: Start, retire: bool) -> std::io::Result<()> {
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
            caught_up: self.born_live(&meta),
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

    /// Reads retired files; forgets those quiet for `rotate_wait`, counting a last
    /// line left without its newline.
    pub(super) fn poll_retired(&mut self) {
        let (wait, window) = (self.settings.rotate_wait, self.live_window());
        let mut i = 0;
        while i < self.retired.len() {
            let r = &mut self.retired[i];
            match r
                .followed
                .drain(&self.pipeline, self.source, &mut self.buf, false, window)
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
    pub(super) fn replaced_in_place(f: &Followed) -> bool {
        !f.id.matches(&f.file)
    }

    /// Truncation: the open file is shorter than what was read, or its first bytes are
    /// no longer the ones it started with. The file is then read again from its start;
    /// returns where it was, to look for a copy holding the rest.
    pub(super) fn check_truncated(&mut self, path: &Path, force: bool) -> Option<Position> {
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

    /// Reads one followed file; true when it stopped being followed.
    pub(super) fn poll_file(&mut self, path: &Path) -> bool {
        let mut replaced = false;
        let window = self.live_window();
        // A file replaced under the reader is handled as a truncation and read again:
        // twice at most per round, the next round goes on.
        for _ in 0..2 {
            if let Some(before) = self.check_truncated(path, replaced) {
                self.finish_from_copy(before);
            }
            let Some(f) = self.files.get_mut(path) else {
                return false;
            };
            match f.drain(&self.pipeline, self.source, &mut self.buf, true, window) {
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
            Ok(m) => Inode::of(&m) != f.id.inode(),
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
