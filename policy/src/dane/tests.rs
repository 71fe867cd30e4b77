//! DANE matching and the verifier against rcgen-made certificates: one test per RFC 7672 case.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256, Sha512};

use super::*;
use crate::pin::{PinnedVerifier, SpkiPin};
use crate::verify::CertPolicyError;
use crate::ResultType;

const MX: &str = "mx.example.com";

/// 2033-05-18: inside every "valid" certificate below, after every "expired" one.
fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000))
}

struct Issued {
    der: CertificateDer<'static>,
    key: KeyPair,
    params: CertificateParams,
}

/// A certificate for `names` (empty for a CA), issued by `issuer` or self-signed.
fn issue(cn: &str, names: &[&str], ca: bool, expired: bool, issuer: Option<&Issued>) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = if expired {
        date_time_ymd(2021, 1, 1)
    } else {
        date_time_ymd(2040, 1, 1)
    };
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    }
    let cert = match issuer {
        Some(i) => params
            .signed_by(&key, &Issuer::from_params(&i.params, &i.key))
            .unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Issued {
        der: cert.der().clone(),
        key,
        params,
    }
}

fn self_signed(names: &[&str], expired: bool) -> Issued {
    issue("server", names, false, expired, None)
}

fn spki(c: &Issued) -> Vec<u8> {
    spki_der(&c.der).unwrap()
}

fn rec(usage: u8, selector: u8, matching: u8, c: &Issued) -> Tlsa {
    let selected = if selector == 0 {
        c.der.as_ref().to_vec()
    } else {
        spki(c)
    };
    let data = match matching {
        0 => selected,
        1 => Sha256::digest(&selected).to_vec(),
        _ => Sha512::digest(&selected).to_vec(),
    };
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

fn wrong(usage: u8, selector: u8, matching: u8) -> Tlsa {
    let len = [40, 32, 64][usize::from(matching)];
    Tlsa {
        usage,
        selector,
        matching,
        data: vec![0x5a; len],
    }
}

fn check(
    records: &[Tlsa],
    chain: &[&Issued],
    mx: &str,
    base: &str,
) -> Result<DaneMatch, ResultType> {
    let chain: Vec<CertificateDer<'static>> = chain.iter().map(|c| c.der.clone()).collect();
    match_chain(&usable_set(records), &chain, mx, base, now())
}

fn ee(index: usize) -> Result<DaneMatch, ResultType> {
    Ok(DaneMatch {
        record_index: index,
        usage: DaneUsage::DaneEe,
    })
}

fn ta(index: usize) -> Result<DaneMatch, ResultType> {
    Ok(DaneMatch {
        record_index: index,
        usage: DaneUsage::DaneTa,
    })
}

use crate::dane::matching::spki_der;

#[test]
fn spki_extraction_matches_the_key() {
    let c = self_signed(&[MX], false);
    assert_eq!(
        spki(&c),
        rcgen::PublicKeyData::subject_public_key_info(&c.key)
    );
    assert_eq!(spki_der(&CertificateDer::from(vec![0x30, 0x00])), None);
}

#[test]
fn dane_ee_selector_and_matching_types() {
    let c = self_signed(&[MX], false);
    for (s, m) in [(1, 1), (0, 1), (1, 2), (0, 0), (1, 0), (0, 2)] {
        assert_eq!(
            check(&[rec(3, s, m, &c)], &[&c], MX, MX),
            ee(0),
            "3 {s} {m}"
        );
    }
}

#[test]
fn dane_ee_ignores_names_and_expiry() {
    // RFC 7672 §3.1.1: no name check, no date check under DANE-EE.
    let other_name = self_signed(&["unrelated.example.org"], false);
    assert_eq!(
        check(&[rec(3, 1, 1, &other_name)], &[&other_name], MX, MX),
        ee(0)
    );
    let expired = self_signed(&[MX], true);
    assert_eq!(check(&[rec(3, 1, 1, &expired)], &[&expired], MX, MX), ee(0));
    assert_eq!(check(&[rec(3, 0, 0, &expired)], &[&expired], MX, MX), ee(0));
}

#[test]
fn dane_ee_matches_only_the_end_entity() {
    let root = issue("root", &[], true, false, None);
    let leaf = issue("leaf", &[MX], false, false, Some(&root));
    assert_eq!(
        check(&[rec(3, 1, 1, &root)], &[&leaf, &root], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
}

#[test]
fn dane_ta_with_a_ca_issued_leaf() {
    let root = issue("root", &[], true, false, None);
    let leaf = issue("leaf", &[MX], false, false, Some(&root));
    assert_eq!(
        check(&[rec(2, 0, 1, &root)], &[&leaf, &root], MX, MX),
        ta(0)
    );
    assert_eq!(
        check(&[rec(2, 1, 1, &root)], &[&leaf, &root], MX, MX),
        ta(0)
    );
    assert_eq!(
        check(&[rec(2, 1, 2, &root)], &[&leaf, &root], MX, MX),
        ta(0)
    );
    // Case-insensitive names, trailing dot ignored.
    assert_eq!(
        check(
            &[rec(2, 0, 1, &root)],
            &[&leaf, &root],
            "MX.Example.COM.",
            "mx.example.com."
        ),
        ta(0)
    );
}

#[test]
fn dane_ta_may_be_an_intermediate_or_the_last_certificate() {
    let root = issue("root", &[], true, false, None);
    let mid = issue("intermediate", &[], true, false, Some(&root));
    let leaf = issue("leaf", &[MX], false, false, Some(&mid));
    assert_eq!(
        check(&[rec(2, 0, 1, &mid)], &[&leaf, &mid, &root], MX, MX),
        ta(0)
    );
    assert_eq!(
        check(&[rec(2, 1, 1, &root)], &[&leaf, &mid, &root], MX, MX),
        ta(0)
    );
    // The trust anchor must be presented (RFC 7672 §3.1.2): a root left out cannot match.
    assert_eq!(
        check(&[rec(2, 1, 1, &root)], &[&leaf, &mid], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
}

#[test]
fn dane_ta_name_must_match_mx_host_or_tlsa_base() {
    let root = issue("root", &[], true, false, None);
    let wrong_name = issue("leaf", &["other.example.net"], false, false, Some(&root));
    assert_eq!(
        check(&[rec(2, 0, 1, &root)], &[&wrong_name, &root], MX, MX),
        Err(ResultType::CertificateHostMismatch)
    );
    // RFC 7672 §3.2.2: the TLSA base domain (CNAME target) is a reference identifier too.
    let provider = issue("leaf", &["mx.provider.example"], false, false, Some(&root));
    assert_eq!(
        check(
            &[rec(2, 0, 1, &root)],
            &[&provider, &root],
            MX,
            "mx.provider.example"
        ),
        ta(0)
    );
    let wildcard = issue("leaf", &["*.example.com"], false, false, Some(&root));
    assert_eq!(
        check(&[rec(2, 0, 1, &root)], &[&wildcard, &root], MX, MX),
        ta(0)
    );
    assert_eq!(
        check(
            &[rec(2, 0, 1, &root)],
            &[&wildcard, &root],
            "a.mx.example.com",
            "a.mx.example.com"
        ),
        Err(ResultType::CertificateHostMismatch)
    );
}

#[test]
fn dane_ta_checks_expiry_of_the_leaf() {
    // RFC 7672 §3.1.2: under DANE-TA the chain below the anchor is validated, dates included.
    let root = issue("root", &[], true, false, None);
    let leaf = issue("leaf", &[MX], false, true, Some(&root));
    assert_eq!(
        check(&[rec(2, 0, 1, &root)], &[&leaf, &root], MX, MX),
        Err(ResultType::CertificateExpired)
    );
    // The anchor's own dates are not checked: the signed TLSA record vouches for it.
    let old_root = issue("old root", &[], true, true, None);
    let leaf = issue("leaf", &[MX], false, false, Some(&old_root));
    assert_eq!(
        check(&[rec(2, 0, 1, &old_root)], &[&leaf, &old_root], MX, MX),
        ta(0)
    );
}

#[test]
fn dane_ta_leaf_must_be_issued_under_the_anchor() {
    let root = issue("root", &[], true, false, None);
    let other_root = issue("root", &[], true, false, None);
    let stranger = issue("leaf", &[MX], false, false, Some(&other_root));
    assert_eq!(
        check(&[rec(2, 0, 1, &root)], &[&stranger, &root], MX, MX),
        Err(ResultType::ValidationFailure)
    );
    // A DANE-TA record naming the end entity itself is not a trust anchor.
    let alone = self_signed(&[MX], false);
    assert_eq!(
        check(&[rec(2, 0, 1, &alone)], &[&alone], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
}

#[test]
fn no_match_is_tlsa_invalid() {
    let c = self_signed(&[MX], false);
    assert_eq!(
        check(&[wrong(3, 1, 1)], &[&c], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
    assert_eq!(
        check(&[wrong(2, 0, 1)], &[&c], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
    assert_eq!(
        check(&[rec(3, 1, 1, &c)], &[], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
}

#[test]
fn digest_agility_uses_only_the_strongest_digest() {
    // RFC 7671 §9: a SHA-256 match beside an unmatched SHA-512 record is no match.
    let c = self_signed(&[MX], false);
    assert_eq!(
        check(&[rec(3, 1, 1, &c), wrong(3, 1, 2)], &[&c], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
    assert_eq!(
        check(&[wrong(3, 1, 1), rec(3, 1, 2, &c)], &[&c], MX, MX),
        ee(1)
    );
    // Different selector: not the same (usage, selector) group, so it still matches.
    assert_eq!(
        check(&[rec(3, 1, 1, &c), wrong(3, 0, 2)], &[&c], MX, MX),
        ee(0)
    );
    // Full(0) is not shadowed by digests.
    assert_eq!(
        check(&[rec(3, 1, 0, &c), wrong(3, 1, 2)], &[&c], MX, MX),
        ee(0)
    );
}

#[test]
fn pkix_usages_are_ignored() {
    // RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP.
    let root = issue("root", &[], true, false, None);
    let leaf = issue("leaf", &[MX], false, false, Some(&root));
    let records = [rec(0, 0, 1, &root), rec(1, 1, 1, &leaf)];
    assert!(usable_set(&records).is_empty());
    assert_eq!(
        check(&records, &[&leaf, &root], MX, MX),
        Err(ResultType::TlsaInvalid)
    );
    // Indices stay those of the published RRset.
    let records = [rec(1, 1, 1, &leaf), wrong(3, 1, 1), rec(3, 1, 1, &leaf)];
    assert_eq!(check(&records, &[&leaf, &root], MX, MX), ee(2));
}

/// Runs a TLS handshake in memory: a server presenting `chain` with `key`, a client using
/// `verifier`. Returns the client's error, if any.
fn handshake(
    verifier: Arc<dyn ServerCertVerifier>,
    chain: &[&Issued],
    key: &KeyPair,
) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = chain.iter().map(|c| c.der.clone()).collect();
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mut client =
        rustls::ClientConnection::new(Arc::new(client_config), ServerName::try_from(MX).unwrap())
            .unwrap();
    let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        buf.clear();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

fn verifier(records: &[Tlsa]) -> (Arc<DaneVerifier>, DaneOutcome) {
    let v = DaneVerifier::new(
        usable_set(records),
        MX,
        MX,
        Arc::new(rustls::crypto::ring::default_provider()),
    );
    let outcome = v.outcome();
    (Arc::new(v), outcome)
}

#[test]
fn verifier_accepts_a_matching_server_and_records_the_match() {
    let c = self_signed(&[MX], false);
    let (v, outcome) = verifier(&[wrong(3, 1, 1), rec(3, 1, 1, &c)]);
    assert_eq!(outcome.get(), None);
    handshake(v, &[&c], &c.key).unwrap();
    assert_eq!(outcome.matched(), ee(1).ok());
    assert_eq!(
        outcome.matched().unwrap().verify_method(),
        crate::VerifyMethod::DaneEe
    );

    let root = issue("root", &[], true, false, None);
    let leaf = issue("leaf", &[MX], false, false, Some(&root));
    let (v, outcome) = verifier(&[rec(2, 1, 1, &root)]);
    handshake(v, &[&leaf, &root], &leaf.key).unwrap();
    assert_eq!(outcome.get(), Some(ta(0)));
}

#[test]
fn verifier_fails_the_handshake_without_a_match() {
    let c = self_signed(&[MX], false);
    let (v, outcome) = verifier(&[wrong(3, 1, 1)]);
    let err = handshake(v, &[&c], &c.key).unwrap_err();
    assert_eq!(
        CertPolicyError::from_rustls(&err),
        Some(ResultType::TlsaInvalid)
    );
    assert_eq!(outcome.get(), Some(Err(ResultType::TlsaInvalid)));

    let root = issue("root", &[], true, false, None);
    let leaf = issue("leaf", &["elsewhere.example"], false, false, Some(&root));
    let (v, outcome) = verifier(&[rec(2, 0, 1, &root)]);
    let err = handshake(v, &[&leaf, &root], &leaf.key).unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
    );
    assert_eq!(
        outcome.get(),
        Some(Err(ResultType::CertificateHostMismatch))
    );
}

#[test]
fn pinned_verifier_requires_a_pinned_end_entity_key() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root = issue("root", &[], true, false, None);
    let leaf = issue("leaf", &[MX], false, false, Some(&root));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.der.clone()).unwrap();
    let pkix =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let good = SpkiPin::of_cert(&leaf.der).unwrap();
    assert_eq!(SpkiPin::from_hex(&good.to_hex()), Ok(good));
    assert!(SpkiPin::from_hex("abc").is_err());

    let pinned = Arc::new(PinnedVerifier::new(
        pkix.clone(),
        vec![SpkiPin([1; 32]), good],
    ));
    handshake(pinned, &[&leaf, &root], &leaf.key).unwrap();

    let wrong_pin = Arc::new(PinnedVerifier::new(pkix.clone(), vec![SpkiPin([1; 32])]));
    let err = handshake(wrong_pin, &[&leaf, &root], &leaf.key).unwrap_err();
    assert_eq!(
        CertPolicyError::from_rustls(&err),
        Some(ResultType::CertificateNotTrusted)
    );

    // A pin on the root does not count: only the end entity is compared.
    let root_pin = SpkiPin::of_cert(&root.der).unwrap();
    let on_root = Arc::new(PinnedVerifier::new(pkix.clone(), vec![root_pin]));
    assert!(handshake(on_root, &[&leaf, &root], &leaf.key).is_err());

    // PKIX still runs first: a pinned key under an unknown CA is refused.
    let stranger = issue("leaf", &[MX], false, false, None);
    let pin = SpkiPin::of_cert(&stranger.der).unwrap();
    let pinned = Arc::new(PinnedVerifier::new(pkix, vec![pin]));
    assert!(handshake(pinned, &[&stranger], &stranger.key).is_err());
}

#[test]
fn observing_verifier_records_without_enforcing() {
    use crate::observe::ObservingVerifier;
    let c = self_signed(&[MX], false);
    let (enforce, _) = verifier(&[rec(3, 1, 1, &c)]);
    let (stricter, _) = verifier(&[wrong(3, 1, 1)]);
    let v = Arc::new(ObservingVerifier::new(enforce.clone(), stricter));
    let seen = v.observation();
    handshake(v, &[&c], &c.key).unwrap();
    assert_eq!(seen.get(), Some(Err(ResultType::TlsaInvalid)));

    let (passing, _) = verifier(&[rec(3, 0, 1, &c)]);
    let v = Arc::new(ObservingVerifier::new(enforce, passing));
    let seen = v.observation();
    handshake(v, &[&c], &c.key).unwrap();
    assert_eq!(seen.get(), Some(Ok(())));

    // The enforced requirement still decides the handshake.
    let (failing, _) = verifier(&[wrong(3, 1, 2)]);
    let (passing, _) = verifier(&[rec(3, 1, 1, &c)]);
    let v = Arc::new(ObservingVerifier::new(failing, passing));
    let seen = v.observation();
    assert!(handshake(v, &[&c], &c.key).is_err());
    assert_eq!(seen.get(), Some(Ok(())));
}

#[test]
fn tlsa_policy_string_is_presentation_form() {
    let t = Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![0xab, 0x01],
    };
    assert_eq!(
        t.policy_string("_25._tcp.mx.example.com."),
        "_25._tcp.mx.example.com. IN TLSA 3 1 1 AB01"
    );
}
