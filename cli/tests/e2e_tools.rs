//! Real third-party clients against `tern serve`: Python's smtplib, swaks and
//! `openssl s_client`. A missing tool fails the test with a pointer to `.ci/run`.

mod common;

use std::fs;
use std::io::Write;
use std::process::Stdio;

use common::{Fixture, TIMEOUT, Trace, assert_file_name, assert_stored, tool, wait_files};

const SMTPLIB: &str = r#"
import smtplib, sys
port = int(sys.argv[1])
msg = (b"From: py@example.org\r\nTo: alice@mx.test\r\nSubject: smtplib\r\n\r\n"
       b"line one\r\n.starts with a dot\r\n\r\nlast line\r\n")
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=15) as s:
    refused = s.sendmail("py@example.org", ["alice@mx.test"], msg)
    assert refused == {}, refused
print("sent")
"#;

#[test]
fn python_smtplib_sendmail() {
    let fx = Fixture::new();
    let server = fx.serve();

    let (status, out, err) = common::run_with_timeout(
        tool("python3")
            .arg("-c")
            .arg(SMTPLIB)
            .arg(server.port("smtp").to_string()),
        TIMEOUT,
    );
    assert!(status.success(), "python3 smtplib failed: {status}\n{err}");
    assert_eq!(out, "sent\n");

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_file_name(&files[0], server.pid(), "mx.test");
    assert_stored(
        &files[0],
        &Trace {
            return_path: "py@example.org",
            by: "mx.test",
            delivered_to: "alice@mx.test",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTP",
            tls: false,
            queue_id: None,
            recipient: "alice@mx.test",
        },
        b"From: py@example.org\nTo: alice@mx.test\nSubject: smtplib\n\n\
          line one\n.starts with a dot\n\nlast line\n",
    );
}

#[test]
fn swaks_one_message() {
    let fx = Fixture::new();
    let server = fx.serve();
    let data = fx.root().join("swaks-data.txt");
    // swaks ends the data with a line break of its own, so the file has none.
    fs::write(
        &data,
        "From: swaks@example.org\nTo: alice@mx.test\nSubject: swaks\n\n\
         hello from swaks\n.dot first\nend",
    )
    .unwrap();

    let (status, out, err) = common::run_with_timeout(
        tool("swaks")
            .args(["--server", &format!("127.0.0.1:{}", server.port("smtp"))])
            .args(["--to", "alice@mx.test", "--from", "swaks@example.org"])
            .args(["--helo", "client.test", "--timeout", "15"])
            .arg("--data")
            .arg(format!("@{}", data.display())),
        TIMEOUT,
    );
    assert!(status.success(), "swaks failed: {status}\n{out}\n{err}");
    let id = out
        .lines()
        .find_map(|l| l.split_once("250 2.0.0 Ok: queued as ").map(|(_, id)| id))
        .unwrap_or_else(|| panic!("no queued reply in swaks output:\n{out}"));

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_file_name(&files[0], server.pid(), "mx.test");
    assert_stored(
        &files[0],
        &Trace {
            return_path: "swaks@example.org",
            by: "mx.test",
            delivered_to: "alice@mx.test",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTP",
            tls: false,
            queue_id: Some(id.trim()),
            recipient: "alice@mx.test",
        },
        b"From: swaks@example.org\nTo: alice@mx.test\nSubject: swaks\n\n\
          hello from swaks\n.dot first\nend\n",
    );
}

/// After STARTTLS, EHLO offers AUTH and no longer STARTTLS; the certificate verifies against
/// itself for the name mx.test.
#[test]
fn openssl_starttls_then_ehlo_offers_auth() {
    let fx = Fixture::new();
    let server = fx.serve();
    let cert = fx.root().join("tls/cert.pem");

    let mut child = tool("openssl")
        .args(["s_client", "-starttls", "smtp", "-crlf", "-quiet"])
        .args([
            "-connect",
            &format!("127.0.0.1:{}", server.port("submission")),
        ])
        .args(["-servername", "mx.test", "-verify_hostname", "mx.test"])
        .arg("-CAfile")
        .arg(&cert)
        .arg("-verify_return_error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"EHLO client.test\nQUIT\n")
        .unwrap();
    let deadline_guard = common::wait_with_timeout(&mut child, TIMEOUT);
    if deadline_guard.is_none() {
        let _ = child.kill();
        panic!("openssl s_client did not finish within {TIMEOUT:?}");
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openssl failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert_eq!(
        stdout,
        "250-mx.test\r\n\
         250-PIPELINING\r\n\
         250-SIZE 10240000\r\n\
         250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n\
         250-ENHANCEDSTATUSCODES\r\n\
         250-8BITMIME\r\n\
         250-DSN\r\n\
         250-SMTPUTF8\r\n\
         250 CHUNKING\r\n\
         221 2.0.0 Bye\r\n",
        "stderr: {stderr}"
    );
}
