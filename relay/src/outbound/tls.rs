//! Outbound TLS: trust anchors and the certificate verifiers that enforce a hop's TLS plan.
//!
//! `Pkix` uses webpki with the system roots plus `tls.ca_file`. `Encrypt` accepts any
//! certificate but still checks the handshake signatures (so the session key is bound to the
//! certificate the evidence records). `Opportunistic` verifies like `Encrypt` when TLS is used.

use std::path::Path;
use std::sync::Arc;

use hopguard_policy::{
    DaneOutcome, DaneVerifier, HopTls as Plan, PinnedVerifier, ResultType, TlsVersion,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::inbound::tls::{crypto_provider, load_certs, TlsConfigError};

/// Reads extra trust anchors from a PEM file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    load_certs(path)
}

/// Client TLS configurations, built once per config load.
#[derive(Clone, Debug)]
pub struct OutboundTls {
    pkix: Arc<ClientConfig>,
    encrypt: Arc<ClientConfig>,
    /// The PKIX anchors (system roots + `tls.ca_file`), for per-hop configurations.
    roots: Arc<RootCertStore>,
}

impl OutboundTls {
    pub fn new(system_roots: bool, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        if system_roots {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A malformed system root is skipped, not fatal.
                let _ = roots.add(cert);
            }
        }
        if let Some(path) = ca_file {
            for cert in load_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("tls.ca_file {}: {e}", path.display()))?;
            }
        }
        let provider = crypto_provider();
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        };
        let pkix = if roots.is_empty() {
            // No anchors at all: every PKIX verification fails (never "accept all").
            builder()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SignatureOnly::no_anchors(
                    provider.clone(),
                )))
                .with_no_client_auth()
        } else {
            builder()?
                .with_root_certificates(roots.clone())
                .with_no_client_auth()
        };
        let encrypt = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SignatureOnly::encrypt(provider.clone())))
            .with_no_client_auth();
        Ok(Self {
            pkix: Arc::new(pkix),
            encrypt: Arc::new(encrypt),
            roots: Arc::new(roots),
        })
    }

    /// The client configuration that enforces `plan` during the handshake, and for DANE the
    /// handle that tells which TLSA record matched.
    pub fn config_for(
        &self,
        plan: &Plan,
        mx_host: &str,
        min_tls: TlsVersion,
    ) -> (Arc<ClientConfig>, Option<DaneOutcome>) {
        let provider = crypto_provider();
        let with = |verifier: Arc<dyn ServerCertVerifier>| {
            ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(min_tls.protocol_versions())
                .map(|b| {
                    Arc::new(
                        b.dangerous()
                            .with_custom_certificate_verifier(verifier)
                            .with_no_client_auth(),
                    )
                })
        };
        // A charter peer's pinned CA / SPKI pins, or a TLS 1.3 floor: a configuration of its own.
        if let Plan::Pkix { trust, .. } = plan {
            if trust.is_pinned() || min_tls == TlsVersion::Tls13 {
                let roots = if trust.pinned_ca.is_empty() {
                    self.roots.clone()
                } else {
                    let mut r = RootCertStore::empty();
                    for c in &trust.pinned_ca {
                        let _ = r.add(c.clone());
                    }
                    Arc::new(r)
                };
                let built = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .ok()
                    .map(|v| -> Arc<dyn ServerCertVerifier> {
                        if trust.spki_pins.is_empty() {
                            v
                        } else {
                            Arc::new(PinnedVerifier::new(v, trust.spki_pins.clone()))
                        }
                    })
                    .and_then(|v| with(v).ok());
                // No usable anchors: fail closed.
                let config = built.unwrap_or_else(|| {
                    with(Arc::new(SignatureOnly::no_anchors(provider.clone())))
                        .unwrap_or_else(|_| self.pkix.clone())
                });
                return (config, None);
            }
        }
        if min_tls == TlsVersion::Tls13 {
            if let Plan::Encrypt | Plan::Opportunistic = plan {
                if let Ok(c) = with(Arc::new(SignatureOnly::encrypt(provider.clone()))) {
                    return (c, None);
                }
            }
        }
        match plan {
            Plan::Dane { usable, tlsa_base } => {
                let verifier =
                    DaneVerifier::new(usable.clone(), mx_host, tlsa_base.clone(), provider.clone());
                let outcome = verifier.outcome();
                match with(Arc::new(verifier)) {
                    Ok(c) => (c, Some(outcome)),
                    // Cannot happen with the ring provider's TLS 1.2/1.3; fail closed (PKIX with
                    // no DANE outcome is refused by the client for a DANE plan).
                    Err(_) => (self.pkix.clone(), Some(outcome)),
                }
            }
            Plan::MtaSts { .. } | Plan::Pkix { .. } => (self.pkix.clone(), None),
            Plan::Encrypt | Plan::Opportunistic => (self.encrypt.clone(), None),
        }
    }
}

/// Maps a handshake error to the RFC 8460 result type (a hopguard verifier's own reason, e.g.
/// `tlsa-invalid` from DANE, else rustls' certificate errors).
pub fn classify_tls_error(err: &std::io::Error) -> ResultType {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(inner) => hopguard_policy::CertPolicyError::classify(inner),
        None => ResultType::ValidationFailure,
    }
}

/// A verifier that checks only the handshake signatures: `accept_any` accepts every
/// certificate (`encrypt`: TLS required, not authenticated); otherwise it refuses every one
/// (PKIX with no trust anchors at all — never "accept all").
#[derive(Debug)]
struct SignatureOnly {
    provider: Arc<rustls::crypto::CryptoProvider>,
    accept_any: bool,
}

impl SignatureOnly {
    fn encrypt(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self {
            provider,
            accept_any: true,
        }
    }

    fn no_anchors(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self {
            provider,
            accept_any: false,
        }
    }
}

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.accept_any {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
