//! A full spool (FIELD-NOTES: simulate disk-full with a small tmpfs). The relay's spool is a
//! 3 MiB tmpfs mounted in a private mount namespace of the relay's own (nothing machine-wide):
//! messages for a destination that is down fill it until the relay refuses with a 4xx — never a
//! 250 it cannot keep, never a crash. When the destination comes up, every acknowledged message
//! is delivered, the space comes back, and new mail is accepted again.

use anyhow::{bail, ensure, Result};
use hopguard_integration::smtp_client::RawSmtp;
use hopguard_integration::world::{marker, World, LATER_PEER};
use hopguard_integration::Hopguard;
use std::time::Duration;

/// One message of about 64 KiB; the reply to its end of data.
async fn send_one(c: &mut RawSmtp, m: &str) -> Result<hopguard_integration::smtp_client::Reply> {
    let r = c.cmd("MAIL FROM:<sender@origin.test>").await?;
    ensure!(r.code == 250, "MAIL: {r}");
    let r = c.cmd(&format!("RCPT TO:<u@{LATER_PEER}>")).await?;
    ensure!(r.code == 250, "RCPT: {r}");
    let r = c.cmd("DATA").await?;
    ensure!(r.code == 354, "DATA: {r}");
    let mut body = format!("Subject: {m}\r\n\r\n{m}\r\n");
    for _ in 0..830 {
        body.push_str(&"x".repeat(76));
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    c.send(body.as_bytes()).await?;
    c.read_reply().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_spool_refuses_with_4xx_and_loses_nothing() -> Result<()> {
    let w = World::start()?;
    let cfg = w.relay_config();
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let dir = w.dir.sub("hopguard")?;
    let script = format!(
        "mount -t tmpfs -o size=3m,mode=0700 hopguard-spool '{}' && exec \"$@\"",
        cfg.spool_dir.display()
    );
    let hg = Hopguard::start_wrapped(
        &dir,
        &cfg.to_yaml(),
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ],
    )?;
    let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
    c.ehlo("client.test").await?;
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..200 {
        let m = marker(&format!("full-{n}"));
        let r = send_one(&mut c, &m).await?;
        match r.code {
            250 => acked.push(m),
            400..=499 => {
                refused = Some(r);
                break;
            }
            _ => bail!(
                "unexpected reply to a message on a filling spool: {r}\n{}",
                hg.log()
            ),
        }
    }
    let Some(refused) = refused else {
        bail!(
            "200 messages of 64 KiB accepted on a 3 MiB spool\n{}",
            hg.log()
        );
    };
    ensure!(
        refused.code == 451 && refused.enhanced() == Some("4.3.0"),
        "refused with {refused}"
    );
    ensure!(
        acked.len() >= 5,
        "only {} messages before the spool was full",
        acked.len()
    );
    // The session goes on: a command after the refusal is answered.
    let r = c.cmd("NOOP").await?;
    ensure!(r.code == 250, "NOOP after the refusal: {r}");
    let _ = c.cmd("QUIT").await;

    // The destination comes up: everything acknowledged arrives.
    let later = tokio::task::block_in_place(|| w.start_later_peer())?;
    let delivered = tokio::task::block_in_place(|| {
        hopguard_integration::wait_until(
            "every acknowledged message at the peer",
            Duration::from_secs(120),
            || {
                let got = later.messages();
                Ok(acked
                    .iter()
                    .all(|m| got.iter().any(|x| x.contains(m.as_str())))
                    .then_some(()))
            },
        )
    });
    if let Err(e) = delivered {
        let got = later.messages();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|m| !got.iter().any(|x| x.contains(m.as_str())))
            .collect();
        bail!(
            "{e:#}: {} of {} lost: {lost:?}\n{}",
            lost.len(),
            acked.len(),
            hg.log()
        );
    }

    // The space came back: a new message is accepted and delivered.
    let m = marker("after-full");
    let accepted = async {
        for _ in 0..30 {
            let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
            c.ehlo("client.test").await?;
            let r = send_one(&mut c, &m).await?;
            let _ = c.cmd("QUIT").await;
            if r.code == 250 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bail!("no message accepted once the queue was delivered")
    };
    if let Err(e) = accepted.await {
        bail!("{e:#}\n{}", hg.log());
    }
    tokio::task::block_in_place(|| {
        later.wait_for_message(|x| x.contains(&m), Duration::from_secs(60))
    })?;
    eprintln!(
        "{} messages accepted before the spool was full, all delivered",
        acked.len()
    );
    Ok(())
}
