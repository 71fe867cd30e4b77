//! The sink MTA: accepts everything over STARTTLS, keeps nothing, and records the arrival
//! time of each message carrying an `X-Bench-Id: RUN.SEQ` header as the line `SEQ NS` in
//! `RECORD_DIR/RUN.arrivals` (NS: wall-clock nanoseconds when the final `.` was read, just
//! before the `250`).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Longest command line the sink reads.
const MAX_COMMAND: usize = 4096;

pub struct Sink {
    pub hostname: String,
    pub acceptor: TlsAcceptor,
    pub record_dir: PathBuf,
    files: Mutex<HashMap<String, std::fs::File>>,
    pub messages: AtomicU64,
    pub unmarked: AtomicU64,
}

impl Sink {
    pub fn new(hostname: String, tls: Arc<rustls::ServerConfig>, record_dir: PathBuf) -> Self {
        Self {
            hostname,
            acceptor: TlsAcceptor::from(tls),
            record_dir,
            files: Mutex::new(HashMap::new()),
            messages: AtomicU64::new(0),
            unmarked: AtomicU64::new(0),
        }
    }

    /// Accepts connections on `addr` forever.
    pub async fn serve(self: Arc<Self>, addr: SocketAddr) -> Result<()> {
        let listener = TcpListener::bind(addr).await?;
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hopguard-sink: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let sink = self.clone();
            tokio::spawn(async move {
                if let Err(e) = sink.connection(tcp).await {
                    eprintln!("hopguard-sink: session: {e:#}");
                }
            });
        }
    }

    async fn connection(&self, tcp: tokio::net::TcpStream) -> Result<()> {
        let mut r = BufReader::new(tcp);
        r.write_all(format!("220 {} ESMTP hopguard-sink\r\n", self.hostname).as_bytes())
            .await?;
        let Some(r) = self.session(r, false).await? else {
            return Ok(());
        };
        // STARTTLS: nothing may have been pipelined behind it (RFC 3207 §4.2).
        if !r.buffer().is_empty() {
            bail!("data pipelined behind STARTTLS");
        }
        let tls = self.acceptor.accept(r.into_inner()).await?;
        let r = BufReader::with_capacity(64 * 1024, tls);
        self.session(r, true).await?;
        Ok(())
    }

    /// Serves commands; returns the reader when the client asked for STARTTLS (already
    /// answered with 220), `None` when the session ended.
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut r: BufReader<S>,
        tls: bool,
    ) -> Result<Option<BufReader<S>>> {
        let mut line = Vec::with_capacity(256);
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        loop {
            // Answer everything read so far once no more pipelined input is buffered.
            if r.buffer().is_empty() && !out.is_empty() {
                r.write_all(&out).await?;
                r.flush().await?;
                out.clear();
            }
            line.clear();
            let n = r.read_until(b'\n', &mut line).await?;
            if n == 0 {
                return Ok(None);
            }
            if line.len() > MAX_COMMAND {
                bail!("command line too long");
            }
            let cmd = String::from_utf8_lossy(&line);
            let upper = cmd.trim_end().to_ascii_uppercase();
            let verb = upper.split(' ').next().unwrap_or("");
            match verb {
                "EHLO" => {
                    out.extend_from_slice(
                        format!(
                            "250-{}\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n\
                             250-ENHANCEDSTATUSCODES\r\n{}250 SMTPUTF8\r\n",
                            self.hostname,
                            if tls { "" } else { "250-STARTTLS\r\n" }
                        )
                        .as_bytes(),
                    );
                }
                "HELO" => out.extend_from_slice(format!("250 {}\r\n", self.hostname).as_bytes()),
                "STARTTLS" if !tls => {
                    out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                    r.write_all(&out).await?;
                    r.flush().await?;
                    return Ok(Some(r));
                }
                "MAIL" | "RCPT" | "RSET" | "NOOP" => out.extend_from_slice(b"250 2.0.0 OK\r\n"),
                "DATA" => {
                    out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                    r.write_all(&out).await?;
                    r.flush().await?;
                    out.clear();
                    self.data(&mut r).await?;
                    out.extend_from_slice(b"250 2.0.0 OK discarded\r\n");
                }
                "QUIT" => {
                    out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                    r.write_all(&out).await?;
                    r.flush().await?;
                    return Ok(None);
                }
                _ => out.extend_from_slice(b"502 5.5.2 Command not implemented\r\n"),
            }
        }
    }

    /// Reads message data to `CRLF.CRLF`, then records the arrival.
    async fn data<S: AsyncRead + AsyncWrite + Unpin>(&self, r: &mut BufReader<S>) -> Result<()> {
        let mut line = Vec::with_capacity(1024);
        let mut in_headers = true;
        let mut id: Option<String> = None;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).await?;
            if n == 0 {
                bail!("connection closed in DATA");
            }
            if line == b".\r\n" {
                break;
            }
            if in_headers {
                if line == b"\r\n" {
                    in_headers = false;
                } else if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"x-bench-id:") {
                    id = Some(String::from_utf8_lossy(&line[11..]).trim().to_string());
                }
            }
        }
        let t = crate::now_ns();
        self.messages.fetch_add(1, Ordering::Relaxed);
        match id.as_deref().and_then(|id| id.rsplit_once('.')) {
            Some((run, seq)) if valid_run(run) => self.record(run, seq, t),
            _ => {
                self.unmarked.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn record(&self, run: &str, seq: &str, t: u64) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if !files.contains_key(run) {
            let path = self.record_dir.join(format!("{run}.arrivals"));
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => {
                    files.insert(run.to_string(), f);
                }
                Err(e) => {
                    eprintln!("hopguard-sink: {}: {e}", path.display());
                    return;
                }
            }
        }
        if let Some(f) = files.get_mut(run) {
            // One write(2) per line on an O_APPEND file: readers never see half a line
            // except at the very end, which they skip.
            let _ = f.write_all(format!("{seq} {t}\n").as_bytes());
        }
    }
}

/// Run ids are `[A-Za-z0-9_-]+` (they become file names).
pub fn valid_run(run: &str) -> bool {
    !run.is_empty()
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
