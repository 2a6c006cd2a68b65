//! Change notifications for the file tailer: the directories of the configured patterns
//! are watched (inotify through `notify`), so that an append or a new file wakes the
//! reader before its next poll. The directories follow the patterns: [`Watch::follow`]
//! watches those of patterns added by a reload, or created since, and stops watching
//! those no pattern names any more.

use crate::source::identity::Inode;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::Watcher;
use tokio::sync::Notify;

/// The watcher and what it wakes.
pub struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    /// Watched directories, with the device and inode watched: a directory removed and
    /// created again is another one, whose watch the kernel dropped with the old.
    watched: BTreeMap<PathBuf, Inode>,
    /// Notified at every change.
    pub wake: Arc<Notify>,
    /// Set when a file was created, renamed or removed: the patterns are to be expanded.
    pub glob_now: Arc<AtomicBool>,
    /// Set when a directory was removed: it may have been a watched one, whose watch
    /// the kernel dropped (a directory created again under its name, even on the same
    /// inode, is not watched): everything is watched afresh.
    rewatch: Arc<AtomicBool>,
}

impl Watch {
    /// Notifications when `enabled` and the platform has them; else polling only.
    pub fn new(enabled: bool) -> Watch {
        let wake = Arc::new(Notify::new());
        let glob_now = Arc::new(AtomicBool::new(false));
        let rewatch = Arc::new(AtomicBool::new(false));
        let watcher = enabled
            .then(|| watcher(&wake, &glob_now, &rewatch))
            .flatten();
        Watch {
            watcher,
            watched: BTreeMap::new(),
            wake,
            glob_now,
            rewatch,
        }
    }

    /// Watches the directories of `patterns` that exist and are not watched yet (or
    /// were created again since), and stops watching the others.
    pub fn follow(&mut self, patterns: &[String]) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        if self.rewatch.swap(false, Ordering::Relaxed) {
            for dir in std::mem::take(&mut self.watched).into_keys() {
                let _ = w.unwatch(&dir);
            }
        }
        let wanted: BTreeMap<PathBuf, Inode> = watch_dirs(patterns)
            .into_iter()
            .filter_map(|d| {
                let m = std::fs::metadata(&d).ok()?;
                Some((d, Inode::of(&m)))
            })
            .collect();
        self.watched.retain(|dir, id| {
            let keep = wanted.get(dir) == Some(id);
            if !keep {
                let _ = w.unwatch(dir);
            }
            keep
        });
        for (dir, id) in wanted {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir, id);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch directory; polling it instead.");
                }
            }
        }
    }

    /// The directories watched.
    #[cfg(test)]
    pub fn watched(&self) -> impl Iterator<Item = &Path> {
        self.watched.keys().map(PathBuf::as_path)
    }
}

fn watcher(
    wake: &Arc<Notify>,
    glob_now: &Arc<AtomicBool>,
    rewatch: &Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    let (wake, glob_now, rewatch) = (wake.clone(), glob_now.clone(), rewatch.clone());
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if matches!(
                event.kind,
                notify::EventKind::Remove(notify::event::RemoveKind::Folder)
                    | notify::EventKind::Remove(notify::event::RemoveKind::Any)
            ) {
                rewatch.store(true, Ordering::Relaxed);
            }
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
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "File change notifications unavailable; polling instead.");
            None
        }
    }
}

/// The directories to watch for change notifications: the parent of each pattern's
/// literal prefix that exists.
pub fn watch_dirs(patterns: &[String]) -> Vec<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watched_directories_follow_the_patterns() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        let pattern = |d: &Path| format!("{}/*.log", d.display());
        let mut w = Watch::new(true);
        w.follow(&[pattern(&a), pattern(&b)]);
        assert_eq!(
            w.watched().collect::<Vec<_>>(),
            [a.as_path()],
            "b does not exist yet"
        );
        std::fs::create_dir(&b).unwrap();
        w.follow(&[pattern(&a), pattern(&b)]);
        assert_eq!(w.watched().collect::<Vec<_>>(), [a.as_path(), b.as_path()]);
        // A reload drops a's pattern.
        w.follow(&[pattern(&b)]);
        assert_eq!(w.watched().collect::<Vec<_>>(), [b.as_path()]);
        // b removed and created again: the new directory is watched (a file created in
        // it wakes the reader), even when it has the old one's inode.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wake = w.wake.clone();
        let wait_for = |flag: &AtomicBool| {
            rt.block_on(async {
                let set = async {
                    while !flag.load(Ordering::Relaxed) {
                        wake.notified().await;
                    }
                };
                tokio::time::timeout(std::time::Duration::from_secs(10), set).await
            })
        };
        std::fs::remove_dir(&b).unwrap();
        let (rewatch, glob_now) = (w.rewatch.clone(), w.glob_now.clone());
        assert!(wait_for(&rewatch).is_ok(), "the removal was not noticed");
        std::fs::create_dir(&b).unwrap();
        w.follow(&[pattern(&b)]);
        glob_now.store(false, Ordering::Relaxed);
        std::fs::write(b.join("new.log"), b"x\n").unwrap();
        assert!(
            wait_for(&glob_now).is_ok(),
            "no notification from the re-created directory"
        );
    }
}
