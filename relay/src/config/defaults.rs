//! Every configuration default in one place; docs/config.md lists the same values.

use super::duration::HumanDuration;

pub const SPOOL_DIR: &str = "/var/spool/hopguard";
pub const LOG_LEVEL: &str = "info";

// Inbound (RFC 5321 §4.5.3 for the limits' minimums).
pub const MAX_MESSAGE_SIZE: u64 = 50 * 1024 * 1024;
pub const MAX_RECIPIENTS: usize = 1000;
/// RFC 5321 §4.5.3.1.4 says 512 octets for a command line; extensions make it longer.
pub const MAX_COMMAND_LINE: usize = 2048;
/// RFC 5321 §4.5.3.1.6: 1000 octets per text line including CRLF; we accept longer lines
/// from real-world senders but cap them so a line cannot pin memory.
pub const MAX_DATA_LINE: usize = 64 * 1024;
pub const MAX_COMMANDS: usize = 10_000;
pub const MAX_ERRORS: usize = 10;
pub const MAX_CONNECTIONS: usize = 2000;
pub const MAX_CONNECTIONS_PER_IP: usize = 50;
/// RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for the next command.
pub const COMMAND_TIMEOUT: HumanDuration = HumanDuration::secs(300);
/// RFC 5321 §4.5.3.2.5 (client side, 3 min per data block); we wait as long for each read.
pub const DATA_TIMEOUT: HumanDuration = HumanDuration::secs(180);

// Outbound (RFC 5321 §4.5.3.2 client timeouts).
pub const SMTP_PORT: u16 = 25;
pub const CONNECT_TIMEOUT: HumanDuration = HumanDuration::secs(30);
pub const GREETING_TIMEOUT: HumanDuration = HumanDuration::secs(300);
pub const OUT_COMMAND_TIMEOUT: HumanDuration = HumanDuration::secs(300);
pub const OUT_DATA_TIMEOUT: HumanDuration = HumanDuration::secs(600);
pub const MAX_MESSAGES_PER_CONNECTION: usize = 100;

// DNS.
pub const DNS_TIMEOUT: HumanDuration = HumanDuration::secs(5);

// Queue: in the spirit of Postfix (minimal_backoff_time 300s, maximal_backoff_time 4000s,
// maximal_queue_lifetime 5d).
pub const MIN_BACKOFF: HumanDuration = HumanDuration::secs(300);
pub const MAX_BACKOFF: HumanDuration = HumanDuration::secs(4000);
pub const MAX_LIFETIME: HumanDuration = HumanDuration::secs(5 * 86_400);
pub const PER_DESTINATION_CONCURRENCY: usize = 20;
pub const MAX_CONCURRENT_DELIVERIES: usize = 100;
pub const SCAN_INTERVAL: HumanDuration = HumanDuration::secs(60);

// TLS-RPT: a failed https: POST is retried from 5 minutes on, for a day (the next day's
// reports are due by then).
pub const TLSRPT_RETRY_AFTER: HumanDuration = HumanDuration::secs(300);
pub const TLSRPT_GIVE_UP_AFTER: HumanDuration = HumanDuration::secs(86_400);

// Metrics: loopback only by default.
pub const METRICS_LISTEN: std::net::SocketAddr = std::net::SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    9465,
);

// Audit log.
pub const AUDIT_CHECKPOINT_EVERY: u64 = 1000;
/// Records buffered between the SMTP path and the audit writer before they count as dropped.
pub const AUDIT_CAPACITY: usize = 10_000;

/// Downgrade memory: a verified hop is remembered this long after it was last seen.
pub const DOWNGRADE_MEMORY: HumanDuration = HumanDuration::secs(30 * 86_400);
