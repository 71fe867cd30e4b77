//! RFC 6152 §3: a message declared 8BITMIME, relayed to a next hop that does not offer
//! 8BITMIME, is converted (8-bit parts to quoted-printable), never sent as 8-bit data. The next
//! hop is a real Postfix told not to announce 8BITMIME.

use anyhow::{ensure, Result};
use hopguard_integration::smtp_client::RawSmtp;
use hopguard_integration::world::{marker, World, TLS_PEER};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8bit_message_reaches_a_7bit_peer_as_quoted_printable() -> Result<()> {
    let w = World::start()?;
    w.tls_peer
        .add_settings(&["smtpd_discard_ehlo_keywords = 8bitmime"])?;
    let hg = w.start_relay(&w.relay_config())?;
    let m = marker("eightbit");
    let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
    let ehlo = c.ehlo("client.test").await?;
    ensure!(ehlo.lines.iter().any(|l| l == "8BITMIME"), "{ehlo}");
    let r = c
        .cmd("MAIL FROM:<sender@origin.test> BODY=8BITMIME")
        .await?;
    ensure!(r.code == 250, "{r}");
    let r = c.cmd(&format!("RCPT TO:<user@{TLS_PEER}>")).await?;
    ensure!(r.code == 250, "{r}");
    let r = c.cmd("DATA").await?;
    ensure!(r.code == 354, "{r}");
    let body = format!(
        "From: <sender@origin.test>\r\nTo: <user@{TLS_PEER}>\r\nSubject: {m}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n.\r\n"
    );
    c.send(body.as_bytes()).await?;
    let r = c.read_reply().await?;
    ensure!(r.code == 250, "{r}");
    let _ = c.cmd("QUIT").await;
    let msg = tokio::task::block_in_place(|| {
        w.tls_peer
            .wait_for_message(|x| x.contains(&m), Duration::from_secs(60))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", hg.log()))?;
    ensure!(
        msg.contains("Content-Transfer-Encoding: quoted-printable"),
        "not converted:\n{msg}"
    );
    ensure!(msg.contains("Gr=C3=BC=C3=9Fe aus K=C3=B6ln"), "{msg}");
    ensure!(!msg.contains("Content-Transfer-Encoding: 8bit"), "{msg}");
    ensure!(
        !msg.bytes().any(|b| b >= 0x80),
        "8-bit bytes reached the 7-bit peer:\n{msg}"
    );
    Ok(())
}
