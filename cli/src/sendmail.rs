//! `tern sendmail`: the sendmail(1) interface that `mail`, `s-nail` and cron use. The
//! message is read from stdin, its line ends made CRLF, and dropped into the maildrop
//! (SPEC.md section 1), which the running server picks up.
//!
//! Like Postfix's sendmail: without `-i` (or `-oi`) a line holding a single `.` ends the
//! input; recipients from `-t` are added to those on the command line; a recipient without
//! a domain gets the first of `domains` (Postfix's myorigin); the sender defaults to
//! `$USER` (else `$LOGNAME`, else `root`) at that domain. Headers are not added: a message
//! without `From:` or `Date:` goes out without them.

use std::io::{self, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tern_core::address::Mailbox;
use tern_host::clock::rfc5322_date;
use tern_host::queue::maildrop::{self, Drop};

use super::{Failure, config_or_default};

/// sysexits.h codes, which sendmail's callers understand.
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_CANTCREAT: u8 = 73;

/// Runs `tern sendmail`.
pub(super) fn run(
    config: Option<&Path>,
    from: Option<String>,
    from_headers: bool,
    ignore_dots: bool,
    recipients: Vec<String>,
) -> Result<(), Failure> {
    let config = config_or_default(config)?;
    let domain = config
        .domains
        .first()
        .cloned()
        .unwrap_or_else(|| config.hostname.clone());

    let mut input = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| fail(EX_DATAERR, format!("cannot read the message: {e}")))?;
    let mut text = crlf_lines(&input, !ignore_dots);

    let mut wanted = recipients;
    if from_headers {
        let (addresses, without_bcc) = header_recipients(&text);
        wanted.extend(addresses);
        text = without_bcc;
    }
    if wanted.is_empty() {
        return Err(fail(EX_USAGE, "no recipients".to_owned()));
    }
    let recipients = wanted
        .iter()
        .map(|r| qualify(r, &domain))
        .collect::<Result<Vec<_>, _>>()?;

    let sender = match from.as_deref() {
        Some("" | "<>") => String::new(),
        Some(from) => qualify(from, &domain)?,
        None => {
            let user = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "root".to_owned());
            qualify(&user, &domain)?
        }
    };

    let text = add_missing_headers(&text, &sender, &domain, SystemTime::now());
    maildrop::write(
        &config.data_dir,
        &Drop {
            sender,
            recipients,
            text,
        },
    )
    .map_err(|e| fail(EX_CANTCREAT, e.to_string()))?;
    Ok(())
}

/// Every line end (LF, CRLF, or a lone CR) becomes CRLF; the last line gets one too. With
/// `dot_ends`, a line holding only `.` ends the message.
fn crlf_lines(input: &[u8], dot_ends: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32 + 2);
    let mut line = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        i += 1;
        let end = match b {
            b'\n' => true,
            b'\r' => {
                if input.get(i) == Some(&b'\n') {
                    i += 1;
                }
                true
            }
            _ => {
                line.push(b);
                false
            }
        };
        if end {
            if dot_ends && line == b"." {
                return out;
            }
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\r\n");
            line.clear();
        }
    }
    let lone_dot = dot_ends && line == b".";
    if !line.is_empty() && !lone_dot {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Puts `From:` (the sender), `Date:` and `Message-ID:` before the text when its header
/// lacks them, as Postfix's cleanup does for local submissions: many receiving servers
/// refuse mail without them.
fn add_missing_headers(text: &[u8], sender: &str, domain: &str, now: SystemTime) -> Vec<u8> {
    let end = memchr::memmem::find(text, b"\r\n\r\n").map_or(text.len(), |at| at + 2);
    let header = String::from_utf8_lossy(&text[..end]).to_ascii_lowercase();
    let has = |name: &str| {
        header.split("\r\n").any(|line| {
            line.split_once(':')
                .is_some_and(|(n, _)| n.trim_end() == name)
        })
    };
    let mut added = String::new();
    if !has("from") {
        let from = if sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            sender
        };
        added.push_str(&format!("From: <{from}>\r\n"));
    }
    if !has("date") {
        added.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    }
    if !has("message-id") {
        let stamp = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        added.push_str(&format!(
            "Message-ID: <{}.{}.{}@{domain}>\r\n",
            stamp.as_secs(),
            stamp.subsec_nanos(),
            std::process::id()
        ));
    }
    // A text that starts with its body (no header at all) gets the empty line after them.
    let body_first = !text.is_empty() && end == text.len() && !has_header_syntax(text);
    let mut out = added.into_bytes();
    if body_first {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(text);
    out
}

/// Whether the text begins with a header field (`Name:`).
fn has_header_syntax(text: &[u8]) -> bool {
    let name_len = text
        .iter()
        .take_while(|&&b| b.is_ascii_graphic() && b != b':')
        .count();
    name_len > 0 && text.get(name_len) == Some(&b':')
}

/// The addresses in To:, Cc: and Bcc:, and the text without its Bcc: fields.
fn header_recipients(text: &[u8]) -> (Vec<String>, Vec<u8>) {
    let end = memchr::memmem::find(text, b"\r\n\r\n").map_or(text.len(), |at| at + 2);
    let header = String::from_utf8_lossy(&text[..end]).into_owned();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split_inclusive("\r\n") {
        match fields.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }

    let mut addresses = Vec::new();
    let mut kept = String::new();
    for field in fields {
        let (name, value) = field.split_once(':').unwrap_or((&field, ""));
        let name = name.trim().to_ascii_lowercase();
        if matches!(name.as_str(), "to" | "cc" | "bcc") {
            addresses.extend(address_list(&value.replace("\r\n", " ")));
        }
        if name != "bcc" {
            kept.push_str(&field);
        }
    }
    let mut out = kept.into_bytes();
    out.extend_from_slice(&text[end..]);
    (addresses, out)
}

/// The addresses of an RFC 5322 address list: `Name <a@b>, c@d (comment), group: e@f;`.
fn address_list(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut current, mut quoted, mut angle, mut comment) = (String::new(), false, false, 0u32);
    for c in value.chars() {
        match c {
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => {
                comment -= 1;
                continue;
            }
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            ',' | ';' if !quoted && !angle && comment == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            ':' if !quoted && !angle && comment == 0 => {
                // A group's display name.
                current.clear();
                continue;
            }
            _ => {}
        }
        if comment == 0 && c != '(' {
            current.push(c);
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter_map(|part| {
            let part = part.trim();
            let address = match (part.find('<'), part.rfind('>')) {
                (Some(open), Some(close)) if open < close => &part[open + 1..close],
                _ => part,
            };
            let address = address.trim();
            (!address.is_empty()).then(|| address.to_owned())
        })
        .collect()
}

/// `user` becomes `user@domain`; an address must parse as a mailbox.
fn qualify(address: &str, domain: &str) -> Result<String, Failure> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let full = if address.contains('@') {
        address.to_owned()
    } else {
        format!("{address}@{domain}")
    };
    match Mailbox::parse(&full) {
        Ok(mailbox) => Ok(mailbox.to_string()),
        Err(e) => Err(fail(EX_NOUSER, format!("bad address {address:?}: {e}"))),
    }
}

fn fail(code: u8, message: String) -> Failure {
    Failure {
        code,
        message,
        located: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_become_crlf_and_a_dot_may_end_the_input() {
        assert_eq!(crlf_lines(b"a\nb\r\nc\rd", false), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(crlf_lines(b"a\n.\nb\n", true), b"a\r\n");
        assert_eq!(crlf_lines(b"a\n.\nb\n", false), b"a\r\n.\r\nb\r\n");
    }

    #[test]
    fn recipients_come_from_to_cc_bcc_and_bcc_is_removed() {
        let text = b"From: me\r\nTo: Bob <bob@example.org>, carol@example.net (Carol)\r\n\
            Cc: \"Smith, D\" <d@example.com>\r\nBcc: hidden@example.org,\r\n\tother\r\n\
            Subject: Bcc: not this\r\n\r\nBcc: body@example.org\r\n";
        let (addresses, rest) = header_recipients(text);
        assert_eq!(
            addresses,
            [
                "bob@example.org",
                "carol@example.net",
                "d@example.com",
                "hidden@example.org",
                "other"
            ]
        );
        assert_eq!(
            rest,
            b"From: me\r\nTo: Bob <bob@example.org>, carol@example.net (Carol)\r\n\
            Cc: \"Smith, D\" <d@example.com>\r\nSubject: Bcc: not this\r\n\r\n\
            Bcc: body@example.org\r\n"
        );
        assert_eq!(
            address_list("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn missing_from_date_and_message_id_are_added() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_796_311_491);
        let out = add_missing_headers(
            b"Subject: x\r\n\r\nbody\r\n",
            "bob@example.net",
            "example.net",
            now,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("From: <bob@example.net>\r\nDate: Thu, 3 Dec 2026"),
            "{out}"
        );
        assert!(out.contains("Message-ID: <1796311491.0."), "{out}");
        assert!(
            out.ends_with("@example.net>\r\nSubject: x\r\n\r\nbody\r\n"),
            "{out}"
        );

        let full = b"From: a@b\r\nDate: x\r\nMessage-Id: <1@b>\r\n\r\nbody\r\n";
        assert_eq!(add_missing_headers(full, "a@b", "b", now), full);
        let bare = add_missing_headers(b"just text\r\n", "a@b", "b", now);
        assert!(
            String::from_utf8(bare)
                .unwrap()
                .contains(">\r\n\r\njust text\r\n")
        );
    }

    #[test]
    fn bare_names_get_the_domain() {
        assert_eq!(
            qualify("alice", "example.net").ok().unwrap(),
            "alice@example.net"
        );
        assert_eq!(qualify("<b@x.org>", "example.net").ok().unwrap(), "b@x.org");
        assert_eq!(
            qualify("a b@", "example.net").err().unwrap().code,
            EX_NOUSER
        );
    }
}
