//! A receiving Postfix peer (the relay's next hop) storing each message in a maildir.
//!
//! Each instance has its own config, queue and data directories and listens only on its own
//! `ADDR:25` (an explicit `ADDR:25 inet` service in master.cf: Postfix refuses an
//! `inet_interfaces` address that is not configured on an interface, and 127.x.y.z other than
//! 127.0.0.1 is not). No daemon is chrooted. It accepts mail only for its domains and never
//! relays (`mynetworks` is empty).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ca::CertFiles;
use crate::net::{wait_for_tcp, wait_for_tcp_closed};
use crate::{pid_alive, read_lossy, signal_pid, wait_until};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a Postfix peer offers and accepts.
#[derive(Clone, Debug, Default)]
pub struct PostfixOpts {
    /// Offer STARTTLS with this certificate; `None`: no STARTTLS offered at all.
    pub tls: Option<CertFiles>,
    /// Domains whose every address is accepted and stored.
    pub domains: Vec<String>,
    /// The peer's own name (greeting, Received headers); defaults to `mx.<first domain>`.
    pub hostname: Option<String>,
}

/// A running Postfix instance; stopped on drop.
pub struct Postfix {
    dir: PathBuf,
    addr: SocketAddr,
    running: bool,
}

/// Only the services a receiving peer needs; chroot column `n` everywhere.
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Configures and starts Postfix in `dir` listening on `addr:25`; returns once it accepts.
    ///
    /// Every directory above `dir` must be world-traversable (see [`crate::TestDir`]): the
    /// `virtual` delivery agent runs as user postfix.
    pub fn start(dir: &Path, addr: Ipv4Addr, opts: PostfixOpts) -> Result<Self> {
        if opts.domains.is_empty() {
            bail!("a Postfix peer needs at least one domain");
        }
        let (uid, gid) = postfix_ids()?;
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        check_traversable(dir)?;
        chown(&dir.join("data"), uid, gid)?;
        chown(&dir.join("mail"), uid, gid)?;

        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| format!("mx.{}", opts.domains[0]));
        let main_cf = main_cf(dir, &hostname, &opts, uid, gid);
        std::fs::write(dir.join("conf/main.cf"), main_cf)?;
        let master_cf =
            format!("{addr}:25 inet n       -       n       -       -       smtpd\n{MASTER_CF}");
        std::fs::write(dir.join("conf/master.cf"), master_cf)?;

        let pf = Self {
            dir: dir.to_path_buf(),
            addr: SocketAddr::from((addr, 25)),
            running: true,
        };
        let out = pf.postfix_cmd("start")?;
        if !out.0 {
            bail!(
                "postfix -c {} start failed:\n{}\nmaillog:\n{}",
                pf.conf_dir().display(),
                out.1,
                pf.log()
            );
        }
        if let Err(e) = wait_for_tcp(pf.addr, START_TIMEOUT) {
            bail!("{e:#}\nmaillog:\n{}", pf.log());
        }
        Ok(pf)
    }

    /// `ADDR:25`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The instance's config_directory (for `postfix -c`).
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// Appends `main.cf` settings (`name = value` lines) and reloads this instance. New smtpd
    /// processes use them; a session already open keeps the old ones.
    pub fn add_settings(&self, lines: &[&str]) -> Result<()> {
        let path = self.dir.join("conf/main.cf");
        let mut cf = std::fs::read_to_string(&path)?;
        for l in lines {
            cf.push_str(l);
            cf.push('\n');
        }
        std::fs::write(&path, cf)?;
        let out = self.postfix_cmd("reload")?;
        if !out.0 {
            bail!(
                "postfix -c {} reload failed:\n{}",
                self.conf_dir().display(),
                out.1
            );
        }
        // Give the master a moment to replace its smtpd processes.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// The maillog (Postfix's log for this instance).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("maillog"))
    }

    /// Every message delivered so far, raw (as stored in the maildir), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files = Vec::new();
        collect_maildir_files(&self.dir.join("mail"), &mut files);
        files.sort_by(|a, b| {
            a.file_name()
                .cmp(&b.file_name())
                .then_with(|| a.as_path().cmp(b.as_path()))
        });
        files.iter().map(|f| read_lossy(f)).collect()
    }

    /// Waits until a delivered message satisfies `pred` and returns it.
    pub fn wait_for_message(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let res = wait_until("a matching message at the Postfix peer", timeout, || {
            Ok(self.messages().into_iter().find(|m| pred(m)))
        });
        res.map_err(|e| {
            anyhow::anyhow!(
                "{e:#} ({}, {} message(s) there)\nmaillog:\n{}",
                self.addr,
                self.messages().len(),
                self.log()
            )
        })
    }

    /// Stops the instance (`postfix -c DIR stop`, then SIGKILL of the master if needed).
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let pid = self.master_pid();
        let _ = self.postfix_cmd("stop");
        if let Some(pid) = pid {
            let gone = wait_until("the Postfix master to exit", STOP_TIMEOUT, || {
                Ok((!pid_alive(pid)).then_some(()))
            });
            if gone.is_err() {
                let _ = signal_pid(pid, "KILL");
            }
        }
        wait_for_tcp_closed(self.addr, STOP_TIMEOUT)
    }

    fn master_pid(&self) -> Option<u32> {
        read_lossy(&self.dir.join("queue/pid/master.pid"))
            .trim()
            .parse()
            .ok()
    }

    /// Runs `postfix -c CONF ARG` under script(1): Postfix prints its errors to stderr only
    /// when that is a terminal (otherwise they go to syslog, which does not exist here).
    fn postfix_cmd(&self, arg: &str) -> Result<(bool, String)> {
        let cmd = format!("postfix -c '{}' {arg}", self.conf_dir().display());
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .context("running script(1) (Debian package bsdutils)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn main_cf(dir: &Path, hostname: &str, opts: &PostfixOpts, uid: u32, gid: u32) -> String {
    let d = dir.display();
    let domains = opts.domains.join(", ");
    let mut cf = format!(
        "\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {hostname}
myorigin = {hostname}
mydestination =
mynetworks =
relay_domains =
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
smtpd_peername_lookup = no
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_forbid_unauth_pipelining = yes
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
in_flow_delay = 0
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
"
    );
    match &opts.tls {
        Some(tls) => cf.push_str(&format!(
            "\
smtpd_tls_security_level = may
smtpd_tls_cert_file = {}
smtpd_tls_key_file = {}
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
",
            tls.cert.display(),
            tls.key.display()
        )),
        None => cf.push_str("smtpd_tls_security_level = none\n"),
    }
    cf
}

fn collect_maildir_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            collect_maildir_files(&path, out);
        } else {
            let parent = path.parent().and_then(|p| p.file_name());
            if parent.is_some_and(|p| p == "new" || p == "cur") {
                out.push(path);
            }
        }
    }
}

/// The uid and gid of the postfix user (from /etc/passwd).
fn postfix_ids() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postfix" {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("no postfix user: install the Debian package postfix")
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {} (the harness must run as root)", path.display()))
}

/// Fails unless every ancestor of `dir` lets others search it (mode o+x).
fn check_traversable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir.canonicalize()?;
    for p in dir.ancestors() {
        let mode = std::fs::metadata(p)?.permissions().mode();
        if mode & 0o001 == 0 {
            bail!(
                "{} is not world-traversable (mode {:o}); Postfix's virtual(8) runs as user \
                 postfix and cannot reach the maildir (use TestDir)",
                p.display(),
                mode
            );
        }
    }
    Ok(())
}
