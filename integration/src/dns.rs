//! An authoritative nsd serving the test zones: where the relay resolves MX and A records.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{pid_alive, read_lossy, signal_pid, wait_until};

/// How long nsd may take to load its zones and answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// One zone's master file text, built from absolute owner names.
#[derive(Clone, Debug)]
pub struct Zone {
    origin: String,
    records: Vec<String>,
}

impl Zone {
    /// A zone with SOA and NS records (NS `ns.<origin>`, no glue unless added).
    pub fn new(origin: &str) -> Self {
        let origin = fqdn(origin);
        let records = vec![
            format!("{origin} IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60"),
            format!("{origin} IN NS ns.{origin}"),
        ];
        Self { origin, records }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Adds `name A ip`.
    pub fn a(mut self, name: &str, ip: Ipv4Addr) -> Self {
        self.records.push(format!("{} IN A {ip}", fqdn(name)));
        self
    }

    /// Adds `name MX pref host`.
    pub fn mx(mut self, name: &str, pref: u16, host: &str) -> Self {
        self.records
            .push(format!("{} IN MX {pref} {}", fqdn(name), fqdn(host)));
        self
    }

    /// Adds `domain MX 10 mx.<domain>` and `mx.<domain> A ip`.
    pub fn mail_domain(self, domain: &str, ip: Ipv4Addr) -> Self {
        let host = format!("mx.{}", domain.trim_end_matches('.'));
        self.mx(domain, 10, &host).a(&host, ip)
    }

    /// Adds a raw master-file line (absolute names only).
    pub fn raw(mut self, line: &str) -> Self {
        self.records.push(line.to_string());
        self
    }

    /// The master file text.
    pub fn text(&self) -> String {
        let mut s = String::from("$TTL 60\n");
        for r in &self.records {
            let _ = writeln!(s, "{r}");
        }
        s
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A running nsd (foreground, `-d`), stopped by pid on drop.
pub struct Nsd {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nsd {
    /// Writes `dir/nsd.conf` and the zone files, starts nsd on `addr:53` and returns once it
    /// answers an SOA query for the first zone.
    pub fn start(dir: &Path, addr: Ipv4Addr, zones: &[Zone]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let sock = SocketAddr::from((addr, 53));
        let d = dir.display();
        let mut conf = format!(
            "server:\n  ip-address: {addr}\n  port: 53\n  chroot: \"\"\n  username: \"\"\n  \
             zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  \
             logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 1\n  hide-version: yes\n\
             remote-control:\n  control-enable: no\n"
        );
        for (i, zone) in zones.iter().enumerate() {
            let file = dir.join(format!("zone{i}.zone"));
            std::fs::write(&file, zone.text())?;
            let _ = write!(
                conf,
                "zone:\n  name: \"{}\"\n  zonefile: \"{}\"\n",
                zone.origin(),
                file.display()
            );
        }
        let conf_path = dir.join("nsd.conf");
        std::fs::write(&conf_path, conf)?;
        let out = std::fs::File::create(dir.join("nsd.out"))?;
        let child = Command::new("nsd")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning nsd (Debian package nsd)")?;
        let mut nsd = Self {
            child: Some(child),
            addr: sock,
            dir: dir.to_path_buf(),
        };
        let probe_name = zones.first().map(|z| z.origin().to_string());
        let res = wait_until("nsd to answer", START_TIMEOUT, || {
            if let Some(status) = nsd.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("nsd exited with {status}:\n{}", nsd.log());
            }
            match &probe_name {
                Some(name) => Ok(query(sock, name, QTYPE_SOA).ok().map(|_| ())),
                None => Ok(Some(())),
            }
        });
        if let Err(e) = res {
            bail!("{e:#}\nnsd log:\n{}", nsd.log());
        }
        Ok(nsd)
    }

    /// The `ip:port` to put in the relay's `dns.resolvers`.
    pub fn resolver(&self) -> SocketAddr {
        self.addr
    }

    /// nsd's own log and stdout/stderr.
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            read_lossy(&self.dir.join("nsd.log")),
            read_lossy(&self.dir.join("nsd.out"))
        )
    }

    /// Stops nsd: SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        if pid_alive(pid) {
            let _ = signal_pid(pid, "TERM");
        }
        let exited = wait_until("nsd to exit", Duration::from_secs(5), || {
            Ok(child.try_wait()?.map(|_| ()))
        });
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// DNS type code of SOA.
pub const QTYPE_SOA: u16 = 6;
/// DNS type code of MX.
pub const QTYPE_MX: u16 = 15;
/// DNS type code of A.
pub const QTYPE_A: u16 = 1;

/// Sends one UDP query and returns the answer count of a NOERROR response.
pub fn query(server: SocketAddr, name: &str, qtype: u16) -> Result<u16> {
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("bad DNS name {name:?}");
        }
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());

    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    sock.send_to(&msg, server)?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf)?;
    if n < 12 || buf[0..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 {
        bail!("not a response to our query");
    }
    let rcode = buf[3] & 0x0f;
    if rcode != 0 {
        bail!("rcode {rcode}");
    }
    Ok(u16::from_be_bytes([buf[6], buf[7]]))
}

/// Runs `drill @ip -p port TYPE name` (Debian package ldnsutils) and returns its output.
pub fn drill(server: SocketAddr, rrtype: &str, name: &str) -> Result<String> {
    let out = Command::new("drill")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg(rrtype)
        .arg(name)
        .output()
        .context("running drill (Debian package ldnsutils)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("drill failed ({}):\n{text}", out.status);
    }
    Ok(text)
}
