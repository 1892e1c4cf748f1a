//! What a client session is configured with.

use std::time::Duration;

use crate::reply::Mode;

/// Whether to use STARTTLS (SPEC.md `relay_tls`; the runtime decides whether a certificate
/// must verify, which is why `verify` is not here: it is `Encrypt` to this machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never start TLS.
    None,
    /// Start TLS when the server offers it; go on in the clear when it does not, or when it
    /// refuses the STARTTLS command.
    May,
    /// Start TLS or give up on the connection.
    Encrypt,
}

/// How long to wait for each reply, and for the runtime's message text.
///
/// The defaults are RFC 5321 section 4.5.3.2's minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The 220 greeting: 5 minutes.
    pub greeting: Duration,
    /// EHLO/LHLO/HELO, STARTTLS (and the TLS handshake), RSET and QUIT: 5 minutes.
    pub command: Duration,
    /// MAIL: 5 minutes.
    pub mail: Duration,
    /// Each RCPT: 5 minutes.
    pub rcpt: Duration,
    /// The 354 to DATA: 2 minutes.
    pub data_init: Duration,
    /// Each piece of message text: the runtime must feed the next piece (which it does once
    /// the previous one is written) within this time, and each BDAT chunk's reply must come
    /// within it: 3 minutes.
    pub data_block: Duration,
    /// The reply to the final `.` or the last BDAT: 10 minutes.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let minutes = |n: u64| Duration::from_secs(60 * n);
        Timeouts {
            greeting: minutes(5),
            command: minutes(5),
            mail: minutes(5),
            rcpt: minutes(5),
            data_init: minutes(2),
            data_block: minutes(3),
            data_end: minutes(10),
        }
    }
}

/// Everything a client session needs to know; shared by the sessions of one transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our name for EHLO/LHLO/HELO.
    pub hostname: String,
    /// SMTP (EHLO, falling back to HELO) or LMTP (LHLO, one reply per recipient).
    pub mode: Mode,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// Whether to send with BDAT when the server offers CHUNKING (and PIPELINING, since
    /// the chunks are pipelined).
    pub chunking: bool,
    /// Reply timeouts.
    pub timeouts: Timeouts,
}

impl Config {
    /// A configuration with RFC 5321's timeouts, no TLS and BDAT where offered.
    pub fn new(hostname: &str, mode: Mode) -> Self {
        Config {
            hostname: hostname.to_owned(),
            mode,
            tls: TlsPolicy::None,
            chunking: true,
            timeouts: Timeouts::default(),
        }
    }
}
