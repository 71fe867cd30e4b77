use super::*;

/// A temp dir with a self-signed certificate and key; returns (dir, yaml prefix).
pub(crate) fn fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["relay.test".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let yaml = format!(
        "hostname: Relay.Test\nspool_dir: {}\nlisteners:\n  - address: \"127.0.0.1:2525\"\n    certificate: {}\n    key: {}\ndns:\n  resolvers: [\"127.0.0.1:53\"]\n",
        dir.path().join("spool").display(),
        cert.display(),
        key.display()
    );
    (dir, yaml)
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(Path::new("test.yaml"), yaml)
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let (_d, y) = fixture();
    let c = parse(&y).unwrap();
    assert_eq!(c.hostname, "relay.test");
    assert_eq!(c.node_id(), "relay.test");
    assert_eq!(
        c.inbound.tls,
        InboundTls::Required,
        "TLS required by default"
    );
    assert_eq!(c.inbound.max_message_size, defaults::MAX_MESSAGE_SIZE);
    assert_eq!(c.queue.max_lifetime, defaults::MAX_LIFETIME);
    assert_eq!(c.queue.min_backoff, defaults::MIN_BACKOFF);
    assert!(c.relay_networks.is_empty(), "nobody may relay by default");
    let r = c.route_for("anywhere.test");
    assert_eq!(
        r.tls,
        OutboundTls::Verify,
        "outbound default is verified TLS"
    );
    assert_eq!(r.next_hop, None);
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let (_d, y) = fixture();
    let err = parse(&format!(
        "{y}inbound:\n  tls: optional\n  max_mesage_size: 10\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("max_mesage_size"), "{err}");
    assert!(err.contains("line 11"), "{err}");
}

#[test]
fn duplicate_key_is_an_error() {
    let (_d, y) = fixture();
    let err = parse(&format!("{y}hostname: other.test\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate"), "{err}");
}

#[test]
fn semantic_errors_name_the_key() {
    let (_d, y) = fixture();
    let peer = "peers:\n  - name: peer-a\n    domains: [peer-a.test]\n";
    let rows = [
        (
            format!("{y}{peer}routes:\n  - domain: peer-a.test\n    tls: opportunistic\n"),
            "routes[0].tls",
        ),
        (
            format!("{y}routes:\n  - domain: x.test\n    next_hop: \"h:notaport\"\n"),
            "routes[0].next_hop",
        ),
        (
            format!("{y}peers:\n  - name: Bad Name\n    domains: [a.test]\n"),
            "peers[0].name",
        ),
        (
            format!("{y}peers:\n  - name: other\n    domains: [a.test]\n"),
            "peers[0].name",
        ),
        (
            format!("{y}queue:\n  min_backoff: 1h\n  max_backoff: 1m\n"),
            "queue.min_backoff",
        ),
        (
            format!("{y}inbound:\n  max_recipients: 5\n"),
            "inbound.max_recipients",
        ),
        (
            format!("{y}relay_domains:\n  - domain: a.test\nroutes:\n  - domain: a.test\n"),
            "relay_domains[0].domain",
        ),
        (
            format!("{y}queue:\n  max_lifetime: 5 days\n"),
            "max_lifetime",
        ),
    ];
    for (yaml, key) in rows {
        let err = parse(&yaml).unwrap_err().to_string();
        assert!(err.contains(key), "expected {key} in: {err}");
    }
}

#[test]
fn missing_certificate_is_caught_at_load() {
    let (_d, y) = fixture();
    let y = y.replace("cert.pem", "missing.pem");
    let err = parse(&y).unwrap_err().to_string();
    assert!(
        err.contains("listeners[0]") && err.contains("missing.pem"),
        "{err}"
    );
}

#[test]
fn lookups() {
    let (_d, y) = fixture();
    let c = parse(&format!(
        "{y}relay_networks: [\"10.0.0.0/8\"]\npeers:\n  - name: peer-a\n    domains: [Peer-A.test]\n    client_networks: [\"192.0.2.0/24\"]\nrelay_domains:\n  - domain: ours.test\n    next_hop: \"[192.0.2.7]:2525\"\nroutes:\n  - domain: legacy.test\n    tls: encrypt\n"
    ))
    .unwrap();
    assert!(c.is_relay_client("10.1.2.3".parse().unwrap()));
    assert!(!c.is_relay_client("192.0.2.1".parse().unwrap()));
    assert_eq!(
        c.peer_for_ip("192.0.2.1".parse().unwrap())
            .map(|p| p.name.as_str()),
        Some("peer-a")
    );
    assert_eq!(
        c.peer_for_domain("peer-a.test").map(|p| p.name.as_str()),
        Some("peer-a")
    );
    assert!(c.is_relay_domain("ours.test") && !c.is_relay_domain("legacy.test"));
    assert_eq!(
        c.route_for("ours.test").next_hop,
        Some(NextHop {
            host: "192.0.2.7".into(),
            port: 2525
        })
    );
    assert_eq!(c.route_for("legacy.test").tls, OutboundTls::Encrypt);
}

#[test]
fn next_hop_parsing() {
    let ok = [
        ("mx.example:2525", "mx.example", 2525),
        ("mx.example", "mx.example", 25),
        ("[::1]:26", "::1", 26),
        ("[127.0.0.5]", "127.0.0.5", 25),
    ];
    for (text, host, port) in ok {
        assert_eq!(
            NextHop::parse(text, 25).unwrap(),
            NextHop {
                host: host.into(),
                port
            },
            "{text}"
        );
    }
    for bad in ["", ":25", "[::1", "h:99999", "[::1]x"] {
        assert!(NextHop::parse(bad, 25).is_err(), "{bad}");
    }
}

#[test]
fn charter_outbound_policies_are_validated() {
    let (d, y) = fixture();
    let ca = d.path().join("cert.pem"); // any PEM certificate will do as a pinned CA
    let ok = format!(
        "{y}peers:\n  - name: peer-a\n    domains: [peer-a.test]\n    outbound:\n      require: verify\n      ca_file: {}\n      spki_pins: [\"{}\"]\n      mx: [\"*.peer-a.test\"]\n      min_tls: TLSv1.3\n      report_only: true\n",
        ca.display(),
        "ab".repeat(32)
    );
    let c = parse(&ok).unwrap();
    let p = c.peers[0]
        .outbound
        .as_ref()
        .unwrap()
        .to_policy("peer-a")
        .unwrap();
    assert!(p.report_only);
    assert_eq!(p.min_tls, hopguard_policy::TlsVersion::Tls13);
    assert!(
        matches!(p.require, Some(hopguard_policy::CharterRequirement::Verify(ref t)) if t.is_pinned())
    );
    let rows = [
        (
            "require: dane\n      ca_file: /nonexistent.pem",
            "peers[0].outbound.ca_file",
        ),
        (
            "require: verify\n      spki_pins: [\"xyz\"]",
            "peers[0].outbound.spki_pins[0]",
        ),
        (
            "require: verify\n      ca_file: /nonexistent.pem",
            "peers[0].outbound.ca_file",
        ),
        ("require: sometimes", "require"),
        ("min_tls: TLSv1.1", "min_tls"),
    ];
    for (outbound, key) in rows {
        let yaml = format!("{y}peers:\n  - name: peer-a\n    domains: [peer-a.test]\n    outbound:\n      {outbound}\n");
        let err = parse(&yaml).unwrap_err().to_string();
        assert!(err.contains(key), "expected {key} in: {err}");
    }
}

#[test]
fn peer_for_host_matches_the_domain_and_its_subdomains_only() {
    let (_d, y) = fixture();
    let c = parse(&format!(
        "{y}peers:\n  - name: peer-a\n    domains: [peer-a.test]\n"
    ))
    .unwrap();
    for (host, want) in [
        ("peer-a.test", true),
        ("out1.peer-a.test", true),
        ("OUT1.Peer-A.test.", true),
        ("evilpeer-a.test", false),
        ("peer-a.test.evil", false),
    ] {
        assert_eq!(c.peer_for_host(host).is_some(), want, "{host}");
    }
}
