//! `ObservingVerifier`: enforce one requirement while observing a stricter one (MTA-STS
//! `testing`, a report-only charter), so the relay can report the would-be failure (TLS-RPT)
//! of a hop it delivers anyway.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::verify::CertPolicyError;
use crate::ResultType;

/// The observed requirement's verdict, readable after the handshake.
#[derive(Clone, Debug, Default)]
pub struct Observation(Arc<Mutex<Option<Result<(), ResultType>>>>);

impl Observation {
    /// None before a certificate was seen; then Ok, or the result type the observed
    /// requirement would have failed with.
    pub fn get(&self) -> Option<Result<(), ResultType>> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, verdict: Result<(), ResultType>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
    }
}

/// Runs `observe` and records its verdict, then returns what `enforce` decides: the handshake
/// passes or fails exactly as under `enforce` alone. Handshake signatures are checked by
/// `enforce`.
#[derive(Debug)]
pub struct ObservingVerifier {
    enforce: Arc<dyn ServerCertVerifier>,
    observe: Arc<dyn ServerCertVerifier>,
    seen: Observation,
}

impl ObservingVerifier {
    pub fn new(enforce: Arc<dyn ServerCertVerifier>, observe: Arc<dyn ServerCertVerifier>) -> Self {
        Self {
            enforce,
            observe,
            seen: Observation::default(),
        }
    }

    /// A handle on the observed verdict.
    pub fn observation(&self) -> Observation {
        self.seen.clone()
    }
}

impl ServerCertVerifier for ObservingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let observed = self
            .observe
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ())
            .map_err(|e| CertPolicyError::classify(&e));
        self.seen.set(observed);
        self.enforce
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.enforce.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.enforce.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.enforce.supported_verify_schemes()
    }
}
