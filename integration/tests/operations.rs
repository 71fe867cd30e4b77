//! Operator-facing behaviour of the relay core: queue commands on a running relay, per-IP
//! connection limits and the RFC 5321 idle timeout.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::world::{marker, World, LATER_PEER};
use hopguard_integration::{wait_until, Hopguard, RawSmtp};

fn with_log<T>(r: Result<T>, hg: &Hopguard) -> Result<T> {
    r.with_context(|| format!("hopguard.log:\n{}", hg.log()))
}

/// The first queue id printed by `queue list`.
fn first_queued_id(hg: &Hopguard) -> Result<Option<String>> {
    let list = hg.queue_list()?;
    Ok(list
        .lines()
        .find(|l| !l.starts_with(' ') && !l.starts_with("queue is empty"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string))
}

// `queue retry ID` on a running relay delivers at once (the backoff would otherwise wait an
// hour); `queue delete ID` removes a message that is then never delivered.
#[test]
fn queue_retry_and_delete_act_on_a_running_relay() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    cfg.min_backoff = "1h".into();
    cfg.max_backoff = "2h".into();
    let hg = w.start_relay(&cfg)?;
    // later-peer.test has no server yet: the first attempt fails and waits an hour.
    let keep = marker("retry");
    let out = w.submit("sender@origin.test", &format!("a@{LATER_PEER}"), &keep)?;
    ensure!(out.success(), "{}", out.output);
    let id = with_log(
        wait_until(
            "the message to be deferred",
            Duration::from_secs(30),
            || {
                let list = hg.queue_list()?;
                Ok(list
                    .contains("deferred")
                    .then_some(())
                    .and(first_queued_id(&hg)?))
            },
        ),
        &hg,
    )?;
    let gone = marker("delete");
    let out = w.submit("sender@origin.test", &format!("b@{LATER_PEER}"), &gone)?;
    ensure!(out.success(), "{}", out.output);
    let second = wait_until(
        "the second message in the queue",
        Duration::from_secs(30),
        || {
            let list = hg.queue_list()?;
            Ok(list
                .lines()
                .filter(|l| !l.starts_with(' '))
                .filter_map(|l| l.split_whitespace().next())
                .find(|x| *x != id)
                .map(str::to_string))
        },
    )?;

    let out = hg.run_cli(&[
        "queue",
        "delete",
        &second,
        "--config",
        &hg.config_path().display().to_string(),
    ])?;
    ensure!(out.status.success(), "queue delete failed: {out:?}");
    let show = hg.run_cli(&[
        "queue",
        "show",
        &second,
        "--config",
        &hg.config_path().display().to_string(),
    ])?;
    ensure!(!show.status.success(), "a deleted message is still shown");

    let later = w.start_later_peer()?;
    let out = hg.run_cli(&[
        "queue",
        "retry",
        &id,
        "--config",
        &hg.config_path().display().to_string(),
    ])?;
    ensure!(out.status.success(), "queue retry failed: {out:?}");
    with_log(
        later.wait_for_message(|m| m.contains(&keep), Duration::from_secs(30)),
        &hg,
    )?;
    with_log(
        wait_until("the queue to empty", Duration::from_secs(30), || {
            Ok(hg.queue_is_empty()?.then_some(()))
        }),
        &hg,
    )?;
    ensure!(
        !later.messages().iter().any(|m| m.contains(&gone)),
        "a deleted message was delivered"
    );
    Ok(())
}

// inbound.max_connections_per_ip: one more connection from the same address gets 421.
#[tokio::test]
async fn per_ip_connection_limit() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    cfg.extra = "".into();
    let yaml = cfg.to_yaml().replace(
        "inbound:\n  tls: optional",
        "inbound:\n  tls: optional\n  max_connections_per_ip: 2",
    );
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let hg = Hopguard::start(&w.dir.sub("hopguard")?, &yaml)?;
    let run = async {
        let _a = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
        let _b = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
        let mut c = RawSmtp::connect(w.relay_addr(), Some(w.addrs.client)).await?;
        let r = c.read_reply().await?;
        ensure!(r.code == 421, "third connection from one IP: {r}");
        // Another address is not affected.
        let mut d = RawSmtp::connect(w.relay_addr(), Some(w.addrs.stranger)).await?;
        let r = d.read_reply().await?;
        ensure!(r.code == 220, "a different IP must be served: {r}");
        Ok(())
    };
    with_log(run.await, &hg)
}

// RFC 5321 §4.5.3.2: an idle client is disconnected with 421 after the command timeout, so a
// slow client cannot pin a connection for ever.
#[tokio::test]
async fn idle_client_times_out() -> Result<()> {
    let w = World::start()?;
    let cfg = w.relay_config();
    let yaml = cfg.to_yaml().replace(
        "inbound:\n  tls: optional",
        "inbound:\n  tls: optional\n  command_timeout: 1s",
    );
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let hg = Hopguard::start(&w.dir.sub("hopguard")?, &yaml)?;
    let run = async {
        let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
        c.ehlo("client.test").await?;
        let started = std::time::Instant::now();
        let replies = c.read_until_close().await?;
        ensure!(
            replies
                .iter()
                .any(|r| r.code == 421 && r.enhanced() == Some("4.4.2")),
            "expected 421 4.4.2 on idle timeout, got {replies:?}"
        );
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "not disconnected in time"
        );
        Ok(())
    };
    with_log(run.await, &hg)
}
