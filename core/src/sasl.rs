//! SASL server mechanisms: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login).
//!
//! A [`SaslServer`] runs one exchange. It speaks raw bytes: the SMTP session does the base64
//! of RFC 4954 around it, so the same mechanisms can serve the Dovecot auth protocol later.
//! It never checks a password itself; it hands back [`Credentials`] for the runtime to judge.

use std::fmt;
use std::str::FromStr;

/// A SASL mechanism tern offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The LOGIN mechanism that Outlook-era clients still use.
    Login,
}

impl Mechanism {
    /// The IANA name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mechanism {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Mechanism::Plain),
            "LOGIN" => Ok(Mechanism::Login),
            _ => Err(()),
        }
    }
}

/// A password that never shows in `Debug` output, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(password: String) -> Self {
        Secret(password)
    }

    /// The password itself; call only where it is checked.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a finished exchange claims: who, for whom, with which password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The mechanism used.
    pub mechanism: Mechanism,
    /// The authorization identity; empty when the client asked for none.
    pub authzid: String,
    /// The authentication identity (the login).
    pub login: String,
    /// The password.
    pub password: Secret,
}

/// The next step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (raw bytes; the protocol encodes it) and wait for a response.
    Challenge(Vec<u8>),
    /// The exchange is complete; check these credentials.
    Done(Credentials),
    /// The client's message is malformed for this mechanism.
    Malformed,
}

/// One server-side SASL exchange.
#[derive(Debug, Clone)]
pub struct SaslServer {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    ExpectPlainResponse,
    ExpectLoginUsername,
    ExpectLoginPassword { login: String },
    Finished,
}

impl SaslServer {
    /// Starts an exchange. `initial` is the decoded initial response, if the client sent one.
    pub fn start(mechanism: Mechanism, initial: Option<&[u8]>) -> (Self, Step) {
        let mut server = match mechanism {
            Mechanism::Plain => SaslServer {
                state: State::ExpectPlainResponse,
            },
            Mechanism::Login => SaslServer {
                state: State::ExpectLoginUsername,
            },
        };
        let step = match (mechanism, initial) {
            (_, Some(response)) => server.step(response),
            (Mechanism::Plain, None) => Step::Challenge(Vec::new()),
            (Mechanism::Login, None) => Step::Challenge(b"Username:".to_vec()),
        };
        (server, step)
    }

    /// Feeds the client's next (decoded) response.
    pub fn step(&mut self, response: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::ExpectPlainResponse => parse_plain(response),
            State::ExpectLoginUsername => match utf8(response) {
                Some(login) if !login.is_empty() => {
                    self.state = State::ExpectLoginPassword { login };
                    Step::Challenge(b"Password:".to_vec())
                }
                _ => Step::Malformed,
            },
            State::ExpectLoginPassword { login } => match utf8(response) {
                Some(password) => Step::Done(Credentials {
                    mechanism: Mechanism::Login,
                    authzid: String::new(),
                    login,
                    password: Secret(password),
                }),
                None => Step::Malformed,
            },
            State::Finished => Step::Malformed,
        }
    }
}

/// RFC 4616 section 2: `[authzid] NUL authcid NUL passwd`, UTF-8, no NUL inside the parts.
fn parse_plain(message: &[u8]) -> Step {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(login), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Malformed;
    };
    match (utf8(authzid), utf8(login), utf8(password)) {
        (Some(authzid), Some(login), Some(password)) if !login.is_empty() => {
            Step::Done(Credentials {
                mechanism: Mechanism::Plain,
                authzid,
                login,
                password: Secret(password),
            })
        }
        _ => Step::Malformed,
    }
}

fn utf8(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(step: Step) -> Credentials {
        match step {
            Step::Done(credentials) => credentials,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    #[test]
    fn plain_with_initial_response() {
        let (_, step) = SaslServer::start(Mechanism::Plain, Some(b"\0alice\0secret"));
        let credentials = done(step);
        assert_eq!(credentials.login, "alice");
        assert_eq!(credentials.password.expose(), "secret");
        assert_eq!(credentials.authzid, "");
    }

    #[test]
    fn plain_without_initial_response_asks_with_empty_challenge() {
        let (mut server, step) = SaslServer::start(Mechanism::Plain, None);
        assert_eq!(step, Step::Challenge(Vec::new()));
        let credentials = done(server.step(b"admin\0alice\0pw"));
        assert_eq!(credentials.authzid, "admin");
    }

    #[test]
    fn plain_rejects_malformed_messages() {
        for bad in [
            &b"alice\0secret"[..],
            b"\0\0pw",
            b"a\0b\0c\0d",
            b"\0\xff\0pw",
            b"",
        ] {
            let (_, step) = SaslServer::start(Mechanism::Plain, Some(bad));
            assert_eq!(step, Step::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn login_asks_username_then_password() {
        let (mut server, step) = SaslServer::start(Mechanism::Login, None);
        assert_eq!(step, Step::Challenge(b"Username:".to_vec()));
        assert_eq!(server.step(b"bob"), Step::Challenge(b"Password:".to_vec()));
        let credentials = done(server.step(b"hunter2"));
        assert_eq!(
            (credentials.login.as_str(), credentials.password.expose()),
            ("bob", "hunter2")
        );
        assert_eq!(server.step(b"again"), Step::Malformed);
    }

    #[test]
    fn login_takes_the_username_as_initial_response() {
        let (mut server, step) = SaslServer::start(Mechanism::Login, Some(b"bob"));
        assert_eq!(step, Step::Challenge(b"Password:".to_vec()));
        assert_eq!(done(server.step(b"pw")).login, "bob");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let (_, step) = SaslServer::start(Mechanism::Plain, Some(b"\0alice\0topsecret"));
        assert!(!format!("{step:?}").contains("topsecret"));
    }
}
