//! DANE matching: does a presented certificate chain satisfy a usable TLSA set (RFC 7672 §3)?
//! Runs inside the outbound handshake, before MAIL FROM.

use rustls::pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use sha2::{Digest, Sha256, Sha512};

use super::{DaneUsage, MatchingType, Selector, UsableRecord, UsableTlsa};
use crate::{ResultType, VerifyMethod};

/// Which record authenticated the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DaneMatch {
    /// Index of the record in the RRset as published (see `UsableRecord::index`).
    pub record_index: usize,
    pub usage: DaneUsage,
}

impl DaneMatch {
    /// The verification method this match proves, for the evidence.
    pub fn verify_method(&self) -> VerifyMethod {
        match self.usage {
            DaneUsage::DaneEe => VerifyMethod::DaneEe,
            DaneUsage::DaneTa => VerifyMethod::DaneTa,
        }
    }
}

/// `match_chain_with` using every signature algorithm of webpki's ring backend.
pub fn match_chain(
    usable: &UsableTlsa,
    chain: &[CertificateDer<'_>],
    mx_host: &str,
    tlsa_base: &str,
    now: UnixTime,
) -> Result<DaneMatch, ResultType> {
    match_chain_with(
        usable,
        chain,
        mx_host,
        tlsa_base,
        now,
        webpki::ALL_VERIFICATION_ALGS,
    )
}

/// Matches `chain` (end-entity first, as presented) against `usable`, records in RRset order;
/// the first record that authenticates the server wins.
///
/// - DANE-EE(3) (RFC 7672 §3.1.1): the record must match the end-entity certificate (selector 0:
///   the certificate DER, 1: its SPKI DER). Names, validity dates and the rest of the chain are
///   ignored: the SMTP client MUST NOT check them.
/// - DANE-TA(2) (RFC 7672 §3.1.2): the record must match a certificate the server presented
///   above the end entity (an intermediate or the last certificate; the server MUST include
///   the trust anchor in its chain). The end entity must then chain to that certificate, used as
///   the trust anchor (signatures checked with `algs`, intermediates taken from the chain
///   between them), with the end entity and intermediates inside their validity period at `now`
///   (validity is checked under DANE-TA, unlike DANE-EE; the anchor's own dates are not, the
///   DNSSEC-signed record vouches for it). Finally the end entity must carry a DNS-ID matching
///   one of the reference identifiers of RFC 7672 §3.2.2: the TLSA base domain and the MX host
///   name (they differ when the MX host is a CNAME whose target holds the TLSA records).
///   Wildcards match one left-most label only (RFC 7672 §3.2, as webpki does).
///
/// On failure the most specific reason seen is returned: `certificate-host-mismatch` or
/// `certificate-expired` when a DANE-TA record matched but the end entity failed the name or
/// date check, `validation-failure` when its chain did not verify for another reason, else
/// `tlsa-invalid` (no record matched anything).
pub fn match_chain_with(
    usable: &UsableTlsa,
    chain: &[CertificateDer<'_>],
    mx_host: &str,
    tlsa_base: &str,
    now: UnixTime,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<DaneMatch, ResultType> {
    let Some(ee) = chain.first() else {
        return Err(ResultType::TlsaInvalid);
    };
    let names = reference_names(mx_host, tlsa_base);
    let mut failure = ResultType::TlsaInvalid;
    for record in usable.records() {
        let found = DaneMatch {
            record_index: record.index,
            usage: record.usage,
        };
        match record.usage {
            DaneUsage::DaneEe => {
                if record_matches(record, ee) {
                    return Ok(found);
                }
            }
            DaneUsage::DaneTa => {
                for (at, cert) in chain.iter().enumerate().skip(1) {
                    if !record_matches(record, cert) {
                        continue;
                    }
                    match verify_under_anchor(chain, at, &names, now, algs) {
                        Ok(()) => return Ok(found),
                        Err(e) => failure = more_specific(failure, e),
                    }
                }
            }
        }
    }
    Err(failure)
}

/// The reference identifiers of RFC 7672 §3.2.2, lower-case, without a trailing dot.
fn reference_names(mx_host: &str, tlsa_base: &str) -> Vec<String> {
    let mut names = Vec::with_capacity(2);
    for n in [tlsa_base, mx_host] {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Whether `record` matches `cert` (selector + matching type, RFC 6698 §2.1).
fn record_matches(record: &UsableRecord, cert: &CertificateDer<'_>) -> bool {
    let selected: Vec<u8> = match record.selector {
        Selector::Cert => cert.as_ref().to_vec(),
        Selector::Spki => match spki_der(cert) {
            Some(spki) => spki,
            None => return false,
        },
    };
    match record.matching {
        MatchingType::Full => selected == record.data,
        MatchingType::Sha256 => Sha256::digest(&selected).as_slice() == record.data.as_slice(),
        MatchingType::Sha512 => Sha512::digest(&selected).as_slice() == record.data.as_slice(),
    }
}

/// The DER SubjectPublicKeyInfo of a certificate (with its SEQUENCE header), or None if the
/// certificate does not parse. Parsed leniently (unknown critical extensions are tolerated):
/// under DANE-EE only the key matters.
pub fn spki_der(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let anchor = webpki::anchor_from_trusted_cert(cert).ok()?;
    Some(webpki::spki_for_anchor(&anchor).as_ref().to_vec())
}

/// DANE-TA path check: `chain[0]` must chain to `chain[anchor_at]` and be valid for a name.
fn verify_under_anchor(
    chain: &[CertificateDer<'_>],
    anchor_at: usize,
    names: &[String],
    now: UnixTime,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), ResultType> {
    let anchor =
        webpki::anchor_from_trusted_cert(&chain[anchor_at]).map_err(|_| ResultType::TlsaInvalid)?;
    let ee =
        webpki::EndEntityCert::try_from(&chain[0]).map_err(|_| ResultType::ValidationFailure)?;
    ee.verify_for_usage(
        algs,
        &[anchor],
        &chain[1..anchor_at],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => ResultType::CertificateExpired,
        _ => ResultType::ValidationFailure,
    })?;
    let named = names.iter().any(|n| {
        ServerName::try_from(n.as_str())
            .is_ok_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
    });
    if named {
        Ok(())
    } else {
        Err(ResultType::CertificateHostMismatch)
    }
}

/// Keeps the more informative of two failure reasons (first one wins a tie).
fn more_specific(current: ResultType, new: ResultType) -> ResultType {
    let rank = |r: ResultType| match r {
        ResultType::CertificateHostMismatch | ResultType::CertificateExpired => 2,
        ResultType::ValidationFailure => 1,
        _ => 0,
    };
    if rank(new) > rank(current) {
        new
    } else {
        current
    }
}
