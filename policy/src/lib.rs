//! hopguard's TLS policy vocabulary and decisions: pure functions, no I/O.
//!
//! Map of the crate:
//! - `result_type`: the RFC 8460 failure vocabulary used by metrics, audit, DSNs and TLS-RPT.
//! - `decision`: what TLS a hop requires (`RequiredTls`) and where the requirement comes from
//!   (`PolicySource`); `decide` turns the inputs into a requirement per next-hop host.
//! - `verify`: how a hop's certificate was authenticated (`VerifyMethod`), for the evidence.
//!
//! DANE, MTA-STS, charter policies and REQUIRETLS plug into `decide` (see docs/policy.md).

#![forbid(unsafe_code)]

pub mod decision;
pub mod result_type;
pub mod verify;

pub use decision::{decide, DecisionInput, PolicySource, Refusal, RequiredTls, RouteTls};
pub use result_type::ResultType;
pub use verify::VerifyMethod;
