//! The spool: messages and envelopes on local disk, durable before the `250`.
//!
//! Layout under `spool_dir`: `tmp/` (messages being received, envelopes being rewritten) and
//! `queue/`. A small message (under `SPILL` bytes, with `spool_segments` on: the default) is a
//! record in a shared segment — see the last paragraph and `segment.rs`. Otherwise a message is
//! one file, `queue/ID.msg`: the message bytes as received (our Received
//! header prepended; `Envelope::size` bytes), then its envelope as it was accepted (JSON), then
//! a fixed trailer `\nHGENV1 LLLLLLLLLL\n` giving the JSON's length. `commit` appends envelope
//! and trailer to the data file in `tmp/`, fdatasyncs it, renames it into `queue/` (the commit
//! point) and fsyncs the directory; only then does it return the `Committed` receipt the
//! inbound session needs to reply `250`. One file, one fdatasync, one rename per message.
//!
//! The envelope changes as delivery goes on (recipient status, attempts): `update` writes the
//! new one to `queue/ID.env` (tmp file, fdatasync, rename), which then supersedes the embedded
//! one. A message delivered at its first attempt never gets an `.env`. `remove` unlinks the
//! `.msg` (the message is gone), then the `.env`.
//!
//! Small messages (under `SPILL` bytes) are held in memory until `commit`; larger ones are
//! written to `tmp/` as they arrive, and their commit does its file work in one blocking task.
//! Directory fsyncs are group-committed (`DirSync`): one fsync covers every rename and unlink
//! that finished before it started, so concurrent commits, updates and removals share it. The
//! removal of a delivered message (`remove_delivered`) does not wait for one: `sync_pending`
//! flushes it within 100 ms.
//!
//! Spools written by earlier versions (a bare `.msg` beside its `.env`) are read the same way:
//! the `.env` wins and readers take the first `size` bytes of the `.msg`.
//!
//! Shared segments (`segment.rs`, on unless `spool_segments: false`): a small message is not a
//! file of its own but a record appended to `queue/SEQ.seg`, many commits sharing one
//! fdatasync; it moves to a message file of its own only when its envelope changes (a
//! deferral). Message files and segments are always both read.

mod envelope;
mod segment;

pub use envelope::*;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

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
    /// The envelope as committed (embedded in the message file).
    env: Box<Envelope>,
}

impl Committed {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The envelope as committed.
    pub fn envelope(&self) -> &Envelope {
        &self.env
    }
}

#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
    /// Held for the relay's lifetime (`open`), absent for operator commands (`attach`).
    lock: Option<std::sync::Arc<std::fs::File>>,
    /// Group commit of the `queue/` directory's fsync.
    dir_sync: Arc<DirSync>,
    /// Messages held in shared segments (always read; written when `write_segments`).
    segs: Arc<segment::Segments>,
    write_segments: bool,
    /// Segment messages that may also have a file of their own: a move out whose directory
    /// fsync failed after its rename. Their removal takes the file too.
    beside: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Where a queued message's bytes are (no I/O to get one: `Spool::message`).
#[derive(Clone, Debug)]
pub enum MessageRef {
    /// A message file of its own: the message is its first `size` bytes.
    File(PathBuf),
    /// A record in a shared segment.
    Segment {
        file: Arc<std::fs::File>,
        offset: u64,
    },
}

/// A queued message, opened: reading it works even if it is removed meanwhile.
#[derive(Debug)]
pub struct OpenMessage {
    file: Arc<std::fs::File>,
    offset: u64,
}

impl MessageRef {
    /// Opens the message (blocking).
    pub fn open(&self) -> std::io::Result<OpenMessage> {
        Ok(match self {
            Self::File(p) => OpenMessage {
                file: Arc::new(std::fs::File::open(p)?),
                offset: 0,
            },
            Self::Segment { file, offset } => OpenMessage {
                file: file.clone(),
                offset: *offset,
            },
        })
    }

    /// The first `size` bytes of the message; fewer if the stored copy is short (blocking).
    pub fn read(&self, size: u64) -> std::io::Result<Vec<u8>> {
        self.open()?.read(size)
    }

    /// The message file, for a message that has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::Segment { .. } => None,
        }
    }
}

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Segment { offset, .. } => write!(f, "spool segment record at offset {offset}"),
        }
    }
}

impl OpenMessage {
    /// The first `size` bytes of the message; fewer if the stored copy is short (blocking).
    pub fn read(&self, size: u64) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        // Never more than the file holds (a corrupt envelope could claim anything).
        let there = self.file.metadata()?.len().saturating_sub(self.offset);
        let mut out = vec![0u8; usize::try_from(size.min(there)).unwrap_or(usize::MAX)];
        let mut got = 0usize;
        while got < out.len() {
            match self.file.read_at(&mut out[got..], self.offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        out.truncate(got);
        Ok(out)
    }

    /// How many of the message's `size` bytes are there (blocking).
    pub fn available(&self, size: u64) -> std::io::Result<u64> {
        let len = self.file.metadata()?.len();
        Ok(len.saturating_sub(self.offset).min(size))
    }
}

/// Messages up to this size are buffered in memory until `commit`.
const SPILL: usize = 256 * 1024;

/// The trailer after the embedded envelope: tag, 10 decimal digits (the JSON's length), `\n`.
const TRAILER_TAG: &[u8] = b"\nHGENV1 ";
const TRAILER_LEN: usize = TRAILER_TAG.len() + 10 + 1;

/// The envelope as embedded at the end of a message file.
pub(crate) fn embedded(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + TRAILER_LEN);
    out.extend_from_slice(json);
    out.extend_from_slice(TRAILER_TAG);
    out.extend_from_slice(format!("{:010}\n", json.len()).as_bytes());
    out
}

/// Whether a message file ends with the embedded-envelope trailer tag (an I/O error is an error,
/// never "no").
fn has_trailer(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    Ok(read_trailer(&mut f, len)?.is_some_and(|t| t.starts_with(TRAILER_TAG)))
}

/// The last `TRAILER_LEN` bytes of a file of `len` bytes (None if it is shorter).
fn read_trailer(f: &mut std::fs::File, len: u64) -> std::io::Result<Option<[u8; TRAILER_LEN]>> {
    if len < TRAILER_LEN as u64 {
        return Ok(None);
    }
    let mut trailer = [0u8; TRAILER_LEN];
    f.seek(SeekFrom::End(-(TRAILER_LEN as i64)))?;
    f.read_exact(&mut trailer)?;
    Ok(Some(trailer))
}

/// A temporary file name in `tmp/` no other writer uses (the relay and operator commands may
/// rewrite the same envelope at once).
fn unique_tmp(root: &Path, id: &str, ext: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    root.join("tmp")
        .join(format!("{id}.{}.{n}.{ext}", std::process::id()))
}

/// Reads the envelope embedded in a message file, checking that the trailer, the JSON and the
/// message size account for the whole file.
fn read_embedded(path: &Path) -> Result<Envelope, SpoolError> {
    let corrupt = |reason: &str| SpoolError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    let trailer = read_trailer(&mut f, len)
        .map_err(io(path))?
        .ok_or_else(|| corrupt("no embedded envelope (file too short)"))?;
    let digits = trailer
        .strip_prefix(TRAILER_TAG)
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or_else(|| corrupt("no embedded envelope (no trailer)"))?;
    let start = len
        .checked_sub(TRAILER_LEN as u64 + digits)
        .ok_or_else(|| corrupt("embedded envelope longer than the file"))?;
    let mut json = vec![0u8; digits as usize];
    f.seek(SeekFrom::Start(start))
        .and_then(|_| f.read_exact(&mut json))
        .map_err(io(path))?;
    let env = parse_envelope(&json, path)?;
    if env.size != start {
        return Err(corrupt("message size and embedded envelope disagree"));
    }
    Ok(env)
}

/// Group commit for fsyncs of one directory. A caller takes a ticket after its directory
/// change (rename, create, unlink) is done, then waits for a sync that started after that
/// ticket: either it runs one itself, covering every ticket taken so far, or it finds that a
/// sync started since covered it.
#[derive(Debug, Default)]
struct DirSync {
    requested: AtomicU64,
    completed: AtomicU64,
    running: std::sync::Mutex<()>,
    /// A change whose fsync was left to `Spool::sync_pending`.
    pending: std::sync::atomic::AtomicBool,
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
    /// (a second relay on the same spool is refused), removes leftovers of interrupted work:
    /// everything in `tmp/`, envelopes whose message was removed, and data files of an earlier
    /// version's interrupted commit. Only this start-up path deletes such files.
    pub fn open(root: &Path) -> Result<Self, SpoolError> {
        Self::open_with(root, true)
    }

    /// `open`, choosing whether new small messages go to shared segments (`spool_segments`).
    pub fn open_with(root: &Path, write_segments: bool) -> Result<Self, SpoolError> {
        Self::make_dirs(root)?;
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
        // The lock is ours: segments left empty may go.
        let segs = segment::Segments::load(&root.join("queue"), true)?;
        let spool = Self {
            root: root.to_owned(),
            lock: Some(Arc::new(lock)),
            dir_sync: Arc::default(),
            segs: Arc::new(segs),
            write_segments,
            beside: Arc::default(),
        };
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let dir = spool.queue_dir();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                // An envelope whose message is gone: a removal interrupted between its unlinks.
                Some("env") if !path.with_extension("msg").exists() => {
                    let _ = std::fs::remove_file(&path);
                }
                // A data file with neither an envelope nor an embedded one: a commit of an
                // earlier version interrupted between its two renames (never acknowledged).
                // Only a file that surely has no trailer goes; one whose embedded envelope
                // cannot be read (unknown version, I/O error) stays and is reported by scans.
                Some("msg")
                    if !path.with_extension("env").exists()
                        && matches!(has_trailer(&path), Ok(false)) =>
                {
                    let _ = std::fs::remove_file(&path);
                }
                // A retry request for a message that is gone.
                Some("retry")
                    if !path.with_extension("msg").exists()
                        && !path
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .is_some_and(|id| spool.segs.contains(id)) =>
                {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        Ok(spool)
    }

    /// Attaches to a spool without locking or cleaning it (operator commands). Safe while the
    /// relay runs: it never deletes a file the relay is writing.
    pub fn attach(root: &Path) -> Result<Self, SpoolError> {
        Self::make_dirs(root)?;
        let segs = segment::Segments::load(&root.join("queue"), false)?;
        Ok(Self {
            root: root.to_owned(),
            lock: None,
            dir_sync: Arc::default(),
            segs: Arc::new(segs),
            write_segments: false,
            beside: Arc::default(),
        })
    }

    fn make_dirs(root: &Path) -> Result<(), SpoolError> {
        for sub in ["tmp", "queue"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(())
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

    /// Whether `id` is still in the queue.
    pub fn exists(&self, id: &str) -> bool {
        is_queue_id(id) && (self.segs.contains(id) || self.msg_path(id).exists())
    }

    /// Where the message `id` is (no I/O). A message file of its own wins over a segment
    /// record (a move out of a segment interrupted halfway); both hold the same bytes.
    pub fn message(&self, id: &str) -> MessageRef {
        match self.segs.get(id) {
            Some(e) => MessageRef::Segment {
                file: e.file,
                offset: e.body_off,
            },
            None => MessageRef::File(self.msg_path(id)),
        }
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

    /// Starts receiving a message (its data file `tmp/ID.msg` is created once it outgrows the
    /// memory buffer, or at `commit`).
    pub async fn incoming(&self) -> Result<Incoming, SpoolError> {
        let id = new_queue_id();
        let path = self.root.join("tmp").join(format!("{id}.msg"));
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

    /// Loads every committed envelope. Deletes nothing itself; in the relay it first applies the
    /// tombstones operator commands wrote, which can let an emptied, sealed segment go.
    pub fn scan(&self) -> Result<(Vec<Envelope>, Vec<SpoolError>), SpoolError> {
        if self.lock.is_some() {
            // Removals by operator commands.
            self.segs.refresh_tombstones();
        }
        let dir = self.queue_dir();
        let mut envs = Vec::new();
        let mut bad = Vec::new();
        let in_segments = self.segs.envelopes();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("msg") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            match self.load(id) {
                Ok(e) => envs.push(e),
                // Removed while we looked.
                Err(SpoolError::NotFound(_)) => {}
                Err(e) => bad.push(e),
            }
        }
        let own: std::collections::HashSet<String> = envs.iter().map(|e| e.id.clone()).collect();
        envs.extend(
            in_segments
                .into_iter()
                .filter(|(id, _)| !own.contains(id))
                .map(|(_, e)| Envelope::clone(&e)),
        );
        bad.extend(self.segs.problems());
        envs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((envs, bad))
    }

    pub fn load(&self, id: &str) -> Result<Envelope, SpoolError> {
        if !is_queue_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        // The relay's own index is current (it moves messages out itself): no file to look for.
        // An operator command's index dates from `attach`, so files come first there.
        if self.lock.is_some() {
            if let Some(e) = self.segs.get(id) {
                return Ok(Envelope::clone(&e.env));
            }
        }
        let not_found = |e: &SpoolError| matches!(e, SpoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
        // A rewritten envelope wins over the one embedded at acceptance.
        match read_envelope(&self.env_path(id)) {
            Err(e) if not_found(&e) => {}
            other => return other,
        }
        match read_embedded(&self.msg_path(id)) {
            Err(e) if not_found(&e) => match self.segs.get(id) {
                Some(e) => Ok(Envelope::clone(&e.env)),
                None => Err(SpoolError::NotFound(id.to_string())),
            },
            other => other,
        }
    }

    /// Atomically replaces the envelope (tmp file, fsync, rename, fsync directory).
    pub fn update(&self, env: &Envelope) -> Result<(), SpoolError> {
        if !is_queue_id(&env.id) {
            return Err(SpoolError::NotFound(env.id.clone()));
        }
        if let Some(entry) = self.segs.get(&env.id) {
            // An operator may have deleted it meanwhile (a tombstone the relay has not read):
            // moving it out now would bring it back.
            if self.lock.is_some() && self.segs.removed_by_command(&env.id) {
                return Err(SpoolError::NotFound(env.id.clone()));
            }
            return self.move_out(env, &entry);
        }
        let tmp = unique_tmp(&self.root, &env.id, "env");
        let json = serde_json::to_vec_pretty(env).map_err(|e| SpoolError::Corrupt {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        if let Err(e) = write_synced(&tmp, &json) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let dst = self.env_path(&env.id);
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        if !self.msg_path(&env.id).exists() {
            // Removed while we wrote (an operator command): an envelope alone is no message.
            let _ = std::fs::remove_file(&dst);
            return Err(SpoolError::NotFound(env.id.clone()));
        }
        self.dir_sync.sync(&self.queue_dir())
    }

    /// Moves a message out of its segment into a message file of its own carrying `env`
    /// (written, fdatasynced, renamed, directory fsynced), then tombstones the record.
    fn move_out(&self, env: &Envelope, entry: &segment::Entry) -> Result<(), SpoolError> {
        let tmp = unique_tmp(&self.root, &env.id, "msg");
        let seg_err = |e: std::io::Error| SpoolError::Io {
            path: self.queue_dir().join(segment::seg_name(entry.seq)),
            source: e,
        };
        let size = entry.env.size;
        let mut bytes = MessageRef::Segment {
            file: entry.file.clone(),
            offset: entry.body_off,
        }
        .read(size)
        .map_err(seg_err)?;
        if bytes.len() as u64 != size {
            return Err(seg_err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment record shorter than its message",
            )));
        }
        let mut env = env.clone();
        env.size = size;
        let json = serde_json::to_vec(&env).map_err(|e| SpoolError::Corrupt {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        bytes.extend_from_slice(&embedded(&json));
        if let Err(e) = write_synced(&tmp, &bytes) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let dst = self.msg_path(&env.id);
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        if let Err(e) = self.dir_sync.sync(&self.queue_dir()) {
            // The record stays the message (the file's name may not be durable); the file goes
            // with it when it is removed.
            lock_set(&self.beside).insert(env.id.clone());
            return Err(e);
        }
        // An operator's delete since the check before the move (its tombstone, or a rescan
        // that applied it): honour it. A delete after this point finds the file and removes it.
        if self.segs.removed_by_command(&env.id) {
            let _ = std::fs::remove_file(&dst);
            self.dir_sync.pending.store(true, Ordering::SeqCst);
            return Err(SpoolError::NotFound(env.id.clone()));
        }
        // The message file wins from here on; the tombstone only lets the segment go.
        self.segs.remove(&env.id);
        lock_set(&self.beside).remove(&env.id);
        Ok(())
    }

    /// Removes a message: its data file first (the message is gone), then a rewritten
    /// envelope and a retry marker if any; a crash in between leaves orphans that `open`
    /// deletes. The directory is fsynced before returning.
    pub fn remove(&self, id: &str) -> Result<(), SpoolError> {
        self.unlink(id)?;
        self.segs.sync_tombstones()?;
        self.dir_sync.sync(&self.queue_dir())
    }

    /// Removes a delivered message like `remove`, but leaves the directory fsync to the next
    /// `sync_pending` (the relay runs it every 100 ms): a crash in between can bring the
    /// message back and deliver it again — a duplicate, never a loss — and the delivery path
    /// does not wait for a disk flush per message.
    pub fn remove_delivered(&self, id: &str) -> Result<(), SpoolError> {
        self.unlink(id)?;
        self.dir_sync.pending.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn unlink(&self, id: &str) -> Result<(), SpoolError> {
        if !is_queue_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        // Operator commands only record the removal: the relay applies it at its next scan.
        let in_segment = if self.lock.is_some() {
            if self.segs.remove(id) {
                // The relay's index is current: a message in it has no file of its own, unless
                // a move out failed halfway. A retry marker left behind names a message that
                // is gone (dropped at start).
                if lock_set(&self.beside).remove(id) {
                    let _ = std::fs::remove_file(self.msg_path(id));
                }
                return Ok(());
            }
            false
        } else {
            self.segs.tombstone_from_command(id)
        };
        let msg = self.msg_path(id);
        match std::fs::remove_file(&msg) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && in_segment => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io(&msg)(e)),
        }
        let _ = std::fs::remove_file(self.env_path(id));
        let _ = std::fs::remove_file(self.queue_dir().join(format!("{id}.retry")));
        Ok(())
    }

    /// Asks for `id` to be tried at once: a marker file `queue/ID.retry` the relay consumes at
    /// its next scan (operator commands never rewrite an envelope the relay may be saving).
    pub fn request_retry(&self, id: &str) -> Result<(), SpoolError> {
        if !self.exists(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let marker = self.queue_dir().join(format!("{id}.retry"));
        std::fs::write(&marker, b"").map_err(io(&marker))
    }

    /// The ids whose retry was requested, removing their markers (the relay's scans only).
    pub fn take_retry_requests(&self) -> Vec<String> {
        let dir = self.queue_dir();
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("retry") {
                continue;
            }
            if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                if std::fs::remove_file(&path).is_ok() && is_queue_id(id) {
                    ids.push(id.to_string());
                }
            }
        }
        ids
    }

    /// Fsyncs the queue directory if a removal left it to us. Blocking.
    pub fn sync_pending(&self) -> Result<(), SpoolError> {
        self.segs.seal_if_old();
        self.segs.sync_tombstones()?;
        if self.segs.dir_changed.swap(false, Ordering::SeqCst) {
            self.dir_sync.pending.store(true, Ordering::SeqCst);
        }
        if self.dir_sync.pending.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.dir_sync.sync(&self.queue_dir()) {
                self.dir_sync.pending.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(())
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
    /// `tmp/ID.msg`.
    path: PathBuf,
    /// Bytes not yet in the data file.
    buf: Vec<u8>,
    /// The data file, once the message outgrew `SPILL`.
    file: Option<std::fs::File>,
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
            // The buffer itself goes to the blocking write and comes back emptied: no copy,
            // no new allocation.
            let file = self.file.take();
            let buf = std::mem::take(&mut self.buf);
            let path = self.path.clone();
            let (file, buf) = tokio::task::spawn_blocking(
                move || -> std::io::Result<(std::fs::File, Vec<u8>)> {
                    let mut f = match file {
                        Some(f) => f,
                        None => std::fs::File::create(&path)?,
                    };
                    f.write_all(&buf)?;
                    let mut buf = buf;
                    buf.clear();
                    Ok((f, buf))
                },
            )
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(io(&self.path))?;
            self.file = Some(file);
            self.buf = buf;
        }
        Ok(())
    }

    /// Makes the message durable and visible to the queue. Returns only after the message
    /// file (data and embedded envelope) is fdatasynced, renamed into `queue/` and the
    /// directory fsynced (RFC 5321 §6.1: no mail lost once `250` is sent).
    pub async fn commit(mut self, mut env: Envelope) -> Result<Committed, SpoolError> {
        env.id = self.id.clone();
        env.size = self.written;
        let file = self.file.take();
        let spool = self.spool.clone();
        let id = self.id.clone();
        let tmp = self.path.clone();
        let mut rest = std::mem::take(&mut self.buf);
        let json = serde_json::to_vec(&env).map_err(|e| SpoolError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if file.is_none() && spool.write_segments {
            spool.segs.commit(&id, &rest, &env, &json).await?;
            self.done = true;
            return Ok(Committed {
                id: self.id.clone(),
                env: Box::new(env),
            });
        }
        rest.extend_from_slice(&embedded(&json));
        let result = tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            let mut f = match file {
                Some(f) => f,
                None => std::fs::File::create(&tmp).map_err(io(&tmp))?,
            };
            f.write_all(&rest).map_err(io(&tmp))?;
            f.sync_data().map_err(io(&tmp))?;
            drop(f);
            let dst = spool.msg_path(&id);
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            if let Err(e) = spool.dir_sync.sync(&spool.queue_dir()) {
                // Not durable: the client gets a 4xx, so the message must not stay queued.
                let _ = std::fs::remove_file(&dst);
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
            env: Box::new(env),
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

fn lock_set<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_envelope(path: &Path) -> Result<Envelope, SpoolError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    parse_envelope(&bytes, path)
}

fn parse_envelope(bytes: &[u8], path: &Path) -> Result<Envelope, SpoolError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| SpoolError::Corrupt {
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
