//! Lawful interception end to end (issue 6), through the relay binary: a warrant on the
//! sender yields a copy in the root-only handover directory (IRI + byte-identical CC of the
//! spooled message); the message delivered to the next hop carries no trace of it; the relay's
//! log, its /metrics and the hop audit log never mention the LIID or the target; the LI audit
//! log verifies with `hopguard audit verify`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hopguard_integration::hopguard::{binary, run_cli};
use hopguard_integration::mail::headers;
use hopguard_integration::world::{marker, World, TLS_PEER};
use hopguard_integration::{read_lossy, wait_until};

const LIID: &str = "LEA-TEST-2026-0007";
const TARGET: &str = "suspect@origin.test";

fn grep_dir(dir: &std::path::Path, needle: &str) -> Result<bool> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_file() && read_lossy(&p).contains(needle) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn warrant_copies_are_handed_over_and_invisible_elsewhere() -> Result<()> {
    let w = World::start()?;
    let mut cfg = w.relay_config();
    let bin = binary()?;
    let li = w.dir.sub("li")?;
    let keys = w.dir.sub("keys")?;
    let li_keys = w.dir.sub("li-keys")?;
    for d in [&keys, &li_keys] {
        let out = run_cli(&bin, &["audit", "keygen", &d.display().to_string()])?;
        ensure!(out.status.success(), "keygen: {out:?}");
    }
    let warrants = li.join("warrants.yaml");
    std::fs::write(
        &warrants,
        format!(
            "warrants:\n  - liid: {LIID}\n    authority: Test court\n    targets: [\"{TARGET}\"]\n    direction: sent\n    valid_from: 2020-01-01T00:00:00Z\n    valid_until: 2099-01-01T00:00:00Z\n    product: iri+cc\n"
        ),
    )?;
    std::fs::set_permissions(&warrants, std::fs::Permissions::from_mode(0o600))?;
    let hop_audit = w.dir.path().join("hop-audit");
    let handover = li.join("out");
    cfg.extra = format!(
        "audit:\n  dir: \"{}\"\n  key_file: \"{}\"\nintercept:\n  enabled: true\n  warrants_file: \"{}\"\n  spool_dir: \"{}\"\n  audit_dir: \"{}\"\n  audit_key_file: \"{}\"\n  handover:\n    directory: \"{}\"\n",
        hop_audit.display(),
        keys.join("audit-key.pem").display(),
        warrants.display(),
        li.join("spool").display(),
        li.join("audit").display(),
        li_keys.join("audit-key.pem").display(),
        handover.display(),
    );
    let mut hg = w.start_relay(&cfg)?;
    let metrics_addr = cfg.metrics.context("metrics address")?;

    // One message from the target, one from someone else.
    let m_target = marker("li-target");
    let out = w.submit(TARGET, &format!("a@{TLS_PEER}"), &m_target)?;
    ensure!(out.success(), "{}", out.output);
    let m_other = marker("li-other");
    let out = w.submit("someone@origin.test", &format!("a@{TLS_PEER}"), &m_other)?;
    ensure!(out.success(), "{}", out.output);
    let got_target = w
        .tls_peer
        .wait_for_message(|m| m.contains(&m_target), Duration::from_secs(60))?;
    let got_other = w
        .tls_peer
        .wait_for_message(|m| m.contains(&m_other), Duration::from_secs(60))?;

    // Exactly one copy, for the target's message, with IRI and CC.
    let copy = wait_until("the intercepted copy", Duration::from_secs(30), || {
        let files: Vec<_> = std::fs::read_dir(&handover)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "li"))
            .collect();
        Ok((!files.is_empty()).then_some(files))
    })
    .with_context(|| hg.log())?;
    ensure!(copy.len() == 1, "exactly one copy expected, got {copy:?}");
    let bytes = std::fs::read(&copy[0])?;
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .context("no IRI line")?;
    let iri: serde_json::Value = serde_json::from_slice(&bytes[..nl])?;
    ensure!(
        iri["liid"] == LIID && iri["product"] == "iri+cc",
        "IRI: {iri}"
    );
    let rest = &bytes[nl + 1..];
    let cc_nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .context("no CC line")?;
    let cc_head = std::str::from_utf8(&rest[..cc_nl])?;
    let len: usize = cc_head
        .strip_prefix("CC ")
        .context("CC line")?
        .trim()
        .parse()?;
    let cc = &rest[cc_nl + 1..cc_nl + 1 + len];
    let cc_text = String::from_utf8_lossy(cc).replace("\r\n", "\n");
    ensure!(
        cc_text.contains(&m_target),
        "CC is not the intercepted message"
    );
    // The delivered message ends with exactly the spooled message (the peer only prepends its
    // own trace headers; maildir stores LF line ends).
    ensure!(
        got_target.ends_with(&cc_text),
        "the delivered message differs from the CC:\n{got_target}\n---\n{cc_text}"
    );

    // No trace at the next hop: intercepted and ordinary messages carry the same header names.
    let names = |m: &str| {
        headers(m)
            .into_iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    ensure!(
        names(&got_target) == names(&got_other),
        "header sets differ:\n{got_target}\n---\n{got_other}"
    );
    ensure!(!got_target.contains(LIID), "the LIID reached the next hop");

    // Nothing in the ordinary log, the metrics or the hop audit log.
    let text = hopguard_integration::scrape_metrics(metrics_addr)?;
    hg.terminate()?;
    let log = hg.log();
    for needle in [LIID, TARGET, "Test court"] {
        ensure!(!log.contains(needle), "hopguard.log mentions {needle}");
        ensure!(!text.contains(needle), "/metrics mentions {needle}");
        ensure!(
            !grep_dir(&hop_audit, needle)?,
            "the hop audit log mentions {needle}"
        );
    }

    // The LI audit log verifies with the same tool as the hop audit log.
    let out = run_cli(
        &bin,
        &[
            "audit",
            "verify",
            &li.join("audit").display().to_string(),
            "--pubkey",
            &li_keys.join("audit-key.pub.pem").display().to_string(),
        ],
    )?;
    ensure!(out.status.success(), "LI audit verify failed: {out:?}");
    ensure!(
        grep_dir(&li.join("audit"), LIID)?,
        "the LI audit log records the LIID"
    );
    ensure!(
        !grep_dir(&li.join("audit"), TARGET)?,
        "the LI audit log must not hold the target address"
    );
    Ok(())
}
