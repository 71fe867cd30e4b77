//! Tamper-evident hop audit log (hash chain, Ed25519 checkpoints), its verifier and reports.
//!
//! Where it sits: every hop yields an `evidence::HopRecord`; `AuditHandle::record` queues it
//! without blocking, and one writer thread appends it to the day's JSON Lines file.
//!
//! Map of the module (the format is specified in docs/audit.md):
//! - `entry`: the line kinds (hop record, checkpoint, and `li` for the separate LI audit log of
//!   `intercept`), the hash chain link and the exact bytes a checkpoint signs;
//!   `message_id_hash` (the keyed Message-ID hash).
//! - `files`: file names (`audit-YYYY-MM-DD.jsonl`), listing, permissions, reading lines.
//! - `keys`: the node's Ed25519 audit key pair (PKCS#8 / SPKI PEM) and the Message-ID key.
//! - `writer`: `AuditWriter`, the synchronous core (resume, append, rotate, checkpoint, fsync);
//!   the clock is a parameter so tests drive rotation without a runtime.
//! - `log`: `AuditLog::start` -> `AuditHandle` (bounded queue, writer thread, health, shutdown).
//! - `verify`: the verifier a regulator runs on a copy of the files.
//! - `report`: per-peer figures for a period, from the audit log alone; `render`: JSON, CSV and
//!   self-contained HTML.
//! - `cli`: the `hopguard audit keygen|verify|report` entry points.

pub mod cli;
pub mod entry;
pub mod files;
pub mod keys;
pub mod log;
pub mod render;
pub mod report;
pub mod verify;
pub mod writer;

#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

pub use entry::{message_id_hash, CheckpointReason, LiEvent, LiRecord};
pub use keys::{
    generate_keypair, generate_message_id_key, load_message_id_key, load_signing_key,
    load_verifying_key,
};
pub use log::{AuditConfig, AuditHandle, AuditLog};
pub use render::{render_csv, render_html, render_json};
pub use report::{report, Report};
pub use verify::{verify, Problem, VerifyFailure, VerifyReport};
pub use writer::AuditWriter;

/// Everything that can go wrong writing the audit log or loading its keys.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PKCS#8 PEM Ed25519 private key: {source}", path.display())]
    PrivateKey {
        path: PathBuf,
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },
    #[error("{}: not an SPKI PEM Ed25519 public key: {source}", path.display())]
    PublicKey {
        path: PathBuf,
        #[source]
        source: ed25519_dalek::pkcs8::spki::Error,
    },
    #[error(
        "{}: the Message-ID key file must hold only hex digits, at least {min} of them",
        path.display()
    )]
    MessageIdKey { path: PathBuf, min: usize },
    #[error("{}: refusing to overwrite an existing key file", .0.display())]
    KeyExists(PathBuf),
    #[error("invalid audit configuration: {0}")]
    Config(&'static str),
    #[error(
        "refusing to start the audit log: {} line {line}: {problem}; resuming would fork the \
         hash chain (see docs/audit.md, \"Recovery\")",
        path.display()
    )]
    Damaged {
        path: PathBuf,
        line: u64,
        problem: Problem,
    },
    #[error("cannot encode an audit line: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("cannot start the audit writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the audit writer failed: {0}")]
    Failed(Arc<AuditError>),
}
