//! A session that notes what happens to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::redact::{self, LineKind, SaslState};
use super::{Event, Input, Segment, Timed, render_output, text};
use crate::data::DataDecoder;
use crate::sasl::{ScramLookup, ScramNonce};
use crate::server::{AuthVerdict, Config, DeliveryReport, Lookup, Output, Peer, Reading, Session};

/// A [`Session`] with the same methods that can note every call for a recording.
///
/// While recording it feeds the session one line at a time (and message text up to its end),
/// so it can tell which bytes are AUTH payloads; a session's output does not depend on how
/// its input is split, so nothing else changes.
#[derive(Debug)]
pub struct Recorder {
    session: Session,
    log: Option<Box<Log>>,
}

#[derive(Debug)]
struct Log {
    config: Arc<Config>,
    peer: Peer,
    start: Instant,
    last: Duration,
    events: Vec<Timed>,
    /// The line being read, as indices of its `in` events (each one plain segment).
    line: Option<(LineKind, Vec<usize>)>,
    sasl: Option<SaslState>,
    /// A copy of the session's DATA decoder, to find where message text ends.
    data: Option<DataDecoder>,
    scratch: Vec<u8>,
}

impl Recorder {
    /// A new session that is recorded; the greeting is queued at once.
    pub fn new(config: Arc<Config>, peer: Peer, now: Instant) -> Self {
        let session = Session::new(Arc::clone(&config), peer, now);
        let log = Log {
            config,
            peer,
            start: now,
            last: Duration::ZERO,
            events: Vec::new(),
            line: None,
            sasl: None,
            data: None,
            scratch: Vec::new(),
        };
        Recorder {
            session,
            log: Some(Box::new(log)),
        }
    }

    /// A new session that is not recorded: every call goes straight through.
    pub fn unrecorded(config: Arc<Config>, peer: Peer, now: Instant) -> Self {
        Recorder {
            session: Session::new(config, peer, now),
            log: None,
        }
    }

    /// Whether this session is recorded.
    pub fn is_recording(&self) -> bool {
        self.log.is_some()
    }

    /// The recording so far, in its text form; `None` when not recording. A line still
    /// being read is redacted as unread.
    pub fn recording(&self) -> Option<String> {
        let log = self.log.as_deref()?;
        let mut events = log.events.clone();
        if let Some((kind, indices)) = &log.line {
            let kind = match kind {
                LineKind::Command => LineKind::Command,
                _ => LineKind::Discarded,
            };
            redact_events(&mut events, kind, indices, None);
        }
        let mut out = text::header(&log.config, &log.peer);
        for timed in &events {
            out.push_str(&text::duration(timed.at));
            out.push(' ');
            out.push_str(&text::event_text(&timed.event));
            out.push('\n');
        }
        Some(out)
    }

    /// See [`Session::receive`].
    pub fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        let Some(log) = self.log.as_deref_mut() else {
            return self.session.receive(now, input);
        };
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let reading = self.session.reading();
            // Bytes thrown away before a TLS handshake end there: what follows is read.
            if matches!(log.line, Some((LineKind::Discarded, _))) && reading != Reading::Discarding
            {
                log.end_line(&self.session);
            }
            let take = log.piece(reading, rest);
            let piece = &rest[..take];
            if log.line.is_none() {
                let kind = match reading {
                    Reading::Command => Some(LineKind::Command),
                    Reading::SaslResponse => Some(LineKind::SaslResponse),
                    Reading::Discarding => Some(LineKind::Discarded),
                    _ => None,
                };
                log.line = kind.map(|kind| (kind, Vec::new()));
            }

            let used = self.session.receive(now, piece);
            if used > 0 {
                let at = log.at(now);
                log.events.push(Timed {
                    at,
                    event: Event::Input(Input::Bytes(vec![Segment::Plain(piece[..used].to_vec())])),
                    line: 0,
                });
                if let Some((_, indices)) = &mut log.line {
                    indices.push(log.events.len() - 1);
                }
                if piece[used - 1] == b'\n' {
                    log.end_line(&self.session);
                }
            }
            pos += used;
            if used < take {
                break;
            }
        }
        pos
    }

    /// See [`Session::handle_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.note(now, Input::Timeout);
        self.session.handle_timeout(now);
    }

    /// See [`Session::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// See [`Session::poll_output`].
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.session.poll_output()?;
        if let Some(log) = self.log.as_deref_mut() {
            log.events.push(Timed {
                at: log.last,
                event: Event::Output(render_output(&output)),
                line: 0,
            });
        }
        Some(output)
    }

    /// See [`Session::handle_tls_established`].
    pub fn handle_tls_established(&mut self, now: Instant) {
        self.note(now, Input::TlsEstablished);
        self.session.handle_tls_established(now);
    }

    /// See [`Session::handle_auth`].
    pub fn handle_auth(&mut self, now: Instant, verdict: AuthVerdict) {
        self.note(now, Input::Auth(verdict.clone()));
        self.session.handle_auth(now, verdict);
    }

    /// See [`Session::handle_recipient`].
    pub fn handle_recipient(&mut self, now: Instant, lookup: Lookup) {
        self.note(now, Input::Recipient(lookup));
        self.session.handle_recipient(now, lookup);
    }

    /// See [`Session::handle_domain`].
    pub fn handle_domain(&mut self, now: Instant, lookup: Lookup) {
        self.note(now, Input::Domain(lookup));
        self.session.handle_domain(now, lookup);
    }

    /// See [`Session::handle_delivery`].
    pub fn handle_delivery(&mut self, now: Instant, report: DeliveryReport) {
        self.note(now, Input::Delivery(report.clone()));
        self.session.handle_delivery(now, report);
    }

    /// See [`Session::handle_scram_lookup`]. Only the fact of the answer is recorded, never
    /// the keys.
    pub fn handle_scram_lookup(&mut self, now: Instant, lookup: ScramLookup, nonce: &ScramNonce) {
        self.note(now, Input::ScramLookup);
        self.session.handle_scram_lookup(now, lookup, nonce);
    }

    /// See [`Session::shutdown`].
    pub fn shutdown(&mut self, now: Instant) {
        self.note(now, Input::Shutdown);
        self.session.shutdown(now);
    }

    /// See [`Session::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// See [`Session::is_tls_active`].
    pub fn is_tls_active(&self) -> bool {
        self.session.is_tls_active()
    }

    /// See [`Session::helo`].
    pub fn helo(&self) -> Option<&str> {
        self.session.helo()
    }

    /// See [`Session::command_summary`].
    pub fn command_summary(&self) -> String {
        self.session.command_summary()
    }

    /// The session itself.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn note(&mut self, now: Instant, input: Input) {
        if let Some(log) = self.log.as_deref_mut() {
            let at = log.at(now);
            log.events.push(Timed {
                at,
                event: Event::Input(input),
                line: 0,
            });
        }
    }
}

impl Log {
    fn at(&mut self, now: Instant) -> Duration {
        self.last = now.saturating_duration_since(self.start);
        self.last
    }

    /// How much of `rest` to feed next: a line, the rest of a chunk, or message text up to
    /// its end, so that no line begins inside a piece.
    fn piece(&mut self, reading: Reading, rest: &[u8]) -> usize {
        if reading != Reading::DataText {
            self.data = None;
        }
        let to_line_end = || memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
        if self.line.is_some() {
            return to_line_end();
        }
        match reading {
            Reading::Command | Reading::SaslResponse | Reading::Discarding => to_line_end(),
            Reading::Chunk(remaining) => {
                let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
                rest.len().min(remaining).max(1)
            }
            Reading::DataText => {
                let decoder = self.data.get_or_insert_with(DataDecoder::new);
                self.scratch.clear();
                let (used, _) = decoder.decode(rest, &mut self.scratch);
                used.max(1).min(rest.len())
            }
            Reading::Waiting => rest.len(),
        }
    }

    /// A line has been read: hides its secrets and follows the SASL exchange.
    fn end_line(&mut self, session: &Session) {
        let Some((kind, indices)) = self.line.take() else {
            return;
        };
        let next = redact_events(&mut self.events, kind, &indices, self.sasl);
        self.sasl = match session.reading() {
            Reading::SaslResponse => next,
            _ => None,
        };
    }
}

/// Replaces the secrets of the line held by `indices` (plain `in` events) with markers;
/// returns the SASL state after the line.
fn redact_events(
    events: &mut [Timed],
    kind: LineKind,
    indices: &[usize],
    sasl: Option<SaslState>,
) -> Option<SaslState> {
    let mut line = Vec::new();
    let mut parts = Vec::new();
    for &i in indices {
        if let Event::Input(Input::Bytes(segments)) = &events[i].event {
            for segment in segments {
                if let Segment::Plain(bytes) = segment {
                    parts.push((i, line.len(), bytes.len()));
                    line.extend_from_slice(bytes);
                }
            }
        }
    }
    let (redactions, next) = redact::redact_line(kind, &line, sasl);
    if redactions.is_empty() {
        return next;
    }

    for (i, offset, len) in parts {
        let mut segments = Vec::new();
        let mut at = offset;
        let end = offset + len;
        for r in &redactions {
            if r.end <= at || r.start >= end {
                continue;
            }
            if r.start > at {
                segments.push(Segment::Plain(line[at..r.start].to_vec()));
                at = r.start;
            }
            let to = r.end.min(end);
            segments.push(Segment::Secret {
                class: r.class,
                total: r.end - r.start,
                from: at - r.start,
                to: to - r.start,
            });
            at = to;
        }
        if at < end {
            segments.push(Segment::Plain(line[at..end].to_vec()));
        }
        events[i].event = Event::Input(Input::Bytes(segments));
    }
    next
}
