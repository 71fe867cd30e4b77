//! The vocabulary of the decision (`hop::decide_hop` makes it): where a requirement comes from
//! (`PolicySource`), what a route asks for, and why a next hop is refused.
//!
//! Pure: inputs in, requirement out. A requirement that cannot be met is never weakened here or
//! by the caller: the outbound path defers instead (no silent fallback to plaintext).

use std::fmt;

use crate::ResultType;

/// Where a hop's TLS requirement comes from (the `policy` metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySource {
    Dane,
    MtaSts,
    Charter,
    Requiretls,
    /// The operator's configuration (a route or the global default, which is `verify`).
    Operator,
    /// Explicitly configured opportunistic TLS for a non-charter destination.
    Opportunistic,
}

impl PolicySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dane => "dane",
            Self::MtaSts => "mta-sts",
            Self::Charter => "charter",
            Self::Requiretls => "requiretls",
            Self::Operator => "operator",
            Self::Opportunistic => "opportunistic",
        }
    }
}

/// The operator's configured TLS level for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTls {
    Verify,
    Encrypt,
    Opportunistic,
}

/// Why no hop (or no hop to one MX host) may be attempted. A refusal never falls back to a
/// weaker hop: the relay defers (or, for REQUIRETLS, may bounce with 5.7.30).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("opportunistic TLS is never allowed towards charter peer `{peer}`")]
    OpportunisticToCharterPeer { peer: String },
    /// A DNSSEC-signed answer failed validation (RFC 7672 §2.1.1: never treated as absent).
    #[error("the {lookup} answer for {name} is DNSSEC-bogus")]
    DnssecInvalid { name: String, lookup: DnsLookup },
    /// SERVFAIL or timeout on a lookup that could carry policy: defer, never "no policy".
    #[error("the {lookup} lookup for {name} failed (SERVFAIL or timeout)")]
    DnsIndeterminate { name: String, lookup: DnsLookup },
    /// RFC 8461 §4.1: an MX host not named by an enforced MTA-STS policy is never used.
    #[error("MX host {host} is not listed in the MTA-STS policy of {domain}")]
    MxNotInStsPolicy { host: String, domain: String },
    /// The MX host is not among the charter peer's declared MX hosts.
    #[error("MX host {host} is not one of charter peer `{peer}`'s MX hosts")]
    MxNotInCharter { host: String, peer: String },
    /// The charter requires DANE and the host has no DNSSEC-secure usable TLSA records.
    #[error(
        "charter peer `{peer}` requires DANE, but {host} has no DNSSEC-secure usable TLSA records"
    )]
    DaneRequired { peer: String, host: String },
    /// The charter requires MTA-STS and the domain has no policy that can be enforced.
    #[error(
        "charter peer `{peer}` requires MTA-STS, but {domain} has no enforceable policy ({reason})"
    )]
    StsRequired {
        peer: String,
        domain: String,
        reason: ResultType,
    },
    /// RFC 8689 §4.2.1: a REQUIRETLS message needs an authenticated hop to a validated MX host.
    #[error("REQUIRETLS cannot be honoured for {host}: {gap}")]
    RequireTlsUnmet { host: String, gap: RequireTlsGap },
}

impl Refusal {
    /// The RFC 8460 result type for TLS-RPT and the `reason` label; None for a refusal that is
    /// not a TLS negotiation failure (configuration, REQUIRETLS).
    pub fn result_type(&self) -> Option<ResultType> {
        match self {
            Self::OpportunisticToCharterPeer { .. } | Self::RequireTlsUnmet { .. } => None,
            Self::DnssecInvalid { .. } | Self::DnsIndeterminate { .. } => {
                Some(ResultType::DnssecInvalid)
            }
            Self::MxNotInStsPolicy { .. } | Self::MxNotInCharter { .. } => {
                Some(ResultType::ValidationFailure)
            }
            Self::DaneRequired { .. } => Some(ResultType::DaneRequired),
            Self::StsRequired { reason, .. } => Some(*reason),
        }
    }

    /// The enhanced status code (RFC 3463) for the DSN or log: 5.7.30 for REQUIRETLS
    /// (RFC 8689 §5), 4.4.3 for an unanswered lookup, 4.7.5 for a security failure, 4.7.0
    /// otherwise.
    pub fn enhanced_status(&self) -> &'static str {
        match self {
            Self::RequireTlsUnmet { .. } => "5.7.30",
            Self::DnsIndeterminate { .. } => "4.4.3",
            Self::DnssecInvalid { .. }
            | Self::MxNotInStsPolicy { .. }
            | Self::MxNotInCharter { .. }
            | Self::DaneRequired { .. }
            | Self::StsRequired { .. } => "4.7.5",
            Self::OpportunisticToCharterPeer { .. } => "4.7.0",
        }
    }

    /// Only a REQUIRETLS refusal is permanent: the sender asked for a bounce rather than a
    /// weaker hop. Everything else defers and is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::RequireTlsUnmet { .. })
    }
}

/// Which DNS lookup a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsLookup {
    Mx,
    Tlsa,
    /// The `_mta-sts` TXT record.
    MtaStsTxt,
}

impl DnsLookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mx => "MX",
            Self::Tlsa => "TLSA",
            Self::MtaStsTxt => "MTA-STS TXT",
        }
    }
}

impl fmt::Display for DnsLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a REQUIRETLS hop lacks (RFC 8689 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequireTlsGap {
    /// Only unauthenticated TLS (encrypt) or opportunistic TLS is available.
    Unauthenticated,
    /// The MX host was neither DNSSEC-validated nor named by an MTA-STS policy or the charter.
    MxNotValidated,
}

impl fmt::Display for RequireTlsGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unauthenticated => "only unauthenticated TLS is available",
            Self::MxNotValidated => {
                "the MX host is neither DNSSEC-validated nor listed by an MTA-STS policy"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes() {
        let rows: Vec<(Refusal, Option<ResultType>, &str, bool)> = vec![
            (
                Refusal::OpportunisticToCharterPeer { peer: "p".into() },
                None,
                "4.7.0",
                false,
            ),
            (
                Refusal::DnssecInvalid {
                    name: "n".into(),
                    lookup: DnsLookup::Tlsa,
                },
                Some(ResultType::DnssecInvalid),
                "4.7.5",
                false,
            ),
            (
                Refusal::DnsIndeterminate {
                    name: "n".into(),
                    lookup: DnsLookup::Mx,
                },
                Some(ResultType::DnssecInvalid),
                "4.4.3",
                false,
            ),
            (
                Refusal::MxNotInStsPolicy {
                    host: "h".into(),
                    domain: "d".into(),
                },
                Some(ResultType::ValidationFailure),
                "4.7.5",
                false,
            ),
            (
                Refusal::MxNotInCharter {
                    host: "h".into(),
                    peer: "p".into(),
                },
                Some(ResultType::ValidationFailure),
                "4.7.5",
                false,
            ),
            (
                Refusal::DaneRequired {
                    peer: "p".into(),
                    host: "h".into(),
                },
                Some(ResultType::DaneRequired),
                "4.7.5",
                false,
            ),
            (
                Refusal::StsRequired {
                    peer: "p".into(),
                    domain: "d".into(),
                    reason: ResultType::StsPolicyFetchError,
                },
                Some(ResultType::StsPolicyFetchError),
                "4.7.5",
                false,
            ),
            (
                Refusal::RequireTlsUnmet {
                    host: "h".into(),
                    gap: RequireTlsGap::Unauthenticated,
                },
                None,
                "5.7.30",
                true,
            ),
        ];
        for (r, rt, status, permanent) in rows {
            assert_eq!(r.result_type(), rt, "{r}");
            assert_eq!(r.enhanced_status(), status, "{r}");
            assert_eq!(r.is_permanent(), permanent, "{r}");
            assert!(!r.to_string().is_empty());
        }
    }
}
