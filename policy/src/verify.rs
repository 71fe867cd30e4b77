//! How a hop's certificate was authenticated: the evidence vocabulary for audit and reports.

/// The verification method of a hop (`none` when the certificate was not authenticated or
/// there was no TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMethod {
    DaneEe,
    DaneTa,
    MtaSts,
    Pkix,
    Pinned,
    None,
}

impl VerifyMethod {
    pub const ALL: [VerifyMethod; 6] = [
        Self::DaneEe,
        Self::DaneTa,
        Self::MtaSts,
        Self::Pkix,
        Self::Pinned,
        Self::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaneEe => "dane-ee",
            Self::DaneTa => "dane-ta",
            Self::MtaSts => "mta-sts",
            Self::Pkix => "pkix",
            Self::Pinned => "pinned",
            Self::None => "none",
        }
    }

    /// Whether the peer was authenticated (anything but `none`).
    pub fn authenticated(self) -> bool {
        self != Self::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_matches_as_str() {
        for m in VerifyMethod::ALL {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
            assert_eq!(m.authenticated(), m != VerifyMethod::None);
        }
    }
}
