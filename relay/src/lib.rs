//! hopguard: an inter-provider mail relay whose every hop is encrypted and authenticated.
//!
//! The life of a message, module by module:
//! inbound (listener -> session -> connection + STARTTLS) -> spool::commit -> 250 ->
//! queue (scheduler, schedule: retry math) -> outbound (route: MX + policy decide ->
//! client session + verifier -> attempt) -> queue (retry) or queue::dsn (bounce).
//!
//! Each hop yields an evidence::HopRecord -> metrics (Prometheus).
//!
//! Supporting modules: config (typed YAML), dns (MX and addresses), smtp (replies, shared
//! SMTP text rules), cli (operator commands).

#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod dns;
pub mod evidence;
pub mod inbound;
pub mod intercept;
pub mod outbound;
pub mod queue;
pub mod smtp;
pub mod spool;
