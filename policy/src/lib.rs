//! hopguard's TLS policy vocabulary and decisions: pure functions, no I/O (no DNS, no HTTP, no
//! files). The relay gathers the inputs; this crate decides and verifies.
//!
//! Map of the crate, in the order a message's outbound hop meets it:
//! - `mta_sts`: RFC 8461, pure: the `_mta-sts` TXT record, the policy file, MX patterns, and the
//!   cache decision (use the cache, refetch, no policy, or defer).
//! - `dane`: RFC 6698/7671/7672: `DnssecStatus`, TLSA records, `usable_set` (usable for SMTP,
//!   digest agility), `match_chain`, and `DaneVerifier` (rustls) that enforces them.
//! - `charter`: a charter peer's outbound policy (`dane`, `mta-sts`, `verify` with pinned CA or
//!   SPKI pins, `encrypt`), TLS version floor, report-only.
//! - `hop`: `decide_hop`, the precedence of DANE, MTA-STS, charter, REQUIRETLS and the operator
//!   route per MX host → `HopPlan` (`HopTls` + `PolicySource` + reports) or a `Refusal`.
//! - `decision`: the shared vocabulary — `PolicySource`, `RouteTls`, and `Refusal` with its
//!   result type and status code.
//! - `pin`: SPKI SHA-256 pins and `PinnedVerifier`.
//! - `observe`: `ObservingVerifier`, which enforces one requirement and records a stricter
//!   one's verdict (MTA-STS `testing`, report-only charter).
//! - `verify`: the evidence vocabulary (`VerifyMethod`) and `CertPolicyError`, how a verifier's
//!   refusal travels through a rustls error.
//! - `result_type`: the RFC 8460 failure vocabulary used by metrics, audit, DSNs and TLS-RPT.
//!
//! docs/policy.md explains the rules and their RFC sources.

#![forbid(unsafe_code)]

pub mod charter;
pub mod dane;
pub mod decision;
pub mod hop;
pub mod mta_sts;
pub mod observe;
pub mod pin;
pub mod result_type;
pub mod verify;

pub use charter::{CharterPolicy, CharterRequirement, PkixTrust, TlsVersion};
pub use dane::{
    match_chain, usable_set, DaneMatch, DaneOutcome, DaneVerifier, DnssecStatus, Tlsa, UsableTlsa,
};
pub use decision::{DnsLookup, PolicySource, Refusal, RequireTlsGap, RouteTls};
pub use hop::{
    decide_hop, Decision, HopInput, HopPlan, HopTls, HostDecision, MxHost, Observe, Report,
    TlsaAnswer,
};
pub use mta_sts::{MxPattern, StsMode, StsPolicy, StsState};
pub use observe::{checks, verdicts, HopSeen, Observation, ObservingVerifier};
pub use pin::{PinnedVerifier, SpkiPin};
pub use result_type::ResultType;
pub use verify::{CertPolicyError, VerifyMethod};
