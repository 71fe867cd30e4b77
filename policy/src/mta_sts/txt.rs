//! The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1): is there a policy, and which `id`?

/// The one valid STSv1 record of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsTxt {
    /// 1–32 letters and digits; a change tells senders to refetch the policy.
    pub id: String,
}

/// Why the TXT RRset yields no policy indication. Every variant means the same to a sender
/// (RFC 8461 §3.1: assume the domain has no available MTA-STS policy); they differ for logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    #[error("no TXT record starts with `v=STSv1`")]
    NoStsRecord,
    #[error("{0} TXT records start with `v=STSv1`; exactly one is allowed")]
    Several(usize),
    #[error("the STSv1 record has no `id` field")]
    MissingId,
    #[error("the STSv1 record has more than one `id` field")]
    DuplicateId,
    #[error("`id` must be 1 to 32 letters and digits")]
    BadId,
    #[error("malformed STSv1 record near `{0}`")]
    Syntax(String),
}

/// Parses the TXT RRset of `_mta-sts.<domain>`. Each element is one TXT record with its
/// character-strings already concatenated.
///
/// RFC 8461 §3.1: records that do not begin with `v=STSv1` are discarded; if the number of
/// remaining records is not exactly one, or the remaining record is invalid, the domain is
/// treated as having no available policy. Field names and `v=STSv1` are case-sensitive; fields
/// are separated by `;` with optional spaces or tabs; unknown extension fields are ignored.
pub fn parse_txt(records: &[&str]) -> Result<StsTxt, TxtError> {
    let sts: Vec<&str> = records
        .iter()
        .copied()
        .filter(|r| is_sts_record(r))
        .collect();
    match sts.as_slice() {
        [] => Err(TxtError::NoStsRecord),
        [one] => parse_record(one),
        many => Err(TxtError::Several(many.len())),
    }
}

/// `v=STSv1` followed by the end, a separator or whitespace.
fn is_sts_record(r: &str) -> bool {
    r.strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

fn parse_record(record: &str) -> Result<StsTxt, TxtError> {
    let mut fields = record.split(';').map(|f| f.trim_matches([' ', '\t']));
    // The version field, already checked by `is_sts_record`.
    let _version = fields.next();
    let mut id = None;
    let rest: Vec<&str> = fields.collect();
    for (i, field) in rest.iter().enumerate() {
        if field.is_empty() {
            // Only a trailing `;` may leave an empty field.
            if i + 1 == rest.len() {
                continue;
            }
            return Err(TxtError::Syntax(record.to_string()));
        }
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| TxtError::Syntax(field.to_string()))?;
        if name == "id" {
            if id.is_some() {
                return Err(TxtError::DuplicateId);
            }
            if value.is_empty()
                || value.len() > 32
                || !value.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(TxtError::BadId);
            }
            id = Some(value.to_string());
        } else if !is_extension(name, value) {
            return Err(TxtError::Syntax(field.to_string()));
        }
    }
    id.map(|id| StsTxt { id }).ok_or(TxtError::MissingId)
}

/// `sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`,
/// `sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)` (RFC 8461 §3.1).
fn is_extension(name: &str, value: &str) -> bool {
    let name_ok = name.len() <= 32
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let value_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=');
    name_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(id: &str) -> Result<StsTxt, TxtError> {
        Ok(StsTxt { id: id.into() })
    }

    #[test]
    fn txt_table() {
        let long33 = format!("v=STSv1; id={}", "a".repeat(33));
        let long32 = format!("v=STSv1; id={}", "a".repeat(32));
        let rows: Vec<(Vec<&str>, Result<StsTxt, TxtError>)> = vec![
            (vec!["v=STSv1; id=20160831085700Z;"], ok("20160831085700Z")),
            (vec!["v=STSv1; id=abc"], ok("abc")),
            (vec!["v=STSv1;id=abc;"], ok("abc")),
            (vec!["v=STSv1 ;\tid=abc ; "], ok("abc")),
            (vec!["v=STSv1; id=abc; ext_1=x.y-z;"], ok("abc")),
            (vec!["v=STSv1; id=A1b2C3"], ok("A1b2C3")),
            (vec![""], Err(TxtError::NoStsRecord)),
            (vec!["v=spf1 -all", "v=STSv1; id=x1;", "other"], ok("x1")),
            (vec!["v=spf1 -all"], Err(TxtError::NoStsRecord)),
            (vec![], Err(TxtError::NoStsRecord)),
            (vec!["V=STSv1; id=abc"], Err(TxtError::NoStsRecord)),
            (vec!["v=STSv10; id=abc"], Err(TxtError::NoStsRecord)),
            (
                vec!["v=STSv1; id=a", "v=STSv1; id=b"],
                Err(TxtError::Several(2)),
            ),
            (vec!["v=STSv1;"], Err(TxtError::MissingId)),
            (vec!["v=STSv1"], Err(TxtError::MissingId)),
            (vec!["v=STSv1; id=a; id=b"], Err(TxtError::DuplicateId)),
            (vec!["v=STSv1; id="], Err(TxtError::BadId)),
            (vec![long33.as_str()], Err(TxtError::BadId)),
            (vec![long32.as_str()], ok(&"a".repeat(32))),
            (vec!["v=STSv1; id=2016-08-31"], Err(TxtError::BadId)),
            (
                vec!["v=STSv1;; id=abc"],
                Err(TxtError::Syntax("v=STSv1;; id=abc".into())),
            ),
            (
                vec!["v=STSv1; id abc"],
                Err(TxtError::Syntax("id abc".into())),
            ),
            (vec!["v=STSv1; ID=abc"], Err(TxtError::MissingId)),
            (
                vec!["v=STSv1; id=abc; x=a;b"],
                Err(TxtError::Syntax("b".into())),
            ),
        ];
        for (records, want) in rows {
            assert_eq!(parse_txt(&records), want, "{records:?}");
        }
    }
}
