//! Tests of the interception point: warrant table, file safeguards, disabled state, mTLS
//! admin, mediation handover (fields, byte-identical CC, endpoint down), LI audit, no tracing.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::spool::{Recipient, TlsInfo, ENVELOPE_VERSION};

// ---------------------------------------------------------------- helpers

fn envelope(id: &str, from: &str, to: &[&str]) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        id: id.into(),
        node_id: "node-1".into(),
        received_at: 1_740_000_000,
        received_ms: 1_740_000_000_000,
        client_ip: "192.0.2.7".into(),
        helo: "mx.peer.example".into(),
        peer: None,
        tls: Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        }),
        mail_from: from.into(),
        body: Default::default(),
        smtputf8: false,
        requiretls: false,
        tls_required_no: false,
        ret: None,
        envid: None,
        size: 0,
        message_id_hash: None,
        recipients: to
            .iter()
            .map(|a| Recipient {
                address: (*a).into(),
                domain: a.rsplit_once('@').map(|d| d.1).unwrap_or("").into(),
                orcpt: None,
                notify: 0,
                status: Default::default(),
                last_failure: None,
                notified: false,
            })
            .collect(),
        attempts: 0,
        next_attempt: 0,
        is_bounce: false,
    }
}

fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("date")
}

fn warrant(liid: &str, targets: &[&str], direction: Direction) -> Warrant {
    Warrant {
        liid: liid.into(),
        authority: "Court A".into(),
        targets: targets.iter().map(|s| s.to_string()).collect(),
        direction,
        valid_from: t(2025, 1, 1),
        valid_until: t(2025, 12, 31),
        product: Product::IriCc,
    }
}

fn yaml_warrant(liid: &str, target: &str, product: &str, from: &str, until: &str) -> String {
    format!(
        "  - liid: {liid}\n    authority: Court A\n    targets: [\"{target}\"]\n    \
         direction: both\n    valid_from: \"{from}\"\n    valid_until: \"{until}\"\n    \
         product: {product}\n"
    )
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .expect("create");
    f.write_all(text.as_bytes()).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// Writes `NAME.pem`, `NAME.key` issued by `ca` for `localhost`; returns their paths.
fn leaf(ca: &Ca, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &ca.issuer).expect("leaf");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("cert");
    std::fs::write(&k, key.serialize_pem()).expect("key");
    (c, k)
}

fn write_ca(ca: &Ca, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&p, &ca.pem).expect("ca");
    p
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn base_config(dir: &Path, handover: Handover) -> InterceptConfig {
    InterceptConfig {
        warrants_file: None,
        spool_dir: dir.join("li-spool"),
        audit_dir: dir.join("li-audit"),
        audit_key: signing_key(),
        node_id: "node-1".into(),
        handover,
        admin: None,
    }
}

/// A spooled message as the relay would hold it: CRLF, 8-bit bytes, a line that looks like
/// our own framing, then an embedded envelope (which a copy must never include). Returns the
/// path and the message bytes (the envelope's `size` must be their length).
fn spooled_message(dir: &Path, id: &str) -> (PathBuf, Vec<u8>) {
    let queue = dir.join("mail-spool").join("queue");
    std::fs::create_dir_all(&queue).expect("queue");
    let mut bytes =
        b"Received: from mx.peer.example\r\nSubject: hi\r\n\r\nCC 3\nACK x\r\n.\r\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0x00, 0xe9, b'\r', b'\n']);
    let path = queue.join(format!("{id}.msg"));
    let mut file = bytes.clone();
    file.extend_from_slice(&crate::spool::embedded(b"{\"spool\":\"envelope\"}"));
    std::fs::write(&path, &file).expect("msg");
    (path, bytes)
}

async fn wait_until(li: &Intercept, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let mut progress = li.progress();
    let waited = tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|_| cond(&li.health())),
    )
    .await;
    assert!(matches!(waited, Ok(Ok(_))), "timed out waiting for {what}");
}

fn audit_text(dir: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).expect("audit dir").flatten() {
        text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    text
}

// ---------------------------------------------------------------- matching (pure)

/// (case, mail from, rcpt to, expected (liid, side)).
type Row<'a> = (&'a str, &'a str, &'a [&'a str], &'a [(&'a str, Side)]);

#[test]
fn matches_table() {
    let now = t(2025, 6, 1);
    let sent = warrant("S", &["alice@example.org"], Direction::Sent);
    let recv = warrant("R", &["alice@example.org"], Direction::Received);
    let both = warrant("B", &["alice@example.org"], Direction::Both);
    let mut expired = warrant("E", &["alice@example.org"], Direction::Both);
    expired.valid_until = t(2025, 5, 31);
    let mut future = warrant("F", &["alice@example.org"], Direction::Both);
    future.valid_from = t(2025, 6, 2);
    let all = [sent, recv, both, expired, future];
    let rows: &[Row] = &[
        (
            "target sends",
            "alice@example.org",
            &["bob@other.example"],
            &[("S", Side::Sent), ("B", Side::Sent)],
        ),
        (
            "target receives",
            "bob@other.example",
            &["carol@x.example", "alice@example.org"],
            &[("R", Side::Received), ("B", Side::Received)],
        ),
        (
            "domain case and brackets normalised",
            "<alice@EXAMPLE.Org>",
            &[],
            &[("S", Side::Sent), ("B", Side::Sent)],
        ),
        (
            "local part is case-sensitive",
            "Alice@example.org",
            &[],
            &[],
        ),
        (
            "other addresses",
            "bob@example.org",
            &["alice@example.net", "xalice@example.org"],
            &[],
        ),
        ("null sender", "", &["bob@example.org"], &[]),
    ];
    for (case, from, to, expected) in rows {
        let got: Vec<(String, Side)> = matches(&all, &envelope("ID", from, to), now)
            .into_iter()
            .map(|m| (m.liid, m.side))
            .collect();
        let want: Vec<(String, Side)> = expected.iter().map(|(l, s)| (l.to_string(), *s)).collect();
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn validity_window_is_half_open() {
    let w = [warrant("W", &["a@b.example"], Direction::Both)];
    let env = envelope("ID", "a@b.example", &[]);
    assert_eq!(
        matches(&w, &env, t(2025, 1, 1)).len(),
        1,
        "valid_from included"
    );
    assert!(
        matches(&w, &env, t(2025, 12, 31)).is_empty(),
        "valid_until excluded"
    );
    assert!(
        matches(&w, &env, t(2024, 12, 31)).is_empty(),
        "not yet valid"
    );
    assert!(matches(&w, &env, t(2026, 1, 1)).is_empty(), "expired");
}

#[test]
fn targets_must_be_exact_addresses() {
    let ok = [
        ("alice@Example.ORG", "alice@example.org"),
        (" Bob@x.example ", "Bob@x.example"),
    ];
    for (input, want) in ok {
        assert_eq!(warrant::normalise_target(input).as_deref(), Ok(want));
    }
    for bad in [
        "*@example.org",
        "alice*@example.org",
        "%@example.org",
        "example.org",
        "@example.org",
        "alice@",
        "",
        "a b@example.org",
    ] {
        assert!(warrant::normalise_target(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn invalid_warrants_refuse_the_whole_document_naming_liid_and_field() {
    let good = yaml_warrant(
        "L-1",
        "a@b.example",
        "iri",
        "2025-01-01T00:00:00Z",
        "2026-01-01T00:00:00Z",
    );
    let cases = [
        (
            yaml_warrant(
                "L-2",
                "*@b.example",
                "iri",
                "2025-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            "L-2",
            "targets[0]",
        ),
        (
            yaml_warrant(
                "L-2",
                "b.example",
                "iri",
                "2025-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            "L-2",
            "targets[0]",
        ),
        (
            yaml_warrant(
                "L-2",
                "@b.example",
                "iri",
                "2025-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            "L-2",
            "targets[0]",
        ),
        (
            yaml_warrant(
                "L-2",
                "a@b.example",
                "cc",
                "2025-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            "L-2",
            "product",
        ),
        (
            yaml_warrant(
                "L-2",
                "a@b.example",
                "iri",
                "yesterday",
                "2026-01-01T00:00:00Z",
            ),
            "L-2",
            "valid_from",
        ),
        (
            yaml_warrant(
                "L-2",
                "a@b.example",
                "iri",
                "2026-01-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
            ),
            "L-2",
            "valid_until",
        ),
        (
            yaml_warrant(
                "L-1",
                "a@b.example",
                "iri",
                "2025-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            "L-1",
            "liid",
        ),
    ];
    for (bad, liid, field) in cases {
        let doc = format!("warrants:\n{good}{bad}");
        let err = warrant::parse_warrants(&doc, "test")
            .expect_err(field)
            .to_string();
        assert!(err.contains(liid) && err.contains(field), "{err}");
        assert!(
            !err.contains("b.example"),
            "the error echoes a target: {err}"
        );
    }
    let doc = format!("warrants:\n{good}").replace("direction: both", "direction: any");
    let err = warrant::parse_warrants(&doc, "test")
        .expect_err("direction")
        .to_string();
    assert!(err.contains("L-1") && err.contains("direction"), "{err}");
    let doc = format!("warrants:\n{good}    extra: 1\n");
    assert!(
        warrant::parse_warrants(&doc, "test").is_err(),
        "unknown field"
    );
    let parsed = warrant::parse_warrants(&format!("warrants:\n{good}"), "test").expect("good");
    assert_eq!(parsed[0].product, Product::Iri);
    assert_eq!(parsed[0].direction, Direction::Both);
}

// ---------------------------------------------------------------- warrants file

#[test]
fn warrants_file_must_be_root_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("warrants.yaml");
    let doc = format!(
        "warrants:\n{}",
        yaml_warrant(
            "L-1",
            "a@b.example",
            "iri",
            "2025-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z"
        )
    );
    write_mode(&path, &doc, 0o640);
    let err = warrant::load_file(&path).expect_err("0640").to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("0640"),
        "{err}"
    );

    write_mode(&path, &doc, 0o604);
    assert!(warrant::load_file(&path).is_err(), "world-readable");

    write_mode(&path, &doc, 0o600);
    assert_eq!(warrant::load_file(&path).expect("root 0600").len(), 1);

    std::os::unix::fs::chown(&path, Some(1000), Some(1000)).expect("chown (tests run as root)");
    let err = warrant::load_file(&path).expect_err("not root").to_string();
    assert!(err.contains("uid 1000") && err.contains("root"), "{err}");
}

// ---------------------------------------------------------------- disabled state

#[tokio::test]
async fn disabled_is_none_and_touches_nothing() {
    assert!(!InterceptSettings::default().enabled, "off by default");
    let dir = tempfile::tempdir().expect("tmp");
    let yaml = format!(
        "enabled: false\nspool_dir: {d}/li-spool\naudit_dir: {d}/li-audit\n\
         warrants_file: {d}/w.yaml\nhandover:\n  directory: {d}/handover\n",
        d = dir.path().display()
    );
    let settings: InterceptSettings = serde_saphyr::from_str(&yaml).expect("yaml");
    let li = settings.start("node-1").await.expect("start");
    assert!(li.is_none(), "disabled: the relay holds None");
    assert!(matches!(
        settings.to_config("node-1"),
        Err(InterceptError::Disabled)
    ));
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .collect();
    assert!(entries.is_empty(), "nothing created: {entries:?}");
}

#[test]
fn settings_parse_both_handover_forms() {
    let d: InterceptSettings =
        serde_saphyr::from_str("enabled: true\nhandover:\n  directory: /var/lib/li/out\n")
            .expect("directory");
    assert_eq!(
        d.handover,
        Some(HandoverSettings::Directory("/var/lib/li/out".into()))
    );
    let m: InterceptSettings = serde_saphyr::from_str(
        "handover:\n  mediation:\n    address: 10.0.0.5:9443\n    server_name: mf.example\n    \
         ca_file: /a\n    cert_file: /b\n    key_file: /c\nadmin:\n  listen: 127.0.0.1:9444\n  \
         cert_file: /d\n  key_file: /e\n  authority_ca_file: /f\n",
    )
    .expect("mediation");
    assert!(matches!(m.handover, Some(HandoverSettings::Mediation(_))));
    assert!(!m.enabled);
    assert!(serde_saphyr::from_str::<InterceptSettings>("enabled: true\nbogus: 1\n").is_err());
    let missing = InterceptSettings {
        enabled: true,
        ..Default::default()
    };
    assert!(matches!(
        missing.to_config("n"),
        Err(InterceptError::Config(_))
    ));
}

// ---------------------------------------------------------------- admin endpoint

async fn admin_client(
    ca_pem: &Path,
    cert: &Path,
    key: &Path,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = tls::mediation_client(ca_pem, cert, key).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

async fn request(
    stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
    bytes: &[u8],
) -> std::io::Result<String> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    let mut r = BufReader::new(stream);
    let line = wire::read_line(&mut r, 1 << 16).await?;
    Ok(String::from_utf8_lossy(&line.unwrap_or_default()).into_owned())
}

#[tokio::test]
async fn admin_requires_a_client_certificate_from_the_authority_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path();
    let server_ca = ca("LI server CA");
    let authority = ca("Authority CA");
    let stranger = ca("Other CA");
    let (scert, skey) = leaf(&server_ca, p, "admin-server");
    let (acert, akey) = leaf(&authority, p, "authority-client");
    let (ocert, okey) = leaf(&stranger, p, "other-client");
    let server_ca_file = write_ca(&server_ca, p, "server");
    let mut cfg = base_config(p, Handover::Directory(p.join("handover")));
    cfg.admin = Some(AdminConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert_file: scert,
        key_file: skey,
        authority_ca_file: write_ca(&authority, p, "authority"),
    });
    let li = Intercept::start(cfg).await.expect("start");
    let addr = li.admin_addr().expect("admin addr");

    // A client certificate from another CA: refused in the handshake, no answer.
    let refused = match admin_client(&server_ca_file, &ocert, &okey, addr).await {
        Err(_) => true,
        Ok(mut s) => match request(&mut s, b"HEALTH\n").await {
            Err(_) => true,
            Ok(answer) => answer.is_empty(),
        },
    };
    assert!(refused, "a client certificate from another CA was accepted");

    // The authority's client: HEALTH, PUT-WARRANTS (valid, then invalid).
    let mut s = admin_client(&server_ca_file, &acert, &akey, addr)
        .await
        .expect("authority client accepted");
    let health: serde_json::Value =
        serde_json::from_str(&request(&mut s, b"HEALTH\n").await.expect("health")).expect("json");
    assert_eq!(health["warrants_loaded"], 0);
    let doc = format!(
        "warrants:\n{}",
        yaml_warrant(
            "ADM-1",
            "a@b.example",
            "iri",
            "2025-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z"
        )
    );
    let put = format!("PUT-WARRANTS {}\n{doc}", doc.len());
    assert_eq!(request(&mut s, put.as_bytes()).await.expect("put"), "OK 1");
    let bad = doc.replace("a@b.example", "*@b.example");
    let put = format!("PUT-WARRANTS {}\n{bad}", bad.len());
    let answer = request(&mut s, put.as_bytes()).await.expect("put bad");
    assert!(
        answer.starts_with("ERR ") && answer.contains("ADM-1"),
        "{answer}"
    );
    assert_eq!(
        li.health()["warrants_loaded"],
        1,
        "refused set keeps the old one"
    );
    let store = p.join("li-spool").join("admin-warrants.yaml");
    let mode = std::fs::metadata(&store)
        .expect("persisted")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        request(&mut s, b"BOGUS\n").await.expect("bogus").get(..4),
        Some("ERR ")
    );

    let audit = audit_text(&p.join("li-audit"));
    assert!(audit.contains("\"warrant-added\"") && audit.contains("\"load-refused\""));
    assert!(crate::audit::verify(&p.join("li-audit"), &signing_key().verifying_key()).is_ok());
}

// ---------------------------------------------------------------- mediation handover

type Received = (serde_json::Value, Option<Vec<u8>>);

/// A test mediation endpoint: mutual TLS, reads framed copies, answers `ACK <id>`.
async fn mediation_server(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    tx: tokio::sync::mpsc::UnboundedSender<Received>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut s = BufReader::new(tls);
            while let Ok(Some(line)) = wire::read_line(&mut s, 1 << 20).await {
                let Ok(iri) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    return;
                };
                let mut cc = None;
                if iri["product"] == "iri+cc" {
                    let Ok(Some(h)) = wire::read_line(&mut s, 64).await else {
                        return;
                    };
                    let text = String::from_utf8_lossy(&h).into_owned();
                    let Some(n) = text.strip_prefix("CC ").and_then(|n| n.parse().ok()) else {
                        return;
                    };
                    let mut body = vec![0u8; n];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    cc = Some(body);
                }
                let id = iri["copy_id"].as_str().unwrap_or_default().to_owned();
                let _ = tx.send((iri, cc));
                if s.write_all(format!("ACK {id}\n").as_bytes()).await.is_err() {
                    return;
                }
                let _ = s.flush().await;
            }
        });
    }
}

struct Mediation {
    handover: Handover,
    server: Arc<rustls::ServerConfig>,
    addr: std::net::SocketAddr,
}

/// PKI for the mediation link; the address is reserved but nothing listens yet.
async fn mediation_pki(p: &Path) -> Mediation {
    let mca = ca("Mediation CA");
    let (scert, skey) = leaf(&mca, p, "mediation-server");
    let (ccert, ckey) = leaf(&mca, p, "relay-client");
    let ca_file = write_ca(&mca, p, "mediation");
    let server = tls::admin_server(&scert, &skey, &ca_file).expect("server tls");
    let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    Mediation {
        handover: Handover::Mediation {
            address: addr,
            server_name: "localhost".into(),
            ca_file,
            cert_file: ccert,
            key_file: ckey,
        },
        server,
        addr,
    }
}

/// Captures everything written through `tracing`, process-wide.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || CaptureWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_reach_the_mediation_endpoint_over_mtls_and_nothing_reaches_tracing() {
    let capture = captured();
    tracing::info!("li-test-canary");
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path();
    let m = mediation_pki(p).await;
    let listener = TcpListener::bind(m.addr).await.expect("bind mediation");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(mediation_server(listener, m.server.clone(), tx));

    let wfile = p.join("warrants.yaml");
    let doc = format!(
        "warrants:\n{}{}",
        yaml_warrant(
            "LIID-TRACE-7",
            "trace.target@secret.example",
            "iri+cc",
            "2020-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z"
        ),
        yaml_warrant(
            "LIID-META-8",
            "meta.only@secret.example",
            "iri",
            "2020-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z"
        ),
    );
    write_mode(&wfile, &doc, 0o600);
    let mut cfg = base_config(p, m.handover.clone());
    cfg.warrants_file = Some(wfile);
    let li = Intercept::start(cfg).await.expect("start");

    let id = "0000000000001ABCD";
    let (path, bytes) = spooled_message(p, id);
    let mut env = envelope(
        id,
        "trace.target@SECRET.example",
        &["meta.only@secret.example", "bystander@else.example"],
    );
    env.size = bytes.len() as u64;
    li.on_accepted(&env, &crate::spool::MessageRef::File(path.clone()));
    // The relay may deliver and delete the message at once: the copy is still taken.
    std::fs::remove_file(&path).expect("queue removes the message");

    let mut got = Vec::new();
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        got.push(r.expect("copy in time").expect("copy"));
    }
    got.sort_by_key(|(iri, _)| iri["liid"].as_str().unwrap_or_default().to_owned());
    let (iri, cc) = &got[0];
    assert_eq!(iri["liid"], "LIID-META-8");
    assert_eq!(iri["product"], "iri");
    assert_eq!(iri["direction"], "received");
    assert_eq!(iri["target"], "meta.only@secret.example");
    assert!(cc.is_none(), "iri only: no content");
    let (iri, cc) = &got[1];
    assert_eq!(iri["liid"], "LIID-TRACE-7");
    assert_eq!(iri["authority"], "Court A");
    assert_eq!(iri["direction"], "sent");
    assert_eq!(iri["target"], "trace.target@secret.example");
    assert_eq!(iri["queue_id"], id);
    assert_eq!(iri["mail_from"], "trace.target@SECRET.example");
    assert_eq!(
        iri["recipients"],
        serde_json::json!(["meta.only@secret.example", "bystander@else.example"])
    );
    assert_eq!(iri["client_ip"], "192.0.2.7");
    assert_eq!(iri["helo"], "mx.peer.example");
    assert_eq!(iri["tls_version"], "TLSv1.3");
    assert_eq!(iri["size"], bytes.len() as u64);
    assert_eq!(iri["product"], "iri+cc");
    assert_eq!(
        cc.as_deref(),
        Some(bytes.as_slice()),
        "CC is byte-identical"
    );

    wait_until(&li, "local copies removed", |h| {
        h["copies_pending"] == 0 && h["copies_handed_over"] == 2
    })
    .await;

    // LI audit: verifies, says what happened, never names a target.
    let audit_dir = p.join("li-audit");
    let report = crate::audit::verify(&audit_dir, &signing_key().verifying_key());
    assert!(report.is_ok(), "{report}");
    assert!(report.li_records >= 6, "{report}");
    let audit = audit_text(&audit_dir);
    for event in ["warrants-loaded", "copy-queued", "copy-handed-over"] {
        assert!(audit.contains(event), "{event} missing");
    }
    assert!(audit.contains("LIID-TRACE-7") && audit.contains(id));
    assert!(
        !audit.contains("secret.example") && !audit.contains('@'),
        "{audit}"
    );

    // Nothing about the interception went through tracing.
    let logged = String::from_utf8_lossy(&capture.lock().expect("capture")).into_owned();
    assert!(logged.contains("li-test-canary"), "the capture works");
    for secret in ["LIID-TRACE-7", "LIID-META-8", "secret.example", "Court A"] {
        assert!(
            !logged.contains(secret),
            "`{secret}` appeared in tracing output"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_wait_while_the_mediation_endpoint_is_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path();
    let m = mediation_pki(p).await;
    let wfile = p.join("warrants.yaml");
    let doc = format!(
        "warrants:\n{}",
        yaml_warrant(
            "LIID-DOWN-1",
            "down@target.example",
            "iri+cc",
            "2020-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z"
        )
    );
    write_mode(&wfile, &doc, 0o600);
    let mut cfg = base_config(p, m.handover.clone());
    cfg.warrants_file = Some(wfile);
    let li = Intercept::start(cfg).await.expect("start");
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = format!("00000000000020{n:03}");
        let (path, bytes) = spooled_message(p, &id);
        let mut env = envelope(&id, "someone@else.example", &["down@target.example"]);
        env.size = bytes.len() as u64;
        li.on_accepted(&env, &crate::spool::MessageRef::File(path.clone()));
        ids.push(id);
    }
    wait_until(&li, "a failed handover with 3 copies held", |h| {
        !h["last_handover_error"].is_null() && h["copies_pending"] == 3
    })
    .await;
    let pending = p.join("li-spool").join("pending");
    let mode = std::fs::metadata(&pending)
        .expect("pending")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "root-only copy queue");

    // The endpoint comes back.
    let listener = TcpListener::bind(m.addr).await.expect("rebind");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(mediation_server(listener, m.server.clone(), tx));
    li.retry_now();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        let (iri, _) = r.expect("copy in time").expect("copy");
        seen.push(iri["queue_id"].as_str().unwrap_or_default().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ids, "every held copy delivered");
    wait_until(&li, "local copies removed", |h| {
        h["copies_pending"] == 0 && h["last_handover_error"].is_null()
    })
    .await;
    assert_eq!(std::fs::read_dir(&pending).expect("pending").count(), 0);
}

// ---------------------------------------------------------------- directory handover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_handover_and_expiry_are_audited() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path();
    let wfile = p.join("warrants.yaml");
    let doc = format!(
        "warrants:\n{}{}",
        yaml_warrant(
            "LIID-DIR-1",
            "dir@target.example",
            "iri+cc",
            "2020-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z"
        ),
        yaml_warrant(
            "LIID-OLD-2",
            "dir@target.example",
            "iri",
            "2020-01-01T00:00:00Z",
            "2021-01-01T00:00:00Z"
        ),
    );
    write_mode(&wfile, &doc, 0o600);
    let out = p.join("handover");
    let mut cfg = base_config(p, Handover::Directory(out.clone()));
    cfg.warrants_file = Some(wfile.clone());
    let li = Intercept::start(cfg).await.expect("start");
    let id = "0000000000003AAAA";
    let (path, bytes) = spooled_message(p, id);
    let mut env = envelope(id, "dir@target.example", &["x@y.example"]);
    env.size = bytes.len() as u64;
    li.on_accepted(&env, &crate::spool::MessageRef::File(path.clone()));
    wait_until(&li, "handed over", |h| h["copies_handed_over"] == 1).await;

    let framed = std::fs::read(out.join(format!("{id}-0.li"))).expect("handover file");
    let nl = framed.iter().position(|&b| b == b'\n').expect("IRI line");
    let iri: serde_json::Value = serde_json::from_slice(&framed[..nl]).expect("json");
    assert_eq!(
        iri["liid"], "LIID-DIR-1",
        "the expired warrant made no copy"
    );
    let header = format!("CC {}\n", bytes.len());
    assert_eq!(&framed[nl + 1..nl + 1 + header.len()], header.as_bytes());
    assert_eq!(&framed[nl + 1 + header.len()..], bytes.as_slice());
    let mode = std::fs::metadata(&out).expect("out").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);

    // SIGHUP with a group-readable file: refused, set kept, audited.
    std::fs::set_permissions(&wfile, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert!(li.reload_warrants().is_err());
    assert_eq!(li.health()["warrants_loaded"], 2);

    let audit_dir = p.join("li-audit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !audit_text(&audit_dir).contains("warrant-expired") {
        assert!(tokio::time::Instant::now() < deadline, "expiry not audited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let audit = audit_text(&audit_dir);
    assert!(audit.contains("load-refused"));
    assert!(!audit.contains("target.example"));
    assert!(crate::audit::verify(&audit_dir, &signing_key().verifying_key()).is_ok());
}

#[test]
fn admin_commands_parse() {
    use admin::{parse_command, Command};
    assert_eq!(parse_command(b"HEALTH"), Ok(Command::Health));
    assert_eq!(
        parse_command(b"PUT-WARRANTS 12"),
        Ok(Command::PutWarrants(12))
    );
    assert!(parse_command(b"PUT-WARRANTS 99999999999").is_err());
    assert!(parse_command(b"PUT-WARRANTS x").is_err());
    assert!(parse_command(b"health").is_err());
}
