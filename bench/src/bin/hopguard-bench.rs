//! `hopguard-bench`: runs the whole benchmark (started by bench/run.sh; see bench/README.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use hopguard_bench::orchestrate::{run, Opts};

#[derive(Parser, Debug)]
#[command(
    name = "hopguard-bench",
    about = "hopguard vs Postfix on loopback; writes RESULTS.md"
)]
struct Cli {
    /// Fewer messages, one A B pair, fewer idle sessions for Postfix.
    #[arg(long)]
    quick: bool,
    /// Where RESULTS.md goes.
    #[arg(long, default_value = "bench/RESULTS.md")]
    results: PathBuf,
    /// Directory with the hopguard and hopguard-sink binaries (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Work directory (default /tmp/hopguard-bench.PID, removed at the end unless --keep).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(long)]
    keep: bool,
    /// Second octet of the loopback addresses used: 127.NET.0.2 hopguard, .0.3 Postfix,
    /// .0.10 sink, 127.NET.1.1-50 clients.
    #[arg(long, default_value_t = 83)]
    net: u8,
    /// Parallel sessions of the load generator.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// A B repetitions (default: 2, --quick 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Idle sessions held open against hopguard (0 skips).
    #[arg(long, default_value_t = 10000)]
    idle: usize,
    /// Idle sessions against Postfix (one smtpd process of ~1.5 MB PSS each; default: the
    /// smaller of --idle and 2000, --quick 1000, to keep a shared machine's memory safe).
    #[arg(long)]
    idle_postfix: Option<usize>,
    /// Multiply the message counts.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Only these message sizes in bytes (comma-separated: 2048,51200,1048576).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Only these messages-per-session values (1,20).
    #[arg(long, value_delimiter = ',')]
    per_session: Vec<usize>,
    /// A note for the RESULTS.md header.
    #[arg(long)]
    note: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    let opts = Opts {
        quick: cli.quick,
        work_dir: cli.work_dir,
        bin_dir,
        results: cli.results,
        net: cli.net,
        concurrency: cli.concurrency,
        reps: cli.reps.unwrap_or(if cli.quick { 1 } else { 2 }),
        idle_hopguard: cli.idle,
        idle_postfix: cli
            .idle_postfix
            .unwrap_or(cli.idle.min(if cli.quick { 1000 } else { 2000 })),
        scale: cli.scale,
        sizes: cli.sizes,
        per_session: cli.per_session,
        keep: cli.keep,
        note: cli.note,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let md = rt.block_on(run(opts))?;
    println!("{md}");
    Ok(())
}
