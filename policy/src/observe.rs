//! `ObservingVerifier`: enforce one requirement while observing a stricter one (MTA-STS
//! `testing`, a report-only charter), so the relay can report the would-be failure (TLS-RPT)
//! of a hop it delivers anyway.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::charter::TlsVersion;
use crate::hop::{HopTls, Observe, Report};
use crate::verify::CertPolicyError;
use crate::{PolicySource, ResultType};

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

/// What a hop showed, for judging the policies observed on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopSeen {
    /// TLS was negotiated with this version.
    Tls(TlsVersion),
    /// The next hop offered no STARTTLS (or refused it); the hop went in plaintext or not at all.
    NoStarttls,
    /// The enforced requirement failed the handshake with this result type.
    Failed(ResultType),
}

/// The would-be verdict of each observed policy of a hop, in the order of `reports`: None if it
/// would have passed, else the RFC 8460 result type it would have failed with.
///
/// `observations` are the handles `ObservingVerifier` filled, one per `Observe::Check` report,
/// in order. A check whose verifier saw no certificate fails like the hop (`starttls-not-supported`
/// without TLS, the enforced failure otherwise).
pub fn verdicts(
    reports: &[Report],
    observations: &[Observation],
    seen: HopSeen,
) -> Vec<(PolicySource, Option<ResultType>)> {
    let mut checks = observations.iter();
    reports
        .iter()
        .map(|r| {
            let verdict = match &r.observe {
                Observe::Failed(rt) => Some(*rt),
                Observe::MinTls(floor) => match seen {
                    HopSeen::Tls(v) if v >= *floor => None,
                    HopSeen::Tls(_) => Some(ResultType::ValidationFailure),
                    HopSeen::NoStarttls => Some(ResultType::StarttlsNotSupported),
                    HopSeen::Failed(rt) => Some(rt),
                },
                Observe::Check(tls) => match checks.next().and_then(Observation::get) {
                    Some(Ok(())) => None,
                    Some(Err(rt)) => Some(rt),
                    None => match seen {
                        HopSeen::NoStarttls if tls.allows_plaintext() => None,
                        HopSeen::NoStarttls => Some(ResultType::StarttlsNotSupported),
                        HopSeen::Failed(rt) => Some(rt),
                        // A handshake without a certificate check (cannot happen with a fresh
                        // configuration): not proven, so not a pass.
                        HopSeen::Tls(_) => Some(ResultType::ValidationFailure),
                    },
                },
            };
            (r.source, verdict)
        })
        .collect()
}

/// The `HopTls` of each `Observe::Check` report, in order (what `verdicts` expects the
/// observations for).
pub fn checks(reports: &[Report]) -> Vec<&HopTls> {
    reports
        .iter()
        .filter_map(|r| match &r.observe {
            Observe::Check(t) => Some(t),
            _ => None,
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(source: PolicySource, observe: Observe) -> Report {
        Report { source, observe }
    }

    #[test]
    fn verdicts_follow_reports_in_order() {
        let sts = HopTls::MtaSts {
            name: "mx.a.test".into(),
            patterns: vec![],
        };
        let reports = vec![
            report(
                PolicySource::MtaSts,
                Observe::Failed(ResultType::StsPolicyFetchError),
            ),
            report(PolicySource::MtaSts, Observe::Check(sts.clone())),
            report(PolicySource::Charter, Observe::MinTls(TlsVersion::Tls13)),
            report(PolicySource::Charter, Observe::Check(HopTls::Encrypt)),
        ];
        assert_eq!(checks(&reports).len(), 2);
        let (failing, passing) = (Observation::default(), Observation::default());
        failing.set(Err(ResultType::CertificateHostMismatch));
        passing.set(Ok(()));
        let obs = [failing, passing];
        assert_eq!(
            verdicts(&reports, &obs, HopSeen::Tls(TlsVersion::Tls12)),
            vec![
                (PolicySource::MtaSts, Some(ResultType::StsPolicyFetchError)),
                (
                    PolicySource::MtaSts,
                    Some(ResultType::CertificateHostMismatch)
                ),
                (PolicySource::Charter, Some(ResultType::ValidationFailure)),
                (PolicySource::Charter, None),
            ]
        );
        // TLS 1.3 meets the floor.
        assert_eq!(
            verdicts(&reports, &obs, HopSeen::Tls(TlsVersion::Tls13))[2],
            (PolicySource::Charter, None)
        );
    }

    #[test]
    fn checks_without_a_certificate_fail_like_the_hop() {
        let sts = HopTls::MtaSts {
            name: "mx.a.test".into(),
            patterns: vec![],
        };
        let reports = vec![
            report(PolicySource::MtaSts, Observe::Check(sts)),
            report(PolicySource::Charter, Observe::Check(HopTls::Opportunistic)),
            report(PolicySource::Charter, Observe::MinTls(TlsVersion::Tls13)),
        ];
        let obs = [Observation::default(), Observation::default()];
        assert_eq!(
            verdicts(&reports, &obs, HopSeen::NoStarttls),
            vec![
                (PolicySource::MtaSts, Some(ResultType::StarttlsNotSupported)),
                (PolicySource::Charter, None),
                (
                    PolicySource::Charter,
                    Some(ResultType::StarttlsNotSupported)
                ),
            ]
        );
        let failed = HopSeen::Failed(ResultType::CertificateExpired);
        assert!(verdicts(&reports, &obs, failed)
            .iter()
            .all(|(_, v)| *v == Some(ResultType::CertificateExpired)));
        // TLS but no certificate check recorded: never a pass.
        assert_eq!(
            verdicts(&reports, &obs, HopSeen::Tls(TlsVersion::Tls13))[0],
            (PolicySource::MtaSts, Some(ResultType::ValidationFailure))
        );
    }
}
