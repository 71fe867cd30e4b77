//! `hopguard audit keygen|verify|report`: the operator and regulator commands (called by the
//! relay's cli.rs; they print to stdout).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use chrono::NaiveDate;

use super::keys::{self, MESSAGE_ID_KEY_FILE};
use super::render::{render_csv, render_html, render_json};
use super::report::report;
use super::verify::verify;
use super::AuditError;

/// Writes a new audit key pair into `dir` (created if absent), and a Message-ID hash key if
/// there is none yet. Never overwrites a key.
pub fn cmd_keygen(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (private, public) = keys::generate_keypair(dir)?;
    println!(
        "audit signing key:   {} (keep on this node, mode 0600)",
        private.display()
    );
    println!(
        "audit public key:    {} (give to verifiers)",
        public.display()
    );
    match keys::generate_message_id_key(dir) {
        Ok(path) => println!(
            "Message-ID hash key: {} (keep secret; needed to look up a Message-ID)",
            path.display()
        ),
        Err(AuditError::KeyExists(path)) => println!(
            "Message-ID hash key: {} exists, kept (changing it breaks look-ups of older records)",
            path.display()
        ),
        Err(e) => return Err(e).context(format!("writing {MESSAGE_ID_KEY_FILE}")),
    }
    Ok(())
}

/// Verifies the audit files in `dir` with the public key at `pubkey` and prints the result.
/// Returns false when the log does not verify.
pub fn cmd_verify(dir: &Path, pubkey: &Path) -> anyhow::Result<bool> {
    let key = keys::load_verifying_key(pubkey)?;
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let result = verify(dir, &key);
    print!("{}: {result}", dir.display());
    Ok(result.is_ok())
}

/// Writes the report for the UTC days `from..=to` (`YYYY-MM-DD`) in `format` (`json`, `csv`
/// or `html`) to `out`, or to stdout. With `pubkey` the period's files are verified with
/// signatures, without it chain only (the report says which).
pub fn cmd_report(
    audit_dir: &Path,
    from: &str,
    to: &str,
    format: &str,
    pubkey: Option<&Path>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let from_day = parse_day(from)?;
    let to_day = parse_day(to)?;
    if to_day < from_day {
        bail!("--to {to} is before --from {from}");
    }
    if !["json", "csv", "html"].contains(&format) {
        bail!("unknown report format `{format}`: use json, csv or html");
    }
    if !audit_dir.is_dir() {
        bail!("{}: not a directory", audit_dir.display());
    }
    let key = pubkey.map(keys::load_verifying_key).transpose()?;
    let built = report(audit_dir, from_day, to_day, key.as_ref());
    let mut text = match format {
        "json" => render_json(&built)?,
        "csv" => render_csv(&built),
        _ => render_html(&built),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if !built.verification.is_ok() {
        eprintln!(
            "warning: the audit log for this period does not verify: {}",
            built
                .verification
                .failure
                .as_ref()
                .map_or_else(String::new, |f| f.to_string())
        );
    }
    match out {
        Some(path) => {
            fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("report written to {}", path.display());
        }
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("writing the report to stdout")?,
    }
    Ok(())
}

fn parse_day(text: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("`{text}` is not a date (YYYY-MM-DD)"))
}
