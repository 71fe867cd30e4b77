//! Command line: `run`, `config check`, `check DOMAIN`, `queue list|show|retry|delete`,
//! `policy forget`, `tlsrpt send`, `audit keygen|verify`, `report`; for `run`, signal handling
//! (HUP, USR1, TERM, INT), the pid file, the daily TLS-RPT run and the retries of failed report
//! POSTs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{Config, Loaded, SharedConfig};
use crate::dns::Dns;
use crate::evidence::Metrics;
use crate::inbound::{serve_listener, InboundContext};
use crate::outbound::Outbound;
use crate::queue::Queue;
use crate::spool::{RcptStatus, Spool};

#[derive(Parser, Debug)]
#[command(
    name = "hopguard",
    version,
    about = "Inter-provider mail relay: every hop encrypted and authenticated"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show the MX set, DNSSEC status, TLSA records, MTA-STS policy and the required TLS per
    /// next hop for DOMAIN, and probe each one (no mail is sent). Exit 1 if a policy would fail.
    Check {
        domain: String,
        #[arg(long, short)]
        config: PathBuf,
    },
    /// TLS-RPT (RFC 8460): send the aggregate reports of a day to the domains' rua (`mailto:`
    /// through the queue, `https:` by POST).
    Tlsrpt {
        #[command(subcommand)]
        command: TlsrptCommand,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// TLS policy state.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// The hop audit log: make keys, verify a copy of the log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Build a regulator report from the audit log alone.
    Report {
        /// The audit log directory (or a copy of it).
        #[arg(long)]
        audit: PathBuf,
        /// First day, YYYY-MM-DD (UTC).
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (UTC), inclusive.
        #[arg(long)]
        to: String,
        /// json, csv or html.
        #[arg(long, default_value = "html")]
        format: String,
        /// The node's public key: also verify the checkpoint signatures of the period.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Inspect and act on the queue (works whether or not the relay is running).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file: prints the first error with its place in the file.
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Clear the downgrade memory of DOMAIN (accept a weaker hop again).
    Forget { domain: String },
}

#[derive(Subcommand, Debug)]
pub enum TlsrptCommand {
    /// Queue (mailto) or POST (https) the reports for DAY (YYYY-MM-DD, default yesterday UTC;
    /// `today` for the day so far). Exit 1 if a POST failed.
    Send {
        #[arg(long)]
        day: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Write a new Ed25519 key pair (audit-key.pem, audit-key.pub.pem) and a Message-ID hash key
    /// into DIR; never overwrites.
    Keygen { dir: PathBuf },
    /// Check the hash chain and checkpoint signatures; names the first bad record.
    Verify {
        dir: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// One line per queued message, then its recipients.
    List,
    /// The whole envelope of one message.
    Show { id: String },
    /// Attempt delivery now.
    Retry { id: String },
    /// Remove a message without a DSN.
    Delete { id: String },
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { domain, config } => match check_domain(&config, &domain) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check(&file),
        Command::Queue { command, config } => queue(command, config.as_deref()),
        Command::Policy {
            command: PolicyCommand::Forget { domain },
            config,
        } => spool_for(config.as_deref()).map(|(cfg, _)| {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            let m =
                crate::outbound::downgrade::DowngradeMemory::new(cfg.spool_dir.join("downgrade"));
            if m.forget(&domain) {
                println!("{domain}: downgrade memory cleared");
            } else {
                println!("{domain}: no downgrade memory");
            }
        }),
        Command::Tlsrpt {
            command: TlsrptCommand::Send { day },
            config,
        } => tlsrpt_send(config.as_deref(), day.as_deref()),
        Command::Audit {
            command: AuditCommand::Keygen { dir },
        } => crate::audit::cli::cmd_keygen(&dir),
        Command::Audit {
            command: AuditCommand::Verify { dir, pubkey },
        } => match crate::audit::cli::cmd_verify(&dir, &pubkey) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Report {
            audit,
            from,
            to,
            format,
            pubkey,
            out,
        } => crate::audit::cli::cmd_report(
            &audit,
            &from,
            &to,
            &format,
            pubkey.as_deref(),
            out.as_deref(),
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hopguard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_domain(path: &Path, domain: &str) -> anyhow::Result<bool> {
    let loaded = Loaded::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let cfg = &loaded.config;
        let dns = Dns::new(&cfg.dns.resolvers, cfg.dns.timeout.0)?;
        // A scratch MTA-STS cache: a check never changes the relay's own cache.
        let scratch = std::env::temp_dir().join(format!("hopguard-check-{}", std::process::id()));
        let sts = crate::outbound::mta_sts::MtaSts::new(dns.clone(), scratch.clone(), 443);
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let (report, ok) = crate::outbound::check::check(&dns, &sts, &loaded, &domain).await;
        let _ = std::fs::remove_dir_all(&scratch);
        print!("{report}");
        Ok(ok)
    })
}

fn check(file: &Path) -> anyhow::Result<()> {
    Loaded::load(file)?;
    println!("{}: OK", file.display());
    Ok(())
}

fn run(path: &Path) -> anyhow::Result<()> {
    let loaded = Loaded::load(path)?;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| loaded.config.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(path.to_owned(), loaded))
}

async fn serve(path: PathBuf, loaded: Loaded) -> anyhow::Result<()> {
    let config = loaded.config.clone();
    let spool = Spool::open_with(&config.spool_dir, config.spool_segments)?;
    let dns = Dns::new(&config.dns.resolvers, config.dns.timeout.0)?;
    let shared = SharedConfig::new(loaded);
    let metrics = Arc::new(Metrics::new());
    declare_peers(&metrics, &config);
    let evidence = Arc::new(
        start_evidence(&config, metrics.clone())?.with_tlsrpt(config.spool_dir.join("tlsrpt")),
    );
    if let Some(addr) = config.metrics.listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics listener on {addr}"))?;
        info!(address = %addr, "metrics endpoint listening");
        tokio::spawn(crate::evidence::http::serve(l, metrics.clone()));
    }
    let outbound = Arc::new(Outbound::new(dns, spool.clone(), evidence.clone()));
    let queue = Queue::start(shared.clone(), spool.clone(), outbound.clone());
    let intercept = config
        .intercept
        .start(config.node_id())
        .await
        .map_err(|e| anyhow::anyhow!("intercept: {}", e.redacted()))?;
    let ctx = Arc::new(
        InboundContext::new(
            shared.clone(),
            spool.clone(),
            queue.clone(),
            evidence.clone(),
            intercept.clone(),
        )
        .with_dns(outbound.dns.clone()),
    );
    let mut bound = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let listener = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("listening on {}", l.address))?;
        info!(address = %l.address, "listening");
        bound.push(tokio::spawn(serve_listener(listener, i, ctx.clone())));
    }
    // Written once everything is bound: `queue retry` signals this pid only while the spool
    // lock is held.
    let pid_file = config.spool_dir.join("hopguard.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    info!(node = config.node_id(), "hopguard started");

    if let Some(audit) = evidence.audit().cloned() {
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                m.audit_healthy.set(i64::from(audit.healthy()));
                let dropped = audit.dropped();
                if dropped > seen {
                    m.audit_dropped.inc_by(dropped - seen);
                    seen = dropped;
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
    }

    // TLS-RPT counts are kept in memory and written out every second.
    {
        let evidence = evidence.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let e = evidence.clone();
                let _ = tokio::task::spawn_blocking(move || e.flush_tlsrpt()).await;
            }
        });
    }

    // TLS-RPT: once a day, shortly after midnight UTC, the previous day's reports.
    {
        // The relay's own spool: report mails are committed like any other message.
        let spool = spool.clone();
        let dns = outbound.dns.clone();
        let m = metrics.clone();
        let queue = queue.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let now = chrono::Utc::now();
                let next = (now + chrono::Duration::days(1))
                    .date_naive()
                    .and_hms_opt(0, 15, 0)
                    .map(|t| t.and_utc())
                    .unwrap_or(now + chrono::Duration::days(1));
                let wait = (next - now)
                    .to_std()
                    .unwrap_or(std::time::Duration::from_secs(3600));
                tokio::time::sleep(wait).await;
                let day = (chrono::Utc::now() - chrono::Duration::days(1))
                    .format("%Y-%m-%d")
                    .to_string();
                // The configuration in force now (reloads included): hostname, trust anchors.
                let loaded = shared.loaded();
                let pkix = crate::evidence::tlsrpt_https::pkix_config(&loaded.outbound_tls);
                match queue_tlsrpt_reports(&loaded.config, &spool, &dns, pkix, &day).await {
                    Ok(r) => {
                        m.tlsrpt_reports.inc_by(r.sent() as u64);
                        if r.queued > 0 {
                            queue.rescan();
                        }
                        for f in &r.failures {
                            warn!(day = %day, failure = %f, "TLS-RPT report not delivered");
                        }
                        for l in r.lines.iter().filter(|l| !r.failures.contains(l)) {
                            info!(day = %day, report = %l, "TLS-RPT report");
                        }
                        info!(
                            day = %day,
                            queued = r.queued,
                            posted = r.posted,
                            failed = r.failures.len(),
                            "TLS-RPT reports sent"
                        );
                    }
                    Err(e) => error!(error = %e, "TLS-RPT reports not queued"),
                }
            }
        });
    }

    // Retries of failed https: TLS-RPT POSTs (kept in spool_dir/tlsrpt/retry/).
    {
        let dns = outbound.dns.clone();
        let m = metrics.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let loaded = shared.loaded();
                let every = loaded
                    .config
                    .tlsrpt
                    .retry_after
                    .0
                    .min(std::time::Duration::from_secs(60));
                tokio::time::sleep(every).await;
                let loaded = shared.loaded();
                let pkix = crate::evidence::tlsrpt_https::pkix_config(&loaded.outbound_tls);
                let n = retry_tlsrpt_posts(&loaded.config, &dns, pkix).await;
                m.tlsrpt_reports.inc_by(n as u64);
            }
        });
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                reload(&path, &shared, &outbound);
                if let Some(li) = &intercept {
                    // The error names a LIID: only its redacted form reaches ordinary logs.
                    if let Err(e) = li.reload_warrants() {
                        error!(error = e.redacted(), "interception warrants not reloaded");
                    }
                }
                declare_peers(&metrics, &shared.current());
            }
            _ = usr1.recv() => queue.rescan(),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down: no new connections; unacknowledged transactions are not queued");
    for b in bound {
        b.abort();
    }
    if let Some(audit) = evidence.audit().cloned() {
        if let Err(e) = audit.shutdown().await {
            error!(error = %e, "audit log shutdown failed");
        }
    }
    evidence.flush_tlsrpt();
    if let Err(e) = spool.sync_pending() {
        error!(error = %e, "cannot fsync the queue directory");
    }
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// Metrics plus, when configured, the hop audit log. A damaged audit log stops the start:
/// the operator must verify it before the chain continues.
fn start_evidence(
    config: &Config,
    metrics: Arc<Metrics>,
) -> anyhow::Result<crate::evidence::Evidence> {
    let Some(a) = &config.audit else {
        return Ok(crate::evidence::Evidence::new(metrics, None, false, None));
    };
    let signing_key = crate::audit::load_signing_key(&a.key_file)?;
    let handle = crate::audit::AuditLog::start(crate::audit::AuditConfig {
        dir: a.dir.clone(),
        node_id: config.node_id().to_string(),
        signing_key,
        checkpoint_every: a.checkpoint_every,
        capacity: crate::config::defaults::AUDIT_CAPACITY,
    })
    .with_context(|| format!("audit log in {}", a.dir.display()))?;
    let mid_key = match &a.message_id_key_file {
        Some(p) => Some(crate::audit::load_message_id_key(p)?),
        None => None,
    };
    info!(dir = %a.dir.display(), strict = a.strict, "audit log open");
    Ok(crate::evidence::Evidence::new(
        metrics,
        Some(handle),
        a.strict,
        mid_key,
    ))
}

/// Tells the metrics which charter peers exist (info series, zero-valued counters).
fn declare_peers(metrics: &Metrics, config: &Config) {
    let peers: Vec<(String, &str, &str)> = config
        .peers
        .iter()
        .map(|p| {
            let inbound = match p.inbound_tls {
                crate::config::InboundTls::Required => "required",
                crate::config::InboundTls::Optional => "optional",
            };
            let route = p
                .domains
                .first()
                .map(|d| config.route_for(d).tls.as_str())
                .unwrap_or("verify");
            (p.name.clone(), inbound, route)
        })
        .collect();
    metrics.init_peers(&peers);
}

/// SIGHUP: validate the new file completely first; a bad one changes nothing.
fn reload(path: &Path, shared: &SharedConfig, outbound: &Outbound) {
    match Loaded::load(path) {
        Ok(new) => {
            let old = shared.current();
            let old_addrs: Vec<_> = old.listeners.iter().map(|l| l.address).collect();
            let new_addrs: Vec<_> = new.config.listeners.iter().map(|l| l.address).collect();
            if old_addrs != new_addrs {
                warn!("listener addresses changed: they take effect at the next restart");
            }
            if old.spool_dir != new.config.spool_dir {
                warn!("spool_dir changed: it takes effect at the next restart");
            }
            shared.replace(new);
            // Sessions negotiated under the old policy are not reused.
            outbound.pool.clear();
            info!("configuration reloaded");
        }
        Err(e) => {
            error!(error = %e, "configuration reload rejected; the running configuration stays")
        }
    }
}

/// `hopguard tlsrpt send`: queues each domain's report for the day to its `mailto:` rua through
/// our own queue (then wakes a running relay) and POSTs it to its `https:` rua. An error when a
/// POST failed (exit 1); the mail reports are queued all the same.
fn tlsrpt_send(config: Option<&Path>, day: Option<&str>) -> anyhow::Result<()> {
    let (cfg, spool) = spool_for(config)?;
    let day = match day {
        None => (chrono::Utc::now() - chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string(),
        Some("today") => chrono::Utc::now().format("%Y-%m-%d").to_string(),
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| anyhow::anyhow!("--day: expected YYYY-MM-DD or `today`"))?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls =
        crate::outbound::tls::OutboundTls::new(cfg.tls.system_roots, cfg.tls.ca_file.as_deref())
            .context("tls")?;
    let pkix = crate::evidence::tlsrpt_https::pkix_config(&tls);
    let r = rt.block_on(async {
        let dns = Dns::new(&cfg.dns.resolvers, cfg.dns.timeout.0)?;
        queue_tlsrpt_reports(&cfg, &spool, &dns, pkix, &day).await
    })?;
    for l in &r.lines {
        println!("{l}");
    }
    if r.queued > 0 {
        wake(&cfg);
    }
    if !r.failures.is_empty() {
        anyhow::bail!(
            "{} TLS-RPT report(s) not delivered by HTTPS POST",
            r.failures.len()
        );
    }
    Ok(())
}

/// One round of TLS-RPT POST retries (the relay, every minute): every waiting report that is
/// due is rebuilt from the day's stored counts and POSTed again. Returns the number posted.
pub async fn retry_tlsrpt_posts(cfg: &Config, dns: &Dns, pkix: Arc<rustls::ClientConfig>) -> usize {
    use crate::evidence::{tlsrpt, tlsrpt_retry};
    let now = chrono::Utc::now().timestamp();
    let mut posted = 0;
    let store = cfg.spool_dir.join("tlsrpt");
    for (path, p) in tlsrpt_retry::due(&cfg.spool_dir, now) {
        let Some(data) = tlsrpt::TlsRptStore::load(&store, &p.day, &p.domain) else {
            warn!(day = %p.day, domain = %p.domain, "TLS-RPT retry dropped: the day's counts are gone");
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let json = tlsrpt::report_json(&cfg.hostname, &p.day, &p.domain, &data);
        let gz = tlsrpt::gzip_stored(json.to_string().as_bytes());
        match crate::evidence::tlsrpt_https::post_report(dns, pkix.clone(), &p.url, &gz).await {
            Ok(code) => {
                info!(day = %p.day, domain = %p.domain, url = %p.url, http = code, attempts = p.attempts + 1,
                      "TLS-RPT report posted on retry");
                let _ = std::fs::remove_file(&path);
                posted += 1;
            }
            Err(e) => {
                let (day, domain, url) = (p.day.clone(), p.domain.clone(), p.url.clone());
                let dropped = tlsrpt_retry::failed_again(
                    &path,
                    p,
                    &e.to_string(),
                    chrono::Utc::now().timestamp(),
                    cfg.tlsrpt.retry_after.0,
                    cfg.tlsrpt.give_up_after.0,
                );
                if dropped {
                    warn!(day = %day, domain = %domain, url = %url, error = %e,
                          "TLS-RPT report given up (tlsrpt.give_up_after)");
                } else {
                    warn!(day = %day, domain = %domain, url = %url, error = %e,
                          "TLS-RPT report not delivered; tried again later");
                }
            }
        }
    }
    posted
}

/// What [`queue_tlsrpt_reports`] did.
#[derive(Debug, Default)]
pub struct TlsRptSent {
    /// Report mails queued (one per domain and `mailto:` rua).
    pub queued: usize,
    /// Reports POSTed to an `https:` rua and answered with 2xx.
    pub posted: usize,
    /// One line per failed POST: `DOMAIN: POST to URL failed: REASON …`.
    pub failures: Vec<String>,
    /// One line per domain and rua, in order (what `tlsrpt send` prints).
    pub lines: Vec<String>,
}

impl TlsRptSent {
    /// Reports sent: queued mails plus accepted POSTs (the `tlsrpt_reports` metric).
    pub fn sent(&self) -> usize {
        self.queued + self.posted
    }
}

/// Sends the TLS-RPT reports of `day`: one mail queued per domain and `mailto:` rua (null
/// sender: a report is never bounced), one POST per domain and `https:` rua (server verified
/// with `pkix`; a failed one is kept for the relay's retries, `evidence::tlsrpt_retry`).
/// Returns a line per report (the command prints them, the relay logs them); a failed POST is
/// counted, not an error.
pub async fn queue_tlsrpt_reports(
    cfg: &Config,
    spool: &Spool,
    dns: &Dns,
    pkix: Arc<rustls::ClientConfig>,
    day: &str,
) -> anyhow::Result<TlsRptSent> {
    use crate::evidence::tlsrpt::{self, Rua};
    let dir = cfg.spool_dir.join("tlsrpt");
    let mut sent = TlsRptSent::default();
    for domain in tlsrpt::TlsRptStore::domains(&dir, day) {
        let Some(data) = tlsrpt::TlsRptStore::load(&dir, day, &domain) else {
            continue;
        };
        let txt = dns
            .txt(&format!("_smtp._tls.{domain}"))
            .await
            .unwrap_or_default();
        let ruas = tlsrpt::ruas(&txt);
        if ruas.is_empty() {
            sent.lines.push(format!(
                "{domain}: no TLS-RPT mailto or https rua published; nothing sent"
            ));
            continue;
        }
        let json = tlsrpt::report_json(&cfg.hostname, day, &domain, &data);
        for rua in ruas {
            let to = match rua {
                Rua::Mailto(to) => to,
                Rua::Https(url) => {
                    let gz = tlsrpt::gzip_stored(json.to_string().as_bytes());
                    match crate::evidence::tlsrpt_https::post_report(dns, pkix.clone(), &url, &gz)
                        .await
                    {
                        Ok(code) => {
                            sent.lines.push(format!(
                                "{domain}: report for {day} posted to {url} (HTTP {code})"
                            ));
                            // Posted: a retry of the same report waiting from earlier is moot.
                            crate::evidence::tlsrpt_retry::forget(
                                &cfg.spool_dir,
                                day,
                                &domain,
                                &url,
                            );
                            sent.posted += 1;
                        }
                        Err(e) => {
                            let kept = crate::evidence::tlsrpt_retry::record_failure(
                                &cfg.spool_dir,
                                day,
                                &domain,
                                &url,
                                &e.to_string(),
                                chrono::Utc::now().timestamp(),
                                cfg.tlsrpt.retry_after.0,
                            );
                            let line = match kept {
                                Ok(()) => format!(
                                    "{domain}: POST to {url} failed: {e} (a running relay tries again)"
                                ),
                                Err(k) => format!(
                                    "{domain}: POST to {url} failed: {e} (not kept for retry: {k})"
                                ),
                            };
                            sent.lines.push(line.clone());
                            sent.failures.push(line);
                        }
                    }
                    continue;
                }
            };
            let body = tlsrpt::report_mail(&cfg.hostname, day, &domain, &to, &json);
            let rcpt_domain = to
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            let now = chrono::Utc::now();
            let env = crate::spool::Envelope {
                version: crate::spool::ENVELOPE_VERSION,
                id: String::new(),
                node_id: cfg.node_id().to_string(),
                received_at: now.timestamp(),
                received_ms: now.timestamp_millis(),
                client_ip: "127.0.0.1".into(),
                helo: cfg.hostname.clone(),
                peer: None,
                tls: None,
                mail_from: String::new(),
                body: Default::default(),
                smtputf8: false,
                requiretls: false,
                tls_required_no: false,
                ret: None,
                envid: None,
                size: 0,
                message_id_hash: None,
                recipients: vec![crate::spool::Recipient {
                    address: to.clone(),
                    domain: rcpt_domain,
                    orcpt: None,
                    notify: smtp_proto::RCPT_NOTIFY_NEVER,
                    status: Default::default(),
                    last_failure: None,
                    notified: false,
                }],
                attempts: 0,
                next_attempt: now.timestamp(),
                is_bounce: true,
            };
            let c = spool.inject(env, &body).await?;
            sent.lines.push(format!(
                "{domain}: report for {day} queued to <{to}> as {}",
                c.id()
            ));
            sent.queued += 1;
        }
    }
    Ok(sent)
}

fn spool_for(config: Option<&Path>) -> anyhow::Result<(Config, Spool)> {
    let path = config.context("--config FILE is required to find the spool")?;
    let cfg = Config::load(path)?;
    let spool = Spool::attach(&cfg.spool_dir)?;
    Ok((cfg, spool))
}

fn ts(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

fn queue(cmd: QueueCommand, config: Option<&Path>) -> anyhow::Result<()> {
    let (cfg, spool) = spool_for(config)?;
    match cmd {
        QueueCommand::List => {
            let (envs, bad) = spool.scan()?;
            for e in &envs {
                let pending = e.pending().count();
                println!(
                    "{} arrived={} size={} from=<{}> recipients={} pending={} attempts={} next={}",
                    e.id,
                    ts(e.received_at),
                    e.size,
                    e.mail_from,
                    e.recipients.len(),
                    pending,
                    e.attempts,
                    ts(e.next_attempt)
                );
                for r in &e.recipients {
                    let status = match r.status {
                        RcptStatus::Pending if r.last_failure.is_some() => "deferred",
                        RcptStatus::Pending => "pending",
                        RcptStatus::Delivered => "delivered",
                        RcptStatus::Failed => "failed",
                    };
                    match &r.last_failure {
                        Some(f) => println!(
                            "    <{}> {} {} {}{}",
                            r.address,
                            status,
                            f.status,
                            f.text,
                            f.reason.map(|x| format!(" [{x}]")).unwrap_or_default()
                        ),
                        None => println!("    <{}> {}", r.address, status),
                    }
                }
            }
            for b in bad {
                println!("unreadable: {b}");
            }
            if envs.is_empty() {
                println!("queue is empty");
            }
        }
        QueueCommand::Show { id } => {
            let e = spool.load(&id)?;
            println!("{}", serde_json::to_string_pretty(&e)?);
        }
        QueueCommand::Retry { id } => {
            spool.load(&id)?;
            spool.request_retry(&id)?;
            wake(&cfg);
            println!("{id}: scheduled for immediate delivery");
        }
        QueueCommand::Delete { id } => {
            spool.load(&id)?;
            spool.remove(&id)?;
            // A message in a shared segment leaves the running relay's queue at its next scan.
            wake(&cfg);
            println!("{id}: deleted");
        }
    }
    Ok(())
}

/// Asks a running relay to rescan the queue now: only if a relay holds the spool lock and the
/// pid file names a hopguard process (a stale pid file never signals another program).
fn wake(cfg: &Config) {
    if !Spool::is_in_use(&cfg.spool_dir) {
        return;
    }
    let Ok(text) = std::fs::read_to_string(cfg.spool_dir.join("hopguard.pid")) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains("hopguard") {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg("-USR1")
        .arg(pid.to_string())
        .status();
}
