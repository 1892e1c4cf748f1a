//! Where mail for a destination goes: the `relay_host`, or the domain's MX hosts in
//! preference order with the domain's own A/AAAA records when it has no MX (RFC 5321
//! section 5.1), looked up with hickory-resolver through `dns_servers` or
//! `/etc/resolv.conf`. MX hosts of equal preference are tried in a random order, new for
//! every lookup, to spread the load as section 5.1 asks; the addresses of one host keep
//! the order the resolver gave them.
//!
//! Known limit: a `relay_host` is always looked up by its address records (as Postfix does
//! for `[host]`), with the system resolver, never by MX.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use hickory_resolver::ResolveError;

use crate::config::DeliveryConfig;
use crate::dns::{Dns, Mx};

/// SMTP's port, the only one MX delivery uses.
const SMTP_PORT: u16 = 25;

/// One address to try, with the host name it belongs to (for TLS and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

/// Why no address could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RouteError {
    /// Whether retrying cannot help (the domain does not exist, or has a null MX).
    pub permanent: bool,
    /// The enhanced status code.
    pub status: &'static str,
    /// What happened, for the log and the notification.
    pub text: String,
}

/// Finds the addresses of destinations.
pub(super) enum Router {
    /// Everything goes to the relay host (`host`, port).
    Relay(String, u16),
    /// Each domain to its MX hosts.
    Mx,
}

impl Router {
    /// A router for the `[delivery]` configuration.
    pub fn new(config: &DeliveryConfig) -> Router {
        match config.relay_host.as_deref().filter(|h| !h.is_empty()) {
            Some(relay) => {
                let (host, port) = parse_relay(relay);
                Router::Relay(host, port)
            }
            None => Router::Mx,
        }
    }

    /// Whether every message goes to the relay host.
    pub fn has_relay(relay_host: Option<&str>) -> bool {
        relay_host.is_some_and(|h| !h.is_empty())
    }

    /// The addresses to try for `domain` (ignored with a relay host), best first. `dns`
    /// gives the resolver, asked for only when MX records are to be looked up.
    pub fn targets<'d>(
        &self,
        dns: impl FnOnce() -> Result<&'d Dns, &'d str>,
        domain: &str,
    ) -> Result<Vec<Target>, RouteError> {
        if let Router::Relay(host, port) = self {
            return resolve_relay(host, *port);
        }
        if let Some(ip) = address_literal(domain) {
            return Ok(vec![Target {
                host: ip.to_string(),
                addr: SocketAddr::new(ip, SMTP_PORT),
            }]);
        }

        let dns = dns().map_err(|text| RouteError {
            permanent: false,
            status: "4.3.0",
            text: text.to_owned(),
        })?;
        // Only a name without MX records falls back to its address: a failed lookup
        // (SERVFAIL, a timeout) must not send the mail past the MX hosts.
        let hosts = match dns.mx(domain) {
            Ok(Mx::Hosts(mx)) => order_mx(mx),
            Ok(Mx::NoRecords) => vec![domain.to_owned()],
            Ok(Mx::Null) => {
                return Err(RouteError {
                    permanent: true,
                    status: "5.1.10",
                    text: format!("domain {domain} does not accept mail (null MX)"),
                });
            }
            Err(e) => return Err(dns_error(domain, "MX", &e)),
        };

        let mut targets = Vec::new();
        let mut last_error = None;
        for host in hosts {
            match dns.addresses(&host) {
                Ok(addresses) => targets.extend(addresses.into_iter().map(|ip| Target {
                    host: host.trim_end_matches('.').to_owned(),
                    addr: SocketAddr::new(ip, SMTP_PORT),
                })),
                Err(e) => last_error = Some(dns_error(&host, "A/AAAA", &e)),
            }
        }
        match (targets.is_empty(), last_error) {
            (false, _) => Ok(targets),
            (true, Some(e)) => Err(e),
            (true, None) => Err(RouteError {
                permanent: false,
                status: "4.4.4",
                text: format!("no address found for the mail hosts of {domain}"),
            }),
        }
    }
}

/// `host`, `host:port`, `[host]` or `[host]:port`; the port defaults to 25.
fn parse_relay(text: &str) -> (String, u16) {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (rest, None),
        },
        None => match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (text, None),
        },
    };
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(SMTP_PORT);
    (host.to_owned(), port)
}

/// The MX hosts by preference, lowest number first, each run of equal preference
/// shuffled.
fn order_mx(mut mx: Vec<(u16, String)>) -> Vec<String> {
    mx.sort_by_key(|(preference, _)| *preference);
    let mut start = 0;
    while start < mx.len() {
        let preference = mx[start].0;
        let run = mx[start..]
            .iter()
            .take_while(|(p, _)| *p == preference)
            .count();
        shuffle(&mut mx[start..start + run]);
        start += run;
    }
    mx.into_iter().map(|(_, host)| host).collect()
}

/// Fisher-Yates.
fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, random_below(i + 1));
    }
}

/// A random number below `n` (at least 1). The modulo bias is nothing for the few hosts
/// of an MX set. Should the system's random source fail, std's per-process random hasher
/// keys stand in: still a different order from one lookup to the next.
fn random_below(n: usize) -> usize {
    let mut bytes = [0; 8];
    let value = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => RandomState::new().build_hasher().finish(),
    };
    (value % n as u64) as usize
}

fn resolve_relay(host: &str, port: u16) -> Result<Vec<Target>, RouteError> {
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let targets: Vec<Target> = addrs
                .map(|addr| Target {
                    host: host.to_owned(),
                    addr,
                })
                .collect();
            if targets.is_empty() {
                Err(RouteError {
                    permanent: false,
                    status: "4.4.4",
                    text: format!("relay host {host} has no address"),
                })
            } else {
                Ok(targets)
            }
        }
        Err(e) => Err(RouteError {
            permanent: false,
            status: "4.4.4",
            text: format!("cannot look up relay host {host}: {e}"),
        }),
    }
}

fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

/// Postfix's wording: a name that does not exist is permanent (5.4.4), anything else is a
/// temporary failure of the name service (4.4.3).
fn dns_error(name: &str, kind: &str, e: &ResolveError) -> RouteError {
    let what =
        format!("Host or domain name not found. Name service error for name={name} type={kind}");
    if e.is_nx_domain() {
        RouteError {
            permanent: true,
            status: "5.4.4",
            text: format!("{what}: Host not found"),
        }
    } else {
        RouteError {
            permanent: false,
            status: "4.4.3",
            text: format!("{what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_host_forms() {
        assert_eq!(parse_relay("mx.example"), ("mx.example".into(), 25));
        assert_eq!(parse_relay("mx.example:2525"), ("mx.example".into(), 2525));
        assert_eq!(parse_relay("[127.0.0.1]:26"), ("127.0.0.1".into(), 26));
        assert_eq!(parse_relay("[::1]:26"), ("::1".into(), 26));
        assert_eq!(parse_relay("[mx.example]"), ("mx.example".into(), 25));
    }

    #[test]
    fn equal_preference_hosts_are_shuffled_and_preferences_kept() {
        let records = vec![
            (20, "c.example".to_owned()),
            (10, "a1.example".to_owned()),
            (30, "z.example".to_owned()),
            (10, "a2.example".to_owned()),
            (10, "a3.example".to_owned()),
            (20, "b.example".to_owned()),
        ];
        let preference = |host: &str| records.iter().find(|(_, h)| h == host).unwrap().0;
        let mut first = std::collections::BTreeMap::new();
        let mut orders = std::collections::HashSet::new();
        for _ in 0..300 {
            let hosts = order_mx(records.clone());
            assert_eq!(hosts.len(), records.len());
            let preferences: Vec<u16> = hosts.iter().map(|h| preference(h)).collect();
            assert!(preferences.is_sorted(), "{hosts:?}");
            assert_eq!(hosts[5], "z.example");
            *first.entry(hosts[0].clone()).or_insert(0) += 1;
            orders.insert(hosts);
        }
        // Each of the three hosts of preference 10 came first at some point (the chance
        // that one never does in 300 shuffles is about 3 * (2/3)^300).
        let firsts: Vec<&String> = first.keys().collect();
        assert_eq!(firsts, ["a1.example", "a2.example", "a3.example"]);
        // The two hosts of preference 20 were shuffled too.
        assert!(orders.iter().any(|o| o[3] == "b.example"));
        assert!(orders.iter().any(|o| o[3] == "c.example"));
    }

    #[test]
    fn literals() {
        assert_eq!(
            address_literal("[127.0.0.2]"),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(address_literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(address_literal("example.org"), None);
    }
}
