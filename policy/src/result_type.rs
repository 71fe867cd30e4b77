//! RFC 8460 §4.3 result types: the one vocabulary for TLS failures everywhere.

use std::fmt;

/// A TLS negotiation or policy failure, named as in RFC 8460 §4.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    TlsaInvalid,
    DnssecInvalid,
    DaneRequired,
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    pub const ALL: [ResultType; 11] = [
        Self::StarttlsNotSupported,
        Self::CertificateHostMismatch,
        Self::CertificateExpired,
        Self::CertificateNotTrusted,
        Self::ValidationFailure,
        Self::TlsaInvalid,
        Self::DnssecInvalid,
        Self::DaneRequired,
        Self::StsPolicyFetchError,
        Self::StsPolicyInvalid,
        Self::StsWebpkiInvalid,
    ];

    /// The RFC 8460 token, used as the `reason` label and in TLS-RPT reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StarttlsNotSupported => "starttls-not-supported",
            Self::CertificateHostMismatch => "certificate-host-mismatch",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotTrusted => "certificate-not-trusted",
            Self::ValidationFailure => "validation-failure",
            Self::TlsaInvalid => "tlsa-invalid",
            Self::DnssecInvalid => "dnssec-invalid",
            Self::DaneRequired => "dane-required",
            Self::StsPolicyFetchError => "sts-policy-fetch-error",
            Self::StsPolicyInvalid => "sts-policy-invalid",
            Self::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }

    /// Plain words for an operator or a DSN reader.
    pub fn explain(self) -> &'static str {
        match self {
            Self::StarttlsNotSupported => {
                "the receiving server did not offer STARTTLS, and TLS is required for this destination"
            }
            Self::CertificateHostMismatch => {
                "the receiving server's certificate does not name the server we connected to"
            }
            Self::CertificateExpired => "the receiving server's certificate has expired",
            Self::CertificateNotTrusted => {
                "the receiving server's certificate is not issued by an authority we trust"
            }
            Self::ValidationFailure => "the TLS handshake with the receiving server failed",
            Self::TlsaInvalid => "the receiving server's certificate does not match its DANE TLSA records",
            Self::DnssecInvalid => "the destination's DNSSEC data did not validate",
            Self::DaneRequired => "DANE is required for this destination but no usable TLSA records were found",
            Self::StsPolicyFetchError => "the destination's MTA-STS policy could not be fetched",
            Self::StsPolicyInvalid => "the destination's MTA-STS policy is invalid",
            Self::StsWebpkiInvalid => "the MTA-STS policy server's certificate is not valid",
        }
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_tokens_are_the_rfc_8460_ones() {
        for rt in ResultType::ALL {
            let json = serde_json::to_string(&rt).unwrap();
            assert_eq!(json, format!("\"{}\"", rt.as_str()));
            let back: ResultType = serde_json::from_str(&json).unwrap();
            assert_eq!(back, rt);
            assert!(!rt.explain().is_empty());
        }
    }
}
