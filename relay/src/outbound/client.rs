//! The outbound SMTP client: greeting, EHLO, STARTTLS under a TLS plan, one transaction
//! per message, connection kept for the next message to the same destination.
//!
//! A `HopSecurity` proof is needed to send MAIL FROM: it is made only by `establish`, after a
//! TLS handshake whose verifier enforced the requirement, or for a plaintext hop when the
//! requirement explicitly allows it. No other path reaches MAIL FROM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hopguard_policy::{DaneOutcome, HopTls as Plan, ResultType, VerifyMethod};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::emit::Stuffer;
use crate::config::Outbound as OutboundCfg;
use crate::spool::MessageRef;
use crate::spool::{Body, Envelope, Recipient, Ret};

/// The spooled file holds fewer bytes than the envelope's size.
fn short_message(message: &MessageRef, got: u64, size: u64) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("{message}: {got} of {size} message bytes"),
    ))
}

/// A reply to DATA is 354 or a refusal (4xx/5xx). Anything else — a 2xx would read as
/// "delivered" for a message never sent — means the replies are out of step: the session is
/// dropped and the message waits.
fn data_reply_sane(r: &SmtpReply) -> Result<(), ClientError> {
    if r.code == 354 || r.code >= 400 {
        Ok(())
    } else {
        Err(ClientError::BadReply)
    }
}

/// Messages up to this size are read whole and sent in one write.
const SMALL_MESSAGE: u64 = 256 * 1024;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A parsed SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
    /// The enhanced status code of the first line, if any (`4.7.0`).
    pub fn status(&self) -> Option<String> {
        let first = self.lines.first()?;
        let token = first.split_whitespace().next()?;
        let parts: Vec<&str> = token.split('.').collect();
        let ok = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
        ok.then(|| token.to_string())
    }
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection to {0} failed: {1}")]
    Connect(SocketAddr, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("malformed reply from the next hop")]
    BadReply,
    #[error("next hop refused the session: {}", .0.text())]
    Refused(SmtpReply),
    /// TLS could not be established as required.
    #[error("{}: {detail}", .reason.explain())]
    Tls { reason: ResultType, detail: String },
}

/// Capabilities from an EHLO reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub starttls: bool,
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub requiretls: bool,
}

impl Capabilities {
    pub fn parse(reply: &SmtpReply) -> Self {
        let mut c = Self::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let kw = words.next().unwrap_or("").to_ascii_uppercase();
            match kw.as_str() {
                "STARTTLS" => c.starttls = true,
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = words.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0),
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "REQUIRETLS" => c.requiretls = true,
                _ => {}
            }
        }
        c
    }
}

/// What protected this hop: the TLS facts, and the requirement they satisfied.
#[derive(Clone, Debug)]
pub struct HopSecurity {
    /// The TLS plan this hop satisfied.
    pub plan: Plan,
    /// How the certificate was authenticated (meaningful with TLS only).
    pub method: VerifyMethod,
    pub tls: Option<SessionTls>,
}

impl HopSecurity {
    /// How the certificate was authenticated on this hop (`none` without TLS).
    pub fn verify_method(&self) -> hopguard_policy::VerifyMethod {
        match self.tls {
            Some(_) => self.method,
            None => hopguard_policy::VerifyMethod::None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SessionTls {
    pub version: String,
    pub cipher: String,
    /// SHA-256 of the peer's end-entity certificate (hex).
    pub cert_sha256: Option<String>,
    /// SHA-256 of its SubjectPublicKeyInfo (hex).
    pub spki_sha256: Option<String>,
    /// Its notAfter (Unix seconds).
    pub not_after: Option<i64>,
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (hex), if the certificate parses.
pub fn spki_sha256(cert: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(hex::encode(Sha256::digest(
        ee.subject_public_key_info().as_ref(),
    )))
}

/// An established, policy-satisfying session ready for transactions.
pub struct Session {
    stream: Box<dyn Stream>,
    rbuf: Vec<u8>,
    pub caps: Capabilities,
    /// The proof: set only by `establish`, read-only afterwards.
    security: HopSecurity,
    pub remote: String,
    pub messages: usize,
    /// Where the requirement this session satisfied came from (set by the router).
    pub source: Option<hopguard_policy::PolicySource>,
    /// The verdicts of the policies observed, not enforced, on this session (set by the router).
    pub observed: Vec<crate::evidence::Observed>,
    /// The destination's published policies, for TLS-RPT (set by the router).
    pub policy_strings: crate::evidence::PolicyStrings,
    timeouts: OutboundCfg,
}

async fn read_reply<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    rbuf: &mut Vec<u8>,
    timeout: Duration,
    what: &'static str,
) -> Result<SmtpReply, ClientError> {
    const MAX_REPLY: usize = 64 * 1024;
    let mut lines = Vec::new();
    let mut code = 0u16;
    loop {
        if let Some(pos) = rbuf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = rbuf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 3 {
                return Err(ClientError::BadReply);
            }
            let c: u16 = line
                .get(..3)
                .and_then(|d| d.parse().ok())
                .ok_or(ClientError::BadReply)?;
            if !(200..600).contains(&c) || (code != 0 && c != code) {
                return Err(ClientError::BadReply);
            }
            code = c;
            let sep = line.as_bytes().get(3).copied();
            lines.push(line.get(4..).unwrap_or("").to_string());
            match sep {
                Some(b'-') => continue,
                Some(b' ') | None => return Ok(SmtpReply { code, lines }),
                _ => return Err(ClientError::BadReply),
            }
        }
        if rbuf.len() > MAX_REPLY || lines.len() > 200 {
            return Err(ClientError::BadReply);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(timeout, stream.read(&mut chunk))
            .await
            .map_err(|_| ClientError::Timeout(what))??;
        if n == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        rbuf.extend_from_slice(&chunk[..n]);
    }
}

async fn send_line<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    line: &str,
) -> Result<(), ClientError> {
    let mut buf = Vec::with_capacity(line.len() + 2);
    buf.extend_from_slice(line.as_bytes());
    buf.extend_from_slice(b"\r\n");
    // A next hop that stops reading never holds a delivery forever (RFC 5321 §4.5.3.2: five
    // minutes for a command).
    tokio::time::timeout(Duration::from_secs(300), async {
        stream.write_all(&buf).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| ClientError::Timeout("command write"))??;
    Ok(())
}

/// Connects to `addr`, negotiates TLS as `required` demands, and returns a session.
pub async fn establish(
    addr: SocketAddr,
    reference_name: &str,
    required: &Plan,
    tls_config: Arc<rustls::ClientConfig>,
    dane: Option<DaneOutcome>,
    helo_name: &str,
    cfg: &OutboundCfg,
) -> Result<Session, ClientError> {
    let tcp = tokio::time::timeout(cfg.connect_timeout.0, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Connect(addr, "timed out".into()))?
        .map_err(|e| ClientError::Connect(addr, e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut tcp = tcp;
    let mut rbuf = Vec::new();
    let greeting = read_reply(&mut tcp, &mut rbuf, cfg.greeting_timeout.0, "greeting").await?;
    if !greeting.is_ok() {
        return Err(ClientError::Refused(greeting));
    }
    send_line(&mut tcp, &format!("EHLO {helo_name}")).await?;
    let ehlo = read_reply(&mut tcp, &mut rbuf, cfg.command_timeout.0, "EHLO reply").await?;
    let caps = if ehlo.is_ok() {
        Capabilities::parse(&ehlo)
    } else {
        Capabilities::default()
    };
    let remote = format!("{reference_name}[{}]", addr.ip());

    if !caps.starttls {
        if required.allows_plaintext() && ehlo.is_ok() {
            return Ok(Session {
                stream: Box::new(tcp),
                rbuf,
                caps,
                security: HopSecurity {
                    plan: required.clone(),
                    method: VerifyMethod::None,
                    tls: None,
                },
                remote,
                messages: 0,
                source: None,
                observed: Vec::new(),
                policy_strings: Default::default(),
                timeouts: cfg.clone(),
            });
        }
        let _ = send_line(&mut tcp, "QUIT").await;
        return Err(ClientError::Tls {
            reason: ResultType::StarttlsNotSupported,
            detail: format!("{remote} did not offer STARTTLS"),
        });
    }
    send_line(&mut tcp, "STARTTLS").await?;
    let r = read_reply(&mut tcp, &mut rbuf, cfg.command_timeout.0, "STARTTLS reply").await?;
    if r.code != 220 {
        return Err(ClientError::Tls {
            reason: ResultType::StarttlsNotSupported,
            detail: format!("{remote} refused STARTTLS: {}", r.text()),
        });
    }
    // CVE-2011-0411 class, client side: bytes after the 220 would be read as if they came
    // through TLS. A next hop that sends them is dropped.
    if !rbuf.is_empty() {
        return Err(ClientError::Tls {
            reason: ResultType::ValidationFailure,
            detail: format!(
                "{remote} sent {} bytes after its 220 to STARTTLS",
                rbuf.len()
            ),
        });
    }
    let server_name =
        ServerName::try_from(reference_name.to_string()).map_err(|_| ClientError::Tls {
            reason: ResultType::CertificateHostMismatch,
            detail: format!("`{reference_name}` is not a usable TLS server name"),
        })?;
    let connector = tokio_rustls::TlsConnector::from(tls_config);
    let tls = tokio::time::timeout(cfg.command_timeout.0, connector.connect(server_name, tcp))
        .await
        .map_err(|_| ClientError::Timeout("TLS handshake"))?
        .map_err(|e| ClientError::Tls {
            reason: super::tls::classify_tls_error(&e),
            detail: format!("{remote}: {e}"),
        })?;
    let (_, conn) = tls.get_ref();
    let hop_tls = SessionTls {
        version: conn
            .protocol_version()
            .map(crate::inbound::tls::version_name)
            .unwrap_or("TLS")
            .to_string(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(crate::inbound::tls::suite_name)
            .unwrap_or_default(),
        cert_sha256: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| hex::encode(Sha256::digest(c.as_ref()))),
        spki_sha256: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(spki_sha256),
        not_after: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| super::certinfo::not_after(c.as_ref())),
    };
    // The verifier enforced the plan during the handshake; for DANE it also says which
    // TLSA record matched (RFC 7672 §3.1.1 EE, §3.1.2 TA).
    let method = match (required, dane.as_ref().and_then(|d| d.get())) {
        (Plan::Dane { .. }, Some(Ok(m))) => m.verify_method(),
        (Plan::Dane { .. }, _) => {
            return Err(ClientError::Tls {
                reason: ResultType::TlsaInvalid,
                detail: format!("{remote}: no TLSA record matched"),
            })
        }
        (plan, _) => plan.verify_method().unwrap_or(VerifyMethod::None),
    };
    let mut stream: Box<dyn Stream> = Box::new(tls);
    // RFC 3207 §4.2: forget what we learnt before TLS; EHLO again.
    send_line(&mut stream, &format!("EHLO {helo_name}")).await?;
    let ehlo = read_reply(&mut stream, &mut rbuf, cfg.command_timeout.0, "EHLO reply").await?;
    if !ehlo.is_ok() {
        return Err(ClientError::Refused(ehlo));
    }
    Ok(Session {
        stream,
        rbuf,
        caps: Capabilities::parse(&ehlo),
        security: HopSecurity {
            plan: required.clone(),
            method,
            tls: Some(hop_tls),
        },
        remote,
        messages: 0,
        source: None,
        observed: Vec::new(),
        policy_strings: Default::default(),
        timeouts: cfg.clone(),
    })
}

/// The result of one transaction, per recipient (same order as given).
#[derive(Debug)]
pub enum TxnOutcome {
    /// The whole transaction failed before any recipient was accepted or at DATA.
    All(SmtpReply),
    /// Per recipient: the RCPT reply if refused, else the final DATA reply.
    PerRecipient(Vec<SmtpReply>),
}

/// A local refusal to send (the next hop lacks something the message needs).
#[derive(Debug)]
pub struct Unsendable {
    pub code: u16,
    pub status: &'static str,
    pub text: String,
}

/// xtext encoding (RFC 3461 §4) for ENVID and ORCPT.
fn xtext(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

impl Session {
    /// What protected this hop (the requirement it satisfied and the TLS facts).
    pub fn security(&self) -> &HopSecurity {
        &self.security
    }

    /// Checks what the message needs against what the next hop offers.
    pub fn check_sendable(&self, env: &Envelope) -> Result<(), Unsendable> {
        if env.requiretls {
            // RFC 8689 §5: next hop must offer REQUIRETLS over an authenticated TLS session.
            let authenticated = self.security.tls.is_some() && self.security.plan.authenticated();
            if !self.caps.requiretls || !authenticated {
                return Err(Unsendable {
                    code: 550,
                    status: "5.7.30",
                    text: "REQUIRETLS support required: the next hop does not offer REQUIRETLS over an authenticated TLS session".into(),
                });
            }
        }
        if env.smtputf8 && !self.caps.smtputf8 {
            return Err(Unsendable {
                code: 553,
                status: "5.6.7",
                text: "the message needs SMTPUTF8 and the next hop does not support it".into(),
            });
        }
        if let Some(max) = self.caps.size {
            if env.size > max {
                return Err(Unsendable {
                    code: 552,
                    status: "5.3.4",
                    text: format!(
                        "the message ({} bytes) exceeds the next hop's size limit ({max} bytes)",
                        env.size
                    ),
                });
            }
        }
        Ok(())
    }

    /// The message as this next hop can take it: `None` to send it as stored; the bytes made
    /// 7-bit for a next hop without 8BITMIME when the message is declared 8-bit (RFC 6152 §3);
    /// `Unsendable` (5.6.3) when it cannot be converted.
    pub async fn prepare(
        &mut self,
        env: &Envelope,
        message: &MessageRef,
    ) -> Result<Result<Option<Vec<u8>>, Unsendable>, ClientError> {
        if env.body != Body::EightBitMime || self.caps.eightbitmime {
            return Ok(Ok(None));
        }
        let (m, size) = (message.clone(), env.size);
        let bytes = tokio::task::spawn_blocking(move || m.read(size))
            .await
            .map_err(std::io::Error::other)??;
        if (bytes.len() as u64) < size {
            return Err(short_message(message, bytes.len() as u64, size));
        }
        // Pure CPU work, bounded by the message size limit: off the async workers.
        let converted = tokio::task::spawn_blocking(move || super::downconvert::to_7bit(&bytes))
            .await
            .map_err(std::io::Error::other)?;
        Ok(converted.map_err(|e| Unsendable {
            code: 554,
            status: "5.6.3",
            text: format!(
                "the next hop does not support 8BITMIME and the message cannot be converted to 7 bits: {}",
                e.0
            ),
        }))
    }

    /// Runs one transaction. The `HopSecurity` inside this session is the proof MAIL needs.
    /// `prepared`: the message bytes to send instead of the stored ones ([`Self::prepare`]).
    pub async fn send(
        &mut self,
        env: &Envelope,
        rcpts: &[&Recipient],
        message: &MessageRef,
        prepared: Option<&[u8]>,
    ) -> Result<TxnOutcome, ClientError> {
        self.messages += 1;
        let ct = self.timeouts.command_timeout.0;
        let mut mail = format!("MAIL FROM:<{}>", env.mail_from);
        if self.caps.size.is_some() {
            let size = prepared.map_or(env.size, |p| p.len() as u64);
            mail.push_str(&format!(" SIZE={size}"));
        }
        if env.body == Body::EightBitMime && self.caps.eightbitmime {
            mail.push_str(" BODY=8BITMIME");
        }
        if env.smtputf8 && self.caps.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if env.requiretls && self.caps.requiretls {
            mail.push_str(" REQUIRETLS");
        }
        if self.caps.dsn {
            match env.ret {
                Some(Ret::Full) => mail.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(id) = &env.envid {
                mail.push_str(&format!(" ENVID={}", xtext(id)));
            }
        }
        let rcpt_lines: Vec<String> = rcpts
            .iter()
            .map(|r| {
                let mut l = format!("RCPT TO:<{}>", r.address);
                if self.caps.dsn {
                    if let Some(n) = notify_param(r.notify) {
                        l.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some(o) = &r.orcpt {
                        l.push_str(&format!(" ORCPT=rfc822;{}", xtext(o)));
                    }
                }
                l
            })
            .collect();

        // RFC 2920: with PIPELINING, MAIL, all RCPTs and DATA go in one write (DATA is the
        // last command of the group).
        let (mail_reply, rcpt_replies) = if self.caps.pipelining {
            let mut batch = String::new();
            batch.push_str(&mail);
            batch.push_str("\r\n");
            for l in &rcpt_lines {
                batch.push_str(l);
                batch.push_str("\r\n");
            }
            batch.push_str("DATA\r\n");
            self.stream.write_all(batch.as_bytes()).await?;
            self.stream.flush().await?;
            let m = read_reply(&mut self.stream, &mut self.rbuf, ct, "MAIL reply").await?;
            let mut rr = Vec::new();
            for _ in &rcpt_lines {
                rr.push(read_reply(&mut self.stream, &mut self.rbuf, ct, "RCPT reply").await?);
            }
            let data = read_reply(&mut self.stream, &mut self.rbuf, ct, "DATA reply").await?;
            data_reply_sane(&data)?;
            let accepted = m.is_ok() && rr.iter().any(SmtpReply::is_ok);
            if data.code == 354 && !accepted {
                // A server that took DATA with no valid recipient: end an empty message, and
                // whatever it says, nothing was sent.
                send_line(&mut self.stream, ".").await?;
                let _ =
                    read_reply(&mut self.stream, &mut self.rbuf, ct, "end-of-data reply").await?;
            }
            if !m.is_ok() {
                self.rset().await?;
                return Ok(TxnOutcome::All(m));
            }
            if !accepted {
                self.rset().await?;
                return Ok(TxnOutcome::PerRecipient(rr));
            }
            if data.code != 354 {
                self.rset().await?;
                return Ok(TxnOutcome::All(data));
            }
            (m, rr)
        } else {
            send_line(&mut self.stream, &mail).await?;
            let m = read_reply(&mut self.stream, &mut self.rbuf, ct, "MAIL reply").await?;
            let mut rr = Vec::new();
            if m.is_ok() {
                for l in &rcpt_lines {
                    send_line(&mut self.stream, l).await?;
                    rr.push(read_reply(&mut self.stream, &mut self.rbuf, ct, "RCPT reply").await?);
                }
            }
            (m, rr)
        };
        if !mail_reply.is_ok() {
            self.rset().await?;
            return Ok(TxnOutcome::All(mail_reply));
        }
        if !rcpt_replies.iter().any(SmtpReply::is_ok) {
            self.rset().await?;
            return Ok(TxnOutcome::PerRecipient(rcpt_replies));
        }
        if !self.caps.pipelining {
            send_line(&mut self.stream, "DATA").await?;
            let r = read_reply(&mut self.stream, &mut self.rbuf, ct, "DATA reply").await?;
            data_reply_sane(&r)?;
            if r.code != 354 {
                self.rset().await?;
                return Ok(TxnOutcome::All(r));
            }
        }
        match prepared {
            Some(bytes) => self.send_whole(bytes).await?,
            None => self.stream_message(message, env.size).await?,
        }
        let done = read_reply(
            &mut self.stream,
            &mut self.rbuf,
            self.timeouts.data_timeout.0,
            "end-of-data reply",
        )
        .await?;
        Ok(TxnOutcome::PerRecipient(
            rcpt_replies
                .into_iter()
                .map(|r| if r.is_ok() { done.clone() } else { r })
                .collect(),
        ))
    }

    /// Sends a whole message held in memory, dot-stuffed, and the end-of-data mark, in one write.
    async fn send_whole(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let dt = self.timeouts.data_timeout.0;
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 64 + 5);
        let mut stuffer = Stuffer::default();
        stuffer.feed(bytes, &mut out);
        stuffer.finish(&mut out);
        tokio::time::timeout(dt, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout("data write"))??;
        Ok(())
    }

    /// Sends the first `size` bytes of the spooled message (in a message file, the envelope
    /// embedded after it is not part of it), dot-stuffed.
    async fn stream_message(&mut self, message: &MessageRef, size: u64) -> Result<(), ClientError> {
        let dt = self.timeouts.data_timeout.0;
        let large_file = message.path().filter(|_| size > SMALL_MESSAGE);
        let Some(path) = large_file else {
            // Read whole, then message and end-of-data mark go in one write. A segment record
            // (already open) was just written, so it is in the page cache: read in place. A
            // file takes one blocking hand-off for open + read (a backlog after a restart may
            // be cold).
            let bytes = match message {
                MessageRef::Segment { .. } => message.read(size)?,
                MessageRef::File(_) => {
                    let m = message.clone();
                    tokio::task::spawn_blocking(move || m.read(size))
                        .await
                        .map_err(std::io::Error::other)??
                }
            };
            if (bytes.len() as u64) < size {
                return Err(short_message(message, bytes.len() as u64, size));
            }
            return self.send_whole(&bytes).await;
        };
        // Read in 256 KiB pieces through a blocking thread, the buffer moving there and back
        // (no copy); never past `size` (the embedded envelope follows the message).
        const PIECE: usize = 256 * 1024;
        let mut file: Option<std::fs::File> = None;
        let mut buf = vec![0u8; PIECE];
        let mut sent = 0u64;
        let mut stuffer = Stuffer::default();
        let mut out = Vec::with_capacity(PIECE + PIECE / 32);
        while sent < size {
            let want = usize::try_from(size - sent).unwrap_or(PIECE).min(PIECE);
            let f = file.take();
            let p = path.to_path_buf();
            let b = std::mem::take(&mut buf);
            let (f, b, n) = tokio::task::spawn_blocking(
                move || -> std::io::Result<(std::fs::File, Vec<u8>, usize)> {
                    use std::io::Read;
                    let mut f = match f {
                        Some(f) => f,
                        None => std::fs::File::open(&p)?,
                    };
                    let mut b = b;
                    let mut n = 0;
                    while n < want {
                        match f.read(&mut b[n..want]) {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((f, b, n))
                },
            )
            .await
            .map_err(std::io::Error::other)??;
            file = Some(f);
            buf = b;
            if n == 0 {
                break;
            }
            sent += n as u64;
            out.clear();
            stuffer.feed(&buf[..n], &mut out);
            tokio::time::timeout(dt, self.stream.write_all(&out))
                .await
                .map_err(|_| ClientError::Timeout("data write"))??;
        }
        if sent < size {
            // Never end DATA on a truncated message: the session is dropped, the message waits.
            return Err(short_message(message, sent, size));
        }
        out.clear();
        stuffer.finish(&mut out);
        tokio::time::timeout(dt, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout("data write"))??;
        Ok(())
    }

    async fn rset(&mut self) -> Result<(), ClientError> {
        send_line(&mut self.stream, "RSET").await?;
        read_reply(
            &mut self.stream,
            &mut self.rbuf,
            self.timeouts.command_timeout.0,
            "RSET reply",
        )
        .await?;
        Ok(())
    }

    pub async fn quit(mut self) {
        if send_line(&mut self.stream, "QUIT").await.is_ok() {
            let _ = read_reply(
                &mut self.stream,
                &mut self.rbuf,
                Duration::from_secs(5),
                "QUIT reply",
            )
            .await;
        }
        let _ = self.stream.shutdown().await;
    }
}

fn notify_param(flags: u64) -> Option<String> {
    use smtp_proto::{
        RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    };
    if flags & RCPT_NOTIFY_NEVER != 0 {
        return Some("NEVER".into());
    }
    let mut v = Vec::new();
    if flags & RCPT_NOTIFY_SUCCESS != 0 {
        v.push("SUCCESS");
    }
    if flags & RCPT_NOTIFY_FAILURE != 0 {
        v.push("FAILURE");
    }
    if flags & RCPT_NOTIFY_DELAY != 0 {
        v.push("DELAY");
    }
    (!v.is_empty()).then(|| v.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            version: crate::spool::ENVELOPE_VERSION,
            id: String::new(),
            node_id: "n".into(),
            received_at: 1,
            received_ms: 0,
            client_ip: "127.0.0.1".into(),
            helo: "c".into(),
            peer: None,
            tls: None,
            mail_from: "a@b.test".into(),
            body: Body::Unspecified,
            smtputf8: false,
            requiretls: false,
            tls_required_no: false,
            ret: None,
            envid: None,
            size: 0,
            message_id_hash: None,
            recipients: rcpts
                .iter()
                .map(|a| Recipient {
                    address: (*a).into(),
                    domain: "y.test".into(),
                    orcpt: None,
                    notify: 0,
                    status: Default::default(),
                    last_failure: None,
                    notified: false,
                })
                .collect(),
            attempts: 0,
            next_attempt: 0,
            is_bounce: false,
        }
    }

    /// A scripted next hop with PIPELINING and no STARTTLS: answers each line in `script`
    /// (`(expected line, reply)`; a reply is written once every line of its group is read).
    /// Returns the lines it read.
    async fn scripted(
        replies: Vec<(&'static str, &'static str)>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 test\r\n").await.unwrap();
            let mut seen = Vec::new();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return seen;
                }
                let line = line.trim_end().to_string();
                seen.push(line.clone());
                if in_data {
                    if line == "." {
                        in_data = false;
                        w.write_all(replies_for(&replies, ".").as_bytes())
                            .await
                            .unwrap();
                    }
                    continue;
                }
                let reply = replies_for(&replies, &line);
                if line == "DATA" && reply.starts_with("354") {
                    in_data = true;
                }
                w.write_all(reply.as_bytes()).await.unwrap();
                if line == "QUIT" {
                    return seen;
                }
            }
        });
        (addr, task)
    }

    fn replies_for(replies: &[(&'static str, &'static str)], line: &str) -> String {
        let up = line.to_ascii_uppercase();
        replies
            .iter()
            .find(|(p, _)| up.starts_with(p))
            .map(|(_, r)| format!("{r}\r\n"))
            .unwrap_or_else(|| "250 ok\r\n".into())
    }

    async fn session(addr: SocketAddr) -> Session {
        let tls = super::super::tls::OutboundTls::new(false, None).unwrap();
        let (cfg, _) = tls.config_for(&Plan::Opportunistic, "mx.test", Default::default());
        establish(
            addr,
            "mx.test",
            &Plan::Opportunistic,
            cfg,
            None,
            "relay.test",
            &OutboundCfg::default(),
        )
        .await
        .unwrap()
    }

    async fn spooled(body: &[u8], rcpts: &[&str]) -> (tempfile::TempDir, Envelope, MessageRef) {
        let d = tempfile::tempdir().unwrap();
        let spool = crate::spool::Spool::open(d.path()).unwrap();
        let c = spool.inject(envelope(rcpts), body).await.unwrap();
        let env = spool.load(c.id()).unwrap();
        let path = spool.message(c.id());
        (d, env, path)
    }

    #[tokio::test]
    async fn pipelined_transaction_sends_data_in_the_group_and_only_the_message() {
        let (addr, server) = scripted(vec![
            ("EHLO", "250-mx.test\r\n250 PIPELINING"),
            ("DATA", "354 go"),
            (".", "250 queued"),
        ])
        .await;
        let (_d, env, path) = spooled(b"Subject: s\r\n\r\n.dot\r\n", &["x@y.test"]).await;
        let mut s = session(addr).await;
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let out = s.send(&env, &rcpts, &path, None).await.unwrap();
        assert!(
            matches!(&out, TxnOutcome::PerRecipient(v) if v.len() == 1 && v[0].code == 250),
            "{out:?}"
        );
        s.quit().await;
        let seen = server.await.unwrap();
        let at = seen.iter().position(|l| l.starts_with("MAIL")).unwrap();
        assert!(
            seen[at + 1].starts_with("RCPT") && seen[at + 2] == "DATA",
            "{seen:?}"
        );
        // The message (dot-stuffed), then the end mark; never the embedded envelope.
        assert_eq!(
            &seen[at + 3..at + 7],
            ["Subject: s", "", "..dot", "."],
            "{seen:?}"
        );
        assert!(!seen
            .iter()
            .any(|l| l.contains("HGENV1") || l.contains("mail_from")));
    }

    #[tokio::test]
    async fn a_2xx_to_data_is_out_of_step_never_delivered() {
        let (addr, server) = scripted(vec![
            ("EHLO", "250-mx.test\r\n250 PIPELINING"),
            ("DATA", "250 shifted"),
        ])
        .await;
        let (_d, env, path) = spooled(b"Subject: s\r\n\r\nsecret\r\n", &["x@y.test"]).await;
        let mut s = session(addr).await;
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let out = s.send(&env, &rcpts, &path, None).await;
        assert!(matches!(out, Err(ClientError::BadReply)), "{out:?}");
        drop(s);
        let seen = server.await.unwrap();
        assert!(!seen.iter().any(|l| l.contains("secret")), "{seen:?}");
    }

    #[tokio::test]
    async fn a_large_message_streams_whole_and_stuffed_from_its_file() {
        let (addr, server) = scripted(vec![
            ("EHLO", "250-mx.test\r\n250 PIPELINING"),
            ("DATA", "354 go"),
            (".", "250 queued"),
        ])
        .await;
        // Over the spill size, so a file of its own read in pieces; lines with a leading dot
        // fall on both sides of the piece boundaries.
        let mut body = b"Subject: big\r\n\r\n".to_vec();
        let mut n = 0;
        while body.len() < 700 * 1024 {
            body.extend_from_slice(format!(".line {n}-{}\r\n", "x".repeat(n % 97)).as_bytes());
            n += 1;
        }
        let (_d, env, path) = spooled(&body, &["x@y.test"]).await;
        assert!(path.path().is_some(), "a file of its own");
        let mut s = session(addr).await;
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let out = s.send(&env, &rcpts, &path, None).await.unwrap();
        assert!(
            matches!(&out, TxnOutcome::PerRecipient(v) if v[0].code == 250),
            "{out:?}"
        );
        s.quit().await;
        let seen = server.await.unwrap();
        let start = seen.iter().position(|l| l == "DATA").unwrap() + 1;
        let end = seen.iter().rposition(|l| l == ".").unwrap();
        let got: Vec<&str> = seen[start..end].iter().map(|l| l.as_str()).collect();
        let want: Vec<String> = String::from_utf8(body)
            .unwrap()
            .split("\r\n")
            .map(|l| {
                if l.starts_with('.') {
                    format!(".{l}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        // The body ends with CRLF: the split leaves one empty string after it.
        assert_eq!(got.len(), want.len() - 1);
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("line {i}: got {:?}, want {:?}", got[i], want[i]);
        }
    }

    #[tokio::test]
    async fn an_8bit_message_is_converted_for_a_next_hop_without_8bitmime() {
        let (addr, server) = scripted(vec![
            ("EHLO", "250-mx.test\r\n250-SIZE 100000\r\n250 PIPELINING"),
            ("DATA", "354 go"),
            (".", "250 queued"),
        ])
        .await;
        let body = "Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n.Grüße\r\n";
        let (_d, mut env, path) = spooled(body.as_bytes(), &["x@y.test"]).await;
        env.body = Body::EightBitMime;
        let mut s = session(addr).await;
        let prepared = s.prepare(&env, &path).await.unwrap().unwrap();
        assert!(prepared.is_some());
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let out = s
            .send(&env, &rcpts, &path, prepared.as_deref())
            .await
            .unwrap();
        assert!(
            matches!(&out, TxnOutcome::PerRecipient(v) if v[0].code == 250),
            "{out:?}"
        );
        s.quit().await;
        let seen = server.await.unwrap();
        let mail = seen.iter().find(|l| l.starts_with("MAIL")).unwrap();
        assert!(!mail.contains("BODY="), "{mail}");
        let size = prepared.as_ref().unwrap().len();
        assert!(
            mail.ends_with(&format!("SIZE={size}")),
            "the converted size: {mail}"
        );
        let at = seen.iter().position(|l| l == "DATA").unwrap();
        assert_eq!(
            &seen[at + 1..at + 7],
            [
                "Subject: s",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: quoted-printable",
                "",
                "..Gr=C3=BC=C3=9Fe",
                "."
            ],
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn an_8bit_message_goes_unchanged_where_8bitmime_is_offered_or_refused_if_unconvertible()
    {
        let (addr, _server) = scripted(vec![("EHLO", "250-mx.test\r\n250 8BITMIME")]).await;
        let (_d, mut env, path) =
            spooled("Subject: é\r\n\r\né\r\n".as_bytes(), &["x@y.test"]).await;
        env.body = Body::EightBitMime;
        let mut s = session(addr).await;
        assert!(matches!(s.prepare(&env, &path).await, Ok(Ok(None))));
        let (addr, _server) = scripted(vec![("EHLO", "250 mx.test")]).await;
        let mut s = session(addr).await;
        match s.prepare(&env, &path).await {
            Ok(Err(u)) => assert_eq!((u.code, u.status), (554, "5.6.3"), "{}", u.text),
            other => panic!("{other:?}"),
        }
        // Declared 7-bit (or undeclared): never touched.
        env.body = Body::Unspecified;
        assert!(matches!(s.prepare(&env, &path).await, Ok(Ok(None))));
    }

    #[tokio::test]
    async fn a_short_spool_file_never_ends_data() {
        let (addr, server) = scripted(vec![
            ("EHLO", "250-mx.test\r\n250 PIPELINING"),
            ("DATA", "354 go"),
        ])
        .await;
        let (_d, mut env, path) = spooled(b"Subject: s\r\n\r\nbody\r\n", &["x@y.test"]).await;
        // The envelope claims more bytes than the file has before its trailer... and beyond.
        let stored = match &path {
            MessageRef::File(p) => std::fs::metadata(p).unwrap().len(),
            MessageRef::Segment { file, .. } => file.metadata().unwrap().len(),
        };
        env.size = stored + 10;
        let mut s = session(addr).await;
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let out = s.send(&env, &rcpts, &path, None).await;
        assert!(matches!(out, Err(ClientError::Io(_))), "{out:?}");
        drop(s);
        let seen = server.await.unwrap();
        assert!(!seen.iter().any(|l| l == "."), "{seen:?}");
    }

    #[tokio::test]
    async fn pipelined_data_accepted_without_recipients_is_ended_empty() {
        let (addr, server) = scripted(vec![
            ("EHLO", "250-mx.test\r\n250 PIPELINING"),
            ("RCPT", "550 5.1.1 no such user"),
            ("DATA", "354 go"),
            (".", "554 5.5.1 no valid recipients"),
        ])
        .await;
        let (_d, env, path) = spooled(b"Subject: s\r\n\r\nsecret\r\n", &["x@y.test"]).await;
        let mut s = session(addr).await;
        let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
        let out = s.send(&env, &rcpts, &path, None).await.unwrap();
        assert!(
            matches!(&out, TxnOutcome::PerRecipient(v) if v[0].code == 550),
            "{out:?}"
        );
        s.quit().await;
        let seen = server.await.unwrap();
        assert!(!seen.iter().any(|l| l.contains("secret")), "{seen:?}");
        let data = seen.iter().position(|l| l == "DATA").unwrap();
        assert_eq!(seen[data + 1], ".", "{seen:?}");
        assert!(seen.iter().any(|l| l == "RSET"), "{seen:?}");
    }

    #[tokio::test]
    async fn parses_multiline_replies_and_capabilities() {
        let data = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250 8BITMIME\r\n".to_vec();
        let mut rd: &[u8] = &data;
        let mut rbuf = Vec::new();
        let r = read_reply(&mut rd, &mut rbuf, Duration::from_secs(1), "t")
            .await
            .unwrap();
        assert_eq!(r.code, 250);
        let c = Capabilities::parse(&r);
        assert!(c.pipelining && c.starttls && c.eightbitmime && !c.smtputf8);
        assert_eq!(c.size, Some(1000));
    }

    #[tokio::test]
    async fn rejects_malformed_replies() {
        for bad in [
            &b"2x0 hi\r\n"[..],
            b"250-a\r\n550 b\r\n",
            b"999 x\r\n",
            b"25\r\n",
        ] {
            let mut rd: &[u8] = bad;
            let mut rbuf = Vec::new();
            assert!(
                read_reply(&mut rd, &mut rbuf, Duration::from_secs(1), "t")
                    .await
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn enhanced_status_and_xtext() {
        let r = SmtpReply {
            code: 450,
            lines: vec!["4.7.1 try later".into()],
        };
        assert_eq!(r.status().as_deref(), Some("4.7.1"));
        let r = SmtpReply {
            code: 450,
            lines: vec!["try later".into()],
        };
        assert_eq!(r.status(), None);
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    }
}
