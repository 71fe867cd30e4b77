//! Reports for a period, built from the audit log alone: per peer and direction, the share of
//! hops encrypted and authenticated, TLS versions, failures, every plaintext hop, and whether the
//! files covering the period verify.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Days, NaiveDate};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::entry::{Entry, HopEntry};
use super::files;
use super::verify::{verify_files, Problem, VerifyFailure, VerifyReport};
use crate::evidence::{Direction, Outcome};

/// The `peer` value of hops with a peer outside the charter.
pub const OTHER_PEER: &str = "other";

/// Figures for one peer and one direction.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerStats {
    pub peer: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// A charter peer (any peer but `other`).
    pub charter: bool,
    /// Hop events: inbound transactions accepted or refused, outbound delivery attempts.
    pub hop_events: u64,
    /// Messages: inbound accepted, outbound delivered.
    pub messages: u64,
    /// Messages (mail-carrying hops) with TLS.
    pub encrypted: u64,
    /// `encrypted / messages` (`None` without messages).
    pub share_encrypted: Option<f64>,
    /// Outbound delivered with an authenticated peer (verification other than `none`).
    pub authenticated: u64,
    /// `authenticated / messages`, outbound only.
    pub share_authenticated: Option<f64>,
    /// Outbound delivered messages by verification method (`dane-ee`, …, `none`).
    pub by_method: BTreeMap<String, u64>,
    /// Hop events by TLS version (`none` for plaintext).
    pub tls_versions: BTreeMap<String, u64>,
    /// Hop events by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Hop events by RFC 8460 result type (failures only).
    pub failures: BTreeMap<String, u64>,
    /// Messages (mail-carrying hops) without TLS.
    pub plaintext: u64,
}

/// A hop without TLS, listed one by one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlaintextHop {
    pub time: String,
    pub direction: String,
    pub peer: String,
    /// The peer is a charter peer: encryption was promised.
    pub charter: bool,
    pub remote_ip: Option<String>,
    pub remote_host: String,
    pub outcome: String,
    pub reply_code: Option<u16>,
    pub queue_id: Option<String>,
}

/// Everything a report shows; rendered by `render_json`, `render_csv` and `render_html`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// First day (UTC), `YYYY-MM-DD`.
    pub from: String,
    /// Last day (UTC, inclusive), `YYYY-MM-DD`.
    pub to: String,
    /// Node ids seen in the period.
    pub nodes: Vec<String>,
    /// The chain verification of the files covering the period.
    pub verification: VerifyReport,
    /// Hop events in the period, all peers.
    pub hop_events: u64,
    /// One row per peer and direction: charter peers by name, then `other`.
    pub peers: Vec<PeerStats>,
    /// Every plaintext hop of the period, oldest first.
    pub plaintext: Vec<PlaintextHop>,
}

/// Builds the report for the UTC days `from..=to` from the files in `dir`.
///
/// Records are selected by their `time`. They are read from the files dated `from` to the day
/// after `to` (a hop that ends just before midnight may be written just after it). Those files
/// are verified, anchored on the last line of the file before them, with signatures if
/// `pubkey` is given, else chain only (the report says which).
pub fn report(dir: &Path, from: NaiveDate, to: NaiveDate, pubkey: Option<&VerifyingKey>) -> Report {
    let mut builder = Builder::default();
    let verification = match files::list(dir) {
        Err(e) => VerifyReport {
            signatures_checked: pubkey.is_some(),
            failure: Some(VerifyFailure {
                file: None,
                line: None,
                seq: None,
                problem: Problem::Unreadable(e.to_string()),
            }),
            ..VerifyReport::default()
        },
        Ok(listed) => {
            let last_day = to.checked_add_days(Days::new(1)).unwrap_or(to);
            let start = listed.partition_point(|f| f.date < from);
            let end = listed.partition_point(|f| f.date <= last_day);
            let range = &listed[start..end.max(start)];
            let before = start.checked_sub(1).and_then(|i| listed.get(i));
            let last_is_final = end >= listed.len();
            verify_files(range, before, last_is_final, pubkey, &mut |entry| {
                if let Entry::Hop(hop) = entry {
                    builder.add(hop, from, to);
                }
            })
        }
    };
    builder.finish(from, to, verification)
}

#[derive(Default)]
struct Builder {
    groups: BTreeMap<(bool, String, &'static str), PeerStats>,
    plaintext: Vec<PlaintextHop>,
    nodes: BTreeSet<String>,
    hop_events: u64,
}

impl Builder {
    fn add(&mut self, hop: &HopEntry, from: NaiveDate, to: NaiveDate) {
        let Ok(time) = DateTime::parse_from_rfc3339(&hop.time) else {
            return;
        };
        let day = time.naive_utc().date();
        if day < from || day > to {
            return;
        }
        self.hop_events += 1;
        if !self.nodes.contains(&hop.node) {
            self.nodes.insert(hop.node.clone());
        }
        let charter = hop.peer != OTHER_PEER;
        let key = (!charter, hop.peer.clone(), hop.direction.as_str());
        let stats = self.groups.entry(key).or_insert_with(|| PeerStats {
            peer: hop.peer.clone(),
            direction: hop.direction.as_str().to_owned(),
            charter,
            ..PeerStats::default()
        });
        stats.hop_events += 1;
        *stats
            .outcomes
            .entry(hop.outcome.as_str().to_owned())
            .or_default() += 1;
        let message = matches!(
            (hop.direction, hop.outcome),
            (Direction::Inbound, Outcome::Accepted) | (Direction::Outbound, Outcome::Delivered)
        );
        if message {
            stats.messages += 1;
        }
        if hop.direction == Direction::Outbound && hop.outcome == Outcome::Delivered {
            let method = hop.verification;
            *stats
                .by_method
                .entry(method.as_str().to_owned())
                .or_default() += 1;
            if method.authenticated() {
                stats.authenticated += 1;
            }
        }
        let version = hop.tls.as_ref().map_or("none", |t| t.version.as_str());
        *stats.tls_versions.entry(version.to_owned()).or_default() += 1;
        if let Some(rt) = hop.result_type {
            *stats.failures.entry(rt.as_str().to_owned()).or_default() += 1;
        }
        // A plaintext hop is one that carried mail without TLS; a refused or failed attempt
        // without TLS moved no message (its failure reason is counted above).
        if !message {
        } else if hop.tls.is_some() {
            stats.encrypted += 1;
        } else {
            stats.plaintext += 1;
            self.plaintext.push(PlaintextHop {
                time: hop.time.clone(),
                direction: hop.direction.as_str().to_owned(),
                peer: hop.peer.clone(),
                charter,
                remote_ip: hop.remote_ip.map(|ip| ip.to_string()),
                remote_host: hop.remote_host.clone(),
                outcome: hop.outcome.as_str().to_owned(),
                reply_code: hop.reply_code,
                queue_id: hop.queue_id.clone(),
            });
        }
    }

    fn finish(mut self, from: NaiveDate, to: NaiveDate, verification: VerifyReport) -> Report {
        let peers = self
            .groups
            .into_values()
            .map(|mut s| {
                s.share_encrypted = share(s.encrypted, s.messages);
                if s.direction == Direction::Outbound.as_str() {
                    s.share_authenticated = share(s.authenticated, s.messages);
                }
                s
            })
            .collect();
        self.plaintext.sort_by(|a, b| a.time.cmp(&b.time));
        Report {
            from: from.format("%Y-%m-%d").to_string(),
            to: to.format("%Y-%m-%d").to_string(),
            nodes: self.nodes.into_iter().collect(),
            verification,
            hop_events: self.hop_events,
            peers,
            plaintext: self.plaintext,
        }
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}
