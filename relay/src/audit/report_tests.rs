//! Tests of reports and their renderings on a known set of hop records.

use std::path::Path;

use chrono::NaiveDate;
use hopguard_policy::{ResultType, VerifyMethod};

use super::render::CSV_HEADER;
use super::tests::{at, config, hop, key, tls};
use super::*;
use crate::evidence::{Direction, HopRecord, Outcome};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, d).expect("date")
}

/// Eight hops on 1 March, one on 3 March (outside the period 1..=1 March).
fn known_log(dir: &Path) {
    use Direction::{Inbound, Outbound};
    let t = "2025-03-01T12:00:00Z";
    let plain = |mut h: HopRecord| {
        h.tls = None;
        h.verification = VerifyMethod::None;
        h
    };
    let hops = [
        hop(t, Inbound, "orange", Outcome::Accepted),
        {
            let mut h = hop(t, Inbound, "orange", Outcome::Accepted);
            h.tls = tls("TLSv1.2");
            h
        },
        {
            let mut h = plain(hop(
                "2025-03-01T12:05:00Z",
                Inbound,
                "orange",
                Outcome::Refused,
            ));
            h.reply_code = Some(530);
            h.queue_id = None;
            h.remote_host = "<evil>".into();
            h
        },
        hop(t, Outbound, "orange", Outcome::Delivered),
        {
            let mut h = hop(t, Outbound, "orange", Outcome::Delivered);
            h.verification = VerifyMethod::MtaSts;
            h
        },
        {
            let mut h = hop(t, Outbound, "orange", Outcome::Deferred);
            h.verification = VerifyMethod::None;
            h.result_type = Some(ResultType::CertificateExpired);
            h.reply_code = None;
            h
        },
        plain(hop(
            "2025-03-01T12:10:00Z",
            Outbound,
            "other",
            Outcome::Delivered,
        )),
        plain(hop(
            "2025-03-01T12:01:00Z",
            Inbound,
            "other",
            Outcome::Accepted,
        )),
    ];
    let mut w = AuditWriter::open(&config(dir, 4), at("2025-03-01T11:00:00Z")).expect("open");
    for h in &hops {
        w.append(h, h.time).expect("append");
    }
    let late = hop("2025-03-03T09:00:00Z", Inbound, "orange", Outcome::Accepted);
    w.append(&late, late.time).expect("append");
    w.close(late.time).expect("close");
}

#[test]
fn report_counts_shares_and_plaintext_hops() {
    let dir = tempfile::tempdir().expect("tempdir");
    known_log(dir.path());
    let vk = key().verifying_key();
    let r = report(dir.path(), day(1), day(1), Some(&vk));
    assert!(r.verification.is_ok(), "{}", r.verification);
    assert!(r.verification.signatures_checked);
    assert_eq!(r.hop_events, 8, "the 3 March record is outside the period");
    assert_eq!(r.nodes, ["mx1.example.net"]);
    let keys: Vec<(&str, &str)> = r
        .peers
        .iter()
        .map(|s| (s.peer.as_str(), s.direction.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("orange", "inbound"),
            ("orange", "outbound"),
            ("other", "inbound"),
            ("other", "outbound")
        ]
    );
    let oin = &r.peers[0];
    // The 530 refusal moved no mail: it is not a plaintext hop (its reply code is kept).
    assert_eq!(
        (oin.hop_events, oin.messages, oin.encrypted, oin.plaintext),
        (3, 2, 2, 0)
    );
    assert_eq!(oin.share_encrypted, Some(1.0));
    assert_eq!(oin.share_authenticated, None);
    assert_eq!(oin.tls_versions.get("TLSv1.2"), Some(&1));
    assert_eq!(oin.tls_versions.get("none"), Some(&1));
    let oout = &r.peers[1];
    assert_eq!((oout.hop_events, oout.messages, oout.encrypted), (3, 2, 2));
    assert_eq!(
        (oout.authenticated, oout.share_authenticated),
        (2, Some(1.0))
    );
    assert_eq!(oout.by_method.get("dane-ee"), Some(&1));
    assert_eq!(oout.by_method.get("mta-sts"), Some(&1));
    assert_eq!(oout.failures.get("certificate-expired"), Some(&1));
    let xout = &r.peers[3];
    assert!(!xout.charter);
    assert_eq!((xout.messages, xout.share_authenticated), (1, Some(0.0)));
    assert_eq!(xout.share_encrypted, Some(0.0));

    let listed: Vec<(&str, &str, bool)> = r
        .plaintext
        .iter()
        .map(|p| (p.time.as_str(), p.peer.as_str(), p.charter))
        .collect();
    assert_eq!(
        listed,
        [
            ("2025-03-01T12:01:00.000Z", "other", false),
            ("2025-03-01T12:10:00.000Z", "other", false)
        ]
    );
    assert_eq!(r.plaintext[0].outcome, "accepted");
    assert_eq!(r.plaintext[1].outcome, "delivered");
}

#[test]
fn csv_has_the_header_and_one_row_per_peer_and_direction() {
    let dir = tempfile::tempdir().expect("tempdir");
    known_log(dir.path());
    let r = report(dir.path(), day(1), day(1), Some(&key().verifying_key()));
    let csv = render_csv(&r);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], CSV_HEADER);
    assert_eq!(rows[0].split(',').count(), rows[2].split(',').count());
    assert_eq!(
        rows[2],
        "orange,outbound,true,3,2,2,1.0000,2,1.0000,1,0,1,0,0,0,3,0,0,0,1,\
         certificate-expired:1,yes"
    );
    assert_eq!(
        rows[3],
        "other,inbound,false,1,1,0,0.0000,0,,0,0,0,0,0,0,0,0,0,1,0,,yes"
    );
}

#[test]
fn html_is_self_contained_and_states_the_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    known_log(dir.path());
    let r = report(dir.path(), day(1), day(1), Some(&key().verifying_key()));
    let html = render_html(&r);
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script") && !html.contains("src="));
    assert!(html.contains("Audit log verified: chain and signatures"));
    assert!(html.contains("2025-03-01 to 2025-03-01"));
    assert!(html.contains("mx1.example.net"));
    assert!(html.contains("<svg"));
    assert!(
        !html.contains("&lt;evil&gt;") && !html.contains("<evil>"),
        "a refused hop is not listed as a plaintext hop"
    );

    // A charter peer's message accepted without TLS is listed and flagged, its host escaped.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut h = hop(
        "2025-03-01T12:00:00Z",
        Direction::Inbound,
        "orange",
        Outcome::Accepted,
    );
    h.tls = None;
    h.verification = VerifyMethod::None;
    h.remote_host = "<evil>".into();
    let mut w =
        AuditWriter::open(&config(dir2.path(), 4), at("2025-03-01T11:00:00Z")).expect("open");
    w.append(&h, h.time).expect("append");
    w.close(h.time).expect("close");
    let r2 = report(dir2.path(), day(1), day(1), Some(&key().verifying_key()));
    let html2 = render_html(&r2);
    assert!(
        html2.contains("class=\"charter\""),
        "charter plaintext hop flagged"
    );
    assert!(
        html2.contains("&lt;evil&gt;") && !html2.contains("<evil>"),
        "escaped"
    );

    let json = render_json(&r).expect("json");
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    assert_eq!(value["peers"][1]["messages"], 2);
    assert_eq!(value["verification"]["failure"], serde_json::Value::Null);
}

#[test]
fn report_without_key_is_chain_only_and_a_tampered_period_is_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    known_log(dir.path());
    let r = report(dir.path(), day(1), day(1), None);
    assert!(r.verification.is_ok());
    assert!(!r.verification.signatures_checked);
    assert!(render_html(&r).contains("chain only"));

    let path = dir.path().join("audit-2025-03-01.jsonl");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replacen("\"orange\"", "\"apple\"", 1)).expect("write");
    let r = report(dir.path(), day(1), day(1), Some(&key().verifying_key()));
    let failure = r.verification.failure.as_ref().expect("tampering detected");
    assert_eq!(failure.line, Some(2));
    assert!(render_html(&r).contains("verification FAILED"));
    assert!(render_csv(&r).lines().nth(1).expect("row").ends_with(",no"));
}

#[test]
fn a_hop_written_after_midnight_counts_for_its_own_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w =
        AuditWriter::open(&config(dir.path(), 10), at("2025-03-01T23:00:00Z")).expect("open");
    let h = hop(
        "2025-03-01T23:59:59.900Z",
        Direction::Outbound,
        "orange",
        Outcome::Delivered,
    );
    w.append(&h, at("2025-03-02T00:00:00.100Z"))
        .expect("append");
    w.close(at("2025-03-02T00:00:01Z")).expect("close");
    let r = report(dir.path(), day(1), day(1), Some(&key().verifying_key()));
    assert!(r.verification.is_ok(), "{}", r.verification);
    assert_eq!(r.hop_events, 1);
    assert_eq!(r.verification.files, ["audit-2025-03-02.jsonl"]);
    let r = report(dir.path(), day(5), day(6), None);
    assert_eq!(r.hop_events, 0);
    assert_eq!(
        r.verification.failure.expect("no files").problem,
        Problem::NoFiles
    );
}
