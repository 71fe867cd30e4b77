//! SPKI SHA-256 pins of a charter peer's `verify` policy: the end-entity key must be one the
//! peer announced, checked in the handshake after PKIX validation succeeded.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::dane::matching::spki_der;
use crate::verify::CertPolicyError;
use crate::ResultType;

/// The SHA-256 of a DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiPin(pub [u8; 32]);

/// Why a pin string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an SPKI pin is 64 hexadecimal digits (SHA-256 of the DER SubjectPublicKeyInfo)")]
pub struct BadPin;

impl SpkiPin {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, BadPin> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| BadPin)?;
        Ok(Self(out))
    }

    /// The pin of a certificate's key, or None if the certificate does not parse.
    pub fn of_cert(cert: &CertificateDer<'_>) -> Option<Self> {
        spki_der(cert).map(|spki| Self(Sha256::digest(&spki).into()))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpkiPin({})", self.to_hex())
    }
}

/// Whether the end-entity key is pinned. Only the end entity is compared: a presented
/// intermediate is not proof of the validated path (anyone can append a public CA certificate).
pub fn end_entity_pinned(end_entity: &CertificateDer<'_>, pins: &[SpkiPin]) -> bool {
    SpkiPin::of_cert(end_entity).is_some_and(|p| pins.contains(&p))
}

/// Runs `inner` (a PKIX verifier: system roots or the peer's pinned CA), then requires the
/// end-entity key to be among `pins`; a mismatch fails the handshake as
/// `certificate-not-trusted`. With no pins it is exactly `inner`.
#[derive(Debug)]
pub struct PinnedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    pins: Vec<SpkiPin>,
}

impl PinnedVerifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>, pins: Vec<SpkiPin>) -> Self {
        Self { inner, pins }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.pins.is_empty() || end_entity_pinned(end_entity, &self.pins) {
            Ok(verified)
        } else {
            Err(CertPolicyError::rustls_error(
                ResultType::CertificateNotTrusted,
            ))
        }
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
