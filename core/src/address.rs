//! Mailbox addresses as RFC 5321 section 4.1.2 writes them, and the canonical form that
//! the relay decision and delivery both use (SPEC.md section 2).

use std::fmt;
use std::net::IpAddr;

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

impl Mailbox {
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
        && local.chars().all(|c| !c.is_ascii() || is_atext(c as u8) || c == '.')
}

/// RFC 5322 `atext`.
pub fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}
