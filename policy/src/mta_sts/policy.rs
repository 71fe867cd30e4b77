//! The MTA-STS policy file (RFC 8461 §3.2), as fetched from
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`. Every error means `sts-policy-invalid`.

use super::{MxPattern, StsMode, StsPolicy};
use crate::ResultType;

/// The largest `max_age` a policy may carry (RFC 8461 §3.2: about one year, in seconds).
pub const MAX_AGE_LIMIT: u32 = 31_557_600;

/// The largest policy body accepted (the fetcher should stop reading here too).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Why a policy file is invalid (RFC 8460 result type `sts-policy-invalid`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    #[error("the policy is not UTF-8 text")]
    NotText,
    #[error("line {0} is not `key: value`")]
    Syntax(usize),
    #[error("`{0}` appears more than once")]
    Duplicate(&'static str),
    #[error("the required field `{0}` is missing")]
    Missing(&'static str),
    #[error("version `{0}` is not `STSv1`")]
    Version(String),
    #[error("mode `{0}` is not enforce, testing or none")]
    Mode(String),
    #[error("max_age `{0}` is not an integer from 0 to {MAX_AGE_LIMIT}")]
    MaxAge(String),
    #[error(transparent)]
    Mx(#[from] super::BadMxPattern),
}

impl PolicyError {
    /// Always `sts-policy-invalid`.
    pub fn result_type(&self) -> ResultType {
        ResultType::StsPolicyInvalid
    }
}

/// Parses a policy body (RFC 8461 §3.2):
///
/// - lines end in CRLF or LF; empty lines are skipped;
/// - each line is `key:` then optional spaces/tabs then the value; trailing spaces/tabs are
///   dropped; keys are case-sensitive;
/// - `version: STSv1`, `mode: enforce|testing|none` and `max_age: 0..=31557600` (at most 10
///   digits) are each required exactly once;
/// - `mx:` may repeat and is required at least once unless the mode is `none` (a `none` policy
///   enforces nothing, and publishing it is how a domain withdraws a policy, RFC 8461 §8.3);
/// - unknown keys are ignored (extensions).
pub fn parse_policy(body: &[u8]) -> Result<StsPolicy, PolicyError> {
    if body.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotText)?;
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(':').ok_or(PolicyError::Syntax(n + 1))?;
        if key.is_empty() || key.contains([' ', '\t', '\r']) {
            return Err(PolicyError::Syntax(n + 1));
        }
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" => set_once(&mut version, "version", value)?,
            "mode" => set_once(&mut mode, "mode", value)?,
            "max_age" => set_once(&mut max_age, "max_age", value)?,
            "mx" => mx.push(MxPattern::parse(value)?),
            _ => {}
        }
    }
    let version = version.ok_or(PolicyError::Missing("version"))?;
    if version != "STSv1" {
        return Err(PolicyError::Version(version.to_string()));
    }
    let mode = match mode.ok_or(PolicyError::Missing("mode"))? {
        "enforce" => StsMode::Enforce,
        "testing" => StsMode::Testing,
        "none" => StsMode::None,
        other => return Err(PolicyError::Mode(other.to_string())),
    };
    let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
    let max_age = parse_max_age(max_age).ok_or_else(|| PolicyError::MaxAge(max_age.into()))?;
    if mx.is_empty() && mode != StsMode::None {
        return Err(PolicyError::Missing("mx"));
    }
    Ok(StsPolicy { mode, mx, max_age })
}

fn set_once<'a>(
    slot: &mut Option<&'a str>,
    key: &'static str,
    value: &'a str,
) -> Result<(), PolicyError> {
    if slot.replace(value).is_some() {
        return Err(PolicyError::Duplicate(key));
    }
    Ok(())
}

/// `1*10(DIGIT)`, at most `MAX_AGE_LIMIT` (RFC 8461 §3.2).
fn parse_max_age(v: &str) -> Option<u32> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>()
        .ok()
        .filter(|n| *n <= u64::from(MAX_AGE_LIMIT))
        .map(|n| n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(list: &[&str]) -> Vec<MxPattern> {
        list.iter().map(|p| MxPattern::parse(p).unwrap()).collect()
    }

    #[test]
    fn valid_policies() {
        let rows: Vec<(&str, StsMode, &[&str], u32)> = vec![
            (
                "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
                StsMode::Enforce,
                &["mail.example.com", "*.example.net", "backupmx.example.com"],
                604800,
            ),
            (
                "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400",
                StsMode::Testing,
                &["mx.example.com"],
                86400,
            ),
            (
                "max_age:0\nmx:\tMX.Example.com.\nmode: enforce  \nversion: STSv1\n\n",
                StsMode::Enforce,
                &["mx.example.com"],
                0,
            ),
            (
                "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 31557600\nfoo_bar: anything: here\n",
                StsMode::Enforce,
                &["mx.example.com"],
                MAX_AGE_LIMIT,
            ),
            (
                "version: STSv1\nmode: none\nmax_age: 86400\n",
                StsMode::None,
                &[],
                86400,
            ),
        ];
        for (body, mode, patterns, max_age) in rows {
            let got = parse_policy(body.as_bytes()).unwrap_or_else(|e| panic!("{body:?}: {e}"));
            assert_eq!(
                got,
                StsPolicy {
                    mode,
                    mx: mx(patterns),
                    max_age
                },
                "{body:?}"
            );
        }
    }

    #[test]
    fn invalid_policies() {
        let base = |drop: &str, extra: &str| {
            let mut lines: Vec<&str> = vec![
                "version: STSv1",
                "mode: enforce",
                "mx: mx.example.com",
                "max_age: 86400",
            ];
            lines.retain(|l| !l.starts_with(drop) || drop.is_empty());
            format!("{}\n{extra}", lines.join("\n"))
        };
        let rows: Vec<(String, PolicyError)> = vec![
            (base("version", ""), PolicyError::Missing("version")),
            (base("mode", ""), PolicyError::Missing("mode")),
            (base("max_age", ""), PolicyError::Missing("max_age")),
            (base("mx", ""), PolicyError::Missing("mx")),
            (base("mx", "mode: testing"), PolicyError::Duplicate("mode")),
            (
                base("", "version: STSv1"),
                PolicyError::Duplicate("version"),
            ),
            (base("", "max_age: 1"), PolicyError::Duplicate("max_age")),
            (
                base("version", "version: STSv2"),
                PolicyError::Version("STSv2".into()),
            ),
            (
                base("version", "version: stsv1"),
                PolicyError::Version("stsv1".into()),
            ),
            (
                base("mode", "mode: Enforce"),
                PolicyError::Mode("Enforce".into()),
            ),
            (
                base("mode", "mode: report"),
                PolicyError::Mode("report".into()),
            ),
            (base("mode", "mode:"), PolicyError::Mode("".into())),
            (
                base("max_age", "max_age: 31557601"),
                PolicyError::MaxAge("31557601".into()),
            ),
            (
                base("max_age", "max_age: -1"),
                PolicyError::MaxAge("-1".into()),
            ),
            (
                base("max_age", "max_age: 00000000001"),
                PolicyError::MaxAge("00000000001".into()),
            ),
            (
                base("max_age", "max_age: 1e5"),
                PolicyError::MaxAge("1e5".into()),
            ),
            (base("max_age", "max_age: "), PolicyError::MaxAge("".into())),
            (base("", "just words"), PolicyError::Syntax(5)),
            (base("", " mode: none"), PolicyError::Syntax(5)),
            (base("", "Mode : none"), PolicyError::Syntax(5)),
            (
                base("", "mx: bad host"),
                PolicyError::Mx(crate::mta_sts::BadMxPattern("bad host".into())),
            ),
        ];
        for (body, want) in rows {
            assert_eq!(parse_policy(body.as_bytes()), Err(want), "{body:?}");
        }
        assert_eq!(parse_policy(&[0xff, 0xfe]), Err(PolicyError::NotText));
        let huge = vec![b'a'; MAX_POLICY_BYTES + 1];
        assert_eq!(parse_policy(&huge), Err(PolicyError::TooLarge));
        assert_eq!(
            PolicyError::Missing("mx").result_type(),
            ResultType::StsPolicyInvalid
        );
    }
}
