//! The verifier: checks an audit directory (a copy of it) line by line and names the first bad
//! spot, or reports what the intact log covers.
//!
//! Checks, in file-name order: every line is complete and a valid audit line; `prev` is the
//! hash of the line before (across files too); `seq` increments by one from 1; every
//! checkpoint signature verifies under the given key; every file but the last ends with a
//! rotation checkpoint.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use chrono::DateTime;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Serialize, Serializer};

use super::entry::{
    checkpoint_signed_bytes, key_id, line_hash, CheckpointEntry, CheckpointReason, Entry,
    GENESIS_PREV, GENESIS_SEQ,
};
use super::files::{self, AuditFile, LineReader};

/// What is wrong at the first bad spot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("no audit files (audit-YYYY-MM-DD.jsonl) found")]
    NoFiles,
    #[error("cannot read: {0}")]
    Unreadable(String),
    #[error("partial last line (no final newline): the file was cut or a write was interrupted")]
    PartialLine,
    #[error("not a valid audit line: {0}")]
    NotJson(String),
    #[error("time `{0}` is not an RFC 3339 time")]
    BadTime(String),
    #[error(
        "the chain does not start at the first record (seq 1, prev of 64 zeros): earlier records \
         or files are missing, or the first record was edited"
    )]
    NotGenesis,
    #[error(
        "hash chain broken: record was edited, deleted or reordered (prev does not match the \
         hash of {previous})"
    )]
    ChainBroken { previous: String },
    #[error("seq {found} where {expected} was expected: record was edited, deleted or reordered")]
    SeqMismatch { expected: u64, found: u64 },
    #[error("malformed checkpoint signature: not 128 hex digits")]
    MalformedSignature,
    #[error(
        "signature invalid: this checkpoint names key {signed_by}, the given public key is \
         {given} (wrong public key, or a forged checkpoint)"
    )]
    WrongKey { signed_by: String, given: String },
    #[error("signature invalid: the checkpoint or the records before it were altered or forged")]
    SignatureInvalid,
    #[error("file ends without a rotation checkpoint: truncated")]
    MissingRotationCheckpoint,
}

impl Problem {
    /// A JSON error, positioned by column (the line is known to the caller).
    pub(crate) fn not_json(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        let message = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(m, _)| m);
        Self::NotJson(format!("{message} (column {})", e.column()))
    }
}

/// The first bad spot: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyFailure {
    /// File name (`None` when no file is involved, e.g. an empty directory).
    pub file: Option<String>,
    /// 1-based line number.
    pub line: Option<u64>,
    /// `seq` of the offending line, when it could be read.
    pub seq: Option<u64>,
    #[serde(serialize_with = "as_display")]
    pub problem: Problem,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, " line {line}")?;
            }
            if let Some(seq) = self.seq {
                write!(f, " (seq {seq})")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.problem)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn as_display<S: Serializer, T: fmt::Display>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// What the verifier found. Counts cover the lines checked before any failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether checkpoint signatures were checked (false: chain only, no key given).
    pub signatures_checked: bool,
    pub files: Vec<String>,
    /// Hop records.
    pub records: u64,
    /// Lawful-interception records (only in an LI audit log).
    #[serde(skip_serializing_if = "is_zero")]
    pub li_records: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    /// Hop records after the last checkpoint: chained but not yet signed.
    pub unsigned_tail: u64,
    /// Hop events the writer reported as dropped (sum over checkpoints).
    pub dropped: u64,
    pub nodes: Vec<String>,
    pub failure: Option<VerifyFailure>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// `chain and signatures` or `chain only (no public key given: signatures not checked)`.
    pub fn mode(&self) -> &'static str {
        if self.signatures_checked {
            "chain and signatures"
        } else {
            "chain only (no public key given: signatures not checked)"
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Some(failure) => {
                writeln!(f, "audit log verification FAILED ({})", self.mode())?;
                writeln!(f, "  first bad spot: {failure}")?;
                writeln!(
                    f,
                    "  intact before it: {} records, {} checkpoints",
                    self.records, self.checkpoints
                )?;
            }
            None => {
                writeln!(f, "audit log verified: OK ({})", self.mode())?;
                let (first, last) = (self.files.first(), self.files.last());
                if let (Some(first), Some(last)) = (first, last) {
                    writeln!(f, "  files: {} ({first} .. {last})", self.files.len())?;
                }
                writeln!(f, "  nodes: {}", self.nodes.join(", "))?;
                writeln!(f, "  records: {} hop records", self.records)?;
                if self.li_records > 0 {
                    writeln!(f, "  li records: {}", self.li_records)?;
                }
                if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
                    writeln!(f, "  seq: {a} .. {b}")?;
                }
                writeln!(f, "  checkpoints: {}", self.checkpoints)?;
                if let (Some(a), Some(b)) = (&self.first_time, &self.last_time) {
                    writeln!(f, "  time: {a} .. {b}")?;
                }
                writeln!(
                    f,
                    "  unsigned tail: {} records after the last checkpoint (chained but not yet \
                     signed)",
                    self.unsigned_tail
                )?;
                writeln!(
                    f,
                    "  dropped: {} hop events (reported by the writer)",
                    self.dropped
                )?;
            }
        }
        Ok(())
    }
}

/// Verifies every audit file in `dir` with the node's public key.
pub fn verify(dir: &Path, pubkey: &VerifyingKey) -> VerifyReport {
    let listed = match files::list(dir) {
        Ok(listed) => listed,
        Err(e) => return failed(Some(pubkey), Problem::Unreadable(e.to_string())),
    };
    verify_files(&listed, None, true, Some(pubkey), &mut |_| {})
}

fn failed(key: Option<&VerifyingKey>, problem: Problem) -> VerifyReport {
    VerifyReport {
        signatures_checked: key.is_some(),
        failure: Some(VerifyFailure {
            file: None,
            line: None,
            seq: None,
            problem,
        }),
        ..VerifyReport::default()
    }
}

/// Verifies `files` (consecutive, oldest first). `before` is the file just before them, whose
/// last line anchors the chain (`None`: the chain must start at the first record). `last_is_final`
/// says whether the last of `files` is the newest file (it may then lack a rotation checkpoint).
/// `sink` sees every line that parses, also after a failure (reports still count them).
pub(crate) fn verify_files(
    files: &[AuditFile],
    before: Option<&AuditFile>,
    last_is_final: bool,
    key: Option<&VerifyingKey>,
    sink: &mut dyn FnMut(&Entry),
) -> VerifyReport {
    let mut walker = Walker::new(key);
    if files.is_empty() {
        walker.fail_at(None, None, None, Problem::NoFiles);
    }
    if let Some(before) = before {
        walker.anchor(before);
    }
    for (index, file) in files.iter().enumerate() {
        let is_last = index + 1 == files.len();
        walker.walk_file(file, is_last && last_is_final, sink);
    }
    walker.finish()
}

struct Walker<'k> {
    key: Option<(&'k VerifyingKey, String)>,
    expect_prev: String,
    expect_seq: u64,
    /// Where the previous line is, for messages (`line 4`, `the last line of audit-…`).
    previous: Option<(String, u64)>,
    nodes: BTreeSet<String>,
    report: VerifyReport,
}

impl<'k> Walker<'k> {
    fn new(key: Option<&'k VerifyingKey>) -> Self {
        Self {
            key: key.map(|k| (k, key_id(k))),
            expect_prev: GENESIS_PREV.to_owned(),
            expect_seq: GENESIS_SEQ,
            previous: None,
            nodes: BTreeSet::new(),
            report: VerifyReport {
                signatures_checked: key.is_some(),
                ..VerifyReport::default()
            },
        }
    }

    fn fail_at(&mut self, file: Option<&str>, line: Option<u64>, seq: Option<u64>, p: Problem) {
        if self.report.failure.is_none() {
            self.report.failure = Some(VerifyFailure {
                file: file.map(str::to_owned),
                line,
                seq,
                problem: p,
            });
        }
    }

    /// Takes the chain state from the last line of the file before the range.
    fn anchor(&mut self, file: &AuditFile) {
        match files::last_line(&file.path) {
            Err(e) => self.fail_at(
                Some(&file.name),
                None,
                None,
                Problem::Unreadable(e.to_string()),
            ),
            Ok(None) => self.fail_at(
                Some(&file.name),
                None,
                None,
                Problem::MissingRotationCheckpoint,
            ),
            Ok(Some((number, bytes, complete))) => {
                let name = Some(file.name.as_str());
                if !complete {
                    return self.fail_at(name, Some(number), None, Problem::PartialLine);
                }
                match Entry::parse(&bytes) {
                    Err(e) => self.fail_at(name, Some(number), None, Problem::not_json(&e)),
                    Ok(entry) => {
                        self.expect_prev = line_hash(&bytes);
                        self.expect_seq = entry.seq().saturating_add(1);
                        self.previous = Some((file.name.clone(), number));
                        if !is_rotation(&entry) {
                            let seq = Some(entry.seq());
                            self.fail_at(
                                name,
                                Some(number),
                                seq,
                                Problem::MissingRotationCheckpoint,
                            );
                        }
                    }
                }
            }
        }
    }

    fn walk_file(&mut self, file: &AuditFile, is_final: bool, sink: &mut dyn FnMut(&Entry)) {
        self.report.files.push(file.name.clone());
        let name = Some(file.name.as_str());
        let mut reader = match LineReader::open(&file.path) {
            Ok(reader) => reader,
            Err(e) => return self.fail_at(name, None, None, Problem::Unreadable(e.to_string())),
        };
        let mut last: Option<(u64, Option<u64>, bool)> = None;
        loop {
            let line = match reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    let line = last.map(|l| l.0 + 1);
                    return self.fail_at(name, line, None, Problem::Unreadable(e.to_string()));
                }
            };
            let number = line.number;
            if !line.complete {
                self.fail_at(name, Some(number), None, Problem::PartialLine);
                last = Some((number, None, false));
                continue;
            }
            let entry = match Entry::parse(line.bytes) {
                Ok(entry) => entry,
                Err(e) => {
                    self.fail_at(name, Some(number), None, Problem::not_json(&e));
                    last = Some((number, None, false));
                    continue;
                }
            };
            let hash = line_hash(line.bytes);
            if self.report.failure.is_none() {
                self.check(&file.name, number, &entry, &hash);
            }
            last = Some((number, Some(entry.seq()), is_rotation(&entry)));
            sink(&entry);
        }
        if !is_final {
            match last {
                Some((_, _, true)) => {}
                Some((number, seq, false)) => {
                    self.fail_at(name, Some(number), seq, Problem::MissingRotationCheckpoint)
                }
                None => self.fail_at(name, None, None, Problem::MissingRotationCheckpoint),
            }
        }
    }

    /// Chain, sequence, time and signature checks of one parsed line; counts it if intact.
    fn check(&mut self, file: &str, number: u64, entry: &Entry, hash: &str) {
        let seq = Some(entry.seq());
        let at = Some(number);
        if entry.prev() != self.expect_prev {
            let problem = match &self.previous {
                None => Problem::NotGenesis,
                Some((f, line)) if f == file => Problem::ChainBroken {
                    previous: format!("line {line}"),
                },
                Some((f, line)) => Problem::ChainBroken {
                    previous: format!("{f} line {line}"),
                },
            };
            return self.fail_at(Some(file), at, seq, problem);
        }
        if entry.seq() != self.expect_seq {
            let problem = Problem::SeqMismatch {
                expected: self.expect_seq,
                found: entry.seq(),
            };
            return self.fail_at(Some(file), at, seq, problem);
        }
        if DateTime::parse_from_rfc3339(entry.time()).is_err() {
            return self.fail_at(
                Some(file),
                at,
                seq,
                Problem::BadTime(entry.time().to_owned()),
            );
        }
        if let Entry::Checkpoint(c) = entry {
            if let Err(problem) = self.check_signature(c) {
                return self.fail_at(Some(file), at, seq, problem);
            }
        }
        self.expect_prev = hash.to_owned();
        self.expect_seq = entry.seq().saturating_add(1);
        self.previous = Some((file.to_owned(), number));
        self.count(entry);
    }

    fn check_signature(&self, c: &CheckpointEntry) -> Result<(), Problem> {
        let bytes = hex::decode(&c.sig).map_err(|_| Problem::MalformedSignature)?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| Problem::MalformedSignature)?;
        let Some((key, id)) = &self.key else {
            return Ok(());
        };
        if c.key_id != *id {
            return Err(Problem::WrongKey {
                signed_by: c.key_id.clone(),
                given: id.clone(),
            });
        }
        key.verify_strict(&checkpoint_signed_bytes(c), &Signature::from_bytes(&bytes))
            .map_err(|_| Problem::SignatureInvalid)
    }

    fn count(&mut self, entry: &Entry) {
        let r = &mut self.report;
        r.first_seq.get_or_insert(entry.seq());
        r.last_seq = Some(entry.seq());
        if r.first_time.is_none() {
            r.first_time = Some(entry.time().to_owned());
        }
        r.last_time = Some(entry.time().to_owned());
        if !self.nodes.contains(entry.node()) {
            self.nodes.insert(entry.node().to_owned());
        }
        match entry {
            Entry::Hop(_) => {
                r.records += 1;
                r.unsigned_tail += 1;
            }
            Entry::Li(_) => {
                r.li_records += 1;
                r.unsigned_tail += 1;
            }
            Entry::Checkpoint(c) => {
                r.checkpoints += 1;
                r.unsigned_tail = 0;
                r.dropped += c.dropped;
            }
        }
    }

    fn finish(mut self) -> VerifyReport {
        self.report.nodes = self.nodes.into_iter().collect();
        self.report
    }
}

fn is_rotation(entry: &Entry) -> bool {
    matches!(entry, Entry::Checkpoint(c) if c.reason == CheckpointReason::Rotation)
}
