//! Splitting blocks of bytes into records: lines, and JSON objects pretty-printed over
//! several lines.
//!
//! A *complete line* ends with `\n`. The bytes after the last newline of a block are a
//! *partial line*: held until the rest arrives. A line longer than `max_line_bytes` is
//! reported once as [`Line::TooLong`] as soon as it passes the bound, and the rest of it
//! is skipped up to the next newline, so memory stays bounded by `max_line_bytes`
//! whatever the input.
//!
//! A *multi-line object* is what Python's `task.to_json()` and Node's
//! `JSON.stringify(task, null, 2)` write: a line holding only `{` opens an object, and the
//! lines after it belong to it until its braces and brackets balance (counted outside
//! strings). It is handed over as one
//! [`Line::Complete`] spanning those lines, and held like a partial line until it is
//! complete, so a checkpoint (the read position less what is held) never lands inside
//! it. Its bound is `max_line_bytes` too: an object that grows past it is reported once
//! as [`Line::TooLong`] and its remaining lines are skipped until it balances. A line
//! starting with `{` in the first column inside an open object (pretty-printers indent
//! everything but the outer braces) means the object was cut short: what was held is
//! handed over as it is (and rejected by the parser), and the new line starts afresh.
//! A one-line record never opens an object, whole or cut short, so one-line logs are
//! split exactly as lines (and pay one look at a line's second byte).

use memchr::memchr;

/// One item of a block.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line (or multi-line object), without its final newline.
    Complete(&'a [u8]),
    /// A record over the bound, with the part of it at hand (at least its first bytes).
    TooLong(&'a [u8]),
}

/// Bracket depth of a JSON text read a piece at a time, with what it needs to know to
/// leave brackets in strings out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Brackets {
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl Brackets {
    /// A new line begins: a string never spans lines in valid JSON, so a line always
    /// starts outside one (and a stray quote cannot turn the rest of an object around).
    fn new_line(&mut self) {
        self.in_string = false;
        self.escaped = false;
    }

    /// Reads the next bytes of the current line; true as soon as the outermost bracket
    /// closes (the rest is not looked at).
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }

    /// Reads a line in parts; true when the outermost bracket closed in it.
    fn line(&mut self, parts: &[&[u8]]) -> bool {
        self.new_line();
        parts.iter().any(|p| self.feed(p))
    }
}

/// An open multi-line object, and whether it went over the bound and its lines are
/// being skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    brackets: Brackets,
    skip: bool,
}

/// What a complete line does to the record being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The record ends with this line.
    Emit,
    /// The line opens or continues an object that goes on.
    Hold,
    /// The line starts a new record: the open object ends before it, cut short.
    Restart,
}

/// Whether a line opens a pretty-printed object: the opening brace alone, as every
/// pretty-printer writes it. A one-line record (`{"id":...`) never does, whole or cut
/// short, so one-line logs are split exactly as lines.
fn opens_object(line: &[u8]) -> bool {
    line.first() == Some(&b'{') && line[1..].iter().all(u8::is_ascii_whitespace)
}

/// Moves the object state on by one complete line.
fn step(open: &mut Option<Open>, line: &[u8]) -> Step {
    match open {
        None if opens_object(line) => {
            let mut brackets = Brackets::default();
            brackets.line(&[line]);
            *open = Some(Open {
                brackets,
                skip: false,
            });
            Step::Hold
        }
        None => Step::Emit,
        Some(_) if line.first() == Some(&b'{') => {
            *open = None;
            Step::Restart
        }
        Some(o) => {
            if o.brackets.line(&[line]) {
                *open = None;
                Step::Emit
            } else {
                Step::Hold
            }
        }
    }
}

/// The record at hand went over the bound (and was reported): from now on its rest is
/// skipped. `line` is what is at hand of its current line, which has ended when
/// `complete`. An open object is skipped until its brackets balance, or a record starts
/// in the first column; returns whether the rest of the current line is to be skipped up
/// to its newline.
fn skip_rest(open: &mut Option<Open>, line: &[&[u8]], complete: bool) -> bool {
    let Some(o) = open else {
        return !complete;
    };
    o.skip = true;
    if o.brackets.line(line) {
        *open = None;
    }
    !complete
}

/// Splits a stream of blocks into records.
#[derive(Debug)]
pub struct LineSplitter {
    /// The record held: a partial line, or an open object's lines so far (each with its
    /// newline) and its partial line.
    carry: Vec<u8>,
    /// Where the last (partial) line starts in `carry`.
    line_start: usize,
    max_line_bytes: usize,
    /// Skipping up to the next newline (the rest of an over-long line).
    skipping: bool,
    open: Option<Open>,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter {
            carry: Vec::new(),
            line_start: 0,
            max_line_bytes: max_line_bytes.max(1),
            skipping: false,
            open: None,
        }
    }

    /// Bytes of the record held (a partial line or an open object).
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Whether the splitter is skipping the rest of an over-long line.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Skips everything up to the next newline, as when starting in the middle of a line.
    pub fn skip_to_newline(&mut self) {
        self.reset();
        self.skipping = true;
    }

    /// Ends the stream: a held partial line or object is reported as a complete line
    /// (apart, when the last line started a new record; not at all when it is the end
    /// of an over-long object, reported already).
    pub fn finish(&mut self, mut f: impl FnMut(Line<'_>)) {
        self.cut_short(&[], &mut f);
        if !self.carry.is_empty() && !self.open.is_some_and(|o| o.skip) {
            // An object's lines are held with their newlines; the last is not its.
            f(Line::Complete(
                self.carry.strip_suffix(b"\n").unwrap_or(&self.carry),
            ));
        }
        self.reset();
    }

    /// Forgets any partial line or object, as after a truncation.
    pub fn reset(&mut self) {
        self.carry.clear();
        self.line_start = 0;
        self.skipping = false;
        self.open = None;
    }

    /// Feeds one block, calling `f` for each record it completes, in order (the tests'
    /// view of [`split`](Self::split)).
    #[cfg(test)]
    pub fn feed(&mut self, block: &[u8], mut f: impl FnMut(Line<'_>)) {
        let mut lines = Vec::new();
        self.split(block, &mut f, &mut lines);
        lines.into_iter().for_each(f);
    }

    /// Feeds one block: its own records are appended to `lines`, in order (they borrow
    /// the block, so a caller can hold several at once); `f` gets only the records
    /// completed from what was held, which come before all of them.
    pub fn split<'b>(
        &mut self,
        block: &'b [u8],
        mut f: impl FnMut(Line<'_>),
        lines: &mut Vec<Line<'b>>,
    ) {
        let mut rest = block;
        if self.skipping {
            let newline = memchr(b'\n', rest);
            let skipped = &rest[..newline.unwrap_or(rest.len())];
            if let Some(o) = &mut self.open {
                if o.brackets.feed(skipped) {
                    self.open = None;
                }
            }
            match newline {
                Some(i) => {
                    rest = &rest[i + 1..];
                    self.skipping = false;
                }
                None => return,
            }
        }
        while !self.carry.is_empty() {
            let Some(i) = memchr(b'\n', rest) else {
                self.hold_partial(rest, &mut f);
                return;
            };
            let line = &rest[..i];
            rest = &rest[i + 1..];
            self.complete_held(line, &mut f);
        }
        self.split_block(block, block.len() - rest.len(), lines);
    }

    /// When the line after an open object's held lines starts a new record (`{` in its
    /// first column; `next` is its part in this block), the object was cut short: it is
    /// handed over as it is, without the newline after it, and only the line is held.
    fn cut_short(&mut self, next: &[u8], f: &mut impl FnMut(Line<'_>)) {
        let first = self.carry.get(self.line_start).or(next.first());
        if self.open.is_none() || first != Some(&b'{') {
            return;
        }
        if !self.open.is_some_and(|o| o.skip) {
            f(Line::Complete(
                &self.carry[..self.line_start.saturating_sub(1)],
            ));
        }
        self.carry.drain(..self.line_start);
        self.line_start = 0;
        self.open = None;
    }

    /// Keeps the start of a line (or the rest of an object) that continues in the next
    /// block, within the bound.
    fn hold_partial(&mut self, part: &[u8], f: &mut impl FnMut(Line<'_>)) {
        self.cut_short(part, f);
        if part.is_empty() {
            return;
        }
        if self.carry.len() + part.len() <= self.max_line_bytes {
            self.carry.extend_from_slice(part);
            return;
        }
        if !self.open.is_some_and(|o| o.skip) {
            match self.carry.is_empty() {
                true => f(Line::TooLong(&part[..self.max_line_bytes])),
                false => f(Line::TooLong(&self.carry)),
            }
        }
        let line = [&self.carry[self.line_start..], part];
        self.skipping = skip_rest(&mut self.open, &line, false);
        self.carry.clear();
        self.line_start = 0;
    }

    /// The held record gets one more complete line (`line` is its part in this block).
    fn complete_held(&mut self, line: &[u8], f: &mut impl FnMut(Line<'_>)) {
        self.cut_short(line, f);
        let skip = self.open.is_some_and(|o| o.skip);
        if self.carry.len() + line.len() > self.max_line_bytes {
            if !skip {
                match self.carry.is_empty() {
                    true => f(Line::TooLong(&line[..self.max_line_bytes])),
                    false => f(Line::TooLong(&self.carry)),
                }
            }
            skip_rest(
                &mut self.open,
                &[&self.carry[self.line_start..], line],
                true,
            );
            self.carry.clear();
            self.line_start = 0;
            return;
        }
        self.carry.extend_from_slice(line);
        // A `Restart` was handled above: the line does not start with `{` if an object
        // is open.
        match step(&mut self.open, &self.carry[self.line_start..]) {
            Step::Hold if !skip => {
                self.carry.push(b'\n');
                self.line_start = self.carry.len();
            }
            Step::Emit if !skip => {
                f(Line::Complete(&self.carry));
                self.carry.clear();
                self.line_start = 0;
            }
            Step::Hold | Step::Emit | Step::Restart => {
                self.carry.clear();
                self.line_start = 0;
            }
        }
    }

    /// Splits the block from `pos` on, where nothing is held.
    fn split_block<'b>(&mut self, block: &'b [u8], mut pos: usize, lines: &mut Vec<Line<'b>>) {
        let max = self.max_line_bytes;
        // Where the open object began in this block.
        let mut start: Option<usize> = None;
        while let Some(i) = memchr(b'\n', &block[pos..]) {
            let end = pos + i;
            let line = &block[pos..end];
            // The usual line: no object open (so none started here) and none opened.
            if self.open.is_none() && !opens_object(line) {
                match line.len() > max {
                    true => lines.push(Line::TooLong(&line[..max])),
                    false => lines.push(Line::Complete(line)),
                }
                pos = end + 1;
                continue;
            }
            loop {
                let skip = self.open.is_some_and(|o| o.skip);
                match step(&mut self.open, line) {
                    Step::Emit if skip => {}
                    Step::Emit => match start.take() {
                        Some(s) if end - s > max => lines.push(Line::TooLong(&block[s..s + max])),
                        Some(s) => lines.push(Line::Complete(&block[s..end])),
                        None if line.len() > max => lines.push(Line::TooLong(&line[..max])),
                        None => lines.push(Line::Complete(line)),
                    },
                    Step::Hold if skip => {}
                    Step::Hold => {
                        let s = *start.get_or_insert(pos);
                        if end - s > max {
                            lines.push(Line::TooLong(&block[s..s + max]));
                            start = None;
                            if let Some(o) = &mut self.open {
                                o.skip = true;
                            }
                        }
                    }
                    Step::Restart => {
                        if let Some(s) = start.take() {
                            lines.push(Line::Complete(&block[s..pos - 1]));
                        }
                        continue;
                    }
                }
                break;
            }
            pos = end + 1;
        }
        // A partial line that starts a new record cuts an open object short too.
        if self.open.is_some() && block.get(pos) == Some(&b'{') {
            if let Some(s) = start.take() {
                lines.push(Line::Complete(&block[s..pos - 1]));
            }
            self.open = None;
        }
        self.hold_tail(block, start.unwrap_or(pos), pos, lines);
    }

    /// Holds what follows the block's last complete record (from `from`; its partial
    /// line from `pos`), within the bound: the size of an open object held does not
    /// count the newline after its last complete line.
    fn hold_tail<'b>(
        &mut self,
        block: &'b [u8],
        from: usize,
        pos: usize,
        lines: &mut Vec<Line<'b>>,
    ) {
        let (tail, partial) = (&block[from..], &block[pos..]);
        let size = tail.len() - usize::from(partial.is_empty() && !tail.is_empty());
        if size <= self.max_line_bytes {
            self.carry.extend_from_slice(tail);
            self.line_start = pos - from;
            return;
        }
        if !self.open.is_some_and(|o| o.skip) {
            lines.push(Line::TooLong(&tail[..self.max_line_bytes]));
        }
        self.skipping = skip_rest(&mut self.open, &[partial], partial.is_empty());
        self.line_start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, blocks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for b in blocks {
            s.feed(b, |l| out.push(text(l)));
        }
        (out, s.pending())
    }

    #[test]
    fn partial_lines_are_held_until_their_newline() {
        assert_eq!(
            split(100, &[b"ab", b"c\nde", b"f\n", b"g"]),
            (vec!["abc".into(), "def".into()], 1)
        );
        assert_eq!(
            split(100, &[b"\n\nx\n"]),
            (vec!["".into(), "".into(), "x".into()], 0)
        );
        assert_eq!(
            split(100, &[b"a", b"", b"b", b"\n"]),
            (vec!["ab".into()], 0)
        );
    }

    #[test]
    fn over_long_lines_are_reported_once_and_skipped() {
        let limit = 4;
        // Within one block, across blocks, exactly at the limit, and a line never ended.
        assert_eq!(
            split(limit, &[b"12345\nok\n"]),
            (vec!["<too long>".into(), "ok".into()], 0)
        );
        assert_eq!(
            split(limit, &[b"12", b"34", b"5", b"678", b"9\nok\n"]),
            (vec!["<too long>".into(), "ok".into()], 0)
        );
        assert_eq!(split(limit, &[b"1234\n"]), (vec!["1234".into()], 0));
        assert_eq!(split(limit, &[b"12", b"34\n"]), (vec!["1234".into()], 0));
        assert_eq!(
            split(limit, &[b"123", b"45\n"]),
            (vec!["<too long>".into()], 0)
        );
        assert_eq!(
            split(limit, &[b"ok\n123456789", b"123456789"]),
            (vec!["ok".into(), "<too long>".into()], 0)
        );
    }

    /// A pretty-printed task, as Python's `to_json()` writes it.
    fn pretty(id: &str) -> String {
        format!("{{\n  \"id\": \"{id}\",\n  \"status\": \"FAILED\",\n  \"failure\": \"a {{ b ] \\\" c\",\n  \"cost\": {{\n    \"credits\": 5\n  }},\n  \"output\": [\n    \"x\"\n  ]\n}}")
    }

    #[test]
    fn pretty_printed_objects_are_one_record() {
        let (a, b) = (pretty("a"), pretty("b"));
        let log = format!("{{\"id\":\"s\"}}\n{a}\n{b}\r\n{{\"id\":\"t\"}}\n");
        let want = vec![
            "{\"id\":\"s\"}".to_string(),
            a.clone(),
            format!("{b}\r"),
            "{\"id\":\"t\"}".to_string(),
        ];
        // Whole, byte by byte, and cut at every point.
        assert_eq!(split(1 << 20, &[log.as_bytes()]), (want.clone(), 0));
        let bytes: Vec<&[u8]> = log.as_bytes().chunks(1).collect();
        assert_eq!(split(1 << 20, &bytes), (want.clone(), 0));
        for cut in 0..log.len() {
            let (x, y) = log.as_bytes().split_at(cut);
            assert_eq!(split(1 << 20, &[x, y]), (want.clone(), 0), "cut at {cut}");
        }
    }

    #[test]
    fn a_partial_object_is_held_whole() {
        let a = pretty("a");
        let mut s = LineSplitter::new(1 << 20);
        let mut out = Vec::new();
        let cut = a.len() - 3;
        s.feed(&a.as_bytes()[..cut], |l| out.push(format!("{l:?}")));
        assert!(out.is_empty());
        // What is held reaches back to the object's first byte: a checkpoint at
        // `fed - pending` is never inside it.
        assert_eq!(s.pending(), cut);
        s.feed(&a.as_bytes()[cut..], |l| out.push(format!("{l:?}")));
        assert_eq!(
            s.pending(),
            a.len(),
            "closed, but its last line has no newline yet"
        );
        s.feed(b"\n", |l| out.push(format!("{l:?}")));
        assert_eq!((out.len(), s.pending()), (1, 0));
        // At the end of a file read once, a held partial object is handed over as it is.
        let mut s = LineSplitter::new(1 << 20);
        let mut out = Vec::new();
        s.feed(b"{\n  \"id\": 1,\n", |l| out.push(format!("{l:?}")));
        s.finish(|l| out.push(format!("{l:?}")));
        assert_eq!(
            out,
            vec![format!("{:?}", Line::Complete(b"{\n  \"id\": 1,"))]
        );
    }

    #[test]
    fn an_object_cut_short_by_a_new_record_is_handed_over_alone() {
        // A writer that died mid-object and a new record in the first column: the cut
        // object is one (invalid) record and the new ones are read as usual.
        let log = b"{\n  \"id\": \"x\",\n{\"id\":\"y\"}\n{\n  \"id\": \"z\"\n}\n";
        let want = vec![
            "{\n  \"id\": \"x\",".to_string(),
            "{\"id\":\"y\"}".into(),
            "{\n  \"id\": \"z\"\n}".into(),
        ];
        assert_eq!(split(100, &[log]), (want.clone(), 0));
        let bytes: Vec<&[u8]> = log.chunks(1).collect();
        assert_eq!(split(100, &bytes), (want, 0));
    }

    #[test]
    fn an_object_that_never_closes_is_bounded() {
        let limit = 64;
        // Opened, then line after line that never balances: reported once as too long,
        // the rest skipped until it balances; the next record is read.
        let mut log = b"{\n".to_vec();
        for _ in 0..1000 {
            log.extend_from_slice(b"  \"k\": [1, {\"a\": 2}],\n");
        }
        log.extend_from_slice(b"}\n{\"id\":\"after\"}\n");
        for block in [log.len(), 7, 1] {
            let blocks: Vec<&[u8]> = log.chunks(block).collect();
            let mut s = LineSplitter::new(limit);
            let mut out = Vec::new();
            for b in &blocks {
                s.feed(b, |l| out.push(text(l)));
                assert!(s.pending() <= limit, "block {block}: {}", s.pending());
            }
            assert_eq!(
                out,
                vec!["<too long>", "{\"id\":\"after\"}"],
                "block {block}"
            );
        }
        // A file that ends in the middle of the skipped object: nothing more to report.
        let mut s = LineSplitter::new(limit);
        let mut reported = 0;
        s.feed(&log[..log.len() / 2], |_| reported += 1);
        s.finish(|_| reported += 1);
        assert_eq!(reported, 1, "the object once, as too long");
        // A record in the first column ends the skipping too.
        let mut log = b"{\n".to_vec();
        log.extend_from_slice(&b"  \"k\": 1,\n".repeat(100));
        log.extend_from_slice(b"{\"id\":\"next\"}\n");
        assert_eq!(
            split(limit, &[&log]),
            (vec!["<too long>".into(), "{\"id\":\"next\"}".into()], 0)
        );
    }

    fn text(l: Line<'_>) -> String {
        match l {
            Line::Complete(l) => String::from_utf8_lossy(l).into_owned(),
            Line::TooLong(_) => "<too long>".into(),
        }
    }

    /// Feeds `log` to a new splitter in blocks of the sizes `cuts` gives in turn, calling
    /// `each(bytes fed, bytes held)` after every block; what came out, and the splitter.
    fn feed_in_blocks(
        limit: usize,
        log: &[u8],
        cuts: &[usize],
        mut each: impl FnMut(usize, usize),
    ) -> (Vec<String>, LineSplitter) {
        let mut s = LineSplitter::new(limit);
        let mut out = Vec::new();
        let mut fed = 0;
        for n in cuts.iter().cycle() {
            if fed == log.len() {
                break;
            }
            let n = (*n).min(log.len() - fed);
            s.feed(&log[fed..fed + n], |l| out.push(text(l)));
            fed += n;
            each(fed, s.pending());
        }
        (out, s)
    }

    /// A record of the bounded-splitting property test, and what must come out of it.
    fn bounded_record(kind: u8, i: usize, size: usize) -> (String, String) {
        let pad = "p".repeat(size);
        match kind {
            // One line, within the bound.
            0 => {
                let r = format!("{{\"id\":\"{i}\",\"s\":\"{}\"}}", &pad[..size.min(20)]);
                (r.clone(), r)
            }
            // One line over the bound.
            1 => (format!("{{\"id\":\"{i}\",\"s\":\"{pad}{pad}\"}}"), "<too long>".into()),
            // Pretty-printed within the bound (a quote and brackets in a string).
            2 => {
                let r = format!("{{\n  \"id\": \"{i}\",\n  \"s\": \"[{{\\\"\",\n  \"cost\": {{\n    \"credits\": 1\n  }}\n}}");
                (r.clone(), r)
            }
            // Pretty-printed over the bound: skipped until it balances.
            3 => (
                format!("{{\n  \"id\": \"{i}\",\n  \"a\": [\n    \"{pad}\",\n    \"{pad}\"\n  ],\n  \"b\": \"}}\"\n}}"),
                "<too long>".into(),
            ),
            // Cut short by the next record: handed over as it is.
            _ => {
                let r = format!("{{\n  \"id\": \"{i}\",\n  \"s\": \"x\",");
                (r.clone(), r)
            }
        }
    }

    proptest::proptest! {
        /// With a bound small enough to be passed, any mix of records (within it, over
        /// it, pretty-printed, cut short) cut into any blocks comes out as each record
        /// whole, or once as too long, and the next record is never lost; what is held
        /// stays within the bound.
        #[test]
        fn bounded_records_survive_any_cutting(
            kinds in proptest::collection::vec(0u8..5, 1..10),
            cuts in proptest::collection::vec(1usize..90, 1..80),
        ) {
            let limit = 100;
            let (records, want): (Vec<String>, Vec<String>) = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| bounded_record(*k, i, 60))
                .unzip();
            let log: String = records.iter().map(|r| format!("{r}\n")).collect();
            let (mut out, mut s) = feed_in_blocks(limit, log.as_bytes(), &cuts, |_, held| {
                assert!(held <= limit + 1, "held {held}");
            });
            // A record cut short at the very end is complete only when the file ends.
            s.finish(|l| out.push(text(l)));
            proptest::prop_assert_eq!(out, want);
        }
    }

    proptest::proptest! {
        /// Any mix of one-line and pretty-printed records, cut into any blocks, comes out
        /// as the same records; and after every block, `fed - pending` is the end of a
        /// record, so a checkpoint never lands inside one.
        #[test]
        fn records_survive_any_cutting(
            kinds in proptest::collection::vec(0u8..3, 1..12),
            cuts in proptest::collection::vec(1usize..40, 1..60),
        ) {
            let records: Vec<String> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| match k {
                    0 => format!("{{\"id\":\"{i}\",\"status\":\"SUCCEEDED\"}}"),
                    1 => pretty(&i.to_string()),
                    _ => format!("{{\"id\":\"{i}\"}}   "),
                })
                .collect();
            let log: String = records.iter().map(|r| format!("{r}\n")).collect();
            let mut ends: Vec<usize> = Vec::new();
            let mut at = 0;
            for r in &records {
                at += r.len() + 1;
                ends.push(at);
            }
            let (out, s) = feed_in_blocks(1 << 16, log.as_bytes(), &cuts, |fed, held| {
                let checkpoint = fed - held;
                assert!(
                    checkpoint == 0 || ends.contains(&checkpoint),
                    "checkpoint {checkpoint} inside a record"
                );
            });
            proptest::prop_assert_eq!(out, records);
            proptest::prop_assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn the_reviewers_cases() {
        let collect = |limit: usize, blocks: &[&[u8]], finish: bool| {
            let mut s = LineSplitter::new(limit);
            let mut out = Vec::new();
            let mut push = |l: Line<'_>| out.push(text(l));
            for b in blocks {
                s.feed(b, &mut push);
            }
            if finish {
                s.finish(&mut push);
            }
            out
        };
        // An unclosed object near the bound, then a record that crosses the block end:
        // the record is read whatever the cut.
        let object = format!("{{\n{}", "  \"k\": 1,\n".repeat(7));
        let record = "{\"id\":\"r1\",\"status\":\"FAILED\"}";
        let log = format!("{object}{record}\n");
        for cut in 0..=log.len() {
            let (a, b) = log.as_bytes().split_at(cut);
            let out = collect(100, &[a, b], false);
            assert_eq!(
                out.last().map(String::as_str),
                Some(record),
                "cut {cut}: {out:?}"
            );
        }
        // An object exactly at the bound, the block ending right after its newline.
        let object = format!("{{\n{}", "  \"k\": 1,\n".repeat(9));
        let limit = object.len() - 1;
        let log = format!("{object}{record}\n");
        for cut in 0..=log.len() {
            let (a, b) = log.as_bytes().split_at(cut);
            let out = collect(limit, &[a, b], false);
            assert_eq!(
                out.last().map(String::as_str),
                Some(record),
                "cut {cut}: {out:?}"
            );
        }
        // At the end of a file, a cut-short object and a last record without newline.
        let out = collect(1000, &[b"{\n  \"id\": \"x\",\n{\"id\":\"y\"}"], true);
        assert_eq!(out, vec!["{\n  \"id\": \"x\",", "{\"id\":\"y\"}"]);
        // Brackets in the skipped rest of an over-long line of an over-long object count:
        // the object ends where it ends, not before or after.
        let big = "x".repeat(300);
        let log =
            format!("{{\n  \"a\": {{\"b\": \"{big}\",\n  \"c\": 1}}\n}}\n  {{\"id\":\"z\"}}\n");
        for block in [1, 7, 64, log.len()] {
            let blocks: Vec<&[u8]> = log.as_bytes().chunks(block).collect();
            let out = collect(100, &blocks, false);
            assert_eq!(out, vec!["<too long>", "  {\"id\":\"z\"}"], "block {block}");
        }
        // A line that starts like a record is a line, however long and whatever follows
        // it: only a brace alone opens an object.
        let log = format!("{{\"a\": \"{big}\",\n  \"b\": 1\n{record}\n");
        for block in [1, 7, 64, log.len()] {
            let blocks: Vec<&[u8]> = log.as_bytes().chunks(block).collect();
            let out = collect(100, &blocks, false);
            assert_eq!(
                out,
                vec!["<too long>", "  \"b\": 1", record],
                "block {block}"
            );
        }
    }

    #[test]
    fn memory_is_bounded_by_the_limit() {
        let mut s = LineSplitter::new(1000);
        let block = vec![b'x'; 64 * 1024];
        let mut too_long = 0;
        for _ in 0..160 {
            // 10 MiB without a newline
            s.feed(&block, |l| too_long += matches!(l, Line::TooLong(_)) as u32);
            assert!(s.pending() <= 1000);
        }
        assert_eq!(too_long, 1);
        assert!(s.skipping());
        let mut after = Vec::new();
        s.feed(b"tail\nnext\n", |l| after.push(format!("{l:?}")));
        assert_eq!(after, vec![format!("{:?}", Line::Complete(b"next"))]);
    }
}
