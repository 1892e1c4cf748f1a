//! Delivery status notifications for queued messages (RFC 3461 section 6, RFC 3464): to the
//! sender, or for a message from the null sender to postmaster (a double bounce, which is
//! dropped with a log line when it fails too). Never to the null sender.
//!
//! Which notifications are sent: a failure unless NOTIFY excludes FAILURE; a success
//! (`Action: relayed`) for NOTIFY=SUCCESS when the receiving server did not offer DSN (a
//! server that did got the NOTIFY parameter and reports itself); a delay (`Action: delayed`)
//! once per recipient still pending `delivery.delay_warning` after arrival, for NOTIFY=DELAY
//! only (the scheduler decides when, see `deliver`). RET=FULL returns the whole message in a
//! failure report only; other reports carry the header section (RFC 3461 section 4.3).
//!
//! Known limit: the returned message is read into memory to build the notification.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_core::dsn::{Action, Notification, RecipientStatus, Returned};

use super::smtp::lf_to_crlf;
use super::{Entry, Kind, State};
use crate::clock::rfc5322_date;
use crate::service::{Services, Submission};

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// Sends the notification about recipients `owed` of `entry`, through
/// [`Services::submit`]. Returns once it is delivered or queued (or, for a double bounce,
/// dropped).
pub(super) fn notify(
    services: &Arc<Services>,
    entry: &Entry,
    owed: &[usize],
) -> Result<(), String> {
    let log = services.log();
    if entry.kind == Kind::DoubleBounce {
        for &i in owed {
            let rcpt = &entry.recipients[i];
            log.write(
                "bounce",
                &format!(
                    "warning: {}: undeliverable postmaster notification to <{}> discarded: {}",
                    entry.id,
                    rcpt.address,
                    rcpt.last_error.as_deref().unwrap_or("failed")
                ),
            );
        }
        return Ok(());
    }

    let config = services.config();
    let (to, kind) = if entry.is_from_null_sender() {
        let domain = config.domains.first().unwrap_or(&config.hostname);
        (format!("postmaster@{domain}"), Kind::DoubleBounce)
    } else {
        (entry.sender.clone(), Kind::Message)
    };

    let failed = owed
        .iter()
        .any(|&i| entry.recipients[i].state == State::Failed);
    let delayed = owed
        .iter()
        .any(|&i| entry.recipients[i].state == State::Pending);
    // RFC 3461 section 4.3: a report without a failure returns only the headers.
    let returned = match entry.ret.as_deref() {
        Some("HDRS") => Returned::Headers,
        _ if failed => Returned::Full,
        _ => Returned::Headers,
    };
    let original = services
        .queue()
        .read_text(&entry.id)
        .map_err(|e| format!("cannot read the queued message: {e}"))?;
    let mut text = entry.received.as_bytes().to_vec();
    text.extend_from_slice(&original);
    if returned == Returned::Headers {
        let end = header_end(&text);
        text.truncate(end);
    }
    let text = lf_to_crlf(&text);

    let lifetime = config.delivery.queue_lifetime.as_secs();
    let retry_until = rfc5322_date(UNIX_EPOCH + Duration::from_secs(entry.arrival + lifetime));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now();
    let stamp = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let notification = Notification {
        reporting_mta: config.hostname.clone(),
        to: to.clone(),
        date: rfc5322_date(now),
        message_id: format!("<{stamp}.{}.{n}.dsn@{}>", entry.id, config.hostname),
        boundary: format!("{}.{stamp}.{n}/{}", entry.id, config.hostname),
        queue_id: entry.id.clone(),
        envid: entry.envid.clone(),
        arrival_date: rfc5322_date(UNIX_EPOCH + Duration::from_secs(entry.arrival)),
        recipients: owed
            .iter()
            .map(|&i| {
                let rcpt = &entry.recipients[i];
                let (action, default_status) = match rcpt.state {
                    State::Failed => (Action::Failed, "5.0.0"),
                    State::Pending => (Action::Delayed, "4.0.0"),
                    State::Sent { .. } | State::Done => (Action::Relayed, "2.0.0"),
                };
                // A temporary code stays as it was when the message expired (4.4.7, or
                // the last server's 4xx), as Postfix reports it. A delay is reported with a
                // 4.x.x, whatever class a confused server put in its reply.
                let status = rcpt
                    .status
                    .clone()
                    .filter(|s| action != Action::Delayed || s.starts_with("4."))
                    .unwrap_or_else(|| default_status.to_owned());
                RecipientStatus {
                    final_recipient: rcpt.address.clone(),
                    original_recipient: rcpt.orcpt.clone(),
                    action,
                    status,
                    remote_mta: rcpt.remote_mta.clone(),
                    diagnostic: rcpt.last_error.clone(),
                    will_retry_until: (action == Action::Delayed).then(|| retry_until.clone()),
                }
            })
            .collect(),
        returned,
        eight_bit: text.iter().any(|&b| b > 127),
        utf8_header: entry.smtputf8,
    };

    let mut report = notification.head().into_bytes();
    report.extend_from_slice(&text);
    report.extend_from_slice(notification.tail(text.ends_with(b"\r\n")).as_bytes());

    let id = services.submit(Submission {
        sender: None,
        recipients: vec![to],
        text: &report,
        kind,
        eight_bit: notification.eight_bit,
        smtputf8: entry.smtputf8,
    })?;
    let what = if failed {
        "sender non-delivery notification"
    } else if delayed {
        "sender delay notification"
    } else {
        "sender delivery status notification"
    };
    log.write("bounce", &format!("{}: {what}: {id}", entry.id));
    Ok(())
}

/// The length of the header section including its empty line, or all of `text`.
fn header_end(text: &[u8]) -> usize {
    if text.starts_with(b"\n") {
        return 1;
    }
    memchr::memmem::find(text, b"\n\n").map_or(text.len(), |at| at + 2)
}
