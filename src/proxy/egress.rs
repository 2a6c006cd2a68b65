//! How the proxy reaches its upstream: directly, or through the egress proxy that the
//! environment names, as the Python SDK (httpx) and the exporter's own API client
//! (reqwest) do: `HTTPS_PROXY` or `ALL_PROXY`, unless `NO_PROXY` names the upstream's
//! host; either case (hyper-util's matcher reads them, by reqwest's rules).
//!
//! - Only an `https` upstream (Runway's API) goes through one: a `CONNECT` tunnel to the
//!   upstream's host and port (hyper-util's `Tunnel`), with the proxy's credentials when
//!   its URL carries them (Basic), and TLS to the upstream inside it. A plain-`http`
//!   upstream and one on loopback are local (a stand-in, a sidecar) and reached directly.
//! - The tunnel is opened within `connect_timeout`, as a direct connection is: an egress
//!   proxy that accepts and then stalls fails the connection (a 502), it does not hold
//!   the request until `response_timeout`.
//! - The egress proxy itself is spoken to in plain HTTP (`http://host:port`, the usual
//!   form of `HTTPS_PROXY`). One named with another scheme (`https://`, `socks5://`) is
//!   not used: the upstream is reached directly, with a warning at start-up, as before
//!   egress proxies were read.
//! - Its address is logged at start-up, never its credentials; a tunnel it refuses (a
//!   407 for credentials it does not take, a 403) is a warning, once until a tunnel opens
//!   again, so a misconfigured egress proxy is seen at the default log level.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to the upstream (inside a tunnel or not), before TLS.
pub type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

/// Connections made straight to the upstream, or through an egress proxy's tunnel.
#[derive(Clone)]
pub enum Route {
    Direct(HttpConnector),
    Tunnel(Box<Egress>),
}

/// The tunnel through an egress proxy, and what its failures need.
#[derive(Clone)]
pub struct Egress {
    tunnel: Tunnel<HttpConnector>,
    /// The proxy as logged ([`shown`]).
    shown: Arc<str>,
    /// How long opening a tunnel may take: the upstream's `connect_timeout`.
    within: Duration,
    /// Whether the last tunnel failed (warned once until one opens).
    failing: Arc<AtomicBool>,
}

impl Route {
    /// The route to `upstream` that `matcher` (the environment's proxy settings) gives,
    /// over `http`, a tunnel opened `within` the connect timeout.
    pub fn to(upstream: &Uri, matcher: &Matcher, http: HttpConnector, within: Duration) -> Route {
        if upstream.scheme_str() != Some("https") || local(upstream) {
            return Route::Direct(http);
        }
        let Some(intercept) = matcher.intercept(upstream) else {
            return Route::Direct(http);
        };
        let proxy = intercept.uri();
        if proxy.scheme_str() != Some("http") {
            tracing::warn!(egress_proxy = %shown(proxy), "Proxy: the egress proxy named by HTTPS_PROXY or ALL_PROXY is not an http:// URL, and only plain-HTTP egress proxies are supported; the upstream is reached directly (name the upstream's host in NO_PROXY to silence this).");
            return Route::Direct(http);
        }
        tracing::info!(egress_proxy = %shown(proxy), "Proxy: the upstream is reached through the egress proxy named by HTTPS_PROXY or ALL_PROXY (a CONNECT tunnel).");
        let tunnel = Tunnel::new(proxy.clone(), http);
        Route::Tunnel(Box::new(Egress {
            tunnel: match intercept.basic_auth() {
                Some(auth) => tunnel.with_auth(auth.clone()),
                None => tunnel,
            },
            shown: shown(proxy).into(),
            within,
            failing: Arc::default(),
        }))
    }
}

/// Whether `upstream` is on this host (`localhost`, a loopback address): no egress
/// proxy can reach it.
fn local(upstream: &Uri) -> bool {
    let host = upstream.host().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An egress proxy as logged: its scheme, host and the port connected to, never the
/// credentials its URL may carry.
fn shown(proxy: &Uri) -> String {
    let port = proxy.port_u16().unwrap_or(80);
    format!(
        "{}://{}:{port}",
        proxy.scheme_str().unwrap_or("?"),
        proxy.host().unwrap_or("?")
    )
}

impl Egress {
    /// Opens a tunnel to `upstream` within [`Egress::within`]; a failure is warned once
    /// until a tunnel opens again.
    fn open(&mut self, upstream: Uri) -> Connecting {
        let (opening, within) = (self.tunnel.call(upstream), self.within);
        let (shown, failing) = (self.shown.clone(), self.failing.clone());
        Box::pin(async move {
            let opened = match tokio::time::timeout(within, opening).await {
                Ok(opened) => opened.map_err(BoxError::from),
                Err(_) => Err(format!("no tunnel within the connect timeout ({within:?})").into()),
            };
            match &opened {
                Ok(_) => failing.store(false, Ordering::Relaxed),
                Err(e) if !failing.swap(true, Ordering::Relaxed) => {
                    tracing::warn!(egress_proxy = %shown, error = %e, "Proxy: the egress proxy did not open a tunnel to the upstream (check its address, the credentials in HTTPS_PROXY, and that it allows CONNECT to the upstream's port); requests that need a new connection get a 502 until it does.");
                }
                Err(_) => {}
            }
            opened
        })
    }
}

impl Service<Uri> for Route {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Route::Direct(http) => http.poll_ready(cx).map_err(Into::into),
            Route::Tunnel(egress) => egress.tunnel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, upstream: Uri) -> Connecting {
        match self {
            Route::Direct(http) => {
                let connecting = http.call(upstream);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Route::Tunnel(egress) => egress.open(upstream),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// The upstream's name in these tests: the egress stand-in takes it for 127.0.0.1
    /// (no name is looked up; a loopback upstream would be reached directly).
    const UPSTREAM: &str = "upstream.test";

    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// `future`, or a failed test after 10 s rather than a hung one.
    async fn bounded<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("no answer within 10 s")
    }

    fn route(upstream: &Uri, matcher: &Matcher) -> Route {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        Route::to(upstream, matcher, http, CONNECT_TIMEOUT)
    }

    /// An egress proxy that accepts one CONNECT, answers 200 and joins the two sides;
    /// its address, and the request head it got.
    async fn egress() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (told, head) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let mut client = BufReader::new(client);
            let mut text = String::new();
            loop {
                let mut line = String::new();
                client.read_line(&mut line).await.unwrap();
                text.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let target = text
                .split_whitespace()
                .nth(1)
                .unwrap()
                .replace(UPSTREAM, "127.0.0.1");
            let _ = told.send(text);
            let mut upstream = TcpStream::connect(target).await.unwrap();
            let mut client = client.into_inner();
            client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        (addr, head)
    }

    /// An upstream that answers the first bytes it gets with `got: ` and them; its port.
    async fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&[b"got: ", &buf[..n]].concat()).await.unwrap();
        });
        port
    }

    async fn say_hello(route: &mut Route, upstream: Uri) -> String {
        std::future::poll_fn(|cx| route.poll_ready(cx))
            .await
            .unwrap();
        let mut io = bounded(route.call(upstream)).await.unwrap().into_inner();
        io.write_all(b"hello").await.unwrap();
        let mut answer = String::new();
        bounded(io.read_to_string(&mut answer)).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn an_https_upstream_goes_through_the_egress_proxy_with_its_credentials() {
        let (proxy, head) = egress().await;
        let port = echo().await;
        let matcher = Matcher::builder()
            .https(format!("http://user:s3cret@{proxy}"))
            .build();
        let upstream: Uri = format!("https://{UPSTREAM}:{port}").parse().unwrap();
        let mut route = route(&upstream, &matcher);
        assert!(matches!(route, Route::Tunnel(_)));
        assert_eq!(say_hello(&mut route, upstream).await, "got: hello");
        let head = head.await.unwrap();
        let connect = format!("CONNECT {UPSTREAM}:{port} HTTP/1.1\r\n");
        assert!(head.starts_with(&connect), "{head}");
        // user:s3cret in Basic.
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic dxnlcjpzm2nyzxq="),
            "{head}"
        );
    }

    #[tokio::test]
    async fn no_proxy_a_plain_http_upstream_a_loopback_one_and_none_set_go_direct() {
        let proxy = "http://127.0.0.1:9";
        let named: Uri = format!("https://{UPSTREAM}").parse().unwrap();
        let port = echo().await;
        let looped: Uri = format!("https://127.0.0.1:{port}").parse().unwrap();
        let routes = [
            (Matcher::builder().build(), named.clone()),
            (
                Matcher::builder().https(proxy).no(UPSTREAM).build(),
                named.clone(),
            ),
            (
                Matcher::builder().all(proxy).http(proxy).build(),
                format!("http://{UPSTREAM}").parse().unwrap(),
            ),
            (
                Matcher::builder().all(proxy).https(proxy).build(),
                looped.clone(),
            ),
            (
                Matcher::builder().https(proxy).build(),
                "https://localhost:1".parse().unwrap(),
            ),
            (
                Matcher::builder().https(proxy).build(),
                "https://[::1]:1".parse().unwrap(),
            ),
        ];
        for (matcher, upstream) in &routes {
            let route = route(upstream, matcher);
            assert!(matches!(route, Route::Direct(_)), "{matcher:?} {upstream}");
        }
        // And direct means direct: port 9 (nothing there) is never tried.
        let mut direct = route(&looped, &routes[3].0);
        assert_eq!(say_hello(&mut direct, looped).await, "got: hello");
    }

    #[test]
    fn an_egress_proxy_that_is_not_plain_http_is_passed_by_and_shown_without_credentials() {
        let upstream: Uri = "https://api.dev.runwayml.com".parse().unwrap();
        for proxy in [
            "https://user:s3cret@proxy.example:3129",
            "socks5://user:s3cret@proxy.example:1080",
        ] {
            let matcher = Matcher::builder().https(proxy).build();
            assert!(
                matches!(route(&upstream, &matcher), Route::Direct(_)),
                "{proxy}"
            );
            let shown = shown(matcher.intercept(&upstream).unwrap().uri());
            assert!(shown.contains("proxy.example:"), "{shown}");
            assert!(
                !shown.contains("s3cret") && !shown.contains("user"),
                "{shown}"
            );
        }
        let with_credentials: Uri = "http://user:s3cret@proxy.example:3128".parse().unwrap();
        assert_eq!(shown(&with_credentials), "http://proxy.example:3128");
        // The port connected to when none is named.
        let bare: Uri = "http://proxy.example".parse().unwrap();
        assert_eq!(shown(&bare), "http://proxy.example:80");
    }

    /// An egress proxy that reads a request's head and answers `answer` (or, with
    /// `None`, holds the connection open and says nothing); its address.
    async fn egress_answering(answer: Option<Vec<u8>>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = BufReader::new(s);
            let mut line = String::new();
            while s.read_line(&mut line).await.is_ok_and(|n| n > 0) && !line.ends_with("\r\n\r\n") {
            }
            let mut s = s.into_inner();
            match answer {
                // Whether the exporter stays to read it all or not.
                Some(answer) => drop(s.write_all(&answer).await),
                None => drop(s.read(&mut [0u8; 1]).await),
            }
        });
        addr
    }

    /// A tunnel through `proxy` to a live upstream: what it opened, or its error.
    async fn tunnel_through(proxy: std::net::SocketAddr, within: Duration) -> Result<(), BoxError> {
        let port = echo().await;
        let upstream: Uri = format!("https://{UPSTREAM}:{port}").parse().unwrap();
        let matcher = Matcher::builder().https(format!("http://{proxy}")).build();
        let mut route = Route::to(&upstream, &matcher, HttpConnector::new(), within);
        assert!(matches!(route, Route::Tunnel(_)));
        std::future::poll_fn(|cx| route.poll_ready(cx))
            .await
            .unwrap();
        bounded(route.call(upstream)).await.map(drop)
    }

    /// What a hostile or broken egress proxy answers a CONNECT with fails that connection
    /// (a 502 for the client), however much it sends: a refusal (407), a megabyte of
    /// header junk (read up to hyper-util's 8 KiB, then refused), a silent close.
    #[tokio::test]
    async fn a_hostile_egress_answer_fails_the_connection() {
        let junk = [b"HTTP/1.1 200 OK\r\n".to_vec(), vec![b'x'; 1 << 20]].concat();
        for answer in [
            b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n".to_vec(),
            junk,
            Vec::new(),
        ] {
            let shown = String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned();
            let proxy = egress_answering(Some(answer)).await;
            assert!(
                tunnel_through(proxy, CONNECT_TIMEOUT).await.is_err(),
                "{shown:?}"
            );
        }
    }

    /// An egress proxy that takes the connection and never answers fails it within the
    /// connect timeout, as an upstream that never answers a connect does.
    #[tokio::test]
    async fn an_egress_proxy_that_stalls_fails_the_connection_within_the_connect_timeout() {
        let proxy = egress_answering(None).await;
        let e = tunnel_through(proxy, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("connect timeout"), "{e}");
    }

    #[tokio::test]
    async fn an_egress_proxy_that_is_down_fails_the_connection_not_the_process() {
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = free.local_addr().unwrap();
        drop(free);
        assert!(tunnel_through(gone, CONNECT_TIMEOUT).await.is_err());
    }
}
