//! The last HTTP error answers the application got through the proxy, for the status
//! page beside the recent failures: a ring of the last [`RECENT_HTTP_ERRORS`] answers
//! with a status of 400 or more (time, method, endpoint template, code, and the
//! `error` message of Runway's `{"error": "..."}` body). A part of the proxy's book,
//! committed with it, so the page shows them again after a restart.
//!
//! Whatever the upstream (or a state file) says, what is kept is bounded and plain: the
//! message is read from at most the answer the proxy kept (64 KiB of JSON), invalid
//! UTF-8 replaced, control characters made spaces, and cut to [`MAX_MESSAGE_CHARS`]
//! characters; the method and endpoint are short printable ASCII or `invalid`. The ring
//! reuses its oldest entry once full: a flood of errors allocates nothing more.

use std::collections::VecDeque;

/// HTTP error answers remembered.
pub const RECENT_HTTP_ERRORS: usize = 20;
/// Longest message kept, in characters (`…` marks a cut).
pub const MAX_MESSAGE_CHARS: usize = 200;
/// Longest method or endpoint kept (the endpoint is a route template or `other`).
const MAX_NAME_BYTES: usize = 128;

/// One HTTP error answer, as the status page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    /// Unix seconds when the answer headers came.
    pub at: f64,
    pub method: String,
    /// The endpoint template (`/v1/tasks/{id}`, `other`): never an id.
    pub endpoint: String,
    pub code: u16,
    /// The `error` of the answer's body, cut; empty when it had none.
    pub message: String,
}

/// The ring of the last HTTP error answers, oldest first.
#[derive(Debug, Default)]
pub(super) struct HttpErrors {
    last: VecDeque<HttpError>,
}

impl HttpErrors {
    /// An answer with `code` (any code under 400 is not an error, and left out), its
    /// body `body` when the proxy kept it.
    pub(super) fn seen(
        &mut self,
        at: f64,
        method: &str,
        endpoint: &str,
        code: u16,
        body: Option<&[u8]>,
    ) {
        if code < 400 {
            return;
        }
        let message = body.map(message_of).unwrap_or_default();
        self.push(at, method, endpoint, code, &message);
    }

    /// Adds one entry, made plain, in the oldest one's place once the ring is full.
    fn push(&mut self, at: f64, method: &str, endpoint: &str, code: u16, message: &str) {
        let mut e = if self.last.len() >= RECENT_HTTP_ERRORS {
            self.last.pop_front().unwrap_or_else(empty)
        } else {
            empty()
        };
        e.at = if at.is_finite() { at } else { 0.0 };
        set(&mut e.method, name(method));
        set(&mut e.endpoint, name(endpoint));
        e.code = code;
        e.message.clear();
        plain(message, &mut e.message);
        self.last.push_back(e);
    }

    /// The entries, oldest first.
    pub(super) fn list(&self) -> Vec<HttpError> {
        self.last.iter().cloned().collect()
    }

    /// Adds what was saved (the last [`RECENT_HTTP_ERRORS`] of it), made plain again.
    pub(super) fn restore(&mut self, saved: &[HttpError]) {
        let from = saved.len().saturating_sub(RECENT_HTTP_ERRORS);
        for e in &saved[from..] {
            self.push(e.at, &e.method, &e.endpoint, e.code, &e.message);
        }
    }
}

fn empty() -> HttpError {
    HttpError {
        at: 0.0,
        method: String::new(),
        endpoint: String::new(),
        code: 0,
        message: String::new(),
    }
}

fn set(to: &mut String, from: &str) {
    to.clear();
    to.push_str(from);
}

/// A method or endpoint as the page may show it.
fn name(text: &str) -> &str {
    let plain = text.len() <= MAX_NAME_BYTES && text.bytes().all(|b| b.is_ascii_graphic());
    if plain && !text.is_empty() {
        text
    } else {
        "invalid"
    }
}

/// The `error` string of Runway's `{"error": "..."}`; empty for any other body.
fn message_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Option<serde_json::Value>,
    }
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Answer>(&text) {
        Ok(Answer {
            error: Some(serde_json::Value::String(message)),
        }) => message,
        _ => String::new(),
    }
}

/// `text` cut to [`MAX_MESSAGE_CHARS`] characters (`…` at a cut), its control
/// characters made spaces, appended to `out`.
fn plain(text: &str, out: &mut String) {
    for (i, c) in text.chars().enumerate() {
        if i == MAX_MESSAGE_CHARS {
            out.push('…');
            return;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_errors_are_kept_with_runways_message() {
        let mut r = HttpErrors::default();
        r.seen(
            1.0,
            "POST",
            "/v1/image_to_video",
            200,
            Some(br#"{"id":"t"}"#),
        );
        r.seen(
            2.0,
            "POST",
            "/v1/image_to_video",
            429,
            Some(br#"{"error":"Your daily task limit has been reached."}"#),
        );
        r.seen(3.0, "GET", "/v1/tasks/{id}", 502, None);
        r.seen(
            4.0,
            "GET",
            "/v1/tasks/{id}",
            404,
            Some(b"<html>not json</html>"),
        );
        let all = r.list();
        assert_eq!(all.len(), 3, "a 200 is not an error");
        assert_eq!(
            all[0],
            HttpError {
                at: 2.0,
                method: "POST".into(),
                endpoint: "/v1/image_to_video".into(),
                code: 429,
                message: "Your daily task limit has been reached.".into(),
            }
        );
        assert_eq!((all[1].code, all[1].message.as_str()), (502, ""));
        assert_eq!((all[2].code, all[2].message.as_str()), (404, ""));
    }

    #[test]
    fn a_flood_of_ten_thousand_errors_keeps_the_last_twenty() {
        let mut r = HttpErrors::default();
        let started = std::time::Instant::now();
        for i in 0..10_000u32 {
            let body = format!(r#"{{"error":"error {i}"}}"#);
            r.seen(
                f64::from(i),
                "POST",
                "/v1/text_to_video",
                503,
                Some(body.as_bytes()),
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let all = r.list();
        assert_eq!(all.len(), RECENT_HTTP_ERRORS);
        assert_eq!(all[0].message, "error 9980");
        assert_eq!(all.last().unwrap().message, "error 9999");
        assert_eq!(all.last().unwrap().at, 9999.0);
    }

    #[test]
    fn a_hostile_message_is_kept_short_and_plain() {
        let mut r = HttpErrors::default();
        // 1 MB of markup (more than the proxy keeps: the ledger copes anyway).
        let huge = format!(
            r#"{{"error":"<script>{}</script>\n\u0000"}}"#,
            "é".repeat(500_000)
        );
        r.seen(
            1.0,
            "POST",
            "/v1/image_to_video",
            400,
            Some(huge.as_bytes()),
        );
        // Not UTF-8, inside the JSON string and around it.
        r.seen(
            2.0,
            "POST",
            "/v1/image_to_video",
            400,
            Some(b"{\"error\":\"bad \xff\xfe bytes\"}"),
        );
        r.seen(
            3.0,
            "POST",
            "/v1/image_to_video",
            400,
            Some(b"\xff\xfe\xfd"),
        );
        // A message that is not a string, a method and endpoint that are not plain.
        r.seen(
            f64::NAN,
            "P\nST",
            &"x".repeat(200),
            400,
            Some(br#"{"error":{"a":1}}"#),
        );
        let all = r.list();
        let first = &all[0].message;
        assert_eq!(first.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(
            first.starts_with("<script>éé") && first.ends_with('…'),
            "{first}"
        );
        assert_eq!(all[1].message, "bad \u{fffd}\u{fffd} bytes");
        assert_eq!(all[2].message, "");
        assert_eq!(
            (
                all[3].method.as_str(),
                all[3].endpoint.as_str(),
                all[3].message.as_str(),
                all[3].at
            ),
            ("invalid", "invalid", "", 0.0)
        );
        let short = {
            let mut r = HttpErrors::default();
            r.seen(
                1.0,
                "GET",
                "other",
                500,
                Some(b"{\"error\":\"a\\nb\\u0007c\"}"),
            );
            r.list()[0].message.clone()
        };
        assert_eq!(short, "a b c", "control characters made spaces");
    }

    #[test]
    fn a_restore_gives_back_what_was_saved_within_the_bounds() {
        let mut r = HttpErrors::default();
        for i in 0..5u32 {
            r.seen(
                f64::from(i),
                "GET",
                "/v1/tasks/{id}",
                404,
                Some(br#"{"error":"Task not found"}"#),
            );
        }
        let saved = r.list();
        let mut back = HttpErrors::default();
        back.restore(&saved);
        assert_eq!(back.list(), saved);
        let hostile: Vec<HttpError> = (0..1000)
            .map(|i| HttpError {
                at: f64::INFINITY,
                method: "<b>".into(),
                endpoint: format!("/v1/{i} x"),
                code: 999,
                message: "m".repeat(10_000),
            })
            .collect();
        let mut r = HttpErrors::default();
        r.restore(&hostile);
        let all = r.list();
        assert_eq!(all.len(), RECENT_HTTP_ERRORS);
        assert!(all.iter().all(|e| e.at == 0.0
            && e.method == "<b>"
            && e.endpoint == "invalid"
            && e.message.chars().count() == MAX_MESSAGE_CHARS + 1));
    }
}
