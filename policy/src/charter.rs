//! A charter peer's outbound policy as `decide_hop` takes it: what the peer agreed to be held to
//! (a floor that published policies may only raise), its TLS version floor, and report-only.

use rustls::pki_types::CertificateDer;

use crate::mta_sts::MxPattern;
use crate::pin::SpkiPin;

/// The charter entry of the destination's peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharterPolicy {
    /// The peer's configured name (the `peer` label).
    pub peer: String,
    /// The required outbound policy; None = no per-peer policy, the operator's route level
    /// applies (but never opportunistic).
    pub require: Option<CharterRequirement>,
    /// MX host names the peer declared; when set, an MX host matching none is refused, and a
    /// match validates the MX host for REQUIRETLS (like an MTA-STS policy).
    pub mx: Vec<MxPattern>,
    /// The lowest TLS version accepted towards this peer.
    pub min_tls: TlsVersion,
    /// Observe without enforcing: deliver as if `require` and `min_tls` were absent, and report
    /// what they would have refused. Never permits plaintext.
    pub report_only: bool,
}

impl CharterPolicy {
    /// A peer entry with no per-peer policy, TLS 1.2 floor, enforcing.
    pub fn new(peer: impl Into<String>) -> Self {
        Self {
            peer: peer.into(),
            require: None,
            mx: Vec::new(),
            min_tls: TlsVersion::default(),
            report_only: false,
        }
    }
}

/// What a charter peer requires of every hop to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CharterRequirement {
    /// DANE (RFC 7672): a DNSSEC-secure MX and usable TLSA records, matched.
    Dane,
    /// The peer's MTA-STS policy, enforced even while it is published in `testing` mode.
    MtaSts,
    /// PKIX validation for the MX host name, with the given trust.
    Verify(PkixTrust),
    /// STARTTLS required, certificate not authenticated.
    Encrypt,
}

impl CharterRequirement {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Dane => "dane",
            Self::MtaSts => "mta-sts",
            Self::Verify(_) => "verify",
            Self::Encrypt => "encrypt",
        }
    }
}

/// The trust a PKIX hop uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PkixTrust {
    /// Empty: the system roots. Otherwise only these CA certificates are trust anchors.
    pub pinned_ca: Vec<CertificateDer<'static>>,
    /// Empty: no pin. Otherwise the end-entity SPKI SHA-256 must be one of these
    /// (after the chain validated, see `PinnedVerifier`).
    pub spki_pins: Vec<SpkiPin>,
}

impl PkixTrust {
    /// The system roots, no pins (the default `verify`).
    pub fn webpki() -> Self {
        Self::default()
    }

    /// Whether anything narrows the system roots (a pinned CA or SPKI pins).
    pub fn is_pinned(&self) -> bool {
        !self.pinned_ca.is_empty() || !self.spki_pins.is_empty()
    }
}

/// A TLS protocol version floor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 or 1.3 (hopguard's floor for every hop).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// The `tls` label form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }

    /// The rustls protocol versions allowed with this floor.
    pub fn protocol_versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            Self::Tls12 => &BOTH,
            Self::Tls13 => &TLS13_ONLY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_floor_versions() {
        assert_eq!(TlsVersion::default(), TlsVersion::Tls12);
        assert!(TlsVersion::Tls13 > TlsVersion::Tls12);
        assert_eq!(TlsVersion::Tls12.protocol_versions().len(), 2);
        assert_eq!(
            TlsVersion::Tls13.protocol_versions()[0].version,
            rustls::ProtocolVersion::TLSv1_3
        );
        assert_eq!(TlsVersion::Tls13.as_str(), "TLSv1.3");
    }

    #[test]
    fn pinned_trust() {
        assert!(!PkixTrust::webpki().is_pinned());
        let pins = PkixTrust {
            spki_pins: vec![SpkiPin([7; 32])],
            ..PkixTrust::default()
        };
        assert!(pins.is_pinned());
        assert_eq!(CharterRequirement::Verify(pins).as_str(), "verify");
    }
}
