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

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
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

/// One HTTPS GET through rustls; `Err` when the connection or handshake fails.
fn https_get(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    auth: Option<&str>,
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
        let req =
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
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
        "[web]\nheader_read_timeout = \"1s\"\nmax_connections = 8\n[state]",
    );
    let d = Daemon::start(dir.path(), &cfg, &[]);
    // Slowloris: connections that send headers a byte at a time and never finish.
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
            t.elapsed() < Duration::from_millis(500),
            "a scrape took {:?}",
            t.elapsed()
        );
    }
    // After the header timeout the slow connections are closed by the server.
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    assert!(started.elapsed() < Duration::from_secs(10));
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
