//! TLS-RPT end to end (RFC 8460): after a day's traffic to a TLS peer (two sessions succeed) and
//! a peer without STARTTLS (one failure), `hopguard tlsrpt send --day today` queues one report
//! per domain to the `mailto:` rua of its `_smtp._tls` record; the reports arrive through our own
//! queue with the §5.3 MIME structure and the right counts. The TLS peer's record also names an
//! `https:` rua: the report is POSTed there (§5.4) to a real HTTPS receiver trusted through
//! `tls.ca_file`; a receiver whose certificate is for another name gets nothing, and the
//! command exits non-zero.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::https::PostSink;
use hopguard_integration::wait_until;
use hopguard_integration::world::{marker, World, PLAIN_PEER, TLSRPT_URL, TLSRPT_WEB, TLS_PEER};

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
    let gz = decode("base64", &["-d"], b64.trim().as_bytes())?;
    let json = decode("gzip", &["-dc"], &gz)?;
    Ok(serde_json::from_slice(&json)?)
}

/// Runs `prog args` with `input` on stdin; its stdout.
fn decode(prog: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut c = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    c.stdin.take().context("stdin")?.write_all(input)?;
    let out = c.wait_with_output()?;
    ensure!(out.status.success(), "{prog} failed");
    Ok(out.stdout)
}

#[test]
fn daily_reports_reach_the_rua_with_the_right_counts() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    cfg.min_backoff = "1h".into();
    cfg.max_backoff = "2h".into();
    // Failed POSTs are tried again from a second on (doubling).
    cfg.extra.push_str("tlsrpt:\n  retry_after: 1s\n");
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

    // The https: rua's receiver, with a certificate for its name from the CA the relay trusts.
    let certs = w.dir.sub("certs")?;
    let web_cert = w.ca.issue(&certs, "tlsrpt-web", &[TLSRPT_WEB])?;
    let mut sink = PostSink::start(&w.dir.sub("tlsrpt-web")?, w.addrs.rua_web, &web_cert)?;

    // The relay writes its TLS-RPT counts out every second.
    std::thread::sleep(Duration::from_millis(1500));
    let conf = hg.config_path().display().to_string();
    let send = || -> Result<(std::process::Output, String)> {
        let out = hg.run_cli(&["tlsrpt", "send", "--day", "today", "--config", &conf])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out, text))
    };
    let (out, text) = send()?;
    ensure!(
        out.status.success(),
        "tlsrpt send failed: {text}\n{}",
        sink.log()
    );
    ensure!(
        text.lines()
            .any(|l| l.starts_with(&format!("{TLS_PEER}: report for "))
                && l.ends_with(&format!(" posted to {TLSRPT_URL} (HTTP 200)"))),
        "{text}"
    );
    let posts = sink.posts()?;
    ensure!(posts.len() == 1, "{} POSTs: {posts:?}\n{text}", posts.len());
    let post = &posts[0];
    ensure!(post.request_line == "POST /v1/tlsrpt HTTP/1.1", "{post:?}");
    ensure!(post.header("host") == Some(TLSRPT_WEB), "{post:?}");
    ensure!(
        post.header("content-type") == Some("application/tlsrpt+gzip"),
        "{post:?}"
    );
    let posted: serde_json::Value = serde_json::from_slice(&decode("gzip", &["-dc"], &post.body)?)?;
    let p = &posted["policies"][0];
    ensure!(p["policy"]["policy-domain"] == TLS_PEER, "{posted}");
    ensure!(
        p["summary"]["total-successful-session-count"] == 2,
        "{posted}"
    );
    ensure!(p["summary"]["total-failure-session-count"] == 0, "{posted}");
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

    // The same name now served with a certificate for another name: the POST is refused by
    // the relay's PKIX check, the receiver stores nothing, the command fails.
    sink.stop()?;
    let other_cert = w.ca.issue(&certs, "other-web", &["other-web.test"])?;
    let wrong = PostSink::start(
        &w.dir.sub("tlsrpt-web-wrong")?,
        w.addrs.rua_web,
        &other_cert,
    )?;
    let (out, text) = send()?;
    ensure!(
        !out.status.success(),
        "tlsrpt send succeeded with a wrong certificate: {text}"
    );
    ensure!(
        text.contains(&format!("{TLS_PEER}: POST to {TLSRPT_URL} failed: ")),
        "{text}"
    );
    ensure!(
        text.contains("certificate"),
        "not a certificate failure: {text}"
    );
    ensure!(
        text.contains("(a running relay tries again)"),
        "the failure is not kept for retry: {text}"
    );
    let retry_dir = cfg.spool_dir.join("tlsrpt").join("retry");
    ensure!(
        std::fs::read_dir(&retry_dir)?.count() == 1,
        "no retry file in {}",
        retry_dir.display()
    );
    // The running relay keeps trying; while the certificate is wrong, nothing is stored.
    std::thread::sleep(Duration::from_secs(3));
    let stored = wrong.posts()?;
    ensure!(
        stored.is_empty(),
        "the receiver with the wrong certificate stored {stored:?}\n{}",
        wrong.log()
    );
    ensure!(
        hg.log()
            .contains("TLS-RPT report not delivered; tried again later"),
        "no retry seen:\n{}",
        hg.log()
    );
    // The receiver is right again: the relay's next retry delivers the same report, once.
    drop(wrong);
    let sink = PostSink::start(&w.dir.sub("tlsrpt-web-again")?, w.addrs.rua_web, &web_cert)?;
    let posts = wait_until(
        "the report POSTed on retry",
        Duration::from_secs(60),
        || {
            let p = sink.posts()?;
            Ok((!p.is_empty()).then_some(p))
        },
    )
    .with_context(|| hg.log())?;
    let again: serde_json::Value =
        serde_json::from_slice(&decode("gzip", &["-dc"], &posts[0].body)?)?;
    ensure!(
        again["report-id"] == posted["report-id"]
            && again["policies"][0]["summary"] == posted["policies"][0]["summary"],
        "not the same report: {again} vs {posted}"
    );
    ensure!(
        hg.log().contains("TLS-RPT report posted on retry"),
        "{}",
        hg.log()
    );
    wait_until("the retry file to go", Duration::from_secs(10), || {
        Ok((std::fs::read_dir(&retry_dir)?.count() == 0).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(sink.posts()?.len() == 1, "posted more than once");
    Ok(())
}
