//! DNS lookups at the edge: addresses of fixed next hops, TXT (MTA-STS, TLS-RPT), FCrDNS; the
//! DNSSEC-aware MX/TLSA queries of MX routing are in `secure`.
//!
//! Resolvers come from the config (or /etc/resolv.conf's `nameserver` lines); the hosts file is
//! never read. A temporary failure is never read as "no records".

pub mod secure;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

/// The `nameserver` addresses of /etc/resolv.conf (read-only), port 53.
pub fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    /// The name does not exist (NXDOMAIN): permanent.
    #[error("{0}: no such domain")]
    NoSuchDomain(String),
    /// SERVFAIL, timeout, refused: try again later.
    #[error("{0}: temporary DNS failure ({1})")]
    Temporary(String, String),
}

#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Dns {
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> anyhow::Result<Self> {
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for s in servers {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            ns.connections = vec![udp, tcp];
            config.add_name_server(ns);
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        opts.edns0 = true;
        opts.cache_size = 1024;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()?;
        Ok(Self {
            resolver,
            servers: servers.to_vec(),
            timeout,
        })
    }

    /// A query whose DNSSEC status matters (AD bit from the configured validating resolver).
    pub async fn secure(&self, name: &str, rtype: RecordType) -> secure::SecureAnswer {
        secure::query(&self.servers, name, rtype, self.timeout).await
    }

    /// Forward-confirmed reverse DNS: the PTR names of `ip` whose A/AAAA records include `ip`.
    pub async fn fcrdns(&self, ip: IpAddr) -> Vec<String> {
        // Through the raw query path: hickory's resolver answers loopback reverse names itself
        // (RFC 6761 special use), without asking the configured server.
        let reverse = hickory_resolver::proto::rr::Name::from(ip).to_ascii();
        let ptr = self.secure(&reverse, RecordType::PTR).await;
        let names: Vec<String> = ptr
            .records
            .iter()
            .filter_map(|r| match r {
                RData::PTR(p) => Some(
                    p.0.to_lowercase()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_string(),
                ),
                _ => None,
            })
            .take(5)
            .collect();
        let mut confirmed = Vec::new();
        for n in names {
            if self.addresses(&n).await.is_ok_and(|a| a.contains(&ip)) {
                confirmed.push(n);
            }
        }
        confirmed
    }

    /// The TXT strings at `name` (each record's strings joined). No record or NXDOMAIN: empty.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsFailure> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.lookup(fqdn.as_str(), RecordType::TXT).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) => match classify(name, &e) {
                Classified::NoRecords | Classified::Failure(DnsFailure::NoSuchDomain(_)) => {
                    Ok(Vec::new())
                }
                Classified::Failure(f) => Err(f),
            },
        }
    }

    /// A and AAAA addresses of a host, IPv4 first.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let mut out = Vec::new();
        let mut last_err = None;
        for rt in [RecordType::A, RecordType::AAAA] {
            match self.resolver.lookup(fqdn.as_str(), rt).await {
                Ok(lookup) => out.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => match classify(host, &e) {
                    Classified::NoRecords => {}
                    Classified::Failure(f) => last_err = Some(f),
                },
            }
        }
        if out.is_empty() {
            return Err(last_err.unwrap_or_else(|| DnsFailure::NoSuchDomain(host.to_string())));
        }
        Ok(out)
    }
}

enum Classified {
    NoRecords,
    Failure(DnsFailure),
}

fn classify(name: &str, e: &NetError) -> Classified {
    match e {
        NetError::Dns(HDnsError::NoRecordsFound(nr)) => {
            if nr.response_code == ResponseCode::NXDomain {
                Classified::Failure(DnsFailure::NoSuchDomain(name.to_string()))
            } else {
                Classified::NoRecords
            }
        }
        other => Classified::Failure(DnsFailure::Temporary(name.to_string(), other.to_string())),
    }
}
