//! Password schemes of Dovecot's passwd-file: `{SCHEME}hash` strings that `doveadm pw` writes
//! and Dovecot checks, so one accounts file serves both programs.
//!
//! Supported: `ARGON2ID` (PHC string), `BLF-CRYPT` (bcrypt), `SHA512-CRYPT` and `SHA256-CRYPT`
//! (glibc crypt), `PLAIN` (with its aliases `CLEAR` and `CLEARTEXT`), and `CRYPT`, the
//! passwd-file default, which picks one of the hashes above by its `$id$`.
//!
//! Not supported: Dovecot's encoding suffixes (`{PLAIN.b64}`, `{SHA256.HEX}`), the unsalted
//! digest schemes (`MD5`, `SHA1`, `SSHA`...), `ARGON2I`, MD5-crypt (`$1$`) and DES crypt.
//! glibc accepts SHA-crypt salts with any character but `$`; this module accepts only salts in
//! `[A-Za-z0-9./+=,-]`, which covers every salt that crypt tools generate.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sha_crypt::ShaCrypt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tern_core::sasl::ScramCredentials;

/// A password scheme, named as Dovecot names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Argon2id, stored as a PHC string; tern's default.
    Argon2id,
    /// bcrypt, stored as `$2y$`.
    BlfCrypt,
    /// glibc SHA-512 crypt, `$6$`.
    Sha512Crypt,
    /// glibc SHA-256 crypt, `$5$`.
    Sha256Crypt,
    /// The password itself. Logged with a warning when an accounts file uses it.
    Plain,
    /// Dovecot's `SCRAM-SHA-256`: iterations, salt, stored key and server key (RFC 5802), so
    /// SCRAM-SHA-256 logins work without the password being stored.
    ScramSha256,
}

/// Why a stored password could not be checked. Never carries the stored string, since for
/// `PLAIN` that is the password itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordError {
    /// The `{SCHEME}` prefix names a scheme tern does not know.
    UnknownScheme(String),
    /// A `CRYPT` string (no prefix, or `{CRYPT}`) whose `$id$` tern does not support.
    UnsupportedCrypt,
    /// The hash after the prefix does not parse as that scheme's format.
    Malformed(Scheme),
}

/// Hashes `password` with `scheme` and a fresh random salt, returning the stored form with its
/// `{SCHEME}` prefix, as `doveadm pw -s SCHEME` prints it.
///
/// Costs: Argon2id m=65536 KiB, t=3, p=1 (Dovecot's defaults), bcrypt cost 12 (Dovecot's
/// default is 5, too cheap for today's hardware), SHA-crypt 5000 rounds (glibc's default,
/// written without a `rounds=` field as glibc does). bcrypt uses only the first 72 bytes of a
/// password, like every bcrypt including Dovecot's.
pub fn hash_password(scheme: Scheme, password: &str) -> String {
    let hash = match scheme {
        Scheme::Argon2id => hash_argon2id(password.as_bytes(), &argon2_params()),
        Scheme::BlfCrypt => bcrypt::hash_with_salt(password, BCRYPT_COST, random_bytes())
            .expect("a fixed valid cost cannot fail")
            .format_for_version(bcrypt::Version::TwoY),
        Scheme::Sha512Crypt => hash_sha_crypt(ShaCrypt::SHA512, "$6$", password),
        Scheme::Sha256Crypt => hash_sha_crypt(ShaCrypt::SHA256, "$5$", password),
        Scheme::Plain => password.to_owned(),
        Scheme::ScramSha256 => {
            let credentials =
                ScramCredentials::from_password(password, &random_bytes::<16>(), SCRAM_ROUNDS);
            return credentials.to_dovecot();
        }
    };
    format!("{{{scheme}}}{hash}")
}

/// Checks `password` against a stored `{SCHEME}hash`. A string without a prefix is read as
/// `CRYPT`, Dovecot's default scheme for passwd-file.
///
/// `Ok(false)` is a wrong password; an `Err` means the stored string itself is unusable, which
/// is the operator's problem, not the client's. An empty stored string, or one starting with
/// `!` or `*` (a locked account, as in shadow(5)), matches no password.
pub fn verify_password(stored: &str, password: &str) -> Result<bool, PasswordError> {
    let Some((scheme, hash)) = scheme_of(stored)? else {
        return Ok(false);
    };
    let password = password.as_bytes();

    match scheme {
        Scheme::Plain => Ok(hash.as_bytes().ct_eq(password).into()),
        Scheme::ScramSha256 => {
            let stored = ScramCredentials::from_dovecot(hash)
                .map_err(|_| PasswordError::Malformed(scheme))?;
            let password =
                std::str::from_utf8(password).map_err(|_| PasswordError::Malformed(scheme))?;
            let derived =
                ScramCredentials::from_password(password, &stored.salt, stored.iterations);
            Ok(derived.stored_key.ct_eq(&stored.stored_key).into())
        }
        Scheme::Argon2id => {
            let parsed = PasswordHash::new(hash).map_err(|_| PasswordError::Malformed(scheme))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(PasswordError::Malformed(scheme));
            }
            password_result(
                scheme,
                argon2::Argon2::default().verify_password(password, &parsed),
            )
        }
        Scheme::BlfCrypt => {
            // $2x$ marks hashes made by a buggy bcrypt; verifying them as $2a$ would be wrong.
            if !["$2y$", "$2b$", "$2a$"]
                .iter()
                .any(|id| hash.starts_with(id))
            {
                return Err(PasswordError::Malformed(scheme));
            }
            bcrypt::verify(password, hash).map_err(|_| PasswordError::Malformed(scheme))
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let id = if scheme == Scheme::Sha512Crypt {
                "$6$"
            } else {
                "$5$"
            };
            if !hash.starts_with(id) {
                return Err(PasswordError::Malformed(scheme));
            }
            password_result(scheme, ShaCrypt::default().verify_password(password, hash))
        }
    }
}

impl Scheme {
    /// Dovecot's name for the scheme, as written between the braces.
    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Plain => "PLAIN",
            Scheme::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = PasswordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            Scheme::Argon2id,
            Scheme::BlfCrypt,
            Scheme::Sha512Crypt,
            Scheme::Sha256Crypt,
            Scheme::Plain,
            Scheme::ScramSha256,
        ];
        if let Some(scheme) = all.into_iter().find(|v| v.name().eq_ignore_ascii_case(s)) {
            return Ok(scheme);
        }
        if s.eq_ignore_ascii_case("CLEAR") || s.eq_ignore_ascii_case("CLEARTEXT") {
            return Ok(Scheme::Plain);
        }
        Err(PasswordError::UnknownScheme(s.to_owned()))
    }
}

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordError::UnknownScheme(name) => write!(f, "unknown password scheme {{{name}}}"),
            PasswordError::UnsupportedCrypt => f.write_str(
                "unsupported CRYPT hash (known: $argon2id$, $2y$, $2b$, $2a$, $6$, $5$)",
            ),
            PasswordError::Malformed(scheme) => write!(f, "malformed {{{scheme}}} hash"),
        }
    }
}

impl std::error::Error for PasswordError {}

/// True when a stored password is in plain text, so that the loader can warn about it.
pub(crate) fn is_plain(stored: &str) -> bool {
    split_prefix(stored).is_some_and(|(name, _)| name.parse() == Ok(Scheme::Plain))
}

/// The scheme of a stored password and the hash after its prefix, without checking the hash;
/// `None` for a locked account.
pub(crate) fn scheme_of(stored: &str) -> Result<Option<(Scheme, &str)>, PasswordError> {
    Ok(Some(match split_prefix(stored) {
        Some((name, hash)) if name.eq_ignore_ascii_case("CRYPT") => (crypt_scheme(hash)?, hash),
        Some((name, hash)) => (name.parse::<Scheme>()?, hash),
        None if is_locked(stored) => return Ok(None),
        None => (crypt_scheme(stored)?, stored),
    }))
}

/// Hashes with the Argon2id parameters `hash_password` uses; the accounts table verifies
/// unknown users against such a hash so that they cost the same as known ones.
pub(crate) fn dummy_argon2id_hash() -> String {
    format!(
        "{{ARGON2ID}}{}",
        hash_argon2id(b"tern-dummy", &argon2_params())
    )
}

/// The SCRAM credentials of a stored password: read from a `{SCRAM-SHA-256}` entry, or
/// derived from a `{PLAIN}` one with a salt made from `secret` and the login, so the salt a
/// client sees stays the same from one login to the next. Other schemes cannot serve SCRAM.
pub fn scram_credentials(stored: &str, login: &str, secret: &[u8]) -> Option<ScramCredentials> {
    match scheme_of(stored).ok()?? {
        (Scheme::ScramSha256, hash) => ScramCredentials::from_dovecot(hash).ok(),
        (Scheme::Plain, password) => {
            let mut digest = Sha256::new();
            digest.update(b"tern scram salt for plain\0");
            digest.update(secret);
            digest.update(login.as_bytes());
            let salt = digest.finalize();
            Some(ScramCredentials::from_password(
                password,
                &salt[..16],
                SCRAM_ROUNDS,
            ))
        }
        _ => None,
    }
}

/// Whether a stored password can serve SCRAM-SHA-256 logins.
pub fn serves_scram(stored: &str) -> bool {
    matches!(
        scheme_of(stored),
        Ok(Some((Scheme::ScramSha256 | Scheme::Plain, _)))
    )
}

/// Dovecot's default `scram_sha256` rounds.
const SCRAM_ROUNDS: u32 = 4096;

const BCRYPT_COST: u32 = 12;

fn argon2_params() -> argon2::Params {
    argon2::Params::new(65536, 3, 1, Some(32)).expect("Dovecot's Argon2 parameters are valid")
}

fn hash_argon2id(password: &[u8], params: &argon2::Params) -> String {
    let hasher = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    hasher
        .hash_password_with_salt(password, &random_bytes::<16>())
        .expect("a 16-byte salt and valid parameters cannot fail")
        .to_string()
}

fn hash_sha_crypt(hasher: ShaCrypt, id: &str, password: &str) -> String {
    // 12 random bytes are 16 crypt-base64 characters, the longest salt SHA-crypt uses.
    let hash = hasher
        .hash_password_with_salt(password.as_bytes(), &random_bytes::<12>())
        .expect("a 12-byte salt cannot fail")
        .to_string();

    // The crate always writes rounds=5000; glibc and Dovecot leave the default implicit, and
    // the digest does not depend on how the rounds are written.
    let explicit = format!("{id}rounds=5000$");
    match hash.strip_prefix(&explicit) {
        Some(rest) => format!("{id}{rest}"),
        None => hash,
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

fn split_prefix(stored: &str) -> Option<(&str, &str)> {
    let rest = stored.strip_prefix('{')?;
    let end = rest.find('}')?;
    Some((&rest[..end], &rest[end + 1..]))
}

fn is_locked(stored: &str) -> bool {
    stored.is_empty() || stored.starts_with('!') || stored.starts_with('*')
}

fn crypt_scheme(hash: &str) -> Result<Scheme, PasswordError> {
    let ids = [
        ("$argon2id$", Scheme::Argon2id),
        ("$2y$", Scheme::BlfCrypt),
        ("$2b$", Scheme::BlfCrypt),
        ("$2a$", Scheme::BlfCrypt),
        ("$6$", Scheme::Sha512Crypt),
        ("$5$", Scheme::Sha256Crypt),
    ];
    ids.into_iter()
        .find(|(id, _)| hash.starts_with(id))
        .map(|(_, scheme)| scheme)
        .ok_or(PasswordError::UnsupportedCrypt)
}

fn password_result(
    scheme: Scheme,
    result: Result<(), argon2::password_hash::Error>,
) -> Result<bool, PasswordError> {
    match result {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(PasswordError::Malformed(scheme)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by other implementations, never by this code:
    // - argon2: the reference CLI (Debian `argon2`), `echo -n PW | argon2 SALT -id -t T -k M -e`;
    // - bcrypt: Apache's `htpasswd -nbB -C COST`;
    // - SHA-crypt: glibc through `openssl passwd -6/-5 -salt` and Python's `crypt.crypt`.
    const ARGON2ID_M64: &str = "$argon2id$v=19$m=64,t=1,p=1$dGVybi1zYWx0LTAxMjM$\
                                nnYaDeT3Xg94egg3+8+PsmZKH3SORaNAQlC9w/jOd0E";
    const ARGON2ID_M256: &str = "$argon2id$v=19$m=256,t=3,p=1$Wm05dlltRnlZbUY2Y1hWNA$\
                                 +x1YcX4svkRdB8LZvDV2KhoYtNIEjf14WSbfsdj/6Xw";
    const BCRYPT_C5: &str = "$2y$05$.u7.LNA3vQRf6NXKlctPduCiCqHMhIYEEw9tBWVdM.CNauhqN4KRy";
    const BCRYPT_C4_TROUBADOR: &str =
        "$2y$04$R7oKKQMJvVwyCaCZUvyQYepZMBZNyVET.E5HCzyxpToDFBM2tcQTq";
    const SHA512: &str = "$6$kR4nd0mSalt$OSg8iet2TlDoUinPqe6YL14PTF5wLNIg5KWXczy98vDFd4KRUF8Z3t\
                          W70UIetrNnh.1.YmU4lOs3hirXhBinY0";
    const SHA512_ROUNDS: &str = "$6$rounds=10000$saltsaltsalt$XbL0wa.99vvsRYMr5bBKdITb.ZHLqGROub\
                                 WVobCta9RxXByqp.P8f.uGgQGfR4VQvUS2ybvGNqru9cEcwv0Yt1";
    const SHA256: &str = "$5$abcdEFGH12345678$cn92Xf23wx7VRm3nt6JN7XIZE3drMVzpGPFFN1VvWc4";
    const SHA256_UTF8: &str = "$5$rounds=1000$xyz$m9nsRm8fzwx25TFWBSjRaRxeA/g4siYxV8Q8/Mtyjs4";

    #[test]
    fn vectors_from_other_implementations_verify() {
        let cases = [
            (ARGON2ID_M64, "correct horse"),
            (ARGON2ID_M256, "correct horse"),
            (BCRYPT_C5, "correct horse"),
            (BCRYPT_C4_TROUBADOR, "Tr0ub4dor&3"),
            (SHA512, "correct horse"),
            (SHA512_ROUNDS, "correct horse"),
            (SHA256, "correct horse"),
            (SHA256_UTF8, "pässwörd"),
        ];
        for (hash, password) in cases {
            assert_eq!(verify_password(hash, password), Ok(true), "{hash}");
            assert_eq!(verify_password(hash, "correct hors"), Ok(false), "{hash}");
        }
    }

    #[test]
    fn prefixed_vectors_verify_and_prefix_must_match_hash() {
        let cases = [
            ("ARGON2ID", ARGON2ID_M64),
            ("BLF-CRYPT", BCRYPT_C5),
            ("SHA512-CRYPT", SHA512),
            ("SHA256-CRYPT", SHA256),
            ("CRYPT", SHA512),
            ("crypt", BCRYPT_C5),
            ("argon2id", ARGON2ID_M64),
        ];
        for (scheme, hash) in cases {
            let stored = format!("{{{scheme}}}{hash}");
            assert_eq!(
                verify_password(&stored, "correct horse"),
                Ok(true),
                "{stored}"
            );
            assert_eq!(verify_password(&stored, "wrong"), Ok(false), "{stored}");
        }

        let mismatched = [
            ("{SHA512-CRYPT}", SHA256),
            ("{SHA256-CRYPT}", SHA512),
            ("{BLF-CRYPT}", SHA512),
            ("{ARGON2ID}", BCRYPT_C5),
        ];
        for (prefix, hash) in mismatched {
            let stored = format!("{prefix}{hash}");
            assert!(
                matches!(
                    verify_password(&stored, "correct horse"),
                    Err(PasswordError::Malformed(_))
                ),
                "{stored}"
            );
        }
    }

    #[test]
    fn bcrypt_2a_and_2b_are_accepted_2x_is_not() {
        for id in ["$2a$", "$2b$"] {
            let hash = BCRYPT_C5.replacen("$2y$", id, 1);
            assert_eq!(verify_password(&hash, "correct horse"), Ok(true), "{hash}");
        }
        let hash = BCRYPT_C5.replacen("$2y$", "$2x$", 1);
        assert_eq!(
            verify_password(&hash, "correct horse"),
            Err(PasswordError::UnsupportedCrypt)
        );
        let stored = format!("{{BLF-CRYPT}}{hash}");
        assert_eq!(
            verify_password(&stored, "correct horse"),
            Err(PasswordError::Malformed(Scheme::BlfCrypt))
        );
    }

    #[test]
    fn argon2i_is_not_taken_for_argon2id() {
        let argon2i = ARGON2ID_M64.replacen("$argon2id$", "$argon2i$", 1);
        let stored = format!("{{ARGON2ID}}{argon2i}");
        assert_eq!(
            verify_password(&stored, "correct horse"),
            Err(PasswordError::Malformed(Scheme::Argon2id))
        );
    }

    #[test]
    fn plain_and_its_aliases() {
        for stored in [
            "{PLAIN}s3cret:x",
            "{plain}s3cret:x",
            "{CLEAR}s3cret:x",
            "{CLEARTEXT}s3cret:x",
        ] {
            assert_eq!(verify_password(stored, "s3cret:x"), Ok(true), "{stored}");
            assert_eq!(verify_password(stored, "s3cret"), Ok(false), "{stored}");
            assert_eq!(verify_password(stored, "s3cret:xy"), Ok(false), "{stored}");
            assert!(is_plain(stored));
        }
        assert_eq!(verify_password("{PLAIN}", ""), Ok(true));
        assert!(!is_plain(SHA512));
        assert!(!is_plain("{SHA512-CRYPT}$6$x"));
    }

    #[test]
    fn unusable_stored_strings_are_errors_not_mismatches() {
        assert_eq!(
            verify_password("{MD5}abc", "x"),
            Err(PasswordError::UnknownScheme("MD5".into()))
        );
        assert_eq!(
            verify_password("{PLAIN.b64}eA==", "x"),
            Err(PasswordError::UnknownScheme("PLAIN.b64".into()))
        );
        assert_eq!(
            verify_password("$1$abc$def", "x"),
            Err(PasswordError::UnsupportedCrypt)
        );
        assert_eq!(
            verify_password("abcdefghijklm", "x"),
            Err(PasswordError::UnsupportedCrypt)
        );
        assert_eq!(
            verify_password("{SHA512-CRYPT}$6$salt", "x"),
            Err(PasswordError::Malformed(Scheme::Sha512Crypt))
        );
        assert_eq!(
            verify_password("{ARGON2ID}$argon2id$v=19$garbage", "x"),
            Err(PasswordError::Malformed(Scheme::Argon2id))
        );
        assert_eq!(
            verify_password("{BLF-CRYPT}$2y$05$short", "x"),
            Err(PasswordError::Malformed(Scheme::BlfCrypt))
        );
    }

    #[test]
    fn locked_and_empty_match_nothing() {
        for stored in ["", "!", "*", "!$6$kR4nd0mSalt$abc", "*LK*"] {
            assert_eq!(verify_password(stored, ""), Ok(false), "{stored:?}");
            assert_eq!(verify_password(stored, "x"), Ok(false), "{stored:?}");
        }
    }

    #[test]
    fn scheme_names_round_trip_case_insensitively() {
        for scheme in [
            Scheme::Argon2id,
            Scheme::BlfCrypt,
            Scheme::Sha512Crypt,
            Scheme::Sha256Crypt,
            Scheme::Plain,
        ] {
            assert_eq!(scheme.to_string().parse::<Scheme>(), Ok(scheme));
            assert_eq!(
                scheme.to_string().to_lowercase().parse::<Scheme>(),
                Ok(scheme)
            );
        }
        assert_eq!("blf-crypt".parse::<Scheme>(), Ok(Scheme::BlfCrypt));
        assert!("SHA512".parse::<Scheme>().is_err());
        assert!("".parse::<Scheme>().is_err());
    }

    #[test]
    fn hashes_have_dovecot_shape_fresh_salts_and_verify() {
        let shapes = [
            (Scheme::BlfCrypt, "{BLF-CRYPT}$2y$12$"),
            (Scheme::Sha512Crypt, "{SHA512-CRYPT}$6$"),
            (Scheme::Sha256Crypt, "{SHA256-CRYPT}$5$"),
            (Scheme::Plain, "{PLAIN}"),
        ];
        for (scheme, prefix) in shapes {
            let first = hash_password(scheme, "pw: with colon");
            assert!(first.starts_with(prefix), "{first}");
            assert_eq!(
                verify_password(&first, "pw: with colon"),
                Ok(true),
                "{first}"
            );
            assert_eq!(verify_password(&first, "pw"), Ok(false), "{first}");
            if scheme != Scheme::Plain {
                assert_ne!(
                    first,
                    hash_password(scheme, "pw: with colon"),
                    "salt reused"
                );
            }
        }

        // glibc's shape: $6$, a 16-character salt, 86 characters of digest, no rounds field.
        let sha512 = hash_password(Scheme::Sha512Crypt, "x");
        let fields: Vec<&str> = sha512.split('$').collect();
        assert_eq!(fields.len(), 4, "{sha512}");
        assert_eq!((fields[2].len(), fields[3].len()), (16, 86), "{sha512}");
    }

    #[test]
    fn argon2id_hash_uses_dovecot_parameters() {
        let stored = hash_password(Scheme::Argon2id, "correct horse");
        assert!(
            stored.starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
            "{stored}"
        );
        let fields: Vec<&str> = stored.split('$').collect();
        // 16 bytes of salt and 32 of digest in unpadded base64, as libsodium writes them.
        assert_eq!((fields[4].len(), fields[5].len()), (22, 43), "{stored}");
        // One verification only: at these costs each takes seconds in a debug build.
        assert_eq!(verify_password(&stored, "correct horse"), Ok(true));
    }
}

#[cfg(test)]
mod scram_tests {
    use super::*;

    #[test]
    fn scram_entries_verify_plain_logins_and_give_their_keys() {
        let stored = hash_password(Scheme::ScramSha256, "pencil");
        assert!(stored.starts_with("{SCRAM-SHA-256}4096,"), "{stored}");
        assert_eq!(verify_password(&stored, "pencil"), Ok(true));
        assert_eq!(verify_password(&stored, "pencil!"), Ok(false));
        assert!(serves_scram(&stored));

        let keys = scram_credentials(&stored, "alice", b"secret").unwrap();
        assert_eq!(keys.to_dovecot(), stored);
    }

    #[test]
    fn plain_entries_give_stable_scram_keys_and_others_none() {
        let a = scram_credentials("{PLAIN}pencil", "alice", b"secret").unwrap();
        let b = scram_credentials("{PLAIN}pencil", "alice", b"secret").unwrap();
        let other = scram_credentials("{PLAIN}pencil", "bob", b"secret").unwrap();
        assert_eq!(a.to_dovecot(), b.to_dovecot());
        assert_ne!(a.salt, other.salt);
        assert_eq!(a, ScramCredentials::from_password("pencil", &a.salt, 4096));

        let argon = hash_password(Scheme::Sha256Crypt, "pencil");
        assert!(scram_credentials(&argon, "alice", b"secret").is_none());
        assert!(!serves_scram(&argon));
    }
}
