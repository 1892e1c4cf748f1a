//! The SMTP/LMTP command parser: one complete line (without its CRLF) in, a typed command or a
//! typed error out. Pure functions; what a command means now is the session's business.
//!
//! RFCs: 5321 (commands, paths), 1870 (SIZE), 6152 (BODY=8BITMIME), 3461 (DSN parameters),
//! 6531 (SMTPUTF8), 3030 (BDAT), 4954 (AUTH), 2033 (LHLO).

use crate::address::{self, ForwardPath, Path, ReversePath};

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
/// RFC 6531 allows it; invalid UTF-8 there is a syntax error. Spaces and tabs between words
/// may be repeated, and may lead or trail the line, as Postfix allows.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = trim_blanks(line);
    let (verb, rest) = split_word(line);

    // Checked before control bytes so that a web client is told to go away at once.
    if looks_like_http(verb) {
        return Err(CommandError::Http);
    }

    let verb = Verb::from_word(verb);
    if let Some(at) = line.iter().position(|&b| is_control(b)) {
        let in_path = match verb {
            Some(Verb::Mail) => path_span(rest, b"FROM:"),
            Some(Verb::Rcpt) => path_span(rest, b"TO:"),
            _ => None,
        };
        let at = at.checked_sub(line.len() - rest.len());
        let inside =
            matches!((in_path, at), (Some((start, end)), Some(at)) if start <= at && at < end);
        return match verb {
            Some(Verb::Mail) if inside => Err(CommandError::BadSender),
            Some(Verb::Rcpt) if inside => Err(CommandError::BadRecipient),
            _ => Err(CommandError::ControlByte),
        };
    }

    let verb = verb.ok_or(CommandError::Unrecognized)?;
    match verb {
        Verb::Ehlo => hello(rest).map(Command::Ehlo),
        Verb::Helo => hello(rest).map(Command::Helo),
        Verb::Lhlo => hello(rest).map(Command::Lhlo),
        Verb::Mail => mail(rest),
        Verb::Rcpt => rcpt(rest),
        Verb::Data => no_argument(rest, Command::Data),
        Verb::Rset => no_argument(rest, Command::Rset),
        Verb::Quit => no_argument(rest, Command::Quit),
        Verb::StartTls => no_argument(rest, Command::StartTls),
        Verb::Noop => Ok(Command::Noop),
        Verb::Help => Ok(Command::Help),
        Verb::Vrfy => some_argument(rest, Command::Vrfy),
        Verb::Expn => some_argument(rest, Command::Expn),
        Verb::Bdat => bdat(rest),
        Verb::Auth => auth(rest),
    }
}

/// RFC 3461 section 4.4: the longest ENVID, counted as sent (xtext-encoded).
const MAX_ENVID: usize = 100;
/// RFC 3461 section 4.2: the longest ORCPT value.
const MAX_ORCPT: usize = 500;
/// RFC 4954 section 4 `sasl-mech`: up to 20 characters.
const MAX_MECHANISM: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Ehlo,
    Helo,
    Lhlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
}

impl Verb {
    fn from_word(word: &[u8]) -> Option<Verb> {
        const VERBS: [(&[u8], Verb); 15] = [
            (b"EHLO", Verb::Ehlo),
            (b"HELO", Verb::Helo),
            (b"LHLO", Verb::Lhlo),
            (b"MAIL", Verb::Mail),
            (b"RCPT", Verb::Rcpt),
            (b"DATA", Verb::Data),
            (b"BDAT", Verb::Bdat),
            (b"RSET", Verb::Rset),
            (b"NOOP", Verb::Noop),
            (b"QUIT", Verb::Quit),
            (b"VRFY", Verb::Vrfy),
            (b"EXPN", Verb::Expn),
            (b"HELP", Verb::Help),
            (b"STARTTLS", Verb::StartTls),
            (b"AUTH", Verb::Auth),
        ];
        VERBS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|&(_, verb)| verb)
    }
}

/// RFC 5321 section 4.1.1.1: EHLO/HELO (and RFC 2033 LHLO) take one domain or address
/// literal. It is checked only for shape, as clients commonly send unqualified names.
fn hello(rest: &[u8]) -> Result<String, CommandError> {
    let (name, extra) = split_word(rest);
    if name.is_empty() || !extra.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(CommandError::Syntax);
    }
    Ok(ascii_string(name))
}

fn no_argument(rest: &[u8], command: Command) -> Result<Command, CommandError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax)
    }
}

fn some_argument(rest: &[u8], command: Command) -> Result<Command, CommandError> {
    if rest.is_empty() {
        Err(CommandError::Syntax)
    } else {
        Ok(command)
    }
}

/// `MAIL FROM:<reverse-path> [SP Mail-parameters]` (RFC 5321 section 4.1.1.2).
fn mail(rest: &[u8]) -> Result<Command, CommandError> {
    let bad = CommandError::BadSender;
    let (raw_path, params) = split_path(rest, b"FROM:", bad)?;
    let path = match address::parse_path(raw_path).map_err(|_| bad)? {
        Path::Null => ReversePath::Null,
        Path::Mailbox(mailbox) => ReversePath::Mailbox(mailbox),
        Path::Postmaster => return Err(bad),
    };
    Ok(Command::Mail(path, mail_params(params)?))
}

/// `RCPT TO:<forward-path> [SP Rcpt-parameters]` (RFC 5321 section 4.1.1.3).
fn rcpt(rest: &[u8]) -> Result<Command, CommandError> {
    let bad = CommandError::BadRecipient;
    let (raw_path, params) = split_path(rest, b"TO:", bad)?;
    let path = match address::parse_path(raw_path).map_err(|_| bad)? {
        Path::Postmaster => ForwardPath::Postmaster,
        Path::Mailbox(mailbox) => ForwardPath::Mailbox(mailbox),
        Path::Null => return Err(bad),
    };
    Ok(Command::Rcpt(path, rcpt_params(params)?))
}

/// RFC 3030 section 2: `BDAT chunk-size [SP end-marker]`.
fn bdat(rest: &[u8]) -> Result<Command, CommandError> {
    let (size, rest) = split_word(rest);
    let (marker, extra) = split_word(rest);
    if !extra.is_empty() {
        return Err(CommandError::Syntax);
    }
    let size = decimal(size).ok_or(CommandError::Syntax)?;
    let last = match marker {
        b"" => false,
        _ if marker.eq_ignore_ascii_case(b"LAST") => true,
        _ => return Err(CommandError::Syntax),
    };
    Ok(Command::Bdat { size, last })
}

/// RFC 4954 section 4: `AUTH mechanism [initial-response]`.
fn auth(rest: &[u8]) -> Result<Command, CommandError> {
    let (mechanism, rest) = split_word(rest);
    let (initial, extra) = split_word(rest);
    if !extra.is_empty() {
        return Err(CommandError::Syntax);
    }

    let mechanism_ok = (1..=MAX_MECHANISM).contains(&mechanism.len())
        && mechanism
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !mechanism_ok {
        return Err(CommandError::Syntax);
    }
    let mechanism = ascii_string(mechanism).to_ascii_uppercase();

    // Bad base64 has its own reply (501 5.5.2, SPEC.md section 4), given where it is
    // decoded; here the response is only one token.
    let initial = match initial {
        b"" => None,
        _ => Some(ascii_string(initial)),
    };
    Ok(Command::Auth { mechanism, initial })
}

fn mail_params(text: &[u8]) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    for_each_param(text, |key, value| {
        if key.eq_ignore_ascii_case(b"SIZE") {
            let size = value.and_then(decimal).ok_or(CommandError::Syntax)?;
            set_once(&mut params.size, size)
        } else if key.eq_ignore_ascii_case(b"BODY") {
            let body = match value {
                Some(v) if v.eq_ignore_ascii_case(b"7BIT") => Body::SevenBit,
                Some(v) if v.eq_ignore_ascii_case(b"8BITMIME") => Body::EightBitMime,
                Some(v) if v.eq_ignore_ascii_case(b"BINARYMIME") => Body::BinaryMime,
                _ => return Err(CommandError::Syntax),
            };
            set_once(&mut params.body, body)
        } else if key.eq_ignore_ascii_case(b"SMTPUTF8") {
            if value.is_some() || params.smtputf8 {
                return Err(CommandError::Syntax);
            }
            params.smtputf8 = true;
            Ok(())
        } else if key.eq_ignore_ascii_case(b"RET") {
            let ret = match value {
                Some(v) if v.eq_ignore_ascii_case(b"FULL") => Ret::Full,
                Some(v) if v.eq_ignore_ascii_case(b"HDRS") => Ret::Hdrs,
                _ => return Err(CommandError::Syntax),
            };
            set_once(&mut params.ret, ret)
        } else if key.eq_ignore_ascii_case(b"ENVID") {
            match value {
                Some(v) if !v.is_empty() && v.len() <= MAX_ENVID && is_xtext(v) => {
                    set_once(&mut params.envid, ascii_string(v))
                }
                _ => Err(CommandError::Syntax),
            }
        } else if key.eq_ignore_ascii_case(b"AUTH") {
            // RFC 4954 section 5: `AUTH=<>` or an xtext-encoded mailbox.
            match value {
                Some(v) if v == b"<>" || (!v.is_empty() && is_xtext(v)) => {
                    set_once(&mut params.auth, ascii_string(v))
                }
                _ => Err(CommandError::Syntax),
            }
        } else {
            Err(CommandError::UnsupportedParameter)
        }
    })?;
    Ok(params)
}

fn rcpt_params(text: &[u8]) -> Result<RcptParams, CommandError> {
    let mut params = RcptParams::default();
    for_each_param(text, |key, value| {
        if key.eq_ignore_ascii_case(b"NOTIFY") {
            let notify = value.and_then(notify).ok_or(CommandError::Syntax)?;
            set_once(&mut params.notify, notify)
        } else if key.eq_ignore_ascii_case(b"ORCPT") {
            let orcpt = value.filter(|v| is_orcpt(v)).ok_or(CommandError::Syntax)?;
            set_once(&mut params.orcpt, ascii_string(orcpt))
        } else {
            Err(CommandError::UnsupportedParameter)
        }
    })?;
    Ok(params)
}

/// RFC 3461 section 4.1: `NEVER`, or a list of `SUCCESS`, `FAILURE`, `DELAY`.
fn notify(value: &[u8]) -> Option<Notify> {
    let mut notify = Notify::default();
    for item in value.split(|&b| b == b',') {
        let flag = if item.eq_ignore_ascii_case(b"NEVER") {
            &mut notify.never
        } else if item.eq_ignore_ascii_case(b"SUCCESS") {
            &mut notify.success
        } else if item.eq_ignore_ascii_case(b"FAILURE") {
            &mut notify.failure
        } else if item.eq_ignore_ascii_case(b"DELAY") {
            &mut notify.delay
        } else {
            return None;
        };
        *flag = true;
    }
    let others = notify.success || notify.failure || notify.delay;
    if notify.never && others {
        None
    } else {
        Some(notify)
    }
}

/// RFC 3461 section 4.2: `addr-type ";" xtext`, where addr-type is an RFC 822 atom.
///
/// The RFC 6533 `utf-8` address type with raw UTF-8 in its value is not accepted.
fn is_orcpt(value: &[u8]) -> bool {
    let Some(semi) = value.iter().position(|&b| b == b';') else {
        return false;
    };
    let (kind, address) = (&value[..semi], &value[semi + 1..]);
    value.len() <= MAX_ORCPT
        && !kind.is_empty()
        && kind.iter().all(|&b| address::is_atext(b))
        && !address.is_empty()
        && is_xtext(address)
}

/// Calls `each` with every `keyword[=value]` of a parameter list (RFC 5321 section 4.1.2
/// `esmtp-param`). A malformed keyword or value is a syntax error whatever the keyword.
fn for_each_param(
    mut text: &[u8],
    mut each: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), CommandError>,
) -> Result<(), CommandError> {
    while !text.is_empty() {
        let (param, rest) = split_word(text);
        text = rest;

        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
            None => (param, None),
        };
        let key_ok = key.first().is_some_and(u8::is_ascii_alphanumeric)
            && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok = value
            .is_none_or(|v| !v.is_empty() && v.iter().all(|&b| b.is_ascii_graphic() && b != b'='));
        if !key_ok || !value_ok {
            return Err(CommandError::Syntax);
        }
        each(key, value)?;
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), CommandError> {
    if slot.is_some() {
        return Err(CommandError::Syntax);
    }
    *slot = Some(value);
    Ok(())
}

/// Splits `KEYWORD <path> params` into the raw path (brackets included) and the
/// parameter text. Anything wrong before or inside the path is `bad`.
fn split_path<'a>(
    rest: &'a [u8],
    keyword: &[u8],
    bad: CommandError,
) -> Result<(&'a [u8], &'a [u8]), CommandError> {
    if !starts_with_ignore_case(rest, keyword) {
        return Err(CommandError::Syntax);
    }
    let (start, end) = path_span(rest, keyword).ok_or(bad)?;
    let (path, after) = (&rest[start..end], &rest[end..]);
    match after.first() {
        None => Ok((path, after)),
        Some(b' ' | b'\t') => Ok((path, trim_blanks(after))),
        Some(_) => Err(CommandError::Syntax),
    }
}

/// Where the `<path>` after `keyword` lies in `rest`: from its `<` to just past its `>`, or to
/// the end of `rest` when it is not closed. None when there is no `<` where one belongs.
fn path_span(rest: &[u8], keyword: &[u8]) -> Option<(usize, usize)> {
    if !starts_with_ignore_case(rest, keyword) {
        return None;
    }
    // Postfix accepts spaces between the colon and the path; so does tern.
    let after = &rest[keyword.len()..];
    let start = keyword.len() + (after.len() - trim_start_blanks(after).len());
    if rest.get(start) != Some(&b'<') {
        return None;
    }
    let end = address::path_end(&rest[start..]).map_or(rest.len(), |close| start + close + 1);
    Some((start, end))
}

/// RFC 3461 section 4 `xtext`: printable ASCII but `+` and `=`, and `+XX` with uppercase hex.
fn is_xtext(text: &[u8]) -> bool {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => {
                let hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
                match text.get(i + 1..i + 3) {
                    Some(pair) if pair.iter().all(hex) => i += 3,
                    _ => return false,
                }
            }
            b'!'..=b'~' if text[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

/// HTTP request methods, or a first word shaped like a header name and colon (RFC 9110
/// `token ":"`), as Postfix's smtpd_forbidden_commands catches them.
fn looks_like_http(word: &[u8]) -> bool {
    const METHODS: [&[u8]; 5] = [b"GET", b"POST", b"CONNECT", b"HEAD", b"PUT"];
    if METHODS.iter().any(|m| m.eq_ignore_ascii_case(word)) {
        return true;
    }
    match word.split_last() {
        Some((b':', name)) => !name.is_empty() && name.iter().all(|&b| is_tchar(b)),
        _ => false,
    }
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A control byte that may not appear in a command: HTAB is allowed as a blank.
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn is_blank(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// The first word and the rest, blanks between them removed.
fn split_word(text: &[u8]) -> (&[u8], &[u8]) {
    let end = text.iter().position(is_blank).unwrap_or(text.len());
    (&text[..end], trim_start_blanks(&text[end..]))
}

fn trim_start_blanks(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|b| !is_blank(b)).unwrap_or(text.len());
    &text[start..]
}

fn trim_blanks(text: &[u8]) -> &[u8] {
    let text = trim_start_blanks(text);
    let end = text.iter().rposition(|b| !is_blank(b)).map_or(0, |i| i + 1);
    &text[..end]
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A non-empty run of ASCII digits as u64; None on anything else or on overflow.
fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Only called on bytes already checked to be ASCII.
fn ascii_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::address::{Domain, Mailbox};

    use CommandError::*;

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: Domain::Name(domain.into()),
        }
    }

    fn sender(local: &str, domain: &str) -> ReversePath {
        ReversePath::Mailbox(mailbox(local, domain))
    }

    fn recipient(local: &str, domain: &str) -> ForwardPath {
        ForwardPath::Mailbox(mailbox(local, domain))
    }

    fn check(table: &[(&[u8], Result<Command, CommandError>)]) {
        for (line, want) in table {
            assert_eq!(
                &parse(line),
                want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn verbs_without_arguments() {
        check(&[
            (b"DATA", Ok(Command::Data)),
            (b"data", Ok(Command::Data)),
            (b"RsEt", Ok(Command::Rset)),
            (b"QUIT", Ok(Command::Quit)),
            (b"QUIT  ", Ok(Command::Quit)),
            (b"STARTTLS", Ok(Command::StartTls)),
            (b"starttls", Ok(Command::StartTls)),
            (b"DATA x", Err(Syntax)),
            (b"RSET now", Err(Syntax)),
            (b"QUIT\tplease", Err(Syntax)),
            (b"STARTTLS x", Err(Syntax)),
            (b"NOOP", Ok(Command::Noop)),
            (b"noop anything at all", Ok(Command::Noop)),
            (b"HELP", Ok(Command::Help)),
            (b"HELP MAIL", Ok(Command::Help)),
            (b"VRFY alice", Ok(Command::Vrfy)),
            (b"VRFY", Err(Syntax)),
            (b"EXPN staff", Ok(Command::Expn)),
            (b"expn ", Err(Syntax)),
        ]);
    }

    #[test]
    fn unknown_verbs() {
        check(&[
            (b"", Err(Unrecognized)),
            (b"   ", Err(Unrecognized)),
            (b"HELLO x", Err(Unrecognized)),
            (b"DATAX", Err(Unrecognized)),
            (b"MAIL:FROM<a@b>", Err(Unrecognized)),
            (b"\xff\xfe", Err(Unrecognized)),
            (b"TURN", Err(Unrecognized)),
        ]);
    }

    #[test]
    fn greetings() {
        check(&[
            (
                b"EHLO client.example",
                Ok(Command::Ehlo("client.example".into())),
            ),
            (
                b"ehlo Client.Example",
                Ok(Command::Ehlo("Client.Example".into())),
            ),
            (b"HELO x", Ok(Command::Helo("x".into()))),
            (b"LHLO [192.0.2.1]", Ok(Command::Lhlo("[192.0.2.1]".into()))),
            (
                b"EHLO [IPv6:2001:db8::1]",
                Ok(Command::Ehlo("[IPv6:2001:db8::1]".into())),
            ),
            (b"EHLO\tclient ", Ok(Command::Ehlo("client".into()))),
            (b"EHLO", Err(Syntax)),
            (b"HELO ", Err(Syntax)),
            (b"EHLO two words", Err(Syntax)),
            (b"EHLO caf\xc3\xa9.example", Err(Syntax)),
            (b"LHLO \x80", Err(Syntax)),
        ]);
    }

    #[test]
    fn http_requests() {
        check(&[
            (b"GET / HTTP/1.1", Err(Http)),
            (b"get /", Err(Http)),
            (b"POST /form HTTP/1.0", Err(Http)),
            (b"CONNECT mail.example:25 HTTP/1.1", Err(Http)),
            (b"HEAD /", Err(Http)),
            (b"PUT", Err(Http)),
            (b"Host: mail.example", Err(Http)),
            (b"User-Agent: curl/8.0", Err(Http)),
            (b"Host:", Err(Http)),
            (b"GETTING x", Err(Unrecognized)),
            (b":", Err(Unrecognized)),
            (b"Host:x", Err(Unrecognized)),
            (b"GET /\x00", Err(Http)),
            (
                b"MAIL FROM:<a@b.example>",
                Ok(Command::Mail(sender("a", "b.example"), Default::default())),
            ),
        ]);
    }

    #[test]
    fn control_bytes() {
        check(&[
            (b"NOOP \x00", Err(ControlByte)),
            (b"EH\x00LO x", Err(ControlByte)),
            (b"EHLO x\x00y", Err(ControlByte)),
            (b"QUIT\x7f", Err(ControlByte)),
            (b"DATA\r", Err(ControlByte)),
            (b"HELP \x1b[1m", Err(ControlByte)),
            (b"\x00", Err(ControlByte)),
            (b"MAIL FROM:<a\x00b@c.example>", Err(BadSender)),
            (b"MAIL FROM:<a@c.example\x01", Err(BadSender)),
            (b"MAIL FROM: <\"a\x00\"@c.example>", Err(BadSender)),
            (b"MAIL FROM:<a@c.example> SIZE=\x001", Err(ControlByte)),
            (b"MAIL FROM\x00:<a@c.example>", Err(ControlByte)),
            (b"RCPT TO:<a@c.exa\x7fmple>", Err(BadRecipient)),
            (b"RCPT TO:<a@c.example> NOTIFY=\x02", Err(ControlByte)),
            // HTAB is a blank, not a control byte.
            (b"NOOP\tx", Ok(Command::Noop)),
        ]);
    }

    #[test]
    fn mail_paths() {
        let literal4 = Mailbox {
            local: "u".into(),
            domain: Domain::Literal(IpAddr::from([192, 0, 2, 1])),
        };
        let literal6 = Mailbox {
            local: "u".into(),
            domain: Domain::Literal("2001:db8::1".parse().unwrap()),
        };
        let general = Mailbox {
            local: "u".into(),
            domain: Domain::General("x-tag:a>b".into()),
        };
        let none = MailParams::default();
        check(&[
            (
                b"MAIL FROM:<alice@example.org>",
                Ok(Command::Mail(sender("alice", "example.org"), none.clone())),
            ),
            (
                b"mail from:<alice@example.org>",
                Ok(Command::Mail(sender("alice", "example.org"), none.clone())),
            ),
            (
                b"MAIL FROM: <Alice@EXAMPLE.org.>",
                Ok(Command::Mail(sender("Alice", "example.org"), none.clone())),
            ),
            (
                b"MAIL FROM:  <>",
                Ok(Command::Mail(ReversePath::Null, none.clone())),
            ),
            (
                b"MAIL FROM:<>",
                Ok(Command::Mail(ReversePath::Null, none.clone())),
            ),
            (
                b"MAIL FROM:<@a.example,@b.example:user@c.example>",
                Ok(Command::Mail(sender("user", "c.example"), none.clone())),
            ),
            (
                b"MAIL FROM:<\"john doe\"@example.org>",
                Ok(Command::Mail(
                    sender("john doe", "example.org"),
                    none.clone(),
                )),
            ),
            (
                b"MAIL FROM:<\"a\\\"b\\\\c\"@example.org>",
                Ok(Command::Mail(
                    sender("a\"b\\c", "example.org"),
                    none.clone(),
                )),
            ),
            (
                b"MAIL FROM:<first.last+tag@sub.example.org>",
                Ok(Command::Mail(
                    sender("first.last+tag", "sub.example.org"),
                    none.clone(),
                )),
            ),
            (
                b"MAIL FROM:<u@[192.0.2.1]>",
                Ok(Command::Mail(ReversePath::Mailbox(literal4), none.clone())),
            ),
            (
                b"MAIL FROM:<u@[IPv6:2001:db8::1]>",
                Ok(Command::Mail(ReversePath::Mailbox(literal6), none.clone())),
            ),
            (
                b"MAIL FROM:<u@[x-tag:a>b]>",
                Ok(Command::Mail(ReversePath::Mailbox(general), none.clone())),
            ),
            (
                "MAIL FROM:<用户@例子.广告> SMTPUTF8".as_bytes(),
                Ok(Command::Mail(
                    sender("用户", "例子.广告"),
                    MailParams {
                        smtputf8: true,
                        ..none.clone()
                    },
                )),
            ),
            (
                "MAIL FROM:<δοκιμή@ΠΑΡΆΔΕΙΓΜΑ.ΔΟΚΙΜΉ>".as_bytes(),
                Ok(Command::Mail(
                    sender("δοκιμή", "παράδειγμα.δοκιμή"),
                    none.clone(),
                )),
            ),
            (b"MAIL FROM:<Postmaster>", Err(BadSender)),
            (b"MAIL FROM:alice@example.org", Err(BadSender)),
            (b"MAIL FROM:<alice@example.org", Err(BadSender)),
            (b"MAIL FROM:", Err(BadSender)),
            (b"MAIL FROM:<alice>", Err(BadSender)),
            (b"MAIL FROM:<alice@>", Err(BadSender)),
            (b"MAIL FROM:<@example.org>", Err(BadSender)),
            (b"MAIL FROM:<a..b@example.org>", Err(BadSender)),
            (b"MAIL FROM:<.a@example.org>", Err(BadSender)),
            (b"MAIL FROM:<a b@example.org>", Err(BadSender)),
            (b"MAIL FROM:<a@-example.org>", Err(BadSender)),
            (b"MAIL FROM:<a@example..org>", Err(BadSender)),
            (b"MAIL FROM:<a@exa_mple.org>", Err(BadSender)),
            (b"MAIL FROM:<a@.>", Err(BadSender)),
            (b"MAIL FROM:<a@[300.0.2.1]>", Err(BadSender)),
            (b"MAIL FROM:<a@[IPv6:2001:db8::zz]>", Err(BadSender)),
            (b"MAIL FROM:<a@[192.0.2.1>", Err(BadSender)),
            (b"MAIL FROM:<\"unterminated@example.org>", Err(BadSender)),
            (b"MAIL FROM:<\"a\"b@example.org>", Err(BadSender)),
            (b"MAIL FROM:<a@b.example@c.example>", Err(BadSender)),
            (b"MAIL FROM:<@a.example:>", Err(BadSender)),
            (
                b"MAIL FROM:<@a.example,b.example:u@c.example>",
                Err(BadSender),
            ),
            (b"MAIL FROM:<\xff@example.org>", Err(BadSender)),
            (b"MAIL FROM:<a@ex\xc3ample.org>", Err(BadSender)),
            (b"MAIL FROM <a@example.org>", Err(Syntax)),
            (b"MAIL TO:<a@example.org>", Err(Syntax)),
            (b"MAIL", Err(Syntax)),
            (b"MAIL FROM:<a@example.org>SIZE=1", Err(Syntax)),
        ]);
    }

    #[test]
    fn rcpt_paths() {
        let none = RcptParams::default();
        check(&[
            (
                b"RCPT TO:<bob@example.org>",
                Ok(Command::Rcpt(recipient("bob", "example.org"), none.clone())),
            ),
            (
                b"rcpt to: <Bob@Example.ORG>",
                Ok(Command::Rcpt(recipient("Bob", "example.org"), none.clone())),
            ),
            (
                b"RCPT TO:<Postmaster>",
                Ok(Command::Rcpt(ForwardPath::Postmaster, none.clone())),
            ),
            (
                b"RCPT TO:<postMASTER>",
                Ok(Command::Rcpt(ForwardPath::Postmaster, none.clone())),
            ),
            (
                b"RCPT TO:<postmaster@example.org>",
                Ok(Command::Rcpt(
                    recipient("postmaster", "example.org"),
                    none.clone(),
                )),
            ),
            (
                b"RCPT TO:<@relay.example:bob@example.org>",
                Ok(Command::Rcpt(recipient("bob", "example.org"), none.clone())),
            ),
            (b"RCPT TO:<>", Err(BadRecipient)),
            (b"RCPT TO:<bob>", Err(BadRecipient)),
            (b"RCPT TO:bob@example.org", Err(BadRecipient)),
            (b"RCPT TO:<bob@example.org", Err(BadRecipient)),
            (b"RCPT TO:<b\xc0b@example.org>", Err(BadRecipient)),
            (b"RCPT FROM:<bob@example.org>", Err(Syntax)),
            (b"RCPT", Err(Syntax)),
        ]);
    }

    #[test]
    fn path_length_limits() {
        let local = |n: usize| "l".repeat(n);
        // A domain of 253 octets in labels of up to 63.
        let domain = |n: usize| {
            let mut d = String::new();
            while d.len() < n {
                if !d.is_empty() {
                    d.push('.');
                }
                let take = (n - d.len()).min(63);
                d.push_str(&"d".repeat(take));
            }
            d
        };
        let line = |l: &str, d: &str| format!("RCPT TO:<{l}@{d}>").into_bytes();

        assert!(parse(&line(&local(64), "example.org")).is_ok());
        assert_eq!(parse(&line(&local(65), "example.org")), Err(BadRecipient));
        let quoted = format!("\"{}\"", local(62));
        assert!(parse(&line(&quoted, "example.org")).is_ok());
        let quoted = format!("\"{}\"", local(63));
        assert_eq!(parse(&line(&quoted, "example.org")), Err(BadRecipient));

        // Path: `<` + local + `@` + domain + `>` = 256 is the most allowed.
        assert!(parse(&line(&local(10), &domain(243))).is_ok());
        assert_eq!(parse(&line(&local(10), &domain(244))), Err(BadRecipient));
        let mail = format!("MAIL FROM:<{}@{}>", local(10), domain(244));
        assert_eq!(parse(mail.as_bytes()), Err(BadSender));

        // A label over 63 octets.
        let long_label = format!("{}.org", "d".repeat(64));
        assert_eq!(parse(&line("a", &long_label)), Err(BadRecipient));
    }

    #[test]
    fn mail_parameters() {
        let mail = |line: &[u8]| match parse(line) {
            Ok(Command::Mail(_, params)) => Ok(params),
            Ok(other) => panic!("not MAIL: {other:?}"),
            Err(e) => Err(e),
        };
        let base = MailParams::default();
        let table: &[(&[u8], Result<MailParams, CommandError>)] = &[
            (b"MAIL FROM:<> SIZE=1000", Ok(MailParams { size: Some(1000), ..base.clone() })),
            (b"MAIL FROM:<> size=0", Ok(MailParams { size: Some(0), ..base.clone() })),
            (b"MAIL FROM:<> SIZE=18446744073709551615", Ok(MailParams { size: Some(u64::MAX), ..base.clone() })),
            (b"MAIL FROM:<> SIZE=18446744073709551616", Err(Syntax)),
            (b"MAIL FROM:<> SIZE=-1", Err(Syntax)),
            (b"MAIL FROM:<> SIZE=12k", Err(Syntax)),
            (b"MAIL FROM:<> SIZE", Err(Syntax)),
            (b"MAIL FROM:<> SIZE=", Err(Syntax)),
            (b"MAIL FROM:<> SIZE=1 SIZE=2", Err(Syntax)),
            (b"MAIL FROM:<> BODY=7BIT", Ok(MailParams { body: Some(Body::SevenBit), ..base.clone() })),
            (b"MAIL FROM:<> body=8bitmime", Ok(MailParams { body: Some(Body::EightBitMime), ..base.clone() })),
            (b"MAIL FROM:<> BODY=BINARYMIME", Ok(MailParams { body: Some(Body::BinaryMime), ..base.clone() })),
            (b"MAIL FROM:<> BODY=9BIT", Err(Syntax)),
            (b"MAIL FROM:<> BODY", Err(Syntax)),
            (b"MAIL FROM:<> SMTPUTF8", Ok(MailParams { smtputf8: true, ..base.clone() })),
            (b"MAIL FROM:<> smtputf8", Ok(MailParams { smtputf8: true, ..base.clone() })),
            (b"MAIL FROM:<> SMTPUTF8=yes", Err(Syntax)),
            (b"MAIL FROM:<> SMTPUTF8 SMTPUTF8", Err(Syntax)),
            (b"MAIL FROM:<> RET=FULL", Ok(MailParams { ret: Some(Ret::Full), ..base.clone() })),
            (b"MAIL FROM:<> ret=hdrs", Ok(MailParams { ret: Some(Ret::Hdrs), ..base.clone() })),
            (b"MAIL FROM:<> RET=BODY", Err(Syntax)),
            (b"MAIL FROM:<> ENVID=QQ314159", Ok(MailParams { envid: Some("QQ314159".into()), ..base.clone() })),
            (b"MAIL FROM:<> ENVID=a+2Bb", Ok(MailParams { envid: Some("a+2Bb".into()), ..base.clone() })),
            (b"MAIL FROM:<> ENVID=a+2bb", Err(Syntax)),
            (b"MAIL FROM:<> ENVID=a+2", Err(Syntax)),
            (b"MAIL FROM:<> ENVID=a+b", Err(Syntax)),
            (b"MAIL FROM:<> ENVID=\xc3\xa9", Err(Syntax)),
            (b"MAIL FROM:<> ENVID=", Err(Syntax)),
            (b"MAIL FROM:<> AUTH=<>", Ok(MailParams { auth: Some("<>".into()), ..base.clone() })),
            (b"MAIL FROM:<> AUTH=e+3Dmc2@example.com", Ok(MailParams { auth: Some("e+3Dmc2@example.com".into()), ..base.clone() })),
            (b"MAIL FROM:<> AUTH=a+", Err(Syntax)),
            (b"MAIL FROM:<> AUTH", Err(Syntax)),
            (b"MAIL FROM:<> XFORWARD=1", Err(UnsupportedParameter)),
            (b"MAIL FROM:<> MT-PRIORITY=3", Err(UnsupportedParameter)),
            (b"MAIL FROM:<> REQUIRETLS", Err(UnsupportedParameter)),
            (b"MAIL FROM:<> -X=1", Err(Syntax)),
            (b"MAIL FROM:<> =1", Err(Syntax)),
            (b"MAIL FROM:<> SIZE=1=2", Err(Syntax)),
            (b"MAIL FROM:<> NOTIFY=NEVER", Err(UnsupportedParameter)),
            (
                b"MAIL FROM:<a@b.example>  SIZE=5\tBODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<> ",
                Ok(MailParams {
                    size: Some(5),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    ret: Some(Ret::Hdrs),
                    envid: Some("x".into()),
                    auth: Some("<>".into()),
                }),
            ),
        ];
        for (line, want) in table {
            assert_eq!(
                &mail(line),
                want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }

        let envid = |n: usize| format!("MAIL FROM:<> ENVID={}", "e".repeat(n)).into_bytes();
        assert!(mail(&envid(100)).is_ok());
        assert_eq!(mail(&envid(101)), Err(Syntax));
    }

    #[test]
    fn rcpt_parameters() {
        let rcpt = |line: &[u8]| match parse(line) {
            Ok(Command::Rcpt(_, params)) => Ok(params),
            Ok(other) => panic!("not RCPT: {other:?}"),
            Err(e) => Err(e),
        };
        let notify = |never, success, failure, delay| RcptParams {
            notify: Some(Notify {
                never,
                success,
                failure,
                delay,
            }),
            orcpt: None,
        };
        let table: &[(&[u8], Result<RcptParams, CommandError>)] = &[
            (
                b"RCPT TO:<a@b.example> NOTIFY=NEVER",
                Ok(notify(true, false, false, false)),
            ),
            (
                b"RCPT TO:<a@b.example> notify=success,delay",
                Ok(notify(false, true, false, true)),
            ),
            (
                b"RCPT TO:<a@b.example> NOTIFY=FAILURE",
                Ok(notify(false, false, true, false)),
            ),
            (
                b"RCPT TO:<a@b.example> NOTIFY=SUCCESS,FAILURE,DELAY",
                Ok(notify(false, true, true, true)),
            ),
            (b"RCPT TO:<a@b.example> NOTIFY=NEVER,DELAY", Err(Syntax)),
            (b"RCPT TO:<a@b.example> NOTIFY=SUCCESS,", Err(Syntax)),
            (b"RCPT TO:<a@b.example> NOTIFY=ALWAYS", Err(Syntax)),
            (b"RCPT TO:<a@b.example> NOTIFY", Err(Syntax)),
            (
                b"RCPT TO:<a@b.example> NOTIFY=DELAY NOTIFY=DELAY",
                Err(Syntax),
            ),
            (
                b"RCPT TO:<a@b.example> ORCPT=rfc822;a+2Bb@b.example",
                Ok(RcptParams {
                    notify: None,
                    orcpt: Some("rfc822;a+2Bb@b.example".into()),
                }),
            ),
            (b"RCPT TO:<a@b.example> ORCPT=rfc822", Err(Syntax)),
            (b"RCPT TO:<a@b.example> ORCPT=;a@b.example", Err(Syntax)),
            (b"RCPT TO:<a@b.example> ORCPT=rfc822;", Err(Syntax)),
            (b"RCPT TO:<a@b.example> ORCPT=rfc822;a+zz", Err(Syntax)),
            (
                b"RCPT TO:<a@b.example> ORCPT=rfc822;a ORCPT=rfc822;b",
                Err(Syntax),
            ),
            (b"RCPT TO:<a@b.example> SIZE=10", Err(UnsupportedParameter)),
            (
                b"RCPT TO:<a@b.example> X-ANYTHING",
                Err(UnsupportedParameter),
            ),
            (
                b"RCPT TO:<a@b.example> NOTIFY=NEVER BOGUS=1",
                Err(UnsupportedParameter),
            ),
        ];
        for (line, want) in table {
            assert_eq!(
                &rcpt(line),
                want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }

        let orcpt = |n: usize| format!("RCPT TO:<a@b.example> ORCPT=rfc822;{}", "o".repeat(n));
        assert!(rcpt(orcpt(493).as_bytes()).is_ok());
        assert_eq!(rcpt(orcpt(494).as_bytes()), Err(Syntax));
    }

    #[test]
    fn bdat() {
        check(&[
            (
                b"BDAT 0",
                Ok(Command::Bdat {
                    size: 0,
                    last: false,
                }),
            ),
            (
                b"BDAT 1000 LAST",
                Ok(Command::Bdat {
                    size: 1000,
                    last: true,
                }),
            ),
            (
                b"bdat 7 last",
                Ok(Command::Bdat {
                    size: 7,
                    last: true,
                }),
            ),
            (
                b"BDAT 18446744073709551615",
                Ok(Command::Bdat {
                    size: u64::MAX,
                    last: false,
                }),
            ),
            (b"BDAT 18446744073709551616", Err(Syntax)),
            (b"BDAT", Err(Syntax)),
            (b"BDAT LAST", Err(Syntax)),
            (b"BDAT 10 FIRST", Err(Syntax)),
            (b"BDAT 10 LAST x", Err(Syntax)),
            (b"BDAT +10", Err(Syntax)),
            (b"BDAT 0x10", Err(Syntax)),
        ]);
    }

    #[test]
    fn auth() {
        let auth = |mechanism: &str, initial: Option<&str>| {
            Ok(Command::Auth {
                mechanism: mechanism.into(),
                initial: initial.map(Into::into),
            })
        };
        check(&[
            (b"AUTH PLAIN", auth("PLAIN", None)),
            (
                b"auth plain AGFsaWNlAHNlY3JldA==",
                auth("PLAIN", Some("AGFsaWNlAHNlY3JldA==")),
            ),
            (b"AUTH PLAIN =", auth("PLAIN", Some("="))),
            (b"AUTH scram-sha-256", auth("SCRAM-SHA-256", None)),
            (
                b"AUTH X_OAUTH2 dXNlcg+/",
                auth("X_OAUTH2", Some("dXNlcg+/")),
            ),
            (
                b"AUTH ABCDEFGHIJKLMNOPQRST",
                auth("ABCDEFGHIJKLMNOPQRST", None),
            ),
            (b"AUTH ABCDEFGHIJKLMNOPQRSTU", Err(Syntax)),
            (b"AUTH", Err(Syntax)),
            (b"AUTH PL.AIN", Err(Syntax)),
            (b"AUTH PLAIN abc def", Err(Syntax)),
            (b"AUTH PLAIN ab=c", auth("PLAIN", Some("ab=c"))),
            (b"AUTH PLAIN abc===", auth("PLAIN", Some("abc==="))),
            (b"AUTH PLAIN ==", auth("PLAIN", Some("=="))),
            (b"AUTH PLAIN a*b", auth("PLAIN", Some("a*b"))),
        ]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn parse_never_panics_on_smtp_alphabet(
            line in "(MAIL FROM:|RCPT TO:|BDAT |AUTH |EHLO )[<>@.\"\\\\:,\\[\\]a-zA-Z0-9 =+;\t\u{0}é]{0,80}"
        ) {
            let _ = parse(line.as_bytes());
        }
    }
}
