//! LMTP over the Unix socket listener (SPEC.md section 4): LHLO, per-recipient replies after
//! the data, one file in each recipient's Maildir.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{Client, Fixture, Trace, assert_file_name, assert_stored, wait_files};

const LHLO: &str = "250-mx.test\r\n\
    250-PIPELINING\r\n\
    250-SIZE 10240000\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-8BITMIME\r\n\
    250-DSN\r\n\
    250-SMTPUTF8\r\n\
    250 CHUNKING\r\n";

fn lmtp_trace<'a>(rcpt: &'a str) -> Trace<'a> {
    Trace {
        return_path: "sender@example.org",
        by: "mx.test",
        delivered_to: rcpt,
        from: "client.test (localhost)",
        protocol: "LMTP",
        tls: false,
        queue_id: None,
        recipient: rcpt,
    }
}

#[test]
fn two_recipients_and_an_unknown_one() {
    let fx = Fixture::new();
    let server = fx.serve();
    assert_eq!(
        server.addr("lmtp"),
        fx.lmtp_socket().display().to_string(),
        "the lmtp listener prints its socket path"
    );
    // SPEC section 2: a Unix listener's mode defaults to 0600.
    let mode = fs::metadata(fx.lmtp_socket()).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "mode of {}",
        fx.lmtp_socket().display()
    );
    let mut c = Client::unix(&fx.lmtp_socket());

    c.expect("220 mx.test LMTP tern\r\n");
    c.send(b"LHLO client.test\r\n");
    c.expect(LHLO);
    c.send(b"MAIL FROM:<sender@example.org>\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.send(b"RCPT TO:<alice@mx.test>\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.send(b"RCPT TO:<nobody@mx.test>\r\n");
    c.expect("550 5.1.1 <nobody@mx.test>: Recipient address rejected: User unknown\r\n");
    c.send(b"RCPT TO:<bob@example.net>\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.send(b"DATA\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"Subject: over lmtp\r\n\r\nbody line\r\n..dot\r\n.\r\n");
    c.expect("250 2.1.5 <alice@mx.test> Ok\r\n");
    c.expect("250 2.1.5 <bob@example.net> Ok\r\n");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");
    c.expect_closed();

    for (user, rcpt) in [("alice", "alice@mx.test"), ("bob", "bob@example.net")] {
        let files = wait_files(&fx.new_dir(user), 1);
        assert_file_name(&files[0], server.pid(), "mx.test");
        assert_stored(
            &files[0],
            &lmtp_trace(rcpt),
            b"Subject: over lmtp\n\nbody line\n.dot\n",
        );
    }
    assert!(common::read_files(&fx.new_dir("nobody")).is_empty());
}

/// A recipient given twice is delivered once and gets the same answer twice.
#[test]
fn duplicate_recipient_is_delivered_once() {
    let fx = Fixture::new();
    let _server = fx.serve();
    let mut c = Client::unix(&fx.lmtp_socket());
    c.expect("220 mx.test LMTP tern\r\n");

    c.send(
        b"LHLO client.test\r\nMAIL FROM:<sender@example.org>\r\n\
          RCPT TO:<alice@mx.test>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\n",
    );
    c.expect(LHLO);
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"Subject: twice\r\n\r\nonce\r\n.\r\n");
    c.expect("250 2.1.5 <alice@mx.test> Ok\r\n");
    c.expect("250 2.1.5 <alice@mx.test> Ok\r\n");

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_stored(
        &files[0],
        &lmtp_trace("alice@mx.test"),
        b"Subject: twice\n\nonce\n",
    );
}
