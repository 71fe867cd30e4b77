//! TLS-RPT (RFC 8460): outbound hop results aggregated per policy domain and UTC day, and the
//! daily report (JSON, gzip) for the domains that publish `_smtp._tls`: mailed to each `mailto:`
//! rua (through our own queue), POSTed to each `https:` rua ([`super::tlsrpt_https`]).
//!
//! Aggregates are counted in memory and written to `spool_dir/tlsrpt/DAY/DOMAIN.json` by
//! `flush` (the relay calls it every second and at shutdown; no fsync: a crash costs at most
//! the last second's counts, never mail). Sessions that never reached TLS
//! negotiation (connection refused, DNS failures without a policy) are not TLS-RPT sessions.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hopguard_policy::PolicySource;
use serde::{Deserialize, Serialize};

use super::record::{Direction, HopRecord, Outcome};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailureCount {
    pub result_type: String,
    pub receiving_mx_hostname: String,
    #[serde(default)]
    pub receiving_ip: Option<String>,
    pub count: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyCounts {
    pub policy_type: String,
    /// The policy as last seen (RFC 8460 §4.4 `policy-string`): MTA-STS fields or TLSA records.
    #[serde(default)]
    pub policy_string: Vec<String>,
    pub mx_hosts: Vec<String>,
    pub success: u64,
    pub failures: BTreeMap<String, FailureCount>,
}

/// One domain's day: counts per policy type.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainDay {
    pub policies: BTreeMap<String, PolicyCounts>,
}

fn policy_type(p: Option<PolicySource>) -> &'static str {
    match p {
        Some(PolicySource::Dane) => "tlsa",
        Some(PolicySource::MtaSts) => "sts",
        _ => "no-policy-found",
    }
}

pub struct TlsRptStore {
    dir: PathBuf,
    /// (day, domain) → counts; `dirty` says which are newer than their file.
    cache: Mutex<Aggregates>,
    /// One flush at a time (the periodic one and the one at shutdown share tmp names).
    flushing: Mutex<()>,
}

#[derive(Default)]
struct Aggregates {
    days: HashMap<(String, String), DomainDay>,
    dirty: std::collections::HashSet<(String, String)>,
}

impl TlsRptStore {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            cache: Mutex::new(Aggregates::default()),
            flushing: Mutex::new(()),
        }
    }

    fn path(dir: &Path, day: &str, domain: &str) -> Option<PathBuf> {
        crate::config::is_domain_name(domain).then(|| dir.join(day).join(format!("{domain}.json")))
    }

    pub fn load(dir: &Path, day: &str, domain: &str) -> Option<DomainDay> {
        let text = std::fs::read_to_string(Self::path(dir, day, domain)?).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Domains with data on `day`.
    pub fn domains(dir: &Path, day: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(day))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Counts one outbound hop.
    pub fn record(&self, h: &HopRecord) {
        if h.direction != Direction::Outbound {
            return;
        }
        let Some(domain) = h.policy_domain.as_deref() else {
            return;
        };
        // An MTA-STS policy observed, not enforced (`testing`, or not fetchable) is still the
        // domain's published policy: the session is reported against it (RFC 8460 §4.3), with
        // the failure it would have caused.
        let sts_observed = h
            .observed
            .iter()
            .find(|o| o.source == PolicySource::MtaSts)
            .filter(|_| !matches!(h.policy, Some(PolicySource::Dane | PolicySource::MtaSts)));
        let (ptype, result_type) = match sts_observed {
            Some(o) => ("sts", h.result_type.or(o.result)),
            None => (policy_type(h.policy), h.result_type),
        };
        let success = h.tls.is_some()
            && result_type.is_none()
            && matches!(
                h.outcome,
                Outcome::Delivered | Outcome::Bounced | Outcome::Deferred
            );
        if !success && result_type.is_none() {
            return; // not a TLS session (e.g. connection refused)
        }
        let mx = h
            .remote_host
            .split('[')
            .next()
            .unwrap_or(&h.remote_host)
            .to_string();
        // DANE policies belong to MX hosts (each has its own TLSA records): one `tlsa` policy
        // per MX host (RFC 8460 §4.4, `mx-host`); MTA-STS and no-policy-found, one per domain.
        let mut policy_key = match ptype {
            "tlsa" if !mx.is_empty() => format!("tlsa {mx}"),
            other => other.to_string(),
        };
        let day = h.time.format("%Y-%m-%d").to_string();
        let key = (day.clone(), domain.to_string());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let cache = &mut *cache;
        cache.dirty.insert(key.clone());
        let entry = cache
            .days
            .entry(key)
            .or_insert_with(|| Self::load(&self.dir, &day, domain).unwrap_or_default());
        // A day begun by a version with one `tlsa` policy per domain goes on that way (else its
        // report would list an MX host twice).
        if ptype == "tlsa" && entry.policies.contains_key("tlsa") {
            policy_key = "tlsa".into();
        }
        let counts = entry
            .policies
            .entry(policy_key)
            .or_insert_with(|| PolicyCounts {
                policy_type: ptype.to_string(),
                ..Default::default()
            });
        let strings = match ptype {
            "sts" => &h.policy_strings.sts,
            "tlsa" => &h.policy_strings.tlsa,
            _ => &Vec::new(),
        };
        if !strings.is_empty() && counts.policy_string != *strings {
            counts.policy_string = strings.clone();
        }
        if !mx.is_empty() && !counts.mx_hosts.contains(&mx) {
            counts.mx_hosts.push(mx.clone());
        }
        match result_type {
            None => counts.success += 1,
            Some(rt) => {
                let ip = h.remote_ip.map(|i| i.to_string());
                let k = format!("{}|{}|{}", rt.as_str(), mx, ip.clone().unwrap_or_default());
                let f = counts.failures.entry(k).or_insert_with(|| FailureCount {
                    result_type: rt.as_str().to_string(),
                    receiving_mx_hostname: mx.clone(),
                    receiving_ip: ip,
                    count: 0,
                });
                f.count += 1;
            }
        }
    }

    /// Writes the aggregates counted since the last flush, and forgets the days that are over
    /// and written (the report for a day is read from its files). Blocking file I/O.
    pub fn flush(&self) {
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        // Yesterday stays in memory too: hops timed just before midnight may still arrive.
        let keep_from = (chrono::Utc::now() - chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string();
        let pending: Vec<((String, String), Vec<u8>)> = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let cache = &mut *cache;
            let dirty = std::mem::take(&mut cache.dirty);
            let pending = dirty
                .into_iter()
                .filter_map(|k| {
                    let json = serde_json::to_vec(cache.days.get(&k)?).ok()?;
                    Some((k, json))
                })
                .collect();
            cache.days.retain(|(day, _), _| *day >= keep_from);
            pending
        };
        for ((day, domain), json) in pending {
            let Some(path) = Self::path(&self.dir, &day, &domain) else {
                continue;
            };
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }
}

/// The RFC 8460 §4.4 JSON report for one domain and day.
pub fn report_json(
    submitter: &str,
    day: &str,
    domain: &str,
    data: &DomainDay,
) -> serde_json::Value {
    let policies: Vec<serde_json::Value> = data
        .policies
        .values()
        .map(|p| {
            let failed: u64 = p.failures.values().map(|f| f.count).sum();
            serde_json::json!({
                "policy": {
                    "policy-type": p.policy_type,
                    "policy-string": p.policy_string,
                    "policy-domain": domain,
                    "mx-host": p.mx_hosts,
                },
                "summary": {
                    "total-successful-session-count": p.success,
                    "total-failure-session-count": failed,
                },
                "failure-details": p.failures.values().map(|f| {
                    let mut d = serde_json::json!({
                        "result-type": f.result_type,
                        "receiving-mx-hostname": f.receiving_mx_hostname,
                        "failed-session-count": f.count,
                    });
                    if let Some(ip) = &f.receiving_ip {
                        d["receiving-ip"] = serde_json::json!(ip);
                    }
                    d
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "organization-name": submitter,
        "date-range": {
            "start-datetime": format!("{day}T00:00:00Z"),
            "end-datetime": format!("{day}T23:59:59Z"),
        },
        "contact-info": format!("postmaster@{submitter}"),
        "report-id": format!("{day}.{domain}@{submitter}"),
        "policies": policies,
    })
}

/// One reporting URI of a `rua=` field (RFC 8460 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rua {
    /// The address after `mailto:` (no header-injection characters).
    Mailto(String),
    /// A full `https://` URL that [`super::tlsrpt_https::HttpsUrl::parse`] accepts.
    Https(String),
}

/// The reporting URIs of a `v=TLSRPTv1; rua=...` record (RFC 8460 §3), in record order,
/// without duplicates. Only `mailto:` and `https://` URIs are kept (never `http://`); a
/// `mailto:` address must hold `@` and no CR, LF, `<`, `>` or space, an `https://` URL must
/// parse (no spaces, control or non-ASCII characters, no user info).
pub fn ruas(txt: &[String]) -> Vec<Rua> {
    let mut out = Vec::new();
    let records: Vec<&String> = txt
        .iter()
        .filter(|r| {
            r.trim_start()
                .strip_prefix("v=TLSRPTv1")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
        })
        .collect();
    // RFC 8460 §3: anything but exactly one TLSRPTv1 record means no TLS-RPT.
    if records.len() != 1 {
        return out;
    }
    for r in records {
        for field in r.split(';') {
            let Some(rua) = field.trim().strip_prefix("rua=") else {
                continue;
            };
            for uri in rua.split(',') {
                let uri = uri.trim();
                let found = if let Some(addr) = strip_scheme(uri, "mailto:") {
                    (addr.contains('@') && !addr.contains(['\r', '\n', '<', '>', ' ']))
                        .then(|| Rua::Mailto(addr.to_string()))
                } else if strip_scheme(uri, "https://").is_some() {
                    super::tlsrpt_https::HttpsUrl::parse(uri)
                        .is_ok()
                        .then(|| Rua::Https(uri.to_string()))
                } else {
                    None
                };
                if let Some(found) = found {
                    if !out.contains(&found) {
                        out.push(found);
                    }
                }
            }
        }
    }
    out
}

/// `uri` without its scheme prefix `scheme` (compared case-insensitively, RFC 3986 §3.1).
pub(crate) fn strip_scheme<'a>(uri: &'a str, scheme: &str) -> Option<&'a str> {
    let head = uri.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &uri[scheme.len()..])
}

/// gzip (RFC 1952) with stored deflate blocks (RFC 1951 §3.2.4): valid, uncompressed.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65_535).collect()
    };
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        out.push(u8::from(i + 1 == n));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The report mail (RFC 8460 §5.3): multipart/report with the gzipped JSON attached.
pub fn report_mail(
    submitter: &str,
    day: &str,
    domain: &str,
    to: &str,
    json: &serde_json::Value,
) -> Vec<u8> {
    use base64::Engine as _;
    let id = format!("{day}.{domain}@{submitter}");
    let gz = gzip_stored(json.to_string().as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(gz);
    let boundary = format!("tlsrpt-{day}-{domain}");
    let mut m = Vec::new();
    let _ = write!(
        m,
        "From: TLS reporting <noreply-tlsrpt@{submitter}>\r\nTo: <{to}>\r\nSubject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>\r\nTLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {submitter}\r\nDate: {date}\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis is an aggregate TLS report (RFC 8460) from {submitter} for {domain}, {day}.\r\n\r\n--{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment;\r\n\tfilename=\"{submitter}!{domain}!{day}T00:00:00Z!{day}T23:59:59Z!{id}.json.gz\"\r\n\r\n",
        date = chrono::Utc::now().to_rfc2822(),
    );
    for line in b64.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    let _ = write!(m, "\r\n--{boundary}--\r\n");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_readable_by_gzip() {
        let data = b"{\"hello\":\"tlsrpt\"}".repeat(5000);
        let gz = gzip_stored(&data);
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&gz).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    fn hop(policy: Option<PolicySource>, observed: Vec<super::super::Observed>) -> HopRecord {
        HopRecord {
            time: chrono::Utc::now(),
            direction: Direction::Outbound,
            peer: "other".into(),
            remote_ip: None,
            remote_host: "mx.a.test[127.0.0.9]".into(),
            tls: Some(super::super::TlsFacts {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                cert_sha256: None,
                spki_sha256: None,
            }),
            verification: hopguard_policy::VerifyMethod::None,
            policy,
            outcome: Outcome::Delivered,
            result_type: None,
            reply_code: None,
            queue_id: None,
            message_id_hash: None,
            size: None,
            recipients: 1,
            latency: None,
            policy_domain: Some("a.test".into()),
            observed,
            policy_strings: Default::default(),
        }
    }

    #[test]
    fn observed_sts_policies_are_reported_against_sts() {
        use super::super::Observed;
        use hopguard_policy::ResultType;
        let dir = tempfile::tempdir().unwrap();
        let store = TlsRptStore::new(dir.path().to_path_buf());
        let sts_fail = Observed {
            source: PolicySource::MtaSts,
            result: Some(ResultType::CertificateHostMismatch),
        };
        let sts_pass = Observed {
            source: PolicySource::MtaSts,
            result: None,
        };
        let charter_fail = Observed {
            source: PolicySource::Charter,
            result: Some(ResultType::CertificateNotTrusted),
        };
        // Delivered under the operator's policy while MTA-STS `testing` would have failed.
        store.record(&hop(Some(PolicySource::Operator), vec![sts_fail]));
        store.record(&hop(Some(PolicySource::Operator), vec![sts_pass]));
        // A report-only charter is not a published policy: not in TLS-RPT.
        store.record(&hop(Some(PolicySource::Operator), vec![charter_fail]));
        // DANE enforced: reported against tlsa even if an MTA-STS policy was observed.
        store.record(&hop(Some(PolicySource::Dane), vec![sts_fail]));
        store.flush();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let data = TlsRptStore::load(dir.path(), &day, "a.test").unwrap();
        let sts = &data.policies["sts"];
        assert_eq!(sts.success, 1);
        assert_eq!(sts.mx_hosts, ["mx.a.test"]);
        let f: Vec<_> = sts.failures.values().collect();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].result_type.as_str(), f[0].count),
            ("certificate-host-mismatch", 1)
        );
        assert_eq!(data.policies["no-policy-found"].success, 1);
        assert_eq!(data.policies["tlsa mx.a.test"].success, 1);
        assert!(data.policies["tlsa mx.a.test"].failures.is_empty());
    }

    #[test]
    fn policy_strings_reach_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = TlsRptStore::new(dir.path().to_path_buf());
        let mut dane = hop(Some(PolicySource::Dane), vec![]);
        dane.policy_strings.tlsa = vec!["_25._tcp.mx.a.test. IN TLSA 3 1 1 AB".into()];
        dane.policy_strings.sts = vec!["version: STSv1".into()];
        store.record(&dane);
        let mut sts = hop(Some(PolicySource::MtaSts), vec![]);
        sts.policy_strings.sts = vec!["version: STSv1".into(), "mode: enforce".into()];
        store.record(&sts);
        store.flush();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let data = TlsRptStore::load(dir.path(), &day, "a.test").unwrap();
        let json = report_json("relay.test", &day, "a.test", &data);
        let policies = json["policies"].as_array().unwrap();
        let by_type = |t: &str| {
            policies
                .iter()
                .find(|p| p["policy"]["policy-type"] == t)
                .map(|p| p["policy"]["policy-string"].clone())
                .unwrap()
        };
        assert_eq!(
            by_type("tlsa"),
            serde_json::json!(["_25._tcp.mx.a.test. IN TLSA 3 1 1 AB"])
        );
        assert_eq!(
            by_type("sts"),
            serde_json::json!(["version: STSv1", "mode: enforce"])
        );
    }

    #[test]
    fn each_dane_mx_host_is_a_policy_of_its_own() {
        use hopguard_policy::ResultType;
        let dir = tempfile::tempdir().unwrap();
        let store = TlsRptStore::new(dir.path().to_path_buf());
        let mut one = hop(Some(PolicySource::Dane), vec![]);
        one.policy_strings.tlsa = vec!["_25._tcp.mx1.a.test. IN TLSA 3 1 1 AA".into()];
        one.remote_host = "mx1.a.test[127.0.0.9]".into();
        store.record(&one);
        store.record(&one);
        let mut two = hop(Some(PolicySource::Dane), vec![]);
        two.policy_strings.tlsa = vec!["_25._tcp.mx2.a.test. IN TLSA 2 0 1 BB".into()];
        two.remote_host = "mx2.a.test[127.0.0.10]".into();
        two.result_type = Some(ResultType::TlsaInvalid);
        two.outcome = Outcome::Deferred;
        store.record(&two);
        store.record(&hop(None, vec![]));
        store.record(&hop(None, vec![]));
        store.flush();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let data = TlsRptStore::load(dir.path(), &day, "a.test").unwrap();
        let json = report_json("relay.test", &day, "a.test", &data);
        let policies = json["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 3, "{json}");
        let tlsa: Vec<&serde_json::Value> = policies
            .iter()
            .filter(|p| p["policy"]["policy-type"] == "tlsa")
            .collect();
        assert_eq!(tlsa.len(), 2);
        let mx1 = tlsa
            .iter()
            .find(|p| p["policy"]["mx-host"] == serde_json::json!(["mx1.a.test"]))
            .unwrap();
        assert_eq!(
            mx1["policy"]["policy-string"],
            serde_json::json!(["_25._tcp.mx1.a.test. IN TLSA 3 1 1 AA"])
        );
        assert_eq!(mx1["summary"]["total-successful-session-count"], 2);
        let mx2 = tlsa
            .iter()
            .find(|p| p["policy"]["mx-host"] == serde_json::json!(["mx2.a.test"]))
            .unwrap();
        assert_eq!(
            mx2["policy"]["policy-string"],
            serde_json::json!(["_25._tcp.mx2.a.test. IN TLSA 2 0 1 BB"])
        );
        assert_eq!(mx2["summary"]["total-failure-session-count"], 1);
        assert_eq!(mx2["failure-details"][0]["result-type"], "tlsa-invalid");
        let none = policies
            .iter()
            .find(|p| p["policy"]["policy-type"] == "no-policy-found")
            .unwrap();
        assert_eq!(none["summary"]["total-successful-session-count"], 2);
    }

    #[test]
    fn a_day_begun_before_the_upgrade_lists_each_mx_host_once() {
        let dir = tempfile::tempdir().unwrap();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let old = DomainDay {
            policies: BTreeMap::from([(
                "tlsa".to_string(),
                PolicyCounts {
                    policy_type: "tlsa".into(),
                    policy_string: vec!["_25._tcp.mx2.a.test. IN TLSA 2 0 1 BB".into()],
                    mx_hosts: vec!["mx1.a.test".into(), "mx2.a.test".into()],
                    success: 5,
                    failures: BTreeMap::new(),
                },
            )]),
        };
        std::fs::create_dir_all(dir.path().join(&day)).unwrap();
        std::fs::write(
            dir.path().join(&day).join("a.test.json"),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let store = TlsRptStore::new(dir.path().to_path_buf());
        let mut one = hop(Some(PolicySource::Dane), vec![]);
        one.remote_host = "mx1.a.test[127.0.0.9]".into();
        store.record(&one);
        store.flush();
        let data = TlsRptStore::load(dir.path(), &day, "a.test").unwrap();
        assert_eq!(data.policies.len(), 1);
        assert_eq!(data.policies["tlsa"].success, 6);
    }

    #[test]
    fn not_exactly_one_record_means_no_tlsrpt() {
        let one = "v=TLSRPTv1; rua=mailto:a@b.test".to_string();
        assert_eq!(ruas(std::slice::from_ref(&one)).len(), 1);
        assert!(ruas(&[one.clone(), "v=TLSRPTv1;rua=mailto:c@d.test".into()]).is_empty());
        assert_eq!(ruas(&[one.clone(), "v=spf1 -all".into()]).len(), 1);
        assert!(ruas(&["v=TLSRPTv10; rua=mailto:a@b.test".into()]).is_empty());
    }

    #[test]
    fn rua_parsing() {
        let txt = vec![
            "v=TLSRPTv1; rua=mailto:tls@a.example,https://r.example/x".to_string(),
            "other".into(),
        ];
        assert_eq!(
            ruas(&txt),
            [
                Rua::Mailto("tls@a.example".into()),
                Rua::Https("https://r.example/x".into())
            ]
        );
        assert!(ruas(&["v=STSv1; id=1".to_string()]).is_empty());
        assert!(ruas(&["v=TLSRPTv1; rua=mailto:evil\r\nBcc:x@y".to_string()]).is_empty());
        // Spaces around the comma, scheme case, port and query, duplicates dropped.
        let txt = [
            "v=TLSRPTv1;rua=HTTPS://R.example:8443/rpt?k=v , mailto:a@b.example,mailto:a@b.example"
                .to_string(),
        ];
        assert_eq!(
            ruas(&txt),
            [
                Rua::Https("HTTPS://R.example:8443/rpt?k=v".into()),
                Rua::Mailto("a@b.example".into())
            ]
        );
        // Never http://, never a URL with control characters, spaces, user info or no host.
        for bad in [
            "http://r.example/x",
            "https://r.example/a\tb",
            "https://r.example/a\r\nX-Injected: 1",
            "https://r.example/a b",
            "https://user@r.example/x",
            "https:///x",
            "https://r.example:0/x",
            "https://r.example:99999/x",
            "https://[::1]/x",
            "https://r.exämple/x",
            "ftp://r.example/x",
        ] {
            let txt = [format!("v=TLSRPTv1; rua={bad}")];
            assert!(ruas(&txt).is_empty(), "{bad:?} accepted");
        }
    }
}
