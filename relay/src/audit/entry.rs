//! The audit line format: hop records and signed checkpoints, the chain link and signed bytes.
//!
//! One line = one JSON object, `kind` first. The chain link `prev` of a line is the SHA-256 (hex)
//! of the previous line's exact bytes without its newline, so the verifier hashes bytes as read
//! and never re-serialises. docs/audit.md specifies every field.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::VerifyingKey;
use hmac::{Hmac, KeyInit, Mac};
use hopguard_policy::{PolicySource, ResultType, VerifyMethod};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::evidence::{Direction, HopRecord, Outcome};

/// `prev` of the first record ever.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `seq` of the first record ever.
pub const GENESIS_SEQ: u64 = 1;
/// First line of the bytes a checkpoint signs (see `checkpoint_signed_bytes`).
pub const CHECKPOINT_DOMAIN: &str = "hopguard-audit-checkpoint-v1";

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Entry {
    Hop(HopEntry),
    Checkpoint(CheckpointEntry),
    /// Lawful-interception event; written only to the separate LI audit log (`intercept`).
    Li(LiEntry),
}

impl Entry {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Hop(h) => h.seq,
            Self::Checkpoint(c) => c.seq,
            Self::Li(l) => l.seq,
        }
    }

    pub fn prev(&self) -> &str {
        match self {
            Self::Hop(h) => &h.prev,
            Self::Checkpoint(c) => &c.prev,
            Self::Li(l) => &l.prev,
        }
    }

    pub fn time(&self) -> &str {
        match self {
            Self::Hop(h) => &h.time,
            Self::Checkpoint(c) => &c.time,
            Self::Li(l) => &l.time,
        }
    }

    pub fn node(&self) -> &str {
        match self {
            Self::Hop(h) => &h.node,
            Self::Checkpoint(c) => &c.node,
            Self::Li(l) => &l.node,
        }
    }

    /// Parses one line (without its newline). Unknown, missing or duplicate fields are errors.
    pub fn parse(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// One hop event. Data minimisation: no addresses, subjects or bodies; the Message-ID only as a
/// keyed hash. Optional fields are always present (`null` when unknown).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopEntry {
    pub seq: u64,
    pub prev: String,
    /// Time of the hop, UTC, RFC 3339 with milliseconds (`2025-03-01T12:00:00.123Z`).
    pub time: String,
    pub node: String,
    #[serde(with = "direction_token")]
    pub direction: Direction,
    /// Charter peer name or `other`.
    pub peer: String,
    #[serde(deserialize_with = "nullable")]
    pub remote_ip: Option<IpAddr>,
    pub remote_host: String,
    /// `null` for a plaintext hop.
    #[serde(deserialize_with = "nullable")]
    pub tls: Option<TlsEntry>,
    pub verification: VerifyMethod,
    #[serde(deserialize_with = "nullable")]
    pub policy: Option<PolicySource>,
    #[serde(with = "outcome_token")]
    pub outcome: Outcome,
    #[serde(deserialize_with = "nullable")]
    pub result_type: Option<ResultType>,
    #[serde(deserialize_with = "nullable")]
    pub reply_code: Option<u16>,
    #[serde(deserialize_with = "nullable")]
    pub queue_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub message_id_hash: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub size: Option<u64>,
    pub recipients: u64,
    /// Policies observed but not enforced on this hop, with their would-be verdicts. Written
    /// only when there are some (lines from before this field stay valid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed: Vec<ObservedEntry>,
}

/// A policy observed, not enforced, on a hop (MTA-STS `testing`, a report-only charter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedEntry {
    pub policy: PolicySource,
    /// `null`: the hop would have passed.
    #[serde(deserialize_with = "nullable")]
    pub result_type: Option<ResultType>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsEntry {
    pub version: String,
    pub cipher: String,
    #[serde(deserialize_with = "nullable")]
    pub cert_sha256: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub spki_sha256: Option<String>,
}

/// What a lawful-interception audit line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiEvent {
    /// A warrant set was loaded (start-up, reload or admin); `warrants` = how many.
    WarrantsLoaded,
    /// A warrant set was refused (invalid, or file permissions); the previous set stays.
    LoadRefused,
    WarrantAdded,
    WarrantChanged,
    WarrantRemoved,
    /// The warrant's `valid_until` has passed: it no longer matches.
    WarrantExpired,
    /// A copy of a message was queued durably for handover.
    CopyQueued,
    /// The mediation endpoint acknowledged the copy (or it was placed in the handover
    /// directory); the local copy is deleted.
    CopyHandedOver,
    /// A copy could not be queued (e.g. the message file could not be read).
    CopyFailed,
}

/// One lawful-interception event (LI audit log only). Data minimisation: never a target
/// address, never message content. Optional fields are always present (`null` when unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiEntry {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub node: String,
    pub event: LiEvent,
    /// Lawful interception identifier of the warrant concerned.
    #[serde(deserialize_with = "nullable")]
    pub liid: Option<String>,
    /// `file` or `admin` for provisioning events.
    #[serde(deserialize_with = "nullable")]
    pub source: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub queue_id: Option<String>,
    /// `iri` or `iri+cc` for copy events.
    #[serde(deserialize_with = "nullable")]
    pub product: Option<String>,
    /// Number of warrants in the set, for `warrants-loaded`.
    #[serde(deserialize_with = "nullable")]
    pub warrants: Option<u64>,
}

/// The content of an LI audit line, before the writer adds `seq`, `prev`, `time` and `node`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiRecord {
    pub liid: Option<String>,
    pub source: Option<String>,
    pub queue_id: Option<String>,
    pub product: Option<String>,
    pub warrants: Option<u64>,
}

/// Why a checkpoint was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointReason {
    /// `checkpoint_every` hop records since the previous checkpoint.
    Interval,
    /// Last line of a day's file; the chain continues in the next file.
    Rotation,
    /// Clean shutdown of the writer.
    Shutdown,
    /// Start after an unclean stop: signs the records the previous run left unsigned.
    Resume,
}

impl CheckpointReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interval => "interval",
            Self::Rotation => "rotation",
            Self::Shutdown => "shutdown",
            Self::Resume => "resume",
        }
    }
}

/// A signed statement: "node `node` wrote records 1..seq-1, the last of which hashes to `prev`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEntry {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub node: String,
    pub reason: CheckpointReason,
    /// Hop events dropped (queue full) since the previous checkpoint of this writer run.
    pub dropped: u64,
    /// First 16 hex digits of SHA-256 of the raw 32-byte public key (see `key_id`).
    pub key_id: String,
    /// Ed25519 signature (128 hex digits) over `checkpoint_signed_bytes`.
    pub sig: String,
}

/// The exact bytes a checkpoint signs: seven lines joined by `\n`, no trailing newline:
/// `hopguard-audit-checkpoint-v1`, node, seq, time, reason, dropped, key_id, prev.
/// `prev` hashes the line before the checkpoint, which carries its own `prev`, and so on back
/// to the first record: one signature authenticates every line before it.
pub fn checkpoint_signed_bytes(c: &CheckpointEntry) -> Vec<u8> {
    format!(
        "{CHECKPOINT_DOMAIN}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        c.node,
        c.seq,
        c.time,
        c.reason.as_str(),
        c.dropped,
        c.key_id,
        c.prev
    )
    .into_bytes()
}

/// SHA-256 (lowercase hex) of one line's bytes, without its newline: the next line's `prev`.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Short identifier of an audit public key, written into every checkpoint.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    digest[..16].to_owned()
}

/// `time` as written in audit lines: UTC, RFC 3339, milliseconds, `Z`.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl HopEntry {
    pub fn from_hop(hop: &HopRecord, node: &str, seq: u64, prev: String) -> Self {
        Self {
            seq,
            prev,
            time: format_time(hop.time),
            node: node.to_owned(),
            direction: hop.direction,
            peer: hop.peer.clone(),
            remote_ip: hop.remote_ip,
            remote_host: hop.remote_host.clone(),
            tls: hop.tls.as_ref().map(|t| TlsEntry {
                version: t.version.clone(),
                cipher: t.cipher.clone(),
                cert_sha256: t.cert_sha256.clone(),
                spki_sha256: t.spki_sha256.clone(),
            }),
            verification: hop.verification,
            policy: hop.policy,
            outcome: hop.outcome,
            result_type: hop.result_type,
            reply_code: hop.reply_code,
            queue_id: hop.queue_id.clone(),
            message_id_hash: hop.message_id_hash.clone(),
            size: hop.size,
            recipients: hop.recipients as u64,
            observed: hop
                .observed
                .iter()
                .map(|o| ObservedEntry {
                    policy: o.source,
                    result_type: o.result,
                })
                .collect(),
        }
    }
}

/// HMAC-SHA256 (lowercase hex) of the normalised Message-ID under the deployment's key.
///
/// Normalisation: surrounding whitespace trimmed, one pair of `<` `>` removed, the local part
/// kept as is (case-sensitive), the domain after the last `@` lowercased (ASCII). Without the
/// key the hash cannot be linked to a Message-ID, even by trying candidate IDs.
pub fn message_id_hash(key: &[u8], message_id: &str) -> String {
    let normalised = normalise_message_id(message_id);
    // HMAC takes keys of any length (RFC 2104 section 2): this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(normalised.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn normalise_message_id(message_id: &str) -> String {
    let trimmed = message_id.trim();
    let unbracketed = trimmed.strip_prefix('<').unwrap_or(trimmed);
    let unbracketed = unbracketed.strip_suffix('>').unwrap_or(unbracketed).trim();
    match unbracketed.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => unbracketed.to_owned(),
    }
}

/// An `Option` field that must be present (as `null` or a value): a line missing it is invalid.
fn nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// Every `Direction`, for parsing the `as_str` tokens back.
const DIRECTIONS: [Direction; 2] = [Direction::Inbound, Direction::Outbound];
/// Every `Outcome`; `outcomes_listed` fails to compile when a variant is added.
const OUTCOMES: [Outcome; 5] = [
    Outcome::Accepted,
    Outcome::Refused,
    Outcome::Delivered,
    Outcome::Deferred,
    Outcome::Bounced,
];

#[allow(dead_code)]
const fn outcomes_listed(o: Outcome) {
    match o {
        Outcome::Accepted
        | Outcome::Refused
        | Outcome::Delivered
        | Outcome::Deferred
        | Outcome::Bounced => {}
    }
}

#[allow(dead_code)]
const fn directions_listed(d: Direction) {
    match d {
        Direction::Inbound | Direction::Outbound => {}
    }
}

/// Parses an outcome token (`accepted`, `delivered`, …).
pub fn parse_outcome(token: &str) -> Option<Outcome> {
    OUTCOMES.into_iter().find(|o| o.as_str() == token)
}

/// Parses a direction token (`inbound`, `outbound`).
pub fn parse_direction(token: &str) -> Option<Direction> {
    DIRECTIONS.into_iter().find(|d| d.as_str() == token)
}

mod direction_token {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        let token = String::deserialize(d)?;
        parse_direction(&token)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown direction `{token}`")))
    }
}

mod outcome_token {
    use super::*;

    pub fn serialize<S: Serializer>(o: &Outcome, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(o.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
        let token = String::deserialize(d)?;
        parse_outcome(&token)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown outcome `{token}`")))
    }
}
