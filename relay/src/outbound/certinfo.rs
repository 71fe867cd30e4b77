//! Facts read from a peer certificate for the evidence: its expiry (notAfter), by a minimal
//! DER walk of the TBSCertificate (RFC 5280 §4.1). Never panics on malformed input.

/// One DER TLV: (tag, content, rest). Definite lengths up to 4 octets only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first & 0x80 == 0 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let content = input.get(header..header.checked_add(len)?)?;
    let rest = input.get(header + len..)?;
    Some((tag, content, rest))
}

/// The certificate's notAfter as Unix seconds.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (_, cert, _) = tlv(cert_der)?;
    let (_, tbs, _) = tlv(cert)?;
    // version [0] EXPLICIT (optional), serialNumber, signature, issuer, validity.
    let (tag, _, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        rest = tlv(rest)?.2; // serialNumber
    }
    rest = tlv(rest)?.2; // signature AlgorithmIdentifier
    rest = tlv(rest)?.2; // issuer
    let (_, validity, _) = tlv(rest)?;
    let after_not_before = tlv(validity)?.2;
    let (tag, time, _) = tlv(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let parsed = match tag {
        // UTCTime: YYMMDDHHMMSSZ; years 50..99 are 19xx (RFC 5280 §4.1.2.5.1).
        0x17 => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            let century = if yy >= 50 { "19" } else { "20" };
            chrono::NaiveDateTime::parse_from_str(&format!("{century}{text}"), "%Y%m%d%H%M%SZ")
                .ok()?
        }
        // GeneralizedTime: YYYYMMDDHHMMSSZ.
        0x18 => chrono::NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%SZ").ok()?,
        _ => return None,
    };
    Some(parsed.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_of_generated_certificates() {
        for (year, month) in [(2031, 7), (2049, 12), (2051, 1)] {
            let mut params =
                rcgen::CertificateParams::new(vec!["mx.example.test".to_string()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, month, 15);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let want = chrono::NaiveDate::from_ymd_opt(year, month as u32, 15)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp();
            assert_eq!(not_after(cert.der()), Some(want), "{year}-{month}");
        }
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01",
            &[0x30, 0x80, 0, 0],
        ] {
            assert_eq!(not_after(bad), None);
        }
        // Every prefix of a real certificate.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        for n in 0..der.len() {
            let _ = not_after(&der[..n]);
        }
    }
}
