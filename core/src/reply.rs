//! Every reply the SMTP/LMTP server sends, built in one place (SPEC.md section 4).
//!
//! Handlers name a [`Reply`]; only [`Reply::write`] turns it into bytes. Enhanced status
//! codes (RFC 2034, RFC 3463) go on every reply except the greeting, the EHLO/HELO/LHLO
//! answer, 354 and the 334 SASL challenges, which have none, as Postfix does.

use std::fmt::Write as _;

use crate::address::Mailbox;
use crate::command::CommandError;

/// Which greeting and verb set the session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SMTP (RFC 5321), for ports 25, 587 and 465.
    Smtp,
    /// LMTP (RFC 2033).
    Lmtp,
}

/// A reply, named for the situation that calls for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 220 greeting.
    Greeting {
        /// Our host name.
        hostname: String,
        /// SMTP or LMTP.
        mode: Mode,
    },
    /// The EHLO/LHLO answer: host name first, then one keyword per line.
    Ehlo {
        /// Our host name.
        hostname: String,
        /// The extension keywords, in advertised order.
        extensions: Vec<String>,
    },
    /// The HELO answer.
    Helo {
        /// Our host name.
        hostname: String,
    },
    /// 250 2.0.0 Ok (NOOP, RSET).
    Ok,
    /// 250 2.1.0 Ok (MAIL).
    SenderOk,
    /// 250 2.1.5 Ok (RCPT).
    RecipientOk,
    /// 354 (DATA).
    StartData,
    /// 250 for one BDAT chunk that is not the last.
    ChunkOk {
        /// Octets in the chunk.
        size: u64,
    },
    /// 250 2.0.0 after the data (SMTP).
    Queued {
        /// The queue id the runtime gave.
        queue_id: String,
    },
    /// 250 2.1.5 for one recipient after the data (LMTP).
    Delivered {
        /// The recipient as it was given.
        recipient: Mailbox,
    },
    /// 221 2.0.0 (QUIT).
    Bye,
    /// 252 2.0.0 (VRFY, EXPN): tern does not reveal accounts.
    CannotVerify,
    /// 214 2.0.0 (HELP).
    Help,
    /// 220 2.0.0 (STARTTLS).
    ReadyToStartTls,
    /// 334 with a base64 challenge (may be empty).
    Challenge(String),
    /// 235 2.7.0.
    AuthSucceeded,
    /// 535 5.7.8.
    AuthFailed,
    /// 454 4.7.0: the credential backend is unreachable.
    AuthUnavailable,
    /// 501 5.0.0: the client cancelled with `*`.
    AuthCancelled,
    /// 501 5.5.2: a SASL response that is not base64.
    AuthBadBase64,
    /// 501 5.5.2: a SASL response that decodes to nonsense for its mechanism.
    AuthMalformed,
    /// 504 5.5.4.
    AuthUnknownMechanism,
    /// 538 5.7.11: AUTH without TLS where plaintext AUTH is not allowed.
    AuthNeedsEncryption,
    /// 503 5.5.1: AUTH on a listener without AUTH.
    AuthNotEnabled,
    /// 503 5.5.1: AUTH after a successful AUTH.
    AlreadyAuthenticated,
    /// 503 5.5.1: AUTH inside a mail transaction.
    AuthInTransaction,
    /// 530 5.7.0 Must issue a STARTTLS command first.
    StartTlsFirst,
    /// 530 5.7.0 Authentication required.
    AuthRequired,
    /// 454 4.7.0 / 503: STARTTLS where it is not offered.
    TlsNotAvailable,
    /// 503 5.5.1: a command out of sequence.
    BadSequence(&'static str),
    /// 500 5.5.2: unknown command.
    Unrecognized,
    /// 500 5.5.2: a command line over the length limit.
    LineTooLong,
    /// 500 5.5.6: a SASL response line over its length limit.
    AuthLineTooLong,
    /// 500 5.5.2: a control byte in a command.
    ControlByte,
    /// 501 5.5.4: bad arguments.
    Syntax,
    /// 501 5.1.7: bad sender address.
    BadSender,
    /// 501 5.1.3: bad recipient address.
    BadRecipient,
    /// 555 5.5.4: an unsupported MAIL/RCPT parameter.
    UnsupportedParameter,
    /// 553 5.6.7: a UTF-8 address without SMTPUTF8 (RFC 6531 section 3.4).
    NeedsSmtpUtf8,
    /// 552 5.3.4: over the size limit.
    TooBig,
    /// 452 4.5.3: over the recipient limit.
    TooManyRecipients,
    /// 554 5.7.1 Relay access denied.
    RelayDenied(Mailbox),
    /// 550 5.1.1 User unknown.
    UnknownUser(Mailbox),
    /// 504 5.5.2: recipient domain not fully qualified.
    NonFqdnRecipient(Mailbox),
    /// 550 5.1.2: recipient domain does not exist.
    UnknownDomain(Mailbox),
    /// 450 4.1.2: recipient domain lookup failed for now.
    DomainTempFail(Mailbox),
    /// 451 4.3.0: a recipient lookup failed for now.
    RecipientTempFail(Mailbox),
    /// 553 5.7.1: the sender is not owned by the authenticated user.
    SenderLoginMismatch {
        /// The sender address.
        sender: String,
        /// The authenticated login.
        login: String,
    },
    /// 554 5.7.1: refused by a `reject` restriction.
    AccessDenied(Mailbox),
    /// 451 4.3.0: local delivery failed.
    DeliveryFailed,
    /// 452 4.3.1: local delivery failed for lack of space.
    DiskFull,
    /// 550 5.1.1 after the data (LMTP): the account disappeared.
    DeliveryUnknownUser(Mailbox),
    /// 554 5.3.0: the runtime refused the message for good.
    DeliveryRejected,
    /// 421 4.4.2: idle too long.
    Timeout {
        /// Our host name.
        hostname: String,
    },
    /// 421 4.7.0: too many errors.
    TooManyErrors {
        /// Our host name.
        hostname: String,
    },
    /// 421 4.7.0: too many failed AUTH attempts.
    TooManyAuthFailures {
        /// Our host name.
        hostname: String,
    },
    /// 421 4.7.0: the listener or the client's address has too many sessions already; the
    /// runtime sends it instead of starting a session.
    TooManyConnections {
        /// Our host name.
        hostname: String,
    },
    /// 421 4.3.2: the server is shutting down.
    ShuttingDown {
        /// Our host name.
        hostname: String,
    },
    /// 521 5.5.2: bare CR or LF (SMTP smuggling defence).
    BareLineEnding,
    /// 521 5.7.0: an HTTP request on the SMTP port.
    Http,
}

impl Reply {
    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        use Reply::*;
        match self {
            Greeting { .. } | ReadyToStartTls => 220,
            Ehlo { .. } | Helo { .. } | Ok | SenderOk | RecipientOk | ChunkOk { .. } => 250,
            Queued { .. } | Delivered { .. } => 250,
            StartData => 354,
            Bye => 221,
            CannotVerify => 252,
            Help => 214,
            Challenge(_) => 334,
            AuthSucceeded => 235,
            AuthFailed => 535,
            AuthUnavailable | TlsNotAvailable => 454,
            AuthCancelled | AuthBadBase64 | AuthMalformed | Syntax | BadSender | BadRecipient => {
                501
            }
            AuthUnknownMechanism | NonFqdnRecipient(_) => 504,
            AuthNeedsEncryption => 538,
            AuthNotEnabled | AlreadyAuthenticated | AuthInTransaction | BadSequence(_) => 503,
            StartTlsFirst | AuthRequired => 530,
            Unrecognized | LineTooLong | AuthLineTooLong | ControlByte => 500,
            UnsupportedParameter => 555,
            NeedsSmtpUtf8 | SenderLoginMismatch { .. } => 553,
            TooBig => 552,
            TooManyRecipients | DiskFull => 452,
            RelayDenied(_) | AccessDenied(_) | DeliveryRejected => 554,
            UnknownUser(_) | UnknownDomain(_) | DeliveryUnknownUser(_) => 550,
            DomainTempFail(_) => 450,
            RecipientTempFail(_) | DeliveryFailed => 451,
            Timeout { .. } | TooManyErrors { .. } | TooManyAuthFailures { .. } => 421,
            ShuttingDown { .. } | TooManyConnections { .. } => 421,
            BareLineEnding | Http => 521,
        }
    }

    /// The RFC 3463 enhanced status code, where the reply carries one.
    pub fn enhanced(&self) -> Option<&'static str> {
        use Reply::*;
        let code = match self {
            Greeting { .. } | Ehlo { .. } | Helo { .. } | StartData | Challenge(_) => return None,
            Ok | ChunkOk { .. } | Queued { .. } | Bye | CannotVerify | Help => "2.0.0",
            ReadyToStartTls => "2.0.0",
            SenderOk => "2.1.0",
            RecipientOk | Delivered { .. } => "2.1.5",
            AuthSucceeded => "2.7.0",
            AuthFailed => "5.7.8",
            AuthUnavailable | TlsNotAvailable => "4.7.0",
            AuthCancelled => "5.0.0",
            AuthBadBase64 | AuthMalformed => "5.5.2",
            AuthUnknownMechanism | Syntax | UnsupportedParameter => "5.5.4",
            AuthNeedsEncryption => "5.7.11",
            AuthNotEnabled | AlreadyAuthenticated | AuthInTransaction | BadSequence(_) => "5.5.1",
            StartTlsFirst | AuthRequired => "5.7.0",
            Unrecognized | LineTooLong | ControlByte | NonFqdnRecipient(_) => "5.5.2",
            BareLineEnding => "5.5.2",
            AuthLineTooLong => "5.5.6",
            BadSender => "5.1.7",
            BadRecipient => "5.1.3",
            NeedsSmtpUtf8 => "5.6.7",
            TooBig => "5.3.4",
            TooManyRecipients => "4.5.3",
            RelayDenied(_) | AccessDenied(_) | SenderLoginMismatch { .. } => "5.7.1",
            UnknownUser(_) | DeliveryUnknownUser(_) => "5.1.1",
            UnknownDomain(_) => "5.1.2",
            DomainTempFail(_) => "4.1.2",
            RecipientTempFail(_) | DeliveryFailed => "4.3.0",
            DiskFull => "4.3.1",
            DeliveryRejected => "5.3.0",
            Timeout { .. } => "4.4.2",
            TooManyErrors { .. } | TooManyAuthFailures { .. } => "4.7.0",
            TooManyConnections { .. } => "4.7.0",
            ShuttingDown { .. } => "4.3.2",
            Http => "5.7.0",
        };
        Some(code)
    }

    /// Whether this reply counts toward the session's hard-error limit.
    pub fn is_hard_error(&self) -> bool {
        use Reply::*;
        matches!(
            self,
            BadSequence(_)
                | Unrecognized
                | LineTooLong
                | AuthLineTooLong
                | ControlByte
                | Syntax
                | BadSender
                | BadRecipient
                | UnsupportedParameter
                | NeedsSmtpUtf8
                | StartTlsFirst
                | AuthRequired
                | AuthNotEnabled
                | AlreadyAuthenticated
                | AuthInTransaction
                | AuthUnknownMechanism
                | AuthNeedsEncryption
                | TlsNotAvailable
        )
    }

    /// Appends the reply, CRLF-terminated, to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut line = String::with_capacity(64);
        if let Reply::Ehlo {
            hostname,
            extensions,
        } = self
        {
            let sep = if extensions.is_empty() { ' ' } else { '-' };
            let _ = write!(line, "250{sep}{hostname}\r\n");
            for (i, ext) in extensions.iter().enumerate() {
                let sep = if i + 1 == extensions.len() { ' ' } else { '-' };
                let _ = write!(line, "250{sep}{ext}\r\n");
            }
            out.extend_from_slice(line.as_bytes());
            return;
        }

        let _ = write!(line, "{}", self.code());
        line.push(' ');
        if let Some(enhanced) = self.enhanced() {
            line.push_str(enhanced);
            line.push(' ');
        }
        self.write_text(&mut line);
        line.push_str("\r\n");
        out.extend_from_slice(line.as_bytes());
    }

    fn write_text(&self, s: &mut String) {
        use Reply::*;
        let _ = match self {
            Greeting {
                hostname,
                mode: Mode::Smtp,
            } => write!(s, "{hostname} ESMTP tern"),
            Greeting {
                hostname,
                mode: Mode::Lmtp,
            } => write!(s, "{hostname} LMTP tern"),
            Ehlo { .. } => std::fmt::Result::Ok(()),
            Helo { hostname } => write!(s, "{hostname}"),
            Reply::Ok | SenderOk | RecipientOk => write!(s, "Ok"),
            StartData => write!(s, "End data with <CR><LF>.<CR><LF>"),
            ChunkOk { size } => write!(s, "Ok: {size} octets received"),
            Queued { queue_id } => write!(s, "Ok: queued as {queue_id}"),
            Delivered { recipient } => write!(s, "<{recipient}> Ok"),
            Bye => write!(s, "Bye"),
            CannotVerify => write!(s, "Cannot VRFY user, but will accept message"),
            Help => write!(s, "See RFC 5321"),
            ReadyToStartTls => write!(s, "Ready to start TLS"),
            Challenge(text) => write!(s, "{text}"),
            AuthSucceeded => write!(s, "Authentication successful"),
            AuthFailed => write!(s, "Error: authentication failed"),
            AuthUnavailable => write!(s, "Temporary authentication failure"),
            AuthCancelled => write!(s, "Authentication cancelled"),
            AuthBadBase64 => write!(s, "Error: invalid base64 data"),
            AuthMalformed => write!(s, "Error: malformed authentication response"),
            AuthUnknownMechanism => write!(s, "Error: unsupported authentication mechanism"),
            AuthNeedsEncryption => {
                write!(
                    s,
                    "Encryption required for requested authentication mechanism"
                )
            }
            AuthNotEnabled => write!(s, "Error: authentication not enabled"),
            AlreadyAuthenticated => write!(s, "Error: already authenticated"),
            AuthInTransaction => write!(s, "Error: MAIL transaction in progress"),
            StartTlsFirst => write!(s, "Must issue a STARTTLS command first"),
            AuthRequired => write!(s, "Authentication required"),
            TlsNotAvailable => write!(s, "TLS not available"),
            BadSequence(what) => write!(s, "Error: {what}"),
            Unrecognized => write!(s, "Error: command not recognized"),
            LineTooLong => write!(s, "Error: line too long"),
            AuthLineTooLong => write!(s, "Error: authentication response too long"),
            ControlByte => write!(s, "Error: control character in command"),
            Syntax => write!(s, "Error: syntax error in parameters"),
            BadSender => write!(s, "Error: bad sender address syntax"),
            BadRecipient => write!(s, "Error: bad recipient address syntax"),
            UnsupportedParameter => write!(s, "Error: unsupported parameter"),
            NeedsSmtpUtf8 => write!(s, "Error: non-ASCII address needs SMTPUTF8"),
            TooBig => write!(s, "Error: message file too big"),
            TooManyRecipients => write!(s, "Error: too many recipients"),
            RelayDenied(rcpt) => write!(s, "<{rcpt}>: Relay access denied"),
            UnknownUser(rcpt) => {
                write!(s, "<{rcpt}>: Recipient address rejected: User unknown")
            }
            NonFqdnRecipient(rcpt) => {
                write!(
                    s,
                    "<{rcpt}>: Recipient address rejected: need fully-qualified address"
                )
            }
            UnknownDomain(rcpt) => {
                write!(s, "<{rcpt}>: Recipient address rejected: Domain not found")
            }
            DomainTempFail(rcpt) => {
                write!(
                    s,
                    "<{rcpt}>: Recipient address rejected: Domain not found (temporary)"
                )
            }
            RecipientTempFail(rcpt) => {
                write!(
                    s,
                    "<{rcpt}>: Recipient address rejected: Temporary lookup failure"
                )
            }
            SenderLoginMismatch { sender, login } => {
                write!(
                    s,
                    "<{sender}>: Sender address rejected: not owned by user {login}"
                )
            }
            AccessDenied(rcpt) => write!(s, "<{rcpt}>: Recipient address rejected: Access denied"),
            DeliveryFailed => write!(s, "Error: local delivery failed, try again later"),
            DiskFull => write!(s, "Error: insufficient system storage"),
            DeliveryUnknownUser(rcpt) => write!(s, "<{rcpt}>: User unknown"),
            DeliveryRejected => write!(s, "Error: message refused"),
            Timeout { hostname } => write!(s, "{hostname} Error: timeout exceeded"),
            TooManyErrors { hostname } => write!(s, "{hostname} Error: too many errors"),
            TooManyAuthFailures { hostname } => {
                write!(s, "{hostname} Error: too many authentication failures")
            }
            TooManyConnections { hostname } => write!(s, "{hostname} Error: too many connections"),
            ShuttingDown { hostname } => write!(s, "{hostname} Service shutting down"),
            BareLineEnding => write!(s, "Error: bare CR or LF received"),
            Http => write!(s, "Error: HTTP request on the mail port"),
        };
    }
}

/// The reply for a command line that did not parse. This is the one place where parser
/// errors become replies.
pub fn for_command_error(error: CommandError) -> Reply {
    match error {
        CommandError::Unrecognized => Reply::Unrecognized,
        CommandError::Http => Reply::Http,
        CommandError::ControlByte => Reply::ControlByte,
        CommandError::Syntax => Reply::Syntax,
        CommandError::BadSender => Reply::BadSender,
        CommandError::BadRecipient => Reply::BadRecipient,
        CommandError::UnsupportedParameter => Reply::UnsupportedParameter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(reply: Reply) -> String {
        let mut out = Vec::new();
        reply.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn greeting_has_no_enhanced_code() {
        let greeting = Reply::Greeting {
            hostname: "mx.example".into(),
            mode: Mode::Smtp,
        };
        assert_eq!(text(greeting), "220 mx.example ESMTP tern\r\n");
        let greeting = Reply::Greeting {
            hostname: "mx.example".into(),
            mode: Mode::Lmtp,
        };
        assert_eq!(text(greeting), "220 mx.example LMTP tern\r\n");
    }

    #[test]
    fn ehlo_is_multiline() {
        let ehlo = Reply::Ehlo {
            hostname: "mx".into(),
            extensions: vec!["PIPELINING".into(), "CHUNKING".into()],
        };
        assert_eq!(text(ehlo), "250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    }

    #[test]
    fn codes_match_the_spec_table() {
        let cases = [
            (Reply::StartTlsFirst, "530 5.7.0 "),
            (Reply::AuthRequired, "530 5.7.0 "),
            (Reply::AuthNeedsEncryption, "538 5.7.11 "),
            (Reply::AuthSucceeded, "235 2.7.0 "),
            (Reply::AuthFailed, "535 5.7.8 "),
            (Reply::AlreadyAuthenticated, "503 5.5.1 "),
            (Reply::AuthUnknownMechanism, "504 5.5.4 "),
            (Reply::AuthUnavailable, "454 4.7.0 "),
            (Reply::AuthCancelled, "501 5.0.0 "),
            (Reply::AuthBadBase64, "501 5.5.2 "),
            (Reply::TooManyRecipients, "452 4.5.3 "),
            (Reply::TooBig, "552 5.3.4 "),
            (Reply::Syntax, "501 5.5.4 "),
            (Reply::BadRecipient, "501 5.1.3 "),
            (Reply::BadSender, "501 5.1.7 "),
            (Reply::UnsupportedParameter, "555 5.5.4 "),
            (Reply::Unrecognized, "500 5.5.2 "),
            (Reply::LineTooLong, "500 5.5.2 "),
            (Reply::AuthLineTooLong, "500 5.5.6 "),
            (Reply::BareLineEnding, "521 5.5.2 "),
            (Reply::Http, "521 5.7.0 "),
            (Reply::DeliveryFailed, "451 4.3.0 "),
            (Reply::DiskFull, "452 4.3.1 "),
            (Reply::ReadyToStartTls, "220 2.0.0 "),
            (
                Reply::Timeout {
                    hostname: "h".into(),
                },
                "421 4.4.2 ",
            ),
            (
                Reply::TooManyErrors {
                    hostname: "h".into(),
                },
                "421 4.7.0 ",
            ),
        ];
        for (reply, prefix) in cases {
            let line = text(reply.clone());
            assert!(line.starts_with(prefix), "{reply:?}: {line}");
        }
    }

    #[test]
    fn too_many_connections() {
        let reply = Reply::TooManyConnections {
            hostname: "mx.example".into(),
        };
        assert_eq!(
            text(reply),
            "421 4.7.0 mx.example Error: too many connections\r\n"
        );
    }

    #[test]
    fn relay_denied_names_the_recipient() {
        let rcpt = Mailbox {
            local: "bob".into(),
            domain: crate::address::Domain::Name("example.org".into()),
        };
        assert_eq!(
            text(Reply::RelayDenied(rcpt)),
            "554 5.7.1 <bob@example.org>: Relay access denied\r\n"
        );
    }
}
