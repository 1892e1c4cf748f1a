//! The envelope of a queued message: `<id>.env`, TOML, rewritten whole (to a temporary
//! name, fsynced, renamed) whenever a recipient's state changes; until the first change of
//! a message queued in one step, the same TOML at the end of its `<id>.qf`.

use serde::{Deserialize, Serialize};
use tern_core::command::Notify;

/// Everything tern knows about a queued message besides its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The queue id; the files are `<id>.msg` and `<id>.env`, or `<id>.qf` (and, once
    /// changed, `<id>.env`).
    pub id: String,
    /// MAIL FROM; empty for the null sender.
    pub sender: String,
    /// When the message arrived, in seconds since the Unix epoch.
    pub arrival: u64,
    /// ENVID as the sender gave it (xtext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// RET: `FULL` or `HDRS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// BODY=8BITMIME was given (or the text has 8-bit octets).
    #[serde(default)]
    pub eight_bit: bool,
    /// The message needs SMTPUTF8.
    #[serde(default)]
    pub smtputf8: bool,
    /// The size of the text as it goes on the wire (CRLF line ends), with `received`.
    pub size: u64,
    /// Header lines (LF ends) put before the text when it is relayed: our `Received:`.
    #[serde(default)]
    pub received: String,
    /// What the message is, which decides what happens when it fails.
    #[serde(default)]
    pub kind: Kind,
    /// The recipients still known to the queue, in envelope order.
    pub recipients: Vec<QueuedRecipient>,
}

/// What kind of message an entry holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Mail from a user or another server. A failure goes back to the sender (or, for a
    /// null sender, to postmaster).
    #[default]
    Message,
    /// A notification to postmaster about a notification that could not be delivered. When
    /// this fails too it is dropped, with a log line.
    DoubleBounce,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// The address to deliver to.
    pub address: String,
    /// ORCPT as given (`rfc822;xtext`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// NOTIFY as given, comma-separated (`SUCCESS,FAILURE`, `NEVER`); absent: the default,
    /// failures only (RFC 3461 section 4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// Delivered by `delivery.local` (the LMTP server that refused it after the data), not
    /// by SMTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// Where the recipient stands.
    pub state: State,
    /// Delivery attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due, in seconds since the Unix epoch.
    #[serde(default)]
    pub next_attempt: u64,
    /// The latest failure, as the log shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The enhanced status code of the latest outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The server that gave the latest outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    /// The sender has been sent the one delay notice this recipient gets (NOTIFY=DELAY,
    /// `delivery.delay_warning`). Absent in envelopes written before delay notices existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_warned: bool,
}

/// A recipient's state. Only `Pending` recipients are delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Not delivered yet; tried again at `next_attempt`.
    Pending,
    /// A server took it. `notify_success` is set when the sender must still be told.
    Sent {
        /// NOTIFY=SUCCESS and the server does not send notifications itself.
        relayed_unreported: bool,
    },
    /// Failed for good and the sender still must be told (or is being told).
    Failed,
    /// Finished: delivered or failed, and any notification is queued.
    Done,
}

impl Entry {
    /// Whether every recipient is finished.
    pub fn is_done(&self) -> bool {
        self.recipients.iter().all(|r| r.state == State::Done)
    }

    /// Whether the sender is the null sender.
    pub fn is_from_null_sender(&self) -> bool {
        self.sender.is_empty()
    }
}

impl QueuedRecipient {
    /// A recipient about to be queued.
    pub fn new(address: String, orcpt: Option<String>, notify: Option<Notify>) -> Self {
        QueuedRecipient {
            address,
            orcpt,
            notify: notify.map(|n| notify_words(&n)),
            local: false,
            state: State::Pending,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            status: None,
            remote_mta: None,
            delay_warned: false,
        }
    }

    /// NOTIFY parsed back.
    pub fn notify(&self) -> Option<Notify> {
        let words = self.notify.as_deref()?;
        let mut notify = Notify::default();
        for word in words.split(',') {
            match word.trim().to_ascii_uppercase().as_str() {
                "NEVER" => notify.never = true,
                "SUCCESS" => notify.success = true,
                "FAILURE" => notify.failure = true,
                "DELAY" => notify.delay = true,
                _ => {}
            }
        }
        Some(notify)
    }

    /// Whether the sender wants to hear of a failure (the default when NOTIFY is absent).
    pub fn wants_failure_notice(&self) -> bool {
        self.notify().is_none_or(|n| n.failure)
    }

    /// Whether the sender asked to hear of a success.
    pub fn wants_success_notice(&self) -> bool {
        self.notify().is_some_and(|n| n.success)
    }

    /// Whether the sender asked to hear of a delay. Without NOTIFY, RFC 3461 section 4.1
    /// leaves it to the server; tern then sends none, so only a sender who asked for them
    /// gets delay notices.
    pub fn wants_delay_notice(&self) -> bool {
        self.notify().is_some_and(|n| n.delay && !n.never)
    }
}

fn notify_words(notify: &Notify) -> String {
    if notify.never {
        return "NEVER".into();
    }
    let words: Vec<&str> = [
        (notify.success, "SUCCESS"),
        (notify.failure, "FAILURE"),
        (notify.delay, "DELAY"),
    ]
    .into_iter()
    .filter_map(|(on, word)| on.then_some(word))
    .collect();
    words.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_through_toml() {
        let entry = Entry {
            id: "0123456789AB".into(),
            sender: "alice@example.net".into(),
            arrival: 1_796_311_491,
            envid: Some("x+2By".into()),
            ret: Some("HDRS".into()),
            eight_bit: true,
            smtputf8: false,
            size: 120,
            received: "Received: from a\n\tby b; date\n".into(),
            kind: Kind::Message,
            recipients: vec![
                QueuedRecipient::new(
                    "bob@example.org".into(),
                    Some("rfc822;bob@example.org".into()),
                    Some(Notify {
                        success: true,
                        failure: true,
                        ..Notify::default()
                    }),
                ),
                QueuedRecipient {
                    state: State::Sent {
                        relayed_unreported: true,
                    },
                    ..QueuedRecipient::new("carol@example.org".into(), None, None)
                },
            ],
        };
        let text = toml::to_string(&entry).unwrap();
        let back: Entry = toml::from_str(&text).unwrap();
        assert_eq!(back, entry);
        assert!(back.recipients[0].wants_success_notice());
        assert!(back.recipients[1].wants_failure_notice());
        assert!(!back.recipients[1].wants_success_notice());
    }

    #[test]
    fn delay_warned_is_kept_and_absent_in_old_envelopes() {
        let old = "id = \"A\"\nsender = \"a@example.net\"\narrival = 1\nsize = 1\n\n\
                   [[recipients]]\naddress = \"b@example.org\"\nnotify = \"DELAY\"\n\
                   state = \"pending\"\n";
        let mut entry: Entry = toml::from_str(old).unwrap();
        assert!(!entry.recipients[0].delay_warned);
        assert!(!toml::to_string(&entry).unwrap().contains("delay_warned"));

        entry.recipients[0].delay_warned = true;
        let back: Entry = toml::from_str(&toml::to_string(&entry).unwrap()).unwrap();
        assert!(back.recipients[0].delay_warned);
    }

    #[test]
    fn only_an_explicit_notify_delay_asks_for_delay_notices() {
        let rcpt = |notify: Option<&str>| QueuedRecipient {
            notify: notify.map(str::to_owned),
            ..QueuedRecipient::new("b@example.org".into(), None, None)
        };
        assert!(rcpt(Some("FAILURE,DELAY")).wants_delay_notice());
        assert!(rcpt(Some("delay")).wants_delay_notice());
        assert!(!rcpt(None).wants_delay_notice());
        assert!(!rcpt(Some("FAILURE")).wants_delay_notice());
        assert!(!rcpt(Some("NEVER")).wants_delay_notice());
    }
}
