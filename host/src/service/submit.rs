//! Mail that enters the queue: the remote recipients of a received message, and messages
//! that do not come over SMTP at all (`tern sendmail`'s maildrop, the queue's own delivery
//! status notifications), which are delivered like received ones: local copies into the
//! Maildirs, remote recipients into the queue, all or nothing.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tern_core::address::{Mailbox, ReversePath};
use tern_core::command::{Body, Ret};
use tern_core::dsn::xtext_encode;
use tern_core::recipient::{Aliases, Destination, Policy};
use tern_core::server::Envelope;

use super::Services;
use super::connection::{build_copies, find_account};
use crate::headers::{self, ReceivedInfo};
use crate::maildir::Spool;
use crate::queue::{Entry, Kind, Pending, Queue, QueuedRecipient, State, Text, unix_now};

/// A message for [`Services::submit`].
#[derive(Debug)]
pub struct Submission<'a> {
    /// MAIL FROM; `None` for the null sender.
    pub sender: Option<String>,
    /// The recipients' addresses.
    pub recipients: Vec<String>,
    /// The text with CRLF line ends.
    pub text: &'a [u8],
    /// What kind of message it is (a double bounce is dropped when it fails).
    pub kind: Kind,
    /// The text holds 8-bit octets.
    pub eight_bit: bool,
    /// The message needs SMTPUTF8.
    pub smtputf8: bool,
}

/// A recipient that the `delivery.local` LMTP server refused after the data, for
/// [`Services::queue_refused`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The final address the server refused (after aliases).
    pub address: String,
    /// The envelope recipient it came from, whose ORCPT and NOTIFY apply.
    pub rcpt: String,
    /// A 5xx: returned to the sender in a notification. Else retried from the queue.
    pub permanent: bool,
    /// The enhanced status code, e.g. `4.2.2`.
    pub status: String,
    /// The server's reply, as logged.
    pub reply: String,
}

impl Services {
    /// Takes the recipients that the `delivery.local` LMTP server refused after the data
    /// while it took the message for others (SPEC.md section 5): temporary refusals are
    /// retried from the queue over LMTP, permanent ones returned to the sender as a delivery
    /// status notification. Call it before the 250, with the message's spool (the text is
    /// linked, not copied) and the `Received:` header that went to the server; the entry is
    /// committed (fsynced) when this returns `Ok`. Returns the new queue id.
    pub fn queue_refused(
        &self,
        envelope: &Envelope,
        received: &str,
        wire_size: u64,
        spool: &mut Spool,
        refused: &[Refused],
    ) -> io::Result<String> {
        let id = self.queue_ids.next();
        let now = unix_now();
        let recipients = refused
            .iter()
            .map(|r| {
                let params = envelope
                    .recipients
                    .iter()
                    .find(|e| e.address.to_string() == r.rcpt)
                    .map(|e| e.params.clone())
                    .unwrap_or_default();
                let orcpt = params.orcpt.or_else(|| {
                    (!r.rcpt.eq_ignore_ascii_case(&r.address))
                        .then(|| format!("rfc822;{}", xtext_encode(&r.rcpt)))
                });
                QueuedRecipient {
                    local: true,
                    state: if r.permanent {
                        State::Failed
                    } else {
                        State::Pending
                    },
                    attempts: 1,
                    next_attempt: now + self.queue.retry_delay(1).as_secs(),
                    last_error: Some(r.reply.clone()),
                    status: Some(r.status.clone()),
                    ..QueuedRecipient::new(r.address.clone(), orcpt, params.notify)
                }
            })
            .collect();
        let params = &envelope.params;
        let entry = Entry {
            id: id.clone(),
            sender: match &envelope.sender {
                ReversePath::Null => String::new(),
                ReversePath::Mailbox(m) => m.to_string(),
            },
            arrival: now,
            envid: params.envid.clone(),
            ret: params.ret.map(ret_word),
            eight_bit: params.body == Some(Body::EightBitMime),
            smtputf8: params.smtputf8,
            size: wire_size,
            received: received.to_owned(),
            kind: Kind::Message,
            recipients,
        };
        self.queue.prepare(&entry, Text::Spool(spool))?.commit()?;
        Ok(id)
    }

    /// The outbound queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The outbound queue, shared.
    pub fn queue_arc(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Delivers a message that did not come over SMTP: copies for local recipients into
    /// their Maildirs, remote ones into the queue, both or neither; a local recipient
    /// without an account goes into the queue as failed, so its sender gets a
    /// notification. Returns the message's queue id, or why nothing was delivered.
    pub fn submit(&self, submission: Submission<'_>) -> Result<String, String> {
        let id = self.queue_ids.next();
        let sender = submission.sender.clone().unwrap_or_default();
        let policy = self.policy();

        let mut destinations = Vec::new();
        let mut unknown = Vec::new();
        for address in &submission.recipients {
            let Ok(mailbox) = Mailbox::parse(address) else {
                unknown.push((address.clone(), "5.1.3", "bad address syntax"));
                continue;
            };
            if !policy.is_local_domain(&mailbox.domain, None) {
                destinations.push((address.clone(), Destination::Remote(mailbox.to_string())));
                continue;
            }
            let resolved = policy.resolve_local(&mailbox, None);
            if resolved.is_empty() {
                unknown.push((address.clone(), "5.1.1", "User unknown"));
            }
            for destination in resolved {
                if let Destination::Local { account, .. } = &destination {
                    // A lookup that fails (Dovecot unreachable) leaves the message for later.
                    if find_account(self, account)?.is_none() {
                        unknown.push((address.clone(), "5.1.1", "User unknown"));
                        continue;
                    }
                }
                destinations.push((address.clone(), destination));
            }
        }

        let mut spool = Spool::create(&self.spool_dir).map_err(|e| format!("cannot spool: {e}"))?;
        spool
            .write(submission.text)
            .map_err(|e| format!("cannot spool: {e}"))?;
        let info = ReceivedInfo {
            helo: None,
            client_ip: None,
            hostname: self.config.hostname.clone(),
            protocol: "local",
            tls: None,
            queue_id: id.clone(),
            recipient: None,
        };
        let received = headers::received(&info, SystemTime::now());
        let mut queued: Vec<QueuedRecipient> = remote_recipients(&destinations, |_| None);
        for (address, status, text) in unknown {
            queued.push(QueuedRecipient {
                state: State::Failed,
                status: Some(status.into()),
                last_error: Some(format!("{status} <{address}>: {text}")),
                ..QueuedRecipient::new(address, None, None)
            });
        }
        let size = wire_size(submission.text.len() as u64, &received);
        self.log.write(
            "qmgr",
            &format!(
                "{id}: from=<{sender}>, size={size}, nrcpt={} (queue active)",
                submission.recipients.len()
            ),
        );

        let entry = Entry {
            id: id.clone(),
            sender: sender.clone(),
            arrival: unix_now(),
            envid: None,
            ret: None,
            eight_bit: submission.eight_bit,
            smtputf8: submission.smtputf8,
            size,
            received,
            kind: submission.kind,
            recipients: queued,
        };
        let pending = if entry.recipients.is_empty() {
            None
        } else {
            Some(
                self.queue
                    .prepare(&entry, Text::Spool(&mut spool))
                    .map_err(|e| format!("cannot queue: {e}"))?,
            )
        };
        let started = Instant::now();
        let copies = build_copies(self, &sender, &info, &destinations, SystemTime::now())?;
        self.maildirs
            .deliver(spool, &copies)
            .map_err(|e| format!("maildir delivery failed: {e}"))?;
        if let Some(pending) = pending {
            pending.commit().map_err(|e| format!("cannot queue: {e}"))?;
        }
        self.log_local_sent(&id, &destinations, started);
        Ok(id)
    }

    /// The recipient policy (domains, aliases, delimiter) of the configuration.
    fn policy(&self) -> Policy {
        let mut aliases = Aliases::default();
        for alias in &self.config.aliases {
            aliases.insert(&alias.name, alias.targets.clone());
        }
        Policy {
            domains: self.config.domains.clone(),
            trusted_networks: self.config.trusted_networks.clone(),
            recipient_delimiter: self.config.mailbox.recipient_delimiter.clone(),
            aliases,
        }
    }

    /// Logs `status=sent` for every local destination.
    pub(super) fn log_local_sent(
        &self,
        id: &str,
        destinations: &[(String, Destination)],
        started: Instant,
    ) {
        let delay = started.elapsed().as_secs_f64();
        let mut seen = HashSet::new();
        for (rcpt, destination) in destinations {
            if let Destination::Local { address, .. } = destination
                && seen.insert(address.to_lowercase())
            {
                let orig = if rcpt.eq_ignore_ascii_case(address) {
                    String::new()
                } else {
                    format!(", orig_to=<{rcpt}>")
                };
                self.log.write(
                    "local",
                    &format!(
                        "{id}: to=<{address}>{orig}, relay=local, delay={delay:.2}, dsn=2.0.0, \
                         status=sent (delivered to maildir)"
                    ),
                );
            }
        }
    }
}

/// Writes the remote recipients of a received message into the queue, not yet committed:
/// `None` when it has none. `wire_size` is the size of the text as received (CRLF).
///
/// With `alone` (no local copies of this message follow), the message is queued in one
/// step ([`crate::queue::Queue::enqueue`]) and nothing is left pending.
pub(super) fn queue_remote<'q>(
    services: &'q Services,
    envelope: &Envelope,
    info: &ReceivedInfo,
    wire_size: u64,
    spool: &mut Spool,
    alone: bool,
) -> io::Result<Option<Pending<'q>>> {
    let destinations = super::connection::destinations(envelope);
    let recipients = remote_recipients(&destinations, |rcpt| {
        envelope
            .recipients
            .iter()
            .find(|r| r.address.to_string() == rcpt)
            .map(|r| (r.params.orcpt.clone(), r.params.notify))
    });
    if recipients.is_empty() {
        return Ok(None);
    }
    let single = (recipients.len() == 1).then(|| recipients[0].address.clone());
    let info = ReceivedInfo {
        recipient: single,
        ..info.clone()
    };
    let received = headers::received(&info, SystemTime::now());
    let params = &envelope.params;
    let entry = Entry {
        id: info.queue_id.clone(),
        sender: match &envelope.sender {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => m.to_string(),
        },
        arrival: unix_now(),
        envid: params.envid.clone(),
        ret: params.ret.map(ret_word),
        eight_bit: params.body == Some(Body::EightBitMime),
        smtputf8: params.smtputf8,
        size: self::wire_size(wire_size, &received),
        received,
        kind: Kind::Message,
        recipients,
    };
    if alone {
        return services.queue.enqueue(&entry, spool).map(|()| None);
    }
    services.queue.prepare(&entry, Text::Spool(spool)).map(Some)
}

/// One queued recipient per distinct remote destination. `params` gives the ORCPT and
/// NOTIFY of an envelope recipient; an alias that led elsewhere gets an ORCPT naming the
/// address the sender used, so a notification can say it.
fn remote_recipients(
    destinations: &[(String, Destination)],
    params: impl Fn(&str) -> Option<(Option<String>, Option<tern_core::command::Notify>)>,
) -> Vec<QueuedRecipient> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (rcpt, destination) in destinations {
        let Destination::Remote(address) = destination else {
            continue;
        };
        if !seen.insert(address.to_lowercase()) {
            continue;
        }
        let (orcpt, notify) = params(rcpt).unwrap_or((None, None));
        let orcpt = orcpt.or_else(|| {
            (!rcpt.eq_ignore_ascii_case(address)).then(|| format!("rfc822;{}", xtext_encode(rcpt)))
        });
        out.push(QueuedRecipient::new(address.clone(), orcpt, notify));
    }
    out
}

fn ret_word(ret: Ret) -> String {
    match ret {
        Ret::Full => "FULL".to_owned(),
        Ret::Hdrs => "HDRS".to_owned(),
    }
}

/// The size on the wire of `received` (LF ends, sent as CRLF) plus a text of `text_size`.
fn wire_size(text_size: u64, received: &str) -> u64 {
    text_size + received.len() as u64 + received.matches('\n').count() as u64
}
