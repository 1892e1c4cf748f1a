//! Delivery status notifications: the `multipart/report; report-type=delivery-status`
//! message of RFC 3464 that tells a sender what became of a message (RFC 3461 section 6).
//!
//! [`Notification`] holds everything the report says; [`Notification::head`] gives the text up
//! to the returned message (the header, the human-readable part, the per-recipient fields
//! and the header of the third part) and [`Notification::tail`] the closing boundary. The
//! caller writes the returned message, or only its header section, between the two, so a
//! large original is never built in memory here. Nothing here reads a clock or makes a name
//! up: dates, the Message-ID and the MIME boundary come in as values.
//!
//! Known limits: the human-readable part is English only, and a returned message holding
//! non-ASCII text is labelled `message/rfc822` with `8bit` (or `message/global`, RFC 6533,
//! when its header needs SMTPUTF8), never re-encoded.

use std::fmt::Write as _;

/// What happened to one recipient (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed for good.
    Failed,
    /// Still being retried.
    Delayed,
    /// Delivered to the final mailbox.
    Delivered,
    /// Handed to a server that does not send notifications itself.
    Relayed,
}

/// One recipient's fields in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The address the message was sent to (written `rfc822;` + address).
    pub final_recipient: String,
    /// The sender's ORCPT parameter as given (`addr-type;xtext`); decoded into
    /// `Original-Recipient:`.
    pub original_recipient: Option<String>,
    /// What happened.
    pub action: Action,
    /// The enhanced status code (RFC 3463), e.g. `5.1.1`.
    pub status: String,
    /// The host that answered, as `dns;` + name.
    pub remote_mta: Option<String>,
    /// The server's reply, written `smtp; ` + reply text.
    pub diagnostic: Option<String>,
    /// For [`Action::Delayed`]: until when delivery will be tried, already formatted (RFC
    /// 5322 date); `Will-Retry-Until:` and the human-readable part say it.
    pub will_retry_until: Option<String>,
}

/// How much of the original goes back (RFC 3461 section 4.3, `RET=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Only the header section, as `text/rfc822-headers`.
    Headers,
    /// The whole message, as `message/rfc822`.
    Full,
}

/// A delivery status notification, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Our host name: `Reporting-MTA:` and the `From:` address's domain.
    pub reporting_mta: String,
    /// Where the report goes: the original sender.
    pub to: String,
    /// `Date:`, already formatted (RFC 5322).
    pub date: String,
    /// `Message-ID:` with its angle brackets.
    pub message_id: String,
    /// The MIME boundary; must not occur in the returned text.
    pub boundary: String,
    /// The queue id of the original, for `X-Postfix-Queue-ID`-like tracing.
    pub queue_id: String,
    /// The sender's ENVID (xtext as given), decoded into `Original-Envelope-Id:`.
    pub envid: Option<String>,
    /// When the original arrived, already formatted.
    pub arrival_date: String,
    /// One entry per recipient reported on.
    pub recipients: Vec<RecipientStatus>,
    /// What part of the original follows.
    pub returned: Returned,
    /// Whether the returned text holds octets above 127.
    pub eight_bit: bool,
    /// Whether the returned header needs SMTPUTF8 (non-ASCII addresses).
    pub utf8_header: bool,
}

impl Notification {
    /// The subject line, after the worst action in the report.
    pub fn subject(&self) -> &'static str {
        if self.has(Action::Failed) {
            "Undelivered Mail Returned to Sender"
        } else if self.has(Action::Delayed) {
            "Delayed Mail (still being retried)"
        } else {
            "Successful Mail Delivery Report"
        }
    }

    /// Everything before the returned text, CRLF line ends. The returned text must follow,
    /// CRLF line ends, then [`Self::tail`].
    pub fn head(&self) -> String {
        let mut out = String::with_capacity(2048);
        let host = clean(&self.reporting_mta);
        let boundary = clean(&self.boundary);
        let _ = write!(
            out,
            "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{}>\r\n\
             Subject: {}\r\n\
             Date: {}\r\n\
             Message-ID: {}\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"{boundary}\"\r\n\
             Content-Transfer-Encoding: {}\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\
             \r\n",
            clean(&self.to),
            self.subject(),
            clean(&self.date),
            clean(&self.message_id),
            if self.eight_bit { "8bit" } else { "7bit" },
        );

        // Part 1: for people.
        let _ = write!(
            out,
            "--{boundary}\r\n\
             Content-Description: Notification\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             \r\n\
             This is the mail system at host {host}.\r\n\
             \r\n"
        );
        out.push_str(self.explanation());
        if let Some(until) = self.retry_until() {
            let _ = write!(
                out,
                "Delivery will be tried again until {}.\r\n",
                clean(until)
            );
        }
        out.push_str("\r\n");
        for rcpt in &self.recipients {
            let _ = write!(out, "<{}>:", clean(&rcpt.final_recipient));
            match &rcpt.diagnostic {
                Some(text) => {
                    let _ = write!(out, " {}\r\n", clean(text));
                }
                None => {
                    let _ = write!(out, " {}\r\n", action_text(rcpt.action));
                }
            }
        }
        out.push_str("\r\n");

        // Part 2: RFC 3464 section 2.2 (per message) and 2.3 (per recipient).
        let _ = write!(
            out,
            "--{boundary}\r\n\
             Content-Description: Delivery report\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; {host}\r\n\
             X-Tern-Queue-ID: {}\r\n",
            clean(&self.queue_id)
        );
        if let Some(envid) = &self.envid {
            let _ = write!(
                out,
                "Original-Envelope-Id: {}\r\n",
                clean(&xtext_decode(envid))
            );
        }
        let _ = write!(out, "Arrival-Date: {}\r\n", clean(&self.arrival_date));
        for rcpt in &self.recipients {
            out.push_str("\r\n");
            if let Some(orcpt) = &rcpt.original_recipient {
                let (kind, value) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
                let _ = write!(
                    out,
                    "Original-Recipient: {}; {}\r\n",
                    clean(kind),
                    clean(&xtext_decode(value))
                );
            }
            let _ = write!(
                out,
                "Final-Recipient: rfc822; {}\r\n\
                 Action: {}\r\n\
                 Status: {}\r\n",
                clean(&rcpt.final_recipient),
                action_word(rcpt.action),
                clean(&rcpt.status)
            );
            if let Some(mta) = &rcpt.remote_mta {
                let _ = write!(out, "Remote-MTA: dns; {}\r\n", clean(mta));
            }
            if let Some(text) = &rcpt.diagnostic {
                let _ = write!(out, "Diagnostic-Code: smtp; {}\r\n", clean(text));
            }
            if let Some(until) = &rcpt.will_retry_until {
                let _ = write!(out, "Will-Retry-Until: {}\r\n", clean(until));
            }
        }
        out.push_str("\r\n");

        // Part 3: the original, or its header section.
        let content_type = match (self.returned, self.utf8_header) {
            (Returned::Headers, true) => "message/global-headers",
            (Returned::Headers, false) => "text/rfc822-headers",
            (Returned::Full, true) => "message/global",
            (Returned::Full, false) => "message/rfc822",
        };
        let description = match (self.returned, self.has(Action::Failed)) {
            (Returned::Headers, false) if self.has(Action::Delayed) => "Delayed Message Headers",
            (Returned::Full, false) if self.has(Action::Delayed) => "Delayed Message",
            (Returned::Headers, _) => "Undelivered Message Headers",
            (Returned::Full, _) => "Undelivered Message",
        };
        let _ = write!(
            out,
            "--{boundary}\r\n\
             Content-Description: {description}\r\n\
             Content-Type: {content_type}\r\n"
        );
        if self.eight_bit {
            out.push_str("Content-Transfer-Encoding: 8bit\r\n");
        }
        out.push_str("\r\n");
        out
    }

    /// The end of the report, after the returned text: the closing boundary. A returned
    /// text that does not end in CRLF gets one first.
    pub fn tail(&self, returned_ends_in_crlf: bool) -> String {
        let lead = if returned_ends_in_crlf { "" } else { "\r\n" };
        format!("{lead}\r\n--{}--\r\n", clean(&self.boundary))
    }

    fn has(&self, action: Action) -> bool {
        self.recipients.iter().any(|r| r.action == action)
    }

    /// The retry limit of the first delayed recipient, when the report is a delay notice.
    fn retry_until(&self) -> Option<&str> {
        if self.has(Action::Failed) {
            return None;
        }
        self.recipients
            .iter()
            .filter(|r| r.action == Action::Delayed)
            .find_map(|r| r.will_retry_until.as_deref())
    }

    fn explanation(&self) -> &'static str {
        if self.has(Action::Failed) {
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients. It's attached below.\r\n"
        } else if self.has(Action::Delayed) {
            "Your message could not be delivered yet. Delivery will be\r\n\
             tried again; you need not send it again.\r\n"
        } else {
            "Your message was delivered to, or handed on towards, the\r\n\
             destinations listed below.\r\n"
        }
    }
}

/// Decodes RFC 3461 section 4 xtext (`+XX` hex escapes); a malformed escape is kept as it
/// is.
pub fn xtext_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes `text` as xtext (RFC 3461 section 4): `+`, `=`, controls, space and non-ASCII
/// become `+XX`.
pub fn xtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x21..0x7f).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Failed => "failed",
        Action::Delayed => "delayed",
        Action::Delivered => "delivered",
        Action::Relayed => "relayed",
    }
}

fn action_text(action: Action) -> &'static str {
    match action {
        Action::Failed => "delivery failed",
        Action::Delayed => "delivery delayed",
        Action::Delivered => "delivered",
        Action::Relayed => "relayed to a server that does not send notifications",
    }
}

/// A header or field value stays on its line: control characters (CR, LF) become spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(returned: Returned) -> Notification {
        Notification {
            reporting_mta: "mail.example.net".into(),
            to: "alice@example.net".into(),
            date: "Thu, 3 Dec 2026 15:24:51 +0000".into(),
            message_id: "<ABC.dsn@mail.example.net>".into(),
            boundary: "ABC/mail.example.net".into(),
            queue_id: "ABC".into(),
            envid: Some("id+2B1".into()),
            arrival_date: "Thu, 3 Dec 2026 15:20:00 +0000".into(),
            recipients: vec![RecipientStatus {
                final_recipient: "bob@example.org".into(),
                original_recipient: Some("rfc822;Bob+40example.org".into()),
                action: Action::Failed,
                status: "5.1.1".into(),
                remote_mta: Some("mx.example.org".into()),
                diagnostic: Some("550 5.1.1 no such\r\nuser".into()),
                will_retry_until: None,
            }],
            returned,
            eight_bit: false,
            utf8_header: false,
        }
    }

    #[test]
    fn failure_report_has_the_rfc3464_fields() {
        let dsn = sample(Returned::Headers);
        let head = dsn.head();
        assert!(head.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
        assert!(head.contains(
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"ABC/mail.example.net\"\r\n"
        ));
        assert!(head.contains("Reporting-MTA: dns; mail.example.net\r\n"));
        assert!(head.contains("Original-Envelope-Id: id+1\r\n"));
        assert!(head.contains("Original-Recipient: rfc822; Bob@example.org\r\n"));
        assert!(head.contains("Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\n"));
        assert!(head.contains("Status: 5.1.1\r\nRemote-MTA: dns; mx.example.org\r\n"));
        assert!(head.contains("Diagnostic-Code: smtp; 550 5.1.1 no such  user\r\n"));
        assert!(head.ends_with("Content-Type: text/rfc822-headers\r\n\r\n"));
        assert_eq!(dsn.tail(false), "\r\n\r\n--ABC/mail.example.net--\r\n");
        // No bare LF anywhere: every line ends in CRLF.
        assert!(!head.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn full_return_and_success_subject() {
        let mut dsn = sample(Returned::Full);
        dsn.recipients[0].action = Action::Relayed;
        dsn.eight_bit = true;
        let head = dsn.head();
        assert!(head.contains("Subject: Successful Mail Delivery Report\r\n"));
        assert!(head.contains("Action: relayed\r\n"));
        assert!(
            head.ends_with(
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            )
        );
    }

    #[test]
    fn delay_notice_says_until_when_it_is_retried() {
        let mut dsn = sample(Returned::Headers);
        let until = "Tue, 8 Dec 2026 15:20:00 +0000";
        dsn.recipients[0].action = Action::Delayed;
        dsn.recipients[0].status = "4.3.2".into();
        dsn.recipients[0].diagnostic = Some("451 4.3.2 busy".into());
        dsn.recipients[0].will_retry_until = Some(until.into());
        let head = dsn.head();
        assert!(head.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(head.contains(&format!("Delivery will be tried again until {until}.\r\n")));
        assert!(head.contains(
            "Action: delayed\r\nStatus: 4.3.2\r\nRemote-MTA: dns; mx.example.org\r\n\
             Diagnostic-Code: smtp; 451 4.3.2 busy\r\n"
        ));
        assert!(head.contains(&format!("Will-Retry-Until: {until}\r\n\r\n")));
        assert!(head.contains("Content-Description: Delayed Message Headers\r\n"));
        // A failure report has no retry time, even were one given.
        dsn.recipients[0].action = Action::Failed;
        dsn.recipients[0].will_retry_until = None;
        assert!(!dsn.head().contains("tried again until"));
    }

    #[test]
    fn xtext_round_trip() {
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext_decode("a+2Bb+3Dc+20d"), "a+b=c d");
        assert_eq!(xtext_decode("bad+Z"), "bad+Z");
    }
}
