//! The accept loop and one connection: limits, TLS and basic auth.
//!
//! Words: a connection is *waiting* while it has no request in progress (it has not
//! sent its request headers yet, or it waits between two requests); a *place* is one
//! of the `max_connections` connections that may be open at once.
//!
//! - When every place is taken, a new connection closes the one that has been waiting
//!   longest. Clients that drip their headers (slowloris) or sit idle therefore only push
//!   each other out: a scraper that sends its request at once is answered however many
//!   of them there are. When every place has a request in progress, a new connection
//!   waits for one to end (the kernel's backlog holds the others).
//! - The first request's headers, and with TLS the handshake before them, must arrive
//!   within `header_read_timeout` of the accept: one deadline for both. Later requests
//!   on a kept-alive connection have hyper's `header_read_timeout` each.
//! - With basic auth, every path needs the password; the checks run on
//!   [`super::passwords`]' threads.
//! - On shutdown the listener closes and open connections are given the grace period.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::passwords::{self, Passwords, Verdict};
use super::{handle, respond, Chunks, HttpState};
use crate::webconfig::WebSecurity;

/// Limits on clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub grace: Duration,
}

/// Serves until `token` is cancelled, then lets open connections finish within the
/// grace period.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    limits: Limits,
    token: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let places = Places::new(limits.max_connections);
    let passwords = Arc::new(Passwords::start(passwords::threads(), passwords::QUEUE));
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        let place = tokio::select! {
            _ = token.cancelled() => break,
            place = places.take() => place,
        };
        let security = state
            .security
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connection = Connection {
            state: state.clone(),
            waiting: places.waiting.clone(),
            security,
            passwords: passwords.clone(),
            deadline: accepted + limits.header_read_timeout,
            header_read_timeout: limits.header_read_timeout,
            _place: place,
            peer,
        };
        tokio::spawn(connection.run(stream, graceful.watcher()));
    }
    drop(listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the grace period; closing them.");
    }
}

/// The places, and the waiting connections in the order they began to wait.
struct Places {
    free: Arc<Semaphore>,
    waiting: Arc<Waiting>,
    /// When a connection was last pushed out, for a warning at most once a minute.
    warned: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Waiting {
    /// By a number that grows with every start of a wait: the first waited longest.
    by_start: Mutex<BTreeMap<u64, CancellationToken>>,
    next: AtomicU64,
}

impl Places {
    fn new(max: usize) -> Places {
        Places {
            free: Arc::new(Semaphore::new(max)),
            waiting: Arc::default(),
            warned: Mutex::new(None),
        }
    }

    /// A place for a new connection: a free one, else the place of the connection
    /// waiting longest (closed for it), else the first to be given back.
    async fn take(&self) -> OwnedSemaphorePermit {
        if let Ok(place) = self.free.clone().try_acquire_owned() {
            return place;
        }
        let oldest = lock(&self.waiting.by_start).pop_first();
        if let Some((_, close)) = oldest {
            close.cancel();
            self.warn_once_a_minute();
        }
        // Closing is immediate: its task gives the place back when next polled.
        self.free
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    fn warn_once_a_minute(&self) {
        let mut warned = lock(&self.warned);
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *warned = Some(Instant::now());
            tracing::warn!("All web.max_connections places are taken: closing the connections that waited longest for a request (slow or idle clients) to let new ones in.");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection's standing: waiting (and since when) or serving a request.
struct Standing {
    waiting: Arc<Waiting>,
    /// Cancelled to close the connection.
    close: CancellationToken,
    /// Its key in `waiting` while it waits.
    key: Mutex<Option<u64>>,
    requests: AtomicU64,
}

impl Standing {
    fn new(waiting: Arc<Waiting>) -> Arc<Standing> {
        let s = Arc::new(Standing {
            waiting,
            close: CancellationToken::new(),
            key: Mutex::new(None),
            requests: AtomicU64::new(0),
        });
        s.wait();
        s
    }

    fn wait(&self) {
        let key = self.waiting.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiting.by_start).insert(key, self.close.clone());
        if let Some(old) = lock(&self.key).replace(key) {
            lock(&self.waiting.by_start).remove(&old);
        }
    }

    fn stop_waiting(&self) {
        if let Some(key) = lock(&self.key).take() {
            lock(&self.waiting.by_start).remove(&key);
        }
    }

    /// Marks a request in progress until the guard is dropped.
    fn serving(self: &Arc<Self>) -> Serving {
        self.stop_waiting();
        self.requests.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }
}

impl Drop for Standing {
    fn drop(&mut self) {
        self.stop_waiting();
    }
}

struct Serving(Arc<Standing>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.wait();
    }
}

struct Connection {
    state: Arc<HttpState>,
    security: WebSecurity,
    passwords: Arc<Passwords>,
    waiting: Arc<Waiting>,
    /// The first request's headers (after the TLS handshake) are due by then.
    deadline: Instant,
    header_read_timeout: Duration,
    /// Given back when the connection ends.
    _place: OwnedSemaphorePermit,
    peer: SocketAddr,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Connection {
    /// Serves the connection until it ends, is closed to make room, or sends no request
    /// in time; then gives its place back.
    async fn run(self, stream: TcpStream, watcher: Watcher) {
        let standing = Standing::new(self.waiting.clone());
        let first_request_late = {
            let standing = standing.clone();
            let deadline = self.deadline;
            async move {
                tokio::time::sleep_until(deadline).await;
                if standing.requests.load(Ordering::Relaxed) > 0 {
                    std::future::pending::<()>().await;
                }
            }
        };
        let peer = self.peer;
        tokio::select! {
            result = self.serve(stream, watcher, &standing) => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error.");
                }
            }
            _ = standing.close.cancelled() => {
                tracing::debug!(peer = %peer, "Connection closed to make room: it waited longest for a request.");
            }
            _ = first_request_late => {
                tracing::debug!(peer = %peer, "No request within web.header_read_timeout; connection closed.");
            }
        }
    }

    async fn serve(
        &self,
        stream: TcpStream,
        watcher: Watcher,
        standing: &Arc<Standing>,
    ) -> Result<(), BoxError> {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(64 * 1024);
        let service = self.service(standing);
        match &self.security.tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn).await?;
            }
            Some(acceptor) => {
                let tls = acceptor.accept(stream).await?;
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                watcher.watch(conn).await?;
            }
        }
        Ok(())
    }

    /// Answers each request: the password first when basic auth is on.
    fn service(
        &self,
        standing: &Arc<Standing>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Chunks>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Chunks>, Infallible>> + Send,
    > + Clone
           + Send {
        let (state, auth, passwords, standing) = (
            self.state.clone(),
            self.security.auth.clone(),
            self.passwords.clone(),
            standing.clone(),
        );
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (state, auth, passwords) = (state.clone(), auth.clone(), passwords.clone());
            let serving = standing.serving();
            async move {
                let _serving = serving;
                if let Some(users) = auth {
                    let header = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    match passwords.check(&users, header).await {
                        Verdict::Right => {}
                        Verdict::Wrong => return Ok(unauthorized()),
                        Verdict::Busy => return Ok(too_many_checks()),
                    }
                }
                Ok::<_, Infallible>(handle(&state, &req))
            }
        })
    }
}

fn unauthorized() -> Response<Chunks> {
    let mut r = respond(
        StatusCode::UNAUTHORIZED,
        "text/plain; charset=utf-8",
        "Unauthorized.\n",
    );
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"runway-exporter\""),
    );
    r
}

fn too_many_checks() -> Response<Chunks> {
    let mut r = respond(
        StatusCode::TOO_MANY_REQUESTS,
        "text/plain; charset=utf-8",
        "Too many password checks at once; try again.\n",
    );
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
