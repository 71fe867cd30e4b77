//! Warrants: the YAML format, validation (exact addresses only, a validity window), the
//! root-only file check, and the pure `matches` run on every accepted message's envelope.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::InterceptError;
use crate::spool::Envelope;

/// Largest warrants document accepted (file or admin endpoint).
pub const MAX_WARRANTS_BYTES: usize = 1024 * 1024;
/// Longest LIID accepted.
pub const MAX_LIID_LEN: usize = 64;

/// Which side of the envelope a warrant covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The target is the envelope sender (MAIL FROM).
    Sent,
    /// The target is an envelope recipient (RCPT TO).
    Received,
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
            Self::Both => "both",
        }
    }

    fn covers(self, side: Side) -> bool {
        matches!(
            (self, side),
            (Self::Both, _) | (Self::Sent, Side::Sent) | (Self::Received, Side::Received)
        )
    }
}

/// What the warrant authorises to hand over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// Intercept-related information only: the metadata record.
    Iri,
    /// The metadata record and the content of communication (the full message).
    IriCc,
}

impl Product {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iri => "iri",
            Self::IriCc => "iri+cc",
        }
    }

    pub fn parse(token: &str) -> Option<Self> {
        [Self::Iri, Self::IriCc]
            .into_iter()
            .find(|p| p.as_str() == token)
    }
}

/// The side of the envelope on which a target was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Sent,
    Received,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// A validated warrant: exact, normalised target addresses and a validity window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warrant {
    pub liid: String,
    pub authority: String,
    pub targets: Vec<String>,
    pub direction: Direction,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub product: Product,
}

impl Warrant {
    /// In force at `now`: `valid_from <= now < valid_until`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.valid_from <= now && now < self.valid_until
    }
}

/// One warrant covering one accepted message: one copy is made per `Match`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub liid: String,
    pub authority: String,
    pub product: Product,
    /// Where the target was found (the sender is looked at first).
    pub side: Side,
    /// The target address as written in the warrant.
    pub target: String,
}

/// Which active warrants cover this envelope at `now`: at most one `Match` per warrant (the
/// first target found, sender before recipients). Expired and not-yet-valid warrants never
/// match. Pure: no I/O, no clock.
pub fn matches(warrants: &[Warrant], env: &Envelope, now: DateTime<Utc>) -> Vec<Match> {
    let sender = normalise_address(&env.mail_from);
    let recipients: Vec<String> = env
        .recipients
        .iter()
        .filter_map(|r| normalise_address(&r.address))
        .collect();
    let mut found = Vec::new();
    for w in warrants.iter().filter(|w| w.is_active(now)) {
        let hit = w.targets.iter().find_map(|t| {
            if w.direction.covers(Side::Sent) && sender.as_deref() == Some(t.as_str()) {
                return Some((Side::Sent, t));
            }
            if w.direction.covers(Side::Received) && recipients.iter().any(|r| r == t) {
                return Some((Side::Received, t));
            }
            None
        });
        if let Some((side, target)) = hit {
            found.push(Match {
                liid: w.liid.clone(),
                authority: w.authority.clone(),
                product: w.product,
                side,
                target: target.clone(),
            });
        }
    }
    found
}

/// An envelope address in the form targets are compared in: trimmed, one pair of `<>`
/// removed, domain lowercased (ASCII), local part kept as is. `None` for `<>` or a string
/// without `local@domain`.
pub fn normalise_address(address: &str) -> Option<String> {
    let a = address.trim();
    let a = a.strip_prefix('<').unwrap_or(a);
    let a = a.strip_suffix('>').unwrap_or(a).trim();
    let (local, domain) = a.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// Validates and normalises one warrant target. Only exact addresses: no wildcard, no bare
/// domain, no `@domain`, no empty local part.
pub fn normalise_target(target: &str) -> Result<String, &'static str> {
    let t = target.trim();
    if t.is_empty() {
        return Err("is empty");
    }
    if t.contains(['*', '%', '?']) {
        return Err("is a wildcard (`*`, `%`, `?` are not allowed): name exact addresses");
    }
    if t.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err("contains whitespace, control characters or angle brackets");
    }
    let Some((local, domain)) = t.rsplit_once('@') else {
        return Err("is not an address (a bare domain is not allowed): name exact addresses");
    };
    if local.is_empty() {
        return Err("has an empty local part (`@domain` is not allowed): name exact addresses");
    }
    if domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
        return Err("has no valid domain");
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(default)]
    warrants: Vec<RawWarrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarrant {
    liid: String,
    authority: String,
    targets: Vec<String>,
    direction: String,
    valid_from: String,
    valid_until: String,
    product: String,
}

fn invalid(liid: &str, field: &str, problem: impl Into<String>) -> InterceptError {
    InterceptError::InvalidWarrant {
        liid: liid.to_owned(),
        field: field.to_owned(),
        problem: problem.into(),
    }
}

fn time(liid: &str, field: &str, text: &str) -> Result<DateTime<Utc>, InterceptError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(liid, field, "is not an RFC 3339 time"))
}

fn validate(raw: RawWarrant) -> Result<Warrant, InterceptError> {
    let liid = raw.liid.trim().to_owned();
    let liid_ok = !liid.is_empty()
        && liid.len() <= MAX_LIID_LEN
        && liid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
    if !liid_ok {
        return Err(invalid(
            &liid,
            "liid",
            format!("must be 1-{MAX_LIID_LEN} characters of [A-Za-z0-9._:/-]"),
        ));
    }
    let authority = raw.authority.trim().to_owned();
    if authority.is_empty() || authority.chars().any(char::is_control) {
        return Err(invalid(
            &liid,
            "authority",
            "must be a non-empty line of text",
        ));
    }
    if raw.targets.is_empty() {
        return Err(invalid(&liid, "targets", "names no address"));
    }
    let mut targets = Vec::with_capacity(raw.targets.len());
    for (i, t) in raw.targets.iter().enumerate() {
        let t = normalise_target(t).map_err(|p| invalid(&liid, &format!("targets[{i}]"), p))?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    let direction = match raw.direction.trim() {
        "sent" => Direction::Sent,
        "received" => Direction::Received,
        "both" => Direction::Both,
        _ => {
            return Err(invalid(
                &liid,
                "direction",
                "must be sent, received or both",
            ))
        }
    };
    let product = Product::parse(raw.product.trim())
        .ok_or_else(|| invalid(&liid, "product", "must be iri or iri+cc"))?;
    let valid_from = time(&liid, "valid_from", &raw.valid_from)?;
    let valid_until = time(&liid, "valid_until", &raw.valid_until)?;
    if valid_until <= valid_from {
        return Err(invalid(&liid, "valid_until", "is not after valid_from"));
    }
    Ok(Warrant {
        liid,
        authority,
        targets,
        direction,
        valid_from,
        valid_until,
        product,
    })
}

/// Parses and validates a warrants document (`warrants:` list). Any invalid warrant refuses
/// the whole document; the error names the LIID and the field, never a target's value.
pub fn parse_warrants(text: &str, origin: &str) -> Result<Vec<Warrant>, InterceptError> {
    let raw: RawDocument = serde_saphyr::from_str(text).map_err(|e| InterceptError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let mut out: Vec<Warrant> = Vec::with_capacity(raw.warrants.len());
    for r in raw.warrants {
        let w = validate(r)?;
        if out.iter().any(|o| o.liid == w.liid) {
            return Err(invalid(&w.liid, "liid", "appears twice"));
        }
        out.push(w);
    }
    Ok(out)
}

/// Loads the warrants file. Refuses a file not owned by root (uid 0) or accessible to group
/// or others (`mode & 0o077 != 0`); the check is made on the opened file, so the bytes read
/// are those of the file checked.
pub fn load_file(path: &Path) -> Result<Vec<Warrant>, InterceptError> {
    let refuse = |problem: String| InterceptError::WarrantsFile {
        path: path.to_owned(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| refuse(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if meta.uid() != 0 {
        return Err(refuse(format!(
            "is owned by uid {}, must be owned by root (uid 0)",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "has mode {mode:04o}: group and others must have no access (chmod 0600)"
        )));
    }
    if meta.len() > MAX_WARRANTS_BYTES as u64 {
        return Err(refuse(format!("is larger than {MAX_WARRANTS_BYTES} bytes")));
    }
    let mut text = String::new();
    file.take(MAX_WARRANTS_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    parse_warrants(&text, &path.display().to_string())
}
