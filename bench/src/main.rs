//! `hopguard-load`: the benchmark's load generator (see bench/README.md).
//!
//! `hopguard-load send`: N parallel STARTTLS sessions, M messages per session, size S; prints
//! one JSON line (submit rate and latency; with `--record-dir`, the arrivals at the sink:
//! end-to-end rate and 250→arrival latency).
//! `hopguard-load idle`: opens N STARTTLS sessions and holds them open.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use hopguard_bench::load::{self, LoadOpts};

#[derive(Parser, Debug)]
#[command(
    name = "hopguard-load",
    about = "SMTP STARTTLS load generator for the hopguard benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send messages and report rates and latencies as one JSON line.
    Send {
        /// Relay (or sink) address, `127.x.y.z:port` (loopback only).
        #[arg(long)]
        target: SocketAddr,
        /// Name the server certificate must match.
        #[arg(long)]
        tls_name: String,
        /// PEM file of the CA to trust (nothing else is trusted).
        #[arg(long)]
        ca: PathBuf,
        /// Local addresses to connect from, comma-separated (round robin).
        #[arg(long, value_delimiter = ',')]
        sources: Vec<Ipv4Addr>,
        /// Parallel sessions (N).
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        /// Messages per session (M).
        #[arg(long, default_value_t = 1)]
        per_session: usize,
        /// Messages in all.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Message size in bytes (S).
        #[arg(long, default_value_t = 2048)]
        size: usize,
        /// Run id ([A-Za-z0-9_-]+), part of each message's X-Bench-Id.
        #[arg(long, default_value = "manual")]
        run_id: String,
        #[arg(long, default_value = "load@src.bench.test")]
        mail_from: String,
        #[arg(long, default_value = "user@bench.test")]
        rcpt: String,
        /// The sink's record directory: wait there for every message to arrive.
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// Longest wait for the arrivals, seconds.
        #[arg(long, default_value_t = 120)]
        drain_timeout: u64,
    },
    /// Open N STARTTLS sessions, hold them for some seconds, report how many opened.
    Idle {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        tls_name: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, value_delimiter = ',')]
        sources: Vec<Ipv4Addr>,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Handshakes in progress at a time.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        #[arg(long, default_value_t = 10)]
        hold_seconds: u64,
    },
}

fn loopback_only(a: &SocketAddr) -> Result<()> {
    if !a.ip().is_loopback() {
        bail!("{a}: this tool only sends to 127.0.0.0/8");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Send {
            target,
            tls_name,
            ca,
            sources,
            sessions,
            per_session,
            count,
            size,
            run_id,
            mail_from,
            rcpt,
            record_dir,
            drain_timeout,
        } => {
            loopback_only(&target)?;
            let rep = load::run(LoadOpts {
                target,
                tls_name,
                ca,
                sources,
                concurrency: sessions,
                per_session,
                count,
                size,
                run_id,
                mail_from,
                rcpt,
                record_dir,
                drain_timeout: Duration::from_secs(drain_timeout),
            })
            .await?;
            println!("{}", rep.to_json());
        }
        Cmd::Idle {
            target,
            tls_name,
            ca,
            sources,
            count,
            parallel,
            hold_seconds,
        } => {
            loopback_only(&target)?;
            let t0 = std::time::Instant::now();
            let (open, failed, first) =
                load::open_idle(target, &tls_name, &ca, &sources, count, parallel).await?;
            println!(
                "{{\"open\":{},\"failed\":{},\"seconds\":{:.3},\"first_error\":{}}}",
                open.len(),
                failed,
                t0.elapsed().as_secs_f64(),
                first
                    .map(|e| format!("{e:?}"))
                    .unwrap_or_else(|| "null".into())
            );
            tokio::time::sleep(Duration::from_secs(hold_seconds)).await;
        }
    }
    Ok(())
}
