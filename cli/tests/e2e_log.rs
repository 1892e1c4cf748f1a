//! The mail log (SPEC.md section 7): Postfix-style lines for a submitted message and a failed
//! login, and never a password or AUTH payload.

mod common;

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Fixture, PASSWORD, TIMEOUT, queue_id, tls_client};

/// base64 of `\0alice\0s3cret pass`, the AUTH PLAIN payload.
const GOOD_PLAIN: &str = "AGFsaWNlAHMzY3JldCBwYXNz";
/// base64 of `\0alice\0not the password`.
const BAD_PLAIN: &str = "AGFsaWNlAG5vdCB0aGUgcGFzc3dvcmQ=";

#[test]
fn postfix_style_lines_and_no_secrets() {
    let fx = Fixture::new();
    let server = fx.serve();
    let submission = server.addr("submission");

    let mut c = Client::tcp(&submission);
    c.expect("220 mx.test ESMTP tern\r\n");
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.send(b"STARTTLS\r\n");
    c.expect("220 2.0.0 Ready to start TLS\r\n");
    let mut c = tls_client(&fx, c.stream);
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.send(format!("AUTH PLAIN {GOOD_PLAIN}\r\n").as_bytes());
    c.expect("235 2.7.0 Authentication successful\r\n");
    c.send(b"MAIL FROM:<alice@mx.test>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"Message-ID: <log-test@client.test>\r\nSubject: log\r\n\r\nhi\r\n.\r\n");
    let id = queue_id(&c.reply());
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");

    // A failed login on a second connection.
    let mut c = Client::tcp(&submission);
    c.expect("220 mx.test ESMTP tern\r\n");
    c.send(b"EHLO client.test\r\nSTARTTLS\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.expect("220 2.0.0 Ready to start TLS\r\n");
    let mut c = tls_client(&fx, c.stream);
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.send(format!("AUTH PLAIN {BAD_PLAIN}\r\n").as_bytes());
    c.expect_prefix("535 5.7.8 ");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");

    let log_path = fx.root().join("mail.log");
    let deadline = Instant::now() + TIMEOUT;
    let log = loop {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        if log.matches("disconnect from ").count() >= 2 {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no two disconnect lines in {} after {TIMEOUT:?}:\n{log}",
            log_path.display()
        );
        thread::sleep(Duration::from_millis(50));
    };

    let mut events = Vec::new();
    for line in log.lines() {
        events.push(event_of(line, server.pid()));
    }
    let has = |service: &str, text: &str| events.iter().any(|(s, e)| s == service && e == text);
    let has_shape = |service: &str, prefix: &str, suffix: &str| {
        events
            .iter()
            .any(|(s, e)| s == service && e.starts_with(prefix) && e.ends_with(suffix))
    };

    assert!(has("smtpd", "connect from unknown[127.0.0.1]"), "{log}");
    assert!(
        has(
            "smtpd",
            &format!("{id}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice")
        ),
        "{log}"
    );
    assert!(
        has(
            "cleanup",
            &format!("{id}: message-id=<log-test@client.test>")
        ),
        "{log}"
    );
    assert!(
        has_shape(
            "qmgr",
            &format!("{id}: from=<alice@mx.test>, size="),
            ", nrcpt=1 (queue active)"
        ),
        "{log}"
    );
    assert!(
        has_shape(
            "local",
            &format!("{id}: to=<bob@example.net>, relay=local, delay="),
            ", dsn=2.0.0, status=sent (delivered to maildir)"
        ),
        "{log}"
    );
    assert!(
        has(
            "smtpd",
            "warning: unknown[127.0.0.1]: SASL PLAIN authentication failed: \
             authentication failure"
        ),
        "{log}"
    );
    assert!(
        has_shape(
            "smtpd",
            "disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 \
             quit=1 commands=",
            ""
        ),
        "{log}"
    );

    for secret in [
        PASSWORD,
        "s3cret",
        GOOD_PLAIN,
        BAD_PLAIN,
        "not the password",
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}

/// Splits `Dec  3 15:24:51 mx tern/smtpd[4021]: text` into (`smtpd`, `text`), checking the
/// stamp, the short host name and the pid.
#[track_caller]
fn event_of(line: &str, pid: u32) -> (String, String) {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    assert!(line.len() > 16, "short log line {line:?}");
    let (stamp, rest) = line.split_at(16);
    let b = stamp.as_bytes();
    assert!(months.contains(&&stamp[..3]), "month in {line:?}");
    assert!(
        b[3] == b' ' && (b[4] == b' ' || b[4].is_ascii_digit()),
        "{line:?}"
    );
    assert!(b[5].is_ascii_digit() && b[6] == b' ', "day in {line:?}");
    assert!(
        b[9] == b':' && b[12] == b':' && b[15] == b' ',
        "time in {line:?}"
    );

    let rest = rest
        .strip_prefix("mx tern/")
        .unwrap_or_else(|| panic!("no `mx tern/` after the stamp in {line:?}"));
    let (service, rest) = rest.split_once('[').expect("no [pid]");
    let (line_pid, text) = rest.split_once("]: ").expect("no ]: ");
    assert_eq!(line_pid, pid.to_string(), "pid in {line:?}");
    (service.to_string(), text.to_string())
}
