//! Property test of the tailer against a model: random interleavings of appends,
//! partial writes, rotations, truncations, deletions, restarts and crashes; every
//! complete record written (a line, or an object pretty-printed over several lines) is
//! counted exactly once.
//!
//! The tailer runs in-process and is driven by hand (no timers): `poll` is one round
//! of reading, `commit` one commit of the state file. Two assumptions of the real
//! world are built into the operations: a rotation comes after the tailer has caught
//! up with and committed the previous one and has read some of the current file
//! (rotations are far apart next to the poll and commit intervals), though lines keep
//! being written right up to it; and a rotated file stays open until the end of the
//! test (`rotate_wait` is long). A file copytruncated before the tailer read a byte
//! of it has no fingerprint to find its copy by: docs/operations.md, "Rotation".

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use runway_exporter::{build_pipeline, restore, Pipeline, Settings, StartAt, Tailer};

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Partial(u8),
    FinishPartial,
    Poll,
    Commit,
    Rotate(u8),
    CopyTruncate(u8),
    DeleteRecreate(u8),
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..40).prop_map(Op::Append),
        1 => (1u8..30).prop_map(Op::Partial),
        1 => Just(Op::FinishPartial),
        3 => Just(Op::Poll),
        2 => Just(Op::Commit),
        1 => (0u8..20).prop_map(Op::Rotate),
        1 => (0u8..20).prop_map(Op::CopyTruncate),
        1 => (0u8..20).prop_map(Op::DeleteRecreate),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

struct World {
    dir: tempfile::TempDir,
    settings: Settings,
    pipeline: Arc<Pipeline>,
    tailer: Tailer,
    /// Complete records written so far (each a distinct task).
    complete: u64,
    /// The record being written, and how much of it is in the file.
    partial: Option<(String, usize)>,
    next_id: u64,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), b"").unwrap();
        let mut settings = Settings::default();
        settings.state.dir = dir.path().join("state");
        settings.file.paths = vec![dir.path().join("app.log").display().to_string()];
        settings.file.rotated = ["app.log.1", "app.log.2"]
            .iter()
            .map(|n| dir.path().join(n).display().to_string())
            .collect();
        settings.file.start_at = StartAt::Beginning;
        settings.file.glob_interval = Duration::ZERO;
        settings.file.rotate_wait = Duration::from_secs(3600);
        // Small blocks: lines and fingerprints cross block boundaries.
        settings.file.read_block_bytes = 4096;
        let (pipeline, tailer) = Self::boot(&settings);
        World {
            dir,
            settings,
            pipeline,
            tailer,
            complete: 0,
            partial: None,
            next_id: 0,
        }
    }

    fn boot(settings: &Settings) -> (Arc<Pipeline>, Tailer) {
        let pipeline = Arc::new(build_pipeline(settings).unwrap());
        let checkpoint = restore(&pipeline, &settings.state.dir).checkpoint("file");
        let mut tailer = Tailer::new(settings.file.clone(), pipeline.clone(), checkpoint);
        tailer.start();
        pipeline.commit(&settings.state.dir).unwrap();
        (pipeline, tailer)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, path: &Path, bytes: &[u8]) {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    /// The next record: one line, or (every third) a task pretty-printed over several
    /// lines as the SDKs' `to_json()` writes it, so that partial writes, crashes,
    /// commits and rotations also fall inside multi-line objects.
    fn line(&mut self) -> String {
        self.next_id += 1;
        // Padding makes records of different lengths.
        let pad = "x".repeat((self.next_id % 17) as usize);
        if self.next_id.is_multiple_of(3) {
            format!(
                "{{\n  \"id\": \"task-{}\",\n  \"status\": \"CANCELLED\",\n  \"cost\": {{\n    \"credits\": 0\n  }},\n  \"pad\": \"{pad}\"\n}}\n",
                self.next_id
            )
        } else {
            format!(
                "{{\"id\":\"task-{}\",\"status\":\"CANCELLED\",\"pad\":\"{pad}\"}}\n",
                self.next_id
            )
        }
    }

    fn append(&mut self, n: u8) {
        self.finish_partial();
        let mut text = String::new();
        for _ in 0..n {
            text.push_str(&self.line());
        }
        self.write(&self.path("app.log"), text.as_bytes());
        self.complete += n as u64;
    }

    fn partial(&mut self, k: u8) {
        if self.partial.is_some() {
            return;
        }
        let line = self.line();
        let k = (k as usize).min(line.len() - 1);
        self.write(&self.path("app.log"), &line.as_bytes()[..k]);
        self.partial = Some((line, k));
    }

    fn finish_partial(&mut self) {
        if let Some((line, k)) = self.partial.take() {
            self.write(&self.path("app.log"), &line.as_bytes()[k..]);
            self.complete += 1;
        }
    }

    fn poll(&mut self) {
        self.tailer.poll(false);
    }

    fn commit(&mut self) {
        self.pipeline.commit(&self.settings.state.dir).unwrap();
    }

    /// The tailer has read some of the file, caught up and committed, then `more`
    /// lines it has not read yet are written.
    fn before_rotation(&mut self, more: u8) {
        self.append(1);
        self.poll();
        self.commit();
        self.append(more);
    }

    fn shift_rotated(&self) {
        if self.path("app.log.1").exists() {
            std::fs::rename(self.path("app.log.1"), self.path("app.log.2")).unwrap();
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append(n) => self.append(n),
            Op::Partial(k) => self.partial(k),
            Op::FinishPartial => self.finish_partial(),
            Op::Poll => self.poll(),
            Op::Commit => self.commit(),
            Op::Rotate(more) => {
                self.before_rotation(more);
                self.shift_rotated();
                std::fs::rename(self.path("app.log"), self.path("app.log.1")).unwrap();
                std::fs::write(self.path("app.log"), b"").unwrap();
            }
            Op::CopyTruncate(more) => {
                self.before_rotation(more);
                self.shift_rotated();
                std::fs::copy(self.path("app.log"), self.path("app.log.1")).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(self.path("app.log"))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
            }
            Op::DeleteRecreate(more) => {
                self.before_rotation(more);
                std::fs::remove_file(self.path("app.log")).unwrap();
                std::fs::write(self.path("app.log"), b"").unwrap();
                // A deleted file's lines live only in the open descriptor: read and
                // committed before a crash, or gone with the process (docs/operations.md, "Rotation").
                self.poll();
                self.commit();
            }
            Op::Restart => {
                // A clean stop reads what is there, then commits (file::run on SIGTERM).
                self.poll();
                self.commit();
                (self.pipeline, self.tailer) = Self::boot(&self.settings);
            }
            Op::Crash => {
                // Whatever was not committed is gone with the process.
                (self.pipeline, self.tailer) = Self::boot(&self.settings);
            }
        }
    }

    /// `[counted, duplicate, non_terminal, rejected]` of the file source.
    fn results(&self) -> [u64; 4] {
        let r = self.pipeline.with_ledger(|l| {
            l.own
                .sources()
                .iter()
                .find(|s| s.name == "file")
                .map(|s| s.results)
                .unwrap_or_default()
        });
        [r[0], r[1], r[2], r[3]]
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_complete_line_is_counted_exactly_once(ops in proptest::collection::vec(op(), 1..40)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
        }
        w.poll();
        w.poll();
        prop_assert_eq!(w.results(), [w.complete, 0, 0, 0], "ops: {:?}", ops);
        // And the committed state says the same after a restart.
        w.apply(&Op::Restart);
        w.poll();
        prop_assert_eq!(w.results(), [w.complete, 0, 0, 0], "after a restart; ops: {:?}", ops);
    }
}
