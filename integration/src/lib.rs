//! End-to-end harness: real Postfix, nsd and hopguard processes on private loopback addresses.
//!
//! Map of the harness:
//! - [`net`]: unique 127.A.B.C addresses per test, waiting for a TCP port to accept.
//! - [`chromium`]: headless Chromium rendering a page (the HTML report) to PNG.
//! - [`ca`]: a throw-away test CA and leaf certificates written as PEM files.
//! - [`dns`]: an authoritative nsd serving the test zones (the relay's `dns.resolvers`).
//! - [`dnssec`]: signed zones (ldns-signzone) on nsd behind a validating unbound (AD bit, bogus).
//! - [`postfix`]: a receiving Postfix peer that stores every message in a maildir.
//! - [`https`]: nginx serving MTA-STS policy files over HTTPS, a curl client for them, and a
//!   Python HTTPS receiver storing POSTs (TLS-RPT `https:` rua).
//! - [`hopguard`]: the relay under test as a child process, and its YAML config.
//! - [`prometheus`]: a real Prometheus scraping the relay with hopguard's rules loaded.
//! - [`smtp_client`]: swaks (the user's client) and a raw byte-exact SMTP/STARTTLS client.
//! - [`mail`]: reading headers out of received messages.
//! - [`world`]: the standard scene of the relay tests (CA, DNS, TLS and plain peers).
//!
//! Every process binds its own 127.x.y.z address and lives in its own temp dir; every
//! wait polls for an event (a port accepting, a file appearing) against a deadline.

pub mod ca;
pub mod chromium;
pub mod dns;
pub mod dnssec;
pub mod hopguard;
pub mod https;
pub mod mail;
pub mod net;
pub mod postfix;
pub mod prometheus;
pub mod smtp_client;
pub mod world;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use ca::{CertFiles, TestCa};
pub use dns::{Nsd, Zone};
pub use hopguard::{Hopguard, Peer, RelayConfig, RelayDomain, Route};
pub use net::Net;
pub use postfix::{Postfix, PostfixOpts};
pub use smtp_client::{swaks, RawSmtp, Reply, SwaksOutput};
pub use world::World;

/// Interval between two polls of a condition in [`wait_until`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A temp dir that unprivileged daemons (Postfix's `virtual` as user postfix) can traverse.
///
/// Removed with everything in it on drop, unless `HOPGUARD_KEEP_TMP` is set (for debugging).
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// Creates a fresh directory under the system temp dir with mode 0755.
    pub fn new() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let keep = std::env::var_os("HOPGUARD_KEEP_TMP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("hopguard-it-")
            .disable_cleanup(keep)
            .tempdir()
            .context("creating test dir")?;
        if keep {
            eprintln!("keeping test dir {}", dir.path().display());
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates (if needed) and returns the sub-directory `name`.
    pub fn sub(&self, name: &str) -> Result<std::path::PathBuf> {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }
}

/// Returns true when a process with this pid exists (it may be a zombie).
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `signal` (a name such as `TERM`, `HUP`, `KILL`) to one process by pid via kill(1).
pub fn signal_pid(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

/// The relay's TLS-RPT aggregate for `domain` (`SPOOL/tlsrpt/DAY/DOMAIN.json`, newest day),
/// waiting for the relay to write it out (it flushes every second).
pub fn tlsrpt_aggregate(spool: &std::path::Path, domain: &str) -> Result<serde_json::Value> {
    wait_until(
        &format!("the TLS-RPT aggregate of {domain}"),
        Duration::from_secs(60),
        || {
            let mut days: Vec<_> = std::fs::read_dir(spool.join("tlsrpt"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            days.sort();
            let Some(path) = days.last().map(|d| d.join(format!("{domain}.json"))) else {
                return Ok(None);
            };
            Ok(std::fs::read_to_string(path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok()))
        },
    )
}

/// The relay's `/metrics` page (OpenMetrics text) from its metrics listener.
pub fn scrape_metrics(addr: std::net::SocketAddr) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to the metrics endpoint {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Reads a file as (lossy) UTF-8, or returns an empty string if it does not exist.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
