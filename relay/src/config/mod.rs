//! Configuration: the YAML file, typed and validated once, before anything starts or reloads.
//!
//! Unknown keys and duplicate keys are errors (serde-saphyr reports line and column). Every
//! default lives in `defaults.rs` and is listed in docs/config.md.

pub mod charter;
pub mod defaults;
pub mod duration;
mod shared;

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

pub use duration::HumanDuration;
pub use shared::{Loaded, SharedConfig};

/// A configuration that failed to load, with where in the file the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Our host name: EHLO greeting, Received headers, DSN reporting MTA.
    pub hostname: String,
    /// Node id carried by envelopes, logs and audit records. Default: `hostname`.
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// Small messages are appended to shared spool segments (one fdatasync for many commits).
    /// `false`: every message is a file of its own (what versions before segments read).
    #[serde(default = "yes")]
    pub spool_segments: bool,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub inbound: Inbound,
    /// Clients allowed to relay to any domain (our own submission servers).
    #[serde(default)]
    pub relay_networks: Vec<IpNet>,
    /// Domains we accept mail for from anyone, and where that mail goes.
    #[serde(default)]
    pub relay_domains: Vec<Route>,
    /// Outbound overrides for other destination domains.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Charter peers.
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub outbound: Outbound,
    #[serde(default)]
    pub queue: Queue,
    #[serde(default)]
    pub metrics: Metrics,
    /// TLS-RPT reporting (RFC 8460): retries of `https:` report submissions.
    #[serde(default)]
    pub tlsrpt: TlsRpt,
    /// The tamper-evident hop audit log; absent: no audit log.
    #[serde(default)]
    pub audit: Option<Audit>,
    /// The lawful-interception point (docs/lawful-interception.md); off by default.
    #[serde(default)]
    pub intercept: crate::intercept::InterceptSettings,
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

fn yes() -> bool {
    true
}

fn default_spool_dir() -> PathBuf {
    PathBuf::from(defaults::SPOOL_DIR)
}
fn default_log_level() -> String {
    defaults::LOG_LEVEL.to_string()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: SocketAddr,
    /// PEM certificate chain offered with STARTTLS.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Whether a client must issue STARTTLS before MAIL.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InboundTls {
    #[default]
    Required,
    Optional,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Inbound {
    /// For clients that are not charter peers. Charter peers have their own `inbound_tls`.
    pub tls: InboundTls,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_command_line: usize,
    pub max_data_line: usize,
    pub max_commands: usize,
    pub max_errors: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub command_timeout: HumanDuration,
    pub data_timeout: HumanDuration,
}

impl Default for Inbound {
    fn default() -> Self {
        Self {
            tls: InboundTls::Required,
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            max_recipients: defaults::MAX_RECIPIENTS,
            max_command_line: defaults::MAX_COMMAND_LINE,
            max_data_line: defaults::MAX_DATA_LINE,
            max_commands: defaults::MAX_COMMANDS,
            max_errors: defaults::MAX_ERRORS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            command_timeout: defaults::COMMAND_TIMEOUT,
            data_timeout: defaults::DATA_TIMEOUT,
        }
    }
}

/// TLS required on an outbound hop.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundTls {
    /// STARTTLS with a certificate PKIX-valid for the next-hop name.
    #[default]
    Verify,
    /// STARTTLS required, certificate not authenticated.
    Encrypt,
    /// STARTTLS if offered, else plaintext. Never allowed for a charter peer.
    Opportunistic,
}

impl OutboundTls {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Encrypt => "encrypt",
            Self::Opportunistic => "opportunistic",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub domain: String,
    /// `host:port` or `[ip]:port`; without it, the destination's MX records are used.
    #[serde(default)]
    pub next_hop: Option<String>,
    /// Name the next hop's certificate must match when `next_hop` is an IP address.
    #[serde(default)]
    pub tls_name: Option<String>,
    #[serde(default)]
    pub tls: OutboundTls,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Short name, used as the `peer` label in metrics: `[a-z0-9_-]+`.
    pub name: String,
    pub domains: Vec<String>,
    #[serde(default)]
    pub client_networks: Vec<IpNet>,
    #[serde(default)]
    pub inbound_tls: InboundTls,
    /// What every outbound hop to this peer must achieve (absent: the route level).
    #[serde(default)]
    pub outbound: Option<charter::PeerOutbound>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// Resolvers to query (ip:port). Empty: the `nameserver` lines of /etc/resolv.conf.
    pub resolvers: Vec<SocketAddr>,
    pub timeout: HumanDuration,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            resolvers: Vec::new(),
            timeout: defaults::DNS_TIMEOUT,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Extra PKIX trust anchors (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Trust the operating system's root certificates.
    pub system_roots: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            ca_file: None,
            system_roots: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Outbound {
    /// Port of the next hop when it is found by MX lookup.
    pub port: u16,
    pub connect_timeout: HumanDuration,
    pub greeting_timeout: HumanDuration,
    pub command_timeout: HumanDuration,
    pub data_timeout: HumanDuration,
    pub max_messages_per_connection: usize,
    /// Refuse a hop weaker than the strongest recently verified one (see outbound/downgrade.rs).
    pub downgrade_protection: DowngradeProtection,
    /// How long a verified hop is remembered after it was last seen.
    pub downgrade_memory: HumanDuration,
}

/// Which destinations get downgrade protection.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DowngradeProtection {
    #[default]
    CharterPeers,
    All,
    Off,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            port: defaults::SMTP_PORT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            greeting_timeout: defaults::GREETING_TIMEOUT,
            command_timeout: defaults::OUT_COMMAND_TIMEOUT,
            data_timeout: defaults::OUT_DATA_TIMEOUT,
            max_messages_per_connection: defaults::MAX_MESSAGES_PER_CONNECTION,
            downgrade_protection: DowngradeProtection::CharterPeers,
            downgrade_memory: defaults::DOWNGRADE_MEMORY,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Queue {
    pub min_backoff: HumanDuration,
    pub max_backoff: HumanDuration,
    pub max_lifetime: HumanDuration,
    pub per_destination_concurrency: usize,
    pub max_concurrent_deliveries: usize,
    pub scan_interval: HumanDuration,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            min_backoff: defaults::MIN_BACKOFF,
            max_backoff: defaults::MAX_BACKOFF,
            max_lifetime: defaults::MAX_LIFETIME,
            per_destination_concurrency: defaults::PER_DESTINATION_CONCURRENCY,
            max_concurrent_deliveries: defaults::MAX_CONCURRENT_DELIVERIES,
            scan_interval: defaults::SCAN_INTERVAL,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsRpt {
    /// A failed `https:` report POST is tried again after this, then after twice as long each
    /// time (at most 4 hours apart)…
    pub retry_after: HumanDuration,
    /// …until this long after its first failure.
    pub give_up_after: HumanDuration,
}

impl Default for TlsRpt {
    fn default() -> Self {
        Self {
            retry_after: defaults::TLSRPT_RETRY_AFTER,
            give_up_after: defaults::TLSRPT_GIVE_UP_AFTER,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Address of the `/metrics` HTTP endpoint; `null` disables it.
    pub listen: Option<SocketAddr>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: Some(defaults::METRICS_LISTEN),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// Directory of the `audit-YYYY-MM-DD.jsonl` files.
    pub dir: PathBuf,
    /// The node's Ed25519 signing key (PKCS#8 PEM; `hopguard audit keygen` makes one).
    pub key_file: PathBuf,
    /// A signed checkpoint every N records (also at rotation and shutdown).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Key of the keyed Message-ID hash; without it no Message-ID hash is recorded.
    #[serde(default)]
    pub message_id_key_file: Option<PathBuf>,
    /// Defer mail (4xx) while the audit sink is unhealthy, instead of relaying unrecorded.
    #[serde(default)]
    pub strict: bool,
}

fn default_checkpoint_every() -> u64 {
    defaults::AUDIT_CHECKPOINT_EVERY
}

/// Where a destination's mail goes and how it must be protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDecision {
    pub next_hop: Option<NextHop>,
    pub tls: OutboundTls,
    pub tls_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.parse::<std::net::Ipv6Addr>().is_ok() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl NextHop {
    pub fn parse(text: &str, default_port: u16) -> Result<Self, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: missing `]`"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("`{text}`: expected `:port` after `]`")),
            }
        } else {
            if text.matches(':').count() > 1 {
                return Err(format!(
                    "`{text}`: write an IPv6 next hop as `[address]:port`"
                ));
            }
            match text.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{text}`: empty host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("`{text}`: bad port `{p}`"))?,
            None => default_port,
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl Config {
    /// Reads, parses and validates a config file. Certificate and key files are loaded too, so
    /// `config check` and SIGHUP catch a bad path before it matters.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(path, &text)
    }

    pub fn from_yaml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config
            .normalise_and_validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            })?;
        Ok(config)
    }

    pub fn node_id(&self) -> &str {
        self.node_id.as_deref().unwrap_or(&self.hostname)
    }

    fn normalise_and_validate(&mut self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_string(), msg));
        self.hostname = self.hostname.trim().to_ascii_lowercase();
        if !is_domain_name(&self.hostname) {
            return err(
                "hostname",
                format!("`{}` is not a host name", self.hostname),
            );
        }
        if let Some(id) = &self.node_id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return err(
                    "node_id",
                    "use letters, digits, `-`, `_` and `.` only".into(),
                );
            }
        }
        if self.listeners.is_empty() {
            return err("listeners", "at least one listener is required".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            crate::inbound::tls::load_server_config(&l.certificate, &l.key)
                .map_err(|e| (format!("listeners[{i}]"), e.to_string()))?;
        }
        if let Some(ca) = &self.tls.ca_file {
            crate::outbound::tls::load_ca_file(ca)
                .map_err(|e| ("tls.ca_file".to_string(), e.to_string()))?;
        }
        let inb = &self.inbound;
        if inb.max_command_line < 512 {
            return err(
                "inbound.max_command_line",
                "must be at least 512 (RFC 5321 §4.5.3.1.4)".into(),
            );
        }
        if inb.max_data_line < 1000 {
            return err(
                "inbound.max_data_line",
                "must be at least 1000 (RFC 5321 §4.5.3.1.6)".into(),
            );
        }
        if inb.max_recipients < 100 {
            return err(
                "inbound.max_recipients",
                "must be at least 100 (RFC 5321 §4.5.3.1.8)".into(),
            );
        }
        for (key, v) in [
            ("inbound.max_connections", inb.max_connections),
            ("inbound.max_connections_per_ip", inb.max_connections_per_ip),
            ("inbound.max_commands", inb.max_commands),
            ("inbound.max_errors", inb.max_errors),
            (
                "queue.per_destination_concurrency",
                self.queue.per_destination_concurrency,
            ),
            (
                "queue.max_concurrent_deliveries",
                self.queue.max_concurrent_deliveries,
            ),
            (
                "outbound.max_messages_per_connection",
                self.outbound.max_messages_per_connection,
            ),
        ] {
            if v == 0 {
                return err(key, "must be at least 1".into());
            }
        }
        if inb.max_message_size == 0 {
            return err("inbound.max_message_size", "must be at least 1".into());
        }
        for (key, d, min) in [
            ("queue.min_backoff", self.queue.min_backoff, 1),
            ("queue.max_backoff", self.queue.max_backoff, 1),
            ("queue.max_lifetime", self.queue.max_lifetime, 1),
            ("queue.scan_interval", self.queue.scan_interval, 1),
            ("tlsrpt.retry_after", self.tlsrpt.retry_after, 1),
            ("tlsrpt.give_up_after", self.tlsrpt.give_up_after, 1),
            ("inbound.command_timeout", inb.command_timeout, 1),
            ("inbound.data_timeout", inb.data_timeout, 1),
            ("outbound.connect_timeout", self.outbound.connect_timeout, 1),
            (
                "outbound.greeting_timeout",
                self.outbound.greeting_timeout,
                1,
            ),
            ("outbound.command_timeout", self.outbound.command_timeout, 1),
            ("outbound.data_timeout", self.outbound.data_timeout, 1),
            ("dns.timeout", self.dns.timeout, 1),
        ] {
            if d.0.as_secs() < min {
                return err(key, format!("must be at least {min}s"));
            }
        }
        if self.queue.min_backoff > self.queue.max_backoff {
            return err(
                "queue.min_backoff",
                "must not exceed queue.max_backoff".into(),
            );
        }
        if self.dns.resolvers.is_empty() {
            self.dns.resolvers = crate::dns::system_resolvers();
        }

        let mut names = HashSet::new();
        let mut peer_domains = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if let Some(o) = &p.outbound {
                o.to_policy(&p.name)
                    .map_err(|(k, m)| (format!("peers[{i}].{k}"), m))?;
            }
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            let valid = !p.name.is_empty()
                && p.name != "other"
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid {
                return err(
                    &format!("peers[{i}].name"),
                    format!("`{}`: use [a-z0-9_-]+ (and not `other`)", p.name),
                );
            }
            if !names.insert(p.name.clone()) {
                return err(
                    &format!("peers[{i}].name"),
                    format!("duplicate peer `{}`", p.name),
                );
            }
            if p.domains.is_empty() {
                return err(
                    &format!("peers[{i}].domains"),
                    "a peer needs at least one domain".into(),
                );
            }
            for (j, d) in p.domains.iter_mut().enumerate() {
                *d = d.trim().trim_end_matches('.').to_ascii_lowercase();
                if !is_domain_name(d) {
                    return err(
                        &format!("peers[{i}].domains[{j}]"),
                        format!("`{d}` is not a domain"),
                    );
                }
                if !peer_domains.insert(d.clone()) {
                    return err(
                        &format!("peers[{i}].domains[{j}]"),
                        format!("`{d}` belongs to two peers"),
                    );
                }
            }
        }
        let port = self.outbound.port;
        for (list, routes) in [
            ("relay_domains", &mut self.relay_domains),
            ("routes", &mut self.routes),
        ] {
            let mut seen = HashSet::new();
            for (i, r) in routes.iter_mut().enumerate() {
                r.domain = r.domain.trim().trim_end_matches('.').to_ascii_lowercase();
                if !is_domain_name(&r.domain) {
                    return err(
                        &format!("{list}[{i}].domain"),
                        format!("`{}` is not a domain", r.domain),
                    );
                }
                if !seen.insert(r.domain.clone()) {
                    return err(
                        &format!("{list}[{i}].domain"),
                        format!("duplicate domain `{}`", r.domain),
                    );
                }
                if let Some(h) = &r.next_hop {
                    NextHop::parse(h, port).map_err(|m| (format!("{list}[{i}].next_hop"), m))?;
                }
                if let Some(n) = &r.tls_name {
                    if r.next_hop.is_none() {
                        return err(
                            &format!("{list}[{i}].tls_name"),
                            "only meaningful with `next_hop`".into(),
                        );
                    }
                    if !is_domain_name(n) {
                        return err(
                            &format!("{list}[{i}].tls_name"),
                            format!("`{n}` is not a host name"),
                        );
                    }
                }
                if r.tls == OutboundTls::Opportunistic && peer_domains.contains(&r.domain) {
                    return err(
                        &format!("{list}[{i}].tls"),
                        format!("`opportunistic` is never allowed for `{}`: it is a charter peer's domain", r.domain),
                    );
                }
            }
        }
        if let Some((i, _)) = self
            .relay_domains
            .iter()
            .enumerate()
            .find(|(_, r)| self.routes.iter().any(|o| o.domain == r.domain))
        {
            return err(
                &format!("relay_domains[{i}].domain"),
                "also listed in `routes`: configure it in one place".into(),
            );
        }
        if let Some(a) = &self.audit {
            if a.checkpoint_every == 0 {
                return err("audit.checkpoint_every", "must be at least 1".into());
            }
            crate::audit::load_signing_key(&a.key_file)
                .map_err(|e| ("audit.key_file".to_string(), e.to_string()))?;
            if let Some(k) = &a.message_id_key_file {
                crate::audit::load_message_id_key(k)
                    .map_err(|e| ("audit.message_id_key_file".to_string(), e.to_string()))?;
            }
        }
        if self.intercept.enabled {
            let li = &self.intercept;
            if li.spool_dir.as_deref() == Some(self.spool_dir.as_path()) {
                return err("intercept.spool_dir", "must differ from spool_dir".into());
            }
            if let (Some(a), Some(d)) = (&self.audit, &li.audit_dir) {
                if a.dir == *d {
                    return err("intercept.audit_dir", "must differ from audit.dir".into());
                }
            }
            li.to_config(self.node_id())
                .map_err(|e| ("intercept".to_string(), e.redacted().to_string()))?;
        }
        if let Err(e) = self
            .log_level
            .parse::<tracing_subscriber::filter::EnvFilter>()
        {
            return err("log_level", e.to_string());
        }
        Ok(())
    }

    pub fn peer_for_ip(&self, ip: IpAddr) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|p| p.client_networks.iter().any(|n| n.contains(&ip)))
    }

    /// The peer whose domains include `host` or a parent of it (FCrDNS attribution).
    pub fn peer_for_host(&self, host: &str) -> Option<&Peer> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.peers.iter().find(|p| {
            p.domains
                .iter()
                .any(|d| host == *d || host.ends_with(&format!(".{d}")))
        })
    }

    pub fn peer_for_domain(&self, domain: &str) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|p| p.domains.iter().any(|d| d == domain))
    }

    pub fn is_relay_client(&self, ip: IpAddr) -> bool {
        self.relay_networks.iter().any(|n| n.contains(&ip))
    }

    pub fn is_relay_domain(&self, domain: &str) -> bool {
        self.relay_domains.iter().any(|r| r.domain == domain)
    }

    /// The TLS a client from `ip` must use before MAIL.
    pub fn inbound_tls_for(&self, ip: IpAddr) -> (InboundTls, Option<&Peer>) {
        match self.peer_for_ip(ip) {
            Some(p) => (p.inbound_tls, Some(p)),
            None => (self.inbound.tls, None),
        }
    }

    /// Route for a destination domain: relay_domains, then routes, else MX with `verify`.
    pub fn route_for(&self, domain: &str) -> RouteDecision {
        let found = self
            .relay_domains
            .iter()
            .chain(self.routes.iter())
            .find(|r| r.domain == domain);
        match found {
            Some(r) => RouteDecision {
                // Validated at load time.
                next_hop: r
                    .next_hop
                    .as_deref()
                    .and_then(|h| NextHop::parse(h, self.outbound.port).ok()),
                tls: r.tls,
                tls_name: r.tls_name.clone(),
            },
            None => RouteDecision {
                next_hop: None,
                tls: OutboundTls::Verify,
                tls_name: None,
            },
        }
    }
}

/// A syntactically plausible DNS name (LDH labels, 1..=63 octets each, 253 in all).
pub fn is_domain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
pub(crate) mod tests;
