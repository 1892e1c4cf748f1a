//! Turns the raw file into a [`Config`]: fills in defaults and checks what involves more
//! than one value, each error at the position of the key that has to change.

use std::collections::HashSet;
use std::ops::Range;
use std::path::PathBuf;

use tern_core::net::IpNet;
use tern_core::policy::Restriction;
use toml::Spanned;

use super::raw::{RawAccounts, RawConfig, RawDelivery, RawLimits, RawListener, RawMailbox};
use super::{
    AccountsConfig, Alias, Bind, Config, DeliveryConfig, Limits, Listener, ListenerAuth,
    ListenerTls, LogTarget, MailboxConfig, Protocol, TlsFiles,
};

pub(super) const DEFAULT_SYSLOG_NAME: &str = "tern";

/// An error at a byte range of the file.
pub(super) struct Located {
    pub span: Range<usize>,
    pub message: String,
}

/// The restrictions a listener gets when it names none. LMTP and Dovecot-auth apply none.
pub(super) fn default_restrictions(protocol: Protocol) -> Vec<Restriction> {
    match protocol {
        Protocol::Smtp => vec![
            Restriction::PermitMynetworks,
            Restriction::PermitSaslAuthenticated,
            Restriction::RejectUnauthDestination,
            Restriction::Permit,
        ],
        Protocol::Lmtp | Protocol::DovecotAuth => Vec::new(),
    }
}

pub(super) fn default_trusted_networks() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .into_iter()
        .map(|net| net.parse().expect("loopback networks parse"))
        .collect()
}

/// Builds the config; `system_hostname` is the default for `hostname`.
pub(super) fn build(raw: RawConfig, system_hostname: &str) -> Result<Config, Located> {
    let hostname = match raw.hostname {
        Some(name) => {
            check_domain_name(name.as_ref(), "hostname").map_err(|message| at(&name, message))?;
            name.into_inner()
        }
        None => system_hostname.to_owned(),
    };
    let domains = match raw.domains {
        Some(domains) => build_domains(domains)?,
        None => dedup(vec![hostname.to_ascii_lowercase(), "localhost".to_owned()]),
    };
    let syslog_name = match raw.syslog_name {
        Some(name) if name.as_ref().is_empty() || name.as_ref().contains(char::is_whitespace) => {
            return Err(at(
                &name,
                "syslog_name must be a non-empty word without spaces",
            ));
        }
        Some(name) => name.into_inner(),
        None => DEFAULT_SYSLOG_NAME.to_owned(),
    };
    let log = match raw.log.map(|log| log.0) {
        Some(path) if path.as_os_str() == "stderr" => LogTarget::Stderr,
        Some(path) => LogTarget::File(path),
        None => LogTarget::Stderr,
    };
    let tls = raw.tls.map(|tls| TlsFiles {
        certificate: tls.certificate.0,
        private_key: tls.private_key.0,
    });

    let listeners = build_listeners(raw.listeners, tls.is_some())?;
    Ok(Config {
        hostname,
        domains,
        trusted_networks: match raw.trusted_networks {
            Some(nets) => nets.into_iter().map(|net| net.0).collect(),
            None => default_trusted_networks(),
        },
        runtime: raw.runtime.map(|r| r.0).unwrap_or_default(),
        data_dir: raw
            .data_dir
            .map_or_else(|| PathBuf::from("/var/lib/tern"), |d| d.0),
        log,
        syslog_name,
        tls,
        accounts: build_accounts(raw.accounts)?,
        mailbox: build_mailbox(raw.mailbox)?,
        aliases: build_aliases(raw.aliases.0)?,
        delivery: build_delivery(raw.delivery)?,
        limits: build_limits(raw.limits)?,
        listeners,
    })
}

fn build_domains(domains: Vec<Spanned<String>>) -> Result<Vec<String>, Located> {
    let mut out = Vec::new();
    for domain in domains {
        let name = domain.as_ref().strip_suffix('.').unwrap_or(domain.as_ref());
        check_domain_name(name, "domain").map_err(|message| at(&domain, message))?;
        out.push(name.to_ascii_lowercase());
    }
    Ok(dedup(out))
}

fn build_accounts(raw: RawAccounts) -> Result<AccountsConfig, Located> {
    let defaults = AccountsConfig::default();
    let username_format = match raw.username_format {
        Some(format) => {
            check_expansions(format.as_ref(), "username_format")
                .map_err(|message| at(&format, message))?;
            format.into_inner()
        }
        None => defaults.username_format,
    };
    let file = raw.file.map(|f| f.0);
    let dovecot_userdb = raw.dovecot_userdb.map(|d| d.0);

    // SPEC.md section 2: RCPT checks need a user list that is not the password checker.
    match &raw.dovecot_auth {
        Some(auth) if file.is_none() && dovecot_userdb.is_none() => {
            return Err(at(
                auth,
                "dovecot_auth needs dovecot_userdb or file too, to know the local users at \
                 RCPT time",
            ));
        }
        _ => {}
    }

    Ok(AccountsConfig {
        file,
        username_format,
        dovecot_auth: raw.dovecot_auth.map(|d| d.into_inner().0),
        dovecot_userdb,
    })
}

fn build_mailbox(raw: RawMailbox) -> Result<MailboxConfig, Located> {
    let defaults = MailboxConfig::default();
    let path = match raw.path {
        Some(path) if path.as_ref().is_empty() => {
            return Err(at(&path, "the mailbox path may not be empty"));
        }
        Some(path) => {
            check_expansions(path.as_ref(), "the mailbox path")
                .map_err(|message| at(&path, message))?;
            path.into_inner()
        }
        None => defaults.path,
    };
    let recipient_delimiter = match raw.recipient_delimiter {
        Some(delim) if delim.as_ref().contains(['@', '%', '!', ' ']) => {
            return Err(at(
                &delim,
                "recipient_delimiter may not contain `@`, `%`, `!` or a space",
            ));
        }
        Some(delim) => delim.into_inner(),
        None => defaults.recipient_delimiter,
    };
    Ok(MailboxConfig {
        path,
        recipient_delimiter,
    })
}

fn build_aliases(raw: Vec<(Spanned<String>, Spanned<Vec<String>>)>) -> Result<Vec<Alias>, Located> {
    let mut seen = HashSet::new();
    let mut aliases = Vec::new();
    for (name, targets) in raw {
        check_address(name.as_ref()).map_err(|message| at(&name, message))?;
        if !seen.insert(name.as_ref().to_ascii_lowercase()) {
            return Err(at(
                &name,
                format!("alias `{}` is given twice", name.as_ref()),
            ));
        }
        if targets.as_ref().is_empty() {
            return Err(at(
                &targets,
                format!("alias `{}` has no target", name.as_ref()),
            ));
        }
        for target in targets.as_ref() {
            check_address(target).map_err(|message| at(&targets, message))?;
        }
        aliases.push(Alias {
            name: name.into_inner(),
            targets: targets.into_inner(),
        });
    }
    Ok(aliases)
}

fn build_delivery(raw: RawDelivery) -> Result<DeliveryConfig, Located> {
    let defaults = DeliveryConfig::default();
    let queue_lifetime = match raw.queue_lifetime {
        Some(d) => positive_duration(d, "queue_lifetime")?,
        None => defaults.queue_lifetime,
    };
    Ok(DeliveryConfig {
        local: raw.local.map_or(defaults.local, |l| l.0),
        relay_host: raw.relay_host.and_then(|h| h.0.0),
        relay_tls: raw.relay_tls.map_or(defaults.relay_tls, |t| t.0),
        dns_servers: raw.dns_servers.map_or(defaults.dns_servers, |servers| {
            servers.into_iter().map(|s| s.0.0).collect()
        }),
        queue_lifetime,
        // Zero is allowed: no delay notices.
        delay_warning: raw.delay_warning.map_or(defaults.delay_warning, |d| d.0),
    })
}

fn build_limits(raw: RawLimits) -> Result<Limits, Located> {
    let d = Limits::default();
    Ok(Limits {
        message_size: positive(raw.message_size, d.message_size, "message_size")?,
        recipients: positive(raw.recipients, d.recipients, "recipients")?,
        command_timeout: match raw.command_timeout {
            Some(t) => positive_duration(t, "command_timeout")?,
            None => d.command_timeout,
        },
        data_timeout: match raw.data_timeout {
            Some(t) => positive_duration(t, "data_timeout")?,
            None => d.data_timeout,
        },
        errors: positive(raw.errors, d.errors, "errors")?,
        auth_failures: positive(raw.auth_failures, d.auth_failures, "auth_failures")?,
        // Zero is allowed here: no delay, as tests and trusted setups may want.
        auth_failure_delay: raw.auth_failure_delay.map_or(d.auth_failure_delay, |t| t.0),
        connections: positive(raw.connections, d.connections, "connections")?,
        connections_per_ip: positive(
            raw.connections_per_ip,
            d.connections_per_ip,
            "connections_per_ip",
        )?,
    })
}

fn build_listeners(
    raw: Vec<Spanned<RawListener>>,
    have_tls: bool,
) -> Result<Vec<Listener>, Located> {
    let mut names = HashSet::new();
    let mut listeners = Vec::new();
    for listener in raw {
        let table = listener.span();
        let built = build_listener(listener.into_inner(), table, have_tls, &mut names)?;
        listeners.push(built);
    }
    Ok(listeners)
}

fn build_listener(
    raw: RawListener,
    table: Range<usize>,
    have_tls: bool,
    names: &mut HashSet<String>,
) -> Result<Listener, Located> {
    let name = raw.name;
    let valid_name = !name.as_ref().is_empty()
        && name
            .as_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name {
        return Err(at(
            &name,
            "a listener name may contain only letters, digits, `-`, `_` and `.`",
        ));
    }
    if !names.insert(name.as_ref().clone()) {
        return Err(at(
            &name,
            format!("a listener named `{}` is already defined", name.as_ref()),
        ));
    }
    let protocol = raw.protocol.0;

    let bind = match (raw.address, raw.path) {
        (Some(_), Some(path)) => {
            return Err(at(
                &path,
                "`address` and `path` are mutually exclusive; give one",
            ));
        }
        (None, None) => {
            return Err(Located {
                span: table,
                message: format!(
                    "listener `{}` needs `address` (TCP) or `path` (Unix socket)",
                    name.as_ref()
                ),
            });
        }
        (Some(address), None) => {
            let unix_only = [
                raw.mode.as_ref().map(|m| (m.span(), "mode")),
                raw.user.as_ref().map(|u| (u.span(), "user")),
                raw.group.as_ref().map(|g| (g.span(), "group")),
            ];
            if let Some((span, key)) = unix_only.into_iter().flatten().next() {
                return Err(Located {
                    span,
                    message: format!("`{key}` applies only to a Unix socket (`path`)"),
                });
            }
            Bind::Tcp(address.into_inner().0)
        }
        (None, Some(path)) => Bind::Unix {
            path: path.into_inner().0,
            mode: raw.mode.map_or(0o600, |m| m.into_inner().0.0),
            user: raw.user.map(non_empty_owner).transpose()?,
            group: raw.group.map(non_empty_owner).transpose()?,
        },
    };

    let tls = match raw.tls {
        Some(tls) => {
            check_listener_tls(&tls, protocol, &bind, have_tls)?;
            tls.into_inner().0
        }
        None => ListenerTls::None,
    };

    let auth = match raw.auth {
        Some(auth)
            if protocol == Protocol::DovecotAuth && auth.as_ref().0 != ListenerAuth::None =>
        {
            return Err(at(
                &auth,
                "`auth` has no meaning on a dovecot-auth listener: it answers the auth \
                 requests itself",
            ));
        }
        Some(auth) => auth.into_inner().0,
        None if protocol == Protocol::Smtp => ListenerAuth::Optional,
        None => ListenerAuth::None,
    };

    let restrictions = match raw.restrictions {
        // SPEC.md section 4: LMTP applies no restriction list, so a list there is a mistake.
        Some(list) if protocol != Protocol::Smtp && !list.as_ref().is_empty() => {
            return Err(at(
                &list,
                format!("restrictions do not apply to {} listeners", protocol.name()),
            ));
        }
        Some(list) => list.into_inner().into_iter().map(|r| r.0).collect(),
        None => default_restrictions(protocol),
    };

    Ok(Listener {
        name: name.into_inner(),
        protocol,
        bind,
        tls,
        auth,
        plaintext_auth: raw.plaintext_auth.unwrap_or(false),
        restrictions,
        record_sessions: raw.record_sessions.map(|d| d.0),
    })
}

fn check_listener_tls(
    tls: &Spanned<super::raw::Parsed<ListenerTls>>,
    protocol: Protocol,
    bind: &Bind,
    have_tls: bool,
) -> Result<(), Located> {
    let mode = tls.as_ref().0;
    if mode == ListenerTls::None {
        return Ok(());
    }
    if protocol == Protocol::DovecotAuth {
        return Err(at(
            tls,
            "the dovecot-auth protocol has no TLS; use tls = \"none\"",
        ));
    }
    if mode == ListenerTls::Implicit
        && !(protocol == Protocol::Smtp && matches!(bind, Bind::Tcp(_)))
    {
        return Err(at(
            tls,
            "tls = \"implicit\" is only for smtp listeners on a TCP `address`",
        ));
    }
    if !have_tls {
        return Err(at(
            tls,
            format!(
                "tls = \"{}\" needs a [tls] section with certificate and private_key",
                mode.name()
            ),
        ));
    }
    Ok(())
}

fn non_empty_owner(owner: Spanned<String>) -> Result<String, Located> {
    if owner.as_ref().is_empty() {
        return Err(at(&owner, "an owner name may not be empty"));
    }
    Ok(owner.into_inner())
}

fn positive<T: Copy + Default + PartialEq>(
    value: Option<Spanned<T>>,
    default: T,
    key: &str,
) -> Result<T, Located> {
    match value {
        Some(v) if *v.as_ref() == T::default() => Err(at(&v, format!("{key} must be at least 1"))),
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
    }
}

fn positive_duration(
    value: Spanned<super::raw::Parsed<std::time::Duration>>,
    key: &str,
) -> Result<std::time::Duration, Located> {
    if value.as_ref().0.is_zero() {
        return Err(at(&value, format!("{key} may not be zero")));
    }
    Ok(value.into_inner().0)
}

/// A host or domain name: dot-separated labels of letters, digits and `-`.
fn check_domain_name(name: &str, what: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid {what}"))
    }
}

/// An alias name or target: a local part or `local@domain`, no spaces or control bytes.
fn check_address(address: &str) -> Result<(), String> {
    let valid = !address.is_empty()
        && !address.starts_with('@')
        && !address.ends_with('@')
        && address.matches('@').count() <= 1
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!("`{address}` is not an address or local part"))
    }
}

/// `%` expansions: `%u %n %d`, each optionally lowercased with `L`, and `%%`.
fn check_expansions(text: &str, what: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        let len = if after.starts_with(['%', 'u', 'n', 'd']) {
            1
        } else if after.starts_with("Lu") || after.starts_with("Ln") || after.starts_with("Ld") {
            2
        } else {
            let bad: String = after.chars().take(2).collect();
            return Err(format!(
                "unknown expansion `%{bad}` in {what}: use %u %n %d %Lu %Ln %Ld or %%"
            ));
        };
        rest = &after[len..];
    }
    Ok(())
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

fn at<T>(value: &Spanned<T>, message: impl Into<String>) -> Located {
    Located {
        span: value.span(),
        message: message.into(),
    }
}
