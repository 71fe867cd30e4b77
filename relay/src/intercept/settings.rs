//! The `intercept:` section of the relay's YAML configuration (off by default) and its
//! validation into an `InterceptConfig`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{AdminConfig, Handover, Intercept, InterceptConfig, InterceptError};

/// `intercept:`. With `enabled: false` (the default) nothing else is read or checked, no file
/// or directory is touched and the relay holds no `Intercept`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptSettings {
    /// Turns the interception point on. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// YAML warrants file; must be owned by root and mode 0600 (or stricter).
    #[serde(default)]
    pub warrants_file: Option<PathBuf>,
    /// The LI copy queue (created mode 0700); never inside the mail spool.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// The LI audit log (created mode 0700); never the hop audit directory.
    #[serde(default)]
    pub audit_dir: Option<PathBuf>,
    /// Ed25519 PKCS#8 PEM key signing the LI audit checkpoints (`hopguard audit keygen`).
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
    /// Where copies go: `{directory: PATH}` or `{mediation: {...}}`.
    #[serde(default)]
    pub handover: Option<HandoverSettings>,
    /// The mTLS admin endpoint (provisioning and LI health); absent: none.
    #[serde(default)]
    pub admin: Option<AdminSettings>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HandoverSettings {
    /// A root-only directory (created or set to mode 0700).
    Directory(PathBuf),
    Mediation(MediationSettings),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediationSettings {
    /// `IP:port` of the mediation endpoint.
    pub address: SocketAddr,
    /// Name its certificate must carry.
    pub server_name: String,
    /// CA of the mediation server certificate (the only trust anchor used).
    pub ca_file: PathBuf,
    /// Our client certificate chain and key (PEM).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `IP:port` to listen on (keep it on a management network).
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates must be issued by this CA.
    pub authority_ca_file: PathBuf,
}

fn required<T: Clone>(value: &Option<T>, name: &str) -> Result<T, InterceptError> {
    value
        .clone()
        .ok_or_else(|| InterceptError::Config(format!("intercept.{name} is required when enabled")))
}

impl InterceptSettings {
    /// Validates the section and loads the LI audit key. `Disabled` when `enabled` is false.
    pub fn to_config(&self, node_id: &str) -> Result<InterceptConfig, InterceptError> {
        if !self.enabled {
            return Err(InterceptError::Disabled);
        }
        let spool_dir = required(&self.spool_dir, "spool_dir")?;
        let audit_dir = required(&self.audit_dir, "audit_dir")?;
        let key_file = required(&self.audit_key_file, "audit_key_file")?;
        let handover = match required(&self.handover, "handover")? {
            HandoverSettings::Directory(dir) => Handover::Directory(dir),
            HandoverSettings::Mediation(m) => Handover::Mediation {
                address: m.address,
                server_name: m.server_name,
                ca_file: m.ca_file,
                cert_file: m.cert_file,
                key_file: m.key_file,
            },
        };
        if self.warrants_file.is_none() && self.admin.is_none() {
            return Err(InterceptError::Config(
                "intercept needs warrants_file or admin (a way to provision warrants)".into(),
            ));
        }
        if spool_dir == audit_dir {
            return Err(InterceptError::Config(
                "intercept.spool_dir and intercept.audit_dir must differ".into(),
            ));
        }
        let audit_key = crate::audit::load_signing_key(&key_file).map_err(InterceptError::Audit)?;
        Ok(InterceptConfig {
            warrants_file: self.warrants_file.clone(),
            spool_dir,
            audit_dir,
            audit_key,
            node_id: node_id.to_owned(),
            handover,
            admin: self.admin.clone().map(|a| AdminConfig {
                listen: a.listen,
                cert_file: a.cert_file,
                key_file: a.key_file,
                authority_ca_file: a.authority_ca_file,
            }),
        })
    }

    /// What the relay calls at start-up: `None` when disabled (nothing touched), else the
    /// started interception point.
    pub async fn start(&self, node_id: &str) -> Result<Option<Arc<Intercept>>, InterceptError> {
        if !self.enabled {
            return Ok(None);
        }
        Intercept::start(self.to_config(node_id)?).await.map(Some)
    }
}
