//! The journal of created tasks: a task whose create answer reached the application is
//! never lost, even when the exporter is killed (`kill -9`) before its next commit.
//!
//! - The proxy reads a create call's answer (a `POST` answered 2xx with a JSON body of a
//!   stated length of at most 64 KiB) whole, takes its task id, and appends one line
//!   (id, endpoint, model, estimate, time) to `proxy-created.journal` in the state
//!   directory with one plain `write`, *before* the answer goes to the client. The write
//!   is made without the journal's lock (`O_APPEND` keeps two threads' lines apart), the
//!   line between two line breaks (one cut by a failed write is ended by the next, never
//!   glued to it), and a short write is a failure, never finished by a second. The page
//!   cache survives the process: no `fsync` (a power cut may lose the lines of the last
//!   seconds, as it may lose the application's own).
//! - Before each commit the committer *reconciles* the journal with the ledger (one lock,
//!   [`Journal::reconcile`]): a line whose create the consumer applied
//!   ([`Journal::applied`]: even a task since evicted from the open ones, when more than
//!   their bound are created between two commits) or whose task the ledger knows (open,
//!   followed, or counted) is settled; a line older than [`SETTLE`] that it does not
//!   know (its observation was dropped) is applied as a create now. After the commit is durable
//!   the settled lines leave the journal ([`Journal::forget`]; the file is written anew
//!   and renamed over). At start-up, every line is applied (a replay) before the first
//!   commit.
//! - Read at start-up as a file that may hold anything (a crash, a bug, someone with
//!   write access to the state directory): only a regular file is opened (a FIFO, a
//!   directory, a dangling or looping link is a warning, and the proxy serves without
//!   the journal; appends to it then fail, counted); it is read in lines of at most
//!   [`MAX_LINE`] bytes, at most [`MAX_LINES`] kept and 256 MiB read, so memory does
//!   not grow with the file. A longer line, a line that is no entry (cut by a crash,
//!   junk, an id that is no task id) is skipped; an absurd estimate is dropped and an
//!   absurd time made the time of reading; all logged once, with the counts, and the
//!   file written anew after the first commit. A line cut at the end of the file is
//!   ended before the next append.
//! - Bounded: at most [`MAX_LINES`] lines; when full, or when the write fails (a full
//!   disk), the answer still goes to the client at once: the failure is counted
//!   (`runway_exporter_proxy_journal_failures_total`) and logged once until a write
//!   succeeds again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, FileType, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, Registry};

use crate::ledger::{CreatedTask, Ledger, SourceId};

/// The journal's file name in the state directory.
pub const FILE_NAME: &str = "proxy-created.journal";
/// Most lines held; past it a create is not journaled (counted).
pub const MAX_LINES: usize = 16_384;
/// A line not applied this long after it was written is applied by the reconciler
/// (seconds): its observation was dropped, or is very late (applying twice is a no-op).
pub const SETTLE: f64 = 10.0;
/// Longest line read (bytes, its newline aside). A line the proxy writes is one
/// [`Entry`]: an id of at most [`crate::runway_api::MAX_TASK_ID_BYTES`] (Runway's are
/// 36-byte UUIDs), an endpoint template, a model (a label is at most 64 bytes), a
/// number and a time: under 400 bytes. Ten times that leaves room for fields added
/// later; a longer line is none the proxy wrote, and is passed over without being held.
pub const MAX_LINE: usize = 4096;
/// Most bytes read at start-up: 256 MiB, forty times a journal full of the proxy's
/// lines; a fraction of a second from the page cache. Past it, a file grown by junk is
/// left unread (logged), so a start-up never waits on gigabytes of it.
const MAX_READ: u64 = 256 << 20;

/// One journal line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub id: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// When the create answer came (Unix seconds).
    pub at: f64,
}

/// The journal: its file, and its lines by place.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
    failures: IntCounter,
    /// Whether the last append failed (logged once until one succeeds).
    failing: AtomicBool,
}

/// How created tasks are applied: on the proxy's source, followed as
/// `crate::proxy::Follow` says.
pub type Apply = (SourceId, Option<usize>);

#[derive(Debug)]
struct Inner {
    /// Open for appending (each line one `write`, made without the lock: `O_APPEND`
    /// keeps two lines apart); `None` until the next append opens it, after a failure
    /// or a rewrite.
    file: Option<Arc<File>>,
    lines: BTreeMap<u64, Entry>,
    /// The places of lines whose create the consumer applied ([`Journal::applied`]).
    applied: BTreeSet<u64>,
    next: u64,
    /// Whether the file holds what the proxy did not write (read at start-up): the next
    /// [`Journal::forget`] writes it anew, even with no line settled.
    junk: bool,
}

impl Entry {
    /// The entry of a create call's answer (its JSON body, whole) to a request for
    /// `model` through `endpoint` at `at`, when it names a task `id`: the model is the
    /// request's, else the answer's `routing.model` (the model router's choice); the
    /// estimate its `estimatedCost` (else `routing.estimatedCost`) when a number.
    pub fn of_create(endpoint: &str, model: Option<&str>, at: f64, answer: &[u8]) -> Option<Entry> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Routing {
            model: Option<String>,
            estimated_cost: Option<Credits>,
        }
        #[derive(serde::Deserialize)]
        struct Credits {
            credits: Option<serde_json::Value>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            id: Option<String>,
            routing: Option<Routing>,
            estimated_cost: Option<Credits>,
        }
        let Created {
            id,
            routing,
            estimated_cost,
        } = serde_json::from_slice::<Created>(answer).ok()?;
        let (routed, routed_cost) = routing.map_or((None, None), |r| (r.model, r.estimated_cost));
        let estimate = estimated_cost
            .or(routed_cost)
            .and_then(|c| c.credits)
            .and_then(|v| v.as_f64());
        Some(Entry {
            id: id?,
            endpoint: endpoint.to_string(),
            model: model.map(str::to_string).or(routed),
            estimate,
            at,
        })
    }

    /// The entry with its absurd values made sane, and whether one was; `None` when its
    /// id is no task id ([`crate::runway_api::is_task_id`]: a followed task's id goes
    /// into a URL path). The endpoint becomes its template (a
    /// bounded label); an estimate out of 0 to [`crate::record::MAX_CREDITS`] is dropped
    /// (the task is charged as one without); a time not between 0 and `now` becomes
    /// `now` (a later one would hold the line back, and its task unasked, until then).
    fn sane(mut self, now: f64) -> Option<(Entry, bool)> {
        if !crate::runway_api::is_task_id(&self.id) {
            return None;
        }
        let mut mended = false;
        let endpoint = super::endpoint::endpoint(&self.endpoint);
        if endpoint != self.endpoint {
            self.endpoint = endpoint.to_string();
            mended = true;
        }
        let in_range = |c: &f64| (0.0..=crate::record::MAX_CREDITS).contains(c);
        if self.estimate.is_some_and(|c| !in_range(&c)) {
            self.estimate = None;
            mended = true;
        }
        if !(0.0..=now).contains(&self.at) {
            self.at = now;
            mended = true;
        }
        Some((self, mended))
    }

    /// The entry as [`Entry::sane`] makes it at `now`: held to the rules a journal line
    /// is read by, so that a live answer and its replay count the same. `None` when its
    /// id is no task id.
    pub fn checked(self, now: f64) -> Option<Checked> {
        self.sane(now).map(|(entry, _)| Checked(entry))
    }

    /// The created task it says.
    pub fn task(self) -> CreatedTask {
        CreatedTask {
            id: self.id,
            endpoint: self.endpoint,
            model: self.model,
            estimate: self.estimate,
            created_at: self.at,
        }
    }
}

/// An entry held to the rules a journal line is read by ([`Entry::checked`]): what the
/// journal writes and the consumer applies, checked once where it is made.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked(Entry);

impl Checked {
    /// The created task it says.
    pub fn task(self) -> CreatedTask {
        self.0.task()
    }
}

/// Settled lines, to forget once the commit that holds them is durable.
#[derive(Debug, Default)]
pub struct Settled(Vec<u64>);

impl Journal {
    /// Opens the journal in `dir`, keeping the lines already there (see the module doc:
    /// read in bounded lines, absurd values made sane or the line skipped; what was
    /// skipped is logged once). Its failure counter is registered on `live`.
    pub fn open(dir: &Path, live: &Registry) -> prometheus::Result<Journal> {
        let failures = IntCounter::new(
            "runway_exporter_proxy_journal_failures_total",
            "Create answers passed to the application without their task in the journal (a failed write, or the journal full); such a task is lost if the exporter is killed before its next commit.",
        )?;
        live.register(Box::new(failures.clone()))?;
        let path = dir.join(FILE_NAME);
        let (lines, junk) = match read(&path, crate::clock::unix_now()) {
            Ok(lines) => lines.log(&path),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Cannot read the journal of created tasks; the proxy serves without its lines (tasks created before a kill may be lost).");
                (BTreeMap::new(), false)
            }
        };
        let next = lines.len() as u64;
        let journal = Journal {
            path,
            inner: Mutex::new(Inner {
                file: None,
                lines,
                applied: BTreeSet::new(),
                next,
                junk,
            }),
            failures,
            failing: AtomicBool::new(false),
        };
        Ok(journal)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Lines held now.
    #[cfg(test)]
    fn lines(&self) -> usize {
        self.inner().lines.len()
    }

    /// Appends `entry`: one `write` of one line; its place, when it was written. Never
    /// fails the request: a failure is counted and logged (once until a write succeeds).
    /// Only a checked entry is written: what the replay would skip never is. The lock is
    /// held to take a place, not for the write: two proxy threads' appends wait for each
    /// other only in the kernel, which keeps their lines whole and apart (`O_APPEND`).
    pub fn append(&self, Checked(entry): Checked) -> Option<u64> {
        // Between two line breaks: a line cut by a failed write (a full disk) is ended
        // by the next one written, whichever thread writes it, never glued to it (the
        // empty lines this leaves are skipped when read). Room for a line the proxy
        // writes (under 400 bytes; see MAX_LINE): written without growing.
        let mut line = Vec::with_capacity(512);
        line.push(b'\n');
        if serde_json::to_writer(&mut line, &entry).is_err() {
            self.failures.inc();
            return None;
        }
        line.push(b'\n');
        let (place, file) = match self.reserve(entry) {
            Ok(reserved) => reserved,
            Err(e) => return self.failed(&e),
        };
        match write_line(&file, &line) {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                Some(place)
            }
            Err(e) => {
                self.unreserve(place, &file);
                self.failed(&e)
            }
        }
    }

    /// A place for `entry`'s line, the entry held there from now on (so that a rewrite
    /// meanwhile keeps it, see [`Journal::forget`]), and the file to write it to.
    fn reserve(&self, entry: Entry) -> std::io::Result<(u64, Arc<File>)> {
        let mut inner = self.inner();
        if inner.lines.len() >= MAX_LINES {
            return Err(std::io::Error::other(format!(
                "the journal holds {MAX_LINES} lines (commits are failing?)"
            )));
        }
        let file = match &inner.file {
            Some(file) => file.clone(),
            None => {
                let file = Arc::new(self.open_for_append()?);
                inner.file = Some(file.clone());
                file
            }
        };
        let place = inner.next;
        inner.next += 1;
        inner.lines.insert(place, entry);
        Ok((place, file))
    }

    /// The line at `place` could not be written to `file`: it is no longer held, and
    /// the next append opens the file anew (a partial line is skipped when read).
    fn unreserve(&self, place: u64, file: &Arc<File>) {
        let mut inner = self.inner();
        inner.lines.remove(&place);
        if inner.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, file)) {
            inner.file = None;
        }
    }

    /// An append that failed: counted, and logged once until one succeeds.
    fn failed(&self, e: &std::io::Error) -> Option<u64> {
        self.failures.inc();
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(path = %self.path.display(), error = %e, "Cannot journal a created task; it is still counted, but lost if the exporter is killed before its next commit.");
        }
        None
    }

    /// The create of the line at `place` is applied (counted): the line is settled at the
    /// next reconcile, even when the ledger no longer holds its task (evicted from the
    /// open tasks by newer ones). Called under the ledger's lock, as `reconcile` runs.
    pub fn applied(&self, place: u64) {
        let mut inner = self.inner();
        if inner.lines.contains_key(&place) {
            inner.applied.insert(place);
        }
    }

    /// The journal's file, open to append (a regular file only), a line cut at its end
    /// ended.
    fn open_for_append(&self) -> std::io::Result<File> {
        regular(&self.path)?;
        let mut options = OpenOptions::new();
        let file = open_regular(&self.path, options.create(true).append(true).read(true))?;
        end_cut_line(&file)?;
        Ok(file)
    }

    /// Settles the lines applied or whose task the ledger knows, and applies as created
    /// those it does not that are older than `settle` seconds at `now` (0: every line, at
    /// start-up). Run under the ledger's lock, before a commit: every settled line's task
    /// is in that commit.
    pub fn reconcile(&self, l: &mut Ledger, (now, settle): (f64, f64), apply: Apply) -> Settled {
        let inner = self.inner();
        let mut settled = Vec::new();
        for (place, e) in &inner.lines {
            let known = |l: &Ledger| {
                (inner.applied.contains(place) || l.created.get(&e.id).is_some())
                    || l.api.task(&e.id).is_some()
                    || l.seen(&e.id)
            };
            if !known(l) && now - e.at >= settle {
                l.proxy_created(apply.0, e.clone().task(), apply.1);
            }
            if known(l) {
                settled.push(*place);
            }
        }
        Settled(settled)
    }

    /// Forgets settled lines (their commit is durable): the file is written anew, then
    /// renamed over the journal; also with none settled the first time after start-up
    /// read lines it did not keep (junk goes with the first commit).
    pub fn forget(&self, settled: Settled) {
        // The lines kept, taken under the lock; the file is written without it, so a
        // create answer never waits for a rewrite. `forget` has one caller (the
        // committer), so no line is settled meanwhile.
        let (kept, upto) = {
            let mut inner = self.inner();
            if settled.0.is_empty() && !inner.junk {
                return;
            }
            inner.junk = false;
            for place in settled.0 {
                inner.lines.remove(&place);
                inner.applied.remove(&place);
            }
            (lines_text(inner.lines.values()), inner.next)
        };
        let tmp = self.path.with_extension("journal.tmp");
        let written = std::fs::write(&tmp, kept);
        // Under the lock again: the lines appended meanwhile join the new file (their
        // writes went, or are still going, to the old one), which then takes its place;
        // appends that take their place from now on go to it.
        let mut inner = self.inner();
        let renamed = written.and_then(|()| {
            let since = lines_text(inner.lines.range(upto..).map(|(_, e)| e));
            OpenOptions::new()
                .append(true)
                .open(&tmp)?
                .write_all(&since)?;
            std::fs::rename(&tmp, &self.path)
        });
        inner.file = None;
        if let Err(e) = renamed {
            tracing::warn!(path = %self.path.display(), error = %e, "Cannot rewrite the journal of created tasks; its settled lines stay (applying one again is a no-op while its task is held or counted; a replay after a kill before the next rewrite may count a task evicted from the open ones twice).");
        }
    }
}

/// One `write` of `line`: a short one (a full disk) is a failure, never finished by a
/// second `write` that another thread's line could come before.
fn write_line(mut file: &File, line: &[u8]) -> std::io::Result<()> {
    match file.write(line)? {
        n if n == line.len() => Ok(()),
        n => Err(std::io::Error::new(
            ErrorKind::WriteZero,
            format!("wrote {n} of {} bytes", line.len()),
        )),
    }
}

/// Journal lines, one JSON object a line.
fn lines_text<'e>(entries: impl Iterator<Item = &'e Entry>) -> Vec<u8> {
    let mut text = Vec::new();
    for e in entries {
        if let Ok(line) = serde_json::to_vec(e) {
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
    }
    text
}

/// What a start-up read of the journal found.
#[derive(Debug, Default)]
struct Lines {
    kept: BTreeMap<u64, Entry>,
    /// Lines over [`MAX_LINE`] bytes, passed over.
    too_long: u64,
    /// Lines that are no entry (cut by a crash, not JSON, no task id), skipped.
    unreadable: u64,
    /// Entries kept with an absurd estimate dropped or time made sane.
    mended: u64,
    /// Bytes left unread: past [`MAX_LINES`] kept lines or [`MAX_READ`] bytes.
    unread: u64,
}

impl Lines {
    fn take(&mut self, line: &[u8], now: f64) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let entry = serde_json::from_slice::<Entry>(line).ok();
        match entry.and_then(|e| e.sane(now)) {
            Some((e, mended)) => {
                self.mended += u64::from(mended);
                self.kept.insert(self.kept.len() as u64, e);
            }
            None => self.unreadable += 1,
        }
    }

    /// The lines kept, what was not kept logged (once, with the counts); and whether
    /// anything was not kept as it was.
    fn log(self, path: &Path) -> (BTreeMap<u64, Entry>, bool) {
        let Lines {
            kept,
            too_long,
            unreadable,
            mended,
            unread,
        } = self;
        let junk = too_long + unreadable + mended + unread > 0;
        if junk {
            tracing::warn!(
                path = %path.display(), kept = kept.len(), too_long, unreadable, mended, unread_bytes = unread,
                "The journal of created tasks held lines the proxy did not write as they are: lines too long (over 4 KiB) or unreadable (cut by a crash, not an entry) were skipped, absurd estimates dropped and absurd times made now; bytes past its bounds were not read."
            );
        }
        (kept, junk)
    }
}

/// Reads the journal at `path` at `now` in lines of at most [`MAX_LINE`] bytes, at most
/// [`MAX_READ`] bytes in all: memory and time bounded whatever the file holds. Nothing
/// there: no lines; anything but a regular file: an error (see [`regular`]).
fn read(path: &Path, now: f64) -> std::io::Result<Lines> {
    if !regular(path)? {
        return Ok(Lines::default());
    }
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, file).take(MAX_READ);
    let mut lines = Lines::default();
    let mut line = Vec::with_capacity(MAX_LINE + 1);
    while lines.kept.len() < MAX_LINES {
        match next_line(&mut reader, &mut line)? {
            Line::End => break,
            Line::TooLong => lines.too_long += 1,
            Line::Text => lines.take(&line, now),
        }
    }
    lines.unread = size.saturating_sub(MAX_READ - reader.limit());
    Ok(lines)
}

/// What [`next_line`] read.
#[derive(Debug, PartialEq)]
enum Line {
    End,
    /// A line of at most [`MAX_LINE`] bytes, in the buffer.
    Text,
    /// A longer line, passed over to its end.
    TooLong,
}

/// Reads the next line into `line` (its newline left out), holding at most
/// [`MAX_LINE`] + 1 bytes of it: the rest of a longer line is passed over a buffer at
/// a time, never held.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Line> {
    line.clear();
    let limit = MAX_LINE as u64 + 1;
    if reader.by_ref().take(limit).read_until(b'\n', line)? == 0 {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Line::Text);
    }
    if line.len() <= MAX_LINE {
        return Ok(Line::Text);
    }
    loop {
        let buf = reader.fill_buf()?;
        let (used, end) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), buf.is_empty()),
        };
        reader.consume(used);
        if end {
            return Ok(Line::TooLong);
        }
    }
}

/// Whether a regular file is at `path` (following symbolic links); `false`: nothing
/// is. Anything else is an error that says what is there: a directory, a FIFO (opening
/// it would wait for a writer, for ever), a socket or device, a dangling or looping
/// symbolic link.
fn regular(path: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(m) => Err(std::io::Error::other(format!(
            "not a regular file but {}",
            kind(&m.file_type())
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => match std::fs::symlink_metadata(path) {
            Ok(_) => Err(std::io::Error::other("a dangling symbolic link")),
            Err(_) => Ok(false),
        },
        Err(e) => Err(e),
    }
}

/// Opens `path` as `options` say, and only as a regular file, checked on the file
/// opened: something put in its place after [`regular`] looked (a FIFO, a device) is
/// refused, and the open never waits for it (`O_NONBLOCK`, which a regular file
/// ignores).
fn open_regular(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = options.custom_flags(libc::O_NONBLOCK).open(path)?;
    let m = file.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other(format!(
            "not a regular file but {}",
            kind(&m.file_type())
        )));
    }
    Ok(file)
}

fn kind(t: &FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// Ends a line cut by a crash at the end of `file` (open to read and append), so that
/// the next line is not glued to it and lost with it.
fn end_cut_line(mut file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut last = [0u8];
    if len > 0 && file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at: f64) -> Entry {
        Entry {
            id: id.into(),
            endpoint: "/v1/text_to_video".into(),
            model: Some("veo3".into()),
            estimate: Some(40.0),
            at,
        }
    }

    /// [`entry`] checked, as the forwarder checks it before it journals it.
    fn checked(id: &str, at: f64) -> Checked {
        entry(id, at).checked(at).expect("a task id")
    }

    fn ledger() -> (Ledger, SourceId) {
        let mut l = Ledger::new(
            std::sync::Arc::new(crate::classify::Table::builtin()),
            std::sync::Arc::new(crate::pricing::Pricing::builtin()),
            crate::ledger::Limits::default(),
        );
        let s = l.add_source("proxy");
        (l, s)
    }

    #[test]
    fn lines_survive_until_a_commit_settles_them_and_unknown_ones_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, s) = ledger();
        let live = Registry::new();
        let j = Journal::open(dir.path(), &live).unwrap();
        j.append(checked("a", 100.0));
        j.append(checked("b", 105.0));
        // A process killed now: a new journal reads both lines.
        let again = Journal::open(dir.path(), &Registry::new()).unwrap();
        assert_eq!(again.lines(), 2);
        // Young and unknown: left; old and unknown: applied, then settled.
        let settled = j.reconcile(&mut l, (112.0, SETTLE), (s, None));
        assert_eq!(settled.0, [0]);
        assert_eq!(l.created.get("a").unwrap().model.as_deref(), Some("veo3"));
        assert!(l.created.get("b").is_none());
        j.forget(settled);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 1, "{text}");
        assert!(text.contains("\"b\""), "{text}");
        // Appends after a rewrite go to the new file.
        j.append(checked("c", 106.0));
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        assert_eq!(back.lines(), 2);
        // At start-up every line is applied, whatever its age, once.
        let settled = back.reconcile(&mut l, (1000.0, 0.0), (s, None));
        assert_eq!(settled.0.len(), 2);
        let created: u64 = l.proxy.created().iter().map(|c| c.tasks).sum();
        assert_eq!(created, 3);
        let settled = back.reconcile(&mut l, (1000.0, 0.0), (s, None));
        assert_eq!(settled.0.len(), 2);
        let created: u64 = l.proxy.created().iter().map(|c| c.tasks).sum();
        assert_eq!(created, 3, "a replayed line is applied once");
    }

    #[test]
    fn a_live_entry_the_replay_would_skip_cannot_be_written() {
        // `append` takes only checked entries: these never get that far.
        for bad in ["../../v1/organization", &"t".repeat(200), ""] {
            assert_eq!(entry(bad, 100.0).checked(100.0), None, "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &Registry::new()).unwrap();
        j.append(checked("fine-1", 100.0));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 1, "{text}");
        assert!(text.contains("fine-1"), "{text}");
    }

    #[test]
    fn appends_during_a_rewrite_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, s) = ledger();
        let j = std::sync::Arc::new(Journal::open(dir.path(), &Registry::new()).unwrap());
        for i in 0..200 {
            j.append(checked(&format!("old-{i}"), 100.0));
        }
        // Applied and settled: the rewrites below drop these while new lines come.
        let settled = j.reconcile(&mut l, (1000.0, 0.0), (s, None));
        assert_eq!(settled.0.len(), 200);
        let writer = {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    j.append(checked(&format!("new-{i}"), 2000.0));
                }
            })
        };
        j.forget(settled);
        // Rewrites for as long as the writer runs (a rewrite happens only when a line
        // settled: one old line each time).
        let mut i = 0;
        while !writer.is_finished() {
            i += 1;
            j.append(checked(&format!("mid-{i}"), 100.0));
            let settled = j.reconcile(&mut l, (1000.0, SETTLE), (s, None));
            j.forget(settled);
        }
        writer.join().unwrap();
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        assert_eq!(
            back.lines(),
            2000,
            "every line appended and not settled is in the file"
        );
    }

    /// A stand-in upstream answering every request with a small JSON task.
    async fn upstream() -> std::net::SocketAddr {
        use bytes::Bytes;
        use http_body_util::Full;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|_req| async {
                    let body = br#"{"id":"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9","estimatedCost":{"credits":40}}"#;
                    hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(body)))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// A proxy in front of `up`, journaling in `journal`; its address.
    async fn proxy(
        up: std::net::SocketAddr,
        journal: Option<std::sync::Arc<Journal>>,
        token: &tokio_util::sync::CancellationToken,
    ) -> std::net::SocketAddr {
        let settings = crate::config::Proxy {
            upstream: format!("http://{up}"),
            ..Default::default()
        };
        let (observer, rx) = super::super::Observer::new(1, &Registry::new()).unwrap();
        // Nobody takes observations: they are dropped (counted), as in a proxy whose
        // consumer is busy; what one costs is not measured here.
        drop(rx);
        let forwarder = super::super::Forwarder::new(&settings, observer, journal).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = super::super::Limits {
            max_connections: 16,
            header_read_timeout: std::time::Duration::from_secs(5),
            grace: std::time::Duration::from_secs(1),
        };
        let serve = super::super::serve(listener, forwarder, None, limits, token.clone());
        tokio::spawn(serve.unwrap());
        addr
    }

    /// What journaling costs a create call: the same create calls, alternating between a
    /// proxy that journals and one that does not, in one run; latencies printed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cost_of_journaling_a_create_call() {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        let dir = tempfile::tempdir().unwrap();
        let up = upstream().await;
        let token = tokio_util::sync::CancellationToken::new();
        let journal = std::sync::Arc::new(Journal::open(dir.path(), &Registry::new()).unwrap());
        let with = proxy(up, Some(journal.clone()), &token).await;
        let without = proxy(up, None, &token).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        const N: usize = 2000;
        let mut took = [Vec::with_capacity(N), Vec::with_capacity(N)];
        for i in 0..2 * N {
            let addr = [with, without][i % 2];
            let request = hyper::Request::post(format!("http://{addr}/v1/image_to_video"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"promptText":"x","model":"gen4_turbo"}"#,
                )))
                .unwrap();
            let started = std::time::Instant::now();
            let answer = client.request(request).await.unwrap();
            assert_eq!(answer.status(), 200);
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            took[i % 2].push(started.elapsed().as_secs_f64() * 1e6);
            assert!(body.starts_with(br#"{"id":"#));
        }
        assert_eq!(journal.lines(), N, "every create journaled");
        let quantile = |v: &mut Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q) as usize]
        };
        let [mut a, mut b] = took;
        let (a50, a99) = (quantile(&mut a, 0.5), quantile(&mut a, 0.99));
        let (b50, b99) = (quantile(&mut b, 0.5), quantile(&mut b, 0.99));
        eprintln!(
            "create call through the proxy, {N} each, microseconds: with the journal p50 {a50:.0} p99 {a99:.0}; without p50 {b50:.0} p99 {b99:.0}; ratio p50 {:.2} p99 {:.2}",
            a50 / b50,
            a99 / b99
        );
        token.cancel();
    }

    /// A stand-in upstream answering every request with `body` in chunks of 1000 bytes
    /// (`Transfer-Encoding: chunked`: no stated length), then closing.
    async fn chunked_upstream(body: Vec<u8>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    let head_end = loop {
                        let n = stream.read(&mut buf).await.unwrap();
                        seen.extend_from_slice(&buf[..n]);
                        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&seen[..head_end]).to_lowercase();
                    let length: usize = head
                        .split("content-length:")
                        .nth(1)
                        .and_then(|v| v.split("\r\n").next())
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while seen.len() < head_end + length {
                        let n = stream.read(&mut buf).await.unwrap();
                        seen.extend_from_slice(&buf[..n]);
                    }
                    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
                    for chunk in body.chunks(1000) {
                        answer.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
                        answer.extend(chunk);
                        answer.extend(b"\r\n");
                    }
                    answer.extend(b"0\r\n\r\n");
                    stream.write_all(&answer).await.unwrap();
                });
            }
        });
        addr
    }

    /// A create call through a journaling proxy in front of `up`: the body the client got.
    async fn create_through(
        up: std::net::SocketAddr,
        journal: &std::sync::Arc<Journal>,
    ) -> Vec<u8> {
        use http_body_util::{BodyExt, Full};
        let token = tokio_util::sync::CancellationToken::new();
        let addr = proxy(up, Some(journal.clone()), &token).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>();
        let request = hyper::Request::post(format!("http://{addr}/v1/image_to_video"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(
                br#"{"model":"gen4_turbo"}"#,
            )))
            .unwrap();
        let answer = client.request(request).await.unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        token.cancel();
        body.to_vec()
    }

    /// A create answer without a stated length (chunked) is read and journaled before it
    /// goes on, as one with a length is; one longer than what is kept goes on whole,
    /// unjournaled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chunked_create_answer_is_journaled_before_it_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let journal = std::sync::Arc::new(Journal::open(dir.path(), &Registry::new()).unwrap());
        let pad = "p".repeat(2500);
        let small = format!(
            r#"{{"id":"0f1e2d3c-chunked","estimatedCost":{{"credits":40}},"pad":"{pad}"}}"#
        );
        let got =
            create_through(chunked_upstream(small.clone().into_bytes()).await, &journal).await;
        assert_eq!(got, small.as_bytes());
        assert_eq!(journal.lines(), 1);
        let pad = "p".repeat(super::super::tee::MAX_KEPT + 10_000);
        let large =
            format!(r#"{{"id":"0f1e2d3c-large","estimatedCost":{{"credits":40}},"pad":"{pad}"}}"#);
        let got =
            create_through(chunked_upstream(large.clone().into_bytes()).await, &journal).await;
        assert_eq!(got.len(), large.len());
        assert!(got == large.as_bytes(), "the long answer went on changed");
        assert_eq!(journal.lines(), 1);
    }

    /// A line of 64 MiB, never on disk nor in memory (made as it is read), then a good
    /// one: the buffer never holds more than `MAX_LINE` + 1 bytes.
    #[test]
    fn a_line_of_any_length_is_passed_over_unheld() {
        let good = serde_json::to_vec(&entry("a", 1.0)).unwrap();
        let long = std::io::repeat(b'x').take(64 << 20);
        let rest = [&b"\n"[..], &good, b"\n", &good].concat();
        let mut reader = BufReader::new(long.chain(std::io::Cursor::new(rest)));
        let mut line = Vec::with_capacity(MAX_LINE + 1);
        let mut got = Vec::new();
        loop {
            let l = next_line(&mut reader, &mut line).unwrap();
            assert!(line.capacity() <= MAX_LINE + 1, "{}", line.capacity());
            if l == Line::End {
                break;
            }
            got.push((l, line.len()));
        }
        let n = good.len();
        assert_eq!(
            got,
            [
                (Line::TooLong, MAX_LINE + 1),
                (Line::Text, n),
                (Line::Text, n)
            ]
        );
    }

    /// A journal with a long line, junk, lines cut and lines of absurd values: open
    /// keeps the good lines, sane; replayed at start-up (the API source following), no
    /// absurd estimate reaches the credits, and the state commits and reads back.
    #[test]
    fn a_hostile_journal_is_replayed_sane_and_the_state_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::unix_now();
        let line = |id: &str, estimate: f64, at: f64| {
            format!(
                r#"{{"id":"{id}","endpoint":"/v1/text_to_video","model":"veo3","estimate":{estimate},"at":{at}}}"#
            )
        };
        let big = "x".repeat(100 * 1024);
        let text = [
            line("huge-1", 1e308, 100.0),
            line("huge-2", 1e308, 100.0),
            line("negative", -5.0, 100.0),
            line("zero", 0.0, -1.0),
            line("late", 10.0, 1e308),
            line("future", 10.0, now + 1e6),
            line(&big, 10.0, 100.0),
            line("", 10.0, 100.0),
            line("../v1/organization", 10.0, 100.0),
            r#"{"id":"odd","endpoint":"/v1/made-up/path","at":100}"#.into(),
            "not json".into(),
            line("cut", 1.0, 1.0)[..30].into(),
        ]
        .join("\n");
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let j = Journal::open(dir.path(), &Registry::new()).unwrap();
        let kept: Vec<Entry> = j.inner().lines.values().cloned().collect();
        let ids: Vec<&str> = kept.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["huge-1", "huge-2", "negative", "zero", "late", "future", "odd"]
        );
        let estimates: Vec<Option<f64>> = kept.iter().map(|e| e.estimate).collect();
        assert_eq!(
            estimates,
            [None, None, None, Some(0.0), Some(10.0), Some(10.0), None]
        );
        assert!(kept
            .iter()
            .all(|e| (0.0..=crate::clock::unix_now()).contains(&e.at)));
        assert_eq!(kept[6].endpoint, super::super::endpoint::OTHER);
        // Replayed at start-up, followed: every line applied now, none charged absurdly.
        let (mut l, s) = ledger();
        let settled = j.reconcile(&mut l, (crate::clock::unix_now(), 0.0), (s, Some(100)));
        assert_eq!(settled.0.len(), 7, "every line applied at start-up");
        assert_eq!(l.api.in_flight(), 20.0);
        let state = tempfile::tempdir().unwrap();
        crate::state::begin(state.path(), &l)
            .unwrap()
            .finish()
            .unwrap();
        let back = crate::state::read(state.path())
            .unwrap()
            .expect("a state file");
        assert_eq!(back.totals.api_credits_in_flight, 20.0);
    }

    /// Lines past `MAX_LINES` are left unread, and said to be.
    #[test]
    fn lines_past_the_cap_are_left_unread() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        for i in 0..MAX_LINES + 3 {
            text.extend_from_slice(&serde_json::to_vec(&entry(&format!("t{i}"), 1.0)).unwrap());
            text.push(b'\n');
        }
        std::fs::write(dir.path().join(FILE_NAME), &text).unwrap();
        let lines = read(&dir.path().join(FILE_NAME), 2.0).unwrap();
        assert_eq!(lines.kept.len(), MAX_LINES);
        assert_eq!(
            lines.kept[&(MAX_LINES as u64 - 1)].id,
            format!("t{}", MAX_LINES - 1)
        );
        let each = text.len() as u64 / (MAX_LINES as u64 + 3);
        assert!(lines.unread >= 3 * (each - 2), "{}", lines.unread);
    }

    /// A create answer with an absurd estimate (the upstream's, not the journal's): the
    /// task is created and followed without it, so the credits in flight stay finite
    /// and the state still commits.
    #[test]
    fn an_absurd_estimate_in_a_create_answer_reaches_no_credits() {
        let (mut l, s) = ledger();
        for id in ["a", "b"] {
            let answer = format!(r#"{{"id":"{id}","estimatedCost":{{"credits":1e308}}}}"#);
            let e = Entry::of_create("/v1/text_to_video", Some("veo3"), 1.0, answer.as_bytes());
            l.proxy_created(s, e.unwrap().task(), Some(100));
        }
        assert_eq!(l.api.len(), 2);
        assert_eq!(l.api.in_flight(), 0.0);
        let state = tempfile::tempdir().unwrap();
        crate::state::begin(state.path(), &l)
            .unwrap()
            .finish()
            .unwrap();
    }

    /// What a create answer says, read as the forwarder reads it: the id, the model (the
    /// request's, else `routing.model`) and the estimate; no entry for what is no create
    /// answer, however it is malformed, and never a crash.
    #[test]
    fn a_create_answer_is_read_field_by_field_and_anything_else_is_none() {
        let read = |answer: &str, model: Option<&str>| {
            Entry::of_create("/v1/image_to_video", model, 5.0, answer.as_bytes())
                .map(|e| (e.id, e.model, e.estimate))
        };
        let some = |id: &str, model: Option<&str>, estimate: Option<f64>| {
            Some((id.to_string(), model.map(str::to_string), estimate))
        };
        let plain = r#"{"id":"t1","estimatedCost":{"credits":50}}"#;
        assert_eq!(
            read(plain, Some("gen4_turbo")),
            some("t1", Some("gen4_turbo"), Some(50.0))
        );
        let routed = r#"{"id":"t2","routing":{"model":"gen4.5","estimatedCost":{"credits":12.5}}}"#;
        assert_eq!(read(routed, None), some("t2", Some("gen4.5"), Some(12.5)));
        assert_eq!(
            read(routed, Some("asked")),
            some("t2", Some("asked"), Some(12.5))
        );
        let both = r#"{"id":"t3","estimatedCost":{"credits":7},"routing":{"estimatedCost":{"credits":9}}}"#;
        assert_eq!(read(both, None), some("t3", None, Some(7.0)));
        // A cost that is no number is no estimate; the task is still created.
        for credits in [r#""50""#, "null", "true", "[50]", r#"{"n":50}"#] {
            let answer = format!(r#"{{"id":"t4","estimatedCost":{{"credits":{credits}}}}}"#);
            assert_eq!(read(&answer, None), some("t4", None, None), "{answer}");
        }
        let padded = format!(
            r#"{{"pad":"{}","nested":{{"a":[1,{{"b":null}}]}},"id":"t5"}}"#,
            "A".repeat(60_000)
        );
        assert_eq!(read(&padded, None), some("t5", None, None));
        let deep_enough = format!(
            r#"{{"x":{}1{},"id":"t6"}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(read(&deep_enough, None), some("t6", None, None));
        // Nesting skipped in a field not read costs no stack (30,000 levels), and in one
        // that is read it is no create answer.
        let deep_skipped = format!(
            r#"{{"x":{}1{},"id":"t7"}}"#,
            "[".repeat(30_000),
            "]".repeat(30_000)
        );
        assert_eq!(read(&deep_skipped, None), some("t7", None, None));
        let deep_read = format!(
            r#"{{"id":"t7","estimatedCost":{{"credits":{}1{}}}}}"#,
            "[".repeat(30_000),
            "]".repeat(30_000)
        );
        let cut_deep = format!(r#"{{"id":"t8","x":{}"#, "[{\"a\":".repeat(10_000));
        let bad_utf8 = b"{\"id\":\"t9\xff\"}".to_vec();
        assert_eq!(Entry::of_create("/v1/x", None, 5.0, &bad_utf8), None);
        for answer in [
            "",
            "null",
            "[1]",
            r#""t1""#,
            r#"{"id":5}"#,
            r#"{"id":null}"#,
            r#"{"estimatedCost":{"credits":50}}"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"id":"t1"} x"#,
            r#"{"id":"t1""#,
            r#"{"id":"t1","routing":"gen4"}"#,
            r#"{"id":"t1","estimatedCost":{"credits":1e400}}"#,
            &deep_read,
            &cut_deep,
        ] {
            let shown = &answer[..answer.len().min(80)];
            assert_eq!(read(answer, None), None, "{shown}");
        }
    }

    /// A line holds the numbers it was given: what the replay reads is what was written.
    #[test]
    fn numbers_come_back_from_a_line_as_they_went_in() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &Registry::new()).unwrap();
        let times = [0.0, 1e-7, 0.1 + 0.2, 1_765_072_800.123_456_7, 1e9, 1.7e9];
        let estimates = [0.0, 1e-3, 1.0 / 3.0, 12.5, 1e9];
        for (i, (at, estimate)) in times.iter().zip(estimates.iter().cycle()).enumerate() {
            let mut e = entry(&format!("n{i}"), *at);
            e.estimate = Some(*estimate);
            j.append(e.checked(3e9).unwrap());
        }
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        let back: Vec<Entry> = back.inner().lines.values().cloned().collect();
        let written: Vec<(f64, Option<f64>)> = back.iter().map(|e| (e.at, e.estimate)).collect();
        let given: Vec<(f64, Option<f64>)> = times
            .iter()
            .zip(estimates.iter().cycle())
            .map(|(at, c)| (*at, Some(*c)))
            .collect();
        assert_eq!(written, given);
    }

    /// A FIFO where the journal goes in `dir`; its path.
    fn fifo_in(dir: &Path) -> std::path::PathBuf {
        let path = dir.join(FILE_NAME);
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.unwrap().success());
        path
    }

    /// A journal that is no regular file: open warns and holds nothing, without
    /// waiting (a FIFO), and a create call is counted as not journaled, never waits.
    #[test]
    fn a_journal_that_is_no_file_is_skipped_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        fifo_in(dir.path());
        let looping = tempfile::tempdir().unwrap();
        let p = looping.path().join(FILE_NAME);
        std::os::unix::fs::symlink(&p, &p).unwrap();
        let dangling = tempfile::tempdir().unwrap();
        let target = dangling.path().join("gone");
        std::os::unix::fs::symlink(&target, dangling.path().join(FILE_NAME)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for d in [dir.path(), looping.path(), dangling.path()] {
            let (d, tx) = (d.to_path_buf(), tx.clone());
            std::thread::spawn(move || {
                let j = Journal::open(&d, &Registry::new()).unwrap();
                j.append(checked("a", 1.0));
                tx.send((d, j.lines(), j.failures.get())).unwrap();
            });
        }
        for _ in 0..3 {
            let (d, lines, failures) = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("open and append return, whatever is there");
            assert_eq!((lines, failures), (0, 1), "{}", d.display());
        }
        assert!(!target.exists(), "no file made through a dangling link");
    }

    /// What is opened is what is checked: a FIFO put in the journal's place after the
    /// look (here: never looked at) is refused without waiting for a writer, for
    /// reading and for appending.
    #[test]
    fn a_fifo_in_the_journals_place_is_refused_at_the_open_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let read = open_regular(&path, OpenOptions::new().read(true)).map(drop);
            let mut options = OpenOptions::new();
            let append = open_regular(&path, options.create(true).append(true).read(true));
            tx.send((
                read.map_err(|e| e.to_string()),
                append.map(drop).map_err(|e| e.to_string()),
            ))
            .unwrap();
        });
        let (read, append) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the opens return at once");
        let refused = Err("not a regular file but a FIFO".to_string());
        assert_eq!((read, append), (refused.clone(), refused));
    }

    /// A journal of nothing but junk is written anew at the first commit, though no
    /// line settles.
    #[test]
    fn junk_goes_with_the_first_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "junk\n".repeat(1000)).unwrap();
        let j = Journal::open(dir.path(), &Registry::new()).unwrap();
        j.forget(Settled::default());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        j.append(checked("a", 1.0));
        j.forget(Settled::default());
        assert_eq!(
            Journal::open(dir.path(), &Registry::new()).unwrap().lines(),
            1
        );
    }

    /// A line cut by a crash at the end of the file: the next line appended is not
    /// glued to it.
    #[test]
    fn a_line_appended_after_a_cut_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), br#"{"id":"cut","endpo"#).unwrap();
        let j = Journal::open(dir.path(), &Registry::new()).unwrap();
        j.append(checked("a", 1.0));
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        assert_eq!(back.lines(), 1);
    }

    #[test]
    fn appends_from_many_threads_at_once_stay_whole_lines() {
        // Written without the lock: the kernel alone keeps the lines apart.
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::open(dir.path(), &Registry::new()).unwrap());
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|i| j.append(checked(&format!("t{t}-{i}"), 1.0)).is_some())
                        .count()
                })
            })
            .collect();
        let written: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(written, 4000);
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        let mut ids: Vec<String> = back.inner().lines.values().map(|e| e.id.clone()).collect();
        ids.sort();
        let mut want: Vec<String> = (0..4)
            .flat_map(|t| (0..1000).map(move |i| format!("t{t}-{i}")))
            .collect();
        want.sort();
        assert_eq!(ids, want, "every line whole, none glued to another");
    }

    #[test]
    fn a_line_cut_by_a_failed_write_never_takes_the_next_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &Registry::new()).unwrap();
        j.append(checked("a", 1.0));
        // What a short write on a full disk leaves, through the handle appends share:
        // the next append, from any thread, comes after it on that handle.
        let file = j.inner().file.clone().unwrap();
        (&*file).write_all(br#"{"id":"cut","endpo"#).unwrap();
        j.append(checked("b", 2.0));
        let back = Journal::open(dir.path(), &Registry::new()).unwrap();
        let ids: Vec<String> = back.inner().lines.values().map(|e| e.id.clone()).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn a_line_that_could_not_be_written_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &Registry::new()).unwrap();
        let (place, file) = j.reserve(entry("a", 1.0)).unwrap();
        let (_, same) = j.reserve(entry("b", 1.0)).unwrap();
        assert!(Arc::ptr_eq(&file, &same), "one handle for every append");
        assert_eq!(j.lines(), 2);
        j.unreserve(place, &file);
        assert_eq!(j.lines(), 1);
        assert!(
            j.inner().file.is_none(),
            "the next append opens the file anew"
        );
        // A handle already replaced is left alone when its write fails.
        let (later, newer) = j.reserve(entry("c", 1.0)).unwrap();
        assert!(!Arc::ptr_eq(&file, &newer));
        j.unreserve(later, &file);
        assert!(j
            .inner()
            .file
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, &newer)));
        assert_eq!(j.lines(), 1);
    }

    #[test]
    fn a_failed_write_is_counted_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let live = Registry::new();
        // The journal's path is a directory: every write fails.
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        let j = Journal::open(dir.path(), &live).unwrap();
        j.append(checked("a", 1.0));
        j.append(checked("b", 2.0));
        assert_eq!(j.failures.get(), 2);
        assert_eq!(j.lines(), 0);
    }
}
