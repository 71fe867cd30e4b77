//! TLS-RPT reports to an `https:` rua (RFC 8460 §5.4): one HTTP/1.1 `POST` of the gzipped JSON
//! report as `application/tlsrpt+gzip`.
//!
//! The URL's host is resolved with the relay's resolver, the server's certificate must be
//! PKIX-valid for that host (system roots plus `tls.ca_file`, the same anchors as MTA-STS), and
//! only a 2xx answer counts as delivered: redirects are not followed, any other status, a TLS
//! failure or the timeout is a failure the caller reports. Hand-written HTTP/1.1 over
//! tokio-rustls like the MTA-STS fetch; only the response head is read, with a size limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hopguard_policy::{HopTls, PkixTrust, TlsVersion};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dns::Dns;
use crate::outbound::tls::OutboundTls;

/// The whole POST (resolution, every address tried, the answer) must finish within this.
pub const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// The response head (status line and header fields) may be at most this long.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// The media type of a gzipped report (RFC 8460 §6.4).
pub const CONTENT_TYPE: &str = "application/tlsrpt+gzip";

/// The parts of an `https://` rua needed to POST to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Lowercased DNS name or IPv4 literal.
    pub host: String,
    pub port: u16,
    /// The request target: path and query, `/` when the URL has none; never the fragment.
    pub path: String,
}

impl HttpsUrl {
    /// Parses `https://HOST[:PORT][/PATH][?QUERY][#FRAGMENT]`. Refuses other schemes (`http:`
    /// too), spaces, control and non-ASCII characters, user info, an empty host, a host that
    /// is not a DNS name or IPv4 address (IPv6 literals are not supported) and port 0.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = super::tlsrpt::strip_scheme(url, "https://")
            .ok_or_else(|| "not an https:// URL".to_string())?;
        if url
            .chars()
            .any(|c| !c.is_ascii() || c.is_ascii_control() || c == ' ')
        {
            return Err("space, control or non-ASCII character in the URL".into());
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err("user info in the URL".into());
        }
        if authority.starts_with('[') {
            return Err("IPv6 literal hosts are not supported".into());
        }
        let (host, port) = match authority.split_once(':') {
            None => (authority, 443),
            Some((h, "")) => (h, 443),
            Some((h, p)) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => (h, n),
                _ => return Err(format!("bad port {p:?}")),
            },
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !crate::config::is_domain_name(&host) {
            return Err(format!("bad host {host:?}"));
        }
        let path = tail.split('#').next().unwrap_or_default();
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok(Self { host, port, path })
    }

    /// The `Host` header value: the port only when it is not 443.
    fn host_header(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The client configuration for report POSTs: PKIX with the relay's anchors.
pub fn pkix_config(tls: &OutboundTls) -> Arc<rustls::ClientConfig> {
    let (config, _) = tls.config_for(
        &HopTls::Pkix {
            name: String::new(),
            trust: PkixTrust::webpki(),
        },
        "",
        TlsVersion::Tls12,
    );
    config
}

/// The HTTP request: head and `body`.
fn request(url: &HttpsUrl, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hopguard\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// POSTs `body` (the gzipped report) to `url`; `Ok` carries the 2xx status. Each address of
/// the host is tried in turn until one answers over verified TLS; its HTTP answer is final.
pub async fn post_report(
    dns: &Dns,
    pkix: Arc<rustls::ClientConfig>,
    url: &str,
    body: &[u8],
) -> Result<u16, String> {
    let url = HttpsUrl::parse(url)?;
    let req = request(&url, body);
    let fut = async {
        let addrs = dns
            .addresses(&url.host)
            .await
            .map_err(|e| format!("resolving {e}"))?;
        if addrs.is_empty() {
            return Err(format!("{} has no address", url.host));
        }
        let mut last = String::new();
        for ip in addrs {
            let addr = SocketAddr::new(ip, url.port);
            match post_to(addr, &url.host, pkix.clone(), &req).await {
                Ok(head) => return status(&head),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(POST_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", POST_TIMEOUT.as_secs())),
    }
}

/// Sends `req` to `addr` over TLS verified for `host`; returns the response head (status line
/// and header fields) once the server has answered.
async fn post_to(
    addr: SocketAddr,
    host: &str,
    pkix: Arc<rustls::ClientConfig>,
    req: &[u8],
) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(pkix)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    tls.write_all(req)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    tls.flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut resp = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            resp.truncate(end);
            return Ok(resp);
        }
        if resp.len() > MAX_RESPONSE_HEAD {
            return Err(format!(
                "response head longer than {MAX_RESPONSE_HEAD} bytes"
            ));
        }
        match tls.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&chunk[..n]),
            // A server that closes without close_notify may still have answered.
            Err(_) if !resp.is_empty() => break,
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    if resp.is_empty() {
        return Err("connection closed without a response".into());
    }
    Ok(resp)
}

/// The status of a response head: `Ok` for 2xx; redirects and every other status are errors.
fn status(head: &[u8]) -> Result<u16, String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok());
    let printable: String = line.chars().take(80).filter(|c| !c.is_control()).collect();
    match code {
        Some(c) if version.starts_with("HTTP/1.") => match c {
            200..=299 => Ok(c),
            300..=399 => Err(format!("HTTP {c} (redirects are not followed)")),
            _ => Err(format!("HTTP {c}: {printable}")),
        },
        _ => Err(format!("not an HTTP/1.x response: {printable:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpsUrl::parse("https://Rpt.Example./v1/tlsrpt?x=1#frag").unwrap();
        assert_eq!(
            u,
            HttpsUrl {
                host: "rpt.example".into(),
                port: 443,
                path: "/v1/tlsrpt?x=1".into()
            }
        );
        assert_eq!(u.host_header(), "rpt.example");
        let u = HttpsUrl::parse("HTTPS://192.0.2.1:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("192.0.2.1", 8443, "/")
        );
        assert_eq!(u.host_header(), "192.0.2.1:8443");
        assert_eq!(HttpsUrl::parse("https://r.example:?q").unwrap().path, "/?q");
        for bad in [
            "",
            "https://",
            "https:",
            "http://r.example/",
            "https://r.example:+443/",
            "https://r.example:65536/",
            "https://r.example:x/",
            "https://u:p@r.example/",
            "https://[2001:db8::1]/x",
            "https://[::1",
            "https://r.example/\u{7f}",
            "https://r.example/\u{e9}",
            "https://-bad-.example/",
            "https://r..example/",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn request_head() {
        let u = HttpsUrl::parse("https://r.example:8443/p").unwrap();
        let r = request(&u, b"\x1f\x8bdata");
        let text = String::from_utf8_lossy(&r);
        assert!(text.starts_with(
            "POST /p HTTP/1.1\r\nHost: r.example:8443\r\nUser-Agent: hopguard\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Length: 6\r\nConnection: close\r\n\r\n"
        ));
        assert!(r.ends_with(b"\x1f\x8bdata"));
    }

    #[test]
    fn statuses() {
        assert_eq!(status(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(status(b"HTTP/1.0 204 No Content\r\nX: y"), Ok(204));
        assert!(status(b"HTTP/1.1 301 Moved\r\nLocation: https://x/")
            .unwrap_err()
            .contains("redirects are not followed"));
        assert!(status(b"HTTP/1.1 500 Oops").is_err());
        assert!(status(b"HTTP/2 200").is_err());
        assert!(status(b"garbage").is_err());
        assert!(status(b"").is_err());
        assert!(status(b"HTTP/1.1 2000 OK").is_err());
    }
}
