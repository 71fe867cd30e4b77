//! Evidence: every hop yields one `HopRecord`; it feeds the Prometheus metrics (and, as they
//! land, the audit log and TLS-RPT).

pub mod http;
pub mod metrics;
pub mod record;

pub use metrics::Metrics;
pub use record::{Direction, HopRecord, Outcome, TlsFacts};
