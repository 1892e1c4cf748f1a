//! Two `tern serve` processes in a chain: the first (`up`) hands local mail over LMTP
//! (`delivery.local = "lmtp:unix:..."`) to the second (`down`), which writes the Maildir.
//! `carol` has an account upstream but not downstream, so `down` refuses her.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn local_mail_goes_over_lmtp_to_another_tern_with_per_recipient_results() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let down_sock = root.join("down/lmtp.sock");

    fs::create_dir_all(root.join("down")).unwrap();
    fs::write(root.join("down/users"), "bob:{PLAIN}x::::::\n").unwrap();
    let down_config = root.join("down/tern.toml");
    fs::write(
        &down_config,
        config_text(
            &root.join("down"),
            "down.example.net",
            "",
            &format!(
                "name = \"lmtp\"\nprotocol = \"lmtp\"\npath = \"{}\"\n",
                down_sock.display()
            ),
        ),
    )
    .unwrap();
    let mut down = Server::start(&down_config, "lmtp");

    fs::create_dir_all(root.join("up")).unwrap();
    fs::write(
        root.join("up/users"),
        "bob:{PLAIN}x::::::\ncarol:{PLAIN}x::::::\n",
    )
    .unwrap();
    let up_sock = root.join("up/lmtp.sock");
    let up_config = root.join("up/tern.toml");
    fs::write(
        &up_config,
        config_text(
            &root.join("up"),
            "up.example.net",
            &format!(
                "[delivery]\nlocal = \"lmtp:unix:{}\"\n",
                down_sock.display()
            ),
            &format!(
                "name = \"smtp\"\nprotocol = \"smtp\"\naddress = \"127.0.0.1:0\"\n\n\
                 [[listener]]\nname = \"lmtp\"\nprotocol = \"lmtp\"\npath = \"{}\"\n",
                up_sock.display()
            ),
        ),
    )
    .unwrap();
    let mut up = Server::start(&up_config, "smtp");

    // SMTP: down takes bob and refuses carol; the message is answered 250 (bob has it) and
    // carol's refusal is logged.
    let body = "Subject: chain\r\nMessage-ID: <c1@example.org>\r\n\r\nline\r\n..dot\r\n";
    let stream = TcpStream::connect(&up.address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut client = Client::new(stream);
    client.expect("220 up.example.net ESMTP tern\r\n");
    client.send("EHLO client.example\r\n");
    client.read_reply();
    client.send("MAIL FROM:<alice@example.org>\r\n");
    client.expect("250 2.1.0 Ok\r\n");
    client.send("RCPT TO:<bob@example.net>\r\n");
    client.expect("250 2.1.5 Ok\r\n");
    client.send("RCPT TO:<carol@example.net>\r\n");
    client.expect("250 2.1.5 Ok\r\n");
    client.send("DATA\r\n");
    assert!(client.read_reply().starts_with("354 "));
    client.send(&format!("{body}.\r\n"));
    let queued = client.read_reply();
    let queue_id = queued
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{queued}"))
        .trim_end()
        .to_owned();
    client.send("QUIT\r\n");
    client.expect("221 2.0.0 Bye\r\n");

    let stored = only_file(&root.join("down/mail/bob/Maildir/new"));
    let stored = fs::read_to_string(&stored).unwrap();
    // Apart from down's own Received header, the copy is what up would have stored itself.
    let without_own = remove_first_received(&stored);
    let prefix = format!(
        "Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\n\
         Received: from client.example (unknown [127.0.0.1])\n\
         \tby up.example.net (tern) with ESMTP id {queue_id}; "
    );
    assert!(without_own.starts_with(&prefix), "{stored}");
    let date_line = without_own[prefix.len()..].split_once('\n').unwrap();
    assert_eq!(
        date_line.1,
        "Subject: chain\nMessage-ID: <c1@example.org>\n\nline\n.dot\n"
    );
    assert!(
        stored.contains("\tby down.example.net (tern) with LMTP id "),
        "{stored}"
    );
    assert!(!root.join("down/mail/carol").exists());

    let log = fs::read_to_string(root.join("up/mail.log")).unwrap();
    let relay = format!("relay=lmtp[{}]", down_sock.display());
    for needle in [
        format!("{queue_id}: to=<bob@example.net>, {relay}, delay="),
        "dsn=2.1.5, status=sent (250 2.1.5 <bob@example.net> Ok)".to_owned(),
        format!("{queue_id}: to=<carol@example.net>, {relay}, delay="),
        format!(
            "dsn=5.1.1, status=bounced (host lmtp[{}] said: 550 5.1.1 <carol@example.net>: \
             Recipient address rejected: User unknown (in reply to RCPT TO command))",
            down_sock.display()
        ),
    ] {
        assert!(log.contains(&needle), "{needle:?} not in\n{log}");
    }

    // LMTP in front of LMTP: each recipient gets down's answer for it.
    let stream = UnixStream::connect(&up_sock).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut client = Client::new(stream);
    client.expect("220 up.example.net LMTP tern\r\n");
    client.send("LHLO client.example\r\n");
    client.read_reply();
    client.send(
        "MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@example.net>\r\n\
         RCPT TO:<bob@example.net>\r\nDATA\r\n",
    );
    client.expect("250 2.1.0 Ok\r\n");
    client.expect("250 2.1.5 Ok\r\n");
    client.expect("250 2.1.5 Ok\r\n");
    assert!(client.read_reply().starts_with("354 "));
    client.send("Subject: second\r\n\r\nx\r\n.\r\n");
    assert!(client.read_reply().starts_with("550 5.1.1 "));
    assert!(client.read_reply().starts_with("250 2.1.5 "));
    client.send("QUIT\r\n");
    client.read_reply();
    let files = fs::read_dir(root.join("down/mail/bob/Maildir/new"))
        .unwrap()
        .count();
    assert_eq!(files, 2);

    up.stop();
    down.stop();
}

fn config_text(root: &Path, hostname: &str, extra: &str, listener: &str) -> String {
    format!(
        r#"hostname = "{hostname}"
domains = ["example.net"]
data_dir = "{root}/data"
log = "{root}/mail.log"

[accounts]
file = "{root}/users"

[mailbox]
path = "{root}/mail/%n/Maildir"

{extra}
[[listener]]
{listener}"#,
        root = root.display()
    )
}

/// The one file in `dir`.
fn only_file(dir: &Path) -> std::path::PathBuf {
    let files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// The message without its first `Received:` header (with its folded lines).
fn remove_first_received(text: &str) -> String {
    let mut out = String::new();
    let mut removing = false;
    let mut removed = false;
    for line in text.split_inclusive('\n') {
        if !removed && line.starts_with("Received:") {
            removing = true;
            removed = true;
            continue;
        }
        if removing && line.starts_with('\t') {
            continue;
        }
        removing = false;
        out.push_str(line);
    }
    out
}

/// A running `tern serve`, stopped by pid.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    /// Starts tern and waits until `listener` is listening.
    // The child is waited for by `stop` or by `Drop`, which clippy does not follow.
    #[allow(clippy::zombie_processes)]
    fn start(config: &Path, listener: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--runtime", "blocking", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let prefix = format!("listening: {listener} on ");
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("tern exited before listening: {:?}", child.wait());
            }
            if let Some(address) = line.trim_end().strip_prefix(&prefix) {
                let address = address.to_owned();
                return Server { child, address };
            }
        }
    }

    fn stop(&mut self) {
        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("tern did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

struct Client<S: Read + Write> {
    reader: BufReader<S>,
}

impl<S: Read + Write> Client<S> {
    fn new(stream: S) -> Client<S> {
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, text: &str) {
        self.reader.get_mut().write_all(text.as_bytes()).unwrap();
    }

    /// One whole reply, continuation lines included.
    fn read_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.len() >= 4, "short reply line {line:?}");
            reply.push_str(&line);
            if line.as_bytes()[3] == b' ' {
                return reply;
            }
        }
    }

    fn expect(&mut self, reply: &str) {
        assert_eq!(self.read_reply(), reply);
    }
}
