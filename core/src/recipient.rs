//! Where a recipient goes: local domains, `recipient_delimiter`, `[aliases]`, and the
//! canonical address rule of SPEC.md section 2, under which the relay decision and the
//! delivery see the same address.
//!
//! Canonical form: the parser has already dropped source routes, unquoted the local part,
//! lowercased the domain and removed its trailing dot. Local parts are compared without
//! regard to case, as Postfix's table lookups do. A `%` or `!` in a local part is only text:
//! it is never used to route.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::address::{Domain, Mailbox};
use crate::net::IpNet;

/// Alias expansion stops at this depth, so an alias loop cannot run forever.
const MAX_ALIAS_DEPTH: usize = 8;

/// Site-wide facts that decide where mail goes.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Domains delivered here (Postfix `mydestination`), lowercased, without trailing dot.
    pub domains: Vec<String>,
    /// Client networks trusted to relay (Postfix `mynetworks`).
    pub trusted_networks: Vec<IpNet>,
    /// Characters that separate a local part from its extension; empty turns it off.
    pub recipient_delimiter: String,
    /// The alias table.
    pub aliases: Aliases,
}

/// `[aliases]`: keys are full addresses (`sales@example.net`) or bare local parts
/// (`postmaster`, matching in every local domain); targets are accounts or addresses.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    map: BTreeMap<String, Vec<String>>,
}

impl Aliases {
    /// Adds an alias; keys are matched without regard to case.
    pub fn insert(&mut self, key: &str, targets: Vec<String>) {
        self.map.insert(key.to_lowercase(), targets);
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every alias and its targets, keys in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    fn lookup(&self, key: &str) -> Option<&[String]> {
        self.map.get(key).map(Vec::as_slice)
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.map.iter()
    }
}

/// Where one copy of a message goes after aliases and the delimiter are applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A local account.
    Local {
        /// The address the account is looked up by: extension removed, local part as given.
        account: String,
        /// The final address, after aliases, extension kept: what `Delivered-To:` names.
        address: String,
    },
    /// An address in a domain that is not ours: for the outbound queue.
    Remote(String),
}

impl Policy {
    /// Whether `domain` is delivered here. An address literal is local only when it is the
    /// address the client connected to (`local_ip`).
    pub fn is_local_domain(&self, domain: &Domain, local_ip: Option<IpAddr>) -> bool {
        match domain {
            Domain::Name(name) => self.domains.iter().any(|d| d == name),
            Domain::Literal(ip) => local_ip.is_some_and(|local| local == *ip),
            Domain::General(_) => false,
        }
    }

    /// Whether the client address is in `trusted_networks`.
    pub fn is_trusted(&self, client: Option<IpAddr>) -> bool {
        client.is_some_and(|ip| self.trusted_networks.iter().any(|net| net.contains(ip)))
    }

    /// Expands a recipient in a local domain into its destinations. `domain` names the local
    /// domain in which bare aliases and bare targets are read.
    pub fn resolve_local(&self, mailbox: &Mailbox, local_ip: Option<IpAddr>) -> Vec<Destination> {
        let mut out = Vec::new();
        let address = format!("{}@{}", mailbox.local, mailbox.domain);
        self.expand(&address, local_ip, 0, &mut out);
        out.sort();
        out.dedup();
        out
    }

    /// The destinations of `postmaster` in `domain` (RFC 5321 section 4.5.1).
    pub fn resolve_postmaster(&self, domain: &str, local_ip: Option<IpAddr>) -> Vec<Destination> {
        let mut out = Vec::new();
        self.expand(&format!("postmaster@{domain}"), local_ip, 0, &mut out);
        out.sort();
        out.dedup();
        out
    }

    /// Whether the account that logged in as `login` owns the sender `sender` (for
    /// `reject_sender_login_mismatch`): its login in each local domain (or the login itself
    /// when it is a full address), and every alias whose expansion reaches that account.
    pub fn login_owns(&self, login: &str, sender: &Mailbox, local_ip: Option<IpAddr>) -> bool {
        let login = login.to_lowercase();
        let sender_address = format!("{}@{}", sender.local.to_lowercase(), sender.domain);
        let is_local = self.is_local_domain(&sender.domain, local_ip);
        let owned_directly = if login.contains('@') {
            sender_address == login
        } else {
            is_local && sender.local.to_lowercase() == login
        };
        if owned_directly {
            return true;
        }
        if !is_local {
            return false;
        }
        self.resolve_local(sender, local_ip)
            .iter()
            .any(|destination| match destination {
                Destination::Local { account, .. } => {
                    let account = account.to_lowercase();
                    if login.contains('@') {
                        account == login
                    } else {
                        account.split('@').next() == Some(login.as_str())
                    }
                }
                Destination::Remote(_) => false,
            })
    }

    fn expand(
        &self,
        address: &str,
        local_ip: Option<IpAddr>,
        depth: usize,
        out: &mut Vec<Destination>,
    ) {
        let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
        let domain_value = parse_domain(domain);
        let is_local = self.is_local_domain(&domain_value, local_ip);
        if !is_local {
            out.push(Destination::Remote(address.to_owned()));
            return;
        }

        // An address literal of ours means the primary domain, so `user@[our.ip]` reaches
        // the same account and aliases as `user@primary`.
        let domain = match (&domain_value, self.domains.first()) {
            (Domain::Literal(_), Some(primary)) => primary.as_str(),
            _ => domain,
        };
        let base = self.strip_extension(local);
        if depth < MAX_ALIAS_DEPTH {
            let lower_local = local.to_lowercase();
            let lower_base = base.to_lowercase();
            let keys = [
                format!("{lower_local}@{domain}"),
                format!("{lower_base}@{domain}"),
                lower_local.clone(),
                lower_base.clone(),
            ];
            if let Some(targets) = keys.iter().find_map(|key| self.aliases.lookup(key)) {
                for target in targets {
                    let target = if target.contains('@') {
                        target.to_lowercase()
                    } else {
                        format!("{}@{domain}", target.to_lowercase())
                    };
                    self.expand(&target, local_ip, depth + 1, out);
                }
                return;
            }
        }

        out.push(Destination::Local {
            account: format!("{base}@{domain}"),
            address: address.to_owned(),
        });
    }

    /// `bob+lists` gives `bob` (Postfix `recipient_delimiter`: any of its characters splits).
    /// A local part that begins with the delimiter is left whole.
    fn strip_extension<'a>(&self, local: &'a str) -> &'a str {
        if self.recipient_delimiter.is_empty() {
            return local;
        }
        match local.find(|c| self.recipient_delimiter.contains(c)) {
            Some(0) | None => local,
            Some(at) => &local[..at],
        }
    }

    /// Every alias key that resolves to something, for docs and `check-config`.
    pub fn alias_keys(&self) -> impl Iterator<Item = &String> {
        self.aliases.iter().map(|(key, _)| key)
    }
}

fn parse_domain(domain: &str) -> Domain {
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return match ip.parse() {
            Ok(ip) => Domain::Literal(ip),
            Err(_) => Domain::General(literal.to_owned()),
        };
    }
    Domain::Name(domain.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let mut aliases = Aliases::default();
        aliases.insert("postmaster", vec!["alice".into()]);
        aliases.insert(
            "sales@example.net",
            vec!["bob@example.net".into(), "carol@example.org".into()],
        );
        aliases.insert("loop1", vec!["loop2".into()]);
        aliases.insert("loop2", vec!["loop1".into()]);
        Policy {
            domains: vec!["example.net".into(), "example.com".into()],
            trusted_networks: vec!["127.0.0.0/8".parse().unwrap()],
            recipient_delimiter: "+".into(),
            aliases,
        }
    }

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: parse_domain(domain),
        }
    }

    fn local(account: &str, address: &str) -> Destination {
        Destination::Local {
            account: account.into(),
            address: address.into(),
        }
    }

    #[test]
    fn plain_account() {
        let p = policy();
        assert_eq!(
            p.resolve_local(&mailbox("bob", "example.net"), None),
            vec![local("bob@example.net", "bob@example.net")]
        );
    }

    #[test]
    fn delimiter_keeps_the_address_and_strips_the_account() {
        let p = policy();
        assert_eq!(
            p.resolve_local(&mailbox("bob+lists", "example.net"), None),
            vec![local("bob@example.net", "bob+lists@example.net")]
        );
        assert_eq!(
            p.resolve_local(&mailbox("+x", "example.net"), None),
            vec![local("+x@example.net", "+x@example.net")]
        );
    }

    #[test]
    fn aliases_expand_to_local_and_remote() {
        let p = policy();
        assert_eq!(
            p.resolve_local(&mailbox("Sales", "example.net"), None),
            vec![
                local("bob@example.net", "bob@example.net"),
                Destination::Remote("carol@example.org".into()),
            ]
        );
        assert_eq!(
            p.resolve_postmaster("example.com", None),
            vec![local("alice@example.com", "alice@example.com")]
        );
    }

    #[test]
    fn alias_loops_end() {
        let p = policy();
        let out = p.resolve_local(&mailbox("loop1", "example.net"), None);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn address_literals_are_local_only_for_our_address() {
        let p = policy();
        let ours: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.is_local_domain(&parse_domain("[127.0.0.1]"), Some(ours)));
        assert!(!p.is_local_domain(&parse_domain("[127.0.0.2]"), Some(ours)));
        assert!(!p.is_local_domain(&parse_domain("[127.0.0.1]"), None));
    }

    #[test]
    fn sender_ownership() {
        let p = policy();
        assert!(p.login_owns("alice", &mailbox("alice", "example.net"), None));
        assert!(p.login_owns("alice", &mailbox("Alice", "example.com"), None));
        assert!(p.login_owns("alice", &mailbox("postmaster", "example.net"), None));
        assert!(!p.login_owns("alice", &mailbox("alice", "example.org"), None));
        assert!(!p.login_owns("alice", &mailbox("bob", "example.net"), None));
        assert!(p.login_owns("bob@example.net", &mailbox("bob", "example.net"), None));
        assert!(!p.login_owns("bob@example.net", &mailbox("bob", "example.com"), None));
        assert!(p.login_owns("bob", &mailbox("sales", "example.net"), None));
    }
}
