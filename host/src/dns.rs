//! The DNS resolver of `delivery.dns_servers` (or `/etc/resolv.conf` when the list is
//! empty): hickory-resolver on a single-threaded tokio runtime of its own, so the blocking
//! callers (delivery threads, recipient checks) wait for an answer with `block_on`. One
//! per process ([`crate::service::Services::dns`]), so its cache serves every caller.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::runtime::Runtime;

use tern_core::server::Lookup;

use crate::config::DeliveryConfig;

/// A resolver and the runtime it runs on. The runtime may be entered from several threads
/// at once: the first drives the network, the others wait their turn.
pub struct Dns {
    resolver: TokioResolver,
    runtime: Runtime,
}

/// What a domain's MX records say (RFC 5321 section 5.1, RFC 7505).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mx {
    /// The mail hosts with their preferences, as the DNS gave them.
    Hosts(Vec<(u16, String)>),
    /// A lone MX of ".": the domain takes no mail.
    Null,
    /// The name exists without MX records: its own address is the mail host.
    NoRecords,
}

impl Dns {
    /// A resolver for the `[delivery]` configuration.
    pub fn new(config: &DeliveryConfig) -> Result<Dns, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the DNS runtime: {e}"))?;
        let resolver = if config.dns_servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?
                .build()
        } else {
            let mut group = NameServerConfigGroup::new();
            for server in &config.dns_servers {
                let addr = parse_server(server)
                    .ok_or_else(|| format!("dns_servers: {server} is not ip or ip:port"))?;
                group.push(NameServerConfig::new(addr, Protocol::Udp));
                group.push(NameServerConfig::new(addr, Protocol::Tcp));
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), group);
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build()
        };
        Ok(Dns { resolver, runtime })
    }

    /// The MX records of `domain`. A name that does not exist, and a failed lookup, are
    /// errors (told apart by [`ResolveError::is_nx_domain`]).
    pub fn mx(&self, domain: &str) -> Result<Mx, ResolveError> {
        match self.runtime.block_on(self.resolver.mx_lookup(fqdn(domain))) {
            Ok(lookup) => {
                let mx: Vec<(u16, String)> = lookup
                    .iter()
                    .map(|mx| (mx.preference(), mx.exchange().to_ascii()))
                    .collect();
                if mx.len() == 1 && mx[0].1 == "." {
                    Ok(Mx::Null)
                } else {
                    Ok(Mx::Hosts(mx))
                }
            }
            Err(e) if is_no_data(&e) => Ok(Mx::NoRecords),
            Err(e) => Err(e),
        }
    }

    /// The A and AAAA addresses of `host`.
    pub fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        self.runtime
            .block_on(self.resolver.lookup_ip(fqdn(host)))
            .map(|lookup| lookup.iter().collect())
    }

    /// Whether `domain` can take mail as far as DNS tells, as Postfix's
    /// `reject_unknown_recipient_domain` asks: it has MX records (other than a null MX),
    /// or else an address record. A name that does not exist, or exists without either,
    /// is `NotFound`; a failure of the lookup itself is `TempFail`.
    pub fn mail_domain(&self, domain: &str) -> Lookup {
        let unknown = |e: &ResolveError| e.is_nx_domain() || is_no_data(e);
        match self.mx(domain) {
            Ok(Mx::Hosts(_)) => Lookup::Found,
            Ok(Mx::Null) => Lookup::NotFound,
            Ok(Mx::NoRecords) => match self.addresses(domain) {
                Ok(_) => Lookup::Found,
                Err(e) if unknown(&e) => Lookup::NotFound,
                Err(_) => Lookup::TempFail,
            },
            Err(e) if unknown(&e) => Lookup::NotFound,
            Err(_) => Lookup::TempFail,
        }
    }
}

/// `name` as a fully qualified name, so that no search domain is tried.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Whether `e` says that the name exists without records of the type asked: NOERROR with
/// an empty answer. hickory reports a SERVFAIL or REFUSED as "no records found" too, with
/// that response code; those are failures of the lookup, not answers, so they are not this.
pub(crate) fn is_no_data(e: &ResolveError) -> bool {
    matches!(
        e.proto().map(ProtoError::kind),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NoError,
            ..
        })
    )
}

/// `ip` (port 53) or `ip:port`.
fn parse_server(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("127.0.0.1"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_server("[::1]:53"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_server("dns.example"), None);
    }
}
