//! The durability contract seen from the outside (FIELD-NOTES: a kill -9 test alone cannot
//! prove fsync). The relay runs under strace; for one accepted message the system calls must
//! show, before the `250 ... Queued as ID` is written to the client:
//! - shared segments (the default): the record naming the message appended to a segment file
//!   and that file fdatasynced after the append (and, for a segment created for it, the queue
//!   directory fsynced after its creation);
//! - one file per message (`spool_segments: false`): the message file (data and embedded
//!   envelope, in tmp/) fsynced, then renamed into queue/ (the commit point), then the queue
//!   directory fsynced.

use anyhow::{ensure, Context, Result};
use hopguard_integration::smtp_client::SwaksMail;
use hopguard_integration::world::{marker, World, TLS_PEER};
use hopguard_integration::Hopguard;

/// The strace output of one accepted message.
struct Trace {
    text: String,
    /// Its queue id.
    id: String,
}

impl Trace {
    fn lines(&self) -> Vec<&str> {
        self.text.lines().collect()
    }

    /// The first line at or after line `from` that `pred` accepts.
    fn find(&self, from: usize, what: &str, pred: impl Fn(&str) -> bool) -> Result<usize> {
        self.lines()
            .iter()
            .skip(from)
            .position(|l| pred(l))
            .map(|p| p + from)
            .with_context(|| format!("no {what} in the trace:\n{}", self.text))
    }

    /// The write of the `250 … Queued as ID`.
    fn reply(&self) -> Result<usize> {
        let queued = format!("Queued as {}", self.id);
        self.find(0, "write of the 250", |l| {
            (l.contains("write(") || l.contains("sendto(")) && l.contains(&queued)
        })
    }

    /// The first successful fsync of the queue directory at or after line `from`.
    fn queue_dir_sync(&self, from: usize, after: &str) -> Result<usize> {
        self.find(
            from,
            &format!("fsync of the queue directory after {after}"),
            |l| l.contains("fsync(") && l.trim_end().ends_with("/queue>) = 0"),
        )
    }
}

#[test]
fn segment_append_is_fdatasynced_before_the_250() -> Result<()> {
    let t = trace_one_message(true)?;
    let text = &t.text;
    let reply = t.reply()?;
    let append = t.find(0, "append of the message's record to a segment", |l| {
        l.contains("write") && l.contains(".seg>") && l.contains(&t.id)
    })?;
    // The segment file the record went to, as strace names the descriptor.
    let seg = t.lines()[append]
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(p, _)| p.to_string())
        .context("no file name on the append")?;
    let seg_sync = t.find(
        append,
        &format!("fdatasync of {seg} after the append"),
        |l| {
            l.contains("fdatasync(")
                && l.contains(&format!("<{seg}>"))
                && l.trim_end().ends_with("= 0")
        },
    )?;
    ensure!(
        seg_sync < reply,
        "250 sent before the segment was fdatasynced:\n{text}"
    );
    // The segment was made for this message (a fresh relay): its name is durable first.
    let created = t.find(0, "creation of the segment", |l| {
        l.contains("openat(") && l.contains(&seg)
    })?;
    let dir_sync = t.queue_dir_sync(created, "the segment's creation")?;
    ensure!(
        dir_sync < reply,
        "250 before the new segment's name was durable:\n{text}"
    );
    Ok(())
}

#[test]
fn fsync_and_rename_happen_before_the_250() -> Result<()> {
    let t = trace_one_message(false)?;
    let (text, id) = (&t.text, &t.id);
    let reply = t.reply()?;
    let msg_sync = t.find(0, "fsync of the message file", |l| {
        (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains(&format!("tmp/{id}.msg>"))
    })?;
    let env_rename = t.find(0, "rename of the message file into queue/", |l| {
        l.contains("rename") && l.contains(&format!("queue/{id}.msg"))
    })?;
    let dir_sync = t.queue_dir_sync(env_rename, "the rename")?;
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

/// Runs a relay under strace, submits one message, stops the relay.
fn trace_one_message(segments: bool) -> Result<Trace> {
    let w = World::start()?;
    let mut cfg = w.relay_config(); // inbound.tls: optional, so the 250 is visible in plaintext
    cfg.extra.push_str(&format!("spool_segments: {segments}\n"));
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
            "trace=fsync,fdatasync,rename,renameat,renameat2,write,pwrite64,sendto,openat",
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
    Ok(Trace {
        text: std::fs::read_to_string(&trace)?,
        id,
    })
}

/// A crash under load: eight sessions submit small messages (the shared-segment path, commits
/// grouped under one fdatasync) to a destination that is down, the relay is killed (SIGKILL)
/// in the middle, restarted, and the destination comes up: every message that got its `250`
/// arrives (duplicates tolerated, never a loss), whether it was still in a segment or had moved
/// to a file of its own at its first deferral.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_survives_a_kill9_under_load() -> Result<()> {
    use hopguard_integration::smtp_client::RawSmtp;
    use hopguard_integration::world::LATER_PEER;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let w = World::start()?;
    let mut hg = w.start_relay(&w.relay_config())?;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..8 {
        let (addr, src) = (w.relay_addr(), w.addrs.client);
        let (acked, stop) = (acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = RawSmtp::connect_greeted(addr, Some(src)).await else {
                return;
            };
            if c.ehlo("client.test").await.is_err() {
                return;
            }
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let m = marker(&format!("load-{s}-{n}"));
                n += 1;
                let steps = async {
                    ensure!(c.cmd("MAIL FROM:<sender@origin.test>").await?.code == 250);
                    ensure!(c.cmd(&format!("RCPT TO:<u@{LATER_PEER}>")).await?.code == 250);
                    ensure!(c.cmd("DATA").await?.code == 354);
                    c.send(format!("Subject: {m}\r\n\r\n{m}\r\n.\r\n").as_bytes())
                        .await?;
                    let r = c.read_reply().await?;
                    ensure!(r.code == 250, "{r}");
                    Ok(())
                };
                match steps.await {
                    Ok(()) => acked.lock().unwrap().push(m),
                    Err(_) => return, // the relay is gone
                }
            }
        }));
    }
    // Let some deferrals happen (moves out of the segment), then crash mid-stream.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    tokio::task::block_in_place(|| hg.kill9())?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    ensure!(
        acked.len() >= 20,
        "too few messages acknowledged before the crash: {}",
        acked.len()
    );

    let later = tokio::task::block_in_place(|| w.start_later_peer())?;
    tokio::task::block_in_place(|| hg.restart())?;
    let missing = tokio::task::block_in_place(|| {
        hopguard_integration::wait_until(
            "every acknowledged message at the peer",
            Duration::from_secs(120),
            || {
                let got = later.messages();
                let missing: Vec<&String> = acked
                    .iter()
                    .filter(|m| !got.iter().any(|x| x.contains(m.as_str())))
                    .collect();
                Ok(missing.is_empty().then_some(()))
            },
        )
    });
    if let Err(e) = missing {
        let got = later.messages();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|m| !got.iter().any(|x| x.contains(m.as_str())))
            .collect();
        anyhow::bail!(
            "{e:#}: {} of {} acknowledged messages lost: {lost:?}\n{}",
            lost.len(),
            acked.len(),
            hg.log()
        );
    }
    eprintln!(
        "{} acknowledged messages, all delivered after the crash",
        acked.len()
    );
    Ok(())
}
