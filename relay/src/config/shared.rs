//! The running configuration and the TLS material built from it, swapped whole on SIGHUP.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;

use super::{Config, ConfigError};
use crate::outbound::tls::OutboundTls;

/// A validated config with its TLS material loaded.
pub struct Loaded {
    pub config: Arc<Config>,
    pub acceptors: Vec<Arc<ServerConfig>>,
    pub outbound_tls: OutboundTls,
    /// Each charter peer's outbound policy, by peer name (validated at load).
    pub charters: std::collections::HashMap<String, hopguard_policy::CharterPolicy>,
}

impl Loaded {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Config::load(path)?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_string(),
            message,
        };
        let mut acceptors = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let sc = crate::inbound::tls::load_server_config(&l.certificate, &l.key)
                .map_err(|e| invalid(&format!("listeners[{i}]"), e.to_string()))?;
            acceptors.push(sc);
        }
        let outbound_tls = OutboundTls::new(config.tls.system_roots, config.tls.ca_file.as_deref())
            .map_err(|e| invalid("tls", e.to_string()))?;
        let mut charters = std::collections::HashMap::new();
        for p in &config.peers {
            let policy = match &p.outbound {
                Some(o) => o
                    .to_policy(&p.name)
                    .map_err(|(k, m)| invalid(&format!("peers.{}.{k}", p.name), m))?,
                None => hopguard_policy::CharterPolicy::new(p.name.clone()),
            };
            charters.insert(p.name.clone(), policy);
        }
        Ok(Self {
            config: Arc::new(config),
            acceptors,
            outbound_tls,
            charters,
        })
    }
}

/// The current `Loaded`, shared by every task; new connections and deliveries see a reload.
#[derive(Clone)]
pub struct SharedConfig(Arc<RwLock<Arc<Loaded>>>);

impl SharedConfig {
    pub fn new(loaded: Loaded) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(loaded))))
    }

    pub fn loaded(&self) -> Arc<Loaded> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn current(&self) -> Arc<Config> {
        self.loaded().config.clone()
    }

    pub fn acceptor(&self, index: usize) -> Option<Arc<ServerConfig>> {
        self.loaded().acceptors.get(index).cloned()
    }

    pub fn replace(&self, loaded: Loaded) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
    }
}
