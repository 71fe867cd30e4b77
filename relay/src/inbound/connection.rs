//! Drives one inbound connection: reads command lines under the limits, feeds the session,
//! upgrades to TLS, streams DATA/BDAT into the spool and replies only after `commit`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::data::{BdatChecker, DataDecoder, DataDefect, HeaderScan};
use super::session::{Action, Session, State};
use super::InboundContext;
use crate::evidence::{Direction, HopRecord, Outcome, TlsFacts};
use crate::smtp::Reply;
use crate::spool::{Incoming, TlsInfo};

/// The inbound hop record for the session's current state.
fn inbound_hop(session: &Session, outcome: Outcome) -> HopRecord {
    HopRecord {
        time: chrono::Utc::now(),
        message_id_hash: None,
        direction: Direction::Inbound,
        peer: session.peer().unwrap_or("other").to_string(),
        remote_ip: Some(session.client_ip()),
        remote_host: session.helo().to_string(),
        tls: session.tls().map(|t| TlsFacts {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
            cert_sha256: None,
            spki_sha256: None,
        }),
        verification: hopguard_policy::VerifyMethod::None,
        policy: None,
        outcome,
        result_type: None,
        reply_code: None,
        queue_id: None,
        size: None,
        recipients: session
            .transaction()
            .map(|t| t.recipients.len())
            .unwrap_or(0),
        latency: None,
        policy_domain: None,
        observed: Vec::new(),
        policy_strings: Default::default(),
    }
}

const READ_CHUNK: usize = 16 * 1024;
const SPOOL_FLUSH: usize = 64 * 1024;

struct Conn<S> {
    stream: S,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

enum Next {
    Close,
    StartTls,
}

enum Line {
    Complete { end: usize, bare_lf: bool },
    Incomplete,
    TooLong,
}

/// Finds the next command line in `buf`. A line ends at LF; it is well formed only as CRLF.
fn next_line(buf: &[u8], max: usize) -> Line {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i + 1 > max => Line::TooLong,
        Some(i) => Line::Complete {
            end: i + 1,
            bare_lf: i == 0 || buf[i - 1] != b'\r',
        },
        None if buf.len() >= max => Line::TooLong,
        None => Line::Incomplete,
    }
}

enum ReadOutcome {
    Data,
    Eof,
    TimedOut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.stream.flush().await
    }

    async fn reply(&mut self, r: &Reply) -> std::io::Result<()> {
        r.write_to(&mut self.wbuf);
        self.flush().await
    }

    async fn read_more(&mut self, timeout: Duration) -> std::io::Result<ReadOutcome> {
        let mut chunk = [0u8; READ_CHUNK];
        match tokio::time::timeout(timeout, self.stream.read(&mut chunk)).await {
            Err(_) => Ok(ReadOutcome::TimedOut),
            Ok(Ok(0)) => Ok(ReadOutcome::Eof),
            Ok(Ok(n)) => {
                self.rbuf.extend_from_slice(&chunk[..n]);
                Ok(ReadOutcome::Data)
            }
            Ok(Err(e)) => Err(e),
        }
    }
}

/// Serves one accepted TCP connection to the end.
pub async fn handle(
    tcp: TcpStream,
    remote: SocketAddr,
    ctx: Arc<InboundContext>,
    acceptor: TlsAcceptor,
) {
    let config = ctx.config.current();
    let fcrdns = ctx.fcrdns_peer(&config, remote.ip()).await;
    let mut session = Session::with_peer(config, remote.ip(), fcrdns.as_deref());
    run(tcp, remote, &ctx, acceptor, &mut session).await;
    let tls = session
        .tls()
        .map(|t| t.version.clone())
        .unwrap_or_else(|| "none".into());
    ctx.evidence
        .metrics
        .session_ended(session.peer().unwrap_or("other"), &tls);
}

async fn run(
    tcp: TcpStream,
    remote: SocketAddr,
    ctx: &Arc<InboundContext>,
    acceptor: TlsAcceptor,
    session: &mut Session,
) {
    let config = session.config().clone();
    let mut conn = Conn::new(tcp);
    let greeting = session.greeting();
    if conn.reply(&greeting).await.is_err() {
        return;
    }
    let next = match serve(&mut conn, session, ctx).await {
        Ok(n) => n,
        Err(e) => {
            debug!(client = %remote, error = %e, "connection ended");
            return;
        }
    };
    if !matches!(next, Next::StartTls) {
        return;
    }
    // CVE-2011-0411 class: plaintext pipelined behind STARTTLS was discarded by `serve`;
    // the handshake reads from the socket only.
    let tcp = conn.stream;
    let timeout = config.inbound.command_timeout.0;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!(client = %remote, error = %e, "inbound TLS handshake failed");
            return;
        }
        Err(_) => {
            info!(client = %remote, "inbound TLS handshake timed out");
            return;
        }
    };
    let (_, state) = tls.get_ref();
    let info = TlsInfo {
        version: state
            .protocol_version()
            .map(super::tls::version_name)
            .unwrap_or("TLS")
            .to_string(),
        cipher: state
            .negotiated_cipher_suite()
            .map(super::tls::suite_name)
            .unwrap_or_else(|| "unknown".into()),
    };
    debug!(client = %remote, tls_version = %info.version, cipher = %info.cipher, "inbound TLS established");
    session.tls_established(info);
    let mut conn = Conn::new(tls);
    if let Err(e) = serve(&mut conn, session, ctx).await {
        debug!(client = %remote, error = %e, "TLS connection ended");
    }
    let _ = conn.stream.shutdown().await;
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    session: &mut Session,
    ctx: &InboundContext,
) -> std::io::Result<Next> {
    let cfg = session.config().clone();
    let max_line = cfg.inbound.max_command_line;
    let mut bdat: Option<BdatTxn> = None;
    loop {
        let (end, bare_lf) = match next_line(&conn.rbuf, max_line) {
            Line::Complete { end, bare_lf } => (end, bare_lf),
            Line::TooLong => {
                conn.reply(&Reply::line_too_long()).await?;
                return Ok(Next::Close);
            }
            Line::Incomplete => {
                // RFC 2920: replies to a pipelined group go out when input runs dry.
                conn.flush().await?;
                match conn.read_more(cfg.inbound.command_timeout.0).await? {
                    ReadOutcome::Data => continue,
                    ReadOutcome::Eof => return Ok(Next::Close),
                    ReadOutcome::TimedOut => {
                        conn.reply(&Reply::timeout(&cfg.hostname)).await?;
                        return Ok(Next::Close);
                    }
                }
            }
        };
        let line: Vec<u8> = conn.rbuf.drain(..end).collect();
        let action = if bare_lf {
            session.bad_input(Reply::bare_lf_command())
        } else {
            match smtp_proto::Request::parse(&mut line.iter()) {
                Ok(req) => session.command(req),
                Err(e) => session.parse_error(e),
            }
        };
        if let Some(reason) = session.take_refusal() {
            let mut hop = inbound_hop(session, Outcome::Refused);
            hop.result_type = Some(reason);
            hop.reply_code = Some(530);
            ctx.evidence.record(&hop);
        }
        match action {
            Action::Reply(r) => {
                if session.transaction().is_none() {
                    bdat = None; // RSET, EHLO: a BDAT transaction under way is abandoned
                }
                r.write_to(&mut conn.wbuf)
            }
            Action::Close(r) => {
                conn.reply(&r).await?;
                return Ok(Next::Close);
            }
            Action::StartTls(r) => {
                conn.reply(&r).await?;
                if !conn.rbuf.is_empty() {
                    warn!(
                        bytes = conn.rbuf.len(),
                        "discarding plaintext pipelined after STARTTLS"
                    );
                    conn.rbuf.clear();
                }
                return Ok(Next::StartTls);
            }
            Action::ReceiveData(r) => {
                conn.reply(&r).await?;
                match receive_data(conn, session, ctx).await? {
                    Some(reply) => reply.write_to(&mut conn.wbuf),
                    None => return Ok(Next::Close),
                }
            }
            Action::ReceiveBdat { size, last } => {
                let valid = session.state() == State::ExpectData;
                match receive_bdat(conn, session, ctx, &mut bdat, size, last, valid).await? {
                    Some(reply) => reply.write_to(&mut conn.wbuf),
                    None => return Ok(Next::Close),
                }
            }
        }
    }
}

async fn start_incoming(session: &Session, ctx: &InboundContext) -> Option<Incoming> {
    match ctx.spool.incoming().await {
        Ok(mut inc) => {
            let date = chrono::Utc::now().to_rfc2822();
            let header = session.received_header(inc.id(), &date);
            match inc.write(header.as_bytes()).await {
                Ok(()) => Some(inc),
                Err(e) => {
                    warn!(error = %e, "spool write failed");
                    None
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot open spool file");
            None
        }
    }
}

/// Reads DATA to `<CRLF>.<CRLF>`; returns the final reply, or None if the client vanished.
async fn receive_data<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    session: &mut Session,
    ctx: &InboundContext,
) -> std::io::Result<Option<Reply>> {
    let cfg = session.config().clone();
    let mut incoming = start_incoming(session, ctx).await;
    let mut decoder = DataDecoder::new(cfg.inbound.max_data_line, cfg.inbound.max_message_size);
    let mut out = Vec::with_capacity(SPOOL_FLUSH * 2);
    let mut spool_failed = incoming.is_none();
    let mut headers = HeaderScan::default();
    loop {
        let before = out.len();
        let fed = decoder.feed(&conn.rbuf, &mut out);
        headers.feed(&out[before..]);
        conn.rbuf.drain(..fed.consumed);
        if decoder.defect().is_some() {
            out.clear();
        }
        if (out.len() >= SPOOL_FLUSH || fed.done) && !out.is_empty() {
            if let Some(inc) = incoming.as_mut() {
                if let Err(e) = inc.write(&out).await {
                    warn!(error = %e, "spool write failed");
                    spool_failed = true;
                    incoming = None;
                }
            }
            out.clear();
        }
        if fed.done {
            break;
        }
        match conn.read_more(cfg.inbound.data_timeout.0).await? {
            ReadOutcome::Data => {}
            ReadOutcome::Eof => return Ok(None),
            ReadOutcome::TimedOut => {
                conn.reply(&Reply::timeout(&cfg.hostname)).await?;
                return Ok(None);
            }
        }
    }
    let reply = match decoder.defect() {
        Some(DataDefect::BareCrOrLf) => Reply::bare_cr_lf_data(),
        Some(DataDefect::LineTooLong) => Reply::data_line_too_long(),
        Some(DataDefect::TooBig) => Reply::too_big(),
        None if spool_failed => Reply::spool_failure(),
        None => match incoming.take() {
            Some(inc) => commit(inc, session, ctx, &headers).await,
            None => Reply::spool_failure(),
        },
    };
    session.finish_transaction();
    Ok(Some(reply))
}

struct BdatTxn {
    incoming: Option<Incoming>,
    checker: BdatChecker,
    headers: HeaderScan,
    size: u64,
    too_big: bool,
}

#[allow(clippy::too_many_arguments)]
async fn receive_bdat<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    session: &mut Session,
    ctx: &InboundContext,
    txn: &mut Option<BdatTxn>,
    size: usize,
    last: bool,
    valid: bool,
) -> std::io::Result<Option<Reply>> {
    let cfg = session.config().clone();
    if valid && txn.is_none() {
        *txn = Some(BdatTxn {
            incoming: start_incoming(session, ctx).await,
            checker: BdatChecker::default(),
            headers: HeaderScan::default(),
            size: 0,
            too_big: false,
        });
    }
    // Read exactly `size` octets (RFC 3030 §2), keeping memory bounded by READ_CHUNK.
    let mut left = size;
    while left > 0 {
        if conn.rbuf.is_empty() {
            match conn.read_more(cfg.inbound.data_timeout.0).await? {
                ReadOutcome::Data => {}
                ReadOutcome::Eof => return Ok(None),
                ReadOutcome::TimedOut => {
                    conn.reply(&Reply::timeout(&cfg.hostname)).await?;
                    return Ok(None);
                }
            }
        }
        let n = left.min(conn.rbuf.len());
        let chunk: Vec<u8> = conn.rbuf.drain(..n).collect();
        left -= n;
        if let Some(t) = txn.as_mut() {
            t.size += n as u64;
            t.checker.feed(&chunk);
            t.headers.feed(&chunk);
            if t.size > cfg.inbound.max_message_size {
                t.too_big = true;
                t.incoming = None;
            }
            if let Some(inc) = t.incoming.as_mut() {
                if inc.write(&chunk).await.is_err() {
                    t.incoming = None;
                }
            }
        }
    }
    if !valid {
        return Ok(Some(Reply::bad_sequence("send MAIL and RCPT before BDAT")));
    }
    if !last {
        return Ok(Some(Reply::new(
            250,
            (2, 0, 0),
            format!("{size} octets received"),
        )));
    }
    let Some(t) = txn.take() else {
        return Ok(Some(Reply::spool_failure()));
    };
    let reply = if t.checker.has_bare_cr_or_lf() {
        Reply::bare_cr_lf_data()
    } else if t.too_big {
        Reply::too_big()
    } else {
        match t.incoming {
            Some(inc) => commit(inc, session, ctx, &t.headers).await,
            None => Reply::spool_failure(),
        }
    };
    session.finish_transaction();
    Ok(Some(reply))
}

/// Commits the message; `250` only with the `Committed` receipt in hand.
async fn commit(
    inc: Incoming,
    session: &Session,
    ctx: &InboundContext,
    headers: &HeaderScan,
) -> Reply {
    if !ctx.evidence.may_relay() {
        // audit.strict: no message moves while its hop cannot be recorded.
        return Reply::audit_unavailable();
    }
    let Some(mut env) = session.envelope(chrono::Utc::now()) else {
        return Reply::spool_failure();
    };
    env.message_id_hash = headers
        .message_id()
        .and_then(|m| ctx.evidence.message_id_hash(&m));
    // What the header says; with REQUIRETLS it is ignored when routing (`MessageTls::of`).
    env.tls_required_no = headers.tls_required_no();
    let size = inc.written();
    match inc.commit(env.clone()).await {
        Ok(committed) => {
            let id = committed.id().to_string();
            if let Some(li) = &ctx.intercept {
                // After the message is durable; never delays or alters it.
                env.id = id.clone();
                env.size = size;
                li.on_accepted(&env, &ctx.spool.message(&id));
            }
            info!(
                queue_id = %id,
                peer = session.peer().unwrap_or("other"),
                tls_version = session.tls().map(|t| t.version.as_str()).unwrap_or("none"),
                recipients = env.recipients.len(),
                "message accepted"
            );
            ctx.queue.enqueued(&committed);
            let mut hop = inbound_hop(session, Outcome::Accepted);
            hop.queue_id = Some(id.clone());
            hop.size = Some(env.size);
            hop.message_id_hash = env.message_id_hash.clone();
            hop.reply_code = Some(250);
            ctx.evidence.record(&hop);
            Reply::queued(&id)
        }
        Err(e) => {
            warn!(error = %e, "spool commit failed; message refused with 451");
            Reply::spool_failure()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_framing() {
        assert!(matches!(
            next_line(b"NOOP\r\nRSET", 512),
            Line::Complete {
                end: 6,
                bare_lf: false
            }
        ));
        assert!(matches!(
            next_line(b"NOOP\nRSET", 512),
            Line::Complete {
                end: 5,
                bare_lf: true
            }
        ));
        assert!(matches!(
            next_line(b"\n", 512),
            Line::Complete {
                end: 1,
                bare_lf: true
            }
        ));
        assert!(matches!(next_line(b"NOOP", 512), Line::Incomplete));
        assert!(matches!(next_line(&[b'a'; 600], 512), Line::TooLong));
    }
}
