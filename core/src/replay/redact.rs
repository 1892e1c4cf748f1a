//! Keeping AUTH payloads out of recordings while their replay still takes the same path.
//!
//! A payload is replaced by a class and its length. The class says what the session did with
//! it: not base64, or (decoded) which step of which mechanism it was and how that step ended.
//! On replay a stand-in of the same length and class is made from dummy credentials, so every
//! reply and every line boundary stays where it was; only the `Authenticate` output carries
//! other credentials, and replay compares it by mechanism alone.
//!
//! Mechanisms other than PLAIN and LOGIN are recorded as `fill`: their replay goes the same
//! way only when the session never looks at the payload.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::command::{self, Command};
use crate::sasl::{Mechanism, SaslServer, Step};

/// RFC 4954 section 4: longer lines are thrown away unread (the session's own limit).
const AUTH_LINE_MAX: usize = 12288 - 2;

/// What a redacted payload was, enough to make a stand-in that the session treats alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// Never interpreted (an overlong or discarded line, an unknown mechanism).
    Fill,
    /// An AUTH command whose arguments do not parse: more than one blank-separated word.
    Syntax,
    /// Not valid base64.
    BadBase64,
    /// Valid base64 of this many octets, which the mechanism took as this step.
    Sasl(SaslClass, usize),
}

/// How one decoded SASL message fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SaslClass {
    /// PLAIN credentials for the login itself.
    PlainDone,
    /// PLAIN credentials asking to act as another user.
    PlainForeign,
    /// A malformed PLAIN message.
    PlainBad,
    /// A LOGIN user name.
    LoginUser,
    /// A malformed LOGIN user name.
    LoginUserBad,
    /// A LOGIN password.
    LoginPassword,
    /// A malformed LOGIN password.
    LoginPasswordBad,
    /// A message after the exchange ended.
    Finished,
}

/// Where a SASL exchange stands, as far as redaction needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SaslState {
    Plain,
    LoginUser,
    LoginPassword,
    Finished,
    /// A mechanism this module does not model.
    Unknown,
}

/// One stretch of a line to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Redaction {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) class: Class,
}

/// What kind of line the session read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineKind {
    Command,
    SaslResponse,
    /// Read while closed or waiting for a TLS handshake: thrown away unread.
    Discarded,
}

/// The stretches of `line` (a whole line with its line ending, or what arrived of it) that
/// must not be recorded, and the SASL state after the session has read it. `sasl` is the
/// state before.
pub(super) fn redact_line(
    kind: LineKind,
    line: &[u8],
    sasl: Option<SaslState>,
) -> (Vec<Redaction>, Option<SaslState>) {
    let mut out = Vec::new();
    let brk = line.iter().position(|&b| b == b'\r' || b == b'\n');
    let content_end = brk.unwrap_or(line.len());
    let clean = match brk {
        None => false,
        Some(at) => &line[at..] == b"\r\n",
    };
    let unread = !clean || content_end > AUTH_LINE_MAX;
    // After a bare CR the session closes: the rest of the line is never read, but may hold
    // the rest of a secret.
    if let Some(at) = brk {
        if !clean && at + 1 < line.len() {
            out.push(fill(at + 1, line.len()));
        }
    }
    let content = &line[..content_end];
    let mut next = None;

    match kind {
        LineKind::Discarded => return (keep_line_ends(line, vec![fill(0, line.len())]), None),
        LineKind::SaslResponse => {
            if content.is_empty() || content == b"*" {
                next = sasl.map(|state| advance(state, &[]).1);
            } else if unread {
                out.push(fill(0, content_end));
            } else {
                let state = sasl.unwrap_or(SaslState::Unknown);
                let (class, after) = classify(state, content);
                out.push(Redaction {
                    start: 0,
                    end: content_end,
                    class,
                });
                next = Some(after);
            }
        }
        LineKind::Command => {
            let words = words(content);
            let is_auth = words
                .first()
                .is_some_and(|w| content[w.0..w.1].eq_ignore_ascii_case(b"AUTH"));
            if !is_auth {
                return (out, None);
            }
            let tail_start = words.get(2).map_or(content_end, |w| w.0);
            if unread {
                let start = words.get(1).map_or(content_end, |w| w.0);
                out.push(fill(start, content_end));
            } else {
                match command::parse(content) {
                    Ok(Command::Auth { mechanism, initial }) => {
                        let start = start_state(&mechanism);
                        match initial.as_deref() {
                            None => next = Some(start),
                            Some("=") => next = Some(advance(start, &[]).1),
                            Some(_) => {
                                let token = &content[tail_start..words[2].1];
                                let (class, after) = classify(start, token);
                                out.push(Redaction {
                                    start: tail_start,
                                    end: words[2].1,
                                    class,
                                });
                                next = Some(after);
                            }
                        }
                    }
                    _ if tail_start < content_end => out.push(Redaction {
                        start: tail_start,
                        end: content_end,
                        class: Class::Syntax,
                    }),
                    _ => {}
                }
            }
        }
    }
    out.sort_by_key(|r| r.start);
    out.retain(|r| r.start < r.end);
    (keep_line_ends(line, out), next)
}

/// Cuts every CR and LF out of the stretches to redact: they are no secret, and a replay needs
/// them where they were, since a bare one ends the session.
fn keep_line_ends(line: &[u8], redactions: Vec<Redaction>) -> Vec<Redaction> {
    let mut out = Vec::with_capacity(redactions.len());
    for redaction in redactions {
        let mut start = redaction.start;
        let stretch = &line[redaction.start..redaction.end];
        for at in stretch
            .iter()
            .enumerate()
            .filter_map(|(i, &b)| (b == b'\r' || b == b'\n').then_some(redaction.start + i))
        {
            if start < at {
                out.push(Redaction {
                    start,
                    end: at,
                    class: redaction.class,
                });
            }
            start = at + 1;
        }
        if start < redaction.end {
            out.push(Redaction {
                start,
                end: redaction.end,
                class: redaction.class,
            });
        }
    }
    out
}

/// A stand-in of `len` octets for a payload of class `class`.
pub(super) fn stand_in(class: Class, len: usize) -> Result<Vec<u8>, String> {
    let bytes = match class {
        Class::Fill => vec![b'A'; len],
        Class::Syntax if len >= 3 => {
            let mut bytes = vec![b' '; len];
            bytes[0] = b'A';
            bytes[len - 1] = b'A';
            bytes
        }
        Class::Syntax => vec![b'A'; len],
        Class::BadBase64 => vec![b'!'; len],
        Class::Sasl(class, decoded) => {
            let message = sasl_message(class, decoded)
                .ok_or_else(|| format!("{decoded} octets are too few for {class}"))?;
            BASE64.encode(message).into_bytes()
        }
    };
    if bytes.len() != len {
        return Err(format!(
            "{class} makes {} octets, not the {len} recorded",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn fill(start: usize, end: usize) -> Redaction {
    Redaction {
        start,
        end,
        class: Class::Fill,
    }
}

/// The blank-separated words of a command line, as `command::parse` splits them.
fn words(line: &[u8]) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, &b) in line.iter().enumerate() {
        match (b == b' ' || b == b'\t', start) {
            (true, Some(s)) => {
                words.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, line.len()));
    }
    words
}

fn start_state(mechanism: &str) -> SaslState {
    match mechanism.parse::<Mechanism>() {
        Ok(Mechanism::Plain) => SaslState::Plain,
        Ok(Mechanism::Login) => SaslState::LoginUser,
        _ => SaslState::Unknown,
    }
}

/// The class of an encoded response in `state`, and the state after it.
fn classify(state: SaslState, encoded: &[u8]) -> (Class, SaslState) {
    let Ok(decoded) = BASE64.decode(encoded) else {
        return (Class::BadBase64, state);
    };
    if state == SaslState::Unknown {
        return (Class::Fill, state);
    }
    let (class, after) = advance(state, &decoded);
    (Class::Sasl(class, decoded.len()), after)
}

/// Runs the real mechanism on `decoded` to see how the step ends.
fn advance(state: SaslState, decoded: &[u8]) -> (SaslClass, SaslState) {
    let mut server = match state {
        SaslState::Plain => SaslServer::start(Mechanism::Plain, None).0,
        SaslState::LoginUser => SaslServer::start(Mechanism::Login, None).0,
        SaslState::LoginPassword => SaslServer::start(Mechanism::Login, Some(b"u")).0,
        SaslState::Finished | SaslState::Unknown => {
            return (SaslClass::Finished, state);
        }
    };
    let step = server.step(decoded);
    let class = match (state, step) {
        (SaslState::Plain, Step::Done(c)) if !c.authzid.is_empty() && c.authzid != c.login => {
            SaslClass::PlainForeign
        }
        (SaslState::Plain, Step::Done(_)) => SaslClass::PlainDone,
        (SaslState::Plain, _) => SaslClass::PlainBad,
        (SaslState::LoginUser, Step::Challenge(_)) => {
            return (SaslClass::LoginUser, SaslState::LoginPassword);
        }
        (SaslState::LoginUser, _) => SaslClass::LoginUserBad,
        (_, Step::Done(_)) => SaslClass::LoginPassword,
        _ => SaslClass::LoginPasswordBad,
    };
    (class, SaslState::Finished)
}

/// A dummy decoded message of `len` octets that `class` describes.
fn sasl_message(class: SaslClass, len: usize) -> Option<Vec<u8>> {
    let padded = |prefix: &[u8], fill: u8| {
        let rest = len.checked_sub(prefix.len())?;
        let mut message = prefix.to_vec();
        message.resize(prefix.len() + rest, fill);
        Some(message)
    };
    match class {
        SaslClass::PlainDone => padded(b"\0u\0", b'p'),
        SaslClass::PlainForeign => padded(b"a\0u\0", b'p'),
        SaslClass::PlainBad | SaslClass::Finished => padded(b"", b'x'),
        SaslClass::LoginUser => padded(b"u", b'u'),
        SaslClass::LoginPassword => padded(b"", b'p'),
        SaslClass::LoginUserBad | SaslClass::LoginPasswordBad => padded(b"", 0xff),
    }
}

impl SaslClass {
    const ALL: [(SaslClass, &'static str); 8] = [
        (SaslClass::PlainDone, "plain-done"),
        (SaslClass::PlainForeign, "plain-foreign"),
        (SaslClass::PlainBad, "plain-bad"),
        (SaslClass::LoginUser, "login-user"),
        (SaslClass::LoginUserBad, "login-user-bad"),
        (SaslClass::LoginPassword, "login-password"),
        (SaslClass::LoginPasswordBad, "login-password-bad"),
        (SaslClass::Finished, "finished"),
    ];

    fn name(self) -> &'static str {
        SaslClass::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("finished", |(_, name)| name)
    }
}

impl fmt::Display for SaslClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Fill => f.write_str("fill"),
            Class::Syntax => f.write_str("syntax"),
            Class::BadBase64 => f.write_str("bad-base64"),
            Class::Sasl(class, len) => write!(f, "{class}/{len}"),
        }
    }
}

impl FromStr for Class {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fill" => return Ok(Class::Fill),
            "syntax" => return Ok(Class::Syntax),
            "bad-base64" => return Ok(Class::BadBase64),
            _ => {}
        }
        let unknown = || format!("unknown secret class `{s}`");
        let (name, len) = s.split_once('/').ok_or_else(unknown)?;
        let class = SaslClass::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(c, _)| *c)
            .ok_or_else(unknown)?;
        let len = len.parse().map_err(|_| unknown())?;
        Ok(Class::Sasl(class, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stand-in decodes to a message that the mechanism takes as the same step.
    #[test]
    fn stand_ins_classify_as_their_class() {
        let states = [
            SaslState::Plain,
            SaslState::LoginUser,
            SaslState::LoginPassword,
            SaslState::Finished,
        ];
        let messages: [&[u8]; 7] = [
            b"\0alice\0secret",
            b"bob\0alice\0secret",
            b"no nul",
            b"",
            b"alice",
            b"\xff\xfe",
            b"\0\0",
        ];
        for state in states {
            for message in messages {
                let encoded = BASE64.encode(message);
                let (class, after) = classify(state, encoded.as_bytes());
                let stand_in = stand_in(class, encoded.len()).unwrap();
                assert_eq!(
                    classify(state, &stand_in),
                    (class, after),
                    "{state:?} {message:?}"
                );
                assert_eq!(class.to_string().parse::<Class>(), Ok(class));
            }
        }
    }

    #[test]
    fn auth_lines_keep_the_mechanism_and_hide_the_response() {
        let line = b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n";
        let (redactions, next) = redact_line(LineKind::Command, line, None);
        assert_eq!(
            redactions,
            vec![Redaction {
                start: 11,
                end: 31,
                class: Class::Sasl(SaslClass::PlainDone, 13)
            }]
        );
        assert_eq!(next, Some(SaslState::Finished));

        let (redactions, next) = redact_line(LineKind::Command, b"auth login\r\n", None);
        assert!(redactions.is_empty());
        assert_eq!(next, Some(SaslState::LoginUser));

        let (redactions, _) = redact_line(LineKind::Command, b"AUTH PLAIN a b\r\n", None);
        assert_eq!(redactions[0].class, Class::Syntax);
        assert_eq!(stand_in(Class::Syntax, 3).unwrap(), b"A A");
    }

    #[test]
    fn the_rest_of_a_line_after_a_bare_cr_is_hidden_too() {
        let line = b"AUTH PLAIN abc\rdef\r\n";
        let (redactions, _) = redact_line(LineKind::Command, line, None);
        // `def` is hidden; the line ends stay, since a replay needs them where they were.
        let last = redactions.last().unwrap();
        assert_eq!((last.start, last.end), (15, 18));
        for r in &redactions {
            assert!(
                line[r.start..r.end]
                    .iter()
                    .all(|&b| b != b'\r' && b != b'\n')
            );
        }
    }
}
