//! The inbound ESMTP session as a state machine: parsed commands in, actions out. No I/O.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use smtp_proto::{
    Request, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS,
    MAIL_SMTPUTF8,
};

use crate::config::{Config, InboundTls};
use crate::smtp::Reply;
use crate::spool::{Body, Envelope, Recipient, Ret, TlsInfo, ENVELOPE_VERSION};

/// Where the session is in the SMTP dialogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    ExpectEhlo,
    ExpectMail,
    ExpectRcpt,
    /// At least one recipient accepted: RCPT, DATA or BDAT may follow.
    ExpectData,
}

/// What the connection driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Reply(Reply),
    /// Send `220 Ready to start TLS`, discard any pipelined plaintext, handshake.
    StartTls(Reply),
    /// Send `354` and read the data into the spool.
    ReceiveData(Reply),
    /// Read `size` bytes of BDAT (RFC 3030) into the spool.
    ReceiveBdat {
        size: usize,
        last: bool,
    },
    /// Send the reply and close the connection.
    Close(Reply),
}

#[derive(Debug)]
pub struct Transaction {
    pub mail_from: String,
    pub body: Body,
    pub smtputf8: bool,
    pub requiretls: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub recipients: Vec<Recipient>,
}

pub struct Session {
    config: Arc<Config>,
    client_ip: IpAddr,
    peer: Option<String>,
    tls_required: bool,
    tls: Option<TlsInfo>,
    helo: Option<String>,
    state: State,
    txn: Option<Transaction>,
    commands: usize,
    errors: usize,
    /// A BDAT sequence is under way (RFC 3030 §2: no DATA or other BDAT transaction mixing).
    in_bdat: bool,
    /// Set when MAIL was refused for a TLS reason; the driver records it as evidence.
    refusal: Option<hopguard_policy::ResultType>,
}

impl Session {
    pub fn new(config: Arc<Config>, client_ip: IpAddr) -> Self {
        Self::with_peer(config, client_ip, None)
    }

    /// A session whose client was attributed to `fcrdns_peer` by forward-confirmed reverse DNS
    /// (client networks still take precedence).
    pub fn with_peer(config: Arc<Config>, client_ip: IpAddr, fcrdns_peer: Option<&str>) -> Self {
        let (mut tls, peer) = config.inbound_tls_for(client_ip);
        let mut peer = peer.map(|p| p.name.clone());
        if peer.is_none() {
            if let Some(p) = fcrdns_peer.and_then(|n| config.peers.iter().find(|p| p.name == n)) {
                tls = p.inbound_tls;
                peer = Some(p.name.clone());
            }
        }
        Self {
            config,
            client_ip,
            peer,
            tls_required: tls == InboundTls::Required,
            tls: None,
            helo: None,
            state: State::ExpectEhlo,
            txn: None,
            commands: 0,
            errors: 0,
            in_bdat: false,
            refusal: None,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }
    pub fn helo(&self) -> &str {
        self.helo.as_deref().unwrap_or("unknown")
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn transaction(&self) -> Option<&Transaction> {
        self.txn.as_ref()
    }

    /// The TLS reason of the last refused MAIL, once.
    pub fn take_refusal(&mut self) -> Option<hopguard_policy::ResultType> {
        self.refusal.take()
    }

    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.config.hostname)
    }

    /// RFC 3207 §4.2: after the handshake the session starts over; EHLO must be repeated.
    pub fn tls_established(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.helo = None;
        self.txn = None;
        self.in_bdat = false;
        self.state = State::ExpectEhlo;
    }

    /// A command line that smtp-proto could not parse, or that broke the line rules.
    pub fn bad_input(&mut self, reply: Reply) -> Action {
        self.errors += 1;
        if self.errors >= self.config.inbound.max_errors {
            return Action::Close(Reply::too_many_errors(&self.config.hostname));
        }
        Action::Reply(reply)
    }

    pub fn parse_error(&mut self, err: smtp_proto::Error) -> Action {
        use smtp_proto::Error as E;
        let reply = match err {
            E::UnknownCommand => Reply::unknown_command(),
            E::InvalidSenderAddress => Reply::new(501, (5, 1, 7), "Bad sender address syntax"),
            E::InvalidRecipientAddress => {
                Reply::new(501, (5, 1, 3), "Bad recipient address syntax")
            }
            E::SyntaxError { syntax } => Reply::syntax(syntax),
            E::InvalidParameter { param } => Reply::syntax(&format!("invalid parameter {param}")),
            E::UnsupportedParameter { param } => Reply::bad_param(&param),
            E::NeedsMoreData { .. } | E::ResponseTooLong | E::InvalidResponse { .. } => {
                Reply::syntax("incomplete command")
            }
        };
        self.bad_input(reply)
    }

    pub fn command(&mut self, req: Request<Cow<'_, str>>) -> Action {
        self.commands += 1;
        if self.commands > self.config.inbound.max_commands {
            return Action::Close(Reply::too_many_commands(&self.config.hostname));
        }
        if self.in_bdat
            && !matches!(
                req,
                Request::Bdat { .. } | Request::Rset | Request::Quit | Request::Noop { .. }
            )
        {
            return self.bad_input(Reply::bad_sequence("BDAT transaction in progress"));
        }
        match req {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::StartTls => {
                if self.tls.is_some() {
                    return self.bad_input(Reply::already_tls());
                }
                Action::StartTls(Reply::ready_for_tls())
            }
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Rset => {
                self.reset();
                Action::Reply(Reply::ok())
            }
            Request::Noop { .. } => Action::Reply(Reply::ok()),
            Request::Quit => Action::Close(Reply::bye(&self.config.hostname)),
            Request::Vrfy { .. } => Action::Reply(Reply::vrfy()),
            Request::Help { .. } => Action::Reply(Reply::help()),
            Request::Expn { .. }
            | Request::Auth { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Lhlo { .. } => self.bad_input(Reply::not_implemented()),
        }
    }

    fn reset(&mut self) {
        self.txn = None;
        self.in_bdat = false;
        if self.state != State::ExpectEhlo {
            self.state = State::ExpectMail;
        }
    }

    fn hello(&mut self, host: &str, esmtp: bool) -> Action {
        let host = host.trim();
        if host.is_empty() {
            return self.bad_input(Reply::syntax("EHLO/HELO needs a domain or address literal"));
        }
        self.helo = Some(
            host.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(255)
                .collect(),
        );
        self.txn = None;
        self.in_bdat = false;
        self.state = State::ExpectMail;
        let name = &self.config.hostname;
        if !esmtp {
            return Action::Reply(Reply::multiline(250, vec![name.clone()]));
        }
        let mut lines = vec![
            name.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.config.inbound.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        lines.extend(["SMTPUTF8".into(), "CHUNKING".into(), "DSN".into()]);
        if self.tls.is_some() {
            // RFC 8689 §4: REQUIRETLS is offered only inside TLS.
            lines.push("REQUIRETLS".into());
        }
        Action::Reply(Reply::multiline(250, lines))
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<Cow<'_, str>>) -> Action {
        match self.state {
            State::ExpectEhlo => {
                return self.bad_input(Reply::bad_sequence("send EHLO/HELO first"))
            }
            State::ExpectRcpt | State::ExpectData => {
                return self.bad_input(Reply::bad_sequence("nested MAIL command"))
            }
            State::ExpectMail => {}
        }
        if self.tls_required && self.tls.is_none() {
            // RFC 3207 §4 (see docs/config.md on why this relay may require it).
            self.refusal = Some(hopguard_policy::ResultType::StarttlsNotSupported);
            return self.bad_input(Reply::must_starttls());
        }
        let flags = from.flags;
        if flags & MAIL_REQUIRETLS != 0 && self.tls.is_none() {
            return self.bad_input(Reply::requiretls_needs_tls());
        }
        if from.size as u64 > self.config.inbound.max_message_size {
            return Action::Reply(Reply::too_big());
        }
        let smtputf8 = flags & MAIL_SMTPUTF8 != 0;
        let addr = from.address.trim().to_string();
        if !addr.is_ascii() && !smtputf8 {
            return self.bad_input(Reply::utf8_not_declared());
        }
        if !addr.is_empty() && !addr.contains('@') {
            return self.bad_input(Reply::new(
                501,
                (5, 1, 7),
                "Sender address must be fully qualified",
            ));
        }
        let body = if flags & MAIL_BODY_8BITMIME != 0 {
            Body::EightBitMime
        } else if flags & MAIL_BODY_7BIT != 0 {
            Body::SevenBit
        } else {
            Body::Unspecified
        };
        let ret = if flags & MAIL_RET_FULL != 0 {
            Some(Ret::Full)
        } else if flags & MAIL_RET_HDRS != 0 {
            Some(Ret::Hdrs)
        } else {
            None
        };
        self.txn = Some(Transaction {
            mail_from: addr,
            body,
            smtputf8,
            requiretls: flags & MAIL_REQUIRETLS != 0,
            ret,
            envid: from.env_id.map(|e| e.into_owned()),
            recipients: Vec::new(),
        });
        self.state = State::ExpectRcpt;
        Action::Reply(Reply::sender_ok())
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<Cow<'_, str>>) -> Action {
        let relay_client = self.config.is_relay_client(self.client_ip);
        let max = self.config.inbound.max_recipients;
        let Some(txn) = self.txn.as_mut() else {
            return self.bad_input(Reply::bad_sequence("send MAIL first"));
        };
        if txn.recipients.len() >= max {
            return Action::Reply(Reply::too_many_recipients());
        }
        let addr = to.address.trim().to_string();
        if !addr.is_ascii() && !txn.smtputf8 {
            return self.bad_input(Reply::utf8_not_declared());
        }
        let Some((_, domain)) = addr.rsplit_once('@') else {
            return self.bad_input(Reply::new(
                501,
                (5, 1, 3),
                "Recipient address must be fully qualified",
            ));
        };
        let domain = domain.trim_end_matches('.').to_lowercase();
        if domain.is_empty() || domain.starts_with('[') {
            return self.bad_input(Reply::new(
                550,
                (5, 1, 2),
                "Address literals are not relayed",
            ));
        }
        // Never an open relay: only our relay domains, unless the client is one of ours.
        if !relay_client && !self.config.is_relay_domain(&domain) {
            return self.bad_input(Reply::relay_denied());
        }
        txn.recipients.push(Recipient {
            address: addr,
            domain,
            orcpt: to.orcpt.map(|o| o.into_owned()),
            notify: to.flags,
            status: Default::default(),
            last_failure: None,
            notified: false,
        });
        self.state = State::ExpectData;
        Action::Reply(Reply::recipient_ok())
    }

    fn data(&mut self) -> Action {
        match self.state {
            State::ExpectData => Action::ReceiveData(Reply::start_data()),
            State::ExpectRcpt => self.bad_input(Reply::no_valid_recipients()),
            _ => self.bad_input(Reply::bad_sequence("send MAIL and RCPT first")),
        }
    }

    fn bdat(&mut self, size: usize, last: bool) -> Action {
        if self.state != State::ExpectData {
            // The chunk still has to be read and discarded by the driver.
            self.errors += 1;
            return Action::ReceiveBdat { size, last };
        }
        self.in_bdat = !last;
        Action::ReceiveBdat { size, last }
    }

    /// The transaction is over (accepted, refused or failed): back to ExpectMail.
    pub fn finish_transaction(&mut self) {
        self.txn = None;
        self.in_bdat = false;
        self.state = State::ExpectMail;
    }

    /// The envelope to commit for the current transaction.
    pub fn envelope(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Envelope> {
        let (now_ms, now) = (now.timestamp_millis(), now.timestamp());
        let txn = self.txn.as_ref()?;
        Some(Envelope {
            version: ENVELOPE_VERSION,
            id: String::new(),
            node_id: self.config.node_id().to_string(),
            received_at: now,
            received_ms: now_ms,
            client_ip: self.client_ip.to_string(),
            helo: self.helo().to_string(),
            peer: self.peer.clone(),
            tls: self.tls.clone(),
            mail_from: txn.mail_from.clone(),
            body: txn.body,
            smtputf8: txn.smtputf8,
            requiretls: txn.requiretls,
            tls_required_no: false,
            ret: txn.ret,
            envid: txn.envid.clone(),
            size: 0,
            message_id_hash: None,
            recipients: txn.recipients.clone(),
            attempts: 0,
            next_attempt: now,
            is_bounce: false,
        })
    }

    /// The Received header (RFC 5321 §4.4) recording the hop's TLS (RFC 3848 `ESMTPS`).
    pub fn received_header(&self, queue_id: &str, date: &str) -> String {
        let txn = self.txn.as_ref();
        let with = if self.tls.is_some() {
            "ESMTPS"
        } else {
            "ESMTP"
        };
        let mut h = format!("Received: from {} ([{}])\r\n", self.helo(), self.client_ip);
        if let Some(t) = &self.tls {
            h.push_str(&format!(
                "\t(using {} with cipher {})\r\n",
                t.version, t.cipher
            ));
        }
        h.push_str(&format!(
            "\tby {} (hopguard) with {} id {}",
            self.config.hostname, with, queue_id
        ));
        if let Some(t) = txn {
            if t.recipients.len() == 1 {
                h.push_str(&format!("\r\n\tfor <{}>", t.recipients[0].address));
            }
        }
        h.push_str(&format!("; {date}\r\n"));
        h
    }
}

#[cfg(test)]
mod tests;
