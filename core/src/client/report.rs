//! What became of a message and of the connection, as the client tells the runtime.

use std::fmt;

use super::reply::{ReplyError, ServerReply};

/// The step of the conversation something happened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO, LHLO or HELO.
    Hello,
    /// STARTTLS and the TLS handshake.
    StartTls,
    /// Idle between messages.
    Idle,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA, up to its 354.
    Data,
    /// The message text and the reply (or LMTP replies) after it.
    Text,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

/// Why a session ended before its QUIT. Every recipient without a verdict is then
/// [`Verdict::NotSent`] with this error, which is temporary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The server answered a connection-level step with a failure (a greeting other than
    /// 220, EHLO and HELO both refused, STARTTLS refused under `Encrypt`, RSET refused), or
    /// said 421 at any point.
    Refused {
        /// Where.
        stage: Stage,
        /// The server's reply.
        reply: ServerReply,
    },
    /// The server sent something that is not a reply.
    Protocol {
        /// Where.
        stage: Stage,
        /// What was wrong.
        error: ReplyError,
    },
    /// No reply (or no message text from the runtime) within the configured time.
    Timeout {
        /// Where.
        stage: Stage,
    },
    /// The connection ended (EOF or an I/O error the runtime reported).
    ConnectionLost {
        /// Where.
        stage: Stage,
    },
    /// TLS is required but the server does not offer STARTTLS.
    TlsUnavailable,
    /// The runtime reported that the TLS handshake failed.
    TlsFailed,
    /// The runtime asked to quit in the middle of a message.
    Aborted,
}

/// The outcome for one recipient of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The server took responsibility for the message: its 2xx after the text (SMTP: the
    /// one reply; LMTP: this recipient's reply).
    Sent(ServerReply),
    /// The server refused, at MAIL, RCPT, DATA or after the text. A 4xx is temporary, a 5xx
    /// permanent.
    Refused {
        /// Where.
        stage: Stage,
        /// The server's reply.
        reply: ServerReply,
    },
    /// The message never reached the server for this recipient.
    NotSent(Problem),
}

/// Why a recipient's message was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The message needs SMTPUTF8 and the server does not offer it (permanent; RFC 6531
    /// section 3.4, Postfix's 5.6.7).
    NeedsSmtpUtf8,
    /// The message is larger than the server's announced SIZE limit (permanent, 5.3.4).
    TooBig {
        /// The server's limit.
        limit: u64,
    },
    /// The session failed first (temporary).
    Session(SessionError),
}

/// One recipient's results, in the order the recipients were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The reply to this recipient's RCPT, if one came.
    pub rcpt: Option<ServerReply>,
    /// The final outcome.
    pub verdict: Verdict,
}

/// What became of a message: one entry per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The reply to MAIL, if one came.
    pub mail: Option<ServerReply>,
    /// Per recipient, in the order given to [`super::Session::start_message`].
    pub recipients: Vec<RecipientReport>,
}

/// Why the runtime's call was refused. Nothing was written to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// [`super::Session::start_message`] outside of the [`super::Output::Ready`] state.
    NotReady,
    /// A message without recipients.
    NoRecipients,
    /// A CR, LF or other control character in the named field; it would let the text
    /// inject commands.
    ControlCharacter(&'static str),
    /// ENVID or ORCPT that is not xtext (RFC 3461 section 4), or an empty host name.
    Malformed(&'static str),
    /// BODY=BINARYMIME, which this client cannot send.
    Unsupported(&'static str),
}

impl Verdict {
    /// Whether the message was sent for this recipient.
    pub fn is_sent(&self) -> bool {
        matches!(self, Verdict::Sent(_))
    }

    /// Whether the failure is permanent (bounce) rather than temporary (retry). False for
    /// [`Verdict::Sent`].
    pub fn is_permanent(&self) -> bool {
        match self {
            Verdict::Sent(_) => false,
            Verdict::Refused { reply, .. } => reply.is_permanent(),
            Verdict::NotSent(problem) => problem.is_permanent(),
        }
    }
}

impl Problem {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Problem::Session(_))
    }
}

impl SessionError {
    /// The stage the session failed at, where there is one.
    pub fn stage(&self) -> Stage {
        match self {
            SessionError::Refused { stage, .. }
            | SessionError::Protocol { stage, .. }
            | SessionError::Timeout { stage }
            | SessionError::ConnectionLost { stage } => *stage,
            SessionError::TlsUnavailable | SessionError::TlsFailed => Stage::StartTls,
            SessionError::Aborted => Stage::Idle,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Greeting => "the greeting",
            Stage::Hello => "HELO/EHLO/LHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Idle => "idle",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Text => "end of data",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        })
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Refused { stage, reply } => write!(f, "{reply} (in reply to {stage})"),
            SessionError::Protocol { stage, error } => write!(f, "{error} (at {stage})"),
            SessionError::Timeout { stage } => write!(f, "conversation timed out at {stage}"),
            SessionError::ConnectionLost { stage } => write!(f, "lost connection at {stage}"),
            SessionError::TlsUnavailable => f.write_str("TLS is required, but was not offered"),
            SessionError::TlsFailed => f.write_str("TLS handshake failed"),
            SessionError::Aborted => f.write_str("delivery aborted"),
        }
    }
}

impl std::error::Error for SessionError {}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NeedsSmtpUtf8 => f.write_str("SMTPUTF8 is required, but was not offered"),
            Problem::TooBig { limit } => {
                write!(
                    f,
                    "message size exceeds the server's limit of {limit} octets"
                )
            }
            Problem::Session(error) => error.fmt(f),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NotReady => f.write_str("the session is not ready for a message"),
            InputError::NoRecipients => f.write_str("a message without recipients"),
            InputError::ControlCharacter(field) => write!(f, "control character in {field}"),
            InputError::Malformed(field) => write!(f, "malformed {field}"),
            InputError::Unsupported(what) => write!(f, "{what} is not supported"),
        }
    }
}

impl std::error::Error for InputError {}
