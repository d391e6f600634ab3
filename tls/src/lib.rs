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
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
};
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
    #[error("TLS: server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
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
    let config = Arc::new(config);
    check_pair(config.clone()).map_err(|problem| TlsError::Unusable {
        path: files.key.clone(),
        problem: format!(
            "the key does not belong to the certificate in {}: {problem}",
            files.cert.display()
        ),
    })?;
    Ok(TlsAcceptor::from(config))
}

/// Prove that the server's key belongs to its certificate (rustls 0.22 does not compare them):
/// one handshake in memory, with a client that checks only the server's signature against the
/// certificate's public key. The chain is for the agents and browsers to judge.
fn check_pair(server: Arc<ServerConfig>) -> Result<(), String> {
    let verifier =
        SignatureOnly(rustls::crypto::ring::default_provider().signature_verification_algorithms);
    let client = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let name = ServerName::try_from("yunjian.invalid").map_err(|e| e.to_string())?;
    let mut client = ClientConnection::new(Arc::new(client), name).map_err(|e| e.to_string())?;
    let mut server = ServerConnection::new(server).map_err(|e| e.to_string())?;
    // a full handshake takes two round trips; a few more flights are slack
    for _ in 0..8 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        let mut flight = Vec::new();
        client.write_tls(&mut flight).map_err(|e| e.to_string())?;
        let mut rd = flight.as_slice();
        while !rd.is_empty() {
            server.read_tls(&mut rd).map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| e.to_string())?;
        }
        flight.clear();
        server.write_tls(&mut flight).map_err(|e| e.to_string())?;
        let mut rd = flight.as_slice();
        while !rd.is_empty() {
            client.read_tls(&mut rd).map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| e.to_string())?;
        }
    }
    Err("the handshake with itself did not finish".into())
}

/// For [`check_pair`] only: accepts any certificate, verifies the handshake signature with it.
#[derive(Debug)]
struct SignatureOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The client side: trust the certificates in the PEM file `ca` (and only those). The server's
/// certificate must be issued for `server_name` when given, else for the name or address the
/// client connects to.
pub fn client_config(ca: &Path, server_name: Option<&str>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| TlsError::Unusable {
            path: ca.to_path_buf(),
            problem: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let builder = ClientConfig::builder();
    let config = match server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.to_string())
                .map_err(|_| TlsError::ServerName(name.to_string()))?;
            let inner = WebPkiServerVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError::Unusable {
                    path: ca.to_path_buf(),
                    problem: e.to_string(),
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NamedServer { inner, name }))
        }
    };
    Ok(Arc::new(config.with_no_client_auth()))
}

/// The usual verification (chain to the CA, validity, signatures), for a fixed server name
/// instead of the address connected to.
#[derive(Debug)]
struct NamedServer {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
        let e = client_config(&missing, None).unwrap_err().to_string();
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let e = client_config(&text, None).unwrap_err().to_string();
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

    /// A self-signed certificate and its key, as PEM files `dir/{name}.pem` and `.key`.
    fn self_signed(dir: &Path, name: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(dir.path(), "a");
        let b = self_signed(dir.path(), "b");
        assert!(acceptor(&a, &[b"http/1.1"]).is_ok());
        let mixed = TlsFiles {
            cert: a.cert,
            key: b.key,
        };
        let e = acceptor(&mixed, &[]).err().unwrap().to_string();
        assert!(
            e.contains("b.key") && e.contains("does not belong to the certificate in"),
            "{e}"
        );
        assert!(e.contains("a.pem"), "{e}");
    }
}
