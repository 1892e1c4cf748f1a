//! SASL server mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login) and
//! SCRAM-SHA-256 (RFC 5802, RFC 7677).
//!
//! A [`SaslServer`] runs one exchange. It speaks raw bytes: the SMTP session does the base64
//! of RFC 4954 around it, and the Dovecot auth protocol ([`crate::dovecot`]) does its own.
//! For PLAIN and LOGIN it never checks a password itself: it hands back [`Credentials`] for
//! the runtime to judge. For SCRAM it asks the runtime for the stored keys
//! ([`Step::LookupScram`], answered with [`SaslServer::handle_scram_lookup`]) and checks the
//! client's proof itself.

mod scram;

use std::fmt;
use std::str::FromStr;

use self::scram::{ClientFirst, FinalOutcome, ServerFirstSent};
pub use self::scram::{
    DEFAULT_ITERATIONS, MIN_ITERATIONS, ScramCredentials, ScramFormatError, ScramLookup,
    ScramNonce, ScramSecret,
};

/// A SASL mechanism tern offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The LOGIN mechanism that Outlook-era clients still use.
    Login,
    /// RFC 7677, without channel binding.
    ScramSha256,
}

impl Mechanism {
    /// The IANA name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// Whether the password crosses the wire (Dovecot's `plaintext` mechanism flag).
    pub fn is_plaintext(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
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
            "SCRAM-SHA-256" => Ok(Mechanism::ScramSha256),
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

/// The runtime's verdict on [`Credentials`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    /// The credentials are right; `login` is the account's canonical name.
    Ok {
        /// The account name.
        login: String,
    },
    /// Wrong password or unknown user (the client is not told which).
    Fail,
    /// The credential backend could not be asked.
    TempFail,
}

/// An exchange that the mechanism itself verified (SCRAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The mechanism used.
    pub mechanism: Mechanism,
    /// The authorization identity; empty when the client asked for none.
    pub authzid: String,
    /// The authentication identity as the client gave it.
    pub login: String,
    /// The account's canonical name, from the runtime's lookup.
    pub account: String,
    /// The server's last message (SCRAM's server-final `v=...`), which the protocol must
    /// still deliver: SMTP as a 334 challenge, Dovecot's protocol in `OK`'s `resp=`.
    pub final_message: Vec<u8>,
}

/// The next step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (raw bytes; the protocol encodes it) and wait for a response.
    Challenge(Vec<u8>),
    /// The exchange is complete; check these credentials.
    Done(Credentials),
    /// Look up the SCRAM credentials of this login (as the client gave it) and answer with
    /// [`SaslServer::handle_scram_lookup`].
    LookupScram(String),
    /// The mechanism verified the client itself.
    Authenticated(Authenticated),
    /// Wrong password or unknown user, found by the mechanism itself (the client is not told
    /// which).
    Failed,
    /// The credential store could not be asked.
    Unavailable,
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
    ExpectScramClientFirst,
    AwaitScramLookup(ClientFirst),
    ExpectScramClientFinal(Box<ServerFirstSent>),
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
            Mechanism::ScramSha256 => SaslServer {
                state: State::ExpectScramClientFirst,
            },
        };
        let step = match (mechanism, initial) {
            (_, Some(response)) => server.step(response),
            (Mechanism::Plain | Mechanism::ScramSha256, None) => Step::Challenge(Vec::new()),
            (Mechanism::Login, None) => Step::Challenge(b"Username:".to_vec()),
        };
        (server, step)
    }

    /// Answers [`Step::LookupScram`] with the stored keys and the server's part of the
    /// nonce, which the runtime draws at random; `secret` derives stand-in keys for unknown
    /// users. Called in any other state, it returns [`Step::Malformed`].
    pub fn handle_scram_lookup(
        &mut self,
        lookup: ScramLookup,
        nonce: &ScramNonce,
        secret: &ScramSecret,
    ) -> Step {
        let State::AwaitScramLookup(first) = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Step::Malformed;
        };
        match scram::server_first(first, lookup, nonce, secret) {
            Some((sent, message)) => {
                self.state = State::ExpectScramClientFinal(Box::new(sent));
                Step::Challenge(message)
            }
            None => Step::Unavailable,
        }
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
            State::ExpectScramClientFirst => match scram::parse_client_first(response) {
                Some(first) => {
                    let login = first.login.clone();
                    self.state = State::AwaitScramLookup(first);
                    Step::LookupScram(login)
                }
                None => Step::Malformed,
            },
            State::ExpectScramClientFinal(sent) => {
                match scram::verify_client_final(*sent, response) {
                    FinalOutcome::Verified {
                        first,
                        account,
                        server_final,
                    } => Step::Authenticated(Authenticated {
                        mechanism: Mechanism::ScramSha256,
                        authzid: first.authzid,
                        login: first.login,
                        account,
                        final_message: server_final,
                    }),
                    FinalOutcome::Failed => Step::Failed,
                    FinalOutcome::Malformed => Step::Malformed,
                }
            }
            State::AwaitScramLookup(_) | State::Finished => Step::Malformed,
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
    fn scram_through_the_sasl_server() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credentials = ScramCredentials::from_password("pencil", &salt, 4096);
        let secret = ScramSecret::new(b"s".to_vec());
        let nonce = ScramNonce::new("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();

        let (mut server, step) = SaslServer::start(Mechanism::ScramSha256, None);
        assert_eq!(step, Step::Challenge(Vec::new()));
        assert_eq!(
            server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
            Step::LookupScram("user".into())
        );
        // Client input while the lookup is outstanding is a protocol error.
        let mut early = server.clone();
        assert_eq!(early.step(b"c=biws"), Step::Malformed);

        let lookup = ScramLookup::Found {
            account: "user@example.net".into(),
            credentials,
        };
        let Step::Challenge(first) = server.handle_scram_lookup(lookup, &nonce, &secret) else {
            panic!("expected server-first");
        };
        assert!(first.starts_with(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"));
        let step = server.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        assert_eq!(
            step,
            Step::Authenticated(Authenticated {
                mechanism: Mechanism::ScramSha256,
                authzid: String::new(),
                login: "user".into(),
                account: "user@example.net".into(),
                final_message: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            })
        );
        assert_eq!(server.step(b""), Step::Malformed);

        let (mut server, step) = SaslServer::start(Mechanism::ScramSha256, Some(b"n,,n=x,r=abc"));
        assert_eq!(step, Step::LookupScram("x".into()));
        assert_eq!(
            server.handle_scram_lookup(ScramLookup::TempFail, &nonce, &secret),
            Step::Unavailable
        );
        let (_, step) = SaslServer::start(Mechanism::ScramSha256, Some(b"p=tls-unique,,n=x,r=a"));
        assert_eq!(step, Step::Malformed);
        assert_eq!("scram-sha-256".parse(), Ok(Mechanism::ScramSha256));
        assert!(!Mechanism::ScramSha256.is_plaintext() && Mechanism::Login.is_plaintext());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let (_, step) = SaslServer::start(Mechanism::Plain, Some(b"\0alice\0topsecret"));
        assert!(!format!("{step:?}").contains("topsecret"));
    }
}
