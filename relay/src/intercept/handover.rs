//! Handover of queued copies: to the mediation endpoint over mutual TLS (one framed copy, then
//! wait for `ACK <copy_id>`), or into a root-only directory. A local copy is deleted only after
//! the ACK (or after the directory entry is durable); while the target is unreachable, copies
//! wait and the task retries with exponential backoff. Nothing is logged through `tracing`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::copies::{self, root_only_dir, Copy};
use super::{now_text, set, tls, wire, Handover, Inner, InterceptError};
use crate::audit::LiEvent;

/// First wait after a failed handover round.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between rounds while the target is unreachable.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ACK_LINE: usize = 256;

/// The resolved handover target (TLS material loaded once, at start).
pub(crate) enum Target {
    Directory(PathBuf),
    Mediation {
        address: SocketAddr,
        server_name: ServerName<'static>,
        config: Arc<ClientConfig>,
    },
}

impl Target {
    pub(crate) fn new(h: &Handover) -> Result<Self, InterceptError> {
        match h {
            Handover::Directory(dir) => {
                root_only_dir(dir)?;
                Ok(Self::Directory(dir.clone()))
            }
            Handover::Mediation {
                address,
                server_name,
                ca_file,
                cert_file,
                key_file,
            } => {
                let server_name = ServerName::try_from(server_name.clone()).map_err(|_| {
                    InterceptError::Config(format!(
                        "handover.mediation.server_name `{server_name}` is not a DNS name or IP"
                    ))
                })?;
                Ok(Self::Mediation {
                    address: *address,
                    server_name,
                    config: tls::mediation_client(ca_file, cert_file, key_file)?,
                })
            }
        }
    }
}

/// The handover task: runs for the life of the relay.
pub(crate) async fn run(inner: Arc<Inner>, target: Target) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let pending = inner.queue.list().unwrap_or_default();
        if pending.is_empty() {
            inner.wake.notified().await;
            continue;
        }
        let result = match &target {
            Target::Directory(dir) => to_directory(&inner, dir, pending).await,
            Target::Mediation {
                address,
                server_name,
                config,
            } => to_mediation(&inner, *address, server_name, config, pending).await,
        };
        let failed = result.is_err();
        match result {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                set(&inner.health.last_ok, Some(now_text()));
                set(&inner.health.last_error, None);
            }
            Err(e) => set(&inner.health.last_error, Some((now_text(), e.to_string()))),
        }
        inner.progress.send_modify(|n| *n += 1);
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = inner.retry.notified() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Reads a copy; a corrupt one is set aside in `corrupt/` (it would block the queue).
async fn read(inner: &Arc<Inner>, path: PathBuf) -> Result<Option<Copy>, InterceptError> {
    let i = inner.clone();
    let result = blocking(move || match i.queue.read(&path) {
        Ok(c) => Ok(Some(c)),
        Err(InterceptError::Corrupt { .. }) => {
            let dir = i.queue.root().join("corrupt");
            root_only_dir(&dir)?;
            if let Some(name) = path.file_name() {
                let _ = std::fs::rename(&path, dir.join(name));
            }
            i.health.failures.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
        Err(e) => Err(e),
    })
    .await?;
    Ok(result)
}

/// Deletes the local copy and audits the handover.
async fn done(inner: &Arc<Inner>, copy: Copy) -> Result<(), InterceptError> {
    let i = inner.clone();
    blocking(move || {
        i.queue.remove(&copy)?;
        i.health.handed_over.fetch_add(1, Ordering::Relaxed);
        let r = &copy.record;
        i.audit
            .copy(LiEvent::CopyHandedOver, &r.liid, &r.queue_id, &r.product)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InterceptError> + Send + 'static,
) -> Result<T, InterceptError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InterceptError::Handover(format!("blocking task failed: {e}")))?
}

async fn to_directory(
    inner: &Arc<Inner>,
    dir: &Path,
    pending: Vec<PathBuf>,
) -> Result<(), InterceptError> {
    for path in pending {
        let Some(copy) = read(inner, path).await? else {
            continue;
        };
        let id = copy.record.copy_id.clone();
        let tmp = dir.join(format!(".{id}.tmp"));
        let dst = dir.join(format!("{id}.li"));
        let bytes = copy.framed.clone();
        blocking(move || copies::write_durably(&tmp, &dst, &bytes)).await?;
        done(inner, copy).await?;
    }
    Ok(())
}

fn wire_err(what: &str, e: impl std::fmt::Display) -> InterceptError {
    InterceptError::Handover(format!("mediation endpoint: {what}: {e}"))
}

async fn to_mediation(
    inner: &Arc<Inner>,
    address: SocketAddr,
    server_name: &ServerName<'static>,
    config: &Arc<ClientConfig>,
    pending: Vec<PathBuf>,
) -> Result<(), InterceptError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|e| wire_err("connect", e))?
        .map_err(|e| wire_err("connect", e))?;
    let connector = TlsConnector::from(config.clone());
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name.clone(), tcp))
        .await
        .map_err(|e| wire_err("TLS handshake", e))?
        .map_err(|e| wire_err("TLS handshake", e))?;
    let mut stream = BufReader::new(tls);
    for path in pending {
        let Some(copy) = read(inner, path).await? else {
            continue;
        };
        stream
            .write_all(&copy.framed)
            .await
            .map_err(|e| wire_err("send", e))?;
        stream.flush().await.map_err(|e| wire_err("send", e))?;
        let line = tokio::time::timeout(ACK_TIMEOUT, wire::read_line(&mut stream, MAX_ACK_LINE))
            .await
            .map_err(|e| wire_err("waiting for ACK", e))?
            .map_err(|e| wire_err("waiting for ACK", e))?
            .ok_or_else(|| wire_err("waiting for ACK", "connection closed"))?;
        let expected = format!("ACK {}", copy.record.copy_id);
        if line != expected.as_bytes() {
            return Err(InterceptError::Handover(
                "mediation endpoint: answer is not the expected ACK".into(),
            ));
        }
        done(inner, copy).await?;
    }
    let _ = stream.get_mut().shutdown().await;
    Ok(())
}
