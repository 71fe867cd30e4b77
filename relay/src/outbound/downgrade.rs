//! Downgrade memory: per destination, the strongest verified TLS seen recently. A destination
//! that was reached with DANE or PKIX and now only offers something weaker (no STARTTLS, an
//! unverifiable certificate, a weaker policy) is a suspected downgrade: with protection on
//! (default for charter peers) the weaker hop is refused — the message waits — until the memory
//! expires (`outbound.downgrade_memory`, default 30 days after the last strong hop) or an
//! operator runs `hopguard policy forget DOMAIN`.
//!
//! One small file per destination under `spool_dir/downgrade/`, read when a route is planned and
//! rewritten only when the strength changes or the last refresh is older than `REFRESH` (an
//! hour, or a tenth of a shorter memory): the memory expires between `downgrade_memory −
//! REFRESH` and `downgrade_memory` after the last strong hop, and a busy destination costs one
//! file write an hour, not one per message.

use std::path::PathBuf;
use std::time::Duration;

use hopguard_policy::{HopTls, VerifyMethod};
use serde::{Deserialize, Serialize};

/// Hop strength: 3 DANE, 2 MTA-STS/PKIX/pinned, 1 encrypted only, 0 plaintext.
pub fn achieved(method: VerifyMethod, tls: bool) -> u8 {
    match (method, tls) {
        (_, false) => 0,
        (VerifyMethod::DaneEe | VerifyMethod::DaneTa, true) => 3,
        (VerifyMethod::MtaSts | VerifyMethod::Pkix | VerifyMethod::Pinned, true) => 2,
        (VerifyMethod::None, true) => 1,
    }
}

/// The strength a plan guarantees when it succeeds.
pub fn guaranteed(plan: &HopTls) -> u8 {
    match plan {
        HopTls::Dane { .. } => 3,
        HopTls::MtaSts { .. } | HopTls::Pkix { .. } => 2,
        HopTls::Encrypt => 1,
        HopTls::Opportunistic => 0,
    }
}

pub fn name(strength: u8) -> &'static str {
    match strength {
        3 => "DANE",
        2 => "PKIX/MTA-STS",
        1 => "encryption without authentication",
        _ => "plaintext",
    }
}

/// How often the memory of a destination reached at the same strength is refreshed, seconds.
pub const REFRESH: i64 = 3600;

/// `REFRESH`, or a tenth of a shorter memory.
fn refresh(ttl: Duration) -> i64 {
    REFRESH.min(ttl.as_secs() as i64 / 10)
}

#[derive(Serialize, Deserialize)]
struct Entry {
    strength: u8,
    /// Unix seconds of the last hop at this strength.
    seen: i64,
}

pub struct DowngradeMemory {
    dir: PathBuf,
}

impl DowngradeMemory {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, domain: &str) -> Option<PathBuf> {
        crate::config::is_domain_name(domain).then(|| self.dir.join(format!("{domain}.json")))
    }

    /// The remembered strength, if not expired.
    pub fn get(&self, domain: &str, now: i64, ttl: Duration) -> Option<u8> {
        self.entry(domain, now, ttl).map(|e| e.strength)
    }

    fn entry(&self, domain: &str, now: i64, ttl: Duration) -> Option<Entry> {
        let text = std::fs::read_to_string(self.path(domain)?).ok()?;
        let e: Entry = serde_json::from_str(&text).ok()?;
        (now.saturating_sub(e.seen) < ttl.as_secs() as i64).then_some(e)
    }

    /// Records a successful hop: raises the memory, or refreshes it at the same strength.
    pub fn remember(&self, domain: &str, strength: u8, now: i64, ttl: Duration) {
        if strength < 2 {
            return; // only authenticated hops are worth protecting
        }
        match self.entry(domain, now, ttl) {
            Some(e) if e.strength > strength => return,
            Some(e) if e.strength == strength && now.saturating_sub(e.seen) < refresh(ttl) => {
                return
            }
            _ => {}
        }
        let Some(path) = self.path(domain) else {
            return;
        };
        let _ = std::fs::create_dir_all(&self.dir);
        if let Ok(json) = serde_json::to_vec(&Entry {
            strength,
            seen: now,
        }) {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }

    /// `hopguard policy forget DOMAIN`. Returns whether there was a memory.
    pub fn forget(&self, domain: &str) -> bool {
        self.path(domain)
            .is_some_and(|p| std::fs::remove_file(p).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_rises_expires_and_is_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let m = DowngradeMemory::new(d.path().to_path_buf());
        let ttl = Duration::from_secs(100);
        assert_eq!(m.get("a.test", 0, ttl), None);
        m.remember("a.test", 1, 0, ttl);
        assert_eq!(
            m.get("a.test", 0, ttl),
            None,
            "unauthenticated hops are not remembered"
        );
        m.remember("a.test", 2, 10, ttl);
        assert_eq!(m.get("a.test", 20, ttl), Some(2));
        m.remember("a.test", 3, 30, ttl);
        m.remember("a.test", 2, 40, ttl);
        assert_eq!(
            m.get("a.test", 50, ttl),
            Some(3),
            "a weaker hop never lowers the memory"
        );
        assert_eq!(
            m.get("a.test", 130, ttl),
            None,
            "expires ttl after the last strong hop"
        );
        m.remember("a.test", 2, 140, ttl);
        assert!(m.forget("a.test"));
        assert_eq!(m.get("a.test", 141, ttl), None);
        assert!(!m.forget("../etc"), "names are checked");
    }

    #[test]
    fn same_strength_refreshes_at_most_every_tenth_of_the_memory() {
        let d = tempfile::tempdir().unwrap();
        let m = DowngradeMemory::new(d.path().to_path_buf());
        let ttl = Duration::from_secs(100);
        m.remember("a.test", 2, 0, ttl);
        m.remember("a.test", 2, 9, ttl); // within the refresh period: not written
        assert_eq!(m.get("a.test", 99, ttl), Some(2));
        assert_eq!(
            m.get("a.test", 100, ttl),
            None,
            "expired from the first hop"
        );
        m.remember("a.test", 2, 10, ttl); // a refresh
        assert_eq!(m.get("a.test", 109, ttl), Some(2));
        m.remember("a.test", 3, 11, ttl); // a stronger hop is written at once
        assert_eq!(m.get("a.test", 12, ttl), Some(3));
        assert_eq!(refresh(Duration::from_secs(30 * 86_400)), REFRESH);
    }

    #[test]
    fn strengths_order_the_policies() {
        assert_eq!(achieved(VerifyMethod::DaneEe, true), 3);
        assert_eq!(achieved(VerifyMethod::Pkix, true), 2);
        assert_eq!(achieved(VerifyMethod::None, true), 1);
        assert_eq!(achieved(VerifyMethod::Pkix, false), 0);
        assert_eq!(guaranteed(&HopTls::Encrypt), 1);
        assert_eq!(guaranteed(&HopTls::Opportunistic), 0);
    }
}
