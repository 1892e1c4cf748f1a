//! Mailbox addresses as RFC 5321 section 4.1.2 writes them, and the canonical form that
//! the relay decision and delivery both use (SPEC.md section 2).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The domain part of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A host name, lowercased, without a trailing dot. May hold UTF-8 (RFC 6531).
    Name(String),
    /// An address literal such as `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    Literal(IpAddr),
    /// A general address literal (`[tag:content]`) that names no IP address; never local.
    General(String),
}

/// A mailbox: an unquoted local part and a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part with any quoting removed (`"a b"@x` gives `a b`); case is kept.
    pub local: String,
    /// The domain.
    pub domain: Domain,
}

/// The argument of `MAIL FROM:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`, the null sender of bounces.
    Null,
    /// A sender mailbox (source route, if any, already dropped).
    Mailbox(Mailbox),
}

/// The argument of `RCPT TO:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<Postmaster>` with no domain, any case (RFC 5321 section 4.1.1.3).
    Postmaster,
    /// A recipient mailbox (source route, if any, already dropped).
    Mailbox(Mailbox),
}

/// Why an address, a domain or a path did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressError(&'static str);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for AddressError {}

/// RFC 5321 section 4.5.3.1.1: the longest local part.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 section 4.5.3.1.2: the longest domain.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 section 4.5.3.1.3: the longest path, angle brackets included.
pub const MAX_PATH: usize = 256;

impl Domain {
    /// Parses a domain as RFC 5321 section 4.1.2 writes it (with RFC 6531 U-labels) or an
    /// address literal, into canonical form: a name is lowercased and loses one trailing dot.
    ///
    /// The 63-octet label limit is checked for ASCII labels only: a U-label's limit applies
    /// to its punycode form, which tern does not compute.
    pub fn parse(text: &str) -> Result<Domain, AddressError> {
        if text.len() > MAX_DOMAIN {
            return Err(AddressError("domain longer than 255 octets"));
        }
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(AddressError("address literal without closing bracket"))?;
            return parse_literal(inner);
        }

        let name = text.strip_suffix('.').unwrap_or(text);
        if name.is_empty() {
            return Err(AddressError("empty domain"));
        }
        if !name.split('.').all(is_label) {
            return Err(AddressError("malformed domain"));
        }
        Ok(Domain::Name(name.to_lowercase()))
    }
}

impl Mailbox {
    /// Parses `local@domain` (RFC 5321 section 4.1.2 `Mailbox`, with RFC 6531 UTF-8), with
    /// no angle brackets. A quoted local part is stored unquoted.
    pub fn parse(text: &str) -> Result<Mailbox, AddressError> {
        let (local, rest) = split_local_part(text)?;
        let domain = rest
            .strip_prefix('@')
            .ok_or(AddressError("mailbox without a domain"))?;
        Ok(Mailbox {
            local,
            domain: Domain::parse(domain)?,
        })
    }

    /// Whether local part and domain are all ASCII (else SMTPUTF8 is needed).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii()
            && match &self.domain {
                Domain::Name(name) => name.is_ascii(),
                Domain::General(text) => text.is_ascii(),
                Domain::Literal(_) => true,
            }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Literal(IpAddr::V4(ip)) => write!(f, "[{ip}]"),
            Domain::Literal(IpAddr::V6(ip)) => write!(f, "[IPv6:{ip}]"),
            Domain::General(text) => write!(f, "[{text}]"),
        }
    }
}

impl fmt::Display for Mailbox {
    /// Writes the address as it goes on the wire: the local part quoted when it is not a
    /// dot-string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local) {
            write!(f, "{}@{}", self.local, self.domain)
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain)
        }
    }
}

/// Whether `local` can be written without quotes (RFC 5321 `Dot-string`, with UTF-8 allowed
/// as RFC 6531 does).
pub fn is_dot_string(local: &str) -> bool {
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_ascii() || is_atext(c as u8) || c == '.')
}

/// RFC 5322 `atext`.
pub fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// What a `<path>` of MAIL or RCPT holds, before the command decides what it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Path {
    /// `<>`.
    Null,
    /// `<Postmaster>`, any case, no domain.
    Postmaster,
    /// A mailbox, source route dropped.
    Mailbox(Mailbox),
}

/// Where the `<path>` that `text` starts with ends: the index of its closing `>`. Quoted
/// strings and address literals may hold a `>` that does not close the path. Works on any
/// bytes, so the caller can tell whether a control byte lies inside the path.
pub(crate) fn path_end(text: &[u8]) -> Option<usize> {
    enum In {
        Plain,
        Quoted,
        Literal,
    }
    let mut state = In::Plain;
    let mut i = 1;
    while i < text.len() {
        match (&state, text[i]) {
            (In::Plain, b'>') => return Some(i),
            (In::Plain, b'"') => state = In::Quoted,
            (In::Plain, b'[') => state = In::Literal,
            (In::Quoted, b'\\') => i += 1,
            (In::Quoted, b'"') | (In::Literal, b']') => state = In::Plain,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses a whole `<path>` (RFC 5321 section 4.1.2 `Path`), angle brackets included.
/// A source route (`<@a,@b:user@c>`) is checked and dropped, as section 4.1.1.3 allows.
/// A route through an IPv6 or general address literal is refused, as its colons are not told
/// apart from the one that ends the route.
pub(crate) fn parse_path(raw: &[u8]) -> Result<Path, AddressError> {
    if raw.len() > MAX_PATH {
        return Err(AddressError("path longer than 256 octets"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| AddressError("path is not UTF-8"))?;
    let inner = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .ok_or(AddressError("path without angle brackets"))?;
    if inner.is_empty() {
        return Ok(Path::Null);
    }

    let mailbox = match inner.strip_prefix('@') {
        Some(_) => drop_source_route(inner)?,
        None => inner,
    };
    if mailbox.eq_ignore_ascii_case("postmaster") {
        return Ok(Path::Postmaster);
    }
    Mailbox::parse(mailbox).map(Path::Mailbox)
}

/// Checks the `A-d-l ":"` in front of a mailbox and returns the mailbox.
fn drop_source_route(text: &str) -> Result<&str, AddressError> {
    let (route, mailbox) = text
        .split_once(':')
        .ok_or(AddressError("source route without colon"))?;
    for hop in route.split(',') {
        let domain = hop
            .strip_prefix('@')
            .ok_or(AddressError("source route hop without @"))?;
        Domain::parse(domain)?;
    }
    Ok(mailbox)
}

/// Splits off and unquotes the local part; returns it and the rest (which starts at `@`).
fn split_local_part(text: &str) -> Result<(String, &str), AddressError> {
    let (local, raw_len) = match text.strip_prefix('"') {
        Some(quoted) => {
            let (local, len) = unquote(quoted)?;
            (local, len + 1)
        }
        None => {
            let end = text.find('@').unwrap_or(text.len());
            let local = &text[..end];
            if !is_dot_string(local) {
                return Err(AddressError("malformed local part"));
            }
            (local.to_owned(), end)
        }
    };
    if raw_len > MAX_LOCAL_PART {
        return Err(AddressError("local part longer than 64 octets"));
    }
    Ok((local, &text[raw_len..]))
}

/// Reads an RFC 5321 `Quoted-string` whose opening quote is already gone. Returns the
/// content without quoting and the length used, closing quote included.
fn unquote(text: &str) -> Result<(String, usize), AddressError> {
    let mut local = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((local, i + 1)),
            '\\' => match chars.next() {
                Some((_, q @ ' '..='~')) => local.push(q),
                _ => return Err(AddressError("bad quoted-pair in local part")),
            },
            ' '..='~' => local.push(c),
            _ if !c.is_ascii() => local.push(c),
            _ => return Err(AddressError("control character in local part")),
        }
    }
    Err(AddressError("unterminated quoted local part"))
}

/// RFC 5321 `sub-domain`, or an RFC 6531 U-label (any non-ASCII letters allowed).
fn is_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if first == b'-' || last == b'-' {
        return false;
    }
    if label.is_ascii() {
        bytes.len() <= 63
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
    } else {
        label.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c == '-'
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        })
    }
}

/// RFC 5321 `address-literal` without its brackets.
fn parse_literal(inner: &str) -> Result<Domain, AddressError> {
    let Some((tag, content)) = inner.split_once(':') else {
        return inner
            .parse::<Ipv4Addr>()
            .map(|ip| Domain::Literal(IpAddr::V4(ip)))
            .map_err(|_| AddressError("malformed IPv4 address literal"));
    };
    if tag.eq_ignore_ascii_case("IPv6") {
        return content
            .parse::<Ipv6Addr>()
            .map(|ip| Domain::Literal(IpAddr::V6(ip)))
            .map_err(|_| AddressError("malformed IPv6 address literal"));
    }

    // RFC 5321 `General-address-literal`: Standardized-tag ":" 1*dcontent.
    let tag_ok = tag.is_ascii() && is_label(tag);
    let content_ok =
        !content.is_empty() && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126));
    if tag_ok && content_ok {
        Ok(Domain::General(inner.to_owned()))
    } else {
        Err(AddressError("malformed address literal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let name = |s: &str| Ok(Domain::Name(s.into()));
        let table: &[(&str, Result<Domain, ()>)] = &[
            ("Example.ORG", name("example.org")),
            ("example.org.", name("example.org")),
            ("localhost", name("localhost")),
            ("a-b.c0", name("a-b.c0")),
            ("bücher.example", name("bücher.example")),
            (
                "[192.0.2.1]",
                Ok(Domain::Literal(IpAddr::from([192, 0, 2, 1]))),
            ),
            (
                "[ipv6:::1]",
                Ok(Domain::Literal(IpAddr::from(Ipv6Addr::LOCALHOST))),
            ),
            (
                "[x400:c=us;a=b]",
                Ok(Domain::General("x400:c=us;a=b".into())),
            ),
            ("", Err(())),
            (".", Err(())),
            ("example.org..", Err(())),
            ("-a.example", Err(())),
            ("a-.example", Err(())),
            ("a_b.example", Err(())),
            ("a b.example", Err(())),
            ("[192.0.2]", Err(())),
            ("[192.0.2.01]", Err(())),
            ("[IPv6:192.0.2.1]", Err(())),
            ("[tag:]", Err(())),
            ("[-tag:x]", Err(())),
            ("[tag:a[b]", Err(())),
            ("[192.0.2.1].", Err(())),
        ];
        for (text, want) in table {
            assert_eq!(
                &Domain::parse(text).map_err(|_| ()),
                want,
                "domain {text:?}"
            );
        }
    }

    #[test]
    fn mailboxes_round_trip() {
        for text in [
            "a@b.example",
            "\"a b\"@b.example",
            "\"a\\\"b\"@[192.0.2.1]",
            "ü@ü.example",
        ] {
            let mailbox = Mailbox::parse(text).unwrap();
            assert_eq!(mailbox.to_string(), text);
        }
        let quoted_atom = Mailbox::parse("\"plain\"@b.example").unwrap();
        assert_eq!(quoted_atom.local, "plain");
        assert_eq!(quoted_atom.to_string(), "plain@b.example");
    }

    #[test]
    fn paths() {
        let mailbox = |l: &str, d: &str| {
            Ok(Path::Mailbox(Mailbox {
                local: l.into(),
                domain: Domain::Name(d.into()),
            }))
        };
        let table: &[(&[u8], Result<Path, ()>)] = &[
            (b"<>", Ok(Path::Null)),
            (b"<POSTMASTER>", Ok(Path::Postmaster)),
            (b"<a@B.example>", mailbox("a", "b.example")),
            (b"<@x.example:a@b.example>", mailbox("a", "b.example")),
            (
                b"<@x.example,@[192.0.2.1]:a@b.example>",
                mailbox("a", "b.example"),
            ),
            (b"<@x.example a@b.example>", Err(())),
            (b"<a@b.example", Err(())),
            (b"a@b.example>", Err(())),
            (b"<postmaster@>", Err(())),
            (b"<\xe9@b.example>", Err(())),
        ];
        for (raw, want) in table {
            assert_eq!(&parse_path(raw).map_err(|_| ()), want, "path {raw:?}");
        }
    }

    #[test]
    fn path_ends() {
        assert_eq!(path_end(b"<a@b> SIZE=1"), Some(4));
        assert_eq!(path_end(b"<\"a>b\"@c> x"), Some(8));
        assert_eq!(path_end(b"<\"a\\\">\"@c>"), Some(9));
        assert_eq!(path_end(b"<a@[t:>]>"), Some(8));
        assert_eq!(path_end(b"<a@b"), None);
        assert_eq!(path_end(b"<\"a>"), None);
    }
}
