//! Downgrade memory end to end (issue 3): a charter peer reached with PKIX-verified TLS; the
//! operator (or an attacker able to change the route) lowers its route to `encrypt`; the next
//! message waits as a suspected downgrade instead of crossing a weaker hop, until
//! `hopguard policy forget` clears the memory.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::world::{marker, World, PEER_A};
use hopguard_integration::{wait_until, Route};

#[test]
fn weaker_hop_to_a_verified_peer_waits_until_forgotten() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    cfg.min_backoff = "1h".into();
    cfg.max_backoff = "2h".into();
    let hg = w.start_relay(&cfg)?;
    let first = marker("verified");
    ensure!(w
        .submit("sender@origin.test", &format!("a@{PEER_A}"), &first)?
        .success());
    w.tls_peer
        .wait_for_message(|m| m.contains(&first), Duration::from_secs(60))
        .with_context(|| hg.log())?;

    // The route to the charter peer drops to `encrypt` (reloaded with SIGHUP).
    cfg.routes = vec![Route {
        domain: PEER_A.into(),
        tls: "encrypt".into(),
    }];
    std::fs::write(hg.config_path(), cfg.to_yaml())?;
    hg.sighup()?;
    wait_until("the reload", Duration::from_secs(10), || {
        Ok(hg.log().contains("configuration reloaded").then_some(()))
    })?;
    let second = marker("downgraded");
    ensure!(w
        .submit("sender@origin.test", &format!("b@{PEER_A}"), &second)?
        .success());
    let id = wait_until("the suspected downgrade", Duration::from_secs(60), || {
        let list = hg.queue_list()?;
        Ok(list
            .contains("suspected downgrade")
            .then(|| {
                list.lines()
                    .find(|l| !l.starts_with(' '))
                    .and_then(|l| l.split_whitespace().next())
                    .map(str::to_string)
            })
            .flatten())
    })
    .with_context(|| hg.log())?;
    ensure!(
        !w.tls_peer.messages().iter().any(|m| m.contains(&second)),
        "delivered over the weaker hop"
    );

    // The operator accepts the change: forget, retry, delivered (encrypted).
    let conf = hg.config_path().display().to_string();
    let out = hg.run_cli(&["policy", "forget", PEER_A, "--config", &conf])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("cleared"),
        "{out:?}"
    );
    let out = hg.run_cli(&["queue", "retry", &id, "--config", &conf])?;
    ensure!(out.status.success(), "{out:?}");
    w.tls_peer
        .wait_for_message(|m| m.contains(&second), Duration::from_secs(60))
        .with_context(|| hg.log())?;
    Ok(())
}
