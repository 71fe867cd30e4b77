//! The LI admin endpoint: mutual TLS (the client certificate must chain to the authority CA,
//! checked in the handshake), then a line protocol: `PUT-WARRANTS <len>\n<yaml>` replaces the
//! warrant set (validated and audited like the file), `HEALTH\n` answers one JSON line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::warrant::MAX_WARRANTS_BYTES;
use super::{tls, wire, AdminConfig, Inner, InterceptError};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_COMMAND_LINE: usize = 128;

/// One command of the admin protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Health,
    PutWarrants(usize),
}

/// Parses a command line (without its newline).
pub fn parse_command(line: &[u8]) -> Result<Command, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "command is not UTF-8")?;
    let mut words = line.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("HEALTH"), None, None) => Ok(Command::Health),
        (Some("PUT-WARRANTS"), Some(n), None) => {
            let len: usize = n.parse().map_err(|_| "length is not a number")?;
            if len > MAX_WARRANTS_BYTES {
                return Err("warrant document too large");
            }
            Ok(Command::PutWarrants(len))
        }
        _ => Err("unknown command (HEALTH or PUT-WARRANTS <len>)"),
    }
}

/// A bound admin endpoint, not yet serving.
pub(crate) struct Admin {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl Admin {
    pub(crate) async fn bind(cfg: &AdminConfig) -> Result<Self, InterceptError> {
        let config = tls::admin_server(&cfg.cert_file, &cfg.key_file, &cfg.authority_ca_file)?;
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| InterceptError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(config),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Accepts connections for the life of the relay, one task each.
    pub(crate) async fn serve(self, inner: Arc<Inner>) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, _)) => {
                    tokio::spawn(session(tcp, self.acceptor.clone(), inner.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// One admin connection. A client without a certificate from the authority CA never gets
/// past the handshake.
async fn session(tcp: TcpStream, acceptor: TlsAcceptor, inner: Arc<Inner>) {
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
        return;
    };
    let mut stream = BufReader::new(tls);
    loop {
        let line =
            tokio::time::timeout(IDLE_TIMEOUT, wire::read_line(&mut stream, MAX_COMMAND_LINE))
                .await;
        let Ok(Ok(Some(line))) = line else {
            return;
        };
        let (reply, close) = match parse_command(&line) {
            Ok(Command::Health) => (format!("{}\n", inner.health()), false),
            Ok(Command::PutWarrants(len)) => {
                let mut body = vec![0u8; len];
                let read = tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(&mut body)).await;
                if !matches!(read, Ok(Ok(_))) {
                    return;
                }
                (put_warrants(&inner, body).await, false)
            }
            Err(e) => (format!("ERR {e}\n"), true),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        if close {
            let _ = stream.get_mut().shutdown().await;
            return;
        }
    }
}

async fn put_warrants(inner: &Arc<Inner>, body: Vec<u8>) -> String {
    let Ok(text) = String::from_utf8(body) else {
        return "ERR warrant document is not UTF-8\n".into();
    };
    let i = inner.clone();
    match tokio::task::spawn_blocking(move || i.provision_admin(&text)).await {
        Ok(Ok(n)) => format!("OK {n}\n"),
        Ok(Err(e)) => format!("ERR {}\n", one_line(&e.to_string())),
        Err(_) => "ERR internal error\n".into(),
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
