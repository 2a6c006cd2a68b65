//! The status page a person opens when paged (`/`) and its JSON (`/api/v1/failures`):
//! per failure code, the table's advice, how many failed in the last hour and day, and
//! the last failed tasks; beside them, the last HTTP error answers the proxy passed back
//! to the application (time, method, endpoint template, code, Runway's `error` message).
//! Rendered on the server from the last published commit: plain HTML with its style
//! inline, no script, no external asset, every value from outside escaped. The windows
//! end now on the steady clock, on which the failures were counted (see `clock`): a step
//! of the wall clock changes neither count; the times shown are the wall clock's.

use std::fmt::Write;

use crate::classify::{Category, CreditRule, Retry};
use crate::clock::Now;
use crate::ledger::{
    CodeClass, FailedTask, HttpError, RecentFailures, RECENT_HTTP_ERRORS, RECENT_TASKS,
};

/// What the page says about one failure code, at one instant.
struct Row<'a> {
    r: &'a RecentFailures,
    hour: u64,
    day: u64,
}

/// The codes, most failures in the last day first (then the last hour, then the code).
fn rows(recent: &[RecentFailures], now: Now) -> Vec<Row<'_>> {
    let mut rows: Vec<Row<'_>> = recent
        .iter()
        .map(|r| Row {
            r,
            hour: r.last_hour(now),
            day: r.last_day(now),
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.day, b.hour)
            .cmp(&(a.day, a.hour))
            .then_with(|| a.r.failure_code.cmp(&b.r.failure_code))
    });
    rows
}

/// What the table says about a row's code (unknown before the table was asked).
fn class(r: &RecentFailures) -> CodeClass {
    r.class.unwrap_or(CodeClass {
        category: Category::Unknown,
        retry: Retry::Unknown,
        credits: CreditRule::Unknown,
    })
}

/// A Unix time as `2024-11-06 12:00:01 UTC`; `unknown` for none.
fn utc(at: Option<f64>) -> String {
    match at.and_then(crate::clock::format_time) {
        Some(t) => format!("{} UTC", t.replace('T', " ").trim_end_matches('Z')),
        None => "unknown".into(),
    }
}

/// `text` with the five characters that mean something in HTML escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The JSON of `/api/v1/failures`.
pub fn json(recent: &[RecentFailures], errors: &[HttpError], now: Now) -> serde_json::Value {
    let codes: Vec<serde_json::Value> = rows(recent, now)
        .iter()
        .map(|row| {
            let c = class(row.r);
            let tasks: Vec<serde_json::Value> = row
                .r
                .tasks
                .iter()
                .rev()
                .map(|t| serde_json::json!({"id": t.id, "model": t.model, "at": t.at, "time": utc(t.at)}))
                .collect();
            serde_json::json!({
                "failure_code": row.r.failure_code,
                "category": c.category.as_str(),
                "retry": c.retry.as_str(),
                "advice": c.retry.advice(),
                "credits": c.credits.as_str(),
                "last_hour": row.hour,
                "last_day": row.day,
                "recent": tasks,
            })
        })
        .collect();
    let http_errors: Vec<serde_json::Value> = errors
        .iter()
        .rev()
        .map(|e| {
            serde_json::json!({"at": e.at, "time": utc(Some(e.at)), "method": e.method,
                "endpoint": e.endpoint, "code": e.code, "message": e.message})
        })
        .collect();
    serde_json::json!({
        "generated_at": now.wall,
        "recent_per_code": RECENT_TASKS,
        "codes": codes,
        "recent_http_errors": RECENT_HTTP_ERRORS,
        "http_errors": http_errors,
    })
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
th{background:#f3f3f3}td.n{text-align:right}tr.hot td{background:#fde8e8}code{font-size:1.05em}";

/// The page's Content-Security-Policy: nothing may load or run but its own inline style,
/// named by its SHA-256 (checked against [`STYLE`] by a test), and no page may frame it.
pub const POLICY: &str = "default-src 'none'; \
    style-src 'sha256-ulLQRr+pMLUVuGJwS9LXZIx/an3soKT2OHfQfB6Aacc='; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The landing page: links, the recent failures, then the recent HTTP errors.
pub fn page(
    recent: &[RecentFailures],
    errors: &[HttpError],
    now: Now,
    telemetry_path: &str,
) -> String {
    let rows = rows(recent, now);
    let mut h = String::with_capacity(4096);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>runway-exporter: recent failures</title><style>{STYLE}</style></head><body>\n\
         <h1>runway-exporter</h1>\n<p>Runway task outcomes as Prometheus metrics. Version {} \
         (revision {}). <a href=\"{}\">Metrics</a> · <a href=\"/api/v1/failures\">Failures as JSON</a> · \
         <a href=\"/-/healthy\">Health</a> · <a href=\"/-/ready\">Readiness</a></p>\n\
         <h2>Recent failures</h2>\n<p>As of <time id=\"generated\">{}</time>, from the last \
         committed state. Times are the records' own, or when they were read.</p>\n",
        escape(crate::metrics::VERSION),
        escape(crate::metrics::REVISION),
        escape(telemetry_path),
        utc(Some(now.wall)),
    );
    if rows.is_empty() {
        h.push_str("<p id=\"none\">No failed task counted yet.</p>\n");
    } else {
        summary(&mut h, &rows);
        for (i, row) in rows.iter().enumerate() {
            tasks(&mut h, i, row);
        }
    }
    http_errors(&mut h, errors);
    h.push_str("</body></html>\n");
    h
}

/// The last HTTP error answers the proxy passed back, newest first.
fn http_errors(h: &mut String, errors: &[HttpError]) {
    h.push_str(
        "<h2 id=\"http-errors\">Recent HTTP errors</h2>\n<p>The last answers of 400 or more the \
         application got through the proxy, with Runway's message.</p>\n",
    );
    if errors.is_empty() {
        h.push_str("<p id=\"no-http-errors\">No HTTP error seen by the proxy.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"errors\"><thead><tr><th>Time</th><th>Method</th><th>Endpoint</th>\
         <th>Code</th><th>Message</th></tr></thead><tbody>\n",
    );
    for e in errors.iter().rev() {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td></tr>",
            utc(Some(e.at)),
            escape(&e.method),
            escape(&e.endpoint),
            e.code,
            escape(&e.message),
        );
    }
    h.push_str("</tbody></table>\n");
}

/// One line per code: the table's advice and the counts.
fn summary(h: &mut String, rows: &[Row<'_>]) {
    h.push_str(
        "<table id=\"codes\"><thead><tr><th>Failure code</th><th>Category</th><th>Retry</th>\
         <th>Credits</th><th>Last hour</th><th>Last 24 h</th><th>Last failed</th></tr></thead><tbody>\n",
    );
    for (i, row) in rows.iter().enumerate() {
        let c = class(row.r);
        let last = row.r.tasks.last().map_or_else(|| "-".into(), |t| utc(t.at));
        let _ = writeln!(
            h,
            "<tr{}><td><a href=\"#code-{i}\"><code>{}</code></a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            if row.hour > 0 { " class=\"hot\"" } else { "" },
            escape(&row.r.failure_code),
            c.category.as_str(),
            c.retry.advice(),
            c.credits.as_str(),
            row.hour,
            row.day,
            last,
        );
    }
    h.push_str("</tbody></table>\n");
}

/// The `i`th code's last failed tasks, newest first.
fn tasks(h: &mut String, i: usize, row: &Row<'_>) {
    let _ = writeln!(
        h,
        "<h3 id=\"code-{i}\"><code>{}</code></h3>\n<table class=\"tasks\"><thead><tr>\
         <th>Task id</th><th>Model</th><th>Time</th></tr></thead><tbody>",
        escape(&row.r.failure_code),
    );
    for FailedTask { id, model, at } in row.r.tasks.iter().rev() {
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            if id.is_empty() {
                "(no id)".into()
            } else {
                escape(id)
            },
            escape(model),
            utc(*at),
        );
    }
    h.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_names_the_pages_own_style_and_nothing_else() {
        let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        let hash = base64::engine::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            digest.as_ref(),
        );
        assert!(
            POLICY.contains(&format!("style-src 'sha256-{hash}';")),
            "{hash}"
        );
        assert!(POLICY.starts_with("default-src 'none';"));
        let page = page(&[], &[], Now::at(0.0), "/metrics");
        assert_eq!(page.matches("<style>").count(), 1);
        assert!(page.contains(&format!("<style>{STYLE}</style>")));
        assert!(!page.contains("style=") && !page.contains("<script"));
    }

    use super::*;
    use crate::ledger::Slot;

    const NOW: f64 = 1_730_894_400.0; // 2024-11-06T12:00:00Z

    fn code(name: &str, class: (Category, Retry, CreditRule), ages: &[f64]) -> RecentFailures {
        let tasks = ages
            .iter()
            .enumerate()
            .map(|(i, age)| FailedTask {
                id: format!("{name}-{i}"),
                model: "gen4_turbo".into(),
                at: Some(NOW - age),
            })
            .collect();
        // One failure per age, in the slot of `width` seconds it fell in.
        let slots = |width: f64| {
            ages.iter()
                .map(|age| Slot {
                    slot: ((NOW - age) / width) as u64,
                    tasks: 1,
                })
                .collect()
        };
        let (minutes, hours) = (slots(60.0), slots(3600.0));
        RecentFailures {
            failure_code: name.into(),
            class: Some(CodeClass {
                category: class.0,
                retry: class.1,
                credits: class.2,
            }),
            tasks,
            minutes,
            hours,
            clock_step: 0,
        }
    }

    fn recent() -> Vec<RecentFailures> {
        vec![
            code(
                "INTERNAL",
                (Category::Internal, Retry::AfterDelay, CreditRule::Refunded),
                &[7200.0],
            ),
            code(
                "SAFETY.INPUT.TEXT",
                (Category::SafetyInput, Retry::Never, CreditRule::Lost),
                &[600.0, 60.0, 0.0],
            ),
        ]
    }

    #[test]
    fn the_json_has_each_code_with_its_advice_counts_and_last_tasks() {
        let j = json(&recent(), &[], Now::at(NOW));
        let codes = j["codes"].as_array().unwrap();
        assert_eq!(
            codes[0]["failure_code"], "SAFETY.INPUT.TEXT",
            "most failures first"
        );
        assert_eq!(codes[0]["advice"], "never retry");
        assert_eq!(codes[0]["credits"], "lost");
        assert_eq!(
            (
                codes[0]["last_hour"].as_u64(),
                codes[0]["last_day"].as_u64()
            ),
            (Some(3), Some(3))
        );
        assert_eq!(
            codes[0]["recent"][0]["id"], "SAFETY.INPUT.TEXT-2",
            "newest first"
        );
        assert_eq!(codes[0]["recent"][0]["time"], "2024-11-06 12:00:00 UTC");
        assert_eq!(
            (
                codes[1]["last_hour"].as_u64(),
                codes[1]["last_day"].as_u64()
            ),
            (Some(0), Some(1))
        );
        assert_eq!(codes[1]["advice"], "retry after a delay");
    }

    #[test]
    fn the_page_shows_every_code_and_escapes_what_came_from_a_log() {
        let mut r = recent();
        r[1].tasks[0].id = "<script>alert(1)</script>".into();
        r[1].failure_code = "A&B\"<i>".into();
        let html = page(&r, &[], Now::at(NOW), "/metrics?a=<b>");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("<code>A&amp;B&quot;&lt;i&gt;</code>"));
        assert!(html.contains("href=\"/metrics?a=&lt;b&gt;\""));
        assert!(!html.contains("<script>") && !html.contains("<i>"));
        assert!(html.contains("never retry") && html.contains("retry after a delay"));
        assert!(html.contains("<td class=\"n\">3</td><td class=\"n\">3</td>"));
        assert!(
            !html.contains("<script") && !html.contains("src="),
            "no script, no asset"
        );
        let empty = page(&[], &[], Now::at(NOW), "/metrics");
        assert!(empty.contains("No failed task counted yet."));
    }

    #[test]
    fn the_page_and_the_json_show_the_recent_http_errors_newest_first_escaped() {
        let error = |at: f64, code: u16, message: &str| HttpError {
            at,
            method: "POST".into(),
            endpoint: "/v1/image_to_video".into(),
            code,
            message: message.into(),
        };
        let errors = [
            error(NOW - 60.0, 503, "Service unavailable"),
            error(NOW, 429, "<img src=x onerror=alert(1)> & \"quota\""),
        ];
        let html = page(&recent(), &errors, Now::at(NOW), "/metrics");
        let at = html
            .find("<h2 id=\"http-errors\">")
            .expect("a section of its own");
        assert!(
            at > html.find("id=\"codes\"").unwrap(),
            "after the failures"
        );
        let section = &html[at..];
        assert!(section.contains(
            "<tr><td>2024-11-06 12:00:00 UTC</td><td>POST</td><td><code>/v1/image_to_video</code></td>\
             <td class=\"n\">429</td><td>&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quota&quot;</td></tr>"
        ), "{section}");
        assert!(section.find("429") < section.find("503"), "newest first");
        assert!(!html.contains("<img"));
        let j = json(&recent(), &errors, Now::at(NOW));
        assert_eq!(j["http_errors"][0]["code"], 429);
        assert_eq!(j["http_errors"][0]["message"], errors[1].message);
        assert_eq!(j["http_errors"][1]["endpoint"], "/v1/image_to_video");
        assert_eq!(j["http_errors"][1]["time"], "2024-11-06 11:59:00 UTC");
        let none = page(&[], &[], Now::at(NOW), "/metrics");
        assert!(none.contains("No HTTP error seen by the proxy."));
    }
}
