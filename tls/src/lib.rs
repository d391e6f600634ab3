//! yunjian-tls: TLS from PEM files, for the three places that speak it: the dashboard's HTTPS
//! (`[http.tls]`), the embedded broker's MQTT over TLS (`[broker.tls]`) and the agents, which
//! check the broker's certificate against the CA they are configured with (`mqtt.tls_ca`).
//!
//! Everything is read once at start-up, and every failure is a [`TlsError`] that names the file
//! and what is wrong with it, so a bad certificate stops the service with a clear message
//! instead of failing each handshake later.
//!
//! rustls with the *ring* provider: no aws-lc (which needs cmake and NASM to build), and the same
//! rustls as rumqttc's TLS transport, so the agents and the aggregator share one TLS stack.

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use tokio_rustls::rustls;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
pub use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// A server's certificate and key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// The private key, PEM: PKCS#8 (`BEGIN PRIVATE KEY`), RSA or EC.
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {path} is not valid PEM: {problem}")]
    Pem { path: PathBuf, problem: String },
    #[error("TLS: {path} holds no {what} (expected a PEM block `-----BEGIN {what}-----`)")]
    Missing { path: PathBuf, what: &'static str },
    #[error("TLS: {path}: {problem}")]
    Unusable { path: PathBuf, problem: String },
}

/// The server side: a TLS acceptor for `files`, HTTP/1.1 or MQTT inside.
pub fn acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, e))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Unusable {
            path: files.key.clone(),
            problem: format!("the key cannot be used with {}: {e}", files.cert.display()),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client side: trust the certificates in the PEM file `ca` (and only those).
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| TlsError::Unusable {
            path: ca.to_path_buf(),
            problem: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    let path = path.to_path_buf();
    match e {
        pem::Error::Io(source) => TlsError::Read { path, source },
        pem::Error::NoItemsFound => TlsError::Missing {
            path,
            what: "PRIVATE KEY",
        },
        other => TlsError::Pem {
            path,
            problem: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_wrong_files_are_named_with_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let e = client_config(&text).unwrap_err().to_string();
        assert!(
            e.contains("notes.txt") && e.contains("-----BEGIN CERTIFICATE-----"),
            "{e}"
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = acceptor(
            &TlsFiles {
                cert: broken,
                key: text,
            },
            &[],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("broken.pem") && e.contains("not valid PEM"),
            "{e}"
        );
    }
}
