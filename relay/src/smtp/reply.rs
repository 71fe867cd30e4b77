//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463), and the one table that
//! maps every inbound outcome to its reply.

use std::fmt::Write as _;

/// A reply: code, enhanced status code (RFC 2034), one or more text lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: Option<(u8, u16, u16)>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, status: (u8, u16, u16), text: impl Into<String>) -> Self {
        Self {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    pub fn multiline(code: u16, lines: Vec<String>) -> Self {
        Self {
            code,
            status: None,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Wire form, CRLF-terminated; text is stripped of CR/LF so a reply is always well formed.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        let mut s = String::new();
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let clean: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            let _ = write!(s, "{}{}", self.code, sep);
            if let Some((a, b, c)) = self.status {
                let _ = write!(s, "{a}.{b}.{c} ");
            }
            s.push_str(&clean);
            s.push_str("\r\n");
        }
        out.extend_from_slice(s.as_bytes());
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }

    // ---- the inbound reply table --------------------------------------------------------
    pub fn greeting(host: &str) -> Self {
        Self::multiline(220, vec![format!("{host} ESMTP hopguard")])
    }
    pub fn ok() -> Self {
        Self::new(250, (2, 0, 0), "OK")
    }
    pub fn sender_ok() -> Self {
        Self::new(250, (2, 1, 0), "Sender OK")
    }
    pub fn recipient_ok() -> Self {
        Self::new(250, (2, 1, 5), "Recipient OK")
    }
    pub fn queued(id: &str) -> Self {
        Self::new(250, (2, 0, 0), format!("Queued as {id}"))
    }
    pub fn bye(host: &str) -> Self {
        Self::new(221, (2, 0, 0), format!("{host} closing connection"))
    }
    pub fn start_data() -> Self {
        Self::multiline(354, vec!["End data with <CR><LF>.<CR><LF>".into()])
    }
    pub fn ready_for_tls() -> Self {
        Self::new(220, (2, 0, 0), "Ready to start TLS")
    }
    pub fn vrfy() -> Self {
        Self::new(252, (2, 1, 5), "Cannot VRFY user; try RCPT")
    }
    pub fn help() -> Self {
        Self::new(214, (2, 0, 0), "See RFC 5321")
    }
    /// RFC 3207 §4: the exact text the charter peers expect.
    pub fn must_starttls() -> Self {
        Self::new(530, (5, 7, 0), "Must issue a STARTTLS command first")
    }
    pub fn relay_denied() -> Self {
        Self::new(
            550,
            (5, 7, 1),
            "Relaying denied: recipient domain is not handled here",
        )
    }
    pub fn bad_sequence(what: &str) -> Self {
        Self::new(503, (5, 5, 1), format!("Bad sequence of commands: {what}"))
    }
    pub fn not_implemented() -> Self {
        Self::new(502, (5, 5, 1), "Command not implemented")
    }
    pub fn unknown_command() -> Self {
        Self::new(500, (5, 5, 1), "Unrecognized command")
    }
    pub fn syntax(what: &str) -> Self {
        Self::new(501, (5, 5, 4), format!("Syntax error: {what}"))
    }
    pub fn bad_param(what: &str) -> Self {
        Self::new(555, (5, 5, 4), format!("Unsupported parameter: {what}"))
    }
    pub fn bare_lf_command() -> Self {
        Self::new(
            500,
            (5, 5, 2),
            "Syntax error: command not terminated by <CR><LF> (RFC 5321 §2.3.8)",
        )
    }
    pub fn line_too_long() -> Self {
        Self::new(500, (5, 5, 2), "Line too long")
    }
    pub fn too_big() -> Self {
        Self::new(
            552,
            (5, 3, 4),
            "Message size exceeds fixed maximum message size",
        )
    }
    pub fn too_many_recipients() -> Self {
        Self::new(452, (4, 5, 3), "Too many recipients")
    }
    pub fn no_valid_recipients() -> Self {
        Self::new(554, (5, 5, 1), "No valid recipients")
    }
    pub fn bare_cr_lf_data() -> Self {
        Self::new(
            550,
            (5, 6, 11),
            "Message rejected: bare <CR> or <LF> in message data (RFC 5321 §2.3.8)",
        )
    }
    pub fn data_line_too_long() -> Self {
        Self::new(
            550,
            (5, 6, 0),
            "Message rejected: a line is longer than this server accepts",
        )
    }
    pub fn utf8_not_declared() -> Self {
        Self::new(
            553,
            (5, 6, 7),
            "Non-ASCII address requires the SMTPUTF8 parameter",
        )
    }
    pub fn requiretls_needs_tls() -> Self {
        Self::new(
            530,
            (5, 7, 10),
            "REQUIRETLS needs a TLS session (RFC 8689 §4.1)",
        )
    }
    pub fn spool_failure() -> Self {
        Self::new(
            451,
            (4, 3, 0),
            "Temporary local problem: message not queued, try again",
        )
    }
    pub fn audit_unavailable() -> Self {
        Self::new(
            451,
            (4, 3, 0),
            "Temporary local problem: evidence log unavailable, try again later",
        )
    }
    pub fn already_tls() -> Self {
        Self::new(503, (5, 5, 1), "TLS already active")
    }
    pub fn timeout(host: &str) -> Self {
        Self::new(
            421,
            (4, 4, 2),
            format!("{host} timeout, closing connection"),
        )
    }
    pub fn too_many_errors(host: &str) -> Self {
        Self::new(
            421,
            (4, 7, 0),
            format!("{host} too many errors, closing connection"),
        )
    }
    pub fn too_many_commands(host: &str) -> Self {
        Self::new(
            421,
            (4, 7, 0),
            format!("{host} too many commands, closing connection"),
        )
    }
    pub fn too_many_connections(host: &str) -> Self {
        Self::new(
            421,
            (4, 7, 0),
            format!("{host} too many connections, try again later"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_single_and_multi_line() {
        assert_eq!(
            Reply::must_starttls().to_wire(),
            b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        );
        let r = Reply::multiline(250, vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(r.to_wire(), b"250-a\r\n250-b\r\n250 c\r\n");
    }

    #[test]
    fn text_cannot_break_the_reply_framing() {
        let r = Reply::new(250, (2, 0, 0), "evil\r\n250 injected");
        assert_eq!(r.to_wire(), b"250 2.0.0 evil250 injected\r\n");
    }
}
