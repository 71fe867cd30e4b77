//! Proves the DNSSEC scene on its own (no relay): unbound validates the zones nsd serves signed,
//! and answers Secure (AD), Bogus (SERVFAIL) and Insecure (no AD) as RFC 4035 says.

use std::net::Ipv4Addr;

use anyhow::{ensure, Result};
use hopguard_integration::dnssec::{
    drill_query, query_ad, tlsa_2_0_1, tlsa_3_1_1, tlsa_record, DnssecWorld, DrillReply, Tamper,
    ZoneSpec, EDNS_UDP_LIMIT, QTYPE_TLSA,
};
use hopguard_integration::{Net, TestCa, TestDir, Zone};

const SECURE: &str = "secure.test";
const BOGUS: &str = "bogus-dns.test";
const EXPIRED: &str = "expired.test";
const INSECURE: &str = "insecure.test";
const BIG: &str = "big.test";
const NSEC3: &str = "nsec3.test";

/// A mail domain's zone: `MX 10 mx.<d>`, `mx.<d> A`, and `_25._tcp.mx.<d> TLSA` records.
fn mail_zone(domain: &str, mx_ip: Ipv4Addr, tlsa: &[String]) -> Zone {
    let mut z = Zone::new(domain).mail_domain(domain, mx_ip);
    for t in tlsa {
        z = z.raw(&tlsa_record(25, &format!("mx.{domain}"), 3, 1, 1, t));
    }
    z
}

struct Scene {
    world: DnssecWorld,
    tlsa_ee: String,
    tlsa_ta: String,
    _dir: TestDir,
}

/// test. (trust anchor) with secure, bogus (tampered TLSA), expired, insecure (unsigned),
/// big (large DNSKEY RRset) and nsec3 children.
fn scene() -> Result<Scene> {
    let dir = TestDir::new()?;
    let ca = TestCa::new(dir.path())?;
    let cert = ca.issue(dir.path(), "mx", &["mx.secure.test"])?;
    let tlsa_ee = tlsa_3_1_1(&cert.cert)?;
    let tlsa_ta = tlsa_2_0_1(ca.ca_pem())?;
    let ip = Net::alloc();
    let ee = vec![tlsa_ee.clone()];
    let secure =
        mail_zone(SECURE, ip, &ee).raw(&tlsa_record(25, "mx.secure.test", 2, 0, 1, &tlsa_ta));
    let zones = vec![
        ZoneSpec::signed(secure),
        ZoneSpec::bogus(
            mail_zone(BOGUS, ip, &ee),
            Tamper::rdata("_25._tcp.mx.bogus-dns.test", "TLSA"),
        ),
        ZoneSpec::bogus(mail_zone(EXPIRED, ip, &ee), Tamper::ExpiredSignatures),
        ZoneSpec::unsigned(mail_zone(INSECURE, ip, &ee)),
        ZoneSpec::signed(mail_zone(BIG, ip, &ee)).large_dnskey(),
        ZoneSpec::signed(mail_zone(NSEC3, ip, &ee)).nsec3(),
    ];
    let world = DnssecWorld::start(dir.path(), zones)?;
    Ok(Scene {
        world,
        tlsa_ee,
        tlsa_ta,
        _dir: dir,
    })
}

impl Scene {
    /// `drill -D TYPE name` against unbound.
    fn ask(&self, rrtype: &str, name: &str) -> Result<DrillReply> {
        drill_query(self.world.resolver(), rrtype, name, true, false)
    }

    fn ctx(&self, r: &DrillReply) -> String {
        format!("{}\n{}", r.text, self.world.log())
    }
}

// Signed zone: TLSA (EE and TA) and MX answers come back validated, with AD.
#[test]
fn signed_tlsa_and_mx_have_ad() -> Result<()> {
    let s = scene()?;
    let r = s.ask("TLSA", "_25._tcp.mx.secure.test")?;
    ensure!(
        r.rcode == "NOERROR" && r.ad(),
        "TLSA not Secure:\n{}",
        s.ctx(&r)
    );
    let tlsa = r.records("TLSA");
    ensure!(tlsa.len() == 2, "want 2 TLSA records:\n{}", s.ctx(&r));
    ensure!(
        tlsa.iter()
            .any(|l| l.contains(&format!("3 1 1 {}", s.tlsa_ee))),
        "no 3 1 1 record for the leaf:\n{}",
        r.text
    );
    ensure!(
        tlsa.iter()
            .any(|l| l.contains(&format!("2 0 1 {}", s.tlsa_ta))),
        "no 2 0 1 record for the CA:\n{}",
        r.text
    );
    ensure!(
        !r.records("RRSIG").is_empty(),
        "DO set but no RRSIG:\n{}",
        r.text
    );

    let r = s.ask("MX", SECURE)?;
    ensure!(
        r.rcode == "NOERROR" && r.ad(),
        "MX not Secure:\n{}",
        s.ctx(&r)
    );
    ensure!(
        r.records("MX")
            .iter()
            .any(|l| l.contains("10 mx.secure.test.")),
        "no MX:\n{}",
        r.text
    );

    // Without DO, AD=1 in the query alone asks for AD (RFC 6840 §5.7), as hopguard does.
    let raw = query_ad(s.world.resolver(), "_25._tcp.mx.secure.test", QTYPE_TLSA)?;
    ensure!(
        raw.rcode == 0 && raw.ad && raw.answers == 2,
        "raw AD query: {raw:?}"
    );

    // nsd itself is authoritative, not validating: never AD.
    let r = drill_query(s.world.nsd_addr(), "MX", SECURE, true, false)?;
    ensure!(r.flag("aa") && !r.ad(), "nsd answer flags:\n{}", r.text);
    Ok(())
}

// Tampered TLSA and expired signatures: SERVFAIL; the untouched MX of the tampered zone stays
// Secure (only the tampered RRset is Bogus).
#[test]
fn bogus_answers_servfail() -> Result<()> {
    let s = scene()?;
    let r = s.ask("TLSA", "_25._tcp.mx.bogus-dns.test")?;
    ensure!(r.rcode == "SERVFAIL", "tampered TLSA:\n{}", s.ctx(&r));
    let raw = query_ad(s.world.resolver(), "_25._tcp.mx.bogus-dns.test", QTYPE_TLSA)?;
    ensure!(
        raw.rcode == 2 && !raw.ad,
        "raw query of the tampered TLSA: {raw:?}"
    );

    let r = s.ask("MX", BOGUS)?;
    ensure!(
        r.rcode == "NOERROR" && r.ad(),
        "untouched MX:\n{}",
        s.ctx(&r)
    );

    let r = s.ask("MX", EXPIRED)?;
    ensure!(r.rcode == "SERVFAIL", "expired MX:\n{}", s.ctx(&r));
    let r = s.ask("TLSA", "_25._tcp.mx.expired.test")?;
    ensure!(r.rcode == "SERVFAIL", "expired TLSA:\n{}", s.ctx(&r));

    // The same data straight from nsd is there: the SERVFAIL is validation, not absence.
    let r = drill_query(
        s.world.nsd_addr(),
        "TLSA",
        "_25._tcp.mx.bogus-dns.test",
        true,
        false,
    )?;
    ensure!(
        r.rcode == "NOERROR" && r.records("TLSA").len() == 1,
        "nsd:\n{}",
        r.text
    );

    // unbound says why (val-log-level 2).
    let log = s.world.unbound_log();
    ensure!(
        log.contains("validation failure") && log.contains("bogus-dns.test"),
        "no validation failure logged:\n{log}"
    );
    Ok(())
}

// Unsigned child of a signed parent (no DS, NSEC proof): Insecure, NOERROR without AD.
#[test]
fn unsigned_delegation_is_insecure() -> Result<()> {
    let s = scene()?;
    for (t, name) in [("MX", INSECURE), ("TLSA", "_25._tcp.mx.insecure.test")] {
        let r = s.ask(t, name)?;
        ensure!(r.rcode == "NOERROR", "{t} {name}:\n{}", s.ctx(&r));
        ensure!(!r.ad(), "{t} {name} has AD:\n{}", r.text);
        ensure!(!r.records(t).is_empty(), "{t} {name} empty:\n{}", r.text);
    }
    let raw = query_ad(s.world.resolver(), "_25._tcp.mx.insecure.test", QTYPE_TLSA)?;
    ensure!(
        raw.rcode == 0 && !raw.ad && raw.answers == 1,
        "raw: {raw:?}"
    );
    // The parent proves the DS absent, securely.
    let r = s.ask("DS", INSECURE)?;
    ensure!(
        r.rcode == "NOERROR" && r.ad() && r.records("DS").is_empty(),
        "DS:\n{}",
        r.text
    );
    Ok(())
}

// Large DNSKEY RRset: nsd's answer exceeds 1232 bytes (TC over UDP, complete over TCP) and
// unbound still validates the zone (it must have refetched the DNSKEYs over TCP).
#[test]
fn large_dnskey_needs_tcp_and_validates() -> Result<()> {
    let s = scene()?;
    let nsd = s.world.nsd_addr();
    let tcp = drill_query(nsd, "DNSKEY", BIG, true, true)?;
    ensure!(tcp.rcode == "NOERROR", "DNSKEY over TCP:\n{}", tcp.text);
    ensure!(
        tcp.size > EDNS_UDP_LIMIT,
        "DNSKEY answer only {} bytes:\n{}",
        tcp.size,
        tcp.text
    );
    ensure!(tcp.records("DNSKEY").len() >= 7, "DNSKEYs:\n{}", tcp.text);
    let udp = drill_query(nsd, "DNSKEY", BIG, true, false)?;
    ensure!(
        udp.flag("tc"),
        "UDP DNSKEY answer not truncated:\n{}",
        udp.text
    );

    let r = s.ask("TLSA", "_25._tcp.mx.big.test")?;
    ensure!(r.rcode == "NOERROR" && r.ad(), "big TLSA:\n{}", s.ctx(&r));
    let r = drill_query(s.world.resolver(), "DNSKEY", BIG, true, true)?;
    ensure!(
        r.rcode == "NOERROR" && r.ad(),
        "big DNSKEY via unbound:\n{}",
        s.ctx(&r)
    );
    Ok(())
}

// NXDOMAIN and NODATA inside signed zones (NSEC and NSEC3): proven, so AD is set.
#[test]
fn nxdomain_in_signed_zone_has_ad() -> Result<()> {
    let s = scene()?;
    for zone in [SECURE, NSEC3] {
        let name = format!("_25._tcp.nosuch.{zone}");
        let r = s.ask("TLSA", &name)?;
        ensure!(r.rcode == "NXDOMAIN" && r.ad(), "{name}:\n{}", s.ctx(&r));
        // NODATA: the name exists, the type does not.
        let r = s.ask("TLSA", &format!("mx.{zone}"))?;
        ensure!(
            r.rcode == "NOERROR" && r.ad() && r.answer.is_empty(),
            "NODATA in {zone}:\n{}",
            s.ctx(&r)
        );
    }
    // In the unsigned zone the same NXDOMAIN carries no AD.
    let r = s.ask("TLSA", "_25._tcp.nosuch.insecure.test")?;
    ensure!(
        r.rcode == "NXDOMAIN" && !r.ad(),
        "insecure NXDOMAIN:\n{}",
        s.ctx(&r)
    );
    Ok(())
}
