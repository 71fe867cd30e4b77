//! Charter peers' outbound policies end to end (issue 3): a pinned CA that issued the peer's
//! certificate delivers; a pinned CA that did not defers (certificate-not-trusted); a charter
//! peer whose MX offers no STARTTLS never receives anything (starttls-not-supported). A
//! report-only peer whose pinned CA did not issue the certificate is delivered to (under the
//! operator's PKIX default) and the would-be failure is recorded in the metrics. A charter peer
//! reached through a fixed `next_hop` (a relay_domains entry) gets its charter requirement too.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::world::{marker, World, INBOUND, ORIGIN, PEER_A, PLAIN_PEER, TLS_PEER};
use hopguard_integration::{scrape_metrics, wait_until, Hopguard, TestCa};

#[test]
fn pinned_ca_and_plaintext_only_charter_peers() -> Result<()> {
    let w = World::start()?;
    let other_dir = w.dir.sub("other-ca")?;
    let other_ca = TestCa::new(&other_dir)?;
    let cfg = w.relay_config();
    let peers = format!(
        "peers:\n  - name: good\n    domains: [\"{PEER_A}\"]\n    outbound:\n      require: verify\n      ca_file: \"{}\"\n  - name: strict\n    domains: [\"{TLS_PEER}\"]\n    outbound:\n      require: verify\n      ca_file: \"{}\"\n  - name: plain\n    domains: [\"{PLAIN_PEER}\"]\n    outbound:\n      require: encrypt\n  - name: dryrun\n    domains: [\"{ORIGIN}\"]\n    outbound:\n      require: verify\n      ca_file: \"{}\"\n      report_only: true\n  - name: fixed\n    domains: [\"{INBOUND}\"]\n    outbound:\n      require: verify\n      ca_file: \"{}\"\n",
        w.ca.ca_pem().display(),
        other_ca.ca_pem().display(),
        other_ca.ca_pem().display(),
        other_ca.ca_pem().display(),
    );
    let yaml = cfg.to_yaml();
    let start = yaml.find("peers:").context("peers section")?;
    let end = yaml[start..]
        .find("\nroutes:")
        .map(|e| start + e + 1)
        .context("routes after peers")?;
    let yaml = format!("{}{}{}", &yaml[..start], peers, &yaml[end..]);
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let hg = Hopguard::start(&w.dir.sub("hopguard")?, &yaml)?;

    let m_good = marker("pinned-ok");
    ensure!(w
        .submit("sender@origin.test", &format!("a@{PEER_A}"), &m_good)?
        .success());
    let m_strict = marker("pinned-other");
    ensure!(w
        .submit("sender@origin.test", &format!("a@{TLS_PEER}"), &m_strict)?
        .success());
    let m_dry = marker("report-only");
    ensure!(w
        .submit("sender@origin.test", &format!("a@{ORIGIN}"), &m_dry)?
        .success());
    let m_fixed = marker("fixed-next-hop");
    ensure!(w
        .submit("sender@origin.test", &format!("a@{INBOUND}"), &m_fixed)?
        .success());
    let m_plain = marker("plain-charter");
    ensure!(w
        .submit("sender@origin.test", &format!("a@{PLAIN_PEER}"), &m_plain)?
        .success());

    w.tls_peer
        .wait_for_message(|m| m.contains(&m_good), Duration::from_secs(60))
        .with_context(|| hg.log())?;
    // Report-only: delivered, verified by PKIX (the operator's default), and the pinned CA's
    // would-be refusal recorded.
    w.tls_peer
        .wait_for_message(|m| m.contains(&m_dry), Duration::from_secs(60))
        .with_context(|| hg.log())?;
    let metrics_addr = cfg.metrics.context("metrics endpoint")?;
    let text = scrape_metrics(metrics_addr)?;
    ensure!(
        text.contains(r#"hopguard_policy_observed_total{peer="dryrun",policy="charter",result="certificate-not-trusted"} 1"#),
        "report-only verdict not recorded:\n{text}"
    );
    ensure!(
        text.contains(r#"hopguard_outbound_messages_total{peer="dryrun",policy="charter",tls="TLSv1.3",verify="pkix",outcome="delivered"} 1"#),
        "report-only peer not delivered under PKIX:\n{text}"
    );
    // The fixed next hop (relay_domains → tls_peer) is held to the peer's pinned CA.
    let text = wait_until("the fixed next hop's refusal", Duration::from_secs(60), || {
        let text = scrape_metrics(metrics_addr)?;
        Ok(text
            .contains(r#"hopguard_tls_failures_total{peer="fixed",direction="outbound",reason="certificate-not-trusted"}"#)
            .then_some(text))
    })
    .with_context(|| hg.log())?;
    ensure!(
        !w.tls_peer.messages().iter().any(|m| m.contains(&m_fixed)),
        "delivered over a fixed next hop despite the charter's pinned CA"
    );
    ensure!(
        !text.contains(r#"peer="good",policy="charter",result"#),
        "an enforced charter was recorded as observed:\n{text}"
    );
    wait_until(
        "both refusals in the queue",
        Duration::from_secs(60),
        || {
            let list = hg.queue_list()?;
            Ok((list.contains("[certificate-not-trusted]")
                && list.contains("[starttls-not-supported]"))
            .then_some(()))
        },
    )
    .with_context(|| format!("{}\n{}", hg.queue_list().unwrap_or_default(), hg.log()))?;
    ensure!(
        !w.tls_peer.messages().iter().any(|m| m.contains(&m_strict)),
        "delivered despite a pinned CA that did not issue the certificate"
    );
    ensure!(
        w.plain_peer.messages().is_empty(),
        "a charter peer received plaintext"
    );
    ensure!(
        !w.plain_peer.log().contains("mail="),
        "MAIL FROM reached the plaintext peer"
    );
    Ok(())
}
