//! Prometheus metrics (prometheus-client, OpenMetrics text). Label values are bounded: `peer`
//! is a configured charter peer name or `other`; `reason` is an RFC 8460 result type; `tls`
//! is `none`, `TLSv1.2` or `TLSv1.3`; `policy` a `PolicySource`. docs/metrics.md lists every
//! metric; a test checks that list against this registry.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::record::{Direction, HopRecord, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerTls {
    pub peer: String,
    pub tls: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerOnly {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Attempt {
    pub peer: String,
    pub policy: String,
    pub tls: String,
    /// The verification method actually applied (`VerifyMethod`): `none` = not authenticated.
    pub verify: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerMx {
    pub peer: String,
    pub mx: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerInfo {
    pub peer: String,
    pub inbound_tls: String,
    pub route_tls: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfo {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Failure {
    pub peer: String,
    pub direction: String,
    pub reason: String,
}

/// A policy observed, not enforced (`policy` = mta-sts | charter), and its would-be result:
/// `pass` or an RFC 8460 result type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObservedLabels {
    pub peer: String,
    pub policy: String,
    pub result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric hopguard exports, registered once at start.
pub struct Metrics {
    registry: Registry,
    pub inbound_sessions: Family<PeerTls, Counter>,
    pub inbound_messages: Family<PeerTls, Counter>,
    pub inbound_starttls_required: Family<PeerOnly, Counter>,
    pub outbound_attempts: Family<Attempt, Counter>,
    pub outbound_messages: Family<Attempt, Counter>,
    pub tls_failures: Family<Failure, Counter>,
    pub policy_observed: Family<ObservedLabels, Counter>,
    pub plaintext_deliveries: Family<PeerOnly, Counter>,
    pub queue_messages: Family<PeerOnly, Gauge>,
    pub queue_oldest_age: Family<PeerOnly, FloatGauge>,
    pub delivery_latency: Family<PeerOnly, Histogram>,
    pub peer_info: Family<PeerInfo, Gauge>,
    pub certificate_expiry: Family<PeerMx, FloatGauge>,
    pub build_info: Family<BuildInfo, Gauge>,
    pub start_time: FloatGauge,
    pub dnssec_bogus_answers: Family<PeerOnly, Counter>,
    pub tlsrpt_reports: Counter,
    pub downgrades: Family<PeerOnly, Counter>,
    pub mta_sts_cache_entries: Gauge,
    pub mta_sts_fetch_failures: Family<Failure, Counter>,
    pub audit_healthy: Gauge,
    pub audit_dropped: Counter,
    known_peers: std::sync::Mutex<Vec<String>>,
}

fn latency_histogram() -> Histogram {
    // 50 ms .. ~7 days.
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
        86400.0, 432000.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("hopguard");
        let m = Self {
            inbound_sessions: Family::default(),
            inbound_messages: Family::default(),
            inbound_starttls_required: Family::default(),
            outbound_attempts: Family::default(),
            outbound_messages: Family::default(),
            tls_failures: Family::default(),
            policy_observed: Family::default(),
            plaintext_deliveries: Family::default(),
            queue_messages: Family::default(),
            queue_oldest_age: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            peer_info: Family::default(),
            certificate_expiry: Family::default(),
            build_info: Family::default(),
            start_time: FloatGauge::default(),
            dnssec_bogus_answers: Family::default(),
            tlsrpt_reports: Counter::default(),
            downgrades: Family::default(),
            mta_sts_cache_entries: Gauge::default(),
            mta_sts_fetch_failures: Family::default(),
            audit_healthy: Gauge::default(),
            audit_dropped: Counter::default(),
            known_peers: std::sync::Mutex::new(Vec::new()),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counters itself.
        r.register(
            "inbound_sessions",
            "Inbound SMTP sessions ended, by peer and final TLS state",
            m.inbound_sessions.clone(),
        );
        r.register(
            "inbound_messages",
            "Inbound messages accepted (250 after commit), by peer and TLS state",
            m.inbound_messages.clone(),
        );
        r.register(
            "inbound_starttls_required_rejections",
            "MAIL refused with 530 because the client had not issued STARTTLS",
            m.inbound_starttls_required.clone(),
        );
        r.register("outbound_attempts", "Outbound delivery attempts (one per next-hop session tried), by peer, policy source, TLS version and outcome", m.outbound_attempts.clone());
        r.register("outbound_messages", "Outbound message results per destination: delivered, deferred (each deferral) or bounced", m.outbound_messages.clone());
        r.register(
            "tls_failures",
            "TLS failures by peer, direction and RFC 8460 result type",
            m.tls_failures.clone(),
        );
        r.register(
            "policy_observed",
            "Outbound hops checked against a policy that is observed, not enforced (MTA-STS testing, a report-only charter, an MTA-STS policy that could not be fetched), by peer, policy and would-be result (pass or an RFC 8460 result type)",
            m.policy_observed.clone(),
        );
        r.register("plaintext_deliveries", "Messages delivered without TLS (only where an explicit opportunistic policy allowed it; alert if a charter peer ever appears)", m.plaintext_deliveries.clone());
        r.register(
            "queue_messages",
            "Messages waiting in the queue, by destination peer",
            m.queue_messages.clone(),
        );
        r.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest queued message, by destination peer",
            Unit::Seconds,
            m.queue_oldest_age.clone(),
        );
        r.register_with_unit(
            "delivery_latency",
            "Time from acceptance (250) to delivery at the next hop",
            Unit::Seconds,
            m.delivery_latency.clone(),
        );
        r.register("charter_peer_info", "One series per configured charter peer (value 1) with its inbound and outbound TLS settings", m.peer_info.clone());
        r.register_with_unit(
            "peer_certificate_expiry_timestamp",
            "notAfter (Unix time) of the certificate last seen on a charter peer's MX host; subtract time() for the seconds left",
            Unit::Seconds,
            m.certificate_expiry.clone(),
        );
        r.register(
            "build_info",
            "hopguard version (value 1)",
            m.build_info.clone(),
        );
        r.register_with_unit(
            "start_time",
            "Unix time the relay process started (counters reset then)",
            Unit::Seconds,
            m.start_time.clone(),
        );
        r.register(
            "dnssec_bogus_answers",
            "DNS answers the validating resolver rejected as bogus (SERVFAIL) for MX, address or TLSA lookups, by destination peer",
            m.dnssec_bogus_answers.clone(),
        );
        r.register(
            "downgrades_suspected",
            "Hops refused because the destination was recently reached with stronger TLS (downgrade memory) — alert on any for a charter peer",
            m.downgrades.clone(),
        );
        r.register(
            "tlsrpt_reports",
            "TLS-RPT aggregate reports sent by the daily run: mails queued to mailto rua plus POSTs accepted (2xx) by https rua (hopguard tlsrpt send prints its own)",
            m.tlsrpt_reports.clone(),
        );
        r.register(
            "mta_sts_cache_entries",
            "MTA-STS policies held in the persistent cache",
            m.mta_sts_cache_entries.clone(),
        );
        r.register(
            "mta_sts_fetch_failures",
            "Failed MTA-STS policy fetches by destination peer and RFC 8460 result type (direction is always outbound)",
            m.mta_sts_fetch_failures.clone(),
        );
        r.register("audit_healthy", "1 while the audit log takes every hop record (or is not configured); 0: records are being dropped — alert", m.audit_healthy.clone());
        r.register(
            "audit_dropped",
            "Hop records the audit log could not take (buffer full or writer failed)",
            m.audit_dropped.clone(),
        );
        m.audit_healthy.set(1);
        m.build_info
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        m.start_time
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        Self { registry: r, ..m }
    }

    /// Declares the configured charter peers (at start and on reload): their info series, and
    /// zero-valued series for the non-compliance counters so that `rate()` sees the first
    /// increment. `peers` = (name, inbound_tls, route_tls).
    pub fn init_peers(&self, peers: &[(String, &str, &str)]) {
        self.peer_info.clear();
        for (name, inbound, route) in peers {
            self.peer_info
                .get_or_create(&PeerInfo {
                    peer: name.clone(),
                    inbound_tls: inbound.to_string(),
                    route_tls: route.to_string(),
                })
                .set(1);
            let p = PeerOnly { peer: name.clone() };
            let _ = self.plaintext_deliveries.get_or_create(&p);
            let _ = self.inbound_starttls_required.get_or_create(&p);
            let _ = self.inbound_messages.get_or_create(&PeerTls {
                peer: name.clone(),
                tls: "none".into(),
            });
            let _ = self.queue_messages.get_or_create(&p);
            let _ = self.queue_oldest_age.get_or_create(&p);
            for outcome in ["delivered", "deferred", "bounced"] {
                let _ = self.outbound_messages.get_or_create(&Attempt {
                    peer: name.clone(),
                    policy: "charter".into(),
                    tls: "none".into(),
                    verify: "none".into(),
                    outcome: outcome.into(),
                });
            }
        }
        *self.known_peers.lock().unwrap_or_else(|p| p.into_inner()) =
            peers.iter().map(|p| p.0.clone()).collect();
    }

    /// Records one hop.
    pub fn record(&self, h: &HopRecord) {
        let peer = h.peer.clone();
        let tls = h.tls_label().to_string();
        match h.direction {
            Direction::Inbound => match h.outcome {
                Outcome::Accepted => {
                    self.inbound_messages
                        .get_or_create(&PeerTls { peer, tls })
                        .inc();
                }
                Outcome::Refused => {
                    if h.result_type == Some(hopguard_policy::ResultType::StarttlsNotSupported) {
                        self.inbound_starttls_required
                            .get_or_create(&PeerOnly { peer: peer.clone() })
                            .inc();
                    }
                    if let Some(rt) = h.result_type {
                        self.tls_failures
                            .get_or_create(&Failure {
                                peer,
                                direction: "inbound".into(),
                                reason: rt.as_str().into(),
                            })
                            .inc();
                    }
                }
                _ => {}
            },
            Direction::Outbound => {
                let labels = Attempt {
                    peer: peer.clone(),
                    policy: h.policy.map(|p| p.as_str()).unwrap_or("none").to_string(),
                    tls: tls.clone(),
                    verify: h.verification.as_str().to_string(),
                    outcome: h.outcome.as_str().to_string(),
                };
                self.outbound_attempts.get_or_create(&labels).inc();
                for o in &h.observed {
                    self.policy_observed
                        .get_or_create(&ObservedLabels {
                            peer: peer.clone(),
                            policy: o.source.as_str().to_string(),
                            result: o.result.map_or("pass", |r| r.as_str()).to_string(),
                        })
                        .inc();
                }
                if let Some(rt) = h.result_type {
                    self.tls_failures
                        .get_or_create(&Failure {
                            peer: peer.clone(),
                            direction: "outbound".into(),
                            reason: rt.as_str().into(),
                        })
                        .inc();
                }
                if h.outcome == Outcome::Delivered {
                    if h.tls.is_none() {
                        self.plaintext_deliveries
                            .get_or_create(&PeerOnly { peer: peer.clone() })
                            .inc();
                    }
                    if let Some(l) = h.latency {
                        self.delivery_latency
                            .get_or_create(&PeerOnly { peer })
                            .observe(l);
                    }
                }
            }
        }
    }

    /// The certificate a charter peer's MX host presented (never recorded for `other`).
    pub fn certificate_seen(&self, peer: &str, mx: &str, not_after: i64) {
        if peer == "other" {
            return;
        }
        self.certificate_expiry
            .get_or_create(&PeerMx {
                peer: peer.to_string(),
                mx: mx.to_string(),
            })
            .set(not_after as f64);
    }

    /// A hop refused as a suspected downgrade.
    pub fn downgrade_suspected(&self, peer: &str) {
        self.downgrades
            .get_or_create(&PeerOnly {
                peer: peer.to_string(),
            })
            .inc();
    }

    /// DNSSEC-bogus answers met while routing to a destination.
    pub fn dnssec_bogus(&self, peer: &str, n: u32) {
        self.dnssec_bogus_answers
            .get_or_create(&PeerOnly {
                peer: peer.to_string(),
            })
            .inc_by(u64::from(n));
    }

    /// An MTA-STS policy fetch failed (`sts-policy-fetch-error`, `sts-policy-invalid`,
    /// `sts-webpki-invalid`).
    pub fn mta_sts_fetch_failed(&self, peer: &str, reason: hopguard_policy::ResultType) {
        self.mta_sts_fetch_failures
            .get_or_create(&Failure {
                peer: peer.to_string(),
                direction: "outbound".into(),
                reason: reason.as_str().into(),
            })
            .inc();
    }

    /// One message result for a destination (delivered, deferred or bounced).
    pub fn message_result(
        &self,
        peer: &str,
        policy: &str,
        tls: &str,
        verify: &str,
        outcome: Outcome,
    ) {
        self.outbound_messages
            .get_or_create(&Attempt {
                peer: peer.to_string(),
                policy: policy.to_string(),
                tls: tls.to_string(),
                verify: verify.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
    }

    pub fn session_ended(&self, peer: &str, tls: &str) {
        self.inbound_sessions
            .get_or_create(&PeerTls {
                peer: peer.to_string(),
                tls: tls.to_string(),
            })
            .inc();
    }

    /// Replaces the queue gauges with a fresh count: (peer, messages, oldest age in seconds).
    pub fn set_queue(&self, per_peer: &[(String, i64, f64)]) {
        self.queue_messages.clear();
        self.queue_oldest_age.clear();
        // Configured peers with an empty queue read 0, not "no data".
        for name in self
            .known_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            self.queue_messages
                .get_or_create(&PeerOnly { peer: name.clone() })
                .set(0);
            self.queue_oldest_age
                .get_or_create(&PeerOnly { peer: name.clone() })
                .set(0.0);
        }
        for (peer, n, age) in per_peer {
            self.queue_messages
                .get_or_create(&PeerOnly { peer: peer.clone() })
                .set(*n);
            self.queue_oldest_age
                .get_or_create(&PeerOnly { peer: peer.clone() })
                .set(*age);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::record::TlsFacts;

    fn hop(direction: Direction, outcome: Outcome, tls: bool) -> HopRecord {
        HopRecord {
            time: chrono::Utc::now(),
            message_id_hash: None,
            direction,
            peer: "peer-a".into(),
            remote_ip: None,
            remote_host: "mx.peer-a.test".into(),
            tls: tls.then(|| TlsFacts {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                cert_sha256: None,
                spki_sha256: None,
            }),
            policy: Some(hopguard_policy::PolicySource::Charter),
            verification: hopguard_policy::VerifyMethod::Pkix,
            outcome,
            result_type: None,
            reply_code: Some(250),
            queue_id: None,
            size: None,
            recipients: 1,
            latency: Some(0.2),
            policy_domain: None,
            observed: Vec::new(),
            policy_strings: Default::default(),
        }
    }

    #[test]
    fn records_become_labelled_series() {
        let m = Metrics::new();
        m.record(&hop(Direction::Inbound, Outcome::Accepted, true));
        m.record(&hop(Direction::Outbound, Outcome::Delivered, true));
        m.record(&hop(Direction::Outbound, Outcome::Delivered, false));
        let mut failed = hop(Direction::Outbound, Outcome::Deferred, false);
        failed.result_type = Some(hopguard_policy::ResultType::StarttlsNotSupported);
        m.record(&failed);
        let text = m.encode();
        for want in [
            r#"hopguard_inbound_messages_total{peer="peer-a",tls="TLSv1.3"} 1"#,
            r#"hopguard_outbound_attempts_total{peer="peer-a",policy="charter",tls="TLSv1.3",verify="pkix",outcome="delivered"} 1"#,
            r#"hopguard_plaintext_deliveries_total{peer="peer-a"} 1"#,
            r#"hopguard_tls_failures_total{peer="peer-a",direction="outbound",reason="starttls-not-supported"} 1"#,
            r#"hopguard_delivery_latency_seconds_count{peer="peer-a"} 2"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn zero_series_exist_for_configured_peers() {
        let m = Metrics::new();
        m.init_peers(&[("peer-a".into(), "required", "verify")]);
        m.set_queue(&[]);
        let text = m.encode();
        for want in [
            r#"hopguard_charter_peer_info{peer="peer-a",inbound_tls="required",route_tls="verify"} 1"#,
            r#"hopguard_plaintext_deliveries_total{peer="peer-a"} 0"#,
            r#"hopguard_inbound_messages_total{peer="peer-a",tls="none"} 0"#,
            r#"hopguard_queue_messages{peer="peer-a"} 0"#,
            "hopguard_build_info{version=",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    /// docs/metrics.md's "Exported metrics" table lists exactly the registered families.
    #[test]
    fn docs_list_every_metric() {
        let m = Metrics::new();
        // Families without a series are not printed: give every family one.
        m.init_peers(&[("peer-a".into(), "required", "verify")]);
        m.session_ended("peer-a", "none");
        m.certificate_seen("peer-a", "mx.peer-a.test", 2_000_000_000);
        m.mta_sts_fetch_failed("peer-a", hopguard_policy::ResultType::StsPolicyFetchError);
        m.dnssec_bogus("peer-a", 1);
        m.tlsrpt_reports.inc();
        m.downgrade_suspected("peer-a");
        m.certificate_seen("other", "mx.elsewhere.test", 2_000_000_000);
        let mut failed = hop(Direction::Outbound, Outcome::Deferred, false);
        failed.result_type = Some(hopguard_policy::ResultType::StarttlsNotSupported);
        m.record(&failed);
        let mut delivered = hop(Direction::Outbound, Outcome::Delivered, true);
        delivered.observed = vec![crate::evidence::Observed {
            source: hopguard_policy::PolicySource::MtaSts,
            result: None,
        }];
        m.record(&delivered);
        let registered: std::collections::BTreeSet<String> = m
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        let doc = include_str!("../../../docs/metrics.md");
        let table = doc
            .split("## Exported metrics")
            .nth(1)
            .and_then(|rest| rest.split("\n### ").next())
            .unwrap_or_default();
        let documented: std::collections::BTreeSet<String> = table
            .lines()
            .filter(|l| l.starts_with("| `hopguard_"))
            .filter_map(|l| l.split('|').nth(2))
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        assert_eq!(registered, documented, "docs/metrics.md table vs registry");
        assert!(
            !m.encode().contains("mx.elsewhere.test"),
            "no certificate series for `other`"
        );
    }
}
