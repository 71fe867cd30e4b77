//! MTA-STS (RFC 8461), pure: the `_mta-sts` TXT record, the policy file, MX patterns and the
//! cache decision. Fetching (DNS, HTTPS without redirects) belongs to the relay.
//!
//! - this file: `MxPattern` (RFC 8461 §4.1) and the parsed `StsPolicy`;
//! - `txt`: `parse_txt`, the discovery record (§3.1);
//! - `policy`: `parse_policy`, the policy file (§3.2);
//! - `cache`: `cache_action` and `after_fetch` (§3.3, §5.1).

pub mod cache;
pub mod policy;
pub mod txt;

pub use cache::{
    after_fetch, cache_action, without_fetch, CacheAction, CachedPolicy, StsState, TxtLookup,
};
pub use policy::{parse_policy, PolicyError, MAX_AGE_LIMIT, MAX_POLICY_BYTES};
pub use txt::{parse_txt, StsTxt, TxtError};

use std::fmt;

/// The policy mode (RFC 8461 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StsMode {
    /// Refuse MX hosts that fail validation.
    Enforce,
    /// Deliver anyway, but report failures (TLS-RPT).
    Testing,
    /// The domain has no active policy.
    None,
}

impl StsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Testing => "testing",
            Self::None => "none",
        }
    }
}

/// A valid policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsPolicy {
    pub mode: StsMode,
    /// At least one pattern unless `mode` is `none`.
    pub mx: Vec<MxPattern>,
    /// Seconds the policy may be cached, at most `MAX_AGE_LIMIT`.
    pub max_age: u32,
}

impl StsPolicy {
    /// Whether `host` is an MX host this policy names.
    pub fn matches_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }
}

/// One `mx:` value: `mail.example.com` or `*.example.com` (RFC 8461 §3.2, §4.1), stored
/// lower-case without a trailing dot.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MxPattern {
    wildcard: bool,
    /// The domain after `*.` for a wildcard, else the whole name.
    domain: String,
}

/// Why an `mx:` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a host name or a `*.` wildcard of one")]
pub struct BadMxPattern(pub String);

impl MxPattern {
    /// Parses a pattern: LDH labels of 1–63 octets, at most 253 octets, optionally after `*.`.
    pub fn parse(value: &str) -> Result<Self, BadMxPattern> {
        let bad = || BadMxPattern(value.to_string());
        let name = value
            .strip_suffix('.')
            .unwrap_or(value)
            .to_ascii_lowercase();
        let (wildcard, domain) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, name),
        };
        if !is_host_name(&domain) {
            return Err(bad());
        }
        Ok(Self { wildcard, domain })
    }

    /// RFC 8461 §4.1: a plain pattern matches the host exactly; `*.d` matches a host that is one
    /// label followed by `d` (exactly one left-most label: not `d` itself, not `a.b.d`).
    /// Case-insensitive; a trailing dot on the host is ignored.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if !self.wildcard {
            return host == self.domain;
        }
        match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == self.domain,
            None => false,
        }
    }
}

impl StsPolicy {
    /// The policy as TLS-RPT's `policy-string` (RFC 8460 §4.4): its fields, one per line.
    pub fn policy_strings(&self) -> Vec<String> {
        let mut lines = vec![
            "version: STSv1".to_string(),
            format!("mode: {}", self.mode.as_str()),
        ];
        lines.extend(self.mx.iter().map(|p| format!("mx: {p}")));
        lines.push(format!("max_age: {}", self.max_age));
        lines
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.domain)
        } else {
            f.write_str(&self.domain)
        }
    }
}

impl fmt::Debug for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MxPattern({self})")
    }
}

/// LDH host name check (labels 1–63 octets of letters, digits and inner hyphens; underscores
/// are tolerated as in real-world MX names).
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_strings_list_the_fields() {
        let p = StsPolicy {
            mode: StsMode::Testing,
            mx: vec![
                MxPattern::parse("*.example.com").unwrap(),
                MxPattern::parse("mx.example.org").unwrap(),
            ],
            max_age: 86_400,
        };
        assert_eq!(
            p.policy_strings(),
            [
                "version: STSv1",
                "mode: testing",
                "mx: *.example.com",
                "mx: mx.example.org",
                "max_age: 86400"
            ]
        );
    }

    #[test]
    fn mx_pattern_table() {
        // pattern, host, matches (RFC 8461 §4.1)
        let rows = [
            ("mail.example.com", "mail.example.com", true),
            ("mail.example.com", "MAIL.Example.COM", true),
            ("mail.example.com", "mail.example.com.", true),
            ("mail.example.com.", "mail.example.com", true),
            ("mail.example.com", "mx.example.com", false),
            ("mail.example.com", "a.mail.example.com", false),
            ("*.example.com", "mx1.example.com", true),
            ("*.example.com", "MX1.EXAMPLE.COM.", true),
            ("*.Example.com", "mx1.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "mx1.example.org", false),
            ("*.example.com", "mx1example.com", false),
        ];
        for (pattern, host, want) in rows {
            let p = MxPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(host), want, "{pattern} vs {host}");
        }
    }

    #[test]
    fn mx_pattern_syntax() {
        for good in [
            "mx.example.com",
            "*.example.com",
            "localhost",
            "a-b.c_d.example",
        ] {
            assert!(MxPattern::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "**.example.com",
            "a.*.example.com",
            "mx..example.com",
            "-mx.example",
            "mx-.example",
            "mx example.com",
            "mx.exämple.com",
            "*example.com",
        ] {
            assert!(MxPattern::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(MxPattern::parse(&long).is_err());
        assert_eq!(
            MxPattern::parse("*.Example.COM.").unwrap().to_string(),
            "*.example.com"
        );
    }
}
