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
//! not understand must not be silently dropped. Basic auth applies to every path; a bcrypt
//! cost above [`MAX_BCRYPT_COST`] is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Basic-auth users and their bcrypt hashes. Checking a password is
/// [`crate::http`]'s: bcrypt is slow on purpose and runs on threads of its own.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A hash of the users' highest cost, of a random password: what a user that does
    /// not exist is checked against, so that it costs what a real one does.
    unknown_user: String,
}

/// The highest bcrypt cost a web config may use. Each wrong password costs one bcrypt
/// check: at cost 12 that is about a quarter of a second of one core, and every step up
/// doubles it (cost 31 is days), which would let a few requests freeze the endpoint.
pub const MAX_BCRYPT_COST: u32 = 12;
/// The lowest cost bcrypt takes.
const MIN_BCRYPT_COST: u32 = 4;

impl BasicAuth {
    /// The user and password of an `Authorization: Basic` header.
    pub fn credentials(header: Option<&str>) -> Option<(String, String)> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(header?.strip_prefix("Basic ")?.trim())
            .ok()?;
        let (user, password) = String::from_utf8(raw)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))?;
        Some((user, password))
    }

    /// A user's bcrypt hash.
    pub fn hash(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// The hash a user that does not exist is checked against (never to let it in).
    pub fn unknown_user_hash(&self) -> &str {
        &self.unknown_user
    }
}

/// The cost of a bcrypt hash (`$2y$10$...` is 10), when it is one.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))?;
    let (cost, salted) = rest.split_once('$')?;
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
    let cost: u32 = cost.parse().ok().filter(|_| cost.len() == 2)?;
    (cost >= MIN_BCRYPT_COST && salted.len() == 53 && salted.bytes().all(alphabet)).then_some(cost)
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
        let mut highest = MIN_BCRYPT_COST;
        for (user, hash) in &file.basic_auth_users {
            match bcrypt_cost(hash) {
                None => return Err(err(format!("basic_auth_users.{user}: not a bcrypt hash"))),
                Some(cost) if cost > MAX_BCRYPT_COST => {
                    return Err(err(format!(
                        "basic_auth_users.{user}: bcrypt cost {cost} is above the limit of {MAX_BCRYPT_COST} (every wrong password costs one check; make the hash with htpasswd -nBC {MAX_BCRYPT_COST} or lower)"
                    )))
                }
                Some(cost) => highest = highest.max(cost),
            }
        }
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            let secret: [u8; 16] = rand::random();
            let unknown_user = bcrypt::hash(secret, highest)
                .map_err(|e| err(format!("cannot make a bcrypt hash: {e}")))?;
            Some(Arc::new(BasicAuth {
                users: file.basic_auth_users,
                unknown_user,
            }))
        };
        let tls = match file.tls_server_config {
            None => None,
            Some(t) => Some(Self::acceptor(&t).map_err(err)?),
        };
        Ok(WebSecurity { tls, auth })
    }

    /// A TLS acceptor of one certificate chain and key, without client certificates
    /// (the proxy's `tls_cert_file` and `tls_key_file`).
    pub fn server_tls(
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<tokio_rustls::TlsAcceptor, String> {
        Self::acceptor(&TlsFile {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            client_auth_type: None,
            client_ca_file: None,
        })
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
    fn basic_auth_reads_users_and_headers() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let w = load(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let auth = w.auth.unwrap();
        assert_eq!(auth.hash("alice"), Some(hash.as_str()));
        assert_eq!(auth.hash("bob"), None);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        assert_eq!(
            BasicAuth::credentials(Some(&header)),
            Some(("alice".into(), "pa:ss".into()))
        );
        for bad in [
            None,
            Some("Bearer x"),
            Some("Basic !!!"),
            Some("Basic YWxpY2U="),
        ] {
            assert_eq!(BasicAuth::credentials(bad), None, "{bad:?}");
        }
        assert!(w.tls.is_none());
    }

    #[test]
    fn a_bcrypt_cost_above_the_ceiling_is_refused() {
        let salt = "a".repeat(53);
        for cost in [4, 10, MAX_BCRYPT_COST] {
            let text = format!("basic_auth_users:\n  alice: '$2y${cost:02}${salt}'\n");
            assert!(load(&text).is_ok(), "cost {cost}");
        }
        for cost in [MAX_BCRYPT_COST + 1, 31] {
            let text = format!("basic_auth_users:\n  alice: '$2y${cost:02}${salt}'\n");
            let e = load(&text).err().expect("refused").to_string();
            assert!(
                e.contains(&format!("bcrypt cost {cost} is above the limit of 12")),
                "{e}"
            );
        }
        let bad_salt = "!".repeat(53);
        for malformed in [
            "$2y$1$x".to_string(),
            "$2y$xx$".into(),
            "$2y$10$short".into(),
            format!("$2y$03${salt}"),
            format!("$2y$10${bad_salt}"),
        ] {
            let text = format!("basic_auth_users:\n  alice: '{malformed}'\n");
            let e = load(&text).err().expect("refused").to_string();
            assert!(e.contains("not a bcrypt hash"), "{e}");
        }
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
