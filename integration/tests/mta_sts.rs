//! MTA-STS end to end (issue 3): nsd publishes the `_mta-sts` TXT records and the MX, nginx
//! serves the policies over HTTPS (test CA), Postfix is the next hop. Each case asserts arrival
//! or non-arrival and the recorded reason.
//!
//! | domain             | policy (enforce)        | MX host          | expected                                 |
//! |--------------------|-------------------------|------------------|------------------------------------------|
//! | sts-ok.test        | mx: mx.sts.test         | mx.sts.test      | delivered, verified by mta-sts, cached   |
//! | sts-nomx.test      | mx: other.example       | mx.sts.test      | deferred (MX not in the policy)          |
//! | sts-badname.test   | mx: *.sts.test          | wrong.sts.test   | deferred, certificate-host-mismatch      |
//! | sts-cache.test     | fetch fails (wrong cert) | mx.sts.test     | the cached policy applies: delivered     |
//! | sts-testing.test   | mx: *.sts.test, testing | wrong.sts.test   | delivered (route: encrypt); the would-be |
//! |                    |                         |                  | certificate-host-mismatch in TLS-RPT and |
//! |                    |                         |                  | the metrics                              |

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::dns::{Nsd, Zone};
use hopguard_integration::https::{Nginx, Site};
use hopguard_integration::smtp_client::SwaksMail;
use hopguard_integration::world::marker;
use hopguard_integration::{
    wait_until, Hopguard, Net, Postfix, PostfixOpts, RelayConfig, Route, TestCa, TestDir,
};

fn policy(mx: &str) -> String {
    policy_mode("enforce", mx)
}

fn policy_mode(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

#[test]
fn mta_sts_cases() -> Result<()> {
    let dir = TestDir::new()?;
    let certs = dir.sub("certs")?;
    let ca = TestCa::new(&certs)?;
    let (dns_ip, mx_ip, web_ip, relay_ip, client) = (
        Net::alloc(),
        Net::alloc(),
        Net::alloc(),
        Net::alloc(),
        Net::alloc(),
    );
    let mx_cert = ca.issue(&certs, "mx", &["mx.sts.test"])?;
    let relay_cert = ca.issue(&certs, "relay", &["relay.hopguard.test"])?;
    let site = |name: &str, mode: &str, mx: &str| -> Result<Site> {
        let host = format!("mta-sts.{name}");
        let cert = ca.issue(&certs, &format!("web-{name}"), &[&host])?;
        Ok(Site::mta_sts(&host, cert, &policy_mode(mode, mx)))
    };
    let sites = vec![
        site("sts-ok.test", "enforce", "mx.sts.test")?,
        site("sts-nomx.test", "enforce", "other.example")?,
        site("sts-badname.test", "enforce", "*.sts.test")?,
        site("sts-testing.test", "testing", "*.sts.test")?,
    ];
    let web = Nginx::start(&dir.sub("nginx")?, web_ip, sites)?;

    let mut zone = Zone::new("test.")
        .a("mx.sts.test", mx_ip)
        .a("wrong.sts.test", mx_ip);
    let domains = [
        "sts-ok.test",
        "sts-nomx.test",
        "sts-badname.test",
        "sts-cache.test",
        "sts-testing.test",
    ];
    for d in domains {
        let host = if d == "sts-badname.test" || d == "sts-testing.test" {
            "wrong.sts.test"
        } else {
            "mx.sts.test"
        };
        zone = zone
            .mx(d, 10, host)
            .a(&format!("mta-sts.{d}"), web_ip)
            .raw(&format!("_mta-sts.{d}. IN TXT \"v=STSv1; id=20261125\""));
    }
    let nsd = Nsd::start(&dir.sub("nsd")?, dns_ip, &[zone])?;
    let peer = Postfix::start(
        &dir.sub("pf")?,
        mx_ip,
        PostfixOpts {
            tls: Some(mx_cert),
            domains: domains.map(String::from).to_vec(),
            hostname: Some("mx.sts.test".into()),
        },
    )?;

    let spool = dir.path().join("hopguard/spool");
    // A fresh cached policy for sts-cache.test under an older id: the TXT id differs, the
    // fetch fails (nginx has no site of that name, its default certificate is another
    // name's), so the cached policy stays in force (RFC 8461 §3.3).
    std::fs::create_dir_all(spool.join("mta-sts"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    std::fs::write(
        spool.join("mta-sts/sts-cache.test.json"),
        serde_json::json!({"id": "old", "fetched_at": now, "body": policy("mx.sts.test")})
            .to_string(),
    )?;
    let metrics_addr = SocketAddr::from((relay_ip, 9465));
    let mut cfg = RelayConfig::standalone(
        spool.clone(),
        relay_ip,
        &relay_cert,
        ca.ca_pem(),
        nsd.resolver(),
    );
    cfg.relay_networks = vec![format!("{client}/32")];
    // The operator's default for sts-testing.test: TLS without authentication (the policy in
    // testing mode is observed, not enforced).
    cfg.routes = vec![Route {
        domain: "sts-testing.test".into(),
        tls: "encrypt".into(),
    }];
    let hg = Hopguard::start(&dir.sub("hopguard")?, &cfg.to_yaml())?;
    let logs = || format!("hopguard.log:\n{}\nnginx:\n{}", hg.log(), web.log());

    let send = |to: &str| -> Result<String> {
        let m = marker("sts");
        let out = SwaksMail {
            server: cfg.listen,
            source: Some(client),
            from: "sender@origin.test",
            to,
            tls: true,
            marker: &m,
        }
        .send()?;
        ensure!(out.success(), "submission to {to} failed:\n{}", out.output);
        Ok(m)
    };
    let ok = send("u@sts-ok.test")?;
    let nomx = send("u@sts-nomx.test")?;
    let badname = send("u@sts-badname.test")?;
    let cached = send("u@sts-cache.test")?;
    let testing = send("u@sts-testing.test")?;

    let wait = Duration::from_secs(60);
    peer.wait_for_message(|m| m.contains(&ok), wait)
        .with_context(logs)?;
    peer.wait_for_message(|m| m.contains(&cached), wait)
        .with_context(logs)?;
    peer.wait_for_message(|m| m.contains(&testing), wait)
        .with_context(logs)?;
    wait_until("the two deferrals", wait, || {
        let list = hg.queue_list()?;
        Ok(
            (list.contains("u@sts-nomx.test") && list.contains("[certificate-host-mismatch]"))
                .then_some(()),
        )
    })
    .with_context(|| format!("{}\n{}", hg.queue_list().unwrap_or_default(), logs()))?;
    ensure!(
        !peer
            .messages()
            .iter()
            .any(|m| m.contains(&nomx) || m.contains(&badname)),
        "a refused message was delivered"
    );

    // The policy was cached on disk (survives restarts), the fetch failure counted, and the
    // deliveries verified by MTA-STS.
    ensure!(
        spool.join("mta-sts/sts-ok.test.json").exists(),
        "no persistent cache entry"
    );
    let text = hopguard_integration::scrape_metrics(metrics_addr)?;
    ensure!(
        text.contains(r#"policy="mta-sts",tls="TLSv1.3",verify="mta-sts",outcome="delivered""#),
        "{text}"
    );
    ensure!(
        text.contains(r#"reason="sts-webpki-invalid""#),
        "fetch failure not counted:\n{text}"
    );

    // MTA-STS testing: delivered under the operator's `encrypt`, the policy's would-be
    // failure recorded — metrics, and TLS-RPT against the `sts` policy (RFC 8460 §4.3).
    ensure!(
        text.contains(r#"hopguard_policy_observed_total{peer="other",policy="mta-sts",result="certificate-host-mismatch"} 1"#),
        "testing-mode failure not in the metrics:\n{text}"
    );
    ensure!(
        text.contains(r#"policy="operator",tls="TLSv1.3",verify="none",outcome="delivered""#),
        "testing-mode delivery not under the operator's encrypt:\n{text}"
    );
    let rpt = hopguard_integration::tlsrpt_aggregate(&spool, "sts-testing.test")?;
    let sts = &rpt["policies"]["sts"];
    ensure!(
        sts["policy_string"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == "mode: testing")),
        "TLS-RPT policy-string for sts-testing.test: {rpt}"
    );
    ensure!(
        sts["success"] == 0
            && sts["failures"].as_object().is_some_and(|f| f
                .values()
                .any(|v| v["result_type"] == "certificate-host-mismatch"
                    && v["receiving_mx_hostname"] == "wrong.sts.test"
                    && v["count"] == 1)),
        "TLS-RPT aggregate for sts-testing.test: {rpt}"
    );
    Ok(())
}
