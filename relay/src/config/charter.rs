//! A charter peer's outbound policy as configured (`peers[].outbound`), and its conversion to
//! the policy crate's `CharterPolicy` (validated at load: CA file read, pins and MX patterns
//! parsed).

use std::path::PathBuf;

use hopguard_policy::{
    CharterPolicy, CharterRequirement, MxPattern, PkixTrust, SpkiPin, TlsVersion,
};
use serde::Deserialize;

/// What a charter peer must be verified by on every outbound hop.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Require {
    Dane,
    MtaSts,
    Verify,
    Encrypt,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum MinTls {
    #[default]
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerOutbound {
    /// Absent: the route level (`verify` by default) applies, as for any destination.
    #[serde(default)]
    pub require: Option<Require>,
    /// With `verify`: trust only this CA (PEM) for the peer, instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `verify`: the end-entity key must be one of these SHA-256 SPKI pins (hex).
    #[serde(default)]
    pub spki_pins: Vec<String>,
    /// The peer's MX host names (`mx.example` or `*.example`); another MX host is refused.
    #[serde(default)]
    pub mx: Vec<String>,
    #[serde(default)]
    pub min_tls: MinTls,
    /// Evaluate and record the requirement, but deliver as the other policies allow.
    #[serde(default)]
    pub report_only: bool,
}

impl PeerOutbound {
    /// The policy crate's form; `Err(key, message)` names the offending key.
    pub fn to_policy(&self, peer: &str) -> Result<CharterPolicy, (String, String)> {
        let pinning = self.ca_file.is_some() || !self.spki_pins.is_empty();
        if pinning && self.require != Some(Require::Verify) {
            return Err((
                "outbound.ca_file".into(),
                "`ca_file` and `spki_pins` need `require: verify`".into(),
            ));
        }
        let mut trust = PkixTrust::webpki();
        if let Some(ca) = &self.ca_file {
            trust.pinned_ca = crate::inbound::tls::load_certs(ca)
                .map_err(|e| ("outbound.ca_file".to_string(), e.to_string()))?;
        }
        for (i, p) in self.spki_pins.iter().enumerate() {
            trust.spki_pins.push(
                SpkiPin::from_hex(p)
                    .map_err(|e| (format!("outbound.spki_pins[{i}]"), e.to_string()))?,
            );
        }
        let mut mx = Vec::new();
        for (i, m) in self.mx.iter().enumerate() {
            mx.push(MxPattern::parse(m).map_err(|e| (format!("outbound.mx[{i}]"), e.to_string()))?);
        }
        let mut policy = CharterPolicy::new(peer);
        policy.require = self.require.map(|r| match r {
            Require::Dane => CharterRequirement::Dane,
            Require::MtaSts => CharterRequirement::MtaSts,
            Require::Verify => CharterRequirement::Verify(trust.clone()),
            Require::Encrypt => CharterRequirement::Encrypt,
        });
        policy.mx = mx;
        policy.min_tls = match self.min_tls {
            MinTls::Tls12 => TlsVersion::Tls12,
            MinTls::Tls13 => TlsVersion::Tls13,
        };
        policy.report_only = self.report_only;
        Ok(policy)
    }
}
