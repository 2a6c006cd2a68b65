//! The `model` of a request body, found as the body streams through, without holding it.
//!
//! [`ModelScan`] is a JSON lexer fed the body in chunks of any size and cut at any byte.
//! It follows the structure (strings and their escapes, `{}[]`, `:` and `,`) and keeps
//! only the top-level object's current key and the value of its `model` key, so its
//! state is a fixed-size struct with no heap: a 20 MB data URI before `"model"` costs
//! it nothing but the time to skip it (`memchr` over the string).
//!
//! What it finds is what `serde_json` finds in the whole body as a `Value`:
//! `value["model"]` when that is a string.
//! - Keys are compared unescaped (`"mod\u0065l"` is `model`); only keys of the
//!   top-level object count, never nested ones.
//! - Duplicate keys: the last one wins, as in `serde_json::Value`'s map.
//! - A `model` that is not a string, longer than [`MAX_MODEL`] bytes, or not UTF-8 is
//!   no model.
//! - A body that is not one JSON object has no model: structure errors, control
//!   characters or bad escapes in the strings it reads, nesting deeper than
//!   `serde_json`'s limit (127 levels), anything but whitespace after the object. The
//!   scan then stops looking at the rest. Scalars (numbers, `true`...) are skipped by
//!   their characters, not checked (Runway answers 400 to a body it cannot parse, and
//!   only the answers that succeed are observed), nor are control characters inside
//!   strings it skips.

/// The longest `model` value kept; a longer one is no model (Runway's are ~20 bytes).
pub const MAX_MODEL: usize = 128;

/// `serde_json`'s nesting limit: a 128th level is an error there, so here too.
const MAX_DEPTH: u32 = 127;

/// The longest key worth decoding: only `model` is looked for.
const MAX_KEY: usize = 8;

/// What the lexer expects next outside strings and scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The top-level `{`.
    Start,
    /// A value (after `:`, or after `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrClose,
    /// A key or `}` (just after `{`).
    KeyOrClose,
    /// A key (after `,` in an object).
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the container's closing bracket.
    CommaOrClose,
    /// Whitespace only: the top-level object has closed.
    End,
    /// The body is not a JSON object; the rest is not looked at.
    Invalid,
}

/// Where the lexer is inside a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Between tokens.
    Between,
    /// Inside a string, with the escape state.
    Str(Escape),
    /// Inside a number or literal.
    Scalar,
}

/// Inside a string: how far into an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After `\`.
    Backslash,
    /// After `\u` and `n` hex digits worth `acc`.
    Hex {
        n: u8,
        acc: u16,
    },
}

/// What the string being read is to the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Nothing: skipped.
    Skip,
    /// A key of the top-level object: decoded to compare with `model`.
    Key,
    /// The value of a top-level `model` key: decoded and kept.
    Model,
}

/// A streaming scan for the top-level `"model"` string of a JSON object.
#[derive(Debug, Clone)]
pub struct ModelScan {
    expect: Expect,
    token: Token,
    role: Role,
    /// Nesting depth: 1 inside the top-level object.
    depth: u32,
    /// Bit `d - 1` set: the container at depth `d` is an object.
    objects: u128,
    /// The last key of the top-level object was `model`: its value is the model.
    model_key: bool,
    /// A high surrogate `\uD8xx` waiting for its low half.
    high: Option<u16>,
    /// The string being decoded (a key or the model); `len > cap` means too long.
    buf: [u8; MAX_MODEL],
    len: usize,
    /// The model found so far (the last `model` key's, `None` when not a string).
    found: Option<([u8; MAX_MODEL], usize)>,
}

impl Default for ModelScan {
    fn default() -> Self {
        ModelScan::new()
    }
}

impl ModelScan {
    pub fn new() -> ModelScan {
        ModelScan {
            expect: Expect::Start,
            token: Token::Between,
            role: Role::Skip,
            depth: 0,
            objects: 0,
            model_key: false,
            high: None,
            buf: [0; MAX_MODEL],
            len: 0,
            found: None,
        }
    }

    /// Feeds the next bytes of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.expect != Expect::Invalid {
            let plain = self.token == Token::Str(Escape::None) && self.high.is_none();
            if plain {
                // The fast path through a string's plain bytes (a data URI's megabytes, a
                // key, the model): to the next `"` or `\` at once. A control byte, which
                // fails a key or the model, is left to the byte path.
                let end = memchr::memchr2(b'"', b'\\', chunk).unwrap_or(chunk.len());
                let span = &chunk[..end];
                if end > 0 && (self.role == Role::Skip || !span.iter().any(|b| *b <= 0x1f)) {
                    self.push(span);
                    chunk = &chunk[end..];
                    continue;
                }
            }
            self.byte(chunk[0]);
            chunk = &chunk[1..];
        }
    }

    /// The model, once the whole body has been fed: `None` unless the body was one JSON
    /// object whose (last) top-level `model` is a string of at most [`MAX_MODEL`] bytes.
    pub fn model(&self) -> Option<&str> {
        if self.expect != Expect::End {
            return None;
        }
        let (bytes, len) = self.found.as_ref()?;
        std::str::from_utf8(&bytes[..*len]).ok()
    }

    fn byte(&mut self, b: u8) {
        match self.token {
            Token::Str(escape) => self.string_byte(escape, b),
            Token::Scalar => {
                if matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.') {
                    return;
                }
                self.token = Token::Between;
                self.value_done();
                self.structural(b);
            }
            Token::Between => self.structural(b),
        }
    }

    /// A byte outside strings and scalars.
    fn structural(&mut self, b: u8) {
        use Expect::*;
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return;
        }
        self.expect = match (self.expect, b) {
            (Start, b'{') => return self.open(true),
            (Value | ValueOrClose, b'{' | b'[') => {
                self.value_start();
                return self.open(b == b'{');
            }
            (Value | ValueOrClose, b'"') => {
                let model = self.value_start();
                return self.string_start(if model { Role::Model } else { Role::Skip });
            }
            (Value | ValueOrClose, b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                self.value_start();
                self.token = Token::Scalar;
                return;
            }
            (KeyOrClose | Key, b'"') => {
                let role = if self.depth == 1 {
                    Role::Key
                } else {
                    Role::Skip
                };
                return self.string_start(role);
            }
            (Colon, b':') => Value,
            (CommaOrClose, b',') if self.in_object() => Key,
            (CommaOrClose, b',') => Value,
            (ValueOrClose, b']') if !self.in_object() => return self.close(),
            (CommaOrClose, b']') if !self.in_object() => return self.close(),
            (KeyOrClose | CommaOrClose, b'}') if self.in_object() => return self.close(),
            _ => Invalid,
        };
    }

    /// A value begins: says whether it is the value of a top-level `model` key, and
    /// forgets any earlier model when it is (the last key wins, whatever its value).
    fn value_start(&mut self) -> bool {
        let model = self.depth == 1 && self.model_key;
        if model {
            self.found = None;
            self.model_key = false;
        }
        model
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects & (1 << (self.depth - 1)) != 0
    }

    fn open(&mut self, object: bool) {
        if self.depth == MAX_DEPTH {
            self.expect = Expect::Invalid;
            return;
        }
        self.depth += 1;
        let bit = 1u128 << (self.depth - 1);
        if object {
            self.objects |= bit;
        } else {
            self.objects &= !bit;
        }
        self.expect = if object {
            Expect::KeyOrClose
        } else {
            Expect::ValueOrClose
        };
    }

    fn close(&mut self) {
        self.depth -= 1;
        self.value_done();
    }

    /// A value (or a container) has ended.
    fn value_done(&mut self) {
        self.expect = if self.depth == 0 {
            Expect::End
        } else {
            Expect::CommaOrClose
        };
    }

    fn string_start(&mut self, role: Role) {
        self.role = role;
        self.len = 0;
        self.high = None;
        self.token = Token::Str(Escape::None);
    }

    fn string_byte(&mut self, escape: Escape, b: u8) {
        let escape = match escape {
            Escape::None => {
                if self.high.is_some() && b != b'\\' {
                    return self.fail();
                }
                match b {
                    b'"' => return self.string_end(),
                    b'\\' => Escape::Backslash,
                    0..=0x1f if self.role != Role::Skip => return self.fail(),
                    _ => {
                        self.push(&[b]);
                        Escape::None
                    }
                }
            }
            Escape::Backslash => {
                if self.high.is_some() && b != b'u' {
                    return self.fail();
                }
                let plain = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.token = Token::Str(Escape::Hex { n: 0, acc: 0 });
                        return;
                    }
                    _ => return self.fail(),
                };
                self.push(&[plain]);
                Escape::None
            }
            Escape::Hex { n, acc } => {
                let Some(digit) = (b as char).to_digit(16) else {
                    return self.fail();
                };
                let acc = acc << 4 | digit as u16;
                if n < 3 {
                    Escape::Hex { n: n + 1, acc }
                } else {
                    return self.code_unit(acc);
                }
            }
        };
        self.token = Token::Str(escape);
    }

    /// A `\uXXXX` escape's code unit, joined with its surrogate half if it has one.
    fn code_unit(&mut self, unit: u16) {
        self.token = Token::Str(Escape::None);
        let code = match (self.high.take(), unit) {
            (None, 0xD800..=0xDBFF) => {
                self.high = Some(unit);
                return;
            }
            (None, 0xDC00..=0xDFFF) | (Some(_), 0..=0xDBFF | 0xE000..) => return self.fail(),
            (Some(high), low) => {
                0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            (None, unit) => u32::from(unit),
        };
        let c = char::from_u32(code).expect("surrogates are joined above");
        self.push(c.encode_utf8(&mut [0; 4]).as_bytes());
    }

    fn push(&mut self, bytes: &[u8]) {
        let cap = if self.role == Role::Key {
            MAX_KEY
        } else {
            MAX_MODEL
        };
        if self.role == Role::Skip || self.len > cap {
            return;
        }
        if self.len + bytes.len() > cap {
            self.len = cap + 1;
            return;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn string_end(&mut self) {
        self.token = Token::Between;
        let role = std::mem::replace(&mut self.role, Role::Skip);
        if matches!(self.expect, Expect::KeyOrClose | Expect::Key) {
            self.model_key = role == Role::Key && &self.buf[..self.len.min(MAX_KEY)] == b"model";
            self.expect = Expect::Colon;
            return;
        }
        if role == Role::Model && self.len <= MAX_MODEL {
            self.found = Some((self.buf, self.len));
        }
        self.value_done();
    }

    fn fail(&mut self) {
        self.expect = Expect::Invalid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
        let mut s = ModelScan::new();
        for c in chunks {
            s.feed(c);
        }
        s.model().map(str::to_owned)
    }

    fn scan(body: &str) -> Option<String> {
        scan_chunks([body.as_bytes()])
    }

    /// What serde_json finds: the top-level `model` when it is a string.
    fn serde(body: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.get("model")?.as_str().map(str::to_owned)
    }

    #[test]
    fn finds_the_top_level_model_only() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"model":"gen4_turbo"}"#, Some("gen4_turbo")),
            (
                r#" { "promptText" : "a \"model\": x", "model" : "gen4" } "#,
                Some("gen4"),
            ),
            (r#"{"a":{"model":"inner"},"b":[{"model":"x"}]}"#, None),
            (r#"{"a":{"model":"inner"},"model":"outer"}"#, Some("outer")),
            (
                r#"{"mod\u0065l":"esc\"aped\\\u00e9"}"#,
                Some("esc\"aped\\é"),
            ),
            (r#"{"model":"\ud83d\ude00"}"#, Some("😀")),
            (r#"{"model":"a","model":"b"}"#, Some("b")),
            (r#"{"model":"a","model":7}"#, None),
            (r#"{"model":7,"model":"a"}"#, Some("a")),
            (r#"{"model":null}"#, None),
            (r#"{"model":["gen4"]}"#, None),
            (r#"{"model":{"name":"gen4"}}"#, None),
            (r#"{"models":"x","mode":"y","modelx":"z"}"#, None),
            (r#"["model","gen4"]"#, None),
            (r#""model""#, None),
            (r#"{"model":"\u0000"}"#, Some("\0")),
            (r#"{"x":"\/\b\f\n\r\t","model":"m"}"#, Some("m")),
            // A raw control byte in a key or the model: no JSON, no model (the fast
            // path through plain bytes leaves it to the byte path).
            ("{\"model\":\"gen\u{1}4\"}", None),
            ("{\"model\":\"gen4_turbo\n\"}", None),
            ("{\"mo\u{1f}del\":\"x\",\"model\":\"m\"}", None),
        ];
        for (body, want) in cases {
            assert_eq!(scan(body).as_deref(), *want, "{body}");
            assert_eq!(
                serde(body.as_bytes()).as_deref(),
                *want,
                "serde_json: {body}"
            );
        }
    }

    #[test]
    fn invalid_bodies_have_no_model() {
        for body in [
            r#"{"model":"gen4""#,
            r#"{"model":"gen4"}}"#,
            r#"{"model":"gen4"} x"#,
            r#"{"model":"gen4",}"#,
            r#"{"model" "gen4"}"#,
            r#"{"model":"gen4"]"#,
            r#"{"model":"ge\qn4"}"#,
            r#"{"model":"\ud800"}"#,
            r#"{"model":"\udc00"}"#,
            r#"{"model":"\ud800\u0041"}"#,
            r#"{"model":"\u12g4"}"#,
            "{\"model\":\"a\0b\"}",
            "{\"mo\0del\":\"a\"}",
            "\0{\"model\":\"a\"}",
            r#"{"model":"gen4"}{"model":"x"}"#,
            "",
            "{",
        ] {
            assert_eq!(scan(body), None, "{body:?}");
            assert_eq!(serde(body.as_bytes()), None, "serde_json: {body:?}");
        }
    }

    #[test]
    fn a_model_longer_than_the_cap_is_no_model() {
        let at_cap = "m".repeat(MAX_MODEL);
        assert_eq!(
            scan(&format!(r#"{{"model":"{at_cap}"}}"#)),
            Some(at_cap.clone())
        );
        assert_eq!(scan(&format!(r#"{{"model":"{at_cap}x"}}"#)), None);
        // An escape that would cross the cap.
        let near = "m".repeat(MAX_MODEL - 1);
        assert_eq!(scan(&format!(r#"{{"model":"{near}\u00e9"}}"#)), None);
        // A long earlier model does not spill into a later short one.
        assert_eq!(
            scan(&format!(r#"{{"model":"{at_cap}xyz","model":"ok"}}"#)),
            Some("ok".into())
        );
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        for depth in [125, 126, 127, 200] {
            let body = format!(
                r#"{{"a":{}1{},"model":"m"}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(scan(&body), serde(body.as_bytes()), "depth {depth}");
        }
        // A million `[`: the scan gives up at once, with the same fixed state.
        let mut s = ModelScan::new();
        s.feed(br#"{"model":"m","a":"#);
        s.feed(&vec![b'['; 1_000_000]);
        s.feed(b"]");
        assert_eq!(s.model(), None);
        assert_eq!(s.expect, Expect::Invalid);
    }

    #[test]
    fn a_20_mb_data_uri_before_the_model_in_64_kib_chunks() {
        let mut body = br#"{"promptImage":"data:image/png;base64,"#.to_vec();
        body.extend(std::iter::repeat_n(b'A', 20 * 1024 * 1024));
        body.extend(br#"","ratio":"1280:720","model":"gen4_turbo","duration":5}"#);
        let mut s = ModelScan::new();
        let before = std::mem::size_of_val(&s);
        for chunk in body.chunks(64 * 1024) {
            s.feed(chunk);
        }
        assert_eq!(s.model(), Some("gen4_turbo"));
        // All the state is the struct (no heap field), and it stays small.
        assert_eq!(std::mem::size_of_val(&s), before);
        assert!(before <= 2 * MAX_MODEL + 64, "{before} bytes");
    }

    /// Random JSON: nested values, strings with every kind of escape, `model` keys at
    /// any depth and of any type, duplicate keys.
    fn json_value() -> impl Strategy<Value = String> {
        let text = prop_oneof![
            "[a-z\"\\\\/ é😀\u{0}\u{1f}\n]{0,12}",
            Just("model".to_owned()),
            Just("m".repeat(MAX_MODEL + 1)),
        ];
        let string = text.prop_map(|t| escape(&t));
        let leaf = prop_oneof![
            string.clone(),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("-12.5e3".to_owned()),
            Just("0".to_owned()),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[ {} ]", v.join(" , "))),
                prop::collection::vec((key(), inner), 0..6).prop_map(object),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""model""#.to_owned()),
            Just(r#""mod\u0065l""#.to_owned()),
            Just(r#""models""#.to_owned()),
            "[a-z\"\\\\]{0,6}".prop_map(|t| escape(&t)),
        ]
    }

    fn object(pairs: Vec<(String, String)>) -> String {
        let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{{{}}}", inner.join(","))
    }

    /// A JSON string literal, escaping in varied ways (`\u` for some characters).
    fn escape(t: &str) -> String {
        let mut out = String::from("\"");
        for c in t.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' => out.push_str("\\/"),
                '\n' => out.push_str("\\n"),
                'é' => out.push_str("\\u00E9"),
                '😀' => out.push_str("\\ud83d\\uDE00"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn finds_what_serde_json_finds_however_the_body_is_cut(
            pairs in prop::collection::vec(
                (key(), prop_oneof![json_value(), "[a-z0-9_.]{1,20}".prop_map(|t| escape(&t))]),
                0..8,
            ),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let body = object(pairs).into_bytes();
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in at {
                chunks.push(&body[from..cut]);
                from = cut;
            }
            chunks.push(&body[from..]);
            // serde_json's model, but for one longer than the cap.
            let want = serde(&body).filter(|m| m.len() <= MAX_MODEL);
            prop_assert_eq!(scan_chunks(chunks.iter().copied()), want.clone());
            // And one byte at a time.
            prop_assert_eq!(scan_chunks(body.chunks(1)), want);
        }
    }
}
