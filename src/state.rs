//! The state file: counters, file positions and the dedupe window, committed together.
//!
//! A *commit* writes all three, as they stand at one instant under the ledger's lock,
//! to `<state dir>/.runway-exporter.state.tmp`, then (without the lock) fsyncs it,
//! renames the current `runway-exporter.state` to `runway-exporter.state.prev` (the
//! previous generation), renames the new file to `runway-exporter.state` and fsyncs the
//! directory. Each rename replaces one file whole, and the new file is durable before
//! either, so a crash at any point leaves at least one good generation: the new file,
//! the one before it, or both. Only the totals of a successful commit are published, so
//! `/metrics` never shows a count that a crash could take back, and after a restart
//! reading resumes at the committed positions with the committed counters: no line
//! counted twice, no complete line lost.
//!
//! Format (versioned): one line of JSON (the header: format name, `version`, time,
//! totals, positions, the number of hashes in each window and their checksums), then
//! the dedupe window, then the window of ids whose queue time was observed, each as
//! little-endian u64 hashes, oldest first, then (version 4) the CRC-32 of every byte
//! before it, little-endian: a flipped bit or a damaged burst of up to 32 bits anywhere
//! in the file is always detected (any other damage but for one chance in 2^32), in the
//! counts and ids of the header as in the windows. Version 2 names every count
//! (`{"status":"SUCCEEDED","model":"gen4_turbo","tasks":3}`); version 1 held tuples and
//! arrays and is still read (module `v1`). Version 3 adds the duration and queue
//! histograms, the untimed counts, the recent failures of each code and the second
//! window; a version-2 file is read as one without them. Version 4 adds the CRC-32 at
//! the end and nothing else; versions 1 to 3 are read without it. Its size is bounded by
//! the configuration: `16 x dedupe_window` plus the capped label series and `max_files`
//! positions.
//!
//! A generation that cannot be used (truncated, a flipped bit, garbage, unreadable,
//! another format or a newer version, or counts the ledger refuses to restore) is
//! *damaged*: [`load`] moves it aside as `<its name>.corrupt-<unix time>` (logged at
//! ERROR) and takes the previous generation. Its positions and counts were committed
//! together, so reading again from its positions counts the lines since exactly once,
//! as after a crash just before the damaged commit. Only when no generation is usable
//! does the exporter start fresh.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::ledger::{Ledger, Position, Totals};
use format::{Convert, Header};

mod format;

/// The state file's name in the state directory.
pub const FILE_NAME: &str = "runway-exporter.state";
/// The previous generation: the state file the last commit replaced.
const PREV_NAME: &str = "runway-exporter.state.prev";
const TMP_NAME: &str = ".runway-exporter.state.tmp";
const FORMAT: &str = "runway-exporter-state";
/// The version this build writes; it reads every version from 1.
pub const VERSION: u32 = 4;
/// Largest header accepted when reading (the header holds only capped series).
const MAX_HEADER_BYTES: u64 = 64 * 1024 * 1024;
/// The CRC-32 of any data followed by its own CRC-32 (little-endian): a version-4 file
/// is whole when the CRC-32 of all its bytes, its checksum included, is this.
const CRC_RESIDUE: u32 = 0x2144_DF1C;

/// The generations of the state, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    /// What the last commit wrote.
    Current,
    /// What the commit before it wrote.
    Previous,
}

impl Generation {
    const ALL: [Generation; 2] = [Generation::Current, Generation::Previous];

    /// Its file's name in the state directory.
    fn file_name(self) -> &'static str {
        match self {
            Generation::Current => FILE_NAME,
            Generation::Previous => PREV_NAME,
        }
    }
}

/// A reader or writer that computes the CRC-32 of the bytes passing through it.
struct Summed<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<T> Summed<T> {
    fn new(inner: T) -> Summed<T> {
        Summed {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The CRC-32 of the bytes so far, followed by `buffered` (bytes not yet through).
    fn crc(&self, buffered: &[u8]) -> u32 {
        let mut crc = self.crc.clone();
        crc.update(buffered);
        crc.finalize()
    }
}

impl<R: Read> Read for Summed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Why the state could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write the state file in {dir}: {source}")]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {problem}")]
    Corrupt { path: PathBuf, problem: String },
}

/// The checksum of a window of no hashes.
fn empty_checksum() -> u64 {
    checksum([])
}

/// The checksum of a window's hashes, as written.
fn checksum(hashes: impl IntoIterator<Item = u64>) -> u64 {
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    for h in hashes {
        checksum.update(&h.to_le_bytes());
    }
    checksum.digest()
}

/// What a state file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub written_at: f64,
    pub totals: Totals,
    pub positions: Vec<Position>,
    /// When each source's file patterns were last expanded before the commit.
    pub scanned_at: std::collections::BTreeMap<String, f64>,
    /// Tasks the API source polls.
    pub api_tasks: Vec<crate::ledger::ApiTask>,
    /// Dedupe hashes, oldest first.
    pub dedupe: Vec<u64>,
    /// Hashes of the ids whose queue time was observed, oldest first.
    pub started: Vec<u64>,
}

/// A commit whose temporary file is written but not yet durable.
pub struct Pending {
    dir: PathBuf,
    file: BufWriter<Summed<File>>,
    /// The totals the commit holds, to publish once it is durable.
    pub totals: Totals,
    /// In a debug build, the digest of what the commit holds.
    pub digest: Option<Digest>,
}

/// The header of a commit of `ledger` (whose totals are `totals`) at `written_at`.
fn header(ledger: &Ledger, totals: &Totals, written_at: f64) -> Header {
    let contents = Contents {
        written_at,
        totals,
        positions: ledger.checkpoints.positions().collect(),
        scanned_at: ledger.scanned_at(),
        api_tasks: ledger.api.tasks().collect(),
    };
    let (dedupe, started) = (ledger.dedupe(), ledger.started_ids());
    contents.header(
        Window::of(dedupe.len(), dedupe.hashes()),
        Window::of(started.len(), started.hashes()),
    )
}

/// What a commit holds but its windows, borrowed from the ledger (or from a [`State`]).
struct Contents<'a> {
    written_at: f64,
    totals: &'a Totals,
    positions: Vec<&'a Position>,
    scanned_at: &'a std::collections::BTreeMap<String, f64>,
    api_tasks: Vec<&'a crate::ledger::ApiTask>,
}

/// A window of hashes as the header names it: how many, and their checksum.
#[derive(Debug, Clone, Copy)]
struct Window {
    len: u64,
    checksum: u64,
}

impl Window {
    fn of(len: usize, hashes: impl IntoIterator<Item = u64>) -> Window {
        Window {
            len: len as u64,
            checksum: checksum(hashes),
        }
    }
}

impl Contents<'_> {
    /// The header of a file of these contents and windows.
    fn header(&self, dedupe: Window, started: Window) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            written_at: self.written_at,
            totals: self.totals.clone().convert(),
            positions: self
                .positions
                .iter()
                .map(|p| (*p).clone().convert())
                .collect(),
            scanned_at: self.scanned_at.clone(),
            api_tasks: self
                .api_tasks
                .iter()
                .map(|t| (*t).clone().convert())
                .collect(),
            dedupe: dedupe.len,
            dedupe_checksum: dedupe.checksum,
            started: started.len,
            started_checksum: started.checksum,
        }
    }
}

/// What a commit of the ledger would hold, a hash per part, leaving out what may change
/// without being a reason for a commit (the time of writing, `scanned_at`): equal
/// digests, equal commits but for those. For the debug-build check that the ledger's
/// generation sees every change ([`crate::pipeline::Pipeline::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub totals: u64,
    pub positions: u64,
    pub api_tasks: u64,
    pub dedupe: u64,
    pub started: u64,
}

impl Digest {
    fn of(header: &Header) -> Digest {
        // A value that cannot be written hashes as nothing (the commit refuses it anyway).
        fn hash(value: &impl Serialize) -> u64 {
            xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(value).unwrap_or_default())
        }
        Digest {
            totals: hash(&header.totals),
            positions: hash(&header.positions),
            api_tasks: hash(&header.api_tasks),
            dedupe: header.dedupe_checksum ^ header.dedupe,
            started: header.started_checksum ^ header.started,
        }
    }
}

/// What a commit of `ledger` now would hold.
pub fn digest(ledger: &Ledger) -> Digest {
    Digest::of(&header(ledger, &ledger.totals(), 0.0))
}

/// For the ledger's tests: `totals` and `api_tasks` written in a header and read back.
#[cfg(test)]
pub(crate) fn through_header(
    totals: &Totals,
    api_tasks: &[crate::ledger::ApiTask],
) -> (Totals, Vec<crate::ledger::ApiTask>) {
    let contents = Contents {
        written_at: 0.0,
        totals,
        positions: Vec::new(),
        scanned_at: &Default::default(),
        api_tasks: api_tasks.iter().collect(),
    };
    let empty = Window::of(0, []);
    let line = header_line(&contents.header(empty, empty)).expect("reads back");
    let header: Header = serde_json::from_slice(&line).expect("a header");
    (header.totals.convert(), header.api_tasks.convert())
}

/// First half of a commit, under the ledger's lock: writes the temporary file.
pub fn begin(dir: &Path, ledger: &Ledger) -> Result<Pending, StateError> {
    let werr = |source| StateError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    let totals = ledger.totals();
    let header = header(ledger, &totals, unix_now());
    let head = header_line(&header).map_err(werr)?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(TMP_NAME))
        .map_err(werr)?;
    // The checksum is computed on the buffer's flushes, as the bytes go to the file.
    let mut out = BufWriter::with_capacity(256 * 1024, Summed::new(file));
    let hashes = ledger
        .dedupe()
        .hashes()
        .chain(ledger.started_ids().hashes());
    write_body(&mut out, &head, hashes).map_err(werr)?;
    Ok(Pending {
        dir: dir.to_path_buf(),
        file: out,
        digest: cfg!(debug_assertions).then(|| Digest::of(&header)),
        totals,
    })
}

/// The header's line, without its newline.
fn header_line(header: &Header) -> std::io::Result<Vec<u8>> {
    // The writer refuses what the reader would refuse (JSON has no infinity: a
    // non-finite number is written as null and not read back), so a commit can never
    // replace a good state file with one that would be moved aside at the next start.
    let head = serde_json::to_vec(header)?;
    if let Err(e) = serde_json::from_slice::<Header>(&head) {
        return Err(std::io::Error::other(format!(
            "the state would not read back ({e}); the last good state file is kept"
        )));
    }
    Ok(head)
}

/// Writes a state file after its header's line: the newline, the windows' `hashes`
/// and the CRC-32 of every byte written to `out`.
fn write_body<W: Write>(
    out: &mut BufWriter<Summed<W>>,
    head: &[u8],
    hashes: impl Iterator<Item = u64>,
) -> std::io::Result<()> {
    out.write_all(head)?;
    out.write_all(b"\n")?;
    for h in hashes {
        out.write_all(&h.to_le_bytes())?;
    }
    let crc = out.get_ref().crc(out.buffer());
    out.write_all(&crc.to_le_bytes())
}

impl Pending {
    /// Second half, without the lock: fsync, keep the current file as the previous
    /// generation, rename, fsync the directory. Nothing is renamed before the new file
    /// is durable, so a full or read-only disk fails the commit and leaves both
    /// generations as they were.
    pub fn finish(self) -> Result<Totals, StateError> {
        let dir = self.dir;
        let werr = |source| StateError::Write {
            dir: dir.clone(),
            source,
        };
        let file = self.file.into_inner().map_err(|e| werr(e.into_error()))?;
        file.inner.sync_all().map_err(werr)?;
        drop(file);
        // No current file (the first commit, or the crash or failure of a commit
        // between these two renames): the previous generation stays.
        match std::fs::rename(dir.join(FILE_NAME), dir.join(PREV_NAME)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(werr(e)),
            _ => {}
        }
        std::fs::rename(dir.join(TMP_NAME), dir.join(FILE_NAME)).map_err(werr)?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(werr)?;
        Ok(self.totals)
    }
}

/// Reads the current state file; `Ok(None)` when there is none.
#[cfg(test)]
pub fn read(dir: &Path) -> Result<Option<State>, StateError> {
    read_generation(dir, Generation::Current)
}

/// Reads one generation of the state; `Ok(None)` when there is none.
fn read_generation(dir: &Path, generation: Generation) -> Result<Option<State>, StateError> {
    let path = dir.join(generation.file_name());
    // Only a regular file (or a link to one) is opened: opening a FIFO would block
    // start-up, and a directory there would make every commit fail.
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => {
            return Err(StateError::Corrupt {
                path,
                problem: "not a regular file (a directory, FIFO or device)".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    decode(&path, file).map(Some)
}

/// Reads a state file's contents from `file`; `path` names it in the errors.
fn decode(path: &Path, file: impl Read) -> Result<State, StateError> {
    let corrupt = |problem: String| StateError::Corrupt {
        path: path.to_path_buf(),
        problem,
    };
    let rerr = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Every byte read from the file passes through the checksum.
    let mut r = BufReader::with_capacity(256 * 1024, Summed::new(file));
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(rerr)?;
    if line.last() != Some(&b'\n') {
        return Err(corrupt("no complete header line".into()));
    }
    #[derive(Deserialize)]
    struct Version {
        format: String,
        version: u32,
    }
    let v: Version = serde_json::from_slice(&line).map_err(|e| corrupt(format!("header: {e}")))?;
    if v.format != FORMAT {
        return Err(corrupt(format!("format {:?} is not {FORMAT:?}", v.format)));
    }
    let header: Header = match v.version {
        1 => serde_json::from_slice::<v1::Header>(&line)
            .map(Header::from)
            .map_err(|e| corrupt(format!("version 1 header: {e}")))?,
        2..=VERSION => {
            serde_json::from_slice(&line).map_err(|e| corrupt(format!("header: {e}")))?
        }
        newer => {
            return Err(corrupt(format!(
                "version {newer} (this build reads versions 1 to {VERSION}; was it written by a newer release?)"
            )))
        }
    };
    let dedupe = read_window(&mut r, header.dedupe, header.dedupe_checksum)
        .map_err(|p| corrupt(format!("dedupe window {p}")))?;
    let started = read_window(&mut r, header.started, header.started_checksum)
        .map_err(|p| corrupt(format!("window of started ids {p}")))?;
    let summed = v.version >= 4;
    if summed && r.read_exact(&mut [0u8; 4]).is_err() {
        return Err(corrupt("no checksum after the windows".into()));
    }
    if r.read(&mut [0u8; 1]).map_err(rerr)? != 0 {
        return Err(corrupt("data after the windows and checksum".into()));
    }
    if summed && r.get_ref().crc(&[]) != CRC_RESIDUE {
        return Err(corrupt("checksum does not match (damaged)".into()));
    }
    Ok(State {
        written_at: header.written_at,
        totals: header.totals.convert(),
        positions: header.positions.convert(),
        scanned_at: header.scanned_at,
        api_tasks: header.api_tasks.convert(),
        dedupe,
        started,
    })
}

/// Reads a window of `count` hashes that must have `checksum`; the error says what is
/// wrong with it.
fn read_window(r: &mut impl Read, count: u64, want: u64) -> Result<Vec<u64>, String> {
    // Grown as read: a made-up count must not reserve gigabytes up front.
    let mut hashes = Vec::with_capacity(count.min(1 << 16) as usize);
    let mut buf = [0u8; 8];
    for _ in 0..count {
        r.read_exact(&mut buf)
            .map_err(|_| format!("shorter than its {count} ids"))?;
        hashes.push(u64::from_le_bytes(buf));
    }
    if checksum(hashes.iter().copied()) != want {
        return Err("checksum does not match".into());
    }
    Ok(hashes)
}

/// Restores the newest usable generation of the state with `restore` and returns it
/// (`restore` may refuse a state, saying why, and must then leave what it restores into
/// as it was). Each damaged generation met on the way is moved aside, logged once at
/// ERROR, so that the exporter does not fail on it again at every start. `None` when no
/// generation is usable: the exporter starts fresh.
pub fn load(
    dir: &Path,
    mut restore: impl FnMut(&mut State) -> Result<(), String>,
) -> Option<State> {
    let mut damaged = false;
    for generation in Generation::ALL {
        let problem = match read_generation(dir, generation) {
            Ok(None) => continue,
            Ok(Some(mut state)) => match restore(&mut state) {
                Ok(()) => {
                    restored(dir, generation);
                    return Some(state);
                }
                Err(problem) => problem,
            },
            Err(StateError::Corrupt { problem, .. }) => problem,
            Err(e) => e.to_string(),
        };
        move_aside(dir, generation, &problem);
        damaged = true;
    }
    if damaged {
        tracing::warn!(dir = %dir.display(), "No usable state file; starting fresh according to start_at. Counters restart from 0 (Prometheus handles the reset).");
    }
    None
}

/// `generation` was restored.
fn restored(dir: &Path, generation: Generation) {
    match generation {
        Generation::Previous => tracing::warn!(
            path = %dir.join(PREV_NAME).display(),
            "State restored from the previous generation; the lines since its commit are read again, and counted once."
        ),
        Generation::Current => {
            // The next commit renames the current file over the previous one, which no
            // rename can do over a directory.
            let prev = dir.join(PREV_NAME);
            if std::fs::symlink_metadata(prev).is_ok_and(|m| m.is_dir()) {
                move_aside(dir, Generation::Previous, "a directory");
            }
        }
    }
}

/// Moves a generation that cannot be used aside as `<its name>.corrupt-<unix time>`,
/// logged once at ERROR.
fn move_aside(dir: &Path, generation: Generation, problem: &str) {
    let path = dir.join(generation.file_name());
    let aside = dir.join(format!(
        "{}.corrupt-{}",
        generation.file_name(),
        unix_now() as u64
    ));
    let moved = std::fs::rename(&path, &aside);
    tracing::error!(
        path = %path.display(),
        moved_to = %aside.display(),
        move_error = moved.err().map(|e| e.to_string()),
        problem = %problem,
        "State file is corrupt or cannot be used; moved aside. An older good generation is restored if there is one, else the exporter starts fresh according to start_at. Keep the moved file for a bug report."
    );
}

/// Version 1 of the state file, read and turned into today's: its counts were tuples
/// (`["SUCCEEDED","gen4_turbo",3]`) and arrays (`credits_unpriced: [succeeded, failed]`).
/// The oldest version-1 files hold `credits_charged` as `(model, credits)` of
/// SUCCEEDED tasks, from before credits had a status.
mod v1 {
    use serde::Deserialize;

    use super::format::{self, ApiTask, FailureSeries, Position, SourceTotals};

    #[derive(Deserialize)]
    pub struct Header {
        format: String,
        written_at: f64,
        totals: Totals,
        positions: Vec<Position>,
        #[serde(default)]
        scanned_at: std::collections::BTreeMap<String, f64>,
        #[serde(default)]
        api_tasks: Vec<ApiTask>,
        dedupe: u64,
        dedupe_checksum: u64,
    }

    #[derive(Deserialize)]
    struct Totals {
        tasks: Vec<(String, String, u64)>,
        failures: Vec<FailureSeries>,
        #[serde(deserialize_with = "charged")]
        credits_charged: Vec<(String, String, f64)>,
        #[serde(default)]
        credits_estimated: Vec<(String, String, f64)>,
        credits_lost: Vec<(String, String, f64)>,
        #[serde(default)]
        cost_mismatches: Vec<(String, String, u64)>,
        #[serde(default)]
        invalid_numbers: u64,
        credits_unpriced: [u64; 2],
        unknown_failure_codes: u64,
        label_overflow: [u64; 2],
        dead_letter: [u64; 2],
        sources: Vec<SourceTotals>,
        dedupe_ids: u64,
        #[serde(default)]
        api_requests: Vec<(String, String, u64)>,
        #[serde(default)]
        api_tasks_tracked: u64,
        #[serde(default)]
        organization: Option<Organization>,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        api_credits_in_flight: f64,
    }

    #[derive(Deserialize)]
    struct Organization {
        credit_balance: f64,
        models: Vec<(String, f64, Option<f64>, Option<f64>)>,
        #[serde(default)]
        max_monthly_credit_spend: Option<f64>,
    }

    #[derive(Deserialize)]
    struct Usage {
        date: String,
        models: Vec<(String, f64)>,
    }

    /// `credits_charged` in both its shapes.
    fn charged<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String, f64)>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            ByStatus(String, String, f64),
            /// Before credits had a status: SUCCEEDED tasks only.
            Succeeded(String, f64),
        }
        let entries: Vec<Entry> = Deserialize::deserialize(d)?;
        Ok(entries
            .into_iter()
            .map(|e| match e {
                Entry::ByStatus(s, m, v) => (s, m, v),
                Entry::Succeeded(m, v) => ("SUCCEEDED".into(), m, v),
            })
            .collect())
    }

    impl From<Header> for format::Header {
        fn from(h: Header) -> Self {
            format::Header {
                format: h.format,
                version: super::VERSION,
                written_at: h.written_at,
                totals: h.totals.into(),
                positions: h.positions,
                scanned_at: h.scanned_at,
                api_tasks: h.api_tasks,
                dedupe: h.dedupe,
                dedupe_checksum: h.dedupe_checksum,
                started: 0,
                started_checksum: super::empty_checksum(),
            }
        }
    }

    impl From<Totals> for format::Totals {
        fn from(t: Totals) -> Self {
            // Charged and estimated credits were two lists of the same keys.
            let mut credits = std::collections::BTreeMap::<(String, String), (f64, f64)>::new();
            for (status, model, v) in t.credits_charged {
                credits.entry((status, model)).or_default().0 += v;
            }
            for (status, model, v) in t.credits_estimated {
                credits.entry((status, model)).or_default().1 += v;
            }
            format::Totals {
                tasks: t
                    .tasks
                    .into_iter()
                    .map(|(status, model, tasks)| format::TaskSeries {
                        status,
                        model,
                        tasks,
                    })
                    .collect(),
                failures: t.failures,
                credits: credits
                    .into_iter()
                    .map(
                        |((status, model), (charged, estimated))| format::CreditSeries {
                            status,
                            model,
                            charged,
                            estimated,
                            estimated_by: None,
                        },
                    )
                    .collect(),
                credits_lost: t
                    .credits_lost
                    .into_iter()
                    .map(|(failure_code, model, credits)| format::LostSeries {
                        failure_code,
                        model,
                        credits,
                    })
                    .collect(),
                cost_mismatches: t
                    .cost_mismatches
                    .into_iter()
                    .map(|(failure_code, credits, tasks)| format::MismatchSeries {
                        failure_code,
                        credits,
                        tasks,
                    })
                    .collect(),
                invalid_numbers: t.invalid_numbers,
                credits_unpriced: format::Unpriced {
                    succeeded: t.credits_unpriced[0],
                    failed: t.credits_unpriced[1],
                    cancelled: 0,
                },
                unknown_failure_codes: t.unknown_failure_codes,
                label_overflow: format::LabelOverflow {
                    failure_code: t.label_overflow[0],
                    model: t.label_overflow[1],
                },
                dead_letter: format::DeadLetters {
                    written: t.dead_letter[0],
                    failed: t.dead_letter[1],
                },
                sources: t.sources,
                dedupe_ids: t.dedupe_ids,
                api_requests: t
                    .api_requests
                    .into_iter()
                    .map(|(endpoint, code, requests)| format::RequestSeries {
                        endpoint,
                        code,
                        requests,
                    })
                    .collect(),
                api_tasks_tracked: t.api_tasks_tracked,
                durations: Vec::new(),
                queues: Vec::new(),
                untimed: Vec::new(),
                recent: Vec::new(),
                estimates: Default::default(),
                flows: Default::default(),
                proxy_requests: Vec::new(),
                proxy_latency: Vec::new(),
                proxy_created: Vec::new(),
                proxy_errors: Vec::new(),
                proxy_recent_errors: Vec::new(),
                proxy_open: Default::default(),
                organization: t.organization.map(|o| format::Organization {
                    credit_balance: o.credit_balance,
                    models: o
                        .models
                        .into_iter()
                        .map(
                            |(model, daily, max_daily, max_concurrent)| format::ModelLimits {
                                model,
                                daily_generations: daily,
                                max_daily_generations: max_daily,
                                max_concurrent_generations: max_concurrent,
                            },
                        )
                        .collect(),
                    max_monthly_credit_spend: o.max_monthly_credit_spend,
                }),
                usage: t.usage.map(|u| format::Usage {
                    date: u.date,
                    models: u
                        .models
                        .into_iter()
                        .map(|(model, credits)| format::ModelUsage { model, credits })
                        .collect(),
                }),
                api_credits_in_flight: t.api_credits_in_flight,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use crate::state::format::Convert;

        #[test]
        fn totals_written_before_credits_had_a_status_are_read() {
            let old = r#"{"tasks":[],"failures":[],"credits_charged":[["gen4_turbo",75.0],["unknown",0.0]],"credits_lost":[],"credits_unpriced":[1,2],"unknown_failure_codes":0,"label_overflow":[0,0],"dead_letter":[0,0],"sources":[],"dedupe_ids":0,"organization":{"credit_balance":5.0,"models":[["gen4_turbo",17.0,200.0,2.0]]}}"#;
            let t: crate::ledger::Totals =
                super::format::Totals::from(serde_json::from_str::<super::Totals>(old).unwrap())
                    .convert();
            let charged: Vec<_> = t
                .credits
                .iter()
                .map(|c| (c.status.as_str(), c.model.as_str(), c.charged))
                .collect();
            assert_eq!(
                charged,
                [
                    ("SUCCEEDED", "gen4_turbo", 75.0),
                    ("SUCCEEDED", "unknown", 0.0)
                ]
            );
            assert_eq!(t.credits_unpriced.succeeded, 1);
            assert_eq!(t.credits_unpriced.failed, 2);
            let m = &t.organization.unwrap().models[0];
            assert_eq!(
                (
                    m.model.as_str(),
                    m.daily_generations,
                    m.max_daily_generations,
                    m.max_concurrent_generations
                ),
                ("gen4_turbo", 17.0, Some(200.0), Some(2.0))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::SavedWindows;

    /// The windows a state file holds, to restore.
    fn windows(state: &State) -> SavedWindows {
        SavedWindows {
            dedupe: state.dedupe.clone(),
            started: state.started.clone(),
        }
    }
    use crate::classify::Table;
    use crate::ledger::Limits;
    use crate::pricing::Pricing;
    use crate::record::{FieldMap, RecordParser};
    use std::sync::Arc;

    fn ledger() -> Ledger {
        Ledger::new(
            Arc::new(Table::builtin()),
            Arc::new(Pricing::builtin()),
            Limits::default(),
        )
    }

    fn filled() -> Ledger {
        let mut l = ledger();
        let s = l.add_source("file");
        let p = RecordParser::new(&FieldMap::default()).unwrap();
        // Half the tasks timed (from 2024-11-06T12:00:00Z), half not; ten started.
        for i in 0..100 {
            let line = format!(
                r#"{{"id":"t{i}","status":"FAILED","failureCode":"SAFETY.INPUT.C{}","model":"m{}","credits":1.5,"createdAt":"2024-11-06T12:00:00Z","ts":{}}}"#,
                i % 7,
                i % 3,
                if i % 2 == 0 {
                    format!("{}", 1_730_894_400 + 3 * i)
                } else {
                    "null".into()
                }
            );
            let r = p.parse(line.as_bytes()).unwrap();
            l.count(s, &r);
        }
        for i in 100..110 {
            let line = format!(
                r#"{{"id":"t{i}","status":"RUNNING","model":"m1","createdAt":"2024-11-06T12:00:00Z","ts":"2024-11-06T12:00:0{}Z"}}"#,
                i % 10
            );
            l.count(s, &p.parse(line.as_bytes()).unwrap());
        }
        l.reject(s, crate::record::ParseError::InvalidJson);
        l.checkpoints_mut().track(
            7,
            Position {
                source: "file".into(),
                path: "/var/log/app.log".into(),
                dev: 1,
                ino: 2,
                fp_len: 256,
                fp: 3,
                offset: 4096,
                skipping: false,
            },
        );
        l
    }

    #[test]
    fn a_commit_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let l = filled();
        let published = begin(dir.path(), &l).unwrap().finish().unwrap();
        assert_eq!(published, l.totals());
        let state = read(dir.path()).unwrap().unwrap();
        assert_eq!(state.totals, l.totals());
        assert_eq!(
            state.positions,
            l.checkpoints.positions().cloned().collect::<Vec<_>>()
        );
        assert_eq!(state.dedupe, l.dedupe().hashes().collect::<Vec<_>>());
        assert_eq!(state.started, l.started_ids().hashes().collect::<Vec<_>>());
        assert_eq!(state.started.len(), 10);
        assert!(!state.totals.durations.is_empty() && !state.totals.queues.is_empty());
        // Restored into a new ledger, the totals are the same and the ids are known.
        let mut restored = ledger();
        restored.restore(&state.totals, windows(&state)).unwrap();
        assert_eq!(restored.totals(), l.totals());
        let s = restored.add_source("file");
        let p = RecordParser::new(&FieldMap::default()).unwrap();
        let r = p.parse(br#"{"id":"t5","status":"FAILED"}"#).unwrap();
        assert_eq!(restored.count(s, &r), crate::ledger::LineResult::Duplicate);
        // A started task's next RUNNING record is not timed again.
        let running = br#"{"id":"t101","status":"RUNNING","model":"m1","createdAt":"2024-11-06T12:00:00Z","ts":"2024-11-06T12:00:09Z"}"#;
        restored.count(s, &p.parse(running).unwrap());
        assert_eq!(restored.totals().queues, l.totals().queues);
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    /// The bytes a commit of `state` writes (through the functions [`begin`] uses).
    fn encode(state: &State) -> Vec<u8> {
        let contents = Contents {
            written_at: state.written_at,
            totals: &state.totals,
            positions: state.positions.iter().collect(),
            scanned_at: &state.scanned_at,
            api_tasks: state.api_tasks.iter().collect(),
        };
        let header = contents.header(
            Window::of(state.dedupe.len(), state.dedupe.iter().copied()),
            Window::of(state.started.len(), state.started.iter().copied()),
        );
        let mut out = BufWriter::new(Summed::new(Vec::new()));
        let hashes = state.dedupe.iter().chain(&state.started).copied();
        write_body(&mut out, &header_line(&header).unwrap(), hashes).unwrap();
        out.into_inner().ok().expect("written to memory").inner
    }

    /// What a commit writes is what [`encode`] writes of what it holds.
    #[test]
    fn a_commit_writes_what_encode_writes() {
        let dir = tempfile::tempdir().unwrap();
        begin(dir.path(), &filled()).unwrap().finish().unwrap();
        let state = read(dir.path()).unwrap().unwrap();
        let file = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(file == encode(&state), "a commit and encode differ");
    }

    /// The golden version-4 file: written by the code before the format had types of
    /// its own (commit "state: golden version-4 file"), from [`golden`].
    const GOLDEN: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/state-golden/runway-exporter.state"
    );

    /// A state with every part filled in: every list with an entry, every optional value
    /// present and (where the format can say so) absent, and every count of a source.
    fn golden() -> State {
        use crate::ledger::*;
        use crate::ledger::{FailedTask, RecentFailures, Slot};
        let class = crate::ledger::CodeClass {
            category: crate::classify::Category::SafetyInput,
            retry: crate::classify::Retry::AfterDelay,
            credits: crate::classify::CreditRule::Refunded,
        };
        let histogram = |first: u64| crate::ledger::Histogram {
            buckets: (first..first + 15).collect(),
            sum: 1234.5,
        };
        let totals = Totals {
            tasks: vec![
                TaskSeries {
                    status: "FAILED".into(),
                    model: "gen4_turbo".into(),
                    tasks: 11,
                },
                TaskSeries {
                    status: "SUCCEEDED".into(),
                    model: "veo3".into(),
                    tasks: 4,
                },
            ],
            failures: vec![FailureSeries {
                failure_code: "SAFETY.INPUT.TEXT".into(),
                category: "safety_input".into(),
                retry: "never".into(),
                credits: "refunded".into(),
                model: "gen4_turbo".into(),
                value: 3,
            }],
            credits: vec![CreditSeries {
                status: "SUCCEEDED".into(),
                model: "veo3".into(),
                charged: 42.5,
                estimated: 0.1,
                estimated_by: Some(crate::ledger::EstimatedBy {
                    estimated_cost: 0.075,
                    pricing: 0.025,
                }),
            }],
            credits_lost: vec![LostSeries {
                failure_code: "INTERNAL.BAD_OUTPUT.CODE01".into(),
                model: "gen4_turbo".into(),
                credits: 25.0,
            }],
            cost_mismatches: vec![MismatchSeries {
                failure_code: "INTERNAL".into(),
                credits: "refunded".into(),
                tasks: 2,
            }],
            invalid_numbers: 5,
            credits_unpriced: Unpriced {
                succeeded: 6,
                failed: 7,
                cancelled: 8,
            },
            unknown_failure_codes: 9,
            label_overflow: LabelOverflow {
                failure_code: 10,
                model: 11,
            },
            dead_letter: DeadLetters {
                written: 12,
                failed: 13,
            },
            sources: vec![SourceTotals {
                name: "file".into(),
                results: std::array::from_fn(|i| 100 + i as u64),
                parse_errors: std::array::from_fn(|i| 200 + i as u64),
                read_bytes: 14,
                rotations: 15,
                truncations: 16,
                files_tracked: 17,
                file_limit_hits: 18,
                last_record_unix: 1_796_142_000.25,
                up: true,
            }],
            dedupe_ids: 3,
            api_requests: vec![RequestSeries {
                endpoint: "tasks".into(),
                code: "429".into(),
                requests: 19,
            }],
            api_tasks_tracked: 2,
            organization: Some(Organization {
                credit_balance: 1234.5,
                models: vec![
                    ModelLimits {
                        model: "gen4_turbo".into(),
                        daily_generations: 17.0,
                        max_daily_generations: Some(1000.0),
                        max_concurrent_generations: None,
                    },
                    ModelLimits {
                        model: "veo3".into(),
                        daily_generations: 2.0,
                        max_daily_generations: None,
                        max_concurrent_generations: Some(2.0),
                    },
                ],
                max_monthly_credit_spend: None,
            }),
            usage: Some(Usage {
                date: "2026-12-06".into(),
                models: vec![ModelUsage {
                    model: "veo3".into(),
                    credits: 40.0,
                }],
            }),
            api_credits_in_flight: 50.0,
            durations: vec![DurationSeries {
                status: "FAILED".into(),
                model: "gen4_turbo".into(),
                histogram: histogram(1),
            }],
            queues: vec![QueueSeries {
                model: "veo3".into(),
                histogram: histogram(20),
            }],
            untimed: vec![UntimedSeries {
                measure: "duration".into(),
                reason: "no_start".into(),
                tasks: 21,
            }],
            recent: vec![
                RecentFailures {
                    failure_code: "SAFETY.INPUT.TEXT".into(),
                    class: Some(class),
                    tasks: vec![
                        FailedTask {
                            id: "a1".into(),
                            model: "gen4_turbo".into(),
                            at: Some(1_796_141_000.5),
                        },
                        FailedTask {
                            id: "a2".into(),
                            model: "unknown".into(),
                            at: None,
                        },
                    ],
                    minutes: vec![Slot {
                        slot: 29_935_683,
                        tasks: 2,
                    }],
                    hours: vec![Slot {
                        slot: 498_928,
                        tasks: 3,
                    }],
                    clock_step: -7,
                },
                RecentFailures {
                    failure_code: "INTERNAL".into(),
                    class: None,
                    tasks: Vec::new(),
                    minutes: Vec::new(),
                    hours: Vec::new(),
                    clock_step: 0,
                },
            ],
            estimates: crate::ledger::SavedEstimates {
                held: vec![crate::ledger::SavedEstimate {
                    id: 0x0123_4567_89ab_cdef,
                    credits: 12.5,
                }],
                evicted: 3,
            },
            flows: crate::ledger::FlowTotals {
                invocations: vec![crate::ledger::InvocationSeries {
                    status: "SUCCEEDED".into(),
                    partial: true,
                    invocations: 2,
                }],
                node_failures: vec![crate::ledger::CodeSeries {
                    failure_code: "SAFETY.OUTPUT.VIDEO".into(),
                    category: "safety_output".into(),
                    retry: "never".into(),
                    credits: "lost".into(),
                    value: 1,
                }],
                credits: vec![crate::ledger::FlowCredits {
                    status: "SUCCEEDED".into(),
                    credits: 40.0,
                }],
                sessions: vec![crate::ledger::SessionSeries {
                    status: "COMPLETED".into(),
                    sessions: 1,
                }],
                session_failures: Vec::new(),
                workflow_ids: vec![11, 12],
                session_ids: vec![13],
                costed_ids: vec![11],
            },
            proxy_requests: vec![crate::ledger::ProxyRequestSeries {
                endpoint: "/v1/tasks/{id}".into(),
                method: "GET".into(),
                code: "200".into(),
                requests: 7,
            }],
            proxy_latency: vec![crate::ledger::LatencySeries {
                endpoint: "/v1/tasks/{id}".into(),
                histogram: {
                    let mut buckets = vec![0; crate::ledger::LATENCY_BUCKETS.len() + 1];
                    buckets[0] = 5;
                    buckets[1] = 2;
                    crate::ledger::Histogram { buckets, sum: 0.75 }
                },
            }],
            proxy_created: vec![crate::ledger::CreatedSeries {
                endpoint: "/v1/image_to_video".into(),
                model: "gen4_turbo".into(),
                tasks: 3,
            }],
            proxy_errors: vec![crate::ledger::ProxyErrorSeries {
                endpoint: "/v1/image_to_video".into(),
                code: "429".into(),
                retry: "after_delay".into(),
                requests: 2,
            }],
            proxy_recent_errors: vec![crate::ledger::HttpError {
                at: 1_796_142_001.25,
                method: "POST".into(),
                endpoint: "/v1/image_to_video".into(),
                code: 429,
                message: "Your daily task limit has been reached.".into(),
            }],
            proxy_open: crate::ledger::SavedCreated {
                tasks: vec![
                    crate::ledger::CreatedTask {
                        id: "f1e2d3c4-0000-4000-8000-00000000000c".into(),
                        endpoint: "/v1/text_to_video".into(),
                        model: Some("veo3".into()),
                        estimate: Some(40.0),
                        created_at: 1_796_141_990.25,
                    },
                    crate::ledger::CreatedTask {
                        id: "f1e2d3c4-0000-4000-8000-00000000000d".into(),
                        endpoint: "/v1/generate/video".into(),
                        created_at: 1_796_141_991.5,
                        ..Default::default()
                    },
                ],
                evicted: 2,
            },
        };
        State {
            written_at: 1_796_142_005.666_558_3,
            totals,
            positions: vec![
                Position {
                    source: "file".into(),
                    path: "/var/log/runway/tasks.log".into(),
                    dev: 2049,
                    ino: 131_073,
                    fp_len: 256,
                    fp: 0xdead_beef_0123_4567,
                    offset: 6583,
                    skipping: false,
                },
                Position {
                    source: "task_list".into(),
                    path: "/var/lib/runway/ids".into(),
                    dev: 2049,
                    ino: 131_074,
                    fp_len: 12,
                    fp: 42,
                    offset: 4096,
                    skipping: true,
                },
            ],
            scanned_at: [("file".to_string(), 1_796_142_001.5)].into(),
            api_tasks: vec![
                ApiTask {
                    id: "b1".into(),
                    added_at: 1_796_141_900.0,
                    model: Some("gen4_turbo".into()),
                    duration: Some(10.0),
                    estimated_cost: Some(50.0),
                    reached: Some(Reached::Running),
                    created_at: Some(1_796_141_899.5),
                },
                ApiTask {
                    id: "b2".into(),
                    added_at: 1_796_141_901.0,
                    reached: Some(Reached::Queued),
                    ..ApiTask::default()
                },
                ApiTask {
                    id: "b3".into(),
                    added_at: 1_796_141_902.0,
                    ..ApiTask::default()
                },
            ],
            dedupe: vec![1, u64::MAX, 0x0123_4567_89ab_cdef],
            started: vec![7, 8],
        }
    }

    /// The format is a contract: a commit of [`golden`] writes the golden file byte for
    /// byte, and the golden file reads back to it.
    #[test]
    fn the_golden_file_is_written_byte_for_byte_and_reads_back() {
        let golden = golden();
        let got = encode(&golden);
        // A format change on purpose (a new field, see src/state/format.rs) writes the
        // file again, in a commit that says so.
        if std::env::var_os("RUNWAY_WRITE_GOLDEN_STATE").is_some() {
            std::fs::write(GOLDEN, &got).unwrap();
        }
        let want = std::fs::read(GOLDEN).unwrap();
        if got != want {
            let line = |b: &[u8]| {
                let end = b.iter().position(|c| *c == b'\n').unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end]).into_owned()
            };
            let (g, w) = (line(&got), line(&want));
            let at = g.bytes().zip(w.bytes()).take_while(|(a, b)| a == b).count();
            let near = |s: &str| {
                s.chars()
                    .skip(at.saturating_sub(60))
                    .take(160)
                    .collect::<String>()
            };
            panic!(
                "the file changed (header byte {at}, or after it when equal):\n got: ...{}\nwant: ...{}",
                near(&g),
                near(&w)
            );
        }
        assert_eq!(decode(Path::new(GOLDEN), &want[..]).unwrap(), golden);
    }

    /// A restore that takes any state.
    fn accept(_: &mut State) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn no_file_is_no_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), accept), None);
    }

    #[test]
    fn every_count_has_a_name() {
        let dir = tempfile::tempdir().unwrap();
        begin(dir.path(), &filled()).unwrap().finish().unwrap();
        let text = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let end = text.iter().position(|b| *b == b'\n').unwrap();
        let header: serde_json::Value = serde_json::from_slice(&text[..end]).unwrap();
        assert_eq!(header["version"], VERSION);
        let totals = &header["totals"];
        for list in [
            "tasks",
            "failures",
            "credits",
            "credits_lost",
            "cost_mismatches",
            "durations",
            "queues",
            "untimed",
        ] {
            let entries = totals[list].as_array().unwrap();
            assert!(
                entries.iter().all(serde_json::Value::is_object),
                "{list}: {entries:?}"
            );
        }
        for counts in ["credits_unpriced", "label_overflow", "dead_letter"] {
            assert!(totals[counts].is_object(), "{counts}: {}", totals[counts]);
        }
        assert!(totals["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["status"] == "FAILED"
                && t["model"] == "m1"
                && t["tasks"].as_u64() > Some(0)));
    }

    #[test]
    fn corrupt_files_are_moved_aside_never_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let good = {
            begin(dir.path(), &filled()).unwrap().finish().unwrap();
            std::fs::read(dir.path().join(FILE_NAME)).unwrap()
        };
        let header_end = good.iter().position(|b| *b == b'\n').unwrap();
        let this = format!("\"version\":{VERSION}");
        let header = String::from_utf8_lossy(&good[..header_end]);
        assert!(header.contains(&this));
        // The whole file as it was, but for a version this build does not know.
        let newer = [
            header
                .replace(&this, &format!("\"version\":{}", VERSION + 1))
                .as_bytes(),
            &good[header_end..],
        ]
        .concat();
        let mut flipped = good.clone();
        flipped[header_end + 1] ^= 1;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated header", good[..header_end / 2].to_vec()),
            ("truncated dedupe", good[..header_end + 5].to_vec()),
            ("truncated checksum", good[..good.len() - 3].to_vec()),
            ("garbage", b"\x00\x01garbage\n".to_vec()),
            ("empty", Vec::new()),
            ("newer version", newer),
            (
                "foreign json",
                b"{\"format\":\"other\",\"version\":1}\n".to_vec(),
            ),
            ("bit flip in dedupe", flipped),
            ("trailing data", [good.clone(), b"x".to_vec()].concat()),
            (
                "version 1 with a negative count",
                br#"{"format":"runway-exporter-state","version":1,"written_at":0,"totals":{"tasks":[["SUCCEEDED","m",-1]],"failures":[],"credits_charged":[],"credits_lost":[],"credits_unpriced":[0,0],"unknown_failure_codes":0,"label_overflow":[0,0],"dead_letter":[0,0],"sources":[],"dedupe_ids":0},"positions":[],"dedupe":0,"dedupe_checksum":0}"#
                    .iter()
                    .chain(b"\n")
                    .copied()
                    .collect(),
            ),
            (
                "version 1 with arrays of the wrong length",
                br#"{"format":"runway-exporter-state","version":1,"written_at":0,"totals":{"tasks":[],"failures":[],"credits_charged":[],"credits_lost":[],"credits_unpriced":[1e308,"x"],"unknown_failure_codes":0,"label_overflow":[0],"dead_letter":[0,0],"sources":[],"dedupe_ids":0},"positions":[],"dedupe":0,"dedupe_checksum":0}"#
                    .iter()
                    .chain(b"\n")
                    .copied()
                    .collect(),
            ),
        ];
        for (name, bytes) in cases {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(FILE_NAME), &bytes).unwrap();
            assert!(
                matches!(read(d.path()), Err(StateError::Corrupt { .. })),
                "{name}"
            );
            assert_eq!(load(d.path(), accept), None, "{name}");
            assert!(!d.path().join(FILE_NAME).exists(), "{name}: moved aside");
            let aside: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
            assert_eq!(aside.len(), 1, "{name}");
            assert!(aside[0]
                .file_name()
                .to_string_lossy()
                .starts_with("runway-exporter.state.corrupt-"));
            assert_eq!(
                std::fs::read(aside[0].path()).unwrap(),
                bytes,
                "{name}: kept as it was"
            );
        }
    }

    /// The good file's header as JSON, and its windows (without the checksum).
    fn split(good: &[u8]) -> (serde_json::Value, Vec<u8>) {
        let end = good.iter().position(|b| *b == b'\n').unwrap();
        let header = serde_json::from_slice(&good[..end]).unwrap();
        (header, good[end + 1..good.len() - 4].to_vec())
    }

    /// A file of `header` and `windows`, with a right checksum when its version has one
    /// (as a hostile writer would make it).
    fn joined(header: &serde_json::Value, windows: &[u8]) -> Vec<u8> {
        let mut out = serde_json::to_vec(header).unwrap();
        out.push(b'\n');
        out.extend_from_slice(windows);
        if header["version"].as_u64() >= Some(4) {
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        out
    }

    #[test]
    fn a_version_2_file_is_read_as_one_without_timings() {
        let dir = tempfile::tempdir().unwrap();
        let l = filled();
        begin(dir.path(), &l).unwrap().finish().unwrap();
        let (mut header, rest) = split(&std::fs::read(dir.path().join(FILE_NAME)).unwrap());
        // What version 2 wrote: no timings, no second window.
        header["version"] = 2.into();
        let h = header.as_object_mut().unwrap();
        h.remove("started");
        h.remove("started_checksum");
        let totals = h["totals"].as_object_mut().unwrap();
        for key in ["durations", "queues", "untimed", "recent"] {
            totals.remove(key);
        }
        let dedupe = 8 * l.dedupe().len();
        std::fs::write(dir.path().join(FILE_NAME), joined(&header, &rest[..dedupe])).unwrap();
        let state = read(dir.path()).unwrap().unwrap();
        assert_eq!(state.dedupe, l.dedupe().hashes().collect::<Vec<_>>());
        assert!(state.started.is_empty());
        let want = Totals {
            durations: Vec::new(),
            queues: Vec::new(),
            untimed: Vec::new(),
            recent: Vec::new(),
            ..l.totals()
        };
        assert_eq!(state.totals, want);
    }

    /// A ledger with estimates: one held, one charged from estimatedCost, one from the
    /// pricing table.
    fn estimated() -> Ledger {
        let mut l = ledger();
        let s = l.add_source("file");
        let p = RecordParser::new(&FieldMap::default()).unwrap();
        for line in [
            r#"{"id":"a","status":"RUNNING","model":"gen4_turbo","estimatedCost":{"credits":40}}"#,
            r#"{"id":"b","status":"RUNNING","model":"gen4_turbo","estimatedCost":{"credits":41}}"#,
            r#"{"id":"b","status":"SUCCEEDED","model":"gen4_turbo"}"#,
            r#"{"id":"c","status":"SUCCEEDED","model":"gen4_turbo","duration":2}"#,
        ] {
            l.count(s, &p.parse(line.as_bytes()).unwrap());
        }
        l
    }

    /// (charged, from estimatedCost, from the pricing table) of SUCCEEDED gen4_turbo.
    fn gen4_turbo(t: &Totals) -> (f64, f64, f64) {
        let c = t
            .credits
            .iter()
            .find(|c| c.status == "SUCCEEDED" && c.model == "gen4_turbo")
            .unwrap();
        (
            c.charged,
            c.by_origin().estimated_cost,
            c.by_origin().pricing,
        )
    }

    #[test]
    fn held_estimates_and_the_estimate_split_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let l = estimated();
        begin(dir.path(), &l).unwrap().finish().unwrap();
        let state = read(dir.path()).unwrap().unwrap();
        assert_eq!(state.totals, l.totals());
        assert_eq!(state.totals.estimates.held.len(), 1);
        assert_eq!(gen4_turbo(&state.totals), (51.0, 41.0, 10.0));
    }

    /// A version-4 file written before estimates had an origin (no `estimated_by`, no
    /// `estimates`) restores with everything as before: the same charged and estimated
    /// credits, all of the estimate the pricing table's, nothing held.
    #[test]
    fn a_file_from_before_the_estimate_split_restores_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let l = estimated();
        begin(dir.path(), &l).unwrap().finish().unwrap();
        let (mut header, rest) = split(&std::fs::read(dir.path().join(FILE_NAME)).unwrap());
        let totals = header["totals"].as_object_mut().unwrap();
        totals.remove("estimates");
        for c in totals["credits"].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("estimated_by");
        }
        assert_eq!(header["version"], VERSION, "the version is unchanged");
        std::fs::write(dir.path().join(FILE_NAME), joined(&header, &rest)).unwrap();
        let state = read(dir.path()).unwrap().unwrap();
        let mut back = ledger();
        back.restore(&state.totals, SavedWindows::default())
            .unwrap();
        let t = back.totals();
        assert_eq!(gen4_turbo(&t), (51.0, 0.0, 51.0));
        assert!(t.estimates.held.is_empty());
        let estimated = |t: &Totals| {
            t.credits
                .iter()
                .map(|c| (c.charged, c.estimated))
                .collect::<Vec<_>>()
        };
        assert_eq!(estimated(&t), estimated(&l.totals()));
    }

    #[test]
    fn saved_histograms_that_do_not_fit_are_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        begin(dir.path(), &filled()).unwrap().finish().unwrap();
        let good = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        type Edit = (&'static str, fn(&mut serde_json::Value));
        let edits: [Edit; 5] = [
            ("too few buckets", |t| {
                t["durations"][0]["buckets"] = serde_json::json!([1])
            }),
            ("a huge sum", |t| t["durations"][0]["sum"] = 1e308.into()),
            ("a negative sum", |t| t["queues"][0]["sum"] = (-1.0).into()),
            ("a status that never ends", |t| {
                t["durations"][0]["status"] = "RUNNING".into()
            }),
            ("an unknown reason", |t| {
                t["untimed"][0]["reason"] = "bored".into()
            }),
        ];
        for (name, edit) in edits {
            let (mut header, rest) = split(&good);
            edit(&mut header["totals"]);
            std::fs::write(dir.path().join(FILE_NAME), joined(&header, &rest)).unwrap();
            let state = read(dir.path()).unwrap().unwrap();
            let mut l = ledger();
            assert!(
                l.restore(&state.totals, SavedWindows::default()).is_err(),
                "{name}"
            );
            // All or nothing: the ledger is as new (and its totals can be read).
            assert_eq!(l.totals(), ledger().totals(), "{name}");
        }
    }

    #[test]
    fn a_state_that_would_not_read_back_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = filled();
        begin(dir.path(), &l).unwrap().finish().unwrap();
        let good = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        // No input reaches this (numbers are bounded where they are read), but if a bug
        // ever let one through, the commit fails instead of writing null.
        let infinite = Totals {
            credits: vec![crate::ledger::CreditSeries {
                status: "SUCCEEDED".into(),
                model: "m1".into(),
                charged: f64::INFINITY,
                estimated: 0.0,
                estimated_by: None,
            }],
            ..Totals::default()
        };
        l.restore(&infinite, SavedWindows::default()).unwrap();
        let e = begin(dir.path(), &l).err().expect("refused");
        assert!(e.to_string().contains("would not read back"), "{e}");
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), good);
        assert!(read(dir.path()).unwrap().is_some());
    }

    use proptest::prelude::*;

    proptest::proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..Default::default() })]
        /// Whatever numbers the records carry (huge, negative, non-finite, not numbers),
        /// what is committed reads back and restores to the same totals.
        #[test]
        fn any_ledger_round_trips_through_a_commit(
            values in proptest::collection::vec(
                prop_oneof![
                    proptest::num::f64::ANY.prop_map(|v| format!("{v:e}")),
                    proptest::num::u64::ANY.prop_map(|v| v.to_string()),
                    proptest::num::i64::ANY.prop_map(|v| v.to_string()),
                    Just("\"NaN\"".to_string()),
                    Just("\"-inf\"".to_string()),
                    Just("1e308".to_string()),
                    Just("null".to_string()),
                ],
                1..40,
            ),
        ) {
            let mut l = ledger();
            let s = l.add_source("file");
            let p = RecordParser::new(&FieldMap::default()).unwrap();
            for (i, v) in values.iter().enumerate() {
                let status = ["SUCCEEDED", "FAILED", "CANCELLED"][i % 3];
                let line = format!(
                    r#"{{"id":"t{i}","status":"{status}","failureCode":"SAFETY.INPUT.TEXT","model":"veo3","credits":{v},"duration":{v},"cost":{{"credits":{v}}}}}"#
                );
                match p.parse(line.as_bytes()) {
                    Ok(r) => l.count(s, &r),
                    Err(e) => l.reject(s, e),
                };
            }
            let dir = tempfile::tempdir().unwrap();
            let published = begin(dir.path(), &l).unwrap().finish().unwrap();
            let state = read(dir.path()).unwrap().unwrap();
            proptest::prop_assert_eq!(&state.totals, &published);
            let mut restored = ledger();
            restored.restore(&state.totals, windows(&state)).unwrap();
            proptest::prop_assert_eq!(restored.totals(), l.totals());
        }
    }

    #[test]
    fn a_state_path_that_is_not_a_file_is_moved_aside_without_blocking() {
        for kind in ["directory", "fifo"] {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join(FILE_NAME);
            match kind {
                "directory" => {
                    std::fs::create_dir(&path).unwrap();
                    std::fs::write(path.join("inside"), b"x").unwrap();
                }
                _ => assert!(std::process::Command::new("mkfifo")
                    .arg(&path)
                    .status()
                    .unwrap()
                    .success()),
            }
            // Opening a FIFO blocks until a writer comes: load must not open it.
            let dir = d.path().to_path_buf();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(load(&dir, accept).is_none()));
            let fresh = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{kind}: load blocked"));
            assert!(fresh, "{kind}: a fresh start");
            assert!(!path.exists(), "{kind}: moved aside");
            // And a commit can take its place.
            begin(d.path(), &ledger()).unwrap().finish().unwrap();
            assert!(read(d.path()).unwrap().is_some(), "{kind}");
        }
    }

    #[test]
    fn a_failed_commit_leaves_the_last_good_state() {
        let dir = tempfile::tempdir().unwrap();
        begin(dir.path(), &filled()).unwrap().finish().unwrap();
        let before = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        // The temporary file's name taken by a directory: the commit fails.
        std::fs::create_dir(dir.path().join(TMP_NAME)).unwrap();
        assert!(matches!(
            begin(dir.path(), &ledger()),
            Err(StateError::Write { .. })
        ));
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), before);
    }

    /// `l` with `n` more failed tasks counted, with ids and recent failures.
    fn more(mut l: Ledger, from: usize, n: usize) -> Ledger {
        let s = l.add_source("file");
        let p = RecordParser::new(&FieldMap::default()).unwrap();
        for i in from..from + n {
            let line = format!(
                r#"{{"id":"later-{i}","status":"FAILED","failureCode":"SAFETY.INPUT.C{}","model":"m2","credits":2}}"#,
                i % 4
            );
            l.count(s, &p.parse(line.as_bytes()).unwrap());
        }
        l
    }

    /// Two commits in a new directory: the previous generation's state and the
    /// current file's bytes.
    fn two_generations(dir: &Path) -> (State, Vec<u8>) {
        let l = filled();
        begin(dir, &l).unwrap().finish().unwrap();
        let first = std::fs::read(dir.join(FILE_NAME)).unwrap();
        let l = more(l, 0, 20);
        begin(dir, &l).unwrap().finish().unwrap();
        assert_eq!(std::fs::read(dir.join(PREV_NAME)).unwrap(), first);
        let prev = read_generation(dir, Generation::Previous).unwrap().unwrap();
        (prev, std::fs::read(dir.join(FILE_NAME)).unwrap())
    }

    /// The names in `dir` but for the two generations, sorted.
    fn others(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != FILE_NAME && n != PREV_NAME)
            .collect();
        names.sort();
        names
    }

    /// Every damage to the current file is detected: a bit flipped at every byte (the
    /// bit rotating with the offset, and every bit of the first bytes of each region:
    /// the header, its counts and recent failure ids, each window and the checksum),
    /// and every truncation. A sample of them is loaded: the damaged file is moved aside
    /// as it was, and the previous generation is restored exactly.
    #[test]
    fn every_damage_to_the_current_file_is_detected_and_the_previous_restored() {
        let dir = tempfile::tempdir().unwrap();
        let (prev, good) = two_generations(dir.path());
        let prev_bytes = std::fs::read(dir.path().join(PREV_NAME)).unwrap();
        let text = String::from_utf8_lossy(&good);
        let header_end = good.iter().position(|b| *b == b'\n').unwrap();
        let windows = header_end + 1;
        let (header, _) = split(&good);
        let started = windows + 8 * header["dedupe"].as_u64().unwrap() as usize;
        assert!(header["started"].as_u64() > Some(0));
        // The first bytes of each region, every bit: the header's start, a count, a
        // recent failure's id, a position, the window checksums, each window and the
        // checksum at the end.
        let starts = [
            0,
            text.find("\"model\":\"m1\",\"tasks\":").unwrap() + 20,
            text.find("\"id\":\"later-").unwrap() + 8,
            text.find("\"offset\":").unwrap() + 9,
            text.find("\"dedupe_checksum\":").unwrap() + 18,
            header_end,
            windows,
            started,
            good.len() - 4,
        ];
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for at in 0..good.len() {
            let bits: Vec<u8> = if starts.iter().any(|s| (*s..*s + 4).contains(&at)) {
                (0..8).collect()
            } else {
                vec![(at % 8) as u8]
            };
            for bit in bits {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                cases.push((format!("bit {bit} of byte {at}"), bad));
            }
        }
        for len in 0..good.len() {
            cases.push((format!("truncated to {len}"), good[..len].to_vec()));
        }
        assert!(cases.len() > 2 * good.len());
        let here = Path::new("test");
        assert!(decode(here, &good[..]).is_ok());
        for (i, (name, bad)) in cases.iter().enumerate() {
            assert!(
                matches!(decode(here, &bad[..]), Err(StateError::Corrupt { .. })),
                "{name}: not detected"
            );
            if i % 97 != 0 {
                continue;
            }
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert_eq!(load(dir.path(), accept).as_ref(), Some(&prev), "{name}");
            let aside = others(dir.path());
            assert_eq!(aside.len(), 1, "{name}: {aside:?}");
            assert!(aside[0].starts_with("runway-exporter.state.corrupt-"));
            let path = dir.path().join(&aside[0]);
            assert_eq!(
                &std::fs::read(&path).unwrap(),
                bad,
                "{name}: kept as it was"
            );
            std::fs::remove_file(path).unwrap();
            assert!(!dir.path().join(FILE_NAME).exists(), "{name}");
            assert_eq!(
                std::fs::read(dir.path().join(PREV_NAME)).unwrap(),
                prev_bytes,
                "{name}: the previous generation is untouched"
            );
        }
    }

    #[test]
    fn a_commit_keeps_the_previous_generation_and_a_crash_between_renames_loses_neither() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = filled();
        let mut written = Vec::new();
        for round in 0..3 {
            l = more(l, 100 * round, 5);
            begin(dir.path(), &l).unwrap().finish().unwrap();
            written.push(std::fs::read(dir.path().join(FILE_NAME)).unwrap());
        }
        assert_eq!(
            std::fs::read(dir.path().join(PREV_NAME)).unwrap(),
            written[1]
        );
        assert_eq!(
            std::fs::read(dir.path().join(FILE_NAME)).unwrap(),
            written[2]
        );
        assert_eq!(others(dir.path()), Vec::<String>::new());
        // A crash after the current file became the previous one and before the new
        // file took its name: the previous generation is restored.
        std::fs::rename(dir.path().join(FILE_NAME), dir.path().join(PREV_NAME)).unwrap();
        let prev = read_generation(dir.path(), Generation::Previous).unwrap();
        assert!(prev.is_some());
        assert_eq!(load(dir.path(), accept), prev);
        // The next commit keeps that generation as the previous one.
        begin(dir.path(), &l).unwrap().finish().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(PREV_NAME)).unwrap(),
            written[2]
        );
        assert!(read(dir.path()).unwrap().is_some());
    }

    /// A current file whose counts the ledger refuses (a valid checksum, hostile
    /// content) is moved aside and the previous generation restored; when both are
    /// damaged, both are moved aside and the exporter starts fresh.
    #[test]
    fn a_refused_or_damaged_generation_falls_back_and_both_damaged_start_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let (prev, good) = two_generations(dir.path());
        let mut calls = 0;
        let got = load(dir.path(), |_| {
            calls += 1;
            if calls == 1 {
                Err("refused".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(got, Some(prev));
        assert_eq!(others(dir.path()).len(), 1);

        let dir = tempfile::tempdir().unwrap();
        two_generations(dir.path());
        let prev_bytes = std::fs::read(dir.path().join(PREV_NAME)).unwrap();
        let mut bad_prev = prev_bytes.clone();
        bad_prev[prev_bytes.len() / 2] ^= 0x10;
        std::fs::write(dir.path().join(PREV_NAME), &bad_prev).unwrap();
        let bad_current = &good[..good.len() - 1];
        std::fs::write(dir.path().join(FILE_NAME), bad_current).unwrap();
        assert_eq!(load(dir.path(), accept), None);
        let aside = others(dir.path());
        assert_eq!(aside.len(), 2, "{aside:?}");
        assert!(aside[0].starts_with("runway-exporter.state.corrupt-"));
        assert!(aside[1].starts_with("runway-exporter.state.prev.corrupt-"));
        assert_eq!(
            std::fs::read(dir.path().join(&aside[0])).unwrap(),
            bad_current
        );
        assert_eq!(std::fs::read(dir.path().join(&aside[1])).unwrap(), bad_prev);
        assert!(!dir.path().join(FILE_NAME).exists() && !dir.path().join(PREV_NAME).exists());
        // And commits start again.
        begin(dir.path(), &filled()).unwrap().finish().unwrap();
        assert!(read(dir.path()).unwrap().is_some());
    }

    /// A current file that cannot be read (here a link to this process's memory, whose
    /// first page is not mapped: reading it fails with EIO) is moved aside and the
    /// previous generation restored.
    #[test]
    fn an_unreadable_current_file_falls_back_to_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (prev, _) = two_generations(dir.path());
        let current = dir.path().join(FILE_NAME);
        std::fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink("/proc/self/mem", &current).unwrap();
        assert!(matches!(read(dir.path()), Err(StateError::Read { .. })));
        assert_eq!(load(dir.path(), accept), Some(prev));
        let aside = others(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with("runway-exporter.state.corrupt-"));
    }

    #[test]
    fn a_failed_commit_leaves_both_generations() {
        let dir = tempfile::tempdir().unwrap();
        two_generations(dir.path());
        let files = |d: &Path| [FILE_NAME, PREV_NAME].map(|n| std::fs::read(d.join(n)).unwrap());
        let before = files(dir.path());
        // The temporary file cannot be written (as on a full or read-only disk).
        std::fs::create_dir(dir.path().join(TMP_NAME)).unwrap();
        assert!(begin(dir.path(), &ledger()).is_err());
        assert_eq!(files(dir.path()), before);
        std::fs::remove_dir(dir.path().join(TMP_NAME)).unwrap();
        // The current file cannot become the previous one: nothing is replaced.
        std::fs::remove_file(dir.path().join(PREV_NAME)).unwrap();
        std::fs::create_dir(dir.path().join(PREV_NAME)).unwrap();
        std::fs::write(dir.path().join(PREV_NAME).join("inside"), b"x").unwrap();
        let e = begin(dir.path(), &ledger()).unwrap().finish();
        assert!(matches!(e, Err(StateError::Write { .. })));
        assert_eq!(
            std::fs::read(dir.path().join(FILE_NAME)).unwrap(),
            before[0]
        );
        // A start moves that directory aside, and commits work again.
        assert!(load(dir.path(), accept).is_some());
        assert!(others(dir.path())
            .iter()
            .any(|n| n.starts_with("runway-exporter.state.prev.corrupt-")));
        begin(dir.path(), &ledger()).unwrap().finish().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(PREV_NAME)).unwrap(),
            before[0]
        );
    }

    #[test]
    fn the_checksum_covers_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        begin(dir.path(), &filled()).unwrap().finish().unwrap();
        let file = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let (body, crc) = file.split_at(file.len() - 4);
        assert_eq!(crc, crc32fast::hash(body).to_le_bytes());
        assert_eq!(crc32fast::hash(&file), CRC_RESIDUE);
    }
}
