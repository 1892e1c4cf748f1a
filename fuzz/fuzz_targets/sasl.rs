//! SASL exchanges (PLAIN, LOGIN) with arbitrary client messages, base64 or raw. Checks: no
//! panic; the outcome matches a plain reading of RFC 4616 and the LOGIN mechanism, written
//! here independently; once an exchange is done or malformed, every further step is
//! malformed.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use tern_core::sasl::{Mechanism, SaslServer, Step};

#[derive(Debug, Arbitrary)]
struct Exchange {
    login: bool,
    initial: Option<Message>,
    steps: Vec<Message>,
}

#[derive(Debug, Arbitrary)]
enum Message {
    Raw(Vec<u8>),
    /// Base64 text, as it arrives on the wire, decoded as the session would.
    Encoded(String),
    Plain {
        authzid: String,
        login: String,
        password: String,
    },
}

impl Message {
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Message::Raw(bytes) => Some(bytes.clone()),
            Message::Encoded(text) => BASE64.decode(text).ok(),
            Message::Plain {
                authzid,
                login,
                password,
            } => Some(format!("{authzid}\0{login}\0{password}").into_bytes()),
        }
    }
}

fuzz_target!(|exchange: Exchange| {
    let mechanism = if exchange.login {
        Mechanism::Login
    } else {
        Mechanism::Plain
    };
    let initial = exchange.initial.as_ref().and_then(Message::bytes);
    let (mut server, mut step) = SaslServer::start(mechanism, initial.as_deref());
    let mut model = Model::new(mechanism);
    let mut expected = match &initial {
        Some(bytes) => model.step(bytes),
        None => model.challenge(),
    };
    assert_eq!(describe(&step), expected, "initial {initial:?}");

    for message in exchange.steps.iter().take(8) {
        let Some(bytes) = message.bytes() else {
            continue;
        };
        let finished = !matches!(step, Step::Challenge(_));
        step = server.step(&bytes);
        expected = model.step(&bytes);
        if finished {
            assert_eq!(describe(&step), "malformed");
        }
        assert_eq!(describe(&step), expected, "{bytes:?}");
    }
});

fn describe(step: &Step) -> String {
    match step {
        Step::Challenge(c) => format!("challenge {c:?}"),
        Step::Done(c) => format!(
            "done {} {:?} {:?} {:?}",
            c.mechanism,
            c.authzid,
            c.login,
            c.password.expose()
        ),
        Step::Malformed => "malformed".to_owned(),
        // SCRAM's steps; PLAIN and LOGIN never take them.
        other => format!("unexpected {other:?}"),
    }
}

/// The mechanisms as their specifications read, for comparison.
enum Model {
    Plain,
    LoginUser,
    LoginPassword(String),
    Over,
}

impl Model {
    fn new(mechanism: Mechanism) -> Model {
        match mechanism {
            Mechanism::Login => Model::LoginUser,
            _ => Model::Plain,
        }
    }

    fn challenge(&self) -> String {
        match self {
            Model::Plain => format!("challenge {:?}", b""),
            _ => format!("challenge {:?}", b"Username:"),
        }
    }

    fn step(&mut self, bytes: &[u8]) -> String {
        match std::mem::replace(self, Model::Over) {
            Model::Plain => {
                let parts: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
                let texts: Option<Vec<&str>> =
                    parts.iter().map(|p| std::str::from_utf8(p).ok()).collect();
                match texts.as_deref() {
                    Some([authzid, login, password]) if !login.is_empty() => {
                        format!("done PLAIN {authzid:?} {login:?} {password:?}")
                    }
                    _ => "malformed".to_owned(),
                }
            }
            Model::LoginUser => match std::str::from_utf8(bytes) {
                Ok(user) if !user.is_empty() => {
                    *self = Model::LoginPassword(user.to_owned());
                    format!("challenge {:?}", b"Password:")
                }
                _ => "malformed".to_owned(),
            },
            Model::LoginPassword(user) => match std::str::from_utf8(bytes) {
                Ok(password) => format!("done LOGIN \"\" {user:?} {password:?}"),
                Err(_) => "malformed".to_owned(),
            },
            Model::Over => "malformed".to_owned(),
        }
    }
}
