//! Inbound: listeners, connection limits, and the per-connection session (port 25 role).

pub mod connection;
pub mod data;
pub mod session;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config::SharedConfig;
use crate::evidence::Evidence;
use crate::queue::QueueHandle;
use crate::smtp::Reply;
use crate::spool::Spool;

/// What every inbound connection shares.
pub struct InboundContext {
    pub config: SharedConfig,
    pub spool: Spool,
    pub queue: QueueHandle,
    pub evidence: Arc<Evidence>,
    /// The lawful-interception point; None when disabled (no copy is ever taken).
    pub intercept: Option<Arc<crate::intercept::Intercept>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: Arc<Semaphore>,
    /// Resolver for forward-confirmed reverse DNS attribution of charter peers.
    dns: Option<crate::dns::Dns>,
    /// FCrDNS results per client address, kept `FCRDNS_TTL`.
    fcrdns: Mutex<HashMap<IpAddr, (std::time::Instant, Option<String>)>>,
}

/// How long an FCrDNS attribution is cached.
const FCRDNS_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// The most a greeting waits for FCrDNS.
const FCRDNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl InboundContext {
    pub fn new(
        config: SharedConfig,
        spool: Spool,
        queue: QueueHandle,
        evidence: Arc<Evidence>,
        intercept: Option<Arc<crate::intercept::Intercept>>,
    ) -> Self {
        let max = config.current().inbound.max_connections;
        Self {
            config,
            spool,
            queue,
            evidence,
            intercept,
            per_ip: Mutex::new(HashMap::new()),
            dns: None,
            fcrdns: Mutex::new(HashMap::new()),
            total: Arc::new(Semaphore::new(max)),
        }
    }

    /// Enables FCrDNS peer attribution with this resolver.
    pub fn with_dns(mut self, dns: crate::dns::Dns) -> Self {
        self.dns = Some(dns);
        self
    }

    /// The charter peer a client outside every `client_networks` belongs to by forward-confirmed
    /// reverse DNS (a confirmed PTR name within one of the peer's domains), if any.
    pub async fn fcrdns_peer(&self, config: &crate::config::Config, ip: IpAddr) -> Option<String> {
        if config.peers.is_empty() || config.peer_for_ip(ip).is_some() {
            return None;
        }
        let dns = self.dns.as_ref()?;
        if let Some((t, p)) = self
            .fcrdns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
        {
            if t.elapsed() < FCRDNS_TTL {
                return p.clone();
            }
        }
        let names = tokio::time::timeout(FCRDNS_TIMEOUT, dns.fcrdns(ip))
            .await
            .unwrap_or_default();
        tracing::debug!(client = %ip, names = ?names, "forward-confirmed reverse DNS");
        let peer = names
            .iter()
            .find_map(|n| config.peer_for_host(n))
            .map(|p| p.name.clone());
        let mut cache = self.fcrdns.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (t, _)| t.elapsed() < FCRDNS_TTL);
        }
        cache.insert(ip, (std::time::Instant::now(), peer.clone()));
        peer
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, per_ip_max: usize) -> Option<IpSlot> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= per_ip_max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ctx: self.clone(),
            ip,
        })
    }
}

/// Holds one of an IP's connection slots; released on drop.
struct IpSlot {
    ctx: Arc<InboundContext>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.ctx.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on one listener until the task is dropped.
pub async fn serve_listener(listener: TcpListener, index: usize, ctx: Arc<InboundContext>) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let config = ctx.config.current();
        // TLS material is reloaded with the config (SIGHUP): read from the shared snapshot.
        let Some(acceptor) = ctx.config.acceptor(index) else {
            continue;
        };
        let ctx2 = ctx.clone();
        let per_ip_max = config.inbound.max_connections_per_ip;
        let hostname = config.hostname.clone();
        let permit = ctx.total.clone().try_acquire_owned();
        let slot = ctx.admit(remote.ip(), per_ip_max);
        tokio::spawn(async move {
            let (Ok(_permit), Some(_slot)) = (permit, slot) else {
                info!(client = %remote, "connection refused: limit reached");
                let mut tcp = tcp;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut tcp,
                    &Reply::too_many_connections(&hostname).to_wire(),
                )
                .await;
                return;
            };
            connection::handle(tcp, remote, ctx2, TlsAcceptor::from(acceptor)).await;
        });
    }
}
