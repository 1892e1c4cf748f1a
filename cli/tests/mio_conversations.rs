//! End-to-end conversations with `tern serve --runtime mio`: the real binary on loopback
//! ports and a Unix socket, compared byte for byte with what the session must send.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const EHLO_PLAIN: &str = "250-mail.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
    250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n\
    250 CHUNKING\r\n";
const EHLO_AUTH: &str = "250-mail.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
    250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
    250-SMTPUTF8\r\n250 CHUNKING\r\n";
/// `AUTH PLAIN` responses for bob: the right password and a wrong one.
const BOB_SECRET: &str = "AGJvYgBzZWNyZXQ=";
const BOB_WRONG: &str = "AGJvYgB3cm9uZw==";

#[test]
fn plain_smtp_with_pipelining_delivers_and_says_bye() {
    let mut server = Server::start("");
    let mut client = Client::tcp(server.address("smtp"));
    client.expect("220 mail.example.net ESMTP tern\r\n");
    client.send("EHLO client.example\r\n");
    client.expect(EHLO_PLAIN);

    // The whole envelope in one write; every reply comes back, in order.
    client.send(
        "MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
         RCPT TO:<nobody@example.net>\r\nDATA\r\n",
    );
    client.expect_bytes(
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <nobody@example.net>: Recipient address \
         rejected: User unknown\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    );
    client.send("Subject: pipelined\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n");
    assert_eq!(
        mask(&client.read_to_end()),
        "250 2.0.0 Ok: queued as ID\r\n221 2.0.0 Bye\r\n"
    );

    let stored = server.only_message("bob");
    assert!(
        stored.starts_with("Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\n")
    );
    assert!(
        stored.ends_with("\nSubject: pipelined\n\nhello\n.dot\n"),
        "{stored}"
    );
    server.stop();
}

#[test]
fn starttls_then_auth_on_submission() {
    let mut server = Server::start("");
    let mut client = Client::tcp(server.address("submission"));
    client.expect("220 mail.example.net ESMTP tern\r\n");
    client.send("EHLO client.example\r\n");
    client.expect(EHLO_PLAIN);
    client.send("MAIL FROM:<bob@example.net>\r\n");
    client.expect("530 5.7.0 Must issue a STARTTLS command first\r\n");

    // The RSET pipelined behind STARTTLS is injection: it must never be answered.
    client.send("STARTTLS\r\nRSET\r\n");
    client.expect("220 2.0.0 Ready to start TLS\r\n");
    client.start_tls(&server.root_store());
    client.send("EHLO client.example\r\n");
    client.expect(EHLO_AUTH);
    client.send(&format!("AUTH PLAIN {BOB_SECRET}\r\n"));
    client.expect("235 2.7.0 Authentication successful\r\n");
    client.send("MAIL FROM:<bob@example.net>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n");
    client.expect_bytes("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    client.send("Subject: over tls\r\n\r\nsecret\r\n.\r\n");
    assert_eq!(
        mask(client.reply().as_bytes()),
        "250 2.0.0 Ok: queued as ID\r\n"
    );
    client.send("QUIT\r\n");
    client.expect("221 2.0.0 Bye\r\n");
    assert_eq!(client.read_to_end(), b"");

    let stored = server.only_message("bob");
    assert!(stored.contains(" with ESMTPSA (TLS1.3 TLS_"), "{stored}");
    assert!(
        stored.ends_with("\nSubject: over tls\n\nsecret\n"),
        "{stored}"
    );
    server.stop();
}

#[test]
fn implicit_tls_with_a_failed_and_a_good_auth() {
    let mut server = Server::start("auth_failure_delay = \"300ms\"\n");
    let mut client = Client::implicit_tls(server.address("submissions"), &server.root_store());
    client.expect("220 mail.example.net ESMTP tern\r\n");
    client.send("EHLO client.example\r\n");
    client.expect(EHLO_AUTH);
    let start = Instant::now();
    client.send(&format!("AUTH PLAIN {BOB_WRONG}\r\nNOOP\r\n"));
    client.expect("535 5.7.8 Error: authentication failed\r\n");
    assert!(start.elapsed() >= Duration::from_millis(290));
    // The NOOP waited behind the delay and is answered after it.
    client.expect("250 2.0.0 Ok\r\n");
    client.send(&format!("AUTH PLAIN {BOB_SECRET}\r\n"));
    client.expect("235 2.7.0 Authentication successful\r\n");
    client.send("QUIT\r\n");
    client.expect("221 2.0.0 Bye\r\n");
    assert_eq!(client.read_to_end(), b"");
    server.stop();
}

#[test]
fn lmtp_over_the_unix_socket_answers_per_recipient() {
    let mut server = Server::start("");
    let mut client = Client::unix(&server.root.path().join("lmtp.sock"));
    client.expect("220 mail.example.net LMTP tern\r\n");
    client.send(
        "LHLO relay.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
         RCPT TO:<zed@example.net>\r\nRCPT TO:<bob+lists@example.net>\r\nDATA\r\n",
    );
    client.expect_bytes(
        "250-mail.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n\
         250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <zed@example.net>: Recipient address \
         rejected: User unknown\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    );
    client.send("Subject: lmtp\r\n\r\nvia lmtp\r\n.\r\nQUIT\r\n");
    client.expect_bytes(
        "250 2.1.5 <bob@example.net> Ok\r\n250 2.1.5 <bob+lists@example.net> Ok\r\n\
         221 2.0.0 Bye\r\n",
    );
    assert_eq!(client.read_to_end(), b"");
    // Two distinct addresses, so two copies, each naming its own recipient.
    let stored = server.messages("bob");
    assert_eq!(stored.len(), 2);
    for copy in &stored {
        assert!(copy.ends_with("\nSubject: lmtp\n\nvia lmtp\n"), "{copy}");
    }
    assert!(
        stored
            .iter()
            .any(|c| c.contains("Delivered-To: bob+lists@example.net\n"))
    );
    server.stop();
}

#[test]
fn an_idle_client_gets_421_after_the_command_timeout() {
    let mut server = Server::start("command_timeout = \"1s\"\n");
    let mut client = Client::tcp(server.address("smtp"));
    client.expect("220 mail.example.net ESMTP tern\r\n");
    let start = Instant::now();
    assert_eq!(
        client.read_to_end(),
        b"421 4.4.2 mail.example.net Error: timeout exceeded\r\n"
    );
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    server.stop();
}

#[test]
fn a_five_megabyte_message_is_stored_byte_for_byte() {
    let mut server = Server::start("");
    let mut client = Client::tcp(server.address("smtp"));
    client.expect("220 mail.example.net ESMTP tern\r\n");
    client.send(
        "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
         DATA\r\n",
    );
    client.expect_bytes(&format!(
        "{EHLO_PLAIN}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    ));

    // Lines of varying length and content, some starting with a dot.
    let mut text = String::from("Subject: big\r\n\r\n");
    let mut n: u64 = 0;
    while text.len() < 5 * 1024 * 1024 {
        n += 1;
        let width = (n * 7919 % 97) as usize;
        let fill: String = (0..width)
            .map(|i| char::from(b'!' + ((n as usize + i) % 90) as u8))
            .collect();
        let dot = if n % 13 == 0 { "." } else { "" };
        text.push_str(&format!("{dot}{n:08} {fill}\r\n"));
    }
    let mut wire = String::with_capacity(text.len() + 4096);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            wire.push('.');
        }
        wire.push_str(line);
    }
    wire.push_str(".\r\n");
    client.send(&wire);
    assert_eq!(
        mask(client.reply().as_bytes()),
        "250 2.0.0 Ok: queued as ID\r\n"
    );
    client.send("QUIT\r\n");
    client.expect("221 2.0.0 Bye\r\n");

    let stored = server.only_message("bob");
    let expected = text.replace("\r\n", "\n");
    assert!(stored.len() > expected.len());
    let (head, body) = stored.split_at(stored.len() - expected.len());
    assert!(body == expected, "the stored message differs");
    assert!(
        head.starts_with("Return-Path: <alice@example.org>\n"),
        "{head}"
    );
    assert!(head.len() < 1024, "{head}");
    server.stop();
}

#[test]
fn sigterm_lets_a_message_in_data_finish_and_exits_0() {
    let mut server = Server::start("");
    let mut busy = Client::tcp(server.address("smtp"));
    busy.expect("220 mail.example.net ESMTP tern\r\n");
    busy.send("EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n");
    busy.send("RCPT TO:<bob@example.net>\r\nDATA\r\n");
    busy.expect_bytes(&format!(
        "{EHLO_PLAIN}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    ));
    busy.send("Subject: late\r\n\r\nfirst half\r\n");
    let mut idle = Client::tcp(server.address("smtp"));
    idle.expect("220 mail.example.net ESMTP tern\r\n");

    server.signal_term();
    assert_eq!(
        idle.read_to_end(),
        b"421 4.3.2 mail.example.net Service shutting down\r\n"
    );
    // Listeners are closed: a new client is refused.
    assert!(TcpStream::connect(server.address("smtp")).is_err());
    busy.send("second half\r\n.\r\n");
    assert_eq!(
        mask(&busy.read_to_end()),
        "250 2.0.0 Ok: queued as ID\r\n421 4.3.2 mail.example.net Service shutting down\r\n"
    );
    let status = server.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    let stored = server.only_message("bob");
    assert!(
        stored.ends_with("\nSubject: late\n\nfirst half\nsecond half\n"),
        "{stored}"
    );
}

#[test]
fn the_connection_limit_answers_421_and_garbage_on_implicit_tls_is_dropped() {
    let mut server = Server::start("connections = 1\n");
    let mut first = Client::tcp(server.address("smtp"));
    first.expect("220 mail.example.net ESMTP tern\r\n");
    let mut second = Client::tcp(server.address("smtp"));
    assert_eq!(
        second.read_to_end(),
        b"421 4.7.0 mail.example.net Error: too many connections\r\n"
    );

    // Plain text where a ClientHello belongs: no reply in plain text, the connection ends.
    let mut garbage = Client::tcp(server.address("submissions"));
    garbage.send("EHLO client.example\r\n");
    let answer = garbage.read_to_end();
    assert!(!answer.starts_with(b"220"), "{answer:?}");

    // The first session was not disturbed.
    first.send("NOOP\r\n");
    first.expect("250 2.0.0 Ok\r\n");
    server.stop();
    let log = fs::read_to_string(server.root.path().join("mail.log")).unwrap();
    assert!(
        log.contains("connection concurrency limit exceeded"),
        "{log}"
    );
    assert!(
        log.contains("SSL_accept error from unknown[127.0.0.1]: "),
        "{log}"
    );
}

/// `tern serve --runtime mio` on a temporary directory, with smtp (STARTTLS may),
/// submission (STARTTLS required, AUTH required), submissions (implicit TLS) and LMTP.
struct Server {
    child: Child,
    root: tempfile::TempDir,
    addresses: HashMap<String, String>,
}

impl Server {
    fn start(limits: &str) -> Server {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        fs::write(dir.join("users"), "bob:{PLAIN}secret::::::\n").unwrap();
        tern_host::tls::generate_self_signed("mail.example.net", dir).unwrap();
        let config = dir.join("tern.toml");
        fs::write(&config, config_text(dir, limits)).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--runtime", "mio", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addresses = HashMap::new();
        let mut runtime = String::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("tern exited before listening: {:?}", child.wait());
            }
            if let Some(name) = line.strip_prefix("runtime: ") {
                runtime = name.trim_end().to_owned();
            }
            if line.starts_with("mail: ") {
                assert_eq!(runtime, "mio", "tern ran another runtime");
                break;
            }
            if let Some(rest) = line.trim_end().strip_prefix("listening: ") {
                let (name, address) = rest.split_once(" on ").unwrap();
                addresses.insert(name.to_owned(), address.to_owned());
            }
        }
        Server {
            child,
            root,
            addresses,
        }
    }

    fn address(&self, name: &str) -> &str {
        &self.addresses[name]
    }

    fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let pem = fs::read(self.root.path().join("cert.pem")).unwrap();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    }

    /// The one message in `user`'s `new/`.
    fn only_message(&self, user: &str) -> String {
        let mut messages = self.messages(user);
        assert_eq!(messages.len(), 1);
        messages.remove(0)
    }

    /// Every message in `user`'s `new/`.
    fn messages(&self, user: &str) -> Vec<String> {
        let new = self.root.path().join(format!("mail/{user}/Maildir/new"));
        let files: Vec<PathBuf> = fs::read_dir(&new)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files
            .iter()
            .map(|f| fs::read_to_string(f).unwrap())
            .collect()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.root.path().join("stderr")).unwrap()
    }

    fn signal_term(&self) {
        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "tern did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then exit 0 within a few seconds (no session is left mid-transaction).
    fn stop(&mut self) {
        self.signal_term();
        let status = self.wait(Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "stderr:\n{}", self.stderr());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
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
certificate = "{root}/cert.pem"
private_key = "{root}/key.pem"

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
name = "submission"
protocol = "smtp"
address = "127.0.0.1:0"
tls = "encrypt"
auth = "required"

[[listener]]
name = "submissions"
protocol = "smtp"
address = "127.0.0.1:0"
tls = "implicit"
auth = "required"

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "{root}/lmtp.sock"
"#,
        root = root.display()
    )
}

/// Replaces the queue id in `queued as ID` so that replies compare exactly.
fn mask(bytes: &[u8]) -> String {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("queued as ") {
        let after = &rest[at + "queued as ".len()..];
        let end = after.find("\r\n").unwrap_or(after.len());
        assert!(end > 0 && after[..end].bytes().all(|b| b.is_ascii_alphanumeric()));
        out.push_str(&rest[..at]);
        out.push_str("queued as ID");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Switching,
}

/// An SMTP client that reads whole replies and can switch to TLS.
struct Client {
    transport: Transport,
    buffered: Vec<u8>,
}

impl Client {
    fn tcp(address: &str) -> Client {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            transport: Transport::Tcp(stream),
            buffered: Vec::new(),
        }
    }

    fn unix(path: &Path) -> Client {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            transport: Transport::Unix(stream),
            buffered: Vec::new(),
        }
    }

    fn implicit_tls(address: &str, roots: &RootCertStore) -> Client {
        let mut client = Client::tcp(address);
        client.start_tls(roots);
        client
    }

    /// Runs the client side of the handshake on the TCP connection.
    fn start_tls(&mut self, roots: &RootCertStore) {
        assert!(self.buffered.is_empty(), "plaintext left before TLS");
        let Transport::Tcp(tcp) = std::mem::replace(&mut self.transport, Transport::Switching)
        else {
            panic!("TLS needs a plain TCP connection");
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let name = ServerName::try_from("mail.example.net").unwrap();
        let conn = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        self.transport = Transport::Tls(Box::new(stream));
    }

    fn send(&mut self, text: &str) {
        match &mut self.transport {
            Transport::Tcp(s) => s.write_all(text.as_bytes()).unwrap(),
            Transport::Unix(s) => s.write_all(text.as_bytes()).unwrap(),
            Transport::Tls(s) => {
                s.write_all(text.as_bytes()).unwrap();
                s.flush().unwrap();
            }
            Transport::Switching => unreachable!(),
        }
    }

    /// Reads more; 0 at the end of the stream (a TLS close_notify or a plain close).
    fn fill(&mut self) -> usize {
        let mut buf = [0u8; 8192];
        let n = match &mut self.transport {
            Transport::Tcp(s) => s.read(&mut buf),
            Transport::Unix(s) => s.read(&mut buf),
            Transport::Tls(s) => match s.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
            Transport::Switching => unreachable!(),
        }
        .unwrap();
        self.buffered.extend_from_slice(&buf[..n]);
        n
    }

    /// One whole reply, continuation lines included.
    fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let line = loop {
                if let Some(end) = self.buffered.windows(2).position(|w| w == b"\r\n") {
                    let line: Vec<u8> = self.buffered.drain(..end + 2).collect();
                    break String::from_utf8(line).unwrap();
                }
                assert!(self.fill() > 0, "the server closed mid-reply: {reply:?}");
            };
            assert!(line.len() >= 6, "short reply line {line:?}");
            reply.push_str(&line);
            if line.as_bytes()[3] == b' ' {
                return reply;
            }
        }
    }

    fn expect(&mut self, reply: &str) {
        assert_eq!(self.reply(), reply);
    }

    /// Several replies: exactly these bytes, however they are split into reads.
    fn expect_bytes(&mut self, text: &str) {
        while self.buffered.len() < text.len() {
            assert!(self.fill() > 0, "closed early: {:?}", self.buffered);
        }
        let got: Vec<u8> = self.buffered.drain(..text.len()).collect();
        assert_eq!(String::from_utf8_lossy(&got), text);
    }

    /// Everything until the server closes the connection.
    fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buffered)
    }
}
