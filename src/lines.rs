//! Splitting blocks of bytes into records: lines, and JSON objects pretty-printed over
//! several lines.
//!
//! A *complete line* ends with `\n`. The bytes after the last newline of a block are a
//! *partial line*: held until the rest arrives. A line longer than `max_line_bytes` is
//! reported once as [`Line::TooLong`] as soon as it passes the bound, and the rest of it
//! is skipped up to the next newline, so memory stays bounded by `max_line_bytes`
//! whatever the input.
//!
//! A *multi-line object* is what a JSON writer's pretty-printer writes: Python's
//! `json.dumps(task, indent=2)` and `indent=0`, Node's `JSON.stringify(task, null, 2)`,
//! Go's `json.MarshalIndent(task, "", "  ")` and `MarshalIndent(task, "", "")`. A line
//! holding only `{` opens an object, and the lines after it belong to it until its braces
//! and brackets balance (counted outside strings). It is handed over as one
//! [`Line::Complete`] spanning those lines, and held like a partial line until it is
//! complete, so a checkpoint (the read position less what is held) never lands inside
//! it. Its bound is `max_line_bytes` too: an object that grows past it is reported once
//! as [`Line::TooLong`] and its remaining lines are skipped until it balances.
//!
//! The rules for a line of an open object:
//!
//! - **Cut short.** A line starting with `{` in the first column starts a new record:
//!   the object was cut short (its writer died), is handed over as it is (and rejected
//!   by the parser), and the line starts afresh. Except where an *unindented* object (its
//!   first line after the brace starts in the first column, as `indent=0` and
//!   `MarshalIndent` with an empty indent write) has a nested object in the first
//!   column: in an array, after a line ending with `[` or `,`, a line holding only `{`,
//!   `{}` or `{},` is an element. In valid JSON nothing else starts with `{` there
//!   (a member of an object starts with its key; an indented writer indents what it
//!   nests), so every other such line is a new record at once. A partial line is cut
//!   as soon as it can no longer become an element.
//! - **A record appended after the cut** where an element could start (an unindented
//!   object cut right after an array's `[` or `,`) is read as that element. When the
//!   next record starts (or the file ends), the object is cut there, and its last line
//!   holding only `{` from which its brackets balance exactly at its end (its last line
//!   closing them) starts the record appended: that record is handed over on its own,
//!   the object before it as cut short. What stays ambiguous: a cut right after the
//!   closing brace of an object in an array (before its comma or the array's end)
//!   hands that object over as a record of its own (a second rejected record, unless
//!   it has a task's fields); a record appended there with another glued after it is
//!   handed over with it, as one record; one appended there and cut short itself is
//!   handed over with the cut one, as one record.
//! - **Glued records.** When the object's last bracket closes before the end of its
//!   line and what follows it (after any whitespace) starts with `{`, as when records
//!   are written without a newline between them (`}{"id":...}`, `} {`, `}{` and a
//!   multi-line object), the object ends at its brace and the rest of the line is read
//!   as a line of its own (and a checkpoint may then fall at its `{`, read the same way
//!   after a restart). Records glued on one line with no multi-line object before
//!   them (`{"a":1}{"b":2}`) are one line here; [`glued_records`] finds them in it when
//!   the parser rejects it.
//!
//! A one-line record never opens an object, whole or cut short, so one-line logs are
//! split exactly as lines (and pay one look at a line's second byte).

use memchr::{memchr, memchr2};

/// One item of a block.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line (or multi-line object), without its final newline.
    Complete(&'a [u8]),
    /// A record over the bound, with the part of it at hand (at least its first bytes).
    TooLong(&'a [u8]),
}

/// Levels of nesting whose kind (array or object) is kept.
const KINDS_KEPT: u32 = 128;

/// Bracket depth of a JSON text read a piece at a time, with what it needs to know to
/// leave brackets in strings out, and which open brackets are arrays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Brackets {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Bit `k`: whether the bracket open at depth `k + 1` is `[` (the first
    /// [`KINDS_KEPT`] levels).
    arrays: u128,
}

impl Brackets {
    /// A new line begins: a string never spans lines in valid JSON, so a line always
    /// starts outside one (and a stray quote cannot turn the rest of an object around).
    fn new_line(&mut self) {
        self.in_string = false;
        self.escaped = false;
    }

    /// Reads the next bytes of the current line; the index of the byte that closes the
    /// outermost bracket, as soon as one does (the rest is not looked at).
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            if self.escaped {
                self.escaped = false;
                continue;
            }
            if self.in_string {
                // Most of a pretty-printed line is in strings: on to the string's next
                // quote or backslash at once (none: it goes on in the next part).
                let at = memchr2(b'"', b'\\', &bytes[i - 1..])?;
                i += at;
                match bytes[i - 1] == b'"' {
                    true => self.in_string = false,
                    false => self.escaped = true,
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    if self.depth < KINDS_KEPT {
                        let bit = 1u128 << self.depth;
                        match b == b'[' {
                            true => self.arrays |= bit,
                            false => self.arrays &= !bit,
                        }
                    }
                    self.depth = self.depth.saturating_add(1);
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i - 1);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Whether the innermost open bracket is `[`.
    fn in_array(&self) -> bool {
        (1..=KINDS_KEPT).contains(&self.depth) && (self.arrays >> (self.depth - 1)) & 1 == 1
    }
}

/// The last byte of `bytes` that is not whitespace.
fn last_non_space(bytes: &[u8]) -> Option<u8> {
    bytes
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .copied()
}

/// An open multi-line object: its brackets, its writer's style as far as known, and
/// whether it went over the bound and its lines are being skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    brackets: Brackets,
    skip: bool,
    /// Whether its lines are indented, as its first line after the brace tells.
    indented: Option<bool>,
    /// The last byte other than whitespace of its lines so far.
    last: u8,
}

impl Open {
    /// The object `line` (a brace alone) opens.
    fn new(line: &[u8]) -> Open {
        let mut brackets = Brackets::default();
        brackets.feed(line);
        Open {
            brackets,
            skip: false,
            indented: None,
            last: b'{',
        }
    }

    /// A new line of the object begins, with `first` as its first byte.
    fn begin_line(&mut self, first: Option<u8>) {
        self.brackets.new_line();
        if self.indented.is_none() {
            self.indented = first.map(|b| b == b' ' || b == b'\t');
        }
    }

    /// Reads the next part of the current line; the index of the byte that closes the
    /// object, if one does.
    fn feed(&mut self, part: &[u8]) -> Option<usize> {
        if let Some(b) = last_non_space(part) {
            self.last = b;
        }
        self.brackets.feed(part)
    }

    /// Reads a line in parts; true when the object closed in it.
    fn line(&mut self, parts: &[&[u8]]) -> bool {
        self.begin_line(parts.iter().find_map(|p| p.first().copied()));
        parts.iter().any(|p| self.feed(p).is_some())
    }

    /// Whether `line` (in parts, whole or only its start so far) starts a new record,
    /// the object being cut short before it: it starts with `{`, and cannot be an
    /// element of an unindented object's array.
    fn cut_by(&self, line: &[&[u8]]) -> bool {
        if line.iter().find_map(|p| p.first()) != Some(&b'{') {
            return false;
        }
        let element = self.indented == Some(false)
            && self.brackets.in_array()
            && matches!(self.last, b',' | b'[')
            && element_opener(line);
        !element
    }
}

/// Whether a line (in parts; whole, or the start of one) is `{`, `{}` or `{},` with
/// whitespace after, as an unindented writer writes an array's object element. Any
/// start of such a line is one too.
fn element_opener(line: &[&[u8]]) -> bool {
    let mut bytes = line.iter().flat_map(|p| p.iter().copied());
    if bytes.next() != Some(b'{') {
        return false;
    }
    // What has been read: 0 the brace, 1 a closing brace, 2 a comma, 3 whitespace.
    let mut read = 0;
    bytes.all(|b| {
        read = match (read, b) {
            (0, b'}') => 1,
            (1, b',') => 2,
            (_, b) if b.is_ascii_whitespace() => 3,
            _ => return false,
        };
        true
    })
}

/// What a complete line does to the record being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The record ends with this line.
    Emit,
    /// The object ends at byte `end` of this line, and the rest of it, from byte `next`
    /// (a `{`), is read as a line of its own.
    Glued { end: usize, next: usize },
    /// The line opens or continues an object that goes on.
    Hold,
    /// The line starts a new record: the open object ends before it, cut short.
    Cut,
}

/// Whether a line opens a pretty-printed object: the opening brace alone, as every
/// pretty-printer writes it. A one-line record (`{"id":...`) never does, whole or cut
/// short, so one-line logs are split exactly as lines.
fn opens_object(line: &[u8]) -> bool {
    line.first() == Some(&b'{') && line[1..].iter().all(u8::is_ascii_whitespace)
}

/// Where the next record starts in `rest`, what follows an object's closing brace on
/// its line: at a `{` after any whitespace.
fn glued(rest: &[u8]) -> Option<usize> {
    let at = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    (rest[at] == b'{').then_some(at)
}

/// The records of a line that holds records glued one after the other (`{"a":1}{"b":2}`,
/// with whitespace between or none): each from its `{` to the brace that closes it, the
/// last one to the end of the line if it never closes (cut short). `None` unless there
/// are two or more and nothing else. The splitter hands such a line over whole (finding
/// them would cost every one-line record a look at each of its bytes): the parser tells
/// it from a record, by rejecting it.
pub fn glued_records(line: &[u8]) -> Option<Vec<&[u8]>> {
    let mut records = Vec::new();
    let mut start = glued(line)?;
    loop {
        let Some(close) = Brackets::default().feed(&line[start..]) else {
            records.push(&line[start..]);
            break;
        };
        let end = start + close + 1;
        records.push(&line[start..end]);
        match glued(&line[end..]) {
            Some(at) => start = end + at,
            None if line[end..].iter().all(u8::is_ascii_whitespace) => break,
            None => return None,
        }
    }
    (records.len() > 1).then_some(records)
}

/// Moves the object state on by one complete line.
fn step(open: &mut Option<Open>, line: &[u8]) -> Step {
    let Some(o) = open else {
        if !opens_object(line) {
            return Step::Emit;
        }
        *open = Some(Open::new(line));
        return Step::Hold;
    };
    if o.cut_by(&[line]) {
        *open = None;
        return Step::Cut;
    }
    o.begin_line(line.first().copied());
    let Some(close) = o.feed(line) else {
        return Step::Hold;
    };
    *open = None;
    match glued(&line[close + 1..]) {
        Some(at) => Step::Glued {
            end: close + 1,
            next: close + 1 + at,
        },
        None => Step::Emit,
    }
}

/// What an object cut short (`held`, without the newline before the line that cut it)
/// is handed over as: the object, or the object up to a record appended after the cut
/// and that record (see [`appended_record`]).
fn cut_records(held: &[u8]) -> (&[u8], Option<&[u8]>) {
    match appended_record(held) {
        Some(at) => (&held[..at - 1], Some(&held[at..])),
        None => (held, None),
    }
}

/// Where a record appended after the cut starts in `object`, an object cut short whose
/// last line ends with `}`: the start of its last line (not its first) that holds only
/// `{`, opens at the depth the object ends at and stays deeper up to its last line. It
/// was taken as an element of an unindented object's array; at any other place a
/// column-0 `{` would have cut the object there.
fn appended_record(object: &[u8]) -> Option<usize> {
    if last_non_space(object) != Some(b'}') {
        return None;
    }
    // The start of each line and the depth before it.
    let mut starts = Vec::new();
    let mut brackets = Brackets::default();
    let mut at = 0;
    for line in object.split(|&b| b == b'\n') {
        starts.push((at, brackets.depth));
        brackets.new_line();
        brackets.feed(line);
        at += line.len() + 1;
    }
    let end = brackets.depth;
    let &(start, depth) = starts.iter().rev().find(|(_, d)| *d <= end)?;
    let line = object[start..].split(|&b| b == b'\n').next()?;
    (start > 0 && depth == end && opens_object(line)).then_some(start)
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
    if o.line(line) {
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

    /// Whether the open object went over the bound and is being skipped.
    fn skipping_object(&self) -> bool {
        self.open.is_some_and(|o| o.skip)
    }

    /// Skips everything up to the next newline, as when starting in the middle of a line.
    pub fn skip_to_newline(&mut self) {
        self.reset();
        self.skipping = true;
    }

    /// Ends the stream: a held partial line is read as a complete line, and an object
    /// still open is handed over as cut short (not at all when it is the end of an
    /// over-long object, reported already).
    pub fn finish(&mut self, mut f: impl FnMut(Line<'_>)) {
        if self.line_start < self.carry.len() {
            self.complete_held(&[], &mut f);
        }
        if !self.carry.is_empty() && !self.skipping_object() {
            // An object's lines are held with their newlines; the last is not its.
            let held = self.carry.strip_suffix(b"\n").unwrap_or(&self.carry);
            let (cut, appended) = cut_records(held);
            f(Line::Complete(cut));
            if let Some(a) = appended {
                f(Line::Complete(a));
            }
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
                if o.feed(skipped).is_some() {
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

    /// When the line after an open object's held lines starts a new record (`next` is
    /// its part in this block, whole or not), the object was cut short: it is handed
    /// over (see [`cut_records`]), without the newline after it, and only the line is
    /// held.
    fn cut_short(&mut self, next: &[u8], f: &mut impl FnMut(Line<'_>)) {
        let Some(o) = self.open else {
            return;
        };
        if o.cut_by(&[&self.carry[self.line_start..], next]) {
            self.hand_over_cut(o.skip, f);
        }
    }

    /// Hands the open object held over as cut short before the line held (nothing when
    /// it is skipped, over the bound).
    fn hand_over_cut(&mut self, skip: bool, f: &mut impl FnMut(Line<'_>)) {
        if !skip {
            let (cut, appended) = cut_records(&self.carry[..self.line_start.saturating_sub(1)]);
            f(Line::Complete(cut));
            if let Some(a) = appended {
                f(Line::Complete(a));
            }
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
        if !self.skipping_object() {
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
        if self.carry.len() + line.len() > self.max_line_bytes {
            if !self.skipping_object() {
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
        self.step_held(f);
    }

    /// The last line held is complete: moves the record on by it, and by the rest of it
    /// when a record is glued after the object it ends.
    fn step_held(&mut self, f: &mut impl FnMut(Line<'_>)) {
        loop {
            let skip = self.skipping_object();
            let (end, next) = match step(&mut self.open, &self.carry[self.line_start..]) {
                Step::Hold if !skip => {
                    self.carry.push(b'\n');
                    self.line_start = self.carry.len();
                    return;
                }
                Step::Hold => break,
                // Not reached: `cut_short` looked at this line before it was held whole,
                // with the same rule. Handled as there all the same.
                Step::Cut => {
                    self.hand_over_cut(skip, f);
                    continue;
                }
                Step::Emit => (self.carry.len(), None),
                Step::Glued { end, next } => (self.line_start + end, Some(self.line_start + next)),
            };
            if !skip {
                f(Line::Complete(&self.carry[..end]));
            }
            let Some(next) = next else {
                break;
            };
            self.carry.drain(..next);
            self.line_start = 0;
        }
        self.carry.clear();
        self.line_start = 0;
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
            self.split_line(block, (pos, end), &mut start, lines);
            pos = end + 1;
        }
        // A partial line that starts a new record cuts an open object short too.
        if let Some(o) = self.open {
            if o.cut_by(&[&block[pos..]]) {
                if let Some(s) = start.take() {
                    push_cut(&block[s..pos - 1], lines);
                }
                self.open = None;
            }
        }
        self.hold_tail(block, start.unwrap_or(pos), pos, lines);
    }

    /// Splits the complete line `block[pos..end]` of an object, open or opened by it;
    /// `start`: where the open object began in this block. Not inlined: the one-line
    /// loop of [`split_block`](Self::split_block) stays as tight as without objects.
    #[inline(never)]
    fn split_line<'b>(
        &mut self,
        block: &'b [u8],
        (mut pos, end): (usize, usize),
        start: &mut Option<usize>,
        lines: &mut Vec<Line<'b>>,
    ) {
        let max = self.max_line_bytes;
        loop {
            let skip = self.skipping_object();
            let (record_end, next) = match step(&mut self.open, &block[pos..end]) {
                Step::Hold if skip => return,
                Step::Hold => {
                    let s = *start.get_or_insert(pos);
                    if end - s > max {
                        lines.push(Line::TooLong(&block[s..s + max]));
                        *start = None;
                        if let Some(o) = &mut self.open {
                            o.skip = true;
                        }
                    }
                    return;
                }
                Step::Cut => {
                    if let Some(s) = start.take() {
                        push_cut(&block[s..pos - 1], lines);
                    }
                    continue;
                }
                Step::Emit => (end, None),
                Step::Glued { end: e, next } => (pos + e, Some(pos + next)),
            };
            let s = start.take().unwrap_or(pos);
            if !skip {
                let record = &block[s..record_end];
                match record.len() > max {
                    true => lines.push(Line::TooLong(&record[..max])),
                    false => lines.push(Line::Complete(record)),
                }
            }
            match next {
                Some(n) => pos = n,
                None => return,
            }
        }
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
        if !self.skipping_object() {
            lines.push(Line::TooLong(&tail[..self.max_line_bytes]));
        }
        self.skipping = skip_rest(&mut self.open, &[partial], partial.is_empty());
        self.line_start = 0;
    }
}

/// Pushes the records an object cut short in a block is handed over as.
fn push_cut<'b>(held: &'b [u8], lines: &mut Vec<Line<'b>>) {
    let (cut, appended) = cut_records(held);
    lines.push(Line::Complete(cut));
    if let Some(a) = appended {
        lines.push(Line::Complete(a));
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
            // Unindented (`indent=0`), within the bound and over it.
            5 => {
                let r = format!("{{\n\"id\": \"{i}\",\n\"a\": [\n{{\n\"b\": 1\n}},\n{{}}\n]\n}}");
                (r.clone(), r)
            }
            6 => (
                format!("{{\n\"id\": \"{i}\",\n\"a\": [\n{{\n\"p\": \"{pad}\"\n}},\n{{\n\"p\": \"{pad}\"\n}}\n],\n\"b\": \"}}\"\n}}"),
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
            kinds in proptest::collection::vec(0u8..7, 1..10),
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

    /// A task as Python's `json.dumps` writes it: one line, `indent=0` and `indent=2`.
    const PY_ONE_LINE: &str = "{\"id\": \"t1\", \"status\": \"FAILED\", \"failure\": {\"code\": \"SAFETY.INPUT.TEXT\", \"details\": [{\"at\": 1, \"why\": \"a } { ] [ \\\" \\\\ x\"}, {}, {\"n\": []}]}, \"outputs\": [], \"cost\": {\"credits\": 5}, \"tags\": [\"a<b\", 2]}";
    const PY_INDENT_0: &str = "{\n\"id\": \"t1\",\n\"status\": \"FAILED\",\n\"failure\": {\n\"code\": \"SAFETY.INPUT.TEXT\",\n\"details\": [\n{\n\"at\": 1,\n\"why\": \"a } { ] [ \\\" \\\\ x\"\n},\n{},\n{\n\"n\": []\n}\n]\n},\n\"outputs\": [],\n\"cost\": {\n\"credits\": 5\n},\n\"tags\": [\n\"a<b\",\n2\n]\n}";
    const PY_INDENT_2: &str = "{\n  \"id\": \"t1\",\n  \"status\": \"FAILED\",\n  \"failure\": {\n    \"code\": \"SAFETY.INPUT.TEXT\",\n    \"details\": [\n      {\n        \"at\": 1,\n        \"why\": \"a } { ] [ \\\" \\\\ x\"\n      },\n      {},\n      {\n        \"n\": []\n      }\n    ]\n  },\n  \"outputs\": [],\n  \"cost\": {\n    \"credits\": 5\n  },\n  \"tags\": [\n    \"a<b\",\n    2\n  ]\n}";

    /// A JSON value, to be written by each writer's rules.
    #[derive(Debug, Clone)]
    enum Json {
        Num(u32),
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
    }

    /// The writers whose shapes are read.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Writer {
        /// Python's `json.dumps(v)`.
        OneLine,
        /// Python's `json.dumps(v, indent=2)` (Node's `JSON.stringify(v, null, 2)`).
        Indent2,
        /// Python's `json.dumps(v, indent=0)`.
        Indent0,
        /// Go's `json.MarshalIndent(v, "", "")`: a newline after `{`, `[` and `,` and
        /// before a closing bracket, `": "` after a key, empty containers as `{}` and
        /// `[]`, and `<`, `>`, `&` escaped as `\u003c`, `\u003e`, `\u0026`.
        GoEmpty,
    }

    /// `v` as `w` writes it, and where an unindented writer closed an object that is an
    /// array's element (the one ambiguous place to cut it: see the module doc).
    fn write(v: &Json, w: Writer) -> (String, Vec<usize>) {
        let mut out = (String::new(), Vec::new());
        write_value(v, w, 0, &mut out);
        out
    }

    fn write_value(v: &Json, w: Writer, level: usize, out: &mut (String, Vec<usize>)) {
        let indent = match w {
            Writer::OneLine => None,
            Writer::Indent2 => Some("  "),
            Writer::Indent0 | Writer::GoEmpty => Some(""),
        };
        let (open, close, len) = match v {
            Json::Num(n) => return out.0.push_str(&n.to_string()),
            Json::Str(s) => return write_str(s, w, &mut out.0),
            Json::Arr(items) => ('[', ']', items.len()),
            Json::Obj(members) => ('{', '}', members.len()),
        };
        out.0.push(open);
        for i in 0..len {
            match indent {
                Some(ind) => {
                    out.0.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.0.push_str(&ind.repeat(level + 1));
                }
                None if i > 0 => out.0.push_str(", "),
                None => {}
            }
            match v {
                Json::Arr(items) => {
                    write_value(&items[i], w, level + 1, out);
                    if indent == Some("") && matches!(&items[i], Json::Obj(m) if !m.is_empty()) {
                        out.1.push(out.0.len());
                    }
                }
                Json::Obj(members) => {
                    write_str(&members[i].0, w, &mut out.0);
                    out.0.push_str(": ");
                    write_value(&members[i].1, w, level + 1, out);
                }
                _ => unreachable!(),
            }
        }
        if let (Some(ind), true) = (indent, len > 0) {
            out.0.push('\n');
            out.0.push_str(&ind.repeat(level));
        }
        out.0.push(close);
    }

    fn write_str(s: &str, w: Writer, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '<' | '>' | '&' if w == Writer::GoEmpty => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    /// The task of the Python fixtures.
    fn fixture_task() -> Json {
        let s = |v: &str| Json::Str(v.into());
        let obj = |m: Vec<(&str, Json)>| {
            Json::Obj(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };
        obj(vec![
            ("id", s("t1")),
            ("status", s("FAILED")),
            (
                "failure",
                obj(vec![
                    ("code", s("SAFETY.INPUT.TEXT")),
                    (
                        "details",
                        Json::Arr(vec![
                            obj(vec![("at", Json::Num(1)), ("why", s("a } { ] [ \" \\ x"))]),
                            obj(vec![]),
                            obj(vec![("n", Json::Arr(vec![]))]),
                        ]),
                    ),
                ]),
            ),
            ("outputs", Json::Arr(vec![])),
            ("cost", obj(vec![("credits", Json::Num(5))])),
            ("tags", Json::Arr(vec![s("a<b"), Json::Num(2)])),
        ])
    }

    #[test]
    fn the_test_writers_write_what_python_and_go_write() {
        let t = fixture_task();
        assert_eq!(write(&t, Writer::OneLine).0, PY_ONE_LINE);
        assert_eq!(write(&t, Writer::Indent0).0, PY_INDENT_0);
        assert_eq!(write(&t, Writer::Indent2).0, PY_INDENT_2);
        // Go's shape is Python's `indent=0` with its own escapes.
        assert_eq!(
            write(&t, Writer::GoEmpty).0,
            PY_INDENT_0.replace("a<b", "a\\u003cb")
        );
        // The closing braces of the elements `{"at": ...}` and `{"n": []}`.
        let (text, ambiguous) = write(&t, Writer::Indent0);
        let closes: Vec<&str> = ambiguous.iter().map(|&i| &text[i - 4..i]).collect();
        assert_eq!(closes, ["x\"\n}", "[]\n}"]);
    }

    /// Every record of `log` fed whole, byte by byte and cut in two at every point,
    /// then finished: what came out each time.
    fn every_cutting(limit: usize, log: &str, want: &[&str]) {
        let finished = |blocks: &[&[u8]]| {
            let mut s = LineSplitter::new(limit);
            let mut out = Vec::new();
            for b in blocks {
                s.feed(b, |l| out.push(text(l)));
            }
            s.finish(|l| out.push(text(l)));
            out
        };
        let bytes = log.as_bytes();
        assert_eq!(finished(&[bytes]), want, "whole");
        let each: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(finished(&each), want, "byte by byte");
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(finished(&[a, b]), want, "cut at {cut}");
        }
    }

    #[test]
    fn unindented_objects_are_one_record() {
        // Python's `indent=0` and Go's `MarshalIndent(v, "", "")`: nested objects in the
        // first column, in an array after `[` and after `,`, empty ones too.
        let go = PY_INDENT_0.replace("a<b", "a\\u003cb");
        let log =
            format!("{PY_INDENT_0}\n{{\"id\":\"s\"}}\n{go}\n{PY_INDENT_2}\n{PY_INDENT_0}\r\n");
        let crlf = format!("{PY_INDENT_0}\r");
        let want = [PY_INDENT_0, "{\"id\":\"s\"}", &go, PY_INDENT_2, &crlf];
        every_cutting(1 << 16, &log, &want);
        // An array of objects right after the brace, and objects nested in elements.
        let nested = "{\n\"a\": [\n{\n\"b\": [\n{},\n{\n\"c\": {\n\"d\": [\n{\n\"e\": 1\n}\n]\n}\n}\n]\n}\n],\n\"id\": \"n\"\n}";
        every_cutting(1 << 16, &format!("{nested}\n{nested}\n"), &[nested, nested]);
    }

    #[test]
    fn records_glued_after_a_closing_brace_are_read() {
        let one = "{\"id\":\"y\"}";
        let cases: Vec<(String, Vec<String>)> = vec![
            (
                format!("{PY_INDENT_2}{one}\n"),
                vec![PY_INDENT_2.into(), one.into()],
            ),
            (
                format!("{PY_INDENT_0} {one}\n"),
                vec![PY_INDENT_0.into(), one.into()],
            ),
            (
                format!("{PY_INDENT_0}\t {one}\r\n"),
                vec![PY_INDENT_0.into(), format!("{one}\r")],
            ),
            // Multi-line objects written one after the other without a newline.
            (
                format!("{PY_INDENT_0}{PY_INDENT_0}{PY_INDENT_2}{PY_INDENT_0}\n"),
                vec![
                    PY_INDENT_0.into(),
                    PY_INDENT_0.into(),
                    PY_INDENT_2.into(),
                    PY_INDENT_0.into(),
                ],
            ),
            (
                format!("{PY_INDENT_2} {PY_INDENT_2}\n{one}\n"),
                vec![PY_INDENT_2.into(), PY_INDENT_2.into(), one.into()],
            ),
            // What follows the brace and is not a record stays with the object.
            ("{\n\"a\": 1\n} x\n".into(), vec!["{\n\"a\": 1\n} x".into()]),
            ("{\n\"a\": 1\n},\n".into(), vec!["{\n\"a\": 1\n},".into()]),
        ];
        for (log, want) in &cases {
            let want: Vec<&str> = want.iter().map(String::as_str).collect();
            every_cutting(1 << 16, log, &want);
        }
        // A glued object over the bound is skipped; the record after it is read.
        let big = format!("{{\n\"a\": \"{}\"\n}}{one}\n", "x".repeat(200));
        every_cutting(100, &big, &["<too long>", one]);
    }

    #[test]
    fn records_glued_on_one_line_are_found() {
        let glued = |l: &str| {
            glued_records(l.as_bytes()).map(|r| {
                r.iter()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            glued("{\"a\":\"}{\"}{\"b\":[{}]} \t{\"c\":1}\r"),
            Some(vec![
                "{\"a\":\"}{\"}".into(),
                "{\"b\":[{}]}".into(),
                "{\"c\":1}".into()
            ])
        );
        // The last one cut short.
        assert_eq!(
            glued(" {\"a\":1}{\"b\":"),
            Some(vec!["{\"a\":1}".into(), "{\"b\":".into()])
        );
        // One record, or something else than records.
        for l in [
            "{\"a\":1}",
            "{\"a\":1} x",
            "{\"a\":1},{\"b\":2}",
            "[{}]",
            "",
            "{\"a\":1}]{}",
        ] {
            assert_eq!(glued(l), None, "{l}");
        }
    }

    #[test]
    fn a_checkpoint_after_a_glued_record_reads_the_rest_the_same() {
        // The second object starts mid-line: held from its brace, so `fed - pending`
        // is there, and a splitter started there reads it as the one that went on.
        let log = format!("{PY_INDENT_0}{PY_INDENT_0}\n{{\"id\":\"z\"}}\n");
        let second = PY_INDENT_0.len();
        let mut s = LineSplitter::new(1 << 16);
        let mut out = Vec::new();
        let cut = second + 20;
        s.feed(&log.as_bytes()[..cut], |l| out.push(text(l)));
        assert_eq!(out, vec![PY_INDENT_0]);
        assert_eq!(cut - s.pending(), second);
        let mut again = LineSplitter::new(1 << 16);
        let mut rest = Vec::new();
        again.feed(&log.as_bytes()[second..], |l| rest.push(text(l)));
        assert_eq!(rest, vec![PY_INDENT_0, "{\"id\":\"z\"}"]);
    }

    #[test]
    fn an_unindented_object_cut_short_loses_only_itself() {
        let one = "{\"id\":\"y\"}";
        // Cut where a member comes (after a key's line, inside a nested object, after a
        // nested object's brace): the next record in the first column cuts it at once.
        for cut in [
            "{\n\"id\": \"x\",",
            "{\n\"id\": \"x\",\n\"f\": {\n\"a\": 1",
            "{\n\"f\": {\n\"a\": 1\n}",
            "{",
        ] {
            for next in [one, PY_INDENT_0, PY_INDENT_2] {
                let log = format!("{cut}\n{next}\n{one}\n");
                every_cutting(1 << 16, &log, &[cut, next, one]);
                // At once: nothing is held once the next record is complete.
                let log = format!("{cut}\n{next}\n");
                assert_eq!(
                    split(1 << 16, &[log.as_bytes()]),
                    (vec![cut.into(), next.into()], 0)
                );
            }
        }
        // An indented object is cut at once wherever it is cut: it indents its elements.
        let cut = "{\n  \"a\": [\n    1,";
        for next in [PY_INDENT_0, PY_INDENT_2] {
            let log = format!("{cut}\n{next}\n");
            assert_eq!(
                split(1 << 16, &[log.as_bytes()]),
                (vec![cut.into(), next.into()], 0)
            );
        }
        // Cut where an array's element comes: a record with `{` alone is read as an
        // element until the next record starts, then handed over on its own; a one-line
        // record cuts at once. At the end of the file too.
        for cut in [
            "{\n\"a\": [",
            "{\n\"a\": [\n{\n\"b\": 1\n},",
            "{\n\"a\": [\n1,",
        ] {
            for next in [PY_INDENT_0, PY_INDENT_2] {
                every_cutting(
                    1 << 16,
                    &format!("{cut}\n{next}\n{one}\n"),
                    &[cut, next, one],
                );
                every_cutting(
                    1 << 16,
                    &format!("{cut}\n{next}\n{next}\n"),
                    &[cut, next, next],
                );
                every_cutting(1 << 16, &format!("{cut}\n{next}\n"), &[cut, next]);
            }
            every_cutting(1 << 16, &format!("{cut}\n{one}\n"), &[cut, one]);
        }
        // The ambiguous cut, right after an array's last object: that object is handed
        // over as a record of its own.
        let log = format!("{{\n\"a\": [\n{{\n\"b\": 1\n}}\n{PY_INDENT_0}\n");
        every_cutting(
            1 << 16,
            &log,
            &["{\n\"a\": [", "{\n\"b\": 1\n}", PY_INDENT_0],
        );
        // A record appended there with another glued after it, and one cut short itself.
        let log = format!("{{\n\"a\": [\n1,\n{PY_INDENT_0}{one}\n{one}\n");
        let glued = format!("{PY_INDENT_0}{one}");
        every_cutting(1 << 16, &log, &["{\n\"a\": [\n1,", &glued, one]);
        let log = "{\n\"a\": [\n1,\n{\n\"id\": \"b\",\n{\"id\":\"y\"}\n";
        let both = "{\n\"a\": [\n1,\n{\n\"id\": \"b\",";
        every_cutting(1 << 16, log, &[both, one]);
    }

    /// A task of the property test: its id, and what is nested in it.
    fn task(i: usize, extra: &Json, outputs: &[Json]) -> Json {
        Json::Obj(vec![
            ("id".into(), Json::Str(format!("t{i}"))),
            ("status".into(), Json::Str("FAILED".into())),
            ("outputs".into(), Json::Arr(outputs.to_vec())),
            ("extra".into(), extra.clone()),
        ])
    }

    fn json_leaf() -> impl proptest::strategy::Strategy<Value = Json> {
        use proptest::prelude::*;
        // Strings with brackets, quotes, backslashes and what Go escapes.
        let chars =
            proptest::collection::vec(proptest::sample::select(b"ab{}[]\"\\ <,:".to_vec()), 0..6);
        prop_oneof![
            (0u32..1000).prop_map(Json::Num),
            chars.prop_map(|c| Json::Str(c.into_iter().map(char::from).collect())),
        ]
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Json> {
        use proptest::prelude::*;
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Arr),
                proptest::collection::vec(
                    (proptest::sample::select(vec!["k", "l{", "m"]), inner),
                    0..4
                )
                .prop_map(|m| Json::Obj(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    /// One record of the property test: writer, nesting, whether it is cut short and
    /// where, and what follows it (a newline, nothing, a space).
    type Spec = (u8, Json, Vec<Json>, bool, proptest::sample::Index, u8);

    fn spec() -> impl proptest::strategy::Strategy<Value = Spec> {
        use proptest::prelude::*;
        let element = proptest::collection::vec(
            (proptest::sample::select(vec!["x", "y"]), json_leaf()),
            0..3,
        )
        .prop_map(|m| Json::Obj(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
        (
            0u8..4,
            json_value(),
            proptest::collection::vec(element, 0..3),
            proptest::bool::weighted(0.25),
            any::<proptest::sample::Index>(),
            0u8..3,
        )
    }

    /// The log the specs write, the records that must come out of it, and where each
    /// record starts. A record cut short is followed by a newline (its writer died and
    /// the next one starts a line), and so is the record after it (the one a cut can
    /// make an element of); two records in a row are not cut short, and an unindented
    /// object is not cut right after an array's object element (see the module doc).
    fn writers_log(specs: &[Spec]) -> (String, Vec<String>, Vec<usize>) {
        let (mut log, mut want, mut starts) = (String::new(), Vec::new(), Vec::new());
        let mut after_cut = false;
        for (i, (w, extra, outputs, cut, at, sep)) in specs.iter().enumerate() {
            let w = [
                Writer::OneLine,
                Writer::Indent2,
                Writer::Indent0,
                Writer::GoEmpty,
            ][*w as usize];
            let (text, ambiguous) = write(&task(i, extra, outputs), w);
            starts.push(log.len());
            let cut = *cut && !after_cut;
            let record = match cut {
                true => {
                    let mut end = 1 + at.index(text.len() - 1);
                    while ambiguous.contains(&text[..end].trim_end().len()) {
                        end = text[..end].trim_end().len() - 1;
                    }
                    &text[..end]
                }
                false => &text[..],
            };
            log.push_str(record);
            want.push(record.to_string());
            let glue = !cut && !after_cut && w != Writer::OneLine && i + 1 < specs.len();
            log.push_str(match (glue, sep) {
                (true, 1) => "",
                (true, 2) => " ",
                _ => "\n",
            });
            after_cut = cut;
        }
        (log, want, starts)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]
        /// Records of every writer (one line, `indent=2`, `indent=0`, Go's
        /// `MarshalIndent` with an empty indent), glued after a closing brace or not, some
        /// cut short anywhere, fed in blocks of any size: each complete record comes out
        /// once, exactly, and each cut one once, as it is. After every block
        /// `fed - pending` is where a record starts, and a splitter started there (as
        /// after a restart) reads the rest the same.
        #[test]
        fn every_writers_records_survive_cuts_blocks_and_restarts(
            specs in proptest::collection::vec(spec(), 1..10),
            blocks in proptest::collection::vec(1usize..64, 1..40),
            restart in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let (log, want, starts) = writers_log(&specs);
            let log = log.as_bytes();
            let mut checkpoints = Vec::new();
            let (mut out, mut s) = feed_in_blocks(1 << 16, log, &blocks, |fed, held| {
                let at = fed - held;
                assert!(at == log.len() || starts.contains(&at), "checkpoint {at} not at a record's start");
                checkpoints.push((at, 0));
            });
            s.finish(|l| out.push(text(l)));
            proptest::prop_assert_eq!(&out, &want);
            // The records out before a checkpoint, and those read from it by a new splitter.
            let mut s = LineSplitter::new(1 << 16);
            let mut before = Vec::new();
            let mut fed = 0;
            for (n, c) in blocks.iter().cycle().zip(checkpoints.iter_mut()) {
                let n = (*n).min(log.len() - fed);
                s.feed(&log[fed..fed + n], |l| before.push(text(l)));
                fed += n;
                c.1 = before.len();
            }
            let (at, done) = checkpoints[restart.index(checkpoints.len())];
            let (mut rest, mut s) = feed_in_blocks(1 << 16, &log[at..], &blocks, |_, _| {});
            s.finish(|l| rest.push(text(l)));
            before.truncate(done);
            before.extend(rest);
            proptest::prop_assert_eq!(before, want);
        }
    }
}
