//! MTA-STS (RFC 8461) at the edge: the `_mta-sts` TXT lookup, the policy fetch over HTTPS and
//! the persistent cache; the decisions themselves are `hopguard_policy::mta_sts` (pure).
//!
//! The fetch follows RFC 8461 §3.3: `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, the
//! server's certificate PKIX-valid for that name, no redirects, `Content-Type: text/plain`, a
//! timeout and a 64 KiB body limit. The cache (one JSON file per domain under
//! `spool_dir/mta-sts/`) survives restarts; an unexpired cached policy applies when a fetch
//! fails, and a TXT change alone never downgrades it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hopguard_policy::mta_sts::parse_policy;
use hopguard_policy::mta_sts::{
    after_fetch, cache_action, without_fetch, CacheAction, CachedPolicy, TxtLookup,
};
use hopguard_policy::{ResultType, StsPolicy, StsState};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::dns::Dns;

/// RFC 8461 §3.3: the policy body is at most 64 KiB.
pub const MAX_POLICY: usize = 64 * 1024;
const MAX_RESPONSE: usize = MAX_POLICY + 16 * 1024;
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize)]
struct CacheFile {
    id: String,
    fetched_at: u64,
    body: String,
}

pub struct MtaSts {
    dns: Dns,
    cache_dir: PathBuf,
    port: u16,
}

fn now() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

impl MtaSts {
    pub fn new(dns: Dns, cache_dir: PathBuf, port: u16) -> Self {
        Self {
            dns,
            cache_dir,
            port,
        }
    }

    fn cache_path(&self, domain: &str) -> Option<PathBuf> {
        crate::config::is_domain_name(domain).then(|| self.cache_dir.join(format!("{domain}.json")))
    }

    fn load(&self, domain: &str) -> Option<CachedPolicy> {
        let text = std::fs::read_to_string(self.cache_path(domain)?).ok()?;
        let f: CacheFile = serde_json::from_str(&text).ok()?;
        let policy = parse_policy(f.body.as_bytes()).ok()?;
        Some(CachedPolicy {
            policy,
            id: f.id,
            fetched_at: f.fetched_at,
        })
    }

    fn store(&self, domain: &str, id: &str, body: &str) {
        let Some(path) = self.cache_path(domain) else {
            return;
        };
        let _ = std::fs::create_dir_all(&self.cache_dir);
        let f = CacheFile {
            id: id.to_string(),
            fetched_at: now(),
            body: body.to_string(),
        };
        let tmp = path.with_extension("tmp");
        if let Ok(json) = serde_json::to_vec(&f) {
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }

    /// Policy entries in the cache (the `hopguard_mta_sts_cache_entries` gauge).
    pub fn cache_entries(&self) -> usize {
        std::fs::read_dir(&self.cache_dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Where MTA-STS stands for `domain` now, and the fetch failure if one happened.
    pub async fn state(
        &self,
        domain: &str,
        pkix: Arc<rustls::ClientConfig>,
    ) -> (StsState, Option<ResultType>) {
        let txt = match self.dns.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => {
                let refs: Vec<&str> = records.iter().map(String::as_str).collect();
                match hopguard_policy::mta_sts::parse_txt(&refs) {
                    Ok(t) => TxtLookup::Found(t.id),
                    Err(_) => TxtLookup::Absent,
                }
            }
            Err(_) => TxtLookup::Failed,
        };
        let cached = self.load(domain);
        let t = now();
        let action = cache_action(cached.as_ref(), &txt, t);
        if action != CacheAction::Refetch {
            return (without_fetch(cached.as_ref(), action, t), None);
        }
        let id = match &txt {
            TxtLookup::Found(id) => id.clone(),
            _ => String::new(),
        };
        let fetched = self.fetch(domain, pkix).await;
        let failure = fetched.as_ref().err().copied();
        if let Ok((_, body)) = &fetched {
            self.store(domain, &id, body);
            info!(domain, id = %id, "MTA-STS policy fetched");
        }
        (
            after_fetch(cached.as_ref(), fetched.map(|(p, _)| p), t),
            failure,
        )
    }

    /// Fetches and parses the policy; the error is the RFC 8460 result type.
    async fn fetch(
        &self,
        domain: &str,
        pkix: Arc<rustls::ClientConfig>,
    ) -> Result<(StsPolicy, String), ResultType> {
        let host = format!("mta-sts.{domain}");
        let fut = async {
            let addrs = self
                .dns
                .addresses(&host)
                .await
                .map_err(|_| ResultType::StsPolicyFetchError)?;
            let mut last = ResultType::StsPolicyFetchError;
            for ip in addrs {
                match self
                    .fetch_from(SocketAddr::new(ip, self.port), &host, pkix.clone())
                    .await
                {
                    Ok(body) => {
                        let policy = parse_policy(body.as_bytes()).map_err(|e| e.result_type())?;
                        return Ok((policy, body));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        match tokio::time::timeout(FETCH_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(ResultType::StsPolicyFetchError),
        }
    }

    async fn fetch_from(
        &self,
        addr: SocketAddr,
        host: &str,
        pkix: Arc<rustls::ClientConfig>,
    ) -> Result<String, ResultType> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ResultType::StsPolicyFetchError)?;
        let name =
            ServerName::try_from(host.to_string()).map_err(|_| ResultType::StsPolicyFetchError)?;
        let mut tls = tokio_rustls::TlsConnector::from(pkix)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                debug!(host, error = %e, "MTA-STS policy host TLS failed");
                ResultType::StsWebpkiInvalid
            })?;
        let req = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hopguard\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(req.as_bytes())
            .await
            .map_err(|_| ResultType::StsPolicyFetchError)?;
        let mut resp = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = match tls.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => n,
                // A server that closes without close_notify still sent a complete response.
                Err(_) if !resp.is_empty() => break,
                Err(_) => return Err(ResultType::StsPolicyFetchError),
            };
            resp.extend_from_slice(&chunk[..n]);
            if resp.len() > MAX_RESPONSE {
                return Err(ResultType::StsPolicyInvalid);
            }
        }
        parse_response(&resp)
    }
}

/// Checks an HTTP/1.1 response: status 200 only (no redirects, RFC 8461 §3.3), media type
/// `text/plain`, body within the limit (chunked bodies are decoded).
fn parse_response(resp: &[u8]) -> Result<String, ResultType> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(ResultType::StsPolicyFetchError)?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let raw_body = &resp[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(ResultType::StsPolicyFetchError);
    }
    let mut content_type = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_ascii_lowercase();
            if k == "content-type" {
                content_type = Some(v);
            } else if k == "transfer-encoding" && v.contains("chunked") {
                chunked = true;
            }
        }
    }
    let media = content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim);
    if media != Some("text/plain") {
        return Err(ResultType::StsPolicyInvalid);
    }
    let body = if chunked {
        dechunk(raw_body).ok_or(ResultType::StsPolicyFetchError)?
    } else {
        raw_body.to_vec()
    };
    if body.len() > MAX_POLICY {
        return Err(ResultType::StsPolicyInvalid);
    }
    String::from_utf8(body).map_err(|_| ResultType::StsPolicyInvalid)
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = rest.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        if out.len() > MAX_POLICY {
            return None;
        }
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let ok =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nversion: STSv1\r\n";
        assert_eq!(parse_response(ok).unwrap(), "version: STSv1\r\n");
        let chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), "hello world");
        let rows: [(&[u8], ResultType); 4] = [
            (
                b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\nContent-Type: text/plain\r\n\r\n",
                ResultType::StsPolicyFetchError,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nversion: STSv1\r\n",
                ResultType::StsPolicyInvalid,
            ),
            (
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n",
                ResultType::StsPolicyFetchError,
            ),
            (b"garbage", ResultType::StsPolicyFetchError),
        ];
        for (resp, want) in rows {
            assert_eq!(
                parse_response(resp),
                Err(want),
                "{}",
                String::from_utf8_lossy(resp)
            );
        }
        let mut big = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_POLICY + 1));
        assert_eq!(parse_response(&big), Err(ResultType::StsPolicyInvalid));
    }
}
