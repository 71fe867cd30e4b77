//! SMTP clients that submit to the relay: swaks (the user's real client) and a raw
//! byte-exact client with STARTTLS for protocol probes (injection, smuggling).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::ca::root_store_from_pem;

/// What swaks did: its exit status and everything it printed (the full SMTP transcript).
#[derive(Debug)]
pub struct SwaksOutput {
    pub status: ExitStatus,
    pub output: String,
}

impl SwaksOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs `swaks ARGS...` (Debian package swaks) with no stdin.
pub fn swaks(args: &[&str]) -> Result<SwaksOutput> {
    let out = Command::new("swaks")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running swaks (Debian package swaks)")?;
    Ok(SwaksOutput {
        status: out.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// One message as swaks sends it: `X-Hopguard-Test: MARKER` header and the marker in the body.
#[derive(Clone, Debug)]
pub struct SwaksMail<'a> {
    pub server: SocketAddr,
    /// Source address of the connection (`--local-interface`).
    pub source: Option<Ipv4Addr>,
    pub from: &'a str,
    pub to: &'a str,
    /// Use STARTTLS (`--tls`: swaks fails if it is not offered).
    pub tls: bool,
    pub marker: &'a str,
}

impl SwaksMail<'_> {
    /// Sends it; `Ok` even when the server refuses (check `success()`).
    pub fn send(&self) -> Result<SwaksOutput> {
        let server = self.server.to_string();
        let header = format!("X-Hopguard-Test: {}", self.marker);
        let body = format!("Test message {}.\nSecond line.\n", self.marker);
        let mut args = vec![
            "--server",
            &server,
            "--from",
            self.from,
            "--to",
            self.to,
            "--ehlo",
            "client.test",
            "--header",
            &header,
            "--body",
            &body,
            "--timeout",
            "30",
        ];
        let source = self.source.map(|s| s.to_string());
        if let Some(s) = &source {
            args.extend(["--local-interface", s]);
        }
        if self.tls {
            args.push("--tls");
        }
        swaks(&args)
    }
}

/// One SMTP reply: code and text lines (without the `NNN-` prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code (RFC 3463) at the start of the first line, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let parts: Vec<&str> = first.split('.').collect();
        let ok = parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(first)
    }

    /// All lines joined by newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn is_multiline(&self) -> bool {
        self.lines.len() > 1
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, l) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            writeln!(f, "{}{sep}{l}", self.code)?;
        }
        Ok(())
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed TLS handshake.
    Closed,
}

/// A raw SMTP client: writes exactly the bytes it is given, reads replies line by line.
///
/// Bytes the server sends beyond the reply being read stay buffered: [`RawSmtp::buffered`]
/// shows them, and the TLS upgrade refuses to start while any are pending.
pub struct RawSmtp {
    conn: Conn,
    buf: Vec<u8>,
    timeout: Duration,
}

/// How long one read may wait for the server.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl RawSmtp {
    /// Connects to `server` (from `source` if given); the greeting is not read yet.
    pub async fn connect(server: SocketAddr, source: Option<Ipv4Addr>) -> Result<Self> {
        let sock = TcpSocket::new_v4()?;
        if let Some(src) = source {
            sock.bind(SocketAddr::from((src, 0)))
                .with_context(|| format!("binding {src}"))?;
        }
        let stream = tokio::time::timeout(READ_TIMEOUT, sock.connect(server))
            .await
            .map_err(|_| anyhow!("connecting to {server}: timeout"))?
            .with_context(|| format!("connecting to {server}"))?;
        Ok(Self {
            conn: Conn::Plain(stream),
            buf: Vec::new(),
            timeout: READ_TIMEOUT,
        })
    }

    /// Connects and reads the greeting, which must be 220.
    pub async fn connect_greeted(server: SocketAddr, source: Option<Ipv4Addr>) -> Result<Self> {
        let mut c = Self::connect(server, source).await?;
        let greeting = c.read_reply().await?;
        if greeting.code != 220 {
            bail!("greeting from {server} is not 220:\n{greeting}");
        }
        Ok(c)
    }

    /// Writes `bytes` exactly as given, in one write.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.conn {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await?;
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await?;
            }
            Conn::Closed => bail!("connection is closed"),
        }
        Ok(())
    }

    /// Sends `line` + CRLF and reads one reply.
    pub async fn cmd(&mut self, line: &str) -> Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Sends EHLO and requires a 250 reply.
    pub async fn ehlo(&mut self, name: &str) -> Result<Reply> {
        let r = self.cmd(&format!("EHLO {name}")).await?;
        if r.code != 250 {
            bail!("EHLO refused:\n{r}");
        }
        Ok(r)
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> Result<Reply> {
        self.read_reply_or_eof()
            .await?
            .ok_or_else(|| anyhow!("connection closed before a reply"))
    }

    /// Reads one reply, or `None` if the server closed the connection cleanly before one.
    pub async fn read_reply_or_eof(&mut self) -> Result<Option<Reply>> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        loop {
            let Some(line) = self.read_line().await? else {
                if lines.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed inside a multi-line reply");
            };
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(|b| b.is_ascii_digit()) {
                bail!("malformed reply line {line:?}");
            }
            let c: u16 = line[..3].parse()?;
            if !lines.is_empty() && c != code {
                bail!("reply code changed inside a multi-line reply: {line:?}");
            }
            code = c;
            let more = bytes.get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(Some(Reply { code, lines }));
            }
        }
    }

    /// Reads replies until the server closes the connection.
    pub async fn read_until_close(&mut self) -> Result<Vec<Reply>> {
        let mut replies = Vec::new();
        while let Some(r) = self.read_reply_or_eof().await? {
            replies.push(r);
        }
        Ok(replies)
    }

    /// Bytes received but not yet consumed as a reply.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Sends STARTTLS, requires 220, then does the TLS handshake (see [`Self::tls_handshake`]).
    pub async fn starttls(&mut self, ca_pem: &Path, server_name: &str) -> Result<()> {
        let r = self.cmd("STARTTLS").await?;
        if r.code != 220 {
            bail!("STARTTLS refused:\n{r}");
        }
        self.tls_handshake(ca_pem, server_name).await
    }

    /// TLS handshake on the connection, trusting only the CA(s) in `ca_pem` and verifying the
    /// server certificate for `server_name`. Refuses if the server sent bytes after its 220
    /// (they would otherwise be read as if they came inside TLS: CVE-2011-0411 class).
    pub async fn tls_handshake(&mut self, ca_pem: &Path, server_name: &str) -> Result<()> {
        if !self.buf.is_empty() {
            bail!(
                "server sent {:?} after its STARTTLS reply, before the TLS handshake",
                String::from_utf8_lossy(&self.buf)
            );
        }
        let roots = root_store_from_pem(ca_pem)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| anyhow!("bad server name {server_name:?}: {e}"))?;
        let Conn::Plain(stream) = std::mem::replace(&mut self.conn, Conn::Closed) else {
            bail!("TLS is already active");
        };
        let tls = tokio::time::timeout(
            self.timeout,
            TlsConnector::from(Arc::new(config)).connect(name, stream),
        )
        .await
        .map_err(|_| anyhow!("TLS handshake timed out"))?
        .context("TLS handshake")?;
        self.conn = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// The negotiated TLS version (e.g. `TLSv1_3`), once TLS is active.
    pub fn tls_version(&self) -> Option<String> {
        match &self.conn {
            Conn::Tls(s) => s.get_ref().1.protocol_version().map(|v| format!("{v:?}")),
            Conn::Plain(_) | Conn::Closed => None,
        }
    }

    async fn read_line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(self.timeout, self.read_some(&mut chunk))
                .await
                .map_err(|_| anyhow!("no reply within {:?}", self.timeout))??;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!(
                    "connection closed after a partial line {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read_some(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.conn {
            Conn::Plain(s) => s.read(chunk).await,
            Conn::Tls(s) => match s.read(chunk).await {
                // A peer that closes without close_notify ends the stream all the same.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
            Conn::Closed => Ok(0),
        }
    }
}
