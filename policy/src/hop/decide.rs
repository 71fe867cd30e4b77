//! `decide_hop`: the precedence of DANE, MTA-STS, the charter, REQUIRETLS and the operator's
//! route, per MX host (docs/policy.md has the table).

use super::{Decision, HopInput, HopPlan, HopTls, HostDecision, MxHost, Observe, Report};
use crate::charter::{CharterPolicy, CharterRequirement, PkixTrust, TlsVersion};
use crate::dane::{usable_set, DnssecStatus};
use crate::decision::{DnsLookup, RequireTlsGap};
use crate::mta_sts::{StsMode, StsPolicy, StsState};
use crate::{PolicySource, Refusal, ResultType, RouteTls};

/// Decides every MX host of `input.domain`.
///
/// `Err` refuses the whole destination: the MX answer is bogus or indeterminate, or the route
/// is opportunistic towards a charter peer. Otherwise each host gets a `HopPlan` or a `Refusal`
/// of its own (the relay tries the next host; when none is left it defers, or bounces for a
/// permanent refusal). Precedence, highest first:
///
/// 1. DANE: a DNSSEC-secure MX RRset and a secure TLSA RRset with a usable record (RFC 7672
///    §2.2); it wins over everything (RFC 8461 §2). A secure TLSA RRset with no usable record
///    makes TLS mandatory (at least `encrypt`) and lets the rules below decide the rest.
/// 2. MTA-STS `enforce` (or `testing` when the charter requires MTA-STS or the message has
///    REQUIRETLS): PKIX + the MX host must match the policy (RFC 8461 §4.1), else that host is
///    refused. A charter `verify` with a pinned CA or pins keeps its narrower trust.
/// 3. The charter's requirement (when not report-only); `dane`/`mta-sts` not met → refused.
/// 4. REQUIRETLS: PKIX.
/// 5. The operator's route level (`opportunistic` never for a charter peer), lowered to
///    opportunistic by `TLS-Required: No` for a destination that is not a charter peer's.
///
/// Finally REQUIRETLS (RFC 8689 §4.2.1) refuses an unauthenticated hop or an MX host validated
/// neither by DNSSEC nor by an MTA-STS policy or the charter's MX list.
pub fn decide_hop(input: &HopInput<'_>) -> Result<Decision, Refusal> {
    if let (RouteTls::Opportunistic, Some(c)) = (input.route, input.charter) {
        return Err(Refusal::OpportunisticToCharterPeer {
            peer: c.peer.clone(),
        });
    }
    match input.mx_status {
        // RFC 7672 §2.1.1: a bogus or indeterminate MX answer is never "no MX"; defer.
        DnssecStatus::Bogus => {
            return Err(Refusal::DnssecInvalid {
                name: input.domain.to_string(),
                lookup: DnsLookup::Mx,
            })
        }
        DnssecStatus::Indeterminate => {
            return Err(Refusal::DnsIndeterminate {
                name: input.domain.to_string(),
                lookup: DnsLookup::Mx,
            })
        }
        DnssecStatus::Secure | DnssecStatus::Insecure => {}
    }
    let hosts = input
        .hosts
        .iter()
        .map(|host| HostDecision {
            host: host.name.clone(),
            outcome: decide_host(input, host),
        })
        .collect();
    Ok(Decision {
        domain: input.domain.to_string(),
        hosts,
    })
}

/// What DANE says about one host.
enum DaneState {
    /// No DANE: the MX RRset or the TLSA answer is insecure, or TLSA is securely absent.
    NotApplicable,
    /// A secure TLSA RRset with no usable record: TLS is mandatory, unauthenticated.
    Unusable,
    Usable(HopTls),
}

fn dane_state(input: &HopInput<'_>, host: &MxHost) -> Result<DaneState, Refusal> {
    // RFC 7672 §2.2.1: TLSA records count only for MX hosts from a secure MX RRset.
    if input.mx_status != DnssecStatus::Secure {
        return Ok(DaneState::NotApplicable);
    }
    let refuse = |secure_failure: bool| {
        let name = host.name.clone();
        let lookup = DnsLookup::Tlsa;
        if secure_failure {
            Refusal::DnssecInvalid { name, lookup }
        } else {
            Refusal::DnsIndeterminate { name, lookup }
        }
    };
    // RFC 7672 §2.1.1, §2.2.3: a TLSA lookup that failed is never "no TLSA".
    let Some(answer) = &host.tlsa else {
        return Err(refuse(false));
    };
    match answer.status {
        DnssecStatus::Bogus => Err(refuse(true)),
        DnssecStatus::Indeterminate => Err(refuse(false)),
        DnssecStatus::Insecure => Ok(DaneState::NotApplicable),
        DnssecStatus::Secure if answer.records.is_empty() => Ok(DaneState::NotApplicable),
        DnssecStatus::Secure => {
            let usable = usable_set(&answer.records);
            if usable.is_empty() {
                Ok(DaneState::Unusable)
            } else {
                Ok(DaneState::Usable(HopTls::Dane {
                    usable,
                    tlsa_base: answer.base_domain.clone(),
                }))
            }
        }
    }
}

/// The decision being built for one host.
struct Choice {
    chosen: Option<(HopTls, PolicySource)>,
    reports: Vec<Report>,
}

impl Choice {
    fn report(&mut self, source: PolicySource, observe: Observe) {
        self.reports.push(Report { source, observe });
    }
}

fn decide_host(input: &HopInput<'_>, host: &MxHost) -> Result<HopPlan, Refusal> {
    let charter = input.charter;
    let enforced = charter.filter(|c| !c.report_only);
    let min_tls = enforced.map_or(TlsVersion::default(), |c| c.min_tls);
    let mut choice = Choice {
        chosen: None,
        reports: Vec::new(),
    };
    if let Some(c) = charter {
        charter_mx(c, &host.name, &mut choice)?;
        if c.report_only && c.min_tls > TlsVersion::default() {
            choice.report(PolicySource::Charter, Observe::MinTls(c.min_tls));
        }
    }
    let dane = dane_state(input, host)?;
    if let DaneState::Usable(tls) = dane {
        // RFC 8461 §2: DANE takes precedence over MTA-STS; it also satisfies every charter
        // requirement and REQUIRETLS (authenticated, MX host DNSSEC-validated).
        return Ok(HopPlan {
            tls,
            source: PolicySource::Dane,
            min_tls,
            reports: choice.reports,
        });
    }
    let requirement = enforced.and_then(|c| c.require.as_ref());
    apply_mta_sts(input, host, requirement, &mut choice)?;
    if let Some(c) = charter {
        apply_charter(input, c, &host.name, &mut choice)?;
    }
    let (mut tls, mut source) = match choice.chosen.take() {
        Some(chosen) => chosen,
        None => fallback(input, &host.name),
    };
    if matches!(dane, DaneState::Unusable) && !tls.authenticated() {
        // RFC 7672 §2.2: TLSA records were published, so TLS is mandatory even if none is usable.
        (tls, source) = (HopTls::Encrypt, PolicySource::Dane);
    }
    if input.requiretls {
        check_requiretls(input, host, charter, &tls)?;
    }
    Ok(HopPlan {
        tls,
        source,
        min_tls,
        reports: choice.reports,
    })
}

/// The charter's MX list: a host it does not name is refused (or reported when report-only).
fn charter_mx(c: &CharterPolicy, host: &str, choice: &mut Choice) -> Result<(), Refusal> {
    if c.mx.is_empty() || c.mx.iter().any(|p| p.matches(host)) {
        return Ok(());
    }
    if c.report_only {
        choice.report(
            PolicySource::Charter,
            Observe::Failed(ResultType::ValidationFailure),
        );
        return Ok(());
    }
    Err(Refusal::MxNotInCharter {
        host: host.to_string(),
        peer: c.peer.clone(),
    })
}

/// MTA-STS (RFC 8461), for a host DANE did not decide.
fn apply_mta_sts(
    input: &HopInput<'_>,
    host: &MxHost,
    requirement: Option<&CharterRequirement>,
    choice: &mut Choice,
) -> Result<(), Refusal> {
    let policy = match input.mta_sts {
        StsState::NoPolicy => return Ok(()),
        StsState::Unavailable { reason } => {
            // RFC 8461 §3.3: deliver as if there were no policy; report the failure.
            choice.report(PolicySource::MtaSts, Observe::Failed(*reason));
            return Ok(());
        }
        StsState::Indeterminate => {
            return Err(Refusal::DnsIndeterminate {
                name: format!("_mta-sts.{}", input.domain),
                lookup: DnsLookup::MtaStsTxt,
            })
        }
        StsState::Policy { policy, .. } => policy,
    };
    let by_charter = matches!(requirement, Some(CharterRequirement::MtaSts));
    let (enforce, source) = match policy.mode {
        StsMode::None => return Ok(()),
        StsMode::Enforce => (true, PolicySource::MtaSts),
        StsMode::Testing if by_charter => (true, PolicySource::Charter),
        StsMode::Testing if input.requiretls => (true, PolicySource::Requiretls),
        StsMode::Testing => (false, PolicySource::MtaSts),
    };
    let matched = policy.matches_mx(&host.name);
    let tls = sts_tls(policy, &host.name);
    match (enforce, matched) {
        (true, true) => choice.chosen = Some((tls, source)),
        (true, false) if source == PolicySource::Requiretls => {
            return Err(Refusal::RequireTlsUnmet {
                host: host.name.clone(),
                gap: RequireTlsGap::MxNotValidated,
            })
        }
        // RFC 8461 §4.1: senders MUST NOT deliver to an MX host the policy does not name.
        (true, false) => {
            return Err(Refusal::MxNotInStsPolicy {
                host: host.name.clone(),
                domain: input.domain.to_string(),
            })
        }
        // RFC 8461 §5: `testing` delivers as without the policy, but reports failures.
        (false, true) => choice.report(PolicySource::MtaSts, Observe::Check(tls)),
        (false, false) => choice.report(
            PolicySource::MtaSts,
            Observe::Failed(ResultType::ValidationFailure),
        ),
    }
    Ok(())
}

fn sts_tls(policy: &StsPolicy, host: &str) -> HopTls {
    HopTls::MtaSts {
        name: host.to_ascii_lowercase(),
        patterns: policy.mx.clone(),
    }
}

/// The charter requirement: a floor, enforced unless report-only.
fn apply_charter(
    input: &HopInput<'_>,
    c: &CharterPolicy,
    host: &str,
    choice: &mut Choice,
) -> Result<(), Refusal> {
    let Some(requirement) = &c.require else {
        return Ok(());
    };
    // A requirement the hop cannot meet: refused, or reported when report-only.
    let unmet = |choice: &mut Choice, refusal: Refusal| {
        if c.report_only {
            let reason = refusal
                .result_type()
                .unwrap_or(ResultType::ValidationFailure);
            choice.report(PolicySource::Charter, Observe::Failed(reason));
            Ok(())
        } else {
            Err(refusal)
        }
    };
    let sts_chosen = matches!(choice.chosen, Some((HopTls::MtaSts { .. }, _)));
    match requirement {
        // Reached only when DANE did not apply (a usable DANE hop returned earlier).
        CharterRequirement::Dane => unmet(
            choice,
            Refusal::DaneRequired {
                peer: c.peer.clone(),
                host: host.to_string(),
            },
        ),
        CharterRequirement::MtaSts if sts_chosen => Ok(()),
        CharterRequirement::MtaSts => match input.mta_sts {
            // Report-only: observe the published policy as if it were enforced.
            StsState::Policy { policy, .. } if c.report_only && policy.mode != StsMode::None => {
                let observe = if policy.matches_mx(host) {
                    Observe::Check(sts_tls(policy, host))
                } else {
                    Observe::Failed(ResultType::ValidationFailure)
                };
                choice.report(PolicySource::Charter, observe);
                Ok(())
            }
            _ => {
                let reason = match input.mta_sts {
                    StsState::Unavailable { reason } => *reason,
                    StsState::Policy { .. } => ResultType::StsPolicyInvalid,
                    StsState::NoPolicy | StsState::Indeterminate => ResultType::StsPolicyFetchError,
                };
                unmet(
                    choice,
                    Refusal::StsRequired {
                        peer: c.peer.clone(),
                        domain: input.domain.to_string(),
                        reason,
                    },
                )
            }
        },
        CharterRequirement::Verify(trust) => {
            // MTA-STS (PKIX + MX pattern) satisfies `verify` with the system roots; a pinned
            // CA or SPKI pins are narrower and stay in force.
            if sts_chosen && !trust.is_pinned() {
                return Ok(());
            }
            let tls = pkix(host, trust.clone());
            if c.report_only {
                choice.report(PolicySource::Charter, Observe::Check(tls));
            } else {
                choice.chosen = Some((tls, PolicySource::Charter));
            }
            Ok(())
        }
        CharterRequirement::Encrypt => {
            if choice.chosen.is_none() && !c.report_only {
                choice.chosen = Some((HopTls::Encrypt, PolicySource::Charter));
            }
            Ok(())
        }
    }
}

/// No published or charter policy decided: REQUIRETLS, else the operator's route.
fn fallback(input: &HopInput<'_>, host: &str) -> (HopTls, PolicySource) {
    if input.requiretls {
        return (pkix(host, PkixTrust::webpki()), PolicySource::Requiretls);
    }
    let operator = if input.charter.is_some() {
        PolicySource::Charter
    } else {
        PolicySource::Operator
    };
    // RFC 8689 §5, as far as the charter allows: a charter peer's hop keeps its level.
    if input.tls_required_no && input.charter.is_none() {
        return (HopTls::Opportunistic, PolicySource::Opportunistic);
    }
    match input.route {
        RouteTls::Verify => (pkix(host, PkixTrust::webpki()), operator),
        RouteTls::Encrypt => (HopTls::Encrypt, operator),
        // A charter peer with an opportunistic route was refused in `decide_hop`.
        RouteTls::Opportunistic => (HopTls::Opportunistic, PolicySource::Opportunistic),
    }
}

fn pkix(host: &str, trust: PkixTrust) -> HopTls {
    HopTls::Pkix {
        name: host.to_ascii_lowercase(),
        trust,
    }
}

/// RFC 8689 §4.2.1: the MX host must be validated (DNSSEC, or named by an MTA-STS policy) and
/// the server authenticated (DANE or PKIX).
fn check_requiretls(
    input: &HopInput<'_>,
    host: &MxHost,
    charter: Option<&CharterPolicy>,
    tls: &HopTls,
) -> Result<(), Refusal> {
    let gap = |gap| {
        Err(Refusal::RequireTlsUnmet {
            host: host.name.clone(),
            gap,
        })
    };
    if !tls.authenticated() {
        return gap(RequireTlsGap::Unauthenticated);
    }
    let by_sts = match input.mta_sts {
        StsState::Policy { policy, .. } => {
            policy.mode != StsMode::None && policy.matches_mx(&host.name)
        }
        _ => false,
    };
    let by_charter =
        charter.is_some_and(|c| !c.mx.is_empty() && c.mx.iter().any(|p| p.matches(&host.name)));
    if input.mx_status == DnssecStatus::Secure || by_sts || by_charter {
        Ok(())
    } else {
        gap(RequireTlsGap::MxNotValidated)
    }
}
