//! Proves the harness pieces on their own (no relay): nsd answers, Postfix peers receive.

use std::time::Duration;

use anyhow::{ensure, Result};
use hopguard_integration::dns::drill;
use hopguard_integration::mail::received;
use hopguard_integration::smtp_client::SwaksMail;
use hopguard_integration::world::{self, marker};
use hopguard_integration::{Net, Nsd, Postfix, PostfixOpts, RawSmtp, TestCa, TestDir, Zone};

const WAIT: Duration = Duration::from_secs(30);

// nsd serves the zone: MX and A records come back through drill.
#[test]
fn nsd_answers_mx_and_a_queries() -> Result<()> {
    let dir = TestDir::new()?;
    let (dns, mx) = (Net::alloc(), Net::alloc());
    let zone = Zone::new("test.").mail_domain("example.test", mx);
    let nsd = Nsd::start(&dir.sub("nsd")?, dns, &[zone])?;
    assert_eq!(nsd.resolver().port(), 53);

    let out = drill(nsd.resolver(), "MX", "example.test")?;
    ensure!(out.contains("rcode: NOERROR"), "drill MX:\n{out}");
    ensure!(
        out.lines()
            .any(|l| l.contains("MX") && l.contains("10 mx.example.test.")),
        "no MX record in:\n{out}"
    );
    let out = drill(nsd.resolver(), "A", "mx.example.test")?;
    ensure!(
        out.lines()
            .any(|l| l.starts_with("mx.example.test.") && l.contains(&mx.to_string())),
        "no A record in:\n{out}"
    );
    let out = drill(nsd.resolver(), "MX", "nonexistent.test")?;
    ensure!(out.contains("rcode: NXDOMAIN"), "drill NXDOMAIN:\n{out}");
    Ok(())
}

// A TLS Postfix peer: swaks delivers over STARTTLS; the message is stored with Postfix's
// TLS Received info; its certificate verifies against the test CA for its MX name.
#[tokio::test]
async fn tls_postfix_receives_over_starttls() -> Result<()> {
    let dir = TestDir::new()?;
    let ca = TestCa::new(dir.path())?;
    let cert = ca.issue(dir.path(), "mx", &["mx.tls-peer.test"])?;
    let addr = Net::alloc();
    let pf = Postfix::start(
        &dir.sub("pf")?,
        addr,
        PostfixOpts {
            tls: Some(cert),
            domains: vec!["tls-peer.test".into()],
            hostname: None,
        },
    )?;

    let m = marker("selftest-tls");
    let out = SwaksMail {
        server: pf.addr(),
        source: Some(Net::alloc()),
        from: "sender@origin.test",
        to: "user@tls-peer.test",
        tls: true,
        marker: &m,
    }
    .send()?;
    ensure!(out.success(), "swaks failed:\n{}", out.output);

    let msg = pf.wait_for_message(|msg| msg.contains(&m), WAIT)?;
    let rcvd = received(&msg);
    ensure!(
        rcvd.iter()
            .any(|r| r.contains("by mx.tls-peer.test (Postfix) with ESMTPS")
                && r.contains("using TLSv1.3 with cipher")),
        "no Postfix TLS Received header in:\n{msg}"
    );
    ensure!(msg.contains("Delivered-To: user@tls-peer.test"), "{msg}");

    // The raw client's STARTTLS path: verifies the peer for its MX name against the CA.
    let mut c = RawSmtp::connect_greeted(pf.addr(), Some(Net::alloc())).await?;
    let ehlo = c.ehlo("client.test").await?;
    ensure!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo}");
    c.starttls(ca.ca_pem(), "mx.tls-peer.test").await?;
    ensure!(c.tls_version().as_deref() == Some("TLSv1_3"));
    let ehlo = c.ehlo("client.test").await?;
    ensure!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo}");
    let bye = c.cmd("QUIT").await?;
    ensure!(bye.code == 221, "{bye}");

    // The same handshake for a name the certificate does not carry must fail.
    let mut c = RawSmtp::connect_greeted(pf.addr(), Some(Net::alloc())).await?;
    c.ehlo("client.test").await?;
    ensure!(c.starttls(ca.ca_pem(), "wrong.test").await.is_err());
    Ok(())
}

// A plain Postfix peer offers no STARTTLS: swaks --tls fails there, plain delivery works.
#[tokio::test]
async fn plain_postfix_offers_no_starttls() -> Result<()> {
    let dir = TestDir::new()?;
    let pf = Postfix::start(
        &dir.sub("pf")?,
        Net::alloc(),
        PostfixOpts {
            tls: None,
            domains: vec!["plain-peer.test".into()],
            hostname: None,
        },
    )?;
    let mut mail = SwaksMail {
        server: pf.addr(),
        source: Some(Net::alloc()),
        from: "sender@origin.test",
        to: "user@plain-peer.test",
        tls: true,
        marker: "unused",
    };
    let m1 = marker("selftest-plain-tls");
    mail.marker = &m1;
    let out = mail.send()?;
    ensure!(!out.success(), "swaks --tls succeeded:\n{}", out.output);
    ensure!(out.output.contains("STARTTLS"), "{}", out.output);

    let mut c = RawSmtp::connect_greeted(pf.addr(), Some(Net::alloc())).await?;
    let ehlo = c.ehlo("client.test").await?;
    ensure!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo}");
    drop(c);

    let m2 = marker("selftest-plain");
    mail.tls = false;
    mail.marker = &m2;
    let out = mail.send()?;
    ensure!(out.success(), "plain swaks failed:\n{}", out.output);
    pf.wait_for_message(|msg| msg.contains(&m2), WAIT)?;
    ensure!(pf.messages().iter().all(|msg| !msg.contains(&m1)));
    Ok(())
}

// The peers are strict: a bare LF in message content is refused (smtpd_forbid_bare_newline = reject),
// so a relay that emits one fails to deliver instead of passing unnoticed.
#[tokio::test]
async fn postfix_peer_rejects_bare_lf() -> Result<()> {
    let dir = TestDir::new()?;
    let pf = Postfix::start(
        &dir.sub("pf")?,
        Net::alloc(),
        PostfixOpts {
            tls: None,
            domains: vec!["plain-peer.test".into()],
            hostname: None,
        },
    )?;
    let mut c = RawSmtp::connect_greeted(pf.addr(), Some(Net::alloc())).await?;
    c.ehlo("client.test").await?;
    ensure!(c.cmd("MAIL FROM:<a@origin.test>").await?.code == 250);
    ensure!(c.cmd("RCPT TO:<user@plain-peer.test>").await?.code == 250);
    ensure!(c.cmd("DATA").await?.code == 354);
    c.send(b"Subject: bare\r\n\r\nline\nbare lf\r\n.\r\n")
        .await?;
    let r = c.read_reply().await?;
    ensure!(
        r.code >= 500 && r.text().contains("bare <LF>"),
        "bare LF not refused: {r}"
    );
    Ok(())
}

// The standard scene starts, and the zone routes each test domain to its peer.
#[test]
fn world_starts_and_routes_domains() -> Result<()> {
    let w = world::World::start()?;
    for (domain, ip) in [
        (world::TLS_PEER, w.addrs.tls_mx),
        (world::PLAIN_PEER, w.addrs.plain_mx),
        (world::LATER_PEER, w.addrs.later_mx),
    ] {
        let mx = drill(w.nsd.resolver(), "MX", domain)?;
        ensure!(mx.contains(&format!("mx.{domain}.")), "{mx}");
        let a = drill(w.nsd.resolver(), "A", &format!("mx.{domain}"))?;
        ensure!(a.contains(&ip.to_string()), "{a}");
    }
    let mx = drill(w.nsd.resolver(), "MX", world::ORIGIN)?;
    ensure!(mx.contains(&format!("{}.", world::TLS_PEER_MX)), "{mx}");
    let yaml = w.relay_config().to_yaml();
    ensure!(
        yaml.contains(&format!("\"{}\"", w.nsd.resolver())),
        "{yaml}"
    );
    Ok(())
}
