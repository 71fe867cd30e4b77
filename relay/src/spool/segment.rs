//! Shared append-only segments: many small messages, one fdatasync.
//!
//! A segment is `queue/SEQ.seg` (SEQ: 16 hex digits). Each accepted message is one record,
//! appended by whichever session commits it:
//!
//! ```text
//! "HGR1" | id length u16 | envelope length u32 | message length u64 | checksum (16 bytes)
//!        | id | message bytes | envelope JSON
//! ```
//!
//! (integers little-endian; the checksum is the first 16 bytes of SHA-256 over the 18 header
//! bytes before it, the id, the message and the envelope). Commits are group-committed: a
//! caller appends its record and takes a ticket, then waits (a watch channel, no thread held)
//! for an fdatasync that started after its write; the sync thread runs one for every record
//! appended so far (if that thread cannot start, committers sync themselves, one sync at a
//! time). A record is acknowledged only
//! after an fdatasync that covers it returned success, and records are appended in order, so
//! after a crash every acknowledged record sits before any torn one.
//!
//! A message leaves its segment by a tombstone: its id on a line of `queue/SEQ.done` (appended,
//! fdatasynced by `sync_pending` within 100 ms — a lost tombstone means a duplicate delivery,
//! never a loss). Delivered messages get one; a message whose envelope changes (a deferral)
//! moves out first: it is written as a message file of its own (`queue/ID.msg`, durably), then
//! tombstoned. Where both exist (a crash in between) the message file wins. So a segment only
//! holds messages on their first attempt, and a sealed segment (full, old, or from before a
//! restart) with no live record left is deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use sha2::Digest;

use super::{io, is_queue_id, parse_envelope, Envelope, SpoolError};

const MAGIC: &[u8; 4] = b"HGR1";
const HEADER: usize = 4 + 2 + 4 + 8 + 16;
/// A segment takes no new record once it is this large…
#[cfg(not(test))]
const SEAL_SIZE: u64 = 32 * 1024 * 1024;
/// (Small in tests, so that rotation happens.)
#[cfg(test)]
const SEAL_SIZE: u64 = 64 * 1024;
/// …or this old.
const SEAL_AGE: Duration = Duration::from_secs(300);
/// Records larger than this are not ours (we write messages up to the spill size).
const MAX_RECORD: u64 = 64 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn checksum(head: &[u8], id: &[u8], body: &[u8], env: &[u8]) -> [u8; 16] {
    let mut h = sha2::Sha256::new();
    h.update(head);
    h.update(id);
    h.update(body);
    h.update(env);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// One record, ready to append.
pub(super) fn record(id: &str, body: &[u8], env_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + id.len() + body.len() + env_json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(&(env_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let sum = checksum(&out[..18], id.as_bytes(), body, env_json);
    out.extend_from_slice(&sum);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(env_json);
    out
}

/// A record found in a segment file.
#[derive(Debug)]
pub(super) struct Parsed {
    pub id: String,
    pub body_off: u64,
    pub env: Envelope,
}

/// What a segment file holds: its valid records, and where reading stopped early.
#[derive(Debug, Default)]
pub(super) struct ParsedSegment {
    pub records: Vec<Parsed>,
    /// Bytes after the last valid record that are not a record (a torn append of a commit
    /// that was never acknowledged, or damage).
    pub junk_at: Option<u64>,
    /// Records that were whole and checksummed but unusable (envelope unreadable).
    pub bad: Vec<SpoolError>,
}

/// Reads the records of one segment file, in order, up to the first one that is not whole.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> ParsedSegment {
    let mut out = ParsedSegment::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(r) = parse_one(&bytes[at..]) else {
            out.junk_at = Some(at as u64);
            break;
        };
        let (id, body_len, env_json, len) = r;
        let body_off = (at + HEADER + id.len()) as u64;
        at += len;
        match parse_envelope(env_json, path) {
            Ok(env) if env.id == id && env.size == body_len => out.records.push(Parsed {
                id: id.to_string(),
                body_off,
                env,
            }),
            Ok(_) => out.bad.push(SpoolError::Corrupt {
                path: path.to_owned(),
                reason: format!("record {id}: envelope does not match the record"),
            }),
            Err(e) => out.bad.push(e),
        }
    }
    out
}

/// One record at the start of `b`: (id, message length, envelope JSON, record length).
fn parse_one(b: &[u8]) -> Option<(&str, u64, &[u8], usize)> {
    if b.len() < HEADER || &b[..4] != MAGIC {
        return None;
    }
    let id_len = u16::from_le_bytes(b[4..6].try_into().ok()?) as usize;
    let env_len = u32::from_le_bytes(b[6..10].try_into().ok()?) as u64;
    let body_len = u64::from_le_bytes(b[10..18].try_into().ok()?);
    let total = (HEADER as u64)
        .checked_add(id_len as u64)?
        .checked_add(env_len)?
        .checked_add(body_len)?;
    if total > MAX_RECORD || total > b.len() as u64 {
        return None;
    }
    let total = total as usize;
    let id_end = HEADER + id_len;
    let body_end = id_end + body_len as usize;
    let (id, body, env) = (
        &b[HEADER..id_end],
        &b[id_end..body_end],
        &b[body_end..total],
    );
    if checksum(&b[..18], id, body, env) != b[18..HEADER] {
        return None;
    }
    let id = std::str::from_utf8(id).ok().filter(|s| is_queue_id(s))?;
    Some((id, body_len, env, total))
}

pub(super) fn seg_name(seq: u64) -> String {
    format!("{seq:016X}.seg")
}

fn done_name(seq: u64) -> String {
    format!("{seq:016X}.done")
}

/// The sequence number of a segment or tombstone file name.
pub(super) fn seq_of(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    let ours = stem.len() == 16
        && stem
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    ours.then(|| u64::from_str_radix(stem, 16).ok()).flatten()
}

/// A message held in a segment.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub seq: u64,
    pub body_off: u64,
    pub env: Arc<Envelope>,
    pub file: Arc<File>,
}

#[derive(Debug)]
struct Seg {
    /// Records appended (committing or committed) and not yet tombstoned.
    live: usize,
    sealed: bool,
    /// `SEQ.done`, opened for appending at the first tombstone.
    done: Option<Arc<File>>,
    done_dirty: bool,
    /// How far the relay has read `SEQ.done` (tombstones written by operator commands).
    done_read: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    segs: BTreeMap<u64, Seg>,
    /// Segments that end in bytes that are not a record: kept (moved to `corrupt/`) when they
    /// empty, never deleted. After a crash that is usually a torn, unacknowledged append; it
    /// could also be damage, and reading past it is never safe (a message's bytes could pass
    /// for a record).
    damaged: HashSet<u64>,
}

#[derive(Debug)]
struct Active {
    seq: u64,
    file: Arc<File>,
    len: u64,
    opened: Instant,
}

#[derive(Debug, Default)]
struct Writer {
    active: Option<Active>,
    next_seq: u64,
    /// Tickets handed out so far (one per append).
    ticket: u64,
    /// Files written since the last fdatasync snapshot.
    unsynced: Vec<Arc<File>>,
}

/// The segments of one spool.
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    writer: Mutex<Writer>,
    index: Mutex<Index>,
    /// Tickets whose fdatasync failed: (after, up to and including].
    failed: Mutex<Vec<(u64, u64)>>,
    /// Tickets covered by a finished fdatasync (successful or in `failed`).
    completed: AtomicU64,
    /// The same, for committers to wait on without a thread each.
    completed_tx: tokio::sync::watch::Sender<u64>,
    /// The highest ticket a committer waits for; the syncer thread sleeps on `wake`.
    wanted: Mutex<u64>,
    wake: Condvar,
    /// Whether the syncer thread runs (if it could not start, committers sync themselves).
    syncer: OnceLock<bool>,
    /// Held for the whole of one sync.
    sync_lock: Mutex<()>,
    /// Held by a test to hold the syncer back (before its snapshot, after it).
    #[cfg(test)]
    gate: Mutex<()>,
    #[cfg(test)]
    gate_after_snapshot: Mutex<()>,
    /// fdatasyncs of segments run so far.
    #[cfg(test)]
    syncs_run: AtomicU64,
    /// Set when a file was created or removed in `dir` (its fsync is the caller's business).
    pub dir_changed: std::sync::atomic::AtomicBool,
    /// Unusable records found at load, as text.
    problems: Vec<String>,
}

impl Segments {
    /// Loads every segment under `dir` (all sealed: new records go to a new segment). Records
    /// whose id also has a message file of its own, or a tombstone, are not live. With `clean`
    /// (the relay), segments with nothing live and tombstone files without a segment are
    /// deleted; operator commands (`clean` false) never delete.
    pub fn load(dir: &Path, clean: bool) -> Result<Self, SpoolError> {
        let mut index = Index::default();
        let mut problems = Vec::new();
        let mut seqs = Vec::new();
        let mut dones = Vec::new();
        let mut own_files: HashSet<String> = HashSet::new();
        let mut late_tombstones: Vec<(u64, Vec<String>)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = seq_of(name, "seg") {
                seqs.push(seq);
            } else if let Some(seq) = seq_of(name, "done") {
                dones.push(seq);
            } else if let Some(id) = name.strip_suffix(".msg") {
                own_files.insert(id.to_string());
            }
        }
        seqs.sort_unstable();
        let mut next_seq = 1;
        for &seq in &seqs {
            next_seq = next_seq.max(seq.saturating_add(1));
            let path = dir.join(seg_name(seq));
            // Read through the descriptor the index keeps. A running relay may delete an
            // emptied segment between the listing and here (operator commands): skip it.
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io(&path))?;
            let parsed = parse(&path, &bytes);
            if let Some(at) = parsed.junk_at {
                tracing::warn!(segment = %path.display(), offset = at, bytes = bytes.len() as u64 - at,
                    "segment ends in bytes that are not a whole record (usually an append torn by a crash, never acknowledged); the segment goes to corrupt/ once its records are done");
                index.damaged.insert(seq);
            }
            problems.extend(parsed.bad.into_iter().map(|e| e.to_string()));
            let done_path = dir.join(done_name(seq));
            let done_bytes = match std::fs::read(&done_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io(&done_path)(e)),
            };
            let (gone, done_read) = tombstones(&done_bytes);
            let file = Arc::new(file);
            let mut live = 0;
            let mut shadowed = Vec::new();
            for r in parsed.records {
                if gone.contains(r.id.as_str()) {
                    continue;
                }
                if own_files.contains(&r.id) {
                    // A move out interrupted before its tombstone: the file wins, and the
                    // record is tombstoned now, or it would come back once the file is gone.
                    shadowed.push(r.id);
                    continue;
                }
                live += 1;
                index.entries.insert(
                    r.id,
                    Entry {
                        seq,
                        body_off: r.body_off,
                        env: Arc::new(r.env),
                        file: file.clone(),
                    },
                );
            }
            index.segs.insert(
                seq,
                Seg {
                    live,
                    sealed: true,
                    done: None,
                    done_dirty: false,
                    done_read,
                },
            );
            if clean {
                late_tombstones.push((seq, shadowed));
            }
        }
        let segs = Self {
            dir: dir.to_owned(),
            writer: Mutex::new(Writer {
                next_seq,
                ..Writer::default()
            }),
            index: Mutex::new(index),
            failed: Mutex::default(),
            completed: AtomicU64::new(0),
            completed_tx: tokio::sync::watch::channel(0).0,
            wanted: Mutex::new(0),
            wake: Condvar::new(),
            syncer: OnceLock::new(),
            sync_lock: Mutex::new(()),
            #[cfg(test)]
            gate: Mutex::new(()),
            #[cfg(test)]
            gate_after_snapshot: Mutex::new(()),
            #[cfg(test)]
            syncs_run: AtomicU64::new(0),
            dir_changed: Default::default(),
            problems,
        };
        if clean {
            {
                let mut ix = lock(&segs.index);
                for (seq, ids) in late_tombstones {
                    for id in ids {
                        segs.write_tombstone(&mut ix, seq, &id);
                    }
                }
            }
            for seq in dones {
                if !seqs.contains(&seq) {
                    let _ = std::fs::remove_file(dir.join(done_name(seq)));
                    segs.dir_changed.store(true, Ordering::SeqCst);
                }
            }
            let mut ix = lock(&segs.index);
            let empty: Vec<u64> = ix
                .segs
                .iter()
                .filter(|(_, s)| s.live == 0)
                .map(|(&q, _)| q)
                .collect();
            for seq in empty {
                segs.delete(&mut ix, seq);
            }
        }
        Ok(segs)
    }

    /// Records found whole but unusable when the segments were loaded.
    pub fn problems(&self) -> Vec<SpoolError> {
        self.problems
            .iter()
            .map(|p| SpoolError::Corrupt {
                path: self.dir.clone(),
                reason: p.clone(),
            })
            .collect()
    }

    /// Appends a record and makes it durable. On success the message is in the index.
    ///
    /// The append runs on the caller's thread (a write into the page cache; opening a new
    /// segment, once per 32 MiB or 5 minutes, also fsyncs the directory); the wait for the
    /// fdatasync holds no thread: the syncer thread runs it for every waiting record at once.
    pub async fn commit(
        self: &Arc<Self>,
        id: &str,
        body: &[u8],
        env: &Envelope,
        env_json: &[u8],
    ) -> Result<(), SpoolError> {
        let rec = record(id, body, env_json);
        let (ticket, seq, off, file) = self.append(&rec)?;
        let body_off = off + (HEADER + id.len()) as u64;
        let mut done = self.completed_tx.subscribe();
        self.request_sync(ticket);
        // The sender lives in `self`, which the caller holds: this ends only at the ticket.
        let _ = done.wait_for(|&c| c >= ticket).await;
        let failed = lock(&self.failed)
            .iter()
            .any(|&(lo, hi)| ticket > lo && ticket <= hi);
        if failed {
            // Not acknowledged: the client gets a 4xx. The record may be on disk after all;
            // its tombstone keeps a restart from delivering it (a lost one: a duplicate).
            let mut ix = lock(&self.index);
            self.write_tombstone(&mut ix, seq, id);
            self.release(&mut ix, seq);
            return Err(SpoolError::Io {
                path: self.dir.join(seg_name(seq)),
                source: std::io::Error::other("fdatasync of the segment failed"),
            });
        }
        lock(&self.index).entries.insert(
            id.to_string(),
            Entry {
                seq,
                body_off,
                env: Arc::new(env.clone()),
                file,
            },
        );
        Ok(())
    }

    /// Asks the syncer thread (started at the first commit) to cover ticket `t`.
    fn request_sync(self: &Arc<Self>, t: u64) {
        let threaded = *self.syncer.get_or_init(|| {
            let weak = Arc::downgrade(self);
            match std::thread::Builder::new()
                .name("hopguard-spool-sync".into())
                .spawn(move || syncer(weak))
            {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the spool's sync thread; committing without it");
                    false
                }
            }
        });
        if !threaded {
            // Slower (an fdatasync on the caller's thread), never stuck. One sync at a time:
            // a ticket counts as covered only once the sync that snapshotted it has returned.
            let _one = lock(&self.sync_lock);
            if self.completed.load(Ordering::SeqCst) < t {
                self.sync_locked();
            }
            return;
        }
        let mut wanted = lock(&self.wanted);
        *wanted = (*wanted).max(t);
        self.wake.notify_one();
    }

    /// One fdatasync of every segment written since the last one, covering every ticket handed
    /// out before it started.
    fn sync_once(&self) {
        let _one = lock(&self.sync_lock);
        self.sync_locked();
    }

    /// `sync_once`, `sync_lock` held: `completed` may only advance past a ticket once the
    /// fdatasync whose snapshot holds it has returned, so syncs never overlap.
    fn sync_locked(&self) {
        #[cfg(test)]
        let _gate = lock(&self.gate);
        let (covered, files) = {
            let mut w = lock(&self.writer);
            (w.ticket, std::mem::take(&mut w.unsynced))
        };
        #[cfg(test)]
        drop(lock(&self.gate_after_snapshot));
        let before = self.completed.load(Ordering::SeqCst);
        #[cfg(test)]
        self.syncs_run.fetch_add(1, Ordering::Relaxed);
        let mut failed = None;
        for f in &files {
            if let Err(e) = f.sync_data() {
                failed = Some(e);
            }
        }
        let mut covered = covered;
        if let Some(e) = failed {
            // Linux reports a writeback error once: a later fdatasync of the same file may
            // succeed without the lost pages. So every record appended so far is refused —
            // also those appended while this sync ran, which a reader could never reach past
            // the hole — and nothing more goes into the segment (sealed under the same lock).
            let mut w = lock(&self.writer);
            covered = covered.max(w.ticket);
            lock(&self.failed).push((before, covered));
            self.seal_active(&mut w);
            tracing::error!(error = %e, "fdatasync of a spool segment failed");
        }
        self.completed.store(covered, Ordering::SeqCst);
        self.completed_tx.send_replace(covered);
    }

    /// Appends `rec` to the active segment (opening one if needed): (ticket, seq, offset, file).
    fn append(&self, rec: &[u8]) -> Result<(u64, u64, u64, Arc<File>), SpoolError> {
        let mut w = lock(&self.writer);
        let full = w.active.as_ref().is_some_and(|a| {
            a.len > 0 && (a.len + rec.len() as u64 > SEAL_SIZE || a.opened.elapsed() >= SEAL_AGE)
        });
        if full {
            self.seal_active(&mut w);
        }
        if w.active.is_none() {
            let seq = w.next_seq;
            w.next_seq += 1;
            let path = self.dir.join(seg_name(seq));
            let file = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .read(true)
                .open(&path)
                .map_err(io(&path))?;
            // The new name must be durable before any record in it is acknowledged.
            if let Err(e) = super::fsync_dir(&self.dir) {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            let file = Arc::new(file);
            lock(&self.index).segs.insert(
                seq,
                Seg {
                    live: 0,
                    sealed: false,
                    done: None,
                    done_dirty: false,
                    done_read: 0,
                },
            );
            w.active = Some(Active {
                seq,
                file,
                len: 0,
                opened: Instant::now(),
            });
        }
        let Some(a) = w.active.as_mut() else {
            return Err(SpoolError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("no active segment"),
            });
        };
        let (seq, off, file) = (a.seq, a.len, a.file.clone());
        if let Err(e) = file.write_all_at(rec, off) {
            // Whatever part of it landed is junk at the end: nothing more goes into this file.
            let path = self.dir.join(seg_name(seq));
            self.seal_active(&mut w);
            return Err(io(&path)(e));
        }
        a.len += rec.len() as u64;
        // Counted live under the writer lock, before anyone can seal the segment: an emptied,
        // sealed segment is never deleted under a record being committed.
        if let Some(s) = lock(&self.index).segs.get_mut(&seq) {
            s.live += 1;
        }
        if !w.unsynced.last().is_some_and(|f| Arc::ptr_eq(f, &file)) {
            w.unsynced.push(file.clone());
        }
        w.ticket += 1;
        Ok((w.ticket, seq, off, file))
    }

    /// Stops appending to the active segment; deletes it if nothing in it is live.
    fn seal_active(&self, w: &mut Writer) {
        if let Some(a) = w.active.take() {
            let mut ix = lock(&self.index);
            if let Some(s) = ix.segs.get_mut(&a.seq) {
                s.sealed = true;
                if s.live == 0 {
                    self.delete(&mut ix, a.seq);
                }
            }
        }
    }

    /// Seals the active segment if it is old (run periodically, so an idle relay's last segment
    /// goes once its messages have).
    pub fn seal_if_old(&self) {
        let mut w = lock(&self.writer);
        if w.active
            .as_ref()
            .is_some_and(|a| a.opened.elapsed() >= SEAL_AGE)
        {
            self.seal_active(&mut w);
        }
    }

    /// The message `id`, if a segment holds it.
    pub fn get(&self, id: &str) -> Option<Entry> {
        lock(&self.index).entries.get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        lock(&self.index).entries.contains_key(id)
    }

    /// Every live message's envelope.
    pub fn envelopes(&self) -> Vec<(String, Arc<Envelope>)> {
        lock(&self.index)
            .entries
            .iter()
            .map(|(id, e)| (id.clone(), e.env.clone()))
            .collect()
    }

    /// Takes `id` out of its segment (a tombstone). False if no segment holds it.
    pub fn remove(&self, id: &str) -> bool {
        let mut ix = lock(&self.index);
        let Some(e) = ix.entries.remove(id) else {
            return false;
        };
        self.write_tombstone(&mut ix, e.seq, id);
        self.release(&mut ix, e.seq);
        true
    }

    fn write_tombstone(&self, ix: &mut Index, seq: u64, id: &str) {
        let Some(s) = ix.segs.get_mut(&seq) else {
            return;
        };
        if s.done.is_none() {
            let path = self.dir.join(done_name(seq));
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => {
                    s.done = Some(Arc::new(f));
                    self.dir_changed.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    // The message is gone from the index; a restart may deliver it again.
                    tracing::error!(error = %e, file = %path.display(), "cannot record a delivered message's removal");
                    return;
                }
            }
        }
        if let Some(f) = &s.done {
            let mut line = Vec::with_capacity(id.len() + 1);
            line.extend_from_slice(id.as_bytes());
            line.push(b'\n');
            match (&**f).write_all(&line) {
                Ok(()) => s.done_dirty = true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot record a delivered message's removal")
                }
            }
        }
    }

    /// One live record less in `seq`; a sealed segment left empty is deleted.
    fn release(&self, ix: &mut Index, seq: u64) {
        let Some(s) = ix.segs.get_mut(&seq) else {
            return;
        };
        s.live = s.live.saturating_sub(1);
        if s.sealed && s.live == 0 {
            self.delete(ix, seq);
        }
    }

    /// Unlinks a segment, then its tombstones (a crash in between: `load` drops the orphan).
    /// A damaged segment is moved to `corrupt/` instead, for the operator to look at.
    fn delete(&self, ix: &mut Index, seq: u64) {
        ix.segs.remove(&seq);
        let path = self.dir.join(seg_name(seq));
        if ix.damaged.remove(&seq) {
            let corrupt = self.dir.with_file_name("corrupt");
            // Sequence numbers can come again after a restart: never rename over an earlier one.
            let target = (0..1000)
                .map(|n| match n {
                    0 => corrupt.join(seg_name(seq)),
                    n => corrupt.join(format!("{}.{n}", seg_name(seq))),
                })
                .find(|p| !p.exists())
                .unwrap_or_else(|| {
                    corrupt.join(format!("{}.{}", seg_name(seq), std::process::id()))
                });
            let moved =
                std::fs::create_dir_all(&corrupt).and_then(|()| std::fs::rename(&path, &target));
            match moved {
                Ok(()) => {
                    tracing::warn!(segment = %path.display(), to = %corrupt.display(), "damaged spool segment set aside")
                }
                Err(e) => {
                    tracing::error!(segment = %path.display(), error = %e, "cannot set a damaged spool segment aside; left in place");
                    return;
                }
            }
        } else {
            let _ = std::fs::remove_file(&path);
        }
        let _ = std::fs::remove_file(self.dir.join(done_name(seq)));
        self.dir_changed.store(true, Ordering::SeqCst);
    }

    /// Fdatasyncs tombstone files written since the last call.
    pub fn sync_tombstones(&self) -> Result<(), SpoolError> {
        let files: Vec<(u64, Arc<File>)> = {
            let mut ix = lock(&self.index);
            ix.segs
                .iter_mut()
                .filter_map(|(&seq, s)| {
                    std::mem::take(&mut s.done_dirty)
                        .then(|| s.done.clone().map(|f| (seq, f)))
                        .flatten()
                })
                .collect()
        };
        let mut result = Ok(());
        for (seq, f) in files {
            if let Err(e) = f.sync_data() {
                // Tried again at the next call.
                if let Some(s) = lock(&self.index).segs.get_mut(&seq) {
                    s.done_dirty = true;
                }
                result = Err(io(&self.dir.join(done_name(seq)))(e));
            }
        }
        result
    }

    /// Applies tombstones other processes (operator commands) appended since the last call.
    pub fn refresh_tombstones(&self) {
        let mut ix = lock(&self.index);
        let seqs: Vec<u64> = ix.segs.keys().copied().collect();
        for seq in seqs {
            let path = self.dir.join(done_name(seq));
            let Ok(f) = File::open(&path) else { continue };
            let Some(s) = ix.segs.get(&seq) else { continue };
            let from = s.done_read;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len <= from {
                continue;
            }
            let mut buf = vec![0u8; (len - from) as usize];
            if f.read_exact_at(&mut buf, from).is_err() {
                continue;
            }
            let (ids, consumed) = tombstones(&buf);
            if let Some(s) = ix.segs.get_mut(&seq) {
                s.done_read = from + consumed;
            }
            for id in ids {
                if ix.entries.get(id).is_some_and(|e| e.seq == seq) {
                    ix.entries.remove(id);
                    self.release(&mut ix, seq);
                }
            }
        }
    }

    /// Whether an operator command tombstoned `id` since the relay last looked (reads the new
    /// lines of its segment's `.done`); if so, the relay's index forgets it too.
    pub fn removed_by_command(&self, id: &str) -> bool {
        self.refresh_tombstones();
        !self.contains(id)
    }

    /// Appends a tombstone for `id` from an operator command (no index of the relay to update:
    /// the relay reads it at its next scan).
    pub fn tombstone_from_command(&self, id: &str) -> bool {
        let mut ix = lock(&self.index);
        let Some(e) = ix.entries.remove(id) else {
            return false;
        };
        self.write_tombstone(&mut ix, e.seq, id);
        if let Some(s) = ix.segs.get_mut(&e.seq) {
            s.live = s.live.saturating_sub(1);
        }
        true
    }
}

/// The sync thread: sleeps until a committer waits, then syncs. Ends once the spool is gone.
fn syncer(weak: Weak<Segments>) {
    loop {
        let Some(segs) = weak.upgrade() else { return };
        let due = {
            let wanted = lock(&segs.wanted);
            let (wanted, _) = segs
                .wake
                .wait_timeout_while(wanted, Duration::from_secs(1), |w| {
                    *w <= segs.completed.load(Ordering::SeqCst)
                })
                .unwrap_or_else(|p| p.into_inner());
            *wanted > segs.completed.load(Ordering::SeqCst)
        };
        if due {
            segs.sync_once();
        }
    }
}

/// The ids in a tombstone file's bytes (whole lines only) and how many bytes they take.
fn tombstones(bytes: &[u8]) -> (HashSet<&str>, u64) {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let ids = bytes[..end]
        .split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| is_queue_id(l))
        .collect();
    (ids, end as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str, size: u64) -> Envelope {
        let mut e: Envelope = serde_json::from_value(serde_json::json!({
            "version": super::super::ENVELOPE_VERSION, "id": id, "node_id": "n", "received_at": 1,
            "received_ms": 0, "client_ip": "127.0.0.1", "helo": "c", "peer": null, "tls": null,
            "mail_from": "a@b.test", "smtputf8": false, "requiretls": false, "ret": null,
            "envid": null, "size": size, "recipients": [], "attempts": 0, "next_attempt": 1,
            "is_bounce": false
        }))
        .unwrap();
        e.size = size;
        e
    }

    async fn commit(segs: &Arc<Segments>, id: &str, body: &[u8]) -> Result<(), SpoolError> {
        let e = env(id, body.len() as u64);
        segs.commit(id, body, &e, &serde_json::to_vec(&e).unwrap())
            .await
    }

    // The gate is held across awaits on purpose: it is what holds the sync thread back.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_one_fdatasync() {
        let d = tempfile::tempdir().unwrap();
        let segs = Arc::new(Segments::load(d.path(), true).unwrap());
        // Hold the syncer back so every commit has appended before any sync starts.
        let gate = lock(&segs.gate);
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let s = segs.clone();
                tokio::spawn(async move { commit(&s, &format!("{:017X}", i + 1), b"body").await })
            })
            .collect();
        while lock(&segs.writer).ticket < 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            segs.envelopes().is_empty(),
            "nothing is visible before its sync"
        );
        drop(gate);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(segs.syncs_run.load(Ordering::SeqCst), 1);
        assert_eq!(segs.envelopes().len(), 10);
        // A later commit alone gets its own.
        commit(&segs, "0000000000000000B", b"x").await.unwrap();
        assert_eq!(segs.syncs_run.load(Ordering::SeqCst), 2);
        // Dropping the spool's segments ends the sync thread (it holds only a weak reference).
        let weak = Arc::downgrade(&segs);
        drop(segs);
        for _ in 0..300 {
            if weak.upgrade().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the sync thread keeps the segments alive");
    }

    #[test]
    fn records_parse_back_and_a_torn_or_altered_one_ends_the_segment() {
        let a = env("0000000000000000A", 3);
        let b = env("0000000000000000B", 2);
        let mut bytes = record(&a.id, b"aaa", &serde_json::to_vec(&a).unwrap());
        let first = bytes.len();
        bytes.extend(record(&b.id, b"bb", &serde_json::to_vec(&b).unwrap()));
        let p = parse(Path::new("x.seg"), &bytes);
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.junk_at, None);
        assert_eq!(&bytes[p.records[1].body_off as usize..][..2], b"bb");
        // Torn: the second record cut short.
        let p = parse(Path::new("x.seg"), &bytes[..bytes.len() - 1]);
        assert_eq!((p.records.len(), p.junk_at), (1, Some(first as u64)));
        // Altered: one byte of the second message.
        let mut bad = bytes.clone();
        bad[p.junk_at.unwrap() as usize + HEADER + 17] ^= 1;
        let p = parse(Path::new("x.seg"), &bad);
        assert_eq!((p.records.len(), p.junk_at), (1, Some(first as u64)));
        // A length field claiming more than there is.
        let mut long = bytes.clone();
        long[first + 10..first + 18].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(Path::new("x.seg"), &long).records.len(), 1);
        // A whole record whose envelope names another message is reported, not loaded.
        let other = record(&a.id, b"bb", &serde_json::to_vec(&b).unwrap());
        let p = parse(Path::new("x.seg"), &other);
        assert_eq!((p.records.len(), p.bad.len()), (0, 1));
    }

    /// A descriptor whose fdatasync fails (EINVAL), standing in for a writeback error.
    fn unsyncable() -> Arc<File> {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Arc::new(File::from(std::os::fd::OwnedFd::from(a)))
    }

    // The gates are held across awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_fdatasync_refuses_every_record_appended_before_it_ended() {
        let d = tempfile::tempdir().unwrap();
        let segs = Arc::new(Segments::load(d.path(), true).unwrap());
        commit(&segs, "0000000000000000A", b"before").await.unwrap();
        let first = lock(&segs.writer).active.as_ref().unwrap().seq;
        let gate = lock(&segs.gate);
        let s = segs.clone();
        let b = tokio::spawn(async move { commit(&s, "0000000000000000B", b"b").await });
        while lock(&segs.writer).ticket < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lock(&segs.writer).unsynced.insert(0, unsyncable());
        // The syncer takes its snapshot (A's and B's segment, the failing file) and stops.
        let after = lock(&segs.gate_after_snapshot);
        drop(gate);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // C is appended while that sync runs (same segment, after the snapshot).
        let s = segs.clone();
        let c = tokio::spawn(async move { commit(&s, "0000000000000000C", b"c").await });
        while lock(&segs.writer).ticket < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(after);
        assert!(b.await.unwrap().is_err(), "B refused");
        assert!(
            c.await.unwrap().is_err(),
            "C refused: nothing is acknowledged behind a hole"
        );
        assert!(
            lock(&segs.writer).active.is_none(),
            "the segment takes nothing more"
        );
        commit(&segs, "0000000000000000D", b"d").await.unwrap();
        let d_seq = segs.get("0000000000000000D").unwrap().seq;
        assert_ne!(d_seq, first, "a new segment");
        segs.sync_tombstones().unwrap();
        drop(segs);
        let segs = Segments::load(d.path(), true).unwrap();
        let mut ids: Vec<String> = segs.envelopes().into_iter().map(|(id, _)| id).collect();
        ids.sort();
        assert_eq!(ids, ["0000000000000000A", "0000000000000000D"]);
    }

    // The gate is held across awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_sync_thread_nothing_is_acknowledged_before_its_fdatasync() {
        let d = tempfile::tempdir().unwrap();
        let segs = Arc::new(Segments::load(d.path(), true).unwrap());
        segs.syncer.set(false).unwrap(); // as if the thread could not be spawned
        let e = env("0000000000000000A", 1);
        let rec = record("0000000000000000A", b"x", &serde_json::to_vec(&e).unwrap());
        segs.append(&rec).unwrap();
        // X's sync has taken its snapshot and is inside fdatasync.
        let in_sync = lock(&segs.sync_lock);
        let in_flight = std::mem::take(&mut lock(&segs.writer).unsynced);
        assert_eq!(in_flight.len(), 1);
        let s = segs.clone();
        let mut y = tokio::spawn(async move { commit(&s, "0000000000000000B", b"y").await });
        let early = tokio::time::timeout(Duration::from_millis(300), &mut y).await;
        assert!(
            early.is_err(),
            "Y acknowledged while X's fdatasync runs: {early:?}"
        );
        // X's sync ends (covering ticket 1 only); Y then gets its own.
        segs.completed.store(1, Ordering::SeqCst);
        drop(in_sync);
        y.await.unwrap().unwrap();
        assert!(segs.syncs_run.load(Ordering::SeqCst) >= 1);
    }

    fn seg_files(d: &Path) -> usize {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count()
    }

    #[tokio::test]
    async fn full_segments_are_sealed_and_go_once_empty() {
        let d = tempfile::tempdir().unwrap();
        let segs = Arc::new(Segments::load(d.path(), true).unwrap());
        let body = vec![b'x'; 10 * 1024];
        let ids: Vec<String> = (1..=20).map(|i| format!("{i:017X}")).collect();
        for id in &ids {
            commit(&segs, id, &body).await.unwrap();
        }
        let made = seg_files(d.path());
        assert!(made >= 3, "200 KiB in 64 KiB segments: {made}");
        // Every record reads back from whichever segment holds it.
        for id in &ids {
            let e = segs.get(id).unwrap();
            let mut b = vec![0u8; body.len()];
            e.file.read_exact_at(&mut b, e.body_off).unwrap();
            assert_eq!(b, body);
        }
        for id in &ids {
            assert!(segs.remove(id));
        }
        assert_eq!(seg_files(d.path()), 1, "only the active one stays");
        // An old active segment is sealed by the periodic call, and goes when empty.
        if let Some(a) = lock(&segs.writer).active.as_mut() {
            a.opened = Instant::now() - SEAL_AGE - Duration::from_secs(1);
        }
        segs.seal_if_old();
        assert_eq!(seg_files(d.path()), 0);
        // The next commit opens a new one.
        commit(&segs, "00000000000000099", b"y").await.unwrap();
        assert_eq!(seg_files(d.path()), 1);
    }

    #[test]
    fn tombstones_read_whole_lines_only() {
        let (ids, used) = tombstones(b"0000000000000000A\n0000000000000000B\n00000");
        assert_eq!(used, 36);
        assert!(ids.contains("0000000000000000A") && ids.contains("0000000000000000B"));
        assert_eq!(ids.len(), 2);
        assert_eq!(seq_of("00000000000000FF.seg", "seg"), Some(255));
        assert_eq!(seq_of("00000000000000FF.done", "seg"), None);
        assert_eq!(seq_of("FF.seg", "seg"), None);
        assert_eq!(
            seq_of("00000000000000ff.seg", "seg"),
            None,
            "not a name we write"
        );
        assert_eq!(seq_of("+00000000000000F.seg", "seg"), None);
    }
}
