//! The one event of the evidence pipeline: a hop, inbound or outbound.

use hopguard_policy::{PolicySource, ResultType, VerifyMethod};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// What happened on the hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Inbound transaction accepted (`250` after commit).
    Accepted,
    /// Inbound transaction refused (e.g. `530` for a missing STARTTLS).
    Refused,
    /// Outbound: the next hop accepted the message.
    Delivered,
    /// Outbound: not delivered this time; the message waits.
    Deferred,
    /// Outbound: permanently refused; a DSN follows.
    Bounced,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Refused => "refused",
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Bounced => "bounced",
        }
    }
}

/// TLS facts of a hop (absent for plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    pub cipher: String,
    /// SHA-256 of the peer's end-entity certificate (hex), when it sent one.
    pub cert_sha256: Option<String>,
    /// SHA-256 of that certificate's SubjectPublicKeyInfo (hex).
    pub spki_sha256: Option<String>,
}

#[derive(Clone, Debug)]
pub struct HopRecord {
    pub time: chrono::DateTime<chrono::Utc>,
    pub direction: Direction,
    /// Charter peer name or `other`.
    pub peer: String,
    pub remote_ip: Option<std::net::IpAddr>,
    /// EHLO name inbound, MX / next-hop name outbound.
    pub remote_host: String,
    pub tls: Option<TlsFacts>,
    /// How the peer's certificate was authenticated (`None` inbound: no client certificates).
    pub verification: VerifyMethod,
    pub policy: Option<PolicySource>,
    pub outcome: Outcome,
    pub result_type: Option<ResultType>,
    pub reply_code: Option<u16>,
    pub queue_id: Option<String>,
    /// Keyed hash of the Message-ID (never the Message-ID itself), when known.
    pub message_id_hash: Option<String>,
    pub size: Option<u64>,
    pub recipients: usize,
    /// Seconds from acceptance to delivery (outbound delivered only).
    pub latency: Option<f64>,
    /// Outbound: the destination (policy) domain, for TLS-RPT.
    pub policy_domain: Option<String>,
    /// Policies observed on this hop but not enforced (MTA-STS `testing`, a report-only charter,
    /// an MTA-STS policy that could not be fetched), with the verdict each would have given.
    pub observed: Vec<Observed>,
    /// Outbound: the published policies of the destination as TLS-RPT's `policy-string`.
    pub policy_strings: PolicyStrings,
}

/// The destination's published policies in TLS-RPT `policy-string` form (RFC 8460 §4.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyStrings {
    /// The MTA-STS policy's fields, when the domain has one.
    pub sts: Vec<String>,
    /// The TLSA records of the MX host, when DNSSEC-secure.
    pub tlsa: Vec<String>,
}

/// The verdict of a policy observed, not enforced, on a hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `mta-sts` or `charter`.
    pub source: PolicySource,
    /// None: the hop would have passed; else the RFC 8460 result type it would have failed with.
    pub result: Option<ResultType>,
}

impl HopRecord {
    /// `none`, `TLSv1.2` or `TLSv1.3`: the `tls` label.
    pub fn tls_label(&self) -> &str {
        self.tls
            .as_ref()
            .map(|t| t.version.as_str())
            .unwrap_or("none")
    }
}
