//! A real Prometheus (Debian package) scraping the relay, with hopguard's rules loaded, and a
//! small client for its HTTP query API.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::net::wait_for_tcp;

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `addr:9090`, scraping `targets` every second and evaluating
    /// `rule_files` every second. Its data lives in `dir`.
    pub fn start(
        dir: &Path,
        addr: Ipv4Addr,
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|r| format!("  - '{}'", r.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\nscrape_configs:\n  - job_name: hopguard\n    static_configs:\n      - targets: [{}]\n",
            rules.join("\n"),
            targets.join(", ")
        );
        let cfg_path = dir.join("prometheus.yml");
        std::fs::write(&cfg_path, config)?;
        let listen = SocketAddr::from((addr, 9090));
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`)")?;
        let p = Self {
            child,
            addr: listen,
            dir: dir.to_owned(),
        };
        wait_for_tcp(listen, Duration::from_secs(30))?;
        Ok(p)
    }

    pub fn log(&self) -> String {
        crate::read_lossy(&self.dir.join("prometheus.log"))
    }

    /// An instant query; returns the `data.result` array.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let body = format!("query={}", urlencode(expr));
        let v = self.post("/api/v1/query", &body)?;
        if v["status"] != "success" {
            bail!("query {expr:?} failed: {v}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of the single series of `expr` whose labels include `labels`.
    pub fn value(&self, expr: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        for r in self.query(expr)? {
            if labels.iter().all(|(k, v)| r["metric"][*k] == *v) {
                let s = r["value"][1].as_str().unwrap_or("NaN");
                return Ok(Some(s.parse().unwrap_or(f64::NAN)));
            }
        }
        Ok(None)
    }

    /// Active alerts (`/api/v1/alerts`).
    pub fn alerts(&self) -> Result<Vec<serde_json::Value>> {
        let v = self.get("/api/v1/alerts")?;
        Ok(v["data"]["alerts"].as_array().cloned().unwrap_or_default())
    }

    fn get(&self, path: &str) -> Result<serde_json::Value> {
        self.http(&format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        ))
    }

    fn post(&self, path: &str, body: &str) -> Result<serde_json::Value> {
        self.http(&format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        ))
    }

    fn http(&self, request: &str) -> Result<serde_json::Value> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(request.as_bytes())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("malformed HTTP response")?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        serde_json::from_str(&body).with_context(|| format!("bad JSON from prometheus: {body}"))
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
