//! The floor under `benches/proxy.sh --instructions`: the least work an HTTP/1.1
//! keep-alive relay does a request, to set the exporter's and nginx's instructions a
//! request beside. Not a proxy: one upstream connection per client connection, bodies of
//! a stated `Content-Length` only, headers passed on as they came (no hop-by-hop ones
//! removed, no `Host` set), nothing checked, observed or counted, no timeouts, one
//! thread. What it does do, every relay must: parse each head (with `httparse`, the
//! parser hyper uses), find the body's end, and move the bytes with one `read` and one
//! `write` a message a side on tokio.
//!
//! usage: relay-floor UPSTREAM-ADDR LISTEN-ADDR   (both 127.0.0.1:PORT)
#![forbid(unsafe_code)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A head's length and its body's (`Content-Length`, 0 without one) once `buf` holds the
/// whole head; `None` before.
fn framing(buf: &[u8], request: bool) -> std::io::Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let parsed = if request {
        httparse::Request::new(&mut headers).parse(buf)
    } else {
        httparse::Response::new(&mut headers).parse(buf)
    };
    let httparse::Status::Complete(head) = parsed.map_err(std::io::Error::other)? else {
        return Ok(None);
    };
    let length = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
        })
        .map_or(Ok(0), |n| {
            n.ok_or_else(|| std::io::Error::other("bad Content-Length"))
        })?;
    Ok(Some((head, length)))
}

/// Moves one message from `from` to `to`, `buf` holding what was read past the last;
/// false when `from` closed between messages.
async fn relay(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: bool,
) -> std::io::Result<bool> {
    loop {
        if let Some((head, body)) = framing(buf, request)? {
            if buf.len() >= head + body {
                to.write_all(&buf[..head + body]).await?;
                buf.drain(..head + body);
                return Ok(true);
            }
        }
        buf.reserve(8192);
        if from.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
}

async fn serve(mut client: TcpStream, upstream: std::net::SocketAddr) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    up.set_nodelay(true)?;
    let (mut asked, mut answered) = (Vec::new(), Vec::new());
    while relay(&mut client, &mut up, &mut asked, true).await?
        && relay(&mut up, &mut client, &mut answered, false).await?
    {}
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(upstream), Some(listen)) = (args.next(), args.next()) else {
        eprintln!("usage: relay-floor UPSTREAM-ADDR LISTEN-ADDR");
        std::process::exit(64);
    };
    let upstream: std::net::SocketAddr = upstream.parse().map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                if let Err(e) = serve(client, upstream).await {
                    eprintln!("relay-floor: {e}");
                }
            });
        }
    })
}
