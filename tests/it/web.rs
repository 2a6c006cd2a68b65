//! The secured endpoint: TLS, client certificates and basic auth from a web config
//! file, with real certificates (rcgen), and slow clients that do not block scrapes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) server: (String, String),
    pub(crate) client: (String, String),
}

pub(crate) fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, ip: bool| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        if ip {
            params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf(vec!["localhost".into()], true),
        client: leaf(vec!["prometheus".into()], false),
    }
}

/// One HTTPS GET of `/metrics` through rustls; `Err` when the connection or handshake
/// fails.
fn https_get(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    auth: Option<&str>,
) -> Result<u16, String> {
    https_get_path(addr, ca_pem, client, auth, "/metrics")
}

/// One HTTPS GET of `path`: its status.
pub(crate) fn https_get_path(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    auth: Option<&str>,
    path: &str,
) -> Result<u16, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .map(|c| c.unwrap())
                        .collect(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        tls.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw))
            .await
            .map_err(|_| "read timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP status in {text:?}"))
    })
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn tls_and_basic_auth_from_the_web_config() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(dir.path(), "server.crt", &pki.server.0);
    let key = write(dir.path(), "server.key", &pki.server.1);
    let hash = bcrypt::hash("scrape-pass", 4).unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), ""),
        &["--web.config.file", &web],
    );
    assert_eq!(
        https_get(
            d.addr,
            &pki.ca_pem,
            None,
            Some(&basic("prometheus", "scrape-pass"))
        ),
        Ok(200)
    );
    assert_eq!(
        https_get(
            d.addr,
            &pki.ca_pem,
            None,
            Some(&basic("prometheus", "wrong"))
        ),
        Ok(401)
    );
    assert_eq!(
        https_get(
            d.addr,
            &pki.ca_pem,
            None,
            Some(&basic("nobody", "scrape-pass"))
        ),
        Ok(401)
    );
    assert_eq!(https_get(d.addr, &pki.ca_pem, None, None), Ok(401));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = get(d.addr, "/metrics");
    assert!(
        plain.map(|(status, _)| status != 200).unwrap_or(true),
        "plain HTTP must not be served"
    );
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(dir.path(), "server.crt", &pki.server.0);
    let key = write(dir.path(), "server.key", &pki.server.1);
    let ca = write(dir.path(), "ca.crt", &pki.ca_pem);
    let web = write(
        dir.path(),
        "web.yml",
        &format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n"),
    );
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), ""),
        &["--web.config.file", &web],
    );
    assert_eq!(
        https_get(d.addr, &pki.ca_pem, Some(&pki.client), None),
        Ok(200)
    );
    let refused = https_get(d.addr, &pki.ca_pem, None, None);
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
}

#[test]
fn slow_clients_do_not_block_scrapes_and_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "").replace(
        "[state]",
        "[web]\nheader_read_timeout = \"4s\"\nmax_connections = 8\n[state]",
    );
    let d = Daemon::start(dir.path(), &cfg, &[]);
    // Slowloris: connections that send headers a byte at a time and never finish. A
    // scrape held up behind them would wait out their 4 s header timeout; an idle
    // machine answers in a few ms, and the 2 s bound leaves room for a loaded one.
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(d.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    for _ in 0..10 {
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        let t = Instant::now();
        assert_eq!(get(d.addr, "/metrics").unwrap().0, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a scrape took {:?}",
            t.elapsed()
        );
    }
    // After the header timeout the slow connections are closed by the server.
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        // Closed (end of stream or a reset), or told 408; a read timeout means the
        // server kept it open.
        match s.read(&mut buf) {
            Ok(n) => {
                let answer = String::from_utf8_lossy(&buf[..n]);
                assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
            }
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the slow connection is still open"
            ),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A plain HTTP GET of /metrics with an Authorization header; the status.
fn get_with_auth(addr: SocketAddr, auth: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sighup_reloads_the_web_config() {
    let dir = tempfile::tempdir().unwrap();
    let users = |password: &str| {
        format!(
            "basic_auth_users:\n  prometheus: '{}'\n",
            bcrypt::hash(password, 4).unwrap()
        )
    };
    let web = write(dir.path(), "web.yml", &users("one"));
    let mut d = Daemon::start(
        dir.path(),
        &config(dir.path(), ""),
        &["--web.config.file", &web],
    );
    assert_eq!(get_with_auth(d.addr, &basic("prometheus", "one")), 200);
    assert_eq!(get_with_auth(d.addr, &basic("prometheus", "two")), 401);
    write(dir.path(), "web.yml", &users("two"));
    d.signal("HUP");
    d.wait_log(
        "Configuration reloaded; counters kept.",
        Duration::from_secs(10),
    );
    assert_eq!(get_with_auth(d.addr, &basic("prometheus", "two")), 200);
    assert_eq!(get_with_auth(d.addr, &basic("prometheus", "one")), 401);
    // A broken web config is refused; the running one stays.
    write(
        dir.path(),
        "web.yml",
        "basic_auth_users:\n  prometheus: not-a-hash\n",
    );
    d.signal("HUP");
    d.wait_log(
        "Reload refused: the new configuration is not valid. The running one stays.",
        Duration::from_secs(10),
    );
    assert_eq!(get_with_auth(d.addr, &basic("prometheus", "two")), 200);
}

/// A slowloris client: a connection that sends the start of a request, then one header
/// line at a time, and never finishes.
struct Dripper {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Times the server closed it.
    closed: usize,
}

impl Dripper {
    fn open(addr: SocketAddr) -> Dripper {
        let mut d = Dripper {
            addr,
            stream: None,
            closed: 0,
        };
        d.reconnect();
        d
    }

    fn reconnect(&mut self) {
        self.stream = TcpStream::connect(self.addr).ok().and_then(|mut s| {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        });
    }

    /// One more header line; a connection the server closed is opened again, as an
    /// attacker would.
    fn drip(&mut self) {
        let sent = self
            .stream
            .as_mut()
            .is_some_and(|s| s.write_all(b"X-Drip: 1\r\n").is_ok());
        if !sent {
            self.closed += 1;
            self.reconnect();
        }
    }
}

#[test]
fn two_hundred_slowloris_connections_do_not_delay_a_scrape() {
    // docs/security.md's claim, with web.max_connections at its default (64) and
    // web.header_read_timeout longer than its default: a slow connection is never
    // closed by its own deadline here, so a scrape that got in without the server
    // closing waiting connections for room would have waited a minute, far beyond
    // `get`'s 10 s read timeout. The bound below (5 s) is half that timeout: it tells
    // the two apart however loaded the machine is (an idle one answers within 0.2 s).
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        config(dir.path(), "").replace("[state]", "[web]\nheader_read_timeout = \"60s\"\n[state]");
    let d = Daemon::start(dir.path(), &cfg, &[]);
    let mut drippers: Vec<Dripper> = (0..200).map(|_| Dripper::open(d.addr)).collect();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        drippers.iter_mut().for_each(Dripper::drip);
        let t = Instant::now();
        let (status, body) = get(d.addr, "/metrics").unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(status, 200);
        assert!(body.contains("runway_tasks_total"));
    }
    assert!(
        slowest < Duration::from_secs(5),
        "a scrape took {slowest:?} beside 200 slowloris connections"
    );
    // They were really there: the server had to close some of them to make room.
    let closed: usize = drippers.iter().map(|d| d.closed).sum();
    assert!(closed >= 100, "only {closed} slow connections were closed");
}

#[test]
fn the_tls_handshake_and_the_first_headers_share_one_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let cert = write(dir.path(), "server.crt", &pki.server.0);
    let key = write(dir.path(), "server.key", &pki.server.1);
    let web = write(
        dir.path(),
        "web.yml",
        &format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"),
    );
    let cfg =
        config(dir.path(), "").replace("[state]", "[web]\nheader_read_timeout = \"4s\"\n[state]");
    let d = Daemon::start(dir.path(), &cfg, &["--web.config.file", &web]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held = rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        let connected = Instant::now();
        // The attack: half the deadline spent before the handshake starts (the other
        // half is for the handshake, however loaded the machine)...
        tokio::time::sleep(Duration::from_secs(2)).await;
        let name = ServerName::IpAddress(d.addr.ip().into());
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        // ...then headers that never end.
        tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let end = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await;
        assert!(end.is_ok(), "the connection was never closed");
        connected.elapsed()
    });
    // One deadline: closed 4 s after the accept. Two in a row would be 2 + 4 s.
    assert!(
        held < Duration::from_millis(5500),
        "a slow handshake and slow headers held the connection {held:?}"
    );
    // Not cut off early either: the handshake made it, and the headers had until 4 s
    // (less the moments between the accept and `connected`, on a loaded machine).
    assert!(
        held >= Duration::from_millis(3500),
        "closed after {held:?}, before the 4 s deadline"
    );
}

#[test]
fn a_flood_of_wrong_passwords_starves_neither_scrapes_nor_counting() {
    let dir = tempfile::tempdir().unwrap();
    // Cost 10, what htpasswd -B makes: about 50-100 ms of a core per check.
    let hash = bcrypt::hash("right-pass", 10).unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), ""),
        &["--web.config.file", &web],
    );
    let right = format!("Authorization: {}\r\n", basic("prometheus", "right-pass"));
    let scrape = || timed_scrape(d.addr, &right);
    // The scraper is known before the flood, as a Prometheus scraping for a while is.
    scrape();
    let log = dir.path().join("app.log");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_for = Duration::from_secs(10);
    let flooders: Vec<_> = (0..8)
        .map(|t| {
            let (addr, stop) = (d.addr, stop.clone());
            std::thread::spawn(move || {
                let mut answers = std::collections::BTreeMap::<String, u32>::new();
                let started = Instant::now();
                // Up to 100 requests a second each, 800 in all: more than three times
                // the flood that froze the daemon before (3,000 in 13 s), without the
                // flooders themselves taking the two cores the daemon runs on.
                for i in 0..1_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || started.elapsed() > flood_for
                    {
                        break;
                    }
                    let due = started + Duration::from_millis(10) * i;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let wrong = format!(
                        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                        basic("prometheus", &format!("guess-{t}-{i}"))
                    );
                    // Half the flooders hang up at once, half wait for the answer.
                    let status = flood_once(addr, &wrong, t % 2 == 0);
                    *answers.entry(status).or_default() += 1;
                }
                answers
            })
        })
        .collect();
    let (slowest_scrape, slowest_count, rounds) =
        scrape_and_count(&log, flood_for - Duration::from_secs(1), scrape);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = std::collections::BTreeMap::<String, u32>::new();
    for f in flooders {
        for (status, n) in f.join().unwrap() {
            *answers.entry(status).or_default() += n;
        }
    }
    let during = (slowest_scrape, slowest_count, rounds);
    assert_the_flood_was_harmless(&answers, during, 5);
}

/// A scrape of `/metrics` with a remembered password: the page and how long it took.
fn timed_scrape(addr: SocketAddr, auth_line: &str) -> (String, Duration) {
    let t = Instant::now();
    let (head, body) = get_raw(addr, "/metrics", auth_line).unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    (String::from_utf8(body).unwrap(), t.elapsed())
}

/// For `during`: appends a line to `log` and scrapes until it is counted, again and
/// again. The slowest scrape, the slowest count, and the rounds.
fn scrape_and_count(
    log: &Path,
    during: Duration,
    scrape: impl Fn() -> (String, Duration),
) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let (mut slowest_scrape, mut slowest_count, mut rounds) = (Duration::ZERO, Duration::ZERO, 0);
    while started.elapsed() < during {
        rounds += 1;
        append(
            log,
            format!("{{\"id\":\"t{rounds}\",\"status\":\"SUCCEEDED\"}}\n").as_bytes(),
        );
        let appended = Instant::now();
        loop {
            let (m, took) = scrape();
            slowest_scrape = slowest_scrape.max(took);
            if sum(&m, "runway_tasks_total", &["status=\"SUCCEEDED\""]) == rounds as f64 {
                break;
            }
            assert!(
                appended.elapsed() < Duration::from_secs(5),
                "a line appended during the flood was not counted within 5 s"
            );
        }
        slowest_count = slowest_count.max(appended.elapsed());
    }
    (slowest_scrape, slowest_count, rounds)
}

#[test]
fn a_new_right_password_gets_in_during_a_flood_from_many_addresses() {
    let dir = tempfile::tempdir().unwrap();
    // Cost 10. The scraper's password is remembered before the flood; the newcomers'
    // were never checked (as after a restart, or a reload that changed their hashes).
    let newcomers: Vec<(String, String)> = (0..3)
        .map(|n| (format!("newcomer{n}"), format!("pass-{n}")))
        .collect();
    let mut users = format!(
        "basic_auth_users:\n  prometheus: '{}'\n",
        bcrypt::hash("right-pass", 10).unwrap()
    );
    for (user, password) in &newcomers {
        users += &format!("  {user}: '{}'\n", bcrypt::hash(password, 10).unwrap());
    }
    let web = write(dir.path(), "web.yml", &users);
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), ""),
        &["--web.config.file", &web],
    );
    let right = format!("Authorization: {}\r\n", basic("prometheus", "right-pass"));
    let scrape = || timed_scrape(d.addr, &right);
    scrape();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (checked, checked_rx) = std::sync::mpsc::channel();
    let flood = flood_from_many(d.addr, FLOOD_ADDRESSES, stop.clone(), checked);
    // The flood is under way once each of its 40 addresses has been given a check: from
    // then on, every one of them owes more than a newcomer. (Until then a newcomer is one
    // of 41 never checked: see the threat model in docs/security.md.) First come first served, some
    // addresses are never given one: the newcomers come after 15 s then.
    let mut addresses = std::collections::BTreeSet::new();
    let warming = Instant::now();
    while addresses.len() < FLOOD_ADDRESSES {
        let left = Duration::from_secs(15).saturating_sub(warming.elapsed());
        let Ok(address) = checked_rx.recv_timeout(left) else {
            break;
        };
        addresses.insert(address);
    }
    let warmed_up = warming.elapsed();
    // The newcomers, one after another, each from an address of its own, one try each,
    // while the scraper scrapes and counts.
    let newcomers = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut answered = Vec::new();
        for (n, (user, password)) in newcomers.iter().enumerate() {
            let from = std::net::IpAddr::from([127, 0, 0, 60 + n as u8]);
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                basic(user, password)
            );
            let t = Instant::now();
            let status = rt.block_on(request_from(from, d.addr, &request));
            answered.push((status, t.elapsed()));
        }
        answered
    });
    // The flood goes on for 10 s at least, 6 s of them with the newcomers.
    let during = Duration::from_secs(10)
        .saturating_sub(warmed_up)
        .max(Duration::from_secs(6));
    let (slowest_scrape, slowest_count, rounds) =
        scrape_and_count(&dir.path().join("app.log"), during, scrape);
    let answered = newcomers.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = flood.join().unwrap();
    // 0.1-0.35 s on an idle machine; 3 s leaves room for a loaded one. Without turns
    // by debt, the first newcomer was answered after 4.2 s and the others 429 at once.
    for (status, took) in &answered {
        assert!(
            status == "200" && *took < Duration::from_secs(3),
            "a new right password was answered {status} after {took:?} during the flood \
             (all: {answered:?}; the flood: {answers:?}; {} of its addresses checked after \
             {warmed_up:?})",
            addresses.len()
        );
    }
    let during = (slowest_scrape, slowest_count, rounds);
    assert_the_flood_was_harmless(&answers, during, 3);
}

/// The flooding addresses: 127.0.0.2 to 127.0.0.41.
const FLOOD_ADDRESSES: usize = 40;
/// A flood ends by then whatever happens.
const FLOOD_AT_MOST: Duration = Duration::from_secs(25);

/// Until `stop` (at most [`FLOOD_AT_MOST`]), wrong passwords from 60 clients spread over
/// `addresses` addresses from 127.0.0.2 on, on one thread: each client waits for its answer, sends its next guess at
/// once after a 401 and 100 ms after a 429 (about 600 requests a second in all). Each
/// address is sent on `checked` when its first guess has been checked (401). The answers
/// by status, when joined.
fn flood_from_many(
    addr: SocketAddr,
    addresses: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    checked: std::sync::mpsc::Sender<std::net::IpAddr>,
) -> std::thread::JoinHandle<std::collections::BTreeMap<String, u32>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let clients = (0..60).map(|c| {
            let (checked, stop) = (checked.clone(), stop.clone());
            let from = std::net::IpAddr::from([127, 0, 0, 2 + (c % addresses) as u8]);
            async move {
                let mut answers = std::collections::BTreeMap::<String, u32>::new();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || started.elapsed() > FLOOD_AT_MOST
                    {
                        break;
                    }
                    let wrong = format!(
                        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
                        basic("prometheus", &format!("guess-{c}-{i}"))
                    );
                    let status = request_from(from, addr, &wrong).await;
                    if status == "401" && !answers.contains_key("401") {
                        let _ = checked.send(from);
                    }
                    if status != "401" {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    *answers.entry(status).or_default() += 1;
                }
                answers
            }
        });
        let tasks = rt.block_on(async {
            let handles: Vec<_> = clients.map(|c| tokio::spawn(c)).collect();
            let mut all = Vec::new();
            for h in handles {
                all.push(h.await.unwrap());
            }
            all
        });
        let mut answers = std::collections::BTreeMap::new();
        for (status, n) in tasks.into_iter().flatten() {
            *answers.entry(status).or_default() += n;
        }
        answers
    })
}

/// One request from `from`, a loopback address the client's socket is bound to; the
/// status answered, or why there is none.
async fn request_from(from: std::net::IpAddr, to: SocketAddr, request: &str) -> String {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return "no socket".into();
    };
    if socket.bind(SocketAddr::new(from, 0)).is_err() {
        return "bind failed".into();
    }
    let Ok(mut s) = socket.connect(to).await else {
        return "connect failed".into();
    };
    if s.write_all(request.as_bytes()).await.is_err() {
        return "write failed".into();
    }
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
        Ok(Ok(_)) => String::from_utf8_lossy(&head[9..12]).into_owned(),
        _ => "gave up".into(),
    }
}

/// A flood of wrong passwords was strong enough to show something (500 refusals or
/// more), let nobody in, and starved neither scrapes (under 3 s) nor counting (under 4 s)
/// over at least `min_rounds` rounds of `scrape_and_count`. An idle machine scrapes in
/// tens of ms and counts in about a commit interval (200 ms); the bounds leave room for
/// a loaded one (in another test, a CI run took 1.01 s for a scrape of 0.1 s idle).
/// Starving, as before the bcrypt queue, froze counting for many seconds.
fn assert_the_flood_was_harmless(
    answers: &std::collections::BTreeMap<String, u32>,
    (slowest_scrape, slowest_count, rounds): (Duration, Duration, usize),
    min_rounds: usize,
) {
    let refused =
        answers.get("401").copied().unwrap_or(0) + answers.get("429").copied().unwrap_or(0);
    assert!(
        refused >= 500,
        "the flood was too weak to show anything: {answers:?}"
    );
    assert_eq!(
        answers.get("200"),
        None,
        "a wrong password got in: {answers:?}"
    );
    assert!(rounds >= min_rounds, "{rounds} rounds");
    assert!(
        slowest_scrape < Duration::from_secs(3),
        "a right-password scrape took {slowest_scrape:?} during the flood ({answers:?})"
    );
    assert!(
        slowest_count < Duration::from_secs(4),
        "counting a line took {slowest_count:?} during the flood ({answers:?})"
    );
}

/// Sends one request; the status answered, or why there is none.
fn flood_once(addr: SocketAddr, request: &str, hang_up: bool) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return "connect failed".into();
    };
    if s.write_all(request.as_bytes()).is_err() {
        return "write failed".into();
    }
    if hang_up {
        return "hung up".into();
    }
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut head = [0u8; 12];
    match s.read_exact(&mut head) {
        Ok(()) => String::from_utf8_lossy(&head[9..12]).into_owned(),
        Err(_) => "gave up".into(),
    }
}

#[test]
fn bursts_of_idle_connections_never_stall_the_accept_loop() {
    // More connections than places (64), none sending a byte, in bursts: each burst
    // finds the places taken by connections whose tasks may not have run yet. With a
    // header-read timeout of a minute, a request that got in without the server closing
    // idle connections for room would wait far beyond `get`'s 10 s read timeout; 5 s
    // (half of it) tells the two apart on a loaded machine too.
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        config(dir.path(), "").replace("[state]", "[web]\nheader_read_timeout = \"60s\"\n[state]");
    let d = Daemon::start(dir.path(), &cfg, &[]);
    for round in 0..6 {
        let idle: Vec<TcpStream> = (0..80)
            .map(|_| TcpStream::connect(d.addr).unwrap())
            .collect();
        let t = Instant::now();
        let (status, _) = get(d.addr, "/-/healthy").unwrap();
        assert_eq!(status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "round {round}: a request took {:?} behind 80 idle connections",
            t.elapsed()
        );
        drop(idle);
    }
}

#[test]
fn a_connect_flood_does_not_shut_out_a_client_that_sends_its_request_late() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Bare connections as fast as two threads can open them (thousands a second), at
    // most 300 each held open, for at most 10 s.
    let (flooding, flood_on) = std::sync::mpsc::channel();
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop, flooding) = (d.addr, stop.clone(), flooding.clone());
            std::thread::spawn(move || {
                let mut open = std::collections::VecDeque::new();
                let started = Instant::now();
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(10)
                {
                    if let Ok(s) = TcpStream::connect(addr) {
                        open.push_back(s);
                    }
                    n += 1;
                    if open.len() > 300 {
                        open.pop_front();
                    }
                    if n == 300 {
                        let _ = flooding.send(());
                    }
                }
                n
            })
        })
        .collect();
    flood_on.recv().unwrap();
    // A client a round trip away: it sends its request 20 ms after connecting. Every
    // connection has 100 ms; the other 80 are for this thread oversleeping on a loaded
    // machine. Without that minimum (MIN_WAIT 0, tried), the client is closed once 64
    // newer connections come: it was shut out in 6 of 8 runs at 20 ms, and in 1 of 3 at
    // the 50 ms this test waited before.
    let mut answered = 0;
    for _ in 0..10 {
        let mut s = TcpStream::connect(d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if s.write_all(request).is_err() {
            continue;
        }
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() && &head[9..12] == b"200" {
            answered += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let connects: u32 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    // The places were full: the server had to close connections for room.
    assert!(
        d.count_logs("All web.max_connections places are taken") >= 1,
        "the flood was too weak to fill the places ({connects} connections)"
    );
    assert_eq!(answered, 10, "beside {connects} bare connections");
}

#[test]
fn a_client_still_sending_its_headers_does_not_hold_up_shutdown() {
    // Defaults: a 10 s header deadline and a 10 s grace period.
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config(dir.path(), ""), &[]);
    let mut slow = TcpStream::connect(d.addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The server has the connection (a request on another one is answered after it).
    assert_eq!(get(d.addr, "/-/healthy").unwrap().0, 200);
    let t = Instant::now();
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(20)).success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for a client sending its headers",
        t.elapsed()
    );
}
