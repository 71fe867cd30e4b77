//! The standard scene of the relay tests: test CA, nsd for `test.`, a TLS and a plain Postfix.
//!
//! | domain            | MX                 | where                                   |
//! |-------------------|--------------------|-----------------------------------------|
//! | tls-peer.test     | mx.tls-peer.test   | `tls_peer`: Postfix with STARTTLS        |
//! | origin.test       | mx.tls-peer.test   | `tls_peer` (senders live here: DSNs)     |
//! | inbound.test      | (next_hop)         | `tls_peer` (a relay_domains entry)       |
//! | plain-peer.test   | mx.plain-peer.test | `plain_peer`: Postfix without STARTTLS   |
//! | later-peer.test   | mx.later-peer.test | nothing until [`World::start_later_peer`] |
//!
//! TLS-RPT: tls-peer.test and plain-peer.test publish `rua=mailto:tlsrpt@origin.test`;
//! tls-peer.test also `https://tlsrpt-web.test/v1/tlsrpt` ([`TLSRPT_URL`]), whose name resolves
//! to `addrs.rua_web`, where nothing listens unless a test starts an
//! [`crate::https::PostSink`] there.
//!
//! `relay.hopguard.test` is the relay's name and certificate. Clients connect from
//! `addrs.client` (in relay_networks), `addrs.stranger` (in nothing) or `addrs.peer_client`
//! (peer-a's client_networks).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;

use crate::ca::{CertFiles, TestCa};
use crate::dns::{Nsd, Zone};
use crate::hopguard::{Hopguard, Peer, RelayConfig, RelayDomain};
use crate::net::Net;
use crate::postfix::{Postfix, PostfixOpts};
use crate::smtp_client::{SwaksMail, SwaksOutput};
use crate::TestDir;

pub const RELAY_HOSTNAME: &str = "relay.hopguard.test";
pub const TLS_PEER: &str = "tls-peer.test";
pub const TLS_PEER_MX: &str = "mx.tls-peer.test";
pub const ORIGIN: &str = "origin.test";
pub const INBOUND: &str = "inbound.test";
pub const PLAIN_PEER: &str = "plain-peer.test";
pub const LATER_PEER: &str = "later-peer.test";
pub const PEER_A: &str = "peer-a.test";
/// The host of tls-peer.test's `https:` TLS-RPT rua (A record: `addrs.rua_web`).
pub const TLSRPT_WEB: &str = "tlsrpt-web.test";
/// tls-peer.test's `https:` TLS-RPT rua.
pub const TLSRPT_URL: &str = "https://tlsrpt-web.test/v1/tlsrpt";

/// The loopback addresses of the scene.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub dns: Ipv4Addr,
    pub tls_mx: Ipv4Addr,
    pub plain_mx: Ipv4Addr,
    pub later_mx: Ipv4Addr,
    pub relay: Ipv4Addr,
    pub client: Ipv4Addr,
    pub stranger: Ipv4Addr,
    pub peer_client: Ipv4Addr,
    /// Where [`TLSRPT_WEB`] points (port 443; nothing listens unless a test starts a server).
    pub rua_web: Ipv4Addr,
}

impl Addrs {
    fn alloc() -> Self {
        Self {
            dns: Net::alloc(),
            tls_mx: Net::alloc(),
            plain_mx: Net::alloc(),
            later_mx: Net::alloc(),
            relay: Net::alloc(),
            client: Net::alloc(),
            stranger: Net::alloc(),
            peer_client: Net::alloc(),
            rua_web: Net::alloc(),
        }
    }
}

/// Everything but the relay, running. Fields drop in order: processes first, files last.
pub struct World {
    pub tls_peer: Postfix,
    pub plain_peer: Postfix,
    pub nsd: Nsd,
    pub ca: TestCa,
    pub relay_cert: CertFiles,
    pub later_cert: CertFiles,
    pub addrs: Addrs,
    pub dir: TestDir,
}

impl World {
    /// Starts nsd and both Postfix peers on fresh addresses in a fresh temp dir.
    pub fn start() -> Result<Self> {
        let dir = TestDir::new()?;
        let addrs = Addrs::alloc();
        let certs = dir.sub("certs")?;
        let ca = TestCa::new(&certs)?;
        let relay_cert = ca.issue(&certs, "relay", &[RELAY_HOSTNAME])?;
        let tls_cert = ca.issue(&certs, "tls-peer", &[TLS_PEER_MX])?;
        let later_cert = ca.issue(&certs, "later-peer", &[&format!("mx.{LATER_PEER}")])?;

        let zone = Zone::new("test.")
            .a("ns.test", addrs.dns)
            .a(RELAY_HOSTNAME, addrs.relay)
            .mail_domain(TLS_PEER, addrs.tls_mx)
            .mx(ORIGIN, 10, TLS_PEER_MX)
            .mx(INBOUND, 10, TLS_PEER_MX)
            .mail_domain(PLAIN_PEER, addrs.plain_mx)
            .mail_domain(LATER_PEER, addrs.later_mx)
            .mx(PEER_A, 10, TLS_PEER_MX)
            .a(TLSRPT_WEB, addrs.rua_web)
            // TLS-RPT (RFC 8460): reports for these domains go to a mailbox at origin.test,
            // tls-peer.test's also to an HTTPS endpoint.
            .raw(&format!(
                "_smtp._tls.{TLS_PEER}. IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@{ORIGIN},{TLSRPT_URL}\""
            ))
            .raw(&format!(
                "_smtp._tls.{PLAIN_PEER}. IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@{ORIGIN}\""
            ));
        let nsd = Nsd::start(&dir.sub("nsd")?, addrs.dns, &[zone])?;

        let tls_peer = Postfix::start(
            &dir.sub("tls-peer")?,
            addrs.tls_mx,
            PostfixOpts {
                tls: Some(tls_cert),
                domains: vec![
                    TLS_PEER.into(),
                    ORIGIN.into(),
                    INBOUND.into(),
                    PEER_A.into(),
                ],
                hostname: Some(TLS_PEER_MX.into()),
            },
        )?;
        let plain_peer = Postfix::start(
            &dir.sub("plain-peer")?,
            addrs.plain_mx,
            PostfixOpts {
                tls: None,
                domains: vec![PLAIN_PEER.into()],
                hostname: None,
            },
        )?;
        Ok(Self {
            tls_peer,
            plain_peer,
            nsd,
            ca,
            relay_cert,
            later_cert,
            addrs,
            dir,
        })
    }

    /// The relay's listener, `relay:25`.
    pub fn relay_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addrs.relay, 25))
    }

    /// The config the tests start from: every feature of the spec example, fast retries.
    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            hostname: RELAY_HOSTNAME.into(),
            spool_dir: self.dir.path().join("hopguard/spool"),
            listen: self.relay_addr(),
            certificate: self.relay_cert.cert.clone(),
            key: self.relay_cert.key.clone(),
            inbound_tls: Some("optional".into()),
            relay_networks: vec![format!("{}/32", self.addrs.client)],
            relay_domains: vec![RelayDomain {
                domain: INBOUND.into(),
                next_hop: Some(self.tls_peer.addr()),
                tls_name: Some(TLS_PEER_MX.into()),
            }],
            peers: vec![Peer {
                name: "peer-a".into(),
                domains: vec![PEER_A.into()],
                client_networks: vec![format!("{}/32", self.addrs.peer_client)],
                inbound_tls: Some("required".into()),
            }],
            routes: Vec::new(),
            resolvers: vec![self.nsd.resolver()],
            ca_file: Some(self.ca.ca_pem().to_path_buf()),
            min_backoff: "1s".into(),
            max_backoff: "2s".into(),
            max_lifetime: "5d".into(),
            log_level: "debug".into(),
            metrics: Some(std::net::SocketAddr::new(self.relay_addr().ip(), 9465)),
            extra: String::new(),
        }
    }

    /// Starts hopguard with `cfg` in `DIR/hopguard` (spool dir created beforehand).
    pub fn start_relay(&self, cfg: &RelayConfig) -> Result<Hopguard> {
        std::fs::create_dir_all(&cfg.spool_dir)?;
        Hopguard::start(&self.dir.sub("hopguard")?, &cfg.to_yaml())
    }

    /// Starts the Postfix for later-peer.test (STARTTLS, cert for mx.later-peer.test).
    pub fn start_later_peer(&self) -> Result<Postfix> {
        Postfix::start(
            &self.dir.sub("later-peer")?,
            self.addrs.later_mx,
            PostfixOpts {
                tls: Some(self.later_cert.clone()),
                domains: vec![LATER_PEER.into()],
                hostname: None,
            },
        )
    }

    /// swaks with STARTTLS from the relay_networks address to the relay.
    pub fn submit(&self, from: &str, to: &str, marker: &str) -> Result<SwaksOutput> {
        SwaksMail {
            server: self.relay_addr(),
            source: Some(self.addrs.client),
            from,
            to,
            tls: true,
            marker,
        }
        .send()
    }
}

/// A string unique to this call, to find one test's message among others.
pub fn marker(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{label}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
