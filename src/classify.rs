//! Failure code -> [`Classification`]: pure and table-driven.
//!
//! A *failure code* is Runway's dot-separated `failureCode` string, most generic segment
//! first (`SAFETY.INPUT.TEXT`). The set is open-ended, so the table (data, not code:
//! `config/failure-codes.toml`, compiled in and replaceable by a file) matches by exact
//! code or dotted prefix, and a code that matches nothing stays visible as `unknown`.
//!
//! Before a code becomes a label value it is *normalised* ([`normalize_code`]): trimmed,
//! upper-cased and validated against `[A-Z0-9_]+(\.[A-Z0-9_]+)*` of at most
//! [`MAX_CODE_BYTES`]. The lower-case sentinels [`NONE`] (null, empty or missing) and
//! [`INVALID`] can never collide with one of Runway's upper-case codes.

use rustc_hash::FxHashMap as HashMap;
use std::borrow::Cow;
use std::path::Path;

use serde::Deserialize;

/// The failure-code table shipped with the binary.
pub const BUILTIN_TABLE: &str = include_str!("../config/failure-codes.toml");

/// Label value for a FAILED task whose `failureCode` is null, empty or missing.
pub const NONE: &str = "none";
/// Label value for a code that is not of Runway's shape (or longer than [`MAX_CODE_BYTES`]).
pub const INVALID: &str = "invalid";
/// Longest failure code accepted as a label value.
pub const MAX_CODE_BYTES: usize = 64;

/// What a failure says about the task, by the table's categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    SafetyInput,
    SafetyOutput,
    SafetyPreprocessing,
    BadOutput,
    PreprocessingInternal,
    AssetInvalid,
    ThirdParty,
    Internal,
    Unknown,
}

/// Whether a client should retry a task that failed with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    Never,
    AfterDelay,
    Unlikely,
    Unknown,
}

/// Whether Runway keeps the credits of a task that failed with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditRule {
    Lost,
    Refunded,
    Unknown,
}

crate::labels::label_enum!(Category {
    SafetyInput => "safety_input",
    SafetyOutput => "safety_output",
    SafetyPreprocessing => "safety_preprocessing",
    BadOutput => "bad_output",
    PreprocessingInternal => "preprocessing_internal",
    AssetInvalid => "asset_invalid",
    ThirdParty => "third_party",
    Internal => "internal",
    Unknown => "unknown",
});
crate::labels::label_enum!(Retry {
    Never => "never",
    AfterDelay => "after_delay",
    Unlikely => "unlikely",
    Unknown => "unknown",
});
crate::labels::label_enum!(CreditRule {
    Lost => "lost",
    Refunded => "refunded",
    Unknown => "unknown",
});

impl Retry {
    /// The advice in words, for a person.
    pub fn advice(self) -> &'static str {
        match self {
            Retry::Never => "never retry",
            Retry::AfterDelay => "retry after a delay",
            Retry::Unlikely => "may retry, unlikely to succeed",
            Retry::Unknown => "unknown",
        }
    }
}

/// Runway's advice for the HTTP error codes it documents beside the failure codes:
/// never retry a request it refused, retry with exponential backoff and jitter one it
/// could not serve. Other codes follow the official SDKs' rule ([`http_retry`]).
pub const HTTP_ADVICE: [(u16, Retry, &str); 8] = [
    (400, Retry::Never, "the request is invalid: fix it"),
    (
        401,
        Retry::Never,
        "the API key is missing, wrong or revoked",
    ),
    (
        404,
        Retry::Never,
        "no such task or endpoint (a deleted task is forgotten)",
    ),
    (
        405,
        Retry::Never,
        "the method is not allowed on this endpoint",
    ),
    (
        429,
        Retry::AfterDelay,
        "the daily task quota is reached: retry with backoff and jitter",
    ),
    (
        502,
        Retry::AfterDelay,
        "bad gateway: retry with backoff and jitter",
    ),
    (
        503,
        Retry::AfterDelay,
        "unavailable: retry with backoff and jitter",
    ),
    (
        504,
        Retry::AfterDelay,
        "gateway timeout: retry with backoff and jitter",
    ),
];

/// Whether to retry a request the API answered with HTTP error `code` (400 or more):
/// the answer's `x-should-retry` header (`should_retry`, `true` or `false`) when it has
/// one, as the SDKs read it; else [`HTTP_ADVICE`]; else the SDKs' rule: 408, 409 and
/// every 5xx are retried (after a delay), every other 4xx is not.
pub fn http_retry(code: u16, should_retry: Option<bool>) -> Retry {
    if let Some(retry) = should_retry {
        return if retry {
            Retry::AfterDelay
        } else {
            Retry::Never
        };
    }
    if let Some((_, retry, _)) = HTTP_ADVICE.iter().find(|(c, _, _)| *c == code) {
        return *retry;
    }
    match code {
        408 | 409 | 500.. => Retry::AfterDelay,
        _ => Retry::Never,
    }
}

/// What the table says about one code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub category: Category,
    pub retry: Retry,
    pub credits: CreditRule,
    /// The rule that matched (`SAFETY.INPUT.*`), or `None` for an unknown code.
    pub rule: Option<String>,
    pub description: String,
}

impl Classification {
    fn unknown() -> Self {
        Classification {
            category: Category::Unknown,
            retry: Retry::Unknown,
            credits: CreditRule::Unknown,
            rule: None,
            description: "Not in the failure-code table: a new or unexpected code.".into(),
        }
    }
}

/// A failure code made fit to be a label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NormalizedCode<'a> {
    /// Null, empty or missing: the [`NONE`] sentinel.
    None,
    /// Not of Runway's shape: the [`INVALID`] sentinel.
    Invalid,
    /// A well-formed, upper-case code.
    Code(Cow<'a, str>),
}

impl NormalizedCode<'_> {
    /// The label value.
    pub fn as_str(&self) -> &str {
        match self {
            NormalizedCode::None => NONE,
            NormalizedCode::Invalid => INVALID,
            NormalizedCode::Code(c) => c,
        }
    }
}

fn is_code_shape(s: &[u8]) -> bool {
    // [A-Z0-9_]+(\.[A-Z0-9_]+)*: no empty segment, no leading or trailing dot.
    !s.is_empty()
        && s.len() <= MAX_CODE_BYTES
        && s.first() != Some(&b'.')
        && s.last() != Some(&b'.')
        && !s.windows(2).any(|w| w == b"..")
        && s.iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// Normalises a raw `failureCode` (already unescaped from JSON): trim, upper-case,
/// validate. Borrows when the code is already in shape, which it almost always is.
pub fn normalize_code(raw: Option<&str>) -> NormalizedCode<'_> {
    let Some(raw) = raw else {
        return NormalizedCode::None;
    };
    let trimmed = crate::labels::trim(raw);
    if trimmed.is_empty() {
        return NormalizedCode::None;
    }
    if is_code_shape(trimmed.as_bytes()) {
        return NormalizedCode::Code(Cow::Borrowed(trimmed));
    }
    if trimmed.len() > MAX_CODE_BYTES || !trimmed.is_ascii() {
        return NormalizedCode::Invalid;
    }
    let upper = trimmed.to_ascii_uppercase();
    if is_code_shape(upper.as_bytes()) {
        NormalizedCode::Code(Cow::Owned(upper))
    } else {
        NormalizedCode::Invalid
    }
}

/// A problem with a failure-code table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read failure-code table {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("failure-code table {origin} is not valid: {source}")]
    Parse {
        origin: String,
        source: toml::de::Error,
    },
    #[error("failure-code table {origin}: rule {index} ({pattern:?}): {problem}")]
    Rule {
        origin: String,
        index: usize,
        pattern: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    api_version: String,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(rename = "match")]
    pattern: String,
    category: Category,
    retry: Retry,
    credits: CreditRule,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    description: String,
}

/// The compiled failure-code table.
#[derive(Debug, Clone)]
pub struct Table {
    api_version: String,
    exact: HashMap<String, Classification>,
    /// Keyed by the prefix without the trailing `.*`.
    prefix: HashMap<String, Classification>,
    none: Classification,
    unknown: Classification,
    /// Codes exported at 0 from start-up: exact codes and examples, in table order.
    known_codes: Vec<String>,
}

impl Table {
    /// The table compiled into the binary.
    pub fn builtin() -> Table {
        Table::parse(BUILTIN_TABLE, "(built in)").expect("the built-in failure-code table is valid")
    }

    /// Reads a table from a file.
    pub fn from_file(path: &Path) -> Result<Table, TableError> {
        let text = std::fs::read_to_string(path).map_err(|source| TableError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Table::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a table; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Table, TableError> {
        let file: TableFile = toml::from_str(text).map_err(|source| TableError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        let mut table = Table {
            api_version: file.api_version,
            exact: HashMap::default(),
            prefix: HashMap::default(),
            none: Classification {
                category: Category::Internal,
                retry: Retry::AfterDelay,
                credits: CreditRule::Refunded,
                rule: Some(NONE.into()),
                description: "No failure code.".into(),
            },
            unknown: Classification::unknown(),
            known_codes: Vec::new(),
        };
        let push_known = |known: &mut Vec<String>, code: &str| {
            if !known.iter().any(|k| k == code) {
                known.push(code.to_string());
            }
        };
        for (index, rule) in file.rules.into_iter().enumerate() {
            let bad = |problem: &str| TableError::Rule {
                origin: origin.to_string(),
                index: index + 1,
                pattern: rule.pattern.clone(),
                problem: problem.to_string(),
            };
            if rule.category == Category::Unknown
                || rule.retry == Retry::Unknown
                || rule.credits == CreditRule::Unknown
            {
                return Err(bad(
                    "\"unknown\" is what the table says of codes it does not match; a rule must say more",
                ));
            }
            let class = Classification {
                category: rule.category,
                retry: rule.retry,
                credits: rule.credits,
                rule: Some(rule.pattern.clone()),
                description: rule.description.clone(),
            };
            let inserted = if rule.pattern == NONE {
                table.none = class;
                push_known(&mut table.known_codes, NONE);
                true
            } else if let Some(prefix) = rule.pattern.strip_suffix(".*") {
                if !is_code_shape(prefix.as_bytes()) {
                    return Err(bad(
                        "a pattern is a code of [A-Z0-9_] segments followed by .*",
                    ));
                }
                for example in &rule.examples {
                    if !is_code_shape(example.as_bytes())
                        || !(example == prefix || example.starts_with(&format!("{prefix}.")))
                    {
                        return Err(bad(&format!(
                            "example {example:?} does not match the pattern"
                        )));
                    }
                    push_known(&mut table.known_codes, example);
                }
                table.prefix.insert(prefix.to_string(), class).is_none()
            } else {
                if !is_code_shape(rule.pattern.as_bytes()) {
                    return Err(bad(
                        "a code is upper-case [A-Z0-9_] segments separated by dots, at most 64 bytes",
                    ));
                }
                push_known(&mut table.known_codes, &rule.pattern);
                table.exact.insert(rule.pattern.clone(), class).is_none()
            };
            if !inserted {
                return Err(bad("the same match appears twice"));
            }
        }
        Ok(table)
    }

    /// The Runway API version the table describes.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// Codes exported at 0 from start-up.
    pub fn known_codes(&self) -> &[String] {
        &self.known_codes
    }

    /// Classifies a normalised code: the most specific rule wins.
    pub fn classify(&self, code: &NormalizedCode<'_>) -> &Classification {
        match code {
            NormalizedCode::None => &self.none,
            NormalizedCode::Invalid => &self.unknown,
            NormalizedCode::Code(code) => self.classify_code(code),
        }
    }

    /// Classifies a label value: a well-formed code or one of the sentinels.
    pub fn classify_code(&self, code: &str) -> &Classification {
        if code == NONE {
            return &self.none;
        }
        if let Some(c) = self.exact.get(code) {
            return c;
        }
        // Longest dotted prefix first: the code itself, then each shorter prefix.
        let mut end = code.len();
        loop {
            if let Some(c) = self.prefix.get(&code[..end]) {
                return c;
            }
            match code[..end].rfind('.') {
                Some(dot) => end = dot,
                None => return &self.unknown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_have_runways_advice_else_the_sdks_and_the_header_decides() {
        use Retry::{AfterDelay as Later, Never};
        for (code, want) in [
            (400, Never),
            (401, Never),
            (404, Never),
            (405, Never),
            (429, Later),
            (502, Later),
            (503, Later),
            (504, Later),
            // The SDKs' rule for the rest.
            (408, Later),
            (409, Later),
            (500, Later),
            (501, Later),
            (599, Later),
            (402, Never),
            (403, Never),
            (418, Never),
            (422, Never),
        ] {
            assert_eq!(http_retry(code, None), want, "{code}");
        }
        assert_eq!(http_retry(400, Some(true)), Later);
        assert_eq!(http_retry(503, Some(false)), Never);
        assert!(HTTP_ADVICE
            .iter()
            .all(|(c, _, why)| *c >= 400 && !why.is_empty()));
    }

    fn class(code: Option<&str>) -> (String, Category, Retry, CreditRule) {
        let table = Table::builtin();
        let n = normalize_code(code);
        let c = table.classify(&n);
        (n.as_str().to_string(), c.category, c.retry, c.credits)
    }

    #[test]
    fn every_row_of_the_reference_table() {
        use Category as C;
        use CreditRule as Cr;
        use Retry as R;
        let cases: &[(Option<&str>, &str, Category, Retry, CreditRule)] = &[
            (
                Some("SAFETY.INPUT.TEXT"),
                "SAFETY.INPUT.TEXT",
                C::SafetyInput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("SAFETY.INPUT.IMAGE"),
                "SAFETY.INPUT.IMAGE",
                C::SafetyInput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("SAFETY.INPUT.VIDEO"),
                "SAFETY.INPUT.VIDEO",
                C::SafetyInput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("SAFETY.INPUT.AUDIO"),
                "SAFETY.INPUT.AUDIO",
                C::SafetyInput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("SAFETY.INPUT"),
                "SAFETY.INPUT",
                C::SafetyInput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("SAFETY.OUTPUT.VIDEO"),
                "SAFETY.OUTPUT.VIDEO",
                C::SafetyOutput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("SAFETY.OUTPUT.IMAGE"),
                "SAFETY.OUTPUT.IMAGE",
                C::SafetyOutput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("INTERNAL.BAD_OUTPUT.CODE01"),
                "INTERNAL.BAD_OUTPUT.CODE01",
                C::BadOutput,
                R::Unlikely,
                Cr::Refunded,
            ),
            (
                Some("INTERNAL.BAD_OUTPUT.01"),
                "INTERNAL.BAD_OUTPUT.01",
                C::BadOutput,
                R::Unlikely,
                Cr::Refunded,
            ),
            (
                Some("INPUT_PREPROCESSING.SAFETY.TEXT"),
                "INPUT_PREPROCESSING.SAFETY.TEXT",
                C::SafetyPreprocessing,
                R::Never,
                Cr::Refunded,
            ),
            (
                Some("INPUT_PREPROCESSING.INTERNAL"),
                "INPUT_PREPROCESSING.INTERNAL",
                C::PreprocessingInternal,
                R::AfterDelay,
                Cr::Refunded,
            ),
            (
                Some("ASSET.INVALID"),
                "ASSET.INVALID",
                C::AssetInvalid,
                R::Never,
                Cr::Refunded,
            ),
            (
                Some("THIRD_PARTY.UNAVAILABLE"),
                "THIRD_PARTY.UNAVAILABLE",
                C::ThirdParty,
                R::AfterDelay,
                Cr::Refunded,
            ),
            (
                Some("INTERNAL"),
                "INTERNAL",
                C::Internal,
                R::AfterDelay,
                Cr::Refunded,
            ),
            (None, "none", C::Internal, R::AfterDelay, Cr::Refunded),
            // Unknown: visible under its own code.
            (
                Some("SAFETY.SOMETHING_NEW"),
                "SAFETY.SOMETHING_NEW",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some("INTERNAL.OTHER"),
                "INTERNAL.OTHER",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some("INPUT_PREPROCESSING.SAFETY.IMAGE"),
                "INPUT_PREPROCESSING.SAFETY.IMAGE",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some("BRAND_NEW"),
                "BRAND_NEW",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            // Empty and blank are "no code".
            (Some(""), "none", C::Internal, R::AfterDelay, Cr::Refunded),
            (
                Some("   "),
                "none",
                C::Internal,
                R::AfterDelay,
                Cr::Refunded,
            ),
            // Lower case and white space are normalised.
            (
                Some("safety.input.text"),
                "SAFETY.INPUT.TEXT",
                C::SafetyInput,
                R::Never,
                Cr::Lost,
            ),
            (
                Some("  Asset.Invalid\n"),
                "ASSET.INVALID",
                C::AssetInvalid,
                R::Never,
                Cr::Refunded,
            ),
            // Not of Runway's shape.
            (
                Some("SAFETY..INPUT"),
                "invalid",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some(".SAFETY"),
                "invalid",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some("SAFETY."),
                "invalid",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some("SAFETY INPUT"),
                "invalid",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some("SAFETY-INPUT"),
                "invalid",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (Some("none"), "NONE", C::Unknown, R::Unknown, Cr::Unknown),
            (
                Some("SÄFETY"),
                "invalid",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
            (
                Some("a\"}{"),
                "invalid",
                C::Unknown,
                R::Unknown,
                Cr::Unknown,
            ),
        ];
        for (raw, label, cat, retry, credits) in cases {
            assert_eq!(
                class(*raw),
                (label.to_string(), *cat, *retry, *credits),
                "code {raw:?}"
            );
        }
    }

    #[test]
    fn over_long_codes_are_invalid_and_the_limit_is_inclusive() {
        let at_limit = "A".repeat(MAX_CODE_BYTES);
        assert_eq!(normalize_code(Some(&at_limit)).as_str(), at_limit);
        let over = "A".repeat(MAX_CODE_BYTES + 1);
        assert_eq!(normalize_code(Some(&over)), NormalizedCode::Invalid);
        let over_lower = "a".repeat(MAX_CODE_BYTES + 1);
        assert_eq!(normalize_code(Some(&over_lower)), NormalizedCode::Invalid);
    }

    #[test]
    fn well_formed_codes_are_borrowed() {
        assert!(matches!(
            normalize_code(Some("SAFETY.INPUT.TEXT")),
            NormalizedCode::Code(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn builtin_table_exports_its_codes_and_version() {
        let t = Table::builtin();
        assert_eq!(t.api_version(), "2024-11-06");
        for code in [
            "SAFETY.INPUT.TEXT",
            "SAFETY.OUTPUT.VIDEO",
            "INTERNAL.BAD_OUTPUT.CODE01",
            "INPUT_PREPROCESSING.SAFETY.TEXT",
            "INPUT_PREPROCESSING.INTERNAL",
            "ASSET.INVALID",
            "THIRD_PARTY.UNAVAILABLE",
            "INTERNAL",
            "none",
        ] {
            assert!(t.known_codes().iter().any(|k| k == code), "{code}");
        }
        for code in t.known_codes() {
            assert_ne!(t.classify_code(code).category, Category::Unknown, "{code}");
        }
    }

    #[test]
    fn longest_match_wins_whatever_the_order() {
        let t = Table::parse(
            r#"
            api_version = "x"
            [[rule]]
            match = "A.*"
            category = "internal"
            retry = "after_delay"
            credits = "refunded"
            [[rule]]
            match = "A.B.*"
            category = "safety_input"
            retry = "never"
            credits = "lost"
            [[rule]]
            match = "A.B.C"
            category = "asset_invalid"
            retry = "never"
            credits = "refunded"
            "#,
            "test",
        )
        .unwrap();
        assert_eq!(t.classify_code("A.X").category, Category::Internal);
        assert_eq!(t.classify_code("A.B.X").category, Category::SafetyInput);
        assert_eq!(t.classify_code("A.B.C").category, Category::AssetInvalid);
        assert_eq!(t.classify_code("A.B.C.D").category, Category::SafetyInput);
        assert_eq!(t.classify_code("AB").category, Category::Unknown);
    }

    #[test]
    fn bad_tables_are_refused_with_the_rule_named() {
        let cases = [
            ("api_version = \"x\"\n[[rule]]\nmatch = \"a.b\"\ncategory = \"internal\"\nretry = \"never\"\ncredits = \"lost\"", "rule 1"),
            ("api_version = \"x\"\n[[rule]]\nmatch = \"A\"\ncategory = \"nope\"\nretry = \"never\"\ncredits = \"lost\"", "nope"),
            ("api_version = \"x\"\n[[rule]]\nmatch = \"A\"\ncategory = \"unknown\"\nretry = \"never\"\ncredits = \"lost\"", "rule 1"),
            ("api_version = \"x\"\n[[rule]]\nmatch = \"A.*\"\nexamples = [\"B.C\"]\ncategory = \"internal\"\nretry = \"never\"\ncredits = \"lost\"", "example"),
            ("api_version = \"x\"\n[[rule]]\nmatch = \"A\"\ncategory = \"internal\"\nretry = \"never\"\ncredits = \"lost\"\n[[rule]]\nmatch = \"A\"\ncategory = \"internal\"\nretry = \"never\"\ncredits = \"lost\"", "twice"),
            ("[[rule]]\nmatch = \"A\"\ncategory = \"internal\"\nretry = \"never\"\ncredits = \"lost\"", "api_version"),
        ];
        for (text, needle) in cases {
            let err = Table::parse(text, "t").unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }
}
