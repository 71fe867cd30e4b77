//! The LI audit log: its own directory (mode 0700), the hop audit log's chain and signed
//! checkpoints (`audit::AuditWriter`, line kind `li`), a checkpoint after every event, fsynced
//! before the call returns. Records LIIDs, times, queue ids and products; never an address,
//! never content. Verified with `hopguard audit verify DIR --pubkey KEY`.

use std::path::Path;
use std::sync::Mutex;

use chrono::Utc;
use ed25519_dalek::SigningKey;

use super::copies::root_only_dir;
use super::InterceptError;
use crate::audit::{AuditConfig, AuditWriter, LiEvent, LiRecord};

pub struct LiAudit {
    writer: Mutex<AuditWriter>,
}

impl LiAudit {
    /// Opens (resumes) the LI audit chain in `dir`.
    pub fn open(dir: &Path, node_id: &str, key: &SigningKey) -> Result<Self, InterceptError> {
        root_only_dir(dir)?;
        let config = AuditConfig {
            dir: dir.to_owned(),
            node_id: node_id.to_owned(),
            signing_key: key.clone(),
            // Every LI event is signed at once: no unsigned tail.
            checkpoint_every: 1,
            capacity: 1,
        };
        let writer = AuditWriter::open(&config, Utc::now()).map_err(InterceptError::Audit)?;
        Ok(Self {
            writer: Mutex::new(writer),
        })
    }

    /// Appends, signs and fsyncs one event. Blocking (file I/O): call from a blocking context.
    pub fn record(&self, event: LiEvent, record: LiRecord) -> Result<(), InterceptError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| InterceptError::AuditStopped)?;
        w.append_li(event, record, Utc::now())
            .and_then(|()| w.flush())
            .map_err(InterceptError::Audit)
    }

    /// Shorthand for an event about one warrant.
    pub fn warrant(&self, event: LiEvent, liid: &str, source: &str) -> Result<(), InterceptError> {
        self.record(
            event,
            LiRecord {
                liid: Some(liid.to_owned()),
                source: Some(source.to_owned()),
                ..LiRecord::default()
            },
        )
    }

    /// Shorthand for an event about one copy.
    pub fn copy(
        &self,
        event: LiEvent,
        liid: &str,
        queue_id: &str,
        product: &str,
    ) -> Result<(), InterceptError> {
        self.record(
            event,
            LiRecord {
                liid: Some(liid.to_owned()),
                queue_id: Some(queue_id.to_owned()),
                product: Some(product.to_owned()),
                ..LiRecord::default()
            },
        )
    }

    /// Writes the day's rotation checkpoint when the UTC day has changed.
    pub fn tick(&self) -> Result<(), InterceptError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| InterceptError::AuditStopped)?;
        w.tick(Utc::now())
            .and_then(|()| w.flush())
            .map_err(InterceptError::Audit)
    }
}
