//! Evidence: every hop yields one `HopRecord`; it feeds the Prometheus metrics (and, as they
//! land, the audit log and TLS-RPT).

pub mod http;
pub mod metrics;
pub mod record;

pub use metrics::Metrics;
pub use record::{Direction, HopRecord, Outcome, TlsFacts};

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
        }
    }

    /// Records one hop in every sink; never blocks (the audit sink has a bounded buffer).
    pub fn record(&self, hop: &HopRecord) {
        self.metrics.record(hop);
        if let Some(a) = &self.audit {
            a.record(hop);
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
