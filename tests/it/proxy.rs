//! The proxy as a forwarder: what goes up and comes back unchanged, what is refused,
//! bodies that stream, an upstream that fails, a client that goes away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::harness::{append, config, Daemon};
use crate::mock_api::serve_http;

/// A body of `n` bytes of `x`, sent in 64 KiB frames, of no stated length.
struct Repeat(usize);

impl hyper::body::Body for Repeat {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        let n = self.0.min(64 * 1024);
        self.0 -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}

/// What the stand-in upstream saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    method: String,
    pub(crate) target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    body_len: usize,
}

/// A stand-in upstream on 127.0.0.1 that records every request and answers by path:
/// `/v1/big?n` streams n bytes; `/v1/redirect` is a 307 elsewhere; `/v1/never` never
/// answers; `/v1/err/{code}[?should_retry=v]` answers that error code (with
/// `x-should-retry: v`); `/v1/tasks/{id}` answers as Runway does (see [`task_answer`]);
/// anything else echoes with a 201 and headers of its own.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Set to true: the held requests (`/v1/tasks/hold-*`) are answered.
    release: Arc<tokio::sync::watch::Sender<bool>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type UpBody = Either<Full<Bytes>, Repeat>;

async fn up_answer(
    (seen, mut release): (Arc<Mutex<Vec<Seen>>>, tokio::sync::watch::Receiver<bool>),
    req: Request<Incoming>,
) -> Result<Response<UpBody>, hyper::Error> {
    let (parts, mut body) = req.into_parts();
    let target = parts.uri.to_string();
    if target.starts_with("/v1/never") {
        std::future::pending::<()>().await;
    }
    // Read the body frame by frame, keeping only its first KiB.
    let (mut head, mut len) = (Vec::new(), 0usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len();
            let room = 1024usize.saturating_sub(head.len());
            head.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: head,
        body_len: len,
    });
    if target.starts_with("/v1/tasks/hold-") {
        let _ = release.wait_for(|r| *r).await;
    }
    let mut r = Response::builder();
    if let Some(rest) = target.strip_prefix("/v1/err/") {
        // An error answer of the code named, with `x-should-retry` when asked.
        let (code, query) = rest.split_once('?').unwrap_or((rest, ""));
        r = r
            .status(code.parse::<u16>().unwrap())
            .header("content-type", "application/json");
        if let Some(v) = query.strip_prefix("should_retry=") {
            r = r.header("x-should-retry", v);
        }
        let body = Bytes::from_static(br#"{"error":"stand-in error"}"#);
        return Ok(r.body(Either::Left(Full::new(body))).unwrap());
    }
    if let Some(body) = create_answer(&target, len) {
        r = r.status(200).header("content-type", "application/json");
        return Ok(r.body(Either::Left(Full::new(Bytes::from(body)))).unwrap());
    }
    let task = target.strip_prefix("/v1/tasks/");
    if let Some((code, body)) = task.and_then(|id| task_answer(parts.method.as_str(), id)) {
        r = r
            .status(code)
            .header("content-type", "application/json; charset=utf-8");
        return Ok(r.body(Either::Left(Full::new(Bytes::from(body)))).unwrap());
    }
    if let Some(n) = target.strip_prefix("/v1/big?") {
        return Ok(r
            .status(200)
            .body(Either::Right(Repeat(n.parse().unwrap())))
            .unwrap());
    }
    if target == "/v1/redirect" {
        r = r
            .status(307)
            .header("location", "http://elsewhere.example/v1/x");
        return Ok(r.body(Either::Left(Full::new(Bytes::new()))).unwrap());
    }
    let answer = format!("{{\"received\":{len}}}");
    r = r
        .status(201)
        .header("content-type", "application/json")
        .header("x-request-id", "req-1")
        .header("set-cookie", "a=1")
        .header("set-cookie", "b=2")
        .header("connection", "x-hop-answer")
        .header("x-hop-answer", "must not pass")
        .header("keep-alive", "timeout=5");
    Ok(r.body(Either::Left(Full::new(Bytes::from(answer))))
        .unwrap())
}

/// Runway's answer to a task request, by the id's prefix: `DELETE` 204; `GET` `ok-`
/// SUCCEEDED (indented over lines, as some SDK dumps are), `fail-` FAILED with a code,
/// `run-` RUNNING, `gone-` 404, `hold-` SUCCEEDED once released
/// ([`Upstream::release`]), `liar-` another task's record, `anon-` a record without an
/// id. Other ids are echoed as other paths.
fn task_answer(method: &str, id: &str) -> Option<(u16, String)> {
    let created = "2026-12-06T08:00:00.000Z";
    let prefix = id.split('-').next().unwrap_or("");
    if !["ok", "fail", "run", "gone", "liar", "anon", "hold"].contains(&prefix) {
        return None;
    }
    let task = match (method, prefix) {
        ("DELETE", _) => return Some((204, String::new())),
        (_, "ok" | "hold") => {
            serde_json::json!({"id": id, "status": "SUCCEEDED", "createdAt": created,
            "output": ["https://x.example/v.mp4"], "cost": {"credits": 25}})
        }
        (_, "fail") => serde_json::json!({"id": id, "status": "FAILED", "createdAt": created,
            "failure": "moderated", "failureCode": "SAFETY.INPUT.TEXT"}),
        (_, "run") => serde_json::json!({"id": id, "status": "RUNNING", "createdAt": created,
            "progress": 0.5, "estimatedCost": {"credits": 50}}),
        (_, "liar") => serde_json::json!({"id": "someone-else", "status": "SUCCEEDED",
            "createdAt": created, "cost": {"credits": 25}}),
        (_, "anon") => serde_json::json!({"status": "FAILED", "failureCode": "INTERNAL"}),
        _ => return Some((404, r#"{"error":"Task not found"}"#.into())),
    };
    Some((200, serde_json::to_string_pretty(&task).unwrap()))
}

/// Runway's answer to a create call on `/v1/text_to_video` (a task id and its estimate)
/// and on `/v1/generate/video` (the model router: the model it chose); the id tells the
/// request body's size.
fn create_answer(target: &str, len: usize) -> Option<String> {
    let answer = match target {
        "/v1/text_to_video" => {
            serde_json::json!({"id": format!("new-{len}"), "estimatedCost": {"credits": 40}})
        }
        "/v1/generate/video" => {
            serde_json::json!({"id": format!("routed-{len}"), "routing": {"model": "veo3.1"}})
        }
        _ => return None,
    };
    Some(answer.to_string())
}

impl Upstream {
    pub(crate) fn start() -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (release, release_rx) = tokio::sync::watch::channel(false);
        let s = seen.clone();
        let (addr, stop_tx) =
            serve_http(move |req| up_answer((s.clone(), release_rx.clone()), req));
        Upstream {
            addr,
            seen,
            release: Arc::new(release),
            _stop: stop_tx,
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Answers the held requests, and those to come.
    pub(crate) fn release(&self) {
        self.release.send_replace(true);
    }
}

/// A daemon with the proxy on, in front of `upstream`; returns it and the proxy's address.
pub(crate) fn proxy_daemon(
    dir: &std::path::Path,
    upstream: &str,
    extra: &str,
) -> (Daemon, SocketAddr) {
    let cfg = config(
        dir,
        &format!(
            "[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{extra}"
        ),
    );
    let mut d = Daemon::start(dir, &cfg, &[]);
    let addr = proxy_address(&mut d);
    (d, addr)
}

/// The proxy's address, once the daemon says it listens.
pub(crate) fn proxy_address(d: &mut Daemon) -> SocketAddr {
    d.wait_log("Proxy listening.", Duration::from_secs(10))["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends raw bytes on a new connection and reads the whole answer (the request asks
/// for `Connection: close`).
pub(crate) fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(seen: &'a Seen, name: &str) -> Vec<&'a str> {
    seen.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn requests_and_answers_pass_unchanged_but_for_hop_by_hop_headers() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (_d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    let body = br#"{"model":"gen4_turbo","promptText":"a cat","ratio":"1280:720"}"#;
    let request = format!(
        "POST /v1/image_to_video?a=1&b=%20x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer key_s3cret\r\nX-Runway-Version: 2024-11-06\r\nX-Stainless-Retry-Count: 0\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close, X-Hop-Request\r\nX-Hop-Request: must not pass\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
        body.len()
    );
    let answer = raw(proxy, &[request.as_bytes(), body].concat());
    let (head, answer_body) = answer.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 201 created\r\n"), "{head}");
    assert!(head.contains("\r\nx-request-id: req-1"), "{head}");
    assert!(
        head.contains("\r\nset-cookie: a=1") && head.contains("\r\nset-cookie: b=2"),
        "{head}"
    );
    assert!(
        !head.contains("x-hop-answer: must") && !head.contains("keep-alive"),
        "{head}"
    );
    assert_eq!(answer_body, format!("{{\"received\":{}}}", body.len()));

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        (s.method.as_str(), s.target.as_str()),
        ("POST", "/v1/image_to_video?a=1&b=%20x")
    );
    assert_eq!(s.body, body);
    assert_eq!(header(s, "authorization"), ["Bearer key_s3cret"]);
    assert_eq!(header(s, "x-runway-version"), ["2024-11-06"]);
    assert_eq!(header(s, "x-stainless-retry-count"), ["0"]);
    assert_eq!(header(s, "host"), [up.addr.to_string().as_str()]);
    for hop in ["x-hop-request", "keep-alive", "proxy-authorization"] {
        assert!(
            header(s, hop).is_empty(),
            "{hop} was forwarded: {:?}",
            s.headers
        );
    }
}

#[test]
fn it_is_never_an_open_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (_d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    let status = |request: String| {
        raw(proxy, request.as_bytes())
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let close = "Connection: close\r\n\r\n";
    assert!(status(format!(
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n{close}"
    ))
    .contains(" 405 "));
    assert!(status(format!(
        "GET http://{}/v1/tasks/x HTTP/1.1\r\nHost: x\r\n{close}",
        up.addr
    ))
    .contains(" 400 "));
    assert!(status(format!(
        "GET http://evil.example/v1/tasks/x HTTP/1.1\r\nHost: evil.example\r\n{close}"
    ))
    .contains(" 400 "));
    assert!(status(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}")).contains(" 404 "));
    assert!(status(format!("GET /v1/../admin HTTP/1.1\r\nHost: x\r\n{close}")).contains(" 400 "));
    assert!(status(format!(
        "GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n{close}"
    ))
    .contains(" 400 "));
    // A Host header naming another host changes nothing: the request goes upstream.
    assert!(status(format!(
        "GET /v1/tasks/x HTTP/1.1\r\nHost: evil.example\r\n{close}"
    ))
    .contains(" 201 "));
    let seen = up.seen();
    assert_eq!(
        seen.len(),
        1,
        "only the last request may reach the upstream: {seen:?}"
    );
    assert_eq!(header(&seen[0], "host"), [up.addr.to_string().as_str()]);
    // Redirects go back to the client, not followed.
    let answer = raw(
        proxy,
        format!("GET /v1/redirect HTTP/1.1\r\nHost: x\r\n{close}").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("location: http://elsewhere.example/v1/x"));
    assert_eq!(up.seen().len(), 2);
}

#[test]
fn an_upstream_that_fails_gets_the_answers_the_sdks_retry() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_d, proxy) = proxy_daemon(dir.path(), &format!("http://{closed}"), "");
    let answer = raw(
        proxy,
        b"GET /v1/tasks/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("{\"error\":"), "{answer}");

    let dir2 = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (_d2, proxy2) = proxy_daemon(
        dir2.path(),
        &format!("http://{}", up.addr),
        "response_timeout = \"300ms\"\n",
    );
    let answer = raw(
        proxy2,
        b"GET /v1/never HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
}

/// An egress proxy on 127.0.0.1 that sends the head of each request it gets (a CONNECT)
/// to the returned channel, then refuses it with a 502; its address.
fn egress_proxy() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            // Told before it answers: whoever gets the 502 can tell whether it came here.
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (addr, rx)
}

/// Behind a firewall whose way out is an HTTP proxy (`HTTPS_PROXY`, as the Python SDK and
/// the API source read it), the proxy's upstream connections go through it too: a CONNECT
/// to the upstream's host and port with the egress proxy's credentials, which no log
/// shows; a tunnel it refuses is a warning. A loopback upstream is reached directly.
/// (`NO_PROXY` and the rest: the unit tests of `proxy/egress.rs`.)
#[test]
fn the_upstream_is_reached_through_the_egress_proxy_the_environment_names() {
    let (egress, heads) = egress_proxy();
    let proxied = |dir: &std::path::Path, upstream: &str| {
        let cfg = config(
            dir,
            &format!(
                "[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n"
            ),
        );
        let https_proxy = format!("http://user:s3cret@{egress}");
        let env = [("HTTPS_PROXY", https_proxy.as_str()), ("NO_PROXY", "")];
        let mut d = Daemon::start_env(dir, &cfg, &[], &env);
        let addr = proxy_address(&mut d);
        (d, addr)
    };
    let get = b"GET /v1/tasks/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    let dir = tempfile::tempdir().unwrap();
    // A name no one looks up: the egress proxy would.
    let (mut d, proxy) = proxied(dir.path(), "https://upstream.test:9");
    // The tunnel refused: the answer the SDKs retry.
    assert!(raw(proxy, get).starts_with("HTTP/1.1 502"));
    let head = heads
        .try_recv()
        .expect("the request did not go through the egress proxy");
    assert!(
        head.starts_with("CONNECT upstream.test:9 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-authorization: basic dxnlcjpzm2nyzxq="),
        "{head}"
    );
    let said = d.wait_log(
        "Proxy: the upstream is reached through the egress proxy named by HTTPS_PROXY or ALL_PROXY (a CONNECT tunnel).",
        Duration::from_secs(5),
    );
    assert_eq!(said["egress_proxy"], format!("http://{egress}"));
    let refused = d.wait_log(
        "Proxy: the egress proxy did not open a tunnel to the upstream (check its address, the credentials in HTTPS_PROXY, and that it allows CONNECT to the upstream's port); requests that need a new connection get a 502 until it does.",
        Duration::from_secs(5),
    );
    assert_eq!(refused["level"], "WARN");
    let logs = serde_json::to_string(d.logs()).unwrap();
    for secret in ["s3cret", "user:", "dXNlcjpzM2NyZXQ"] {
        assert!(!logs.contains(secret), "{secret} in {logs}");
    }

    let dir = tempfile::tempdir().unwrap();
    let (_d, proxy) = proxied(dir.path(), "https://127.0.0.1:9");
    // Straight to port 9 on loopback, where nothing listens.
    assert!(raw(proxy, get).starts_with("HTTP/1.1 502"));
    assert!(
        heads.try_recv().is_err(),
        "a loopback upstream went through the egress proxy"
    );
}

#[test]
fn a_client_going_away_cancels_the_upstream_request() {
    let dir = tempfile::tempdir().unwrap();
    // A raw upstream: it reads the request's headers, never answers, and reports when
    // the proxy closes the connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = got_tx.send(());
                }
            }
        }
        closed_tx.send(()).unwrap();
    });
    let (_d, proxy) = proxy_daemon(dir.path(), &format!("http://{upstream}"), "");
    let mut client = TcpStream::connect(proxy).unwrap();
    client
        .write_all(b"GET /v1/tasks/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Once the upstream has the request, the client leaves.
    got_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the request never reached the upstream");
    drop(client);
    closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream connection was not closed after the client went away");
}

#[test]
fn bodies_stream_both_ways_with_memory_flat_in_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    const SIZE: usize = 24 << 20;
    let before = d.peak_rss();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (uploaded, downloaded) = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        // A create call carrying a data URI of 24 MiB, of no stated length (chunked).
        let up_req = Request::post("/v1/video_to_video")
            .header("host", "x")
            .body(Repeat(SIZE))
            .unwrap();
        let answer = sender.send_request(up_req).await.unwrap();
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        let down_req = Request::get(format!("/v1/big?{SIZE}"))
            .header("host", "x")
            .body(Repeat(0))
            .unwrap();
        let mut body = sender.send_request(down_req).await.unwrap().into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            n += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
        }
        (String::from_utf8(text.to_vec()).unwrap(), n)
    });
    assert_eq!(uploaded, format!("{{\"received\":{SIZE}}}"));
    assert_eq!(downloaded, SIZE);
    assert_eq!(up.seen()[0].body_len, SIZE);
    let grew = d.peak_rss().saturating_sub(before);
    assert!(
        grew < 8 << 20,
        "peak RSS grew {grew} bytes passing 48 MiB of bodies"
    );
}

#[test]
fn applications_on_other_hosts_can_reach_it_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let pki = crate::web::pki();
    let (cert, key) = (dir.path().join("proxy.crt"), dir.path().join("proxy.key"));
    std::fs::write(&cert, &pki.server.0).unwrap();
    std::fs::write(&key, &pki.server.1).unwrap();
    let tls = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (_d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), &tls);
    let status = crate::web::https_get_path(
        proxy,
        &pki.ca_pem,
        None,
        Some("Bearer key_tls"),
        "/v1/tasks/t1",
    );
    assert_eq!(status, Ok(201));
    assert_eq!(header(&up.seen()[0], "authorization"), ["Bearer key_tls"]);
    // Plain HTTP on the TLS port gets no answer from the API.
    let plain = raw(
        proxy,
        b"GET /v1/tasks/t1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(!plain.contains("201"), "{plain}");
    assert_eq!(up.seen().len(), 1);
}

/// `method path` through the proxy with the application's key; the answer's status.
pub(crate) fn call(proxy: SocketAddr, method: &str, path: &str) -> u16 {
    let answer = raw(
        proxy,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nX-Runway-Version: 2024-11-06\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    answer[9..12].parse().unwrap()
}

/// The application's API key: never in a log line or a metric.
const KEY: &str = "key_0bserve_s3cret_9f2c";

#[test]
fn task_answers_through_the_proxy_are_counted_once_beside_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (mut d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    // The application polls a task to its end (its terminal answer twice), sees one
    // fail, cancels one that runs, and asks for one that is gone.
    for (method, path, code) in [
        ("GET", "/v1/tasks/ok-1", 200),
        ("GET", "/v1/tasks/ok-1", 200),
        ("GET", "/v1/tasks/fail-1", 200),
        ("GET", "/v1/tasks/run-1", 200),
        ("DELETE", "/v1/tasks/run-1", 204),
        ("GET", "/v1/tasks/gone-1", 404),
        ("POST", "/v1/made_up_path", 201),
        // An old task the exporter never saw, deleted: a request, not a cancellation.
        ("DELETE", "/v1/tasks/ok-old", 204),
        // Observations are applied in order: once this one is counted, so is the DELETE.
        ("GET", "/v1/tasks/ok-1", 200),
    ] {
        assert_eq!(call(proxy, method, path), code, "{method} {path}");
    }
    let tasks_endpoint = r#"endpoint="/v1/tasks/{id}""#;
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        crate::harness::sum(m, "runway_api_requests_total", &[]) == 9.0
            && crate::harness::sum(m, "runway_tasks_total", &[]) == 3.0
    });
    let requests = |method: &str, code: &str| {
        let with = [
            tasks_endpoint,
            &format!("method=\"{method}\""),
            &format!("code=\"{code}\""),
        ];
        crate::harness::sum(&m, "runway_api_requests_total", &with)
    };
    assert_eq!(requests("GET", "200"), 5.0, "{m}");
    assert_eq!(requests("DELETE", "204"), 2.0, "{m}");
    assert_eq!(requests("GET", "404"), 1.0, "{m}");
    let other = r#"runway_api_requests_total{code="201",endpoint="other",method="POST"}"#;
    assert_eq!(crate::harness::sample(&m, other), Some(1.0), "{m}");
    let latency = format!("runway_api_request_duration_seconds_count{{{tasks_endpoint}}}");
    assert_eq!(crate::harness::sample(&m, &latency), Some(8.0), "{m}");
    let tasks = |status: &str| {
        crate::harness::sum(&m, "runway_tasks_total", &[&format!("status=\"{status}\"")])
    };
    assert_eq!(
        (tasks("SUCCEEDED"), tasks("FAILED"), tasks("CANCELLED")),
        (1.0, 1.0, 1.0),
        "{m}"
    );
    // The task deleted while seen RUNNING is charged its estimate (50), marked so.
    let cancelled = r#"status="CANCELLED""#;
    assert_eq!(
        crate::harness::sum(&m, "runway_credits_charged_total", &[cancelled]),
        50.0,
        "{m}"
    );
    let lost = r#"failure_code="SAFETY.INPUT.TEXT""#;
    assert_eq!(
        crate::harness::sum(&m, "runway_task_failures_total", &[lost]),
        1.0,
        "{m}"
    );

    // The application's log names the same task: still counted once.
    append(
        &dir.path().join("app.log"),
        b"{\"id\":\"ok-1\",\"status\":\"SUCCEEDED\",\"model\":\"gen4_turbo\"}\n",
    );
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        let dup = r#"runway_exporter_records_total{result="duplicate",source="file"}"#;
        crate::harness::sample(m, dup) == Some(1.0)
    });
    assert_eq!(
        crate::harness::sum(&m, "runway_tasks_total", &[r#"status="SUCCEEDED""#]),
        1.0,
        "{m}"
    );

    // The key went up to the API, and nowhere else.
    assert!(up
        .seen()
        .iter()
        .all(|s| header(s, "authorization") == [format!("Bearer {KEY}")]));
    assert!(!m.contains("0bserve_s3cret"), "the key is in /metrics");
    let logs = serde_json::to_string(d.logs()).unwrap();
    assert!(
        !logs.contains("0bserve_s3cret"),
        "the key is in the logs: {logs}"
    );
    let state =
        std::fs::read(dir.path().join("state").join("runway-exporter.state")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&state).contains("0bserve_s3cret"));
}

#[test]
fn the_proxys_request_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let upstream = format!("http://{}", up.addr);
    let series = r#"runway_api_requests_total{code="200",endpoint="/v1/tasks/{id}",method="GET"}"#;
    {
        let (mut d, proxy) = proxy_daemon(dir.path(), &upstream, "");
        for _ in 0..3 {
            assert_eq!(call(proxy, "GET", "/v1/tasks/run-2"), 200);
        }
        let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
            crate::harness::sample(m, series) == Some(3.0)
        });
        assert_eq!(crate::harness::sample(&m, series), Some(3.0), "{m}");
        d.signal("TERM");
        assert!(d.wait_exit(Duration::from_secs(20)).success());
    }
    let (d, proxy) = proxy_daemon(dir.path(), &upstream, "");
    assert_eq!(call(proxy, "GET", "/v1/tasks/run-2"), 200);
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        crate::harness::sample(m, series) == Some(4.0)
    });
    assert_eq!(crate::harness::sample(&m, series), Some(4.0), "{m}");
}

#[test]
fn create_calls_are_counted_by_endpoint_and_model_whatever_the_body_size() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    let create = |path: &str, body: &[u8]| {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let answer = raw(proxy, &[head.as_bytes(), body].concat());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    };
    // A 20 MB data URI before the model.
    let mut big = br#"{"promptImage":"data:image/png;base64,"#.to_vec();
    big.extend(std::iter::repeat_n(b'A', 20 * 1024 * 1024));
    big.extend(br#"","model":"gen4_turbo","promptText":"a cat"}"#);
    create("/v1/text_to_video", &big);
    create("/v1/text_to_video", br#"{"model":"veo3","promptText":"x"}"#);
    create("/v1/text_to_video", br#"{"promptText":"no model"}"#);
    create(
        "/v1/generate/video",
        br#"{"promptText":"the router picks"}"#,
    );
    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        crate::harness::sum(m, "runway_tasks_created_total", &[]) == 4.0
    });
    let created = |endpoint: &str, model: &str| {
        let series =
            format!("runway_tasks_created_total{{endpoint=\"{endpoint}\",model=\"{model}\"}}");
        crate::harness::sample(&m, &series)
    };
    assert_eq!(created("/v1/text_to_video", "gen4_turbo"), Some(1.0), "{m}");
    assert_eq!(created("/v1/text_to_video", "veo3"), Some(1.0), "{m}");
    assert_eq!(created("/v1/text_to_video", "unknown"), Some(1.0), "{m}");
    assert_eq!(created("/v1/generate/video", "veo3.1"), Some(1.0), "{m}");
    // The 20 MB body went up whole.
    assert!(up.seen().iter().any(|s| s.body_len == big.len()));
    assert!(!m.contains("0bserve_s3cret"));
}

#[test]
fn a_task_answer_naming_another_task_or_none_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let (mut d, proxy) = proxy_daemon(dir.path(), &format!("http://{}", up.addr), "");
    for path in [
        "/v1/tasks/liar-1",
        "/v1/tasks/anon-1",
        "/v1/tasks/liar-1",
        "/v1/tasks/ok-3",
    ] {
        assert_eq!(call(proxy, "GET", path), 200, "{path}");
    }
    let rejected = r#"runway_exporter_parse_errors_total{reason="other_task_id",source="proxy"}"#;
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        crate::harness::sum(m, "runway_api_requests_total", &[]) == 4.0
            && crate::harness::sample(m, rejected) == Some(3.0)
            && crate::harness::sum(m, "runway_tasks_total", &[]) == 1.0
    });
    assert_eq!(crate::harness::sample(&m, rejected), Some(3.0), "{m}");
    let records = |result: &str| {
        let series =
            format!("runway_exporter_records_total{{result=\"{result}\",source=\"proxy\"}}");
        crate::harness::sample(&m, &series)
    };
    assert_eq!(
        (records("rejected"), records("counted")),
        (Some(3.0), Some(1.0)),
        "{m}"
    );
    // Only the task asked about and answered for is counted.
    assert_eq!(
        crate::harness::sum(&m, "runway_tasks_total", &[]),
        1.0,
        "{m}"
    );
    assert_eq!(
        crate::harness::sum(&m, "runway_tasks_total", &[r#"status="SUCCEEDED""#]),
        1.0,
        "{m}"
    );
    // Logged once (the next within 10 s are counted as suppressed), without the key.
    let warned = d.wait_log(
        "Line rejected; counted in runway_exporter_parse_errors_total.",
        Duration::from_secs(5),
    );
    assert_eq!(warned["reason"], "other_task_id", "{warned}");
    assert_eq!(warned["source"], "proxy", "{warned}");
    let logs = serde_json::to_string(d.logs()).unwrap();
    assert_eq!(logs.matches("other_task_id").count(), 1, "{logs}");
}

/// Requests in progress when SIGTERM arrives finish, and what the proxy saw of them is
/// in the last commit: exact counts after a restart. The requests are held by the
/// upstream until the daemon has either closed its metrics port (which it does after
/// the last commit: the old shutdown made it while requests were in progress) or said
/// it drains the proxy.
#[test]
fn what_the_proxy_saw_before_sigterm_is_in_the_last_commit() {
    const N: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let upstream = format!("http://{}", up.addr);
    // No periodic commit while the requests are held: one at start, one at the end.
    let cfg = format!(
        "[state]\ndir = \"{}\"\ncommit_interval = \"1h\"\nshutdown_grace = \"20s\"\n[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n",
        dir.path().join("state").display()
    );
    let start = |dir: &std::path::Path| {
        let mut d = Daemon::start(dir, &cfg, &[]);
        let addr = proxy_address(&mut d);
        (d, addr)
    };
    let (mut d, proxy) = start(dir.path());
    let clients: Vec<_> = (0..N)
        .map(|i| std::thread::spawn(move || call(proxy, "GET", &format!("/v1/tasks/hold-{i}"))))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while up.seen().len() < N {
        assert!(
            std::time::Instant::now() < deadline,
            "{} requests arrived",
            up.seen().len()
        );
        // A poll interval, not a synchronisation: the loop ends on the condition.
        std::thread::sleep(Duration::from_millis(10));
    }
    d.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "neither the last commit nor a drain"
        );
        let drains = d.logs().iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Proxy: draining"))
        });
        if drains || crate::harness::get(d.addr, "/-/healthy").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    up.release();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert!(d.wait_exit(Duration::from_secs(30)).success());
    drop(d);

    let (d, _) = start(dir.path());
    let m = d.metrics();
    let series = r#"runway_api_requests_total{code="200",endpoint="/v1/tasks/{id}",method="GET"}"#;
    assert_eq!(crate::harness::sample(&m, series), Some(N as f64), "{m}");
    assert_eq!(
        crate::harness::sum(&m, "runway_tasks_total", &[r#"status="SUCCEEDED""#]),
        N as f64,
        "{m}"
    );
}

/// Every error answer is counted with its retry advice (Runway's table, else the SDKs'
/// rule, the `x-should-retry` header first), the proxy's own 504 included, and the
/// counts survive a restart.
#[test]
fn error_answers_are_counted_with_their_retry_advice_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    let upstream = format!("http://{}", up.addr);
    // 1 s: room for every answer on a loaded machine (300 ms left little); `/v1/never`
    // still runs into it.
    let extra = "response_timeout = \"1s\"\n";
    let calls = [
        ("/v1/err/400", 400),
        ("/v1/err/401", 401),
        ("/v1/err/405", 405),
        ("/v1/err/429", 429),
        ("/v1/err/429", 429),
        ("/v1/err/502", 502),
        ("/v1/err/503", 503),
        ("/v1/err/408", 408),
        ("/v1/err/409", 409),
        ("/v1/err/500", 500),
        ("/v1/err/422", 422),
        ("/v1/err/400?should_retry=true", 400),
        ("/v1/err/503?should_retry=false", 503),
        ("/v1/tasks/gone-2", 404),
        ("/v1/tasks/ok-2", 200),
        // The proxy's own answer: the upstream did not answer in time.
        ("/v1/never", 504),
    ];
    let want = [
        ("other", "400", "never", 1.0),
        ("other", "401", "never", 1.0),
        ("other", "405", "never", 1.0),
        ("other", "429", "after_delay", 2.0),
        ("other", "502", "after_delay", 1.0),
        ("other", "503", "after_delay", 1.0),
        ("other", "408", "after_delay", 1.0),
        ("other", "409", "after_delay", 1.0),
        ("other", "500", "after_delay", 1.0),
        ("other", "422", "never", 1.0),
        ("other", "400", "after_delay", 1.0),
        ("other", "503", "never", 1.0),
        ("/v1/tasks/{id}", "404", "never", 1.0),
        ("other", "504", "after_delay", 1.0),
    ];
    let check = |m: &str| {
        for (endpoint, code, retry, n) in want {
            let series = format!(
                "runway_api_errors_total{{code=\"{code}\",endpoint=\"{endpoint}\",retry=\"{retry}\"}}"
            );
            assert_eq!(crate::harness::sample(m, &series), Some(n), "{series}\n{m}");
        }
        assert_eq!(
            crate::harness::sum(m, "runway_api_errors_total", &[]),
            15.0,
            "{m}"
        );
    };
    {
        let (mut d, proxy) = proxy_daemon(dir.path(), &upstream, extra);
        for (path, code) in calls {
            assert_eq!(call(proxy, "GET", path), code, "{path}");
        }
        let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
            crate::harness::sum(m, "runway_api_requests_total", &[]) == calls.len() as f64
        });
        check(&m);
        d.signal("TERM");
        assert!(d.wait_exit(Duration::from_secs(20)).success());
    }
    let (d, _) = proxy_daemon(dir.path(), &upstream, extra);
    check(&d.metrics());
}
