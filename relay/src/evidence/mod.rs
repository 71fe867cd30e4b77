//! Evidence: every hop yields one `HopRecord`; it feeds the Prometheus metrics, the audit log
//! and the TLS-RPT store.

pub mod http;
pub mod metrics;
pub mod record;
pub mod tlsrpt;
pub mod tlsrpt_https;
pub mod tlsrpt_retry;

pub use metrics::Metrics;
pub use record::{Direction, HopRecord, Observed, Outcome, PolicyStrings, TlsFacts};

use std::sync::Arc;

use crate::audit::AuditHandle;

/// The sinks every hop record goes to.
pub struct Evidence {
    pub metrics: Arc<Metrics>,
    audit: Option<AuditHandle>,
    /// Defer mail while the audit sink is unhealthy (`audit.strict`).
    strict: bool,
    /// Key of the keyed Message-ID hash.
    message_id_key: Option<Vec<u8>>,
    /// TLS-RPT aggregates (absent in tests that do not need them).
    tlsrpt: Option<tlsrpt::TlsRptStore>,
}

impl Evidence {
    pub fn new(
        metrics: Arc<Metrics>,
        audit: Option<AuditHandle>,
        strict: bool,
        message_id_key: Option<Vec<u8>>,
    ) -> Self {
        Self {
            metrics,
            audit,
            strict,
            message_id_key,
            tlsrpt: None,
        }
    }

    /// Adds the TLS-RPT aggregation sink (files under `dir`).
    pub fn with_tlsrpt(mut self, dir: std::path::PathBuf) -> Self {
        self.tlsrpt = Some(tlsrpt::TlsRptStore::new(dir));
        self
    }

    /// Records one hop in every sink; never blocks (the audit sink has a bounded buffer).
    pub fn record(&self, hop: &HopRecord) {
        self.metrics.record(hop);
        if let Some(t) = &self.tlsrpt {
            t.record(hop);
        }
        if let Some(a) = &self.audit {
            a.record(hop);
        }
    }

    /// Writes the TLS-RPT counts gathered since the last call (blocking file I/O).
    pub fn flush_tlsrpt(&self) {
        if let Some(t) = &self.tlsrpt {
            t.flush();
        }
    }

    /// False when `audit.strict` is set and the audit sink cannot take records: mail waits.
    pub fn may_relay(&self) -> bool {
        !self.strict || self.audit.as_ref().is_none_or(AuditHandle::healthy)
    }

    /// The keyed hash of a Message-ID (None without a key).
    pub fn message_id_hash(&self, message_id: &str) -> Option<String> {
        self.message_id_key
            .as_ref()
            .map(|k| crate::audit::message_id_hash(k, message_id))
    }

    pub fn audit(&self) -> Option<&AuditHandle> {
        self.audit.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditConfig, AuditLog};

    #[tokio::test]
    async fn strict_audit_stops_mail_only_when_the_sink_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let handle = AuditLog::start(AuditConfig {
            dir: dir.path().join("audit"),
            node_id: "node-1".into(),
            signing_key: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            checkpoint_every: 10,
            capacity: 16,
        })
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let strict = Evidence::new(metrics.clone(), Some(handle.clone()), true, None);
        let lenient = Evidence::new(metrics.clone(), Some(handle.clone()), false, None);
        let none = Evidence::new(metrics, None, true, None);
        assert!(strict.may_relay() && lenient.may_relay() && none.may_relay());
        // A writer that is gone: the sink is unhealthy for good.
        handle.shutdown().await.unwrap();
        assert!(!strict.may_relay(), "strict: mail waits");
        assert!(
            lenient.may_relay(),
            "default: keep relaying (the metric alerts)"
        );
        assert!(none.may_relay(), "no audit log configured");
    }

    #[test]
    fn message_id_hash_needs_a_key() {
        let m = Arc::new(Metrics::new());
        assert_eq!(
            Evidence::new(m.clone(), None, false, None).message_id_hash("<a@b>"),
            None
        );
        let keyed = Evidence::new(m, None, false, Some(vec![1; 32]));
        let h = keyed.message_id_hash("<a@b>").unwrap();
        assert_eq!(h.len(), 64);
        assert!(!h.contains("a@b"));
    }
}
