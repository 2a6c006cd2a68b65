//! The status page (`/`) and its JSON (`/api/v1/failures`): what a person paged at
//! night opens, checked in a real headless Chromium, behind the web config, and across
//! a `kill -9`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A known log: three SAFETY.INPUT.TEXT failures (one of them twice), one INTERNAL, one
/// success.
fn known_log() -> String {
    let failed = |id: &str, code: &str| {
        format!(r#"{{"id":"{id}","status":"FAILED","failureCode":"{code}","model":"gen4_turbo"}}"#)
            + "\n"
    };
    [
        failed("task-safety-1", "SAFETY.INPUT.TEXT"),
        failed("task-safety-2", "SAFETY.INPUT.TEXT"),
        failed("task-safety-2", "SAFETY.INPUT.TEXT"),
        failed("task-internal-1", "INTERNAL"),
        r#"{"id":"ok-1","status":"SUCCEEDED","model":"gen4_turbo"}"#.to_string() + "\n",
        failed("task-safety-3", "SAFETY.INPUT.TEXT"),
    ]
    .concat()
}

fn counted(m: &str) -> bool {
    sum(m, "runway_tasks_total", &[]) >= 5.0
}

/// The page as headless Chromium renders it (its DOM after load), and a screenshot.
fn chromium(url: &str, work: &Path, screenshot: &Path) -> String {
    let bin = require_tool("chromium");
    // The flags a sandboxed CI machine needs: no sandbox as root, no GPU, and nothing
    // that reaches for the network on its own.
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1100,900",
    ];
    let run = |extra: &str| {
        let profile = tempfile::tempdir_in(work).unwrap();
        let mut child = Command::new(&bin)
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(extra)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium {extra} did not finish in 90 s");
            }
            // A poll interval for an external process, not a synchronisation.
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&format!("--screenshot={}", screenshot.display()));
    run("--dump-dom")
}

/// The text of the table row that holds `needle`.
fn row<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not on the page:\n{dom}"));
    let start = dom[..at].rfind("<tr").unwrap();
    let end = at + dom[at..].find("</tr>").unwrap();
    &dom[start..end]
}

/// The page a person sees: a known log's failures, and beside them the HTTP errors the
/// application got through the proxy (a 429 at a create call, a 404).
#[test]
fn the_status_page_shows_a_known_logs_failures_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _stop) = erring_upstream();
    let (d, proxy) = through_proxy(dir.path(), &proxy_config(dir.path(), up));
    append(&dir.path().join("app.log"), known_log().as_bytes());
    d.scrape_until(Duration::from_secs(20), counted);
    assert_eq!(call_through(proxy, "POST", "/v1/image_to_video"), 429);
    assert_eq!(call_through(proxy, "GET", "/v1/tasks/task-gone-1"), 404);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_errors(d.addr).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the HTTP errors never reached the page"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let shot = dir.path().join("status.png");
    let dom = chromium(&format!("http://{}/", d.addr), dir.path(), &shot);
    assert!(
        dom.contains("<title>runway-exporter: recent failures</title>"),
        "{dom}"
    );
    // The summary: SAFETY.INPUT.TEXT first (most failures), then INTERNAL, each with the
    // table's advice and its counts over the last hour and day (read live: now).
    let safety = row(&dom, "<code>SAFETY.INPUT.TEXT</code></a>");
    for want in [
        "safety_input",
        "never retry",
        "lost",
        "<td class=\"n\">3</td><td class=\"n\">3</td>",
    ] {
        assert!(safety.contains(want), "{want} not in {safety}");
    }
    let internal = row(&dom, "<code>INTERNAL</code></a>");
    for want in [
        "retry after a delay",
        "refunded",
        "<td class=\"n\">1</td><td class=\"n\">1</td>",
    ] {
        assert!(internal.contains(want), "{want} not in {internal}");
    }
    assert!(dom.find("SAFETY.INPUT.TEXT") < dom.find("<code>INTERNAL</code>"));
    // The last failed tasks, newest first; the duplicate once; no success.
    let s3 = dom.find("task-safety-3").unwrap();
    let s1 = dom.find("task-safety-1").unwrap();
    assert!(s3 < s1, "newest first");
    assert_eq!(dom.matches("<code>task-safety-2</code>").count(), 1);
    assert!(dom.contains("task-internal-1") && !dom.contains("ok-1"));
    assert!(
        !dom.contains("<script"),
        "readable without JavaScript: there is none"
    );
    // The HTTP errors, newest first, with Runway's message.
    let quota = row(&dom, "Your daily task limit has been reached.");
    assert!(
        quota.contains("<code>/v1/image_to_video</code>") && quota.contains(">429<"),
        "{quota}"
    );
    assert!(dom.find("Task not found.") < dom.find("Your daily task limit"));
    // What a person sees: a real picture, not an empty page.
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&shot, docs.join("status-page.png")).unwrap();
    }
}

#[test]
fn the_failures_json_honours_basic_auth_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("page-pass", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  oncall: '{hash}'\n")).unwrap();
    let web = web.display().to_string();
    let args = ["--web.config.file", web.as_str()];
    let auth = format!(
        "Authorization: Basic {}\r\n",
        base64_encode(b"oncall:page-pass")
    );
    let d = Daemon::start(dir.path(), &config(dir.path(), ""), &args);
    append(&dir.path().join("app.log"), known_log().as_bytes());
    let failures = |addr| {
        let (head, body) = get_raw(addr, "/api/v1/failures", &auth).unwrap();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let json = loop {
        let j = failures(d.addr);
        if j["codes"].as_array().is_some_and(|c| c.len() == 2) {
            break j;
        }
        assert!(Instant::now() < deadline, "{j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for path in ["/", "/api/v1/failures"] {
        let (status, _) = get(d.addr, path).unwrap();
        assert_eq!(status, 401, "{path} without credentials");
        let (head, _) = get_raw(d.addr, path, "Authorization: Basic b25jYWxsOndyb25n\r\n").unwrap();
        assert!(
            head.starts_with("http/1.1 401"),
            "{path} with a wrong password: {head}"
        );
    }
    let codes = json["codes"].as_array().unwrap();
    assert_eq!(codes[0]["failure_code"], "SAFETY.INPUT.TEXT");
    assert_eq!(codes[0]["advice"], "never retry");
    assert_eq!(
        (
            codes[0]["last_hour"].as_u64(),
            codes[0]["last_day"].as_u64()
        ),
        (Some(3), Some(3))
    );
    let ids: Vec<&str> = codes[0]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["task-safety-3", "task-safety-2", "task-safety-1"]);
    assert_eq!(codes[1]["failure_code"], "INTERNAL");
    assert_eq!(codes[1]["retry"], "after_delay");

    // Committed with the counters: the same after kill -9 and a restart.
    d.signal("KILL");
    let mut d = d;
    d.wait_exit(Duration::from_secs(10));
    let again = Daemon::start(dir.path(), &config(dir.path(), ""), &args);
    let after = failures(again.addr);
    assert_eq!(after["codes"], json["codes"]);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A stand-in upstream on 127.0.0.1 answering every request with an HTTP error, by
/// path: `/v1/tasks/{n}` 503 `{"error":"flood n"}`; `/v1/html` 400 with markup in the
/// message; `/v1/big` 413 with a message of 1 MB; `/v1/bytes` 422 with bytes that are
/// not UTF-8 in the message.
fn erring_upstream() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    use bytes::Bytes;
    use http_body_util::Full;
    async fn answer(
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
        let path = req.uri().path().to_string();
        let (code, body): (u16, Vec<u8>) = match path.as_str() {
            "/v1/html" => (
                400,
                br#"{"error":"<script>alert(1)</script><b>bold</b>"}"#.to_vec(),
            ),
            "/v1/big" => (
                413,
                format!(r#"{{"error":"{}"}}"#, "<".repeat(1 << 20)).into_bytes(),
            ),
            "/v1/bytes" => (422, b"{\"error\":\"not \xff\xfe utf-8\"}".to_vec()),
            "/v1/tasks/task-gone-1" => (404, br#"{"error":"Task not found."}"#.to_vec()),
            "/v1/image_to_video" => (
                429,
                br#"{"error":"Your daily task limit has been reached."}"#.to_vec(),
            ),
            p => (
                503,
                format!(
                    r#"{{"error":"flood {}"}}"#,
                    p.trim_start_matches("/v1/tasks/")
                )
                .into_bytes(),
            ),
        };
        Ok(hyper::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap())
    }
    crate::mock_api::serve_http(answer)
}

/// The test configuration in `dir` with the proxy on, in front of `up`.
fn proxy_config(dir: &Path, up: std::net::SocketAddr) -> String {
    let proxy =
        format!("[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{up}\"\n");
    config(dir, &proxy)
}

/// A daemon started with `cfg`, and its proxy's address once it listens.
fn through_proxy(dir: &Path, cfg: &str) -> (Daemon, std::net::SocketAddr) {
    let mut d = Daemon::start(dir, cfg, &[]);
    let proxy = d.wait_log("Proxy listening.", Duration::from_secs(10))["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (d, proxy)
}

/// `GET path` through the proxy on a new connection; the answer's status.
fn get_through(proxy: std::net::SocketAddr, path: &str) -> u16 {
    call_through(proxy, "GET", path)
}

/// `method path` (no body) through the proxy on a new connection; the answer's status.
fn call_through(proxy: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out[..12])[9..12].parse().unwrap()
}

/// The `http_errors` of `/api/v1/failures`, newest first.
fn http_errors(addr: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let (status, body) = get(addr, "/api/v1/failures").unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["http_errors"].as_array().unwrap().clone()
}

#[test]
fn recent_http_errors_are_shown_escaped_bounded_and_kept_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _stop) = erring_upstream();
    let cfg = proxy_config(dir.path(), up);
    let (mut d, proxy) = through_proxy(dir.path(), &cfg);
    // A flood of 10,000 errors from 4 clients (observations the consumer cannot keep up
    // with are dropped and counted: the ring is bounded either way).
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..2500 {
                    assert_eq!(get_through(proxy, &format!("/v1/tasks/{t}-{i}")), 503);
                }
            });
        }
    });
    let flood = started.elapsed();
    eprintln!("10,000 error answers through the proxy from 4 clients: {flood:?}");
    assert!(flood < Duration::from_secs(120), "{flood:?}");
    // Then the hostile messages, one after the other: markup, 1 MB, not UTF-8.
    for (path, code) in [("/v1/html", 400), ("/v1/big", 413), ("/v1/bytes", 422)] {
        assert_eq!(get_through(proxy, path), code, "{path}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let errors = loop {
        let e = http_errors(d.addr);
        if e.first().is_some_and(|e| e["code"] == 422) {
            break e;
        }
        assert!(Instant::now() < deadline, "{e:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(errors.len(), 20, "the last 20, whatever the flood");
    let codes: Vec<u64> = errors.iter().map(|e| e["code"].as_u64().unwrap()).collect();
    assert_eq!(&codes[..3], [422, 413, 400], "newest first");
    assert!(codes[3..].iter().all(|c| *c == 503));
    assert_eq!(errors[0]["message"], "not \u{fffd}\u{fffd} utf-8");
    // 1 MB is more than the proxy keeps of an answer: listed without its message.
    assert_eq!(errors[1]["message"], "");
    assert_eq!(errors[2]["message"], "<script>alert(1)</script><b>bold</b>");
    assert_eq!(errors[3]["endpoint"], "/v1/tasks/{id}");
    assert!(errors[3]["message"].as_str().unwrap().starts_with("flood "));
    // The page: escaped, 20 rows, no markup of the message's.
    let (status, html) = get(d.addr, "/").unwrap();
    assert_eq!(status, 200);
    let section = &html[html.find("id=\"http-errors\"").expect("the section")..];
    assert_eq!(section.matches("<tr><td>").count(), 20, "{section}");
    assert!(section.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"));
    assert!(!html.contains("<script") && !html.contains("<b>"));
    assert!(html.len() < 64 * 1024, "{} bytes", html.len());

    // Committed with the counters: the same after kill -9 and a restart.
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(10));
    let again = Daemon::start(dir.path(), &cfg, &[]);
    assert_eq!(http_errors(again.addr), errors);
}
