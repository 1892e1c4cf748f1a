//! `tern serve --runtime smol` against the real binary: plain SMTP, pipelining, STARTTLS with
//! AUTH, implicit TLS, LMTP on a Unix socket, the command timeout and a graceful SIGTERM.
//! Replies are compared byte for byte, with queue ids masked; where a conversation is fixed
//! in advance it is also run against the blocking runtime, which must send the same bytes.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tempfile::TempDir;

const EHLO_PLAIN: &str = "250-mail.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
    250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n\
    250 CHUNKING\r\n";

#[test]
fn plain_smtp_delivers_and_matches_the_blocking_runtime() {
    let script = "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n\
                  RCPT TO:<bob@example.net>\r\nDATA\r\n";
    let text = "Subject: plain\r\n\r\nhello\r\n..stuffed\r\n.\r\nQUIT\r\n";
    let converse = |server: &Server| {
        let mut stream = connect(server);
        let mut got = read_reply(&mut stream);
        for line in script.split_inclusive("\r\n") {
            stream.write_all(line.as_bytes()).unwrap();
            got += &read_reply(&mut stream);
        }
        stream.write_all(text.as_bytes()).unwrap();
        got + &read_to_end(&mut stream)
    };

    let mut smol = Server::start("smol", "");
    let got = mask(&converse(&smol));
    let expected = format!(
        "220 mail.example.net ESMTP tern\r\n{EHLO_PLAIN}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as QUEUEID\r\n\
         221 2.0.0 Bye\r\n"
    );
    assert_eq!(got, expected);
    let stored = smol.only_message("bob");
    assert!(
        stored.ends_with("\nSubject: plain\n\nhello\n.stuffed\n"),
        "{stored}"
    );
    smol.stop_and_expect_exit_0();

    let mut blocking = Server::start("blocking", "");
    assert_eq!(mask(&converse(&blocking)), expected);
    blocking.stop_and_expect_exit_0();
}

#[test]
fn a_pipelined_conversation_with_a_large_message_matches_the_blocking_runtime() {
    // 300 KB of text in one write: the session gets it in pieces and spools them in batches.
    let body: String = (0..6000)
        .map(|n| format!("line {n:05} of the pipelined message, padded to fifty\r\n"))
        .collect();
    let script = format!(
        "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
         RCPT TO:<nobody@example.net>\r\nDATA\r\nSubject: pipelined\r\n\r\n{body}.\r\n\
         NOOP\r\nQUIT\r\n"
    );
    let converse = |server: &Server| {
        let mut stream = connect(server);
        let mut writer = stream.try_clone().unwrap();
        let script = script.clone();
        // Written from another thread: the replies must be read while the text goes out.
        let sender = thread::spawn(move || writer.write_all(script.as_bytes()).unwrap());
        let got = read_to_end(&mut stream);
        sender.join().unwrap();
        got
    };

    let expected = format!(
        "220 mail.example.net ESMTP tern\r\n{EHLO_PLAIN}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n\
         250 2.0.0 Ok: queued as QUEUEID\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"
    );
    let mut smol = Server::start("smol", "");
    assert_eq!(mask(&converse(&smol)), expected);
    let stored = smol.only_message("bob");
    assert!(
        stored.ends_with(&format!(
            "\nSubject: pipelined\n\n{}",
            body.replace("\r\n", "\n")
        )),
        "the stored message lost or reordered text"
    );
    smol.stop_and_expect_exit_0();

    let mut blocking = Server::start("blocking", "");
    assert_eq!(mask(&converse(&blocking)), expected);
    blocking.stop_and_expect_exit_0();
}

#[test]
fn text_held_back_between_pauses_is_stored_whole_and_a_message_cut_off_is_not() {
    // Pieces below and above the 64 KiB hand-off, with pauses so the session waits for input
    // while it holds text back, and a CR LF split across two pieces.
    let line = |n: usize| format!("piece line {n:05}, padded out to about fifty octets\r\n");
    let first: String = (0..100).map(line).collect();
    let second: String = (100..2000).map(line).collect();
    let mut server = Server::start("smol", "");

    // Cut off in the middle of its text: nothing of it may be delivered.
    let mut dropped = open_in_data(&server);
    dropped.write_all(b"Subject: dropped\r\n\r\n").unwrap();
    dropped.write_all(first.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(200));
    drop(dropped);

    let mut stream = open_in_data(&server);
    stream.write_all(b"Subject: pieces\r\n\r\n").unwrap();
    stream.write_all(first.as_bytes()).unwrap();
    stream.write_all(b"split\r").unwrap();
    thread::sleep(Duration::from_millis(200));
    stream.write_all(b"\n").unwrap();
    stream.write_all(second.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(200));
    stream.write_all(b"last\r\n.\r\nQUIT\r\n").unwrap();
    assert_eq!(
        mask(&read_to_end(&mut stream)),
        "250 2.0.0 Ok: queued as QUEUEID\r\n221 2.0.0 Bye\r\n"
    );
    let stored = server.only_message("bob");
    let expected =
        format!("\nSubject: pieces\n\n{first}split\n{second}last\n").replace("\r\n", "\n");
    assert!(stored.ends_with(&expected), "the stored text differs");
    server.stop_and_expect_exit_0();
    // The start of the message cut off was held back with its text, and still done (and
    // logged) before the connection's end, as for the other runtimes.
    let log = fs::read_to_string(server.root.path().join("mail.log")).unwrap();
    assert_eq!(log.matches(": client=").count(), 2, "{log}");
}

#[test]
fn starttls_then_auth_then_a_message() {
    let mut server = Server::start("smol", "");
    let mut plain = greeted(&server);
    // Anything pipelined behind STARTTLS is thrown away, never executed.
    plain
        .write_all(b"EHLO client.example\r\nSTARTTLS\r\nRSET\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut plain), EHLO_PLAIN);
    assert_eq!(read_reply(&mut plain), "220 2.0.0 Ready to start TLS\r\n");

    let mut tls = server.tls_client(plain);
    tls.write_all(b"EHLO client.example\r\n").unwrap();
    assert_eq!(
        read_reply(&mut tls),
        "250-mail.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
         250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
         250-SMTPUTF8\r\n250 CHUNKING\r\n"
    );
    let conversation = [
        (
            "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
            "235 2.7.0 Authentication successful\r\n",
        ),
        ("MAIL FROM:<bob@example.net>\r\n", "250 2.1.0 Ok\r\n"),
        ("RCPT TO:<bob@example.net>\r\n", "250 2.1.5 Ok\r\n"),
        ("DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"),
        (
            "Subject: tls\r\n\r\nsecret\r\n.\r\n",
            "250 2.0.0 Ok: queued as QUEUEID\r\n",
        ),
    ];
    for (command, reply) in conversation {
        tls.write_all(command.as_bytes()).unwrap();
        assert_eq!(mask(&read_reply(&mut tls)), reply, "after {command:?}");
    }
    tls.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_end(&mut tls), "221 2.0.0 Bye\r\n");

    let stored = server.only_message("bob");
    assert!(
        stored.contains("with ESMTPSA (TLS1.3 TLS_AES_256_GCM_SHA384) id "),
        "{stored}"
    );
    server.stop_and_expect_exit_0();
}

#[test]
fn implicit_tls_greets_inside_tls() {
    let mut server = Server::start("smol", "");
    let plain = TcpStream::connect(server.address("submissions")).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = server.tls_client(plain);
    assert_eq!(read_reply(&mut tls), "220 mail.example.net ESMTP tern\r\n");
    tls.write_all(b"EHLO client.example\r\nQUIT\r\n").unwrap();
    assert_eq!(
        read_to_end(&mut tls),
        "250-mail.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
         250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
         250-SMTPUTF8\r\n250 CHUNKING\r\n221 2.0.0 Bye\r\n"
    );

    // A client that speaks plain text to the TLS port gets a TLS alert, not a reply.
    let mut confused = TcpStream::connect(server.address("submissions")).unwrap();
    confused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    confused.write_all(b"EHLO client.example\r\n").unwrap();
    let answer = read_to_end(&mut confused);
    assert!(answer.starts_with("\u{15}\u{3}\u{3}"), "{answer:?}");
    server.stop_and_expect_exit_0();
    let log = fs::read_to_string(server.root.path().join("mail.log")).unwrap();
    assert!(
        log.contains("SSL_accept error from unknown[127.0.0.1]"),
        "{log}"
    );
}

#[test]
fn lmtp_on_the_unix_socket_answers_per_recipient() {
    let mut server = Server::start("smol", "");
    let mut stream = UnixStream::connect(server.address("lmtp")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"LHLO mx.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
              RCPT TO:<carol@example.net>\r\nDATA\r\nSubject: lmtp\r\n\r\nvia lmtp\r\n.\r\n\
              QUIT\r\n",
        )
        .unwrap();
    assert_eq!(
        read_to_end(&mut stream),
        "220 mail.example.net LMTP tern\r\n250-mail.example.net\r\n250-PIPELINING\r\n\
         250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
         250-SMTPUTF8\r\n250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n250 2.1.5 <bob@example.net> Ok\r\n\
         250 2.1.5 <carol@example.net> Ok\r\n221 2.0.0 Bye\r\n"
    );
    for user in ["bob", "carol"] {
        let stored = server.only_message(user);
        assert!(
            stored.ends_with("\nSubject: lmtp\n\nvia lmtp\n"),
            "{stored}"
        );
    }
    server.stop_and_expect_exit_0();
}

#[test]
fn an_idle_client_times_out_and_activity_rearms_the_timer() {
    let mut server = Server::start("smol", "command_timeout = \"1s\"\n");
    let started = Instant::now();
    let mut stream = greeted(&server);
    thread::sleep(Duration::from_millis(700));
    stream.write_all(b"NOOP\r\n").unwrap();
    assert_eq!(read_reply(&mut stream), "250 2.0.0 Ok\r\n");
    assert_eq!(
        read_to_end(&mut stream),
        "421 4.4.2 mail.example.net Error: timeout exceeded\r\n"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1700) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    server.stop_and_expect_exit_0();
}

#[test]
fn sigterm_lets_a_message_in_data_finish_and_exits_0() {
    let mut server = Server::start("smol", "");
    let mut busy = open_in_data(&server);
    busy.write_all(b"Subject: late\r\n\r\nfirst half\r\n")
        .unwrap();

    let mut idle = greeted(&server);

    server.signal("TERM");
    // The idle session is told at once; its 421 proves the stop reached the sessions.
    assert_eq!(
        read_to_end(&mut idle),
        "421 4.3.2 mail.example.net Service shutting down\r\n"
    );
    busy.write_all(b"second half\r\n.\r\n").unwrap();
    assert_eq!(
        mask(&read_to_end(&mut busy)),
        "250 2.0.0 Ok: queued as QUEUEID\r\n\
         421 4.3.2 mail.example.net Service shutting down\r\n"
    );
    let status = server.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    let stored = server.only_message("bob");
    assert!(
        stored.ends_with("\nSubject: late\n\nfirst half\nsecond half\n"),
        "{stored}"
    );
}

#[test]
fn a_failed_auth_is_answered_after_the_delay_and_pipelined_input_waits() {
    let mut server = Server::start("smol", "auth_failure_delay = \"500ms\"\n");
    let plain = TcpStream::connect(server.address("submissions")).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = server.tls_client(plain);
    assert_eq!(read_reply(&mut tls), "220 mail.example.net ESMTP tern\r\n");
    tls.write_all(b"HELO client.example\r\n").unwrap();
    assert_eq!(read_reply(&mut tls), "250 mail.example.net\r\n");
    // bob with the wrong password, and a NOOP behind it.
    let started = Instant::now();
    tls.write_all(b"AUTH PLAIN AGJvYgB3cm9uZw==\r\nNOOP\r\nQUIT\r\n")
        .unwrap();
    assert_eq!(
        read_reply(&mut tls),
        "535 5.7.8 Error: authentication failed\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(read_to_end(&mut tls), "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
    server.stop_and_expect_exit_0();
}

#[test]
fn connections_beyond_the_limit_get_421_and_are_closed() {
    let mut server = Server::start("smol", "connections = 1\n");
    let mut first = greeted(&server);
    let mut second = connect(&server);
    assert_eq!(
        read_to_end(&mut second),
        "421 4.7.0 mail.example.net Error: too many connections\r\n"
    );

    // On the implicit-TLS listener plain text would be garbage: closed without a word.
    let plain = TcpStream::connect(server.address("submissions")).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = server.tls_client(plain);
    assert_eq!(read_reply(&mut tls), "220 mail.example.net ESMTP tern\r\n");
    let mut refused = TcpStream::connect(server.address("submissions")).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_to_end(&mut refused), "");

    // A place freed is a place taken again.
    first.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_end(&mut first), "221 2.0.0 Bye\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect(&server);
        let reply = read_reply(&mut again);
        if reply.starts_with("220 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place was never freed: {reply}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    server.stop_and_expect_exit_0();
}

/// A running `tern serve` in a temporary directory.
struct Server {
    child: Child,
    root: TempDir,
    addresses: HashMap<String, String>,
}

impl Server {
    /// Starts tern with an SMTP (STARTTLS), an implicit-TLS and an LMTP listener;
    /// `limits` goes into `[limits]`.
    fn start(runtime: &str, limits: &str) -> Server {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        fs::write(
            dir.join("users"),
            "bob:{PLAIN}secret::::::\ncarol:{PLAIN}other::::::\n",
        )
        .unwrap();
        let made = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["cert", "--hostname", "mail.example.net", "--out"])
            .arg(dir.join("tls"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let config = dir.join("tern.toml");
        fs::write(&config, config_text(dir, limits)).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--runtime", runtime, "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addresses = HashMap::new();
        let mut line = String::new();
        let mut ran = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("tern exited before listening: {:?}", child.wait());
            }
            if let Some(name) = line.strip_prefix("runtime: ") {
                ran = name.trim_end().to_owned();
            }
            if line.starts_with("mail: ") {
                assert_eq!(ran, runtime, "tern ran another runtime");
                break;
            }
            if let Some(rest) = line.trim_end().strip_prefix("listening: ")
                && let Some((name, address)) = rest.split_once(" on ")
            {
                addresses.insert(name.to_owned(), address.to_owned());
            }
        }
        Server {
            child,
            root,
            addresses,
        }
    }

    fn address(&self, listener: &str) -> &str {
        &self.addresses[listener]
    }

    /// A TLS client on `plain` that trusts the server's generated certificate.
    fn tls_client(&self, plain: TcpStream) -> StreamOwned<ClientConnection, TcpStream> {
        let cert = CertificateDer::from_pem_file(self.root.path().join("tls/cert.pem")).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("mail.example.net").unwrap();
        let conn = ClientConnection::new(Arc::new(config), name).unwrap();
        StreamOwned::new(conn, plain)
    }

    /// The one message in `user`'s Maildir `new/`, with the line ends it was stored with.
    fn only_message(&self, user: &str) -> String {
        let new = self.root.path().join(format!("mail/{user}/Maildir/new"));
        let files: Vec<_> = fs::read_dir(&new)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        fs::read_to_string(&files[0]).unwrap()
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("tern did not stop within {limit:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop_and_expect_exit_0(&mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(15));
        assert_eq!(status.code(), Some(0));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn config_text(root: &Path, limits: &str) -> String {
    format!(
        r#"hostname = "mail.example.net"
domains = ["example.net"]
data_dir = "{root}/data"
log = "{root}/mail.log"

[tls]
certificate = "{root}/tls/cert.pem"
private_key = "{root}/tls/key.pem"

[accounts]
file = "{root}/users"

[mailbox]
path = "{root}/mail/%n/Maildir"

[limits]
{limits}
[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1:0"
tls = "may"

[[listener]]
name = "submissions"
protocol = "smtp"
address = "127.0.0.1:0"
tls = "implicit"

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "{root}/lmtp.sock"
"#,
        root = root.display()
    )
}

/// One whole reply, continuation lines included, read a byte at a time so that nothing of
/// the next reply is taken.
/// A connection to the smtp listener, with a read timeout.
fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.address("smtp")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A connection to the smtp listener, past its 220 greeting.
fn greeted(server: &Server) -> TcpStream {
    let mut stream = connect(server);
    assert_eq!(
        read_reply(&mut stream),
        "220 mail.example.net ESMTP tern\r\n"
    );
    stream
}

/// A connection to the smtp listener, past HELO, MAIL, RCPT and DATA's 354.
fn open_in_data(server: &Server) -> TcpStream {
    let mut stream = greeted(server);
    for (command, reply) in [
        ("HELO client.example\r\n", "250 mail.example.net\r\n"),
        ("MAIL FROM:<alice@example.org>\r\n", "250 2.1.0 Ok\r\n"),
        ("RCPT TO:<bob@example.net>\r\n", "250 2.1.5 Ok\r\n"),
        ("DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"),
    ] {
        stream.write_all(command.as_bytes()).unwrap();
        assert_eq!(read_reply(&mut stream), reply);
    }
    stream
}

fn read_reply(stream: &mut impl Read) -> String {
    let mut reply = Vec::new();
    let mut line_start = 0;
    let mut byte = [0u8];
    loop {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
        if reply.ends_with(b"\r\n") {
            let line = &reply[line_start..];
            assert!(line.len() >= 6, "short reply line {line:?}");
            if line[3] == b' ' {
                return String::from_utf8(reply).unwrap();
            }
            line_start = reply.len();
        }
    }
}

/// Everything until the server closes the connection.
fn read_to_end(stream: &mut impl Read) -> String {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        // A reset after the last reply (unread input at close) still ends the conversation.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{e} after {:?}", String::from_utf8_lossy(&got)),
    }
    String::from_utf8(got).unwrap()
}

/// Replaces the queue id in `queued as ID` with `QUEUEID`.
fn mask(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("queued as ") {
        let (head, tail) = rest.split_at(at + "queued as ".len());
        out.push_str(head);
        out.push_str("QUEUEID");
        rest = tail.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    out
}
