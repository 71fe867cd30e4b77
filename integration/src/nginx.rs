//! A real HTTPS server (nginx, Debian package) serving MTA-STS policy files on 127.x.y.z:443,
//! one `server` block per policy host, each with its own certificate. Foreground child process,
//! its own prefix, config, pid file and logs; stopped by pid on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ca::CertFiles;
use crate::net::wait_for_tcp;

/// One HTTPS site: `server_name` with its certificate, serving `/.well-known/mta-sts.txt`.
pub struct StsSite {
    pub server_name: String,
    pub cert: CertFiles,
    /// The policy body (served as `text/plain`).
    pub policy: String,
}

pub struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    pub fn start(dir: &Path, addr: Ipv4Addr, sites: &[StsSite]) -> Result<Self> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let listen = SocketAddr::from((addr, 443));
        let mut servers = String::new();
        for s in sites {
            let site_dir = dir.join("sites").join(&s.server_name);
            std::fs::create_dir_all(&site_dir)?;
            let file = site_dir.join("mta-sts.txt");
            std::fs::write(&file, &s.policy)?;
            servers.push_str(&format!(
                "  server {{\n    listen {listen} ssl;\n    server_name {name};\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    location = /.well-known/mta-sts.txt {{\n      default_type text/plain;\n      alias {file};\n    }}\n    location / {{ return 404; }}\n  }}\n",
                name = s.server_name,
                cert = s.cert.cert.display(),
                key = s.cert.key.display(),
                file = file.display(),
            ));
        }
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n{servers}}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let log = std::fs::File::create(dir.join("stderr.log"))?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning nginx (Debian package nginx)")?;
        let mut n = Self {
            child: Some(child),
            dir: dir.to_owned(),
            addr: listen,
        };
        if let Err(e) = wait_for_tcp(listen, Duration::from_secs(20)) {
            let log = n.log();
            n.stop();
            bail!("nginx did not start: {e}\n{log}");
        }
        Ok(n)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> String {
        format!(
            "{}{}",
            crate::read_lossy(&self.dir.join("stderr.log")),
            crate::read_lossy(&self.dir.join("error.log"))
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = crate::signal_pid(c.id(), "TERM");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(crate::POLL_INTERVAL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
