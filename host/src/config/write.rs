//! Writes a [`Config`] back out as TOML, every default explicit, in SPEC.md order.

use std::fmt::Write as _;
use std::path::Path;

use super::{Bind, Config, LogTarget, format_duration};

pub(super) fn to_toml(config: &Config) -> String {
    let mut out = Toml::default();

    out.string("hostname", &config.hostname);
    out.strings("domains", &config.domains);
    out.strings(
        "trusted_networks",
        config.trusted_networks.iter().map(|n| n.to_string()),
    );
    out.string("runtime", config.runtime.name());
    out.path("data_dir", &config.data_dir);
    match &config.log {
        LogTarget::Stderr => out.string("log", "stderr"),
        // A file literally named `stderr` must not read back as standard error.
        LogTarget::File(path) if path.as_os_str() == "stderr" => out.string("log", "./stderr"),
        LogTarget::File(path) => out.path("log", path),
    }
    out.string("syslog_name", &config.syslog_name);

    if let Some(tls) = &config.tls {
        out.table("[tls]");
        out.path("certificate", &tls.certificate);
        out.path("private_key", &tls.private_key);
    }

    let accounts = &config.accounts;
    out.table("[accounts]");
    if let Some(file) = &accounts.file {
        out.path("file", file);
    }
    out.string("username_format", &accounts.username_format);
    if let Some(socket) = &accounts.dovecot_auth {
        out.path("dovecot_auth", socket);
    }
    if let Some(socket) = &accounts.dovecot_userdb {
        out.path("dovecot_userdb", socket);
    }

    out.table("[mailbox]");
    out.string("path", &config.mailbox.path);
    out.string("recipient_delimiter", &config.mailbox.recipient_delimiter);

    out.table("[aliases]");
    for alias in &config.aliases {
        let key = key(&alias.name);
        match alias.targets.as_slice() {
            [one] => out.string(&key, one),
            many => out.strings(&key, many),
        }
    }

    let delivery = &config.delivery;
    out.table("[delivery]");
    out.string("local", &delivery.local.to_string());
    out.string("relay_host", delivery.relay_host.as_deref().unwrap_or(""));
    out.string("relay_tls", delivery.relay_tls.name());
    out.strings("dns_servers", &delivery.dns_servers);
    out.string("queue_lifetime", &format_duration(delivery.queue_lifetime));
    out.string("delay_warning", &format_duration(delivery.delay_warning));

    let limits = &config.limits;
    out.table("[limits]");
    out.raw("message_size", limits.message_size);
    out.raw("recipients", limits.recipients);
    out.string("command_timeout", &format_duration(limits.command_timeout));
    out.string("data_timeout", &format_duration(limits.data_timeout));
    out.raw("errors", limits.errors);
    out.raw("auth_failures", limits.auth_failures);
    out.string(
        "auth_failure_delay",
        &format_duration(limits.auth_failure_delay),
    );
    out.raw("connections", limits.connections);
    out.raw("connections_per_ip", limits.connections_per_ip);

    for listener in &config.listeners {
        out.table("[[listener]]");
        out.string("name", &listener.name);
        out.string("protocol", listener.protocol.name());
        match &listener.bind {
            Bind::Tcp(address) => out.string("address", &address.to_string()),
            Bind::Unix {
                path,
                mode,
                user,
                group,
            } => {
                out.path("path", path);
                out.string("mode", &format!("{mode:04o}"));
                if let Some(user) = user {
                    out.string("user", user);
                }
                if let Some(group) = group {
                    out.string("group", group);
                }
            }
        }
        out.string("tls", listener.tls.name());
        out.string("auth", listener.auth.name());
        out.raw("plaintext_auth", listener.plaintext_auth);
        out.strings(
            "restrictions",
            listener.restrictions.iter().map(|r| r.name()),
        );
        if let Some(dir) = &listener.record_sessions {
            out.path("record_sessions", dir);
        }
    }

    out.text
}

#[derive(Default)]
struct Toml {
    text: String,
}

impl Toml {
    fn table(&mut self, header: &str) {
        let _ = write!(self.text, "\n{header}\n");
    }

    fn raw(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{key} = {value}");
    }

    fn string(&mut self, key: &str, value: &str) {
        self.raw(key, quote(value));
    }

    fn path(&mut self, key: &str, value: &Path) {
        self.string(key, &value.to_string_lossy());
    }

    fn strings<S: AsRef<str>>(&mut self, key: &str, values: impl IntoIterator<Item = S>) {
        let items: Vec<String> = values.into_iter().map(|v| quote(v.as_ref())).collect();
        self.raw(key, format_args!("[{}]", items.join(", ")));
    }
}

/// A TOML string literal, escaped as the toml crate does it.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A key, bare where TOML allows it.
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { name.to_owned() } else { quote(name) }
}
