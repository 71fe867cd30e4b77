//! The envelope stored beside each spooled message: sender, recipients and their delivery state.

use serde::{Deserialize, Serialize};

pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// `BODY=` of MAIL FROM (RFC 6152).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Body {
    #[default]
    Unspecified,
    SevenBit,
    EightBitMime,
}

/// `RET=` of MAIL FROM (RFC 3461 §4.3).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Ret {
    Full,
    Hdrs,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RcptStatus {
    #[default]
    Pending,
    Delivered,
    /// Permanently failed; a DSN was or will be sent.
    Failed,
}

/// The last failure seen for a recipient (or a whole attempt).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// SMTP reply code (ours for local decisions, the next hop's otherwise).
    pub code: u16,
    /// Enhanced status code, e.g. `4.7.5`.
    pub status: String,
    /// One line for operators and DSNs, in plain words.
    pub text: String,
    /// RFC 8460 result type when the failure is a TLS one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<hopguard_policy::ResultType>,
    /// The host we talked to, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY flags as smtp-proto's bits (0 = not given).
    #[serde(default)]
    pub notify: u64,
    #[serde(default)]
    pub status: RcptStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// A DSN for this recipient's failure has been queued.
    #[serde(default)]
    pub notified: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub version: u32,
    pub id: String,
    pub node_id: String,
    /// Unix seconds when the `250` was sent.
    pub received_at: i64,
    /// The same instant in milliseconds (0 in envelopes written before it existed).
    #[serde(default)]
    pub received_ms: i64,
    pub client_ip: String,
    pub helo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// Empty for the null reverse-path `<>`.
    pub mail_from: String,
    #[serde(default)]
    pub body: Body,
    #[serde(default)]
    pub smtputf8: bool,
    #[serde(default)]
    pub requiretls: bool,
    /// The message carries `TLS-Required: No` (RFC 8689 §5); see `HopInput::tls_required_no`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_required_no: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// Size of the spooled message file in bytes.
    pub size: u64,
    /// Keyed hash of the Message-ID (audit evidence; never the Message-ID itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id_hash: Option<String>,
    pub recipients: Vec<Recipient>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    #[serde(default)]
    pub next_attempt: i64,
    /// True for a DSN we generated: never bounced again (RFC 3464 §2, RFC 5321 §6.1).
    #[serde(default)]
    pub is_bounce: bool,
}

impl Envelope {
    /// Seconds since acceptance, with millisecond precision when known.
    pub fn age_seconds(&self, now: chrono::DateTime<chrono::Utc>) -> f64 {
        if self.received_ms > 0 {
            (now.timestamp_millis() - self.received_ms).max(0) as f64 / 1000.0
        } else {
            (now.timestamp() - self.received_at).max(0) as f64
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.status == RcptStatus::Pending)
    }

    pub fn is_finished(&self) -> bool {
        self.pending().next().is_none()
    }

    /// Destination domains with pending recipients, sorted, without duplicates.
    pub fn pending_domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self.pending().map(|r| r.domain.clone()).collect();
        d.sort();
        d.dedup();
        d
    }
}
