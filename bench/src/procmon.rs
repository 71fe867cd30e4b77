//! CPU time and memory of a relay's whole process tree.
//!
//! A relay is started inside a cpuacct cgroup created for it (`/sys/fs/cgroup/cpuacct/NAME`):
//! the shell that execs the start command writes its own pid to `cgroup.procs`, so only
//! processes this benchmark started are ever placed in it, and every process the relay forks
//! (Postfix's smtpd, cleanup, qmgr, smtp, tlsproxy… including short-lived ones) is counted by
//! `cpuacct.usage`. Without cgroup v1 cpuacct the fallback sums utime+stime+cutime+cstime from
//! `/proc/PID/stat` over the descendants of the root pid (children reaped by the master count
//! through its cutime/cstime).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";

/// The process group of one relay: a cgroup, or a root pid.
#[derive(Debug)]
pub struct Tree {
    pub name: String,
    cgroup: Option<PathBuf>,
    root_pid: std::sync::atomic::AtomicU32,
}

impl Tree {
    /// Creates the cgroup `CPUACCT/NAME` if cgroup v1 cpuacct is available.
    pub fn new(name: &str) -> Self {
        let base = Path::new(CPUACCT);
        let cgroup = if base.join("cgroup.procs").exists() {
            let p = base.join(name);
            match std::fs::create_dir_all(&p) {
                Ok(()) if p.join("cpuacct.usage").exists() => Some(p),
                _ => None,
            }
        } else {
            None
        };
        Self {
            name: name.to_string(),
            cgroup,
            root_pid: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Sets the pid whose descendants form the tree (used without a cgroup).
    pub fn set_root(&self, pid: u32) {
        self.root_pid
            .store(pid, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn has_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    /// A shell prefix that moves the shell itself into the cgroup, then execs the command:
    /// `sh -c 'echo $$ > …/cgroup.procs; exec "$@"' sh CMD ARGS…`.
    pub fn wrap(&self, cmd: &[String]) -> Vec<String> {
        match &self.cgroup {
            Some(cg) => {
                let mut v = vec![
                    "sh".to_string(),
                    "-c".to_string(),
                    format!("echo $$ > '{}/cgroup.procs' && exec \"$@\"", cg.display()),
                    "sh".to_string(),
                ];
                v.extend(cmd.iter().cloned());
                v
            }
            None => cmd.to_vec(),
        }
    }

    /// Every live process of the relay.
    pub fn pids(&self) -> Vec<u32> {
        if let Some(cg) = &self.cgroup {
            if let Ok(s) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                return s.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
        match self.root_pid.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Vec::new(),
            root => descendants(root),
        }
    }

    /// CPU seconds used so far by the tree (user + system).
    pub fn cpu_seconds(&self) -> Result<f64> {
        if let Some(cg) = &self.cgroup {
            let s = std::fs::read_to_string(cg.join("cpuacct.usage"))
                .context("reading cpuacct.usage")?;
            return Ok(s.trim().parse::<u64>()? as f64 / 1e9);
        }
        let tck = clock_ticks() as f64;
        let mut ticks = 0u64;
        for pid in self.pids() {
            if let Some(f) = stat_fields(pid) {
                // fields after the comm: index 11..=14 are utime stime cutime cstime
                ticks += f.get(11..15).map(|v| v.iter().sum()).unwrap_or(0);
            }
        }
        Ok(ticks as f64 / tck)
    }

    /// Memory now: (sum of RSS, sum of PSS) over the tree, in bytes.
    pub fn memory(&self, with_pss: bool) -> (u64, u64) {
        let page = 4096u64;
        let mut rss = 0;
        let mut pss = 0;
        for pid in self.pids() {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
                rss += s
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    * page;
            }
            if with_pss {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                    pss += s
                        .lines()
                        .find(|l| l.starts_with("Pss:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                        * 1024;
                }
            }
        }
        (rss, pss)
    }

    /// Removes the cgroup (once its processes are gone).
    pub fn remove(&self) {
        if let Some(cg) = &self.cgroup {
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            eprintln!("hopguard-bench: could not remove {}", cg.display());
        }
    }
}

/// Fields of /proc/PID/stat after the `(comm)`, as numbers (non-numeric: 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect(),
    )
}

fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid).and_then(|f| f.get(1).map(|&p| p as u32))
}

/// `root` and all its descendants.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(pp) = ppid(pid) {
                    all.push((pid, pp));
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Samples the tree's memory every `every` until stopped; keeps the peaks.
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl PeakSampler {
    pub fn start(tree: std::sync::Arc<Tree>, every: std::time::Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut rss, mut pss) = (0, 0);
            loop {
                let (r, p) = tree.memory(true);
                rss = rss.max(r);
                pss = pss.max(p);
                if s.load(std::sync::atomic::Ordering::Relaxed) {
                    return (rss, pss);
                }
                std::thread::sleep(every);
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; returns (peak RSS sum, peak PSS sum) in bytes.
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or((0, 0))
    }
}
