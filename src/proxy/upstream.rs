//! One proxy thread's connections to the upstream origin: HTTP/1.1 with keep-alive, each
//! driven by a task of its own on that thread's runtime (nginx's `keepalive` pool, one
//! per worker). No request crosses threads and none spawns a task: a connection goes
//! back to the idle list when its answer's body has ended ([`Answer`]), and the next
//! request takes the one returned last.
//!
//! - A connection whose answer was dropped before its end is closed, never reused.
//! - At most [`IDLE_MAX`] idle connections are kept, none reused after [`IDLE_FOR`]
//!   idle (an expired one is closed when the list is next used).
//! - A connection is taken only when ready: one still sending its last request's body
//!   is passed over, a request never waits behind another's upload.
//! - An idle connection the upstream closed is noticed by its task and dropped; a
//!   request it could no longer take goes on another connection (hyper's
//!   `try_send_request`), never sent twice. One the upstream closes in the instant a
//!   request is written fails that request (502, which the SDKs retry), as in any
//!   keep-alive pool.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::egress::Route;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use tower_service::Service;

/// The most idle connections one proxy thread keeps.
pub const IDLE_MAX: usize = 256;
/// How long an idle connection may be reused: below the idle timeouts of common
/// servers and load balancers (60 s), so that the upstream seldom closes one just as a
/// request is written on it.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream could not be reached, or failed the request.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(BoxError),
    #[error("the upstream request failed: {0}")]
    Request(#[from] hyper::Error),
}

/// The idle connections, newest last.
type IdleList<B> = Mutex<VecDeque<(SendRequest<B>, Instant)>>;

/// Connections to one origin, for requests with bodies of type `B`.
pub struct Upstream<B> {
    connector: HttpsConnector<Route>,
    origin: Uri,
    host: HeaderValue,
    idle: Arc<IdleList<B>>,
}

impl<B> Upstream<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Connections to `origin` ([`origin`]) made by `connector`, none open yet.
    pub fn new(connector: HttpsConnector<Route>, origin: Uri) -> Upstream<B> {
        let host = host(&origin);
        Upstream {
            connector,
            origin,
            host,
            idle: Arc::default(),
        }
    }

    /// Connections to the same origin, for another thread: none shared.
    pub fn sibling(&self) -> Upstream<B> {
        Upstream {
            connector: self.connector.clone(),
            origin: self.origin.clone(),
            host: self.host.clone(),
            idle: Arc::default(),
        }
    }

    /// Sends `request` (its URI in origin form; its `Host` set here, the upstream's) on
    /// an idle connection or a new one.
    pub async fn send(
        &self,
        mut request: Request<B>,
    ) -> Result<Response<Answer<B>>, UpstreamError> {
        request.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut sender, fresh) = match self.take() {
                Some(sender) => (sender, false),
                None => (self.connect().await?, true),
            };
            match sender.try_send_request(request).await {
                Ok(answer) => return Ok(answer.map(|body| self.answer(body, sender))),
                Err(mut e) => match e.take_message() {
                    // Not written: the idle connection had closed. Another one takes it.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// The newest idle connection ready for a request. One still sending its last
    /// request's body (the upstream answered before it had it all) is left for later:
    /// a request never waits behind another's upload.
    fn take(&self) -> Option<SendRequest<B>> {
        let mut idle = crate::sync::lock(&self.idle);
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let (sender, since) = &idle[i];
            if sender.is_closed() || now.duration_since(*since) >= IDLE_FOR {
                idle.remove(i);
            } else if sender.is_ready() {
                return idle.remove(i).map(|(sender, _)| sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<B>, UpstreamError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(64 * 1024)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Proxy: an upstream connection ended with an error.");
            }
        });
        Ok(sender)
    }

    fn answer(&self, body: Incoming, sender: SendRequest<B>) -> Answer<B> {
        let mut answer = Answer {
            inner: body,
            back: Some((sender, Arc::downgrade(&self.idle))),
        };
        answer.ended(false);
        answer
    }

    /// The idle connections kept: for tests.
    #[cfg(test)]
    fn idle(&self) -> usize {
        crate::sync::lock(&self.idle).len()
    }
}

/// The origin `scheme://authority/`: where requests go, and what the connector is asked
/// to reach.
pub fn origin(scheme: Scheme, authority: Authority) -> Uri {
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()
        .expect("a scheme and an authority make a URI")
}

/// `Host` as a client sends it for `origin`: its port only when not the scheme's own.
fn host(origin: &Uri) -> HeaderValue {
    let host = origin.host().expect("an origin has a host");
    let default = match origin.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match origin.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&value).expect("an authority is a valid header value")
}

/// An upstream answer's body, passed on as it comes; when it has ended, its connection
/// goes back to the idle list.
#[derive(Debug)]
pub struct Answer<B> {
    inner: Incoming,
    back: Option<(SendRequest<B>, Weak<IdleList<B>>)>,
}

impl<B> Answer<B> {
    /// Returns the connection if the body has ended (`done`: it said so).
    fn ended(&mut self, done: bool) {
        if !done && !self.inner.is_end_stream() {
            return;
        }
        let Some((sender, idle)) = self.back.take() else {
            return;
        };
        let Some(idle) = idle.upgrade() else {
            return;
        };
        let mut idle = crate::sync::lock(&idle);
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|(s, since)| s.is_closed() || now.duration_since(*since) >= IDLE_FOR)
            || idle.len() >= IDLE_MAX
        {
            idle.pop_front();
        }
        idle.push_back((sender, now));
    }
}

impl<B: Unpin> Body for Answer<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.ended(false),
            Poll::Ready(None) => self.ended(true),
            // Broken off: the connection is not reused.
            Poll::Ready(Some(Err(_))) => self.back = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body read up to a limit: whole, or its first bytes and the rest.
pub enum Read<B> {
    /// It ended within the limit.
    Whole(bytes::Bytes),
    /// It went past the limit: what was read, then the rest as it comes.
    Longer(Resumed<B>),
    /// It broke off.
    Broken,
}

impl<B: Unpin> Answer<B> {
    /// Reads the body while it stays within `limit` bytes.
    pub async fn read_within(mut self, limit: usize) -> Read<B> {
        use http_body_util::BodyExt;
        let mut read = bytes::BytesMut::new();
        loop {
            match self.frame().await {
                None => return Read::Whole(read.freeze()),
                Some(Err(_)) => return Read::Broken,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        read.extend_from_slice(data);
                    }
                    if read.len() > limit {
                        return Read::Longer(Resumed::new(read.freeze(), Some(self)));
                    }
                }
            }
        }
    }
}

/// A body given on: the bytes already read, then the rest of the answer (if any) as it
/// streams.
#[derive(Debug)]
pub struct Resumed<B> {
    read: Option<bytes::Bytes>,
    rest: Option<Answer<B>>,
}

impl<B> Resumed<B> {
    pub fn new(read: bytes::Bytes, rest: Option<Answer<B>>) -> Resumed<B> {
        Resumed {
            read: Some(read).filter(|r| !r.is_empty()),
            rest,
        }
    }
}

impl<B: Unpin> Body for Resumed<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, hyper::Error>>> {
        if let Some(read) = self.read.take() {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_none() && self.rest.as_ref().is_none_or(Answer::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read = self.read.as_ref().map_or(0, |r| r.len() as u64);
        let Some(rest) = &self.rest else {
            return SizeHint::with_exact(read);
        };
        let rest = rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(read + rest.lower());
        if let Some(upper) = rest.upper() {
            hint.set_upper(read + upper);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Nothing = Empty<bytes::Bytes>;

    /// How the stand-in upstream treats a connection after each answer.
    #[derive(Clone, Copy)]
    enum After {
        KeepAlive,
        /// Closes it without saying so (no `Connection: close`): a keep-alive timeout.
        Close,
    }

    /// An upstream answering every request with `body`, counting its connections.
    async fn upstream(body: &'static str, after: After) -> (Authority, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                        seen.drain(..end + 4);
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if stream.write_all((head + body).as_bytes()).await.is_err() {
                            return;
                        }
                        if let After::Close = after {
                            return;
                        }
                    }
                });
            }
        });
        (address.to_string().parse().unwrap(), accepted)
    }

    fn connections<B>(authority: Authority) -> Upstream<B>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .unwrap()
            .https_or_http()
            .enable_http1()
            .wrap_connector(Route::Direct(http));
        Upstream::new(https, origin(Scheme::HTTP, authority))
    }

    fn get() -> Request<Nothing> {
        Request::get("/v1/tasks/x").body(Empty::new()).unwrap()
    }

    async fn read(upstream: &Upstream<Nothing>) -> String {
        let answer = upstream.send(get()).await.unwrap();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (authority, accepted) = upstream("{\"id\":\"x\"}", After::KeepAlive).await;
        let upstream = connections(authority);
        for _ in 0..20 {
            assert_eq!(read(&upstream).await, "{\"id\":\"x\"}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.idle(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_never_used_again() {
        let (authority, accepted) = upstream("ok", After::Close).await;
        let upstream = connections(authority);
        for _ in 0..20 {
            assert_eq!(read(&upstream).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_does_not_return_its_connection() {
        let (authority, accepted) = upstream("0123456789", After::KeepAlive).await;
        let upstream = connections(authority);
        let answer = upstream.send(get()).await.unwrap();
        assert!(!answer.body().is_end_stream());
        drop(answer);
        assert_eq!(upstream.idle(), 0);
        assert_eq!(read(&upstream).await, "0123456789");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A request body that has ended, or one still going up that never ends.
    struct Upload {
        ended: bool,
    }

    impl Body for Upload {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
            match self.ended {
                true => Poll::Ready(None),
                false => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.ended
        }
    }

    #[tokio::test]
    async fn a_request_never_waits_behind_another_requests_upload() {
        let (authority, accepted) = upstream("ok", After::KeepAlive).await;
        let upstream = connections::<Upload>(authority);
        // The upstream answers (a 401, a 429...) before the body is all there.
        let uploading = Request::post("/v1/uploads").body(Upload { ended: false });
        let answer = upstream.send(uploading.unwrap()).await.unwrap();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        let next = Request::get("/v1/tasks/x").body(Upload { ended: true });
        let sent = upstream.send(next.unwrap());
        let answer = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("the request waited behind the upload")
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_bounded() {
        let (authority, accepted) = upstream("ok", After::KeepAlive).await;
        let upstream = Arc::new(connections(authority));
        let many = IDLE_MAX + 8;
        let mut sent = tokio::task::JoinSet::new();
        for _ in 0..many {
            let upstream = upstream.clone();
            sent.spawn(async move { upstream.send(get()).await.unwrap() });
        }
        // Each answer holds its connection until its body is read: all are open at once.
        let answers = sent.join_all().await;
        for answer in answers {
            answer.into_body().collect().await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), many);
        assert_eq!(upstream.idle(), IDLE_MAX);
    }

    #[test]
    fn host_has_the_port_only_when_it_is_not_the_schemes_own() {
        let host = |origin: &str| host(&origin.parse().unwrap());
        assert_eq!(host("http://127.0.0.1:18001/"), "127.0.0.1:18001");
        assert_eq!(
            host("https://api.dev.runwayml.com/"),
            "api.dev.runwayml.com"
        );
        assert_eq!(
            host("https://api.dev.runwayml.com:443/"),
            "api.dev.runwayml.com"
        );
        assert_eq!(host("http://stand-in:80/"), "stand-in");
        assert_eq!(host("https://stand-in:80/"), "stand-in:80");
    }
}
