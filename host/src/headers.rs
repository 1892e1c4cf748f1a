//! The trace headers prepended to every stored copy (SPEC.md section 5): `Return-Path:`,
//! `Delivered-To:` and `Received:` (RFC 5321 section 4.4, protocol names from RFC 3848).
//!
//! Every header ends with LF, as stored mail does. Text that came from the client (the HELO
//! name, addresses) has control characters replaced by `?`, so no client can end a header
//! early and inject one of its own.

use std::net::IpAddr;
use std::time::SystemTime;

use crate::clock::rfc5322_date;

/// What the `Received:` header says about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedInfo {
    /// The name the client gave in HELO, EHLO or LHLO; `None` if it gave none.
    pub helo: Option<String>,
    /// The client's address; `None` for a Unix socket.
    pub client_ip: Option<IpAddr>,
    /// Our own host name (`hostname` in the config).
    pub hostname: String,
    /// RFC 3848 protocol name: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP, LMTPS, LMTPA.
    pub protocol: &'static str,
    /// TLS version and cipher suite, such as `("TLS1.3", "TLS_AES_256_GCM_SHA384")`.
    pub tls: Option<(String, String)>,
    /// The queue id of the message.
    pub queue_id: String,
    /// The recipient this copy is for; `None` leaves out the `for` clause.
    pub recipient: Option<String>,
}

/// Builds the `Received:` header, folded over three lines with a tab:
///
/// ```text
/// Received: from client.helo (unknown [192.0.2.7])
///     by mail.example.net (tern) with ESMTPS (TLS1.3 TLS_AES_256_GCM_SHA384) id 5E2A1B9C0D
///     for <bob@example.net>; Thu, 3 Dec 2026 15:24:51 +0000
/// ```
///
/// The client is named `unknown` because tern does no reverse DNS lookup. A client without
/// HELO appears as `from unknown`; a client on a Unix socket as `from <helo> (localhost)`. An
/// IPv6 address is written as an RFC 5321 address literal, `[IPv6:2001:db8::1]`. Without a
/// recipient the date follows the `id` on the second line.
pub fn received(info: &ReceivedInfo, now: SystemTime) -> String {
    let helo = info
        .helo
        .as_deref()
        .map_or_else(|| "unknown".to_string(), clean);
    let client = match info.client_ip {
        Some(IpAddr::V4(ip)) => format!("unknown [{ip}]"),
        Some(IpAddr::V6(ip)) => format!("unknown [IPv6:{ip}]"),
        None => "localhost".to_string(),
    };
    let mut header = format!("Received: from {helo} ({client})\n");

    header.push_str(&format!(
        "\tby {} (tern) with {}",
        clean(&info.hostname),
        info.protocol
    ));
    if let Some((version, cipher)) = &info.tls {
        header.push_str(&format!(" ({} {})", clean(version), clean(cipher)));
    }
    header.push_str(&format!(" id {}", clean(&info.queue_id)));

    let date = rfc5322_date(now);
    match &info.recipient {
        Some(rcpt) => header.push_str(&format!("\n\tfor <{}>; {date}\n", clean(rcpt))),
        None => header.push_str(&format!("; {date}\n")),
    }
    header
}

/// Builds `Return-Path: <sender>` with an LF ending; the null sender gives `Return-Path: <>`.
pub fn return_path(sender: &str) -> String {
    format!("Return-Path: <{}>\n", clean(sender))
}

/// Builds `Delivered-To: addr` with an LF ending, for the final address after aliases.
pub fn delivered_to(addr: &str) -> String {
    format!("Delivered-To: {}\n", clean(addr))
}

/// Replaces every control character with `?`, so header text stays on its own line.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_311_491)
    }

    fn info() -> ReceivedInfo {
        ReceivedInfo {
            helo: Some("client.helo".into()),
            client_ip: Some("192.0.2.7".parse().unwrap()),
            hostname: "mail.example.net".into(),
            protocol: "ESMTPS",
            tls: Some(("TLS1.3".into(), "TLS_AES_256_GCM_SHA384".into())),
            queue_id: "5E2A1B9C0D".into(),
            recipient: Some("bob@example.net".into()),
        }
    }

    #[test]
    fn full_received() {
        assert_eq!(
            received(&info(), now()),
            "Received: from client.helo (unknown [192.0.2.7])\n\
             \tby mail.example.net (tern) with ESMTPS (TLS1.3 TLS_AES_256_GCM_SHA384) \
             id 5E2A1B9C0D\n\
             \tfor <bob@example.net>; Thu, 3 Dec 2026 15:24:51 +0000\n"
        );
    }

    #[test]
    fn plain_without_recipient() {
        let info = ReceivedInfo {
            tls: None,
            recipient: None,
            protocol: "ESMTP",
            ..info()
        };
        assert_eq!(
            received(&info, now()),
            "Received: from client.helo (unknown [192.0.2.7])\n\
             \tby mail.example.net (tern) with ESMTP id 5E2A1B9C0D; \
             Thu, 3 Dec 2026 15:24:51 +0000\n"
        );
    }

    #[test]
    fn unix_socket_ipv6_and_no_helo() {
        let unix = ReceivedInfo {
            client_ip: None,
            tls: None,
            protocol: "LMTP",
            ..info()
        };
        assert!(
            received(&unix, now()).starts_with("Received: from client.helo (localhost)\n"),
            "{}",
            received(&unix, now())
        );

        let v6 = ReceivedInfo {
            helo: None,
            client_ip: Some("2001:db8::1".parse().unwrap()),
            ..info()
        };
        assert!(
            received(&v6, now())
                .starts_with("Received: from unknown (unknown [IPv6:2001:db8::1])\n")
        );
    }

    #[test]
    fn injection_is_neutralised() {
        let evil = ReceivedInfo {
            helo: Some("x\r\nX-Evil: 1".into()),
            recipient: Some("a@b\nBcc: c@d".into()),
            ..info()
        };
        let header = received(&evil, now());
        assert!(header.starts_with("Received: from x??X-Evil: 1 (unknown [192.0.2.7])\n"));
        assert!(header.contains("\tfor <a@b?Bcc: c@d>; "));
        assert_eq!(header.matches('\n').count(), 3);
        assert_eq!(delivered_to("a@b\r\nX: y"), "Delivered-To: a@b??X: y\n");
    }

    #[test]
    fn return_path_and_delivered_to() {
        assert_eq!(
            return_path("alice@example.net"),
            "Return-Path: <alice@example.net>\n"
        );
        assert_eq!(return_path(""), "Return-Path: <>\n");
        assert_eq!(
            delivered_to("bob@example.net"),
            "Delivered-To: bob@example.net\n"
        );
    }
}
