//! The command parser on arbitrary lines: no panic, and an accepted MAIL/RCPT address
//! survives a round trip through its wire form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_core::address::{ForwardPath, ReversePath};
use tern_core::command::{self, Command};

fuzz_target!(|line: &[u8]| {
    let Ok(command) = command::parse(line) else {
        return;
    };
    let mailbox = match command {
        Command::Mail(ReversePath::Mailbox(m), _) => m,
        Command::Rcpt(ForwardPath::Mailbox(m), _) => m,
        _ => return,
    };
    let again = command::parse(format!("RCPT TO:<{mailbox}>").as_bytes());
    match again {
        Ok(Command::Rcpt(ForwardPath::Mailbox(m), _)) => assert_eq!(m, mailbox),
        Ok(Command::Rcpt(ForwardPath::Postmaster, _)) => {}
        other => panic!("{mailbox} did not parse again: {other:?}"),
    }
});
