//! A real DNSSEC scene: an nsd serving signed zones and a validating unbound in front of it.
//!
//! # Zones and delegation
//!
//! [`DnssecWorld::start`] always builds the parent zone `test.` itself (SOA, `NS ns.test.`, glue
//! `ns.test. A <nsd>`), signs it, and uses the DS of its key-signing key as unbound's only trust
//! anchor (`trust-anchor-file`). Every [`ZoneSpec`] passed in is a separate zone *below* `test.`
//! (for example `secure.test.`), served by the same nsd and delegated from `test.` with
//! `NS ns.<child>` plus glue:
//!
//! | spec                          | in `test.` (signed)      | validating answer                   |
//! |-------------------------------|--------------------------|-------------------------------------|
//! | [`ZoneSpec::signed`]          | NS + glue + DS           | Secure: NOERROR/NXDOMAIN with AD    |
//! | [`ZoneSpec::bogus`]           | NS + glue + DS           | Bogus: SERVFAIL (the tampered data) |
//! | [`ZoneSpec::unsigned`]        | NS + glue, no DS (NSEC)  | Insecure: NOERROR without AD        |
//! | `.large_dnskey()` on a signed | NS + glue + DS           | Secure, DNSKEY RRset > 1232 bytes   |
//!
//! A spec whose origin is `test.` itself is not a child: its records become the body of the
//! parent zone (it must be signed, not bogus). Nested children (`a.secure.test.` beside
//! `secure.test.`) are refused: every delegation is made from `test.`.
//!
//! nsd hosts parent and children together; it answers a `DS` query from the parent side of
//! the cut, everything else from the child, so unbound (with a `stub-zone` for `test.` pointing
//! at nsd) walks the chain test. DNSKEY → child DS → child DNSKEY → RRset without any
//! referral or root server.
//!
//! # Signing
//!
//! [`SignedZone`] runs `ldns-keygen -a ECDSAP256SHA256` twice (a KSK with `-k`, a ZSK) and
//! `ldns-signzone` (NSEC by default, NSEC3 with 0 iterations and no salt on request), with
//! inception one hour back and expiry a year ahead, both given as Unix timestamps. With
//! `large_dnskey`, five RSASHA256-2048 DNSKEYs are published in the zone but never sign anything;
//! the DNSKEY RRset then needs ~1.6 KB, over nsd's 1232-byte UDP limit, so nsd sets TC and unbound
//! must fall back to TCP to validate anything in that zone.
//!
//! # How a zone is made bogus
//!
//! [`Tamper::Rdata`] signs the zone normally, then edits the rdata of one record of the given
//! owner and type in the signed file (a TLSA digest's last hex digit flipped, an MX preference
//! +1, an A's last octet flipped, a TXT string extended) and keeps the old RRSIG: the DS chain is
//! intact, so only that RRset is Bogus and the rest of the zone still validates.
//! [`Tamper::ExpiredSignatures`] signs with inception 40 days ago and expiry 10 days ago (beyond
//! unbound's maximum clock-skew allowance of one day), so the whole zone, DNSKEY included,
//! is Bogus.
//!
//! # Processes
//!
//! nsd (`-d`) and unbound (`-d`, `do-daemonize: no`) run in the foreground as children, each on
//! its own [`Net::alloc`] address, port 53, with `chroot: ""`, `username: ""`, and pidfile, log
//! and config in their own sub-directory; they are stopped by pid (TERM, then KILL) on drop.
//! unbound logs at `verbosity: 1`, `val-log-level: 2`, `log-servfail: yes`: the reason of every
//! SERVFAIL is in [`DnssecWorld::unbound_log`].
//!
//! [`Net::alloc`]: crate::net::Net::alloc

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};

use crate::dns::{query, Zone, QTYPE_SOA};
use crate::net::Net;
use crate::{pid_alive, read_lossy, signal_pid, wait_until};

/// The parent zone, the only trust anchor of the scene's unbound.
pub const PARENT: &str = "test.";

/// How long nsd or unbound may take until they answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// DNSSEC algorithm of the signing keys (13 = ECDSAP256SHA256, RFC 6605).
const SIGNING_ALGORITHM: &str = "ECDSAP256SHA256";

/// Number and size of the extra, published-only RSA keys of a `large_dnskey` zone.
const LARGE_DNSKEY_EXTRA_KEYS: usize = 5;
const LARGE_DNSKEY_RSA_BITS: u32 = 2048;

/// The EDNS UDP payload limit of nsd and unbound here (DNS flag day 2020 value).
pub const EDNS_UDP_LIMIT: usize = 1232;

/// How to break a signed zone after signing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Change the rdata of the first record `owner`/`rrtype` (e.g. `"TLSA"`, `"MX"`, `"A"`,
    /// `"TXT"`) in the signed file, keeping its RRSIG: that RRset is Bogus.
    Rdata { owner: String, rrtype: String },
    /// Sign with signatures that expired ten days ago: the whole zone is Bogus.
    ExpiredSignatures,
}

impl Tamper {
    /// `Tamper::Rdata` for `owner` (made absolute) and `rrtype`.
    pub fn rdata(owner: &str, rrtype: &str) -> Self {
        Tamper::Rdata {
            owner: fqdn(owner),
            rrtype: rrtype.to_ascii_uppercase(),
        }
    }
}

/// Signing options of one zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignOptions {
    /// Publish extra unused RSA DNSKEYs so the DNSKEY RRset exceeds [`EDNS_UDP_LIMIT`].
    pub large_dnskey: bool,
    /// Deny existence with NSEC3 (0 extra iterations, empty salt, RFC 9276) instead of NSEC.
    pub nsec3: bool,
    /// Break the zone after signing.
    pub tamper: Option<Tamper>,
}

/// The DNSSEC status a zone should have under the trust anchor `test.`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Security {
    /// Signed, with a DS in `test.`.
    Signed,
    /// Signed, with a DS in `test.`, then broken.
    Bogus(Tamper),
    /// Not signed, no DS in `test.` (the parent proves the DS absent).
    Unsigned,
}

/// One zone of a [`DnssecWorld`].
#[derive(Clone, Debug)]
pub struct ZoneSpec {
    pub zone: Zone,
    pub security: Security,
    pub large_dnskey: bool,
    pub nsec3: bool,
}

impl ZoneSpec {
    /// A signed (Secure) zone.
    pub fn signed(zone: Zone) -> Self {
        Self::with(zone, Security::Signed)
    }

    /// A signed zone broken by `tamper` (Bogus).
    pub fn bogus(zone: Zone, tamper: Tamper) -> Self {
        Self::with(zone, Security::Bogus(tamper))
    }

    /// An unsigned zone, delegated without DS (Insecure).
    pub fn unsigned(zone: Zone) -> Self {
        Self::with(zone, Security::Unsigned)
    }

    /// Publishes extra DNSKEYs so the DNSKEY answer needs TCP.
    pub fn large_dnskey(mut self) -> Self {
        self.large_dnskey = true;
        self
    }

    /// Uses NSEC3 instead of NSEC.
    pub fn nsec3(mut self) -> Self {
        self.nsec3 = true;
        self
    }

    pub fn origin(&self) -> &str {
        self.zone.origin()
    }

    fn with(zone: Zone, security: Security) -> Self {
        Self {
            zone,
            security,
            large_dnskey: false,
            nsec3: false,
        }
    }

    fn sign_options(&self) -> SignOptions {
        SignOptions {
            large_dnskey: self.large_dnskey,
            nsec3: self.nsec3,
            tamper: match &self.security {
                Security::Bogus(t) => Some(t.clone()),
                _ => None,
            },
        }
    }
}

/// A zone signed by ldns-signzone, with its keys kept in `dir`.
#[derive(Clone, Debug)]
pub struct SignedZone {
    origin: String,
    path: PathBuf,
    text: String,
    ksk_ds: String,
    ksk_dnskey: String,
    dnskeys: Vec<String>,
}

impl SignedZone {
    /// Signs a [`Zone`]; see [`SignedZone::sign`].
    pub fn from_zone(dir: &Path, zone: &Zone, opts: &SignOptions) -> Result<Self> {
        Self::sign(dir, zone.origin(), &zone.text(), opts)
    }

    /// Generates a KSK and a ZSK for `origin` in `dir`, signs the master file `text`, applies
    /// `opts.tamper`, and writes the result to `dir/<origin>zone.signed`.
    pub fn sign(dir: &Path, origin: &str, text: &str, opts: &SignOptions) -> Result<Self> {
        let origin = fqdn(origin);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ksk = keygen(dir, &origin, SIGNING_ALGORITHM, None, true)?;
        let zsk = keygen(dir, &origin, SIGNING_ALGORITHM, None, false)?;

        let mut text = text.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if opts.large_dnskey {
            for _ in 0..LARGE_DNSKEY_EXTRA_KEYS {
                let extra = keygen(
                    dir,
                    &origin,
                    "RSASHA256",
                    Some(LARGE_DNSKEY_RSA_BITS),
                    false,
                )?;
                // Published only: the .key line goes into the zone, the key never signs.
                text.push_str(&read_key_line(dir, &extra, "key")?);
                text.push('\n');
            }
        }
        let unsigned = dir.join(format!("{origin}zone"));
        std::fs::write(&unsigned, &text)
            .with_context(|| format!("writing {}", unsigned.display()))?;
        let signed = dir.join(format!("{origin}zone.signed"));

        let now = unix_now();
        let (inception, expiration) = match opts.tamper {
            // Beyond unbound's clock-skew allowance (val-sig-skew-max, one day).
            Some(Tamper::ExpiredSignatures) => (now - 40 * 86_400, now - 10 * 86_400),
            _ => (now - 3_600, now + 365 * 86_400),
        };
        let mut cmd = Command::new("ldns-signzone");
        cmd.current_dir(dir)
            .arg("-i")
            .arg(inception.to_string())
            .arg("-e")
            .arg(expiration.to_string())
            .arg("-o")
            .arg(&origin)
            .arg("-f")
            .arg(&signed);
        if opts.nsec3 {
            // RFC 9276 §3.1: 0 extra iterations; ldns's default salt is already empty (it
            // rejects "-" as a salt).
            cmd.args(["-n", "-t", "0"]);
        }
        cmd.arg(&unsigned).arg(&ksk).arg(&zsk);
        run(&mut cmd, "ldns-signzone (Debian package ldnsutils)")?;

        let mut signed_text = std::fs::read_to_string(&signed)
            .with_context(|| format!("reading {}", signed.display()))?;
        if let Some(Tamper::Rdata { owner, rrtype }) = &opts.tamper {
            signed_text = tamper_rdata(&signed_text, owner, rrtype)
                .with_context(|| format!("tampering with {owner} {rrtype} in {origin}"))?;
            std::fs::write(&signed, &signed_text)?;
        }
        let dnskeys = signed_text
            .lines()
            .filter(|l| rr_type(l) == Some("DNSKEY"))
            .map(strip_comment)
            .collect();
        Ok(Self {
            ksk_ds: read_key_line(dir, &ksk, "ds")?,
            ksk_dnskey: read_key_line(dir, &ksk, "key")?,
            origin,
            path: signed,
            text: signed_text,
            dnskeys,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed master file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The signed master file's text (as served, tampering included).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The DS record of the KSK (`<origin> IN DS tag 13 2 <hex>`): for the parent zone or for
    /// a `trust-anchor-file`.
    pub fn ds(&self) -> &str {
        &self.ksk_ds
    }

    /// The KSK's DNSKEY record (an alternative trust anchor).
    pub fn ksk_dnskey(&self) -> &str {
        &self.ksk_dnskey
    }

    /// Every DNSKEY record published in the signed zone.
    pub fn dnskeys(&self) -> &[String] {
        &self.dnskeys
    }
}

/// What one zone of the world became.
#[derive(Clone, Debug)]
pub struct ServedZone {
    pub origin: String,
    pub security: Security,
    /// `None` for an unsigned zone.
    pub signed: Option<SignedZone>,
    /// The zone file nsd loads.
    pub file: PathBuf,
}

/// nsd serving `test.` and its children, and a validating unbound with `test.` as trust anchor.
///
/// Fields drop in order: unbound first, then nsd.
pub struct DnssecWorld {
    unbound: Daemon,
    nsd: Daemon,
    unbound_addr: SocketAddr,
    nsd_addr: SocketAddr,
    parent: SignedZone,
    zones: Vec<ServedZone>,
}

impl DnssecWorld {
    /// Signs and serves `test.` plus `zones`, starts unbound, and returns once unbound
    /// answers `test. SOA` (which needs a validated chain from the trust anchor).
    pub fn start(dir: &Path, zones: Vec<ZoneSpec>) -> Result<Self> {
        let nsd_ip = Net::alloc();
        let unbound_ip = Net::alloc();
        let nsd_addr = SocketAddr::from((nsd_ip, 53));
        let unbound_addr = SocketAddr::from((unbound_ip, 53));
        let zone_dir = dir.join("zones");
        std::fs::create_dir_all(&zone_dir)?;

        // The parent's body: a caller-given `test.` spec, or the default SOA/NS.
        let mut parent_zone = Zone::new(PARENT);
        let mut children = Vec::new();
        for spec in zones {
            if spec.origin().eq_ignore_ascii_case(PARENT) {
                ensure!(
                    spec.security == Security::Signed,
                    "the parent zone {PARENT} is the trust anchor: it must be signed, not bogus"
                );
                parent_zone = spec.zone.clone();
                continue;
            }
            ensure!(
                spec.origin()
                    .to_ascii_lowercase()
                    .ends_with(&format!(".{PARENT}")),
                "zone {} is not below {PARENT}",
                spec.origin()
            );
            children.push(spec);
        }
        for (i, a) in children.iter().enumerate() {
            for b in &children[i + 1..] {
                let oa = fqdn(a.origin()).to_ascii_lowercase();
                let ob = fqdn(b.origin()).to_ascii_lowercase();
                ensure!(
                    oa != ob
                        && !oa.ends_with(&format!(".{ob}"))
                        && !ob.ends_with(&format!(".{oa}")),
                    "zones {oa} and {ob} overlap: only separate children of {PARENT} are supported"
                );
            }
        }

        let mut served = Vec::new();
        let mut parent_text = with_glue(&parent_zone.text(), PARENT, nsd_ip);
        for spec in &children {
            let origin = fqdn(spec.origin()).to_ascii_lowercase();
            let _ = writeln!(parent_text, "{origin} IN NS ns.{origin}");
            let _ = writeln!(parent_text, "ns.{origin} IN A {nsd_ip}");
            let text = with_glue(&spec.zone.text(), &origin, nsd_ip);
            let keys = zone_dir.join(format!("keys-{origin}"));
            match spec.security {
                Security::Unsigned => {
                    let file = zone_dir.join(format!("{origin}zone"));
                    std::fs::write(&file, text)?;
                    served.push(ServedZone {
                        origin,
                        security: Security::Unsigned,
                        signed: None,
                        file,
                    });
                }
                Security::Signed | Security::Bogus(_) => {
                    let signed = SignedZone::sign(&keys, &origin, &text, &spec.sign_options())?;
                    let _ = writeln!(parent_text, "{}", signed.ds());
                    served.push(ServedZone {
                        origin,
                        security: spec.security.clone(),
                        file: signed.path().to_path_buf(),
                        signed: Some(signed),
                    });
                }
            }
        }
        let parent = SignedZone::sign(
            &zone_dir.join(format!("keys-{PARENT}")),
            PARENT,
            &parent_text,
            &SignOptions::default(),
        )?;

        let nsd = start_nsd(&dir.join("nsd"), nsd_ip, &parent, &served)?;
        let unbound = start_unbound(&dir.join("unbound"), unbound_ip, nsd_addr, &parent)?;
        let mut zones = vec![ServedZone {
            origin: PARENT.to_string(),
            security: Security::Signed,
            file: parent.path().to_path_buf(),
            signed: Some(parent.clone()),
        }];
        zones.extend(served);
        Ok(Self {
            unbound,
            nsd,
            unbound_addr,
            nsd_addr,
            parent,
            zones,
        })
    }

    /// The validating resolver (unbound), `ip:53`: what the relay's `dns.resolvers` names.
    pub fn resolver(&self) -> SocketAddr {
        self.unbound_addr
    }

    /// The authoritative server (nsd), `ip:53`.
    pub fn nsd_addr(&self) -> SocketAddr {
        self.nsd_addr
    }

    /// The signed parent zone `test.` (its DS is the trust anchor).
    pub fn parent(&self) -> &SignedZone {
        &self.parent
    }

    /// Every zone served, `test.` first.
    pub fn zones(&self) -> &[ServedZone] {
        &self.zones
    }

    /// The served zone `origin`.
    pub fn zone(&self, origin: &str) -> Option<&ServedZone> {
        let origin = fqdn(origin);
        self.zones
            .iter()
            .find(|z| z.origin.eq_ignore_ascii_case(&origin))
    }

    /// nsd's log and output.
    pub fn nsd_log(&self) -> String {
        self.nsd.log()
    }

    /// unbound's log and output (validation failures at val-log-level 2).
    pub fn unbound_log(&self) -> String {
        self.unbound.log()
    }

    /// Both logs, labelled: for assertion messages.
    pub fn log(&self) -> String {
        format!(
            "--- nsd ---\n{}\n--- unbound ---\n{}",
            self.nsd_log(),
            self.unbound_log()
        )
    }

    /// Stops unbound, then nsd.
    pub fn stop(&mut self) {
        self.unbound.stop();
        self.nsd.stop();
    }
}

impl Drop for DnssecWorld {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256` of the first certificate
/// in `cert_pem`: the data of a `TLSA 3 1 1` (DANE-EE, SPKI, SHA-256) record, lowercase hex.
pub fn tlsa_3_1_1(cert_pem: &Path) -> Result<String> {
    let pubkey = pipe(
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(cert_pem),
        &[],
    )?;
    let spki = pipe(
        Command::new("openssl").args(["pkey", "-pubin", "-outform", "DER"]),
        &pubkey,
    )?;
    sha256_hex(&spki)
}

/// SHA-256 of the DER of the first certificate in `ca_pem`: the data of a `TLSA 2 0 1`
/// (DANE-TA, full certificate, SHA-256) record, lowercase hex.
pub fn tlsa_2_0_1(ca_pem: &Path) -> Result<String> {
    let der = pipe(
        Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(ca_pem),
        &[],
    )?;
    sha256_hex(&der)
}

/// A TLSA record line for `_port._tcp.host`.
pub fn tlsa_record(port: u16, host: &str, usage: u8, selector: u8, mtype: u8, hex: &str) -> String {
    format!(
        "_{port}._tcp.{} IN TLSA {usage} {selector} {mtype} {hex}",
        fqdn(host)
    )
}

/// One answer as drill printed it.
#[derive(Clone, Debug)]
pub struct DrillReply {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`...
    pub rcode: String,
    /// Header flags in lowercase: `qr`, `aa`, `tc`, `rd`, `ra`, `ad`, `cd`.
    pub flags: Vec<String>,
    /// Lines of the answer section.
    pub answer: Vec<String>,
    /// `;; MSG SIZE  rcvd:` (bytes of the DNS message).
    pub size: usize,
    /// drill's whole output.
    pub text: String,
}

impl DrillReply {
    pub fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The AD (authenticated data) flag.
    pub fn ad(&self) -> bool {
        self.flag("ad")
    }

    /// Answer records of type `rrtype` (RRSIGs excluded unless asked for).
    pub fn records(&self, rrtype: &str) -> Vec<&str> {
        self.answer
            .iter()
            .filter(|l| rr_type(l).is_some_and(|t| t.eq_ignore_ascii_case(rrtype)))
            .map(String::as_str)
            .collect()
    }
}

/// Runs `drill [-D] [-t] @ip -p port TYPE name` and parses the reply. `dnssec` sets the DO bit
/// (`-D`, RRSIGs in the answer); `tcp` queries over TCP (`-t`).
pub fn drill_query(
    server: SocketAddr,
    rrtype: &str,
    name: &str,
    dnssec: bool,
    tcp: bool,
) -> Result<DrillReply> {
    let mut cmd = Command::new("drill");
    if dnssec {
        cmd.arg("-D");
    }
    if tcp {
        cmd.arg("-t");
    }
    let out = cmd
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg(rrtype)
        .arg(name)
        .output()
        .context("running drill (Debian package ldnsutils)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_drill(&text).with_context(|| format!("drill {rrtype} {name} ({}):\n{text}", out.status))
}

fn parse_drill(text: &str) -> Result<DrillReply> {
    let mut rcode = None;
    let mut flags = None;
    let mut size = None;
    let mut answer = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if let Some(rest) = line.split("rcode: ").nth(1) {
            rcode = rest.split(',').next().map(|s| s.trim().to_string());
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let f = rest.split(';').next().unwrap_or("");
            flags = Some(f.split_whitespace().map(str::to_ascii_lowercase).collect());
        } else if let Some(rest) = line.strip_prefix(";; MSG SIZE  rcvd:") {
            size = rest.trim().parse().ok();
        } else if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() || line.starts_with(";;") {
                in_answer = false;
            } else {
                answer.push(line.to_string());
            }
        }
    }
    Ok(DrillReply {
        rcode: rcode.context("no rcode in drill output")?,
        flags: flags.context("no flags in drill output")?,
        answer,
        size: size.context("no message size in drill output")?,
        text: text.to_string(),
    })
}

/// Header facts of a raw reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawReply {
    pub rcode: u8,
    pub ad: bool,
    pub tc: bool,
    pub answers: u16,
    pub size: usize,
}

/// Sends one UDP query with RD=1 and AD=1 but no EDNS/DO (RFC 6840 §5.7: AD=1 in a query
/// asks for the AD bit in the reply), as a stub relying on a validating resolver would.
pub fn query_ad(server: SocketAddr, name: &str, qtype: u16) -> Result<RawReply> {
    query_ad_within(server, name, qtype, Duration::from_secs(5))
}

fn query_ad_within(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<RawReply> {
    let id: u16 = (std::process::id() as u16) ^ 0x3c3c;
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&id.to_be_bytes());
    // RD in the first flag byte; AD (0x20) in the second.
    msg.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        ensure!(
            !label.is_empty() && label.len() <= 63,
            "bad DNS name {name:?}"
        );
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    // Connected, so a server not listening yet is an immediate ECONNREFUSED, not a timeout.
    sock.connect(server)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(&msg)?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).context("waiting for the DNS reply")?;
    ensure!(
        n >= 12 && buf[0..2] == id.to_be_bytes() && buf[2] & 0x80 != 0,
        "not a response to our query"
    );
    Ok(RawReply {
        rcode: buf[3] & 0x0f,
        ad: buf[3] & 0x20 != 0,
        tc: buf[2] & 0x02 != 0,
        answers: u16::from_be_bytes([buf[6], buf[7]]),
        size: n,
    })
}

/// DNS type code of TLSA (RFC 6698).
pub const QTYPE_TLSA: u16 = 52;
/// DNS type code of DNSKEY.
pub const QTYPE_DNSKEY: u16 = 48;

// ---------------------------------------------------------------------------------------------

fn start_nsd(
    dir: &Path,
    ip: Ipv4Addr,
    parent: &SignedZone,
    children: &[ServedZone],
) -> Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    let mut conf = format!(
        "server:\n  ip-address: {ip}\n  port: 53\n  chroot: \"\"\n  username: \"\"\n  \
         zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  \
         logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 1\n  hide-version: yes\n  \
         ipv4-edns-size: {EDNS_UDP_LIMIT}\n  do-ip6: no\n\
         remote-control:\n  control-enable: no\n"
    );
    let mut files = vec![(parent.origin().to_string(), parent.path().to_path_buf())];
    files.extend(children.iter().map(|z| (z.origin.clone(), z.file.clone())));
    for (origin, file) in files {
        let _ = write!(
            conf,
            "zone:\n  name: \"{origin}\"\n  zonefile: \"{}\"\n",
            file.display()
        );
    }
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nsd");
    cmd.arg("-d").arg("-c").arg(&conf_path);
    let mut nsd = Daemon::spawn("nsd", cmd, dir.join("nsd.out"), vec![dir.join("nsd.log")])?;
    let sock = SocketAddr::from((ip, 53));
    nsd.wait_ready(|| query(sock, PARENT, QTYPE_SOA).is_ok())?;
    Ok(nsd)
}

fn start_unbound(dir: &Path, ip: Ipv4Addr, nsd: SocketAddr, anchor: &SignedZone) -> Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let anchor_file = dir.join("trust-anchor.ds");
    std::fs::write(&anchor_file, format!("{}\n", anchor.ds()))?;
    let d = dir.display();
    let conf = format!(
        "server:\n  \
         interface: {ip}@53\n  \
         port: 53\n  \
         do-ip6: no\n  \
         do-daemonize: no\n  \
         chroot: \"\"\n  \
         username: \"\"\n  \
         directory: \"{d}\"\n  \
         pidfile: \"{d}/unbound.pid\"\n  \
         use-syslog: no\n  \
         logfile: \"{d}/unbound.log\"\n  \
         log-time-ascii: yes\n  \
         log-servfail: yes\n  \
         verbosity: 1\n  \
         val-log-level: 2\n  \
         num-threads: 1\n  \
         so-reuseport: no\n  \
         access-control: 127.0.0.0/8 allow\n  \
         do-not-query-localhost: no\n  \
         qname-minimisation: no\n  \
         local-zone: \"{PARENT}\" nodefault\n  \
         module-config: \"validator iterator\"\n  \
         trust-anchor-file: \"{anchor}\"\n  \
         edns-buffer-size: {EDNS_UDP_LIMIT}\n  \
         cache-max-ttl: 30\n  \
         cache-max-negative-ttl: 5\n  \
         val-bogus-ttl: 5\n  \
         infra-host-ttl: 30\n\
         remote-control:\n  \
         control-enable: no\n\
         stub-zone:\n  \
         name: \"{PARENT}\"\n  \
         stub-addr: {nsd_ip}@{nsd_port}\n",
        anchor = anchor_file.display(),
        nsd_ip = nsd.ip(),
        nsd_port = nsd.port(),
    );
    let conf_path = dir.join("unbound.conf");
    std::fs::write(&conf_path, conf)?;
    let check = Command::new("unbound-checkconf")
        .arg(&conf_path)
        .output()
        .context("running unbound-checkconf (Debian package unbound)")?;
    if !check.status.success() {
        bail!(
            "unbound-checkconf {}:\n{}{}",
            conf_path.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let mut cmd = Command::new("unbound");
    cmd.arg("-d").arg("-c").arg(&conf_path);
    let mut unbound = Daemon::spawn(
        "unbound",
        cmd,
        dir.join("unbound.out"),
        vec![dir.join("unbound.log")],
    )?;
    let sock = SocketAddr::from((ip, 53));
    // NOERROR with AD for `test. SOA` needs the trust anchor to match test.'s DNSKEY (and not
    // unbound's built-in `test.` local zone): a broken chain shows here as a timeout, with
    // unbound's log in the error.
    unbound.wait_ready(|| {
        query_ad_within(sock, PARENT, QTYPE_SOA, Duration::from_millis(500))
            .is_ok_and(|r| r.rcode == 0 && r.ad && r.answers > 0)
    })?;
    Ok(unbound)
}

/// A foreground child process, stopped by pid.
struct Daemon {
    name: &'static str,
    child: Option<Child>,
    out: PathBuf,
    logs: Vec<PathBuf>,
}

impl Daemon {
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        out: PathBuf,
        logs: Vec<PathBuf>,
    ) -> Result<Self> {
        let file = std::fs::File::create(&out)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Self {
            name,
            child: Some(child),
            out,
            logs,
        })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let name = self.name;
        let res = wait_until(&format!("{name} to answer"), START_TIMEOUT, || {
            if let Some(status) = self.exited() {
                bail!("{name} exited with {status}");
            }
            Ok(ready().then_some(()))
        });
        if let Err(e) = res {
            bail!("{e:#}\n{name} log:\n{}", self.log());
        }
        Ok(())
    }

    fn log(&self) -> String {
        let mut s = String::new();
        for p in self.logs.iter().chain(std::iter::once(&self.out)) {
            s.push_str(&read_lossy(p));
        }
        s
    }

    /// SIGTERM by pid, then SIGKILL if it has not exited within 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if matches!(child.try_wait(), Ok(None)) && pid_alive(pid) {
            let _ = signal_pid(pid, "TERM");
        }
        let exited = wait_until(
            &format!("{} to exit", self.name),
            Duration::from_secs(5),
            || Ok(child.try_wait()?.map(|_| ())),
        );
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `ldns-keygen` in `dir` and returns the key's base name (`K<origin>+alg+tag`).
fn keygen(dir: &Path, origin: &str, alg: &str, bits: Option<u32>, ksk: bool) -> Result<String> {
    let mut cmd = Command::new("ldns-keygen");
    cmd.current_dir(dir).arg("-a").arg(alg);
    if let Some(b) = bits {
        cmd.arg("-b").arg(b.to_string());
    }
    if ksk {
        cmd.arg("-k");
    }
    cmd.arg(origin);
    let out = run(&mut cmd, "ldns-keygen (Debian package ldnsutils)")?;
    let base = out.trim().to_string();
    ensure!(
        base.starts_with('K') && !base.contains(char::is_whitespace),
        "unexpected ldns-keygen output {out:?}"
    );
    Ok(base)
}

/// The record line of `dir/<base>.<ext>` (`key`: DNSKEY, `ds`: DS), its comment stripped.
fn read_key_line(dir: &Path, base: &str, ext: &str) -> Result<String> {
    let path = dir.join(format!("{base}.{ext}"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(strip_comment)
        .find(|l| !l.is_empty())
        .with_context(|| format!("no record in {}", path.display()))
}

/// Drops a trailing `;comment` (ldns annotates DNSKEY lines with `;{id = ...}`).
fn strip_comment(line: &str) -> String {
    line.split(';').next().unwrap_or("").trim().to_string()
}

/// Adds `ns.<origin> A ip` unless the text already has records for `ns.<origin>`.
fn with_glue(text: &str, origin: &str, ip: Ipv4Addr) -> String {
    let ns = format!("ns.{}", fqdn(origin)).to_ascii_lowercase();
    let mut text = text.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let has = text.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|o| o.eq_ignore_ascii_case(&ns))
    });
    if !has {
        let _ = writeln!(text, "{ns} IN A {ip}");
    }
    text
}

/// The type field of a master-file line in ldns's output form `owner TTL CLASS TYPE rdata`.
fn rr_type(line: &str) -> Option<&str> {
    if line.starts_with(';') {
        return None;
    }
    let f: Vec<&str> = line.split_whitespace().take(4).collect();
    match f.as_slice() {
        [_, ttl, class, t] if ttl.parse::<u32>().is_ok() && class.eq_ignore_ascii_case("IN") => {
            Some(t)
        }
        // drill prints the same layout.
        [_, _, _, t] => Some(t),
        _ => None,
    }
}

/// Changes the rdata of the first `owner rrtype` record of ldns-signzone's output.
fn tamper_rdata(signed: &str, owner: &str, rrtype: &str) -> Result<String> {
    let owner = fqdn(owner);
    let mut done = false;
    let mut out = String::with_capacity(signed.len());
    for line in signed.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let hit = !done
            && fields.len() > 4
            && fields[0].eq_ignore_ascii_case(&owner)
            && fields[3].eq_ignore_ascii_case(rrtype);
        if !hit {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut rdata: Vec<String> = fields[4..].iter().map(|s| s.to_string()).collect();
        match rrtype.to_ascii_uppercase().as_str() {
            "TLSA" => {
                // usage selector mtype hex: flip the digest's last hex digit.
                let hex = rdata.last_mut().context("empty TLSA rdata")?;
                let last = hex.pop().context("empty TLSA digest")?;
                hex.push(if last == '0' { '1' } else { '0' });
            }
            "MX" => {
                let pref: u16 = rdata[0].parse().context("MX preference")?;
                rdata[0] = pref.wrapping_add(1).to_string();
            }
            "A" => {
                let ip: Ipv4Addr = rdata[0].parse().context("A address")?;
                let o = ip.octets();
                rdata[0] = Ipv4Addr::new(o[0], o[1], o[2], o[3] ^ 1).to_string();
            }
            "TXT" => {
                let s = rdata.last_mut().context("empty TXT rdata")?;
                if s.ends_with('"') {
                    s.insert(s.len() - 1, 'x');
                } else {
                    s.push('x');
                }
            }
            other => bail!("tampering with {other} records is not implemented"),
        }
        let _ = writeln!(out, "{}\t{}", fields[..4].join("\t"), rdata.join(" "));
        done = true;
    }
    ensure!(done, "no {owner} {rrtype} record in the signed zone");
    Ok(out)
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs `cmd`, fails with its output unless it succeeds, returns its stdout.
fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with `input` on stdin and returns its stdout bytes.
fn pipe(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning openssl")?;
    {
        let mut stdin = child.stdin.take().context("openssl stdin")?;
        stdin.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// `openssl dgst -sha256 -r` of `data`, as lowercase hex.
fn sha256_hex(data: &[u8]) -> Result<String> {
    let out = pipe(
        Command::new("openssl").args(["dgst", "-sha256", "-r"]),
        data,
    )?;
    let text = String::from_utf8_lossy(&out);
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    ensure!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "unexpected openssl dgst output {text:?}"
    );
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampers_tlsa_digest_and_mx_preference() {
        let z = "a.test.\t60\tIN\tTLSA\t3 1 1 abc0\na.test.\t60\tIN\tRRSIG\tTLSA 13 2 60 x\n\
                 b.test.\t60\tIN\tMX\t10 mx.b.test.\n";
        let t = tamper_rdata(z, "a.test", "TLSA").unwrap();
        assert!(t.contains("TLSA\t3 1 1 abc1"), "{t}");
        assert!(t.contains("RRSIG\tTLSA 13 2 60 x"), "{t}");
        let t = tamper_rdata(z, "b.test.", "MX").unwrap();
        assert!(t.contains("MX\t11 mx.b.test."), "{t}");
        assert!(tamper_rdata(z, "c.test.", "MX").is_err());
    }

    #[test]
    fn parses_drill_output() {
        let text = ";; ->>HEADER<<- opcode: QUERY, rcode: NOERROR, id: 1\n\
                    ;; flags: qr rd ra ad ; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0 \n\
                    ;; ANSWER SECTION:\n\
                    x.test.\t60\tIN\tMX\t10 mx.x.test.\n\
                    \n;; MSG SIZE  rcvd: 77\n";
        let r = parse_drill(text).unwrap();
        assert_eq!(r.rcode, "NOERROR");
        assert!(r.ad() && r.flag("ra") && !r.flag("tc"));
        assert_eq!(r.records("MX").len(), 1);
        assert_eq!(r.size, 77);
    }
}
