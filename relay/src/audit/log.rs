//! `AuditLog::start` -> `AuditHandle`: the non-blocking front of the audit log and its writer
//! thread.
//!
//! `record` never blocks: hops go through a bounded queue (`try_send`); a full queue or a failed
//! writer drops the record, counts it and makes `healthy()` false. One dedicated thread (file
//! I/O and fsync never run on the async runtime) drains the queue in batches: append every
//! queued record, then one fsync per batch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use ed25519_dalek::SigningKey;
use tokio::sync::watch;

use super::writer::AuditWriter;
use super::AuditError;
use crate::evidence::HopRecord;

/// How often an idle writer wakes up to rotate at midnight and to notice a shutdown.
const TICK: Duration = Duration::from_secs(1);
/// Most records written per fsync.
const MAX_BATCH: usize = 4096;

/// What the audit log needs from the relay's configuration.
#[derive(Clone)]
pub struct AuditConfig {
    /// Directory of the daily files (created with mode 0750 if absent).
    pub dir: PathBuf,
    /// This node's id, written into every line (`[A-Za-z0-9._:-]`, at most 253 characters).
    pub node_id: String,
    /// The node's audit key: signs every checkpoint.
    pub signing_key: SigningKey,
    /// A signed checkpoint after this many hop records (at least 1).
    pub checkpoint_every: u64,
    /// Records the queue holds before `record` starts dropping (at least 1).
    pub capacity: usize,
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("dir", &self.dir)
            .field("node_id", &self.node_id)
            .field("signing_key", &"<redacted>")
            .field("checkpoint_every", &self.checkpoint_every)
            .field("capacity", &self.capacity)
            .finish()
    }
}

enum Msg {
    Hop(Box<HopRecord>),
    /// Wakes the writer so it notices a shutdown at once.
    Wake,
}

#[derive(Default)]
struct Shared {
    dropped: AtomicU64,
    /// The queue overflowed and has not been drained since.
    overflow: AtomicBool,
    stop: AtomicBool,
    /// The writer thread has finished (cleanly or not).
    done: AtomicBool,
    failure: OnceLock<Arc<AuditError>>,
}

/// The audit log's entry point.
pub struct AuditLog;

impl AuditLog {
    /// Resumes the chain in `config.dir` (see `AuditWriter::open`; a damaged last file is an
    /// error, never a fork) and starts the writer thread. Needs no async runtime.
    pub fn start(config: AuditConfig) -> Result<AuditHandle, AuditError> {
        let writer = AuditWriter::open(&config, Utc::now())?;
        let (tx, rx) = mpsc::sync_channel(config.capacity);
        let shared = Arc::new(Shared::default());
        let (done_tx, done_rx) = watch::channel(false);
        let thread_shared = shared.clone();
        let capacity = config.capacity;
        std::thread::Builder::new()
            .name("hopguard-audit".into())
            .spawn(move || run(writer, rx, capacity, thread_shared, done_tx))
            .map_err(AuditError::Thread)?;
        tracing::info!(dir = %config.dir.display(), node = %config.node_id, "audit log started");
        Ok(AuditHandle {
            tx,
            shared,
            done: done_rx,
        })
    }
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct AuditHandle {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    done: watch::Receiver<bool>,
}

impl AuditHandle {
    /// Queues one hop record. Never blocks: when the queue is full, or the writer has failed or
    /// stopped, the record is dropped, counted in `dropped()`, and `healthy()` turns false.
    pub fn record(&self, hop: &HopRecord) {
        match self.tx.try_send(Msg::Hop(Box::new(hop.clone()))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.shared.overflow.swap(true, Ordering::Relaxed) {
                    tracing::warn!("audit queue full: hop records are being dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// False while records are being dropped (queue overflowed and not yet drained), and for
    /// good once the writer has failed or stopped. Export as `hopguard_audit_healthy`.
    pub fn healthy(&self) -> bool {
        !self.shared.overflow.load(Ordering::Relaxed)
            && !self.shared.done.load(Ordering::Relaxed)
            && self.shared.failure.get().is_none()
    }

    /// Hop records dropped since start. Export as `hopguard_audit_dropped_total`.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued, then a `shutdown` checkpoint, and fsyncs. Records sent by other
    /// clones afterwards are dropped. Returns the writer's failure, if it failed.
    pub async fn shutdown(self) -> Result<(), AuditError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        // A full queue needs no wake-up: the writer is busy and checks `stop` after each batch.
        let _ = self.tx.try_send(Msg::Wake);
        let mut done = self.done;
        let finished = done.wait_for(|d| *d).await.is_ok();
        match self.shared.failure.get() {
            Some(e) => Err(AuditError::Failed(e.clone())),
            None if finished => Ok(()),
            None => Err(AuditError::Stopped),
        }
    }
}

/// The writer thread.
fn run(
    mut writer: AuditWriter,
    rx: Receiver<Msg>,
    capacity: usize,
    shared: Arc<Shared>,
    done: watch::Sender<bool>,
) {
    let result = drive(&mut writer, &rx, capacity, &shared);
    shared.done.store(true, Ordering::SeqCst);
    if let Err(e) = result {
        tracing::error!(error = %e, "audit writer failed: hop records are now dropped");
        let _ = shared.failure.set(Arc::new(e));
    }
    // Whatever is still queued will never be written.
    let lost = rx.try_iter().filter(|m| matches!(m, Msg::Hop(_))).count();
    shared.dropped.fetch_add(lost as u64, Ordering::Relaxed);
    drop(rx);
    let _ = done.send(true);
}

fn drive(
    writer: &mut AuditWriter,
    rx: &Receiver<Msg>,
    capacity: usize,
    shared: &Shared,
) -> Result<(), AuditError> {
    let mut dropped_seen = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let disconnected = match rx.recv_timeout(TICK) {
            Ok(msg) => {
                batch.push(msg);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        batch.extend(rx.try_iter().take(MAX_BATCH - batch.len()));
        let drained = batch.len() < MAX_BATCH;
        let stopping = disconnected || shared.stop.load(Ordering::SeqCst);
        if stopping {
            // Everything queued before the stop: at most `capacity` more.
            batch.extend(rx.try_iter().take(capacity));
        }
        let now = Utc::now();
        let dropped = shared.dropped.load(Ordering::Relaxed);
        writer.add_dropped(dropped - dropped_seen);
        dropped_seen = dropped;
        for msg in batch.drain(..) {
            if let Msg::Hop(hop) = msg {
                writer.append(&hop, now)?;
            }
        }
        writer.tick(now)?;
        writer.flush()?;
        if drained {
            shared.overflow.store(false, Ordering::Relaxed);
        }
        if stopping {
            return writer.close(Utc::now());
        }
    }
}
