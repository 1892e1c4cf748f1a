//! Writing the envelope: MAIL and RCPT lines with the parameters the server offers, after
//! checking that nothing in them could break out of its command line.

use std::fmt::Write as _;

use super::{Extensions, InputError, Message, Recipient};
use crate::address::{Mailbox, ReversePath};
use crate::command::{Body, Ret};

/// Checks that every address and parameter can be written as it is: no control character
/// (a CR or LF would end the command early and let the rest pass as another one), addresses
/// that parse back, ENVID and ORCPT in xtext.
pub(super) fn validate(message: &Message) -> Result<(), InputError> {
    if message.recipients.is_empty() {
        return Err(InputError::NoRecipients);
    }
    if message.params.body == Some(Body::BinaryMime) {
        return Err(InputError::Unsupported("BODY=BINARYMIME"));
    }
    if let ReversePath::Mailbox(sender) = &message.sender {
        check_mailbox(sender, "sender")?;
    }
    if let Some(envid) = &message.params.envid {
        check_xtext(envid, "ENVID")?;
    }
    for rcpt in &message.recipients {
        check_mailbox(&rcpt.address, "recipient")?;
        if let Some(orcpt) = &rcpt.params.orcpt {
            check_xtext(orcpt, "ORCPT")?;
        }
    }
    Ok(())
}

fn check_mailbox(mailbox: &Mailbox, field: &'static str) -> Result<(), InputError> {
    let wire = mailbox.to_string();
    if wire.chars().any(char::is_control) {
        return Err(InputError::ControlCharacter(field));
    }
    match Mailbox::parse(&wire) {
        Ok(_) => Ok(()),
        Err(_) => Err(InputError::Malformed(field)),
    }
}

/// RFC 3461 section 4: xtext is printable ASCII without space and `=` (`+` starts `+XX`).
fn check_xtext(value: &str, field: &'static str) -> Result<(), InputError> {
    if value.chars().any(char::is_control) {
        return Err(InputError::ControlCharacter(field));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'=')
    {
        return Err(InputError::Malformed(field));
    }
    Ok(())
}

pub(super) fn mail_line(message: &Message, ext: &Extensions, needs_utf8: bool) -> String {
    let params = &message.params;
    let mut line = match &message.sender {
        ReversePath::Null => "MAIL FROM:<>".to_owned(),
        ReversePath::Mailbox(sender) => format!("MAIL FROM:<{sender}>"),
    };
    if let (Some(_), Some(size)) = (ext.size, params.size) {
        let _ = write!(line, " SIZE={size}");
    }
    if ext.eightbitmime {
        match params.body {
            Some(Body::SevenBit) => line.push_str(" BODY=7BIT"),
            Some(Body::EightBitMime) => line.push_str(" BODY=8BITMIME"),
            Some(Body::BinaryMime) | None => {}
        }
    }
    if needs_utf8 {
        line.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        match params.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &params.envid {
            let _ = write!(line, " ENVID={envid}");
        }
    }
    line
}

pub(super) fn rcpt_line(rcpt: &Recipient, ext: &Extensions) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if !ext.dsn {
        return line;
    }
    if let Some(notify) = rcpt.params.notify {
        let words: Vec<&str> = if notify.never {
            vec!["NEVER"]
        } else {
            [
                (notify.success, "SUCCESS"),
                (notify.failure, "FAILURE"),
                (notify.delay, "DELAY"),
            ]
            .into_iter()
            .filter_map(|(on, word)| on.then_some(word))
            .collect()
        };
        if !words.is_empty() {
            let _ = write!(line, " NOTIFY={}", words.join(","));
        }
    }
    if let Some(orcpt) = &rcpt.params.orcpt {
        let _ = write!(line, " ORCPT={orcpt}");
    }
    line
}
