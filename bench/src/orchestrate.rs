//! The whole benchmark: sink, hopguard and Postfix on loopback, the runs (ceiling, then the
//! relays alternated A B A B), the idle-connection test, and RESULTS.md.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::load::{LoadOpts, LoadReport};
use crate::procmon::{PeakSampler, Tree};
use crate::stats::median;

/// The recipient domain: `relay_domains` for hopguard, `relay_domains` + transport map for
/// Postfix; both send it to the sink by IP address, verifying the name `sink.bench.test`.
pub const DOMAIN: &str = "bench.test";
pub const RELAY_NAME: &str = "relay.bench.test";
pub const SINK_NAME: &str = "sink.bench.test";

#[derive(Clone, Debug)]
pub struct Opts {
    pub quick: bool,
    /// Work directory (certificates, spools, logs); default: a fresh /tmp directory.
    pub work_dir: Option<PathBuf>,
    /// Directory holding `hopguard`, `hopguard-sink`.
    pub bin_dir: PathBuf,
    pub results: PathBuf,
    /// First two octets of the loopback addresses used (`127.N`).
    pub net: u8,
    /// Parallel sessions of the load generator.
    pub concurrency: usize,
    /// Repetitions of each relay (A B A B = 2).
    pub reps: usize,
    /// Idle sessions for the idle-memory test (hopguard / Postfix); 0 skips it.
    pub idle_hopguard: usize,
    pub idle_postfix: usize,
    /// Scale the message counts (1.0 = the mode's default).
    pub scale: f64,
    /// Message sizes (bytes) and messages per session to run; empty: all.
    pub sizes: Vec<usize>,
    pub per_session: Vec<usize>,
    pub keep: bool,
    /// Extra text for the RESULTS.md header (e.g. "the machine was also compiling").
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Ceiling,
    Hopguard,
    Postfix,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ceiling => "ceiling (sink)",
            Target::Hopguard => "hopguard",
            Target::Postfix => "Postfix",
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    size: usize,
    per_session: usize,
    count: usize,
}

impl Scenario {
    fn label(&self) -> String {
        format!("{} × {}/session", human_size(self.size), self.per_session)
    }
}

#[derive(Clone, Debug)]
struct RunResult {
    n: usize,
    scenario: String,
    target: Target,
    rep: LoadReport,
    cpu_s: f64,
    peak_rss: u64,
    peak_pss: u64,
    machine_busy: f64,
}

impl RunResult {
    fn arrived(&self) -> usize {
        self.rep.arrived.unwrap_or(0)
    }
    fn cpu_per_1000(&self) -> f64 {
        if self.arrived() == 0 {
            f64::NAN
        } else {
            self.cpu_s / self.arrived() as f64 * 1000.0
        }
    }
}

struct IdleResult {
    target: Target,
    wanted: usize,
    open: usize,
    failed: usize,
    first_error: Option<String>,
    before: (u64, u64),
    during: (u64, u64),
    procs: usize,
    secs: f64,
}

struct Addrs {
    hopguard: Ipv4Addr,
    postfix: Ipv4Addr,
    sink: Ipv4Addr,
    sources: Vec<Ipv4Addr>,
}

fn addrs(net: u8) -> Addrs {
    Addrs {
        hopguard: Ipv4Addr::new(127, net, 0, 2),
        postfix: Ipv4Addr::new(127, net, 0, 3),
        sink: Ipv4Addr::new(127, net, 0, 10),
        sources: (1..=50).map(|i| Ipv4Addr::new(127, net, 1, i)).collect(),
    }
}

/// Runs everything and writes the results; returns the Markdown.
pub async fn run(o: Opts) -> Result<String> {
    let work = match &o.work_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(format!("/tmp/hopguard-bench.{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    set_mode(&work, 0o755)?;
    let a = addrs(o.net);
    for (name, addr) in [
        ("hopguard", a.hopguard),
        ("Postfix", a.postfix),
        ("sink", a.sink),
    ] {
        if TcpStream::connect_timeout(&SocketAddr::from((addr, 25)), Duration::from_millis(300))
            .is_ok()
        {
            bail!("{addr}:25 (for the {name}) is already in use: pick another --net");
        }
    }
    eprintln!("hopguard-bench: work directory {}", work.display());

    let ca = crate::ca::BenchCa::new(&work)?;
    let relay_leaf = ca.issue(&work, "relay", RELAY_NAME)?;
    let sink_leaf = ca.issue(&work, "sink", SINK_NAME)?;
    let records = work.join("records");
    std::fs::create_dir_all(&records)?;

    let tag = std::process::id();
    let sink_tree = Arc::new(Tree::new(&format!("hopguard-bench-{tag}-sink")));
    let hg_tree = Arc::new(Tree::new(&format!("hopguard-bench-{tag}-hopguard")));
    let pf_tree = Arc::new(Tree::new(&format!("hopguard-bench-{tag}-postfix")));
    if !hg_tree.has_cgroup() {
        eprintln!(
            "hopguard-bench: no cpuacct cgroup; CPU from /proc/PID/stat of the process trees"
        );
    }

    let mut guard = Services::default();
    let result = async {
        // --- sink ---------------------------------------------------------------------------
        let sink_bin = o.bin_dir.join("hopguard-sink");
        let sink_cmd: Vec<String> = vec![
            sink_bin.display().to_string(),
            "--listen".into(),
            format!("{}:25", a.sink),
            "--cert".into(),
            sink_leaf.cert.display().to_string(),
            "--key".into(),
            sink_leaf.key.display().to_string(),
            "--record-dir".into(),
            records.display().to_string(),
            "--hostname".into(),
            SINK_NAME.into(),
        ];
        let sink = spawn_logged(&sink_tree.wrap(&sink_cmd), &work.join("sink.log"))?;
        sink_tree.set_root(sink.id());
        guard.sink = Some(sink);
        wait_tcp(SocketAddr::from((a.sink, 25)), Duration::from_secs(20))
            .with_context(|| format!("sink did not start; see {}", work.join("sink.log").display()))?;

        // --- hopguard -----------------------------------------------------------------------
        let hg_dir = work.join("hopguard");
        std::fs::create_dir_all(&hg_dir)?;
        let hg_conf = hg_dir.join("hopguard.yaml");
        std::fs::write(
            &hg_conf,
            hopguard_yaml(&hg_dir, a.hopguard, a.sink, &relay_leaf, &ca.ca_pem, o.idle_hopguard),
        )?;
        let hg_bin = o.bin_dir.join("hopguard");
        let check = Command::new(&hg_bin)
            .args(["config", "check"])
            .arg(&hg_conf)
            .output()
            .with_context(|| format!("running {}", hg_bin.display()))?;
        if !check.status.success() {
            bail!(
                "hopguard config check failed: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let hg_cmd = vec![
            hg_bin.display().to_string(),
            "run".into(),
            "--config".into(),
            hg_conf.display().to_string(),
        ];
        let hg = spawn_logged(&hg_tree.wrap(&hg_cmd), &hg_dir.join("hopguard.log"))?;
        let hg_pid = hg.id();
        guard.hopguard = Some(hg);
        wait_tcp(SocketAddr::from((a.hopguard, 25)), Duration::from_secs(30)).with_context(|| {
            format!("hopguard did not start; see {}", hg_dir.join("hopguard.log").display())
        })?;

        // --- Postfix ------------------------------------------------------------------------
        let pf_dir = work.join("postfix");
        let pf = Postfix::start(&pf_dir, a.postfix, a.sink, &relay_leaf, &ca.ca_pem, &pf_tree, o.idle_postfix)?;
        let pf_version = pf.version();
        guard.postfix = Some(pf);

        hg_tree.set_root(hg_pid);
        if let Some(pid) = guard.postfix.as_ref().and_then(|p| p.master_pid()) {
            pf_tree.set_root(pid);
        }

        // --- the runs -----------------------------------------------------------------------
        let scenarios = scenarios(&o);
        let mut results: Vec<RunResult> = Vec::new();
        let started = Instant::now();
        let total_runs = scenarios.len() * (1 + 2 * o.reps);
        let mut n = 0;
        for sc in &scenarios {
            let mut plan = vec![Target::Ceiling];
            for _ in 0..o.reps {
                plan.push(Target::Hopguard);
                plan.push(Target::Postfix);
            }
            for target in plan {
                n += 1;
                let (addr, name, tree) = match target {
                    Target::Ceiling => (a.sink, SINK_NAME, sink_tree.clone()),
                    Target::Hopguard => (a.hopguard, RELAY_NAME, hg_tree.clone()),
                    Target::Postfix => (a.postfix, RELAY_NAME, pf_tree.clone()),
                };
                let run_id = format!(
                    "r{n}-{}-{}b-{}",
                    match target {
                        Target::Ceiling => "sink",
                        Target::Hopguard => "hg",
                        Target::Postfix => "pf",
                    },
                    sc.size,
                    sc.per_session
                );
                let lo = LoadOpts {
                    target: SocketAddr::from((addr, 25)),
                    tls_name: name.into(),
                    ca: ca.ca_pem.clone(),
                    sources: a.sources.clone(),
                    concurrency: o.concurrency,
                    per_session: sc.per_session,
                    count: sc.count,
                    size: sc.size,
                    run_id,
                    mail_from: "load@src.bench.test".into(),
                    rcpt: format!("user@{DOMAIN}"),
                    record_dir: Some(records.clone()),
                    drain_timeout: Duration::from_secs(if o.quick { 60 } else { 120 }),
                };
                let r = measured_run(n, sc, target, lo, tree).await?;
                eprintln!(
                    "hopguard-bench: [{n}/{total_runs} {:.0}s] {} {}: accepted {} arrived {} e2e {:.1} msg/s, CPU {:.2} s/1000, peak PSS {:.1} MB, 250→arrival p50 {:.1} ms p99 {:.1} ms{}",
                    started.elapsed().as_secs_f64(),
                    r.scenario,
                    target.name(),
                    r.rep.accepted,
                    r.arrived(),
                    r.rep.e2e_rate.unwrap_or(f64::NAN),
                    r.cpu_per_1000(),
                    r.peak_pss as f64 / 1e6,
                    r.rep.arrival_p50_ms.unwrap_or(f64::NAN),
                    r.rep.arrival_p99_ms.unwrap_or(f64::NAN),
                    r.rep
                        .first_error
                        .as_ref()
                        .map(|e| format!(" (first error: {e})"))
                        .unwrap_or_default()
                );
                results.push(r);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }

        // --- idle sessions ------------------------------------------------------------------
        let mut idle = Vec::new();
        for (target, addr, tree, want) in [
            (Target::Hopguard, a.hopguard, hg_tree.clone(), o.idle_hopguard),
            (Target::Postfix, a.postfix, pf_tree.clone(), o.idle_postfix),
        ] {
            if want == 0 {
                continue;
            }
            eprintln!("hopguard-bench: idle test: {want} sessions to {}", target.name());
            let before = tree.memory(true);
            let t0 = Instant::now();
            let (sessions, failed, first_error) = crate::load::open_idle(
                SocketAddr::from((addr, 25)),
                RELAY_NAME,
                &ca.ca_pem,
                &a.sources,
                want,
                64,
            )
            .await?;
            let secs = t0.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let during = tree.memory(true);
            let procs = tree.pids().len();
            let open = sessions.len();
            drop(sessions);
            eprintln!(
                "hopguard-bench: idle {}: {open} open ({failed} failed) in {secs:.1}s, RSS {:.1} MB, PSS {:.1} MB, {procs} processes",
                target.name(),
                during.0 as f64 / 1e6,
                during.1 as f64 / 1e6
            );
            idle.push(IdleResult { target, wanted: want, open, failed, first_error, before, during, procs, secs });
            tokio::time::sleep(Duration::from_secs(3)).await;
        }

        let md = render(&o, &scenarios, &results, &idle, &pf_version);
        // Keep the raw per-run figures next to the work files.
        let _ = std::fs::write(work.join("RESULTS.md"), &md);
        Ok::<String, anyhow::Error>(md)
    }
    .await;

    guard.stop();
    sink_tree.remove();
    hg_tree.remove();
    pf_tree.remove();
    let md = result?;
    std::fs::write(&o.results, &md).with_context(|| format!("writing {}", o.results.display()))?;
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(md)
}

fn scenarios(o: &Opts) -> Vec<Scenario> {
    // Counts chosen so a full run stays well under 15 minutes on 2 cores.
    let base: [(usize, usize); 3] = if o.quick {
        [(2048, 1500), (51200, 1000), (1048576, 150)]
    } else {
        [(2048, 6000), (51200, 4000), (1048576, 600)]
    };
    let mut v = Vec::new();
    for (size, count) in base {
        if !o.sizes.is_empty() && !o.sizes.contains(&size) {
            continue;
        }
        for per_session in [1usize, 20] {
            if !o.per_session.is_empty() && !o.per_session.contains(&per_session) {
                continue;
            }
            let count = ((count as f64 * o.scale).round() as usize).max(per_session);
            v.push(Scenario {
                size,
                per_session,
                count,
            });
        }
    }
    v
}

async fn measured_run(
    n: usize,
    sc: &Scenario,
    target: Target,
    lo: LoadOpts,
    tree: Arc<Tree>,
) -> Result<RunResult> {
    let cpu0 = tree.cpu_seconds()?;
    let busy0 = machine_cpu();
    let sampler = PeakSampler::start(tree.clone(), Duration::from_millis(500));
    let rep = crate::load::run(lo).await?;
    // Let the relay finish its bookkeeping for the last message (queue file removal, logs).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu1 = tree.cpu_seconds()?;
    let busy1 = machine_cpu();
    let (peak_rss, peak_pss) = sampler.finish();
    let machine_busy = match (busy0, busy1) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0,
        _ => f64::NAN,
    };
    Ok(RunResult {
        n,
        scenario: sc.label(),
        target,
        rep,
        cpu_s: cpu1 - cpu0,
        peak_rss,
        peak_pss,
        machine_busy,
    })
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_cpu() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

// ------------------------------------------------------------------------------------------
// Services

#[derive(Default)]
struct Services {
    sink: Option<Child>,
    hopguard: Option<Child>,
    postfix: Option<Postfix>,
}

impl Services {
    fn stop(&mut self) {
        if let Some(mut pf) = self.postfix.take() {
            pf.stop();
        }
        for c in [self.hopguard.take(), self.sink.take()]
            .into_iter()
            .flatten()
        {
            stop_child(c);
        }
    }
}

fn stop_child(mut c: Child) {
    let pid = c.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn spawn_logged(cmd: &[String], log: &Path) -> Result<Child> {
    let f = std::fs::File::create(log)?;
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("spawning {}", cmd.join(" ")))
}

fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            bail!("{addr} not accepting after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn hopguard_yaml(
    dir: &Path,
    listen: Ipv4Addr,
    sink: Ipv4Addr,
    leaf: &crate::ca::Leaf,
    ca: &Path,
    idle: usize,
) -> String {
    let max_conn = (idle + 1000).max(2000);
    format!(
        "\
# hopguard's configuration for the benchmark (written by hopguard-bench; see bench/README.md).
# Equivalent to the Postfix instance: STARTTLS required inbound, mail for {DOMAIN} relayed to
# the sink by IP with its certificate verified for {SINK_NAME} against the bench CA only,
# connection reuse (100 messages per connection, as smtp_connection_reuse_count_limit),
# 20 deliveries per destination and 100 in all (Postfix's defaults), durable spool.
hostname: {RELAY_NAME}
spool_dir: {spool}
listeners:
  - address: \"{listen}:25\"
    certificate: {cert}
    key: {key}
inbound:
  tls: required
  max_connections: {max_conn}
  max_connections_per_ip: {max_conn}
relay_domains:
  - domain: {DOMAIN}
    next_hop: \"[{sink}]:25\"
    tls_name: {SINK_NAME}
    tls: verify
dns:
  resolvers: [\"127.0.0.1:53\"]   # never used: the next hop is an IP address
tls:
  system_roots: false
  ca_file: {ca}
outbound:
  max_messages_per_connection: 100
queue:
  min_backoff: 1s
  max_backoff: 10s
  per_destination_concurrency: 20
  max_concurrent_deliveries: 100
metrics:
  listen: null
log_level: info
",
        spool = dir.join("spool").display(),
        cert = leaf.cert.display(),
        key = leaf.key.display(),
        ca = ca.display(),
    )
}

// ------------------------------------------------------------------------------------------
// Postfix

struct Postfix {
    dir: PathBuf,
    running: bool,
}

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
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
tlsproxy  unix  -       -       n       -       0       tlsproxy
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    fn start(
        dir: &Path,
        addr: Ipv4Addr,
        sink: Ipv4Addr,
        leaf: &crate::ca::Leaf,
        ca: &Path,
        tree: &Tree,
        idle: usize,
    ) -> Result<Self> {
        let conf = dir.join("conf");
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        set_mode(dir, 0o755)?;
        let (uid, gid) = postfix_ids()?;
        std::os::unix::fs::chown(dir.join("data"), Some(uid), Some(gid))?;
        let d = dir.display();
        let main_cf = format!(
            "\
# Postfix for the benchmark (written by hopguard-bench; see bench/README.md).
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {RELAY_NAME}
mydomain = {RELAY_NAME}
myorigin = $myhostname
mydestination =
mynetworks =
relay_domains = {DOMAIN}
relay_recipient_maps =
transport_maps = texthash:{d}/conf/transport
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
smtpd_peername_lookup = no
smtpd_relay_restrictions = reject_unauth_destination
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
message_size_limit = 52428800
# TLS required inbound, TLS 1.2+ (as hopguard's inbound.tls: required).
smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
# TLS verified outbound against the bench CA, with connection reuse through tlsproxy.
smtp_tls_security_level = verify
smtp_tls_CAfile = {ca}
smtp_tls_policy_maps = texthash:{d}/conf/tls_policy
smtp_tls_connection_reuse = yes
smtp_tls_loglevel = 1
smtp_connection_reuse_count_limit = 100
smtp_dns_support_level = disabled
minimal_backoff_time = 1s
maximal_backoff_time = 10s
queue_run_delay = 1s
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
",
            cert = leaf.cert.display(),
            key = leaf.key.display(),
            ca = ca.display(),
        );
        std::fs::write(conf.join("main.cf"), main_cf)?;
        std::fs::write(
            conf.join("transport"),
            format!("{DOMAIN} smtp:[{sink}]:25\n"),
        )?;
        std::fs::write(
            conf.join("tls_policy"),
            format!("[{sink}]:25 verify match={SINK_NAME}\n"),
        )?;
        let maxproc = (idle + 100).max(100);
        std::fs::write(
            conf.join("master.cf"),
            format!(
                "{addr}:25 inet n       -       n       -       {maxproc}     smtpd\n{MASTER_CF}"
            ),
        )?;
        let pf = Self {
            dir: dir.to_path_buf(),
            running: true,
        };
        let cmd = format!("postfix -c '{}' start", conf.display());
        let wrapped = tree.wrap(&[
            "script".to_string(),
            "-qec".to_string(),
            cmd,
            "/dev/null".to_string(),
        ]);
        let out = Command::new(&wrapped[0])
            .args(&wrapped[1..])
            .stdin(Stdio::null())
            .output()
            .context("running script(1) (Debian package bsdutils) for postfix start")?;
        if !out.status.success() {
            bail!(
                "postfix start failed:\n{}{}\nmaillog:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(dir.join("maillog")).unwrap_or_default()
            );
        }
        wait_tcp(SocketAddr::from((addr, 25)), Duration::from_secs(30)).with_context(|| {
            format!(
                "Postfix did not start; maillog:\n{}",
                std::fs::read_to_string(dir.join("maillog")).unwrap_or_default()
            )
        })?;
        Ok(pf)
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn version(&self) -> String {
        Command::new("postconf")
            .args(["-d", "-h", "mail_version"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let pid = self.master_pid();
        let cmd = format!("postfix -c '{}' stop", self.dir.join("conf").display());
        let _ = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output();
        if let Some(pid) = pid {
            let t0 = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists()
                && t0.elapsed() < Duration::from_secs(15)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

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

// ------------------------------------------------------------------------------------------
// Report

fn human_size(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{} MB", b >> 20)
    } else {
        format!("{} KB", b >> 10)
    }
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            let a = x.abs();
            if a >= 100.0 {
                format!("{x:.0}")
            } else if a >= 10.0 {
                format!("{x:.1}")
            } else if a >= 1.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.3}")
            }
        }
        _ => "–".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn render(
    o: &Opts,
    scenarios: &[Scenario],
    results: &[RunResult],
    idle: &[IdleResult],
    pf_version: &str,
) -> String {
    let mut s = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(s, "# hopguard vs Postfix: benchmark results\n");
    let _ = writeln!(
        s,
        "Written by `bench/run.sh{}` (see [README.md](README.md) for what is measured and how). \
         Numbers are as measured on this machine; rerun to update.\n",
        if o.quick { " --quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "- Mode: {}; {} parallel sessions; relays alternated A B × {}.",
        if o.quick { "quick" } else { "full" },
        o.concurrency,
        o.reps
    );
    let _ = writeln!(
        s,
        "- Machine: {cores} cores, {cpu}; load average at the end: {}.",
        loadavg.trim()
    );
    let _ = writeln!(
        s,
        "- Postfix {pf_version} (Debian package), hopguard release build."
    );
    if let Some(n) = &o.note {
        let _ = writeln!(s, "- Note: {n}");
    }
    let _ = writeln!(
        s,
        "- Ratio = hopguard / Postfix: above 1 is better for hopguard for rates and share of the \
         ceiling; below 1 is better for hopguard for CPU, memory and latency.\n"
    );

    let _ = writeln!(s, "## Medians per scenario\n");
    let _ = writeln!(s, "| Scenario (size × messages/session, count) | Figure | hopguard | Postfix | hopguard/Postfix |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for sc in scenarios {
        let label = sc.label();
        let of = |t: Target| -> Vec<&RunResult> {
            results
                .iter()
                .filter(|r| r.scenario == label && r.target == t)
                .collect()
        };
        let ceil = median(
            &of(Target::Ceiling)
                .iter()
                .filter_map(|r| r.rep.e2e_rate)
                .collect::<Vec<_>>(),
        );
        let med = |t: Target, f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<f64> {
            median(&of(t).iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        type F = Box<dyn Fn(&RunResult) -> Option<f64>>;
        let rows: Vec<(String, F)> = vec![
            (
                "end-to-end rate, msg/s".into(),
                Box::new(|r: &RunResult| r.rep.e2e_rate),
            ),
            (
                format!("share of the ceiling ({} msg/s), %", fmt(ceil)),
                Box::new(move |r: &RunResult| r.rep.e2e_rate.zip(ceil).map(|(e, c)| e / c * 100.0)),
            ),
            (
                "relay CPU s / 1000 msg".into(),
                Box::new(|r: &RunResult| Some(r.cpu_per_1000())),
            ),
            (
                "peak RSS (sum over processes), MB".into(),
                Box::new(|r: &RunResult| Some(r.peak_rss as f64 / 1e6)),
            ),
            (
                "peak PSS (sum over processes), MB".into(),
                Box::new(|r: &RunResult| Some(r.peak_pss as f64 / 1e6)),
            ),
            (
                "250→arrival p50, ms".into(),
                Box::new(|r: &RunResult| r.rep.arrival_p50_ms),
            ),
            (
                "250→arrival p99, ms".into(),
                Box::new(|r: &RunResult| r.rep.arrival_p99_ms),
            ),
            (
                "submit latency p50, ms".into(),
                Box::new(|r: &RunResult| Some(r.rep.submit_p50_ms)),
            ),
            (
                "submit latency p99, ms".into(),
                Box::new(|r: &RunResult| Some(r.rep.submit_p99_ms)),
            ),
        ];
        for (i, (name, f)) in rows.iter().enumerate() {
            let h = med(Target::Hopguard, f.as_ref());
            let p = med(Target::Postfix, f.as_ref());
            let _ = writeln!(
                s,
                "| {} | {name} | {} | {} | {} |",
                if i == 0 {
                    format!("{label}, {}", sc.count)
                } else {
                    String::new()
                },
                fmt(h),
                fmt(p),
                ratio(h, p)
            );
        }
    }

    if !idle.is_empty() {
        let _ = writeln!(s, "\n## Idle inbound TLS sessions\n");
        let _ = writeln!(s, "Sessions held open after STARTTLS and the second EHLO (from {} source addresses); memory of the relay's whole process tree before and while they are open.\n", addrs(o.net).sources.len());
        let _ = writeln!(s, "| Relay | sessions wanted | open | failed | open time, s | processes | RSS before → during, MB | PSS before → during, MB | PSS per session, KB |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut per: Vec<(Target, f64)> = Vec::new();
        for i in idle {
            let per_session = if i.open > 0 {
                (i.during.1 as f64 - i.before.1 as f64) / i.open as f64 / 1024.0
            } else {
                f64::NAN
            };
            per.push((i.target, per_session));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {} | {:.1} → {:.1} | {:.1} → {:.1} | {} |",
                i.target.name(),
                i.wanted,
                i.open,
                i.failed,
                i.secs,
                i.procs,
                i.before.0 as f64 / 1e6,
                i.during.0 as f64 / 1e6,
                i.before.1 as f64 / 1e6,
                i.during.1 as f64 / 1e6,
                fmt(Some(per_session))
            );
        }
        let h = per.iter().find(|p| p.0 == Target::Hopguard).map(|p| p.1);
        let p = per.iter().find(|p| p.0 == Target::Postfix).map(|p| p.1);
        let _ = writeln!(
            s,
            "\nPSS per idle session, hopguard/Postfix: **{}**.",
            ratio(h, p)
        );
        for i in idle.iter().filter(|i| i.first_error.is_some()) {
            let _ = writeln!(
                s,
                "\n{}: first failure: `{}`",
                i.target.name(),
                i.first_error.as_deref().unwrap_or("")
            );
        }
    }

    let _ = writeln!(s, "\n## Every run\n");
    let _ = writeln!(s, "| # | Scenario | Target | accepted | arrived | failed sessions | submit msg/s | end-to-end msg/s | CPU s/1000 | peak RSS MB | peak PSS MB | 250→arrival p50 / p99 ms | submit p50 / p99 ms | machine CPU busy % |");
    let _ = writeln!(
        s,
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} / {} | {} / {} | {:.0} |",
            r.n,
            r.scenario,
            r.target.name(),
            r.rep.accepted,
            r.arrived(),
            r.rep.failed_sessions,
            fmt(Some(r.rep.submit_rate)),
            fmt(r.rep.e2e_rate),
            fmt(Some(r.cpu_per_1000())),
            r.peak_rss as f64 / 1e6,
            r.peak_pss as f64 / 1e6,
            fmt(r.rep.arrival_p50_ms),
            fmt(r.rep.arrival_p99_ms),
            fmt(Some(r.rep.submit_p50_ms)),
            fmt(Some(r.rep.submit_p99_ms)),
            r.machine_busy
        );
    }
    let errs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.rep.first_error.is_some())
        .collect();
    if !errs.is_empty() {
        let _ = writeln!(s, "\nFirst error of runs with failed sessions:\n");
        for r in errs {
            let _ = writeln!(
                s,
                "- run {}: `{}`",
                r.n,
                r.rep.first_error.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        s,
        "\nFor the ceiling rows, CPU and memory are the sink's own (it is the target there); \
         250→arrival is not meaningful there (the sink records arrival just before its 250)."
    );
    s
}
