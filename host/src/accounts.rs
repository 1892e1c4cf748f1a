//! Accounts in Dovecot's passwd-file format (SPEC.md section 6), re-read when the file changes.
//!
//! One user a line, `user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`; every field after the
//! password may be missing or empty. `#` comments and blank lines are skipped, and so is a
//! malformed line, with a warning naming the file and line. The first line for a user wins, as
//! in Dovecot.
//!
//! Of Dovecot's extra fields only `nologin` has an effect here (the login is refused after the
//! password was checked); the rest, `nopassword` included, are kept in [`Account::extra`] for
//! whoever needs them. uid and gid must be numbers: system user names are not resolved.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock};
use std::time::SystemTime;

use crate::password::{self, Scheme};

/// One line of the accounts file.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Field 1, as written in the file: the lookup key.
    pub user: String,
    /// Field 2, the stored password with its `{SCHEME}` prefix.
    pub password: String,
    /// Field 3; `None` when empty.
    pub uid: Option<u32>,
    /// Field 4; `None` when empty.
    pub gid: Option<u32>,
    /// Field 5.
    pub gecos: String,
    /// Field 6; `None` when empty.
    pub home: Option<PathBuf>,
    /// Field 7.
    pub shell: String,
    /// Field 8 and anything after it: space-separated `key=value` pairs, a bare `key` giving an
    /// empty value.
    pub extra: Vec<(String, String)>,
}

/// The accounts of one file, shared by every session (wrap it in an `Arc`).
pub struct Accounts {
    file: PathBuf,
    username_format: String,
    state: RwLock<State>,
}

/// The outcome of a password check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right and the account may log in.
    Ok(Account),
    /// Wrong password, unknown user or a refused account: the client's fault.
    Fail,
    /// The stored password cannot be checked (an unknown scheme, a broken hash); the operator
    /// has to fix the file, so the client should retry later.
    TempFail,
}

/// Why the accounts file could not be opened.
#[derive(Debug)]
pub struct AccountsError {
    /// The accounts file.
    pub file: PathBuf,
    /// What reading it said.
    pub source: io::Error,
}

impl Accounts {
    /// Reads `file` and keeps `username_format` (Dovecot's `auth_username_format`) to map
    /// logins to lookup keys.
    pub fn open(file: &Path, username_format: &str) -> Result<Accounts, AccountsError> {
        let table = load(file).map_err(|source| AccountsError {
            file: file.to_owned(),
            source,
        })?;
        Ok(Accounts {
            file: file.to_owned(),
            username_format: username_format.to_owned(),
            state: RwLock::new(State {
                table,
                failed: None,
            }),
        })
    }

    /// The key that `login` is looked up by, after `username_format`: `%u` the whole login,
    /// `%n` the part before the first `@`, `%d` the part after it (empty without one), `%L`
    /// before any of them lowercases it, `%%` is a `%`; anything else stays as written. As in
    /// Dovecot, `%n@%d` turns a login without a domain into `name@`.
    pub fn lookup_key(&self, login: &str) -> String {
        let (name, domain) = login.split_once('@').unwrap_or((login, ""));
        expand(&self.username_format, login, name, domain)
    }

    /// The account for `login`, re-reading the file first if it changed.
    pub fn lookup(&self, login: &str) -> Option<Account> {
        let key = self.lookup_key(login);
        self.refresh();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.table.find(&key).cloned()
    }

    /// Checks `password` for `login`. An unknown user costs the same work as a known one: the
    /// password is checked against the file's first hashed password (or, when there is none,
    /// an Argon2id hash with `hash_password`'s costs) and the result thrown away.
    pub fn verify(&self, login: &str, password: &str) -> Verdict {
        let key = self.lookup_key(login);
        self.refresh();
        let (account, dummy) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            (state.table.find(&key).cloned(), state.table.dummy.clone())
        };

        let Some(account) = account else {
            let dummy = dummy.as_deref().unwrap_or_else(|| fallback_dummy());
            let _ = password::verify_password(dummy, password);
            return Verdict::Fail;
        };

        match password::verify_password(&account.password, password) {
            Ok(true) if account.extra.iter().any(|(key, _)| key == "nologin") => {
                tracing::debug!(user = %account.user, "login refused: nologin");
                Verdict::Fail
            }
            Ok(true) => Verdict::Ok(account),
            Ok(false) => Verdict::Fail,
            Err(error) => {
                tracing::warn!(
                    file = %self.file.display(),
                    user = %account.user,
                    %error,
                    "stored password cannot be checked"
                );
                Verdict::TempFail
            }
        }
    }

    /// Every account, in file order, after re-reading the file if it changed.
    pub fn users(&self) -> Vec<Account> {
        self.refresh();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.table.users.clone()
    }

    /// Re-reads the file when its inode, size or mtime differ from the loaded one. A failed
    /// read keeps the old table and is logged once until the file changes again.
    fn refresh(&self) {
        let stamp = Stamp::of(&self.file);
        let seen = stamp.as_ref().ok().cloned();
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if seen.as_ref() == Some(&state.table.stamp) || state.failed.as_ref() == Some(&seen) {
                return;
            }
        }

        // Parsed outside the lock so lookups go on meanwhile; a second thread may parse too.
        let result = stamp.and_then(|_| load(&self.file));
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(table) => {
                tracing::debug!(file = %self.file.display(), users = table.users.len(), "reloaded");
                state.table = table;
                state.failed = None;
            }
            Err(error) => {
                if state.failed.as_ref() != Some(&seen) {
                    tracing::warn!(
                        file = %self.file.display(),
                        %error,
                        "cannot re-read accounts file, keeping the accounts loaded before"
                    );
                    state.failed = Some(seen);
                }
            }
        }
    }
}

/// Adds `name` with `stored_password` (already hashed, `{SCHEME}` included) to `file`, or
/// replaces the password of its first line, keeping the other fields. The file is replaced
/// atomically with the same mode and owner (0600 when it is created); a symlink is followed.
/// Two concurrent writers are not locked out: the last rename wins.
pub fn add_user(file: &Path, name: &str, stored_password: &str) -> io::Result<()> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    if name.is_empty() || name.starts_with('#') || name.contains([':', '\n', '\r', ' ', '\t']) {
        return Err(invalid(
            "user name must be non-empty, without ':', blanks or a leading '#'",
        ));
    }
    if stored_password.contains([':', '\n', '\r']) {
        return Err(invalid(
            "stored password must not contain ':' or a line break",
        ));
    }

    let file = match fs::canonicalize(file) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => file.to_owned(),
        Err(e) => return Err(e),
    };
    let (old, metadata) = match fs::read_to_string(&file) {
        Ok(text) => (text, Some(fs::metadata(&file)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(e),
    };

    let new = with_password(&old, name, stored_password);
    replace_file(&file, new.as_bytes(), metadata.as_ref())
}

/// Expands the `[mailbox] path` template (SPEC.md section 2) for one recipient: a leading `~`
/// is the account's home, `%u` is `user@domain` (`user` when `domain` is empty), `%n` the user,
/// `%d` the domain, `%L` lowercases the next one, `%%` is a `%`. A value that would climb out
/// of the template (`/`, `..`, NUL) is refused.
pub fn expand_mailbox_path(
    template: &str,
    account: &Account,
    user: &str,
    domain: &str,
) -> Result<PathBuf, String> {
    for value in [user, domain] {
        if value.contains(['/', '\0']) || value == "." || value == ".." {
            return Err(format!("{value:?} cannot be part of a mailbox path"));
        }
    }
    let whole = if domain.is_empty() {
        user.to_owned()
    } else {
        format!("{user}@{domain}")
    };

    let (base, rest) = match template.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = account.home.as_ref().ok_or_else(|| {
                format!(
                    "account {} has no home directory for mailbox path {template}",
                    account.user
                )
            })?;
            (Some(home), rest.trim_start_matches('/'))
        }
        _ => (None, template),
    };

    let expanded = PathBuf::from(expand(rest, &whole, user, domain));
    Ok(match base {
        Some(home) if rest.is_empty() => home.clone(),
        Some(home) => home.join(expanded),
        None => expanded,
    })
}

impl fmt::Debug for Account {
    // The password field of a PLAIN account is the password itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("gecos", &self.gecos)
            .field("home", &self.home)
            .field("shell", &self.shell)
            .field("extra", &self.extra)
            .finish()
    }
}

impl fmt::Display for AccountsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "accounts file {}: {}", self.file.display(), self.source)
    }
}

impl std::error::Error for AccountsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

struct State {
    table: Table,
    /// The stamp whose read failed (`Some(None)`: the file was gone), so it is logged once.
    failed: Option<Option<Stamp>>,
}

struct Table {
    stamp: Stamp,
    users: Vec<Account>,
    index: HashMap<String, usize>,
    /// The first hashed password in the file, verified for unknown users.
    dummy: Option<String>,
}

/// What identifies one version of the file without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: Option<SystemTime>,
}

impl Stamp {
    fn of(file: &Path) -> io::Result<Stamp> {
        let meta = fs::metadata(file)?;
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: meta.modified().ok(),
        })
    }
}

impl Table {
    fn find(&self, key: &str) -> Option<&Account> {
        self.index.get(key).map(|&i| &self.users[i])
    }
}

fn fallback_dummy() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(password::dummy_argon2id_hash)
}

/// Reads and parses the file; the stamp is taken first so that a change during the read is
/// seen by the next lookup.
fn load(file: &Path) -> io::Result<Table> {
    let stamp = Stamp::of(file)?;
    let bytes = fs::read(file)?;
    Ok(parse(file, &bytes, stamp))
}

fn parse(file: &Path, bytes: &[u8], stamp: Stamp) -> Table {
    let mut users: Vec<Account> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut plain = 0;

    for (number, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = number + 1;
        let Ok(line) = std::str::from_utf8(raw) else {
            tracing::warn!("{}:{number}: not UTF-8, line skipped", file.display());
            continue;
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }

        let account = match parse_line(line) {
            Ok(account) => account,
            Err(why) => {
                tracing::warn!("{}:{number}: {why}, line skipped", file.display());
                continue;
            }
        };
        if let Some(first) = first_line.get(&account.user) {
            tracing::warn!(
                "{}:{number}: user {} already defined on line {first}, this line ignored",
                file.display(),
                account.user
            );
            continue;
        }
        if password::is_plain(&account.password) {
            plain += 1;
        }
        first_line.insert(account.user.clone(), number);
        index.insert(account.user.clone(), users.len());
        users.push(account);
    }

    if plain > 0 {
        tracing::warn!(
            "{}: {plain} account(s) with {{PLAIN}} passwords; hash them with `tern passwd`",
            file.display()
        );
    }
    let dummy = users
        .iter()
        .map(|a| &a.password)
        .find(|p| matches!(password::scheme_of(p), Ok(Some((s, _))) if s != Scheme::Plain))
        .cloned();
    Table {
        stamp,
        users,
        index,
        dummy,
    }
}

fn parse_line(line: &str) -> Result<Account, String> {
    let mut fields = line.splitn(8, ':');
    let user = fields.next().unwrap_or_default();
    let Some(password) = fields.next() else {
        return Err("no ':' after the user name".into());
    };
    if user.is_empty() {
        return Err("empty user name".into());
    }

    let id = |field: Option<&str>, what: &str| -> Result<Option<u32>, String> {
        match field.unwrap_or_default() {
            "" => Ok(None),
            text => text
                .parse()
                .map(Some)
                .map_err(|_| format!("{what} {text:?} is not a number")),
        }
    };
    let uid = id(fields.next(), "uid")?;
    let gid = id(fields.next(), "gid")?;
    let gecos = fields.next().unwrap_or_default().to_owned();
    let home = Some(fields.next().unwrap_or_default())
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let shell = fields.next().unwrap_or_default().to_owned();
    let extra = fields
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect();

    Ok(Account {
        user: user.to_owned(),
        password: password.to_owned(),
        uid,
        gid,
        gecos,
        home,
        shell,
        extra,
    })
}

/// Expands `%u`, `%n`, `%d`, their `%L` forms and `%%`; any other `%` sequence stays literal.
fn expand(template: &str, whole: &str, name: &str, domain: &str) -> String {
    let mut out = String::with_capacity(template.len() + whole.len());
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let (lower, var) = match tail.strip_prefix('L') {
            Some(after) => (true, after),
            None => (false, tail),
        };
        let value = match var.chars().next() {
            Some('u') => Some(whole),
            Some('n') => Some(name),
            Some('d') => Some(domain),
            _ => None,
        };
        match value {
            Some(value) if lower => out.push_str(&value.to_lowercase()),
            Some(value) => out.push_str(value),
            None if tail.starts_with('%') => out.push('%'),
            None => {
                out.push('%');
                rest = tail;
                continue;
            }
        }
        let used = if value.is_some() {
            usize::from(lower) + 1
        } else {
            1
        };
        rest = &tail[used..];
    }
    out.push_str(rest);
    out
}

/// `old` with the password of `name`'s first line replaced, or a new line for it appended.
fn with_password(old: &str, name: &str, stored_password: &str) -> String {
    let mut out = String::with_capacity(old.len() + name.len() + stored_password.len() + 2);
    let mut replaced = false;

    for line in old.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let user = body.split(':').next().unwrap_or_default();
        if replaced || user != name || body.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }

        let mut fields: Vec<&str> = body.splitn(3, ':').collect();
        if fields.len() == 1 {
            fields.push(stored_password);
        } else {
            fields[1] = stored_password;
        }
        out.push_str(&fields.join(":"));
        out.push_str(if ending.is_empty() { "\n" } else { ending });
        replaced = true;
    }

    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{name}:{stored_password}\n"));
    }
    out
}

/// Writes `contents` to a temporary file beside `file`, fsyncs it, gives it `old`'s mode and
/// owner, renames it over `file` and fsyncs the directory.
fn replace_file(file: &Path, contents: &[u8], old: Option<&fs::Metadata>) -> io::Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let base = file.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "accounts path names no file")
    })?;
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(io::Error::other)?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let temp = dir.join(format!(".{}.{suffix}.tmp", base.to_string_lossy()));

    let result = (|| {
        let mode = old.map_or(0o600, |m| m.permissions().mode() & 0o7777);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        if let Some(old) = old {
            let new = out.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                std::os::unix::fs::fchown(&out, Some(old.uid()), Some(old.gid()))?;
            }
        }
        out.set_permissions(fs::Permissions::from_mode(mode))?;
        out.write_all(contents)?;
        out.sync_all()?;
        fs::rename(&temp, file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;

    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
