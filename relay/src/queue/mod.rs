//! The queue: schedules delivery attempts for spooled messages, applies results, retries with
//! backoff, and turns expired or refused recipients into a DSN to the sender.
//!
//! The on-disk envelope is the truth; the scheduler keeps only (next attempt, id) in memory and
//! rescans the spool periodically and on SIGUSR1 (so `hopguard queue retry|delete` take effect).

pub mod dsn;
pub mod schedule;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tracing::{error, info, warn};

use crate::config::SharedConfig;
use crate::outbound::{Outbound, RcptResult};
use crate::spool::{Committed, Envelope, RcptStatus, Recipient, Spool, ENVELOPE_VERSION};

/// Messages to the scheduler.
#[derive(Debug)]
enum Event {
    /// Schedule `id` at unix time `at` (a new message, a retry, a rescan finding).
    Schedule(String, i64),
    /// An attempt on `id` finished; it is no longer in flight, and waits until `at` (None:
    /// finished or gone). One event, so no due entry can meet the message still in flight
    /// (which would drop it until the next scan).
    Done(String, Option<i64>),
    /// Re-read the spool now.
    Rescan,
}

/// A cheap handle to tell the queue about new messages.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Event>,
    fresh: Fresh,
}

/// Envelopes of messages just committed, kept until their first attempt so that attempt does
/// not read back what was written a moment ago. Bounded: past `FRESH_MAX` the attempt reads
/// the spool as for any other message.
type Fresh = Arc<std::sync::Mutex<HashMap<String, Envelope>>>;
const FRESH_MAX: usize = 10_000;

impl QueueHandle {
    pub fn enqueued(&self, c: &Committed) {
        {
            let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
            if fresh.len() < FRESH_MAX {
                fresh.insert(c.id().to_string(), c.envelope().clone());
            }
        }
        let _ = self.tx.send(Event::Schedule(c.id().to_string(), 0));
    }

    pub fn rescan(&self) {
        let _ = self.tx.send(Event::Rescan);
    }
}

pub struct Queue {
    config: SharedConfig,
    spool: Spool,
    outbound: Arc<Outbound>,
    tx: mpsc::UnboundedSender<Event>,
    global: Arc<Semaphore>,
    per_domain: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    fresh: Fresh,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Queue {
    /// Starts the scheduler; returns the handle inbound uses.
    pub fn start(config: SharedConfig, spool: Spool, outbound: Arc<Outbound>) -> QueueHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let max = config.current().queue.max_concurrent_deliveries;
        let q = Arc::new(Queue {
            config,
            spool,
            outbound,
            tx: tx.clone(),
            global: Arc::new(Semaphore::new(max)),
            per_domain: std::sync::Mutex::new(HashMap::new()),
            fresh: Fresh::default(),
        });
        let handle = QueueHandle {
            tx: tx.clone(),
            fresh: q.fresh.clone(),
        };
        // Removals of delivered messages are made durable in batches.
        let spool = q.spool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let s = spool.clone();
                match tokio::task::spawn_blocking(move || s.sync_pending()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => error!(error = %e, "cannot fsync the queue directory"),
                    Err(e) => error!(error = %e, "cannot fsync the queue directory"),
                }
            }
        });
        tokio::spawn(q.run(rx, tx));
        handle
    }

    fn domain_slot(&self, domain: &str) -> Arc<Semaphore> {
        let n = self.config.current().queue.per_destination_concurrency;
        let mut map = self.per_domain.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(n)))
            .clone()
    }

    async fn run(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Event>,
        tx: mpsc::UnboundedSender<Event>,
    ) {
        let mut heap: BinaryHeap<Reverse<(i64, String)>> = BinaryHeap::new();
        let mut scheduled: HashMap<String, i64> = HashMap::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        self.rescan(&tx);
        let mut last_scan = std::time::Instant::now();
        loop {
            let scan_every = self.config.current().queue.scan_interval.0;
            if last_scan.elapsed() >= scan_every {
                self.rescan(&tx);
                self.outbound.pool.expire();
                last_scan = std::time::Instant::now();
            }
            // Start every due attempt.
            let t = now();
            while let Some(Reverse((at, _))) = heap.peek() {
                if *at > t {
                    break;
                }
                let Some(Reverse((at, id))) = heap.pop() else {
                    break;
                };
                if scheduled.get(&id) != Some(&at) {
                    continue; // stale heap entry
                }
                if in_flight.contains(&id) {
                    // Found by a rescan while its attempt runs: the attempt reschedules it.
                    scheduled.remove(&id);
                    continue;
                }
                scheduled.remove(&id);
                in_flight.insert(id.clone());
                let q = self.clone();
                let tx2 = tx.clone();
                tokio::spawn(async move {
                    let next = q.attempt(&id).await;
                    let _ = tx2.send(Event::Done(id, next));
                });
            }
            let wait = heap
                .peek()
                .map(|Reverse((at, _))| Duration::from_secs((at - now()).max(0) as u64))
                .unwrap_or(scan_every)
                .min(scan_every)
                .max(Duration::from_millis(50));
            let ev = match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(_) => continue,
            };
            // An earlier time wins (a retry request).
            let mut schedule = |id: String, at: i64| {
                let at = at.max(0);
                match scheduled.get(&id) {
                    Some(&cur) if cur <= at => {}
                    _ => {
                        scheduled.insert(id.clone(), at);
                        heap.push(Reverse((at, id)));
                    }
                }
            };
            match ev {
                Event::Schedule(id, at) => schedule(id, at),
                Event::Done(id, next) => {
                    in_flight.remove(&id);
                    if let Some(at) = next {
                        schedule(id, at);
                    }
                }
                Event::Rescan => {
                    self.rescan(&tx);
                    last_scan = std::time::Instant::now();
                }
            }
        }
    }

    /// Schedules every envelope on disk at its recorded next attempt.
    fn rescan(&self, tx: &mpsc::UnboundedSender<Event>) {
        // `hopguard queue retry`: due now (an earlier time wins over the recorded one).
        for id in self.spool.take_retry_requests() {
            info!(queue_id = %id, "retry requested");
            let _ = tx.send(Event::Schedule(id, 0));
        }
        match self.spool.scan() {
            Ok((envs, bad)) => {
                for b in bad {
                    error!(error = %b, "unreadable envelope left in the spool");
                }
                self.update_gauges(&envs);
                for e in envs {
                    let _ = tx.send(Event::Schedule(e.id, e.next_attempt));
                }
            }
            Err(e) => error!(error = %e, "spool scan failed"),
        }
    }

    /// Queue depth and oldest age per destination peer, from a spool scan.
    fn update_gauges(&self, envs: &[Envelope]) {
        let cfg = self.config.current();
        let t = now();
        let mut per: HashMap<String, (i64, f64)> = HashMap::new();
        for e in envs {
            let mut peers: Vec<String> = e
                .pending_domains()
                .iter()
                .map(|d| {
                    cfg.peer_for_domain(d)
                        .map(|p| p.name.clone())
                        .unwrap_or_else(|| "other".into())
                })
                .collect();
            peers.sort();
            peers.dedup();
            for p in peers {
                let entry = per.entry(p).or_insert((0, 0.0));
                entry.0 += 1;
                entry.1 = entry.1.max((t - e.received_at).max(0) as f64);
            }
        }
        let rows: Vec<(String, i64, f64)> = per.into_iter().map(|(p, (n, a))| (p, n, a)).collect();
        self.outbound.evidence.metrics.set_queue(&rows);
        // Counted with the queue gauges (every scan), not on each delivery: it reads a directory.
        self.outbound
            .evidence
            .metrics
            .mta_sts_cache_entries
            .set(self.outbound.mta_sts.cache_entries() as i64);
    }

    /// One delivery attempt for every pending domain of `id`. Returns the next attempt time,
    /// or None when the message is finished (delivered, bounced, or gone).
    async fn attempt(&self, id: &str) -> Option<i64> {
        let _permit = self.global.clone().acquire_owned().await.ok()?;
        let fresh = self
            .fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let mut env = match fresh {
            // Still there (an operator may have deleted it already).
            Some(e) if self.spool.exists(id) => e,
            _ => match self.spool.load(id) {
                Ok(e) => e,
                Err(_) => return None, // deleted by an operator
            },
        };
        let loaded = self.config.loaded();
        let cfg = &loaded.config;
        if !self.outbound.evidence.may_relay() {
            // audit.strict: wait until the audit sink takes records again.
            return Some(now() + cfg.queue.min_backoff.0.as_secs().max(1) as i64);
        }
        for domain in env.pending_domains() {
            let slot = self.domain_slot(&domain);
            let _dp = slot.acquire_owned().await.ok()?;
            let results = self.outbound.deliver(&loaded, &env, &domain).await;
            for (addr, res) in results {
                if let Some(r) = env
                    .recipients
                    .iter_mut()
                    .find(|r| r.address == addr && r.status == RcptStatus::Pending)
                {
                    match res {
                        RcptResult::Delivered { .. } => {
                            r.status = RcptStatus::Delivered;
                            r.last_failure = None;
                        }
                        RcptResult::Permanent(f) => {
                            info!(queue_id = %env.id, rcpt_domain = %r.domain, status = %f.status, reason = %f.text, "bounced");
                            r.status = RcptStatus::Failed;
                            r.last_failure = Some(f);
                        }
                        RcptResult::Temporary(f) => {
                            info!(queue_id = %env.id, rcpt_domain = %r.domain, status = %f.status,
                                  tls_reason = f.reason.map(|x| x.as_str()).unwrap_or("-"), reason = %f.text, "deferred");
                            r.last_failure = Some(f);
                        }
                    }
                }
            }
        }
        env.attempts += 1;
        let t = now();
        let expired = schedule::expired(env.received_at, t, cfg.queue.max_lifetime.0);
        if expired && !env.is_finished() {
            for r in env
                .recipients
                .iter_mut()
                .filter(|r| r.status == RcptStatus::Pending)
            {
                warn!(queue_id = %env.id, rcpt_domain = %r.domain, "queue lifetime expired");
                r.status = RcptStatus::Failed;
                if r.last_failure.is_none() {
                    r.last_failure = Some(crate::spool::Failure {
                        code: 451,
                        status: "4.4.7".into(),
                        text: "the message stayed in the queue too long".into(),
                        reason: None,
                        remote: None,
                    });
                }
            }
        }
        // Failed recipients are reported now, not when the last recipient settles.
        if let Err(e) = self.bounce(&mut env, &cfg.hostname).await {
            // The DSN is not safely queued: keep the message and try again later.
            error!(queue_id = %env.id, error = %e, "cannot queue DSN; keeping message");
            env.next_attempt = t + cfg.queue.min_backoff.0.as_secs().max(1) as i64;
            self.save(&env).await;
            return Some(env.next_attempt);
        }
        if env.is_finished() {
            // Two unlinks (metadata in memory); the directory fsync comes within 100 ms.
            if let Err(e) = self.spool.remove_delivered(&env.id) {
                match e {
                    crate::spool::SpoolError::NotFound(_) => {}
                    e => error!(queue_id = %env.id, error = %e, "cannot remove finished message"),
                }
            }
            return None;
        }
        let delay = schedule::backoff(
            env.attempts,
            cfg.queue.min_backoff.0,
            cfg.queue.max_backoff.0,
        );
        // The final attempt happens at expiry, not later.
        let expiry = env.received_at + cfg.queue.max_lifetime.0.as_secs() as i64;
        env.next_attempt = (t + delay.as_secs().max(1) as i64).min(expiry.max(t + 1));
        if !self.save(&env).await {
            return None;
        }
        Some(env.next_attempt)
    }

    /// Writes the envelope back unless an operator deleted the message during the attempt.
    /// Returns false when the message is gone.
    async fn save(&self, env: &Envelope) -> bool {
        if !self.spool.exists(&env.id) {
            info!(queue_id = %env.id, "message deleted during its delivery attempt");
            return false;
        }
        let spool = self.spool.clone();
        let copy = env.clone();
        match tokio::task::spawn_blocking(move || spool.update(&copy)).await {
            Ok(Ok(())) => {}
            Ok(Err(crate::spool::SpoolError::NotFound(_))) => {
                info!(queue_id = %env.id, "message deleted during its delivery attempt");
                return false;
            }
            Ok(Err(e)) => error!(queue_id = %env.id, error = %e, "cannot update envelope"),
            Err(e) => error!(queue_id = %env.id, error = %e, "cannot update envelope"),
        }
        true
    }

    /// Queues one DSN for the failed recipients not yet reported that want one, and marks
    /// them reported. Never for a null sender or a DSN (RFC 5321 §6.1, RFC 3464 §2).
    async fn bounce(
        &self,
        env: &mut Envelope,
        hostname: &str,
    ) -> Result<(), crate::spool::SpoolError> {
        let quiet = env.mail_from.is_empty() || env.is_bounce;
        let failed: Vec<&Recipient> = env
            .recipients
            .iter()
            .filter(|r| {
                r.status == RcptStatus::Failed && !r.notified && dsn::wants_failure_notice(r)
            })
            .collect();
        if failed.is_empty() || quiet {
            return Ok(());
        }
        let message = self.spool.message(&env.id);
        let size = env.size;
        // The message only (a message file goes on with the embedded envelope).
        let original = tokio::task::spawn_blocking(move || message.read(size))
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let body = dsn::render(hostname, env, &failed, &original, chrono::Utc::now());
        let reported: Vec<String> = failed.iter().map(|r| r.address.clone()).collect();
        let domain = env
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let t = now();
        let dsn_env = Envelope {
            version: ENVELOPE_VERSION,
            id: String::new(),
            node_id: env.node_id.clone(),
            received_at: t,
            received_ms: chrono::Utc::now().timestamp_millis(),
            client_ip: "127.0.0.1".into(),
            helo: hostname.to_string(),
            peer: None,
            tls: None,
            mail_from: String::new(),
            body: Default::default(),
            smtputf8: env.smtputf8,
            // RFC 8689 §5: a DSN carrying the message body keeps the REQUIRETLS requirement.
            requiretls: env.requiretls && env.ret == Some(crate::spool::Ret::Full),
            // A DSN is our own message: the original's TLS-Required: No does not carry over.
            tls_required_no: false,
            ret: None,
            envid: None,
            size: 0,
            message_id_hash: None,
            recipients: vec![Recipient {
                address: env.mail_from.clone(),
                domain,
                orcpt: None,
                notify: smtp_proto::RCPT_NOTIFY_NEVER,
                status: RcptStatus::Pending,
                last_failure: None,
                notified: false,
            }],
            attempts: 0,
            next_attempt: t,
            is_bounce: true,
        };
        let committed = self.spool.inject(dsn_env, &body).await?;
        info!(queue_id = %env.id, dsn_id = %committed.id(), "DSN queued to sender");
        let _ = self.tx.send(Event::Schedule(committed.id().to_string(), 0));
        for r in env.recipients.iter_mut() {
            if reported.contains(&r.address) {
                r.notified = true;
            }
        }
        Ok(())
    }
}
