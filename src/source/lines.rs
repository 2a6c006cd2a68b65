//! Splitting blocks of bytes into lines, with a bound on line length.
//!
//! A *complete line* ends with `\n`. The bytes after the last newline of a block are a
//! *partial line*: held until the rest arrives. A line longer than `max_line_bytes` is
//! reported once as [`Line::TooLong`] as soon as it passes the bound, and the rest of it
//! is skipped up to the next newline, so memory stays bounded by `max_line_bytes`
//! whatever the input.

use memchr::memchr;

/// One item of a block.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, without its newline.
    Complete(&'a [u8]),
    /// A line over the bound, with the part of it at hand (at least its first bytes).
    TooLong(&'a [u8]),
}

/// Splits a stream of blocks into lines.
#[derive(Debug)]
pub struct LineSplitter {
    carry: Vec<u8>,
    max_line_bytes: usize,
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter {
            carry: Vec::new(),
            max_line_bytes: max_line_bytes.max(1),
            skipping: false,
        }
    }

    /// Bytes of the partial line held (not yet a complete line).
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Whether the splitter is skipping the rest of an over-long line.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Skips everything up to the next newline, as when starting in the middle of a line.
    pub fn skip_to_newline(&mut self) {
        self.carry.clear();
        self.skipping = true;
    }

    /// Ends the stream: a held partial line is reported as a complete line.
    pub fn finish(&mut self, mut f: impl FnMut(Line<'_>)) {
        if !self.carry.is_empty() {
            f(Line::Complete(&self.carry));
        }
        self.reset();
    }

    /// Forgets any partial line, as after a truncation.
    pub fn reset(&mut self) {
        self.carry.clear();
        self.skipping = false;
    }

    /// Feeds one block, calling `f` for each line it completes, in order (the tests'
    /// view of [`split`](Self::split)).
    #[cfg(test)]
    pub fn feed(&mut self, block: &[u8], mut f: impl FnMut(Line<'_>)) {
        let mut lines = Vec::new();
        self.split(block, &mut f, &mut lines);
        lines.into_iter().for_each(f);
    }

    /// Feeds one block: its own lines are appended to `lines`, in order (they borrow the
    /// block, so a caller can hold several at once); `f` gets only a line completed from
    /// the partial line held, which comes before all of them.
    pub fn split<'b>(
        &mut self,
        block: &'b [u8],
        mut f: impl FnMut(Line<'_>),
        lines: &mut Vec<Line<'b>>,
    ) {
        let mut rest = block;
        if self.skipping {
            match memchr(b'\n', rest) {
                Some(i) => {
                    rest = &rest[i + 1..];
                    self.skipping = false;
                }
                None => return,
            }
        }
        if !self.carry.is_empty() {
            match memchr(b'\n', rest) {
                Some(i) => {
                    if self.carry.len() + i > self.max_line_bytes {
                        f(Line::TooLong(&self.carry));
                    } else {
                        self.carry.extend_from_slice(&rest[..i]);
                        f(Line::Complete(&self.carry));
                    }
                    self.carry.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    if self.carry.len() + rest.len() > self.max_line_bytes {
                        f(Line::TooLong(&self.carry));
                        self.carry = Vec::new();
                        self.skipping = true;
                    } else {
                        self.carry.extend_from_slice(rest);
                    }
                    return;
                }
            }
        }
        while let Some(i) = memchr(b'\n', rest) {
            let line = &rest[..i];
            if line.len() > self.max_line_bytes {
                lines.push(Line::TooLong(&line[..self.max_line_bytes]));
            } else {
                lines.push(Line::Complete(line));
            }
            rest = &rest[i + 1..];
        }
        if rest.len() > self.max_line_bytes {
            lines.push(Line::TooLong(&rest[..self.max_line_bytes]));
            self.skipping = true;
        } else if !rest.is_empty() {
            self.carry.extend_from_slice(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, blocks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for b in blocks {
            s.feed(b, |l| {
                out.push(match l {
                    Line::Complete(l) => String::from_utf8_lossy(l).into_owned(),
                    Line::TooLong(_) => "<too long>".into(),
                })
            });
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
