//! REQUIRETLS (RFC 8689) end to end: accepted only inside TLS; relayed only to a next hop that
//! is authenticated by DNSSEC/DANE or MTA-STS and offers REQUIRETLS — here neither holds (an
//! insecure MX, a Postfix without REQUIRETLS), so the message bounces at once with 5.7.30 and
//! the DSN reaches the sender.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::world::{marker, World, RELAY_HOSTNAME, TLS_PEER};
use hopguard_integration::RawSmtp;

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
