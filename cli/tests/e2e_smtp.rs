//! Raw-socket SMTP conversations against `tern serve` (SPEC.md section 4) and the stored mail
//! they produce (section 5), byte for byte.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::Duration;

use common::{Client, Fixture, Trace, assert_file_name, assert_stored, queue_id, wait_files};

const GREETING: &str = "220 mx.test ESMTP tern\r\n";

/// EHLO on the port-25-like listener (tls may, auth optional, no plaintext auth): no AUTH
/// before TLS.
const EHLO_PLAIN: &str = "250-mx.test\r\n\
    250-PIPELINING\r\n\
    250-SIZE 10240000\r\n\
    250-STARTTLS\r\n\
    250-ENHANCEDSTATUSCODES\r\n\
    250-8BITMIME\r\n\
    250-DSN\r\n\
    250-SMTPUTF8\r\n\
    250 CHUNKING\r\n";

#[test]
fn greeting_ehlo_and_quit() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));

    c.expect(GREETING);
    c.send(b"EHLO client.test\r\n");
    c.expect(EHLO_PLAIN);
    c.send(b"NOOP\r\n");
    c.expect("250 2.0.0 Ok\r\n");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");
    c.expect_closed();
}

#[test]
fn relay_denied_and_unknown_user() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));

    c.expect(GREETING);
    c.send(b"EHLO client.test\r\n");
    c.expect(EHLO_PLAIN);
    c.send(b"MAIL FROM:<sender@example.org>\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.send(b"RCPT TO:<someone@example.org>\r\n");
    c.expect("554 5.7.1 <someone@example.org>: Relay access denied\r\n");
    c.send(b"RCPT TO:<nobody@mx.test>\r\n");
    c.expect("550 5.1.1 <nobody@mx.test>: Recipient address rejected: User unknown\r\n");
    // The reply names the canonical address: the domain compared and written in lower case.
    c.send(b"RCPT TO:<nobody@Example.NET>\r\n");
    c.expect("550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n");
    c.send(b"DATA\r\n");
    c.expect_prefix("503 5.5.1 ");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");
    c.expect_closed();

    assert!(common::read_files(&fx.new_dir("alice")).is_empty());
}

/// The whole transaction in one write; the message has a dot-stuffed line, a line longer than
/// 1000 octets (stored unchanged, SPEC section 4) and 8-bit text.
#[test]
fn pipelined_transaction_is_stored_byte_for_byte() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    let long = "x".repeat(1200);
    let wire_body = format!(
        "From: Sender <sender@example.org>\r\n\
         To: alice@mx.test, bob@example.net\r\n\
         Subject: pipelined\r\n\
         \r\n\
         first line\r\n\
         ..a line that began with a dot\r\n\
         ...two dots\r\n\
         {long}\r\n\
         gr\u{fc}\u{df}e\r\n\
         .\r\n"
    );
    let mut write = String::from(
        "EHLO client.test\r\n\
         MAIL FROM:<sender@example.org> BODY=8BITMIME\r\n\
         RCPT TO:<alice@mx.test>\r\n\
         RCPT TO:<bob@example.net>\r\n\
         DATA\r\n",
    );
    write.push_str(&wire_body);
    write.push_str("QUIT\r\n");
    c.send(write.as_bytes());

    c.expect(EHLO_PLAIN);
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    let id = queue_id(&c.reply());
    c.expect("221 2.0.0 Bye\r\n");
    c.expect_closed();

    let stored_body = format!(
        "From: Sender <sender@example.org>\n\
         To: alice@mx.test, bob@example.net\n\
         Subject: pipelined\n\
         \n\
         first line\n\
         .a line that began with a dot\n\
         ..two dots\n\
         {long}\n\
         gr\u{fc}\u{df}e\n"
    );
    for (user, rcpt) in [("alice", "alice@mx.test"), ("bob", "bob@example.net")] {
        let files = wait_files(&fx.new_dir(user), 1);
        assert_file_name(&files[0], server.pid(), "mx.test");
        assert_stored(
            &files[0],
            &Trace {
                return_path: "sender@example.org",
                by: "mx.test",
                delivered_to: rcpt,
                from: "client.test (unknown [127.0.0.1])",
                protocol: "ESMTP",
                tls: false,
                queue_id: Some(&id),
                recipient: rcpt,
            },
            stored_body.as_bytes(),
        );
    }

    // SPEC section 5: the mailbox path, its parents and tmp/ new/ cur/ are made with 0700.
    let maildir = fx.maildir("alice");
    for dir in [
        maildir.parent().unwrap().to_path_buf(),
        maildir.clone(),
        maildir.join("tmp"),
        maildir.join("new"),
        maildir.join("cur"),
    ] {
        let mode = fs::metadata(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "mode of {}", dir.display());
    }
}

/// `postmaster` is always accepted and goes to the account `[aliases]` names.
#[test]
fn postmaster_goes_to_the_alias_target() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    c.send(b"HELO client.test\r\n");
    c.expect("250 mx.test\r\n");
    c.send(b"MAIL FROM:<>\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.send(b"RCPT TO:<Postmaster@mx.test>\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.send(b"DATA\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"Subject: to postmaster\r\n\r\nhello\r\n.\r\n");
    let id = queue_id(&c.reply());

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_stored(
        &files[0],
        &Trace {
            return_path: "",
            by: "mx.test",
            delivered_to: "alice@mx.test",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "SMTP",
            tls: false,
            queue_id: Some(&id),
            // As Postfix does, `for` names the recipient the client gave.
            recipient: "Postmaster@mx.test",
        },
        b"Subject: to postmaster\n\nhello\n",
    );
}

#[test]
fn bare_lf_in_data_closes_and_stores_nothing() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    c.send(b"EHLO client.test\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@mx.test>\r\n");
    c.expect(EHLO_PLAIN);
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.send(b"DATA\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    // Nothing after the bare LF may be executed: not the end of data, not the next MAIL.
    c.send(
        b"Subject: smuggle\r\n\r\nbefore\nMAIL FROM:<evil@example.org>\r\n\
          .\r\nMAIL FROM:<evil@example.org>\r\n",
    );
    c.expect("521 5.5.2 Error: bare CR or LF received\r\n");
    c.expect_closed();

    // The server has acted on the close already; give a wrong delivery time to show up.
    thread::sleep(Duration::from_millis(300));
    assert!(common::read_files(&fx.new_dir("alice")).is_empty());
    assert!(common::read_files(&fx.maildir("alice").join("tmp")).is_empty());
}

#[test]
fn overlong_command_line_is_refused_and_its_tail_discarded() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    let long = format!("NOOP {}\r\n", "a".repeat(700));
    c.send(long.as_bytes());
    c.expect("500 5.5.2 Error: line too long\r\n");
    c.send(b"NOOP\r\n");
    c.expect("250 2.0.0 Ok\r\n");

    // The tail of an overlong line arrives in its own write and looks like a command: it
    // must still be discarded, not executed.
    c.send(format!("NOOP {}", "b".repeat(600)).as_bytes());
    thread::sleep(Duration::from_millis(200));
    c.send(b"QUIT\r\n");
    c.expect("500 5.5.2 Error: line too long\r\n");
    c.send(b"NOOP\r\n");
    c.expect("250 2.0.0 Ok\r\n");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");
    c.expect_closed();
}

#[test]
fn http_request_is_refused_and_closed() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    c.send(b"GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n");
    c.expect("521 5.7.0 Error: HTTP request on the mail port\r\n");
    c.expect_closed();

    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);
    c.send(b"EHLO client.test\r\n");
    c.expect(EHLO_PLAIN);
    c.send(b"Host: mx.test\r\n");
    c.expect("521 5.7.0 Error: HTTP request on the mail port\r\n");
    c.expect_closed();
}

/// tls = "encrypt": everything but EHLO/HELO/STARTTLS/NOOP/RSET/QUIT needs TLS first.
#[test]
fn submission_requires_starttls() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("submission"));
    c.expect(GREETING);

    c.send(b"EHLO client.test\r\n");
    c.expect(
        "250-mx.test\r\n\
         250-PIPELINING\r\n\
         250-SIZE 10240000\r\n\
         250-STARTTLS\r\n\
         250-ENHANCEDSTATUSCODES\r\n\
         250-8BITMIME\r\n\
         250-DSN\r\n\
         250-SMTPUTF8\r\n\
         250 CHUNKING\r\n",
    );
    c.send(b"MAIL FROM:<alice@mx.test>\r\n");
    c.expect("530 5.7.0 Must issue a STARTTLS command first\r\n");
    c.send(b"AUTH PLAIN AGFsaWNlAHMzY3JldCBwYXNz\r\n");
    c.expect("530 5.7.0 Must issue a STARTTLS command first\r\n");
    c.send(b"RSET\r\n");
    c.expect("250 2.0.0 Ok\r\n");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");
}

/// CHUNKING (RFC 3030): BDAT data has no dot-stuffing; line ends are still stored as LF.
#[test]
fn bdat_chunks_are_stored_without_unstuffing() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    let first = b"Subject: bdat\r\n\r\n.one dot\r\n";
    let last = b"..two dots\r\nend\r\n";
    c.send(b"EHLO client.test\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@mx.test>\r\n");
    c.expect(EHLO_PLAIN);
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    let mut write = format!("BDAT {}\r\n", first.len()).into_bytes();
    write.extend_from_slice(first);
    write.extend_from_slice(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    write.extend_from_slice(last);
    c.send(&write);
    c.expect(&format!(
        "250 2.0.0 Ok: {} octets received\r\n",
        first.len()
    ));
    let id = queue_id(&c.reply());

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_stored(
        &files[0],
        &Trace {
            return_path: "sender@example.org",
            by: "mx.test",
            delivered_to: "alice@mx.test",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTP",
            tls: false,
            queue_id: Some(&id),
            recipient: "alice@mx.test",
        },
        b"Subject: bdat\n\n.one dot\n..two dots\nend\n",
    );
}
