//! What a session needs to know about its listener and site.

use std::time::Duration;

use crate::policy::Restriction;
use crate::recipient::Policy;
use crate::reply::Mode;
use crate::sasl::{Mechanism, ScramSecret};

/// A listener's TLS setting (SPEC.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    None,
    /// STARTTLS offered.
    May,
    /// STARTTLS required before anything but EHLO/HELO/STARTTLS/NOOP/RSET/QUIT.
    Encrypt,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// A listener's AUTH setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// AUTH is not offered.
    None,
    /// AUTH is offered.
    Optional,
    /// MAIL needs a successful AUTH first.
    Required,
}

/// The limits of SPEC.md section 2's `[limits]` that a session enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in octets, as received (CRLF line ends).
    pub message_size: u64,
    /// Most distinct recipients per message.
    pub recipients: usize,
    /// Idle time allowed while waiting for a command.
    pub command_timeout: Duration,
    /// Idle time allowed inside DATA or BDAT.
    pub data_timeout: Duration,
    /// Hard errors before the session is closed.
    pub errors: u32,
    /// Failed AUTH attempts before the session is closed.
    pub auth_failures: u32,
    /// How long a failed AUTH waits before its 535.
    pub auth_failure_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_size: 10_240_000,
            recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            errors: 20,
            auth_failures: 3,
            auth_failure_delay: Duration::from_secs(2),
        }
    }
}

/// Everything a session is configured with; shared by every session of a listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our host name, for the greeting and EHLO.
    pub hostname: String,
    /// SMTP or LMTP.
    pub mode: Mode,
    /// The listener's TLS setting.
    pub tls: TlsMode,
    /// The listener's AUTH setting.
    pub auth: AuthMode,
    /// Whether AUTH is allowed without TLS.
    pub plaintext_auth: bool,
    /// The SASL mechanisms offered, in order. List SCRAM-SHA-256 only where the credential
    /// store can serve SCRAM keys (accounts stored as `{SCRAM-SHA-256}` or `{PLAIN}`).
    pub mechanisms: Vec<Mechanism>,
    /// The per-server secret for SCRAM's stand-in credentials of unknown users; without it
    /// SCRAM-SHA-256 is not offered even if listed.
    pub scram_secret: Option<ScramSecret>,
    /// The RCPT restrictions, in order (ignored in LMTP mode).
    pub restrictions: Vec<Restriction>,
    /// The limits.
    pub limits: Limits,
    /// Local domains, trusted networks, aliases, the recipient delimiter.
    pub policy: Policy,
}

impl Config {
    /// A configuration with SPEC.md's defaults for an SMTP listener on `hostname`.
    pub fn new(hostname: &str, mode: Mode) -> Self {
        let restrictions = match mode {
            Mode::Smtp => vec![
                Restriction::PermitMynetworks,
                Restriction::PermitSaslAuthenticated,
                Restriction::RejectUnauthDestination,
                Restriction::Permit,
            ],
            Mode::Lmtp => Vec::new(),
        };
        Config {
            hostname: hostname.to_owned(),
            mode,
            tls: TlsMode::None,
            auth: match mode {
                Mode::Smtp => AuthMode::Optional,
                Mode::Lmtp => AuthMode::None,
            },
            plaintext_auth: false,
            mechanisms: vec![Mechanism::Plain, Mechanism::Login],
            scram_secret: None,
            restrictions,
            limits: Limits::default(),
            policy: Policy {
                domains: vec![hostname.to_lowercase()],
                recipient_delimiter: "+".to_owned(),
                ..Policy::default()
            },
        }
    }
}
