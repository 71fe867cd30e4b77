//! Proves the HTTPS harness on its own (no relay): nginx serves MTA-STS policies with the exact
//! content type over verified TLS, redirects without being followed, changes a policy in
//! place, and a client asking for a name nginx has no certificate for fails verification.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};
use hopguard_integration::https::{curl, Nginx, Site, MTA_STS_PATH};
use hopguard_integration::{Net, TestCa, TestDir};

const GOOD: &str = "mta-sts.good.test";
const REDIRECT: &str = "mta-sts.redirect.test";
const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 86400\r\n";
const ELSEWHERE: &str = "https://mta-sts.elsewhere.test/.well-known/mta-sts.txt";

/// nginx on a fresh address with the good and the redirecting site; dir first so it is
/// dropped after nginx.
struct Scene {
    _dir: TestDir,
    ca: PathBuf,
    ip: Ipv4Addr,
    nginx: Nginx,
}

fn scene() -> Result<Scene> {
    let dir = TestDir::new()?;
    let ca = TestCa::new(dir.path())?;
    let good = ca.issue(dir.path(), "good", &[GOOD])?;
    let redirect = ca.issue(dir.path(), "redirect", &[REDIRECT])?;
    let ip = Net::alloc();
    let sites = vec![
        Site::mta_sts(GOOD, good, POLICY).file("/utf8.txt", "ü\n", "text/plain; charset=utf-8"),
        Site::new(REDIRECT, redirect).redirect(MTA_STS_PATH, ELSEWHERE),
    ];
    let nginx = Nginx::start(&dir.sub("nginx")?, ip, sites)?;
    Ok(Scene {
        ca: ca.ca_pem().to_owned(),
        _dir: dir,
        ip,
        nginx,
    })
}

fn url(host: &str) -> String {
    format!("https://{host}{MTA_STS_PATH}")
}

// The policy comes back byte for byte, as exactly `text/plain`, over TLS 1.2 and 1.3.
#[test]
fn serves_policy_as_text_plain() -> Result<()> {
    let s = scene()?;
    assert_eq!(s.nginx.addr(), SocketAddr::from((s.ip, 443)));
    let r = curl(&url(GOOD), s.ip, &s.ca, &[])?;
    ensure!(r.exit == 0 && r.status == 200, "{r:?}\n{}", s.nginx.log());
    ensure!(r.header("Content-Type") == Some("text/plain"), "{r:?}");
    ensure!(r.body == POLICY, "body {:?}", r.body);
    ensure!(
        s.nginx.requests_settled(GOOD, MTA_STS_PATH, 1) == 1,
        "{}",
        s.nginx.access_log()
    );

    for extra in [&["--tls-max", "1.2"][..], &["--tlsv1.3"][..]] {
        let r = curl(&url(GOOD), s.ip, &s.ca, extra)?;
        ensure!(r.status == 200 && r.body == POLICY, "{extra:?}: {r:?}");
    }
    ensure!(s.nginx.requests_settled(GOOD, MTA_STS_PATH, 3) == 3);

    // A content type with parameters is sent verbatim.
    let r = curl(&format!("https://{GOOD}/utf8.txt"), s.ip, &s.ca, &[])?;
    ensure!(r.status == 200 && r.body == "ü\n", "{r:?}");
    ensure!(
        r.header("content-type") == Some("text/plain; charset=utf-8"),
        "{r:?}"
    );

    // Any other path of the site is a 404.
    let r = curl(
        &format!("https://{GOOD}/.well-known/other.txt"),
        s.ip,
        &s.ca,
        &[],
    )?;
    ensure!(r.exit == 0 && r.status == 404, "{r:?}");
    Ok(())
}

// The redirecting site answers 301 with the Location; curl (like an MTA-STS fetcher) does not
// follow it.
#[test]
fn redirect_site_answers_301() -> Result<()> {
    let s = scene()?;
    let r = curl(&url(REDIRECT), s.ip, &s.ca, &[])?;
    ensure!(r.exit == 0 && r.status == 301, "{r:?}\n{}", s.nginx.log());
    ensure!(r.header("location") == Some(ELSEWHERE), "{r:?}");
    ensure!(!r.body.contains("STSv1"), "{r:?}");
    ensure!(s.nginx.requests_settled(REDIRECT, MTA_STS_PATH, 1) == 1);
    Ok(())
}

// set_file changes what the next fetch gets, including to a body of the same length within
// the same second (no 304, no cached ETag); files not given at start are refused.
#[test]
fn set_file_changes_the_policy() -> Result<()> {
    let s = scene()?;
    let first = curl(&url(GOOD), s.ip, &s.ca, &[])?;
    ensure!(first.body == POLICY, "{first:?}");

    let testing = POLICY.replace("enforce", "testing");
    s.nginx.set_file(GOOD, MTA_STS_PATH, &testing)?;
    let r = curl(&url(GOOD), s.ip, &s.ca, &[])?;
    ensure!(r.status == 200 && r.body == testing, "{r:?}");
    ensure!(r.header("content-type") == Some("text/plain"), "{r:?}");

    let same_len = POLICY.replace("enforce", "enforcE");
    s.nginx.set_file(GOOD, MTA_STS_PATH, &same_len)?;
    let r = curl(&url(GOOD), s.ip, &s.ca, &[])?;
    ensure!(r.status == 200 && r.body == same_len, "{r:?}");

    ensure!(s.nginx.set_file(GOOD, "/other", "x").is_err());
    ensure!(s.nginx.set_file(REDIRECT, MTA_STS_PATH, "x").is_err());
    Ok(())
}

// A name nginx has no site for gets the default (first) site's certificate: verification
// fails (curl exit 60) and no HTTP request reaches nginx.
#[test]
fn wrong_name_fails_verification() -> Result<()> {
    let s = scene()?;
    let wrong = "mta-sts.wrong.test";
    let r = curl(&url(wrong), s.ip, &s.ca, &[])?;
    ensure!(r.exit == 60 && r.status == 0, "{r:?}");
    ensure!(r.stderr.contains("subject name"), "{r:?}");
    ensure!(
        !s.nginx.access_log().contains(wrong),
        "{}",
        s.nginx.access_log()
    );

    // A CA the server's chain does not lead to fails as well.
    let other_dir = TestDir::new()?;
    let other_ca = TestCa::new(other_dir.path())?;
    let r = curl(&url(GOOD), s.ip, other_ca.ca_pem(), &[])?;
    ensure!(r.exit == 60, "{r:?}");
    Ok(())
}

// A site whose certificate names another host: its own name does not verify.
#[test]
fn mismatched_certificate_fails_verification() -> Result<()> {
    let dir = TestDir::new()?;
    let ca = TestCa::new(dir.path())?;
    let other = ca.issue(dir.path(), "other", &["mta-sts.other.test"])?;
    let ip = Net::alloc();
    let name = "mta-sts.mismatch.test";
    let nginx = Nginx::start(
        &dir.sub("nginx")?,
        ip,
        vec![Site::mta_sts(name, other, POLICY)],
    )?;
    let r = curl(&url(name), ip, ca.ca_pem(), &[])?;
    ensure!(r.exit == 60, "{r:?}\n{}", nginx.log());
    Ok(())
}

// stop() frees ADDR:443 (by pid, TERM); a second stop and the drop are no-ops.
#[test]
fn stop_frees_the_port() -> Result<()> {
    let mut s = scene()?;
    let addr = s.nginx.addr();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.nginx.stop()?;
    ensure!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
    s.nginx.stop()?;
    ensure!(
        !s.nginx.log().contains("[emerg]") && !s.nginx.log().contains("[alert]"),
        "{}",
        s.nginx.log()
    );
    Ok(())
}

// A taken address is refused at once; nginx refusing its config is an error carrying
// nginx's own message.
#[test]
fn start_failures_are_reported() -> Result<()> {
    let dir = TestDir::new()?;
    let ca = TestCa::new(dir.path())?;
    let cert = ca.issue(dir.path(), "x", &[GOOD])?;
    let site = Site::mta_sts(GOOD, cert.clone(), POLICY);

    let ip = Net::alloc();
    let squatter = std::net::TcpListener::bind((ip, 443))?;
    let Err(e) = Nginx::start(&dir.sub("taken")?, ip, vec![site.clone()]) else {
        anyhow::bail!("nginx started on a taken address");
    };
    ensure!(format!("{e:#}").contains("not free"), "{e:#}");
    drop(squatter);

    let mut broken = site;
    broken.cert.key = dir.path().join("no-such-key.pem");
    let Err(e) = Nginx::start(&dir.sub("broken")?, Net::alloc(), vec![broken]) else {
        anyhow::bail!("nginx started without its key");
    };
    let e = format!("{e:#}");
    ensure!(
        e.contains("exited during startup")
            && e.contains("[emerg]")
            && e.contains("no-such-key.pem"),
        "{e}"
    );
    Ok(())
}

// Values nginx would interpret are refused before any config is written.
#[test]
fn refuses_config_injection() -> Result<()> {
    let dir = TestDir::new()?;
    let ca = TestCa::new(dir.path())?;
    let cert = ca.issue(dir.path(), "x", &["x.test"])?;
    let ip = Net::alloc();
    let bad = [
        Site::new("x.test; include /etc/passwd", cert.clone()),
        Site::new("x.test", cert.clone()).file("/a b", "", "text/plain"),
        Site::new("x.test", cert.clone()).file("relative", "", "text/plain"),
        Site::new("x.test", cert.clone()).file("/a", "", "text/plain\"; alias /etc/passwd"),
        Site::new("x.test", cert.clone()).redirect("/r", "https://$host/"),
        Site::new("x.test", cert.clone())
            .file("/a", "", "text/plain")
            .redirect("/a", "https://y.test/"),
    ];
    for (i, site) in bad.into_iter().enumerate() {
        let d = dir.sub(&format!("n{i}"))?;
        ensure!(
            Nginx::start(&d, ip, vec![site.clone()]).is_err(),
            "accepted {site:?}"
        );
        ensure!(
            !d.join("nginx.conf").exists(),
            "wrote a config for {site:?}"
        );
    }
    Ok(())
}
