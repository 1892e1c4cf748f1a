//! Smoke test: `tern serve` on a loopback port takes one message into a Maildir and exits 0
//! on SIGTERM.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serve_delivers_one_message_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("users"), "bob:{PLAIN}secret::::::\n").unwrap();
    let config = root.join("tern.toml");
    fs::write(&config, config_text(root)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--runtime", "blocking", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let address = listening_address(&mut stdout, &mut child);

    let mut client = Client::connect(&address);
    client.expect("220 mail.example.net ESMTP tern\r\n");
    client.send("EHLO client.example\r\n");
    assert!(client.read_reply().ends_with("250 CHUNKING\r\n"));
    client.send("MAIL FROM:<alice@example.org>\r\n");
    client.expect("250 2.1.0 Ok\r\n");
    client.send("RCPT TO:<bob@example.net>\r\n");
    client.expect("250 2.1.5 Ok\r\n");
    client.send("DATA\r\n");
    assert!(client.read_reply().starts_with("354 "));
    client.send("Subject: smoke\r\n\r\nhello\r\n..stuffed\r\n.\r\n");
    let queued = client.read_reply();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    client.send("QUIT\r\n");
    client.expect("221 2.0.0 Bye\r\n");

    let new = root.join("mail/bob/Maildir/new");
    let files: Vec<_> = fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = fs::read_to_string(&files[0]).unwrap();
    assert!(
        stored.starts_with("Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\n")
    );
    assert!(stored.contains("\tby mail.example.net (tern) with ESMTP id "));
    assert!(
        stored.ends_with("\nSubject: smoke\n\nhello\n.stuffed\n"),
        "{stored}"
    );

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");

    let log = fs::read_to_string(root.join("mail.log")).unwrap();
    assert!(log.contains("status=sent (delivered to maildir)"), "{log}");
}

#[test]
fn the_connection_limit_and_shutdown_answer_421() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("users"), "").unwrap();
    let config = root.join("tern.toml");
    let text = config_text(root).replace(
        "[[listener]]",
        &format!(
            "[limits]\nconnections = 1\n\n[[listener]]\nname = \"lmtp\"\nprotocol = \"lmtp\"\n\
             path = \"{}/lmtp.sock\"\n\n[[listener]]",
            root.display()
        ),
    );
    fs::write(&config, text).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--runtime", "blocking", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let address = listening_address(&mut stdout, &mut child);

    let mut first = Client::connect(&address);
    first.expect("220 mail.example.net ESMTP tern\r\n");
    let mut second = Client::connect(&address);
    second.expect("421 4.7.0 mail.example.net Error: too many connections\r\n");
    let mut rest = String::new();
    second.reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");

    // The limit is per listener: the LMTP socket still answers.
    let lmtp = std::os::unix::net::UnixStream::connect(root.join("lmtp.sock")).unwrap();
    let mut greeting = String::new();
    BufReader::new(lmtp).read_line(&mut greeting).unwrap();
    assert_eq!(greeting, "220 mail.example.net LMTP tern\r\n");

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    first.expect("421 4.3.2 mail.example.net Service shutting down\r\n");
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_port_in_use_is_one_line_and_exit_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("users"), "").unwrap();
    let config = root.join("tern.toml");
    fs::write(&config, config_text(root).replace("127.0.0.1:0", &address)).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--runtime", "blocking", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("tern: cannot listen on {address}: ")),
        "{stderr}"
    );
}

#[test]
fn a_config_error_is_exit_2_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    fs::write(&config, "hostname = \"x\"\nbogus = 1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{}:2:1: ", config.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn config_text(root: &Path) -> String {
    format!(
        r#"hostname = "mail.example.net"
domains = ["example.net"]
data_dir = "{root}/data"
log = "{root}/mail.log"

[accounts]
file = "{root}/users"

[mailbox]
path = "{root}/mail/%n/Maildir"

[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1:0"
"#,
        root = root.display()
    )
}

/// Reads stdout until the `listening: smtp on ADDRESS` line.
fn listening_address(stdout: &mut impl BufRead, child: &mut Child) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("tern exited before listening: {:?}", child.wait());
        }
        if let Some(address) = line.trim_end().strip_prefix("listening: smtp on ") {
            return address.to_owned();
        }
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("tern did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(address: &str) -> Client {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
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
