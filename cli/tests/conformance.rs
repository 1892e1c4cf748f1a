//! One conformance suite for every runtime: the same scripted conversations run against the
//! real binary under `--runtime blocking`, `smol` and `mio`, and the bytes each sends back
//! must be identical once queue ids are masked (SPEC.md section 1: "All three runtimes behave
//! identically on the wire, byte for byte, apart from timing").

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Client, Fixture, PASSWORD, Server, tls_client};

const RUNTIMES: [&str; 3] = ["blocking", "smol", "mio"];

/// One step of a conversation.
enum Step {
    /// Send these bytes, then read this many whole replies.
    Send(&'static str, usize),
    /// Send these bytes (built at run time), then read this many whole replies.
    SendOwned(String, usize),
    /// Switch to TLS on the connection (after a 220 to STARTTLS).
    StartTls,
    /// Read until the server closes the connection.
    ReadToClose,
}

/// Where a conversation connects.
#[derive(Clone, Copy)]
enum Target {
    Smtp,
    Submission,
    Submissions,
    Lmtp,
}

fn conversations() -> Vec<(&'static str, Target, Vec<Step>)> {
    use Step::*;
    let plain_auth = {
        let token = base64(&format!("\0alice\0{PASSWORD}"));
        format!("AUTH PLAIN {token}\r\n")
    };
    vec![
        (
            "plain",
            Target::Smtp,
            vec![
                Send("", 1),
                Send("EHLO client.test\r\n", 1),
                Send("MAIL FROM:<sender@example.org>\r\n", 1),
                Send("RCPT TO:<alice@mx.test>\r\n", 1),
                Send("RCPT TO:<nobody@mx.test>\r\n", 1),
                Send("RCPT TO:<x@elsewhere.example>\r\n", 1),
                Send("DATA\r\n", 1),
                Send("Subject: one\r\n\r\nbody\r\n..dot\r\n.\r\n", 1),
                Send("VRFY alice\r\nNOOP\r\nHELP\r\nRSET\r\nQUIT\r\n", 5),
                ReadToClose,
            ],
        ),
        (
            "pipelining",
            Target::Smtp,
            vec![
                Send("", 1),
                Send(
                    "EHLO client.test\r\nMAIL FROM:<sender@example.org>\r\n\
                     RCPT TO:<alice@mx.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n",
                    5,
                ),
                Send("Subject: two\r\n\r\nbody\r\n.\r\nQUIT\r\n", 2),
                ReadToClose,
            ],
        ),
        (
            "bdat",
            Target::Smtp,
            vec![
                Send("", 1),
                Send(
                    "EHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<bob@mx.test>\r\n",
                    3,
                ),
                // A bare LF inside a chunk ends the session like one in DATA.
                Send("BDAT 6\r\nhello\n", 1),
                ReadToClose,
            ],
        ),
        (
            "bdat-clean",
            Target::Smtp,
            vec![
                Send("", 1),
                Send(
                    "EHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<bob@mx.test>\r\n",
                    3,
                ),
                Send("BDAT 7\r\nhello\r\n", 1),
                Send("BDAT 2 LAST\r\nok", 1),
                Send("DATA\r\nQUIT\r\n", 2),
                ReadToClose,
            ],
        ),
        (
            "starttls-and-auth",
            Target::Submission,
            vec![
                Send("", 1),
                Send("EHLO c\r\nMAIL FROM:<alice@mx.test>\r\n", 2),
                Send(
                    "STARTTLS\r\nNOOP\r\nMAIL FROM:<injected@example.org>\r\n",
                    1,
                ),
                StartTls,
                Send("EHLO c\r\n", 1),
                Send("MAIL FROM:<alice@mx.test>\r\n", 1),
                Send("AUTH LOGIN\r\n", 1),
                SendOwned(format!("{}\r\n", base64("alice")), 1),
                SendOwned(format!("{}\r\n", base64("wrong")), 1),
                SendOwned(plain_auth.clone(), 1),
                Send(
                    "MAIL FROM:<alice@mx.test>\r\nRCPT TO:<friend@mx.test>\r\n\
                     RCPT TO:<bob@mx.test>\r\nDATA\r\n",
                    4,
                ),
                Send("Subject: tls\r\n\r\nsecret\r\n.\r\nQUIT\r\n", 2),
                ReadToClose,
            ],
        ),
        (
            "implicit-tls",
            Target::Submissions,
            vec![
                StartTls,
                Send("", 1),
                Send("EHLO c\r\n", 1),
                SendOwned(plain_auth, 1),
                Send("AUTH PLAIN =\r\nQUIT\r\n", 2),
                ReadToClose,
            ],
        ),
        (
            "lmtp",
            Target::Lmtp,
            vec![
                Send("", 1),
                Send(
                    "LHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@mx.test>\r\n\
                     RCPT TO:<nobody@mx.test>\r\nRCPT TO:<bob@mx.test>\r\n\
                     RCPT TO:<Alice@mx.test>\r\nDATA\r\n",
                    7,
                ),
                Send("Subject: lmtp\r\n\r\nx\r\n.\r\n", 3),
                Send("QUIT\r\n", 1),
                ReadToClose,
            ],
        ),
        (
            "bare-lf",
            Target::Smtp,
            vec![
                Send("", 1),
                Send(
                    "EHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n",
                    4,
                ),
                Send("Subject: smuggle\r\n\r\nx\n.\r\nRSET\r\n", 1),
                ReadToClose,
            ],
        ),
        (
            "errors-and-http",
            Target::Smtp,
            vec![
                Send("", 1),
                SendOwned(format!("NOOP {}\r\n", "x".repeat(600)), 1),
                Send(
                    "FOO\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<a@b.example>\r\n",
                    3,
                ),
                Send("NOOP\0\r\n", 1),
                Send("GET / HTTP/1.1\r\nNOOP\r\n", 1),
                ReadToClose,
            ],
        ),
        (
            "timeout",
            Target::Smtp,
            vec![Send("", 1), Send("EHLO c\r\n", 1), ReadToClose],
        ),
    ]
}

#[test]
fn every_runtime_sends_the_same_bytes() {
    let fixture = Fixture::new();
    // A short command timeout, so the "timeout" conversation ends in 421 4.4.2 quickly.
    fixture.edit_config(|text| text.replace("[limits]\n", "[limits]\ncommand_timeout = \"2s\"\n"));

    let mut results: Vec<(&str, Vec<String>)> = Vec::new();
    for runtime in RUNTIMES {
        fixture.edit_config(|text| {
            let start = text.find("runtime = \"").unwrap();
            let end = start + text[start..].find('\n').unwrap();
            format!("{}runtime = \"{runtime}\"{}", &text[..start], &text[end..])
        });
        let server = fixture.serve();
        let transcripts = conversations()
            .into_iter()
            .map(|(name, target, steps)| {
                let transcript = run(&fixture, &server, target, &steps);
                format!("== {name}\n{}", mask(&transcript))
            })
            .collect();
        drop(server);
        results.push((runtime, transcripts));
    }

    let (first, reference) = &results[0];
    for (runtime, transcripts) in &results[1..] {
        for (want, got) in reference.iter().zip(transcripts) {
            assert_eq!(got, want, "{runtime} differs from {first}");
        }
    }

    // The reference itself says what SPEC.md section 4 says, so three runtimes cannot agree
    // on something wrong.
    let all = reference.join("\n");
    for expected in [
        "554 5.7.1 <x@elsewhere.example>: Relay access denied",
        "550 5.1.1 <nobody@mx.test>: Recipient address rejected: User unknown",
        "250 2.0.0 Ok: queued as <ID>",
        "521 5.5.2 Error: bare CR or LF received",
        "220 2.0.0 Ready to start TLS",
        "530 5.7.0 Must issue a STARTTLS command first",
        "535 5.7.8 Error: authentication failed",
        "235 2.7.0 Authentication successful",
        "250 2.1.5 <alice@mx.test> Ok",
        "500 5.5.2 Error: line too long",
        "521 5.7.0 Error: HTTP request on the mail port",
        "421 4.4.2 mx.test Error: timeout exceeded",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(!all.contains("injected"), "{all}");
}

/// Plays one conversation; returns everything the server sent, with a marker per step.
fn run(fixture: &Fixture, server: &Server, target: Target, steps: &[Step]) -> String {
    let mut transcript = String::new();
    match target {
        Target::Lmtp => {
            let mut client = Client::unix(&fixture.lmtp_socket());
            play(&mut client, steps, &mut transcript);
        }
        Target::Smtp | Target::Submission => {
            let name = if matches!(target, Target::Smtp) {
                "smtp"
            } else {
                "submission"
            };
            let mut client = Client::tcp(&server.addr(name));
            let split = steps.iter().position(|s| matches!(s, Step::StartTls));
            let (before, after) = steps.split_at(split.unwrap_or(steps.len()));
            play(&mut client, before, &mut transcript);
            if !after.is_empty() {
                transcript.push_str("[tls]\n");
                let mut tls = tls_client(fixture, client.stream);
                play(&mut tls, &after[1..], &mut transcript);
            }
        }
        Target::Submissions => {
            let tcp = TcpStream::connect(server.addr("submissions")).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut tls = tls_client(fixture, tcp);
            transcript.push_str("[tls]\n");
            play(&mut tls, &steps[1..], &mut transcript);
        }
    }
    transcript
}

fn play<S: Read + Write>(client: &mut Client<S>, steps: &[Step], transcript: &mut String) {
    for step in steps {
        let (bytes, replies) = match step {
            Step::Send(text, n) => (text.to_string(), *n),
            Step::SendOwned(text, n) => (text.clone(), *n),
            Step::StartTls => unreachable!("split off by the caller"),
            Step::ReadToClose => {
                let mut rest = client.buffered().to_vec();
                let mut more = Vec::new();
                let _ = client.stream.read_to_end(&mut more);
                rest.extend_from_slice(&more);
                transcript.push_str(&String::from_utf8_lossy(&rest));
                transcript.push_str("[closed]\n");
                continue;
            }
        };
        if !bytes.is_empty() {
            client.send(bytes.as_bytes());
        }
        for _ in 0..replies {
            transcript.push_str(&client.reply());
        }
    }
}

/// Masks what may differ between runs: queue ids.
fn mask(transcript: &str) -> String {
    transcript
        .lines()
        .map(|line| match line.find("queued as ") {
            Some(at) => format!("{}queued as <ID>", &line[..at]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_rfc_4648() {
    assert_eq!(base64(""), "");
    assert_eq!(base64("f"), "Zg==");
    assert_eq!(base64("fo"), "Zm8=");
    assert_eq!(base64("foo"), "Zm9v");
    assert_eq!(base64("\0alice\0x"), "AGFsaWNlAHg=");
}
