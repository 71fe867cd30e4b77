//! TLS material of the LI channels: the mediation client (mutual TLS, our client certificate)
//! and the admin server (client certificate required, issued by the authority CA).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::InterceptError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn tls_err(path: &Path, reason: impl ToString) -> InterceptError {
    InterceptError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// A PEM certificate chain (at least one certificate).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, InterceptError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, e))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, InterceptError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_err(path, e))
}

fn load_roots(path: &Path) -> Result<RootCertStore, InterceptError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| tls_err(path, e))?;
    }
    Ok(roots)
}

/// The mediation client: trusts only `ca_file`, presents `cert_file` + `key_file`.
pub fn mediation_client(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ClientConfig>, InterceptError> {
    let roots = load_roots(ca_file)?;
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| tls_err(cert_file, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| tls_err(key_file, e))?;
    Ok(Arc::new(config))
}

/// The admin server: a client certificate chaining to `authority_ca_file` is required; any
/// other client is refused during the handshake.
pub fn admin_server(
    cert_file: &Path,
    key_file: &Path,
    authority_ca_file: &Path,
) -> Result<Arc<ServerConfig>, InterceptError> {
    let roots = load_roots(authority_ca_file)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| tls_err(authority_ca_file, e))?;
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| tls_err(cert_file, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(key_file, e))?;
    Ok(Arc::new(config))
}
