//! Recording server sessions and replaying them through the same machine (SPEC.md section 8).
//!
//! A [`Recorder`] stands in for a [`Session`] (same methods) and notes every call: the time
//! of each, the bytes consumed, the runtime's answers, and every output polled. Its text
//! form, a *recording*, replays with [`replay`]: the same calls in the same order on a new
//! session built from the recorded configuration, each output compared with the recorded one.
//!
//! # The format
//!
//! ```text
//! tern-replay 1
//! hostname mx.example.net
//! mode smtp
//! tls may
//! auth optional
//! plaintext_auth false
//! mechanisms PLAIN LOGIN
//! restrictions permit_mynetworks permit_sasl_authenticated reject_unauth_destination
//! limits message_size=10240000 recipients=100 command_timeout=300.000000000 ...
//! domains example.net
//! trusted_networks 192.0.2.0/24
//! recipient_delimiter +
//! alias postmaster alice
//! peer 203.0.113.9 198.51.100.1
//! events
//! 0.000000000 send 220 mx.example.net ESMTP tern\r\n
//! 0.250000000 in AUTH PLAIN \{secret plain-done/13 20 0..20}\r\n
//! 0.250000000 authenticate PLAIN
//! 0.260000000 auth ok alice
//! ```
//!
//! Header fields are separated by single spaces; a space inside one is `\x20`. Each event
//! line is `SECONDS.NANOS KIND [ARGUMENTS]`, the time counted from the session's start.
//! Inputs: `in BYTES` (what `receive` consumed), `timeout`, `tls-established`,
//! `auth ok LOGIN|fail|tempfail`, `recipient` and `domain` with `found|not-found|tempfail`,
//! `delivery QUEUE-ID OUTCOME...` (`delivered`, `tempfail`, `disk-full`, `unknown-user`,
//! `rejected`), `shutdown`. Outputs, each one `poll_output` call: `send BYTES`, `starttls`,
//! `authenticate MECHANISM`, `check-recipient ADDRESS`, `check-domain DOMAIN`,
//! `message-start ENVELOPE` (its `Debug` form), `message-data BYTES`, `message-end`,
//! `message-abort`, `close`. Bytes are printable ASCII with `\\`, `\r`, `\n`, `\t` and
//! `\xHH` escapes.
//!
//! AUTH payloads (an AUTH command's initial response and every SASL response line) appear
//! as `\{secret CLASS LENGTH FROM..TO}`: octets FROM..TO of a LENGTH-octet stand-in that the
//! session treats as it treated the payload (see `redact`). So credentials never reach a
//! recording, and an `authenticate` output is compared by mechanism only.
//!
//! Shortcomings: the whole recording is held in memory until the session ends, message text
//! included. Only PLAIN and LOGIN payloads keep their path on replay; a payload of another
//! mechanism is recorded as `fill`, which replays alike only when the session does not read
//! it.

mod recorder;
mod redact;
#[cfg(test)]
mod tests;
mod text;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::recorder::Recorder;
use self::redact::Class;
use crate::reply::Mode;
use crate::server::{AuthVerdict, Config, DeliveryReport, Lookup, Output, Peer, Session};

/// A parsed recording, ready to replay.
#[derive(Debug, Clone)]
pub struct Recording {
    config: Config,
    peer: Peer,
    events: Vec<Timed>,
}

/// What a replay that matched went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Events replayed, inputs and outputs.
    pub events: usize,
}

/// The first event whose output differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The event's number, from 1.
    pub event: usize,
    /// Its line in the recording, from 1.
    pub line: usize,
    /// The recorded event, escaped as in the file.
    pub expected: String,
    /// What the session did instead.
    pub actual: String,
}

/// A recording that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Why [`replay`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The text is not a recording.
    Parse(ParseError),
    /// An output differed.
    Mismatch(Mismatch),
}

/// Parses `text` and replays it on a session started at `start` (any instant will do: only
/// the recorded offsets matter).
pub fn replay(text: &str, start: Instant) -> Result<Summary, ReplayError> {
    let recording = Recording::parse(text).map_err(ReplayError::Parse)?;
    recording.replay(start).map_err(ReplayError::Mismatch)
}

impl Recording {
    /// Reads a recording.
    pub fn parse(text: &str) -> Result<Recording, ParseError> {
        let mut lines = text.lines().enumerate().map(|(n, line)| (n + 1, line));
        let error = |line: usize, message: String| ParseError { line, message };
        match lines.next() {
            Some((_, text::MAGIC)) => {}
            _ => return Err(error(1, format!("not a recording: no `{}`", text::MAGIC))),
        }

        // Defaults for anything a recording leaves out, as the listener section would.
        let mut config = Config::new("localhost", Mode::Smtp);
        let mut peer = Peer::default();
        let mut seen_mode = false;
        let mut in_events = false;
        for (n, line) in lines.by_ref() {
            if line == "events" {
                in_events = true;
                break;
            }
            if line.starts_with("mode ") {
                // The mode decides the defaults of the rest, so it must come first.
                let mode = line.trim_start_matches("mode ");
                config = Config::new(&config.hostname, parse_mode(mode).map_err(|m| error(n, m))?);
                seen_mode = true;
                continue;
            }
            text::parse_header_line(line, &mut config, &mut peer).map_err(|m| error(n, m))?;
        }
        if !in_events || !seen_mode {
            return Err(error(
                1,
                "the header needs `mode` and ends with `events`".into(),
            ));
        }

        let mut events = Vec::new();
        for (n, line) in lines {
            if line.is_empty() {
                continue;
            }
            let timed = parse_event(line).map_err(|m| error(n, m))?;
            events.push(Timed { line: n, ..timed });
        }
        Ok(Recording {
            config,
            peer,
            events,
        })
    }

    /// How many events the recording holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Replays every event in order on a new session started at `start`, and stops at the
    /// first output that differs from the recorded one.
    pub fn replay(&self, start: Instant) -> Result<Summary, Mismatch> {
        let mut session = Session::new(Arc::new(self.config.clone()), self.peer, start);
        for (index, timed) in self.events.iter().enumerate() {
            let now = start + timed.at;
            let mismatch = |actual: String| Mismatch {
                event: index + 1,
                line: timed.line,
                expected: text::event_text(&timed.event),
                actual,
            };
            match &timed.event {
                Event::Output(expected) => {
                    let actual = session
                        .poll_output()
                        .map_or_else(|| "(no output)".to_owned(), |o| render_output(&o));
                    if &actual != expected {
                        return Err(mismatch(actual));
                    }
                }
                Event::Input(Input::Bytes(segments)) => {
                    let bytes = expand(segments);
                    let used = session.receive(now, &bytes);
                    if used != bytes.len() {
                        return Err(mismatch(format!(
                            "only {used} of {} octets consumed",
                            bytes.len()
                        )));
                    }
                }
                Event::Input(Input::Timeout) => session.handle_timeout(now),
                Event::Input(Input::TlsEstablished) => session.handle_tls_established(now),
                Event::Input(Input::Auth(verdict)) => session.handle_auth(now, verdict.clone()),
                Event::Input(Input::Recipient(lookup)) => session.handle_recipient(now, *lookup),
                Event::Input(Input::Domain(lookup)) => session.handle_domain(now, *lookup),
                Event::Input(Input::Delivery(report)) => {
                    session.handle_delivery(now, report.clone());
                }
                Event::Input(Input::Shutdown) => session.shutdown(now),
                Event::Input(Input::ScramLookup) => {
                    return Err(mismatch(
                        "(a SCRAM-SHA-256 exchange: its stored keys are not recorded, so the \
                         session cannot be replayed past this point)"
                            .to_owned(),
                    ));
                }
            }
        }
        Ok(Summary {
            events: self.events.len(),
        })
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} (line {}) differs\n  expected: {}\n  actual:   {}",
            self.event, self.line, self.expected, self.actual
        )
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Parse(e) => e.fmt(f),
            ReplayError::Mismatch(m) => m.fmt(f),
        }
    }
}

impl std::error::Error for ParseError {}
impl std::error::Error for Mismatch {}
impl std::error::Error for ReplayError {}

/// One recorded call, with its time since the session started.
#[derive(Debug, Clone)]
struct Timed {
    at: Duration,
    event: Event,
    /// The line in the recording it came from (0 while recording).
    line: usize,
}

#[derive(Debug, Clone)]
enum Event {
    Input(Input),
    /// An output as its event text (`send 250 ...`).
    Output(String),
}

#[derive(Debug, Clone)]
enum Input {
    Bytes(Vec<Segment>),
    Timeout,
    TlsEstablished,
    Auth(AuthVerdict),
    Recipient(Lookup),
    Domain(Lookup),
    Delivery(DeliveryReport),
    Shutdown,
    /// The answer to a SCRAM-SHA-256 key lookup. The keys are secrets and are not recorded,
    /// so a recording that holds one cannot be replayed past it.
    ScramLookup,
}

/// A stretch of input: bytes as they were, or a part of a redacted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Plain(Vec<u8>),
    Secret {
        class: Class,
        total: usize,
        from: usize,
        to: usize,
    },
}

/// An output as its event text. Credentials are left out: only the mechanism shows.
fn render_output(output: &Output) -> String {
    let with = |kind: &str, bytes: &[u8]| {
        let mut out = format!("{kind} ");
        text::escape(bytes, false, &mut out);
        out
    };
    match output {
        Output::Send(bytes) => with("send", bytes),
        Output::StartTls => "starttls".into(),
        Output::Authenticate(credentials) => format!("authenticate {}", credentials.mechanism),
        Output::CheckRecipient(address) => with("check-recipient", address.as_bytes()),
        Output::CheckDomain(domain) => with("check-domain", domain.as_bytes()),
        Output::MessageStart(envelope) => with("message-start", format!("{envelope:?}").as_bytes()),
        Output::MessageData(bytes) => with("message-data", bytes),
        Output::MessageEnd => "message-end".into(),
        Output::MessageAbort => "message-abort".into(),
        Output::Close => "close".into(),
        Output::LookupScram(_) => "lookup-scram".into(),
        Output::AuthFailed(mechanism) => format!("auth-failed {mechanism}"),
    }
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    match text {
        "smtp" => Ok(Mode::Smtp),
        "lmtp" => Ok(Mode::Lmtp),
        _ => Err(format!("unknown mode `{text}`")),
    }
}

fn parse_event(line: &str) -> Result<Timed, String> {
    let (at, rest) = line
        .split_once(' ')
        .ok_or("an event needs a time and a kind")?;
    let at = text::parse_duration(at)?;
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let event = match text::parse_input(kind, rest)? {
        Some(Input::Bytes(segments)) => {
            check_stand_ins(&segments)?;
            Event::Input(Input::Bytes(segments))
        }
        Some(input) => Event::Input(input),
        None if text::OUTPUT_KINDS.contains(&kind) => {
            // Written back in canonical form, so any valid escaping compares equal.
            let bytes = text::unescape_plain(rest)?;
            let mut canonical = kind.to_owned();
            if !rest.is_empty() {
                canonical.push(' ');
                text::escape(&bytes, false, &mut canonical);
            }
            Event::Output(canonical)
        }
        None => return Err(format!("unknown event `{kind}`")),
    };
    Ok(Timed { at, event, line: 0 })
}

fn check_stand_ins(segments: &[Segment]) -> Result<(), String> {
    for segment in segments {
        if let Segment::Secret { class, total, .. } = segment {
            redact::stand_in(*class, *total)?;
        }
    }
    Ok(())
}

/// The input bytes of a recorded `in`, stand-ins in place of secrets.
fn expand(segments: &[Segment]) -> Vec<u8> {
    let mut out = Vec::new();
    for segment in segments {
        match segment {
            Segment::Plain(bytes) => out.extend_from_slice(bytes),
            Segment::Secret {
                class,
                total,
                from,
                to,
            } => {
                // Checked when parsed.
                let stand_in = redact::stand_in(*class, *total).unwrap_or_default();
                out.extend_from_slice(stand_in.get(*from..*to).unwrap_or_default());
            }
        }
    }
    out
}
