//! Recovery after a restart: where each file found at start-up starts, by the
//! checkpoint the state file held (resumed, read from its start, or found again under a
//! rotated name), and reading the rest of a truncated file from its copy.

use std::fs::File;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::ledger::Position;
use crate::pipeline::SourceEvent;
use crate::source::identity::{FileId, Inode};

use super::{expand, Tailer};

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
pub(super) enum Start {
    /// Resume a checkpointed file.
    Resume(Position),
    /// At `start_at` for a file found at start-up, else from the start.
    Fresh,
    /// From the start.
    Beginning,
}

impl Tailer {
    /// Where a file found at start-up starts, by the checkpoint: its position when it
    /// is the same file (same device and inode, and the same first bytes); its start
    /// when only the inode is the same (a new file on a reused inode, or a file
    /// truncated and written again while the exporter was stopped).
    pub(super) fn checkpointed(&mut self, file: &File, id: Inode) -> Start {
        let Some(cp) = self.checkpoint.as_mut() else {
            return Start::Fresh;
        };
        let Some(i) = cp
            .positions
            .iter()
            .position(|p| FileId::of_position(p).inode() == id)
        else {
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
    pub(super) fn created_since_checkpoint(&self, meta: &std::fs::Metadata) -> bool {
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

    /// At start-up: checkpointed files renamed while the exporter was stopped are read
    /// to their end under a `rotated` name; the rest are reported lost.
    pub(super) fn resume_rotated(&mut self) {
        // Oldest first (app.log.2 before app.log.1), as the lines were written.
        let mut rotated = expand(&self.settings.rotated);
        rotated.reverse();
        for path in rotated {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let id = Inode::of(&meta);
            if self.files.values().any(|f| f.id.inode() == id) {
                continue;
            }
            let start = match self.checkpointed(&file, id) {
                // Renamed while the exporter was stopped: go on where it was.
                Start::Resume(p) => Some(Start::Resume(p)),
                _ => match self.copy_of_checkpointed(&file, meta.len()) {
                    // A copy of a checkpointed file (copytruncate while stopped).
                    Some(p) => Some(Start::Resume(Position {
                        dev: id.dev,
                        ino: id.ino,
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
    pub(super) fn copy_of_checkpointed(&mut self, file: &File, len: u64) -> Option<Position> {
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

    /// After a copytruncate: when a `rotated` file is a copy of the truncated one (same
    /// first bytes, at least as long as what was counted), the lines not yet read are
    /// read from the copy. Only lines written between the copy and the truncation are
    /// then lost, in neither file.
    pub(super) fn finish_from_copy(&mut self, before: Position) {
        let before_id = FileId::of_position(&before);
        if !before_id.fingerprinted() {
            return;
        }
        for path in expand(&self.settings.rotated) {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let id = Inode::of(&meta);
            let known = id == before_id.inode()
                || self.files.values().any(|f| f.id.inode() == id)
                || self.retired.iter().any(|r| r.followed.id.inode() == id);
            if known || meta.len() < before.offset {
                continue;
            }
            if before_id.matches(&file) {
                let resume = Position {
                    dev: id.dev,
                    ino: id.ino,
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
}
