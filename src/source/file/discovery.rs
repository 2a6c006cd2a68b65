//! Discovery: expanding the configured patterns into the files to follow, at most
//! `max_files`, and opening the new ones where they start.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Instant, UNIX_EPOCH};

use crate::pipeline::SourceEvent;

use super::Tailer;
use crate::source::identity::Inode;

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

impl Tailer {
    /// Expands the patterns and follows new matches, within `max_files`.
    pub(super) fn rescan(&mut self) {
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
            let id = Inode::of(&meta);
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
}
