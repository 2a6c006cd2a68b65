//! The proxy's accept loop: bounded connections, optional TLS, graceful shutdown.
//!
//! - One thread a core serves, each with its own runtime and upstream connections
//!   (nginx's worker model): no request, answer or connection crosses threads.
//! - At most `max_connections` connections are served at once; the next is accepted
//!   when one ends (the kernel's backlog holds the others, as nginx's
//!   `worker_connections` does).
//! - A connection's TLS handshake and each request's headers must arrive within
//!   `header_read_timeout`; bodies stream for as long as they keep moving.
//! - On shutdown the listener closes and requests in progress get the grace period.
//! - A connection closed because its bytes are not HTTP/1.1 is counted in
//!   `runway_exporter_proxy_refused_total{reason="malformed"}`.
//! - Client connections have Nagle's algorithm off (`TCP_NODELAY`), as the upstream
//!   ones do: an answer's last bytes are never held back waiting for an acknowledgement.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Forwarder;

/// How the proxy listener treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub grace: Duration,
}

/// Serves on one thread a core (nginx's workers), each with a current-thread runtime and
/// a forwarder of its own, so that a request and its upstream connection stay on one
/// thread; they take turns accepting from `listener` and share `max_connections`.
/// Returns what ends when every thread has: `token` cancelled, the requests in progress
/// given the grace period. When a thread cannot be started, `token` is cancelled (the
/// threads already running end) and the error returned.
pub fn serve(
    listener: TcpListener,
    forwarder: Forwarder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    token: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let started = start(listener, &forwarder, tls, limits, &token);
    if started.is_err() {
        token.cancel();
    }
    let ended = started?;
    Ok(async move {
        for (thread, end) in ended.into_iter().enumerate() {
            if end.await.is_err() {
                tracing::error!(
                    thread,
                    "A proxy thread ended early (a panic); its connections were dropped."
                );
            }
        }
    })
}

/// Starts the threads; what each says when it has ended.
fn start(
    listener: TcpListener,
    forwarder: &Forwarder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    token: &CancellationToken,
) -> std::io::Result<Vec<tokio::sync::oneshot::Receiver<()>>> {
    let listener = listener.into_std()?;
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut ended = Vec::with_capacity(threads);
    for i in 0..threads {
        let worker = Worker {
            listener: listener.try_clone()?,
            forwarder: Arc::new(forwarder.sibling()),
            tls: tls.clone(),
            places: places.clone(),
            limits,
            token: token.clone(),
        };
        let (done, end) = tokio::sync::oneshot::channel::<()>();
        let (up, running) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("proxy-{i}"))
            .spawn(move || {
                // Built here: a runtime may not be dropped where a runtime runs.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .max_blocking_threads(MAX_LOOKUPS)
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(up.send(Err(e))),
                };
                let _ = up.send(Ok(()));
                runtime.block_on(worker.run());
                // Connections still open after the grace period close here; a name
                // lookup still running is left to end on its own.
                runtime.shutdown_background();
                let _ = done.send(());
            })?;
        ended.push(end);
        // A thread's start, waited for (microseconds) so that an error is the caller's.
        running
            .recv()
            .map_err(|_| std::io::Error::other("a proxy thread ended as it started"))??;
    }
    Ok(ended)
}

/// The upstream name lookups (the connector's `getaddrinfo`, a blocking call) one proxy
/// thread runs at once.
const MAX_LOOKUPS: usize = 8;

/// One proxy thread's share of the listener.
struct Worker {
    listener: std::net::TcpListener,
    forwarder: Arc<Forwarder>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    places: Arc<Semaphore>,
    limits: Limits,
    token: CancellationToken,
}

impl Worker {
    /// Accepts until the token is cancelled, then lets requests in progress finish within
    /// the grace period.
    async fn run(self) {
        let Worker {
            listener,
            forwarder,
            tls,
            places,
            limits,
            token,
        } = self;
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "Proxy: a thread cannot take the listener.");
                return;
            }
        };
        let graceful = GracefulShutdown::new();
        let ticker = tokio::spawn(tick());
        loop {
            let place = tokio::select! {
                _ = token.cancelled() => break,
                place = places.clone().acquire_owned() => place.expect("the semaphore is never closed"),
            };
            let stream = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => nodelay(stream),
                    Err(e) => {
                        tracing::warn!(error = %e, "Proxy: cannot accept a connection.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (forwarder, tls, watcher) = (forwarder.clone(), tls.clone(), graceful.watcher());
            tokio::spawn(async move {
                let served = connection(stream, forwarder.clone(), tls, limits, watcher).await;
                if let Err(e) = served {
                    if malformed(&e) {
                        forwarder.malformed();
                    }
                    tracing::debug!(error = %e, "Proxy connection ended with an error.");
                }
                drop(place);
            });
        }
        drop(listener);
        ticker.abort();
        if tokio::time::timeout(limits.grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("Proxy connections still open after the grace period; closing them.");
        }
    }
}

/// How often a proxy thread's timer ticks ([`tick`]).
const TICK: Duration = Duration::from_secs(1);

/// A timer that always fires within [`TICK`], so that the thread's timers never wake it
/// for nothing. Tokio wakes a runtime's driver (a `write` to its eventfd, and one more
/// `epoll_wait` to take it back) whenever a timer is set earlier than the earliest one
/// the driver last went to sleep with, even while the thread is busy running tasks; a
/// request sets two (hyper's header-read timeout on its connection, 10 s, and the
/// forwarder's response timeout, 120 s) and, at one client, each request set one
/// earlier than the last sleep's (measured with `strace`: one `write` a request). With
/// this tick the earliest timer is never more than a second away, so no request's
/// timer comes before it: a second's wake-up instead of one a request.
async fn tick() {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// The client's connection with Nagle's algorithm off, as nginx's `tcp_nodelay`: hyper
/// writes an answer's head as soon as it has it and the body when the upstream sends it,
/// and Nagle would hold that second small write until the client acknowledges the first,
/// which a client waiting for the rest of the answer delays by up to 40 ms.
fn nodelay(stream: TcpStream) -> TcpStream {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "Proxy: cannot set TCP_NODELAY on a connection.");
    }
    stream
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a connection ended because the client sent what is not HTTP/1.1 (hyper
/// answered 400 and closed it), not because it went away or was too slow.
fn malformed(e: &BoxError) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(|e| e.is_parse() || e.is_parse_too_large())
}

async fn connection(
    stream: TcpStream,
    forwarder: Arc<Forwarder>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let forwarder = forwarder.clone();
        async move { Ok::<_, Infallible>(forwarder.forward(req).await) }
    });
    match tls {
        None => {
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), service))
                .await?
        }
        Some(acceptor) => {
            let stream = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                .await
                .map_err(|_| "TLS handshake timed out")??;
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), service))
                .await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (stream, _) = accepted.unwrap();
        assert!(!stream.nodelay().unwrap(), "sockets start with Nagle on");
        assert!(nodelay(stream).nodelay().unwrap());
        drop(client);
    }
}
