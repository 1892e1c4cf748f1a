//! The reply table of SPEC.md section 4 over real sockets: AUTH rules, sequence errors,
//! limits, control bytes.

mod common;

use std::thread;
use std::time::Duration;

use common::{Client, Fixture, TlsClient, tls_client};

const GREETING: &str = "220 mx.test ESMTP tern\r\n";
/// base64 of `\0alice\0s3cret pass`.
const ALICE_PLAIN: &str = "AGFsaWNlAHMzY3JldCBwYXNz";

fn submission_after_tls(fx: &Fixture, addr: &str) -> TlsClient {
    let mut c = Client::tcp(addr);
    c.expect(GREETING);
    c.send(b"EHLO client.test\r\nSTARTTLS\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.expect("220 2.0.0 Ready to start TLS\r\n");
    let mut c = tls_client(fx, c.stream);
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c
}

#[test]
fn auth_needs_tls_on_the_mx_listener() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.send(format!("AUTH PLAIN {ALICE_PLAIN}\r\n").as_bytes());
    c.expect("538 5.7.11 Encryption required for requested authentication mechanism\r\n");
}

#[test]
fn auth_rules_on_submission() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = submission_after_tls(&fx, &server.addr("submission"));

    c.send(b"MAIL FROM:<alice@mx.test>\r\n");
    c.expect("530 5.7.0 Authentication required\r\n");
    c.send(b"AUTH CRAM-SHA1\r\n");
    c.expect("504 5.5.4 Error: unsupported authentication mechanism\r\n");
    c.send(b"AUTH LOGIN\r\n");
    c.expect("334 VXNlcm5hbWU6\r\n");
    c.send(b"*\r\n");
    c.expect("501 5.0.0 Authentication cancelled\r\n");
    c.send(format!("AUTH PLAIN {ALICE_PLAIN}\r\n").as_bytes());
    c.expect("235 2.7.0 Authentication successful\r\n");
    c.send(format!("AUTH PLAIN {ALICE_PLAIN}\r\n").as_bytes());
    c.expect("503 5.5.1 Error: already authenticated\r\n");
    c.send(b"MAIL FROM:<alice@mx.test>\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");
}

/// Malformed base64, as an initial response and as a continuation line: 501 5.5.2.
#[test]
fn auth_malformed_base64() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = submission_after_tls(&fx, &server.addr("submission"));

    c.send(b"AUTH PLAIN\r\n");
    c.expect("334 \r\n");
    c.send(b"!!!not-base64\r\n");
    c.expect("501 5.5.2 Error: invalid base64 data\r\n");
    c.send(b"AUTH PLAIN !!!not-base64\r\n");
    c.expect("501 5.5.2 Error: invalid base64 data\r\n");
}

#[test]
fn commands_out_of_sequence() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    c.send(b"MAIL FROM:<a@example.org>\r\n");
    c.expect("503 5.5.1 Error: send HELO/EHLO first\r\n");
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.send(b"RCPT TO:<alice@mx.test>\r\n");
    c.expect("503 5.5.1 Error: need MAIL command\r\n");
    c.send(b"DATA\r\n");
    c.expect("503 5.5.1 Error: need MAIL command\r\n");
    c.send(b"MAIL FROM:<a@example.org>\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.send(b"MAIL FROM:<a@example.org>\r\n");
    c.expect("503 5.5.1 Error: nested MAIL command\r\n");
    c.send(b"DATA\r\n");
    c.expect("503 5.5.1 Error: need RCPT command\r\n");
    c.send(b"RCPT TO:<bad address@@>\r\n");
    c.expect_prefix("501 5.1.3 ");
    // RFC 5321 section 4.5.1: bare postmaster is always accepted.
    c.send(b"RCPT TO:<postmaster>\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.send(b"RSET\r\n");
    c.expect("250 2.0.0 Ok\r\n");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");
}

#[test]
fn unknown_commands_and_control_bytes() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    c.send(b"FOO bar\r\n");
    c.expect("500 5.5.2 Error: command not recognized\r\n");
    c.send(b"NOOP\0QUIT\r\n");
    c.expect("500 5.5.2 Error: control character in command\r\n");
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.send(b"MAIL FROM:<a\0b@example.org>\r\n");
    c.expect("501 5.1.7 Error: bad sender address syntax\r\n");
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<al\x01ice@mx.test>\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("501 5.1.3 Error: bad recipient address syntax\r\n");
    c.send(b"RSET\r\nMAIL FROM:<a@example.org> FROBNICATE=yes\r\n");
    c.expect("250 2.0.0 Ok\r\n");
    c.expect("555 5.5.4 Error: unsupported parameter\r\n");
    c.send(b"NOOP\r\n");
    c.expect("250 2.0.0 Ok\r\n");
}

/// The 101st recipient gets 452 4.5.3 (`recipients = 100` by default); with
/// `recipient_delimiter = "+"` every `alice+N` is alice.
#[test]
fn too_many_recipients() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    let mut write = String::from("EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n");
    for n in 0..101 {
        write.push_str(&format!("RCPT TO:<alice+{n}@mx.test>\r\n"));
    }
    c.send(write.as_bytes());
    c.expect_prefix("250-mx.test\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    for _ in 0..100 {
        c.expect("250 2.1.5 Ok\r\n");
    }
    c.expect("452 4.5.3 Error: too many recipients\r\n");
}

#[test]
fn message_size_limit() {
    let fx = Fixture::new();
    fx.edit_config(|text| text.replace("[limits]\n", "[limits]\nmessage_size = 2000\n"));
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    c.send(b"EHLO client.test\r\n");
    let ehlo = c.reply();
    assert!(ehlo.contains("\r\n250-SIZE 2000\r\n"), "{ehlo}");
    c.send(b"MAIL FROM:<a@example.org> SIZE=5000\r\n");
    c.expect("552 5.3.4 Error: message file too big\r\n");

    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    let mut body = String::from("Subject: big\r\n\r\n");
    for n in 0..60 {
        body.push_str(&format!(
            "line {n:03} of a message over the limit.......\r\n"
        ));
    }
    body.push_str(".\r\n");
    assert!(body.len() > 2500);
    c.send(body.as_bytes());
    c.expect("552 5.3.4 Error: message file too big\r\n");

    // The session goes on; nothing was stored.
    c.send(b"NOOP\r\n");
    c.expect("250 2.0.0 Ok\r\n");
    thread::sleep(Duration::from_millis(200));
    assert!(common::read_files(&fx.new_dir("alice")).is_empty());
}

/// `errors = 3`: the session is closed with 421 4.7.0 once the limit is reached.
#[test]
fn too_many_errors_close_the_session() {
    let fx = Fixture::new();
    fx.edit_config(|text| text.replace("[limits]\n", "[limits]\nerrors = 3\n"));
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect(GREETING);

    c.send(b"FOO\r\nFOO\r\nFOO\r\nFOO\r\nFOO\r\n");
    c.expect("500 5.5.2 Error: command not recognized\r\n");
    c.expect("500 5.5.2 Error: command not recognized\r\n");
    let mut replies = vec![c.reply()];
    if replies[0].starts_with("500 ") {
        replies.push(c.reply());
    }
    assert_eq!(
        replies.last().unwrap(),
        "421 4.7.0 mx.test Error: too many errors\r\n",
        "replies after the second error: {replies:?}"
    );
    c.expect_closed();
}
