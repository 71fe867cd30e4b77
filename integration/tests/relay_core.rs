//! End-to-end behaviours of the relay core: swaks and raw clients → hopguard → Postfix peers.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::hopguard::output_text;
use hopguard_integration::mail::{header_values, received};
use hopguard_integration::world::{marker, World, RELAY_HOSTNAME};
use hopguard_integration::{wait_until, Hopguard, Net, RawSmtp, RelayConfig, TestCa, TestDir};

/// Upper bound for one relayed delivery (retries are 1–2 s apart in these configs).
const DELIVERY: Duration = Duration::from_secs(60);

const SENDER: &str = "sender@origin.test";

/// Attaches the relay's log to an error.
fn with_log<T>(r: Result<T>, hg: &Hopguard) -> Result<T> {
    r.with_context(|| format!("hopguard.log:\n{}", hg.log()))
}

/// Submits with swaks (STARTTLS, from the relay_networks address) and requires acceptance.
fn submit_ok(w: &World, hg: &Hopguard, to: &str, marker: &str) -> Result<()> {
    let out = w.submit(SENDER, to, marker)?;
    ensure!(
        out.success(),
        "swaks was refused:\n{}\nhopguard.log:\n{}",
        out.output,
        hg.log()
    );
    Ok(())
}

/// Whether `msg` was delivered to `rcpt` (Postfix's Delivered-To).
fn delivered_to(msg: &str, rcpt: &str) -> bool {
    header_values(msg, "Delivered-To")
        .iter()
        .any(|v| v.eq_ignore_ascii_case(rcpt))
}

/// A raw client that has done EHLO, STARTTLS (verifying the relay) and EHLO again.
async fn tls_session(w: &World, source: std::net::Ipv4Addr) -> Result<RawSmtp> {
    let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(source)).await?;
    c.ehlo("client.test").await?;
    c.starttls(w.ca.ca_pem(), RELAY_HOSTNAME).await?;
    c.ehlo("client.test").await?;
    Ok(c)
}

// Behaviour 1: delivery through TLS — swaks (STARTTLS) from relay_networks to a
// STARTTLS peer whose certificate verifies for its MX name; both hops are recorded.
#[test]
fn delivers_through_tls_to_verified_peer() -> Result<()> {
    let w = World::start()?;
    let hg = w.start_relay(&w.relay_config())?;
    let m = marker("tls-delivery");
    submit_ok(&w, &hg, "user@tls-peer.test", &m)?;

    let msg = with_log(
        w.tls_peer.wait_for_message(|x| x.contains(&m), DELIVERY),
        &hg,
    )?;
    ensure!(delivered_to(&msg, "user@tls-peer.test"), "{msg}");
    let rcvd = received(&msg);
    let ours = rcvd
        .iter()
        .position(|r| r.contains(&format!("by {RELAY_HOSTNAME}")));
    let theirs = rcvd
        .iter()
        .position(|r| r.contains("by mx.tls-peer.test (Postfix) with ESMTPS"));
    let (Some(ours), Some(theirs)) = (ours, theirs) else {
        anyhow::bail!("missing Received header(s) in:\n{msg}");
    };
    ensure!(
        rcvd[ours].contains("using TLSv1.3 with cipher"),
        "hopguard's Received does not record the inbound TLS: {}",
        rcvd[ours]
    );
    ensure!(
        rcvd[theirs].contains("using TLSv1.3 with cipher")
            || rcvd[theirs].contains("using TLSv1.2 with cipher"),
        "Postfix's Received does not record TLS: {}",
        rcvd[theirs]
    );
    ensure!(
        theirs < ours,
        "Postfix's Received must be above hopguard's:\n{msg}"
    );
    Ok(())
}

// Behaviour 2 (defer): a next hop without STARTTLS never gets the message; the queue
// shows it deferred with a reason naming STARTTLS.
#[test]
fn no_starttls_peer_is_deferred() -> Result<()> {
    let w = World::start()?;
    let hg = w.start_relay(&w.relay_config())?;
    let m = marker("no-starttls");
    submit_ok(&w, &hg, "user@plain-peer.test", &m)?;

    let listing = wait_until("queue list to show a STARTTLS deferral", DELIVERY, || {
        let list = hg.queue_list()?;
        let hit = list.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("starttls") && l.contains("defer")
        });
        Ok(hit.then_some(list))
    });
    let listing = with_log(listing, &hg)?;
    ensure!(
        w.plain_peer.messages().is_empty(),
        "the plain peer received mail; queue:\n{listing}"
    );
    ensure!(
        !w.plain_peer.log().contains(" mail="),
        "hopguard sent MAIL FROM to a peer without STARTTLS:\n{}",
        w.plain_peer.log()
    );
    Ok(())
}

// Behaviour 2 (bounce): after max_lifetime the sender gets a DSN naming STARTTLS with a
// 4.7.x/5.7.x status, delivered to its own domain's MX (the TLS peer).
#[test]
fn no_starttls_peer_bounces_after_lifetime() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    cfg.max_lifetime = "3s".into();
    cfg.min_backoff = "1s".into();
    cfg.max_backoff = "1s".into();
    let hg = w.start_relay(&cfg)?;
    let m = marker("no-starttls-dsn");
    submit_ok(&w, &hg, "user@plain-peer.test", &m)?;

    let dsn = with_log(
        w.tls_peer.wait_for_message(
            |x| delivered_to(x, SENDER) && x.contains("multipart/report"),
            DELIVERY,
        ),
        &hg,
    )?;
    ensure!(
        dsn.to_ascii_lowercase().contains("starttls"),
        "DSN does not name STARTTLS:\n{dsn}"
    );
    ensure!(
        dsn.contains("user@plain-peer.test"),
        "DSN does not name the recipient:\n{dsn}"
    );
    let status_ok = dsn.lines().any(|l| {
        let Some((name, value)) = l.split_once(':') else {
            return false;
        };
        let v = value.trim();
        name.eq_ignore_ascii_case("Status") && (v.starts_with("5.7.") || v.starts_with("4.7."))
    });
    ensure!(status_ok, "DSN has no Status: 4.7.x/5.7.x:\n{dsn}");
    ensure!(
        w.plain_peer.messages().is_empty(),
        "the plain peer received mail"
    );
    Ok(())
}

// Behaviour 3: crash durability — once 250 is given, a kill -9 loses nothing: after a restart
// the message reaches the peer that was down at submission time (duplicates tolerated).
#[test]
fn accepted_message_survives_kill9() -> Result<()> {
    let w = World::start()?;
    let mut hg = w.start_relay(&w.relay_config())?;
    let m = marker("crash");
    submit_ok(&w, &hg, "user@later-peer.test", &m)?;
    hg.kill9()?;

    let later = w.start_later_peer()?;
    hg.restart()?;
    let msg = with_log(later.wait_for_message(|x| x.contains(&m), DELIVERY), &hg)?;
    ensure!(delivered_to(&msg, "user@later-peer.test"), "{msg}");
    let copies = later.messages().iter().filter(|x| x.contains(&m)).count();
    if copies > 1 {
        eprintln!("note: {copies} copies delivered after the crash (tolerated)");
    }
    Ok(())
}

// Behaviour 4: no open relay — a client outside relay_networks may not relay to an arbitrary
// domain (550 5.7.1) but may send to a relay_domains domain.
#[tokio::test]
async fn refuses_to_relay_for_strangers() -> Result<()> {
    let w = World::start()?;
    let hg = w.start_relay(&w.relay_config())?;
    let run = async {
        let mut c = tls_session(&w, w.addrs.stranger).await?;
        let r = c.cmd("MAIL FROM:<someone@stranger.test>").await?;
        ensure!(r.code == 250, "MAIL refused: {r}");
        let r = c.cmd("RCPT TO:<x@elsewhere.test>").await?;
        ensure!(
            r.code == 550 && r.enhanced() == Some("5.7.1"),
            "relaying to elsewhere.test not refused with 550 5.7.1: {r}"
        );
        let r = c.cmd("RCPT TO:<user@inbound.test>").await?;
        ensure!(r.code == 250, "relay_domains recipient refused: {r}");
        let r = c.cmd("QUIT").await?;
        ensure!(r.code == 221, "{r}");
        Ok(())
    };
    with_log(run.await, &hg)
}

// Behaviour 5: STARTTLS command injection — commands pipelined behind STARTTLS in the
// plaintext phase are discarded, never answered inside TLS (CVE-2011-0411 class).
#[tokio::test]
async fn discards_commands_injected_behind_starttls() -> Result<()> {
    let w = World::start()?;
    let hg = w.start_relay(&w.relay_config())?;
    let run = async {
        for injected in ["NOOP\r\n", "MAIL FROM:<a@origin.test>\r\n"] {
            let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.client)).await?;
            let ehlo = c.ehlo("client.test").await?;
            ensure!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo}");
            c.send(format!("STARTTLS\r\n{injected}").as_bytes()).await?;
            let r = c.read_reply().await?;
            ensure!(r.code == 220, "STARTTLS not accepted: {r}");
            // Fails if the server answered the injected command in plaintext.
            c.tls_handshake(w.ca.ca_pem(), RELAY_HOSTNAME)
                .await
                .with_context(|| format!("injected {injected:?}"))?;
            c.send(b"EHLO client.test\r\n").await?;
            let first = c.read_reply().await?;
            ensure!(
                first.code == 250
                    && first.is_multiline()
                    && first.lines[0].starts_with(RELAY_HOSTNAME),
                "first reply inside TLS is not the EHLO reply (injected {injected:?}): {first}"
            );
            // The injected MAIL (if any) left no transaction behind.
            let r = c.cmd("RCPT TO:<user@tls-peer.test>").await?;
            ensure!(
                r.code == 503,
                "RCPT without MAIL not refused with 503 (injected {injected:?}): {r}"
            );
            let r = c.cmd("QUIT").await?;
            ensure!(r.code == 221, "{r}");
        }
        Ok(())
    };
    with_log(run.await, &hg)
}

// Behaviour 6: SMTP smuggling — only CRLF.CRLF ends DATA; a bare-LF/CR dot inside the body
// does not, so one DATA yields one reply and at most one message at the peer.
#[tokio::test]
async fn bare_lf_dots_do_not_end_data() -> Result<()> {
    let w = World::start()?;
    let hg = w.start_relay(&w.relay_config())?;
    let variants = ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r\n\n.\n"];
    let run = async {
        let mut accepted = Vec::new();
        for variant in variants {
            let m = marker("smuggle");
            let mut c = tls_session(&w, w.addrs.client).await?;
            ensure!(c.cmd(&format!("MAIL FROM:<{SENDER}>")).await?.code == 250);
            ensure!(c.cmd("RCPT TO:<user@tls-peer.test>").await?.code == 250);
            let r = c.cmd("DATA").await?;
            ensure!(r.code == 354, "DATA: {r}");
            let data = format!(
                "Subject: smuggling {m}\r\nX-Hopguard-Test: {m}\r\n\r\nfirst line{variant}\
                 MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@tls-peer.test>\r\nDATA\r\n\
                 smuggled {m}\r\n.\r\n"
            );
            c.send(data.as_bytes()).await?;
            let end = c.read_reply().await?;
            ensure!(
                end.code == 250 || (500..600).contains(&end.code),
                "variant {variant:?}: end of data answered {end}"
            );
            c.send(b"QUIT\r\n").await?;
            let rest = c.read_until_close().await?;
            ensure!(
                rest.len() == 1 && rest[0].code == 221,
                "variant {variant:?}: replies after end of data beyond QUIT's: {rest:?}"
            );
            if end.code == 250 {
                accepted.push((variant, m));
            }
        }
        Ok(accepted)
    };
    let accepted = with_log(run.await, &hg)?;

    // Accepted messages arrive intact: the peer refuses bare LFs, so a relay that emitted one
    // would fail this delivery.
    for (variant, m) in &accepted {
        let found = w
            .tls_peer
            .wait_for_message(|x| x.contains(m.as_str()), DELIVERY);
        with_log(found, &hg).with_context(|| format!("variant {variant:?}"))?;
    }
    let drained = wait_until("the relay queue to drain", DELIVERY, || {
        Ok(hg.queue_is_empty()?.then_some(()))
    });
    with_log(drained, &hg)?;
    let msgs = w.tls_peer.messages();
    ensure!(
        !msgs.iter().any(|x| delivered_to(x, "v@tls-peer.test")),
        "a smuggled message reached v@tls-peer.test"
    );
    for (variant, m) in &accepted {
        let n = msgs.iter().filter(|x| x.contains(m.as_str())).count();
        ensure!(n == 1, "variant {variant:?}: {n} messages carry {m}");
    }
    Ok(())
}

// Behaviour 7: a charter peer must use TLS — MAIL FROM before STARTTLS from a peer's
// client_networks address gets 530 5.7.0.
#[tokio::test]
async fn charter_peer_without_tls_is_refused() -> Result<()> {
    let w = World::start()?;
    let hg = w.start_relay(&w.relay_config())?;
    let run = async {
        let mut c = RawSmtp::connect_greeted(w.relay_addr(), Some(w.addrs.peer_client)).await?;
        c.ehlo("mx.peer-a.test").await?;
        let r = c.cmd("MAIL FROM:<someone@peer-a.test>").await?;
        ensure!(
            r.code == 530 && r.enhanced() == Some("5.7.0"),
            "MAIL before STARTTLS from a charter peer not refused with 530 5.7.0: {r}"
        );
        Ok(())
    };
    with_log(run.await, &hg)
}

// Behaviour 8: SIGHUP with a bad config — the reload is rejected and logged, the relay stays
// up with the old config and still relays.
#[test]
fn sighup_with_bad_config_keeps_old_config() -> Result<()> {
    let w = World::start()?;
    let mut hg = w.start_relay(&w.relay_config())?;
    let before = hg.log().len();
    std::fs::write(
        hg.config_path(),
        "hostname: [unterminated\nlisteners: {{{\n",
    )?;
    hg.sighup()?;
    let logged = wait_until("the log to report the rejected reload", DELIVERY, || {
        let log = hg.log();
        let new = log.get(before..).unwrap_or("");
        let hit = new.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("reload")
                && ["reject", "fail", "error", "invalid", "keep"]
                    .iter()
                    .any(|w| l.contains(w))
        });
        Ok(hit.then_some(()))
    });
    with_log(logged, &hg)?;
    ensure!(
        hg.is_running(),
        "hopguard exited after SIGHUP:\n{}",
        hg.log()
    );

    let m = marker("after-bad-reload");
    submit_ok(&w, &hg, "user@tls-peer.test", &m)?;
    with_log(
        w.tls_peer.wait_for_message(|x| x.contains(&m), DELIVERY),
        &hg,
    )?;
    ensure!(hg.is_running());
    Ok(())
}

// Behaviour 9: `hopguard config check` rejects an unknown key, naming it and its line.
#[test]
fn config_check_names_unknown_key_and_line() -> Result<()> {
    let dir = TestDir::new()?;
    let certs = dir.sub("certs")?;
    let ca = TestCa::new(&certs)?;
    let cert = ca.issue(&certs, "relay", &[RELAY_HOSTNAME])?;
    let mut cfg = RelayConfig {
        hostname: RELAY_HOSTNAME.into(),
        spool_dir: dir.sub("spool")?,
        listen: Net::alloc_sock(25),
        certificate: cert.cert.clone(),
        key: cert.key.clone(),
        inbound_tls: Some("optional".into()),
        relay_networks: vec![format!("{}/32", Net::alloc())],
        relay_domains: Vec::new(),
        peers: Vec::new(),
        routes: Vec::new(),
        resolvers: vec![Net::alloc_sock(53)],
        ca_file: Some(ca.ca_pem().to_path_buf()),
        min_backoff: "1s".into(),
        max_backoff: "2s".into(),
        max_lifetime: "5d".into(),
        log_level: "info".into(),
        metrics: None,
        extra: String::new(),
    };
    let bin = hopguard_integration::hopguard::binary()?;
    let check = |yaml: &str, name: &str| -> Result<std::process::Output> {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml)?;
        hopguard_integration::hopguard::run_cli(&bin, &["config", "check", &path.to_string_lossy()])
    };

    let good = check(&cfg.to_yaml(), "good.yaml")?;
    ensure!(
        good.status.success(),
        "a valid config fails the check:\n{}\n{}",
        cfg.to_yaml(),
        output_text(&good)
    );

    cfg.extra = "unexpected_setting: true\n".into();
    let yaml = cfg.to_yaml();
    let line = yaml.lines().count();
    let bad = check(&yaml, "bad.yaml")?;
    let text = output_text(&bad);
    ensure!(!bad.status.success(), "unknown key accepted:\n{text}");
    ensure!(
        text.contains("unexpected_setting"),
        "error does not name the key:\n{text}"
    );
    ensure!(
        contains_number(&text, line),
        "error does not give line {line}:\n{text}"
    );
    Ok(())
}

/// Whether `n` appears in `text` as a whole number (not part of a longer digit run).
fn contains_number(text: &str, n: usize) -> bool {
    let needle = n.to_string();
    let bytes = text.as_bytes();
    text.match_indices(&needle).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j].is_ascii_digit());
        let after = bytes.get(i + needle.len()).map(|b| b.is_ascii_digit());
        before != Some(true) && after != Some(true)
    })
}

// Sanity of the helper above (no processes involved).
#[test]
fn contains_number_matches_whole_numbers() {
    assert!(contains_number("at line 23, column 1", 23));
    assert!(!contains_number("at line 123", 23));
    assert!(!contains_number("at line 230", 23));
}
