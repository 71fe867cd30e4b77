//! DATA decoding (RFC 5321 §4.1.1.4, §4.5.2): end of data, dot-unstuffing and the rules that
//! close the SMTP smuggling class (CVE-2023-51764).
//!
//! Only `<CRLF>.<CRLF>` ends the data (the first CRLF may be the one that ended the DATA
//! command). A bare LF or bare CR never starts or ends a line here, so `<LF>.<LF>`,
//! `<CRLF>.<LF>` and `<CR>.<CR>` are ordinary data. A message containing a bare CR or bare LF
//! is read to its real end and then rejected as a whole, so nothing a sender hides behind a
//! fake terminator can become a second message.

/// Why a received message cannot be accepted (decided once the data has ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDefect {
    BareCrOrLf,
    LineTooLong,
    TooBig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// After a CRLF (or at the start of the data).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
    InLine,
    /// A CR inside a line, waiting for LF.
    Cr,
}

/// Streams DATA bytes into message bytes.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    line_len: usize,
    max_line: usize,
    max_size: u64,
    size: u64,
    defect: Option<DataDefect>,
}

/// What `feed` did with the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// Input bytes consumed; bytes after the terminator are left for the command reader.
    pub consumed: usize,
    /// The terminating `<CRLF>.<CRLF>` has been seen.
    pub done: bool,
}

impl DataDecoder {
    pub fn new(max_line: usize, max_size: u64) -> Self {
        Self {
            state: State::LineStart,
            line_len: 0,
            max_line,
            max_size,
            size: 0,
            defect: None,
        }
    }

    /// The first defect found (bare CR/LF wins over the others: it is the security one).
    pub fn defect(&self) -> Option<DataDefect> {
        self.defect
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn flag(&mut self, d: DataDefect) {
        match self.defect {
            None => self.defect = Some(d),
            Some(DataDefect::BareCrOrLf) => {}
            Some(_) if d == DataDefect::BareCrOrLf => self.defect = Some(d),
            Some(_) => {}
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            self.flag(DataDefect::TooBig);
        }
        // Once the message is refused, stop keeping its bytes: memory stays bounded.
        if self.defect.is_none() {
            out.extend_from_slice(bytes);
        }
    }

    fn in_line(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                self.flag(DataDefect::BareCrOrLf);
                self.emit(out, b"\n");
                self.bump_line(1);
                self.state = State::InLine;
            }
            _ => {
                self.emit(out, &[b]);
                self.bump_line(1);
                self.state = State::InLine;
            }
        }
    }

    fn bump_line(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > self.max_line {
            self.flag(DataDefect::LineTooLong);
        }
    }

    /// Decodes `input`, appending message bytes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let mut i = 0;
        while i < input.len() {
            // Fast path: inside a line, copy everything up to the next CR or LF at once.
            if self.state == State::InLine {
                let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                if run > 0 {
                    self.emit(out, &input[i..i + run]);
                    self.bump_line(run);
                    i += run;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            match self.state {
                State::LineStart => {
                    if b == b'.' {
                        self.state = State::Dot;
                    } else {
                        self.in_line(b, out);
                    }
                }
                State::Dot => {
                    if b == b'\r' {
                        self.state = State::DotCr;
                    } else {
                        // RFC 5321 §4.5.2: a leading dot is removed; the rest is data.
                        self.bump_line(1);
                        self.in_line(b, out);
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        return Fed {
                            consumed: i,
                            done: true,
                        };
                    }
                    // `.<CR>x`: a bare CR after a stuffed dot.
                    self.flag(DataDefect::BareCrOrLf);
                    self.emit(out, b"\r");
                    self.bump_line(2);
                    self.state = State::InLine;
                    self.in_line(b, out);
                }
                State::InLine => self.in_line(b, out),
                State::Cr => {
                    if b == b'\n' {
                        self.emit(out, b"\r\n");
                        self.line_len = 0;
                        self.state = State::LineStart;
                    } else {
                        self.flag(DataDefect::BareCrOrLf);
                        self.emit(out, b"\r");
                        self.bump_line(1);
                        self.state = State::InLine;
                        self.in_line(b, out);
                    }
                }
            }
        }
        Fed {
            consumed: input.len(),
            done: false,
        }
    }
}

/// Finds the Message-ID in the header section of a message as it streams past (bounded: only
/// the first 64 KiB are looked at; headers are never kept beyond that).
#[derive(Debug, Default)]
pub struct HeaderScan {
    buf: Vec<u8>,
    done: bool,
}

const HEADER_SCAN_MAX: usize = 64 * 1024;

impl HeaderScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        let room = HEADER_SCAN_MAX.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            self.buf.truncate(end + 2);
            self.done = true;
        } else if self.buf.len() >= HEADER_SCAN_MAX {
            self.done = true;
        }
    }

    /// The first Message-ID header's value (unfolded, trimmed), if any.
    pub fn message_id(&self) -> Option<String> {
        self.first("message-id")
    }

    /// The message carries `TLS-Required: No` (RFC 8689 §5; the value is case-insensitive).
    pub fn tls_required_no(&self) -> bool {
        self.first("tls-required")
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
    }

    fn first(&self, field: &str) -> Option<String> {
        crate::smtp::header_field(&self.buf, field)
    }
}

/// Checks BDAT chunks (RFC 3030): no dot handling, but the same bare CR/LF rule as DATA.
#[derive(Debug, Default)]
pub struct BdatChecker {
    last_cr: bool,
    bare: bool,
}

impl BdatChecker {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'\n' if !self.last_cr => self.bare = true,
                _ if self.last_cr && b != b'\n' => self.bare = true,
                _ => {}
            }
            self.last_cr = b == b'\r';
        }
    }

    /// Called after the LAST chunk: a trailing CR is bare too.
    pub fn has_bare_cr_or_lf(&self) -> bool {
        self.bare || self.last_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> (Vec<u8>, Fed, Option<DataDefect>) {
        let mut d = DataDecoder::new(1000, 1 << 20);
        let mut out = Vec::new();
        let fed = d.feed(input, &mut out);
        (out, fed, d.defect())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        // (input, consumed when done or None, defect)
        let rows: &[(&[u8], Option<usize>, Option<DataDefect>)] = &[
            (b".\r\n", Some(3), None),
            (b"a\r\n.\r\n", Some(6), None),
            (b"a\r\n.\r\nMAIL", Some(6), None),
            (b"a\n.\nb", None, Some(DataDefect::BareCrOrLf)),
            (b"a\r\n.\nb", None, Some(DataDefect::BareCrOrLf)),
            (b"a\n.\r\nb", None, Some(DataDefect::BareCrOrLf)),
            (b"a\r.\rb", None, Some(DataDefect::BareCrOrLf)),
            (b"a\r\n.\rb", None, Some(DataDefect::BareCrOrLf)),
            (b"a\r\n..\r\nb", None, None),
        ];
        for (input, want_done, want_defect) in rows {
            let (_, fed, defect) = decode_all(input);
            assert_eq!(
                fed.done.then_some(fed.consumed),
                *want_done,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(defect, *want_defect, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn smuggling_payload_is_one_message_with_a_defect() {
        let payload = b"Subject: x\r\n\r\nhello\r\n\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n";
        let (out, fed, defect) = decode_all(payload);
        assert!(fed.done);
        assert_eq!(&payload[fed.consumed..], b"QUIT\r\n");
        assert_eq!(defect, Some(DataDefect::BareCrOrLf));
        assert!(out.is_empty() || !out.ends_with(b"QUIT\r\n"));
    }

    /// The decoder against a plain statement of the rules, for every input of up to 8 bytes
    /// over {a . CR LF} and every split point: where DATA ends, whether a bare CR/LF is found,
    /// and (without defects) the unstuffed message.
    #[test]
    fn matches_the_rules_exhaustively() {
        fn reference(input: &[u8]) -> (Option<usize>, bool, Vec<u8>) {
            // Data ends at the first CRLF.CRLF, the first CRLF possibly being the virtual one
            // that ended the DATA command.
            let framed: Vec<u8> = [b"\r\n".as_slice(), input].concat();
            let end = framed
                .windows(5)
                .position(|w| w == b"\r\n.\r\n")
                .map(|p| p + 5 - 2);
            let body = match end {
                Some(e) => &input[..e - 3],
                None => input,
            };
            let bare = body.iter().enumerate().any(|(i, &b)| {
                (b == b'\n' && (i == 0 || body[i - 1] != b'\r'))
                    || (b == b'\r'
                        && body.get(i + 1) != Some(&b'\n')
                        && !(end.is_none() && i + 1 == body.len()))
            });
            let mut out = Vec::new();
            if end.is_some() {
                for line in body.split_inclusive(|&b| b == b'\n') {
                    out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
                }
            }
            (end, bare, out)
        }
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        for len in 0..=8u32 {
            for n in 0..4u32.pow(len) {
                let mut input = Vec::new();
                let mut k = n;
                for _ in 0..len {
                    input.push(alphabet[(k % 4) as usize]);
                    k /= 4;
                }
                let (end, bare, want_out) = reference(&input);
                for split in 0..=input.len() {
                    let mut d = DataDecoder::new(1000, 1 << 20);
                    let mut out = Vec::new();
                    let a = d.feed(&input[..split], &mut out);
                    let fed = if a.done {
                        a
                    } else {
                        let b = d.feed(&input[split..], &mut out);
                        Fed {
                            consumed: split + b.consumed,
                            done: b.done,
                        }
                    };
                    assert_eq!(
                        fed.done.then_some(fed.consumed),
                        end,
                        "end of {input:?} split {split}"
                    );
                    if fed.done {
                        assert_eq!(
                            d.defect() == Some(DataDefect::BareCrOrLf),
                            bare,
                            "bare in {input:?}"
                        );
                        if !bare {
                            assert_eq!(out, want_out, "output of {input:?} split {split}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (out, fed, defect) = decode_all(b"..hidden\r\n.x\r\nend\r\n.\r\n");
        assert!(fed.done);
        assert_eq!(defect, None);
        assert_eq!(out, b".hidden\r\nx\r\nend\r\n");
    }

    #[test]
    fn split_feeds_give_the_same_result() {
        let input = b"a\r\n..b\r\nc\r\n.\r\nNEXT";
        for split in 0..input.len() {
            let mut d = DataDecoder::new(1000, 1 << 20);
            let mut out = Vec::new();
            let a = d.feed(&input[..split], &mut out);
            let fed = if a.done {
                a
            } else {
                let b = d.feed(&input[split..], &mut out);
                Fed {
                    consumed: split + b.consumed,
                    done: b.done,
                }
            };
            assert!(fed.done, "split {split}");
            assert_eq!(fed.consumed, input.len() - 4, "split {split}");
            assert_eq!(out, b"a\r\n.b\r\nc\r\n", "split {split}");
        }
    }

    #[test]
    fn size_and_line_limits() {
        let mut d = DataDecoder::new(10, 1 << 20);
        let mut out = Vec::new();
        d.feed(b"0123456789ABC\r\n.\r\n", &mut out);
        assert_eq!(d.defect(), Some(DataDefect::LineTooLong));

        let mut d = DataDecoder::new(1000, 8);
        let mut out = Vec::new();
        let fed = d.feed(b"0123456789\r\n.\r\n", &mut out);
        assert!(fed.done);
        assert_eq!(d.defect(), Some(DataDefect::TooBig));
        assert!(out.len() <= 8);
    }

    #[test]
    fn message_id_is_found_in_headers_only() {
        let mut h = HeaderScan::default();
        h.feed(b"Received: x\r\nMessage-I");
        h.feed(b"D:\r\n <abc@example.test>\r\nSubject: s\r\n\r\nMessage-ID: <body@x>\r\n");
        assert_eq!(h.message_id().as_deref(), Some("<abc@example.test>"));
        let mut h = HeaderScan::default();
        h.feed(b"Subject: s\r\n\r\nMessage-ID: <body@x>\r\n");
        assert_eq!(h.message_id(), None);
    }

    #[test]
    fn tls_required_no_is_read_from_the_headers() {
        let scan = |bytes: &[u8]| {
            let mut h = HeaderScan::default();
            h.feed(bytes);
            h.tls_required_no()
        };
        assert!(scan(b"Subject: s\r\nTLS-Required: No\r\n\r\nbody\r\n"));
        assert!(scan(b"tls-required:no\r\n\r\n"));
        assert!(scan(b"TLS-Required:\r\n  NO\r\n\r\n"));
        assert!(!scan(b"TLS-Required: Yes\r\n\r\n"));
        assert!(!scan(b"X-TLS-Required: No\r\n\r\n"));
        assert!(!scan(b"Subject: s\r\n TLS-Required: No\r\n\r\n"));
        assert!(!scan(b"Subject: s\r\n\r\nTLS-Required: No\r\n"));
    }

    #[test]
    fn bdat_bare_checks() {
        let cases: &[(&[&[u8]], bool)] = &[
            (&[b"a\r\nb\r\n"], false),
            (&[b"a\r", b"\nb\r\n"], false),
            (&[b"a\nb"], true),
            (&[b"a\rb"], true),
            (&[b"a\r"], true),
        ];
        for (chunks, bare) in cases {
            let mut c = BdatChecker::default();
            for ch in *chunks {
                c.feed(ch);
            }
            assert_eq!(c.has_bare_cr_or_lf(), *bare, "{chunks:?}");
        }
    }
}
