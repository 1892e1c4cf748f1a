//! The configuration file as TOML gives it: every key optional, every value checked on its
//! own so that its error carries the value's position. Defaults and the checks that
//! involve several keys are in `build`.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use tern_core::net::IpNet;
use tern_core::policy::Restriction;
use toml::Spanned;

use super::{ListenerAuth, ListenerTls, LocalDelivery, Protocol, RelayTls, RuntimeKind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub hostname: Option<Spanned<String>>,
    pub domains: Option<Vec<Spanned<String>>>,
    pub trusted_networks: Option<Vec<Parsed<IpNet>>>,
    pub runtime: Option<Parsed<RuntimeKind>>,
    pub data_dir: Option<Parsed<PathBuf>>,
    pub log: Option<Parsed<PathBuf>>,
    pub syslog_name: Option<Spanned<String>>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub accounts: RawAccounts,
    #[serde(default)]
    pub mailbox: RawMailbox,
    #[serde(default)]
    pub aliases: RawAliases,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<RawListener>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub certificate: Parsed<PathBuf>,
    pub private_key: Parsed<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccounts {
    pub file: Option<Parsed<PathBuf>>,
    pub username_format: Option<Spanned<String>>,
    pub dovecot_auth: Option<Spanned<Parsed<PathBuf>>>,
    pub dovecot_userdb: Option<Parsed<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailbox {
    pub path: Option<Spanned<String>>,
    pub recipient_delimiter: Option<Spanned<String>>,
}

/// `[aliases]` in file order: each name with its targets.
#[derive(Default)]
pub(super) struct RawAliases(pub Vec<(Spanned<String>, Spanned<Vec<String>>)>);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub local: Option<Parsed<LocalDelivery>>,
    pub relay_host: Option<Parsed<RelayHost>>,
    pub relay_tls: Option<Parsed<RelayTls>>,
    pub dns_servers: Option<Vec<Parsed<DnsServer>>>,
    pub queue_lifetime: Option<Spanned<Parsed<Duration>>>,
    pub delay_warning: Option<Parsed<Duration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub message_size: Option<Spanned<u64>>,
    pub recipients: Option<Spanned<usize>>,
    pub command_timeout: Option<Spanned<Parsed<Duration>>>,
    pub data_timeout: Option<Spanned<Parsed<Duration>>>,
    pub errors: Option<Spanned<u32>>,
    pub auth_failures: Option<Spanned<u32>>,
    pub auth_failure_delay: Option<Parsed<Duration>>,
    pub connections: Option<Spanned<usize>>,
    pub connections_per_ip: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub name: Spanned<String>,
    pub protocol: Parsed<Protocol>,
    pub address: Option<Spanned<Parsed<SocketAddr>>>,
    pub path: Option<Spanned<Parsed<PathBuf>>>,
    pub mode: Option<Spanned<Parsed<Mode>>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub tls: Option<Spanned<Parsed<ListenerTls>>>,
    pub auth: Option<Spanned<Parsed<ListenerAuth>>>,
    pub plaintext_auth: Option<bool>,
    pub restrictions: Option<Spanned<Vec<Parsed<Restriction>>>>,
    pub record_sessions: Option<Parsed<PathBuf>>,
}

/// A value written as a string in the file and parsed by [`ConfigValue`], so that a bad
/// one is reported at its own position.
pub(super) struct Parsed<T>(pub T);

/// How a value type reads itself from the file.
pub(super) trait ConfigValue: Sized {
    /// What the value should look like, for type errors ("expected ...").
    const EXPECTING: &'static str;

    fn from_config_str(s: &str) -> Result<Self, String>;

    fn from_config_int(n: i64) -> Result<Self, String> {
        Err(format!(
            "expected {}, found the number {n}",
            Self::EXPECTING
        ))
    }
}

/// `relay_host`: `""` means "use MX records".
pub(super) struct RelayHost(pub Option<String>);

/// One of `dns_servers`, kept as written.
pub(super) struct DnsServer(pub String);

/// Unix permission bits, written as an octal string.
pub(super) struct Mode(pub u32);

/// Splits `host`, `host:port` or `[v6]:port`; `None` if the port is bad or the host empty.
pub(super) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    if !valid_host {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(port) => Some((host, Some(port.parse().ok().filter(|&p| p != 0)?))),
    }
}

impl<'de, T: ConfigValue> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParsedVisitor(PhantomData))
    }
}

struct ParsedVisitor<T>(PhantomData<T>);

impl<T: ConfigValue> Visitor<'_> for ParsedVisitor<T> {
    type Value = Parsed<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        T::from_config_str(s).map(Parsed).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        T::from_config_int(n).map(Parsed).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        let n = i64::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))?;
        self.visit_i64(n)
    }
}

impl<'de> Deserialize<'de> for RawAliases {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AliasesVisitor)
    }
}

struct AliasesVisitor;

impl<'de> Visitor<'de> for AliasesVisitor {
    type Value = RawAliases;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of aliases")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // With toml's `preserve_order` the entries arrive in file order, which is kept.
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<Spanned<String>>()? {
            let targets = map.next_value::<Spanned<AliasTargets>>()?;
            let span = targets.span();
            entries.push((name, Spanned::new(span, targets.into_inner().0)));
        }
        Ok(RawAliases(entries))
    }
}

/// An alias value: one address or a list of them.
struct AliasTargets(Vec<String>);

impl<'de> Deserialize<'de> for AliasTargets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AliasTargetsVisitor)
    }
}

struct AliasTargetsVisitor;

impl<'de> Visitor<'de> for AliasTargetsVisitor {
    type Value = AliasTargets;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address or a list of addresses")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(AliasTargets(vec![s.to_owned()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut targets = Vec::new();
        while let Some(target) = seq.next_element::<String>()? {
            targets.push(target);
        }
        Ok(AliasTargets(targets))
    }
}

impl ConfigValue for PathBuf {
    const EXPECTING: &'static str = "a path";

    fn from_config_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a path may not be empty".to_owned());
        }
        Ok(PathBuf::from(s))
    }
}

impl ConfigValue for Duration {
    const EXPECTING: &'static str = "a duration such as \"300s\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        super::parse_duration(s)
    }

    fn from_config_int(n: i64) -> Result<Self, String> {
        Err(format!(
            "duration {n} has no unit: write \"{n}s\" (units ms, s, m, h, d)"
        ))
    }
}

impl ConfigValue for IpNet {
    const EXPECTING: &'static str = "a network such as \"192.0.2.0/24\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|e| format!("`{s}` is not a network: {e}"))
    }
}

impl ConfigValue for Restriction {
    const EXPECTING: &'static str = "a restriction name";

    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse().map_err(|e| format!("{e}"))
    }
}

impl ConfigValue for SocketAddr {
    const EXPECTING: &'static str = "an address such as \"127.0.0.1:25\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse().map_err(|_| {
            format!(
                "`{s}` is not a socket address: write \"IP:port\", such as \"0.0.0.0:25\" \
                 or \"[::]:25\""
            )
        })
    }
}

impl ConfigValue for Mode {
    const EXPECTING: &'static str = "an octal mode such as \"0660\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        let bad = || format!("mode `{s}` is not an octal mode such as \"0660\"");
        if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(bad());
        }
        let mode = u32::from_str_radix(s, 8).map_err(|_| bad())?;
        if mode > 0o7777 {
            return Err(bad());
        }
        Ok(Mode(mode))
    }

    fn from_config_int(n: i64) -> Result<Self, String> {
        Err(format!(
            "write the mode as a string of octal digits, such as \"0{n}\", not a number"
        ))
    }
}

impl ConfigValue for RelayHost {
    const EXPECTING: &'static str = "\"host:port\" or \"\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(RelayHost(None));
        }
        match split_host_port(s) {
            Some(_) => Ok(RelayHost(Some(s.to_owned()))),
            None => Err(format!(
                "`{s}` is not a relay host: write \"host\", \"host:port\" or \"[host]:port\""
            )),
        }
    }
}

impl ConfigValue for DnsServer {
    const EXPECTING: &'static str = "a resolver address such as \"192.0.2.53:53\"";

    fn from_config_str(s: &str) -> Result<Self, String> {
        if s.parse::<SocketAddr>().is_ok() || s.parse::<IpAddr>().is_ok() {
            return Ok(DnsServer(s.to_owned()));
        }
        Err(format!(
            "`{s}` is not a resolver address: write an IP address, optionally with a port"
        ))
    }
}

/// The small enums parse through their `FromStr`, which names the accepted values.
macro_rules! config_value_from_str {
    ($($ty:ty: $expecting:literal),+ $(,)?) => {
        $(impl ConfigValue for $ty {
            const EXPECTING: &'static str = $expecting;

            fn from_config_str(s: &str) -> Result<Self, String> {
                <$ty as FromStr>::from_str(s)
            }
        })+
    };
}

config_value_from_str!(
    RuntimeKind: "a runtime name",
    RelayTls: "a TLS level",
    Protocol: "a protocol name",
    ListenerTls: "a tls mode",
    ListenerAuth: "an auth mode",
    LocalDelivery: "\"maildir\" or \"lmtp:...\"",
);
