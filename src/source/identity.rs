//! A followed file's identity: its device and inode, and a *fingerprint*, the xxh3 hash
//! of its first `fp_len` bytes (at most [`FINGERPRINT_BYTES`]). The inode alone is not
//! enough: a file deleted and created again may get the same inode, and a file
//! truncated and written again keeps its inode. Whether a file is still the one a
//! fingerprint was taken of is [`FileId::matches`], the one place that decides it.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::ledger::{Position, FINGERPRINT_BYTES};

/// Device and inode: which file a path names, without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Inode {
    pub dev: u64,
    pub ino: u64,
}

impl Inode {
    pub fn of(meta: &std::fs::Metadata) -> Inode {
        Inode {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Device, inode and fingerprint of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// Bytes fingerprinted: 0 when the file was empty (then any content matches).
    pub fp_len: u32,
    pub fp: u64,
}

impl FileId {
    /// The identity of an open file: its first bytes (as many as it has, up to
    /// [`FINGERPRINT_BYTES`]) fingerprinted.
    pub fn of(file: &File) -> std::io::Result<FileId> {
        let meta = file.metadata()?;
        let fp_len = meta.len().min(FINGERPRINT_BYTES as u64) as u32;
        let fp = fingerprint(file, fp_len as usize)?.unwrap_or(0);
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            fp_len,
            fp,
        })
    }

    /// The identity a checkpoint recorded.
    pub fn of_position(p: &Position) -> FileId {
        FileId {
            dev: p.dev,
            ino: p.ino,
            fp_len: p.fp_len,
            fp: p.fp,
        }
    }

    /// Device and inode.
    pub fn inode(&self) -> Inode {
        Inode {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// Whether any bytes were fingerprinted.
    pub fn fingerprinted(&self) -> bool {
        self.fp_len > 0
    }

    /// Whether `file` starts with the fingerprinted bytes (true without a fingerprint);
    /// an error reading it is an error.
    pub fn matches_or_err(&self, file: &File) -> std::io::Result<bool> {
        if !self.fingerprinted() {
            return Ok(true);
        }
        Ok(fingerprint(file, self.fp_len as usize)? == Some(self.fp))
    }

    /// Whether `file` starts with the fingerprinted bytes (true without a fingerprint);
    /// a file that cannot be read does not.
    pub fn matches(&self, file: &File) -> bool {
        self.matches_or_err(file).unwrap_or(false)
    }

    /// A young file grew: fingerprints its first `len` bytes (when it has them).
    pub fn grow(&mut self, file: &File, len: u32) -> bool {
        match fingerprint(file, len as usize) {
            Ok(Some(fp)) => {
                self.fp_len = len;
                self.fp = fp;
                true
            }
            _ => false,
        }
    }
}

/// The fingerprint of a file's first `len` bytes, or `None` when it is shorter.
fn fingerprint(file: &File, len: usize) -> std::io::Result<Option<u64>> {
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let buf = &mut buf[..len.min(FINGERPRINT_BYTES)];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(xxhash_rust::xxh3::xxh3_64(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_matches_its_own_first_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"").unwrap();
        let empty = FileId::of(&File::open(&path).unwrap()).unwrap();
        assert!(!empty.fingerprinted());
        std::fs::write(&path, b"first line\n").unwrap();
        let file = File::open(&path).unwrap();
        assert!(
            empty.matches(&file),
            "nothing fingerprinted: anything matches"
        );
        let id = FileId::of(&file).unwrap();
        assert_eq!((id.fp_len, id.inode()), (11, empty.inode()));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"appended\n")
            .unwrap();
        assert!(id.matches(&file), "appending keeps the first bytes");
        std::fs::write(&path, b"other line\n").unwrap();
        assert!(!id.matches(&file), "rewritten in place");
        std::fs::write(&path, b"first").unwrap();
        assert!(!id.matches(&file), "shorter than the fingerprint");
        let mut grown = FileId::of_position(&Position {
            source: "file".into(),
            path: "a.log".into(),
            dev: id.dev,
            ino: id.ino,
            fp_len: 0,
            fp: 0,
            offset: 0,
            skipping: false,
        });
        assert!(grown.grow(&file, 5) && grown.matches(&file));
        assert!(!grown.grow(&file, 6), "the file has only 5 bytes");
    }
}
