//! DANE for SMTP (RFC 6698, RFC 7671, RFC 7672): which TLSA records count, before a next hop is
//! authenticated against them.
//!
//! - this file: the record model, `DnssecStatus`, and `usable_set` (usability + digest agility);
//! - `matching`: `match_chain`, a certificate chain against a usable set;
//! - `verifier`: `DaneVerifier`, the rustls verifier that enforces a usable set in the handshake.

pub mod matching;
pub mod verifier;

#[cfg(test)]
mod tests;

pub use matching::{match_chain, match_chain_with, DaneMatch};
pub use verifier::{DaneOutcome, DaneVerifier};

/// The DNSSEC status of one DNS answer, as the validating resolver reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnssecStatus {
    /// Validated (AD bit from a trusted validating resolver), including authenticated denial.
    Secure,
    /// Validated as unsigned (no chain of trust): the answer carries no DNSSEC guarantee.
    Insecure,
    /// Signed but failed validation. Never a reason to fall back (RFC 7672 §2.1.1).
    Bogus,
    /// SERVFAIL, timeout, truncation without a TCP retry: the status is unknown. Never read as
    /// "no records" (RFC 7672 §2.1.1).
    Indeterminate,
}

impl DnssecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secure => "secure",
            Self::Insecure => "insecure",
            Self::Bogus => "bogus",
            Self::Indeterminate => "indeterminate",
        }
    }
}

/// One TLSA record as published (RFC 6698 §2.1), unvalidated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    /// The certificate association data (a full value or a digest).
    pub data: Vec<u8>,
}

impl Tlsa {
    /// The record in presentation form at `owner` (e.g. `_25._tcp.mx.example.com`), as
    /// TLS-RPT's `policy-string` shows it (RFC 8460 §4.4).
    pub fn policy_string(&self, owner: &str) -> String {
        format!(
            "{}. IN TLSA {} {} {} {}",
            owner.trim_end_matches('.'),
            self.usage,
            self.selector,
            self.matching,
            hex::encode_upper(&self.data)
        )
    }
}

/// The two certificate usages usable for SMTP (RFC 7672 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DaneUsage {
    /// DANE-TA(2): the record names a trust anchor in the server's chain.
    DaneTa,
    /// DANE-EE(3): the record names the server's own certificate or key.
    DaneEe,
}

/// Which part of a certificate a record covers (RFC 6698 §2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// Cert(0): the whole certificate, DER.
    Cert,
    /// SPKI(1): the SubjectPublicKeyInfo, DER.
    Spki,
}

/// How the selected bytes are compared (RFC 6698 §2.1.3). Ordered by strength for digest agility.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchingType {
    /// Full(0): the selected bytes themselves.
    Full,
    /// SHA2-256(1).
    Sha256,
    /// SHA2-512(2).
    Sha512,
}

impl MatchingType {
    /// The length the association data must have, for the digest types.
    fn digest_len(self) -> Option<usize> {
        match self {
            Self::Full => None,
            Self::Sha256 => Some(32),
            Self::Sha512 => Some(64),
        }
    }
}

/// A record that survived `usable_set`, with its position in the published RRset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsableRecord {
    /// Index of the record in the RRset given to `usable_set` (for evidence and logs).
    pub index: usize,
    pub usage: DaneUsage,
    pub selector: Selector,
    pub matching: MatchingType,
    pub data: Vec<u8>,
}

/// The TLSA records an SMTP client may authenticate a server with. Built only by `usable_set`,
/// so every record in it is DANE-TA or DANE-EE, well formed, and not shadowed by a stronger
/// digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UsableTlsa {
    records: Vec<UsableRecord>,
}

impl UsableTlsa {
    pub fn records(&self) -> &[UsableRecord] {
        &self.records
    }

    /// True when a secure RRset held no usable record: TLS is then still mandatory but
    /// unauthenticated (RFC 7672 §2.2, "unusable" TLSA RRsets).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// Keeps the records usable for SMTP, in RRset order:
///
/// 1. usage DANE-TA(2) or DANE-EE(3) only: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP, which
///    has no agreed set of trust anchors (RFC 7672 §3.1.3);
/// 2. selector 0 or 1 and matching type 0, 1 or 2 only (RFC 6698 §2.1.2, §2.1.3); unknown values
///    make a record unusable (RFC 7672 §2.2);
/// 3. digests must have their digest's length and Full(0) data must be non-empty: a malformed
///    record can never match and is dropped before step 4, so that it cannot shadow a good one;
/// 4. digest algorithm agility (RFC 7671 §9): for each (usage, selector), only the strongest
///    digest present is kept (SHA2-512 over SHA2-256), so a SHA2-256 record beside a SHA2-512
///    record of the same usage and selector is ignored. Full(0) records are not digests and are
///    kept as they are: they carry the exact value, no digest strength is at stake, and RFC 7671
///    §9 orders digest algorithms only.
pub fn usable_set(records: &[Tlsa]) -> UsableTlsa {
    let candidates: Vec<UsableRecord> = records
        .iter()
        .enumerate()
        .filter_map(|(index, r)| classify(index, r))
        .collect();
    let strongest_digest = |usage: DaneUsage, selector: Selector| {
        candidates
            .iter()
            .filter(|r| r.usage == usage && r.selector == selector)
            .map(|r| r.matching)
            .filter(|m| *m != MatchingType::Full)
            .max()
    };
    let records = candidates
        .iter()
        .filter(|r| {
            r.matching == MatchingType::Full
                || Some(r.matching) == strongest_digest(r.usage, r.selector)
        })
        .cloned()
        .collect();
    UsableTlsa { records }
}

fn classify(index: usize, r: &Tlsa) -> Option<UsableRecord> {
    let usage = match r.usage {
        2 => DaneUsage::DaneTa,
        3 => DaneUsage::DaneEe,
        _ => return None,
    };
    let selector = match r.selector {
        0 => Selector::Cert,
        1 => Selector::Spki,
        _ => return None,
    };
    let matching = match r.matching {
        0 => MatchingType::Full,
        1 => MatchingType::Sha256,
        2 => MatchingType::Sha512,
        _ => return None,
    };
    let well_formed = match matching.digest_len() {
        Some(len) => r.data.len() == len,
        None => !r.data.is_empty(),
    };
    well_formed.then(|| UsableRecord {
        index,
        usage,
        selector,
        matching,
        data: r.data.clone(),
    })
}

#[cfg(test)]
mod usable_tests {
    use super::*;

    fn t(usage: u8, selector: u8, matching: u8, len: usize) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data: vec![0xab; len],
        }
    }

    /// One row per RFC rule: the records in, the indices kept.
    #[test]
    fn usable_set_table() {
        let rows: Vec<(&str, Vec<Tlsa>, Vec<usize>)> = vec![
            ("EE 3 1 1 kept", vec![t(3, 1, 1, 32)], vec![0]),
            ("TA 2 0 1 kept", vec![t(2, 0, 1, 32)], vec![0]),
            (
                "PKIX-TA(0) unusable, RFC 7672 §3.1.3",
                vec![t(0, 0, 1, 32)],
                vec![],
            ),
            (
                "PKIX-EE(1) unusable, RFC 7672 §3.1.3",
                vec![t(1, 1, 1, 32)],
                vec![],
            ),
            ("usage 4 unknown", vec![t(4, 1, 1, 32)], vec![]),
            ("selector 2 unknown", vec![t(3, 2, 1, 32)], vec![]),
            ("matching 3 unknown", vec![t(3, 1, 3, 32)], vec![]),
            ("SHA-256 of wrong length", vec![t(3, 1, 1, 31)], vec![]),
            ("SHA-512 of wrong length", vec![t(3, 1, 2, 32)], vec![]),
            ("Full with no data", vec![t(3, 1, 0, 0)], vec![]),
            (
                "agility: SHA-512 shadows SHA-256 of same usage+selector",
                vec![t(3, 1, 1, 32), t(3, 1, 2, 64)],
                vec![1],
            ),
            (
                "agility is per usage+selector",
                vec![t(3, 1, 1, 32), t(3, 0, 2, 64), t(2, 1, 1, 32)],
                vec![0, 1, 2],
            ),
            (
                "agility: Full is not a digest and is kept",
                vec![t(3, 1, 0, 91), t(3, 1, 1, 32), t(3, 1, 2, 64)],
                vec![0, 2],
            ),
            (
                "agility: malformed SHA-512 does not shadow SHA-256",
                vec![t(3, 1, 1, 32), t(3, 1, 2, 10)],
                vec![0],
            ),
            (
                "agility: unusable PKIX SHA-512 does not shadow DANE SHA-256",
                vec![t(1, 1, 2, 64), t(3, 1, 1, 32)],
                vec![1],
            ),
            (
                "mixed: unusable dropped, order kept",
                vec![
                    t(0, 0, 1, 32),
                    t(3, 1, 1, 32),
                    t(1, 0, 1, 32),
                    t(2, 0, 1, 32),
                ],
                vec![1, 3],
            ),
        ];
        for (name, records, want) in rows {
            let got: Vec<usize> = usable_set(&records)
                .records()
                .iter()
                .map(|r| r.index)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn status_tokens() {
        for (s, token) in [
            (DnssecStatus::Secure, "secure"),
            (DnssecStatus::Insecure, "insecure"),
            (DnssecStatus::Bogus, "bogus"),
            (DnssecStatus::Indeterminate, "indeterminate"),
        ] {
            assert_eq!(s.as_str(), token);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{token}\""));
        }
    }
}
