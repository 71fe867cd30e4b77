//! The load generator.
//!
//! `concurrency` workers each open STARTTLS sessions one after the other and send up to
//! `per_session` messages in each (MAIL, RCPT and DATA pipelined, as an MTA does), until
//! `count` messages in all have been sent. Each message carries `X-Bench-Id: RUN.SEQ` and
//! `X-Bench-Sent: NS`. The submit latency of a message is from writing MAIL to reading the
//! `250` after the final `.`; the time of that `250` is kept per message, and when a
//! `record_dir` is given the run waits for the sink's `RUN.arrivals` file to list every
//! accepted message and computes the 250→arrival latency and the end-to-end rate.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::smtp::expect;
use crate::stats::percentile;

/// Time limit for any single SMTP step (connect, reply, handshake).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Give up a run after this many failed sessions.
const MAX_FAILURES: usize = 50;

#[derive(Clone, Debug)]
pub struct LoadOpts {
    pub target: SocketAddr,
    pub tls_name: String,
    pub ca: PathBuf,
    /// Local addresses to connect from, round robin (empty: the kernel's choice).
    pub sources: Vec<Ipv4Addr>,
    pub concurrency: usize,
    pub per_session: usize,
    pub count: usize,
    pub size: usize,
    pub run_id: String,
    pub mail_from: String,
    pub rcpt: String,
    /// The sink's record directory: wait for arrivals there.
    pub record_dir: Option<PathBuf>,
    pub drain_timeout: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub run_id: String,
    pub accepted: usize,
    pub failed_sessions: usize,
    pub first_error: Option<String>,
    pub start_ns: u64,
    pub last_250_ns: u64,
    /// Submit rate: accepted / (last 250 − start).
    pub submit_rate: f64,
    pub submit_p50_ms: f64,
    pub submit_p99_ms: f64,
    /// Messages of this run the sink recorded (unique ids), when waited for.
    pub arrived: Option<usize>,
    pub last_arrival_ns: u64,
    /// End-to-end rate: arrived / (last arrival − start).
    pub e2e_rate: Option<f64>,
    pub arrival_p50_ms: Option<f64>,
    pub arrival_p99_ms: Option<f64>,
}

impl LoadReport {
    pub fn to_json(&self) -> String {
        fn f(v: Option<f64>) -> String {
            v.filter(|x| x.is_finite())
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "null".into())
        }
        format!(
            "{{\"run\":\"{}\",\"accepted\":{},\"failed_sessions\":{},\"first_error\":{},\
             \"submit_rate\":{},\"submit_p50_ms\":{},\"submit_p99_ms\":{},\"arrived\":{},\
             \"e2e_rate\":{},\"arrival_p50_ms\":{},\"arrival_p99_ms\":{}}}",
            self.run_id,
            self.accepted,
            self.failed_sessions,
            self.first_error
                .as_ref()
                .map(|e| format!("{:?}", e))
                .unwrap_or_else(|| "null".into()),
            f(Some(self.submit_rate)),
            f(Some(self.submit_p50_ms)),
            f(Some(self.submit_p99_ms)),
            self.arrived
                .map(|a| a.to_string())
                .unwrap_or_else(|| "null".into()),
            f(self.e2e_rate),
            f(self.arrival_p50_ms),
            f(self.arrival_p99_ms),
        )
    }
}

/// One accepted message: sequence number, MAIL written, 250 read (wall-clock ns).
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: usize,
    start_ns: u64,
    done_ns: u64,
}

pub type Session = BufReader<TlsStream<TcpStream>>;

/// Connects from `src`, reads the greeting, EHLO, STARTTLS, handshake, EHLO again.
pub async fn open_session(
    target: SocketAddr,
    src: Option<Ipv4Addr>,
    connector: &TlsConnector,
    tls_name: &ServerName<'static>,
) -> Result<Session> {
    let sock = TcpSocket::new_v4()?;
    if let Some(src) = src {
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
            .with_context(|| format!("binding {src}"))?;
    }
    let tcp = tokio::time::timeout(STEP_TIMEOUT, sock.connect(target))
        .await
        .context("connect timeout")?
        .with_context(|| format!("connecting to {target}"))?;
    tcp.set_nodelay(true)?;
    let mut r = BufReader::new(tcp);
    step(expect(&mut r, 220, "greeting")).await?;
    r.write_all(b"EHLO load.bench.test\r\n").await?;
    step(expect(&mut r, 250, "EHLO")).await?;
    r.write_all(b"STARTTLS\r\n").await?;
    step(expect(&mut r, 220, "STARTTLS")).await?;
    if !r.buffer().is_empty() {
        bail!("server sent data after its STARTTLS reply");
    }
    let tls = tokio::time::timeout(
        STEP_TIMEOUT,
        connector.connect(tls_name.clone(), r.into_inner()),
    )
    .await
    .context("TLS handshake timeout")?
    .context("TLS handshake")?;
    let mut r = BufReader::with_capacity(16 * 1024, tls);
    r.write_all(b"EHLO load.bench.test\r\n").await?;
    r.flush().await?;
    step(expect(&mut r, 250, "EHLO after STARTTLS")).await?;
    Ok(r)
}

async fn step<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .context("timeout waiting for a reply")?
}

/// The message body (after the per-message headers): lines of 76 letters up to about `size`.
fn body(size: usize) -> Vec<u8> {
    let line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx\r\n";
    let want = size.saturating_sub(320).max(line.len());
    let mut b = Vec::with_capacity(want + line.len() + 8);
    while b.len() < want {
        b.extend_from_slice(line);
    }
    b.extend_from_slice(b".\r\n");
    b
}

fn headers(o: &LoadOpts, seq: usize, now: u64) -> String {
    format!(
        "From: <{from}>\r\nTo: <{rcpt}>\r\nSubject: bench {run} {seq}\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{run}.{seq}@load.bench.test>\r\n\
         X-Bench-Id: {run}.{seq}\r\nX-Bench-Sent: {now}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        from = o.mail_from,
        rcpt = o.rcpt,
        run = o.run_id,
    )
}

/// Runs the load and (with `record_dir`) waits for the arrivals.
pub async fn run(o: LoadOpts) -> Result<LoadReport> {
    if !crate::sink::valid_run(&o.run_id) {
        bail!("run id must be [A-Za-z0-9_-]+");
    }
    let connector = TlsConnector::from(crate::tls::client_config(&o.ca)?);
    let tls_name = ServerName::try_from(o.tls_name.clone())?;
    let body = Arc::new(body(o.size));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let o = Arc::new(o);
    let start_ns = crate::now_ns();
    let mut tasks = Vec::new();
    for w in 0..o.concurrency.max(1) {
        let (o, connector, tls_name, body, next, failures, first_error) = (
            o.clone(),
            connector.clone(),
            tls_name.clone(),
            body.clone(),
            next.clone(),
            failures.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sent: Vec<Sent> = Vec::new();
            let mut session_no = 0usize;
            while next.load(Ordering::Relaxed) < o.count
                && failures.load(Ordering::Relaxed) < MAX_FAILURES
            {
                let src = (!o.sources.is_empty())
                    .then(|| o.sources[(w + session_no * o.concurrency) % o.sources.len()]);
                session_no += 1;
                let res =
                    worker_session(&o, src, &connector, &tls_name, &body, &next, &mut sent).await;
                if let Err(e) = res {
                    failures.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut fe = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        if fe.is_none() {
                            *fe = Some(format!("{e:#}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            sent
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await?);
    }
    let mut rep = LoadReport {
        run_id: o.run_id.clone(),
        accepted: sent.len(),
        failed_sessions: failures.load(Ordering::Relaxed),
        first_error: first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        start_ns,
        ..Default::default()
    };
    rep.last_250_ns = sent.iter().map(|s| s.done_ns).max().unwrap_or(start_ns);
    let secs = (rep.last_250_ns.saturating_sub(start_ns)) as f64 / 1e9;
    rep.submit_rate = if secs > 0.0 {
        sent.len() as f64 / secs
    } else {
        0.0
    };
    let mut lat: Vec<u64> = sent
        .iter()
        .map(|s| s.done_ns.saturating_sub(s.start_ns))
        .collect();
    rep.submit_p50_ms = percentile(&mut lat, 0.50).unwrap_or(0) as f64 / 1e6;
    rep.submit_p99_ms = percentile(&mut lat, 0.99).unwrap_or(0) as f64 / 1e6;

    if let Some(dir) = &o.record_dir {
        let arrivals = wait_arrivals(
            &dir.join(format!("{}.arrivals", o.run_id)),
            &sent,
            o.drain_timeout,
        )
        .await?;
        let mut lat = Vec::with_capacity(sent.len());
        let mut last = 0u64;
        for s in &sent {
            if let Some(&t) = arrivals.get(&s.seq) {
                lat.push(t.saturating_sub(s.done_ns));
                last = last.max(t);
            }
        }
        rep.arrived = Some(arrivals.len());
        rep.last_arrival_ns = last;
        let secs = last.saturating_sub(start_ns) as f64 / 1e9;
        rep.e2e_rate = (secs > 0.0).then(|| arrivals.len() as f64 / secs);
        rep.arrival_p50_ms = percentile(&mut lat, 0.50).map(|v| v as f64 / 1e6);
        rep.arrival_p99_ms = percentile(&mut lat, 0.99).map(|v| v as f64 / 1e6);
    }
    Ok(rep)
}

async fn worker_session(
    o: &LoadOpts,
    src: Option<Ipv4Addr>,
    connector: &TlsConnector,
    tls_name: &ServerName<'static>,
    body: &[u8],
    next: &AtomicUsize,
    sent: &mut Vec<Sent>,
) -> Result<()> {
    let mut r = open_session(o.target, src, connector, tls_name).await?;
    let envelope = format!(
        "MAIL FROM:<{}> SIZE={}\r\nRCPT TO:<{}>\r\nDATA\r\n",
        o.mail_from,
        body.len() + 400,
        o.rcpt
    );
    for _ in 0..o.per_session.max(1) {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= o.count {
            break;
        }
        let start_ns = crate::now_ns();
        r.write_all(envelope.as_bytes()).await?;
        r.flush().await?;
        step(expect(&mut r, 250, "MAIL")).await?;
        step(expect(&mut r, 250, "RCPT")).await?;
        step(expect(&mut r, 354, "DATA")).await?;
        r.write_all(headers(o, seq, start_ns).as_bytes()).await?;
        r.write_all(body).await?;
        r.flush().await?;
        step(expect(&mut r, 250, "end of data")).await?;
        sent.push(Sent {
            seq,
            start_ns,
            done_ns: crate::now_ns(),
        });
    }
    r.write_all(b"QUIT\r\n").await?;
    r.flush().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), crate::smtp::read_reply(&mut r)).await;
    Ok(())
}

/// Reads `path` as it grows until every accepted sequence number is in it (or the timeout);
/// returns the first arrival time of each sequence number of this run.
async fn wait_arrivals(
    path: &Path,
    sent: &[Sent],
    timeout: Duration,
) -> Result<HashMap<usize, u64>> {
    let deadline = Instant::now() + timeout;
    let mut arrivals: HashMap<usize, u64> = HashMap::with_capacity(sent.len());
    let mut offset = 0u64;
    let mut pending = String::new();
    loop {
        if let Ok(mut f) = std::fs::File::open(path) {
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = String::new();
            f.read_to_string(&mut buf)?;
            offset += buf.len() as u64;
            pending.push_str(&buf);
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                let mut it = line.split_whitespace();
                if let (Some(Ok(seq)), Some(Ok(t))) = (
                    it.next().map(str::parse::<usize>),
                    it.next().map(str::parse::<u64>),
                ) {
                    arrivals.entry(seq).or_insert(t);
                }
            }
        }
        if arrivals.len() >= sent.len() || Instant::now() >= deadline {
            return Ok(arrivals);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `n` STARTTLS sessions (after the second EHLO, idle before MAIL) from `sources`,
/// at most `parallel` handshakes at a time; returns the open sessions and the failures.
pub async fn open_idle(
    target: SocketAddr,
    tls_name: &str,
    ca: &Path,
    sources: &[Ipv4Addr],
    n: usize,
    parallel: usize,
) -> Result<(Vec<Session>, usize, Option<String>)> {
    let connector = TlsConnector::from(crate::tls::client_config(ca)?);
    let name = ServerName::try_from(tls_name.to_string())?;
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (connector, name, sem) = (connector.clone(), name.clone(), sem.clone());
        let src = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            open_session(target, src, &connector, &name).await
        }));
    }
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first = None;
    for t in tasks {
        match t.await? {
            Ok(s) => open.push(s),
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok((open, failed, first))
}
