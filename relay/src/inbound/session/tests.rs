use smtp_proto::Request;

use super::*;

fn config(extra: &str) -> (tempfile::TempDir, Arc<Config>) {
    let (d, y) = crate::config::tests::fixture();
    let yaml = format!(
        "{y}relay_networks: [\"10.0.0.0/8\"]\nrelay_domains:\n  - domain: ours.test\npeers:\n  - name: peer-a\n    domains: [peer-a.test]\n    client_networks: [\"192.0.2.0/24\"]\n{extra}"
    );
    let c = Config::from_yaml(std::path::Path::new("t.yaml"), &yaml).unwrap();
    (d, Arc::new(c))
}

fn cmd(s: &mut Session, line: &str) -> Action {
    let line = format!("{line}\r\n");
    match Request::parse(&mut line.as_bytes().iter()) {
        Ok(r) => s.command(r),
        Err(e) => s.parse_error(e),
    }
}

fn code(a: &Action) -> u16 {
    match a {
        Action::Reply(r) | Action::Close(r) | Action::StartTls(r) | Action::ReceiveData(r) => {
            r.code
        }
        Action::ReceiveBdat { .. } => 0,
    }
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
    }
}

fn ehlo_lines(a: &Action) -> Vec<String> {
    match a {
        Action::Reply(r) => r.lines.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ehlo_keywords_before_and_after_tls() {
    let (_d, c) = config("");
    let mut s = Session::new(c, "10.0.0.1".parse().unwrap());
    let before = ehlo_lines(&cmd(&mut s, "EHLO client.test"));
    for kw in [
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
    ] {
        assert!(
            before.iter().any(|l| l == kw),
            "{kw} missing before TLS: {before:?}"
        );
    }
    assert!(before.iter().any(|l| l.starts_with("SIZE ")));
    assert!(
        !before.iter().any(|l| l == "REQUIRETLS"),
        "REQUIRETLS only after TLS"
    );
    assert!(matches!(cmd(&mut s, "STARTTLS"), Action::StartTls(_)));
    s.tls_established(tls());
    assert_eq!(
        s.state(),
        State::ExpectEhlo,
        "RFC 3207 §4.2: EHLO again after TLS"
    );
    let after = ehlo_lines(&cmd(&mut s, "EHLO client.test"));
    assert!(after.iter().any(|l| l == "REQUIRETLS"));
    assert!(!after.iter().any(|l| l == "STARTTLS"));
    assert_eq!(code(&cmd(&mut s, "STARTTLS")), 503);
}

#[test]
fn tls_required_before_mail() {
    // (client ip, extra config, expected MAIL reply code without TLS)
    let rows = [
        ("192.0.2.5", "", 530),                               // charter peer
        ("198.51.100.1", "", 530),                            // anyone: default required
        ("198.51.100.1", "inbound:\n  tls: optional\n", 250), // explicitly optional
        ("192.0.2.5", "inbound:\n  tls: optional\n", 530),    // peers keep their own rule
    ];
    for (ip, extra, want) in rows {
        let (_d, c) = config(extra);
        let mut s = Session::new(c, ip.parse().unwrap());
        cmd(&mut s, "EHLO client.test");
        let a = cmd(&mut s, "MAIL FROM:<a@peer-a.test>");
        assert_eq!(code(&a), want, "{ip} {extra:?}");
        if want == 530 {
            assert_eq!(a, Action::Reply(Reply::must_starttls()));
            s.tls_established(tls());
            cmd(&mut s, "EHLO client.test");
            assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@peer-a.test>")), 250);
        }
    }
}

#[test]
fn never_an_open_relay() {
    // (client, recipient, expected)
    let rows = [
        ("198.51.100.1", "x@elsewhere.test", 550),
        ("198.51.100.1", "x@ours.test", 250),
        ("198.51.100.1", "x@OURS.test", 250),
        ("192.0.2.5", "x@elsewhere.test", 550),
        ("10.0.0.1", "x@elsewhere.test", 250),
        ("198.51.100.1", "x@[127.0.0.1]", 501), // smtp-proto refuses literals
        ("198.51.100.1", "x@ours.test@elsewhere.test", 501), // not an address
    ];
    for (ip, rcpt, want) in rows {
        let (_d, c) = config("");
        let mut s = Session::new(c, ip.parse().unwrap());
        s.tls_established(tls());
        cmd(&mut s, "EHLO client.test");
        assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.test>")), 250);
        let a = cmd(&mut s, &format!("RCPT TO:<{rcpt}>"));
        assert_eq!(code(&a), want, "{ip} -> {rcpt}: {a:?}");
        if want == 550 && !rcpt.contains('[') {
            assert_eq!(a, Action::Reply(Reply::relay_denied()));
        }
    }
}

#[test]
fn sequence_and_limits() {
    let (_d, c) = config("");
    let mut s = Session::new(c.clone(), "10.0.0.1".parse().unwrap());
    assert_eq!(
        code(&cmd(&mut s, "MAIL FROM:<a@b.test>")),
        503,
        "EHLO first"
    );
    s.tls_established(tls());
    cmd(&mut s, "EHLO c.test");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.test>")), 503, "MAIL first");
    assert_eq!(code(&cmd(&mut s, "DATA")), 503);
    assert_eq!(
        code(&cmd(&mut s, "MAIL FROM:<a@b.test> SIZE=999999999999")),
        552
    );
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.test>")), 250);
    assert_eq!(
        code(&cmd(&mut s, "MAIL FROM:<a@b.test>")),
        503,
        "nested MAIL"
    );
    assert_eq!(code(&cmd(&mut s, "DATA")), 554, "no recipients yet");
    for i in 0..c.inbound.max_recipients {
        assert_eq!(code(&cmd(&mut s, &format!("RCPT TO:<u{i}@y.test>"))), 250);
    }
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<one-more@y.test>")), 452);
    assert!(matches!(cmd(&mut s, "DATA"), Action::ReceiveData(_)));
    assert_eq!(code(&cmd(&mut s, "RSET")), 250);
    assert!(s.transaction().is_none());
    assert_eq!(code(&cmd(&mut s, "AUTH PLAIN AAAA")), 502);
    assert!(matches!(cmd(&mut s, "QUIT"), Action::Close(_)));
}

#[test]
fn requiretls_only_inside_tls() {
    let (_d, c) = config("inbound:\n  tls: optional\n");
    let mut s = Session::new(c, "10.0.0.1".parse().unwrap());
    cmd(&mut s, "EHLO c.test");
    let a = cmd(&mut s, "MAIL FROM:<a@b.test> REQUIRETLS");
    assert_ne!(code(&a), 250, "{a:?}");
    s.tls_established(tls());
    cmd(&mut s, "EHLO c.test");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.test> REQUIRETLS")), 250);
    assert!(s.transaction().unwrap().requiretls);
}

#[test]
fn too_many_errors_closes() {
    let (_d, c) = config("");
    let max = c.inbound.max_errors;
    let mut s = Session::new(c, "10.0.0.1".parse().unwrap());
    for _ in 0..max - 1 {
        assert!(matches!(cmd(&mut s, "BOGUS"), Action::Reply(_)));
    }
    assert!(matches!(cmd(&mut s, "BOGUS"), Action::Close(r) if r.code == 421));
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let (_d, c) = config("");
    let mut s = Session::new(c, "10.0.0.1".parse().unwrap());
    s.tls_established(tls());
    cmd(&mut s, "EHLO c.test");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<jörg@b.test>")), 553);
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<jörg@b.test> SMTPUTF8")), 250);
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<zoë@y.test>")), 250);
}

#[test]
fn received_header_records_tls() {
    let (_d, c) = config("");
    let mut s = Session::new(c, "10.0.0.1".parse().unwrap());
    s.tls_established(tls());
    cmd(&mut s, "EHLO client.test");
    cmd(&mut s, "MAIL FROM:<a@b.test>");
    cmd(&mut s, "RCPT TO:<x@y.test>");
    let h = s.received_header("QID1", "Wed, 25 Nov 2026 10:00:00 +0000");
    assert_eq!(
        h,
        "Received: from client.test ([10.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\tby relay.test (hopguard) with ESMTPS id QID1\r\n\tfor <x@y.test>; Wed, 25 Nov 2026 10:00:00 +0000\r\n"
    );
}
