//! How the proxy reaches its upstream: directly, or through the egress proxy that the
//! environment names, as the SDKs and the exporter's own API client do (`HTTPS_PROXY`,
//! `ALL_PROXY` and `NO_PROXY`, either case; hyper-util's matcher reads them, reqwest's
//! rules).
//!
//! - Only an `https` upstream (Runway's API) goes through one: a `CONNECT` tunnel to the
//!   upstream's host and port (hyper-util's `Tunnel`), with the proxy's credentials when
//!   its URL carries them, and TLS to the upstream inside it. A plain-`http` upstream is
//!   a local one (a stand-in, a sidecar) and is reached directly.
//! - The egress proxy itself is spoken to in plain HTTP (`http://host:port`, the usual
//!   form of `HTTPS_PROXY`). One named with another scheme (`https://`, `socks5://`) is
//!   not used: the upstream is reached directly, with a warning at start-up, as before
//!   egress proxies were read.
//! - Its address is logged at start-up, never its credentials.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
#[derive(Clone, Debug)]
pub enum Route {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

impl Route {
    /// The route to `upstream` that `matcher` (the environment's proxy settings) gives,
    /// over `http`.
    pub fn to(upstream: &Uri, matcher: &Matcher, http: HttpConnector) -> Route {
        if upstream.scheme_str() != Some("https") {
            return Route::Direct(http);
        }
        let Some(intercept) = matcher.intercept(upstream) else {
            return Route::Direct(http);
        };
        let proxy = intercept.uri();
        if proxy.scheme_str() != Some("http") {
            tracing::warn!(egress_proxy = %shown(proxy), "Proxy: the egress proxy named by HTTPS_PROXY or ALL_PROXY is not an http:// URL, and only plain-HTTP egress proxies are supported; the upstream is reached directly (name its host in NO_PROXY to silence this).");
            return Route::Direct(http);
        }
        tracing::info!(egress_proxy = %shown(proxy), "Proxy: the upstream is reached through the egress proxy named by HTTPS_PROXY or ALL_PROXY (a CONNECT tunnel).");
        let tunnel = Tunnel::new(proxy.clone(), http);
        Route::Tunnel(match intercept.basic_auth() {
            Some(auth) => tunnel.with_auth(auth.clone()),
            None => tunnel,
        })
    }
}

/// An egress proxy as logged: its scheme, host and port, never the credentials its URL
/// may carry.
fn shown(proxy: &Uri) -> String {
    let port = proxy.port_u16().map_or(String::new(), |p| format!(":{p}"));
    format!(
        "{}://{}{port}",
        proxy.scheme_str().unwrap_or("?"),
        proxy.host().unwrap_or("?")
    )
}

impl Service<Uri> for Route {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Route::Direct(http) => http.poll_ready(cx).map_err(Into::into),
            Route::Tunnel(tunnel) => tunnel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, upstream: Uri) -> Connecting {
        match self {
            Route::Direct(http) => {
                let connecting = http.call(upstream);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Route::Tunnel(tunnel) => {
                let connecting = tunnel.call(upstream);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

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
            let target = text.split_whitespace().nth(1).unwrap().to_string();
            let _ = told.send(text);
            let mut upstream = TcpStream::connect(target).await.unwrap();
            let mut client = client.into_inner();
            client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        (addr, head)
    }

    /// An upstream that answers the first bytes it gets with `got: ` and them.
    async fn echo() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&[b"got: ", &buf[..n]].concat()).await.unwrap();
        });
        addr
    }

    async fn say_hello(route: &mut Route, upstream: Uri) -> String {
        std::future::poll_fn(|cx| route.poll_ready(cx))
            .await
            .unwrap();
        let mut io = route.call(upstream).await.unwrap().into_inner();
        io.write_all(b"hello").await.unwrap();
        let mut answer = String::new();
        io.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn an_https_upstream_goes_through_the_egress_proxy_with_its_credentials() {
        let (proxy, head) = egress().await;
        let up = echo().await;
        let matcher = Matcher::builder()
            .https(format!("http://user:s3cret@{proxy}"))
            .build();
        let upstream: Uri = format!("https://{up}").parse().unwrap();
        let mut route = Route::to(&upstream, &matcher, HttpConnector::new());
        assert!(matches!(route, Route::Tunnel(_)));
        assert_eq!(say_hello(&mut route, upstream).await, "got: hello");
        let head = head.await.unwrap();
        assert!(
            head.starts_with(&format!("CONNECT {up} HTTP/1.1\r\n")),
            "{head}"
        );
        // user:s3cret in Basic.
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic dxnlcjpzm2nyzxq="),
            "{head}"
        );
    }

    #[tokio::test]
    async fn what_no_proxy_names_a_plain_http_upstream_and_no_proxy_at_all_go_direct() {
        let up = echo().await;
        let https: Uri = format!("https://{up}").parse().unwrap();
        let routes = [
            (Matcher::builder().build(), https.clone()),
            (
                Matcher::builder()
                    .https("http://127.0.0.1:9")
                    .no("127.0.0.1")
                    .build(),
                https.clone(),
            ),
            (
                Matcher::builder()
                    .all("http://127.0.0.1:9")
                    .http("http://127.0.0.1:9")
                    .build(),
                format!("http://{up}").parse().unwrap(),
            ),
        ];
        for (matcher, upstream) in &routes {
            let route = Route::to(upstream, matcher, HttpConnector::new());
            assert!(matches!(route, Route::Direct(_)), "{matcher:?} {upstream}");
        }
        // And direct means direct: port 9 (nothing there) is never tried.
        let mut route = Route::to(&routes[1].1, &routes[1].0, HttpConnector::new());
        let mut plain = HttpConnector::new();
        plain.enforce_http(false);
        if let Route::Direct(http) = &mut route {
            *http = plain;
        }
        assert_eq!(say_hello(&mut route, https).await, "got: hello");
    }

    #[test]
    fn an_egress_proxy_that_is_not_plain_http_is_passed_by_and_shown_without_credentials() {
        let upstream: Uri = "https://api.dev.runwayml.com".parse().unwrap();
        for proxy in [
            "https://user:s3cret@proxy.example:3129",
            "socks5://user:s3cret@proxy.example:1080",
        ] {
            let matcher = Matcher::builder().https(proxy).build();
            let route = Route::to(&upstream, &matcher, HttpConnector::new());
            assert!(matches!(route, Route::Direct(_)), "{proxy}");
            let shown = shown(matcher.intercept(&upstream).unwrap().uri());
            assert!(shown.contains("proxy.example:"), "{shown}");
            assert!(
                !shown.contains("s3cret") && !shown.contains("user"),
                "{shown}"
            );
        }
        let with_credentials: Uri = "http://user:s3cret@proxy.example:3128".parse().unwrap();
        assert_eq!(shown(&with_credentials), "http://proxy.example:3128");
    }

    /// An egress proxy that reads a request's head and answers `answer`; its address.
    async fn egress_answering(answer: Vec<u8>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = BufReader::new(s);
            let mut line = String::new();
            while s.read_line(&mut line).await.is_ok_and(|n| n > 0) && !line.ends_with("\r\n\r\n") {
            }
            // Whether the exporter stays to read it all or not.
            let _ = s.into_inner().write_all(&answer).await;
        });
        addr
    }

    /// What a hostile or broken egress proxy answers a CONNECT with fails that connection
    /// (a 502 for the client), within bounded memory: a refusal (407), a megabyte of
    /// header junk (read up to 8 KiB: hyper-util's bound), and a silent close.
    #[tokio::test]
    async fn a_hostile_egress_answer_fails_the_connection_in_bounded_memory() {
        let upstream: Uri = "https://127.0.0.1:1".parse().unwrap();
        let junk = [b"HTTP/1.1 200 OK\r\n".to_vec(), vec![b'x'; 1 << 20]].concat();
        for answer in [
            b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n".to_vec(),
            junk,
            Vec::new(),
        ] {
            let shown = String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned();
            let proxy = egress_answering(answer).await;
            let matcher = Matcher::builder().https(format!("http://{proxy}")).build();
            let mut route = Route::to(&upstream, &matcher, HttpConnector::new());
            std::future::poll_fn(|cx| route.poll_ready(cx))
                .await
                .unwrap();
            assert!(route.call(upstream.clone()).await.is_err(), "{shown:?}");
        }
    }

    #[tokio::test]
    async fn an_egress_proxy_that_is_down_fails_the_connection_not_the_process() {
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = free.local_addr().unwrap();
        drop(free);
        let matcher = Matcher::builder().https(format!("http://{gone}")).build();
        let upstream: Uri = "https://127.0.0.1:1".parse().unwrap();
        let mut route = Route::to(&upstream, &matcher, HttpConnector::new());
        std::future::poll_fn(|cx| route.poll_ready(cx))
            .await
            .unwrap();
        assert!(route.call(upstream).await.is_err());
    }
}
