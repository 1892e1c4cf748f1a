//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, without channel binding.
//!
//! The exchange has three messages from the client and two from the server:
//! client-first (`n,,n=user,r=cnonce`), server-first (`r=cnonce snonce,s=salt,i=4096`),
//! client-final (`c=biws,r=nonce,p=proof`), server-final (`v=signature`). Between the first
//! two the runtime looks up the stored keys and supplies the server nonce; core never makes
//! one up. Unknown users get credentials derived from a per-server [`ScramSecret`], so their
//! exchange looks the same and fails only at the proof, as a wrong password does.
//!
//! Passwords go through SASLprep (RFC 4013) before their keys are derived, as RFC 5802
//! asks and clients do on their side, so a password such as `I\u{AD}X` works from either
//! form; one that SASLprep refuses (control characters, unassigned code points) is used as
//! its UTF-8 bytes instead, so it stays usable with clients that do not prepare.
//!
//! Known limits: user names are not prepared (they are looked up as given, as Dovecot
//! does); the `-PLUS` variants are not offered, and a client asking for channel binding
//! (`p=`) is refused.
//! Unknown users appear to have 4096 iterations and a 16-byte salt: accounts stored with
//! other parameters can be told apart from unknown ones by their server-first message.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The iteration count of Dovecot's `{SCRAM-SHA-256}` scheme and of the RFC's example; also
/// what unknown users appear to have.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Dovecot refuses stored entries with fewer iterations (RFC 5802 section 5.1's SHOULD).
pub const MIN_ITERATIONS: u32 = 4096;

/// What the server stores for one account (RFC 5802 section 3): never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

/// Why a stored `{SCRAM-SHA-256}` entry could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramFormatError {
    /// Not four comma-separated fields.
    Fields,
    /// The iteration count is not a number of at least 4096.
    Iterations,
    /// The salt is not base64.
    Salt,
    /// A key is not base64 of 32 bytes.
    Key,
}

impl fmt::Display for ScramFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScramFormatError::Fields => "expected <iterations>,<salt>,<stored key>,<server key>",
            ScramFormatError::Iterations => "the iteration count must be a number >= 4096",
            ScramFormatError::Salt => "the salt is not valid base64",
            ScramFormatError::Key => "a key is not base64 of 32 bytes",
        })
    }
}

impl std::error::Error for ScramFormatError {}

impl ScramCredentials {
    /// Derives the stored keys from a password (RFC 5802 section 3), SASLprepared. The
    /// runtime picks the salt (16 random bytes is usual); `iterations` below 1 counts as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let prepared = stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password));
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Reads Dovecot's stored form, `<iterations>,<salt>,<stored key>,<server key>` with the
    /// last three in base64, with or without the `{SCRAM-SHA-256}` scheme prefix.
    pub fn from_dovecot(stored: &str) -> Result<Self, ScramFormatError> {
        let stored = stored.strip_prefix("{SCRAM-SHA-256}").unwrap_or(stored);
        let fields: Vec<&str> = stored.trim_end().split(',').collect();
        let [iterations, salt, stored_key, server_key] = fields[..] else {
            return Err(ScramFormatError::Fields);
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= MIN_ITERATIONS && !iterations.starts_with('+'))
            .ok_or(ScramFormatError::Iterations)?;
        let salt = BASE64.decode(salt).map_err(|_| ScramFormatError::Salt)?;
        let key = |text: &str| -> Result<[u8; 32], ScramFormatError> {
            let bytes = BASE64.decode(text).map_err(|_| ScramFormatError::Key)?;
            bytes.try_into().map_err(|_| ScramFormatError::Key)
        };
        Ok(ScramCredentials {
            salt,
            iterations,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }

    /// Dovecot's stored form, with the `{SCRAM-SHA-256}` prefix.
    pub fn to_dovecot(&self) -> String {
        format!(
            "{{SCRAM-SHA-256}}{},{},{},{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Stand-in credentials for an account that does not exist: stable for a given secret
    /// and login, unguessable without the secret, and shaped like a real account's.
    fn for_unknown_user(secret: &ScramSecret, login: &str) -> Self {
        let derive = |label: &[u8]| {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&secret.0)
                .expect("HMAC takes keys of any length");
            mac.update(label);
            mac.update(login.as_bytes());
            let out: [u8; 32] = mac.finalize().into_bytes().into();
            out
        };
        ScramCredentials {
            salt: derive(b"tern scram salt\0")[..16].to_vec(),
            iterations: DEFAULT_ITERATIONS,
            stored_key: derive(b"tern scram stored key\0"),
            server_key: derive(b"tern scram server key\0"),
        }
    }
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The per-server secret from which unknown users' stand-in credentials are derived. The
/// runtime makes it once (random, kept across restarts so answers stay stable).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret(Vec<u8>);

impl ScramSecret {
    /// Wraps the secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        ScramSecret(bytes)
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramSecret(..)")
    }
}

/// The server's part of the nonce: printable ASCII without commas (RFC 5802 section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramNonce(String);

impl ScramNonce {
    /// The nonce from random bytes the runtime drew (18 or more), base64-encoded.
    pub fn from_random(bytes: &[u8]) -> Self {
        ScramNonce(BASE64.encode(bytes))
    }

    /// A nonce given as text; `None` if it is empty or has a character RFC 5802 forbids.
    pub fn new(text: &str) -> Option<Self> {
        is_nonce(text).then(|| ScramNonce(text.to_owned()))
    }
}

/// The runtime's answer to a SCRAM credential lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramLookup {
    /// The account exists and has SCRAM credentials.
    Found {
        /// The account's canonical name, as [`super::AuthVerdict::Ok`] would give it.
        account: String,
        /// Its stored keys.
        credentials: ScramCredentials,
    },
    /// No such account (or none with SCRAM credentials): the exchange goes on with stand-in
    /// credentials and fails at the proof.
    UnknownUser,
    /// The credential store could not be asked.
    TempFail,
}

/// What client-first said.
#[derive(Debug, Clone)]
pub(super) struct ClientFirst {
    gs2_header: String,
    pub(super) authzid: String,
    pub(super) login: String,
    bare: String,
    nonce: String,
}

/// An exchange waiting for client-final.
#[derive(Debug, Clone)]
pub(super) struct ServerFirstSent {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    credentials: ScramCredentials,
    /// The account name, or `None` for stand-in credentials (which must never succeed).
    account: Option<String>,
}

/// How client-final ended.
pub(super) enum FinalOutcome {
    /// The proof is right: the account, and the server-final message.
    Verified {
        first: ClientFirst,
        account: String,
        server_final: Vec<u8>,
    },
    /// Wrong proof, or an unknown user.
    Failed,
    /// Not a client-final message, or one that contradicts client-first.
    Malformed,
}

/// RFC 5802 section 7: `gs2-header client-first-message-bare`.
pub(super) fn parse_client_first(message: &[u8]) -> Option<ClientFirst> {
    let text = std::str::from_utf8(message).ok()?;
    let (flag, rest) = text.split_once(',')?;
    // Only "n" and "y": "p=" asks for channel binding, which tern does not offer.
    if flag != "n" && flag != "y" {
        return None;
    }
    let (authzid, bare) = rest.split_once(',')?;
    let authzid = match authzid {
        "" => String::new(),
        a => decode_saslname(a.strip_prefix("a=")?)?,
    };
    let gs2_header = text[..text.len() - bare.len()].to_owned();

    // A mandatory extension ("m=") must make the exchange fail (section 5.1).
    let mut attributes = bare.split(',');
    let login = decode_saslname(attributes.next()?.strip_prefix("n=")?)?;
    let nonce = attributes.next()?.strip_prefix("r=")?;
    if login.is_empty() || !is_nonce(nonce) {
        return None;
    }
    if !attributes.all(is_extension) {
        return None;
    }
    Some(ClientFirst {
        gs2_header,
        authzid,
        login,
        bare: bare.to_owned(),
        nonce: nonce.to_owned(),
    })
}

/// Builds server-first from the runtime's answer; `None` for [`ScramLookup::TempFail`].
pub(super) fn server_first(
    first: ClientFirst,
    lookup: ScramLookup,
    nonce: &ScramNonce,
    secret: &ScramSecret,
) -> Option<(ServerFirstSent, Vec<u8>)> {
    let (account, credentials) = match lookup {
        ScramLookup::Found {
            account,
            credentials,
        } => (Some(account), credentials),
        ScramLookup::UnknownUser => (
            None,
            ScramCredentials::for_unknown_user(secret, &first.login),
        ),
        ScramLookup::TempFail => return None,
    };
    let full_nonce = format!("{}{}", first.nonce, nonce.0);
    let server_first = format!(
        "r={full_nonce},s={},i={}",
        BASE64.encode(&credentials.salt),
        credentials.iterations
    );
    let message = server_first.clone().into_bytes();
    let sent = ServerFirstSent {
        first,
        server_first,
        nonce: full_nonce,
        credentials,
        account,
    };
    Some((sent, message))
}

/// RFC 5802 sections 3 and 7: checks `c=`, `r=` and `p=` of client-final.
pub(super) fn verify_client_final(sent: ServerFirstSent, message: &[u8]) -> FinalOutcome {
    let Some(text) = std::str::from_utf8(message).ok() else {
        return FinalOutcome::Malformed;
    };
    // The proof comes last; everything before it is signed.
    let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
        return FinalOutcome::Malformed;
    };
    let mut attributes = without_proof.split(',');
    let (Some(binding), Some(nonce)) = (
        attributes.next().and_then(|a| a.strip_prefix("c=")),
        attributes.next().and_then(|a| a.strip_prefix("r=")),
    ) else {
        return FinalOutcome::Malformed;
    };
    if !attributes.all(is_extension) {
        return FinalOutcome::Malformed;
    }
    let Ok(proof) = BASE64.decode(proof) else {
        return FinalOutcome::Malformed;
    };
    // Without channel binding, c= carries the gs2 header back unchanged (biws for "n,,").
    let binding_ok = BASE64
        .decode(binding)
        .is_ok_and(|b| b == sent.first.gs2_header.as_bytes());
    if !binding_ok || nonce != sent.nonce {
        return FinalOutcome::Malformed;
    }

    let auth_message = format!(
        "{},{},{}",
        sent.first.bare, sent.server_first, without_proof
    );
    let signature = hmac(&sent.credentials.stored_key, auth_message.as_bytes());
    let proof_ok = proof.len() == 32 && {
        let mut client_key = [0u8; 32];
        for (i, byte) in client_key.iter_mut().enumerate() {
            *byte = proof[i] ^ signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        constant_time_eq(&stored, &sent.credentials.stored_key)
    };
    match sent.account {
        Some(account) if proof_ok => {
            let server_signature = hmac(&sent.credentials.server_key, auth_message.as_bytes());
            let server_final = format!("v={}", BASE64.encode(server_signature)).into_bytes();
            FinalOutcome::Verified {
                first: sent.first,
                account,
                server_final,
            }
        }
        _ => FinalOutcome::Failed,
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 5802 section 5.1: `,` and `=` travel as `=2C` and `=3D`; any other `=` is an error.
fn decode_saslname(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// `printable = %x21-2B / %x2D-7E` (no comma), at least one.
fn is_nonce(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An optional extension `x=value`; "m" is reserved and mandatory, so it is refused.
fn is_extension(attribute: &str) -> bool {
    let bytes = attribute.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[0] != b'm' && bytes[1] == b'='
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3.
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    pub(crate) fn pencil() -> ScramCredentials {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredentials::from_password("pencil", &salt, 4096)
    }

    fn secret() -> ScramSecret {
        ScramSecret::new(b"server secret".to_vec())
    }

    fn run(lookup: ScramLookup, client_final: &str) -> (Vec<u8>, FinalOutcome) {
        let first = parse_client_first(CLIENT_FIRST.as_bytes()).unwrap();
        let nonce = ScramNonce::new(SERVER_NONCE).unwrap();
        let (sent, message) = server_first(first, lookup, &nonce, &secret()).unwrap();
        (message, verify_client_final(sent, client_final.as_bytes()))
    }

    #[test]
    fn rfc_7677_example_reproduces_exactly() {
        let lookup = ScramLookup::Found {
            account: "user".into(),
            credentials: pencil(),
        };
        let (message, outcome) = run(lookup, CLIENT_FINAL);
        assert_eq!(String::from_utf8(message).unwrap(), SERVER_FIRST);
        let FinalOutcome::Verified {
            account,
            server_final,
            first,
        } = outcome
        else {
            panic!("the RFC's proof must verify");
        };
        assert_eq!(account, "user");
        assert_eq!(first.login, "user");
        assert_eq!(String::from_utf8(server_final).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn passwords_are_saslprepared() {
        let keys = |password: &str| ScramCredentials::from_password(password, b"salt", 4096);
        // RFC 4013 section 3's examples: a soft hyphen maps to nothing, ROMAN NUMERAL NINE
        // is "IX" under NFKC, a non-ASCII space is a space.
        assert_eq!(keys("I\u{AD}X"), keys("IX"));
        assert_eq!(keys("\u{2168}"), keys("IX"));
        assert_eq!(keys("a\u{A0}b"), keys("a b"));
        assert_ne!(keys("IX"), keys("ix"));
        // Refused by SASLprep (a control character): used as it is, not as something else.
        assert_ne!(keys("a\u{7}b"), keys("ab"));
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        let wrong = ScramLookup::Found {
            account: "user".into(),
            credentials: ScramCredentials::from_password("pen", &pencil().salt, 4096),
        };
        let (_, outcome) = run(wrong, CLIENT_FINAL);
        assert!(matches!(outcome, FinalOutcome::Failed));

        let (message, outcome) = run(ScramLookup::UnknownUser, CLIENT_FINAL);
        assert!(matches!(outcome, FinalOutcome::Failed));
        // Shaped like a real server-first, and the same every time for the same user.
        let text = String::from_utf8(message.clone()).unwrap();
        assert!(text.ends_with(",i=4096"), "{text}");
        assert_eq!(run(ScramLookup::UnknownUser, CLIENT_FINAL).0, message);
        let other = ScramCredentials::for_unknown_user(&secret(), "someone");
        assert_ne!(other, ScramCredentials::for_unknown_user(&secret(), "user"));
        assert_eq!(other.salt.len(), 16);
    }

    #[test]
    fn stand_in_credentials_never_verify_even_with_their_own_proof() {
        // A client that somehow knew the stand-in keys still gets no account.
        let stand_in = ScramCredentials::for_unknown_user(&secret(), "user");
        let first = parse_client_first(CLIENT_FIRST.as_bytes()).unwrap();
        let nonce = ScramNonce::new(SERVER_NONCE).unwrap();
        let (sent, _) = server_first(first, ScramLookup::UnknownUser, &nonce, &secret()).unwrap();
        assert_eq!(sent.credentials, stand_in);
        assert!(sent.account.is_none());
    }

    #[test]
    fn client_final_must_match_client_first() {
        let found = || ScramLookup::Found {
            account: "user".into(),
            credentials: pencil(),
        };
        for bad in [
            // Channel binding flag changed ("y,," instead of "n,,").
            CLIENT_FINAL.replace("c=biws", "c=eSws"),
            // Nonce changed.
            CLIENT_FINAL.replace("hNlF$k0", "hNlF$k1"),
            // No proof; proof not base64.
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            CLIENT_FINAL.replace("p=dHzb", "p=!Hzb"),
            // Mandatory extension.
            CLIENT_FINAL.replace(",p=", ",m=x,p="),
        ] {
            assert!(
                matches!(run(found(), &bad).1, FinalOutcome::Malformed),
                "{bad}"
            );
        }
        // A proof of the wrong length or value is a failure, not a syntax error.
        let short =
            CLIENT_FINAL.replace("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "p=AAAA");
        assert!(matches!(run(found(), &short).1, FinalOutcome::Failed));
        let flipped = CLIENT_FINAL.replace("p=dHzb", "p=eHzb");
        assert!(matches!(run(found(), &flipped).1, FinalOutcome::Failed));
    }

    #[test]
    fn client_first_parsing() {
        let first = parse_client_first(b"y,a=ad=2Cmin,n=us=3Der,r=abc,x=ext").unwrap();
        assert_eq!(
            (
                first.authzid.as_str(),
                first.login.as_str(),
                first.gs2_header.as_str()
            ),
            ("ad,min", "us=er", "y,a=ad=2Cmin,")
        );
        assert_eq!(first.bare, "n=us=3Der,r=abc,x=ext");
        for bad in [
            &b"p=tls-unique,,n=user,r=abc"[..],
            b"n,,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=2er,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user,r=a,b",
            b"n,,n=user,r=",
            b"n,b=x,n=user,r=abc",
            b"n,,n=user,r=abc,m=mandatory",
            b"\xff,,n=user,r=abc",
            b"",
        ] {
            assert!(parse_client_first(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn dovecot_stored_format_round_trips() {
        let stored = pencil().to_dovecot();
        assert!(stored.starts_with("{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"));
        assert_eq!(ScramCredentials::from_dovecot(&stored), Ok(pencil()));
        let bare = stored.trim_start_matches("{SCRAM-SHA-256}");
        assert_eq!(ScramCredentials::from_dovecot(bare), Ok(pencil()));

        let parts: Vec<&str> = bare.split(',').collect();
        let with = |i: usize, v: &str| {
            let mut p = parts.clone();
            p[i] = v;
            p.join(",")
        };
        assert_eq!(
            ScramCredentials::from_dovecot("4096,abc"),
            Err(ScramFormatError::Fields)
        );
        assert_eq!(
            ScramCredentials::from_dovecot(&with(0, "1000")),
            Err(ScramFormatError::Iterations)
        );
        assert_eq!(
            ScramCredentials::from_dovecot(&with(1, "!!")),
            Err(ScramFormatError::Salt)
        );
        assert_eq!(
            ScramCredentials::from_dovecot(&with(2, "AAAA")),
            Err(ScramFormatError::Key)
        );
    }

    #[test]
    fn nothing_secret_in_debug_output() {
        let text = format!("{:?} {:?}", pencil(), secret());
        assert!(!text.contains("stored_key") && !text.contains("server secret"));
        assert!(ScramNonce::new("a,b").is_none() && ScramNonce::new("").is_none());
        assert_eq!(ScramNonce::from_random(&[0xfb; 3]).0, "+/v7");
    }
}
