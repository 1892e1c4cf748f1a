//! The text form of a recording: escaping, the header, and one event per line.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::redact::Class;
use super::{Event, Input, Segment};
use crate::policy::Restriction;
use crate::reply::Mode;
use crate::sasl::{Mechanism, ScramSecret};
use crate::server::{
    AuthMode, AuthVerdict, Config, DeliveryReport, Lookup, Peer, RcptOutcome, TlsMode,
};

/// The longest time a recording may name: about 31 years.
const MAX_SECONDS: u64 = 1_000_000_000;

/// The first line of every recording.
pub(super) const MAGIC: &str = "tern-replay 1";

/// Escapes bytes so that any byte survives a text line: printable ASCII stays (a backslash
/// doubles), CR, LF and tab become `\r`, `\n`, `\t`, the rest `\xHH`. A space is escaped
/// where it could be lost: always when `words` (in header fields), else at the end.
pub(super) fn escape(bytes: &[u8], words: bool, out: &mut String) {
    escape_part(bytes, words, true, out);
}

/// Like [`escape`], for a part of a field: `last` says whether the field ends with it.
fn escape_part(bytes: &[u8], words: bool, last: bool, out: &mut String) {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b' ' if words || (last && i + 1 == bytes.len()) => out.push_str("\\x20"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// The bytes of an escaped field, with `\{secret ...}` markers kept as segments.
pub(super) fn unescape(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut plain = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b != b'\\' {
            plain.push(b);
            continue;
        }
        let Some(&kind) = bytes.get(i) else {
            return Err("a lone `\\` at the end".into());
        };
        i += 1;
        match kind {
            b'\\' => plain.push(b'\\'),
            b'r' => plain.push(b'\r'),
            b'n' => plain.push(b'\n'),
            b't' => plain.push(b'\t'),
            b'x' => {
                let hex = text.get(i..i + 2).ok_or("`\\x` needs two hex digits")?;
                let value =
                    u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape `\\x{hex}`"))?;
                plain.push(value);
                i += 2;
            }
            b'{' => {
                let end = text[i..].find('}').ok_or("an unclosed `\\{`")? + i;
                if !plain.is_empty() {
                    segments.push(Segment::Plain(std::mem::take(&mut plain)));
                }
                segments.push(parse_marker(&text[i..end])?);
                i = end + 1;
            }
            other => return Err(format!("unknown escape `\\{}`", char::from(other))),
        }
    }
    if !plain.is_empty() || segments.is_empty() {
        segments.push(Segment::Plain(plain));
    }
    Ok(segments)
}

/// Unescapes a field that may hold no marker.
pub(super) fn unescape_plain(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for segment in unescape(text)? {
        match segment {
            Segment::Plain(bytes) => out.extend(bytes),
            Segment::Secret { .. } => return Err("a secret marker outside input".into()),
        }
    }
    Ok(out)
}

/// `\{secret CLASS TOTAL FROM..TO}`: octets FROM..TO of a TOTAL-octet stand-in.
fn parse_marker(marker: &str) -> Result<Segment, String> {
    let bad = || format!("bad secret marker `\\{{{marker}}}`");
    let mut parts = marker.split(' ');
    if parts.next() != Some("secret") {
        return Err(bad());
    }
    let class: Class = parts.next().ok_or_else(bad)?.parse()?;
    let total: usize = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let (from, to) = parts
        .next()
        .and_then(|r| r.split_once(".."))
        .ok_or_else(bad)?;
    let (from, to): (usize, usize) = match (from.parse(), to.parse()) {
        (Ok(from), Ok(to)) if from < to && to <= total => (from, to),
        _ => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Segment::Secret {
        class,
        total,
        from,
        to,
    })
}

/// The input text of an `in` event.
pub(super) fn segments_text(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Plain(bytes) => escape_part(bytes, false, i + 1 == segments.len(), &mut out),
            Segment::Secret {
                class,
                total,
                from,
                to,
            } => {
                let _ = write!(out, "\\{{secret {class} {total} {from}..{to}}}");
            }
        }
    }
    out
}

/// `SECONDS.NANOS`, the form of every time in a recording.
pub(super) fn duration(d: Duration) -> String {
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a time (SECONDS.NANOS)");
    let (secs, nanos) = text.split_once('.').ok_or_else(bad)?;
    if nanos.len() != 9 {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let nanos: u32 = nanos.parse().map_err(|_| bad())?;
    // Far beyond any session, and far from overflowing an `Instant`.
    if secs > MAX_SECONDS {
        return Err(format!("`{text}` is more than {MAX_SECONDS} seconds"));
    }
    Ok(Duration::new(secs, nanos))
}

/// The header: everything a session is configured with, and the peer. Holds no secret: a
/// session configuration has none.
pub(super) fn header(config: &Config, peer: &Peer) -> String {
    let mut out = String::new();
    let words = |items: &mut dyn Iterator<Item = String>| {
        let mut line = String::new();
        for item in items {
            line.push(' ');
            escape(item.as_bytes(), true, &mut line);
        }
        line
    };
    let limits = &config.limits;
    let lines = [
        format!(
            "hostname{}",
            words(&mut [config.hostname.clone()].into_iter())
        ),
        format!("mode {}", mode_name(config.mode)),
        format!("tls {}", tls_name(config.tls)),
        format!("auth {}", auth_name(config.auth)),
        format!("plaintext_auth {}", config.plaintext_auth),
        format!(
            "mechanisms{}",
            words(&mut config.mechanisms.iter().map(|m| m.name().to_owned()))
        ),
        format!(
            "restrictions{}",
            words(&mut config.restrictions.iter().map(|r| r.name().to_owned()))
        ),
        format!(
            "limits message_size={} recipients={} command_timeout={} data_timeout={} \
             errors={} auth_failures={} auth_failure_delay={}",
            limits.message_size,
            limits.recipients,
            duration(limits.command_timeout),
            duration(limits.data_timeout),
            limits.errors,
            limits.auth_failures,
            duration(limits.auth_failure_delay),
        ),
        format!(
            "domains{}",
            words(&mut config.policy.domains.iter().cloned())
        ),
        format!(
            "trusted_networks{}",
            words(&mut config.policy.trusted_networks.iter().map(|n| n.to_string()))
        ),
        format!(
            "recipient_delimiter{}",
            words(&mut [config.policy.recipient_delimiter.clone()].into_iter())
        ),
    ];
    out.push_str(MAGIC);
    out.push('\n');
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    for (key, targets) in config.policy.aliases.entries() {
        let items = std::iter::once(key.to_owned()).chain(targets.iter().cloned());
        let _ = writeln!(out, "alias{}", words(&mut items.into_iter()));
    }
    let ip = |ip: Option<IpAddr>| ip.map_or("-".to_owned(), |ip| ip.to_string());
    let _ = writeln!(out, "peer {} {}", ip(peer.client), ip(peer.local));
    out.push_str("events\n");
    out
}

/// Reads the header lines (after the magic line, up to `events`) into a configuration.
pub(super) fn parse_header_line(
    line: &str,
    config: &mut Config,
    peer: &mut Peer,
) -> Result<(), String> {
    let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
    let fields = rest
        .split(' ')
        .filter(|f| !f.is_empty())
        .map(|f| unescape_plain(f).and_then(|b| String::from_utf8(b).map_err(|e| e.to_string())))
        .collect::<Result<Vec<String>, String>>()?;
    let one = || match fields.as_slice() {
        [only] => Ok(only.as_str()),
        _ => Err(format!("`{key}` takes one value")),
    };
    match key {
        "hostname" => config.hostname = one()?.to_owned(),
        "mode" => config.mode = pick(one()?, &[("smtp", Mode::Smtp), ("lmtp", Mode::Lmtp)])?,
        "tls" => config.tls = pick(one()?, &TLS_NAMES)?,
        "auth" => config.auth = pick(one()?, &AUTH_NAMES)?,
        "plaintext_auth" => {
            config.plaintext_auth = pick(one()?, &[("true", true), ("false", false)])?
        }
        "mechanisms" => {
            config.mechanisms = fields
                .iter()
                .map(|m| {
                    m.parse::<Mechanism>()
                        .map_err(|()| format!("unknown mechanism `{m}`"))
                })
                .collect::<Result<_, _>>()?;
            // The server's secret is not recorded; any secret offers SCRAM the same way, and
            // a SCRAM exchange stops the replay at its key lookup anyway.
            if config.mechanisms.contains(&Mechanism::ScramSha256) {
                config.scram_secret = Some(ScramSecret::new(b"tern replay".to_vec()));
            }
        }
        "restrictions" => {
            config.restrictions = fields
                .iter()
                .map(|r| r.parse::<Restriction>().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
        }
        "limits" => {
            for field in &fields {
                parse_limit(field, config)?;
            }
        }
        "domains" => config.policy.domains = fields,
        "trusted_networks" => {
            config.policy.trusted_networks = fields
                .iter()
                .map(|n| n.parse().map_err(|e| format!("{e}")))
                .collect::<Result<_, String>>()?;
        }
        "recipient_delimiter" => {
            config.policy.recipient_delimiter = fields.first().cloned().unwrap_or_default();
        }
        "alias" => {
            let (key, targets) = fields.split_first().ok_or("`alias` needs a key")?;
            config.policy.aliases.insert(key, targets.to_vec());
        }
        "peer" => {
            let [client, local] = fields.as_slice() else {
                return Err("`peer` takes the client and the local address".into());
            };
            let ip = |s: &str| -> Result<Option<IpAddr>, String> {
                match s {
                    "-" => Ok(None),
                    _ => s
                        .parse()
                        .map(Some)
                        .map_err(|_| format!("`{s}` is not an address")),
                }
            };
            peer.client = ip(client)?;
            peer.local = ip(local)?;
        }
        _ => return Err(format!("unknown header line `{key}`")),
    }
    Ok(())
}

fn parse_limit(field: &str, config: &mut Config) -> Result<(), String> {
    let (key, value) = field
        .split_once('=')
        .ok_or_else(|| format!("`{field}` is not KEY=VALUE"))?;
    let number = || {
        value
            .parse()
            .map_err(|_| format!("`{field}`: not a number"))
    };
    let limits = &mut config.limits;
    match key {
        "message_size" => limits.message_size = number()?,
        "recipients" => limits.recipients = number()? as usize,
        "command_timeout" => limits.command_timeout = parse_duration(value)?,
        "data_timeout" => limits.data_timeout = parse_duration(value)?,
        "errors" => limits.errors = u32::try_from(number()?).map_err(|e| e.to_string())?,
        "auth_failures" => {
            limits.auth_failures = u32::try_from(number()?).map_err(|e| e.to_string())?;
        }
        "auth_failure_delay" => limits.auth_failure_delay = parse_duration(value)?,
        _ => return Err(format!("unknown limit `{key}`")),
    }
    Ok(())
}

/// One event line without its time: `in ...`, `send ...`, `auth ok alice`, ...
pub(super) fn event_text(event: &Event) -> String {
    match event {
        Event::Input(input) => input_text(input),
        Event::Output(text) => text.clone(),
    }
}

fn input_text(input: &Input) -> String {
    match input {
        Input::Bytes(segments) => format!("in {}", segments_text(segments)),
        Input::Timeout => "timeout".into(),
        Input::TlsEstablished => "tls-established".into(),
        Input::Auth(AuthVerdict::Ok { login }) => {
            let mut out = "auth ok ".to_owned();
            escape(login.as_bytes(), true, &mut out);
            out
        }
        Input::Auth(AuthVerdict::Fail) => "auth fail".into(),
        Input::Auth(AuthVerdict::TempFail) => "auth tempfail".into(),
        Input::Recipient(lookup) => format!("recipient {}", lookup_name(*lookup)),
        Input::Domain(lookup) => format!("domain {}", lookup_name(*lookup)),
        Input::Delivery(report) => {
            let mut out = "delivery ".to_owned();
            escape(report.queue_id.as_bytes(), true, &mut out);
            for outcome in &report.recipients {
                out.push(' ');
                out.push_str(outcome_name(*outcome));
            }
            out
        }
        Input::Shutdown => "shutdown".into(),
        Input::ScramLookup => "scram-lookup".into(),
    }
}

/// Parses an input event; `None` if `kind` names an output.
pub(super) fn parse_input(kind: &str, rest: &str) -> Result<Option<Input>, String> {
    let fields: Vec<&str> = rest.split(' ').filter(|f| !f.is_empty()).collect();
    let input = match kind {
        "in" => Input::Bytes(unescape(rest)?),
        "timeout" => Input::Timeout,
        "tls-established" => Input::TlsEstablished,
        "shutdown" => Input::Shutdown,
        "scram-lookup" => Input::ScramLookup,
        "auth" => Input::Auth(match fields.as_slice() {
            ["ok", login] => AuthVerdict::Ok {
                login: String::from_utf8(unescape_plain(login)?).map_err(|e| e.to_string())?,
            },
            ["fail"] => AuthVerdict::Fail,
            ["tempfail"] => AuthVerdict::TempFail,
            _ => return Err(format!("bad auth verdict `{rest}`")),
        }),
        "recipient" => Input::Recipient(pick(rest, &LOOKUP_NAMES)?),
        "domain" => Input::Domain(pick(rest, &LOOKUP_NAMES)?),
        "delivery" => {
            let (queue_id, outcomes) = fields.split_first().ok_or("`delivery` needs an id")?;
            let queue_id =
                String::from_utf8(unescape_plain(queue_id)?).map_err(|e| e.to_string())?;
            let recipients = outcomes
                .iter()
                .map(|o| pick(o, &OUTCOME_NAMES))
                .collect::<Result<_, _>>()?;
            Input::Delivery(DeliveryReport {
                queue_id,
                recipients,
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(input))
}

/// The output kinds, for telling a bad line from an output.
pub(super) const OUTPUT_KINDS: [&str; 12] = [
    "send",
    "starttls",
    "authenticate",
    "check-recipient",
    "check-domain",
    "message-start",
    "message-data",
    "message-end",
    "message-abort",
    "close",
    "lookup-scram",
    "auth-failed",
];

const TLS_NAMES: [(&str, TlsMode); 4] = [
    ("none", TlsMode::None),
    ("may", TlsMode::May),
    ("encrypt", TlsMode::Encrypt),
    ("implicit", TlsMode::Implicit),
];

const AUTH_NAMES: [(&str, AuthMode); 3] = [
    ("none", AuthMode::None),
    ("optional", AuthMode::Optional),
    ("required", AuthMode::Required),
];

const LOOKUP_NAMES: [(&str, Lookup); 3] = [
    ("found", Lookup::Found),
    ("not-found", Lookup::NotFound),
    ("tempfail", Lookup::TempFail),
];

const OUTCOME_NAMES: [(&str, RcptOutcome); 5] = [
    ("delivered", RcptOutcome::Delivered),
    ("tempfail", RcptOutcome::TempFailure),
    ("disk-full", RcptOutcome::DiskFull),
    ("unknown-user", RcptOutcome::UnknownUser),
    ("rejected", RcptOutcome::Rejected),
];

fn pick<T: Copy>(name: &str, table: &[(&str, T)]) -> Result<T, String> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("unknown value `{name}`"))
}

fn name_of<T: Copy + PartialEq>(value: T, table: &[(&'static str, T)]) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(n, _)| n)
}

fn mode_name(mode: Mode) -> &'static str {
    name_of(mode, &[("smtp", Mode::Smtp), ("lmtp", Mode::Lmtp)])
}

fn tls_name(tls: TlsMode) -> &'static str {
    name_of(tls, &TLS_NAMES)
}

fn auth_name(auth: AuthMode) -> &'static str {
    name_of(auth, &AUTH_NAMES)
}

fn lookup_name(lookup: Lookup) -> &'static str {
    name_of(lookup, &LOOKUP_NAMES)
}

fn outcome_name(outcome: RcptOutcome) -> &'static str {
    name_of(outcome, &OUTCOME_NAMES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_survives_escaping() {
        let bytes: Vec<u8> = (0..=255).chain([b' ', b'\\', b'{', b' ']).collect();
        for words in [false, true] {
            let mut text = String::new();
            escape(&bytes, words, &mut text);
            assert!(!text.contains('\n') && !text.ends_with(' '));
            assert_eq!(unescape_plain(&text).unwrap(), bytes);
        }
    }

    #[test]
    fn markers_parse_and_print_alike() {
        let text = "AUTH PLAIN \\{secret plain-done/13 20 0..20}\\r\\n";
        let segments = unescape(text).unwrap();
        assert_eq!(segments.len(), 3);
        assert_eq!(segments_text(&segments), text);
        for bad in [
            "\\{secret plain-done/13 20 5..3}",
            "\\{secret nope 2 0..1}",
            "\\q",
            "\\x4",
        ] {
            assert!(unescape(bad).is_err(), "{bad}");
        }
    }
}
