//! Local mail handed to another LMTP server (`delivery.local = "lmtp:unix:/path"` or
//! `"lmtp:inet:host:port"`, SPEC.md section 5), such as Dovecot's `lmtp` service.
//!
//! The core client session ([`tern_core::client::Session`]) speaks the protocol; this module
//! drives it with blocking std I/O: one connection per message, LHLO, MAIL, one RCPT per
//! distinct final address (after aliases), the spooled text behind tern's own `Received:`
//! header, and one reply per accepted recipient. The LMTP server adds `Return-Path:`,
//! `Delivered-To:` and its own `Received:`, as it would for Postfix.
//!
//! How the results come back (SPEC.md section 5):
//! - On an LMTP listener each recipient gets its own answer: the server's 2xx is
//!   `Delivered`, a 4xx a temporary failure, a 5xx `UnknownUser` (5.1.1 at RCPT) or
//!   `Rejected`. An alias that fans out to several accounts is delivered only if every copy
//!   was; if some copies were taken and another failed temporarily, the client's retry
//!   delivers the taken ones a second time: a duplicate, never a loss.
//! - On an SMTP listener there is one answer: `250` when the server took the message for at
//!   least one recipient, `451 4.3.0` when it took it for none.
//!
//! The recipients the server refused while it took others (on an SMTP listener, where the
//! client is answered `250`) are logged `status=deferred` or `status=bounced` with the
//! server's reply and handed to the outbound queue before the 250
//! ([`Services::queue_refused`]): a 4xx is retried over LMTP, a 5xx returned to the sender
//! in a delivery status notification.
//!
//! Each message gets its own connection (no connection cache), without TLS, with the reply
//! timeouts of RFC 5321 section 4.5.3.2 that [`client::Timeouts`] has by default.
//!
//! The recipients are checked against tern's own accounts at RCPT time, as with Maildir
//! delivery, not against the LMTP server, so a recipient the server does not know is
//! accepted at RCPT and refused after the data.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tern_core::address::Mailbox;
use tern_core::client::{self, Output, Problem, Report, Session, Stage, Timeouts, Verdict};
use tern_core::recipient::Destination;
use tern_core::reply::Mode;
use tern_core::server::{Envelope, RcptOutcome};

use super::Services;
use crate::config::LmtpTarget;
use crate::headers::{self, ReceivedInfo};
use crate::maildir::Spool;

/// Size of the pieces the spooled text is read and sent in.
const TEXT_PIECE: usize = 64 * 1024;

/// One message to hand on, with what is needed to log and answer for it.
pub(super) struct Handoff<'a> {
    /// The queue id.
    pub id: &'a str,
    /// The envelope as received.
    pub envelope: &'a Envelope,
    /// Every (envelope recipient, destination) pair; all destinations are local.
    pub destinations: &'a [(String, Destination)],
    /// What the `Received:` header says.
    pub info: ReceivedInfo,
    /// The message as received, in wire octets: for `SIZE=`.
    pub size: u64,
    /// When the message began, for `delay=`.
    pub started: Instant,
    /// The listener's protocol: one answer (SMTP) or one per recipient (LMTP).
    pub mode: Mode,
}

/// Hands the spooled message to the LMTP server at `target` and returns one outcome per
/// envelope recipient, logging one line per final address as Postfix's `lmtp` does.
pub(super) fn deliver(
    services: &Services,
    target: &LmtpTarget,
    job: &Handoff<'_>,
    mut spool: Spool,
) -> Vec<RcptOutcome> {
    let finals = final_addresses(job.destinations);
    let recipients = finals
        .iter()
        .map(|(address, rcpt)| {
            let params = job
                .envelope
                .recipients
                .iter()
                .find(|r| r.address.to_string() == *rcpt)
                .map(|r| r.params.clone())
                .unwrap_or_default();
            Mailbox::parse(address).map(|address| client::Recipient { address, params })
        })
        .collect::<Result<Vec<_>, _>>();

    // The server's report, or why there is none: one reason for every recipient, with the
    // DSN code of a local problem (4.3.0) or of a server that could not be reached (4.4.1).
    let result = match recipients {
        Err(e) => Err((
            None,
            format!("cannot write a recipient address: {e}"),
            "4.3.0",
        )),
        Ok(recipients) => spool
            .reader()
            .map_err(|e| (None, e.to_string(), "4.3.0"))
            .and_then(|mut text| {
                let info = ReceivedInfo {
                    recipient: match job.envelope.recipients.as_slice() {
                        [only] => Some(only.address.to_string()),
                        _ => None,
                    },
                    ..job.info.clone()
                };
                let header = headers::received(&info, SystemTime::now());
                let message = client::Message {
                    sender: job.envelope.sender.clone(),
                    params: tern_core::command::MailParams {
                        size: Some(job.size + header.len() as u64 + header.lines().count() as u64),
                        ..job.envelope.params.clone()
                    },
                    recipients,
                };
                let config = client::Config::new(&services.config.hostname, Mode::Lmtp);
                send(
                    target,
                    Arc::new(config),
                    message,
                    header.as_bytes(),
                    &mut text,
                )
                .map_err(|failure| (failure.relay, failure.reason, "4.4.1"))
            }),
    };
    let results: Vec<Fate> = match &result {
        Ok((relay, report)) => report
            .recipients
            .iter()
            .map(|r| Fate::from_verdict(relay, &r.verdict))
            .collect(),
        Err((relay, reason, dsn)) => finals
            .iter()
            .map(|_| Fate {
                outcome: RcptOutcome::TempFailure,
                dsn: (*dsn).to_owned(),
                text: reason.clone(),
                relay: relay.clone(),
            })
            .collect(),
    };

    // SPEC.md section 5: on SMTP, 451 for the whole message when the server took it for
    // nobody, so everything is logged as deferred: the client keeps it and tries again.
    let mut any_sent = results.iter().any(|r| r.outcome == RcptOutcome::Delivered);
    // When it took it for some, the others go into the queue before the 250: retried, or
    // returned to the sender. If that fails, the client must send the message again.
    if job.mode == Mode::Smtp
        && any_sent
        && let Err(e) = queue_refused(services, job, &finals, &results, &mut spool)
    {
        services.log.write(
            "lmtp",
            &format!(
                "warning: {}: cannot queue the refused recipients: {e}",
                job.id
            ),
        );
        any_sent = false;
    }
    drop(spool);
    let none_taken = job.mode == Mode::Smtp && !any_sent;
    let delay = job.started.elapsed().as_secs_f64();
    for ((address, rcpt), result) in finals.iter().zip(&results) {
        let status = match result.outcome {
            RcptOutcome::Delivered => "sent",
            RcptOutcome::UnknownUser | RcptOutcome::Rejected if !none_taken => "bounced",
            _ => "deferred",
        };
        let orig_to = if rcpt.eq_ignore_ascii_case(address) {
            String::new()
        } else {
            format!(", orig_to=<{rcpt}>")
        };
        services.log.write(
            "lmtp",
            &format!(
                "{}: to=<{address}>{orig_to}, relay={}, delay={delay:.2}, dsn={}, \
                 status={status} ({})",
                job.id,
                result.relay.as_deref().unwrap_or("none"),
                result.dsn,
                result.text
            ),
        );
    }

    answers(job, &finals, &results, any_sent)
}

/// Hands the recipients the server refused to the queue ([`Services::queue_refused`]).
fn queue_refused(
    services: &Services,
    job: &Handoff<'_>,
    finals: &[(String, String)],
    results: &[Fate],
    spool: &mut Spool,
) -> io::Result<()> {
    let refused: Vec<super::Refused> = finals
        .iter()
        .zip(results)
        .filter(|(_, fate)| fate.outcome != RcptOutcome::Delivered)
        .map(|((address, rcpt), fate)| super::Refused {
            address: address.clone(),
            rcpt: rcpt.clone(),
            permanent: matches!(
                fate.outcome,
                RcptOutcome::UnknownUser | RcptOutcome::Rejected
            ),
            status: fate.dsn.clone(),
            reply: fate.text.clone(),
        })
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let received = headers::received(&job.info, SystemTime::now());
    let size = job.size + received.len() as u64 + received.lines().count() as u64;
    let id = services.queue_refused(job.envelope, &received, size, spool, &refused)?;
    services.log.write(
        "lmtp",
        &format!("{}: refused recipients queued as {id}", job.id),
    );
    Ok(())
}

/// Why the message could not be handed on, for every recipient alike.
struct Failure {
    /// The server as logged (`relay=`), if the connection was made.
    relay: Option<String>,
    reason: String,
}

/// One final address's result, as logged and answered.
struct Fate {
    outcome: RcptOutcome,
    dsn: String,
    text: String,
    relay: Option<String>,
}

impl Fate {
    fn from_verdict(relay: &str, verdict: &Verdict) -> Fate {
        let said = |reply: &client::ServerReply, stage: Stage| {
            format!("host {relay} said: {reply} (in reply to {stage} command)")
        };
        let dsn_of = |reply: &client::ServerReply| {
            reply.enhanced.map_or_else(
                || format!("{}.0.0", reply.code / 100),
                |code| code.to_string(),
            )
        };
        let (outcome, dsn, text) = match verdict {
            Verdict::Sent(reply) => (RcptOutcome::Delivered, dsn_of(reply), reply.to_string()),
            Verdict::Refused { stage, reply } => {
                let dsn = dsn_of(reply);
                let outcome = if !reply.is_permanent() {
                    if dsn == "4.3.1" {
                        RcptOutcome::DiskFull
                    } else {
                        RcptOutcome::TempFailure
                    }
                } else if dsn == "5.1.1" {
                    RcptOutcome::UnknownUser
                } else {
                    RcptOutcome::Rejected
                };
                (outcome, dsn, said(reply, *stage))
            }
            Verdict::NotSent(problem) => {
                let (outcome, dsn) = match problem {
                    Problem::NeedsSmtpUtf8 => (RcptOutcome::Rejected, "5.6.7"),
                    Problem::TooBig { .. } => (RcptOutcome::Rejected, "5.3.4"),
                    Problem::Session(_) => (RcptOutcome::TempFailure, "4.4.2"),
                };
                (outcome, dsn.to_owned(), format!("{relay}: {problem}"))
            }
        };
        Fate {
            outcome,
            dsn,
            text,
            relay: Some(relay.to_owned()),
        }
    }
}

/// One outcome per envelope recipient. On SMTP every recipient gets the message's one
/// answer; on LMTP each gets the worst of its copies' results.
fn answers(
    job: &Handoff<'_>,
    finals: &[(String, String)],
    results: &[Fate],
    any_sent: bool,
) -> Vec<RcptOutcome> {
    job.envelope
        .recipients
        .iter()
        .map(|recipient| {
            if job.mode == Mode::Smtp {
                return if any_sent {
                    RcptOutcome::Delivered
                } else {
                    RcptOutcome::TempFailure
                };
            }
            let rcpt = recipient.address.to_string();
            let outcomes = finals
                .iter()
                .zip(results)
                .filter(|((address, _), _)| {
                    job.destinations.iter().any(|(r, d)| {
                        *r == rcpt
                            && matches!(d, Destination::Local { address: a, .. }
                                if a.eq_ignore_ascii_case(address))
                    })
                })
                .map(|(_, result)| result.outcome);
            worst(outcomes)
        })
        .collect()
}

/// The distinct final addresses (compared without case), each with the envelope recipient
/// it first came from, in envelope order.
fn final_addresses(destinations: &[(String, Destination)]) -> Vec<(String, String)> {
    let mut finals: Vec<(String, String)> = Vec::new();
    for (rcpt, destination) in destinations {
        if let Destination::Local { address, .. } = destination
            && !finals.iter().any(|(a, _)| a.eq_ignore_ascii_case(address))
        {
            finals.push((address.clone(), rcpt.clone()));
        }
    }
    finals
}

/// The outcome of an envelope recipient from those of its copies: delivered only if every
/// copy was; a temporary failure wins over a permanent one, since a retry may still help.
fn worst(outcomes: impl Iterator<Item = RcptOutcome>) -> RcptOutcome {
    outcomes
        .max_by_key(|o| match o {
            RcptOutcome::Delivered => 0,
            RcptOutcome::UnknownUser | RcptOutcome::Rejected => 1,
            RcptOutcome::TempFailure => 2,
            RcptOutcome::DiskFull => 3,
        })
        .unwrap_or(RcptOutcome::TempFailure)
}

/// Sends one message over a new connection and returns the server's name for the log and
/// the [`Report`].
fn send(
    target: &LmtpTarget,
    config: Arc<client::Config>,
    message: client::Message,
    header: &[u8],
    text: &mut File,
) -> Result<(String, Report), Failure> {
    let timeouts = config.timeouts;
    let (mut stream, relay) = connect(target, &timeouts).map_err(|reason| Failure {
        relay: None,
        reason,
    })?;
    let failure = |reason: String| Failure {
        relay: Some(relay.clone()),
        reason,
    };
    let mut session = Session::new(config, Instant::now()).map_err(|e| failure(e.to_string()))?;

    let mut message = Some(message);
    let mut report = None;
    let mut error: Option<String> = None;
    let mut queued = VecDeque::new();
    let mut pending = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    loop {
        while let Some(output) = queued.pop_front().or_else(|| session.poll_output()) {
            let now = Instant::now();
            match output {
                Output::Send(bytes) => {
                    if let Err(e) = stream.write_all(&bytes) {
                        error.get_or_insert_with(|| format!("lost connection with {relay}: {e}"));
                        session.handle_eof(now);
                    }
                }
                // The session is configured without TLS; it never asks.
                Output::StartTls => session.handle_tls_failed(now),
                Output::Ready => match message.take() {
                    Some(message) => {
                        if let Err(e) = session.start_message(now, message) {
                            error.get_or_insert_with(|| format!("cannot send the message: {e}"));
                            session.quit(now);
                        }
                    }
                    None => session.quit(now),
                },
                Output::MessageText => {
                    if let Err(e) =
                        stream_text(&mut session, &mut stream, header, text, &mut queued)
                    {
                        error.get_or_insert(e);
                    }
                }
                Output::Report(r) => report = Some(r),
                Output::Error(e) => {
                    error.get_or_insert_with(|| format!("{relay}: {e}"));
                }
                Output::Close => {
                    stream.shutdown();
                    return match report {
                        Some(report) => Ok((relay, report)),
                        None => Err(failure(error.unwrap_or_else(|| "no reply".to_owned()))),
                    };
                }
            }
        }

        let now = Instant::now();
        let used = session.receive(now, &pending);
        pending.drain(..used);
        if used > 0 {
            continue;
        }
        // Every reply due has a deadline; without one the session waits for nothing that
        // this loop could give it, which would be a bug: give up rather than hang.
        let Some(deadline) = session.poll_timeout() else {
            error.get_or_insert_with(|| format!("the session with {relay} stalled"));
            session.quit(now);
            session.handle_eof(now);
            continue;
        };
        let wait = deadline.saturating_duration_since(now);
        if wait.is_zero() {
            session.handle_timeout(now);
            continue;
        }
        match stream.read_timeout(&mut buf, wait) {
            Ok(0) => session.handle_eof(Instant::now()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                session.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                error.get_or_insert_with(|| format!("lost connection with {relay}: {e}"));
                session.handle_eof(Instant::now());
            }
        }
    }
}

/// Feeds the header and the spooled text to the session and writes what it makes of them.
/// Outputs other than bytes to send are kept in `queued` for the main loop. A local read
/// error abandons the message (every recipient fails temporarily) and is returned.
fn stream_text(
    session: &mut Session,
    stream: &mut Stream,
    header: &[u8],
    text: &mut File,
    queued: &mut VecDeque<Output>,
) -> Result<(), String> {
    session.handle_message_text(Instant::now(), header);
    let mut piece = vec![0; TEXT_PIECE];
    loop {
        flush(session, stream, queued);
        if !session.wants_message_text() {
            return Ok(());
        }
        let n = match text.read(&mut piece) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                session.quit(Instant::now());
                return Err(format!("cannot read the spooled message: {e}"));
            }
        };
        if n == 0 {
            break;
        }
        session.handle_message_text(Instant::now(), &piece[..n]);
    }
    session.handle_message_end(Instant::now());
    flush(session, stream, queued);
    Ok(())
}

/// Writes every pending send; a failed write ends the session.
fn flush(session: &mut Session, stream: &mut Stream, queued: &mut VecDeque<Output>) {
    while let Some(output) = session.poll_output() {
        match output {
            Output::Send(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    session.handle_eof(Instant::now());
                }
            }
            other => queued.push_back(other),
        }
    }
}

/// A connection to the LMTP server.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Connects to `target`; returns the stream and the server's name for `relay=`: `lmtp[path]`
/// or `host[address]:port`.
fn connect(target: &LmtpTarget, timeouts: &Timeouts) -> Result<(Stream, String), String> {
    let (stream, relay) = match target {
        LmtpTarget::Unix(path) => {
            let relay = format!("lmtp[{}]", path.display());
            let stream =
                UnixStream::connect(path).map_err(|e| format!("connect to {relay}: {e}"))?;
            (Stream::Unix(stream), relay)
        }
        LmtpTarget::Inet { host, port } => {
            let name = format!("{host}[{host}]:{port}");
            let addrs = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("connect to {name}: {e}"))?;
            let mut last = format!("connect to {name}: no address");
            let mut connected = None;
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, timeouts.greeting) {
                    Ok(stream) => {
                        connected = Some((stream, format!("{host}[{}]:{port}", addr.ip())));
                        break;
                    }
                    Err(e) => last = format!("connect to {host}[{}]:{port}: {e}", addr.ip()),
                }
            }
            let (stream, relay) = connected.ok_or(last)?;
            let _ = stream.set_nodelay(true);
            (Stream::Tcp(stream), relay)
        }
    };
    // A server that stops reading must not hold this thread for ever.
    stream
        .set_write_timeout(timeouts.data_block)
        .map_err(|e| format!("{relay}: {e}"))?;
    Ok((stream, relay))
}

impl Stream {
    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)),
            Stream::Tcp(s) => s.set_write_timeout(Some(timeout)),
        }
    }

    fn read_timeout(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(wait))?;
                s.read(buf)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(wait))?;
                s.read(buf)
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(bytes),
            Stream::Tcp(s) => s.write_all(bytes),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}
