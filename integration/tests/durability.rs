//! The durability contract seen from the outside (FIELD-NOTES: a kill -9 test alone cannot
//! prove fsync). The relay runs under strace; for one accepted message the system calls must
//! show, before the `250 ... Queued as ID` is written to the client: the message file (data and
//! embedded envelope, in tmp/) fsynced, then renamed into queue/ (the commit point), then the
//! queue directory fsynced.

use anyhow::{ensure, Context, Result};
use hopguard_integration::smtp_client::SwaksMail;
use hopguard_integration::world::{marker, World, TLS_PEER};
use hopguard_integration::Hopguard;

#[test]
fn fsync_and_rename_happen_before_the_250() -> Result<()> {
    let w = World::start()?;
    let cfg = w.relay_config(); // inbound.tls: optional, so the 250 is visible in plaintext
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let dir = w.dir.sub("hopguard")?;
    let trace = dir.join("strace.txt");
    let trace_s = trace.display().to_string();
    let hg = Hopguard::start_wrapped(
        &dir,
        &cfg.to_yaml(),
        &[
            "strace",
            "-f",
            "-y",
            "-qq",
            "-s",
            "200",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,write,sendto",
            "-o",
            &trace_s,
        ],
    )?;
    let out = SwaksMail {
        server: w.relay_addr(),
        source: Some(w.addrs.client),
        from: "sender@origin.test",
        to: &format!("u@{TLS_PEER}"),
        tls: false,
        marker: &marker("durability"),
    }
    .send()?;
    ensure!(out.success(), "submission failed:\n{}", out.output);
    let id = out
        .output
        .lines()
        .find_map(|l| l.split("Queued as ").nth(1))
        .map(|s| s.trim().to_string())
        .context("no queue id in the 250 reply")?;
    // Stop the traced relay itself (its pid file), then strace: killing only strace would leave
    // the relay running, detached.
    let pid: u32 = std::fs::read_to_string(cfg.spool_dir.join("hopguard.pid"))?
        .trim()
        .parse()?;
    hopguard_integration::signal_pid(pid, "TERM")?;
    hopguard_integration::wait_until(
        "the traced relay to exit",
        std::time::Duration::from_secs(30),
        || Ok((!hopguard_integration::pid_alive(pid)).then_some(())),
    )?;
    drop(hg);
    let text = std::fs::read_to_string(&trace)?;
    let lines: Vec<&str> = text.lines().collect();
    let pos = |what: &str, pred: &dyn Fn(&str) -> bool| -> Result<usize> {
        lines
            .iter()
            .position(|l| pred(l))
            .with_context(|| format!("no {what} in the trace:\n{text}"))
    };
    let reply = pos("write of the 250", &|l| {
        (l.contains("write(") || l.contains("sendto(")) && l.contains(&format!("Queued as {id}"))
    })?;
    let msg_sync = pos("fsync of the message file", &|l| {
        (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains(&format!("tmp/{id}.msg>"))
    })?;
    let env_rename = pos("rename of the message file into queue/", &|l| {
        l.contains("rename") && l.contains(&format!("queue/{id}.msg"))
    })?;
    let dir_sync = lines
        .iter()
        .enumerate()
        .skip(env_rename)
        .position(|(_, l)| l.contains("fsync(") && l.trim_end().ends_with("/queue>) = 0"))
        .map(|p| p + env_rename)
        .with_context(|| format!("no fsync of the queue directory after the rename:\n{text}"))?;
    ensure!(
        msg_sync < env_rename,
        "message fsynced after the commit point (its rename)"
    );
    ensure!(
        dir_sync < reply,
        "250 sent before the queue directory was fsynced:\n{text}"
    );
    ensure!(
        env_rename < reply && msg_sync < reply,
        "250 before the commit:\n{text}"
    );
    Ok(())
}
