//! The Dovecot authentication protocol, version 1 (Dovecot's "Authentication Protocol"
//! document; what Postfix's `smtpd_sasl_type = dovecot` speaks), as two sans-IO machines:
//!
//! - [`Server`]: tern in Dovecot's place, answering Postfix (or any auth client) from tern's
//!   accounts with PLAIN, LOGIN and SCRAM-SHA-256;
//! - [`Client`]: tern asking a running Dovecot whether a password is right.
//!
//! The protocol is line based: LF-terminated lines of TAB-separated fields, each field
//! escaped with `\001` as the escape byte ([`escape`], [`unescape`]). Lines are bounded by
//! [`MAX_LINE`]; a longer one ends the connection, as in Dovecot.
//!
//! Both machines use the SMTP session's verbs: `receive(now, bytes)`, `poll_output()`,
//! `poll_timeout()`, `handle_timeout(now)`, and one `handle_*` method per question asked.
//!
//! ```no_run
//! # use std::sync::Arc; use std::time::Instant;
//! # use tern_core::dovecot::{Server, ServerConfig, ServerOutput};
//! # let mut read = |_: &mut Vec<u8>| -> usize { 0 };
//! let config = Arc::new(ServerConfig::new(std::process::id()));
//! let mut server = Server::new(config, 1, [0; 16]); // connection number, random cookie
//! let mut pending: Vec<u8> = Vec::new();
//! loop {
//!     // 1. Drain every output; answer each question with its `handle_*` method.
//!     while let Some(output) = server.poll_output() {
//!         match output {
//!             ServerOutput::Close => return,
//!             _ => { /* send bytes, check credentials, look up SCRAM keys ... */ }
//!         }
//!     }
//!     // 2. Feed input; while a question is open the rest waits for the answer.
//!     if pending.is_empty() && read(&mut pending) == 0 { return; }
//!     let used = server.receive(Instant::now(), &pending);
//!     pending.drain(..used);
//!     // 3. Wake at `poll_timeout()` (held failures) and call `handle_timeout(now)`.
//! }
//! ```

pub mod client;
pub mod server;

use std::fmt;

pub use self::client::{
    AuthRequest, AuthResult, Client, ClientConfig, ClientOutput, ConnectionError,
};
pub use self::server::{RequestInfo, Server, ServerConfig, ServerOutput};

/// The longest line either side accepts, without its LF: Dovecot's
/// `AUTH_CLIENT_MAX_LINE_LENGTH` ("GSSAPI can use quite large packets").
pub const MAX_LINE: usize = 16384;

/// The protocol version both machines speak: major 1 must match, minor 2 is Dovecot 2.3's.
const VERSION_MAJOR: &str = "1";
const VERSION_LINE: &str = "VERSION\t1\t2\n";

/// An authentication request's id on one connection; the client picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u32);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Escapes one field value: NUL, `\001`, TAB, CR and LF become `\001` followed by `0`, `1`,
/// `t`, `r` and `n` (Dovecot's `str_append_tabescaped`).
pub fn escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &byte in value {
        let code = match byte {
            0 => b'0',
            1 => b'1',
            b'\t' => b't',
            b'\r' => b'r',
            b'\n' => b'n',
            other => {
                out.push(other);
                continue;
            }
        };
        out.push(1);
        out.push(code);
    }
    out
}

/// Undoes [`escape`]. As in Dovecot, `\001` before any other byte stands for that byte, and a
/// `\001` at the very end is dropped.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&byte) = bytes.next() {
        if byte != 1 {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b'1') => out.push(1),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    out
}

/// [`escape`] for text.
fn escape_str(value: &str) -> String {
    // Escaping only replaces ASCII bytes by ASCII bytes, so UTF-8 stays UTF-8.
    String::from_utf8(escape(value.as_bytes())).unwrap_or_default()
}

/// Splits a line into unescaped fields.
fn fields(line: &[u8]) -> Vec<Vec<u8>> {
    line.split(|&b| b == b'\t').map(unescape).collect()
}

/// A field as text, if it is UTF-8.
fn text(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}

/// A decimal id as Dovecot's `str_to_uint` reads it: digits only, no sign, fits 32 bits.
fn parse_id(field: &[u8]) -> Option<RequestId> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text(field)?.parse().ok().map(RequestId)
}

/// What [`LineReader::read`] found.
#[derive(Debug, PartialEq, Eq)]
enum LineEvent {
    /// A whole line, without its LF (and without a CR before it).
    Line(Vec<u8>),
    /// The line grew past [`MAX_LINE`]: the connection must end.
    Overlong,
}

/// Collects input into lines; keeps only the partial line between calls.
#[derive(Default)]
struct LineReader {
    partial: Vec<u8>,
}

// A partial line may hold an AUTH payload: only its length is shown.
impl fmt::Debug for LineReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LineReader({} bytes)", self.partial.len())
    }
}

/// Bytes that may carry an AUTH payload, shown in `Debug` output only by their length.
#[derive(Clone, Default, PartialEq, Eq)]
struct Outgoing(Vec<u8>);

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl LineReader {
    /// Reads from `input` up to and including the next LF; returns how much it took.
    fn read(&mut self, input: &[u8]) -> (usize, Option<LineEvent>) {
        let (used, complete) = match memchr::memchr(b'\n', input) {
            Some(at) => (at + 1, true),
            None => (input.len(), false),
        };
        let piece = &input[..used - usize::from(complete)];
        if self.partial.len() + piece.len() > MAX_LINE {
            self.partial.clear();
            return (used, Some(LineEvent::Overlong));
        }
        self.partial.extend_from_slice(piece);
        if !complete {
            return (used, None);
        }
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (used, Some(LineEvent::Line(line)))
    }
}

/// Builds one outgoing line from already-escaped parts.
fn format_line(parts: &[&str]) -> Vec<u8> {
    let mut out = parts.join("\t").into_bytes();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn escaping_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let escaped = escape(&all);
        assert!(
            !escaped
                .iter()
                .any(|b| matches!(b, b'\t' | b'\n' | b'\r' | 0))
        );
        assert_eq!(unescape(&escaped), all);
        for byte in 0..=255u8 {
            for pair in [[byte, b'x'], [b'x', byte]] {
                assert_eq!(unescape(&escape(&pair)), pair);
            }
        }
        assert_eq!(
            escape(b"a\tb\nc\x01d\re\0"),
            b"a\x01tb\x01nc\x011d\x01re\x010"
        );
    }

    #[test]
    fn unescaping_is_lenient_like_dovecot() {
        assert_eq!(unescape(b"a\x01xb"), b"axb");
        assert_eq!(unescape(b"ab\x01"), b"ab");
        assert_eq!(unescape(b"\x01\x01"), b"\x01");
        assert_eq!(
            fields(b"AUTH\t1\tuser=a\x01tb"),
            [&b"AUTH"[..], b"1", b"user=a\tb"]
        );
    }

    #[test]
    fn ids_are_plain_decimal() {
        assert_eq!(parse_id(b"42"), Some(RequestId(42)));
        for bad in [&b""[..], b"+1", b"-1", b"1a", b"4294967296", b" 1"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lines_are_bounded() {
        let mut reader = LineReader::default();
        assert_eq!(reader.read(b"DONE"), (4, None));
        assert_eq!(
            reader.read(b"\r\nMORE"),
            (2, Some(LineEvent::Line(b"DONE".to_vec())))
        );
        let long = vec![b'a'; MAX_LINE];
        assert_eq!(reader.read(&long), (MAX_LINE, None));
        assert_eq!(reader.read(b"a\n"), (2, Some(LineEvent::Overlong)));
        let mut reader = LineReader::default();
        let mut exact = long.clone();
        exact.push(b'\n');
        assert_eq!(
            reader.read(&exact),
            (MAX_LINE + 1, Some(LineEvent::Line(long)))
        );
    }
}
