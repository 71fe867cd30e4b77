//! Outbound TLS: trust anchors and the certificate verifiers that enforce a hop's TLS plan.
//!
//! `Pkix` uses webpki with the system roots plus `tls.ca_file`. `Encrypt` accepts any
//! certificate but still checks the handshake signatures (so the session key is bound to the
//! certificate the evidence records). `Opportunistic` verifies like `Encrypt` when TLS is used.

use std::path::Path;
use std::sync::Arc;

use hopguard_policy::{
    DaneOutcome, DaneVerifier, HopTls as Plan, Observation, ObservingVerifier, PinnedVerifier,
    ResultType, TlsVersion,
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
    /// Refuses every certificate (the fail-closed fallback).
    refuse_all: Arc<ClientConfig>,
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
        let refuse_all = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SignatureOnly::no_anchors(provider.clone())))
            .with_no_client_auth();
        Ok(Self {
            refuse_all: Arc::new(refuse_all),
            pkix: Arc::new(pkix),
            encrypt: Arc::new(encrypt),
            roots: Arc::new(roots),
        })
    }

    /// The client configuration that enforces `plan` during the handshake, and for DANE the
    /// handle that tells which TLSA record matched. The common plans (PKIX with the configured
    /// anchors, encrypt) share one configuration each; DANE, pinned trust and a TLS 1.3 floor get
    /// their own.
    pub fn config_for(
        &self,
        plan: &Plan,
        mx_host: &str,
        min_tls: TlsVersion,
    ) -> (Arc<ClientConfig>, Option<DaneOutcome>) {
        let pinned = matches!(plan, Plan::Pkix { trust, .. } if trust.is_pinned());
        if min_tls != TlsVersion::Tls13 && !pinned {
            match plan {
                Plan::MtaSts { .. } | Plan::Pkix { .. } => return (self.pkix.clone(), None),
                Plan::Encrypt | Plan::Opportunistic => return (self.encrypt.clone(), None),
                Plan::Dane { .. } => {}
            }
        }
        let (verifier, dane) = self.verifier_for(plan, mx_host);
        (self.config_with(verifier, min_tls), dane)
    }

    /// Like `config_for`, and also runs each of `observe` (policies observed, not enforced)
    /// against the peer's certificate; each returned `Observation` holds that policy's verdict
    /// after the handshake. The handshake passes or fails exactly as under `plan` alone.
    pub fn config_observing(
        &self,
        plan: &Plan,
        mx_host: &str,
        min_tls: TlsVersion,
        observe: &[&Plan],
    ) -> (Arc<ClientConfig>, Option<DaneOutcome>, Vec<Observation>) {
        if observe.is_empty() {
            let (c, d) = self.config_for(plan, mx_host, min_tls);
            return (c, d, Vec::new());
        }
        let (mut verifier, dane) = self.verifier_for(plan, mx_host);
        let mut observations = Vec::new();
        for o in observe {
            let (observer, _) = self.verifier_for(o, mx_host);
            let v = ObservingVerifier::new(verifier, observer);
            observations.push(v.observation());
            verifier = Arc::new(v);
        }
        (self.config_with(verifier, min_tls), dane, observations)
    }

    /// A configuration of its own around `verifier`.
    fn config_with(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
        min_tls: TlsVersion,
    ) -> Arc<ClientConfig> {
        match ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(min_tls.protocol_versions())
        {
            Ok(b) => Arc::new(
                b.dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth(),
            ),
            // Cannot happen with the ring provider's TLS 1.2/1.3; fail closed: a configuration
            // that refuses every certificate.
            Err(_) => self.refuse_all.clone(),
        }
    }

    /// The verifier that enforces `plan` (and for DANE the handle on the matched record).
    fn verifier_for(
        &self,
        plan: &Plan,
        mx_host: &str,
    ) -> (Arc<dyn ServerCertVerifier>, Option<DaneOutcome>) {
        let provider = crypto_provider();
        let refuse: Arc<dyn ServerCertVerifier> =
            Arc::new(SignatureOnly::no_anchors(provider.clone()));
        let webpki = |roots: Arc<RootCertStore>| -> Arc<dyn ServerCertVerifier> {
            if roots.is_empty() {
                // No anchors at all: every PKIX verification fails (never "accept all").
                return refuse.clone();
            }
            match WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build() {
                Ok(v) => v,
                Err(_) => refuse.clone(),
            }
        };
        match plan {
            Plan::Dane { usable, tlsa_base } => {
                let verifier =
                    DaneVerifier::new(usable.clone(), mx_host, tlsa_base.clone(), provider.clone());
                let outcome = verifier.outcome();
                (Arc::new(verifier), Some(outcome))
            }
            Plan::MtaSts { .. } => (webpki(self.roots.clone()), None),
            Plan::Pkix { trust, .. } => {
                // A charter peer's pinned CA replaces the anchors; SPKI pins narrow them.
                let roots = if trust.pinned_ca.is_empty() {
                    self.roots.clone()
                } else {
                    let mut r = RootCertStore::empty();
                    for c in &trust.pinned_ca {
                        let _ = r.add(c.clone());
                    }
                    Arc::new(r)
                };
                let v = webpki(roots);
                if trust.spki_pins.is_empty() {
                    (v, None)
                } else {
                    (
                        Arc::new(PinnedVerifier::new(v, trust.spki_pins.clone())),
                        None,
                    )
                }
            }
            Plan::Encrypt | Plan::Opportunistic => {
                (Arc::new(SignatureOnly::encrypt(provider)), None)
            }
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
