//! The decision: which TLS a hop to one next-hop host requires, and why.
//!
//! Pure: inputs in, requirement out. A requirement that cannot be met is never weakened here or
//! by the caller: the outbound path defers instead (no silent fallback to plaintext).

use std::fmt;

/// Where a hop's TLS requirement comes from (the `policy` metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySource {
    Dane,
    MtaSts,
    Charter,
    Requiretls,
    /// The operator's configuration (a route or the global default, which is `verify`).
    Operator,
    /// Explicitly configured opportunistic TLS for a non-charter destination.
    Opportunistic,
}

impl PolicySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dane => "dane",
            Self::MtaSts => "mta-sts",
            Self::Charter => "charter",
            Self::Requiretls => "requiretls",
            Self::Operator => "operator",
            Self::Opportunistic => "opportunistic",
        }
    }
}

/// The TLS a hop must achieve before MAIL FROM is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequiredTls {
    /// STARTTLS and a certificate chain PKIX-valid for `name` (RFC 6125 DNS-ID).
    Pkix { name: String },
    /// STARTTLS required; the certificate is not authenticated.
    Encrypt,
    /// STARTTLS when offered; plaintext otherwise. Only for explicitly configured,
    /// non-charter destinations.
    Opportunistic,
}

impl RequiredTls {
    /// Whether a hop without TLS is acceptable.
    pub fn allows_plaintext(&self) -> bool {
        matches!(self, Self::Opportunistic)
    }

    /// The verification method a successful TLS hop under this requirement proves.
    pub fn verify_method(&self) -> crate::VerifyMethod {
        match self {
            Self::Pkix { .. } => crate::VerifyMethod::Pkix,
            Self::Encrypt | Self::Opportunistic => crate::VerifyMethod::None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pkix { .. } => "verify",
            Self::Encrypt => "encrypt",
            Self::Opportunistic => "opportunistic",
        }
    }
}

impl fmt::Display for RequiredTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pkix { name } => write!(f, "verify (PKIX, name {name})"),
            Self::Encrypt => f.write_str("encrypt"),
            Self::Opportunistic => f.write_str("opportunistic"),
        }
    }
}

/// The operator's configured TLS level for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTls {
    Verify,
    Encrypt,
    Opportunistic,
}

/// Why no hop may be attempted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("opportunistic TLS is never allowed towards charter peer `{peer}`")]
    OpportunisticToCharterPeer { peer: String },
}

/// Everything `decide` looks at for one next-hop host.
#[derive(Clone, Debug)]
pub struct DecisionInput<'a> {
    /// The host name the certificate must match (the MX host, or a configured TLS name).
    pub reference_name: &'a str,
    /// The configured route level (a route entry, or the default `Verify`).
    pub route: RouteTls,
    /// The charter peer the destination belongs to, if any.
    pub charter_peer: Option<&'a str>,
}

/// The requirement for one hop and its source.
pub fn decide(input: &DecisionInput<'_>) -> Result<(RequiredTls, PolicySource), Refusal> {
    let source = if input.charter_peer.is_some() {
        PolicySource::Charter
    } else {
        PolicySource::Operator
    };
    match (input.route, input.charter_peer) {
        (RouteTls::Verify, _) => Ok((
            RequiredTls::Pkix {
                name: input.reference_name.to_ascii_lowercase(),
            },
            source,
        )),
        (RouteTls::Encrypt, _) => Ok((RequiredTls::Encrypt, source)),
        (RouteTls::Opportunistic, Some(peer)) => Err(Refusal::OpportunisticToCharterPeer {
            peer: peer.to_string(),
        }),
        (RouteTls::Opportunistic, None) => {
            Ok((RequiredTls::Opportunistic, PolicySource::Opportunistic))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        use PolicySource as S;
        use RouteTls as R;
        let pkix = || RequiredTls::Pkix {
            name: "mx.example.test".into(),
        };
        type Row<'a> = (R, Option<&'a str>, Result<(RequiredTls, S), Refusal>);
        let rows: [Row; 6] = [
            (R::Verify, None, Ok((pkix(), S::Operator))),
            (R::Verify, Some("peer-a"), Ok((pkix(), S::Charter))),
            (R::Encrypt, None, Ok((RequiredTls::Encrypt, S::Operator))),
            (
                R::Encrypt,
                Some("peer-a"),
                Ok((RequiredTls::Encrypt, S::Charter)),
            ),
            (
                R::Opportunistic,
                None,
                Ok((RequiredTls::Opportunistic, S::Opportunistic)),
            ),
            (
                R::Opportunistic,
                Some("peer-a"),
                Err(Refusal::OpportunisticToCharterPeer {
                    peer: "peer-a".into(),
                }),
            ),
        ];
        for (route, peer, want) in rows {
            let got = decide(&DecisionInput {
                reference_name: "MX.Example.test",
                route,
                charter_peer: peer,
            });
            assert_eq!(got, want, "{route:?} {peer:?}");
        }
    }

    #[test]
    fn only_opportunistic_allows_plaintext() {
        assert!(RequiredTls::Opportunistic.allows_plaintext());
        assert!(!RequiredTls::Encrypt.allows_plaintext());
        assert!(!RequiredTls::Pkix { name: "a".into() }.allows_plaintext());
    }
}
