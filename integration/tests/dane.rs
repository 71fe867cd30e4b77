//! DANE end to end (issue 3): a signed zone served by nsd, a validating unbound as the relay's
//! resolver, Postfix next hops. Each case asserts arrival or non-arrival at the peer and the
//! recorded reason.
//!
//! | domain              | TLSA at its MX                       | server certificate            | expected                 |
//! |---------------------|--------------------------------------|-------------------------------|--------------------------|
//! | ee.dane.test        | 3 1 1 of the server's key            | other CA, unrelated name      | delivered (dane-ee)      |
//! | ta.dane.test        | 2 0 1 of the test CA                 | test CA, MX name              | delivered (dane-ta)      |
//! | mismatch.dane.test  | 3 1 1 of another key                 | other CA                      | deferred, tlsa-invalid   |
//! | unusable.dane.test  | only PKIX-EE (1 1 1): unusable       | test CA, MX name              | delivered, PKIX          |
//! | bogus.test          | MX tampered after signing            | —                             | deferred, dnssec-invalid |
//! | nullmx.dane.test    | (null MX, RFC 7505)                  | —                             | bounced at once (5.1.10) |
//! | cname.dane.test     | MX is a CNAME to mx.ee-target; 3 1 1 | other CA, unrelated name      | delivered (dane-ee)      |
//! |                     | only at the CNAME's target           |                               |                          |
//! | ta-cname.dane.test  | MX is a CNAME to mx.ta.dane.test;    | test CA, name of the target   | delivered (dane-ta: the  |
//! |                     | 2 0 1 only at the target             | (the TLSA base domain)        | base domain matches)     |
//!
//! Without CNAME chasing (RFC 7672 §2.2.3) the last two would look for TLSA at the MX name, find
//! none, fall to PKIX with the MX name and be deferred.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::dns::Zone;
use hopguard_integration::dnssec::{
    tlsa_2_0_1, tlsa_3_1_1, tlsa_record, DnssecWorld, Tamper, ZoneSpec,
};
use hopguard_integration::smtp_client::SwaksMail;
use hopguard_integration::world::marker;
use hopguard_integration::{
    wait_until, Hopguard, Net, Postfix, PostfixOpts, RelayConfig, TestCa, TestDir,
};

#[test]
fn dane_cases_against_real_dnssec() -> Result<()> {
    let dir = TestDir::new()?;
    let certs = dir.sub("certs")?;
    let ca = TestCa::new(&certs)?;
    let other_dir = dir.sub("other-ca")?;
    let other_ca = TestCa::new(&other_dir)?;
    let ee_cert = other_ca.issue(&other_dir, "ee", &["unrelated.example"])?;
    let wrong_cert = other_ca.issue(&other_dir, "wrong", &["unrelated.example"])?;
    let ca_cert = ca.issue(&certs, "ta", &["mx.ta.dane.test", "mx.unusable.dane.test"])?;
    let relay_cert = ca.issue(&certs, "relay", &["relay.hopguard.test"])?;

    let (ee_addr, ca_addr, relay_addr, client) =
        (Net::alloc(), Net::alloc(), Net::alloc(), Net::alloc());
    let ee_key = tlsa_3_1_1(&ee_cert.cert)?;
    let wrong_key = tlsa_3_1_1(&wrong_cert.cert)?;
    let ta = tlsa_2_0_1(ca.ca_pem())?;
    let dane = Zone::new("dane.test.")
        .mx("ee.dane.test", 10, "mx.ee.dane.test")
        .a("mx.ee.dane.test", ee_addr)
        .raw(&tlsa_record(25, "mx.ee.dane.test", 3, 1, 1, &ee_key))
        .mx("ta.dane.test", 10, "mx.ta.dane.test")
        .a("mx.ta.dane.test", ca_addr)
        .raw(&tlsa_record(25, "mx.ta.dane.test", 2, 0, 1, &ta))
        .mx("mismatch.dane.test", 10, "mx.mismatch.dane.test")
        .a("mx.mismatch.dane.test", ee_addr)
        .raw(&tlsa_record(
            25,
            "mx.mismatch.dane.test",
            3,
            1,
            1,
            &wrong_key,
        ))
        .mx("unusable.dane.test", 10, "mx.unusable.dane.test")
        .a("mx.unusable.dane.test", ca_addr)
        .raw(&tlsa_record(25, "mx.unusable.dane.test", 1, 1, 1, &ee_key))
        // RFC 7505 null MX: the domain accepts no mail.
        .raw("nullmx.dane.test. IN MX 0 .")
        // MX hosts that are CNAMEs: TLSA only at the chain's end.
        .mx("cname.dane.test", 10, "mx.cname.dane.test")
        .raw("mx.cname.dane.test. IN CNAME mx.ee-target.dane.test.")
        .a("mx.ee-target.dane.test", ee_addr)
        .raw(&tlsa_record(25, "mx.ee-target.dane.test", 3, 1, 1, &ee_key))
        .mx("ta-cname.dane.test", 10, "mx.ta-cname.dane.test")
        .raw("mx.ta-cname.dane.test. IN CNAME mx.ta.dane.test.");
    let bogus = Zone::new("bogus.test.")
        .mx("bogus.test", 10, "mx.bogus.test")
        .a("mx.bogus.test", ca_addr);
    let dns = DnssecWorld::start(
        &dir.sub("dns")?,
        vec![
            ZoneSpec::signed(dane),
            ZoneSpec::bogus(bogus, Tamper::rdata("bogus.test.", "MX")),
        ],
    )?;

    let ee_peer = Postfix::start(
        &dir.sub("pf-ee")?,
        ee_addr,
        PostfixOpts {
            tls: Some(ee_cert),
            domains: vec![
                "ee.dane.test".into(),
                "mismatch.dane.test".into(),
                "cname.dane.test".into(),
            ],
            hostname: Some("unrelated.example".into()),
        },
    )?;
    let ca_peer = Postfix::start(
        &dir.sub("pf-ca")?,
        ca_addr,
        PostfixOpts {
            tls: Some(ca_cert),
            domains: vec![
                "ta.dane.test".into(),
                "unusable.dane.test".into(),
                "bogus.test".into(),
                "ta-cname.dane.test".into(),
            ],
            hostname: Some("mx.ta.dane.test".into()),
        },
    )?;

    let metrics_addr = SocketAddr::from((relay_addr, 9465));
    let mut cfg = RelayConfig::standalone(
        dir.path().join("hopguard/spool"),
        relay_addr,
        &relay_cert,
        ca.ca_pem(),
        dns.resolver(),
    );
    cfg.relay_networks = vec![format!("{client}/32")];
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let hg = Hopguard::start(&dir.sub("hopguard")?, &cfg.to_yaml())?;
    let with_logs = |e: anyhow::Error| {
        e.context(format!(
            "hopguard.log:\n{}\nunbound.log:\n{}",
            hg.log(),
            dns.unbound_log()
        ))
    };

    let send = |to: &str| -> Result<String> {
        let m = marker("dane");
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
    let ee = send("u@ee.dane.test")?;
    let ta_m = send("u@ta.dane.test")?;
    let mismatch = send("u@mismatch.dane.test")?;
    let unusable = send("u@unusable.dane.test")?;
    let bogus_m = send("u@bogus.test")?;
    let _null = send("u@nullmx.dane.test")?;
    let cname = send("u@cname.dane.test")?;
    let ta_cname = send("u@ta-cname.dane.test")?;

    let wait = Duration::from_secs(60);
    ee_peer
        .wait_for_message(|m| m.contains(&ee), wait)
        .map_err(with_logs)?;
    ca_peer
        .wait_for_message(|m| m.contains(&ta_m), wait)
        .map_err(with_logs)?;
    ca_peer
        .wait_for_message(|m| m.contains(&unusable), wait)
        .map_err(with_logs)?;
    ee_peer
        .wait_for_message(|m| m.contains(&cname), wait)
        .map_err(with_logs)?;
    ca_peer
        .wait_for_message(|m| m.contains(&ta_cname), wait)
        .map_err(with_logs)?;

    // The refused ones are deferred with their reasons, and never arrive.
    wait_until("the deferrals with their reasons", wait, || {
        let list = hg.queue_list()?;
        let ok = list.contains("u@mismatch.dane.test")
            && list.contains("[tlsa-invalid]")
            && list.contains("u@bogus.test")
            && list.contains("[dnssec-invalid]");
        Ok(ok.then_some(()))
    })
    .map_err(with_logs)
    .with_context(|| hg.queue_list().unwrap_or_default())?;
    ensure!(
        !ee_peer.messages().iter().any(|m| m.contains(&mismatch)),
        "TLSA mismatch delivered"
    );
    ensure!(
        !ca_peer.messages().iter().any(|m| m.contains(&bogus_m)),
        "bogus DNSSEC delivered"
    );

    // The evidence says how each hop was authenticated.
    let text = hopguard_integration::scrape_metrics(metrics_addr)?;
    for want in [
        // ee + cname, ta + ta-cname.
        r#"hopguard_outbound_messages_total{peer="other",policy="dane",tls="TLSv1.3",verify="dane-ee",outcome="delivered"} 2"#,
        r#"hopguard_outbound_messages_total{peer="other",policy="dane",tls="TLSv1.3",verify="dane-ta",outcome="delivered"} 2"#,
        r#"verify="pkix",outcome="delivered""#,
    ] {
        ensure!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    // TLS-RPT (written out every second): the DANE session is reported against the `tlsa`
    // policy of its MX host with the TLSA record as its policy-string.
    let rpt = hopguard_integration::tlsrpt_aggregate(&cfg.spool_dir, "ee.dane.test")?;
    let tlsa = &rpt["policies"]["tlsa mx.ee.dane.test"];
    let want = format!(
        "_25._tcp.mx.ee.dane.test. IN TLSA 3 1 1 {}",
        ee_key.to_ascii_uppercase()
    );
    ensure!(
        tlsa["success"] == 1 && tlsa["policy_string"] == serde_json::json!([want]),
        "TLS-RPT aggregate for ee.dane.test: {rpt}"
    );

    // The null-MX message bounced at once: no longer queued for that recipient, a DSN queued
    // to the sender (origin.test does not exist in this scene, so that DSN is dropped in turn:
    // a DSN is never bounced).
    let list = hg.queue_list()?;
    ensure!(
        !list.contains("u@nullmx.dane.test"),
        "null MX recipient still queued:\n{list}"
    );
    ensure!(
        hg.log().contains("DSN queued to sender"),
        "no DSN for the null MX bounce"
    );
    ensure!(
        text.contains(r#"outcome="bounced""#),
        "no bounce in the metrics:\n{text}"
    );
    ensure!(
        text.contains(r#"hopguard_dnssec_bogus_answers_total{peer="other"}"#),
        "bogus answers not counted:\n{text}"
    );
    for reason in ["tlsa-invalid", "dnssec-invalid"] {
        ensure!(
            text.contains(&format!("reason=\"{reason}\"")),
            "metrics lack {reason}:\n{text}"
        );
    }
    // `hopguard check` reports the same verdicts before any mail is sent.
    let conf = hg.config_path().display().to_string();
    let out = hg.run_cli(&["check", "ee.dane.test", "--config", &conf])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(out.status.success(), "check ee.dane.test failed:\n{text}");
    ensure!(
        text.contains("TLSA secure") && text.contains("verified by dane-ee"),
        "{text}"
    );
    let out = hg.run_cli(&["check", "mismatch.dane.test", "--config", &conf])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.code() == Some(1),
        "check must fail for a TLSA mismatch:\n{text}"
    );
    ensure!(text.contains("[tlsa-invalid]"), "{text}");
    let out = hg.run_cli(&["check", "bogus.test", "--config", &conf])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.code() == Some(1) && text.contains("bogus"),
        "{text}"
    );
    Ok(())
}
