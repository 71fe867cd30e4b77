//! Inbound peer attribution by forward-confirmed reverse DNS (issue 4): a client outside every
//! `client_networks` whose PTR name lies in a charter peer's domain, and whose name resolves back
//! to it, is that peer — it must STARTTLS and is counted under the peer's name. A PTR that does
//! not resolve back is not trusted.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{ensure, Result};
use hopguard_integration::dns::{Nsd, Zone};
use hopguard_integration::{Hopguard, Net, Peer, RawSmtp, RelayConfig, TestCa, TestDir};

fn ptr_line(ip: Ipv4Addr, name: &str) -> String {
    let o = ip.octets();
    format!(
        "{}.{}.{}.{}.in-addr.arpa. IN PTR {name}.",
        o[3], o[2], o[1], o[0]
    )
}

#[tokio::test]
async fn fcrdns_attributes_charter_peers() -> Result<()> {
    let dir = TestDir::new()?;
    let certs = dir.sub("certs")?;
    let ca = TestCa::new(&certs)?;
    let relay_cert = ca.issue(&certs, "relay", &["relay.hopguard.test"])?;
    let (dns_ip, relay_ip, member, liar) = (Net::alloc(), Net::alloc(), Net::alloc(), Net::alloc());
    let forward = Zone::new("test.")
        .a("out1.peer-f.test", member)
        .a("out2.peer-f.test", Ipv4Addr::new(192, 0, 2, 1));
    let reverse = Zone::new("127.in-addr.arpa.")
        .raw(&ptr_line(member, "out1.peer-f.test"))
        // Claims the peer's domain, but out2.peer-f.test does not resolve back to it.
        .raw(&ptr_line(liar, "out2.peer-f.test"));
    let nsd = Nsd::start(&dir.sub("nsd")?, dns_ip, &[forward, reverse])?;
    let metrics_addr = SocketAddr::from((relay_ip, 9465));
    let mut cfg = RelayConfig::standalone(
        dir.path().join("hopguard/spool"),
        relay_ip,
        &relay_cert,
        ca.ca_pem(),
        nsd.resolver(),
    );
    cfg.peers = vec![Peer {
        name: "peer-f".into(),
        domains: vec!["peer-f.test".into()],
        client_networks: Vec::new(),
        inbound_tls: Some("required".into()),
    }];
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let hg = Hopguard::start(&dir.sub("hopguard")?, &cfg.to_yaml())?;
    let run = async {
        let mut c = RawSmtp::connect_greeted(cfg.listen, Some(member)).await?;
        c.ehlo("out1.peer-f.test").await?;
        let r = c.cmd("MAIL FROM:<a@peer-f.test>").await?;
        ensure!(
            r.code == 530,
            "the FCrDNS-confirmed peer must STARTTLS first: {r}"
        );
        let mut c = RawSmtp::connect_greeted(cfg.listen, Some(liar)).await?;
        c.ehlo("out2.peer-f.test").await?;
        let r = c.cmd("MAIL FROM:<a@peer-f.test>").await?;
        ensure!(
            r.code == 250,
            "an unconfirmed PTR must not make a client a peer: {r}"
        );
        Ok(())
    };
    run.await.map_err(|e: anyhow::Error| e.context(hg.log()))?;
    let text = hopguard_integration::scrape_metrics(metrics_addr)?;
    ensure!(
        text.contains(r#"hopguard_inbound_starttls_required_rejections_total{peer="peer-f"} 1"#),
        "{text}"
    );
    Ok(())
}
