//! `DaneVerifier`: the rustls certificate verifier for a DANE hop; it fails the handshake unless
//! the server's chain matches the usable TLSA set, so MAIL FROM is never reached otherwise.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{match_chain_with, DaneMatch, UsableTlsa};
use crate::verify::CertPolicyError;
use crate::ResultType;

/// What the verifier concluded, readable by the caller after the handshake.
#[derive(Clone, Debug, Default)]
pub struct DaneOutcome(Arc<Mutex<Option<Result<DaneMatch, ResultType>>>>);

impl DaneOutcome {
    /// The verdict of the last certificate check, or None if no certificate was checked.
    pub fn get(&self) -> Option<Result<DaneMatch, ResultType>> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record that authenticated the server, if one did.
    pub fn matched(&self) -> Option<DaneMatch> {
        self.get().and_then(Result::ok)
    }

    fn set(&self, verdict: Result<DaneMatch, ResultType>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
    }
}

/// Enforces a `UsableTlsa` for one MX host (build one per connection). The handshake succeeds
/// only if `match_chain_with` accepts the presented chain; the `server_name` rustls passes is
/// not used (the reference identifiers are the MX host and the TLSA base domain given here).
/// Handshake signatures are verified with the provider's algorithms.
#[derive(Debug)]
pub struct DaneVerifier {
    usable: UsableTlsa,
    mx_host: String,
    tlsa_base: String,
    provider: Arc<CryptoProvider>,
    outcome: DaneOutcome,
}

impl DaneVerifier {
    pub fn new(
        usable: UsableTlsa,
        mx_host: impl Into<String>,
        tlsa_base: impl Into<String>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            usable,
            mx_host: mx_host.into(),
            tlsa_base: tlsa_base.into(),
            provider,
            outcome: DaneOutcome::default(),
        }
    }

    /// A handle on the verdict, to read after the handshake (which record matched, or why not).
    pub fn outcome(&self) -> DaneOutcome {
        self.outcome.clone()
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let verdict = match_chain_with(
            &self.usable,
            &chain,
            &self.mx_host,
            &self.tlsa_base,
            now,
            self.provider.signature_verification_algorithms.all,
        );
        self.outcome.set(verdict);
        match verdict {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(reason) => Err(CertPolicyError::rustls_error(reason)),
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
