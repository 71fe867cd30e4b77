//! Lawful-interception point: warrant-bound, audited, off by default (see docs/lawful-interception.md).
//!
//! Where it sits: after `spool::commit` (the `250` is already decided), the relay calls
//! `Intercept::on_accepted` when it holds an `Intercept` at all: the disabled state is the
//! `None` the relay holds, so with interception off no code path copies mail. Matching is
//! in memory; a match opens the spooled file and a blocking task queues each copy durably in
//! the LI spool, then the handover task delivers it. Nothing here alters, delays or blocks
//! delivery, and nothing here writes to `tracing`, the metrics or the hop audit log: LI
//! health is reported on the mTLS admin endpoint only.
//!
//! Map: `warrant` (format, validation, root-only file, pure `matches`) · `copies` (the durable
//! copy queue and the IRI/CC framing) · `handover` (mediation over mTLS or a root-only
//! directory, ACK, backoff) · `admin` (mTLS line protocol: `PUT-WARRANTS`, `HEALTH`) ·
//! `li_audit` (the separate hash-chained LI audit log) · `settings` (the YAML section) ·
//! `tls` · `wire`.

pub mod admin;
pub mod copies;
pub mod handover;
mod li_audit;
pub mod settings;
mod tls;
pub mod warrant;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::SigningKey;
use tokio::sync::{watch, Notify};

pub use settings::{AdminSettings, HandoverSettings, InterceptSettings, MediationSettings};
pub use warrant::{matches, Direction, Match, Product, Side, Warrant};

use crate::audit::{AuditError, LiEvent, LiRecord};
use crate::spool::{is_queue_id, new_queue_id, Envelope, MessageRef, OpenMessage};
use copies::{CopyQueue, IriRecord};
use li_audit::LiAudit;

/// Everything that can go wrong in the interception point. Messages name paths, LIIDs and
/// fields, never a target address: still, they belong on the LI channel (stderr of a config
/// check, the admin endpoint), not in the ordinary logs; use `redacted()` there.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("warrants file {}: {problem}; no warrant loaded from it", path.display())]
    WarrantsFile { path: PathBuf, problem: String },
    #[error("warrant {liid}: `{field}` {problem}; the whole warrant set is refused")]
    InvalidWarrant {
        liid: String,
        field: String,
        problem: String,
    },
    #[error("warrants from {origin}: {message}; the whole warrant set is refused")]
    Parse { origin: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("LI copy {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("TLS material {}: {reason}", path.display())]
    Tls { path: PathBuf, reason: String },
    #[error("LI audit log: {0}")]
    Audit(#[source] AuditError),
    #[error("the LI audit log has stopped")]
    AuditStopped,
    #[error("cannot encode an IRI record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("handover: {0}")]
    Handover(String),
    #[error("intercept configuration: {0}")]
    Config(String),
    #[error("lawful interception is disabled (intercept.enabled is false)")]
    Disabled,
    #[error("cannot listen on {addr} for the LI admin endpoint: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl InterceptError {
    /// A text for the ordinary logs: says that interception failed, nothing more.
    pub fn redacted(&self) -> &'static str {
        "lawful-interception error (details on the LI admin channel only)"
    }
}

/// Where copies go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handover {
    /// A root-only directory (mode 0700) the mediation function collects from.
    Directory(PathBuf),
    /// The mediation endpoint, over mutually authenticated TLS.
    Mediation {
        address: SocketAddr,
        /// Name the mediation server's certificate must carry.
        server_name: String,
        /// CA that issued the mediation server's certificate (the only trust anchor).
        ca_file: PathBuf,
        /// Our client certificate chain and key.
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// The mTLS admin endpoint (X1-like provisioning and LI health).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates must chain to this CA.
    pub authority_ca_file: PathBuf,
}

/// The validated configuration `Intercept::start` takes (see `InterceptSettings::to_config`).
#[derive(Clone)]
pub struct InterceptConfig {
    pub warrants_file: Option<PathBuf>,
    /// The LI copy queue (mode 0700), separate from the mail spool.
    pub spool_dir: PathBuf,
    /// The LI audit log (mode 0700), separate from the hop audit log.
    pub audit_dir: PathBuf,
    pub audit_key: SigningKey,
    pub node_id: String,
    pub handover: Handover,
    pub admin: Option<AdminConfig>,
}

impl std::fmt::Debug for InterceptConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptConfig")
            .field("warrants_file", &self.warrants_file)
            .field("spool_dir", &self.spool_dir)
            .field("audit_dir", &self.audit_dir)
            .field("audit_key", &"<redacted>")
            .field("node_id", &self.node_id)
            .field("handover", &self.handover)
            .field("admin", &self.admin)
            .finish()
    }
}

/// The admin set survives restarts here, inside the LI spool (used when no warrants file is
/// configured).
const ADMIN_WARRANTS_FILE: &str = "admin-warrants.yaml";

/// LI health, reported only on the admin endpoint.
#[derive(Default)]
struct Health {
    last_error: Mutex<Option<(String, String)>>,
    last_ok: Mutex<Option<String>>,
    last_load_error: Mutex<Option<String>>,
    handed_over: AtomicU64,
    failures: AtomicU64,
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn set<T>(m: &Mutex<T>, value: T) {
    if let Ok(mut g) = m.lock() {
        *g = value;
    }
}

/// State shared by the relay-facing handle and the background tasks.
pub(crate) struct Inner {
    node_id: String,
    warrants: RwLock<Arc<Vec<Warrant>>>,
    warrants_file: Option<PathBuf>,
    queue: CopyQueue,
    audit: LiAudit,
    health: Health,
    /// New copies are pending.
    wake: Notify,
    /// Retry the handover now, whatever the backoff.
    retry: Notify,
    /// The warrant set changed (the expiry task recomputes its next deadline).
    changed: Notify,
    /// Bumped after every handover round: tests wait on it instead of sleeping.
    progress: watch::Sender<u64>,
    expired_logged: Mutex<HashSet<(String, DateTime<Utc>)>>,
    /// Serialises warrant-set replacements (file reload vs admin).
    provisioning: Mutex<()>,
}

impl Inner {
    fn current(&self) -> Arc<Vec<Warrant>> {
        match self.warrants.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn admin_store(&self) -> PathBuf {
        self.queue.root().join(ADMIN_WARRANTS_FILE)
    }

    /// Replaces the warrant set after auditing every change; refused (set unchanged) if the
    /// audit cannot be written. Blocking.
    fn replace(&self, new: Vec<Warrant>, source: &str) -> Result<usize, InterceptError> {
        let _guard = self
            .provisioning
            .lock()
            .map_err(|_| InterceptError::AuditStopped)?;
        let old = self.current();
        let old_by: BTreeMap<&str, &Warrant> = old.iter().map(|w| (w.liid.as_str(), w)).collect();
        for w in &new {
            match old_by.get(w.liid.as_str()) {
                None => self.audit.warrant(LiEvent::WarrantAdded, &w.liid, source)?,
                Some(o) if *o != w => {
                    self.audit
                        .warrant(LiEvent::WarrantChanged, &w.liid, source)?
                }
                Some(_) => {}
            }
        }
        for o in old.iter().filter(|o| !new.iter().any(|w| w.liid == o.liid)) {
            self.audit
                .warrant(LiEvent::WarrantRemoved, &o.liid, source)?;
        }
        let count = new.len();
        self.audit.record(
            LiEvent::WarrantsLoaded,
            LiRecord {
                source: Some(source.to_owned()),
                warrants: Some(count as u64),
                ..LiRecord::default()
            },
        )?;
        match self.warrants.write() {
            Ok(mut g) => *g = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        set(&self.health.last_load_error, None);
        self.changed.notify_one();
        Ok(count)
    }

    /// Audits a refused load and keeps its reason for `HEALTH`.
    fn refused(&self, source: &str, e: &InterceptError) {
        set(&self.health.last_load_error, Some(e.to_string()));
        let _ = self.audit.record(
            LiEvent::LoadRefused,
            LiRecord {
                source: Some(source.to_owned()),
                ..LiRecord::default()
            },
        );
    }

    fn load_file(&self, path: &Path) -> Result<usize, InterceptError> {
        match warrant::load_file(path) {
            Ok(w) => self.replace(w, "file"),
            Err(e) => {
                self.refused("file", &e);
                Err(e)
            }
        }
    }

    /// `PUT-WARRANTS`: validate, persist (root-only, durable), audit, replace. Blocking.
    fn provision_admin(&self, text: &str) -> Result<usize, InterceptError> {
        let result = warrant::parse_warrants(text, "the admin endpoint").and_then(|w| {
            let store = self.admin_store();
            let tmp = self.queue.root().join("tmp").join(ADMIN_WARRANTS_FILE);
            copies::write_durably(&tmp, &store, text.as_bytes())?;
            self.replace(w, "admin")
        });
        if let Err(e) = &result {
            self.refused("admin", e);
        }
        result
    }

    /// Queues one copy per match. Blocking (reads the message, writes and fsyncs the copies).
    fn queue_copies(
        &self,
        env: &Envelope,
        file: std::io::Result<OpenMessage>,
        found: &[Match],
        now: DateTime<Utc>,
    ) {
        let need_cc = found.iter().any(|m| m.product == Product::IriCc);
        // The message is `env.size` bytes (in a message file, the envelope follows).
        let content = file.and_then(|f| {
            if need_cc {
                let bytes = f.read(env.size)?;
                Ok((bytes.len() as u64, bytes))
            } else {
                Ok((f.available(env.size)?, Vec::new()))
            }
        });
        let (size, bytes) = match content {
            Ok(c) => c,
            Err(_) => {
                for m in found {
                    self.copy_failed(m, &env.id, "the spooled message could not be read");
                }
                return;
            }
        };
        for (i, m) in found.iter().enumerate() {
            let record = IriRecord::new(copies::copy_id(&env.id, i), m, env, size, now);
            let cc = (m.product == Product::IriCc).then_some(bytes.as_slice());
            let queued = self.queue.put(&record, cc).and_then(|()| {
                self.audit
                    .copy(LiEvent::CopyQueued, &m.liid, &env.id, m.product.as_str())
            });
            if queued.is_err() {
                // Unaudited copies must not leave: remove it if it was written.
                let path = self.queue.root().join("pending");
                let _ = std::fs::remove_file(path.join(format!("{}.copy", record.copy_id)));
                self.copy_failed(m, &env.id, "a copy could not be queued or audited");
            }
        }
        self.wake.notify_one();
    }

    fn copy_failed(&self, m: &Match, queue_id: &str, why: &str) {
        self.health.failures.fetch_add(1, Ordering::Relaxed);
        set(&self.health.last_error, Some((now_text(), why.to_owned())));
        let _ = self
            .audit
            .copy(LiEvent::CopyFailed, &m.liid, queue_id, m.product.as_str());
    }

    /// The `HEALTH` answer (JSON).
    fn health(&self) -> serde_json::Value {
        let now = Utc::now();
        let warrants = self.current();
        let last_error = self.health.last_error.lock().ok().and_then(|g| g.clone());
        serde_json::json!({
            "node": self.node_id,
            "warrants_loaded": warrants.len(),
            "warrants_active": warrants.iter().filter(|w| w.is_active(now)).count(),
            "copies_pending": self.queue.pending(),
            "copies_handed_over": self.health.handed_over.load(Ordering::Relaxed),
            "copy_failures": self.health.failures.load(Ordering::Relaxed),
            "last_handover_error": last_error.as_ref().map(|e| e.1.clone()),
            "last_handover_error_at": last_error.map(|e| e.0),
            "last_handover_ok_at": self.health.last_ok.lock().ok().and_then(|g| g.clone()),
            "last_load_error": self.health.last_load_error.lock().ok().and_then(|g| g.clone()),
        })
    }

    /// Audits warrants whose `valid_until` has passed (once each); returns when the next one
    /// expires. Blocking.
    fn expire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut next = None;
        for w in self.current().iter() {
            if w.valid_until <= now {
                let key = (w.liid.clone(), w.valid_until);
                let first = self
                    .expired_logged
                    .lock()
                    .map(|mut s| s.insert(key))
                    .unwrap_or(false);
                if first {
                    let _ = self
                        .audit
                        .warrant(LiEvent::WarrantExpired, &w.liid, "clock");
                }
            } else if next.is_none_or(|n| w.valid_until < n) {
                next = Some(w.valid_until);
            }
        }
        let _ = self.audit.tick();
        next
    }
}

/// The running interception point. Held by the relay as `Option<Arc<Intercept>>`: `None`
/// when disabled.
pub struct Intercept {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    admin_addr: Option<SocketAddr>,
}

impl Intercept {
    /// Opens the LI spool and audit log (directories mode 0700), loads the warrants (the
    /// warrants file if configured, else the last set provisioned over the admin endpoint),
    /// loads the TLS material, binds the admin endpoint and starts the handover and expiry
    /// tasks. Any problem is an error: the relay must not start half an interception point.
    pub async fn start(cfg: InterceptConfig) -> Result<Arc<Intercept>, InterceptError> {
        let queue = CopyQueue::open(&cfg.spool_dir)?;
        let audit = LiAudit::open(&cfg.audit_dir, &cfg.node_id, &cfg.audit_key)?;
        let target = handover::Target::new(&cfg.handover)?;
        let admin = match &cfg.admin {
            Some(a) => Some(admin::Admin::bind(a).await?),
            None => None,
        };
        let (progress, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            node_id: cfg.node_id.clone(),
            warrants: RwLock::new(Arc::new(Vec::new())),
            warrants_file: cfg.warrants_file.clone(),
            queue,
            audit,
            health: Health::default(),
            wake: Notify::new(),
            retry: Notify::new(),
            changed: Notify::new(),
            progress,
            expired_logged: Mutex::new(HashSet::new()),
            provisioning: Mutex::new(()),
        });
        match &cfg.warrants_file {
            Some(path) => {
                inner.load_file(path)?;
            }
            None => {
                let store = inner.admin_store();
                if store.exists() {
                    let w = warrant::load_file(&store)?;
                    inner.replace(w, "admin")?;
                }
            }
        }
        let admin_addr = admin.as_ref().map(|a| a.local_addr());
        if let Some(admin) = admin {
            tokio::spawn(admin.serve(inner.clone()));
        }
        tokio::spawn(handover::run(inner.clone(), target));
        tokio::spawn(expiry_task(inner.clone()));
        Ok(Arc::new(Intercept {
            inner,
            runtime: tokio::runtime::Handle::current(),
            admin_addr,
        }))
    }

    /// Called right after a message is committed (its `250` already decided). Matching is in
    /// memory; on a match the spooled file is opened here (so the copy is taken even if the
    /// queue delivers and deletes the message first) and the copies are written by a
    /// blocking task. Never fails, never blocks on I/O beyond that `open`, never alters the
    /// message. `env.id` must be the committed queue id (else the file stem of
    /// `message_path` is used).
    pub fn on_accepted(&self, env: &Envelope, message: &MessageRef) {
        let now = Utc::now();
        let found = matches(&self.inner.current(), env, now);
        if found.is_empty() {
            return;
        }
        // Opened now: the message may be delivered and removed before the copies are made.
        let file = message.open();
        let mut env = env.clone();
        if !is_queue_id(&env.id) {
            env.id = new_queue_id();
        }
        let inner = self.inner.clone();
        self.runtime
            .spawn_blocking(move || inner.queue_copies(&env, file, &found, now));
    }

    /// Reloads the warrants file (SIGHUP). An invalid file, or one that is not root-only,
    /// keeps the current set, is audited as `load-refused` and returned as the error. Without
    /// a configured warrants file this does nothing.
    pub fn reload_warrants(&self) -> Result<(), InterceptError> {
        match &self.inner.warrants_file {
            Some(path) => self.inner.load_file(path).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The admin endpoint's bound address (useful with port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The `HEALTH` document (also served on the admin endpoint).
    pub fn health(&self) -> serde_json::Value {
        self.inner.health()
    }

    /// Retry the handover now instead of waiting for the backoff.
    pub fn retry_now(&self) {
        self.inner.retry.notify_one();
        self.inner.wake.notify_one();
    }

    /// Watch the handover rounds (a counter bumped after each): lets tests wait on events.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.inner.progress.subscribe()
    }
}

/// Audits expiries as they happen and rotates the LI audit log at midnight.
async fn expiry_task(inner: Arc<Inner>) {
    loop {
        let i = inner.clone();
        let next = tokio::task::spawn_blocking(move || i.expire(Utc::now()))
            .await
            .ok()
            .flatten();
        let cap = std::time::Duration::from_secs(60);
        let wait = next
            .and_then(|n| (n - Utc::now()).to_std().ok())
            .map_or(cap, |d| d.min(cap))
            .max(std::time::Duration::from_millis(10));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.changed.notified() => {}
        }
    }
}
