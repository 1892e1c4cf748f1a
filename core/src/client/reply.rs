//! Reading the server's replies (RFC 5321 section 4.2), their enhanced status codes (RFC 3463)
//! and the extension keywords of an EHLO or LHLO answer (RFC 5321 section 4.1.1.1).
//!
//! Line ends: a reply line ends at LF, with the CR before it dropped when present. Real servers
//! all send CRLF; a bare LF is read as Postfix's own client reads it, since on the client side
//! it cannot smuggle anything (a reply carries no message text). A CR anywhere else in a line
//! is a protocol error, as are a line without a proper code, a continuation line whose code
//! differs from the first, a line over [`LINE_MAX`] octets and a reply over [`REPLY_MAX`]
//! octets. Every one of these ends the session: no real server sends them, and guessing where
//! the next reply begins would let a hostile server answer a command it never saw.

use std::fmt;

use memchr::memchr;

/// The longest reply line accepted, without its line end. RFC 5321 section 4.5.3.1.5 allows
/// 512 octets; real servers stay far below.
pub const LINE_MAX: usize = 4096;
/// The most text one reply may hold over all its lines.
pub const REPLY_MAX: usize = 32 * 1024;

/// One complete reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The three-digit code.
    pub code: u16,
    /// The RFC 3463 code at the start of the first line's text, if it has one whose class
    /// matches the reply code.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line after the code and separator, enhanced code included. Control
    /// characters other than tab are replaced by `?`, invalid UTF-8 by U+FFFD, so the text
    /// is safe to log.
    pub lines: Vec<String>,
}

/// An RFC 3463 enhanced status code, such as `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject.
    pub subject: u16,
    /// The detail.
    pub detail: u16,
}

/// Why the server's bytes are not a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that does not start with a valid code and a space, `-` or its end.
    Malformed,
    /// A continuation line whose code differs from the first line's.
    MixedCodes,
    /// A CR that is not part of the line end.
    BareCarriageReturn,
    /// A line over [`LINE_MAX`] or a reply over [`REPLY_MAX`] octets.
    TooLong,
}

/// The extensions a server announced in its EHLO or LHLO answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): the announced limit in octets; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// 8BITMIME (RFC 6152).
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// The AUTH mechanisms (RFC 4954), uppercased; tern's client does not authenticate.
    pub auth: Vec<String>,
}

impl ServerReply {
    /// Whether the code is 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Whether the code is 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Whether the code is 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text of all lines joined by spaces, as Postfix logs a multi-line reply.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyError::Malformed => "malformed reply line",
            ReplyError::MixedCodes => "reply lines with different codes",
            ReplyError::BareCarriageReturn => "bare CR in a reply",
            ReplyError::TooLong => "reply too long",
        })
    }
}

impl std::error::Error for ReplyError {}

impl EnhancedCode {
    /// Parses `class.subject.detail` (RFC 3463 section 2: class 2, 4 or 5, subject and
    /// detail of one to three digits).
    pub fn parse(text: &str) -> Option<EnhancedCode> {
        let mut parts = text.split('.');
        let class = match parts.next()? {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        let subject = number(parts.next()?)?;
        let detail = number(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }
}

impl Extensions {
    /// The extensions listed in an EHLO or LHLO answer: every line after the first names
    /// one keyword and its parameters. Unknown keywords are ignored.
    pub fn from_ehlo(reply: &ServerReply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
                "STARTTLS" => ext.starttls = true,
                "8BITMIME" => ext.eightbitmime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "AUTH" => ext.auth = words.map(str::to_ascii_uppercase).collect(),
                _ => {}
            }
        }
        ext
    }
}

/// Gathers reply lines until a reply is complete. Holds at most one line of [`LINE_MAX`] and
/// one reply of [`REPLY_MAX`] octets.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    line: Vec<u8>,
    code: Option<u16>,
    lines: Vec<String>,
    held: usize,
}

impl ReplyParser {
    /// Consumes input up to the end of the next complete reply, or all of it. Returns the
    /// bytes consumed and the reply or error, if one is complete. After an error the parser
    /// must not be used again.
    pub(crate) fn read(
        &mut self,
        input: &[u8],
    ) -> (usize, Option<Result<ServerReply, ReplyError>>) {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let Some(end) = memchr(b'\n', rest) else {
                if self.line.len() + rest.len() > LINE_MAX + 1 {
                    return (input.len(), Some(Err(ReplyError::TooLong)));
                }
                self.line.extend_from_slice(rest);
                return (input.len(), None);
            };
            pos += end + 1;
            if self.line.len() + end > LINE_MAX + 1 {
                return (pos, Some(Err(ReplyError::TooLong)));
            }
            self.line.extend_from_slice(&rest[..end]);
            match self.finish_line() {
                Ok(None) => {}
                Ok(Some(reply)) => return (pos, Some(Ok(reply))),
                Err(error) => return (pos, Some(Err(error))),
            }
        }
        (pos, None)
    }

    /// Bytes held for the line and reply in progress.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.line.len() + self.held
    }

    fn finish_line(&mut self) -> Result<Option<ServerReply>, ReplyError> {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > LINE_MAX {
            return Err(ReplyError::TooLong);
        }
        if line.contains(&b'\r') {
            return Err(ReplyError::BareCarriageReturn);
        }
        let (code, last, text) = split_line(&line)?;
        if self.code.is_some_and(|first| first != code) {
            return Err(ReplyError::MixedCodes);
        }
        self.code = Some(code);
        self.held += text.len();
        if self.held > REPLY_MAX {
            return Err(ReplyError::TooLong);
        }
        self.lines.push(printable(text));
        if !last {
            return Ok(None);
        }

        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        self.held = 0;
        let enhanced = lines
            .first()
            .and_then(|text| text.split(' ').next())
            .and_then(EnhancedCode::parse)
            .filter(|e| u16::from(e.class) == code / 100);
        Ok(Some(ServerReply {
            code,
            enhanced,
            lines,
        }))
    }
}

/// Splits `250-text` into the code, whether this is the last line, and the text.
/// RFC 5321 section 4.2: the first digit is 2 to 5, the second 0 to 5.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let (digits, rest) = line.split_at_checked(3).ok_or(ReplyError::Malformed)?;
    let valid = matches!(digits[0], b'2'..=b'5')
        && matches!(digits[1], b'0'..=b'5')
        && digits[2].is_ascii_digit();
    if !valid {
        return Err(ReplyError::Malformed);
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match rest.split_first() {
        None => Ok((code, true, rest)),
        Some((b' ', text)) => Ok((code, true, text)),
        Some((b'-', text)) => Ok((code, false, text)),
        Some(_) => Err(ReplyError::Malformed),
    }
}

fn printable(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

fn number(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<Result<ServerReply, ReplyError>> {
        let mut parser = ReplyParser::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let (used, event) = parser.read(&input[pos..]);
            pos += used;
            match event {
                Some(Err(e)) => {
                    out.push(Err(e));
                    break;
                }
                Some(Ok(reply)) => out.push(Ok(reply)),
                None => assert_eq!(pos, input.len()),
            }
        }
        out
    }

    fn one(input: &str) -> Result<ServerReply, ReplyError> {
        let mut replies = parse_all(input.as_bytes());
        assert_eq!(replies.len(), 1, "{input:?} gave {replies:?}");
        replies.remove(0)
    }

    #[test]
    fn single_and_multi_line_replies() {
        let reply = one("250 2.1.5 Ok\r\n").unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.enhanced.unwrap().to_string(), "2.1.5");
        assert_eq!(reply.lines, ["2.1.5 Ok"]);
        assert_eq!(reply.to_string(), "250 2.1.5 Ok");

        let reply = one("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n").unwrap();
        assert_eq!(reply.lines, ["mx.example", "PIPELINING", "SIZE 1000"]);
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.text(), "mx.example PIPELINING SIZE 1000");

        // A code alone is a whole line (RFC 5321 section 4.2: the text is optional).
        assert_eq!(one("354\r\n").unwrap().lines, [""]);
        // A bare LF ends a line, as Postfix's client reads it.
        assert_eq!(one("220 x\n").unwrap().code, 220);
    }

    #[test]
    fn enhanced_codes_must_match_the_class() {
        assert_eq!(one("550 4.1.1 no\r\n").unwrap().enhanced, None);
        assert_eq!(
            one("550 5.1.10 x\r\n").unwrap().enhanced.unwrap().detail,
            10
        );
        assert_eq!(one("550 5.1 x\r\n").unwrap().enhanced, None);
        assert_eq!(one("550 5.1.1.1 x\r\n").unwrap().enhanced, None);
        assert_eq!(one("550 5.1.1234 x\r\n").unwrap().enhanced, None);
        assert_eq!(one("550 5.1.1: x\r\n").unwrap().enhanced, None);
    }

    #[test]
    fn bad_lines_are_errors() {
        use ReplyError::*;
        for (input, error) in [
            ("hello\r\n", Malformed),
            ("25\r\n", Malformed),
            ("2500 x\r\n", Malformed),
            ("250_x\r\n", Malformed),
            ("650 x\r\n", Malformed),
            ("190 x\r\n", Malformed),
            ("260 x\r\n", Malformed),
            ("\r\n", Malformed),
            ("250-a\r\n251 b\r\n", MixedCodes),
            ("250 a\rb\r\n", BareCarriageReturn),
        ] {
            assert_eq!(one(input), Err(error), "{input:?}");
        }
    }

    #[test]
    fn lengths_are_capped() {
        let at_max = format!("250 {}\r\n", "x".repeat(LINE_MAX - 4));
        assert!(one(&at_max).is_ok());
        let over = format!("250 {}\r\n", "x".repeat(LINE_MAX - 3));
        assert_eq!(one(&over), Err(ReplyError::TooLong));

        // Without any line end, the parser stops holding bytes at the cap.
        let mut parser = ReplyParser::default();
        let (used, event) = parser.read(&vec![b'2'; LINE_MAX + 10]);
        assert_eq!(
            (used, event),
            (LINE_MAX + 10, Some(Err(ReplyError::TooLong)))
        );

        let line = format!("250-{}\r\n", "x".repeat(1000));
        let many = line.repeat(REPLY_MAX / 1000 + 1) + "250 end\r\n";
        assert_eq!(
            parse_all(many.as_bytes()).pop(),
            Some(Err(ReplyError::TooLong))
        );
    }

    #[test]
    fn control_characters_are_made_printable() {
        assert_eq!(one("550 a\0b\x1bc\td\r\n").unwrap().lines, ["a?b?c\td"]);
    }

    #[test]
    fn every_split_gives_the_same_replies() {
        let input = b"220 hi\r\n250-a\r\n250 b\n550 5.1.1 no\r\n";
        let whole = parse_all(input);
        assert_eq!(whole.len(), 3);
        for split in 0..input.len() {
            let mut parser = ReplyParser::default();
            let mut got = Vec::new();
            for part in [&input[..split], &input[split..]] {
                let mut pos = 0;
                while pos < part.len() {
                    let (used, event) = parser.read(&part[pos..]);
                    pos += used;
                    got.extend(event);
                }
            }
            assert_eq!(got, whole, "split at {split}");
        }
    }

    #[test]
    fn ehlo_keywords() {
        let reply = one(
            "250-mx.example says hi\r\n250-pipelining\r\n250-SIZE 10240000\r\n\
             250-STARTTLS\r\n250-AUTH PLAIN login\r\n250-ENHANCEDSTATUSCODES\r\n\
             250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250-X-UNKNOWN 1\r\n250 CHUNKING\r\n",
        )
        .unwrap();
        let ext = Extensions::from_ehlo(&reply);
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                size: Some(10_240_000),
                starttls: true,
                eightbitmime: true,
                smtputf8: true,
                dsn: true,
                chunking: true,
                enhanced_status_codes: true,
                auth: vec!["PLAIN".into(), "LOGIN".into()],
            }
        );
        let bare = one("250-mx\r\n250 SIZE\r\n").unwrap();
        assert_eq!(Extensions::from_ehlo(&bare).size, Some(0));
        // The greeting line is not a keyword, whatever it says.
        let greeting = one("250 PIPELINING\r\n").unwrap();
        assert!(!Extensions::from_ehlo(&greeting).pipelining);
    }
}
