//! The per-destination decision: for each MX host, which TLS the hop requires and which policy
//! requires it (DANE, MTA-STS, charter, REQUIRETLS, operator), or why the host is refused.
//! Taken after the MX, TLSA and MTA-STS lookups, before any connection.
//!
//! - this file: the inputs (`HopInput`) and outputs (`Decision`, `HopPlan`, `HopTls`, `Report`);
//! - `decide`: `decide_hop`, the precedence rules.

mod decide;
#[cfg(test)]
mod tests;

pub use decide::decide_hop;

use std::fmt;

use crate::charter::{CharterPolicy, PkixTrust, TlsVersion};
use crate::dane::{DnssecStatus, Tlsa, UsableTlsa};
use crate::mta_sts::{MxPattern, StsState};
use crate::{PolicySource, ResultType, RouteTls, VerifyMethod};

/// Everything `decide_hop` looks at for one destination domain. Gathered by the relay; nothing
/// here is fetched by this crate.
#[derive(Clone, Debug)]
pub struct HopInput<'a> {
    /// The destination (next-hop) domain.
    pub domain: &'a str,
    /// The DNSSEC status of the MX RRset (or of the secure denial of MX when the domain is its
    /// own implicit MX). For a next hop named in the operator's configuration, pass `Secure`:
    /// the name did not come from the network.
    pub mx_status: DnssecStatus,
    /// The MX hosts, in the order the relay will try them.
    pub hosts: &'a [MxHost],
    /// MTA-STS for `domain` (see `mta_sts::cache_action`, `after_fetch`, `without_fetch`).
    pub mta_sts: &'a StsState,
    /// The charter entry of the destination's peer, if the destination is a charter peer's.
    pub charter: Option<&'a CharterPolicy>,
    /// The message was received with REQUIRETLS (RFC 8689).
    pub requiretls: bool,
    /// The message carries `TLS-Required: No` (RFC 8689 §5): the sender asks that it be
    /// delivered even where TLS cannot be had. Honoured only where nothing else requires TLS:
    /// it lowers the operator's route level to opportunistic, never a published policy (DANE,
    /// MTA-STS enforce), a charter peer's requirement, or REQUIRETLS (which makes the header
    /// ignored, RFC 8689 §4.1).
    pub tls_required_no: bool,
    /// The operator's configured level for the destination (a route entry, or `Verify`).
    pub route: RouteTls,
}

/// One MX host and its TLSA answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// The MX host name as found in the MX record.
    pub name: String,
    /// The TLSA lookup for `_25._tcp.<name>` (after CNAME expansion). Required when the MX
    /// RRset is secure (RFC 7672 §2.2): None there is read as a failed lookup. Ignored when the
    /// MX RRset is not secure.
    pub tlsa: Option<TlsaAnswer>,
}

/// A TLSA lookup result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsaAnswer {
    /// Secure with no records = authenticated denial (no DANE). Pass `Insecure` when the host's
    /// address records were insecure: the TLSA records are then not used (RFC 7672 §2.2.3).
    pub status: DnssecStatus,
    /// The TLSA base domain: the MX host, or the target of its CNAME chain when the TLSA
    /// records were found there (RFC 7672 §2.2.3).
    pub base_domain: String,
    pub records: Vec<Tlsa>,
}

/// The decision for a destination: one entry per MX host, in input order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub domain: String,
    pub hosts: Vec<HostDecision>,
}

impl Decision {
    /// The hosts that may be tried, with their plans, in order.
    pub fn usable(&self) -> impl Iterator<Item = (&str, &HopPlan)> {
        self.hosts
            .iter()
            .filter_map(|h| h.outcome.as_ref().ok().map(|p| (h.host.as_str(), p)))
    }
}

/// The decision for one MX host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDecision {
    pub host: String,
    pub outcome: Result<HopPlan, crate::Refusal>,
}

/// How a hop to one MX host must be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopPlan {
    /// What the handshake must achieve before MAIL FROM.
    pub tls: HopTls,
    /// Which policy requires `tls` (the `policy` label).
    pub source: PolicySource,
    /// The lowest TLS version accepted.
    pub min_tls: TlsVersion,
    /// Policies that are observed, not enforced (MTA-STS `testing`, a report-only charter, an
    /// MTA-STS policy that could not be fetched): the relay records their would-be failures
    /// (TLS-RPT) and delivers under `tls` anyway.
    pub reports: Vec<Report>,
}

/// The TLS a hop must achieve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HopTls {
    /// DANE (RFC 7672): the chain must match `usable` (see `DaneVerifier`), with the MX host
    /// and `tlsa_base` as reference identifiers for DANE-TA.
    Dane {
        usable: UsableTlsa,
        tlsa_base: String,
    },
    /// MTA-STS (RFC 8461 §4.2): PKIX with the system roots for `name`; the MX host already
    /// matched one of `patterns` (they are kept for the evidence).
    MtaSts {
        name: String,
        patterns: Vec<MxPattern>,
    },
    /// PKIX for `name` with `trust` (system roots, or a pinned CA and/or SPKI pins).
    Pkix { name: String, trust: PkixTrust },
    /// STARTTLS required; the certificate is not authenticated.
    Encrypt,
    /// STARTTLS when offered; plaintext otherwise.
    Opportunistic,
}

impl HopTls {
    /// Whether a hop without TLS is acceptable.
    pub fn allows_plaintext(&self) -> bool {
        matches!(self, Self::Opportunistic)
    }

    /// Whether the certificate is authenticated (DANE, MTA-STS or PKIX).
    pub fn authenticated(&self) -> bool {
        !matches!(self, Self::Encrypt | Self::Opportunistic)
    }

    /// The `tls requirement` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Dane { .. } => "dane",
            Self::MtaSts { .. } => "mta-sts",
            Self::Pkix { .. } => "verify",
            Self::Encrypt => "encrypt",
            Self::Opportunistic => "opportunistic",
        }
    }

    /// The verification method a successful hop proves; None for DANE, where it depends on the
    /// record that matched (`DaneMatch::verify_method`).
    pub fn verify_method(&self) -> Option<VerifyMethod> {
        match self {
            Self::Dane { .. } => None,
            Self::MtaSts { .. } => Some(VerifyMethod::MtaSts),
            Self::Pkix { trust, .. } if trust.is_pinned() => Some(VerifyMethod::Pinned),
            Self::Pkix { .. } => Some(VerifyMethod::Pkix),
            Self::Encrypt | Self::Opportunistic => Some(VerifyMethod::None),
        }
    }
}

impl fmt::Display for HopTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dane { usable, tlsa_base } => {
                write!(f, "dane ({} usable TLSA at {tlsa_base})", usable.len())
            }
            Self::MtaSts { name, .. } => write!(f, "mta-sts (PKIX, name {name})"),
            Self::Pkix { name, trust } if trust.is_pinned() => {
                write!(f, "verify (pinned, name {name})")
            }
            Self::Pkix { name, .. } => write!(f, "verify (PKIX, name {name})"),
            Self::Encrypt => f.write_str("encrypt"),
            Self::Opportunistic => f.write_str("opportunistic"),
        }
    }
}

/// A policy observed on a hop, not enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The observed policy (`mta-sts` or `charter`).
    pub source: PolicySource,
    pub observe: Observe,
}

/// What to observe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observe {
    /// Also check the handshake against this requirement and record its result type if it
    /// fails (see `ObservingVerifier`).
    Check(HopTls),
    /// Record whether the negotiated version is below this floor.
    MinTls(TlsVersion),
    /// The failure is already known from the inputs: record it.
    Failed(ResultType),
}
