//! The SMTP/LMTP command parser: one complete line (without its CRLF) in, a typed command or a
//! typed error out. Pure functions; what a command means now is the session's business.
//!
//! RFCs: 5321 (commands, paths), 1870 (SIZE), 6152 (BODY=8BITMIME), 3461 (DSN parameters),
//! 6531 (SMTPUTF8), 3030 (BDAT), 4954 (AUTH), 2033 (LHLO).

use crate::address::{ForwardPath, ReversePath};

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain-or-literal`; the argument as written.
    Ehlo(String),
    /// `HELO domain`; the argument as written.
    Helo(String),
    /// `LHLO domain` (RFC 2033).
    Lhlo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail(ReversePath, MailParams),
    /// `RCPT TO:<path> [params]`.
    Rcpt(ForwardPath, RcptParams),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets of chunk data that follow the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`: answered 252 without looking anything up.
    Vrfy,
    /// `EXPN string`: answered 252 as VRFY.
    Expn,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The mechanism name, uppercased.
        mechanism: String,
        /// The initial response as sent (still base64; `=` means an empty one).
        initial: Option<String>,
    },
}

/// Parameters of `MAIL FROM`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152 / 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=FULL|HDRS` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), still xtext-encoded as sent.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954), still xtext-encoded as sent; accepted and not trusted.
    pub auth: Option<String>,
}

/// Parameters of `RCPT TO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext` (RFC 3461), as sent.
    pub orcpt: Option<String>,
}

/// The `BODY=` values tern accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME` (RFC 3030); only valid with BDAT.
    BinaryMime,
}

/// `RET=` of RFC 3461.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Return the full message in a DSN.
    Full,
    /// Return only the headers.
    Hdrs,
}

/// `NOTIFY=` of RFC 3461: `NEVER`, or any of the other three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    /// `NEVER` (exclusive with the others).
    pub never: bool,
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

/// Why a line is not a valid command. Each maps to one reply (SPEC.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb: 500 5.5.2.
    Unrecognized,
    /// Looks like HTTP (`GET`, `POST`, `CONNECT`, a `Name: value` header): 521 5.7.0, close.
    Http,
    /// A NUL or other control byte in the line: 500 5.5.2.
    ControlByte,
    /// Known verb, bad arguments or parameter syntax: 501 5.5.4.
    Syntax,
    /// Malformed sender address (including control bytes in it): 501 5.1.7.
    BadSender,
    /// Malformed recipient address (including control bytes in it): 501 5.1.3.
    BadRecipient,
    /// A well-formed MAIL/RCPT parameter that tern does not support: 555 5.5.4.
    UnsupportedParameter,
}

/// Parses one command line, given without its CRLF.
///
/// `line` is raw bytes: UTF-8 is accepted only inside addresses and parameter values where
/// RFC 6531 allows it; invalid UTF-8 there is a syntax error.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let _ = line;
    todo!("parser")
}
