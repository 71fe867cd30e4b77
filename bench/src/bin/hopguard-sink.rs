//! `hopguard-sink`: the benchmark's sink MTA (see bench/README.md and `hopguard_bench::sink`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Parser;
use hopguard_bench::sink::Sink;

#[derive(Parser, Debug)]
#[command(
    name = "hopguard-sink",
    about = "SMTP sink with STARTTLS that records arrival times"
)]
struct Cli {
    /// Address to listen on (loopback only), e.g. 127.83.0.10:25.
    #[arg(long)]
    listen: SocketAddr,
    /// PEM chain (end-entity first).
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    key: PathBuf,
    /// Directory for RUN.arrivals files.
    #[arg(long)]
    record_dir: PathBuf,
    #[arg(long, default_value = "sink.bench.test")]
    hostname: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() {
        bail!("{}: the sink listens on 127.0.0.0/8 only", cli.listen);
    }
    std::fs::create_dir_all(&cli.record_dir)?;
    let tls = hopguard_bench::tls::server_config(&cli.cert, &cli.key)?;
    let sink = Arc::new(Sink::new(cli.hostname, tls, cli.record_dir));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(sink.serve(cli.listen))
}
