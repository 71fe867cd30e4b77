//! How a hop's certificate was authenticated (the evidence vocabulary for audit and reports),
//! and how a hopguard verifier's refusal travels through a rustls handshake error.

use std::sync::Arc;

use rustls::{CertificateError, OtherError};

use crate::ResultType;

/// The verification method of a hop (`none` when the certificate was not authenticated or
/// there was no TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMethod {
    DaneEe,
    DaneTa,
    MtaSts,
    Pkix,
    Pinned,
    None,
}

impl VerifyMethod {
    pub const ALL: [VerifyMethod; 6] = [
        Self::DaneEe,
        Self::DaneTa,
        Self::MtaSts,
        Self::Pkix,
        Self::Pinned,
        Self::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaneEe => "dane-ee",
            Self::DaneTa => "dane-ta",
            Self::MtaSts => "mta-sts",
            Self::Pkix => "pkix",
            Self::Pinned => "pinned",
            Self::None => "none",
        }
    }

    /// Whether the peer was authenticated (anything but `none`).
    pub fn authenticated(self) -> bool {
        self != Self::None
    }
}

/// A certificate refused by a hopguard verifier (DANE, SPKI pins), carried inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("certificate refused by policy: {0}")]
pub struct CertPolicyError(pub ResultType);

impl CertPolicyError {
    /// The handshake error for `reason`. Host mismatch and expiry use rustls' own variants (so a
    /// generic classifier maps them right); the other reasons travel as `CertPolicyError`.
    pub fn rustls_error(reason: ResultType) -> rustls::Error {
        let cert_error = match reason {
            ResultType::CertificateHostMismatch => CertificateError::NotValidForName,
            ResultType::CertificateExpired => CertificateError::Expired,
            other => CertificateError::Other(OtherError(Arc::new(CertPolicyError(other)))),
        };
        rustls::Error::InvalidCertificate(cert_error)
    }

    /// The RFC 8460 result type of any certificate-verification error: a hopguard verifier's
    /// own reason, else rustls' name and expiry variants, else `certificate-not-trusted` for
    /// another certificate error and `validation-failure` for anything else.
    pub fn classify(err: &rustls::Error) -> ResultType {
        if let Some(rt) = Self::from_rustls(err) {
            return rt;
        }
        match err {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    ResultType::CertificateHostMismatch
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    ResultType::CertificateExpired
                }
                _ => ResultType::CertificateNotTrusted,
            },
            _ => ResultType::ValidationFailure,
        }
    }

    /// The result type a hopguard verifier put into `err`, if it came from one.
    pub fn from_rustls(err: &rustls::Error) -> Option<ResultType> {
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<CertPolicyError>().map(|e| e.0)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_errors_round_trip_through_rustls() {
        for rt in ResultType::ALL {
            let err = CertPolicyError::rustls_error(rt);
            match rt {
                ResultType::CertificateHostMismatch => assert_eq!(
                    err,
                    rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                ),
                ResultType::CertificateExpired => assert_eq!(
                    err,
                    rustls::Error::InvalidCertificate(CertificateError::Expired)
                ),
                _ => assert_eq!(CertPolicyError::from_rustls(&err), Some(rt)),
            }
        }
        assert_eq!(
            CertPolicyError::from_rustls(&rustls::Error::DecryptError),
            None
        );
        for rt in ResultType::ALL {
            assert_eq!(
                CertPolicyError::classify(&CertPolicyError::rustls_error(rt)),
                rt
            );
        }
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(
            CertPolicyError::classify(&unknown),
            ResultType::CertificateNotTrusted
        );
        assert_eq!(
            CertPolicyError::classify(&rustls::Error::DecryptError),
            ResultType::ValidationFailure
        );
    }

    #[test]
    fn serde_matches_as_str() {
        for m in VerifyMethod::ALL {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
            assert_eq!(m.authenticated(), m != VerifyMethod::None);
        }
    }
}
