//! TLS-RPT end to end (RFC 8460): after a day's traffic to a TLS peer (two sessions succeed) and
//! a peer without STARTTLS (one failure), `hopguard tlsrpt send --day today` queues one report
//! per domain to the `mailto:` rua of its `_smtp._tls` record; the reports arrive through our own
//! queue with the §5.3 MIME structure and the right counts.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::wait_until;
use hopguard_integration::world::{marker, World, PLAIN_PEER, TLS_PEER};

/// The JSON report inside a TLS-RPT mail: base64 → gunzip (coreutils `base64`, `gzip`).
fn report_json(mail: &str) -> Result<serde_json::Value> {
    let start = mail
        .find("Content-Type: application/tlsrpt+gzip")
        .context("no tlsrpt+gzip part")?;
    let part = &mail[start..];
    let body_start = part.find("\n\n").context("part has no body")? + 2;
    let b64: String = part[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("");
    let decode = |prog: &str, args: &[&str], input: &[u8]| -> Result<Vec<u8>> {
        let mut c = Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        c.stdin.take().context("stdin")?.write_all(input)?;
        let out = c.wait_with_output()?;
        ensure!(out.status.success(), "{prog} failed");
        Ok(out.stdout)
    };
    let gz = decode("base64", &["-d"], b64.trim().as_bytes())?;
    let json = decode("gzip", &["-dc"], &gz)?;
    Ok(serde_json::from_slice(&json)?)
}

#[test]
fn daily_reports_reach_the_rua_with_the_right_counts() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    cfg.min_backoff = "1h".into();
    cfg.max_backoff = "2h".into();
    let hg = w.start_relay(&cfg)?;
    let a = marker("rpt-a");
    let b = marker("rpt-b");
    ensure!(w
        .submit("sender@origin.test", &format!("x@{TLS_PEER}"), &a)?
        .success());
    ensure!(w
        .submit("sender@origin.test", &format!("y@{TLS_PEER}"), &b)?
        .success());
    ensure!(w
        .submit(
            "sender@origin.test",
            &format!("z@{PLAIN_PEER}"),
            &marker("rpt-c")
        )?
        .success());
    w.tls_peer
        .wait_for_message(|m| m.contains(&a), Duration::from_secs(60))?;
    w.tls_peer
        .wait_for_message(|m| m.contains(&b), Duration::from_secs(60))?;
    wait_until("the plain-peer deferral", Duration::from_secs(60), || {
        Ok(hg
            .queue_list()?
            .contains("[starttls-not-supported]")
            .then_some(()))
    })?;

    let conf = hg.config_path().display().to_string();
    let out = hg.run_cli(&["tlsrpt", "send", "--day", "today", "--config", &conf])?;
    ensure!(out.status.success(), "tlsrpt send failed: {out:?}");
    let mails = wait_until("two TLS-RPT reports", Duration::from_secs(60), || {
        let reports: Vec<String> = w
            .tls_peer
            .messages()
            .into_iter()
            .filter(|m| m.contains("report-type=\"tlsrpt\""))
            .collect();
        Ok((reports.len() >= 2).then_some(reports))
    })
    .with_context(|| hg.log())?;
    let find = |domain: &str| -> Result<serde_json::Value> {
        let m = mails
            .iter()
            .find(|m| m.contains(&format!("TLS-Report-Domain: {domain}")))
            .with_context(|| format!("no report for {domain}"))?;
        ensure!(
            m.contains(&format!("Subject: Report Domain: {domain} Submitter: ")),
            "{m}"
        );
        report_json(m)
    };
    let good = find(TLS_PEER)?;
    let p = &good["policies"][0];
    ensure!(p["policy"]["policy-domain"] == TLS_PEER, "{good}");
    ensure!(
        p["summary"]["total-successful-session-count"] == 2,
        "{good}"
    );
    ensure!(p["summary"]["total-failure-session-count"] == 0, "{good}");
    let bad = find(PLAIN_PEER)?;
    let p = &bad["policies"][0];
    ensure!(p["summary"]["total-failure-session-count"] == 1, "{bad}");
    ensure!(
        p["failure-details"][0]["result-type"] == "starttls-not-supported",
        "{bad}"
    );
    ensure!(
        p["failure-details"][0]["receiving-mx-hostname"] == "mx.plain-peer.test",
        "{bad}"
    );
    Ok(())
}
