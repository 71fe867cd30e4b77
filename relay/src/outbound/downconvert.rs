//! 8-bit to 7-bit conversion for a next hop without 8BITMIME (RFC 6152 §3: a relay must
//! convert such a message or refuse it, never send 8-bit data to a 7-bit server).
//!
//! Pure: bytes in, bytes out. Every MIME leaf whose body holds 8-bit bytes is re-encoded as
//! quoted-printable (RFC 2045 §6.7) and its `Content-Transfer-Encoding` set accordingly;
//! multipart bodies (RFC 2046 §5.1) and `message/rfc822` parts are converted part by part. A
//! message that is 7-bit already is left alone (most messages declared 8BITMIME are). What
//! cannot be converted without guessing — 8-bit bytes in a header, a preamble or an epilogue, a
//! multipart without a boundary, an 8-bit body that claims base64 or quoted-printable, nesting
//! deeper than 20 — is refused, and the message bounces with 5.6.3.

use crate::smtp::header_field as field;

/// Why a message cannot be made 7-bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotConvertible(pub &'static str);

const MAX_DEPTH: usize = 20;

fn is_7bit(b: &[u8]) -> bool {
    b.iter().all(|&c| c < 0x80)
}

/// The message made 7-bit: `None` when it already is (send it unchanged).
pub fn to_7bit(msg: &[u8]) -> Result<Option<Vec<u8>>, NotConvertible> {
    if is_7bit(msg) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 8);
    entity(msg, &mut out, 0)?;
    Ok(Some(out))
}

/// Splits an entity into its header section (with the line break that ends its last line) and
/// its body (after the empty line). No empty line: all header, empty body.
fn split(e: &[u8]) -> (&[u8], &[u8], bool) {
    if e.starts_with(b"\r\n") {
        return (&[], &e[2..], true);
    }
    match memchr::memmem::find(e, b"\r\n\r\n") {
        Some(i) => (&e[..i + 2], &e[i + 4..], true),
        None => (e, &[], false),
    }
}

/// The media type (lower case) and the `boundary` parameter of a Content-Type value.
fn content_type(header: &[u8]) -> (String, Option<String>) {
    let Some(v) = field(header, "content-type") else {
        return ("text/plain".into(), None);
    };
    let mut parts = v.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let boundary = parts.find_map(|p| {
        let (k, val) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let val = val.trim();
        let val = val
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(val);
        (!val.is_empty() && val.len() <= 70).then(|| val.to_string())
    });
    (media, boundary)
}

/// The header section without its Content-Transfer-Encoding field(s), with `cte` added.
fn with_cte(header: &[u8], cte: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 48);
    let mut skipping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let folded = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !folded {
            skipping =
                line.len() > 26 && line[..26].eq_ignore_ascii_case(b"content-transfer-encoding:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: ");
    out.extend_from_slice(cte.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// Converts one entity (header section + body) into `out`.
fn entity(e: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), NotConvertible> {
    if depth > MAX_DEPTH {
        return Err(NotConvertible("MIME nesting deeper than 20"));
    }
    if is_7bit(e) {
        out.extend_from_slice(e);
        return Ok(());
    }
    let (header, body, has_body) = split(e);
    if !is_7bit(header) {
        return Err(NotConvertible("8-bit characters in a header"));
    }
    let (media, boundary) = content_type(header);
    let cte = field(header, "content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if media.starts_with("multipart/") {
        let b = boundary.ok_or(NotConvertible("a multipart entity without a boundary"))?;
        out.extend_from_slice(header);
        out.extend_from_slice(b"\r\n");
        return multipart(body, &b, out, depth);
    }
    if media == "message/rfc822" {
        // The enclosed message is converted; the part itself is then 7-bit.
        let h = if cte == "8bit" || cte == "binary" {
            with_cte(header, "7bit")
        } else {
            header.to_vec()
        };
        out.extend_from_slice(&h);
        out.extend_from_slice(b"\r\n");
        return entity(body, out, depth + 1);
    }
    if cte == "base64" || cte == "quoted-printable" {
        return Err(NotConvertible(
            "8-bit characters in a body declared base64 or quoted-printable",
        ));
    }
    out.extend_from_slice(&with_cte(header, "quoted-printable"));
    if has_body {
        out.extend_from_slice(b"\r\n");
        quoted_printable(body, out);
    }
    Ok(())
}

/// Converts a multipart body part by part; the delimiter lines are kept as they are.
fn multipart(
    body: &[u8],
    boundary: &str,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), NotConvertible> {
    let delim = format!("--{boundary}");
    // Positions of delimiter lines: at the start of the body or after a CRLF.
    let mut starts = Vec::new();
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&body[at..], delim.as_bytes()) {
        let pos = at + i;
        // A delimiter line: the boundary alone (or closing `--`), then optional white space
        // (RFC 2046 §5.1.1); `--b1` does not delimit parts of `b` (`--b` followed by `1`).
        let rest = &body[pos + delim.len()..];
        let rest = rest.strip_prefix(b"--").unwrap_or(rest);
        let line_end = memchr::memmem::find(rest, b"\r\n").unwrap_or(rest.len());
        let at_line_start = pos == 0 || body[..pos].ends_with(b"\r\n");
        if at_line_start && rest[..line_end].iter().all(|&c| c == b' ' || c == b'\t') {
            starts.push(pos);
        }
        at = pos + delim.len();
    }
    let Some(&first) = starts.first() else {
        return Err(NotConvertible("a multipart body without its boundary"));
    };
    let preamble = &body[..first];
    if !is_7bit(preamble) {
        return Err(NotConvertible("8-bit characters in a multipart preamble"));
    }
    out.extend_from_slice(preamble);
    for (k, &s) in starts.iter().enumerate() {
        // The delimiter line itself (up to and including its CRLF).
        let line_end = memchr::memmem::find(&body[s..], b"\r\n").map_or(body.len(), |i| s + i + 2);
        let line = &body[s..line_end];
        out.extend_from_slice(line);
        let closing = line[delim.len()..].starts_with(b"--");
        // The part runs to the CRLF before the next delimiter (that CRLF belongs to it).
        let next = starts.get(k + 1).copied().unwrap_or(body.len());
        if closing {
            let epilogue = &body[line_end..];
            if !is_7bit(epilogue) {
                return Err(NotConvertible("8-bit characters in a multipart epilogue"));
            }
            out.extend_from_slice(epilogue);
            return Ok(());
        }
        let (part, crlf) = match body[line_end..next].strip_suffix(b"\r\n") {
            Some(p) if k + 1 < starts.len() => (p, true),
            _ => (&body[line_end.min(next)..next], false),
        };
        entity(part, out, depth + 1)?;
        if crlf {
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(())
}

/// Quoted-printable (RFC 2045 §6.7): CRLF line breaks kept, bytes outside printable ASCII and
/// `=` encoded, whitespace before a line break encoded, lines at most 76 characters (soft
/// breaks `=`CRLF).
pub fn quoted_printable(body: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut lines = body.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        let (line, hard) = match raw.strip_suffix(b"\r\n") {
            Some(l) => (l, true),
            None => (raw, false),
        };
        let mut col = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal = match b {
                b'=' => false,
                b' ' | b'\t' => !last,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            // Room for a soft break's `=` on this line.
            let limit = if last { 76 } else { 75 };
            if col + width > limit {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            col += width;
        }
        if hard {
            out.extend_from_slice(b"\r\n");
        } else if lines.peek().is_some() {
            // A bare LF inside the body (never accepted inbound; kept exact if present).
            out.extend_from_slice(b"=0A");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quoted-printable decoder for the tests (RFC 2045 §6.7).
    fn qp_decode(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'=' {
                if s[i + 1..].starts_with(b"\r\n") {
                    i += 3;
                    continue;
                }
                let h = std::str::from_utf8(&s[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        out
    }

    fn check_qp(body: &[u8]) {
        let mut out = Vec::new();
        quoted_printable(body, &mut out);
        assert!(is_7bit(&out));
        for line in out.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() <= 76, "{:?}", String::from_utf8_lossy(line));
            assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
        }
        assert_eq!(qp_decode(&out), body, "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        check_qp("Grüße aus Köln = 100 % \r\n".as_bytes());
        check_qp("é".repeat(200).as_bytes());
        check_qp(format!("{}\r\n{} \r\n\t\r\n", "a".repeat(300), "b".repeat(75)).as_bytes());
        check_qp(b"no final line break \xff");
        check_qp(b"=\r\n==\r\n.leading dot\r\n");
        for n in 70..80 {
            check_qp(format!("{}é\r\n", "x".repeat(n)).as_bytes());
            check_qp(format!("{}=\r\n", "x".repeat(n)).as_bytes());
        }
    }

    #[test]
    fn seven_bit_messages_are_left_alone() {
        assert_eq!(to_7bit(b"Subject: a\r\n\r\nplain\r\n"), Ok(None));
    }

    #[test]
    fn a_single_8bit_part_becomes_quoted_printable() {
        let msg = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n";
        let out = to_7bit(msg.as_bytes()).unwrap().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n"
        );
        // No MIME headers at all: text/plain, 8-bit.
        let out = to_7bit("Subject: y\r\n\r\né\r\n".as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Subject: y\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n"
        );
    }

    #[test]
    fn multipart_and_nested_messages_are_converted_part_by_part() {
        let msg = concat!(
            "Subject: m\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n",
            "preamble\r\n",
            "--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nçà\r\n",
            "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n",
            "--b1\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
            "Subject: inner\r\n\r\nñ\r\n",
            "--b1--\r\nepilogue\r\n"
        );
        let out = String::from_utf8(to_7bit(msg.as_bytes()).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            concat!(
                "Subject: m\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n",
                "preamble\r\n",
                "--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A7=C3=A0\r\n",
                "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n",
                "--b1\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
                "Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=B1\r\n",
                "--b1--\r\nepilogue\r\n"
            )
        );
    }

    #[test]
    fn what_cannot_be_converted_is_refused() {
        let refused = |m: &[u8]| to_7bit(m).unwrap_err();
        refused("Subject: é\r\n\r\nbody é\r\n".as_bytes());
        refused("Content-Type: multipart/mixed\r\n\r\né\r\n".as_bytes());
        refused("Content-Transfer-Encoding: base64\r\n\r\n\u{e9}\r\n".as_bytes());
        refused(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\npré\r\n--b\r\n\r\nx\r\n--b--\r\n"
                .as_bytes(),
        );
        // Nesting without end.
        let mut deep = String::new();
        for _ in 0..30 {
            deep.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        deep.push_str("\r\né\r\n");
        assert_eq!(
            refused(deep.as_bytes()),
            NotConvertible("MIME nesting deeper than 20")
        );
    }

    #[test]
    fn a_longer_boundary_is_not_a_delimiter() {
        let msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--b1 is text é\r\n--b--\r\n";
        let out = String::from_utf8(to_7bit(msg.as_bytes()).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n--b1 is text =C3=A9\r\n--b--\r\n"
        );
    }

    /// Messages assembled at random from MIME fragments: never a panic, and whatever is
    /// converted is 7-bit with its quoted-printable lines at most 76 characters.
    #[test]
    fn random_mime_never_panics_and_converts_to_7bit() {
        const PARTS: &[&str] = &[
            "Content-Type: multipart/mixed; boundary=b\r\n",
            "Content-Type: multipart/alternative; boundary=\"b\"\r\n",
            "Content-Type: message/rfc822\r\n",
            "Content-Type: text/plain\r\n",
            "Content-Transfer-Encoding: 8bit\r\n",
            "Content-Transfer-Encoding: base64\r\n",
            "Content-Transfer-Encoding:\r\n quoted-printable\r\n",
            "Subject: x\r\n",
            "\r\n",
            "--b\r\n",
            "--b--\r\n",
            "--b",
            "--b1\r\n",
            "é",
            "\u{ff}",
            "x",
            "=",
            " ",
            "\r",
            "\n",
            ".",
            "line of text\r\n",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut converted = 0;
        for _ in 0..5000 {
            let n = (next() % 40) as usize;
            let mut m = String::new();
            for _ in 0..n {
                m.push_str(PARTS[(next() % PARTS.len() as u64) as usize]);
            }
            if let Ok(Some(out)) = to_7bit(m.as_bytes()) {
                converted += 1;
                assert!(is_7bit(&out), "{m:?}");
            }
        }
        assert!(converted > 100, "only {converted} converted");
    }

    #[test]
    fn folded_and_repeated_cte_fields_are_replaced() {
        let msg = "Content-Transfer-Encoding:\r\n 8bit\r\nX-A: 1\r\ncontent-transfer-encoding: 8bit\r\n\r\né\r\n";
        let out = String::from_utf8(to_7bit(msg.as_bytes()).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            "X-A: 1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n"
        );
    }
}
