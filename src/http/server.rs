//! The accept loop and one connection: limits, TLS and basic auth.
//!
//! - Connections are bounded by `max_connections`; who gives a place up when all are
//!   taken is [`super::places`]' decision.
//! - The first request's headers, and with TLS the handshake before them, must arrive
//!   within `header_read_timeout` of the connection getting its place: one deadline
//!   for both. Later requests on a kept-alive connection have hyper's
//!   `header_read_timeout` each.
//! - With basic auth, every path needs the password (the web config as it is at the
//!   request: a reload applies to open connections too); the checks run on
//!   [`super::passwords`]' threads.
//! - On shutdown the listener closes, waiting connections are closed, and requests in
//!   progress are given the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::passwords::{self, Passwords, Verdict};
use super::places::{Places, Serving, Standing};
use super::{handle, respond, Chunks, HttpState};

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
        let (place, standing) = tokio::select! {
            _ = token.cancelled() => break,
            taken = places.take(peer.ip()) => taken,
        };
        let tls = crate::sync::read(&state.security).tls.clone();
        let connection = Connection {
            state: state.clone(),
            tls,
            passwords: passwords.clone(),
            standing,
            deadline: Instant::now() + limits.header_read_timeout,
            header_read_timeout: limits.header_read_timeout,
            _place: place,
            peer,
        };
        tokio::spawn(connection.run(stream, graceful.watcher()));
    }
    drop(listener);
    // Requests in progress may finish; a client still sending its headers may not.
    places.close_waiting();
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the grace period; closing them.");
    }
}

struct Connection {
    state: Arc<HttpState>,
    /// TLS as it was when the connection got its place.
    tls: Option<tokio_rustls::TlsAcceptor>,
    passwords: Arc<Passwords>,
    standing: Arc<Standing>,
    /// The first request's headers (after the TLS handshake) are due by then.
    deadline: Instant,
    header_read_timeout: Duration,
    /// Given back when the connection ends.
    _place: OwnedSemaphorePermit,
    peer: SocketAddr,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Connection {
    /// Serves the connection until it ends, is closed (for room, or at shutdown), or
    /// sends no request in time; then gives its place back.
    async fn run(self, stream: TcpStream, watcher: Watcher) {
        let first_request_late = async {
            tokio::time::sleep_until(self.deadline).await;
            if self.standing.requests() > 0 {
                std::future::pending::<()>().await;
            }
        };
        let peer = self.peer;
        tokio::select! {
            result = self.serve(stream, watcher) => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error.");
                }
            }
            _ = self.standing.close.cancelled() => {
                tracing::debug!(peer = %peer, "Connection closed while it waited for a request (to make room, or at shutdown).");
            }
            _ = first_request_late => {
                tracing::debug!(peer = %peer, "No request within web.header_read_timeout; connection closed.");
            }
        }
    }

    async fn serve(&self, stream: TcpStream, watcher: Watcher) -> Result<(), BoxError> {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(64 * 1024);
        let service = self.service();
        match &self.tls {
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

    /// Answers each request: the password first when basic auth is on. The request
    /// is in progress until its body is written.
    fn service(
        &self,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Answer>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Answer>, Infallible>> + Send,
    > + Clone
           + Send {
        let (state, passwords, standing, client) = (
            self.state.clone(),
            self.passwords.clone(),
            self.standing.clone(),
            self.peer.ip(),
        );
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (state, passwords) = (state.clone(), passwords.clone());
            let serving = standing.serving();
            async move {
                let response = answer(&state, &passwords, client, &req).await;
                Ok::<_, Infallible>(response.map(|body| Answer {
                    body,
                    _serving: serving,
                }))
            }
        })
    }
}

async fn answer(
    state: &HttpState,
    passwords: &Passwords,
    client: std::net::IpAddr,
    req: &Request<Incoming>,
) -> Response<Chunks> {
    let auth = crate::sync::read(&state.security).auth.clone();
    if let Some(users) = auth {
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match passwords.check(&users, client, header).await {
            Verdict::Right => {}
            Verdict::Wrong => return unauthorized(),
            Verdict::Busy => return too_many_checks(),
        }
    }
    handle(state, req)
}

/// A response body that keeps its request in progress until it is written (or the
/// connection ends): a slow reader is not a waiting connection.
pub struct Answer {
    body: Chunks,
    _serving: Serving,
}

impl hyper::body::Body for Answer {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
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
