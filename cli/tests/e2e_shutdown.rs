//! SIGTERM (SPEC.md section 1): stop accepting, let a session in DATA finish, exit 0.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{Client, Fixture, Trace, assert_stored, queue_id, wait_files};

#[test]
fn sigterm_lets_data_finish_then_exits_0() {
    let fx = Fixture::new();
    let server = fx.serve();
    let addr = server.addr("smtp");
    let mut c = Client::tcp(&addr);
    c.expect("220 mx.test ESMTP tern\r\n");
    c.send(b"EHLO client.test\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@mx.test>\r\n");
    c.expect_prefix("250-mx.test\r\n");
    c.expect("250 2.1.0 Ok\r\n");
    c.expect("250 2.1.5 Ok\r\n");
    c.send(b"DATA\r\n");
    c.expect("354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send(b"Subject: shutdown\r\n\r\nfirst half\r\n");

    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    thread::sleep(Duration::from_millis(500));
    assert!(
        TcpStream::connect(&addr).is_err(),
        "tern still accepts connections 500ms after SIGTERM"
    );

    c.send(b"second half\r\n.\r\n");
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
        b"Subject: shutdown\n\nfirst half\nsecond half\n",
    );

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}
