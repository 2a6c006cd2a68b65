//! Label values: the enums whose values they are, and the checks that keep a value
//! from a log a safe and bounded label (trimmed, of a known alphabet, not too long).
//! A leaf: it imports nothing of the crate.

/// Label value for values folded away by a cardinality cap.
pub const OTHER: &str = "other";
/// Label value for a record without a model.
pub const UNKNOWN_MODEL: &str = "unknown";
/// Label value for a model name that is not a plausible model name.
pub const INVALID_MODEL: &str = "invalid";
/// Longest model name kept as a label value.
pub const MAX_MODEL_BYTES: usize = 64;

/// Implements `ALL`, `index`, `as_str`, `parse` and `Display` for a fieldless enum of
/// label values, listed in the order they are declared (a compile-time check)
/// (`no_display` leaves `Display` to the enum, an error type's message).
macro_rules! label_enum {
    ($ty:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $crate::labels::label_enum!($ty, no_display { $($variant => $s),+ });
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    ($ty:ident, no_display { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in export order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            /// The value's place in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
            /// The value of a label value.
            pub fn parse(s: &str) -> Option<$ty> {
                match s { $($s => Some($ty::$variant),)+ _ => None }
            }
        }
        const _: () = {
            let mut i = 0;
            while i < $ty::ALL.len() {
                assert!($ty::ALL[i] as usize == i, "label_enum!: list the values in declaration order");
                i += 1;
            }
        };
    };
}
pub(crate) use label_enum;

/// `str::trim`, with a fast path for the usual value that starts and ends with a
/// printable ASCII character (`str::trim` decodes a char at each end first).
pub fn trim(s: &str) -> &str {
    let edge = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii() && !char::from(b).is_whitespace());
    if edge(s.as_bytes().first()) && edge(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// A model name as a label value: trimmed, or `unknown` when there is none, or
/// `invalid` when it is not a plausible model name (too long, or other characters than
/// letters, digits and `_ . - : /`).
pub fn model_label(model: Option<&str>) -> &str {
    let Some(m) = model.map(trim) else {
        return UNKNOWN_MODEL;
    };
    let ok = !m.is_empty()
        && m.len() <= MAX_MODEL_BYTES
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':' | b'/'));
    if ok {
        m
    } else if m.is_empty() {
        UNKNOWN_MODEL
    } else {
        INVALID_MODEL
    }
}
