//! The Docker demo (`docker/`) checked without containers: the machine that runs the tests has
//! no container engine, so the images are never built here, but every other file the demo ships
//! is read or run.
//!
//! The structure, without running anything but `promtool` and `bash -n`:
//! - `compose_services_are_consistent`: compose.yaml is valid YAML; every bind-mounted file,
//!   build context, Dockerfile and build target exists; named volumes are declared; each service
//!   on the network has a fixed address of its own in the subnet; host ports are on 127.0.0.1
//!   only; paths the commands and environments name under a bind mount exist.
//! - `dockerfile_copies_the_workspace`: every COPY source exists, every workspace member of
//!   Cargo.toml is copied, and the top-level .dockerignore keeps target/ out.
//! - `relay_configs_agree_with_compose`: each docker/config file is mounted by a relay, listens
//!   (SMTP and metrics) on that relay's address, keeps its certificates on mounts and its spool
//!   on a named volume, and names only addresses and ports of demo services.
//! - `prometheus_scrapes_the_relays_with_the_project_rules`: exactly the relays' metrics
//!   endpoints, dashboards/prometheus/rules.yml loaded, `promtool check config` passes.
//! - `grafana_gets_the_project_dashboards`: the data source is the Prometheus service; the
//!   project's dashboard provider and dashboards are mounted where the provider looks.
//! - `demo_scripts_parse`: `bash -n` on docker/*.sh.
//!
//! And running things:
//! - `every_docker_config_passes_config_check`: `hopguard config check` on every
//!   docker/config/*.yaml, with certificates made by docker/demo-ca.sh.
//! - `two_providers_relay_over_verified_tls`: the demo's topology on loopback. demo-ca.sh makes
//!   the certificates, both relays run their docker/config file, demo-send.sh sends one message
//!   from each provider's sender, and each message crosses relay A ⇄ relay B over verified
//!   TLS 1.3 to the other provider's mail store; both relays' /metrics show the hops encrypted.
//!
//! What is changed to run on this machine is derived mechanically from compose.yaml:
//! - every service's `ipv4_address` → a loopback address of its own (`Net::alloc`);
//! - a relay's address used as a client network (`ADDR/32`) → `127.0.0.1/32`: on loopback the
//!   kernel sends from 127.0.0.1 whatever address the relay listens on, and hopguard has no
//!   outbound source-address setting;
//! - each mount target of a service (`/etc/hopguard/certs`, `/var/spool/hopguard`, …) → the
//!   mount's source: the repository file of a bind mount, a temp dir per named volume;
//! - the mailpit mail stores → the harness's Postfix sink on the same address and port (25), with
//!   the certificate and key compose gives mailpit, for the domains routed to it;
//! - the senders stop after one accepted message (`DEMO_COUNT=1`) and send from their own
//!   address (`DEMO_LOCAL_ADDR`).
//!
//! Everything else — the relays' YAML, the scripts, their arguments and environment — is used as
//! shipped. Needs root (Postfix), openssl, swaks and promtool, like the rest of the suite.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use hopguard_integration::hopguard::{binary, output_text, run_cli, workspace_root};
use hopguard_integration::mail::{header_values, received};
use hopguard_integration::{
    scrape_metrics, wait_until, CertFiles, Hopguard, Net, Postfix, PostfixOpts, TestDir,
};

/// Where a relay service gets its configuration (docker/Dockerfile's CMD).
const CONFIG_TARGET: &str = "/etc/hopguard/hopguard.yaml";
/// Upper bound for one message to cross both relays.
const DELIVERY: Duration = Duration::from_secs(90);

fn docker_dir() -> PathBuf {
    workspace_root().join("docker")
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// A YAML file as a JSON value.
fn yaml_file(path: &Path) -> Result<Value> {
    serde_saphyr::from_str(&read(path)?)
        .with_context(|| format!("{} is not valid YAML", path.display()))
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str()
        .with_context(|| format!("{what}: expected a string, found {v}"))
}

/// A YAML list of strings (absent: empty).
fn strings(v: &Value, what: &str) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| str_of(i, what).map(str::to_owned))
            .collect(),
        other => bail!("{what}: expected a list, found {other}"),
    }
}

/// `IP:PORT`, `[IP]:PORT` or `[IP]` (port `default_port`).
fn ip_port(s: &str, default_port: u16) -> Result<(Ipv4Addr, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest
            .split_once(']')
            .with_context(|| format!("{s:?}: no closing bracket"))?;
        let port = match port.strip_prefix(':') {
            Some(p) => p.parse()?,
            None => default_port,
        };
        return Ok((ip.parse().with_context(|| format!("{s:?}"))?, port));
    }
    let sock: SocketAddr = s.parse().with_context(|| format!("{s:?}: not IP:PORT"))?;
    match sock {
        SocketAddr::V4(v4) => Ok((*v4.ip(), v4.port())),
        SocketAddr::V6(_) => bail!("{s:?}: the demo uses IPv4 only"),
    }
}

/// Where a mount's files come from.
#[derive(Clone, Debug)]
enum Source {
    /// A file or directory of the repository (canonical path).
    Bind(PathBuf),
    /// A named volume.
    Volume(String),
}

#[derive(Clone, Debug)]
struct Mount {
    source: Source,
    target: String,
}

/// docker/compose.yaml, parsed.
struct Compose {
    doc: Value,
}

impl Compose {
    fn load() -> Result<Self> {
        Ok(Self {
            doc: yaml_file(&docker_dir().join("compose.yaml"))?,
        })
    }

    fn services(&self) -> Result<&serde_json::Map<String, Value>> {
        self.doc["services"]
            .as_object()
            .filter(|s| !s.is_empty())
            .context("compose.yaml: no services")
    }

    fn service(&self, name: &str) -> Result<&Value> {
        self.services()?
            .get(name)
            .with_context(|| format!("compose.yaml: no service {name}"))
    }

    fn image(&self, name: &str) -> Result<&str> {
        self.service(name)?["image"]
            .as_str()
            .with_context(|| format!("service {name}: no image"))
    }

    /// The service's fixed address (`networks.NET.ipv4_address`), if it has one.
    fn ip(&self, name: &str) -> Result<Option<Ipv4Addr>> {
        let Some(nets) = self.service(name)?["networks"].as_object() else {
            return Ok(None);
        };
        let mut found = None;
        for (net, v) in nets {
            if let Some(a) = v["ipv4_address"].as_str() {
                ensure!(found.is_none(), "service {name}: two fixed addresses");
                found = Some(
                    a.parse()
                        .with_context(|| format!("service {name}: network {net}: {a:?}"))?,
                );
            }
        }
        Ok(found)
    }

    /// Every service with a fixed address, by address.
    fn ips(&self) -> Result<BTreeMap<Ipv4Addr, String>> {
        let mut out = BTreeMap::new();
        for name in self.services()?.keys() {
            if let Some(ip) = self.ip(name)? {
                if let Some(other) = out.insert(ip, name.clone()) {
                    bail!("{ip} is the address of both {other} and {name}");
                }
            }
        }
        Ok(out)
    }

    /// The service's mounts (short syntax `SOURCE:TARGET[:MODE]`); bind sources must exist.
    fn mounts(&self, name: &str) -> Result<Vec<Mount>> {
        let mut out = Vec::new();
        for m in strings(&self.service(name)?["volumes"], &format!("{name}.volumes"))? {
            let mut parts = m.split(':');
            let (Some(src), Some(target)) = (parts.next(), parts.next()) else {
                bail!("service {name}: volume {m:?} is not SOURCE:TARGET[:MODE]");
            };
            ensure!(
                target.starts_with('/'),
                "service {name}: {m:?}: target not absolute"
            );
            let source = if src.starts_with('.') || src.starts_with('/') {
                let path = docker_dir().join(src);
                Source::Bind(path.canonicalize().with_context(|| {
                    format!(
                        "service {name}: bind mount source {src} ({})",
                        path.display()
                    )
                })?)
            } else {
                Source::Volume(src.to_owned())
            };
            out.push(Mount {
                source,
                target: target.to_owned(),
            });
        }
        Ok(out)
    }

    /// The service's environment (map or `K=V` list form).
    fn env(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let env = &self.service(name)?["environment"];
        let mut out = BTreeMap::new();
        match env {
            Value::Null => {}
            Value::Object(map) => {
                for (k, v) in map {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    out.insert(k.clone(), v);
                }
            }
            Value::Array(_) => {
                for kv in strings(env, &format!("{name}.environment"))? {
                    let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                    out.insert(k.to_owned(), v.to_owned());
                }
            }
            other => bail!("service {name}: environment {other}"),
        }
        Ok(out)
    }

    /// The service's command, in exec form.
    fn command(&self, name: &str) -> Result<Vec<String>> {
        let c = &self.service(name)?["command"];
        ensure!(
            !c.is_string(),
            "service {name}: write the command as a list (exec form)"
        );
        strings(c, &format!("{name}.command"))
    }

    /// The relays: every service that mounts a file at [`CONFIG_TARGET`], with that file.
    fn relays(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for name in self.services()?.keys() {
            for m in self.mounts(name)? {
                if let (true, Source::Bind(p)) = (m.target == CONFIG_TARGET, &m.source) {
                    out.push((name.clone(), p.clone()));
                }
            }
        }
        ensure!(!out.is_empty(), "compose.yaml: no hopguard relay");
        Ok(out)
    }

    /// Services whose command runs the repository script `docker/SCRIPT`.
    fn running(&self, script: &str) -> Result<Vec<String>> {
        let want = docker_dir().join(script).canonicalize()?;
        let mut out = Vec::new();
        for name in self.services()?.keys() {
            let mounts = self.mounts(name)?;
            let cmd = self.command(name)?;
            let runs = mounts.iter().any(|m| {
                matches!(&m.source, Source::Bind(p) if *p == want) && cmd.contains(&m.target)
            });
            if runs {
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    /// The repository file or directory bind-mounted at `target` in `service`.
    fn bind_source(&self, service: &str, target: &str) -> Result<PathBuf> {
        self.mounts(service)?
            .into_iter()
            .find(|m| m.target == target)
            .and_then(|m| match m.source {
                Source::Bind(p) => Some(p),
                Source::Volume(_) => None,
            })
            .with_context(|| format!("service {service}: no file bind-mounted at {target}"))
    }

    /// Services whose image starts with `prefix` (e.g. `axllent/mailpit`).
    fn with_image(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in self.services()?.keys() {
            if self.image(name)?.starts_with(prefix) {
                out.push(name.clone());
            }
        }
        Ok(out)
    }
}

/// Replaces each occurrence of `from` that is a whole token: the character before it must not
/// satisfy `inner_before`, the one after it not `inner_after`.
fn replace_token(
    text: &str,
    from: &str,
    to: &str,
    inner_before: fn(char) -> bool,
    inner_after: fn(char) -> bool,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    while let Some(i) = text[start..].find(from).map(|i| start + i) {
        let before = text[..i].chars().next_back();
        let after = text[i + from.len()..].chars().next();
        out.push_str(&text[start..i]);
        if before.is_some_and(inner_before) || after.is_some_and(inner_after) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        start = i + from.len();
    }
    out.push_str(&text[start..]);
    out
}

fn ip_char(c: char) -> bool {
    c.is_ascii_digit() || c == '.'
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_')
}

fn path_char_not_slash(c: char) -> bool {
    c != '/' && path_char(c)
}

/// How one service's files and environment are rewritten to run on this machine.
struct Rewrite {
    /// (mount target, host path), longest target first.
    paths: Vec<(String, String)>,
    /// (demo address, loopback address).
    addrs: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Demo addresses of the relays: as a client network they become 127.0.0.1/32.
    relays: Vec<Ipv4Addr>,
}

impl Rewrite {
    /// Mount targets of `service` → their sources (a named volume → `volumes/NAME` under
    /// `dir`), demo addresses → `addrs`.
    fn new(
        compose: &Compose,
        service: &str,
        dir: &Path,
        addrs: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    ) -> Result<Self> {
        let mut paths = Vec::new();
        for m in compose.mounts(service)? {
            let host = match &m.source {
                Source::Bind(p) => p.clone(),
                Source::Volume(v) => {
                    let p = dir.join("volumes").join(v);
                    std::fs::create_dir_all(&p)?;
                    p
                }
            };
            paths.push((m.target, host.display().to_string()));
        }
        paths.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let mut relays = Vec::new();
        for (name, _) in compose.relays()? {
            relays.extend(compose.ip(&name)?);
        }
        Ok(Self {
            paths,
            addrs: addrs.iter().map(|(a, b)| (*a, *b)).collect(),
            relays,
        })
    }

    fn apply(&self, text: &str) -> String {
        let mut t = text.to_owned();
        for (target, host) in &self.paths {
            t = replace_token(&t, target, host, path_char, path_char_not_slash);
        }
        if self.addrs.is_empty() {
            return t;
        }
        for r in &self.relays {
            t = replace_token(&t, &format!("{r}/32"), "127.0.0.1/32", ip_char, ip_char);
        }
        for (demo, local) in &self.addrs {
            t = replace_token(&t, &demo.to_string(), &local.to_string(), ip_char, ip_char);
        }
        t
    }

    /// The host path of a container path (under one of the service's mounts).
    fn path(&self, container_path: &str) -> Result<PathBuf> {
        let p = self.apply(container_path);
        ensure!(
            p != container_path,
            "{container_path} is under none of the service's mounts"
        );
        Ok(PathBuf::from(p))
    }
}

/// The relay configs' parsed YAML, by service.
fn relay_configs(compose: &Compose) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (name, file) in compose.relays()? {
        out.insert(name, yaml_file(&file)?);
    }
    Ok(out)
}

/// The first listener's and the metrics endpoint's `IP:PORT` of a relay config.
fn listener_and_metrics(cfg: &Value) -> Result<((Ipv4Addr, u16), (Ipv4Addr, u16))> {
    let listen = ip_port(str_of(&cfg["listeners"][0]["address"], "listeners[0]")?, 25)?;
    let metrics = ip_port(str_of(&cfg["metrics"]["listen"], "metrics.listen")?, 9465)?;
    Ok((listen, metrics))
}

/// `(domain, next_hop, tls_name)` of every `relay_domains` and `routes` entry.
fn fixed_routes(cfg: &Value) -> Result<Vec<(String, String, Option<String>)>> {
    let mut out = Vec::new();
    for list in ["relay_domains", "routes"] {
        for r in cfg[list].as_array().into_iter().flatten() {
            let domain = str_of(&r["domain"], list)?.to_owned();
            let hop = str_of(&r["next_hop"], &format!("{list}: {domain}: next_hop"))?.to_owned();
            out.push((domain, hop, r["tls_name"].as_str().map(str::to_owned)));
        }
    }
    Ok(out)
}

/// The one element of `v`.
fn only(v: Vec<String>, what: &str) -> Result<String> {
    match <[String; 1]>::try_from(v) {
        Ok([one]) => Ok(one),
        Err(v) => bail!("compose.yaml: expected one {what}, found {v:?}"),
    }
}

/// `bash -n` on a script.
fn bash_syntax_ok(script: &Path) -> Result<()> {
    let out = Command::new("bash")
        .arg("-n")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .context("running bash")?;
    ensure!(
        out.status.success(),
        "{}: {}",
        script.display(),
        output_text(&out)
    );
    Ok(())
}

/// Runs `service`'s command on this machine: arguments and environment rewritten by `rw`, plus
/// `extra_env`; fails unless it exits 0.
fn run_service(
    compose: &Compose,
    service: &str,
    rw: &Rewrite,
    extra_env: &[(&str, String)],
) -> Result<String> {
    let cmd: Vec<String> = compose
        .command(service)?
        .iter()
        .map(|a| rw.apply(a))
        .collect();
    let (prog, args) = cmd
        .split_first()
        .with_context(|| format!("service {service}: empty command"))?;
    let mut c = Command::new(prog);
    c.args(args).stdin(Stdio::null());
    for (k, v) in compose.env(service)? {
        c.env(k, rw.apply(&v));
    }
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c
        .output()
        .with_context(|| format!("running service {service}: {cmd:?}"))?;
    let text = output_text(&out);
    ensure!(
        out.status.success(),
        "service {service} ({cmd:?}) failed ({}):\n{text}",
        out.status
    );
    Ok(text)
}

#[test]
fn compose_services_are_consistent() -> Result<()> {
    let root = workspace_root();
    let docker = docker_dir();
    let compose = Compose::load()?;
    let doc = &compose.doc;
    let declared_volumes: BTreeSet<String> = doc["volumes"]
        .as_object()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    let subnet = str_of(
        &doc["networks"]["peering"]["ipam"]["config"][0]["subnet"],
        "networks.peering subnet",
    )?;
    let (net, prefix) = subnet.split_once('/').context("subnet without /len")?;
    ensure!(prefix == "24", "the demo subnet is a /24: {subnet}");
    let net: Ipv4Addr = net.parse()?;
    compose.ips()?; // unique addresses

    for (name, svc) in compose.services()? {
        compose.image(name)?;
        // Build: context, Dockerfile and target exist.
        if let Some(build) = svc.get("build") {
            let ctx = docker.join(str_of(&build["context"], "build.context")?);
            let dockerfile = ctx.join(str_of(&build["dockerfile"], "build.dockerfile")?);
            let text = read(&dockerfile)?;
            if let Some(target) = build["target"].as_str() {
                ensure!(
                    text.lines().any(|l| l.trim_start().starts_with("FROM ")
                        && l.trim_end().ends_with(&format!(" AS {target}"))),
                    "service {name}: {} has no stage {target}",
                    dockerfile.display()
                );
            }
            ensure!(
                ctx.canonicalize()? == root.canonicalize()?,
                "service {name}: the build context must be the repository root"
            );
        }
        // Mounts: bind sources exist (checked by mounts()), named volumes are declared.
        let mounts = compose.mounts(name)?;
        for m in &mounts {
            if let Source::Volume(v) = &m.source {
                ensure!(
                    declared_volumes.contains(v),
                    "service {name}: volume {v} not declared"
                );
            }
        }
        // Every path in the command or environment under a bind mount exists.
        let rw = Rewrite {
            paths: mounts
                .iter()
                .filter_map(|m| match &m.source {
                    Source::Bind(p) => Some((m.target.clone(), p.display().to_string())),
                    Source::Volume(_) => None,
                })
                .collect(),
            addrs: Vec::new(),
            relays: Vec::new(),
        };
        let values = compose
            .command(name)?
            .into_iter()
            .chain(compose.env(name)?.into_values());
        for v in values {
            let host = rw.apply(&v);
            if host != v {
                ensure!(
                    Path::new(&host).exists(),
                    "service {name}: {v} ({host}) does not exist"
                );
            }
        }
        // A fixed address in the subnet for every service on the network.
        if svc["network_mode"].as_str() != Some("none") {
            let ip = compose
                .ip(name)?
                .with_context(|| format!("service {name}: no fixed ipv4_address"))?;
            ensure!(
                ip.octets()[..3] == net.octets()[..3] && ![0, 1, 255].contains(&ip.octets()[3]),
                "service {name}: {ip} is not a host address of {subnet} (.1 is the gateway)"
            );
        }
        // Published ports only on the host's loopback.
        for p in strings(&svc["ports"], &format!("{name}.ports"))? {
            ensure!(
                p.starts_with("127.0.0.1:"),
                "service {name}: port {p} is published beyond 127.0.0.1"
            );
        }
    }
    Ok(())
}

#[test]
fn dockerfile_copies_the_workspace() -> Result<()> {
    let root = workspace_root();
    let dockerfile = read(&docker_dir().join("Dockerfile"))?;
    let mut copied = BTreeSet::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"COPY") || words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        let args: Vec<&str> = words[1..]
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in args.iter().take(args.len().saturating_sub(1)) {
            ensure!(
                root.join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            copied.insert(src.trim_end_matches('/').to_owned());
        }
    }
    let cargo = read(&root.join("Cargo.toml"))?;
    let members_list = cargo
        .split_once("members")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .context("Cargo.toml: no members")?;
    let members: Vec<&str> = members_list
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| !m.is_empty())
        .collect();
    ensure!(!members.is_empty(), "Cargo.toml: no members read");
    for file in ["Cargo.toml", "Cargo.lock"].iter().chain(&members) {
        ensure!(
            copied.contains(*file),
            "docker/Dockerfile does not copy {file} (a workspace file)"
        );
    }
    let ignore = read(&root.join(".dockerignore"))?;
    ensure!(
        ignore
            .lines()
            .any(|l| l.trim().trim_end_matches('/') == "target"),
        ".dockerignore must exclude target/"
    );
    Ok(())
}

#[test]
fn relay_configs_agree_with_compose() -> Result<()> {
    let compose = Compose::load()?;
    let ips = compose.ips()?;
    // Every docker/config file is some relay's configuration.
    let relays = compose.relays()?;
    let mut configs = BTreeSet::new();
    for e in std::fs::read_dir(docker_dir().join("config"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            configs.insert(p.canonicalize()?);
        }
    }
    let used: BTreeSet<PathBuf> = relays.iter().map(|(_, p)| p.clone()).collect();
    ensure!(
        configs == used,
        "docker/config files {configs:?} vs relays' configs {used:?}"
    );

    // Each relay's config against compose: its own address, mounted paths, demo next hops.
    let cfgs = relay_configs(&compose)?;
    let mailstores = compose.with_image("axllent/mailpit")?;
    for (name, cfg) in &cfgs {
        let ip = compose.ip(name)?.context("relay without address")?;
        let (listen, metrics) = listener_and_metrics(cfg)?;
        ensure!(
            listen.0 == ip && metrics.0 == ip,
            "relay {name}: listens on {listen:?} / metrics on {metrics:?}, its address is {ip}"
        );
        let mounts = compose.mounts(name)?;
        let under_mount = |p: &str| {
            mounts
                .iter()
                .any(|m| p == m.target || p.starts_with(&format!("{}/", m.target)))
        };
        let mut paths = vec![
            str_of(&cfg["listeners"][0]["certificate"], "certificate")?.to_owned(),
            str_of(&cfg["listeners"][0]["key"], "key")?.to_owned(),
        ];
        paths.extend(cfg["tls"]["ca_file"].as_str().map(str::to_owned));
        for peer in cfg["peers"].as_array().into_iter().flatten() {
            paths.extend(peer["outbound"]["ca_file"].as_str().map(str::to_owned));
        }
        for p in &paths {
            ensure!(under_mount(p), "relay {name}: {p} is not on a mount");
        }
        let spool = str_of(&cfg["spool_dir"], "spool_dir")?;
        ensure!(
            mounts
                .iter()
                .any(|m| m.target == spool && matches!(m.source, Source::Volume(_))),
            "relay {name}: spool_dir {spool} is not a named volume"
        );
        for (domain, hop, _) in fixed_routes(cfg)? {
            let (hop_ip, port) = ip_port(&hop, 25)?;
            let target = ips
                .get(&hop_ip)
                .with_context(|| format!("relay {name}: {domain} → {hop}: no such service"))?;
            let expected = if let Some(peer_cfg) = cfgs.get(target) {
                listener_and_metrics(peer_cfg)?.0 .1
            } else if mailstores.contains(target) {
                let bind = compose.env(target)?;
                let bind = bind.get("MP_SMTP_BIND_ADDR").context("MP_SMTP_BIND_ADDR")?;
                ip_port(bind, 25)?.1
            } else {
                bail!("relay {name}: {domain} → {target}, neither a relay nor a mail store");
            };
            ensure!(
                port == expected,
                "relay {name}: {domain} → {target} port {port}, it listens on {expected}"
            );
        }
        let mut networks = strings(&cfg["relay_networks"], "relay_networks")?;
        for peer in cfg["peers"].as_array().into_iter().flatten() {
            networks.extend(strings(&peer["client_networks"], "client_networks")?);
        }
        for n in networks {
            let a = n
                .strip_suffix("/32")
                .with_context(|| format!("relay {name}: network {n} is not one address"))?;
            ensure!(
                ips.contains_key(&a.parse()?),
                "relay {name}: network {n} is no service of the demo"
            );
        }
    }
    Ok(())
}

#[test]
fn prometheus_scrapes_the_relays_with_the_project_rules() -> Result<()> {
    let root = workspace_root();
    let compose = Compose::load()?;
    let mut metrics_targets = BTreeSet::new();
    for cfg in relay_configs(&compose)?.values() {
        let (ip, port) = listener_and_metrics(cfg)?.1;
        metrics_targets.insert(format!("{ip}:{port}"));
    }
    let prom = only(
        compose.with_image("prom/prometheus")?,
        "prom/prometheus service",
    )?;
    let prom_mounts = compose.mounts(&prom)?;
    let prom_config = compose.bind_source(&prom, "/etc/prometheus/prometheus.yml")?;
    let pc = yaml_file(&prom_config)?;
    let mut scraped = BTreeSet::new();
    for job in pc["scrape_configs"].as_array().into_iter().flatten() {
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            scraped.extend(strings(&sc["targets"], "targets")?);
        }
    }
    ensure!(
        scraped == metrics_targets,
        "Prometheus scrapes {scraped:?}, the relays serve metrics on {metrics_targets:?}"
    );
    let rules = root
        .join("dashboards/prometheus/rules.yml")
        .canonicalize()?;
    let rule_files = strings(&pc["rule_files"], "rule_files")?;
    ensure!(
        rule_files.iter().any(|r| prom_mounts
            .iter()
            .any(|m| m.target == *r && matches!(&m.source, Source::Bind(p) if *p == rules))),
        "Prometheus does not load dashboards/prometheus/rules.yml"
    );
    let dir = TestDir::new()?;
    let rw = Rewrite::new(&compose, &prom, dir.path(), &BTreeMap::new())?;
    let checked = dir.path().join("prometheus.yml");
    std::fs::write(&checked, rw.apply(&read(&prom_config)?))?;
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&checked)
        .stdin(Stdio::null())
        .output()
        .context("running promtool (Debian package prometheus)")?;
    ensure!(
        out.status.success(),
        "promtool check config:\n{}",
        output_text(&out)
    );
    Ok(())
}

#[test]
fn grafana_gets_the_project_dashboards() -> Result<()> {
    let root = workspace_root();
    let compose = Compose::load()?;
    let prom = only(
        compose.with_image("prom/prometheus")?,
        "prom/prometheus service",
    )?;
    let grafana = only(
        compose.with_image("grafana/grafana")?,
        "grafana/grafana service",
    )?;
    let bind_dir = |target: &str| compose.bind_source(&grafana, target);
    let ds_dir = bind_dir("/etc/grafana/provisioning/datasources")?;
    let mut urls = Vec::new();
    for e in std::fs::read_dir(&ds_dir)? {
        let ds = yaml_file(&e?.path())?;
        for d in ds["datasources"].as_array().into_iter().flatten() {
            urls.push(str_of(&d["url"], "datasource url")?.to_owned());
        }
    }
    ensure!(
        urls == [format!("http://{prom}:9090")],
        "Grafana data sources {urls:?}, expected the {prom} service"
    );
    let provider_dir = bind_dir("/etc/grafana/provisioning/dashboards")?;
    ensure!(
        provider_dir
            == root
                .join("dashboards/grafana/provisioning/dashboards")
                .canonicalize()?,
        "Grafana's dashboard provider is not the project's"
    );
    for e in std::fs::read_dir(&provider_dir)? {
        let p = yaml_file(&e?.path())?;
        for prov in p["providers"].as_array().into_iter().flatten() {
            let path = str_of(&prov["options"]["path"], "provider options.path")?;
            let src = bind_dir(path)?;
            let json = std::fs::read_dir(&src)?
                .flatten()
                .filter(|f| f.path().extension().is_some_and(|x| x == "json"))
                .count();
            ensure!(
                json >= 2,
                "{path} ({}) holds {json} dashboards",
                src.display()
            );
        }
    }
    Ok(())
}

#[test]
fn demo_scripts_parse() -> Result<()> {
    for e in std::fs::read_dir(docker_dir())? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "sh") {
            bash_syntax_ok(&p)?;
        }
    }
    Ok(())
}

#[test]
fn every_docker_config_passes_config_check() -> Result<()> {
    let compose = Compose::load()?;
    let dir = TestDir::new()?;
    let ca = only(compose.running("demo-ca.sh")?, "service running demo-ca.sh")?;
    run_service(
        &compose,
        &ca,
        &Rewrite::new(&compose, &ca, dir.path(), &BTreeMap::new())?,
        &[],
    )?;
    let bin = binary()?;
    for (name, file) in compose.relays()? {
        // Paths only: the addresses are not bound by `config check`.
        let rw = Rewrite::new(&compose, &name, dir.path(), &BTreeMap::new())?;
        let checked = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&checked, rw.apply(&read(&file)?))?;
        let path = checked.display().to_string();
        let out = run_cli(&bin, &["config", "check", &path])?;
        let text = output_text(&out);
        ensure!(
            out.status.success() && text.contains(": OK"),
            "{} (service {name}) fails `hopguard config check` ({}):\n{text}",
            file.display(),
            out.status
        );
    }
    Ok(())
}

/// The metrics line `series` must be present with value `value`.
fn has_sample(text: &str, series: &str, value: u32) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(series)
            .is_some_and(|v| v.trim().parse::<f64>() == Ok(f64::from(value)))
    })
}

#[test]
fn two_providers_relay_over_verified_tls() -> Result<()> {
    let compose = Compose::load()?;
    let dir = TestDir::new()?;
    let addrs: BTreeMap<Ipv4Addr, Ipv4Addr> = compose
        .ips()?
        .into_keys()
        .map(|ip| (ip, Net::alloc()))
        .collect();
    let local = |ip: Ipv4Addr| addrs.get(&ip).copied().context("no loopback address");
    let rewrite = |name: &str| Rewrite::new(&compose, name, dir.path(), &addrs);

    // The certificates, made by the demo's own script.
    let ca = only(compose.running("demo-ca.sh")?, "service running demo-ca.sh")?;
    run_service(&compose, &ca, &rewrite(&ca)?, &[])?;

    // The mail stores: Postfix in mailpit's place, for the domains the relays route to it.
    let cfgs = relay_configs(&compose)?;
    let mut stores: BTreeMap<String, Postfix> = BTreeMap::new();
    let mut store_of_domain: BTreeMap<String, String> = BTreeMap::new();
    for name in compose.with_image("axllent/mailpit")? {
        let ip = compose.ip(&name)?.context("mail store without address")?;
        let env = compose.env(&name)?;
        let bind = env.get("MP_SMTP_BIND_ADDR").context("MP_SMTP_BIND_ADDR")?;
        ensure!(ip_port(bind, 25)?.1 == 25, "the Postfix sink listens on 25");
        let rw = rewrite(&name)?;
        let file = |k: &str| -> Result<PathBuf> {
            rw.path(env.get(k).with_context(|| format!("{name}: no {k}"))?)
        };
        let cert = file("MP_SMTP_TLS_CERT")?;
        let mut domains = Vec::new();
        let mut hostname = None;
        for cfg in cfgs.values() {
            for (domain, hop, tls_name) in fixed_routes(cfg)? {
                if ip_port(&hop, 25)?.0 == ip {
                    store_of_domain.insert(domain.clone(), name.clone());
                    domains.push(domain);
                    hostname = hostname.or(tls_name);
                }
            }
        }
        ensure!(!domains.is_empty(), "no relay routes mail to {name}");
        let pf = Postfix::start(
            &dir.sub(&name)?,
            local(ip)?,
            PostfixOpts {
                tls: Some(CertFiles {
                    key: file("MP_SMTP_TLS_KEY")?,
                    ca: cert.clone(),
                    cert,
                }),
                domains,
                hostname,
            },
        )?;
        stores.insert(name, pf);
    }
    ensure!(stores.len() == 2, "expected two mail stores");

    // Both relays, from their docker/config files.
    let mut relays: BTreeMap<String, (Hopguard, SocketAddr)> = BTreeMap::new();
    for (name, file) in compose.relays()? {
        let yaml = rewrite(&name)?.apply(&read(&file)?);
        let cfg: Value = serde_saphyr::from_str(&yaml)?;
        let (m_ip, m_port) = listener_and_metrics(&cfg)?.1;
        std::fs::create_dir_all(str_of(&cfg["spool_dir"], "spool_dir")?)?;
        let hg = Hopguard::start(&dir.sub(&name)?, &yaml)?;
        relays.insert(name, (hg, SocketAddr::from((m_ip, m_port))));
    }
    ensure!(relays.len() == 2, "expected two relays");
    let logs = || {
        relays
            .iter()
            .map(|(n, (hg, _))| format!("== {n} hopguard.log:\n{}", hg.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // One message from each provider's sender, as the demo sends them.
    let senders = compose.running("demo-send.sh")?;
    ensure!(
        senders.len() == 2,
        "expected two senders, found {senders:?}"
    );
    let mut sent = Vec::new();
    for name in &senders {
        let ip = compose.ip(name)?.context("sender without address")?;
        let env = compose.env(name)?;
        run_service(
            &compose,
            name,
            &rewrite(name)?,
            &[
                ("DEMO_COUNT", "1".to_owned()),
                ("DEMO_LOCAL_ADDR", local(ip)?.to_string()),
            ],
        )
        .with_context(logs)?;
        let from = env.get("DEMO_FROM").context("DEMO_FROM")?.clone();
        let to = env.get("DEMO_TO").context("DEMO_TO")?.clone();
        sent.push((from, to));
    }

    // Each arrives at the other provider's store, having crossed both relays over TLS 1.3.
    let hostnames: Vec<String> = cfgs
        .values()
        .map(|c| str_of(&c["hostname"], "hostname").map(str::to_owned))
        .collect::<Result<_>>()?;
    for (from, to) in &sent {
        let to_domain = to.rsplit('@').next().unwrap_or_default();
        let store = store_of_domain
            .get(to_domain)
            .and_then(|name| stores.get(name))
            .with_context(|| format!("no mail store for {to}"))?;
        let msg = store
            .wait_for_message(
                |m| {
                    header_values(m, "X-Hopguard-Demo")
                        .iter()
                        .any(|v| v.starts_with(from.as_str()))
                },
                DELIVERY,
            )
            .with_context(logs)?;
        ensure!(
            header_values(&msg, "Delivered-To")
                .iter()
                .any(|v| v.eq_ignore_ascii_case(to)),
            "not delivered to {to}:\n{msg}"
        );
        let rcvd = received(&msg);
        for h in &hostnames {
            let ours = rcvd
                .iter()
                .find(|r| r.contains(&format!("by {h} (hopguard)")))
                .with_context(|| format!("no Received by {h} in:\n{msg}"))?;
            ensure!(
                ours.contains("using TLSv1.3 with cipher"),
                "{h} did not receive over TLS 1.3: {ours}"
            );
        }
        ensure!(
            rcvd.first()
                .is_some_and(|r| r.contains("with ESMTPS") && r.contains("using TLSv1.3")),
            "the mail store did not receive over TLS 1.3:\n{msg}"
        );
    }

    // Both relays' metrics: the charter hop encrypted outbound and verified against the peer's
    // pinned CA (`peers[].outbound.ca_file`: verify="pinned"), received encrypted from the peer
    // inbound, delivered PKIX-verified to the local store, nothing in clear and no TLS failure.
    // (Sessions are not checked: the harness's readiness probe connects from 127.0.0.1, which
    // the rewrite made the peer's address, and leaves without TLS.)
    let peer_of = |relay: &str| -> Result<String> {
        let cfg = cfgs.get(relay).context("relay")?;
        Ok(str_of(&cfg["peers"][0]["name"], "peers[0].name")?.to_owned())
    };
    for (name, (_, metrics)) in &relays {
        let peer = peer_of(name)?;
        let expected = [
            format!(r#"hopguard_outbound_messages_total{{peer="{peer}",policy="charter",tls="TLSv1.3",verify="pinned",outcome="delivered"}}"#),
            format!(r#"hopguard_inbound_messages_total{{peer="{peer}",tls="TLSv1.3"}}"#),
            r#"hopguard_inbound_messages_total{peer="other",tls="TLSv1.3"}"#.to_owned(),
            r#"hopguard_outbound_messages_total{peer="other",policy="operator",tls="TLSv1.3",verify="pkix",outcome="delivered"}"#.to_owned(),
        ];
        let text = wait_until(
            &format!("{name}'s metrics to show both hops"),
            Duration::from_secs(30),
            || {
                let text = scrape_metrics(*metrics)?;
                Ok(expected
                    .iter()
                    .all(|s| has_sample(&text, s, 1))
                    .then_some(text))
            },
        )
        .with_context(|| {
            format!(
                "{}:\n{}",
                metrics,
                scrape_metrics(*metrics).unwrap_or_default()
            )
        })?;
        for zero in [
            format!(r#"hopguard_plaintext_deliveries_total{{peer="{peer}"}}"#),
            format!(r#"hopguard_inbound_messages_total{{peer="{peer}",tls="none"}}"#),
            format!(r#"hopguard_inbound_starttls_required_rejections_total{{peer="{peer}"}}"#),
        ] {
            ensure!(
                has_sample(&text, &zero, 0),
                "{name}: expected {zero} 0:\n{text}"
            );
        }
        ensure!(
            !text.contains("hopguard_tls_failures_total{"),
            "{name}: TLS failures recorded:\n{text}"
        );
    }
    Ok(())
}
