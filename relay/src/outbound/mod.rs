//! Outbound: route a destination (fixed next hop or MX), decide the required TLS per host,
//! establish a session that satisfies it, deliver, and keep the session for the next message.

pub mod certinfo;
pub mod check;
pub mod client;
pub mod downconvert;
pub mod downgrade;
pub mod emit;
pub mod mta_sts;
pub mod route;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hopguard_policy::{HopSeen, Observation, PolicySource, TlsVersion};
use tracing::{debug, info, warn};

use crate::config::Loaded;
use crate::dns::Dns;
use crate::evidence::{Direction, Evidence, HopRecord, Observed, Outcome, TlsFacts};
use crate::spool::{Envelope, Failure, Recipient, Spool};
use client::{ClientError, Session, SmtpReply, TxnOutcome};

/// How long an idle outbound session is kept for reuse.
pub const POOL_IDLE: Duration = Duration::from_secs(10);

/// The result for one recipient of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptResult {
    Delivered { remote: String },
    Temporary(Failure),
    Permanent(Failure),
}

/// Idle sessions by destination. A config reload bumps the generation: sessions negotiated
/// before it (idle or in use) are never pooled again.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<(Instant, Session)>>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Pool {
    fn take(&self, domain: &str) -> Option<Session> {
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(domain)?;
        while let Some((t, s)) = list.pop() {
            if t.elapsed() < POOL_IDLE {
                return Some(s);
            }
        }
        None
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn put(&self, domain: &str, s: Session, generation: u64) {
        if generation != self.generation() {
            tokio::spawn(s.quit());
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(domain.to_string()).or_default();
        list.retain(|(t, _)| t.elapsed() < POOL_IDLE);
        list.push((Instant::now(), s));
    }

    /// Drops every idle session and retires those in use (after a config reload).
    pub fn clear(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let old: Vec<Session> = {
            let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            map.drain()
                .flat_map(|(_, v)| v.into_iter().map(|(_, s)| s))
                .collect()
        };
        for s in old {
            tokio::spawn(s.quit());
        }
    }

    /// Closes sessions idle for longer than `POOL_IDLE` (with QUIT).
    pub fn expire(&self) {
        let mut stale = Vec::new();
        {
            let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for list in map.values_mut() {
                let (keep, old): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|(t, _)| t.elapsed() < POOL_IDLE);
                *list = keep;
                stale.extend(old.into_iter().map(|(_, s)| s));
            }
            map.retain(|_, list| !list.is_empty());
        }
        for s in stale {
            tokio::spawn(s.quit());
        }
    }
}

pub struct Outbound {
    pub mta_sts: mta_sts::MtaSts,
    pub downgrade: downgrade::DowngradeMemory,
    pub dns: Dns,
    pub pool: Pool,
    pub spool: Spool,
    pub evidence: Arc<Evidence>,
}

fn failure(code: u16, status: &str, text: impl Into<String>) -> Failure {
    Failure {
        code,
        status: status.to_string(),
        text: text.into(),
        reason: None,
        remote: None,
    }
}

fn from_reply(r: &SmtpReply, remote: &str) -> Failure {
    let status = r.status().unwrap_or_else(|| {
        if r.is_permanent() {
            "5.0.0".into()
        } else {
            "4.0.0".into()
        }
    });
    Failure {
        code: r.code,
        status,
        text: format!("{remote} said: {}", r.text()),
        reason: None,
        remote: Some(remote.to_string()),
    }
}

fn from_client_error(e: &ClientError) -> Failure {
    match e {
        ClientError::Tls { reason, detail } => {
            // RFC 3463: X.7.4 security features not supported, X.7.5 cryptographic failure.
            let status = if *reason == hopguard_policy::ResultType::StarttlsNotSupported {
                "4.7.4"
            } else {
                "4.7.5"
            };
            Failure {
                code: 451,
                status: status.into(),
                text: format!("{} ({detail})", reason.explain()),
                reason: Some(*reason),
                remote: None,
            }
        }
        ClientError::Refused(r) => Failure {
            code: 451,
            status: r.status().unwrap_or_else(|| "4.4.0".into()),
            text: format!("the next hop refused the session: {}", r.text()),
            reason: None,
            remote: None,
        },
        other => failure(
            451,
            "4.4.1",
            format!("no usable connection to the next hop: {other}"),
        ),
    }
}

impl Outbound {
    pub fn new(dns: Dns, spool: Spool, evidence: Arc<Evidence>) -> Self {
        Self {
            mta_sts: mta_sts::MtaSts::new(dns.clone(), spool.root().join("mta-sts"), 443),
            downgrade: downgrade::DowngradeMemory::new(spool.root().join("downgrade")),
            dns,
            pool: Pool::default(),
            spool,
            evidence,
        }
    }

    fn peer_label(loaded: &Loaded, domain: &str) -> String {
        loaded
            .config
            .peer_for_domain(domain)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "other".into())
    }

    /// Delivers the pending recipients of `env` at `domain`. Never sends MAIL FROM unless the
    /// session satisfied the required TLS.
    pub async fn deliver(
        &self,
        loaded: &Loaded,
        env: &Envelope,
        domain: &str,
    ) -> Vec<(String, RcptResult)> {
        let mut last_hop = LastHop::default();
        let generation = self.pool.generation();
        let results = self
            .deliver_inner(loaded, env, domain, &mut last_hop, generation)
            .await;
        let outcome = if results
            .iter()
            .any(|(_, r)| matches!(r, RcptResult::Delivered { .. }))
        {
            Outcome::Delivered
        } else if !results.is_empty()
            && results
                .iter()
                .all(|(_, r)| matches!(r, RcptResult::Permanent(_)))
        {
            Outcome::Bounced
        } else {
            Outcome::Deferred
        };
        self.evidence.metrics.message_result(
            &Self::peer_label(loaded, domain),
            last_hop.policy.map(|p| p.as_str()).unwrap_or("none"),
            last_hop.tls.as_deref().unwrap_or("none"),
            last_hop.verify.map(|v| v.as_str()).unwrap_or("none"),
            outcome,
        );
        results
    }

    async fn deliver_inner(
        &self,
        loaded: &Loaded,
        env: &Envelope,
        domain: &str,
        last_hop: &mut LastHop,
        generation: u64,
    ) -> Vec<(String, RcptResult)> {
        let rcpts: Vec<&Recipient> = env.pending().filter(|r| r.domain == domain).collect();
        let all = |res: RcptResult| {
            rcpts
                .iter()
                .map(|r| (r.address.clone(), res.clone()))
                .collect()
        };
        let msg_path = self.spool.message(&env.id);
        // Sessions are pooled per destination and per what the message asks: a session made
        // for a `TLS-Required: No` message may be weaker than others need, and a REQUIRETLS
        // message needs an authenticated one.
        let message = route::MessageTls::of(env);
        let pool_key = match (message.requiretls, message.tls_required_no) {
            (true, _) => format!("{domain} requiretls"),
            (false, true) => format!("{domain} tls-required-no"),
            (false, false) => domain.to_string(),
        };

        // A pooled session first (same destination, same requirement by construction).
        if let Some(mut s) = self.pool.take(&pool_key) {
            match self
                .transact(loaded, domain, &mut s, env, &rcpts, &msg_path)
                .await
            {
                Ok(results) => {
                    last_hop.set(&s);
                    self.remember(loaded, domain, &s, &results);
                    self.release(loaded, &pool_key, s, generation);
                    return results;
                }
                Err(e) => {
                    debug!(queue_id = %env.id, error = %e, "pooled session failed; reconnecting")
                }
            }
        }

        let mut bogus = 0;
        let planned = route::plan(
            &self.dns,
            &self.mta_sts,
            loaded,
            domain,
            message,
            &mut bogus,
        )
        .await;
        if bogus > 0 {
            self.evidence
                .metrics
                .dnssec_bogus(&Self::peer_label(loaded, domain), bogus);
        }
        let route = match planned {
            Ok(r) => r,
            Err(res) => {
                if let RcptResult::Temporary(f) | RcptResult::Permanent(f) = &res {
                    self.record_refusal(loaded, env, domain, rcpts.len(), f, None);
                }
                return all(res);
            }
        };
        if let Some(reason) = route.sts_failure {
            self.evidence
                .metrics
                .mta_sts_fetch_failed(&Self::peer_label(loaded, domain), reason);
        }
        let mut route = route;
        self.protect_from_downgrade(loaded, domain, &mut route);
        for f in &route.refused {
            self.record_refusal(loaded, env, domain, rcpts.len(), f, None);
        }
        let candidates = route.candidates;
        let helo = loaded.config.hostname.clone();
        let mut last = route.refused.first().cloned().unwrap_or_else(|| {
            failure(
                451,
                "4.4.1",
                format!("no next hop for {domain} could be reached"),
            )
        });
        for c in candidates {
            let resolved = match &c.addrs {
                Some(a) => Ok(a.clone()),
                None => self.dns.addresses(&c.host).await,
            };
            let addrs = match resolved {
                Ok(a) => a,
                Err(e) => {
                    last = failure(
                        451,
                        "4.4.3",
                        format!("address lookup for {} failed: {e}", c.host),
                    );
                    continue;
                }
            };
            for ip in addrs {
                let addr = SocketAddr::new(ip, c.port);
                let (tls_cfg, dane, observations) = loaded.outbound_tls.config_observing(
                    &c.tls,
                    &c.reference_name,
                    c.min_tls,
                    &hopguard_policy::checks(&c.reports),
                );
                let mut session = match client::establish(
                    addr,
                    &c.reference_name,
                    &c.tls,
                    tls_cfg,
                    dane,
                    &helo,
                    &loaded.config.outbound,
                )
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        last_hop.policy = Some(c.source);
                        let observed = match &e {
                            ClientError::Tls { reason, .. } => {
                                let seen = if *reason
                                    == hopguard_policy::ResultType::StarttlsNotSupported
                                {
                                    HopSeen::NoStarttls
                                } else {
                                    HopSeen::Failed(*reason)
                                };
                                observe(env, domain, &c, &observations, seen)
                            }
                            // No TLS session was attempted: nothing to judge.
                            _ => Vec::new(),
                        };
                        let mut f = from_client_error(&e);
                        f.remote = Some(format!("{}[{}]", c.reference_name, ip));
                        // A destination verified recently that now fails TLS: suspected downgrade
                        // (the message waits either way; this makes it visible).
                        if f.reason.is_some()
                            && self
                                .downgrade
                                .get(
                                    domain,
                                    chrono::Utc::now().timestamp(),
                                    loaded.config.outbound.downgrade_memory.0,
                                )
                                .is_some_and(|s| s >= 2)
                        {
                            warn!(domain, mx = %c.reference_name, "suspected downgrade: a recently verified destination failed TLS");
                            self.evidence
                                .metrics
                                .downgrade_suspected(&Self::peer_label(loaded, domain));
                        }
                        self.evidence.record(&HopRecord {
                            time: chrono::Utc::now(),
                            message_id_hash: env.message_id_hash.clone(),
                            direction: Direction::Outbound,
                            peer: Self::peer_label(loaded, domain),
                            remote_ip: Some(ip),
                            remote_host: c.reference_name.clone(),
                            tls: None,
                            verification: hopguard_policy::VerifyMethod::None,
                            policy: Some(c.source),
                            outcome: Outcome::Deferred,
                            result_type: f.reason,
                            reply_code: Some(f.code),
                            queue_id: Some(env.id.clone()),
                            size: Some(env.size),
                            recipients: rcpts.len(),
                            latency: None,
                            policy_domain: Some(domain.to_string()),
                            observed,
                            policy_strings: c.policy_strings.clone(),
                        });
                        warn!(
                            queue_id = %env.id, domain, mx = %c.reference_name, ip = %ip,
                            policy = c.tls.as_str(),
                            reason = f.reason.map(|r| r.as_str()).unwrap_or("-"),
                            error = %e, "outbound hop not established"
                        );
                        last = f;
                        continue;
                    }
                };
                session.source = Some(c.source);
                let seen = match session.security().tls.as_ref() {
                    Some(t) if t.version == "TLSv1.3" => HopSeen::Tls(TlsVersion::Tls13),
                    Some(_) => HopSeen::Tls(TlsVersion::Tls12),
                    None => HopSeen::NoStarttls,
                };
                session.observed = observe(env, domain, &c, &observations, seen);
                session.policy_strings = c.policy_strings.clone();
                match self
                    .transact(loaded, domain, &mut session, env, &rcpts, &msg_path)
                    .await
                {
                    Ok(results) => {
                        last_hop.set(&session);
                        self.remember(loaded, domain, &session, &results);
                        self.release(loaded, &pool_key, session, generation);
                        return results;
                    }
                    Err(e) => {
                        last = failure(
                            451,
                            "4.4.2",
                            format!("connection to {} lost: {e}", session.remote),
                        );
                        continue;
                    }
                }
            }
        }
        all(RcptResult::Temporary(last))
    }

    fn release(&self, loaded: &Loaded, pool_key: &str, s: Session, generation: u64) {
        if s.messages < loaded.config.outbound.max_messages_per_connection {
            self.pool.put(pool_key, s, generation);
        } else {
            tokio::spawn(s.quit());
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn transact(
        &self,
        loaded: &Loaded,
        domain: &str,
        s: &mut Session,
        env: &Envelope,
        rcpts: &[&Recipient],
        msg_path: &crate::spool::MessageRef,
    ) -> Result<Vec<(String, RcptResult)>, ClientError> {
        let remote = s.remote.clone();
        // What the next hop lacks for this message (REQUIRETLS, SMTPUTF8, size, 8BITMIME
        // without a possible conversion) fails every recipient at once.
        let prepared = match s.check_sendable(env) {
            Err(u) => Err(u),
            Ok(()) => s.prepare(env, msg_path).await?,
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(u) => {
                let f = Failure {
                    code: u.code,
                    status: u.status.to_string(),
                    text: u.text,
                    reason: None,
                    remote: Some(remote),
                };
                return Ok(rcpts
                    .iter()
                    .map(|r| (r.address.clone(), RcptResult::Permanent(f.clone())))
                    .collect());
            }
        };
        let outcome = s.send(env, rcpts, msg_path, prepared.as_deref()).await?;
        let tls = s
            .security()
            .tls
            .as_ref()
            .map(|t| format!("{} {}", t.version, t.cipher))
            .unwrap_or_else(|| "none".into());
        let per: Vec<SmtpReply> = match outcome {
            TxnOutcome::All(r) => vec![r; rcpts.len()],
            TxnOutcome::PerRecipient(v) => v,
        };
        let mut out = Vec::new();
        for (r, reply) in rcpts.iter().zip(per) {
            let res = if reply.is_ok() {
                info!(queue_id = %env.id, rcpt_domain = %r.domain, remote = %remote, tls = %tls,
                      policy = s.security().plan.as_str(), "delivered");
                RcptResult::Delivered {
                    remote: remote.clone(),
                }
            } else if reply.is_permanent() {
                RcptResult::Permanent(from_reply(&reply, &remote))
            } else {
                RcptResult::Temporary(from_reply(&reply, &remote))
            };
            out.push((r.address.clone(), res));
        }
        if let Some(not_after) = s.security().tls.as_ref().and_then(|t| t.not_after) {
            let mx = remote.split('[').next().unwrap_or(&remote);
            self.evidence.metrics.certificate_seen(
                &Self::peer_label(loaded, domain),
                mx,
                not_after,
            );
        }
        let outcome = if out
            .iter()
            .any(|(_, r)| matches!(r, RcptResult::Delivered { .. }))
        {
            Outcome::Delivered
        } else if out
            .iter()
            .all(|(_, r)| matches!(r, RcptResult::Permanent(_)))
        {
            Outcome::Bounced
        } else {
            Outcome::Deferred
        };
        self.evidence.record(&HopRecord {
            time: chrono::Utc::now(),
            message_id_hash: env.message_id_hash.clone(),
            direction: Direction::Outbound,
            peer: Self::peer_label(loaded, domain),
            remote_ip: None,
            remote_host: remote.clone(),
            tls: s.security().tls.as_ref().map(|t| TlsFacts {
                version: t.version.clone(),
                cipher: t.cipher.clone(),
                cert_sha256: t.cert_sha256.clone(),
                spki_sha256: t.spki_sha256.clone(),
            }),
            verification: s.security().verify_method(),
            policy: s.source,
            outcome,
            result_type: None,
            reply_code: None,
            queue_id: Some(env.id.clone()),
            size: Some(env.size),
            recipients: rcpts.len(),
            latency: Some(env.age_seconds(chrono::Utc::now())),
            policy_domain: Some(domain.to_string()),
            observed: s.observed.clone(),
            policy_strings: s.policy_strings.clone(),
        });
        Ok(out)
    }
}

impl Outbound {
    fn protected(loaded: &Loaded, domain: &str) -> bool {
        use crate::config::DowngradeProtection as P;
        match loaded.config.outbound.downgrade_protection {
            P::All => true,
            P::CharterPeers => loaded.config.peer_for_domain(domain).is_some(),
            P::Off => false,
        }
    }

    /// Moves the candidates whose plan is weaker than the remembered strength to the refused
    /// list (a suspected downgrade: the message waits).
    fn protect_from_downgrade(&self, loaded: &Loaded, domain: &str, route: &mut route::Route) {
        if !Self::protected(loaded, domain) {
            return;
        }
        let ttl = loaded.config.outbound.downgrade_memory.0;
        let Some(remembered) = self
            .downgrade
            .get(domain, chrono::Utc::now().timestamp(), ttl)
        else {
            return;
        };
        let (keep, weak): (Vec<_>, Vec<_>) = std::mem::take(&mut route.candidates)
            .into_iter()
            .partition(|c| downgrade::guaranteed(&c.tls) >= remembered);
        route.candidates = keep;
        for c in weak {
            warn!(domain, mx = %c.reference_name, remembered = downgrade::name(remembered),
                  offered = %c.tls, "suspected downgrade: hop refused");
            self.evidence
                .metrics
                .downgrade_suspected(&Self::peer_label(loaded, domain));
            route.refused.push(Failure {
                code: 451,
                status: "4.7.5".into(),
                text: format!(
                    "suspected downgrade: {domain} was reached with {} recently, this hop would only give {} (hopguard policy forget {domain} to accept it)",
                    downgrade::name(remembered),
                    c.tls
                ),
                reason: Some(hopguard_policy::ResultType::ValidationFailure),
                remote: Some(c.reference_name.clone()),
            });
        }
    }

    fn remember(
        &self,
        loaded: &Loaded,
        domain: &str,
        s: &Session,
        results: &[(String, RcptResult)],
    ) {
        if results
            .iter()
            .any(|(_, r)| matches!(r, RcptResult::Delivered { .. }))
        {
            let sec = s.security();
            self.downgrade.remember(
                domain,
                downgrade::achieved(sec.verify_method(), sec.tls.is_some()),
                chrono::Utc::now().timestamp(),
                loaded.config.outbound.downgrade_memory.0,
            );
        }
    }

    /// A host or destination refused by the policy before any connection (DNSSEC failure,
    /// DANE required, REQUIRETLS unmet): one deferred hop record with its reason.
    fn record_refusal(
        &self,
        loaded: &Loaded,
        env: &Envelope,
        domain: &str,
        recipients: usize,
        f: &Failure,
        ip: Option<std::net::IpAddr>,
    ) {
        self.evidence.record(&HopRecord {
            time: chrono::Utc::now(),
            message_id_hash: env.message_id_hash.clone(),
            direction: Direction::Outbound,
            peer: Self::peer_label(loaded, domain),
            remote_ip: ip,
            remote_host: f.remote.clone().unwrap_or_else(|| domain.to_string()),
            tls: None,
            verification: hopguard_policy::VerifyMethod::None,
            policy: None,
            outcome: if f.code >= 500 {
                Outcome::Bounced
            } else {
                Outcome::Deferred
            },
            result_type: f.reason,
            reply_code: Some(f.code),
            queue_id: Some(env.id.clone()),
            size: Some(env.size),
            recipients,
            latency: None,
            policy_domain: Some(domain.to_string()),
            observed: Vec::new(),
            policy_strings: Default::default(),
        });
        warn!(queue_id = %env.id, domain, reason = f.reason.map(|r| r.as_str()).unwrap_or("-"),
              error = %f.text, "next hop refused by policy");
    }
}

/// Judges the policies observed (not enforced) on a hop to `c` and logs the would-be failures.
fn observe(
    env: &Envelope,
    domain: &str,
    c: &route::Candidate,
    observations: &[Observation],
    seen: HopSeen,
) -> Vec<Observed> {
    hopguard_policy::verdicts(&c.reports, observations, seen)
        .into_iter()
        .map(|(source, result)| {
            if let Some(rt) = result {
                info!(queue_id = %env.id, domain, mx = %c.reference_name, policy = source.as_str(),
                      reason = rt.as_str(), "observed policy (not enforced) would have failed this hop");
            }
            Observed { source, result }
        })
        .collect()
}

/// The policy and TLS of the last session tried for a destination (metrics labels).
#[derive(Default)]
struct LastHop {
    policy: Option<PolicySource>,
    tls: Option<String>,
    verify: Option<hopguard_policy::VerifyMethod>,
}

impl LastHop {
    fn set(&mut self, s: &Session) {
        self.policy = s.source;
        self.tls = s.security().tls.as_ref().map(|t| t.version.clone());
        self.verify = Some(s.security().verify_method());
    }
}

/// Shared handle for the queue's delivery tasks.
pub type SharedOutbound = Arc<Outbound>;
