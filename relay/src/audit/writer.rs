//! `AuditWriter`: the synchronous core that resumes, appends, rotates, checkpoints and fsyncs.
//!
//! No threads and no clock: every call takes `now`, so tests drive rotation across days
//! directly. `log` runs it on the writer thread. After any error the writer refuses further
//! work (`AuditError::Stopped`): the caller must not go on writing after a failed write.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use ed25519_dalek::{Signer, SigningKey};

use super::entry::{
    checkpoint_signed_bytes, format_time, key_id, line_hash, CheckpointEntry, CheckpointReason,
    Entry, HopEntry, LiEntry, LiEvent, LiRecord, GENESIS_PREV, GENESIS_SEQ,
};
use super::files::{self, AuditFile};
use super::log::AuditConfig;
use super::verify::Problem;
use super::AuditError;
use crate::evidence::HopRecord;

/// The day file being appended to.
struct OpenFile {
    date: NaiveDate,
    path: PathBuf,
    out: BufWriter<File>,
    /// Lines written since the last `flush`.
    dirty: bool,
}

/// Where the chain stands after the last line on disk.
struct ChainState {
    next_seq: u64,
    prev: String,
    /// The last line was a hop record (so the previous run left an unsigned tail).
    unsigned_tail: bool,
    /// The last line was a rotation checkpoint (its file is closed).
    closed: bool,
    last_key_id: Option<String>,
}

pub struct AuditWriter {
    dir: PathBuf,
    node: String,
    key: SigningKey,
    key_id: String,
    checkpoint_every: u64,
    next_seq: u64,
    prev: String,
    /// Hop records since the last checkpoint.
    since_checkpoint: u64,
    /// Dropped hop events not yet reported in a checkpoint.
    dropped_pending: u64,
    /// The latest file date in use: files are never reopened for an earlier day.
    last_date: Option<NaiveDate>,
    current: Option<OpenFile>,
    /// Set by `close` or after a failed write: no further lines.
    stopped: bool,
}

impl AuditWriter {
    /// Opens the log in `config.dir` (created 0750 if absent) and resumes the chain after the
    /// last line on disk. Refuses (`AuditError::Damaged`) if that line is partial or not a
    /// valid audit line. An unsigned tail left by an unclean stop is signed at once (a `resume`
    /// checkpoint, or a `rotation` checkpoint if the day has changed).
    pub fn open(config: &AuditConfig, now: DateTime<Utc>) -> Result<Self, AuditError> {
        validate(config)?;
        files::create_dir(&config.dir)?;
        let listed = files::list(&config.dir).map_err(|source| AuditError::Io {
            path: config.dir.clone(),
            source,
        })?;
        let state = resume_state(&listed)?;
        let key_id = key_id(&config.signing_key.verifying_key());
        if let Some(previous) = state.last_key_id.as_deref().filter(|k| *k != key_id) {
            tracing::warn!(
                previous,
                current = %key_id,
                "audit signing key changed: verify older files with the previous public key"
            );
        }
        let mut writer = Self {
            dir: config.dir.clone(),
            node: config.node_id.clone(),
            key: config.signing_key.clone(),
            key_id,
            checkpoint_every: config.checkpoint_every,
            next_seq: state.next_seq,
            prev: state.prev,
            since_checkpoint: u64::from(state.unsigned_tail),
            dropped_pending: 0,
            last_date: listed.last().map(|f| f.date),
            current: None,
            stopped: false,
        };
        if let (Some(last), false) = (listed.last(), state.closed) {
            writer.current = Some(open_file(last)?);
        }
        writer.roll(now)?;
        if writer.since_checkpoint > 0 {
            writer.write_checkpoint(CheckpointReason::Resume, now)?;
        }
        writer.flush()?;
        Ok(writer)
    }

    /// Appends one hop record (buffered: durable after the next `flush`). Rotates first when
    /// `now` is on a later UTC day than the current file; writes an `interval` checkpoint after
    /// every `checkpoint_every` records.
    pub fn append(&mut self, hop: &HopRecord, now: DateTime<Utc>) -> Result<(), AuditError> {
        self.usable()?;
        self.roll(now)?;
        let entry = HopEntry::from_hop(hop, &self.node, self.next_seq, self.prev.clone());
        self.write_entry(&Entry::Hop(entry), now)?;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.checkpoint_every {
            self.write_checkpoint(CheckpointReason::Interval, now)?;
        }
        Ok(())
    }

    /// Appends one lawful-interception event (LI audit log; same chain, rotation and
    /// checkpoints as hop records). Buffered: durable after the next `flush`.
    pub fn append_li(
        &mut self,
        event: LiEvent,
        record: LiRecord,
        now: DateTime<Utc>,
    ) -> Result<(), AuditError> {
        self.usable()?;
        self.roll(now)?;
        let entry = LiEntry {
            seq: self.next_seq,
            prev: self.prev.clone(),
            time: format_time(now),
            node: self.node.clone(),
            event,
            liid: record.liid,
            source: record.source,
            queue_id: record.queue_id,
            product: record.product,
            warrants: record.warrants,
        };
        self.write_entry(&Entry::Li(entry), now)?;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.checkpoint_every {
            self.write_checkpoint(CheckpointReason::Interval, now)?;
        }
        Ok(())
    }

    /// Closes the day's file with a `rotation` checkpoint when `now` is on a later UTC day,
    /// even without traffic. The next day's file is created by the next line.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Result<(), AuditError> {
        self.usable()?;
        self.roll(now)
    }

    /// Reports `n` hop events dropped before reaching the writer; the next checkpoint says so.
    pub fn add_dropped(&mut self, n: u64) {
        self.dropped_pending = self.dropped_pending.saturating_add(n);
    }

    /// Writes the buffered lines and fdatasyncs the file: returns only once every line appended
    /// so far is on disk. One fsync per call, however many lines.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.usable()?;
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if !current.dirty {
            return Ok(());
        }
        let result = current
            .out
            .flush()
            .and_then(|()| current.out.get_ref().sync_data());
        if let Err(source) = result {
            self.stopped = true;
            return Err(AuditError::Io {
                path: current.path.clone(),
                source,
            });
        }
        current.dirty = false;
        Ok(())
    }

    /// Clean stop: a `shutdown` checkpoint (unless the current file was just closed by a
    /// rotation and nothing is pending) and a final flush.
    pub fn close(&mut self, now: DateTime<Utc>) -> Result<(), AuditError> {
        self.usable()?;
        if self.current.is_some() || self.dropped_pending > 0 {
            self.write_checkpoint(CheckpointReason::Shutdown, now)?;
        }
        self.flush()?;
        self.current = None;
        self.stopped = true;
        Ok(())
    }

    /// `seq` the next line will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn usable(&self) -> Result<(), AuditError> {
        if self.stopped {
            Err(AuditError::Stopped)
        } else {
            Ok(())
        }
    }

    /// Rotation: if `now` is on a later day than the open file, sign and close it.
    fn roll(&mut self, now: DateTime<Utc>) -> Result<(), AuditError> {
        let due = matches!(&self.current, Some(c) if now.date_naive() > c.date);
        if due {
            self.write_checkpoint(CheckpointReason::Rotation, now)?;
            self.flush()?;
            self.current = None;
        }
        Ok(())
    }

    fn write_checkpoint(
        &mut self,
        reason: CheckpointReason,
        now: DateTime<Utc>,
    ) -> Result<(), AuditError> {
        let mut checkpoint = CheckpointEntry {
            seq: self.next_seq,
            prev: self.prev.clone(),
            time: format_time(now),
            node: self.node.clone(),
            reason,
            dropped: self.dropped_pending,
            key_id: self.key_id.clone(),
            sig: String::new(),
        };
        let signature = self.key.sign(&checkpoint_signed_bytes(&checkpoint));
        checkpoint.sig = hex::encode(signature.to_bytes());
        self.write_entry(&Entry::Checkpoint(checkpoint), now)?;
        self.since_checkpoint = 0;
        self.dropped_pending = 0;
        Ok(())
    }

    fn write_entry(&mut self, entry: &Entry, now: DateTime<Utc>) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(entry)?;
        let hash = line_hash(&line);
        line.push(b'\n');
        if self.current.is_none() {
            let date = self
                .last_date
                .map_or(now.date_naive(), |d| d.max(now.date_naive()));
            let file = AuditFile {
                date,
                path: self.dir.join(files::file_name(date)),
                name: files::file_name(date),
            };
            match open_file(&file) {
                Ok(open) => self.current = Some(open),
                Err(e) => {
                    self.stopped = true;
                    return Err(e);
                }
            }
            self.last_date = Some(date);
        }
        let Some(current) = self.current.as_mut() else {
            return Err(AuditError::Stopped);
        };
        if let Err(source) = current.out.write_all(&line) {
            self.stopped = true;
            return Err(AuditError::Io {
                path: current.path.clone(),
                source,
            });
        }
        current.dirty = true;
        self.prev = hash;
        self.next_seq += 1;
        Ok(())
    }
}

fn validate(config: &AuditConfig) -> Result<(), AuditError> {
    let node_ok = !config.node_id.is_empty()
        && config.node_id.len() <= 253
        && config
            .node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if !node_ok {
        return Err(AuditError::Config(
            "node_id must be 1-253 characters of [A-Za-z0-9._:-]",
        ));
    }
    if config.checkpoint_every == 0 {
        return Err(AuditError::Config("checkpoint_every must be at least 1"));
    }
    if config.capacity == 0 {
        return Err(AuditError::Config("capacity must be at least 1"));
    }
    Ok(())
}

fn open_file(file: &AuditFile) -> Result<OpenFile, AuditError> {
    Ok(OpenFile {
        date: file.date,
        path: file.path.clone(),
        out: BufWriter::with_capacity(64 * 1024, files::open_append(&file.path)?),
        dirty: false,
    })
}

/// Reads the chain's end from the last non-empty file.
fn resume_state(listed: &[AuditFile]) -> Result<ChainState, AuditError> {
    for (index, file) in listed.iter().enumerate().rev() {
        let last = files::last_line(&file.path).map_err(|source| AuditError::Io {
            path: file.path.clone(),
            source,
        })?;
        let Some((number, bytes, complete)) = last else {
            continue;
        };
        let damaged = |problem| AuditError::Damaged {
            path: file.path.clone(),
            line: number,
            problem,
        };
        if !complete {
            return Err(damaged(Problem::PartialLine));
        }
        let entry = Entry::parse(&bytes).map_err(|e| damaged(Problem::not_json(&e)))?;
        let (unsigned_tail, closed, last_key_id) = match &entry {
            Entry::Hop(_) | Entry::Li(_) => (true, false, None),
            Entry::Checkpoint(c) => (
                false,
                // A later (empty) file is the open one.
                c.reason == CheckpointReason::Rotation && index + 1 == listed.len(),
                Some(c.key_id.clone()),
            ),
        };
        return Ok(ChainState {
            next_seq: entry.seq().saturating_add(1),
            prev: line_hash(&bytes),
            unsigned_tail,
            closed,
            last_key_id,
        });
    }
    Ok(ChainState {
        next_seq: GENESIS_SEQ,
        prev: GENESIS_PREV.to_owned(),
        unsigned_tail: false,
        closed: false,
        last_key_id: None,
    })
}
