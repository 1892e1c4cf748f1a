//! STARTTLS command injection (SPEC.md section 4, CVE-2011-0411 class): bytes pipelined after
//! the STARTTLS line are discarded, never executed inside the TLS session.

mod common;

use common::{Client, Fixture, Trace, assert_stored, queue_id, tls_client, wait_files};

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mut c = Client::tcp(&server.addr("smtp"));

    c.expect("220 mx.test ESMTP tern\r\n");
    c.send(b"EHLO client.test\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.send(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<injected@example.org>\r\n");
    c.expect("220 2.0.0 Ready to start TLS\r\n");
    assert!(
        c.buffered().is_empty(),
        "plaintext after the 220: {:?}",
        String::from_utf8_lossy(c.buffered())
    );

    // A server that kept the injected lines would answer them first, inside TLS (or in
    // plaintext, which breaks the handshake).
    let mut c = tls_client(&fx, c.stream);
    c.send(b"EHLO client.test\r\n");
    c.expect(
        "250-mx.test\r\n\
         250-PIPELINING\r\n\
         250-SIZE 10240000\r\n\
         250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n\
         250-ENHANCEDSTATUSCODES\r\n\
         250-8BITMIME\r\n\
         250-DSN\r\n\
         250-SMTPUTF8\r\n\
         250 CHUNKING\r\n",
    );

    // No MAIL was accepted from the injected line: a RCPT now is out of sequence.
    c.send(b"RCPT TO:<alice@mx.test>\r\n");
    c.expect_prefix("503 5.5.1 ");

    c.send(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"Subject: after starttls\r\n\r\nsecret\r\n.\r\n");
    let id = queue_id(&c.reply());
    let version = match c.stream.conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2",
        other => panic!("negotiated {other:?}"),
    };
    let suite = c.stream.conn.negotiated_cipher_suite().unwrap().suite();
    // The IANA name: rustls prefixes its TLS 1.3 suites with TLS13_.
    let suite = suite.as_str().unwrap().replace("TLS13_", "TLS_");
    c.send(b"QUIT\r\n");
    c.expect("221 2.0.0 Bye\r\n");

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_stored(
        &files[0],
        &Trace {
            return_path: "sender@example.org",
            by: "mx.test",
            delivered_to: "alice@mx.test",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTPS",
            tls: true,
            queue_id: Some(&id),
            recipient: "alice@mx.test",
        },
        b"Subject: after starttls\n\nsecret\n",
    );
    let text = files[0].text();
    let clause = format!(" with ESMTPS ({version} {suite}) id {id}\n");
    assert!(text.contains(&clause), "no `{clause}` in\n{text}");
}
