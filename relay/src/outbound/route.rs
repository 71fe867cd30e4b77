//! Routing a destination: its next-hop hosts in order, and for each the TLS it requires.
//!
//! A fixed `next_hop` gets the charter requirement, REQUIRETLS and the operator's route level
//! (through `decide_hop`, with no DANE or MTA-STS: those are published for MX hosts). MX routing
//! looks the MX RRset up with its DNSSEC status, and — when the MX RRset is secure — each host's TLSA RRset
//! (`_25._tcp.HOST`, RFC 7672 §2.2), then lets `policy::decide_hop` apply the precedence (DANE
//! over the charter over the operator's default). A DNS failure on a lookup that could carry a
//! policy defers; it never reads as "no policy".

use std::net::IpAddr;

use hickory_resolver::proto::rr::{RData, RecordType};
use hopguard_policy::{
    decide_hop, CharterPolicy, DnssecStatus, HopInput, HopTls, MxHost, PolicySource, Report,
    ResultType, RouteTls, StsState, Tlsa, TlsaAnswer,
};

use super::{failure, RcptResult};
use crate::config::{Loaded, OutboundTls as RouteLevel};
use crate::dns::Dns;
use crate::spool::Failure;

/// One next-hop host to try, with the TLS it requires.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub host: String,
    pub port: u16,
    /// The name the certificate must match (and the SNI).
    pub reference_name: String,
    pub tls: HopTls,
    pub source: PolicySource,
    /// The lowest TLS version accepted (a charter peer's `min_tls`).
    pub min_tls: hopguard_policy::TlsVersion,
    /// Addresses already resolved (with their DNSSEC status checked), if any.
    pub addrs: Option<Vec<IpAddr>>,
    /// Policies observed on this hop, not enforced (their verdicts are recorded).
    pub reports: Vec<Report>,
    /// The destination's published policies, for TLS-RPT.
    pub policy_strings: crate::evidence::PolicyStrings,
}

/// The route: candidates in order, and the refusals of the hosts that may not be used.
pub struct Route {
    pub candidates: Vec<Candidate>,
    pub refused: Vec<Failure>,
    /// An MTA-STS policy fetch that failed on the way (for the metrics).
    pub sts_failure: Option<ResultType>,
}

/// What the message itself asks of its hops (RFC 8689).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MessageTls {
    /// Received with the REQUIRETLS parameter.
    pub requiretls: bool,
    /// Carries `TLS-Required: No` (and not REQUIRETLS).
    pub tls_required_no: bool,
}

impl MessageTls {
    pub fn of(env: &crate::spool::Envelope) -> Self {
        Self {
            requiretls: env.requiretls,
            tls_required_no: env.tls_required_no && !env.requiretls,
        }
    }
}

fn route_level(level: RouteLevel) -> RouteTls {
    match level {
        RouteLevel::Verify => RouteTls::Verify,
        RouteLevel::Encrypt => RouteTls::Encrypt,
        RouteLevel::Opportunistic => RouteTls::Opportunistic,
    }
}

fn tls_failure(reason: ResultType, status: &str, text: String) -> Failure {
    Failure {
        code: 451,
        status: status.to_string(),
        text,
        reason: Some(reason),
        remote: None,
    }
}

pub async fn plan(
    dns: &Dns,
    mta_sts: &super::mta_sts::MtaSts,
    loaded: &Loaded,
    domain: &str,
    message: MessageTls,
    bogus: &mut u32,
) -> Result<Route, RcptResult> {
    let cfg = &loaded.config;
    let route = cfg.route_for(domain);
    let peer = cfg.peer_for_domain(domain).map(|p| p.name.clone());
    let level = route_level(route.tls);

    let charter = peer.as_ref().map(|p| {
        loaded
            .charters
            .get(p)
            .cloned()
            .unwrap_or_else(|| CharterPolicy::new(p.clone()))
    });

    if let Some(h) = &route.next_hop {
        // A fixed next hop: its name comes from the operator, not the network (so it counts as
        // validated, e.g. for REQUIRETLS). DANE and MTA-STS are published for MX hosts and do not
        // apply; the charter requirement, REQUIRETLS and the route level do.
        let name = route.tls_name.clone().unwrap_or_else(|| h.host.clone());
        let hosts = [MxHost {
            name: name.clone(),
            tlsa: Some(TlsaAnswer {
                status: DnssecStatus::Insecure,
                base_domain: name.clone(),
                records: Vec::new(),
            }),
        }];
        let decision = decide_hop(&HopInput {
            domain,
            mx_status: DnssecStatus::Secure,
            hosts: &hosts,
            mta_sts: &StsState::NoPolicy,
            charter: charter.as_ref(),
            requiretls: message.requiretls,
            tls_required_no: message.tls_required_no,
            route: level,
        })
        .map_err(|r| refusal_result(&r, domain))?;
        let Some(hd) = decision.hosts.into_iter().next() else {
            return Err(RcptResult::Temporary(failure(
                451,
                "4.4.4",
                format!("no usable next hop for {domain}"),
            )));
        };
        return match hd.outcome {
            Ok(plan) => Ok(Route {
                candidates: vec![Candidate {
                    host: h.host.clone(),
                    port: h.port,
                    reference_name: name,
                    tls: plan.tls,
                    source: plan.source,
                    min_tls: plan.min_tls,
                    addrs: None,
                    reports: plan.reports,
                    policy_strings: Default::default(),
                }],
                refused: Vec::new(),
                sts_failure: None,
            }),
            Err(refusal) => {
                let mut f = refusal_failure(&refusal);
                f.remote = Some(name);
                Err(if refusal.is_permanent() {
                    RcptResult::Permanent(f)
                } else {
                    RcptResult::Temporary(f)
                })
            }
        };
    }

    // MX with its DNSSEC status.
    let mx = dns.secure(domain, RecordType::MX).await;
    *bogus += u32::from(mx.status == DnssecStatus::Bogus);
    match mx.status {
        DnssecStatus::Bogus => {
            return Err(RcptResult::Temporary(tls_failure(
                ResultType::DnssecInvalid,
                "4.7.5",
                format!("the MX records of {domain} failed DNSSEC validation"),
            )))
        }
        DnssecStatus::Indeterminate => {
            return Err(RcptResult::Temporary(failure(
                451,
                "4.4.3",
                format!("MX lookup for {domain} failed (no answer from the resolvers)"),
            )))
        }
        DnssecStatus::Secure | DnssecStatus::Insecure => {}
    }
    if mx.nxdomain {
        return Err(RcptResult::Permanent(failure(
            550,
            "5.1.2",
            format!("domain {domain} does not exist"),
        )));
    }
    let mut hosts: Vec<(u16, String)> = mx
        .records
        .iter()
        .filter_map(|r| match r {
            RData::MX(m) => Some((
                m.preference,
                m.exchange
                    .to_lowercase()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_string(),
            )),
            _ => None,
        })
        .collect();
    // RFC 7505 §3: a single MX with the root as exchange: the domain accepts no mail.
    if hosts.len() == 1 && hosts[0].1.is_empty() {
        return Err(RcptResult::Permanent(failure(
            556,
            "5.1.10",
            format!("{domain} does not accept mail (null MX, RFC 7505)"),
        )));
    }
    hosts.retain(|(_, h)| !h.is_empty());
    hosts.sort();
    if hosts.is_empty() {
        // RFC 5321 §5.1: no MX, the domain is its own mail exchanger.
        hosts.push((0, domain.to_string()));
    }

    // Per host: addresses (with status) and, when the MX RRset is secure, TLSA.
    let mut mx_hosts = Vec::new();
    let mut addrs = Vec::new();
    for (_, host) in &hosts {
        let (a, aaaa) = tokio::join!(
            dns.secure(host, RecordType::A),
            dns.secure(host, RecordType::AAAA)
        );
        *bogus += u32::from(a.status == DnssecStatus::Bogus)
            + u32::from(aaaa.status == DnssecStatus::Bogus);
        let mut ips: Vec<IpAddr> = a
            .records
            .iter()
            .chain(aaaa.records.iter())
            .filter_map(|r| match r {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        ips.dedup();
        let addr_secure = a.status == DnssecStatus::Secure
            || (ips.is_empty() && aaaa.status == DnssecStatus::Secure);
        let tlsa = if mx.status == DnssecStatus::Secure {
            // RFC 7672 §2.2.3: when the host's (secure) address records came through a CNAME
            // chain, the TLSA records are looked up at the chain's end first; only a secure
            // denial there sends the lookup back to the MX host name.
            let port = cfg.outbound.port;
            let target = a
                .canonical
                .clone()
                .or_else(|| aaaa.canonical.clone())
                .filter(|t| addr_secure && t != host);
            let lookup = |base: &str| {
                let name = format!("_{port}._tcp.{base}");
                async move { dns.secure(&name, RecordType::TLSA).await }
            };
            let (t, base) = match target {
                Some(target) => {
                    let at_target = lookup(&target).await;
                    if at_target.status == DnssecStatus::Secure && at_target.records.is_empty() {
                        (lookup(host).await, host.clone())
                    } else {
                        (at_target, target)
                    }
                }
                None => (lookup(host).await, host.clone()),
            };
            *bogus += u32::from(t.status == DnssecStatus::Bogus);
            // RFC 7672 §2.2.2: TLSA counts only for a host whose address records are secure.
            let status = if t.status == DnssecStatus::Secure && !addr_secure {
                DnssecStatus::Insecure
            } else {
                t.status
            };
            Some(TlsaAnswer {
                status,
                base_domain: base,
                records: t
                    .records
                    .iter()
                    .filter_map(|r| match r {
                        RData::TLSA(t) => Some(Tlsa {
                            usage: u8::from(t.cert_usage),
                            selector: u8::from(t.selector),
                            matching: u8::from(t.matching),
                            data: t.cert_data.clone(),
                        }),
                        _ => None,
                    })
                    .collect(),
            })
        } else {
            None
        };
        mx_hosts.push(MxHost {
            name: host.clone(),
            tlsa,
        });
        addrs.push(ips);
    }

    let (pkix, _) = loaded.outbound_tls.config_for(
        &HopTls::Pkix {
            name: String::new(),
            trust: hopguard_policy::PkixTrust::webpki(),
        },
        "",
        hopguard_policy::TlsVersion::Tls12,
    );
    let (sts, sts_failure): (StsState, Option<ResultType>) = mta_sts.state(domain, pkix).await;
    let decision = decide_hop(&HopInput {
        domain,
        mx_status: mx.status,
        hosts: &mx_hosts,
        mta_sts: &sts,
        charter: charter.as_ref(),
        requiretls: message.requiretls,
        tls_required_no: message.tls_required_no,
        route: level,
    });
    let decision = match decision {
        Ok(d) => d,
        Err(refusal) => return Err(refusal_result(&refusal, domain)),
    };
    // TLS-RPT `policy-string`s: the MTA-STS policy of the domain, the TLSA RRset of each host.
    let sts_strings = match &sts {
        StsState::Policy { policy, .. } if policy.mode != hopguard_policy::StsMode::None => {
            policy.policy_strings()
        }
        _ => Vec::new(),
    };
    let tlsa_strings = |host: &MxHost| -> Vec<String> {
        match &host.tlsa {
            Some(t) if t.status == DnssecStatus::Secure => {
                let owner = format!("_{}._tcp.{}", cfg.outbound.port, t.base_domain);
                t.records.iter().map(|r| r.policy_string(&owner)).collect()
            }
            _ => Vec::new(),
        }
    };
    let mut candidates = Vec::new();
    let mut refused = Vec::new();
    for ((host_decision, ips), mx_host) in decision.hosts.iter().zip(addrs).zip(&mx_hosts) {
        match &host_decision.outcome {
            Ok(plan) => candidates.push(Candidate {
                host: host_decision.host.clone(),
                port: cfg.outbound.port,
                reference_name: host_decision.host.clone(),
                tls: plan.tls.clone(),
                source: plan.source,
                min_tls: plan.min_tls,
                addrs: (!ips.is_empty()).then_some(ips),
                reports: plan.reports.clone(),
                policy_strings: crate::evidence::PolicyStrings {
                    sts: sts_strings.clone(),
                    tlsa: tlsa_strings(mx_host),
                },
            }),
            Err(refusal) => {
                let mut f = refusal_failure(refusal);
                f.remote = Some(host_decision.host.clone());
                refused.push(f);
            }
        }
    }
    if candidates.is_empty() {
        let permanent = decision
            .hosts
            .iter()
            .any(|h| h.outcome.as_ref().is_err_and(|r| r.is_permanent()));
        let f = refused
            .first()
            .cloned()
            .unwrap_or_else(|| failure(451, "4.4.4", format!("no usable next hop for {domain}")));
        return Err(if permanent {
            RcptResult::Permanent(f)
        } else {
            RcptResult::Temporary(f)
        });
    }
    Ok(Route {
        candidates,
        refused,
        sts_failure,
    })
}

fn refusal_failure(r: &hopguard_policy::Refusal) -> Failure {
    Failure {
        code: if r.is_permanent() { 550 } else { 451 },
        status: r.enhanced_status().to_string(),
        text: r.to_string(),
        reason: r.result_type(),
        remote: None,
    }
}

fn refusal_result(r: &hopguard_policy::Refusal, domain: &str) -> RcptResult {
    let mut f = refusal_failure(r);
    f.text = format!("{domain}: {}", f.text);
    if r.is_permanent() {
        RcptResult::Permanent(f)
    } else {
        RcptResult::Temporary(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requiretls_makes_the_tls_required_header_ignored() {
        let env = |requiretls, tls_required_no| {
            let mut e: crate::spool::Envelope = serde_json::from_value(serde_json::json!({
                "version": crate::spool::ENVELOPE_VERSION, "id": "", "node_id": "n",
                "received_at": 0, "client_ip": "127.0.0.1", "helo": "h", "mail_from": "",
                "size": 0, "recipients": []
            }))
            .unwrap();
            e.requiretls = requiretls;
            e.tls_required_no = tls_required_no;
            e
        };
        let m = |r, n| MessageTls::of(&env(r, n));
        assert_eq!(m(false, false), MessageTls::default());
        assert!(m(false, true).tls_required_no);
        // RFC 8689 §4.1.
        assert_eq!(
            m(true, true),
            MessageTls {
                requiretls: true,
                tls_required_no: false
            }
        );
    }
}
