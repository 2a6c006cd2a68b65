//! `--web.config.file`: TLS, client certificates and basic auth, in the Prometheus
//! exporter-toolkit format, so the same file works for node_exporter and this exporter:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/runway-exporter/tls.crt
//!   key_file: /etc/runway-exporter/tls.key
//!   client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: /etc/runway-exporter/clients-ca.crt
//! basic_auth_users:
//!   prometheus: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Unknown keys are refused rather than ignored: a security setting the exporter does
//! not understand must not be silently dropped. Basic auth applies to every path. A
//! password checked once is remembered (by a hash of user, password and bcrypt hash),
//! so a scrape every few seconds does not pay bcrypt's cost each time.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// A web config that cannot be used; `main` exits 64.
#[derive(Debug, thiserror::Error)]
#[error("web.config_file {path}: {problem}")]
pub struct WebConfigError {
    pub path: String,
    pub problem: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
}

/// Basic-auth users and the passwords already checked.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<u64>>,
}

/// At most this many checked credentials are remembered.
const MAX_VERIFIED: usize = 1024;

impl BasicAuth {
    /// Whether an `Authorization` header holds a user's right password. bcrypt is
    /// slow on purpose: call this off the async workers.
    pub fn check(&self, header: Option<&str>) -> bool {
        let Some((user, password)) = header
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let key = xxhash_rust::xxh3::xxh3_64(format!("{user}\0{password}\0{hash}").as_bytes());
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() >= MAX_VERIFIED {
                v.clear();
            }
            v.insert(key);
        }
        ok
    }
}

/// What the endpoint enforces.
#[derive(Clone, Default)]
pub struct WebSecurity {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

impl WebSecurity {
    /// Loads and checks a web config file.
    pub fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
        let err = |problem: String| WebConfigError {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        if text
            .lines()
            .all(|l| l.split('#').next().unwrap_or("").trim().is_empty())
        {
            return Ok(WebSecurity::default());
        }
        let file: File = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
        for (user, hash) in &file.basic_auth_users {
            if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
                return Err(err(format!("basic_auth_users.{user}: not a bcrypt hash")));
            }
        }
        let auth = (!file.basic_auth_users.is_empty()).then(|| {
            Arc::new(BasicAuth {
                users: file.basic_auth_users,
                verified: Mutex::new(HashSet::new()),
            })
        });
        let tls = match file.tls_server_config {
            None => None,
            Some(t) => Some(Self::acceptor(&t).map_err(err)?),
        };
        Ok(WebSecurity { tls, auth })
    }

    fn acceptor(t: &TlsFile) -> Result<tokio_rustls::TlsAcceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs(&t.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&t.key_file)
            .map_err(|e| format!("{}: {e}", t.key_file.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let client_auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
        let roots = || -> Result<Arc<rustls::RootCertStore>, String> {
            let ca = t
                .client_ca_file
                .as_ref()
                .ok_or_else(|| format!("client_auth_type {client_auth} needs client_ca_file"))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            Ok(Arc::new(roots))
        };
        let builder = match client_auth {
            "NoClientCert" => builder.with_no_client_auth(),
            "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            other => {
                return Err(format!(
                    "client_auth_type {other:?} is not supported (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
                ))
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<WebSecurity, WebConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, text).unwrap();
        WebSecurity::load(&p)
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_remembers() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let w = load(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let auth = w.auth.unwrap();
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.check(Some(&header("alice", "s3cret"))));
        assert!(auth.check(Some(&header("alice", "s3cret"))), "remembered");
        assert!(!auth.check(Some(&header("alice", "wrong"))));
        assert!(!auth.check(Some(&header("bob", "s3cret"))));
        assert!(!auth.check(Some("Bearer x")));
        assert!(!auth.check(None));
        assert!(w.tls.is_none());
    }

    #[test]
    fn bad_web_configs_are_refused() {
        for (text, needle) in [
            ("basic_auth_users:\n  alice: plain\n", "bcrypt"),
            (
                "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
                "/nonexistent.crt",
            ),
            ("http_server_config:\n  http2: true\n", "http_server_config"),
            ("tls_server_config: [\n", "web.config_file"),
        ] {
            let err = load(text).err().expect(text).to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(load("# nothing\n\n").unwrap().tls.is_none());
    }
}
