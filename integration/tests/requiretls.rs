//! REQUIRETLS (RFC 8689) end to end: accepted only inside TLS; relayed only to a next hop that
//! is authenticated by DNSSEC/DANE or MTA-STS and offers REQUIRETLS — here neither holds (an
//! insecure MX, a Postfix without REQUIRETLS), so the message bounces at once with 5.7.30 and
//! the DSN reaches the sender. `TLS-Required: No` (RFC 8689 §5) is honoured only where no
//! charter or published policy requires TLS.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::world::{marker, World, PLAIN_PEER, RELAY_HOSTNAME, TLS_PEER};
use hopguard_integration::{wait_until, Hopguard, Peer, RawSmtp};

#[tokio::test]
async fn requiretls_message_bounces_with_5_7_30() -> Result<()> {
    let w = World::start()?;
    let hg = w.start_relay(&w.relay_config())?;
    let m = marker("requiretls");

    // Not before TLS: REQUIRETLS is not even offered there.
    let mut plain = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
    plain.ehlo("client.test").await?;
    let r = plain
        .cmd("MAIL FROM:<sender@origin.test> REQUIRETLS")
        .await?;
    ensure!(r.code >= 500, "REQUIRETLS accepted without TLS: {r}");

    let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
    c.ehlo("client.test").await?;
    c.starttls(w.ca.ca_pem(), RELAY_HOSTNAME).await?;
    let ehlo = c.ehlo("client.test").await?;
    ensure!(
        ehlo.text().contains("REQUIRETLS"),
        "REQUIRETLS not offered inside TLS: {ehlo}"
    );
    let r = c.cmd("MAIL FROM:<sender@origin.test> REQUIRETLS").await?;
    ensure!(r.code == 250, "{r}");
    let r = c.cmd(&format!("RCPT TO:<a@{TLS_PEER}>")).await?;
    ensure!(r.code == 250, "{r}");
    let r = c.cmd("DATA").await?;
    ensure!(r.code == 354, "{r}");
    c.send(format!("Subject: {m}\r\n\r\nsecret\r\n.\r\n").as_bytes())
        .await?;
    let r = c.read_reply().await?;
    ensure!(r.code == 250, "{r}");
    let _ = c.cmd("QUIT").await;

    // The DSN to sender@origin.test (same Postfix) says 5.7.30; the message itself never arrives.
    let dsn = w
        .tls_peer
        .wait_for_message(
            |x| x.contains("multipart/report") && x.contains(&m),
            Duration::from_secs(60),
        )
        .with_context(|| hg.log())?;
    ensure!(dsn.contains("5.7.30"), "DSN without 5.7.30:\n{dsn}");
    ensure!(
        !w.tls_peer
            .messages()
            .iter()
            .any(|x| x.contains(&m) && !x.contains("multipart/report")),
        "the REQUIRETLS message was delivered"
    );
    Ok(())
}

/// swaks through the relay with STARTTLS and a `TLS-Required: No` header (RFC 8689 §5).
fn submit_tls_optional(w: &World, to: &str, marker: &str) -> Result<()> {
    let server = w.relay_addr().to_string();
    let source = w.addrs.client.to_string();
    let header = format!("X-Hopguard-Test: {marker}");
    let out = hopguard_integration::swaks(&[
        "--server",
        &server,
        "--local-interface",
        &source,
        "--from",
        "sender@origin.test",
        "--to",
        to,
        "--ehlo",
        "client.test",
        "--tls",
        "--header",
        &header,
        "--add-header",
        "TLS-Required: No",
        "--body",
        "sent even without TLS on purpose",
        "--timeout",
        "30",
    ])?;
    ensure!(out.success(), "submission failed:\n{}", out.output);
    Ok(())
}

/// `TLS-Required: No` lowers only the operator's level: to a destination without STARTTLS that
/// is no charter peer's, the message goes in plaintext (a message without the header waits);
/// once that destination is a charter peer's, the header changes nothing.
#[test]
fn tls_required_no_is_honoured_only_outside_the_charter() -> Result<()> {
    let w = World::start()?;
    let mut hg = w.start_relay(&w.relay_config())?;
    let optional = marker("tls-required-no");
    submit_tls_optional(&w, &format!("a@{PLAIN_PEER}"), &optional)?;
    let strict = marker("tls-required-default");
    ensure!(w
        .submit("sender@origin.test", &format!("b@{PLAIN_PEER}"), &strict)?
        .success());
    let arrived = w
        .plain_peer
        .wait_for_message(|m| m.contains(&optional), Duration::from_secs(60))
        .with_context(|| hg.log())?;
    ensure!(
        arrived.contains("TLS-Required: No"),
        "the header is kept for the next hops: {arrived}"
    );
    wait_until(
        "the default message's deferral",
        Duration::from_secs(60),
        || {
            let list = hg.queue_list()?;
            Ok((list.contains(&format!("b@{PLAIN_PEER}"))
                && list.contains("[starttls-not-supported]"))
            .then_some(()))
        },
    )
    .with_context(|| hg.log())?;
    ensure!(
        !w.plain_peer.messages().iter().any(|m| m.contains(&strict)),
        "a message without the header went in plaintext"
    );
    hg.terminate()?;

    // The same destination as a charter peer's: the header is not honoured.
    let mut cfg = w.relay_config();
    cfg.spool_dir = w.dir.path().join("hopguard-charter/spool");
    cfg.peers.push(Peer {
        name: "plain".into(),
        domains: vec![PLAIN_PEER.into()],
        client_networks: Vec::new(),
        inbound_tls: None,
    });
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let hg = Hopguard::start(&w.dir.sub("hopguard-charter")?, &cfg.to_yaml())?;
    let charter = marker("tls-required-no-charter");
    submit_tls_optional(&w, &format!("c@{PLAIN_PEER}"), &charter)?;
    wait_until(
        "the charter peer's deferral",
        Duration::from_secs(60),
        || {
            let list = hg.queue_list()?;
            Ok((list.contains(&format!("c@{PLAIN_PEER}"))
                && list.contains("[starttls-not-supported]"))
            .then_some(()))
        },
    )
    .with_context(|| hg.log())?;
    ensure!(
        !w.plain_peer.messages().iter().any(|m| m.contains(&charter)),
        "TLS-Required: No sent a charter peer's mail in plaintext"
    );
    Ok(())
}
