//! File checkpoints: where reading each followed file has got to, committed with the
//! counts its lines produced (so a restart resumes exactly there).

use std::collections::BTreeMap;

use super::{FileKey, Position};

/// The followed files' positions, by key.
#[derive(Debug, Default)]
pub struct Checkpoints {
    positions: BTreeMap<FileKey, Position>,
}

impl Checkpoints {
    pub fn get(&self, key: FileKey) -> Option<&Position> {
        self.positions.get(&key)
    }

    /// Every position, by key.
    pub fn positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.values()
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Starts tracking a file at `position`.
    pub fn track(&mut self, key: FileKey, position: Position) {
        self.positions.insert(key, position);
    }

    /// Stops tracking a file.
    pub(super) fn untrack(&mut self, key: FileKey) {
        self.positions.remove(&key);
    }

    /// A young file's fingerprint grew.
    pub(super) fn set_fingerprint(&mut self, key: FileKey, fp_len: u32, fp: u64) {
        if let Some(p) = self.positions.get_mut(&key) {
            p.fp_len = fp_len;
            p.fp = fp;
        }
    }

    /// Reading has got to `offset` (the end of the last complete line counted).
    pub fn advance(&mut self, key: FileKey, offset: u64, skipping: bool) {
        if let Some(p) = self.positions.get_mut(&key) {
            p.offset = offset;
            p.skipping = skipping;
        }
    }

    /// The file was truncated: reading starts again at 0.
    pub fn rewind(&mut self, key: FileKey) {
        self.advance(key, 0, false);
    }
}
