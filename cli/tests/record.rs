//! `record_sessions`: `tern serve` writes one recording per session, without the AUTH
//! payload, and `tern replay` replays it with every output matching.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret-pass";
/// base64 of `\0bob\0s3cret-pass`.
const PLAIN: &str = "AGJvYgBzM2NyZXQtcGFzcw==";

#[test]
fn a_recorded_session_replays_and_holds_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(
        root.join("users"),
        format!("bob:{{PLAIN}}{PASSWORD}::::::\n"),
    )
    .unwrap();
    let config = root.join("tern.toml");
    fs::write(&config, config_text(root)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--runtime", "blocking", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let address = listening_address(&mut stdout, &mut child);

    let stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut talk = |send: &str, expect: &str| {
        writer.write_all(send.as_bytes()).unwrap();
        let reply = read_reply(&mut reader);
        assert!(reply.starts_with(expect), "{send:?}: {reply}");
    };
    talk("", "220 ");
    talk("EHLO client.example\r\n", "250-");
    talk(&format!("AUTH PLAIN {PLAIN}\r\n"), "235 ");
    talk("MAIL FROM:<bob@example.net>\r\n", "250 ");
    talk("RCPT TO:<bob@example.net>\r\n", "250 ");
    talk("DATA\r\n", "354 ");
    talk(
        "Subject: recorded\r\n\r\nhello\r\n.\r\n",
        "250 2.0.0 Ok: queued as ",
    );
    talk("QUIT\r\n", "221 ");

    let records = root.join("replay");
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let found: Vec<_> = fs::read_dir(&records)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if let [file] = found.as_slice()
            && file.extension().is_some_and(|e| e == "replay")
        {
            break file.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no recording in {records:?}: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();

    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    let parts: Vec<&str> = name.trim_end_matches(".replay").split('-').collect();
    assert!(name.ends_with(".replay") && parts.len() == 3, "{name}");
    assert!(parts[0].parse::<u64>().unwrap() > 1_700_000_000, "{name}");
    assert_eq!(parts[1], "smtp");

    let text = fs::read_to_string(&file).unwrap();
    assert!(!text.contains(PASSWORD) && !text.contains(PLAIN), "{text}");
    assert!(
        text.contains("in AUTH PLAIN \\{secret plain-done/"),
        "{text}"
    );
    assert!(text.contains("message-data Subject: recorded"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("replay")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{text}");
    assert!(
        stdout.ends_with("events, all outputs matched\n"),
        "{stdout}"
    );
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
plaintext_auth = true
record_sessions = "{root}/replay"
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

/// One whole reply, continuation lines included.
fn read_reply(reader: &mut impl BufRead) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.len() >= 4, "short reply line {line:?}");
        reply.push_str(&line);
        if line.as_bytes()[3] == b' ' {
            return reply;
        }
    }
}
