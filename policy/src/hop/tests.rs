//! `decide_hop` as a table: one row per case that matters, each read as
//! "inputs → what every MX host gets".

use super::*;
use crate::charter::{CharterRequirement, PkixTrust, TlsVersion};
use crate::dane::{DnssecStatus as D, Tlsa};
use crate::mta_sts::{MxPattern, StsMode, StsPolicy};
use crate::pin::SpkiPin;
use crate::{Refusal, ResultType, RouteTls};

const MX: &str = "mx1.example.com";

/// One row's inputs; `Case::new()` is the plain case: insecure MX, no TLSA, no MTA-STS, no
/// charter, no REQUIRETLS, route `verify`.
#[derive(Clone)]
struct Case {
    mx: D,
    hosts: Vec<MxHost>,
    sts: StsState,
    charter: Option<CharterPolicy>,
    requiretls: bool,
    tls_required_no: bool,
    route: RouteTls,
}

fn good_tlsa() -> Vec<Tlsa> {
    vec![Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![1; 32],
    }]
}

fn unusable_tlsa() -> Vec<Tlsa> {
    vec![
        Tlsa {
            usage: 1,
            selector: 1,
            matching: 1,
            data: vec![1; 32],
        },
        Tlsa {
            usage: 0,
            selector: 0,
            matching: 1,
            data: vec![2; 32],
        },
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![3; 5],
        },
    ]
}

fn host(name: &str, tlsa: Option<(D, Vec<Tlsa>)>) -> MxHost {
    MxHost {
        name: name.into(),
        tlsa: tlsa.map(|(status, records)| TlsaAnswer {
            status,
            base_domain: name.into(),
            records,
        }),
    }
}

fn sts(mode: StsMode) -> StsState {
    StsState::Policy {
        policy: StsPolicy {
            mode,
            mx: vec![
                MxPattern::parse("*.example.com").unwrap(),
                MxPattern::parse("backup.example.org").unwrap(),
            ],
            max_age: 86_400,
        },
        cached: false,
    }
}

fn charter(require: Option<CharterRequirement>) -> CharterPolicy {
    CharterPolicy {
        require,
        ..CharterPolicy::new("peer-a")
    }
}

fn pinned() -> CharterRequirement {
    CharterRequirement::Verify(PkixTrust {
        pinned_ca: Vec::new(),
        spki_pins: vec![SpkiPin([9; 32])],
    })
}

impl Case {
    fn new() -> Self {
        Self {
            mx: D::Insecure,
            hosts: vec![host(MX, None)],
            sts: StsState::NoPolicy,
            charter: None,
            requiretls: false,
            tls_required_no: false,
            route: RouteTls::Verify,
        }
    }
    fn tls_required_no(mut self) -> Self {
        self.tls_required_no = true;
        self
    }
    fn mx(mut self, s: D) -> Self {
        self.mx = s;
        self
    }
    /// Secure MX and this TLSA answer for the single host.
    fn tlsa(mut self, status: D, records: Vec<Tlsa>) -> Self {
        self.mx = D::Secure;
        self.hosts = vec![host(MX, Some((status, records)))];
        self
    }
    fn hosts(mut self, hosts: Vec<MxHost>) -> Self {
        self.hosts = hosts;
        self
    }
    fn sts(mut self, s: StsState) -> Self {
        self.sts = s;
        self
    }
    fn charter(mut self, c: CharterPolicy) -> Self {
        self.charter = Some(c);
        self
    }
    fn requiretls(mut self) -> Self {
        self.requiretls = true;
        self
    }
    fn route(mut self, r: RouteTls) -> Self {
        self.route = r;
        self
    }

    fn run(&self) -> Result<Decision, Refusal> {
        decide_hop(&HopInput {
            domain: "example.com",
            mx_status: self.mx,
            hosts: &self.hosts,
            mta_sts: &self.sts,
            charter: self.charter.as_ref(),
            requiretls: self.requiretls,
            tls_required_no: self.tls_required_no,
            route: self.route,
        })
    }
}

/// `tls/source` with ` tls1.3` for a raised floor and ` +source:observation` per report;
/// `refused:<kind>` for a host refusal; hosts joined by ` | `; `domain:<kind>` for a refusal of
/// the whole destination.
fn summary(result: &Result<Decision, Refusal>) -> String {
    match result {
        Err(r) => format!("domain:{}", refusal(r)),
        Ok(d) => d
            .hosts
            .iter()
            .map(|h| match &h.outcome {
                Ok(plan) => plan_summary(plan),
                Err(r) => format!("refused:{}", refusal(r)),
            })
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

fn tls(t: &HopTls) -> String {
    match t {
        HopTls::Pkix { trust, .. } if trust.is_pinned() => "verify(pinned)".into(),
        other => other.as_str().into(),
    }
}

fn plan_summary(plan: &HopPlan) -> String {
    let mut s = format!("{}/{}", tls(&plan.tls), plan.source.as_str());
    if plan.min_tls != TlsVersion::Tls12 {
        s.push_str(" tls1.3");
    }
    for r in &plan.reports {
        let observed = match &r.observe {
            Observe::Check(t) => format!("check:{}", tls(t)),
            Observe::MinTls(v) => format!("min:{}", v.as_str()),
            Observe::Failed(rt) => format!("failed:{rt}"),
        };
        s.push_str(&format!(" +{}:{observed}", r.source.as_str()));
    }
    s
}

fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::OpportunisticToCharterPeer { .. } => "opportunistic-charter".into(),
        Refusal::DnssecInvalid { lookup, .. } => format!("dnssec-invalid({lookup})"),
        Refusal::DnsIndeterminate { lookup, .. } => format!("indeterminate({lookup})"),
        Refusal::MxNotInStsPolicy { .. } => "mx-not-in-sts".into(),
        Refusal::MxNotInCharter { .. } => "mx-not-in-charter".into(),
        Refusal::DaneRequired { .. } => "dane-required".into(),
        Refusal::StsRequired { reason, .. } => format!("sts-required({reason})"),
        Refusal::RequireTlsUnmet { gap, .. } => match gap {
            crate::decision::RequireTlsGap::Unauthenticated => "requiretls(unauthenticated)".into(),
            crate::decision::RequireTlsGap::MxNotValidated => "requiretls(mx)".into(),
        },
    }
}

#[test]
fn decide_hop_table() {
    use CharterRequirement as CR;
    use RouteTls as R;
    use StsMode::{Enforce, Testing};
    let c = Case::new;
    let secure = |records| c().tlsa(D::Secure, records);
    let dane = || secure(good_tlsa());
    let unavailable = |reason| StsState::Unavailable { reason };
    let report_only = |require| CharterPolicy {
        report_only: true,
        ..charter(require)
    };
    let two_hosts = vec![host(MX, None), host("mx.elsewhere.net", None)];
    let rows: Vec<(&str, Case, &str)> = vec![
        // Operator route only.
        ("route verify", c(), "verify/operator"),
        ("route encrypt", c().route(R::Encrypt), "encrypt/operator"),
        ("route opportunistic", c().route(R::Opportunistic), "opportunistic/opportunistic"),
        ("no MX hosts", c().hosts(vec![]), ""),
        // DANE.
        ("secure MX + usable TLSA → DANE", dane(), "dane/dane"),
        ("DANE over MTA-STS enforce", dane().sts(sts(Enforce)), "dane/dane"),
        (
            "DANE over MTA-STS enforce even for an MX not in the policy",
            dane().hosts(vec![host("mx.other.net", Some((D::Secure, good_tlsa())))]).sts(sts(Enforce)),
            "dane/dane",
        ),
        ("DANE over MTA-STS testing: no report", dane().sts(sts(Testing)), "dane/dane"),
        ("DANE over charter verify (pinned)", dane().charter(charter(Some(pinned()))), "dane/dane"),
        ("DANE over charter encrypt floor", dane().charter(charter(Some(CR::Encrypt))), "dane/dane"),
        ("DANE meets charter dane", dane().charter(charter(Some(CR::Dane))), "dane/dane"),
        ("DANE meets charter mta-sts", dane().charter(charter(Some(CR::MtaSts))), "dane/dane"),
        ("DANE over an opportunistic route", dane().route(R::Opportunistic), "dane/dane"),
        ("DANE meets REQUIRETLS", dane().requiretls(), "dane/dane"),
        ("DANE with MTA-STS TXT indeterminate", dane().sts(StsState::Indeterminate), "dane/dane"),
        (
            "insecure MX → TLSA ignored",
            dane().mx(D::Insecure),
            "verify/operator",
        ),
        ("insecure TLSA → no DANE", c().tlsa(D::Insecure, good_tlsa()), "verify/operator"),
        ("secure denial of TLSA → no DANE", secure(vec![]), "verify/operator"),
        (
            "bogus TLSA → refused, never a fallback",
            c().tlsa(D::Bogus, vec![]),
            "refused:dnssec-invalid(TLSA)",
        ),
        (
            "bogus TLSA beside MTA-STS enforce → still refused",
            c().tlsa(D::Bogus, vec![]).sts(sts(Enforce)),
            "refused:dnssec-invalid(TLSA)",
        ),
        (
            "indeterminate TLSA → refused (defer)",
            c().tlsa(D::Indeterminate, vec![]),
            "refused:indeterminate(TLSA)",
        ),
        (
            "TLSA not looked up under a secure MX → refused",
            c().mx(D::Secure),
            "refused:indeterminate(TLSA)",
        ),
        ("bogus MX → whole domain refused", c().mx(D::Bogus), "domain:dnssec-invalid(MX)"),
        (
            "indeterminate MX → whole domain refused",
            c().mx(D::Indeterminate),
            "domain:indeterminate(MX)",
        ),
        (
            "per host: DANE for one, insecure TLSA for the other",
            c().mx(D::Secure).hosts(vec![
                host(MX, Some((D::Secure, good_tlsa()))),
                host("mx2.example.com", Some((D::Insecure, vec![]))),
            ]),
            "dane/dane | verify/operator",
        ),
        // Secure TLSA RRset, nothing usable: TLS mandatory.
        (
            "TLSA all unusable + opportunistic route → encrypt",
            secure(unusable_tlsa()).route(R::Opportunistic),
            "encrypt/dane",
        ),
        ("TLSA all unusable + encrypt route", secure(unusable_tlsa()).route(R::Encrypt), "encrypt/dane"),
        ("TLSA all unusable + verify route keeps PKIX", secure(unusable_tlsa()), "verify/operator"),
        (
            "TLSA all unusable + MTA-STS enforce",
            secure(unusable_tlsa()).sts(sts(Enforce)),
            "mta-sts/mta-sts",
        ),
        (
            "TLSA all unusable + charter encrypt",
            secure(unusable_tlsa()).charter(charter(Some(CR::Encrypt))),
            "encrypt/dane",
        ),
        // MTA-STS.
        ("MTA-STS enforce", c().sts(sts(Enforce)), "mta-sts/mta-sts"),
        (
            "MTA-STS enforce over an opportunistic route",
            c().sts(sts(Enforce)).route(R::Opportunistic),
            "mta-sts/mta-sts",
        ),
        (
            "MTA-STS enforce + MX mismatch → that host only refused",
            c().sts(sts(Enforce)).hosts(two_hosts.clone()),
            "mta-sts/mta-sts | refused:mx-not-in-sts",
        ),
        (
            "MTA-STS testing → deliver + report check",
            c().sts(sts(Testing)),
            "verify/operator +mta-sts:check:mta-sts",
        ),
        (
            "MTA-STS testing + MX mismatch → deliver + report failure",
            c().sts(sts(Testing)).hosts(two_hosts.clone()).route(R::Opportunistic),
            "opportunistic/opportunistic +mta-sts:check:mta-sts | opportunistic/opportunistic +mta-sts:failed:validation-failure",
        ),
        ("MTA-STS mode none = no policy", c().sts(sts(StsMode::None)), "verify/operator"),
        (
            "MTA-STS fetch failed, nothing cached → no policy + report",
            c().sts(unavailable(ResultType::StsPolicyFetchError)),
            "verify/operator +mta-sts:failed:sts-policy-fetch-error",
        ),
        (
            "MTA-STS TXT indeterminate → refused (defer)",
            c().sts(StsState::Indeterminate),
            "refused:indeterminate(MTA-STS TXT)",
        ),
        (
            "MTA-STS enforce satisfies charter verify (system roots)",
            c().sts(sts(Enforce)).charter(charter(Some(CR::Verify(PkixTrust::webpki())))),
            "mta-sts/mta-sts",
        ),
        (
            "MTA-STS enforce + charter pinned: pins stay in force",
            c().sts(sts(Enforce)).charter(charter(Some(pinned()))),
            "verify(pinned)/charter",
        ),
        (
            "MTA-STS enforce + charter pinned + MX mismatch → refused",
            c().sts(sts(Enforce)).charter(charter(Some(pinned()))).hosts(two_hosts.clone()),
            "verify(pinned)/charter | refused:mx-not-in-sts",
        ),
        (
            "MTA-STS enforce over charter encrypt",
            c().sts(sts(Enforce)).charter(charter(Some(CR::Encrypt))),
            "mta-sts/mta-sts",
        ),
        (
            "MTA-STS testing + charter encrypt → encrypt + report",
            c().sts(sts(Testing)).charter(charter(Some(CR::Encrypt))),
            "encrypt/charter +mta-sts:check:mta-sts",
        ),
        // Charter.
        ("charter, no requirement, verify route", c().charter(charter(None)), "verify/charter"),
        (
            "charter, no requirement, encrypt route",
            c().charter(charter(None)).route(R::Encrypt),
            "encrypt/charter",
        ),
        (
            "opportunistic route to a charter peer → refused",
            c().charter(charter(None)).route(R::Opportunistic),
            "domain:opportunistic-charter",
        ),
        (
            "opportunistic route to a report-only charter peer → refused",
            c().charter(report_only(Some(CR::Encrypt))).route(R::Opportunistic),
            "domain:opportunistic-charter",
        ),
        (
            "opportunistic route to a charter peer with DANE → still refused",
            dane().charter(charter(None)).route(R::Opportunistic),
            "domain:opportunistic-charter",
        ),
        ("charter encrypt floor", c().charter(charter(Some(CR::Encrypt))), "encrypt/charter"),
        ("charter verify pinned", c().charter(charter(Some(pinned()))), "verify(pinned)/charter"),
        (
            "charter verify over an encrypt route",
            c().charter(charter(Some(CR::Verify(PkixTrust::webpki())))).route(R::Encrypt),
            "verify/charter",
        ),
        (
            "charter dane, MX insecure → refused",
            c().charter(charter(Some(CR::Dane))),
            "refused:dane-required",
        ),
        (
            "charter dane, TLSA all unusable → refused",
            secure(unusable_tlsa()).charter(charter(Some(CR::Dane))),
            "refused:dane-required",
        ),
        (
            "charter dane, TLSA insecure → refused",
            c().tlsa(D::Insecure, good_tlsa()).charter(charter(Some(CR::Dane))),
            "refused:dane-required",
        ),
        (
            "report-only charter dane, no DANE → deliver + report",
            c().charter(report_only(Some(CR::Dane))),
            "verify/charter +charter:failed:dane-required",
        ),
        (
            "charter mta-sts + enforce policy",
            c().sts(sts(Enforce)).charter(charter(Some(CR::MtaSts))),
            "mta-sts/mta-sts",
        ),
        (
            "charter mta-sts upgrades a testing policy",
            c().sts(sts(Testing)).charter(charter(Some(CR::MtaSts))),
            "mta-sts/charter",
        ),
        (
            "charter mta-sts + testing policy + MX mismatch → refused",
            c().sts(sts(Testing)).charter(charter(Some(CR::MtaSts))).hosts(two_hosts.clone()),
            "mta-sts/charter | refused:mx-not-in-sts",
        ),
        (
            "charter mta-sts, no policy → refused",
            c().charter(charter(Some(CR::MtaSts))),
            "refused:sts-required(sts-policy-fetch-error)",
        ),
        (
            "charter mta-sts, policy invalid → refused",
            c().sts(unavailable(ResultType::StsPolicyInvalid)).charter(charter(Some(CR::MtaSts))),
            "refused:sts-required(sts-policy-invalid)",
        ),
        (
            "charter mta-sts, policy mode none → refused",
            c().sts(sts(StsMode::None)).charter(charter(Some(CR::MtaSts))),
            "refused:sts-required(sts-policy-invalid)",
        ),
        (
            "report-only charter mta-sts, no policy → deliver + report",
            c().charter(report_only(Some(CR::MtaSts))),
            "verify/charter +charter:failed:sts-policy-fetch-error",
        ),
        (
            "report-only charter mta-sts, testing policy → not upgraded, reported",
            c().sts(sts(Testing)).charter(report_only(Some(CR::MtaSts))),
            "verify/charter +mta-sts:check:mta-sts +charter:check:mta-sts",
        ),
        (
            "report-only charter verify pinned over an encrypt route",
            c().charter(report_only(Some(pinned()))).route(R::Encrypt),
            "encrypt/charter +charter:check:verify(pinned)",
        ),
        (
            "charter MX list mismatch → refused",
            c().charter(CharterPolicy {
                mx: vec![MxPattern::parse("*.peer-a.example").unwrap()],
                ..charter(None)
            }),
            "refused:mx-not-in-charter",
        ),
        (
            "report-only charter MX list mismatch → deliver + report",
            c().charter(CharterPolicy {
                mx: vec![MxPattern::parse("*.peer-a.example").unwrap()],
                ..report_only(None)
            }),
            "verify/charter +charter:failed:validation-failure",
        ),
        (
            "charter TLS 1.3 floor",
            c().charter(CharterPolicy {
                min_tls: TlsVersion::Tls13,
                ..charter(Some(CR::Encrypt))
            }),
            "encrypt/charter tls1.3",
        ),
        (
            "charter TLS 1.3 floor applies to DANE too",
            dane().charter(CharterPolicy {
                min_tls: TlsVersion::Tls13,
                ..charter(None)
            }),
            "dane/dane tls1.3",
        ),
        (
            "report-only charter TLS 1.3 floor → reported",
            c().charter(CharterPolicy {
                min_tls: TlsVersion::Tls13,
                ..report_only(None)
            }),
            "verify/charter +charter:min:TLSv1.3",
        ),
        // REQUIRETLS (RFC 8689).
        (
            "REQUIRETLS, secure MX, TLSA denied, encrypt route → PKIX",
            secure(vec![]).route(R::Encrypt).requiretls(),
            "verify/requiretls",
        ),
        (
            "REQUIRETLS, secure MX, opportunistic route → PKIX",
            secure(vec![]).route(R::Opportunistic).requiretls(),
            "verify/requiretls",
        ),
        (
            "REQUIRETLS, TLSA all unusable → PKIX",
            secure(unusable_tlsa()).route(R::Opportunistic).requiretls(),
            "verify/requiretls",
        ),
        (
            "REQUIRETLS, insecure MX, no MTA-STS → refused (MX not validated)",
            c().requiretls(),
            "refused:requiretls(mx)",
        ),
        (
            "REQUIRETLS, insecure MX, MTA-STS enforce",
            c().sts(sts(Enforce)).requiretls(),
            "mta-sts/mta-sts",
        ),
        (
            "REQUIRETLS enforces a testing policy",
            c().sts(sts(Testing)).requiretls(),
            "mta-sts/requiretls",
        ),
        (
            "REQUIRETLS, testing policy, MX mismatch → refused",
            c().sts(sts(Testing)).hosts(two_hosts.clone()).requiretls(),
            "mta-sts/requiretls | refused:requiretls(mx)",
        ),
        (
            "REQUIRETLS, charter encrypt → refused (only encrypt available)",
            secure(vec![]).charter(charter(Some(CR::Encrypt))).requiretls(),
            "refused:requiretls(unauthenticated)",
        ),
        (
            "REQUIRETLS, TLSA unusable + charter encrypt → refused",
            secure(unusable_tlsa()).charter(charter(Some(CR::Encrypt))).requiretls(),
            "refused:requiretls(unauthenticated)",
        ),
        (
            "REQUIRETLS, charter pinned, MX named by the charter",
            c().charter(CharterPolicy {
                mx: vec![MxPattern::parse("*.example.com").unwrap()],
                ..charter(Some(pinned()))
            })
            .requiretls(),
            "verify(pinned)/charter",
        ),
        (
            "REQUIRETLS, report-only charter encrypt → PKIX",
            secure(vec![]).charter(report_only(Some(CR::Encrypt))).requiretls(),
            "verify/requiretls",
        ),
        // TLS-Required: No (RFC 8689 §5): only the operator's level gives way.
        ("TLS-Required: No lowers route verify", c().tls_required_no(), "opportunistic/opportunistic"),
        (
            "TLS-Required: No lowers route encrypt",
            c().route(R::Encrypt).tls_required_no(),
            "opportunistic/opportunistic",
        ),
        ("TLS-Required: No does not beat DANE", dane().tls_required_no(), "dane/dane"),
        (
            "TLS-Required: No does not beat MTA-STS enforce",
            c().sts(sts(Enforce)).tls_required_no(),
            "mta-sts/mta-sts",
        ),
        (
            "TLS-Required: No keeps MTA-STS testing observed",
            c().sts(sts(Testing)).tls_required_no(),
            "opportunistic/opportunistic +mta-sts:check:mta-sts",
        ),
        (
            "TLS-Required: No does not lower a charter peer (no requirement)",
            c().charter(charter(None)).tls_required_no(),
            "verify/charter",
        ),
        (
            "TLS-Required: No does not lower a charter encrypt peer",
            c().charter(charter(Some(CR::Encrypt))).tls_required_no(),
            "encrypt/charter",
        ),
        (
            "TLS-Required: No does not lower a report-only charter peer",
            c().charter(report_only(Some(pinned()))).tls_required_no(),
            "verify/charter +charter:check:verify(pinned)",
        ),
        (
            "TLS-Required: No is ignored with REQUIRETLS",
            c().sts(sts(Enforce)).requiretls().tls_required_no(),
            "mta-sts/mta-sts",
        ),
        (
            "TLS-Required: No is ignored with REQUIRETLS (no policy → PKIX)",
            secure(vec![]).requiretls().tls_required_no(),
            "verify/requiretls",
        ),
        (
            "TLS-Required: No after unusable TLSA: still encrypt",
            secure(unusable_tlsa()).tls_required_no(),
            "encrypt/dane",
        ),
    ];
    let mut failures = Vec::new();
    for (name, case, want) in &rows {
        let got = summary(&case.run());
        if got != *want {
            failures.push(format!("{name}:\n    want {want}\n    got  {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn plans_carry_names_and_records() {
    let d = Case::new()
        .tlsa(D::Secure, good_tlsa())
        .hosts(vec![
            MxHost {
                name: "MX1.example.com".into(),
                tlsa: Some(TlsaAnswer {
                    status: D::Secure,
                    base_domain: "mx.cname-target.net".into(),
                    records: good_tlsa(),
                }),
            },
            host("mx2.example.com", Some((D::Secure, vec![]))),
        ])
        .run()
        .unwrap();
    let plans: Vec<_> = d.usable().collect();
    match &plans[0].1.tls {
        HopTls::Dane { usable, tlsa_base } => {
            assert_eq!(tlsa_base, "mx.cname-target.net");
            assert_eq!(usable.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plans[1].1.tls,
        HopTls::Pkix {
            name: "mx2.example.com".into(),
            trust: PkixTrust::webpki()
        }
    );
    assert_eq!(plans[0].0, "MX1.example.com");
    assert_eq!(d.domain, "example.com");
}

#[test]
fn hop_tls_vocabulary() {
    use crate::VerifyMethod as V;
    let pkix = HopTls::Pkix {
        name: "a".into(),
        trust: PkixTrust::webpki(),
    };
    assert_eq!(pkix.verify_method(), Some(V::Pkix));
    assert!(HopTls::Opportunistic.allows_plaintext());
    assert!(!HopTls::Encrypt.allows_plaintext() && !pkix.allows_plaintext());
    let pinned_tls = HopTls::Pkix {
        name: "a".into(),
        trust: PkixTrust {
            spki_pins: vec![SpkiPin([0; 32])],
            ..PkixTrust::default()
        },
    };
    assert_eq!(pinned_tls.verify_method(), Some(V::Pinned));
    assert_eq!(pinned_tls.to_string(), "verify (pinned, name a)");
    let sts_tls = HopTls::MtaSts {
        name: "a".into(),
        patterns: vec![],
    };
    assert_eq!(sts_tls.verify_method(), Some(V::MtaSts));
    let dane_tls = HopTls::Dane {
        usable: crate::dane::usable_set(&good_tlsa()),
        tlsa_base: "a".into(),
    };
    assert_eq!(dane_tls.verify_method(), None);
    for t in [&pkix, &pinned_tls, &sts_tls, &dane_tls] {
        assert!(t.authenticated() && !t.allows_plaintext());
    }
    assert!(!HopTls::Encrypt.authenticated() && !HopTls::Encrypt.allows_plaintext());
    assert!(HopTls::Opportunistic.allows_plaintext());
    assert_eq!(HopTls::Encrypt.verify_method(), Some(V::None));
}
