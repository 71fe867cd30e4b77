//! Loopback addresses of their own for every process a test starts, and waiting for ports.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::wait_until;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Hands out loopback addresses 127.A.B.C unique within this machine's test runs.
///
/// A is derived from the process id (10..=249), so test binaries running side by side use
/// different /16s; B.C come from a process-wide counter, so tests in one binary never share
/// an address. 127.0.0.0/16 (127.0.0.1, 127.0.0.53) is never handed out.
pub struct Net;

impl Net {
    /// Returns a fresh address on which nobody listens on TCP 25 or UDP 53.
    pub fn alloc() -> Ipv4Addr {
        let a = 10 + (std::process::id() % 240) as u8;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let b = 1 + ((n / 254) % 254) as u8;
            let c = 1 + (n % 254) as u8;
            let ip = Ipv4Addr::new(127, a, b, c);
            if is_free(ip) {
                return ip;
            }
        }
    }

    /// `alloc()` with a port attached.
    pub fn alloc_sock(port: u16) -> SocketAddr {
        SocketAddr::from((Self::alloc(), port))
    }
}

/// False only when something (a leftover process of an earlier run) already holds port 25/53.
fn is_free(ip: Ipv4Addr) -> bool {
    let tcp = TcpListener::bind((ip, 25));
    let udp = UdpSocket::bind((ip, 53));
    let in_use =
        |e: Option<std::io::Error>| matches!(e, Some(e) if e.kind() == ErrorKind::AddrInUse);
    !in_use(tcp.err()) && !in_use(udp.err())
}

/// Waits until `addr` accepts a TCP connection.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_until(&format!("{addr} to accept TCP"), timeout, || {
        Ok(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ()),
        )
    })
}

/// Waits until `addr` refuses TCP connections (its listener is gone).
pub fn wait_for_tcp_closed(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_until(&format!("{addr} to stop accepting TCP"), timeout, || {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Some(())),
            Err(e) => bail!("connecting to {addr}: {e}"),
        }
    })
}
