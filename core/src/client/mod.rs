//! The SMTP client session (RFC 5321) and its LMTP mode (RFC 2033), as a sans-IO machine:
//! what tern uses to hand local mail to another LMTP server and to relay mail to other hosts.
//!
//! Extensions used when the server offers them: PIPELINING (RFC 2920), SIZE (1870), STARTTLS
//! (3207), ENHANCEDSTATUSCODES (2034, 3463), 8BITMIME (6152), DSN (3461), SMTPUTF8 (6531) and
//! CHUNKING (3030).
//!
//! # Driving a session
//!
//! ```no_run
//! # use std::sync::Arc; use std::time::Instant;
//! # use tern_core::client::{Config, Message, Mode, Output, Session};
//! let config = Arc::new(Config::new("mx.example.net", Mode::Lmtp));
//! # let mut next_message = || -> Option<Message> { None };
//! # let mut read = |_: &mut Vec<u8>| -> usize { 0 };
//! let mut session = Session::new(config, Instant::now()).expect("a valid host name");
//! let mut pending: Vec<u8> = Vec::new();
//! loop {
//!     // 1. Drain every output and answer it.
//!     while let Some(output) = session.poll_output() {
//!         match output {
//!             Output::Ready => match next_message() {
//!                 Some(message) => session.start_message(Instant::now(), message).unwrap(),
//!                 None => session.quit(Instant::now()),
//!             },
//!             // Feed the text with `handle_message_text`, piece by piece, each piece once
//!             // the previous one is written; then `handle_message_end`.
//!             Output::MessageText => {}
//!             Output::Close => return,
//!             _ => { /* send bytes, start TLS, record a report or an error */ }
//!         }
//!     }
//!     // 2. Feed what the server sent. A session that expects no reply (it waits for the
//!     //    runtime) consumes nothing: keep the rest and feed it again later.
//!     if pending.is_empty() && read(&mut pending) == 0 {
//!         session.handle_eof(Instant::now());
//!         continue;
//!     }
//!     let used = session.receive(Instant::now(), &pending);
//!     pending.drain(..used);
//!     // 3. Wake at `poll_timeout()` and call `handle_timeout(now)`.
//! }
//! ```
//!
//! # States
//!
//! The session waits for the greeting, then for the answer to EHLO/LHLO (HELO after an EHLO
//! refused with 5xx), then, if TLS is wanted and offered, for the answer to STARTTLS and the
//! runtime's handshake, and says [`Output::Ready`]. A message then runs as one transaction:
//! MAIL, each RCPT and DATA (one batch with PIPELINING, else one at a time), the text from the
//! runtime, and the reply after it (one per accepted recipient in LMTP). Its [`Report`] goes
//! out, an RSET follows if the server may still hold part of the transaction, and the
//! session is ready again, so one connection carries many messages. A failure of the
//! connection replaces the state with `Closed`; its [`SessionError`] is kept and reported
//! once, and every recipient still without a verdict gets it as a temporary failure.
//!
//! Known limits: the client does not authenticate (no AUTH), cannot send BINARYMIME, and
//! sends 8-bit text to a server without 8BITMIME as it is, without a MIME downgrade (Postfix
//! does the same with `disable_mime_output_conversion = yes`). BDAT is used only when the
//! server offers both CHUNKING and PIPELINING, since its chunks are pipelined. A server that
//! sends a reply nobody asked for is not heard until the next command: a runtime holding an
//! idle connection should close it when it becomes readable, as Postfix's connection cache
//! does. Timeouts restart whenever bytes arrive, as Postfix's per-read timeouts do.

mod config;
mod envelope;
mod reply;
mod report;
#[cfg(test)]
mod tests;
mod text;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::config::{Config, Timeouts, TlsPolicy};
use self::envelope::{mail_line, rcpt_line, validate};
use self::reply::ReplyParser;
pub use self::reply::{EnhancedCode, Extensions, LINE_MAX, REPLY_MAX, ReplyError, ServerReply};
pub use self::report::{
    InputError, Problem, RecipientReport, Report, SessionError, Stage, Verdict,
};
use self::text::TextEncoder;
use crate::address::{Mailbox, ReversePath};
use crate::command::{MailParams, RcptParams};
pub use crate::reply::Mode;

/// What the runtime must do next. Drain with [`Session::poll_output`] after every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the server, in order.
    Send(Vec<u8>),
    /// Flush what was sent, run the TLS handshake, and call
    /// [`Session::handle_tls_established`] or [`Session::handle_tls_failed`]. The session
    /// has already consumed and thrown away every byte it was given after the 220 (RFC 3207
    /// section 4.2); bytes read in the clear before the handshake may still be fed to
    /// [`Session::receive`], which drops them, but must never be given to the TLS layer.
    StartTls,
    /// The session is idle: call [`Session::start_message`] or [`Session::quit`].
    Ready,
    /// Stream the message text with [`Session::handle_message_text`] (CRLF line ends, no
    /// dot-stuffing: the session does that), then call [`Session::handle_message_end`].
    /// Stop early if the message's [`Output::Report`] arrives first.
    MessageText,
    /// What became of the current message, per recipient.
    Report(Report),
    /// The session failed; [`Output::Close`] follows.
    Error(SessionError),
    /// Close the connection (after sending what came before).
    Close,
}

/// A message to send: its envelope. The text follows on [`Output::MessageText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// MAIL FROM.
    pub sender: ReversePath,
    /// What the message needs and asks for. `size` is sent as SIZE (and checked against the
    /// server's limit); `body` as BODY where 8BITMIME is offered; `smtputf8` means the message
    /// needs SMTPUTF8 (so does any non-ASCII address); `ret` and `envid` go out where DSN is
    /// offered. `auth` is never sent.
    pub params: MailParams,
    /// The recipients, in order; the [`Report`] lists them in the same order.
    pub recipients: Vec<Recipient>,
}

/// One recipient of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub address: Mailbox,
    /// NOTIFY and ORCPT, sent where DSN is offered.
    pub params: RcptParams,
}

/// One SMTP or LMTP client session over one connection.
#[derive(Debug)]
pub struct Session {
    config: Arc<Config>,
    state: State,
    /// The replies still due, oldest first; PIPELINING lets several be due at once.
    expect: VecDeque<Expect>,
    parser: ReplyParser,
    extensions: Extensions,
    tls_active: bool,
    outputs: VecDeque<Output>,
    send: Vec<u8>,
    deadline: Option<Instant>,
    error: Option<SessionError>,
}

#[derive(Debug)]
enum State {
    /// Waiting for the 220.
    ExpectGreeting,
    /// Waiting for the answer to EHLO, LHLO or HELO.
    ExpectHello,
    /// Waiting for the answer to STARTTLS.
    ExpectStartTls,
    /// Waiting for the runtime's TLS handshake; everything the server sends is discarded.
    AwaitTlsHandshake,
    /// Idle: waiting for the runtime's next message or QUIT.
    AwaitMessage,
    /// A mail transaction, in any of its phases.
    Transaction(Transaction),
    /// Waiting for the answer to RSET.
    ExpectRset,
    /// Waiting for the answer to QUIT.
    ExpectQuit,
    /// Done; everything further is ignored.
    Closed,
}

/// What a reply due from the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Hello(Hello),
    StartTls,
    Mail,
    Rcpt(usize),
    Data,
    /// The lone `.` sent after a 354 that came although no recipient was accepted.
    Dot,
    /// A BDAT chunk other than the last.
    Chunk,
    /// The reply after the text: SMTP's one (`None`), or LMTP's for one recipient.
    Final(Option<usize>),
    Rset,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hello {
    Ehlo,
    Helo,
    Lhlo,
}

#[derive(Debug)]
struct Transaction {
    mail: Option<ServerReply>,
    recipients: Vec<RcptState>,
    /// RCPT lines, sent one at a time without PIPELINING.
    rcpt_lines: Vec<String>,
    next_rcpt: usize,
    data_sent: bool,
    bdat: bool,
    phase: Phase,
    encoder: TextEncoder,
}

#[derive(Debug, Default)]
struct RcptState {
    rcpt: Option<ServerReply>,
    verdict: Option<Verdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// MAIL, RCPT, DATA.
    Envelope,
    /// The runtime streams the text.
    Text,
    /// A BDAT chunk was refused: the replies still due are awaited, then RSET.
    Abandoned,
    /// The text is sent; its reply or replies are due.
    Final,
}

/// What a transaction does once no reply of it is due.
enum Step {
    Wait,
    Finish { rset: bool },
    SendRcpt(usize),
    SendData,
    StartText,
}

impl Session {
    /// A new session on a fresh connection; it waits for the greeting.
    pub fn new(config: Arc<Config>, now: Instant) -> Result<Self, InputError> {
        let name = config.hostname.as_str();
        if name.chars().any(char::is_control) {
            return Err(InputError::ControlCharacter("hostname"));
        }
        if name.is_empty() || name.contains(' ') {
            return Err(InputError::Malformed("hostname"));
        }
        let mut session = Session {
            config,
            state: State::ExpectGreeting,
            expect: VecDeque::from([Expect::Greeting]),
            parser: ReplyParser::default(),
            extensions: Extensions::default(),
            tls_active: false,
            outputs: VecDeque::new(),
            send: Vec::with_capacity(512),
            deadline: None,
            error: None,
        };
        session.rearm(now);
        Ok(session)
    }

    /// Feeds bytes from the server and returns how many were consumed. Fewer than given
    /// means the session expects no reply now (it waits for the runtime): feed the rest
    /// after the next call that sends something.
    pub fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                // RFC 3207 section 4.2: whatever came after the 220 to STARTTLS was sent
                // before the handshake, so it is not a reply to anything: throw it away.
                State::Closed | State::AwaitTlsHandshake => {
                    pos = input.len();
                    break;
                }
                _ if self.expect.is_empty() => break,
                _ => {}
            }
            let (used, event) = self.parser.read(&input[pos..]);
            pos += used;
            match event {
                None => {}
                Some(Ok(reply)) => self.handle_reply(reply),
                Some(Err(error)) => {
                    let stage = self.stage();
                    self.fail(SessionError::Protocol { stage, error }, false);
                }
            }
        }
        if pos > 0 {
            self.rearm(now);
        }
        pos
    }

    /// Tells the session that time has reached `now`. Call it when [`Self::poll_timeout`]
    /// has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|deadline| now < deadline) {
            return;
        }
        if matches!(self.state, State::ExpectQuit) {
            self.close();
            return;
        }
        let stage = self.stage();
        self.fail(SessionError::Timeout { stage }, false);
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

    /// The connection ended: the server closed it, or reading or writing failed. After a
    /// QUIT this is the normal end; otherwise every recipient without a verdict fails
    /// temporarily.
    pub fn handle_eof(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::ExpectQuit => self.close(),
            _ => {
                let stage = self.stage();
                self.fail(SessionError::ConnectionLost { stage }, false);
            }
        }
        self.rearm(now);
    }

    /// Answers [`Output::StartTls`]: the handshake succeeded. The session forgets what it
    /// knew of the server (RFC 3207 section 4.2) and says EHLO or LHLO again.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if !matches!(self.state, State::AwaitTlsHandshake) {
            return;
        }
        self.tls_active = true;
        self.parser = ReplyParser::default();
        self.extensions = Extensions::default();
        self.hello();
        self.rearm(now);
    }

    /// Answers [`Output::StartTls`]: the handshake failed. The session ends.
    pub fn handle_tls_failed(&mut self, now: Instant) {
        if matches!(self.state, State::AwaitTlsHandshake) {
            self.fail(SessionError::TlsFailed, false);
        }
        self.rearm(now);
    }

    /// Answers [`Output::Ready`] with a message to send. Refused, with nothing written, when
    /// the session is not ready or the envelope holds anything that could not be written
    /// safely: a control character (CR, LF, ...) in an address, ENVID or ORCPT, an address
    /// that does not parse back, ENVID or ORCPT that is not xtext. The session then stays
    /// ready: give it another message or quit.
    ///
    /// A message the server cannot take (it needs SMTPUTF8 and the server lacks it, or it
    /// is over the server's SIZE) is not sent: its [`Report`] and a new [`Output::Ready`]
    /// follow at once.
    pub fn start_message(&mut self, now: Instant, message: Message) -> Result<(), InputError> {
        if !matches!(self.state, State::AwaitMessage) {
            return Err(InputError::NotReady);
        }
        validate(&message)?;

        let ext = &self.extensions;
        let needs_utf8 = message.params.smtputf8
            || matches!(&message.sender, ReversePath::Mailbox(m) if !m.is_ascii())
            || message.recipients.iter().any(|r| !r.address.is_ascii());
        let limit = ext.size.filter(|&limit| limit > 0);
        let problem = if needs_utf8 && !ext.smtputf8 {
            Some(Problem::NeedsSmtpUtf8)
        } else {
            match (limit, message.params.size) {
                (Some(limit), Some(size)) if size > limit => Some(Problem::TooBig { limit }),
                _ => None,
            }
        };
        if let Some(problem) = problem {
            let verdict = Verdict::NotSent(problem);
            let recipients = message.recipients.iter().map(|_| RecipientReport {
                rcpt: None,
                verdict: verdict.clone(),
            });
            self.push(Output::Report(Report {
                mail: None,
                recipients: recipients.collect(),
            }));
            self.push(Output::Ready);
            return Ok(());
        }

        let mail = mail_line(&message, ext, needs_utf8);
        let rcpt_lines: Vec<String> = message
            .recipients
            .iter()
            .map(|r| rcpt_line(r, ext))
            .collect();
        let pipelining = ext.pipelining;
        let bdat = self.config.chunking && ext.chunking && ext.pipelining;
        let mut tx = Transaction {
            mail: None,
            recipients: message
                .recipients
                .iter()
                .map(|_| RcptState::default())
                .collect(),
            rcpt_lines,
            next_rcpt: 0,
            data_sent: false,
            bdat,
            phase: Phase::Envelope,
            encoder: TextEncoder::new(!bdat),
        };

        self.command(&mail, Expect::Mail);
        // RFC 2920 section 3.1: MAIL, the RCPTs and DATA may go in one batch; DATA is last.
        if pipelining {
            for (i, line) in tx.rcpt_lines.iter().enumerate() {
                write_line(&mut self.send, line);
                self.expect.push_back(Expect::Rcpt(i));
            }
            tx.next_rcpt = tx.rcpt_lines.len();
            if !bdat {
                self.command("DATA", Expect::Data);
                tx.data_sent = true;
            }
        }
        self.state = State::Transaction(tx);
        self.rearm(now);
        Ok(())
    }

    /// Answers [`Output::MessageText`] with the next piece of the text, of any size. Ignored
    /// when the session does not want text (see [`Self::wants_message_text`]).
    pub fn handle_message_text(&mut self, now: Instant, text: &[u8]) {
        let State::Transaction(tx) = &mut self.state else {
            return;
        };
        if tx.phase != Phase::Text {
            return;
        }
        if tx.bdat {
            let mut chunk = Vec::with_capacity(text.len() + 2);
            tx.encoder.encode(text, &mut chunk);
            if !chunk.is_empty() {
                write_line(&mut self.send, &format!("BDAT {}", chunk.len()));
                self.send.extend_from_slice(&chunk);
                self.expect.push_back(Expect::Chunk);
            }
        } else {
            tx.encoder.encode(text, &mut self.send);
        }
        self.rearm(now);
    }

    /// Ends the text given with [`Self::handle_message_text`]: the final `.` or the last
    /// BDAT goes out. Ignored when the session does not want text.
    pub fn handle_message_end(&mut self, now: Instant) {
        let State::Transaction(tx) = &mut self.state else {
            return;
        };
        if tx.phase != Phase::Text {
            return;
        }
        let mut rest = Vec::new();
        tx.encoder.finish(&mut rest);
        if tx.bdat {
            write_line(&mut self.send, &format!("BDAT {} LAST", rest.len()));
            self.send.extend_from_slice(&rest);
        } else {
            self.send.extend_from_slice(&rest);
            self.send.extend_from_slice(b".\r\n");
        }
        tx.phase = Phase::Final;
        // RFC 2033 section 4.2: LMTP answers once per accepted RCPT, in RCPT order.
        match self.config.mode {
            Mode::Smtp => self.expect.push_back(Expect::Final(None)),
            Mode::Lmtp => {
                for (i, rcpt) in tx.recipients.iter().enumerate() {
                    if rcpt.is_accepted() {
                        self.expect.push_back(Expect::Final(Some(i)));
                    }
                }
            }
        }
        self.rearm(now);
    }

    /// Ends the session: when idle, with QUIT and its reply; otherwise at once, the message
    /// in progress failing temporarily for every recipient without a verdict.
    pub fn quit(&mut self, now: Instant) {
        match self.state {
            State::Closed | State::ExpectQuit => {}
            State::AwaitMessage => {
                self.command("QUIT", Expect::Quit);
                self.state = State::ExpectQuit;
            }
            _ => self.fail(SessionError::Aborted, false),
        }
        self.rearm(now);
    }

    /// The extensions the server announced in its latest EHLO/LHLO answer (none after HELO).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Whether TLS is active on the connection.
    pub fn is_tls_active(&self) -> bool {
        self.tls_active
    }

    /// Whether the session wants message text now.
    pub fn wants_message_text(&self) -> bool {
        matches!(&self.state, State::Transaction(tx) if tx.phase == Phase::Text)
    }

    /// Whether the session has closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Why the session failed, if it did.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }
}

// Replies.
impl Session {
    fn handle_reply(&mut self, reply: ServerReply) {
        let Some(expect) = self.expect.pop_front() else {
            return;
        };
        // RFC 5321 section 3.8: 421 means the server is closing, whatever it answers.
        if reply.code == 421 && expect != Expect::Quit {
            let stage = expect.stage();
            self.fail(SessionError::Refused { stage, reply }, false);
            return;
        }
        match expect {
            Expect::Greeting if reply.code == 220 => self.hello(),
            Expect::Greeting => {
                let stage = Stage::Greeting;
                self.fail(SessionError::Refused { stage, reply }, true);
            }
            Expect::Hello(hello) => self.handle_hello(hello, reply),
            Expect::StartTls => self.handle_starttls(reply),
            Expect::Rset if reply.is_positive() => self.ready(),
            Expect::Rset => self.fail(
                SessionError::Refused {
                    stage: Stage::Rset,
                    reply,
                },
                true,
            ),
            Expect::Quit => self.close(),
            Expect::Mail
            | Expect::Rcpt(_)
            | Expect::Data
            | Expect::Dot
            | Expect::Chunk
            | Expect::Final(_) => self.handle_transaction_reply(expect, reply),
        }
    }

    fn hello(&mut self) {
        let hello = match self.config.mode {
            Mode::Smtp => Hello::Ehlo,
            Mode::Lmtp => Hello::Lhlo,
        };
        self.send_hello(hello);
    }

    fn send_hello(&mut self, hello: Hello) {
        let verb = match hello {
            Hello::Ehlo => "EHLO",
            Hello::Helo => "HELO",
            Hello::Lhlo => "LHLO",
        };
        let line = format!("{verb} {}", self.config.hostname);
        self.command(&line, Expect::Hello(hello));
        self.state = State::ExpectHello;
    }

    fn handle_hello(&mut self, hello: Hello, reply: ServerReply) {
        if reply.is_positive() {
            self.extensions = match hello {
                Hello::Helo => Extensions::default(),
                Hello::Ehlo | Hello::Lhlo => Extensions::from_ehlo(&reply),
            };
            self.after_hello();
        } else if hello == Hello::Ehlo && reply.is_permanent() {
            // RFC 5321 section 4.1.4: a server that does not know EHLO still knows HELO.
            self.send_hello(Hello::Helo);
        } else {
            let stage = Stage::Hello;
            self.fail(SessionError::Refused { stage, reply }, true);
        }
    }

    fn after_hello(&mut self) {
        let wants_tls = self.config.tls != TlsPolicy::None && !self.tls_active;
        if wants_tls && self.extensions.starttls {
            self.command("STARTTLS", Expect::StartTls);
            self.state = State::ExpectStartTls;
        } else if wants_tls && self.config.tls == TlsPolicy::Encrypt {
            self.fail(SessionError::TlsUnavailable, true);
        } else {
            self.ready();
        }
    }

    fn handle_starttls(&mut self, reply: ServerReply) {
        if reply.code == 220 {
            // Nothing read so far may survive into the TLS session (RFC 3207 section 4.2,
            // CVE-2011-0411): the line buffer goes, and `receive` drops the rest.
            self.parser = ReplyParser::default();
            self.state = State::AwaitTlsHandshake;
            self.push(Output::StartTls);
        } else if self.config.tls == TlsPolicy::Encrypt {
            let stage = Stage::StartTls;
            self.fail(SessionError::Refused { stage, reply }, true);
        } else {
            self.ready();
        }
    }

    fn handle_transaction_reply(&mut self, expect: Expect, reply: ServerReply) {
        let State::Transaction(tx) = &mut self.state else {
            return;
        };
        match expect {
            Expect::Mail => {
                if !reply.is_positive() {
                    for rcpt in &mut tx.recipients {
                        rcpt.settle(Stage::Mail, &reply);
                    }
                }
                tx.mail = Some(reply);
            }
            Expect::Rcpt(i) => {
                let rcpt = &mut tx.recipients[i];
                if !reply.is_positive() {
                    rcpt.settle(Stage::Rcpt, &reply);
                }
                rcpt.rcpt = Some(reply);
            }
            Expect::Data if reply.code == 354 => {
                if tx.any_accepted() {
                    tx.phase = Phase::Text;
                    self.push(Output::MessageText);
                } else {
                    // RFC 2920 section 3.1: with every RCPT refused, a server that still says
                    // 354 gets an empty message, which it cannot deliver to anyone.
                    self.command(".", Expect::Dot);
                }
            }
            Expect::Data => tx.settle_accepted(Stage::Data, &reply),
            Expect::Dot => {}
            Expect::Chunk if !reply.is_positive() => {
                tx.settle_accepted(Stage::Text, &reply);
                tx.phase = Phase::Abandoned;
            }
            Expect::Final(None) => tx.settle_accepted(Stage::Text, &reply),
            // A chunk refused earlier may have settled this recipient already.
            Expect::Final(Some(i)) if tx.recipients[i].is_accepted() => {
                tx.recipients[i].settle(Stage::Text, &reply);
            }
            _ => {}
        }
        self.advance();
    }

    /// Moves the transaction on once none of its replies is due.
    fn advance(&mut self) {
        if self.expect.iter().any(|e| e.is_transaction()) {
            return;
        }
        let State::Transaction(tx) = &mut self.state else {
            return;
        };
        let mail_failed = tx.mail.as_ref().is_some_and(|r| !r.is_positive());
        let step = match tx.phase {
            Phase::Text => Step::Wait,
            Phase::Abandoned => Step::Finish { rset: true },
            Phase::Final => Step::Finish { rset: false },
            Phase::Envelope if mail_failed => Step::Finish { rset: false },
            Phase::Envelope if tx.next_rcpt < tx.rcpt_lines.len() => Step::SendRcpt(tx.next_rcpt),
            // The server holds a transaction (MAIL was accepted) that no text will end.
            Phase::Envelope if tx.data_sent || !tx.any_accepted() => Step::Finish { rset: true },
            Phase::Envelope if tx.bdat => Step::StartText,
            Phase::Envelope => Step::SendData,
        };
        match step {
            Step::Wait => {}
            Step::Finish { rset } => self.finish(rset),
            Step::SendRcpt(i) => {
                tx.next_rcpt += 1;
                write_line(&mut self.send, &tx.rcpt_lines[i]);
                self.expect.push_back(Expect::Rcpt(i));
            }
            Step::SendData => {
                tx.data_sent = true;
                self.command("DATA", Expect::Data);
            }
            Step::StartText => {
                tx.phase = Phase::Text;
                self.push(Output::MessageText);
            }
        }
    }

    /// Reports the message and makes the session ready for the next.
    fn finish(&mut self, rset: bool) {
        let State::Transaction(tx) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.push(Output::Report(tx.report(&SessionError::Aborted)));
        if rset {
            self.command("RSET", Expect::Rset);
            self.state = State::ExpectRset;
        } else {
            self.ready();
        }
    }

    fn ready(&mut self) {
        self.state = State::AwaitMessage;
        self.push(Output::Ready);
    }
}

// Output and bookkeeping.
impl Session {
    fn command(&mut self, line: &str, expect: Expect) {
        write_line(&mut self.send, line);
        self.expect.push_back(expect);
    }

    fn push(&mut self, output: Output) {
        if !self.send.is_empty() {
            self.outputs
                .push_back(Output::Send(std::mem::take(&mut self.send)));
        }
        self.outputs.push_back(output);
    }

    /// Ends the session with `error`; with `quit`, a QUIT goes out first, for a server that
    /// is still listening.
    fn fail(&mut self, error: SessionError, quit: bool) {
        if self.is_closed() {
            return;
        }
        if let State::Transaction(tx) = std::mem::replace(&mut self.state, State::Closed) {
            self.push(Output::Report(tx.report(&error)));
        }
        self.error = Some(error.clone());
        self.push(Output::Error(error));
        if quit {
            write_line(&mut self.send, "QUIT");
        }
        self.close();
    }

    fn close(&mut self) {
        self.expect.clear();
        self.push(Output::Close);
        self.state = State::Closed;
        self.deadline = None;
    }

    /// The stage of the reply due, or of what the session waits for.
    fn stage(&self) -> Stage {
        if let Some(expect) = self.expect.front() {
            return expect.stage();
        }
        match &self.state {
            State::ExpectGreeting => Stage::Greeting,
            State::ExpectHello => Stage::Hello,
            State::ExpectStartTls | State::AwaitTlsHandshake => Stage::StartTls,
            State::AwaitMessage | State::Closed => Stage::Idle,
            State::Transaction(tx) => match tx.phase {
                Phase::Envelope => Stage::Mail,
                Phase::Text | Phase::Abandoned | Phase::Final => Stage::Text,
            },
            State::ExpectRset => Stage::Rset,
            State::ExpectQuit => Stage::Quit,
        }
    }

    fn rearm(&mut self, now: Instant) {
        let timeouts = &self.config.timeouts;
        let wait = match &self.state {
            State::Closed | State::AwaitMessage => None,
            State::AwaitTlsHandshake => Some(timeouts.command),
            _ => match self.expect.front() {
                Some(expect) => Some(expect.timeout(timeouts)),
                None if self.wants_message_text() => Some(timeouts.data_block),
                None => None,
            },
        };
        self.deadline = wait.map(|wait| now + wait);
    }
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Greeting => Stage::Greeting,
            Expect::Hello(_) => Stage::Hello,
            Expect::StartTls => Stage::StartTls,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::Dot | Expect::Chunk | Expect::Final(_) => Stage::Text,
            Expect::Rset => Stage::Rset,
            Expect::Quit => Stage::Quit,
        }
    }

    fn timeout(self, timeouts: &Timeouts) -> Duration {
        match self {
            Expect::Greeting => timeouts.greeting,
            Expect::Hello(_) | Expect::StartTls | Expect::Rset | Expect::Quit => timeouts.command,
            Expect::Mail => timeouts.mail,
            Expect::Rcpt(_) => timeouts.rcpt,
            Expect::Data => timeouts.data_init,
            Expect::Chunk => timeouts.data_block,
            Expect::Dot | Expect::Final(_) => timeouts.data_end,
        }
    }

    fn is_transaction(self) -> bool {
        matches!(
            self,
            Expect::Mail
                | Expect::Rcpt(_)
                | Expect::Data
                | Expect::Dot
                | Expect::Chunk
                | Expect::Final(_)
        )
    }
}

impl Transaction {
    fn any_accepted(&self) -> bool {
        self.recipients.iter().any(RcptState::is_accepted)
    }

    /// Gives every accepted recipient without a verdict the verdict `reply` makes.
    fn settle_accepted(&mut self, stage: Stage, reply: &ServerReply) {
        for rcpt in &mut self.recipients {
            if rcpt.is_accepted() {
                rcpt.settle(stage, reply);
            }
        }
    }

    /// The report, with `error` for every recipient still without a verdict.
    fn report(self, error: &SessionError) -> Report {
        let recipients = self.recipients.into_iter().map(|rcpt| RecipientReport {
            verdict: rcpt
                .verdict
                .unwrap_or_else(|| Verdict::NotSent(Problem::Session(error.clone()))),
            rcpt: rcpt.rcpt,
        });
        Report {
            mail: self.mail,
            recipients: recipients.collect(),
        }
    }
}

impl RcptState {
    /// RCPT said yes and nothing has decided this recipient's fate yet.
    fn is_accepted(&self) -> bool {
        self.verdict.is_none() && self.rcpt.as_ref().is_some_and(ServerReply::is_positive)
    }

    fn settle(&mut self, stage: Stage, reply: &ServerReply) {
        if self.verdict.is_some() {
            return;
        }
        self.verdict = Some(if reply.is_positive() && stage == Stage::Text {
            Verdict::Sent(reply.clone())
        } else {
            Verdict::Refused {
                stage,
                reply: reply.clone(),
            }
        });
    }
}

fn write_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}
