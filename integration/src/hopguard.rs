//! The relay under test as a child process (`hopguard run`), its CLI, and its YAML config.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::{read_lossy, signal_pid, wait_until};

/// How long a freshly spawned relay may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The hopguard binary: `$HOPGUARD_BIN`, or built once per test process with
/// `cargo build -p hopguard --bin hopguard` in `$CARGO_TARGET_DIR` (default WORKSPACE/target).
pub fn binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_binary().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("HOPGUARD_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("HOPGUARD_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let workspace = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => workspace.join(t),
        None => workspace.join("target"),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "-p", "hopguard", "--bin", "hopguard"])
        .stdin(Stdio::null())
        .output()
        .context("running cargo build -p hopguard")?;
    if !out.status.success() {
        bail!(
            "cargo build -p hopguard failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(target.join("debug").join("hopguard"))
}

/// The cargo workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A running `hopguard run --config DIR/hopguard.yaml`, killed (SIGKILL) on drop.
pub struct Hopguard {
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    listen: SocketAddr,
    child: Option<Child>,
    /// A command the relay runs under (e.g. strace), its arguments before the binary.
    wrapper: Vec<String>,
}

impl Hopguard {
    /// Writes `dir/hopguard.yaml`, spawns the relay with stdout+stderr appended to
    /// `dir/hopguard.log`, and returns once the first listener accepts connections.
    pub fn start(dir: &Path, yaml: &str) -> Result<Self> {
        Self::start_wrapped(dir, yaml, &[])
    }

    /// Like `start`, with the relay running under `wrapper` (program and its arguments).
    pub fn start_wrapped(dir: &Path, yaml: &str, wrapper: &[&str]) -> Result<Self> {
        let listen = listen_addr_from_yaml(yaml)?;
        std::fs::create_dir_all(dir)?;
        let config = dir.join("hopguard.yaml");
        std::fs::write(&config, yaml)?;
        let mut hg = Self {
            bin: binary()?,
            dir: dir.to_path_buf(),
            config,
            listen,
            child: None,
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        };
        hg.spawn()?;
        Ok(hg)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = match self.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        let listen = self.listen;
        let ready = wait_until("hopguard to accept connections", START_TIMEOUT, || {
            if let Some(status) = self.try_exit_status()? {
                bail!("hopguard exited with {status} during startup");
            }
            Ok(
                TcpStream::connect_timeout(&listen, Duration::from_millis(200))
                    .ok()
                    .map(|_| ()),
            )
        });
        ready.map_err(|e| anyhow!("{e:#}\nhopguard.log:\n{}", self.log()))
    }

    fn try_exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("hopguard is not running"),
        }
    }

    /// True while the relay process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit_status(), Ok(None))
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("hopguard.log")
    }

    /// Everything the relay wrote to stdout/stderr so far (all runs).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Sends SIGHUP (reload the config).
    pub fn sighup(&self) -> Result<()> {
        let pid = self.pid().context("hopguard is not running")?;
        signal_pid(pid, "HUP")
    }

    /// SIGKILLs the relay and reaps it: a crash, no chance to flush anything.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the relay with SIGTERM (clean shutdown: final audit checkpoint) and waits for it.
    pub fn terminate(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            crate::signal_pid(child.id(), "TERM")?;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("hopguard did not stop on SIGTERM within 30 s");
                }
                std::thread::sleep(crate::POLL_INTERVAL);
            }
        }
        Ok(())
    }

    /// Starts the relay again with the same config file and spool (kills it first if running).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Runs the binary with other arguments (e.g. `queue list --config FILE`).
    pub fn run_cli(&self, args: &[&str]) -> Result<Output> {
        run_cli(&self.bin, args)
    }

    /// `hopguard queue list --config FILE`, failing on a non-zero exit.
    pub fn queue_list(&self) -> Result<String> {
        let cfg = self.config.to_string_lossy().into_owned();
        let out = self.run_cli(&["queue", "list", "--config", &cfg])?;
        let text = output_text(&out);
        if !out.status.success() {
            bail!("hopguard queue list failed ({}):\n{text}", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// True when `queue list` shows no message (blank, or only its "queue is empty" line;
    /// per-recipient detail lines are indented under their message's line).
    pub fn queue_is_empty(&self) -> Result<bool> {
        let list = self.queue_list()?;
        Ok(list.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.eq_ignore_ascii_case("queue is empty")
        }))
    }
}

impl Drop for Hopguard {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Runs `bin args...` to completion with no stdin.
pub fn run_cli(bin: &Path, args: &[&str]) -> Result<Output> {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} {args:?}", bin.display()))
}

/// stdout followed by stderr, lossily decoded.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The first `address:` value in the YAML (the first listener).
fn listen_addr_from_yaml(yaml: &str) -> Result<SocketAddr> {
    for line in yaml.lines() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(v) = t.strip_prefix("address:") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            return v
                .parse()
                .with_context(|| format!("listener address {v:?} in config"));
        }
    }
    bail!("no listener `address:` in the config")
}

/// One `relay_domains` entry.
#[derive(Clone, Debug)]
pub struct RelayDomain {
    pub domain: String,
    /// `None`: MX lookup.
    pub next_hop: Option<SocketAddr>,
    /// The name the next hop's certificate must match (with an IP `next_hop`).
    pub tls_name: Option<String>,
}

/// One charter peer.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub domains: Vec<String>,
    pub client_networks: Vec<String>,
    pub inbound_tls: Option<String>,
}

/// One per-destination outbound override (`tls`: verify | encrypt | opportunistic).
#[derive(Clone, Debug)]
pub struct Route {
    pub domain: String,
    pub tls: String,
}

/// hopguard's YAML config as the tests set it; [`RelayConfig::to_yaml`] renders it.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub hostname: String,
    pub spool_dir: PathBuf,
    pub listen: SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// `inbound.tls`: "required" or "optional"; `None` leaves the section out.
    pub inbound_tls: Option<String>,
    pub relay_networks: Vec<String>,
    pub relay_domains: Vec<RelayDomain>,
    pub peers: Vec<Peer>,
    pub routes: Vec<Route>,
    pub resolvers: Vec<SocketAddr>,
    pub ca_file: Option<PathBuf>,
    pub min_backoff: String,
    pub max_backoff: String,
    pub max_lifetime: String,
    pub log_level: String,
    /// `metrics.listen`; `None` turns the endpoint off (the default config would bind
    /// 127.0.0.1:9465, shared by every test).
    pub metrics: Option<SocketAddr>,
    /// Raw YAML appended at the end (e.g. an unknown key).
    pub extra: String,
}

impl RelayConfig {
    /// A relay of its own outside the standard `World`: listener `relay_ip:25`, metrics on
    /// `relay_ip:9465`, spool `spool_dir`, resolving through `resolver`, trusting `ca_file`,
    /// inbound TLS optional for non-peers, hour-long retries (counts stay fixed within a test),
    /// no relay networks, domains, peers or routes.
    pub fn standalone(
        spool_dir: PathBuf,
        relay_ip: std::net::Ipv4Addr,
        cert: &crate::ca::CertFiles,
        ca_file: &Path,
        resolver: SocketAddr,
    ) -> Self {
        Self {
            hostname: "relay.hopguard.test".into(),
            spool_dir,
            listen: SocketAddr::from((relay_ip, 25)),
            certificate: cert.cert.clone(),
            key: cert.key.clone(),
            inbound_tls: Some("optional".into()),
            relay_networks: Vec::new(),
            relay_domains: Vec::new(),
            peers: Vec::new(),
            routes: Vec::new(),
            resolvers: vec![resolver],
            ca_file: Some(ca_file.to_path_buf()),
            min_backoff: "1h".into(),
            max_backoff: "2h".into(),
            max_lifetime: "5d".into(),
            log_level: "debug".into(),
            metrics: Some(SocketAddr::from((relay_ip, 9465))),
            extra: String::new(),
        }
    }

    /// The config file text.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "hostname: {}", q(&self.hostname));
        let _ = writeln!(y, "spool_dir: {}", q(&self.spool_dir.display().to_string()));
        let _ = writeln!(y, "listeners:");
        let _ = writeln!(y, "  - address: {}", q(&self.listen.to_string()));
        let _ = writeln!(y, "    certificate: {}", qp(&self.certificate));
        let _ = writeln!(y, "    key: {}", qp(&self.key));
        if let Some(tls) = &self.inbound_tls {
            let _ = writeln!(y, "inbound:\n  tls: {tls}");
        }
        let _ = writeln!(y, "relay_networks: {}", list(&self.relay_networks));
        if self.relay_domains.is_empty() {
            let _ = writeln!(y, "relay_domains: []");
        } else {
            let _ = writeln!(y, "relay_domains:");
            for d in &self.relay_domains {
                let _ = writeln!(y, "  - domain: {}", q(&d.domain));
                if let Some(hop) = d.next_hop {
                    let _ = writeln!(y, "    next_hop: {}", q(&hop.to_string()));
                }
                if let Some(name) = &d.tls_name {
                    let _ = writeln!(y, "    tls_name: {}", q(name));
                }
            }
        }
        if self.peers.is_empty() {
            let _ = writeln!(y, "peers: []");
        } else {
            let _ = writeln!(y, "peers:");
            for p in &self.peers {
                let _ = writeln!(y, "  - name: {}", q(&p.name));
                let _ = writeln!(y, "    domains: {}", list(&p.domains));
                let _ = writeln!(y, "    client_networks: {}", list(&p.client_networks));
                if let Some(tls) = &p.inbound_tls {
                    let _ = writeln!(y, "    inbound_tls: {tls}");
                }
            }
        }
        if self.routes.is_empty() {
            let _ = writeln!(y, "routes: []");
        } else {
            let _ = writeln!(y, "routes:");
            for r in &self.routes {
                let _ = writeln!(y, "  - domain: {}\n    tls: {}", q(&r.domain), r.tls);
            }
        }
        let resolvers: Vec<String> = self.resolvers.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(y, "dns:\n  resolvers: {}", list(&resolvers));
        if let Some(ca) = &self.ca_file {
            let _ = writeln!(y, "tls:\n  ca_file: {}", qp(ca));
        }
        let _ = writeln!(
            y,
            "queue:\n  min_backoff: {}\n  max_backoff: {}\n  max_lifetime: {}",
            self.min_backoff, self.max_backoff, self.max_lifetime
        );
        let _ = writeln!(y, "log_level: {}", self.log_level);
        match self.metrics {
            Some(m) => {
                let _ = writeln!(y, "metrics:\n  listen: {}", q(&m.to_string()));
            }
            None => {
                let _ = writeln!(y, "metrics:\n  listen: null");
            }
        }
        y.push_str(&self.extra);
        y
    }
}

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn qp(p: &Path) -> String {
    q(&p.display().to_string())
}

/// A YAML flow sequence of quoted scalars.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_is_read_from_the_first_listener() {
        let yaml = "hostname: x\nlisteners:\n  - address: \"127.1.2.3:25\"\n    key: k\n";
        assert_eq!(
            listen_addr_from_yaml(yaml).unwrap(),
            "127.1.2.3:25".parse().unwrap()
        );
        assert!(listen_addr_from_yaml("hostname: x\n").is_err());
    }
}
