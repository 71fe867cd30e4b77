//! A real HTTPS server (nginx, Debian package) serving MTA-STS policy files, a curl client, and
//! [`PostSink`]: a Python 3 HTTPS server storing the POSTs it receives (TLS-RPT `https:` rua).
//!
//! Each [`Nginx`] has its own config, pid file, lock file, error/access logs and temp paths in
//! its own directory and listens only on `ADDR:443`; nothing machine-wide (`/etc/nginx`,
//! `/var/lib/nginx`, `/var/log/nginx`, `/run/nginx.pid`) is read or written. It runs as a
//! child process in the foreground (`daemon off;`) and in a single process
//! (`master_process off;`): the child's pid is the only nginx process, so stopping it by pid
//! (TERM, then KILL) can never leave orphaned workers holding port 443.
//!
//! One `server` block per [`Site`]: `listen ADDR:443 ssl;`, its `server_name`, its certificate
//! chain and key, TLS 1.2 and 1.3 only. Every file is served at exactly its URL path
//! (`location = PATH`) with exactly its content type (no charset is appended, no extension
//! guessing: `types {}` is empty), every other path answers 404. A request whose SNI names no
//! site is answered by the first site (nginx's default server), so a client asking for an
//! unknown name gets the first site's certificate and must fail verification.
//!
//! Policy files are re-read on every request (no `open_file_cache`), so [`Nginx::set_file`]
//! changes what the next fetch gets. `etag` and `if_modified_since` are off: nginx's ETag and
//! Last-Modified have one-second resolution and would answer 304 for a replaced file of the
//! same size within the same second.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ca::CertFiles;
use crate::net::wait_for_tcp_closed;
use crate::{read_lossy, signal_pid, wait_until};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where RFC 8461 puts the policy: `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`.
pub const MTA_STS_PATH: &str = "/.well-known/mta-sts.txt";

/// One virtual host of an [`Nginx`] instance.
#[derive(Clone, Debug)]
pub struct Site {
    /// The name the site answers to (SNI and `Host`), e.g. `mta-sts.example.test`.
    pub server_name: String,
    /// Certificate chain and key presented for this name.
    pub cert: CertFiles,
    /// `(url path, body, content type)`: the body served at exactly that path with exactly
    /// that `Content-Type` (e.g. `text/plain`, or `text/plain; charset=utf-8`).
    pub files: Vec<(String, String, String)>,
    /// `(url path, location)`: that path answers `301 Moved Permanently` to `location`.
    pub redirect: Option<(String, String)>,
}

impl Site {
    /// A site with no files and no redirect (every path answers 404).
    pub fn new(server_name: &str, cert: CertFiles) -> Self {
        Self {
            server_name: server_name.to_owned(),
            cert,
            files: Vec::new(),
            redirect: None,
        }
    }

    /// `server_name` serving `policy` at [`MTA_STS_PATH`] as `text/plain`.
    pub fn mta_sts(server_name: &str, cert: CertFiles, policy: &str) -> Self {
        Self::new(server_name, cert).file(MTA_STS_PATH, policy, "text/plain")
    }

    /// Adds a file served at `path` with `content_type`.
    pub fn file(mut self, path: &str, body: &str, content_type: &str) -> Self {
        self.files
            .push((path.to_owned(), body.to_owned(), content_type.to_owned()));
        self
    }

    /// Makes `path` answer `301` with `Location: location`.
    pub fn redirect(mut self, path: &str, location: &str) -> Self {
        self.redirect = Some((path.to_owned(), location.to_owned()));
        self
    }
}

/// A served file: which site and path it belongs to, where its body lives on disk.
#[derive(Debug)]
struct Served {
    server_name: String,
    path: String,
    file: PathBuf,
}

/// A running nginx serving HTTPS on `ADDR:443`; stopped on drop.
pub struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
    served: Vec<Served>,
}

impl Nginx {
    /// Writes the config and the files under `dir`, starts nginx on `addr:443` and returns
    /// once it accepts TCP connections there. Fails (with nginx's log) if nginx rejects the
    /// config or cannot bind.
    pub fn start(dir: &Path, addr: Ipv4Addr, sites: Vec<Site>) -> Result<Nginx> {
        if sites.is_empty() {
            bail!("nginx needs at least one site");
        }
        let dir = std::path::absolute(dir)?;
        for sub in ["files", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let listen = SocketAddr::from((addr, 443));
        // nginx retries a busy address for seconds before giving up; say so at once.
        if let Err(e) = TcpListener::bind(listen) {
            bail!("{listen} is not free (a leftover server?): {e}");
        }
        let (conf, served) = config(&dir, listen, &sites)?;
        for (site, s) in sites.iter().zip(0..) {
            for ((_, body, _), f) in site.files.iter().zip(0..) {
                write_atomically(&served_file(&dir, s, f), body.as_bytes())?;
            }
        }
        let _ = std::fs::remove_file(dir.join("nginx.pid"));
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("writing {}", conf_path.display()))?;

        let out = std::fs::File::create(dir.join("nginx.out"))?;
        // -p: relative paths resolve here; -e: the log used before the config is read
        // (instead of the compiled-in one); -c: our config, no /etc/nginx include.
        let child = Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting nginx (Debian package nginx)")?;
        let mut nginx = Nginx {
            child: Some(child),
            dir,
            addr: listen,
            served,
        };
        // Ready once nginx wrote its pid file (it does so only after binding and listening)
        // and the port accepts; a port accepting alone could be someone else's listener.
        let pid_file = nginx.dir.join("nginx.pid");
        let started = wait_until(
            &format!("nginx to listen on {listen}"),
            START_TIMEOUT,
            || {
                let Some(child) = nginx.child.as_mut() else {
                    bail!("nginx is gone");
                };
                if let Some(status) = child.try_wait()? {
                    bail!("nginx exited during startup: {status}");
                }
                let pid_written = read_lossy(&pid_file).trim() == child.id().to_string();
                let accepts = pid_written
                    && TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok();
                Ok(accepts.then_some(()))
            },
        );
        if let Err(e) = started {
            let _ = nginx.stop();
            bail!("{e:#}\n{}", nginx.log());
        }
        Ok(nginx)
    }

    /// `ADDR:443`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding the config, files and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the body served at `path` of site `server_name` (atomically: a concurrent
    /// request gets the old or the new body, never a mix). Effective for the next request.
    pub fn set_file(&self, server_name: &str, path: &str, body: impl AsRef<[u8]>) -> Result<()> {
        let Some(s) = self
            .served
            .iter()
            .find(|s| s.server_name == server_name && s.path == path)
        else {
            bail!("nginx serves no file {path} for {server_name} (only files given to start)");
        };
        write_atomically(&s.file, body.as_ref())
    }

    /// The error log (level info: TLS handshake failures are there), the access log and
    /// nginx's own stdout/stderr, labelled.
    pub fn log(&self) -> String {
        format!(
            "nginx error.log:\n{}\nnginx access.log:\n{}\nnginx stdout/stderr:\n{}",
            read_lossy(&self.dir.join("error.log")),
            self.access_log(),
            read_lossy(&self.dir.join("nginx.out"))
        )
    }

    /// The access log, one line per request:
    /// `CLIENT sni=SNI host=HOST server=SERVER_NAME "REQUEST" STATUS BYTES`.
    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.join("access.log"))
    }

    /// How many GET requests for exactly `path` site `server_name` has answered (any status).
    pub fn requests(&self, server_name: &str, path: &str) -> usize {
        let needle = format!(" server={server_name} \"GET {path} ");
        self.access_log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// [`Self::requests`] once it reaches `n`, or after 5 s: nginx writes its access log line
    /// after the response, so a client can finish before its request is logged.
    pub fn requests_settled(&self, server_name: &str, path: &str, n: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let got = self.requests(server_name, path);
            if got >= n || std::time::Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops nginx: SIGTERM (fast shutdown), SIGKILL if it is still there after a while;
    /// returns once `ADDR:443` refuses connections.
    pub fn stop(&mut self) -> Result<()> {
        stop_server(self.child.take(), self.addr, "nginx")
    }
}

/// Stops a server this harness started: SIGTERM to its own pid, SIGKILL if it is still there
/// after a while; returns once `addr` refuses connections.
fn stop_server(child: Option<Child>, addr: SocketAddr, what: &str) -> Result<()> {
    let Some(mut child) = child else {
        return Ok(());
    };
    if child.try_wait()?.is_some() {
        // It exited on its own (e.g. could not bind): its sockets are gone with it.
        return Ok(());
    }
    let _ = signal_pid(child.id(), "TERM");
    let exited = wait_until(&format!("{what} to exit"), STOP_TIMEOUT, || {
        Ok(child.try_wait()?.map(|_| ()))
    });
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    wait_for_tcp_closed(addr, STOP_TIMEOUT)
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn served_file(dir: &Path, site: usize, file: usize) -> PathBuf {
    // No extension: nothing for a MIME type to be guessed from.
    dir.join("files").join(format!("site{site}-file{file}"))
}

/// Writes `bytes` to a temp file next to `path` and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The nginx.conf for `sites` and the list of files it serves.
fn config(dir: &Path, listen: SocketAddr, sites: &[Site]) -> Result<(String, Vec<Served>)> {
    let d = dir.display();
    let mut conf = format!(
        "\
# Written by hopguard-integration (integration/src/https.rs) for one test.
daemon off;
master_process off;
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log info;

events {{
    worker_connections 64;
}}

http {{
    log_format hopguard '$remote_addr sni=$ssl_server_name host=$host server=$server_name '
                        '\"$request\" $status $body_bytes_sent';
    access_log {d}/access.log hopguard;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server_names_hash_bucket_size 128;
    server_tokens off;
    etag off;
    if_modified_since off;
    types {{ }}
    default_type application/octet-stream;
"
    );
    let mut served = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (site, s) in sites.iter().zip(0..) {
        let name = &site.server_name;
        check_word("server_name", name)?;
        if names.contains(&name.as_str()) {
            bail!("two sites named {name}");
        }
        names.push(name);
        conf.push_str(&format!(
            "
    server {{
        listen {listen} ssl;
        server_name {name};
        ssl_certificate {};
        ssl_certificate_key {};
        ssl_protocols TLSv1.2 TLSv1.3;
",
            quote("ssl_certificate", &site.cert.cert.display().to_string())?,
            quote("ssl_certificate_key", &site.cert.key.display().to_string())?,
        ));
        let mut paths: Vec<&str> = Vec::new();
        for ((path, _, content_type), f) in site.files.iter().zip(0..) {
            check_path(name, path, &mut paths)?;
            let file = served_file(dir, s, f);
            conf.push_str(&format!(
                "        location = {path} {{ types {{ }} default_type {}; alias {}; }}\n",
                quote("content type", content_type)?,
                quote("file path", &file.display().to_string())?
            ));
            served.push(Served {
                server_name: name.clone(),
                path: path.clone(),
                file,
            });
        }
        if let Some((path, location)) = &site.redirect {
            check_path(name, path, &mut paths)?;
            conf.push_str(&format!(
                "        location = {path} {{ return 301 {}; }}\n",
                quote("redirect location", location)?
            ));
        }
        if !paths.contains(&"/") {
            conf.push_str("        location / { return 404; }\n");
        }
        conf.push_str("    }\n");
    }
    conf.push_str("}\n");
    Ok((conf, served))
}

/// Accepts an absolute URL path usable unquoted after `location =`, once per site.
fn check_path<'a>(site: &str, path: &'a str, seen: &mut Vec<&'a str>) -> Result<()> {
    check_word("URL path", path)?;
    if !path.starts_with('/') {
        bail!("URL path {path:?} of {site} does not start with /");
    }
    if seen.contains(&path) {
        bail!("{site} has two files/redirects at {path}");
    }
    seen.push(path);
    Ok(())
}

/// Accepts a value that nginx reads as one plain token: no space, quote, `;`, braces, `#`,
/// `$` (variables) or control characters.
fn check_word(what: &str, s: &str) -> Result<()> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "\"'\\;{}#$".contains(c);
    if s.is_empty() || s.chars().any(bad) {
        bail!("{what} {s:?} is empty or has characters nginx would interpret");
    }
    Ok(())
}

/// `s` as a double-quoted nginx string; refuses `$` (nginx expands variables in quoted
/// strings too, and has no escape for it), backslashes, quotes and control characters.
fn quote(what: &str, s: &str) -> Result<String> {
    if s.is_empty() || s.chars().any(|c| c.is_control() || "\"\\$".contains(c)) {
        bail!("{what} {s:?} is empty or cannot be written into nginx.conf");
    }
    Ok(format!("\"{s}\""))
}

/// What curl got back from one HTTPS request.
#[derive(Debug)]
pub struct CurlResponse {
    /// curl's exit code: 0 on any HTTP response, 60 when the certificate does not verify.
    pub exit: i32,
    /// The HTTP status (0 when there was no response).
    pub status: u16,
    /// Response header lines `(lowercased name, value)` of the final response.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// curl's error message (`curl: (60) SSL: no alternative certificate subject name ...`).
    pub stderr: String,
}

impl CurlResponse {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET url` with curl: the URL's host resolved to `addr` (`--resolve HOST:443:ADDR`), only
/// `ca` trusted, no redirects followed, HTTP/1.1, no proxy, no ~/.curlrc. `extra` args go
/// before the URL (e.g. `--tls-max 1.2`).
pub fn curl(url: &str, addr: Ipv4Addr, ca: &Path, extra: &[&str]) -> Result<CurlResponse> {
    let host = url
        .strip_prefix("https://")
        .and_then(|r| r.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .with_context(|| format!("not an https URL: {url}"))?;
    let out = Command::new("curl")
        .arg("-q") // must be first: ignore ~/.curlrc
        .args([
            "-sS",
            "-i",
            "--http1.1",
            "--noproxy",
            "*",
            "--max-time",
            "20",
        ])
        .arg("--resolve")
        .arg(format!("{host}:443:{addr}"))
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running curl (Debian package curl)")?;
    let exit = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (head, body) = stdout.split_once("\r\n\r\n").unwrap_or((&stdout, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(CurlResponse {
        exit,
        status,
        headers,
        body: body.to_owned(),
        stderr,
    })
}

/// The receiver behind [`PostSink`] (Python 3 standard library: `http.server`, `ssl`).
/// Arguments: ADDR PORT CERT KEY DIR. Each POST is stored as `DIR/posts/post-NNN.body` (the
/// raw body) and `DIR/posts/post-NNN.head` (request line, then header fields), the head
/// renamed into place last, and answered `200`. Other methods answer 405. `DIR/ready` holds
/// the pid once the socket listens. TLS handshake failures are logged by `http.server` on
/// stderr and never stop the loop.
const POST_SINK_PY: &str = r#"# Written by hopguard-integration (integration/src/https.rs) for one test.
import http.server, os, ssl, sys

addr, port, cert, key, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
posts = os.path.join(out, "posts")
os.makedirs(posts, exist_ok=True)
count = 0

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global count
        length = int(self.headers.get("Content-Length") or "0")
        body = self.rfile.read(length)
        count += 1
        base = os.path.join(posts, "post-%03d" % count)
        with open(base + ".body.tmp", "wb") as f:
            f.write(body)
        with open(base + ".head.tmp", "w") as f:
            f.write(self.requestline + "\n" + str(self.headers))
        os.rename(base + ".body.tmp", base + ".body")
        os.rename(base + ".head.tmp", base + ".head")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def do_GET(self):
        self.send_error(405)

server = http.server.HTTPServer((addr, port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(os.path.join(out, "ready.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(out, "ready.tmp"), os.path.join(out, "ready"))
sys.stderr.write("listening on %s:%d\n" % (addr, port))
sys.stderr.flush()
server.serve_forever()
"#;

/// One request a [`PostSink`] stored.
#[derive(Debug)]
pub struct Post {
    /// `POST /path HTTP/1.1`.
    pub request_line: String,
    /// Header fields `(lowercased name, value)` in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Post {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTPS server on `ADDR:443` (Python 3, one process, its own directory) that stores every
/// POST it receives and answers `200`: the receiving end of TLS-RPT `https:` rua. Stopped by
/// its pid on drop.
pub struct PostSink {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl PostSink {
    /// Writes the script under `dir`, starts it on `addr:443` presenting `cert` and returns
    /// once it listens. Fails (with its log) if it exits or does not get ready in time.
    pub fn start(dir: &Path, addr: Ipv4Addr, cert: &CertFiles) -> Result<PostSink> {
        let dir = std::path::absolute(dir)?;
        std::fs::create_dir_all(dir.join("posts"))?;
        let listen = SocketAddr::from((addr, 443));
        if let Err(e) = TcpListener::bind(listen) {
            bail!("{listen} is not free (a leftover server?): {e}");
        }
        let script = dir.join("post_sink.py");
        std::fs::write(&script, POST_SINK_PY)
            .with_context(|| format!("writing {}", script.display()))?;
        let _ = std::fs::remove_file(dir.join("ready"));
        let out = std::fs::File::create(dir.join("sink.log"))?;
        let child = Command::new("python3")
            .arg("-I") // isolated: no user site-packages, no PYTHON* variables
            .arg(&script)
            .arg(addr.to_string())
            .arg("443")
            .arg(&cert.cert)
            .arg(&cert.key)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting python3 (the TLS-RPT POST receiver)")?;
        let mut sink = PostSink {
            child: Some(child),
            dir,
            addr: listen,
        };
        let ready = sink.dir.join("ready");
        let started = wait_until(
            &format!("the POST receiver to listen on {listen}"),
            START_TIMEOUT,
            || {
                let Some(child) = sink.child.as_mut() else {
                    bail!("the POST receiver is gone");
                };
                if let Some(status) = child.try_wait()? {
                    bail!("the POST receiver exited during startup: {status}");
                }
                Ok((read_lossy(&ready).trim() == child.id().to_string()).then_some(()))
            },
        );
        if let Err(e) = started {
            let _ = sink.stop();
            bail!("{e:#}\n{}", sink.log());
        }
        Ok(sink)
    }

    /// `ADDR:443`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The receiver's stderr: one line per request, TLS handshake failures.
    pub fn log(&self) -> String {
        format!(
            "POST receiver log:\n{}",
            read_lossy(&self.dir.join("sink.log"))
        )
    }

    /// Every POST stored so far, in arrival order.
    pub fn posts(&self) -> Result<Vec<Post>> {
        let posts = self.dir.join("posts");
        let mut heads: Vec<PathBuf> = std::fs::read_dir(&posts)
            .with_context(|| format!("reading {}", posts.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "head"))
            .collect();
        heads.sort();
        let mut out = Vec::new();
        for head in heads {
            let text = read_lossy(&head);
            let mut lines = text.lines();
            let request_line = lines.next().unwrap_or_default().to_owned();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let body_path = head.with_extension("body");
            let body = std::fs::read(&body_path)
                .with_context(|| format!("reading {}", body_path.display()))?;
            out.push(Post {
                request_line,
                headers,
                body,
            });
        }
        Ok(out)
    }

    /// Stops the receiver: SIGTERM to its pid, SIGKILL if still there after a while; returns
    /// once `ADDR:443` refuses connections.
    pub fn stop(&mut self) -> Result<()> {
        stop_server(self.child.take(), self.addr, "the POST receiver")
    }
}

impl Drop for PostSink {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
