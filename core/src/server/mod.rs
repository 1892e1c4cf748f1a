//! The SMTP server session (RFC 5321) and its LMTP mode (RFC 2033), as a sans-IO machine.
//!
//! Extensions: PIPELINING (RFC 2920), SIZE (1870), STARTTLS (3207), AUTH (4954),
//! ENHANCEDSTATUSCODES (2034, 3463), 8BITMIME (6152), DSN (3461), SMTPUTF8 (6531) and
//! CHUNKING (3030).
//!
//! # Driving a session
//!
//! ```no_run
//! # use std::sync::Arc; use std::time::Instant;
//! # use tern_core::server::{Config, Mode, Output, Peer, Session};
//! let config = Arc::new(Config::new("mx.example.net", Mode::Smtp));
//! let peer = Peer::default(); // the client's and our address; none on a Unix socket
//! # let mut read = |_: &mut Vec<u8>| -> usize { 0 };
//! let mut session = Session::new(config, peer, Instant::now());
//! let mut pending: Vec<u8> = Vec::new();
//! loop {
//!     // 1. Drain every output; answer each question with its `handle_*` method.
//!     while let Some(output) = session.poll_output() {
//!         match output {
//!             Output::Close => return,
//!             _ => { /* send bytes, start TLS, check, deliver ... */ }
//!         }
//!     }
//!     // 2. Feed input. A session that is waiting for an answer consumes nothing: keep the
//!     //    rest and feed it again after answering.
//!     if pending.is_empty() && read(&mut pending) == 0 { return; }
//!     let used = session.receive(Instant::now(), &pending);
//!     pending.drain(..used);
//!     // 3. Wake at `poll_timeout()` and call `handle_timeout(now)`.
//! }
//! ```
//!
//! States are named for what the session waits for: a command line, a SASL response, the
//! runtime's answer to a question, message text (DATA or a BDAT chunk), or the TLS
//! handshake. A fatal error replaces the state with `Closed` and its reply goes out once.

mod auth;
mod config;
mod line;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

pub use self::config::{AuthMode, Config, Limits, TlsMode};
use self::line::{LineEvent, LineReader};
use crate::address::{Domain, ForwardPath, Mailbox, ReversePath};
use crate::command::{self, Body, Command, MailParams, RcptParams};
use crate::data::{DataDecoder, DataStatus, LineEndingChecker};
use crate::policy::Restriction;
use crate::recipient::Destination;
pub use crate::reply::Mode;
use crate::reply::{self, Reply};
pub use crate::sasl::AuthVerdict;
use crate::sasl::{Authenticated, Credentials, Mechanism, SaslServer};

/// The longest command line, without CRLF (RFC 5321 section 4.5.3.1.4: 512 with CRLF).
const COMMAND_LINE_MAX: usize = 510;
/// MAIL and RCPT may be longer by the parameter allowances of RFC 1870 (26), RFC 3461 (118
/// for MAIL, 532 for RCPT) and RFC 6531; 1024 more covers them all.
const PARAMETER_LINE_MAX: usize = COMMAND_LINE_MAX + 1024;
/// RFC 4954 section 4: a SASL response line, and an AUTH command with an initial response,
/// may be 12288 octets long.
const AUTH_LINE_MAX: usize = 12288 - 2;

/// Who is on the other end, as the runtime knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client's address; `None` on a Unix socket.
    pub client: Option<IpAddr>,
    /// The address the client connected to; `None` on a Unix socket.
    pub local: Option<IpAddr>,
}

/// What the runtime must do next. Drain with [`Session::poll_output`] after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the client, in order.
    Send(Vec<u8>),
    /// Flush what was sent, then run the TLS handshake and call
    /// [`Session::handle_tls_established`]; on failure, drop the connection.
    StartTls,
    /// Check these credentials and answer with [`Session::handle_auth`].
    Authenticate(Credentials),
    /// Look up the SCRAM-SHA-256 credentials of this login (as the client typed it) and
    /// answer with [`Session::handle_scram_lookup`].
    LookupScram(String),
    /// An AUTH failed on the session's own judgement (a wrong SCRAM proof, a request to act
    /// as another user): for the log only, nothing to answer. Failures the runtime judged
    /// through [`Output::Authenticate`] are not reported again.
    AuthFailed(Mechanism),
    /// Does this local account exist? Answer with [`Session::handle_recipient`]. The address
    /// has aliases and the recipient delimiter already applied (`bob@example.net`).
    CheckRecipient(String),
    /// Does this domain exist in DNS (MX or A/AAAA)? Answer with [`Session::handle_domain`].
    CheckDomain(String),
    /// A message begins: open a spool for it.
    MessageStart(Envelope),
    /// The next piece of message text: CRLF line ends, dot-stuffing removed.
    MessageData(Bytes),
    /// The message text is complete: deliver it and answer with
    /// [`Session::handle_delivery`].
    MessageEnd,
    /// Throw the message being received away; nothing of it may be delivered.
    MessageAbort,
    /// Close the connection (after sending what came before).
    Close,
}

/// The envelope of a message, as it stands when its text begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM.
    pub sender: ReversePath,
    /// The MAIL parameters (BODY, SMTPUTF8, RET, ENVID, ...).
    pub params: MailParams,
    /// Each distinct recipient once, in the order first given.
    pub recipients: Vec<Recipient>,
    /// The HELO/EHLO/LHLO name.
    pub helo: Option<String>,
    /// The RFC 3848 protocol name for the `Received:` header: `ESMTPSA`, `LMTP`, ...
    pub protocol: &'static str,
    /// The authenticated account, if any.
    pub login: Option<String>,
    /// The mechanism it authenticated with.
    pub mechanism: Option<Mechanism>,
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as the client gave it, in canonical form.
    pub address: Mailbox,
    /// Its DSN parameters.
    pub params: RcptParams,
    /// Where copies go, after aliases and the recipient delimiter.
    pub destinations: Vec<Destination>,
}

/// The runtime's answer to [`Output::CheckRecipient`] or [`Output::CheckDomain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// It exists.
    Found,
    /// It does not exist.
    NotFound,
    /// The lookup failed for now.
    TempFail,
}

/// What became of one recipient's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptOutcome {
    /// Stored durably (or queued durably for another host).
    Delivered,
    /// Not stored; the client should try again later.
    TempFailure,
    /// Not stored for lack of disk space.
    DiskFull,
    /// The account vanished between RCPT and delivery.
    UnknownUser,
    /// Refused for good.
    Rejected,
}

/// The runtime's answer to [`Output::MessageEnd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The id under which the message was stored, for the `250 ... queued as` reply.
    pub queue_id: String,
    /// One outcome per [`Envelope::recipients`] entry, in the same order.
    pub recipients: Vec<RcptOutcome>,
}

/// One SMTP or LMTP server session.
#[derive(Debug)]
pub struct Session {
    config: Arc<Config>,
    peer: Peer,
    state: State,
    tls_active: bool,
    helo: Option<Helo>,
    login: Option<(String, Mechanism)>,
    pending_mechanism: Option<Mechanism>,
    line: LineReader,
    outputs: VecDeque<Output>,
    send: Vec<u8>,
    deadline: Option<Instant>,
    errors: u32,
    auth_failures: u32,
    shutting_down: bool,
    current: Option<Verb>,
    counts: Counts,
}

#[derive(Debug, Clone)]
struct Helo {
    name: String,
    extended: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for a command line, with the mail transaction, if one is open.
    ExpectCommand(Option<Transaction>),
    /// Waiting for the client's next SASL response line.
    ExpectSaslResponse(SaslServer),
    /// Waiting for the runtime's verdict on credentials.
    AwaitAuthVerdict,
    /// Waiting for the runtime's SCRAM credentials and nonce.
    AwaitScramLookup(SaslServer),
    /// SCRAM's server-final went out as a 334; waiting for the client's empty line.
    ExpectScramAck(Authenticated),
    /// Holding a failed AUTH's reply until `auth_failure_delay` has passed.
    AwaitFailureDelay(Instant),
    /// Waiting for the runtime's answer to a recipient or domain question.
    AwaitRecipientLookup(Transaction, RcptCheck),
    /// Reading DATA text.
    ExpectDataText(Transaction, DataDecoder),
    /// Reading the bytes of a BDAT chunk.
    ExpectChunk(Transaction, Chunk),
    /// Reading and throwing away a BDAT chunk that was refused; the reply follows it.
    DiscardChunk(u64, Reply),
    /// Waiting for the runtime's delivery report.
    AwaitDelivery(Transaction),
    /// Waiting for the runtime to finish the TLS handshake.
    AwaitTlsHandshake,
    /// Done; everything further is ignored.
    Closed,
}

#[derive(Debug)]
struct Transaction {
    sender: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// For each accepted RCPT, in order, its index in `recipients` (LMTP answers per RCPT).
    order: Vec<usize>,
    /// Whether `MessageStart` went out, so an abort must be announced.
    started: bool,
    /// Set once BDAT has begun: the bare CR/LF check spans the chunks.
    chunking: Option<LineEndingChecker>,
    size: u64,
    too_big: bool,
}

#[derive(Debug)]
struct Chunk {
    remaining: u64,
    size: u64,
    last: bool,
}

/// A recipient under evaluation, possibly waiting for the runtime's answers.
#[derive(Debug)]
struct RcptCheck {
    address: Mailbox,
    params: RcptParams,
    postmaster: bool,
    is_local: bool,
    destinations: Vec<Destination>,
    next_restriction: usize,
    permitted: bool,
    accounts: Vec<(String, Option<Lookup>)>,
    domain: Option<Lookup>,
}

enum CheckStep {
    Accept,
    Refuse(Reply),
    Ask(Output),
}

impl Session {
    /// A new session; the greeting is queued at once.
    pub fn new(config: Arc<Config>, peer: Peer, now: Instant) -> Self {
        let tls_active = config.tls == TlsMode::Implicit;
        let mut session = Session {
            config,
            peer,
            state: State::ExpectCommand(None),
            tls_active,
            helo: None,
            login: None,
            pending_mechanism: None,
            line: LineReader::default(),
            outputs: VecDeque::new(),
            send: Vec::with_capacity(512),
            deadline: None,
            errors: 0,
            auth_failures: 0,
            shutting_down: false,
            current: None,
            counts: Counts::default(),
        };
        let greeting = Reply::Greeting {
            hostname: session.config.hostname.clone(),
            mode: session.config.mode,
        };
        session.reply(greeting);
        session.rearm(now);
        session
    }

    /// Feeds bytes from the client and returns how many were consumed. Fewer than given
    /// means the session waits for an answer (or is closed): feed the rest after answering.
    pub fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            pos += match &self.state {
                // RFC 3207 section 4.2 (and the STARTTLS injection attacks): whatever the
                // client pipelined behind STARTTLS is thrown away, never executed.
                State::Closed | State::AwaitTlsHandshake => rest.len(),
                State::AwaitAuthVerdict
                | State::AwaitScramLookup(_)
                | State::AwaitFailureDelay(_)
                | State::AwaitRecipientLookup(..)
                | State::AwaitDelivery(_) => break,
                State::ExpectDataText(..) => self.read_data(rest),
                State::ExpectChunk(..) => self.read_chunk(rest),
                State::DiscardChunk(..) => self.discard_chunk(rest),
                State::ExpectCommand(_)
                | State::ExpectSaslResponse(_)
                | State::ExpectScramAck(_) => self.read_line(now, rest),
            };
        }
        if pos > 0 {
            self.rearm(now);
        }
        pos
    }

    /// Tells the session that time has reached `now`. Call it when [`Self::poll_timeout`]
    /// has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        if let State::AwaitFailureDelay(_) = self.state {
            self.state = State::ExpectCommand(None);
            self.reply(Reply::AuthFailed);
            if self.auth_failures >= self.config.limits.auth_failures {
                let hostname = self.config.hostname.clone();
                self.fatal(Reply::TooManyAuthFailures { hostname });
            }
            self.rearm(now);
            return;
        }
        let hostname = self.config.hostname.clone();
        self.fatal(Reply::Timeout { hostname });
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing the runtime must do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        if self.send.is_empty() {
            return None;
        }
        Some(Output::Send(std::mem::take(&mut self.send)))
    }

    /// Answers [`Output::StartTls`]: the handshake succeeded. The session starts over
    /// (RFC 3207 section 4.2): no HELO, no AUTH, no transaction.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if !matches!(self.state, State::AwaitTlsHandshake) {
            return;
        }
        self.tls_active = true;
        self.helo = None;
        self.login = None;
        self.line = LineReader::default();
        self.state = State::ExpectCommand(None);
        self.rearm(now);
    }

    /// Answers [`Output::CheckRecipient`] for the account it named.
    pub fn handle_recipient(&mut self, now: Instant, lookup: Lookup) {
        let State::AwaitRecipientLookup(_, check) = &mut self.state else {
            return;
        };
        if let Some(slot) = check
            .accounts
            .iter_mut()
            .find(|(_, answer)| answer.is_none())
        {
            slot.1 = Some(lookup);
        }
        self.continue_rcpt(now);
    }

    /// Answers [`Output::CheckDomain`].
    pub fn handle_domain(&mut self, now: Instant, lookup: Lookup) {
        let State::AwaitRecipientLookup(_, check) = &mut self.state else {
            return;
        };
        check.domain = Some(lookup);
        self.continue_rcpt(now);
    }

    /// Answers [`Output::MessageEnd`] with the outcome for each envelope recipient.
    pub fn handle_delivery(&mut self, now: Instant, report: DeliveryReport) {
        let State::AwaitDelivery(tx) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.state = State::ExpectCommand(None);
        let outcome = |i: usize| report.recipients.get(i).copied();
        match self.config.mode {
            Mode::Smtp => {
                let outcomes = (0..tx.recipients.len()).map(outcome);
                let worst = outcomes
                    .map(|o| o.unwrap_or(RcptOutcome::TempFailure))
                    .max_by_key(|o| match o {
                        RcptOutcome::Delivered => 0,
                        RcptOutcome::UnknownUser | RcptOutcome::Rejected => 1,
                        RcptOutcome::TempFailure => 2,
                        RcptOutcome::DiskFull => 3,
                    });
                let reply = match worst.unwrap_or(RcptOutcome::TempFailure) {
                    RcptOutcome::Delivered => Reply::Queued {
                        queue_id: report.queue_id.clone(),
                    },
                    RcptOutcome::TempFailure => Reply::DeliveryFailed,
                    RcptOutcome::DiskFull => Reply::DiskFull,
                    RcptOutcome::UnknownUser | RcptOutcome::Rejected => Reply::DeliveryRejected,
                };
                self.reply(reply);
            }
            Mode::Lmtp => {
                // RFC 2033 section 4.2: one reply per successful RCPT, in RCPT order. The
                // command counts as a success when any recipient got its copy.
                let delivered = tx
                    .order
                    .iter()
                    .any(|&i| outcome(i) == Some(RcptOutcome::Delivered));
                if let Some(verb) = self.current.take() {
                    self.counts.record(verb, delivered);
                }
                for &index in &tx.order {
                    let recipient = tx.recipients[index].address.clone();
                    let reply = match outcome(index).unwrap_or(RcptOutcome::TempFailure) {
                        RcptOutcome::Delivered => Reply::Delivered { recipient },
                        RcptOutcome::TempFailure => Reply::DeliveryFailed,
                        RcptOutcome::DiskFull => Reply::DiskFull,
                        RcptOutcome::UnknownUser => Reply::DeliveryUnknownUser(recipient),
                        RcptOutcome::Rejected => Reply::DeliveryRejected,
                    };
                    self.reply_intermediate(reply);
                }
            }
        }
        self.after_transaction();
        self.rearm(now);
    }

    /// Asks the session to end: an idle session gets 421 and closes at once; one inside a
    /// transaction closes after that transaction's final reply. The runtime bounds the wait.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        match &self.state {
            State::ExpectCommand(None)
            | State::ExpectSaslResponse(_)
            | State::ExpectScramAck(_) => {
                let hostname = self.config.hostname.clone();
                self.fatal(Reply::ShuttingDown { hostname });
            }
            State::ExpectCommand(Some(tx)) if !tx.started => {
                let hostname = self.config.hostname.clone();
                self.fatal(Reply::ShuttingDown { hostname });
            }
            _ => {}
        }
        self.rearm(now);
    }

    /// Whether the session has closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether TLS is active on the connection.
    pub fn is_tls_active(&self) -> bool {
        self.tls_active
    }

    /// The HELO/EHLO/LHLO name the client gave, if any.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_ref().map(|h| h.name.as_str())
    }

    /// The command counters for the `disconnect from` log line, Postfix style:
    /// `ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4`.
    pub fn command_summary(&self) -> String {
        self.counts.summary()
    }
}

// Input: lines, commands, message text.
impl Session {
    fn read_line(&mut self, now: Instant, input: &[u8]) -> usize {
        let max = AUTH_LINE_MAX;
        let (used, event) = self.line.read(input, max);
        match event {
            LineEvent::Incomplete => {}
            LineEvent::BareLineEnding => self.fatal(Reply::BareLineEnding),
            LineEvent::Overlong => {
                let reply = match self.state {
                    State::ExpectSaslResponse(_) | State::ExpectScramAck(_) => {
                        self.state = State::ExpectCommand(None);
                        Reply::AuthLineTooLong
                    }
                    _ => {
                        self.current = Some(Verb::Unknown);
                        Reply::LineTooLong
                    }
                };
                self.reply(reply);
            }
            LineEvent::Line => {
                let line = self.line.take();
                match std::mem::replace(&mut self.state, State::Closed) {
                    State::ExpectSaslResponse(sasl) => self.handle_sasl_response(now, sasl, &line),
                    State::ExpectScramAck(done) => self.handle_scram_ack(done, &line),
                    State::ExpectCommand(tx) => {
                        self.state = State::ExpectCommand(tx);
                        self.handle_command_line(now, &line);
                    }
                    other => self.state = other,
                }
                self.line.restore(line);
            }
        }
        used
    }

    fn handle_command_line(&mut self, now: Instant, line: &[u8]) {
        let verb = Verb::of(line);
        self.current = Some(verb);
        let max = match verb {
            Verb::Mail | Verb::Rcpt => PARAMETER_LINE_MAX,
            Verb::Auth => AUTH_LINE_MAX,
            _ => COMMAND_LINE_MAX,
        };
        if line.len() > max {
            self.reply(Reply::LineTooLong);
            return;
        }
        match command::parse(line) {
            Ok(command) => self.handle_command(now, command),
            Err(error) => {
                let reply = reply::for_command_error(error);
                if reply == Reply::Http {
                    self.fatal(reply);
                } else {
                    self.reply(reply);
                }
            }
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        let lmtp = self.config.mode == Mode::Lmtp;
        if self.config.tls == TlsMode::Encrypt && !self.tls_active {
            let allowed = matches!(
                command,
                Command::Ehlo(_)
                    | Command::Helo(_)
                    | Command::Lhlo(_)
                    | Command::StartTls
                    | Command::Noop
                    | Command::Rset
                    | Command::Quit
            );
            if !allowed {
                self.reply(Reply::StartTlsFirst);
                return;
            }
        }

        match command {
            Command::Ehlo(name) if !lmtp => self.hello(name, true),
            Command::Helo(name) if !lmtp => self.hello(name, false),
            Command::Lhlo(name) if lmtp => self.hello(name, true),
            Command::Ehlo(_) | Command::Helo(_) | Command::Lhlo(_) => {
                self.reply(Reply::Unrecognized)
            }
            Command::Mail(sender, params) => self.mail(sender, params),
            Command::Rcpt(path, params) => self.rcpt(now, path, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_transaction();
                self.reply(Reply::Ok);
            }
            Command::Noop => self.reply(Reply::Ok),
            Command::Quit => {
                self.abort_transaction();
                self.reply(Reply::Bye);
                self.close();
            }
            Command::Vrfy | Command::Expn => self.reply(Reply::CannotVerify),
            Command::Help => self.reply(Reply::Help),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(now, &mechanism, initial),
        }
    }

    fn hello(&mut self, name: String, extended: bool) {
        // RFC 5321 section 4.1.4: EHLO/HELO in the middle of a transaction resets it.
        self.abort_transaction();
        self.helo = Some(Helo { name, extended });
        let hostname = self.config.hostname.clone();
        if extended {
            let extensions = self.extensions();
            self.reply(Reply::Ehlo {
                hostname,
                extensions,
            });
        } else {
            self.reply(Reply::Helo { hostname });
        }
    }

    /// SPEC.md section 4's order: PIPELINING, SIZE, STARTTLS, AUTH, ENHANCEDSTATUSCODES,
    /// 8BITMIME, DSN, SMTPUTF8, CHUNKING.
    fn extensions(&self) -> Vec<String> {
        let mut list = vec!["PIPELINING".to_owned()];
        list.push(format!("SIZE {}", self.config.limits.message_size));
        if self.starttls_offered() {
            list.push("STARTTLS".to_owned());
        }
        if self.auth_allowed_now() {
            let names: Vec<&str> = self.offered_mechanisms().map(|m| m.name()).collect();
            list.push(format!("AUTH {}", names.join(" ")));
        }
        for ext in [
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        ] {
            list.push(ext.to_owned());
        }
        list
    }

    fn starttls_offered(&self) -> bool {
        !self.tls_active && matches!(self.config.tls, TlsMode::May | TlsMode::Encrypt)
    }

    fn auth_allowed_now(&self) -> bool {
        self.config.auth != AuthMode::None
            && self.login.is_none()
            && self.offered_mechanisms().next().is_some()
            && (self.tls_active || self.config.plaintext_auth)
    }

    fn mail(&mut self, sender: ReversePath, params: MailParams) {
        if self.helo.is_none() {
            self.reply(Reply::BadSequence("send HELO/EHLO first"));
            return;
        }
        if matches!(self.state, State::ExpectCommand(Some(_))) {
            self.reply(Reply::BadSequence("nested MAIL command"));
            return;
        }
        if self.config.auth == AuthMode::Required && self.login.is_none() {
            self.reply(Reply::AuthRequired);
            return;
        }
        // BINARYMIME is not offered, so RFC 3030 section 3 makes it an unknown value here.
        if params.body == Some(Body::BinaryMime) {
            self.reply(Reply::UnsupportedParameter);
            return;
        }
        if let ReversePath::Mailbox(mailbox) = &sender {
            if !mailbox.is_ascii() && !params.smtputf8 {
                self.reply(Reply::NeedsSmtpUtf8);
                return;
            }
        }
        if params
            .size
            .is_some_and(|size| size > self.config.limits.message_size)
        {
            self.reply(Reply::TooBig);
            return;
        }
        self.state = State::ExpectCommand(Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
            order: Vec::new(),
            started: false,
            chunking: None,
            size: 0,
            too_big: false,
        }));
        self.reply(Reply::SenderOk);
    }

    fn rcpt(&mut self, now: Instant, path: ForwardPath, params: RcptParams) {
        let State::ExpectCommand(Some(tx)) = &mut self.state else {
            self.reply(Reply::BadSequence("need MAIL command"));
            return;
        };
        if tx.chunking.is_some() {
            self.reply(Reply::BadSequence("RCPT after BDAT"));
            return;
        }
        let (address, postmaster) = match path {
            ForwardPath::Postmaster => {
                let domain = self.config.policy.domains.first().cloned();
                let domain = domain.unwrap_or_else(|| self.config.hostname.to_lowercase());
                let address = Mailbox {
                    local: "Postmaster".into(),
                    domain: Domain::Name(domain),
                };
                (address, true)
            }
            ForwardPath::Mailbox(mailbox) => {
                let is_local = self
                    .config
                    .policy
                    .is_local_domain(&mailbox.domain, self.peer.local);
                let postmaster = is_local && mailbox.local.eq_ignore_ascii_case("postmaster");
                (mailbox, postmaster)
            }
        };
        if !address.is_ascii() && !tx.params.smtputf8 {
            self.reply(Reply::NeedsSmtpUtf8);
            return;
        }

        // A recipient given twice is delivered once and answered twice (SPEC.md section 4).
        let key = canonical_key(&address);
        if let Some(index) = tx
            .recipients
            .iter()
            .position(|r| canonical_key(&r.address) == key)
        {
            tx.order.push(index);
            self.reply(Reply::RecipientOk);
            return;
        }
        if tx.recipients.len() >= self.config.limits.recipients {
            self.reply(Reply::TooManyRecipients);
            return;
        }

        let policy = &self.config.policy;
        let is_local = postmaster || policy.is_local_domain(&address.domain, self.peer.local);
        let destinations = if postmaster {
            policy.resolve_postmaster(&address.domain.to_string(), self.peer.local)
        } else if is_local {
            policy.resolve_local(&address, self.peer.local)
        } else {
            vec![Destination::Remote(address.to_string())]
        };
        let accounts = destinations
            .iter()
            .filter_map(|d| match d {
                Destination::Local { account, .. } => Some((account.clone(), None)),
                Destination::Remote(_) => None,
            })
            .collect();
        let check = RcptCheck {
            address,
            params,
            postmaster,
            is_local,
            destinations,
            next_restriction: 0,
            permitted: false,
            accounts,
            domain: None,
        };
        let State::ExpectCommand(Some(tx)) = std::mem::replace(&mut self.state, State::Closed)
        else {
            unreachable!("checked above");
        };
        self.state = State::AwaitRecipientLookup(tx, check);
        self.continue_rcpt(now);
    }

    fn continue_rcpt(&mut self, now: Instant) {
        let State::AwaitRecipientLookup(mut tx, mut check) =
            std::mem::replace(&mut self.state, State::Closed)
        else {
            return;
        };
        match self.evaluate(&tx, &mut check) {
            CheckStep::Ask(question) => {
                self.state = State::AwaitRecipientLookup(tx, check);
                self.push(question);
            }
            CheckStep::Refuse(reply) => {
                self.state = State::ExpectCommand(Some(tx));
                self.reply(reply);
            }
            CheckStep::Accept => {
                tx.order.push(tx.recipients.len());
                tx.recipients.push(Recipient {
                    address: check.address,
                    params: check.params,
                    destinations: check.destinations,
                });
                self.state = State::ExpectCommand(Some(tx));
                self.reply(Reply::RecipientOk);
            }
        }
        self.rearm(now);
    }

    /// Runs the restriction list (SPEC.md section 2) from where it stopped; first decisive
    /// entry wins. Then a local recipient must name an existing account, whatever the list
    /// said, so that tern never accepts mail it would have to bounce.
    fn evaluate(&self, tx: &Transaction, check: &mut RcptCheck) -> CheckStep {
        let config = &self.config;
        let address = &check.address;
        let lmtp = config.mode == Mode::Lmtp;

        if lmtp && !check.is_local {
            return CheckStep::Refuse(Reply::UnknownUser(address.clone()));
        }
        // RFC 5321 section 4.5.1: postmaster is accepted without restrictions.
        let restrictions: &[Restriction] = if lmtp || check.postmaster {
            &[]
        } else {
            &config.restrictions
        };

        while !check.permitted && check.next_restriction < restrictions.len() {
            let restriction = restrictions[check.next_restriction];
            match restriction {
                Restriction::PermitMynetworks => {
                    check.permitted = config.policy.is_trusted(self.peer.client);
                }
                Restriction::PermitSaslAuthenticated => check.permitted = self.login.is_some(),
                Restriction::RejectNonFqdnRecipient => {
                    if let Domain::Name(name) = &address.domain {
                        if !name.contains('.') {
                            return CheckStep::Refuse(Reply::NonFqdnRecipient(address.clone()));
                        }
                    }
                }
                Restriction::RejectUnknownRecipientDomain if !check.is_local => {
                    match (check.domain, &address.domain) {
                        (_, Domain::Literal(_)) => {}
                        (None, domain) => {
                            return CheckStep::Ask(Output::CheckDomain(domain.to_string()));
                        }
                        (Some(Lookup::Found), _) => {}
                        (Some(Lookup::NotFound), _) => {
                            return CheckStep::Refuse(Reply::UnknownDomain(address.clone()));
                        }
                        (Some(Lookup::TempFail), _) => {
                            return CheckStep::Refuse(Reply::DomainTempFail(address.clone()));
                        }
                    }
                }
                Restriction::RejectUnknownRecipientDomain => {}
                Restriction::RejectUnauthDestination => {
                    if !check.is_local {
                        return CheckStep::Refuse(Reply::RelayDenied(address.clone()));
                    }
                }
                Restriction::RejectUnverifiedRecipient => {
                    if let Some(step) = self.verify_accounts(check) {
                        return step;
                    }
                }
                Restriction::RejectSenderLoginMismatch => {
                    if let Some(step) = self.sender_login_mismatch(tx) {
                        return step;
                    }
                }
                Restriction::Permit => check.permitted = true,
                Restriction::Reject => {
                    return CheckStep::Refuse(Reply::AccessDenied(address.clone()));
                }
            }
            check.next_restriction += 1;
        }

        if let Some(step) = self.verify_accounts(check) {
            return step;
        }
        CheckStep::Accept
    }

    /// Asks for the next unanswered local account, or refuses on a negative answer.
    fn verify_accounts(&self, check: &RcptCheck) -> Option<CheckStep> {
        for (account, answer) in &check.accounts {
            match answer {
                None => return Some(CheckStep::Ask(Output::CheckRecipient(account.clone()))),
                Some(Lookup::Found) => {}
                Some(Lookup::NotFound) => {
                    return Some(CheckStep::Refuse(Reply::UnknownUser(check.address.clone())));
                }
                Some(Lookup::TempFail) => {
                    let reply = Reply::RecipientTempFail(check.address.clone());
                    return Some(CheckStep::Refuse(reply));
                }
            }
        }
        None
    }

    fn sender_login_mismatch(&self, tx: &Transaction) -> Option<CheckStep> {
        let (login, _) = self.login.as_ref()?;
        let ReversePath::Mailbox(sender) = &tx.sender else {
            return None;
        };
        if self
            .config
            .policy
            .login_owns(login, sender, self.peer.local)
        {
            return None;
        }
        Some(CheckStep::Refuse(Reply::SenderLoginMismatch {
            sender: sender.to_string(),
            login: login.clone(),
        }))
    }

    fn data(&mut self) {
        let State::ExpectCommand(Some(tx)) = &self.state else {
            self.reply(Reply::BadSequence("need MAIL command"));
            return;
        };
        if tx.chunking.is_some() {
            self.reply(Reply::BadSequence("DATA after BDAT"));
            return;
        }
        if tx.recipients.is_empty() {
            self.reply(Reply::BadSequence("need RCPT command"));
            return;
        }
        let State::ExpectCommand(Some(mut tx)) = std::mem::replace(&mut self.state, State::Closed)
        else {
            unreachable!("checked above");
        };
        self.reply_intermediate(Reply::StartData);
        tx.started = true;
        let envelope = self.envelope(&tx);
        self.push(Output::MessageStart(envelope));
        self.state = State::ExpectDataText(tx, DataDecoder::new());
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let refusal = match &self.state {
            State::ExpectCommand(None) => Some(Reply::BadSequence("need MAIL command")),
            State::ExpectCommand(Some(tx)) if tx.recipients.is_empty() => {
                Some(Reply::BadSequence("need RCPT command"))
            }
            _ => None,
        };
        // RFC 3030 section 2: a refused BDAT's chunk must still be read, and only then
        // answered, or its bytes would be taken for commands.
        if let Some(reply) = refusal {
            if size == 0 {
                self.reply(reply);
            } else {
                let tx = match std::mem::replace(&mut self.state, State::Closed) {
                    State::ExpectCommand(tx) => tx,
                    _ => None,
                };
                drop(tx);
                self.state = State::DiscardChunk(size, reply);
            }
            return;
        }
        let State::ExpectCommand(Some(mut tx)) = std::mem::replace(&mut self.state, State::Closed)
        else {
            unreachable!("checked above");
        };
        if tx.chunking.is_none() {
            tx.chunking = Some(LineEndingChecker::new());
            tx.started = true;
            let envelope = self.envelope(&tx);
            self.push(Output::MessageStart(envelope));
        }
        let chunk = Chunk {
            remaining: size,
            size,
            last,
        };
        self.state = State::ExpectChunk(tx, chunk);
        if size == 0 {
            self.end_chunk();
        }
    }

    fn read_data(&mut self, input: &[u8]) -> usize {
        let State::ExpectDataText(tx, decoder) = &mut self.state else {
            return 0;
        };
        let mut text = Vec::with_capacity(input.len());
        let (used, status) = decoder.decode(input, &mut text);
        let limit = self.config.limits.message_size;
        let chunk = account_text(tx, text, limit);
        if let Some(output) = chunk {
            self.push(output);
        }

        match status {
            DataStatus::NeedMore => {}
            DataStatus::BareLineEnding => self.fatal(Reply::BareLineEnding),
            DataStatus::End => self.end_message(),
        }
        used
    }

    fn read_chunk(&mut self, input: &[u8]) -> usize {
        let State::ExpectChunk(tx, chunk) = &mut self.state else {
            return 0;
        };
        let take = input
            .len()
            .min(usize::try_from(chunk.remaining).unwrap_or(usize::MAX));
        let piece = &input[..take];
        chunk.remaining -= take as u64;
        let clean = tx
            .chunking
            .as_mut()
            .is_none_or(|checker| checker.check(piece));
        if !clean {
            self.fatal(Reply::BareLineEnding);
            return take;
        }
        let limit = self.config.limits.message_size;
        let output = account_text(tx, piece.to_vec(), limit);
        let done = chunk.remaining == 0;
        if let Some(output) = output {
            self.push(output);
        }
        if done {
            self.end_chunk();
        }
        take
    }

    fn end_chunk(&mut self) {
        let State::ExpectChunk(tx, chunk) = std::mem::replace(&mut self.state, State::Closed)
        else {
            return;
        };
        if tx.too_big {
            // The transaction is over: later BDATs get 503 (RFC 3030 section 2).
            self.state = State::ExpectCommand(None);
            self.reply(Reply::TooBig);
            self.after_transaction();
            return;
        }
        if chunk.last {
            let clean = tx.chunking.as_ref().is_none_or(LineEndingChecker::finish);
            self.state = State::ExpectDataText(tx, DataDecoder::new());
            if !clean {
                self.fatal(Reply::BareLineEnding);
                return;
            }
            self.end_message();
        } else {
            self.state = State::ExpectCommand(Some(tx));
            self.reply(Reply::ChunkOk { size: chunk.size });
        }
    }

    /// The end of DATA text or of the last chunk: hand the message over, or refuse it.
    fn end_message(&mut self) {
        let tx = match std::mem::replace(&mut self.state, State::Closed) {
            State::ExpectDataText(tx, _) | State::ExpectChunk(tx, _) => tx,
            other => {
                self.state = other;
                return;
            }
        };
        if tx.too_big {
            self.state = State::ExpectCommand(None);
            self.reply(Reply::TooBig);
            self.after_transaction();
        } else {
            self.push(Output::MessageEnd);
            self.state = State::AwaitDelivery(tx);
        }
    }

    fn discard_chunk(&mut self, input: &[u8]) -> usize {
        let State::DiscardChunk(remaining, _) = &mut self.state else {
            return 0;
        };
        let take = input
            .len()
            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
        *remaining -= take as u64;
        if *remaining == 0 {
            if let State::DiscardChunk(_, reply) =
                std::mem::replace(&mut self.state, State::ExpectCommand(None))
            {
                self.reply(reply);
            }
        }
        take
    }

    fn starttls(&mut self) {
        if !self.starttls_offered() {
            self.reply(Reply::TlsNotAvailable);
            return;
        }
        if matches!(self.state, State::ExpectCommand(Some(_))) {
            self.reply(Reply::BadSequence("MAIL transaction in progress"));
            return;
        }
        self.reply(Reply::ReadyToStartTls);
        self.push(Output::StartTls);
        self.state = State::AwaitTlsHandshake;
    }
}

// Output and bookkeeping.
impl Session {
    fn envelope(&self, tx: &Transaction) -> Envelope {
        let extended = self.helo.as_ref().is_some_and(|h| h.extended);
        let tls = self.tls_active;
        let auth = self.login.is_some();
        let protocol = match (self.config.mode, extended, tls, auth) {
            (Mode::Lmtp, _, false, false) => "LMTP",
            (Mode::Lmtp, _, true, false) => "LMTPS",
            (Mode::Lmtp, _, false, true) => "LMTPA",
            (Mode::Lmtp, _, true, true) => "LMTPSA",
            (Mode::Smtp, false, _, _) => "SMTP",
            (Mode::Smtp, true, false, false) => "ESMTP",
            (Mode::Smtp, true, true, false) => "ESMTPS",
            (Mode::Smtp, true, false, true) => "ESMTPA",
            (Mode::Smtp, true, true, true) => "ESMTPSA",
        };
        Envelope {
            sender: tx.sender.clone(),
            params: tx.params.clone(),
            recipients: tx.recipients.clone(),
            helo: self.helo.as_ref().map(|h| h.name.clone()),
            protocol,
            login: self.login.as_ref().map(|(login, _)| login.clone()),
            mechanism: self.login.as_ref().map(|(_, mechanism)| *mechanism),
        }
    }

    /// A final reply to the current command.
    fn reply(&mut self, reply: Reply) {
        if let Some(verb) = self.current.take() {
            self.counts.record(verb, reply.code() < 400);
        }
        let hard_error = reply.is_hard_error();
        reply.write(&mut self.send);
        if hard_error {
            self.errors += 1;
            if self.errors >= self.config.limits.errors && !self.is_closed() {
                let hostname = self.config.hostname.clone();
                self.fatal(Reply::TooManyErrors { hostname });
            }
        }
    }

    /// A reply that does not finish the current command (354, 334, LMTP's per-recipient
    /// replies before the last).
    fn reply_intermediate(&mut self, reply: Reply) {
        reply.write(&mut self.send);
    }

    fn push(&mut self, output: Output) {
        if !self.send.is_empty() {
            self.outputs
                .push_back(Output::Send(std::mem::take(&mut self.send)));
        }
        self.outputs.push_back(output);
    }

    /// Ends the session with `reply`: the message in progress, if any, is thrown away.
    fn fatal(&mut self, reply: Reply) {
        if self.is_closed() {
            return;
        }
        self.abort_transaction();
        self.current = None;
        reply.write(&mut self.send);
        self.close();
    }

    fn close(&mut self) {
        self.push(Output::Close);
        self.state = State::Closed;
        self.deadline = None;
    }

    fn abort_transaction(&mut self) {
        let tx = match std::mem::replace(&mut self.state, State::Closed) {
            State::ExpectCommand(tx) => {
                self.state = State::ExpectCommand(None);
                tx
            }
            State::ExpectDataText(tx, _)
            | State::ExpectChunk(tx, _)
            | State::AwaitDelivery(tx)
            | State::AwaitRecipientLookup(tx, _) => Some(tx),
            other => {
                self.state = other;
                None
            }
        };
        if tx.is_some_and(|tx| tx.started && !tx.too_big) {
            self.push(Output::MessageAbort);
        }
    }

    fn after_transaction(&mut self) {
        if self.shutting_down {
            let hostname = self.config.hostname.clone();
            self.fatal(Reply::ShuttingDown { hostname });
        }
    }

    fn rearm(&mut self, now: Instant) {
        let limits = &self.config.limits;
        self.deadline = match &self.state {
            State::Closed
            | State::AwaitAuthVerdict
            | State::AwaitScramLookup(_)
            | State::AwaitRecipientLookup(..)
            | State::AwaitDelivery(_)
            | State::AwaitTlsHandshake => None,
            State::AwaitFailureDelay(until) => Some(*until),
            State::ExpectDataText(..) | State::ExpectChunk(..) | State::DiscardChunk(..) => {
                Some(now + limits.data_timeout)
            }
            State::ExpectCommand(_) | State::ExpectSaslResponse(_) | State::ExpectScramAck(_) => {
                Some(now + limits.command_timeout)
            }
        };
    }
}

/// Counts message text against the size limit and turns it into an output: data while within
/// the limit, one abort when it is first exceeded, nothing after.
fn account_text(tx: &mut Transaction, text: Vec<u8>, limit: u64) -> Option<Output> {
    if tx.too_big {
        return None;
    }
    tx.size += text.len() as u64;
    if tx.size > limit {
        tx.too_big = true;
        return Some(Output::MessageAbort);
    }
    (!text.is_empty()).then(|| Output::MessageData(Bytes::from(text)))
}

fn canonical_key(mailbox: &Mailbox) -> String {
    format!("{}@{}", mailbox.local.to_lowercase(), mailbox.domain)
}

/// The verbs counted in the `disconnect from` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Helo,
    Ehlo,
    Lhlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    Unknown,
}

impl Verb {
    const ALL: [Verb; 15] = [
        Verb::Helo,
        Verb::Ehlo,
        Verb::Lhlo,
        Verb::StartTls,
        Verb::Auth,
        Verb::Mail,
        Verb::Rcpt,
        Verb::Data,
        Verb::Bdat,
        Verb::Rset,
        Verb::Noop,
        Verb::Vrfy,
        Verb::Help,
        Verb::Quit,
        Verb::Unknown,
    ];

    fn of(line: &[u8]) -> Verb {
        let word = line.split(|&b| b == b' ').next().unwrap_or_default();
        let word = word.to_ascii_uppercase();
        match word.as_slice() {
            b"HELO" => Verb::Helo,
            b"EHLO" => Verb::Ehlo,
            b"LHLO" => Verb::Lhlo,
            b"STARTTLS" => Verb::StartTls,
            b"AUTH" => Verb::Auth,
            b"MAIL" => Verb::Mail,
            b"RCPT" => Verb::Rcpt,
            b"DATA" => Verb::Data,
            b"BDAT" => Verb::Bdat,
            b"RSET" => Verb::Rset,
            b"NOOP" => Verb::Noop,
            b"VRFY" | b"EXPN" => Verb::Vrfy,
            b"HELP" => Verb::Help,
            b"QUIT" => Verb::Quit,
            _ => Verb::Unknown,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verb::Helo => "helo",
            Verb::Ehlo => "ehlo",
            Verb::Lhlo => "lhlo",
            Verb::StartTls => "starttls",
            Verb::Auth => "auth",
            Verb::Mail => "mail",
            Verb::Rcpt => "rcpt",
            Verb::Data => "data",
            Verb::Bdat => "bdat",
            Verb::Rset => "rset",
            Verb::Noop => "noop",
            Verb::Vrfy => "vrfy",
            Verb::Help => "help",
            Verb::Quit => "quit",
            Verb::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    ok: [u32; 15],
    total: [u32; 15],
}

impl Counts {
    fn record(&mut self, verb: Verb, ok: bool) {
        let i = Verb::ALL.iter().position(|v| *v == verb).unwrap_or(14);
        self.total[i] += 1;
        if ok {
            self.ok[i] += 1;
        }
    }

    fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (i, verb) in Verb::ALL.iter().enumerate() {
            if self.total[i] == 0 {
                continue;
            }
            parts.push(fraction(verb.name(), self.ok[i], self.total[i]));
        }
        let ok: u32 = self.ok.iter().sum();
        let total: u32 = self.total.iter().sum();
        parts.push(fraction("commands", ok, total));
        parts.join(" ")
    }
}

fn fraction(name: &str, ok: u32, total: u32) -> String {
    if ok == total {
        format!("{name}={total}")
    } else {
        format!("{name}={ok}/{total}")
    }
}

/// What a session reads its next input bytes as; see [`Session::reading`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A command line.
    Command,
    /// A SASL response line (RFC 4954 section 4).
    SaslResponse,
    /// DATA message text, up to its terminating `.` line.
    DataText,
    /// The rest of a BDAT chunk: this many octets.
    Chunk(u64),
    /// Nothing that is interpreted: everything is thrown away (closed, or after STARTTLS).
    Discarding,
    /// Nothing at all until the runtime answers a question or a timer runs out.
    Waiting,
}

// For tools that must know where lines begin, such as the session recorder of `replay`.
impl Session {
    /// What the next input bytes are read as.
    pub fn reading(&self) -> Reading {
        match &self.state {
            State::ExpectCommand(_) => Reading::Command,
            State::ExpectSaslResponse(_) | State::ExpectScramAck(_) => Reading::SaslResponse,
            State::ExpectDataText(..) => Reading::DataText,
            State::ExpectChunk(_, chunk) => Reading::Chunk(chunk.remaining),
            State::DiscardChunk(remaining, _) => Reading::Chunk(*remaining),
            State::Closed | State::AwaitTlsHandshake => Reading::Discarding,
            State::AwaitAuthVerdict
            | State::AwaitScramLookup(_)
            | State::AwaitFailureDelay(_)
            | State::AwaitRecipientLookup(..)
            | State::AwaitDelivery(_) => Reading::Waiting,
        }
    }
}
