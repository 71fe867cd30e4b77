//! Delivery status notifications (RFC 3464 multipart/report, RFC 6522) in plain words.

use std::fmt::Write as _;

use crate::spool::{Envelope, Recipient, Ret};

/// Whether the sender asked (or did not refuse) to hear about failures (RFC 3461 §4.1).
pub fn wants_failure_notice(r: &Recipient) -> bool {
    use smtp_proto::{
        RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    };
    let any = RCPT_NOTIFY_NEVER | RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY;
    r.notify & any == 0 || r.notify & RCPT_NOTIFY_FAILURE != 0
}

/// The DSN's Status field must have class 5 for `Action: failed` (RFC 3464 §2.3.4).
fn final_status(status: &str) -> String {
    match status.split_once('.') {
        Some((_, rest)) => format!("5.{rest}"),
        None => "5.0.0".to_string(),
    }
}

/// Renders the DSN for the failed recipients `failed` of `env`. `original` is the spooled
/// message (its headers, or all of it with RET=FULL, are attached).
pub fn render(
    hostname: &str,
    env: &Envelope,
    failed: &[&Recipient],
    original: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    let boundary = format!("{}/{}", env.id, hostname);
    let date = now.to_rfc2822();
    let arrival = chrono::DateTime::from_timestamp(env.received_at, 0)
        .map(|d| d.to_rfc2822())
        .unwrap_or_else(|| date.clone());
    let mut m = String::new();
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.dsn@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Description: Notification\r\n\
         \r\n\
         This is the mail relay at {hostname}.\r\n\
         \r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         It was kept and retried since {arrival}; the reason it could not be\r\n\
         delivered is given for each recipient below.\r\n\
         \r\n",
        to = env.mail_from,
        id = env.id,
    );
    for r in failed {
        let (status, text) = r
            .last_failure
            .as_ref()
            .map(|f| (final_status(&f.status), f.text.clone()))
            .unwrap_or_else(|| ("5.0.0".into(), "delivery failed".into()));
        let _ = write!(
            m,
            "<{}>: {}\r\n    (status {})\r\n\r\n",
            r.address, text, status
        );
    }
    let _ = write!(
        m,
        "--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n"
    );
    if let Some(envid) = &env.envid {
        let _ = write!(m, "Original-Envelope-Id: {envid}\r\n");
    }
    let _ = write!(m, "Arrival-Date: {arrival}\r\n");
    for r in failed {
        let _ = write!(m, "\r\nFinal-Recipient: rfc822; {}\r\n", r.address);
        if let Some(o) = &r.orcpt {
            // RFC 3464 §2.3.1: address type, then the original address (ORCPT, decoded).
            let _ = write!(m, "Original-Recipient: rfc822; {o}\r\n");
        }
        let _ = write!(m, "Action: failed\r\n");
        match &r.last_failure {
            Some(f) => {
                let _ = write!(m, "Status: {}\r\n", final_status(&f.status));
                if let Some(remote) = &f.remote {
                    let host = remote.split('[').next().unwrap_or(remote);
                    let _ = write!(m, "Remote-MTA: dns; {host}\r\n");
                }
                let diag: String = f
                    .text
                    .chars()
                    .filter(|c| *c != '\r' && *c != '\n')
                    .collect();
                let _ = write!(
                    m,
                    "Diagnostic-Code: smtp; {} {} {}\r\n",
                    f.code, f.status, diag
                );
                if let Some(reason) = f.reason {
                    let _ = write!(m, "X-TLS-Result-Type: {}\r\n", reason.as_str());
                }
            }
            None => {
                let _ = write!(m, "Status: 5.0.0\r\n");
            }
        }
        let _ = write!(m, "Last-Attempt-Date: {date}\r\n");
    }
    let full = env.ret == Some(Ret::Full);
    let attached: &[u8] = if full {
        original
    } else {
        header_block(original)
    };
    let ctype = if full {
        "message/rfc822"
    } else {
        "text/rfc822-headers"
    };
    let _ = write!(m, "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Description: Undelivered message\r\n\r\n");
    let mut out = m.into_bytes();
    out.extend_from_slice(attached);
    if !attached.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The header section of a message (up to, not including, the empty line).
fn header_block(msg: &[u8]) -> &[u8] {
    match msg.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &msg[..i + 2],
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Failure, RcptStatus, ENVELOPE_VERSION};

    fn env() -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            id: "0123456789ABC0001".into(),
            node_id: "relay".into(),
            received_at: 1_700_000_000,
            received_ms: 0,
            client_ip: "127.0.0.1".into(),
            helo: "client".into(),
            peer: None,
            tls: None,
            mail_from: "alice@origin.test".into(),
            body: Default::default(),
            smtputf8: false,
            requiretls: false,
            tls_required_no: false,
            ret: None,
            envid: Some("E1".into()),
            size: 10,
            message_id_hash: None,
            recipients: vec![Recipient {
                address: "bob@plain.test".into(),
                domain: "plain.test".into(),
                orcpt: None,
                notify: 0,
                status: RcptStatus::Failed,
                last_failure: Some(Failure {
                    code: 451,
                    status: "4.7.4".into(),
                    text: "the receiving server did not offer STARTTLS, and TLS is required for this destination".into(),
                    reason: Some(hopguard_policy::ResultType::StarttlsNotSupported),
                    remote: Some("mx.plain.test[127.0.0.9]".into()),
                }),
                notified: false,
            }],
            attempts: 3,
            next_attempt: 0,
            is_bounce: false,
        }
    }

    #[test]
    fn dsn_states_the_reason_in_words_and_fields() {
        let e = env();
        let failed: Vec<&Recipient> = e.recipients.iter().collect();
        let now = chrono::DateTime::from_timestamp(1_700_100_000, 0).unwrap();
        let out = render(
            "relay.test",
            &e,
            &failed,
            b"Subject: hi\r\nFrom: a@b\r\n\r\nsecret body\r\n",
            now,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"));
        assert!(text.contains("<bob@plain.test>: the receiving server did not offer STARTTLS, and TLS is required for this destination"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@plain.test\r\nAction: failed\r\nStatus: 5.7.4\r\n"
        ));
        assert!(text.contains("Remote-MTA: dns; mx.plain.test\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 451 4.7.4 "));
        assert!(text.contains("X-TLS-Result-Type: starttls-not-supported"));
        assert!(text.contains("Original-Envelope-Id: E1"));
        assert!(text.contains("Subject: hi"));
        assert!(
            !text.contains("secret body"),
            "RET=HDRS by default: no body"
        );
        assert!(
            !text.contains("\n\n") && !text.replace("\r\n", "").contains('\n'),
            "CRLF only"
        );
    }

    #[test]
    fn notify_rules() {
        use smtp_proto::{RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS};
        let mut r = env().recipients[0].clone();
        for (flags, want) in [
            (0, true),
            (RCPT_NOTIFY_NEVER, false),
            (RCPT_NOTIFY_SUCCESS, false),
            (RCPT_NOTIFY_FAILURE, true),
        ] {
            r.notify = flags;
            assert_eq!(wants_failure_notice(&r), want, "{flags}");
        }
    }
}
