//! The configuration file (SPEC.md section 2) and the embedded default (section 3).
//!
//! [`load`] and [`parse`] turn a TOML file into a [`Config`] with every default filled in;
//! [`Config::to_toml`] writes the effective configuration back out, as `tern check-config`
//! prints it. Unknown keys are errors, reported at the key; bad values are reported at the
//! value; checks that involve several keys are reported at the key that has to change (or
//! at the `[[listener]]` table when a key is missing).
//!
//! Relative paths are kept as written. They are relative to the working directory of the
//! process, not to the directory of the configuration file, as for `tern serve` run from
//! the directory that holds `./tern-data`.
//!
//! The raw TOML shape lives in `raw`, the checks that turn it into a [`Config`] in `build`,
//! and the writer in `write`.

mod build;
mod raw;
mod write;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tern_core::net::IpNet;
use tern_core::policy::Restriction;

/// The effective configuration: everything from the file, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Postfix `myhostname`: used in the greeting and in `Received:`.
    pub hostname: String,
    /// Postfix `mydestination`: lowercased, without a trailing dot, duplicates dropped.
    pub domains: Vec<String>,
    /// Postfix `mynetworks`.
    pub trusted_networks: Vec<IpNet>,
    /// The runtime `tern serve` uses unless `--runtime` says otherwise.
    pub runtime: RuntimeKind,
    /// Queue, state and the generated certificate.
    pub data_dir: PathBuf,
    /// Where the mail log goes.
    pub log: LogTarget,
    /// Postfix `syslog_name`: the tag in log lines (`tern/smtpd`).
    pub syslog_name: String,
    /// Certificate and key for every listener with TLS.
    pub tls: Option<TlsFiles>,
    /// Where users and passwords come from.
    pub accounts: AccountsConfig,
    /// Where local mail is stored.
    pub mailbox: MailboxConfig,
    /// `[aliases]`, in file order.
    pub aliases: Vec<Alias>,
    /// Local delivery and the outbound queue.
    pub delivery: DeliveryConfig,
    /// Session and message limits.
    pub limits: Limits,
    /// Every `[[listener]]`, in file order. May be empty: `serve` decides whether that is
    /// an error.
    pub listeners: Vec<Listener>,
}

/// Which runtime drives the state machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeKind {
    /// One thread per connection.
    Blocking,
    /// The `smol` async executor.
    #[default]
    Smol,
    /// A `mio` event loop.
    Mio,
}

/// Where the mail log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (`log = "stderr"`).
    Stderr,
    /// Appended to this file.
    File(PathBuf),
}

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, RSA or EC).
    pub private_key: PathBuf,
}

/// `[accounts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsConfig {
    /// A Dovecot passwd-file.
    pub file: Option<PathBuf>,
    /// Dovecot `auth_username_format`: maps what the client typed to the lookup key.
    pub username_format: String,
    /// A running Dovecot's auth-client socket, to check passwords there.
    pub dovecot_auth: Option<PathBuf>,
    /// A running Dovecot's auth-userdb socket, to look users up there.
    pub dovecot_userdb: Option<PathBuf>,
}

/// `[mailbox]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxConfig {
    /// The Maildir of an account: `~` is its home; `%u %n %d %Lu %Ln %Ld` expand.
    pub path: String,
    /// `bob+lists@` is delivered to `bob`; empty turns it off.
    pub recipient_delimiter: String,
}

/// One entry of `[aliases]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// A bare local part (matches in every local domain) or a full address.
    pub name: String,
    /// Where mail for `name` goes instead; never empty.
    pub targets: Vec<String>,
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// How mail for local accounts is stored.
    pub local: LocalDelivery,
    /// Smarthost for non-local mail (`host`, `host:port` or `[host]:port`); `None` = MX
    /// lookup.
    pub relay_host: Option<String>,
    /// Postfix `smtp_tls_security_level` for outbound mail.
    pub relay_tls: RelayTls,
    /// Resolvers for MX lookups (`ip` or `ip:port`, as written); empty = the system's.
    pub dns_servers: Vec<String>,
    /// Postfix `maximal_queue_lifetime`: then the message is returned to the sender.
    pub queue_lifetime: Duration,
    /// Postfix `delay_warning_time`: how long after its arrival a message still being
    /// retried is reported to a sender who asked for it (NOTIFY=DELAY); zero: never. Not
    /// in SPEC.md's configuration; an addition.
    pub delay_warning: Duration,
}

/// `delivery.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDelivery {
    /// Into the account's Maildir (`"maildir"`).
    Maildir,
    /// Handed to another LMTP server (`"lmtp:unix:/path"`, `"lmtp:inet:host:port"`).
    Lmtp(LmtpTarget),
}

/// Where an LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpTarget {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address. An IPv6 `host` is kept without its brackets.
    Inet {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

/// `delivery.relay_tls`, as Postfix's `smtp_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayTls {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, without checking the certificate.
    #[default]
    May,
    /// STARTTLS required, certificate not checked.
    Encrypt,
    /// STARTTLS required and the certificate must verify.
    Verify,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Postfix `message_size_limit`, in bytes; advertised in `SIZE`.
    pub message_size: u64,
    /// Recipients per message; more get 452 4.5.3.
    pub recipients: usize,
    /// Idle time waiting for a command.
    pub command_timeout: Duration,
    /// Idle time inside DATA/BDAT.
    pub data_timeout: Duration,
    /// Hard errors before the session is closed.
    pub errors: u32,
    /// Failed AUTH before the session is closed.
    pub auth_failures: u32,
    /// Delay before a failed AUTH is answered.
    pub auth_failure_delay: Duration,
    /// Concurrent sessions per listener.
    pub connections: usize,
    /// Concurrent sessions per client address, across all listeners.
    pub connections_per_ip: usize,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique among the listeners; letters, digits, `-`, `_` and `.` only, as it becomes
    /// part of recording file names.
    pub name: String,
    /// What is spoken on the socket.
    pub protocol: Protocol,
    /// Where it listens.
    pub bind: Bind,
    /// STARTTLS or implicit TLS.
    pub tls: ListenerTls,
    /// Whether AUTH is offered or required.
    pub auth: ListenerAuth,
    /// Allows AUTH without TLS (Dovecot `disable_plaintext_auth = no`).
    pub plaintext_auth: bool,
    /// Checked at RCPT TO; always empty for LMTP and Dovecot-auth listeners.
    pub restrictions: Vec<Restriction>,
    /// Directory for session recordings (`tern replay`).
    pub record_sessions: Option<PathBuf>,
}

/// The protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP or submission.
    Smtp,
    /// LMTP (RFC 2033).
    Lmtp,
    /// Dovecot's auth-client protocol, for Postfix `smtpd_sasl_type = dovecot`.
    DovecotAuth,
}

/// The socket of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// `address = "ip:port"`.
    Tcp(SocketAddr),
    /// `path = "/run/..."`: a Unix socket, a stale one removed first.
    Unix {
        /// Socket path.
        path: PathBuf,
        /// Permission bits (default `0o600`).
        mode: u32,
        /// Owner user name.
        user: Option<String>,
        /// Owner group name.
        group: Option<String>,
    },
}

/// TLS on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerTls {
    /// No TLS.
    #[default]
    None,
    /// STARTTLS offered.
    May,
    /// STARTTLS required before mail commands.
    Encrypt,
    /// TLS from the first byte (submissions, port 465).
    Implicit,
}

/// AUTH on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerAuth {
    /// AUTH not offered.
    None,
    /// AUTH offered.
    Optional,
    /// MAIL refused until AUTH succeeded.
    Required,
}

/// A configuration that could not be read or is wrong.
///
/// Displayed as `FILE:LINE:COLUMN: message`, both numbers 1-based, the column counted in
/// characters. When there is no position (the file could not be read at all), `line` and
/// `column` are 0 and it is displayed as `FILE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as it was named to [`load`] or [`parse`].
    pub file: PathBuf,
    /// 1-based line, or 0 if there is no position.
    pub line: usize,
    /// 1-based column in characters, or 0 if there is no position.
    pub column: usize,
    /// What is wrong, on one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.line == 0 {
            write!(f, "{file}: {}", self.message)
        } else {
            write!(f, "{file}:{}:{}: {}", self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path)
}

/// Parses configuration text; `path` is only used in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let located = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_column(text, span.start);
        ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            message,
        }
    };

    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        // A TOML error without a span is rare (it comes from the whole document); the
        // start of the file is then the honest place.
        let span = e.span().unwrap_or(0..0);
        located(span, toml_message(e.message()))
    })?;
    build::build(raw, &system_hostname()).map_err(|e| located(e.span, e.message))
}

/// The configuration `tern serve` runs with when given none (SPEC.md section 3), with
/// everything under `data_dir` (normally `./tern-data`).
///
/// The mailbox path is `data_dir` joined with `mail/%n/Maildir`, so it is absolute exactly
/// when `data_dir` is; a `data_dir` that is not UTF-8 is converted lossily there.
pub fn embedded_default(data_dir: &Path) -> Config {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let socket = |name: &str| Bind::Unix {
        path: data_dir.join(name),
        mode: 0o600,
        user: None,
        group: None,
    };
    let listener = |name: &str, protocol, bind, tls, auth| Listener {
        name: name.to_owned(),
        protocol,
        bind,
        tls,
        auth,
        plaintext_auth: false,
        restrictions: build::default_restrictions(protocol),
        record_sessions: None,
    };

    Config {
        hostname: "localhost".to_owned(),
        domains: vec!["localhost".to_owned()],
        trusted_networks: build::default_trusted_networks(),
        runtime: RuntimeKind::Smol,
        data_dir: data_dir.to_path_buf(),
        log: LogTarget::Stderr,
        syslog_name: build::DEFAULT_SYSLOG_NAME.to_owned(),
        tls: Some(TlsFiles {
            certificate: data_dir.join("tls/cert.pem"),
            private_key: data_dir.join("tls/key.pem"),
        }),
        accounts: AccountsConfig {
            file: Some(data_dir.join("users")),
            ..AccountsConfig::default()
        },
        mailbox: MailboxConfig {
            path: data_dir
                .join("mail/%n/Maildir")
                .to_string_lossy()
                .into_owned(),
            ..MailboxConfig::default()
        },
        aliases: Vec::new(),
        delivery: DeliveryConfig::default(),
        limits: Limits::default(),
        listeners: vec![
            listener(
                "smtp",
                Protocol::Smtp,
                Bind::Tcp(loopback(2525)),
                ListenerTls::May,
                ListenerAuth::Optional,
            ),
            listener(
                "submission",
                Protocol::Smtp,
                Bind::Tcp(loopback(2587)),
                ListenerTls::Encrypt,
                ListenerAuth::Required,
            ),
            listener(
                "submissions",
                Protocol::Smtp,
                Bind::Tcp(loopback(2465)),
                ListenerTls::Implicit,
                ListenerAuth::Required,
            ),
            listener(
                "lmtp",
                Protocol::Lmtp,
                socket("lmtp.sock"),
                ListenerTls::None,
                ListenerAuth::None,
            ),
            listener(
                "auth",
                Protocol::DovecotAuth,
                socket("auth.sock"),
                ListenerTls::None,
                ListenerAuth::None,
            ),
        ],
    }
}

impl Config {
    /// The effective configuration as TOML, every default written out, in the order of
    /// SPEC.md section 2. [`parse`] of the result gives a `Config` equal to `self`.
    ///
    /// Paths that are not UTF-8 (possible only through [`embedded_default`]) are written
    /// lossily and so do not round-trip.
    pub fn to_toml(&self) -> String {
        write::to_toml(self)
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            file: None,
            username_format: "%Ln".to_owned(),
            dovecot_auth: None,
            dovecot_userdb: None,
        }
    }
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            path: "~/Maildir".to_owned(),
            recipient_delimiter: "+".to_owned(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            local: LocalDelivery::Maildir,
            relay_host: None,
            relay_tls: RelayTls::May,
            dns_servers: Vec::new(),
            queue_lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_size: 10_240_000,
            recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            errors: 20,
            auth_failures: 3,
            auth_failure_delay: Duration::from_secs(2),
            connections: 1000,
            connections_per_ip: 50,
        }
    }
}

/// Names as written in the configuration file, for the small enums.
macro_rules! config_names {
    ($ty:ident, $what:literal, $($variant:ident = $name:literal),+) => {
        impl $ty {
            /// The name used in the configuration file.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " `{}`, expected {}"),
                        s,
                        [$(concat!("`", $name, "`")),+].join(", "),
                    )),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

config_names!(
    RuntimeKind,
    "runtime",
    Blocking = "blocking",
    Smol = "smol",
    Mio = "mio"
);
config_names!(
    RelayTls,
    "relay_tls",
    None = "none",
    May = "may",
    Encrypt = "encrypt",
    Verify = "verify"
);
config_names!(
    Protocol,
    "protocol",
    Smtp = "smtp",
    Lmtp = "lmtp",
    DovecotAuth = "dovecot-auth"
);
config_names!(
    ListenerTls,
    "tls mode",
    None = "none",
    May = "may",
    Encrypt = "encrypt",
    Implicit = "implicit"
);
config_names!(
    ListenerAuth,
    "auth mode",
    None = "none",
    Optional = "optional",
    Required = "required"
);

impl FromStr for LocalDelivery {
    type Err = String;

    /// Parses `maildir`, `lmtp:unix:/path`, `lmtp:inet:host:port` or
    /// `lmtp:inet:[v6-address]:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "maildir" {
            return Ok(LocalDelivery::Maildir);
        }
        let bad = || {
            format!(
                "`{s}` is not a local delivery: use \"maildir\", \"lmtp:unix:/path\" or \
                 \"lmtp:inet:host:port\""
            )
        };
        if let Some(path) = s.strip_prefix("lmtp:unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(LocalDelivery::Lmtp(LmtpTarget::Unix(PathBuf::from(path))));
        }
        let hostport = s.strip_prefix("lmtp:inet:").ok_or_else(bad)?;
        let (host, port) = raw::split_host_port(hostport).ok_or_else(bad)?;
        let port = port.ok_or_else(|| format!("`{s}` needs a port: \"lmtp:inet:host:port\""))?;
        Ok(LocalDelivery::Lmtp(LmtpTarget::Inet {
            host: host.to_owned(),
            port,
        }))
    }
}

impl fmt::Display for LocalDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalDelivery::Maildir => f.write_str("maildir"),
            LocalDelivery::Lmtp(LmtpTarget::Unix(path)) => {
                write!(f, "lmtp:unix:{}", path.display())
            }
            LocalDelivery::Lmtp(LmtpTarget::Inet { host, port }) if host.contains(':') => {
                write!(f, "lmtp:inet:[{host}]:{port}")
            }
            LocalDelivery::Lmtp(LmtpTarget::Inet { host, port }) => {
                write!(f, "lmtp:inet:{host}:{port}")
            }
        }
    }
}

/// Parses a duration written with a unit: `100ms`, `300s`, `5m`, `2h`, `5d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not a duration: write a number and a unit, such as \"300s\""
        ));
    }
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 60 * 60 * 1000,
        "d" => 24 * 60 * 60 * 1000,
        "" => {
            return Err(format!(
                "duration `{s}` has no unit: write \"{s}s\" (units ms, s, m, h, d)"
            ));
        }
        _ => {
            return Err(format!(
                "duration `{s}` has an unknown unit `{unit}`: use ms, s, m, h or d"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{s}` is too long"))
}

/// Writes a duration in the largest unit that holds it exactly (`"5d"`, `"90s"`); what
/// lies below a millisecond is dropped.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    let units: [(u128, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    if millis == 0 {
        return "0s".to_owned();
    }
    for (size, unit) in units {
        if millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// The machine's host name, as the default `hostname`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// 1-based line and character column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A toml/serde message in the file's terms ("key", not "field"), on the one line
/// `check-config` promises.
fn toml_message(message: &str) -> String {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    message
        .replacen("unknown field", "unknown key", 1)
        .replacen("missing field", "missing key", 1)
}

#[cfg(test)]
mod tests;
