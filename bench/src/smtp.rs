//! Minimal SMTP reply reading for the load generator.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest reply line accepted.
const MAX_LINE: usize = 4096;

/// Reads one (possibly multi-line) reply; returns its code and the last line.
pub async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<(u16, String)> {
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .await
            .context("reading reply")?;
        if n == 0 {
            bail!("connection closed while waiting for a reply");
        }
        if line.len() > MAX_LINE || line.len() < 4 {
            bail!("bad reply line {:?}", String::from_utf8_lossy(&line));
        }
        let code: u16 = std::str::from_utf8(&line[..3])
            .ok()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad reply {:?}", String::from_utf8_lossy(&line)))?;
        if line[3] != b'-' {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            return Ok((code, text));
        }
    }
}

/// Reads one reply and fails unless its code is `want`.
pub async fn expect<R: AsyncBufRead + Unpin>(r: &mut R, want: u16, what: &str) -> Result<()> {
    let (code, text) = read_reply(r).await?;
    if code != want {
        bail!("{what}: expected {want}, got {text:?}");
    }
    Ok(())
}
