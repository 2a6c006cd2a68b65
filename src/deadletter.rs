//! The dead-letter file: every rejected line, with its reason, so an operator can see
//! what was rejected without turning on debug logging.
//!
//! One JSON object per line: `{"time", "source", "reason", "bytes", "line"}`, where
//! `line` is the rejected line cut to `max_line_bytes` (invalid UTF-8 replaced) and
//! `bytes` its original length as far as it was read. The file is *size-capped*: when
//! the next entry would pass `max_bytes`, the file is renamed to `<path>.1` (replacing
//! the previous one) and a new one is started, so the two take at most `2 x max_bytes`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub max_line_bytes: usize,
}

/// An open dead-letter file.
#[derive(Debug)]
pub struct DeadLetter {
    config: DeadLetterConfig,
    out: BufWriter<File>,
    size: u64,
}

impl DeadLetter {
    pub fn open(config: DeadLetterConfig) -> std::io::Result<DeadLetter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        let size = file.metadata()?.len();
        Ok(DeadLetter {
            config,
            out: BufWriter::new(file),
            size,
        })
    }

    /// How many bytes of a line an entry keeps.
    pub fn max_line_bytes(&self) -> usize {
        self.config.max_line_bytes
    }

    /// Appends one rejected line; `line` may already be cut, `bytes` is its full length.
    pub fn write(
        &mut self,
        source: &str,
        reason: &str,
        line: &[u8],
        bytes: usize,
    ) -> std::io::Result<()> {
        let cut = &line[..line.len().min(self.config.max_line_bytes)];
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut entry = serde_json::to_vec(&serde_json::json!({
            "time": (time * 1000.0).round() / 1000.0,
            "source": source,
            "reason": reason,
            "bytes": bytes.max(line.len()),
            "line": String::from_utf8_lossy(cut),
        }))?;
        entry.push(b'\n');
        if self.size > 0 && self.size + entry.len() as u64 > self.config.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(&entry)?;
        self.size += entry.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let mut old = self.config.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.config.path, &old)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.config.path)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_cut_and_the_file_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let mut d = DeadLetter::open(DeadLetterConfig {
            path: path.clone(),
            max_bytes: 2000,
            max_line_bytes: 16,
        })
        .unwrap();
        d.write("file", "invalid_utf8", b"abc\xff", 4).unwrap();
        d.flush().unwrap();
        let first: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["reason"], "invalid_utf8");
        assert_eq!(first["line"], "abc\u{fffd}");
        assert_eq!(first["bytes"], 4);
        for _ in 0..100 {
            d.write("file", "invalid_json", &[b'x'; 5000], 5000)
                .unwrap();
        }
        d.flush().unwrap();
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        let rotated = dir.path().join("dead.jsonl.1");
        assert!(size(&path) <= 2000 && size(&rotated) <= 2000);
        let last = std::fs::read_to_string(&path).unwrap();
        let entry: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
        assert_eq!(entry["line"], "x".repeat(16));
        assert_eq!(entry["bytes"], 5000);
    }
}
