//! The glue every runtime shares, so that no runtime holds a decision of its own.
//!
//! [`Services`] is built once from a [`Config`]: the accounts, the Maildir writer, the mail
//! log, queue ids, the TLS configuration and one session configuration per listener. A
//! runtime binds the listening sockets with [`Services::bind`], asks [`Services::admit`]
//! for every accepted connection (the `connections` and `connections_per_ip` limits), and
//! drives each session with a [`ConnectionHandler`]: every output of the session becomes an
//! [`Action`]; a runtime does the three kinds of I/O itself (send, start TLS, close) and
//! hands every other one, as [`Work`], to [`ConnectionHandler::work`], which does it with
//! blocking calls and returns the [`Answer`] to feed back. Between draining the outputs and
//! reading again, a [`Driver`] says what comes next (a stop, the session's timer, the input
//! read ahead).
//!
//! A `dovecot-auth` listener runs no SMTP session: for each connection it accepts
//! ([`Services::is_dovecot_auth`]), a runtime calls [`serve_auth_connection`] on a thread of
//! its own.
//!
//! Known limits of this first version:
//! - A message with a recipient in another domain (one that the restrictions permitted, or
//!   an alias that points elsewhere) goes into the outbound queue ([`crate::queue`]) before
//!   the 250; the queue's delivery thread runs once [`crate::queue::start`] is called.
//! - With `accounts.dovecot_auth`, SCRAM-SHA-256 is not offered: Dovecot's auth socket
//!   only checks a password (PLAIN), it does not give out SCRAM keys.
//!
//! A listener with `record_sessions` hands its runtimes recorded sessions: the session type
//! is always [`Recorder`], which records only when asked, and
//! [`ConnectionHandler::finish`] writes the recording (SPEC.md section 8).

mod auth;
mod connection;
mod drive;
mod embedded;
mod listen;
mod lmtp_out;
mod submit;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::fs::DirBuilder;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use tern_core::dovecot;
use tern_core::recipient::{Aliases, Policy};
use tern_core::replay::Recorder;
use tern_core::reply::{Mode, Reply};
use tern_core::sasl::{Mechanism, ScramSecret};
use tern_core::server::{self, AuthMode, Peer, TlsMode};

pub use self::auth::{AuthHandler, AuthStream, open_auth, serve_auth_connection};
pub use self::connection::{Action, Answer, ConnectionHandler, Work};
pub use self::drive::{Driver, MAX_PENDING, Step, handshake_deadline};
pub use self::embedded::{Embedded, embedded};
pub use self::listen::{Bound, Socket};
pub use self::submit::{Refused, Submission};
use crate::accounts::{Accounts, expand_mailbox_path};
use crate::config::{self, Config, ListenerAuth, ListenerTls, LogTarget, Protocol};
use crate::dns::Dns;
use crate::log::{MailLog, QueueIds, client_name};
use crate::maildir::{Maildirs, clean_spool};
use crate::queue::Queue;

/// How long a stopping server waits for sessions still inside a transaction.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A reason `tern serve` cannot start, in one line that names the file or address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

/// Everything the sessions of one server share.
pub struct Services {
    config: Config,
    accounts: Option<Accounts>,
    maildirs: Maildirs,
    log: MailLog,
    queue_ids: QueueIds,
    tls: Option<Arc<ServerConfig>>,
    sessions: Vec<Option<Arc<server::Config>>>,
    spool_dir: PathBuf,
    counts: Mutex<Counts>,
    /// Salts SCRAM keys made from `{PLAIN}` passwords; kept in `data_dir` so they stay the
    /// same across restarts.
    scram_secret: Vec<u8>,
    /// The outbound queue under `data_dir/queue`.
    queue: Arc<Queue>,
    /// What every dovecot-auth connection shares; `None` when no listener needs it.
    auth_server: Option<Arc<dovecot::ServerConfig>>,
    /// Numbers dovecot-auth connections for their `CUID` line.
    auth_connections: AtomicU32,
    /// Numbers the sessions, for the names of recordings.
    next_session: AtomicU64,
    /// The resolver for recipient domain checks and MX delivery, made at its first use.
    dns: OnceLock<Result<Dns, String>>,
}

/// A connection that was admitted; dropping it frees its place in the connection limits.
pub struct Admission {
    services: Arc<Services>,
    listener: usize,
    client: Option<IpAddr>,
}

/// A connection refused by the connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What to write before closing; `None` on an implicit-TLS listener, where plain text
    /// would only be garbage to the client, so the connection is closed without a word.
    pub reply: Option<Vec<u8>>,
}

impl Services {
    /// Sets everything up: creates `data_dir` and its spool directory (removing spool files
    /// left by a crash), opens the accounts file and the log, loads the certificate, builds
    /// each listener's session configuration and cleans the `tmp/` of every account's
    /// Maildir.
    pub fn new(config: Config) -> Result<Services, StartError> {
        refuse_unimplemented(&config)?;

        create_private_dir(&config.data_dir)?;
        let spool_dir = config.data_dir.join("spool");
        create_private_dir(&spool_dir)?;
        clean_spool(&spool_dir).map_err(|e| StartError(e.to_string()))?;

        let log = match &config.log {
            LogTarget::Stderr => MailLog::stderr(&config.hostname, &config.syslog_name),
            LogTarget::File(path) => MailLog::file(path, &config.hostname, &config.syslog_name)
                .map_err(|e| StartError(e.to_string()))?,
        };
        let accounts = match &config.accounts.file {
            Some(file) => Some(
                Accounts::open(file, &config.accounts.username_format)
                    .map_err(|e| StartError(e.to_string()))?,
            ),
            None => None,
        };
        let tls = match &config.tls {
            Some(files) => Some(
                crate::tls::server_config(&files.certificate, &files.private_key)
                    .map_err(|e| StartError(e.0))?,
            ),
            None => None,
        };
        let scram_secret = load_scram_secret(&config.data_dir)?;
        let queue = Queue::open(&config.data_dir.join("queue"))
            .map(Arc::new)
            .map_err(|e| StartError(e.to_string()))?;
        // SPEC.md section 4: SCRAM-SHA-256 is offered only where it can succeed, which needs
        // an account whose stored password can give SCRAM keys, and tern checking passwords
        // itself. The check is made at start.
        let own_passwords = config.accounts.dovecot_auth.is_none();
        let scram = own_passwords
            && accounts.as_ref().is_some_and(|accounts| {
                accounts
                    .users()
                    .iter()
                    .any(|a| crate::password::serves_scram(&a.password))
            });
        let sessions = config
            .listeners
            .iter()
            .map(|listener| {
                session_config(&config, listener).map(|mut session| {
                    if scram && session.mode == Mode::Smtp {
                        session.mechanisms.push(Mechanism::ScramSha256);
                        session.scram_secret = Some(ScramSecret::new(scram_secret.clone()));
                    }
                    Arc::new(session)
                })
            })
            .collect();
        let auth_server = config
            .listeners
            .iter()
            .any(|l| l.protocol == Protocol::DovecotAuth)
            .then(|| {
                let mut server = dovecot::ServerConfig::new(std::process::id());
                server.failure_delay = config.limits.auth_failure_delay;
                if scram {
                    server.mechanisms.push(Mechanism::ScramSha256);
                    server.scram_secret = Some(ScramSecret::new(scram_secret.clone()));
                }
                Arc::new(server)
            });

        let services = Services {
            auth_server,
            auth_connections: AtomicU32::new(0),
            maildirs: Maildirs::new(&config.hostname),
            queue_ids: QueueIds::new(),
            counts: Mutex::new(Counts::default()),
            next_session: AtomicU64::new(1),
            dns: OnceLock::new(),
            config,
            accounts,
            log,
            tls,
            sessions,
            spool_dir,
            scram_secret,
            queue,
        };
        services.clean_maildirs();
        Ok(services)
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The resolver of `delivery.dns_servers`, or why it could not be made.
    pub fn dns(&self) -> Result<&Dns, &str> {
        self.dns
            .get_or_init(|| Dns::new(&self.config.delivery))
            .as_ref()
            .map_err(String::as_str)
    }

    /// The mail log.
    pub fn log(&self) -> &MailLog {
        &self.log
    }

    /// The TLS configuration, present when the config has `[tls]`.
    pub fn tls(&self) -> Option<&Arc<ServerConfig>> {
        self.tls.as_ref()
    }

    /// The session configuration of listener `index`; `None` for a dovecot-auth listener,
    /// which runs no session.
    pub fn session_config(&self, index: usize) -> Option<&Arc<server::Config>> {
        self.sessions.get(index).and_then(Option::as_ref)
    }

    /// Whether listener `index` speaks the Dovecot auth protocol: its connections go to
    /// [`serve_auth_connection`], not to [`Services::open_session`].
    pub fn is_dovecot_auth(&self, index: usize) -> bool {
        self.config
            .listeners
            .get(index)
            .is_some_and(|l| l.protocol == Protocol::DovecotAuth)
    }

    /// Binds the socket of every listener; the first failure is returned as
    /// `cannot listen on ADDRESS: reason`.
    pub fn bind(&self) -> Result<Vec<Bound>, StartError> {
        self.config
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| listen::bind(index, listener))
            .collect()
    }

    /// Takes a place for a new connection on listener `index`, or refuses it when the
    /// listener has `limits.connections` sessions, or the client's address has
    /// `limits.connections_per_ip` sessions across all listeners.
    pub fn admit(
        self: &Arc<Self>,
        index: usize,
        client: Option<IpAddr>,
    ) -> Result<Admission, Refusal> {
        let limits = &self.config.limits;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let on_listener = counts.per_listener.get(&index).copied().unwrap_or(0);
        let from_ip = client.map_or(0, |ip| counts.per_ip.get(&ip).copied().unwrap_or(0));
        let refused = if on_listener >= limits.connections {
            Some(format!("{} connections on listener", on_listener + 1))
        } else if client.is_some() && from_ip >= limits.connections_per_ip {
            Some(format!("{} connections", from_ip + 1))
        } else {
            None
        };

        if let Some(what) = refused {
            drop(counts);
            let listener = &self.config.listeners[index];
            self.log.write(
                "smtpd",
                &format!(
                    "warning: connection concurrency limit exceeded: {what} from {} for \
                     service {}",
                    client_name(client),
                    listener.name
                ),
            );
            let reply = (listener.tls != ListenerTls::Implicit).then(|| {
                let mut out = Vec::new();
                Reply::TooManyConnections {
                    hostname: self.config.hostname.clone(),
                }
                .write(&mut out);
                out
            });
            return Err(Refusal { reply });
        }

        *counts.per_listener.entry(index).or_default() += 1;
        if let Some(ip) = client {
            *counts.per_ip.entry(ip).or_default() += 1;
        }
        Ok(Admission {
            services: Arc::clone(self),
            listener: index,
            client,
        })
    }

    /// Starts a session for an admitted connection and the handler that answers it; logs
    /// `connect from`. The session is recorded when its listener has `record_sessions`. `tls` is the negotiated version and cipher on an implicit-TLS
    /// listener, whose handshake the runtime completes before calling this.
    ///
    /// # Panics
    ///
    /// If the admission's listener is a dovecot-auth listener, which runs no session.
    pub fn open_session(
        self: &Arc<Self>,
        admission: Admission,
        peer: Peer,
        tls: Option<(String, String)>,
        now: Instant,
    ) -> (Recorder, ConnectionHandler) {
        let config = self.sessions[admission.listener]
            .clone()
            .expect("a runtime opens sessions only on smtp and lmtp listeners");
        let listener = &self.config.listeners[admission.listener];
        let record = listener.record_sessions.as_ref().map(|dir| {
            let id = self.next_session.fetch_add(1, Ordering::Relaxed);
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            dir.join(format!("{secs}-{}-{id}.replay", listener.name))
        });
        let session = match record {
            Some(_) => Recorder::new(config, peer, now),
            None => Recorder::unrecorded(config, peer, now),
        };
        let handler = ConnectionHandler::new(Arc::clone(self), admission, peer, tls, record);
        (session, handler)
    }

    /// Removes what a crash left in `tmp/` of every account's Maildir; failures are logged.
    fn clean_maildirs(&self) {
        let Some(accounts) = &self.accounts else {
            return;
        };
        let domain = self.config.domains.first().map_or("", String::as_str);
        for account in accounts.users() {
            let (user, domain) = account
                .user
                .split_once('@')
                .unwrap_or((&account.user, domain));
            let Ok(path) = expand_mailbox_path(&self.config.mailbox.path, &account, user, domain)
            else {
                continue;
            };
            if let Err(e) = self.maildirs.clean_tmp(&path) {
                self.log
                    .write("local", &format!("warning: {}: {e}", path.display()));
            }
        }
    }
}

/// The session configuration of `listener`, from the site-wide parts of `config`; `None`
/// for a `dovecot-auth` listener, which runs no SMTP session.
pub fn session_config(config: &Config, listener: &config::Listener) -> Option<server::Config> {
    let mode = match listener.protocol {
        Protocol::Smtp => Mode::Smtp,
        Protocol::Lmtp => Mode::Lmtp,
        Protocol::DovecotAuth => return None,
    };
    let mut aliases = Aliases::default();
    for alias in &config.aliases {
        aliases.insert(&alias.name, alias.targets.clone());
    }
    let limits = &config.limits;

    Some(server::Config {
        hostname: config.hostname.clone(),
        mode,
        tls: match listener.tls {
            ListenerTls::None => TlsMode::None,
            ListenerTls::May => TlsMode::May,
            ListenerTls::Encrypt => TlsMode::Encrypt,
            ListenerTls::Implicit => TlsMode::Implicit,
        },
        auth: match listener.auth {
            ListenerAuth::None => AuthMode::None,
            ListenerAuth::Optional => AuthMode::Optional,
            ListenerAuth::Required => AuthMode::Required,
        },
        plaintext_auth: listener.plaintext_auth,
        mechanisms: vec![Mechanism::Plain, Mechanism::Login],
        scram_secret: None,
        restrictions: listener.restrictions.clone(),
        limits: server::Limits {
            message_size: limits.message_size,
            recipients: limits.recipients,
            command_timeout: limits.command_timeout,
            data_timeout: limits.data_timeout,
            errors: limits.errors,
            auth_failures: limits.auth_failures,
            auth_failure_delay: limits.auth_failure_delay,
        },
        policy: Policy {
            domains: config.domains.clone(),
            trusted_networks: config.trusted_networks.clone(),
            recipient_delimiter: config.mailbox.recipient_delimiter.clone(),
            aliases,
        },
    })
}

/// Reads `data_dir/scram-secret`, creating it (32 random bytes, mode 0600) on first start.
fn load_scram_secret(data_dir: &std::path::Path) -> Result<Vec<u8>, StartError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let path = data_dir.join("scram-secret");
    let failed = |e: std::io::Error| StartError(format!("{}: {e}", path.display()));
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 16 => return Ok(secret),
        Ok(_) => return Err(StartError(format!("{}: too short", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let mut secret = vec![0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| StartError(format!("random source: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    file.write_all(&secret)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    Ok(secret)
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self
            .services
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        release(&mut counts.per_listener, self.listener);
        if let Some(ip) = self.client {
            release(&mut counts.per_ip, ip);
        }
    }
}

#[derive(Default)]
struct Counts {
    per_listener: HashMap<usize, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// A feature the configuration asks for that this version cannot do: better to refuse to
/// start than to run without it.
fn refuse_unimplemented(config: &Config) -> Result<(), StartError> {
    let accounts = &config.accounts;
    if accounts.file.is_none()
        && (accounts.dovecot_auth.is_none() || accounts.dovecot_userdb.is_none())
    {
        return Err(StartError(
            "[accounts] file is needed, unless dovecot_auth and dovecot_userdb are both given"
                .into(),
        ));
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), StartError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StartError(format!("cannot create {}: {e}", dir.display())))
}
