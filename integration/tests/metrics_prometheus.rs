//! Evidence end to end (issues 4 and 5): a real Prometheus scrapes hopguard while it relays
//! known traffic (a verified TLS peer, a TLS-but-unauthenticated peer, a peer without STARTTLS,
//! a plaintext client), with hopguard's recording and alert rules loaded. Every dashboard query
//! and every recording rule is evaluated through Prometheus' HTTP API; then the audit log of the
//! same run is verified, and the regulator report built from it must show the known counts and
//! agree with Prometheus. The HTML report must render in headless Chromium.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::hopguard::workspace_root;
use hopguard_integration::prometheus::Prometheus;
use hopguard_integration::smtp_client::SwaksMail;
use hopguard_integration::world::{marker, World, INBOUND, PEER_A, PLAIN_PEER, TLS_PEER};
use hopguard_integration::{wait_until, Net, Peer, Route};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn dashboards_and_rules_evaluate_against_real_traffic() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    let metrics_addr = cfg.metrics.context("world config has a metrics address")?;
    // good: verified TLS. weak (peer-a.test): TLS required but not authenticated (encrypt).
    // bad: no STARTTLS at its MX. legacy: a client network allowed to send in plaintext.
    cfg.peers = vec![
        Peer {
            name: "good".into(),
            domains: vec![TLS_PEER.into()],
            client_networks: vec![],
            inbound_tls: None,
        },
        Peer {
            name: "weak".into(),
            domains: vec![PEER_A.into()],
            client_networks: vec![],
            inbound_tls: None,
        },
        Peer {
            name: "bad".into(),
            domains: vec![PLAIN_PEER.into()],
            client_networks: vec![],
            inbound_tls: None,
        },
        Peer {
            name: "legacy".into(),
            domains: vec!["legacy.test".into()],
            client_networks: vec![format!("{}/32", w.addrs.stranger)],
            inbound_tls: Some("optional".into()),
        },
    ];
    cfg.routes = vec![Route {
        domain: PEER_A.into(),
        tls: "encrypt".into(),
    }];
    // One attempt per message within the test: counts stay fixed once the traffic is sent.
    cfg.min_backoff = "1h".into();
    cfg.max_backoff = "2h".into();
    let keys = w.dir.sub("audit-keys")?;
    let audit_dir = w.dir.sub("audit")?;
    let bin = hopguard_integration::hopguard::binary()?;
    let out = hopguard_integration::hopguard::run_cli(
        &bin,
        &["audit", "keygen", &keys.display().to_string()],
    )?;
    ensure!(out.status.success(), "audit keygen failed: {out:?}");
    cfg.extra = format!(
        "audit:\n  dir: \"{}\"\n  key_file: \"{}\"\n  message_id_key_file: \"{}\"\n  checkpoint_every: 5\n",
        audit_dir.display(),
        keys.join("audit-key.pem").display(),
        keys.join("message-id.key").display()
    );
    // weak also dry-runs a `verify` requirement (report-only): its hops stay `encrypt`, the
    // would-be verdicts feed the dashboards' dry-run panel.
    let yaml = cfg.to_yaml();
    let anchor = "  - name: \"weak\"\n";
    ensure!(yaml.contains(anchor), "peer weak in the config:\n{yaml}");
    let yaml = yaml.replacen(
        anchor,
        &format!("{anchor}    outbound:\n      require: verify\n      report_only: true\n"),
        1,
    );
    std::fs::create_dir_all(&cfg.spool_dir)?;
    let mut hg = hopguard_integration::Hopguard::start(&w.dir.sub("hopguard")?, &yaml)?;

    let prom_dir = w.dir.sub("prometheus")?;
    let rules: PathBuf = workspace_root().join("dashboards/prometheus/rules.yml");
    let prom = Prometheus::start(&prom_dir, Net::alloc(), &[metrics_addr], &[rules])?;

    // Two rounds: Prometheus must have scraped a series before an increment for rate() to
    // see it.
    for round in 0..2 {
        for to in [
            format!("u@{TLS_PEER}"),
            format!("u@{PEER_A}"),
            format!("u@{PLAIN_PEER}"),
        ] {
            let m = marker("metrics");
            let out = w.submit("sender@origin.test", &to, &m)?;
            ensure!(out.success(), "submission to {to} failed:\n{}", out.output);
        }
        let out = SwaksMail {
            server: w.relay_addr(),
            source: Some(w.addrs.stranger),
            from: "someone@legacy.test",
            to: &format!("x@{INBOUND}"),
            tls: false,
            marker: &marker("plaintext-in"),
        }
        .send()?;
        ensure!(
            out.success(),
            "plaintext submission from the legacy peer failed:\n{}",
            out.output
        );
        let want = 2.0 * (round + 1) as f64;
        wait_until("deliveries to the good and weak peers", WAIT, || {
            let good = prom.value(
                "hopguard_outbound_messages_total{outcome=\"delivered\"}",
                &[("peer", "good")],
            )?;
            let weak = prom.value(
                "hopguard_outbound_messages_total{outcome=\"delivered\"}",
                &[("peer", "weak")],
            )?;
            Ok((good >= Some(want / 2.0) && weak >= Some(want / 2.0)).then_some(()))
        })
        .with_context(|| hg.log())?;
        // Let Prometheus take a scrape after the round.
        std::thread::sleep(Duration::from_secs(3));
    }

    // Recording rules: wait until they have been evaluated on the second round's data.
    wait_until("the authenticated ratio of the good peer", WAIT, || {
        Ok(prom
            .value(
                "hopguard:outbound_authenticated_ratio:rate15m",
                &[("peer", "good")],
            )?
            .map(|_| ()))
    })
    .with_context(|| prom.log())?;

    // Expected per-peer values.
    let v = |expr: &str, peer: &str| -> Result<f64> {
        prom.value(expr, &[("peer", peer)])?
            .with_context(|| format!("no value for {expr} peer={peer}"))
    };
    ensure!(
        v("hopguard:outbound_authenticated_ratio:rate15m", "good")? == 1.0,
        "good peer must be fully authenticated"
    );
    ensure!(
        v("hopguard:outbound_encrypted_ratio:rate15m", "good")? == 1.0,
        "good peer must be fully encrypted"
    );
    ensure!(
        v("hopguard:outbound_authenticated_ratio:rate15m", "weak")? < 1.0,
        "weak peer (encrypt only) must be below 1"
    );
    ensure!(
        v("hopguard:outbound_encrypted_ratio:rate15m", "weak")? == 1.0,
        "weak peer is still encrypted"
    );
    ensure!(
        v("hopguard:inbound_encrypted_ratio:rate15m", "legacy")? < 1.0,
        "plaintext inbound lowers legacy's share"
    );
    let failures = prom.value(
        "hopguard:tls_failures:rate5m",
        &[
            ("peer", "bad"),
            ("reason", "starttls-not-supported"),
            ("direction", "outbound"),
        ],
    )?;
    ensure!(
        failures.unwrap_or(0.0) > 0.0,
        "the no-STARTTLS peer must show starttls-not-supported failures"
    );
    ensure!(
        v("hopguard_plaintext_deliveries_total", "bad")? == 0.0,
        "nothing may go to bad in plaintext"
    );
    let delivered_bad =
        prom.query("sum(hopguard_outbound_messages_total{peer=\"bad\",outcome=\"delivered\"})")?;
    let delivered_bad: f64 = delivered_bad
        .first()
        .and_then(|r| r["value"][1].as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    ensure!(
        delivered_bad == 0.0,
        "nothing may be delivered to the no-STARTTLS peer"
    );
    ensure!(
        prom.query("hopguard_charter_peer_info")?.len() == 4,
        "one info series per configured peer"
    );

    // Every recording rule returns data.
    let rules_text =
        std::fs::read_to_string(workspace_root().join("dashboards/prometheus/rules.yml"))?;
    let rule_names: Vec<&str> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(str::trim)
        .collect();
    ensure!(rule_names.len() >= 5, "rules.yml has recording rules");
    let mut empty = Vec::new();
    for r in &rule_names {
        if prom.query(r)?.is_empty() {
            empty.push(r.to_string());
        }
    }

    // Every dashboard query (variables substituted as Grafana would) returns data.
    let out = std::process::Command::new("python3")
        .arg(workspace_root().join("dashboards/extract_queries.py"))
        .arg("--substitute")
        .output()?;
    ensure!(out.status.success(), "extract_queries.py failed");
    let mut queries = 0;
    let mut empty_panels = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let q: serde_json::Value = serde_json::from_str(line)?;
        let expr = q["expr"].as_str().unwrap_or_default();
        let result = prom
            .query(expr)
            .with_context(|| format!("panel {}", q["panel"]))?;
        queries += 1;
        if result.is_empty() {
            empty_panels.push(format!("{} / {}: {expr}", q["dashboard"], q["panel"]));
        }
    }
    ensure!(
        queries >= 40,
        "expected the dashboards' queries, got {queries}"
    );
    eprintln!("{queries} dashboard queries evaluated; empty: {empty_panels:#?}");
    ensure!(empty.is_empty(), "recording rules without data: {empty:?}");
    ensure!(
        empty_panels.is_empty(),
        "dashboard queries without data: {empty_panels:#?}"
    );

    // The compliance alert for the weak peer is at least pending.
    let alerts = prom.alerts()?;
    ensure!(
        alerts.iter().any(|a| a["labels"]["alertname"]
            == "HopguardCharterOutboundNotAuthenticated"
            && a["labels"]["peer"] == "weak"),
        "expected the not-authenticated alert for weak: {alerts:?}"
    );

    // ---- the audit log of the same run (issue 5) ----
    // Prometheus' view once the relay has settled, then a clean stop (final checkpoint).
    std::thread::sleep(Duration::from_secs(3));
    let prom_sum = |expr: &str| -> Result<f64> {
        Ok(prom
            .query(&format!("sum({expr})"))?
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0))
    };
    let prom_good =
        prom_sum("hopguard_outbound_messages_total{peer=\"good\",outcome=\"delivered\"}")?;
    let prom_weak_auth = prom_sum(
        "hopguard_outbound_messages_total{peer=\"weak\",outcome=\"delivered\",verify!=\"none\"}",
    )?;
    let prom_bad_fail =
        prom_sum("hopguard_tls_failures_total{peer=\"bad\",direction=\"outbound\"}")?;
    let prom_legacy_in = prom_sum("hopguard_inbound_messages_total{peer=\"legacy\"}")?;
    let prom_legacy_plain =
        prom_sum("hopguard_inbound_messages_total{peer=\"legacy\",tls=\"none\"}")?;
    hg.terminate()?;

    let pubkey = keys.join("audit-key.pub.pem");
    let out = hopguard_integration::hopguard::run_cli(
        &bin,
        &[
            "audit",
            "verify",
            &audit_dir.display().to_string(),
            "--pubkey",
            &pubkey.display().to_string(),
        ],
    )?;
    ensure!(
        out.status.success(),
        "audit verify failed on an untouched log: {out:?}"
    );

    let today = utc_today();
    // `hopguard report` over today's audit files, verified with the node's public key.
    let run_report = |out: &std::path::Path, format: &str| {
        hopguard_integration::hopguard::run_cli(
            &bin,
            &[
                "report",
                "--audit",
                &audit_dir.display().to_string(),
                "--from",
                &today,
                "--to",
                &today,
                "--format",
                format,
                "--pubkey",
                &pubkey.display().to_string(),
                "--out",
                &out.display().to_string(),
            ],
        )
    };
    let report_path = w.dir.path().join("report.json");
    let out = run_report(&report_path, "json")?;
    ensure!(out.status.success(), "report failed: {out:?}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)?;
    let stats = |peer: &str, dir: &str| -> Result<serde_json::Value> {
        report["peers"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|p| p["peer"] == peer && p["direction"] == dir)
            })
            .cloned()
            .with_context(|| format!("no {peer}/{dir} row in the report: {report}"))
    };
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or(-1.0);
    // Known counts: two rounds of one message each to good, weak and bad, and one plaintext
    // message per round from legacy.
    let good = stats("good", "outbound")?;
    ensure!(
        n(&good["messages"]) == 2.0 && n(&good["authenticated"]) == 2.0,
        "good: {good}"
    );
    let weak = stats("weak", "outbound")?;
    ensure!(
        n(&weak["messages"]) == 2.0
            && n(&weak["encrypted"]) >= 2.0
            && n(&weak["authenticated"]) == 0.0,
        "weak: {weak}"
    );
    let bad = stats("bad", "outbound")?;
    ensure!(
        n(&bad["messages"]) == 0.0 && n(&bad["failures"]["starttls-not-supported"]) == 2.0,
        "bad: {bad}"
    );
    // legacy's messages to the relay domain went to its next hop, verified by its tls_name.
    let relayed = stats("other", "outbound")?;
    ensure!(
        n(&relayed["messages"]) == 2.0 && n(&relayed["authenticated"]) == 2.0,
        "relay-domain deliveries: {relayed}"
    );
    let legacy = stats("legacy", "inbound")?;
    ensure!(
        n(&legacy["messages"]) == 2.0 && n(&legacy["plaintext"]) == 2.0,
        "legacy: {legacy}"
    );
    let plaintext_legacy = report["plaintext"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["peer"] == "legacy" && p["charter"] == true)
                .count()
        })
        .unwrap_or(0);
    ensure!(
        plaintext_legacy == 2,
        "each plaintext hop of a charter peer is listed: {report}"
    );
    ensure!(
        report["verification"]["signatures_checked"] == true,
        "the report states a signed verification: {report}"
    );
    // The report agrees with Prometheus for the same run.
    ensure!(
        n(&good["messages"]) == prom_good,
        "good delivered: report vs prometheus {prom_good}"
    );
    ensure!(
        n(&weak["authenticated"]) == prom_weak_auth,
        "weak authenticated: report vs prometheus"
    );
    ensure!(
        n(&bad["failures"]["starttls-not-supported"]) == prom_bad_fail,
        "bad failures: report vs prometheus {prom_bad_fail}"
    );
    ensure!(
        n(&legacy["messages"]) == prom_legacy_in,
        "legacy inbound: report vs prometheus {prom_legacy_in}"
    );
    ensure!(
        n(&legacy["plaintext"]) == prom_legacy_plain,
        "legacy plaintext: report vs prometheus"
    );

    // The HTML report renders in headless Chromium (Debian package).
    let html = w.dir.path().join("report.html");
    let out = run_report(&html, "html")?;
    ensure!(out.status.success(), "html report failed: {out:?}");
    let shot = w.dir.path().join("report.png");
    hopguard_integration::chromium::render(&html, &shot)?;
    if let Ok(dest) = std::env::var("HOPGUARD_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, dest)?;
    }
    Ok(())
}

fn utc_today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
