//! Retries of failed `https:` TLS-RPT submissions (RFC 8460 §5.4).
//!
//! A POST that fails (no connection, a certificate that does not verify, a non-2xx answer)
//! leaves a small JSON file in `spool_dir/tlsrpt/retry/`: the day, the policy domain, the URL,
//! the attempts so far and when to try next. The running relay looks every minute (or every
//! `tlsrpt.retry_after` if shorter); a due report is rebuilt from the day's stored counts (the
//! same report: its `report-id` is the day, the domain and the submitter) and POSTed again.
//! Waits double from `tlsrpt.retry_after` up to 4 hours; a report still failing
//! `tlsrpt.give_up_after` after its first failure is dropped, with a warning. Files are written
//! whole (temporary name, rename) but not fsynced: a crash can lose a retry, never mail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(4 * 3600);

/// One report waiting for another POST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPost {
    pub day: String,
    pub domain: String,
    pub url: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Unix time of the first failure.
    pub first_failure: i64,
    /// Unix time of the next attempt.
    pub next_attempt: i64,
    pub last_error: String,
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time.
    RetryAt(i64),
    /// Past `give_up_after`: drop it.
    GiveUp,
}

/// The wait after `attempts` failures: `base`, doubling, at most 4 hours.
pub fn backoff(attempts: u32, base: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(MAX_WAIT.max(base))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The decision after a failure at `now` (pure).
pub fn after_failure(p: &PendingPost, now: i64, base: Duration, give_up: Duration) -> AfterFailure {
    let next = now.saturating_add(secs(backoff(p.attempts, base)));
    if next.saturating_sub(p.first_failure) > secs(give_up) {
        AfterFailure::GiveUp
    } else {
        AfterFailure::RetryAt(next)
    }
}

pub fn dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("tlsrpt").join("retry")
}

/// Only names we write are read back: a day, a DNS name, a hash.
fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && !s.starts_with('.')
}

fn file_name(day: &str, domain: &str, url: &str) -> Option<String> {
    if !safe(day) || !safe(domain) {
        return None;
    }
    let h = |s: &str| hex::encode(&sha2::Sha256::digest(s.as_bytes())[..8]);
    let name = format!("{day}_{domain}_{}.json", h(url));
    // A long domain (up to 253 characters) does not fit a file name with the rest: hashed.
    Some(if name.len() <= 200 {
        name
    } else {
        format!("{day}_{}_{}.json", h(domain), h(url))
    })
}

fn write(path: &Path, p: &PendingPost) -> std::io::Result<()> {
    // Unique per writer: the daily run and the retry loop may write the same report's file.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
    let json = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Records the first failure of the POST of (`day`, `domain`) to `url`: due again after
/// `base`. A report already waiting keeps its history (a second `tlsrpt send` of the same day).
pub fn record_failure(
    spool_dir: &Path,
    day: &str,
    domain: &str,
    url: &str,
    error: &str,
    now: i64,
    base: Duration,
) -> std::io::Result<()> {
    let Some(name) = file_name(day, domain, url) else {
        return Err(std::io::Error::other(
            "not a day and domain a report file can name",
        ));
    };
    let d = dir(spool_dir);
    std::fs::create_dir_all(&d)?;
    let path = d.join(name);
    if let Some(mut p) = read(&path) {
        p.last_error = error.to_string();
        return write(&path, &p);
    }
    write(
        &path,
        &PendingPost {
            day: day.to_string(),
            domain: domain.to_string(),
            url: url.to_string(),
            attempts: 1,
            first_failure: now,
            next_attempt: now.saturating_add(secs(backoff(1, base))),
            last_error: error.to_string(),
        },
    )
}

fn read(path: &Path) -> Option<PendingPost> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Forgets a waiting report (its POST has just succeeded elsewhere, e.g. `tlsrpt send`).
pub fn forget(spool_dir: &Path, day: &str, domain: &str, url: &str) {
    if let Some(name) = file_name(day, domain, url) {
        let _ = std::fs::remove_file(dir(spool_dir).join(name));
    }
}

/// Every waiting report due at `now`, with its file. An unreadable file is dropped (logged).
pub fn due(spool_dir: &Path, now: i64) -> Vec<(PathBuf, PendingPost)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir(spool_dir)) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match read(&path) {
            Some(p)
                if file_name(&p.day, &p.domain, &p.url).as_deref()
                    == path.file_name().and_then(|n| n.to_str()) =>
            {
                if p.next_attempt <= now {
                    out.push((path, p));
                }
            }
            _ => {
                tracing::warn!(file = %path.display(), "unreadable TLS-RPT retry file dropped");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out.sort_by_key(|(_, p)| p.next_attempt);
    out
}

/// After another failed attempt: reschedules, or drops the report past `give_up`. Returns
/// whether it was dropped.
pub fn failed_again(
    path: &Path,
    mut p: PendingPost,
    error: &str,
    now: i64,
    base: Duration,
    give_up: Duration,
) -> bool {
    p.attempts = p.attempts.saturating_add(1);
    p.last_error = error.to_string();
    match after_failure(&p, now, base, give_up) {
        AfterFailure::GiveUp => {
            let _ = std::fs::remove_file(path);
            true
        }
        AfterFailure::RetryAt(t) => {
            p.next_attempt = t;
            if let Err(e) = write(path, &p) {
                // Left as it was, it would be due again at every round: dropped instead.
                tracing::warn!(file = %path.display(), error = %e, "cannot reschedule a TLS-RPT retry; dropped");
                let _ = std::fs::remove_file(path);
                return true;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_four_hours_and_stop_after_the_give_up_time() {
        let m = Duration::from_secs(60);
        assert_eq!(backoff(1, m), m);
        assert_eq!(backoff(2, m), 2 * m);
        assert_eq!(backoff(4, m), 8 * m);
        assert_eq!(backoff(30, m), MAX_WAIT);
        assert_eq!(
            backoff(u32::MAX, Duration::MAX),
            Duration::MAX,
            "no overflow"
        );
        let p = PendingPost {
            day: "2026-11-25".into(),
            domain: "a.test".into(),
            url: "https://r.test/x".into(),
            attempts: 3,
            first_failure: 1000,
            next_attempt: 0,
            last_error: String::new(),
        };
        let day = Duration::from_secs(86_400);
        assert_eq!(
            after_failure(&p, 2000, m, day),
            AfterFailure::RetryAt(2000 + 240)
        );
        assert_eq!(
            after_failure(&p, 1000 + 86_400, m, day),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn huge_durations_do_not_wrap() {
        let p = PendingPost {
            day: "2026-11-25".into(),
            domain: "a.test".into(),
            url: "https://r.test/x".into(),
            attempts: 1,
            first_failure: 1000,
            next_attempt: 0,
            last_error: String::new(),
        };
        let m = Duration::from_secs(60);
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(
            after_failure(&p, 1060, m, huge),
            AfterFailure::RetryAt(1120)
        );
        match after_failure(&p, 2000, huge, huge) {
            AfterFailure::RetryAt(t) => assert!(t > 2000, "{t}"),
            AfterFailure::GiveUp => panic!("given up"),
        }
    }

    #[test]
    fn a_long_domain_is_kept_and_a_success_elsewhere_forgets_it() {
        let d = tempfile::tempdir().unwrap();
        let domain = format!(
            "{}.{}.{}.{}.test",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(30)
        );
        assert!(crate::config::is_domain_name(&domain));
        let url = "https://r.test/v1";
        let m = Duration::from_secs(60);
        record_failure(d.path(), "2026-11-25", &domain, url, "refused", 100, m).unwrap();
        let due_now = due(d.path(), i64::MAX);
        assert_eq!(due_now.len(), 1);
        assert_eq!(due_now[0].1.domain, domain);
        forget(d.path(), "2026-11-25", &domain, url);
        assert!(due(d.path(), i64::MAX).is_empty());
    }

    #[test]
    fn failures_are_kept_rescheduled_and_dropped() {
        let d = tempfile::tempdir().unwrap();
        let m = Duration::from_secs(60);
        let url = "https://r.test/v1";
        record_failure(d.path(), "2026-11-25", "a.test", url, "refused", 100, m).unwrap();
        // A second run of the same day keeps the first failure's history.
        record_failure(d.path(), "2026-11-25", "a.test", url, "again", 130, m).unwrap();
        assert!(due(d.path(), 159).is_empty());
        let now = due(d.path(), 160);
        assert_eq!(now.len(), 1);
        let (path, p) = now[0].clone();
        assert_eq!(
            (p.attempts, p.first_failure, p.last_error.as_str()),
            (1, 100, "again")
        );
        let give_up = Duration::from_secs(3600);
        assert!(!failed_again(&path, p, "503", 160, m, give_up));
        let (path, p) = due(d.path(), 160 + 120).pop().unwrap();
        assert_eq!(p.attempts, 2);
        assert!(
            failed_again(&path, p, "503", 100 + 3600, m, give_up),
            "given up"
        );
        assert!(due(d.path(), i64::MAX).is_empty());
        // Names that are not a day and a domain are refused; strays are dropped.
        assert!(record_failure(d.path(), "../x", "a.test", url, "e", 0, m).is_err());
        std::fs::write(dir(d.path()).join("junk.json"), b"{").unwrap();
        assert!(due(d.path(), i64::MAX).is_empty());
        assert!(!dir(d.path()).join("junk.json").exists());
    }
}
