//! The spool: messages and envelopes on local disk, durable before the `250`.
//!
//! Layout under `spool_dir`: `queue/ID.msg` (message bytes as received, with our Received
//! header prepended), `queue/ID.env` (JSON envelope) and `tmp/` (envelopes being written). A
//! message exists once its `.env` is in `queue/`: `commit` writes and fdatasyncs the data file
//! (written in place in `queue/`: a data file without its envelope is an interrupted reception,
//! removed at the next start), writes and fdatasyncs the envelope in `tmp/`, renames it into
//! `queue/` (the commit point) and fsyncs the directory. Only then does it return the
//! `Committed` receipt the inbound session needs to reply `250`.
//!
//! Small messages (up to `SPILL` bytes) are held in memory until `commit`, which does all of
//! its file work in one blocking task; larger ones are written out as they arrive. Directory
//! fsyncs are group-committed (`DirSync`): one fsync covers every rename, link and unlink that
//! finished before it started, so concurrent commits and removals share it.

mod envelope;

pub use envelope::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("envelope {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no message {0} in the queue")]
    NotFound(String),
    #[error("spool {0} is in use by another running hopguard")]
    Locked(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Proof that a message is on stable storage. Only `Incoming::commit` makes one.
#[derive(Debug)]
pub struct Committed {
    id: String,
}

impl Committed {
    pub fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
    /// Held for the relay's lifetime (`open`), absent for operator commands (`attach`).
    lock: Option<std::sync::Arc<std::fs::File>>,
    /// Group commit of the `queue/` directory's fsync.
    dir_sync: Arc<DirSync>,
}

/// Messages up to this size are buffered in memory until `commit`.
const SPILL: usize = 256 * 1024;

/// Group commit for fsyncs of one directory. A caller takes a ticket after its directory
/// change (rename, create, unlink) is done, then waits for a sync that started after that
/// ticket: either it runs one itself, covering every ticket taken so far, or it finds that a
/// sync started since covered it.
#[derive(Debug, Default)]
struct DirSync {
    requested: AtomicU64,
    completed: AtomicU64,
    running: std::sync::Mutex<()>,
}

impl DirSync {
    fn sync(&self, dir: &Path) -> Result<(), SpoolError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if self.completed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket up to here belongs to a change made before this fsync starts.
        let covered = self.requested.load(Ordering::SeqCst);
        fsync_dir(dir)?;
        self.completed.store(covered, Ordering::SeqCst);
        Ok(())
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new queue id: microseconds since the epoch and a per-process counter, in hex (sortable).
pub fn new_queue_id() -> String {
    let micros = chrono::Utc::now().timestamp_micros().max(0) as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!("{micros:013X}{n:04X}")
}

/// A queue id is what `new_queue_id` makes: guards file names built from CLI input.
pub fn is_queue_id(s: &str) -> bool {
    (8..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl Spool {
    /// Opens the spool for the running relay: creates it if needed, takes its exclusive lock
    /// (a second relay on the same spool is refused), removes leftovers of interrupted
    /// receptions: envelopes in `tmp/` and data files whose envelope was never committed. Only
    /// this start-up path ever deletes uncommitted files: while the relay runs, a data file
    /// waits for its envelope until the commit.
    pub fn open(root: &Path) -> Result<Self, SpoolError> {
        let mut spool = Self::attach(root)?;
        let lock_path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(root.to_owned()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        spool.lock = Some(std::sync::Arc::new(lock));
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let dir = spool.queue_dir();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("msg")
                && !path.with_extension("env").exists()
            {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(spool)
    }

    /// Attaches to a spool without locking or cleaning it (operator commands). Safe while the
    /// relay runs: it never deletes a file the relay is writing.
    pub fn attach(root: &Path) -> Result<Self, SpoolError> {
        for sub in ["tmp", "queue"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Self {
            root: root.to_owned(),
            lock: None,
            dir_sync: Arc::default(),
        })
    }

    /// Whether a relay holds this spool's lock (i.e. is running on it).
    pub fn is_in_use(root: &Path) -> bool {
        let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("lock"))
        else {
            return false;
        };
        matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    /// Whether the envelope of `id` is still in the queue.
    pub fn exists(&self, id: &str) -> bool {
        is_queue_id(id) && self.env_path(id).exists()
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    pub fn msg_path(&self, id: &str) -> PathBuf {
        self.queue_dir().join(format!("{id}.msg"))
    }

    fn env_path(&self, id: &str) -> PathBuf {
        self.queue_dir().join(format!("{id}.env"))
    }

    /// Starts receiving a message (its data file `queue/ID.msg` is created once it outgrows
    /// the memory buffer, or at `commit`).
    pub async fn incoming(&self) -> Result<Incoming, SpoolError> {
        let id = new_queue_id();
        let path = self.msg_path(&id);
        Ok(Incoming {
            spool: self.clone(),
            id,
            path,
            buf: Vec::new(),
            file: None,
            written: 0,
            done: false,
        })
    }

    /// Loads every committed envelope (never deletes anything).
    pub fn scan(&self) -> Result<(Vec<Envelope>, Vec<SpoolError>), SpoolError> {
        let dir = self.queue_dir();
        let mut envs = Vec::new();
        let mut bad = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("env") {
                match read_envelope(&path) {
                    Ok(e) => envs.push(e),
                    Err(e) => bad.push(e),
                }
            }
        }
        envs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((envs, bad))
    }

    pub fn load(&self, id: &str) -> Result<Envelope, SpoolError> {
        if !is_queue_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let p = self.env_path(id);
        if !p.exists() {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        read_envelope(&p)
    }

    /// Atomically replaces the envelope (tmp file, fsync, rename, fsync directory).
    pub fn update(&self, env: &Envelope) -> Result<(), SpoolError> {
        let tmp = self.root.join("tmp").join(format!("{}.env", env.id));
        write_synced(&tmp, &serde_json::to_vec_pretty(env).unwrap_or_default())?;
        let dst = self.env_path(&env.id);
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        self.dir_sync.sync(&self.queue_dir())
    }

    /// Removes a message: envelope first, so a crash in between leaves only an orphan data
    /// file that start-up recovery (`open`) deletes.
    pub fn remove(&self, id: &str) -> Result<(), SpoolError> {
        let env = self.env_path(id);
        match std::fs::remove_file(&env) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io(&env)(e)),
        }
        let _ = std::fs::remove_file(self.msg_path(id));
        self.dir_sync.sync(&self.queue_dir())
    }

    /// Queues a locally generated message (a DSN) with its envelope, durably.
    pub async fn inject(&self, mut env: Envelope, data: &[u8]) -> Result<Committed, SpoolError> {
        let mut inc = self.incoming().await?;
        inc.write(data).await?;
        env.id = inc.id().to_string();
        env.size = data.len() as u64;
        inc.commit(env).await
    }
}

/// A message being received. Dropping it without `commit` deletes its data file.
pub struct Incoming {
    spool: Spool,
    id: String,
    /// `queue/ID.msg`.
    path: PathBuf,
    /// Bytes not yet in the data file.
    buf: Vec<u8>,
    /// The data file, once the message outgrew `SPILL`.
    file: Option<tokio::fs::File>,
    written: u64,
    /// Committed: the data file belongs to the queue now.
    done: bool,
}

impl Incoming {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= SPILL {
            let file = match &mut self.file {
                Some(f) => f,
                None => {
                    let f = tokio::fs::File::create(&self.path)
                        .await
                        .map_err(io(&self.path))?;
                    self.file.insert(f)
                }
            };
            file.write_all(&self.buf).await.map_err(io(&self.path))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Makes the message durable and visible to the queue. Returns only after the data file,
    /// the envelope and the queue directory entry are fsynced (RFC 5321 §6.1: no mail lost
    /// once `250` is sent).
    pub async fn commit(mut self, mut env: Envelope) -> Result<Committed, SpoolError> {
        env.id = self.id.clone();
        env.size = self.written;
        let file = match self.file.take() {
            Some(mut f) => {
                // Surfaces the errors of writes still in flight.
                f.flush().await.map_err(io(&self.path))?;
                Some(f.into_std().await)
            }
            None => None,
        };
        let spool = self.spool.clone();
        let id = self.id.clone();
        let msg = self.path.clone();
        let rest = std::mem::take(&mut self.buf);
        let json = serde_json::to_vec_pretty(&env).unwrap_or_default();
        let result = tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            let mut f = match file {
                Some(f) => f,
                None => std::fs::File::create(&msg).map_err(io(&msg))?,
            };
            f.write_all(&rest).map_err(io(&msg))?;
            f.sync_data().map_err(io(&msg))?;
            drop(f);
            let tmp_env = spool.root.join("tmp").join(format!("{id}.env"));
            write_synced(&tmp_env, &json)?;
            let dst_env = spool.env_path(&id);
            std::fs::rename(&tmp_env, &dst_env).map_err(io(&dst_env))?;
            if let Err(e) = spool.dir_sync.sync(&spool.queue_dir()) {
                // Not durable: the client gets a 4xx, so the message must not stay queued.
                let _ = std::fs::remove_file(&dst_env);
                return Err(e);
            }
            Ok(())
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        result?;
        self.done = true;
        Ok(Committed {
            id: self.id.clone(),
        })
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.done {
            // Nothing there for a small message that never reached `commit`.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_envelope(path: &Path) -> Result<Envelope, SpoolError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if env.version != ENVELOPE_VERSION {
        return Err(SpoolError::Corrupt {
            path: path.to_owned(),
            reason: format!("unknown envelope version {}", env.version),
        });
    }
    Ok(env)
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), SpoolError> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_data().map_err(io(path))
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests;
