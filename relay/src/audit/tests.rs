//! Tests of the audit chain: writing, rotation, resume, verification and tampering.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, SigningKey};
use hopguard_policy::{PolicySource, VerifyMethod};

use super::entry::{line_hash, Entry, GENESIS_PREV};
use super::*;
use crate::evidence::{Direction, HopRecord, Outcome, TlsFacts};

pub(super) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

pub(super) fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

pub(super) fn config(dir: &Path, every: u64) -> AuditConfig {
    AuditConfig {
        dir: dir.to_owned(),
        node_id: "mx1.example.net".into(),
        signing_key: key(),
        checkpoint_every: every,
        capacity: 64,
    }
}

pub(super) fn tls(version: &str) -> Option<TlsFacts> {
    Some(TlsFacts {
        version: version.into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        cert_sha256: Some("ab".repeat(32)),
        spki_sha256: Some("cd".repeat(32)),
    })
}

pub(super) fn hop(time: &str, direction: Direction, peer: &str, outcome: Outcome) -> HopRecord {
    HopRecord {
        time: at(time),
        direction,
        peer: peer.into(),
        remote_ip: Some("192.0.2.25".parse().expect("ip")),
        remote_host: "mx.orange.example".into(),
        tls: tls("TLSv1.3"),
        verification: VerifyMethod::DaneEe,
        policy: Some(PolicySource::Dane),
        outcome,
        result_type: None,
        reply_code: Some(250),
        queue_id: Some("Q1".into()),
        message_id_hash: Some("ef".repeat(32)),
        size: Some(1234),
        recipients: 2,
        latency: None,
        policy_domain: None,
        observed: Vec::new(),
        policy_strings: Default::default(),
    }
}

const DAY1: &str = "audit-2025-03-01.jsonl";
const DAY2: &str = "audit-2025-03-02.jsonl";

/// Day 1: r1 r2 r3 checkpoint(interval) r4 checkpoint(rotation); day 2: r5 r6 (unsigned tail).
fn sample_log(dir: &Path) {
    let mut w = AuditWriter::open(&config(dir, 3), at("2025-03-01T09:00:00Z")).expect("open");
    for (i, minute) in ["10:00", "10:01", "10:02", "10:03"].iter().enumerate() {
        let time = format!("2025-03-01T{minute}:00.250Z");
        let mut h = hop(&time, Direction::Outbound, "orange", Outcome::Delivered);
        h.queue_id = Some(format!("Q{i}"));
        w.append(&h, at(&time)).expect("append");
    }
    w.flush().expect("flush");
    for time in ["2025-03-02T00:00:05Z", "2025-03-02T00:00:06Z"] {
        let h = hop(time, Direction::Inbound, "orange", Outcome::Accepted);
        w.append(&h, at(time)).expect("append");
    }
    w.flush().expect("flush");
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).expect("read");
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    fs::write(path, out).expect("write");
}

fn edit(path: PathBuf, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let mut ls = lines(&path);
    f(&mut ls);
    write_lines(&path, &ls);
}

fn failure(dir: &Path) -> VerifyFailure {
    let report = verify(dir, &key().verifying_key());
    report.failure.expect("verification must fail")
}

fn assert_at(f: &VerifyFailure, file: &str, line: u64) {
    assert_eq!(f.file.as_deref(), Some(file), "{f}");
    assert_eq!(f.line, Some(line), "{f}");
}

#[test]
fn untouched_log_verifies_across_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    let report = verify(dir.path(), &key().verifying_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.files, [DAY1, DAY2]);
    assert_eq!(report.records, 6);
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.unsigned_tail, 2);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(8)));
    assert_eq!(
        report.first_time.as_deref(),
        Some("2025-03-01T10:00:00.250Z")
    );
    assert_eq!(report.nodes, ["mx1.example.net"]);
    assert!(report.to_string().contains("chained but not yet signed"));

    let day1 = lines(&dir.path().join(DAY1));
    assert_eq!(day1.len(), 6);
    let kinds: Vec<String> = day1
        .iter()
        .map(|l| match Entry::parse(l).expect("parse") {
            Entry::Hop(_) => "hop".to_owned(),
            Entry::Checkpoint(c) => c.reason.as_str().to_owned(),
            Entry::Li(_) => "li".to_owned(),
        })
        .collect();
    assert_eq!(kinds, ["hop", "hop", "hop", "interval", "hop", "rotation"]);
    let first = Entry::parse(&day1[0]).expect("parse");
    assert_eq!(first.prev(), GENESIS_PREV);
    let day2 = lines(&dir.path().join(DAY2));
    let next = Entry::parse(&day2[0]).expect("parse");
    assert_eq!(
        next.prev(),
        line_hash(&day1[5]),
        "the chain continues across files"
    );

    let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join(DAY1)), 0o640);
}

#[test]
fn hop_line_format_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w =
        AuditWriter::open(&config(dir.path(), 100), at("2025-03-01T09:00:00Z")).expect("open");
    let mut h = hop(
        "2025-03-01T10:00:00.250Z",
        Direction::Inbound,
        "orange",
        Outcome::Refused,
    );
    h.tls = None;
    h.verification = VerifyMethod::None;
    h.policy = None;
    h.reply_code = Some(530);
    h.queue_id = None;
    h.message_id_hash = None;
    h.size = None;
    h.recipients = 0;
    w.append(&h, at("2025-03-01T10:00:01Z")).expect("append");
    w.flush().expect("flush");
    let line = String::from_utf8(lines(&dir.path().join(DAY1))[0].clone()).expect("utf8");
    assert_eq!(
        line,
        format!(
            "{{\"kind\":\"hop\",\"seq\":1,\"prev\":\"{GENESIS_PREV}\",\
             \"time\":\"2025-03-01T10:00:00.250Z\",\"node\":\"mx1.example.net\",\
             \"direction\":\"inbound\",\"peer\":\"orange\",\"remote_ip\":\"192.0.2.25\",\
             \"remote_host\":\"mx.orange.example\",\"tls\":null,\"verification\":\"none\",\
             \"policy\":null,\"outcome\":\"refused\",\"result_type\":null,\"reply_code\":530,\
             \"queue_id\":null,\"message_id_hash\":null,\"size\":null,\"recipients\":0}}"
        )
    );
}

#[test]
fn observed_policies_are_written_and_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w =
        AuditWriter::open(&config(dir.path(), 100), at("2025-03-01T09:00:00Z")).expect("open");
    let mut h = hop(
        "2025-03-01T10:00:00.250Z",
        Direction::Outbound,
        "other",
        Outcome::Delivered,
    );
    h.observed = vec![
        crate::evidence::Observed {
            source: PolicySource::MtaSts,
            result: Some(hopguard_policy::ResultType::CertificateHostMismatch),
        },
        crate::evidence::Observed {
            source: PolicySource::Charter,
            result: None,
        },
    ];
    w.append(&h, at("2025-03-01T10:00:01Z")).expect("append");
    w.flush().expect("flush");
    let line = String::from_utf8(lines(&dir.path().join(DAY1))[0].clone()).expect("utf8");
    assert!(
        line.ends_with(
            ",\"observed\":[{\"policy\":\"mta-sts\",\"result_type\":\"certificate-host-mismatch\"},\
             {\"policy\":\"charter\",\"result_type\":null}]}"
        ),
        "{line}"
    );
    let parsed = Entry::parse(line.as_bytes()).expect("parse");
    assert!(matches!(parsed, Entry::Hop(e) if e.observed.len() == 2));
    let report = verify(dir.path(), &key().verifying_key());
    assert!(report.failure.is_none(), "{:?}", report.failure);
}

#[test]
fn flipped_byte_is_detected_at_the_next_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    edit(dir.path().join(DAY1), |ls| {
        let text = String::from_utf8(ls[1].clone()).expect("utf8");
        ls[1] = text.replacen("\"Q1\"", "\"Q9\"", 1).into_bytes();
    });
    let f = failure(dir.path());
    assert_at(&f, DAY1, 3);
    assert_eq!(f.seq, Some(3));
    assert!(f.to_string().contains("hash chain broken"), "{f}");
    assert!(f.to_string().contains("line 2"), "{f}");
}

#[test]
fn flipped_byte_breaking_json_is_detected_on_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    edit(dir.path().join(DAY1), |ls| ls[2][0] ^= 0x01);
    let f = failure(dir.path());
    assert_at(&f, DAY1, 3);
    assert!(matches!(f.problem, Problem::NotJson(_)), "{f}");
}

#[test]
fn deleted_record_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    edit(dir.path().join(DAY1), |ls| {
        ls.remove(1);
    });
    let f = failure(dir.path());
    assert_at(&f, DAY1, 2);
    assert!(
        f.to_string().contains("edited, deleted or reordered"),
        "{f}"
    );
}

#[test]
fn swapped_records_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    edit(dir.path().join(DAY1), |ls| ls.swap(1, 2));
    let f = failure(dir.path());
    assert_at(&f, DAY1, 2);
    assert!(matches!(f.problem, Problem::ChainBroken { .. }), "{f}");
}

#[test]
fn truncated_file_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    edit(dir.path().join(DAY1), |ls| ls.truncate(4));
    let f = failure(dir.path());
    assert_at(&f, DAY1, 4);
    assert_eq!(f.problem, Problem::MissingRotationCheckpoint);
    assert!(f.to_string().contains("truncated"), "{f}");
}

#[test]
fn half_a_last_line_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    let path = dir.path().join(DAY2);
    let bytes = fs::read(&path).expect("read");
    let last_start = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .expect("two lines")
        + 1;
    let cut = last_start + (bytes.len() - last_start) / 2;
    fs::write(&path, &bytes[..cut]).expect("write");
    let f = failure(dir.path());
    assert_at(&f, DAY2, 2);
    assert_eq!(f.problem, Problem::PartialLine);
    // The writer refuses to resume on it rather than fork the chain.
    let err = AuditWriter::open(&config(dir.path(), 3), at("2025-03-02T01:00:00Z"))
        .err()
        .expect("refuses");
    assert!(matches!(err, AuditError::Damaged { line: 2, .. }), "{err}");
    assert!(err.to_string().contains(DAY2), "{err}");
}

#[test]
fn replaced_signature_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    let forged = hex::encode(key().sign(b"something else").to_bytes());
    edit(dir.path().join(DAY1), |ls| {
        let Entry::Checkpoint(c) = Entry::parse(&ls[3]).expect("parse") else {
            panic!("line 4 is a checkpoint");
        };
        let text = String::from_utf8(ls[3].clone()).expect("utf8");
        ls[3] = text.replace(&c.sig, &forged).into_bytes();
    });
    let f = failure(dir.path());
    assert_at(&f, DAY1, 4);
    assert_eq!(f.problem, Problem::SignatureInvalid);
    assert!(f.to_string().contains("signature invalid"), "{f}");
}

#[test]
fn wrong_public_key_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    let other = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
    let report = verify(dir.path(), &other);
    let f = report.failure.expect("fails");
    assert_at(&f, DAY1, 4);
    assert!(matches!(f.problem, Problem::WrongKey { .. }), "{f}");
    assert!(f.to_string().contains("signature invalid"), "{f}");
}

#[test]
fn empty_directory_does_not_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = verify(dir.path(), &key().verifying_key());
    assert_eq!(report.failure.expect("fails").problem, Problem::NoFiles);
}

#[test]
fn resume_after_clean_stop_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = "2025-03-01T10:00:00Z";
    let mut w = AuditWriter::open(&config(dir.path(), 10), at(t)).expect("open");
    for _ in 0..2 {
        w.append(
            &hop(t, Direction::Outbound, "orange", Outcome::Delivered),
            at(t),
        )
        .expect("append");
    }
    w.close(at(t)).expect("close");
    let mut w = AuditWriter::open(&config(dir.path(), 10), at(t)).expect("reopen");
    assert_eq!(w.next_seq(), 4, "2 records + shutdown checkpoint");
    w.append(
        &hop(t, Direction::Inbound, "orange", Outcome::Accepted),
        at(t),
    )
    .expect("append");
    w.close(at(t)).expect("close");
    let report = verify(dir.path(), &key().verifying_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.checkpoints), (3, 2));
    assert_eq!(report.unsigned_tail, 0);
}

#[test]
fn resume_after_crash_signs_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = "2025-03-01T10:00:00Z";
    let mut w = AuditWriter::open(&config(dir.path(), 10), at(t)).expect("open");
    w.append(
        &hop(t, Direction::Outbound, "orange", Outcome::Delivered),
        at(t),
    )
    .expect("append");
    w.flush().expect("flush");
    drop(w); // no shutdown checkpoint
    let later = "2025-03-02T08:00:00Z";
    let mut w = AuditWriter::open(&config(dir.path(), 10), at(later)).expect("reopen");
    w.append(
        &hop(later, Direction::Outbound, "orange", Outcome::Delivered),
        at(later),
    )
    .expect("append");
    w.close(at(later)).expect("close");
    let report = verify(dir.path(), &key().verifying_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.files, [DAY1, DAY2], "the new day opened a new file");
    assert_eq!(
        (report.records, report.checkpoints, report.unsigned_tail),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn handle_writes_in_the_background_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = AuditLog::start(config(dir.path(), 2)).expect("start");
    let clone = handle.clone();
    let now = Utc::now().to_rfc3339();
    for _ in 0..5 {
        clone.record(&hop(
            &now,
            Direction::Outbound,
            "orange",
            Outcome::Delivered,
        ));
    }
    assert!(handle.healthy());
    handle.shutdown().await.expect("shutdown");
    let report = verify(dir.path(), &key().verifying_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, 5);
    assert_eq!(report.unsigned_tail, 0);
    // After shutdown the remaining clone can only drop.
    clone.record(&hop(
        &now,
        Direction::Outbound,
        "orange",
        Outcome::Delivered,
    ));
    assert_eq!(clone.dropped(), 1);
    assert!(!clone.healthy());
}

#[test]
fn start_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path(), 0);
    assert!(matches!(
        AuditLog::start(c.clone()),
        Err(AuditError::Config(_))
    ));
    c.checkpoint_every = 1;
    c.node_id = "mx 1\n".into();
    assert!(matches!(AuditLog::start(c), Err(AuditError::Config(_))));
}

#[test]
fn message_id_hash_is_keyed_and_normalised() {
    let k1 = b"0123456789abcdef0123456789abcdef";
    let k2 = b"fedcba9876543210fedcba9876543210";
    let h = message_id_hash(k1, "<abc.123@Mail.Example.COM>");
    assert_eq!(h.len(), 64);
    assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(h, message_id_hash(k2, "<abc.123@Mail.Example.COM>"));
    assert_eq!(h, message_id_hash(k1, "  abc.123@mail.example.com \r\n"));
    assert_eq!(h, message_id_hash(k1, "< abc.123@mail.example.com >"));
    assert_ne!(
        h,
        message_id_hash(k1, "<ABC.123@mail.example.com>"),
        "local part keeps case"
    );
}

#[test]
fn keys_round_trip_with_safe_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = generate_keypair(dir.path()).expect("keygen");
    let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    let signing = load_signing_key(&private).expect("private");
    let verifying = load_verifying_key(&public).expect("public");
    assert_eq!(signing.verifying_key(), verifying);
    assert!(fs::read_to_string(&private)
        .expect("pem")
        .starts_with("-----BEGIN PRIVATE KEY"));
    assert!(matches!(
        generate_keypair(dir.path()),
        Err(AuditError::KeyExists(_))
    ));
    assert!(matches!(
        load_verifying_key(&private),
        Err(AuditError::PublicKey { .. })
    ));

    let mid = generate_message_id_key(dir.path()).expect("message-id key");
    assert_eq!(mode(&mid), 0o600);
    assert_eq!(load_message_id_key(&mid).expect("load").len(), 32);
    fs::write(&mid, "not hex").expect("write");
    assert!(matches!(
        load_message_id_key(&mid),
        Err(AuditError::MessageIdKey { .. })
    ));
}

#[test]
fn lines_with_unknown_or_missing_fields_are_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_log(dir.path());
    let first = String::from_utf8(lines(&dir.path().join(DAY1))[0].clone()).expect("utf8");
    assert!(Entry::parse(first.as_bytes()).is_ok());
    let extra = first.replacen("\"recipients\":2", "\"recipients\":2,\"subject\":\"x\"", 1);
    assert!(Entry::parse(extra.as_bytes()).is_err(), "unknown field");
    let missing = first.replacen(",\"size\":1234", "", 1);
    assert_ne!(missing, first);
    assert!(
        Entry::parse(missing.as_bytes()).is_err(),
        "missing nullable field"
    );
    let bad_outcome = first.replacen("\"delivered\"", "\"lost\"", 1);
    assert!(
        Entry::parse(bad_outcome.as_bytes()).is_err(),
        "unknown outcome"
    );
}

#[test]
fn idle_writer_rotates_at_midnight_without_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = "2025-03-01T23:59:00Z";
    let mut w = AuditWriter::open(&config(dir.path(), 10), at(t)).expect("open");
    w.append(
        &hop(t, Direction::Outbound, "orange", Outcome::Delivered),
        at(t),
    )
    .expect("append");
    w.tick(at("2025-03-02T00:00:01Z")).expect("tick");
    let report = verify(dir.path(), &key().verifying_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.checkpoints, report.unsigned_tail), (1, 0));
    assert_eq!(
        report.files,
        [DAY1],
        "the next file waits for its first line"
    );
    w.append(
        &hop(t, Direction::Outbound, "orange", Outcome::Delivered),
        at("2025-03-02T00:00:02Z"),
    )
    .expect("append");
    w.close(at("2025-03-02T00:00:03Z")).expect("close");
    let report = verify(dir.path(), &key().verifying_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.files, [DAY1, DAY2]);
}

#[test]
fn cli_commands_keygen_verify_and_report() {
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    cli::cmd_keygen(keys_dir.path()).expect("keygen");
    let private = keys_dir.path().join(keys::PRIVATE_KEY_FILE);
    let public = keys_dir.path().join(keys::PUBLIC_KEY_FILE);
    assert!(keys_dir.path().join(keys::MESSAGE_ID_KEY_FILE).exists());
    let mut c = config(logs.path(), 2);
    c.signing_key = load_signing_key(&private).expect("key");
    let mut w = AuditWriter::open(&c, at("2025-03-01T10:00:00Z")).expect("open");
    for _ in 0..3 {
        let h = hop(
            "2025-03-01T10:00:00Z",
            Direction::Outbound,
            "orange",
            Outcome::Delivered,
        );
        w.append(&h, h.time).expect("append");
    }
    w.close(at("2025-03-01T10:00:01Z")).expect("close");
    assert!(cli::cmd_verify(logs.path(), &public).expect("verify"));
    let out = logs.path().join("report.html");
    cli::cmd_report(
        logs.path(),
        "2025-03-01",
        "2025-03-01",
        "html",
        Some(&public),
        Some(&out),
    )
    .expect("report");
    assert!(fs::read_to_string(&out)
        .expect("html")
        .contains("Audit log verified"));
    assert!(cli::cmd_report(logs.path(), "2025-03-02", "2025-03-01", "csv", None, None).is_err());
    assert!(cli::cmd_report(logs.path(), "1 March", "2025-03-01", "csv", None, None).is_err());
    assert!(cli::cmd_report(logs.path(), "2025-03-01", "2025-03-01", "pdf", None, None).is_err());
    cli::cmd_report(logs.path(), "2025-03-01", "2025-03-01", "json", None, None).expect("json");

    edit(logs.path().join(DAY1), |ls| {
        ls.remove(0);
    });
    assert!(!cli::cmd_verify(logs.path(), &public).expect("verify runs"));
}

#[test]
fn handle_is_clone_send_sync() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<AuditHandle>();
}
