//! The LI copy queue: one file per copy in a root-only directory, separate from the mail
//! spool; durable (write, fsync, rename, fsync directory) before it counts as queued.
//!
//! Layout under the LI `spool_dir` (mode 0700): `tmp/` (being written), `pending/ID.copy`
//! (waiting for handover). A copy file is the handover framing itself: one IRI JSON line and,
//! for `iri+cc`, `CC <length>\n` and exactly that many bytes of the message as spooled.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::warrant::{Match, Product};
use super::InterceptError;
use crate::spool::Envelope;

/// Mode of every LI directory hopguard creates or uses.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every LI file hopguard writes.
pub const FILE_MODE: u32 = 0o600;

/// The IRI record: the metadata of one intercepted message, for one warrant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IriRecord {
    /// Unique per copy; the mediation side acknowledges it (`ACK <copy_id>`).
    pub copy_id: String,
    pub liid: String,
    pub authority: String,
    /// When the copy was taken (UTC, RFC 3339, milliseconds).
    pub time: String,
    /// When the relay accepted the message (UTC, RFC 3339).
    pub received_at: String,
    /// `sent` (the target is the sender) or `received` (a recipient).
    pub direction: String,
    pub target: String,
    pub queue_id: String,
    pub node: String,
    /// Empty for the null reverse-path `<>`.
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub client_ip: String,
    pub helo: String,
    /// TLS version of the inbound hop (`TLSv1.3`, `TLSv1.2`), `null` for plaintext.
    pub tls_version: Option<String>,
    /// Size of the spooled message in bytes.
    pub size: u64,
    /// `iri` or `iri+cc`.
    pub product: String,
}

impl IriRecord {
    pub fn new(copy_id: String, m: &Match, env: &Envelope, size: u64, now: DateTime<Utc>) -> Self {
        let received = DateTime::from_timestamp(env.received_at, 0).unwrap_or(now);
        Self {
            copy_id,
            liid: m.liid.clone(),
            authority: m.authority.clone(),
            time: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            received_at: received.to_rfc3339_opts(SecondsFormat::Secs, true),
            direction: m.side.as_str().to_owned(),
            target: m.target.clone(),
            queue_id: env.id.clone(),
            node: env.node_id.clone(),
            mail_from: env.mail_from.clone(),
            recipients: env.recipients.iter().map(|r| r.address.clone()).collect(),
            client_ip: env.client_ip.clone(),
            helo: env.helo.clone(),
            tls_version: env.tls.as_ref().map(|t| t.version.clone()),
            size,
            product: m.product.as_str().to_owned(),
        }
    }

    pub fn product(&self) -> Option<Product> {
        Product::parse(&self.product)
    }
}

/// The framed bytes of one copy: the IRI line, then for `iri+cc` `CC <len>\n` and the message.
pub fn frame(record: &IriRecord, content: Option<&[u8]>) -> Result<Vec<u8>, InterceptError> {
    let mut out = serde_json::to_vec(record).map_err(InterceptError::Encode)?;
    out.push(b'\n');
    if let Some(cc) = content {
        out.extend_from_slice(format!("CC {}\n", cc.len()).as_bytes());
        out.extend_from_slice(cc);
    }
    Ok(out)
}

/// A queued copy, read back from disk.
pub struct Copy {
    pub path: PathBuf,
    pub record: IriRecord,
    /// The exact framed bytes (what goes on the wire or into the handover directory).
    pub framed: Vec<u8>,
}

/// Copy ids are made by `copy_id`: guards names read from the directory.
pub fn is_copy_id(s: &str) -> bool {
    (1..=80).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `QUEUEID-N`: the N-th warrant matching the message.
pub fn copy_id(queue_id: &str, index: usize) -> String {
    format!("{queue_id}-{index}")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InterceptError + '_ {
    move |source| InterceptError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (mode 0700) if absent and sets an existing one to 0700.
pub fn root_only_dir(dir: &Path) -> Result<(), InterceptError> {
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io(dir))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io(dir))
}

/// fsyncs a directory so the names created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), InterceptError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `bytes` to `tmp` (mode 0600), fsyncs, renames to `dst` and fsyncs `dst`'s directory.
/// Returns only once the file under its final name is durable.
pub fn write_durably(tmp: &Path, dst: &Path, bytes: &[u8]) -> Result<(), InterceptError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(tmp)
        .map_err(io(tmp))?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(io(tmp))?;
    drop(f);
    fs::rename(tmp, dst).map_err(io(dst))?;
    match dst.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// The copy queue directory.
#[derive(Clone, Debug)]
pub struct CopyQueue {
    root: PathBuf,
}

impl CopyQueue {
    /// Opens (creates) the queue; every directory is set to mode 0700.
    pub fn open(root: &Path) -> Result<Self, InterceptError> {
        root_only_dir(root)?;
        for sub in ["tmp", "pending"] {
            root_only_dir(&root.join(sub))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pending_dir(&self) -> PathBuf {
        self.root.join("pending")
    }

    /// Queues one copy durably.
    pub fn put(&self, record: &IriRecord, content: Option<&[u8]>) -> Result<(), InterceptError> {
        if !is_copy_id(&record.copy_id) {
            return Err(InterceptError::Corrupt {
                path: self.pending_dir(),
                reason: "invalid copy id".into(),
            });
        }
        let bytes = frame(record, content)?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.copy", record.copy_id));
        let dst = self.pending_dir().join(format!("{}.copy", record.copy_id));
        write_durably(&tmp, &dst, &bytes)
    }

    /// The pending copy files, oldest copy id first.
    pub fn list(&self) -> Result<Vec<PathBuf>, InterceptError> {
        let dir = self.pending_dir();
        let mut out = Vec::new();
        for item in fs::read_dir(&dir).map_err(io(&dir))? {
            let item = item.map_err(io(&dir))?;
            let path = item.path();
            let ok = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".copy"))
                .is_some_and(is_copy_id);
            if ok {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    /// How many copies wait for handover.
    pub fn pending(&self) -> usize {
        self.list().map(|l| l.len()).unwrap_or(0)
    }

    /// Reads one copy back and checks its framing.
    pub fn read(&self, path: &Path) -> Result<Copy, InterceptError> {
        let framed = fs::read(path).map_err(io(path))?;
        let corrupt = |reason: &str| InterceptError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let end = framed
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| corrupt("no IRI line"))?;
        let record: IriRecord =
            serde_json::from_slice(&framed[..end]).map_err(|_| corrupt("IRI line is not valid"))?;
        let rest = &framed[end + 1..];
        match record.product() {
            Some(Product::Iri) if rest.is_empty() => {}
            Some(Product::IriCc) => {
                let header = format!("CC {}\n", record.size);
                let body = rest
                    .strip_prefix(header.as_bytes())
                    .ok_or_else(|| corrupt("CC header does not match the size"))?;
                if body.len() as u64 != record.size {
                    return Err(corrupt("content length does not match the size"));
                }
            }
            _ => return Err(corrupt("unexpected bytes or product")),
        }
        Ok(Copy {
            path: path.to_owned(),
            record,
            framed,
        })
    }

    /// Deletes a handed-over copy and fsyncs the directory.
    pub fn remove(&self, copy: &Copy) -> Result<(), InterceptError> {
        fs::remove_file(&copy.path).map_err(io(&copy.path))?;
        sync_dir(&self.pending_dir())
    }
}
