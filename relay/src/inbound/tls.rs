//! Inbound TLS: the rustls server configuration behind STARTTLS (TLS 1.2 and 1.3 only).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("certificate file {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("certificate and key do not form a usable TLS identity: {0}")]
    Identity(rustls::Error),
}

pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let err = |reason: String| TlsConfigError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// Builds the STARTTLS server configuration from a certificate chain and key.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let certs = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    // rustls implements TLS 1.2 and 1.3 only; both are enabled, nothing older exists.
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsConfigError::Identity)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(TlsConfigError::Identity)?;
    // Session resumption for peers that keep their sessions (a full handshake is most of an
    // inbound session's CPU) without a server-side cache to outgrow: stateless tickets, their
    // keys rotated every 6 hours and made anew at each (re)load; TLS 1.3 resumption still runs
    // an ECDHE exchange (forward secrecy). TLS 1.2 session ids: a cache of 4096 entries.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsConfigError::Identity)?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}

/// `TLSv1.3` / `TLSv1.2`, as written in Received headers and logs.
pub fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    }
}

/// The IANA cipher suite name, e.g. `TLS_AES_256_GCM_SHA384` (rustls names TLS 1.3 suites
/// `TLS13_*`; the IANA registry does not).
pub fn suite_name(s: rustls::SupportedCipherSuite) -> String {
    let name = s.suite().as_str().unwrap_or("unknown");
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `config` on a loopback port: a byte of application data, then waits for one.
    async fn serve(config: Arc<ServerConfig>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(sock).await {
                        let _ = tls.write_all(b"x").await;
                        let _ = tls.flush().await;
                        let mut b = [0u8; 1];
                        let _ = tls.read(&mut b).await;
                    }
                });
            }
        });
        addr
    }

    /// A returning client resumes its session, through a stateless ticket: a server that
    /// shares only the ticket keys (its own empty session cache) takes it too.
    #[tokio::test]
    async fn a_returning_client_resumes_its_session_from_a_stateless_ticket() {
        let d = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["relay.test".to_string()]).unwrap();
        let (cert, key) = (d.path().join("c.pem"), d.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let server = load_server_config(&cert, &key).unwrap();
        let mut other = (*server).clone();
        other.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
        let addrs = [serve(server).await, serve(Arc::new(other)).await];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let connector = tokio_rustls::TlsConnector::from(client);
        let mut kinds = Vec::new();
        for addr in addrs {
            let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
            let mut tls = connector.connect(name, sock).await.unwrap();
            // Reading application data also takes in the tickets sent after the handshake.
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.unwrap();
            kinds.push(tls.get_ref().1.handshake_kind());
            tls.write_all(b"y").await.unwrap();
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ]
        );
    }
}
