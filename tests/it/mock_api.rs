//! A mock Runway API on 127.0.0.1 for the API source's tests: scripted task timelines,
//! the key and version checks of the real API, and faults on demand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// One answer of a task's timeline.
#[derive(Debug, Clone)]
pub enum Step {
    /// 200 with the task in this status (and failure code, for FAILED), in the older
    /// shape without `cost`.
    Task(&'static str, Option<&'static str>),
    /// 200 with this body, as it is.
    Json(&'static str),
    /// An error status with `{"error": ...}`.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// 503 with `Retry-After: secs`.
    UnavailableRetryAfter(u64),
    /// This error status with `{"error": ...}` and these headers, as they are
    /// (`retry-after-ms`, `retry-after`, `x-should-retry`).
    Headers(u16, &'static [(&'static str, &'static str)]),
    /// 200 with a body that is not JSON.
    Malformed,
    /// The connection is closed without an answer.
    Reset,
    /// An answer slower than the client's timeout, then RUNNING.
    Slow(Duration),
}

#[derive(Default)]
struct State {
    key: String,
    timelines: HashMap<String, Vec<Step>>,
    served: HashMap<String, usize>,
    /// Every request: path, when, the Authorization header as sent.
    requests: Vec<(String, Instant, String)>,
    /// Bodies of the usage requests.
    usage_bodies: Vec<serde_json::Value>,
    /// Requests being answered now, and the most at once.
    active: usize,
    max_active: usize,
    /// When the mock started: every task's `createdAt`, less its age if it has one.
    started: jiff::Timestamp,
    created_ago: HashMap<String, Duration>,
    /// Answers served, in order, to the next requests of a path (before its usual one).
    faults: HashMap<String, std::collections::VecDeque<Step>>,
    /// The tasks the next create calls (any other `POST`) make, in order: the id, its
    /// estimate and its timeline.
    creates: std::collections::VecDeque<(String, f64, Vec<Step>)>,
}

/// Counts a request as being answered until dropped.
struct Active(Arc<Mutex<State>>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.lock().unwrap().active -= 1;
    }
}

/// The running mock.
pub struct MockApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// What `GET /v1/organization` answers: one model with limits, one without (`null`).
pub const ORGANIZATION: &str = r#"{"creditBalance":12345,"tier":{"maxMonthlyCreditSpend":100000,"models":{"gen4_turbo":{"maxConcurrentGenerations":2,"maxDailyGenerations":200},"veo3":{"maxConcurrentGenerations":null,"maxDailyGenerations":null}}},"usage":{"models":{"gen4_turbo":{"dailyGenerations":17}}}}"#;

/// `POST /v1/organization/usage` for the day asked (`startDate`): gen4_turbo used 150
/// credits, veo3 was refunded 40 more than it was charged, and the day before is there too.
fn usage_answer(body: &serde_json::Value) -> String {
    let day = body["startDate"].as_str().unwrap_or("");
    format!(
        r#"{{"models":["gen4_turbo","veo3"],"results":[{{"date":"1999-01-01","usedCredits":[{{"model":"gen4_turbo","amount":999}}]}},{{"date":"{day}","usedCredits":[{{"model":"gen4_turbo","amount":150}},{{"model":"veo3","amount":-40}}]}}]}}"#
    )
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (auth, version) = (header("authorization"), header("x-runway-version"));
    let post = req.method() == hyper::Method::POST;
    let usage_body = if post {
        use http_body_util::BodyExt;
        let bytes = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Some(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    } else {
        None
    };

    let _active = {
        let mut s = state.lock().unwrap();
        s.active += 1;
        s.max_active = s.max_active.max(s.active);
        Active(state.clone())
    };
    let step = {
        let mut s = state.lock().unwrap();
        s.requests
            .push((path.clone(), Instant::now(), auth.clone()));
        if version != "2024-11-06" {
            return Ok(json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"Invalid or missing X-Runway-Version header."}"#.into(),
            ));
        }
        if auth != format!("Bearer {}", s.key) {
            return Ok(json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"Invalid API key."}"#.into(),
            ));
        }
        let fault = s.faults.get_mut(&path).and_then(|f| f.pop_front());
        if post && path != "/v1/organization/usage" && fault.is_none() {
            let Some((id, credits, timeline)) = s.creates.pop_front() else {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"No task."}"#.into(),
                ));
            };
            s.timelines.insert(id.clone(), timeline);
            let body = format!(r#"{{"id":"{id}","estimatedCost":{{"credits":{credits}}}}}"#);
            return Ok(json(StatusCode::OK, body));
        }
        if let Some(step) = fault {
            (String::new(), step, String::new())
        } else if path == "/v1/organization" {
            return Ok(json(StatusCode::OK, ORGANIZATION.into()));
        } else {
            if let Some(body) = usage_body {
                let answer = usage_answer(&body);
                s.usage_bodies.push(body);
                return Ok(json(StatusCode::OK, answer));
            }
            let Some(id) = path.strip_prefix("/v1/tasks/").map(str::to_string) else {
                return Ok(json(
                    StatusCode::NOT_FOUND,
                    r#"{"error":"Not found."}"#.into(),
                ));
            };
            let Some(timeline) = s.timelines.get(&id).cloned() else {
                return Ok(json(
                    StatusCode::NOT_FOUND,
                    r#"{"error":"Task not found."}"#.into(),
                ));
            };
            let n = s.served.entry(id.clone()).or_default();
            let step = timeline[(*n).min(timeline.len() - 1)].clone();
            *n += 1;
            let ago = s.created_ago.get(&id).copied().unwrap_or_default();
            let created = s.started - ago;
            (
                id,
                step,
                created.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            )
        }
    };
    let (id, step, created) = step;
    let task = |status: &str, code: Option<&str>| {
        let code = code
            .map(|c| format!("\"{c}\""))
            .unwrap_or_else(|| "null".into());
        json(
            StatusCode::OK,
            format!(
                r#"{{"id":"{id}","createdAt":"{created}","status":"{status}","failure":"x","failureCode":{code}}}"#
            ),
        )
    };
    Ok(match step {
        Step::Task(status, code) => task(status, code),
        Step::Json(body) => json(StatusCode::OK, body.into()),
        Step::Status(code) => json(
            StatusCode::from_u16(code).unwrap(),
            r#"{"error":"Injected."}"#.into(),
        ),
        Step::RetryAfter(secs) | Step::UnavailableRetryAfter(secs) => {
            let status = match step {
                Step::RetryAfter(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = json(status, r#"{"error":"Not now."}"#.into());
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            r
        }
        Step::Headers(code, headers) => {
            let mut r = json(
                StatusCode::from_u16(code).unwrap(),
                r#"{"error":"Injected."}"#.into(),
            );
            for (name, value) in headers {
                r.headers_mut().insert(*name, value.parse().unwrap());
            }
            r
        }
        Step::Malformed => json(StatusCode::OK, "{\"id\": \"".into()),
        Step::Reset => return Err(std::io::Error::other("injected reset")),
        Step::Slow(d) => {
            tokio::time::sleep(d).await;
            task("RUNNING", None)
        }
    })
}

impl MockApi {
    pub fn start(key: &str, timelines: Vec<(String, Vec<Step>)>) -> MockApi {
        let state = Arc::new(Mutex::new(State {
            key: key.to_string(),
            timelines: timelines.into_iter().collect(),
            started: jiff::Timestamp::now(),
            ..State::default()
        }));
        let st = state.clone();
        let (addr, stop_tx) = serve_http(move |req| handle(st.clone(), req));
        MockApi {
            addr,
            state,
            _stop: stop_tx,
        }
    }

    /// Deletes a task as `DELETE /v1/tasks/{id}` does: from now on it is answered 404,
    /// like an id the API never knew ("aborted and deleted tasks will not be able to be
    /// fetched again").
    pub fn delete(&self, id: &str) {
        self.state.lock().unwrap().timelines.remove(id);
    }

    /// The next create call (a `POST` but the usage report's) makes task `id`, estimated
    /// at `credits`, with this timeline.
    pub fn on_create(&self, id: &str, credits: f64, timeline: Vec<Step>) {
        let mut s = self.state.lock().unwrap();
        s.creates.push_back((id.to_string(), credits, timeline));
    }

    /// Makes a task's `createdAt` this much earlier than the mock's start (its default).
    pub fn created_ago(&self, id: &str, ago: Duration) {
        self.state
            .lock()
            .unwrap()
            .created_ago
            .insert(id.to_string(), ago);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request times by task id.
    pub fn task_requests(&self) -> HashMap<String, Vec<Instant>> {
        let s = self.state.lock().unwrap();
        let mut out: HashMap<String, Vec<Instant>> = HashMap::new();
        for (path, at, _) in &s.requests {
            if let Some(id) = path.strip_prefix("/v1/tasks/") {
                out.entry(id.to_string()).or_default().push(*at);
            }
        }
        out
    }

    /// Serves `steps`, in order, to the next requests of `path` (e.g. `/v1/organization`
    /// or `/v1/organization/usage`), then its usual answer again.
    pub fn faults(&self, path: &str, steps: Vec<Step>) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), steps.into());
    }

    /// The times of the requests of `path`, in order.
    pub fn request_times(&self, path: &str) -> Vec<Instant> {
        let s = self.state.lock().unwrap();
        s.requests
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, t, _)| *t)
            .collect()
    }

    pub fn organization_requests(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(p, _, _)| p == "/v1/organization")
            .count()
    }

    /// The bodies of the usage requests, in order.
    pub fn usage_bodies(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().usage_bodies.clone()
    }

    /// The most requests answered at once.
    pub fn max_concurrent(&self) -> usize {
        self.state.lock().unwrap().max_active
    }

    /// Every task request's time, in order.
    pub fn task_request_times(&self) -> Vec<Instant> {
        let s = self.state.lock().unwrap();
        s.requests
            .iter()
            .filter(|(p, _, _)| p.starts_with("/v1/tasks/"))
            .map(|(_, t, _)| *t)
            .collect()
    }

    /// Every Authorization header that reached the mock.
    pub fn auth_headers(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(_, _, a)| a.clone())
            .collect()
    }
}

/// An HTTP/1 server on 127.0.0.1, on a thread (and runtime) of its own, each request
/// answered by `answer`: the stand-ins of the tests' upstreams. It stops when the
/// returned sender is dropped.
pub fn serve_http<F, Fut, B, E>(answer: F) -> (SocketAddr, tokio::sync::oneshot::Sender<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut stop_rx => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let service = hyper::service::service_fn(answer.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (addr, stop_tx)
}
