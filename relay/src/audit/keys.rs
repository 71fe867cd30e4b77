//! The node's audit keys: Ed25519 checkpoint key pair (PEM) and the Message-ID hash key.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::AuditError;

/// The private key file (PKCS#8 PEM, mode 0600). Stays on the node.
pub const PRIVATE_KEY_FILE: &str = "audit-key.pem";
/// The public key file (SPKI PEM). Handed to whoever verifies the log.
pub const PUBLIC_KEY_FILE: &str = "audit-key.pub.pem";
/// The Message-ID hash key (hex, mode 0600). Stays with the operator.
pub const MESSAGE_ID_KEY_FILE: &str = "message-id.key";
/// Shortest Message-ID key accepted, in bytes.
pub const MESSAGE_ID_KEY_MIN_BYTES: usize = 16;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// 32 bytes from the kernel's CSPRNG.
fn urandom32() -> Result<[u8; 32], AuditError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err(path))?;
    Ok(bytes)
}

/// Creates `path` (never overwriting) with `mode`, writes `contents` and fsyncs it.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), AuditError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => AuditError::KeyExists(path.to_owned()),
            _ => AuditError::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))
}

/// Writes a new key pair into `dir`: `audit-key.pem` (PKCS#8 PEM, mode 0600) and
/// `audit-key.pub.pem` (SPKI PEM, mode 0644), from 32 bytes of /dev/urandom.
/// Refuses to overwrite either file. Returns (private key path, public key path).
pub fn generate_keypair(dir: &Path) -> Result<(PathBuf, PathBuf), AuditError> {
    let private = dir.join(PRIVATE_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    for path in [&private, &public] {
        if path.exists() {
            return Err(AuditError::KeyExists(path.clone()));
        }
    }
    let key = SigningKey::from_bytes(&urandom32()?);
    let private_pem =
        key.to_pkcs8_pem(LineEnding::LF)
            .map_err(|source| AuditError::PrivateKey {
                path: private.clone(),
                source,
            })?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|source| AuditError::PublicKey {
            path: public.clone(),
            source,
        })?;
    write_new(&private, private_pem.as_bytes(), 0o600)?;
    write_new(&public, public_pem.as_bytes(), 0o644)?;
    Ok((private, public))
}

/// Loads the node's checkpoint signing key (PKCS#8 PEM).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, AuditError> {
    let pem = fs::read_to_string(path).map_err(io_err(path))?;
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        tracing::warn!(path = %path.display(), "the audit signing key is world-readable");
    }
    SigningKey::from_pkcs8_pem(&pem).map_err(|source| AuditError::PrivateKey {
        path: path.to_owned(),
        source,
    })
}

/// Loads an audit public key (SPKI PEM), as given to a verifier.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, AuditError> {
    let pem = fs::read_to_string(path).map_err(io_err(path))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|source| AuditError::PublicKey {
        path: path.to_owned(),
        source,
    })
}

/// Writes a new Message-ID hash key, `message-id.key` in `dir`: 32 random bytes as 64 hex
/// digits and a newline, mode 0600. Refuses to overwrite.
pub fn generate_message_id_key(dir: &Path) -> Result<PathBuf, AuditError> {
    let path = dir.join(MESSAGE_ID_KEY_FILE);
    let mut text = hex::encode(urandom32()?);
    text.push('\n');
    write_new(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

/// Loads the Message-ID hash key: hex digits (at least 32, i.e. 16 bytes), surrounding
/// whitespace ignored.
pub fn load_message_id_key(path: &Path) -> Result<Vec<u8>, AuditError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let text = text.trim();
    let bad = || AuditError::MessageIdKey {
        path: path.to_owned(),
        min: MESSAGE_ID_KEY_MIN_BYTES * 2,
    };
    let key = hex::decode(text).map_err(|_| bad())?;
    if key.len() < MESSAGE_ID_KEY_MIN_BYTES {
        return Err(bad());
    }
    Ok(key)
}
