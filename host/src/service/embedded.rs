//! The embedded default of SPEC.md section 3: a development instance under one directory.

use std::path::Path;

use super::{StartError, create_private_dir};
use crate::accounts::{Accounts, add_user};
use crate::config::{self, Alias, Config};
use crate::password::{Scheme, hash_password};

/// Length of the generated first password: 20 characters of 62 give about 119 bits.
const PASSWORD_LEN: usize = 20;

/// The embedded default, ready to serve.
#[derive(Debug)]
pub struct Embedded {
    /// The configuration, with `postmaster` aliased to the first account.
    pub config: Config,
    /// The account created on this start and its password (shown once), if one was.
    pub created: Option<(String, String)>,
}

/// Prepares the embedded default under `data_dir`: creates the directory, a self-signed
/// certificate for `localhost` in `data_dir/tls`, and, when `data_dir/users` does not exist
/// yet, one account named after `$USER` (else `tern`) with a random password. `postmaster`
/// becomes an alias of the first account in the users file, whoever added it.
pub fn embedded(data_dir: &Path) -> Result<Embedded, StartError> {
    let mut config = config::embedded_default(data_dir);
    create_private_dir(data_dir)?;
    crate::tls::generate_self_signed(&config.hostname, &data_dir.join("tls"))
        .map_err(|e| StartError(e.to_string()))?;

    let users = config
        .accounts
        .file
        .clone()
        .unwrap_or_else(|| data_dir.join("users"));
    let created = if users.exists() {
        None
    } else {
        let name = std::env::var("USER")
            .ok()
            .filter(|name| is_plain_name(name))
            .unwrap_or_else(|| "tern".to_owned());
        let password = random_password().map_err(|e| StartError(e.to_string()))?;
        add_user(&users, &name, &hash_password(Scheme::Argon2id, &password))
            .map_err(|e| StartError(format!("cannot write {}: {e}", users.display())))?;
        Some((name, password))
    };

    let accounts = Accounts::open(&users, &config.accounts.username_format)
        .map_err(|e| StartError(e.to_string()))?;
    if let Some(first) = accounts.users().first() {
        config.aliases.push(Alias {
            name: "postmaster".to_owned(),
            targets: vec![first.user.clone()],
        });
    }
    Ok(Embedded { config, created })
}

/// A user name that needs no quoting anywhere: it becomes a local part and a directory.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn random_password() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(PASSWORD_LEN);
    while password.len() < PASSWORD_LEN {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        // 248 is the largest multiple of 62 below 256: rejecting above it keeps every
        // character equally likely.
        for b in bytes.into_iter().filter(|&b| b < 248) {
            if password.len() < PASSWORD_LEN {
                password.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(password)
}
