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
    let config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsConfigError::Identity)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(TlsConfigError::Identity)?;
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
