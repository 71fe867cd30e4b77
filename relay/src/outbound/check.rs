//! `hopguard check DOMAIN`: what the relay would require for a destination and whether each
//! next hop meets it — the same routing and policy code as delivery, then a probe of each host
//! (connect, STARTTLS, verify as required, QUIT; no mail is sent).

use std::fmt::Write as _;
use std::net::SocketAddr;

use hickory_resolver::proto::rr::{RData, RecordType};

use super::client;
use super::route;
use super::RcptResult;
use crate::config::Loaded;
use crate::dns::Dns;

/// The report text, and whether every usable next hop met its policy.
pub async fn check(
    dns: &Dns,
    mta_sts: &super::mta_sts::MtaSts,
    loaded: &Loaded,
    domain: &str,
) -> (String, bool) {
    let mut out = String::new();
    let mx = dns.secure(domain, RecordType::MX).await;
    let _ = writeln!(out, "domain {domain}");
    let _ = writeln!(
        out,
        "  MX RRset: {} ({} records)",
        mx.status.as_str(),
        mx.records.len()
    );
    for r in &mx.records {
        if let RData::MX(m) = r {
            let host = m.exchange.to_ascii();
            let host = host.trim_end_matches('.');
            let tlsa = dns
                .secure(&format!("_25._tcp.{host}"), RecordType::TLSA)
                .await;
            let _ = writeln!(
                out,
                "  MX {} {host}: TLSA {} ({} records)",
                m.preference,
                tlsa.status.as_str(),
                tlsa.records.len()
            );
            for t in &tlsa.records {
                if let RData::TLSA(t) = t {
                    let _ = writeln!(
                        out,
                        "      TLSA {} {} {} {}",
                        u8::from(t.cert_usage),
                        u8::from(t.selector),
                        u8::from(t.matching),
                        hex::encode(&t.cert_data)
                    );
                }
            }
        }
    }
    let mut bogus = 0;
    let planned = route::plan(
        dns,
        mta_sts,
        loaded,
        domain,
        route::MessageTls::default(),
        &mut bogus,
    )
    .await;
    let route = match planned {
        Ok(r) => r,
        Err(RcptResult::Temporary(f)) | Err(RcptResult::Permanent(f)) => {
            let _ = writeln!(
                out,
                "  no usable next hop: {} {} {}",
                f.code, f.status, f.text
            );
            return (out, false);
        }
        Err(RcptResult::Delivered { .. }) => return (out, false),
    };
    if let Some(reason) = route.sts_failure {
        let _ = writeln!(out, "  MTA-STS policy fetch failed: {reason}");
    }
    let mut ok = true;
    for f in &route.refused {
        ok = false;
        let _ = writeln!(
            out,
            "  refused {}: {} ({})",
            f.remote.as_deref().unwrap_or("-"),
            f.text,
            f.reason.map(|r| r.as_str()).unwrap_or("-")
        );
    }
    let helo = &loaded.config.hostname;
    for c in &route.candidates {
        let _ = writeln!(
            out,
            "  next hop {}:{} requires {} (source {})",
            c.host,
            c.port,
            c.tls,
            c.source.as_str()
        );
        let addrs = match &c.addrs {
            Some(a) => a.clone(),
            None => match dns.addresses(&c.host).await {
                Ok(a) => a,
                Err(e) => {
                    ok = false;
                    let _ = writeln!(out, "    address lookup failed: {e}");
                    continue;
                }
            },
        };
        for ip in addrs {
            let (tls_cfg, dane) =
                loaded
                    .outbound_tls
                    .config_for(&c.tls, &c.reference_name, c.min_tls);
            let addr = SocketAddr::new(ip, c.port);
            match client::establish(
                addr,
                &c.reference_name,
                &c.tls,
                tls_cfg,
                dane,
                helo,
                &loaded.config.outbound,
            )
            .await
            {
                Ok(s) => {
                    let sec = s.security();
                    match &sec.tls {
                        Some(t) => {
                            let _ = writeln!(
                                out,
                                "    {ip}: OK {} {} verified by {} cert sha256 {}",
                                t.version,
                                t.cipher,
                                sec.verify_method().as_str(),
                                t.cert_sha256.as_deref().unwrap_or("-")
                            );
                        }
                        None => {
                            let _ = writeln!(out, "    {ip}: OK without TLS (opportunistic)");
                        }
                    }
                    s.quit().await;
                }
                Err(e) => {
                    ok = false;
                    let reason = match &e {
                        client::ClientError::Tls { reason, .. } => reason.as_str(),
                        _ => "connection",
                    };
                    let _ = writeln!(out, "    {ip}: FAIL [{reason}] {e}");
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "  verdict: {}",
        if ok {
            "every next hop meets its policy"
        } else {
            "a policy would fail"
        }
    );
    (out, ok)
}
