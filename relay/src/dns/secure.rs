//! DNS queries whose DNSSEC status matters (MX and TLSA for DANE, RFC 7672): sent with the AD
//! and DO bits to the configured resolvers — which must be a validating resolver reached over a
//! trusted path, e.g. a local unbound — and classified by the AD bit of the answer.
//!
//! A truncated UDP answer is retried over TCP, never read as "no records" (large TLSA or
//! DNSKEY sets exceed 1232 octets). SERVFAIL (how a validating resolver reports bogus data) is
//! `Bogus`; a timeout or another failure is `Indeterminate`. Neither ever means "no policy".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hopguard_policy::DnssecStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// An answer and how far it can be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureAnswer {
    pub status: DnssecStatus,
    /// Records of the asked type in the answer section (empty for NODATA/NXDOMAIN/failures).
    pub records: Vec<RData>,
    /// The name does not exist (NXDOMAIN).
    pub nxdomain: bool,
    /// The end of the CNAME chain from the asked name, when the answer has one (lowercase,
    /// without the trailing dot). The AD bit covers the whole chain.
    pub canonical: Option<String>,
}

impl SecureAnswer {
    fn failed(status: DnssecStatus) -> Self {
        Self {
            status,
            records: Vec::new(),
            nxdomain: false,
            canonical: None,
        }
    }
}

/// Follows the CNAME records of `answers` from `qname` (at most 8 steps, RFC 1034 §3.6.2
/// chains; a loop ends it): the last name reached, if any CNAME applied.
fn cname_target(answers: &[Record], qname: &Name) -> Option<String> {
    let mut current = qname.clone();
    let mut moved = false;
    for _ in 0..8 {
        let next = answers.iter().find_map(|r| match &r.data {
            // Name equality is ASCII case-insensitive.
            RData::CNAME(c) if r.name == current => Some(c.0.clone()),
            _ => None,
        });
        match next {
            Some(n) if n != current => {
                current = n;
                moved = true;
            }
            _ => break,
        }
    }
    moved.then(|| {
        current
            .to_lowercase()
            .to_ascii()
            .trim_end_matches('.')
            .to_string()
    })
}

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

fn message_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos as u16) ^ NEXT_ID.fetch_add(0x9e37, Ordering::Relaxed)
}

fn build_query(id: u16, name: &Name, rtype: RecordType) -> Option<Vec<u8>> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    // RFC 6840 §5.7: AD=1 in the query asks for the AD bit in the answer; DO asks for DNSSEC.
    msg.metadata.authentic_data = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.to_vec().ok()
}

/// Queries `name`/`rtype` at each resolver in turn until one answers.
pub async fn query(
    resolvers: &[SocketAddr],
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> SecureAnswer {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let Ok(name) = Name::from_ascii(&fqdn) else {
        return SecureAnswer::failed(DnssecStatus::Indeterminate);
    };
    let mut last = SecureAnswer::failed(DnssecStatus::Indeterminate);
    for server in resolvers {
        match exchange(*server, &name, rtype, timeout).await {
            Some(msg) => {
                let answer = classify(&msg, rtype);
                if answer.status != DnssecStatus::Indeterminate {
                    return answer;
                }
                last = answer;
            }
            None => continue,
        }
    }
    last
}

fn classify(msg: &Message, rtype: RecordType) -> SecureAnswer {
    let ad = msg.metadata.authentic_data;
    let status = if ad {
        DnssecStatus::Secure
    } else {
        DnssecStatus::Insecure
    };
    match msg.metadata.response_code {
        ResponseCode::NoError => SecureAnswer {
            status,
            records: msg
                .answers
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data.clone())
                .collect(),
            nxdomain: false,
            canonical: msg
                .queries
                .first()
                .and_then(|q| cname_target(&msg.answers, q.name())),
        },
        ResponseCode::NXDomain => SecureAnswer {
            status,
            records: Vec::new(),
            nxdomain: true,
            canonical: None,
        },
        ResponseCode::ServFail => SecureAnswer::failed(DnssecStatus::Bogus),
        _ => SecureAnswer::failed(DnssecStatus::Indeterminate),
    }
}

fn local_for(server: SocketAddr) -> SocketAddr {
    let ip = match server.ip() {
        IpAddr::V4(v) if v.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(v) if v.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// One exchange: UDP, and TCP when the UDP answer is truncated. None on timeout or I/O error.
async fn exchange(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Option<Message> {
    let id = message_id();
    let wire = build_query(id, name, rtype)?;
    let matches = |m: &Message| {
        m.metadata.id == id
            && m.metadata.message_type == MessageType::Response
            && m.queries
                .first()
                .is_some_and(|q| q.name() == name && q.query_type() == rtype)
    };
    let udp = async {
        let sock = UdpSocket::bind(local_for(server)).await.ok()?;
        sock.connect(server).await.ok()?;
        sock.send(&wire).await.ok()?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).await.ok()?;
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if matches(&m) {
                    return Some(m);
                }
            }
        }
    };
    let answer = tokio::time::timeout(timeout, udp).await.ok().flatten()?;
    if !answer.metadata.truncation {
        return Some(answer);
    }
    // RFC 7766: retry over TCP, two-octet length prefix.
    let tcp = async {
        let mut s = TcpStream::connect(server).await.ok()?;
        let len = u16::try_from(wire.len()).ok()?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&wire);
        s.write_all(&out).await.ok()?;
        let mut lenbuf = [0u8; 2];
        s.read_exact(&mut lenbuf).await.ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenbuf))];
        s.read_exact(&mut buf).await.ok()?;
        Message::from_vec(&buf).ok().filter(matches)
    };
    tokio::time::timeout(timeout, tcp).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, CNAME, MX};

    fn response(code: ResponseCode, ad: bool, answers: Vec<Record>) -> Message {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = code;
        m.metadata.authentic_data = ad;
        for a in answers {
            m.add_answer(a);
        }
        m
    }

    #[test]
    fn status_follows_rcode_and_ad_bit() {
        let name = Name::from_ascii("example.test.").unwrap();
        let mx = Record::from_rdata(
            name.clone(),
            60,
            RData::MX(MX::new(10, Name::from_ascii("mx.example.test.").unwrap())),
        );
        let rows = [
            (ResponseCode::NoError, true, DnssecStatus::Secure, 1, false),
            (
                ResponseCode::NoError,
                false,
                DnssecStatus::Insecure,
                1,
                false,
            ),
            (ResponseCode::NXDomain, true, DnssecStatus::Secure, 0, true),
            (
                ResponseCode::NXDomain,
                false,
                DnssecStatus::Insecure,
                0,
                true,
            ),
            (ResponseCode::ServFail, false, DnssecStatus::Bogus, 0, false),
            (
                ResponseCode::Refused,
                false,
                DnssecStatus::Indeterminate,
                0,
                false,
            ),
        ];
        for (code, ad, status, n, nx) in rows {
            let a = classify(&response(code, ad, vec![mx.clone()]), RecordType::MX);
            assert_eq!(
                (a.status, a.records.len(), a.nxdomain),
                (status, n, nx),
                "{code:?} ad={ad}"
            );
        }
        // Records of another type (a CNAME chain, say) are not the answer.
        let a = classify(
            &response(ResponseCode::NoError, true, vec![mx]),
            RecordType::TLSA,
        );
        assert!(a.records.is_empty());
    }

    #[test]
    fn cname_chains_are_followed_from_the_query_name() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let cname =
            |from: &str, to: &str| Record::from_rdata(n(from), 60, RData::CNAME(CNAME(n(to))));
        let a = Record::from_rdata(n("t.example.test."), 60, RData::A(A::new(127, 0, 0, 9)));
        let mut m = response(
            ResponseCode::NoError,
            true,
            vec![
                cname("MX.example.test.", "mid.example.test."),
                cname("mid.example.test.", "T.example.test."),
                a,
            ],
        );
        m.add_query(Query::query(n("mx.example.test."), RecordType::A));
        let ans = classify(&m, RecordType::A);
        assert_eq!(ans.canonical.as_deref(), Some("t.example.test"));
        assert_eq!(ans.records.len(), 1);
        // No CNAME: no canonical name; a loop ends.
        let mut plain = response(ResponseCode::NoError, true, vec![]);
        plain.add_query(Query::query(n("mx.example.test."), RecordType::A));
        assert_eq!(classify(&plain, RecordType::A).canonical, None);
        let looped = [cname("a.test.", "b.test."), cname("b.test.", "a.test.")];
        assert!(cname_target(&looped, &n("a.test.")).is_some());
    }

    #[test]
    fn queries_ask_for_ad_and_do() {
        let wire = build_query(
            42,
            &Name::from_ascii("_25._tcp.mx.example.test.").unwrap(),
            RecordType::TLSA,
        )
        .unwrap();
        let m = Message::from_vec(&wire).unwrap();
        assert!(m.metadata.authentic_data && m.metadata.recursion_desired);
        assert!(m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
    }

    #[tokio::test]
    async fn no_answer_is_indeterminate_never_empty_secure() {
        // Nothing listens there: a timeout.
        let a = query(
            &["127.0.0.1:9".parse().unwrap()],
            "example.test",
            RecordType::MX,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(a.status, DnssecStatus::Indeterminate);
    }
}
