//! The MTA-STS cache decision (RFC 8461 §3.3, §5.1), pure: given what is cached, what the TXT
//! lookup said and the time, should the relay use the cache, fetch, or assume no policy?

use super::StsPolicy;
use crate::ResultType;

/// A policy as the relay's cache holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPolicy {
    pub policy: StsPolicy,
    /// The TXT `id` the policy was fetched under.
    pub id: String,
    /// When the policy was fetched, seconds since the Unix epoch.
    pub fetched_at: u64,
}

impl CachedPolicy {
    /// Unexpired: `now` is before `fetched_at + max_age` (a clock that went back counts as fresh).
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self
            .fetched_at
            .saturating_add(u64::from(self.policy.max_age))
    }
}

/// What the `_mta-sts` TXT lookup gave, already through `parse_txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxtLookup {
    /// One valid STSv1 record with this id.
    Found(String),
    /// NXDOMAIN, no TXT record, or no valid STSv1 record (RFC 8461 §3.1: no available policy).
    Absent,
    /// SERVFAIL, timeout or another failure: nothing is known.
    Failed,
}

/// What to do before delivering to a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheAction {
    /// Apply the cached policy as it is.
    UseCached,
    /// Fetch the policy over HTTPS, then call `after_fetch`.
    Refetch,
    /// The domain has no MTA-STS policy.
    NoPolicy,
    /// The TXT lookup failed and nothing usable is cached: defer the delivery (a lookup that
    /// could carry policy never counts as "no policy").
    Indeterminate,
}

/// Decides from the cache, the TXT lookup and the time:
///
/// | cached policy | TXT `Found(id)`          | TXT `Absent` | TXT `Failed`    |
/// |---------------|--------------------------|--------------|-----------------|
/// | fresh         | same id → `UseCached`, other id → `Refetch` | `UseCached` | `UseCached` |
/// | expired/none  | `Refetch`                | `NoPolicy`   | `Indeterminate` |
///
/// A fresh cached policy is never dropped because the TXT record vanished or a lookup failed:
/// a TXT change alone never downgrades a policy (RFC 8461 §5.1, §10.2; a domain withdraws a
/// policy by publishing `mode: none` and waiting `max_age`, §8.3). A new id means a new policy
/// (§3.3). An expired policy is never applied (§3.3, `max_age`).
pub fn cache_action(cached: Option<&CachedPolicy>, txt: &TxtLookup, now: u64) -> CacheAction {
    let fresh = cached.filter(|c| c.is_fresh(now));
    match (fresh, txt) {
        (Some(c), TxtLookup::Found(id)) if *id == c.id => CacheAction::UseCached,
        (Some(_), TxtLookup::Found(_)) => CacheAction::Refetch,
        (Some(_), TxtLookup::Absent | TxtLookup::Failed) => CacheAction::UseCached,
        (None, TxtLookup::Found(_)) => CacheAction::Refetch,
        (None, TxtLookup::Absent) => CacheAction::NoPolicy,
        (None, TxtLookup::Failed) => CacheAction::Indeterminate,
    }
}

/// Where MTA-STS stands for a domain, as `decide_hop` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StsState {
    /// No policy (no TXT record, nothing cached).
    NoPolicy,
    /// A valid policy, freshly fetched (`cached: false`) or from an unexpired cache entry.
    Policy { policy: StsPolicy, cached: bool },
    /// A TXT record announced a policy but none could be fetched or parsed, and nothing
    /// unexpired is cached: deliver as without MTA-STS (RFC 8461 §3.3, §5.1), and report
    /// `reason` (`sts-policy-fetch-error`, `sts-policy-invalid` or `sts-webpki-invalid`).
    Unavailable { reason: ResultType },
    /// The TXT lookup failed with nothing usable cached (`CacheAction::Indeterminate`): defer.
    Indeterminate,
}

/// The state after a fetch: the fetched policy, or on failure an unexpired cached policy
/// (RFC 8461 §3.3: a failed fetch keeps a fresh cached policy in force), or `Unavailable`.
pub fn after_fetch(
    cached: Option<&CachedPolicy>,
    fetched: Result<StsPolicy, ResultType>,
    now: u64,
) -> StsState {
    match (fetched, cached.filter(|c| c.is_fresh(now))) {
        (Ok(policy), _) => StsState::Policy {
            policy,
            cached: false,
        },
        (Err(_), Some(c)) => StsState::Policy {
            policy: c.policy.clone(),
            cached: true,
        },
        (Err(reason), None) => StsState::Unavailable { reason },
    }
}

/// The state when no fetch happens (`UseCached`, `NoPolicy`, `Indeterminate`). For
/// `Refetch` the caller fetches and uses `after_fetch` instead; given `Refetch` this returns
/// the cached policy if fresh, else `Indeterminate`, so it can never invent "no policy".
pub fn without_fetch(cached: Option<&CachedPolicy>, action: CacheAction, now: u64) -> StsState {
    let fresh = cached.filter(|c| c.is_fresh(now));
    match (action, fresh) {
        (CacheAction::NoPolicy, _) => StsState::NoPolicy,
        (CacheAction::UseCached | CacheAction::Refetch, Some(c)) => StsState::Policy {
            policy: c.policy.clone(),
            cached: true,
        },
        (CacheAction::UseCached | CacheAction::Refetch | CacheAction::Indeterminate, _) => {
            StsState::Indeterminate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::{MxPattern, StsMode};

    const DAY: u64 = 86_400;
    const T0: u64 = 1_800_000_000;

    fn policy(mode: StsMode) -> StsPolicy {
        StsPolicy {
            mode,
            mx: vec![MxPattern::parse("*.example.com").unwrap()],
            max_age: DAY as u32,
        }
    }

    fn cached(id: &str) -> CachedPolicy {
        CachedPolicy {
            policy: policy(StsMode::Enforce),
            id: id.into(),
            fetched_at: T0,
        }
    }

    #[test]
    fn cache_action_table() {
        use CacheAction::*;
        use TxtLookup::*;
        let fresh = T0 + DAY - 1;
        let expired = T0 + DAY;
        let c = cached("id1");
        let rows: Vec<(&str, Option<&CachedPolicy>, TxtLookup, u64, CacheAction)> = vec![
            (
                "fresh, same id",
                Some(&c),
                Found("id1".into()),
                fresh,
                UseCached,
            ),
            (
                "fresh, new id",
                Some(&c),
                Found("id2".into()),
                fresh,
                Refetch,
            ),
            (
                "fresh, TXT gone: no downgrade",
                Some(&c),
                Absent,
                fresh,
                UseCached,
            ),
            ("fresh, TXT failed", Some(&c), Failed, fresh, UseCached),
            (
                "expired, same id",
                Some(&c),
                Found("id1".into()),
                expired,
                Refetch,
            ),
            ("expired, TXT gone", Some(&c), Absent, expired, NoPolicy),
            (
                "expired, TXT failed",
                Some(&c),
                Failed,
                expired,
                Indeterminate,
            ),
            ("none, TXT found", None, Found("id1".into()), T0, Refetch),
            ("none, no TXT", None, Absent, T0, NoPolicy),
            ("none, TXT failed", None, Failed, T0, Indeterminate),
            ("clock went back", Some(&c), Absent, T0 - 10, UseCached),
        ];
        for (name, cached, txt, now, want) in rows {
            assert_eq!(cache_action(cached, &txt, now), want, "{name}");
        }
        let zero = CachedPolicy {
            policy: StsPolicy {
                max_age: 0,
                ..policy(StsMode::Enforce)
            },
            ..cached("id1")
        };
        assert!(!zero.is_fresh(T0), "max_age 0 is never fresh");
    }

    #[test]
    fn after_fetch_table() {
        let c = cached("id1");
        let new = policy(StsMode::Testing);
        let err = Err(ResultType::StsPolicyFetchError);
        type Row<'a> = (
            &'a str,
            Option<&'a CachedPolicy>,
            Result<StsPolicy, ResultType>,
            u64,
            StsState,
        );
        let rows: Vec<Row> = vec![
            (
                "fetched wins over cache",
                Some(&c),
                Ok(new.clone()),
                T0 + 1,
                StsState::Policy {
                    policy: new.clone(),
                    cached: false,
                },
            ),
            (
                "fetch failed, fresh cache applies",
                Some(&c),
                err.clone(),
                T0 + 1,
                StsState::Policy {
                    policy: c.policy.clone(),
                    cached: true,
                },
            ),
            (
                "fetch failed, cache expired",
                Some(&c),
                err.clone(),
                T0 + DAY,
                StsState::Unavailable {
                    reason: ResultType::StsPolicyFetchError,
                },
            ),
            (
                "invalid policy, nothing cached",
                None,
                Err(ResultType::StsPolicyInvalid),
                T0,
                StsState::Unavailable {
                    reason: ResultType::StsPolicyInvalid,
                },
            ),
        ];
        for (name, cached, fetched, now, want) in rows {
            assert_eq!(after_fetch(cached, fetched, now), want, "{name}");
        }
    }

    #[test]
    fn without_fetch_never_invents_no_policy() {
        let c = cached("id1");
        let fresh = StsState::Policy {
            policy: c.policy.clone(),
            cached: true,
        };
        assert_eq!(without_fetch(Some(&c), CacheAction::UseCached, T0), fresh);
        assert_eq!(without_fetch(Some(&c), CacheAction::Refetch, T0), fresh);
        assert_eq!(
            without_fetch(None, CacheAction::NoPolicy, T0),
            StsState::NoPolicy
        );
        assert_eq!(
            without_fetch(None, CacheAction::Indeterminate, T0),
            StsState::Indeterminate
        );
        assert_eq!(
            without_fetch(None, CacheAction::UseCached, T0),
            StsState::Indeterminate
        );
        assert_eq!(
            without_fetch(Some(&c), CacheAction::Refetch, T0 + DAY),
            StsState::Indeterminate
        );
    }
}
