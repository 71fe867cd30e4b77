//! Emission towards the next hop (RFC 5321 §4.5.2): dot-stuffing and canonical line endings.
//!
//! Whatever the spool holds, the next hop never receives a bare CR, a bare LF or an unstuffed
//! leading dot from us: bare CR and bare LF become CRLF, a `.` at the start of a line is
//! doubled, and the data always ends with CRLF before the terminating `.<CRLF>`.

/// Streaming encoder for the DATA body.
#[derive(Debug)]
pub struct Stuffer {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for Stuffer {
    fn default() -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
        }
    }
}

impl Stuffer {
    /// Encodes `input`, appending wire bytes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 2);
        let mut i = 0;
        while i < input.len() {
            // Fast path: in the middle of a line, copy up to the next CR or LF at once.
            if !self.pending_cr && !self.at_line_start {
                let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                if run > 0 {
                    out.extend_from_slice(&input[i..i + run]);
                    i += run;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            if self.pending_cr {
                self.pending_cr = false;
                // CR followed by anything: the line ends here (bare CR becomes CRLF).
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                _ => {
                    if self.at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// Ends the data: completes the last line and appends the `.<CRLF>` terminator.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.at_line_start = true;
        out.extend_from_slice(b".\r\n");
    }
}

/// Encodes a whole message (tests and small messages).
pub fn encode(message: &[u8]) -> Vec<u8> {
    let mut s = Stuffer::default();
    let mut out = Vec::new();
    s.feed(message, &mut out);
    s.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let rows: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
            (b"a\r\r\n", b"a\r\n\r\n.\r\n"),
        ];
        for (input, want) in rows {
            assert_eq!(encode(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    /// Property: the output never contains a bare CR/LF nor a line that is just `.` before
    /// the terminator, whatever the input and however it is split.
    #[test]
    fn no_smuggling_through_us() {
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        // Every input of length <= 7 over the alphabet.
        for len in 0..=7u32 {
            for n in 0..4u32.pow(len) {
                let mut input = Vec::new();
                let mut k = n;
                for _ in 0..len {
                    input.push(alphabet[(k % 4) as usize]);
                    k /= 4;
                }
                for split in 0..=input.len() {
                    let mut s = Stuffer::default();
                    let mut out = Vec::new();
                    s.feed(&input[..split], &mut out);
                    s.feed(&input[split..], &mut out);
                    s.finish(&mut out);
                    check_wire(&out, &input);
                }
            }
        }
    }

    fn check_wire(out: &[u8], input: &[u8]) {
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert!(
                    i > 0 && out[i - 1] == b'\r',
                    "bare LF for {input:?}: {out:?}"
                );
            }
            if b == b'\r' {
                assert_eq!(
                    out.get(i + 1),
                    Some(&b'\n'),
                    "bare CR for {input:?}: {out:?}"
                );
            }
        }
        assert!(out.ends_with(b".\r\n"));
        let body = &out[..out.len() - 3];
        assert!(body.is_empty() || body.ends_with(b"\r\n"));
        // The terminator appears only at the end.
        let term = b"\r\n.\r\n";
        let full: Vec<u8> = [b"\r\n".as_slice(), out].concat();
        let hits = full.windows(5).filter(|w| w == term).count();
        assert_eq!(hits, 1, "early terminator for {input:?}: {out:?}");
    }
}
