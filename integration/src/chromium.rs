//! Headless Chromium (Debian package) to render a page to PNG and read its console errors.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Renders `html` (a local file) to `png`. Fails if Chromium is missing, exits non-zero, logs a
/// console error, or writes no image.
pub fn render(html: &Path, png: &Path) -> Result<()> {
    let profile = tempfile::tempdir()?;
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--window-size=1280,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .context("running chromium (Debian package `chromium`)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("chromium failed: {}\n{stderr}", out.status);
    }
    let console_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    if !console_errors.is_empty() {
        bail!("the page logged errors: {console_errors:#?}");
    }
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    if size < 1000 {
        bail!("no screenshot written ({size} bytes)\n{stderr}");
    }
    Ok(())
}
