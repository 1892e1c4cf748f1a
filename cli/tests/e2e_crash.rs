//! Crash safety (SPEC.md section 4: "Nothing acknowledged is ever lost by a crash; nothing
//! partial is ever visible in `new/`"): eight clients send while the server is SIGKILLed at
//! random moments, three times, restarted each time on the same data and ports.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Fixture, Ports, free_port, read_files};

const CLIENTS: usize = 8;
const ROUNDS: usize = 3;
const USERS: [(&str, &str); 2] = [("alice", "alice@mx.test"), ("bob", "bob@example.net")];

/// One message a client tried to send.
#[derive(Clone, Debug)]
struct Sent {
    user: &'static str,
    /// The stored form: LF line ends, no dot-stuffing.
    stored_body: String,
    acked: bool,
}

#[test]
fn acknowledged_mail_survives_sigkill() {
    let started = Instant::now();
    let ports = Ports {
        smtp: free_port(),
        submission: free_port(),
        submissions: free_port(),
    };
    let fx = Fixture::with_ports(ports);
    let sent: Arc<Mutex<BTreeMap<String, Sent>>> = Arc::default();
    let mut rng = Rng::seeded();
    println!("crash test seed {}", rng.0);

    for round in 0..ROUNDS {
        let server = fx.serve();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let stop = Arc::clone(&stop);
                let sent = Arc::clone(&sent);
                let seed = rng.next();
                thread::spawn(move || client(round, n, ports.smtp, &stop, &sent, Rng(seed)))
            })
            .collect();

        let run_for = Duration::from_millis(800 + rng.next() % 1700);
        thread::sleep(run_for);
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().expect("client thread panicked");
        }
    }

    // A file the crashed process left in tmp/, old enough that the next start may remove it.
    let planted = fx
        .maildir("alice")
        .join("tmp")
        .join("1700000000.M1P99999Q7.mx.test");
    fs::create_dir_all(planted.parent().unwrap()).unwrap();
    fs::write(&planted, "partial").unwrap();
    thread::sleep(Duration::from_millis(2500));

    // One more message to each user after the restart, so a server that cleans tmp/ when it
    // first delivers to a Maildir has done so too.
    let server = fx.serve();
    for (user, rcpt) in USERS {
        let token = format!("final-{user}");
        let mut conn = Conn::connect(ports.smtp).expect("connect after restart");
        let stored = conn
            .transaction(rcpt, &token, 3)
            .expect("deliver after restart");
        assert!(stored.1, "no 250 for the message after restart");
        sent.lock().unwrap().insert(
            token,
            Sent {
                user,
                stored_body: stored.0,
                acked: true,
            },
        );
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    for (user, _) in USERS {
        let tmp = fx.maildir(user).join("tmp");
        loop {
            let left = read_files(&tmp);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still holds {:?} after a restart",
                tmp.display(),
                left.iter().map(|f| &f.name).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    drop(server);

    let sent = sent.lock().unwrap();
    let acked = sent.values().filter(|s| s.acked).count();
    assert!(
        acked >= 20,
        "only {acked} messages were acknowledged; the test exercised too little"
    );

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (user, _) in USERS {
        for file in read_files(&fx.new_dir(user)) {
            let size = file.name.rsplit_once(",S=").map(|(_, s)| s.to_string());
            assert_eq!(
                size,
                Some(file.bytes.len().to_string()),
                "S= of {} in {user}'s new/",
                file.name
            );
            let text = file.text();
            let token = token_of(&text)
                .unwrap_or_else(|| panic!("no token in {}:\n{text}", file.name))
                .to_string();
            let message = sent
                .get(&token)
                .unwrap_or_else(|| panic!("{} holds unknown token {token}", file.name));
            assert_eq!(message.user, user, "{token} went to the wrong Maildir");
            assert!(
                text.ends_with(&message.stored_body),
                "{} in {user}'s new/ is not whole: {} bytes, expected body of {}",
                file.name,
                text.len(),
                message.stored_body.len()
            );
            *seen.entry(token).or_default() += 1;
        }
    }
    for (token, count) in &seen {
        assert_eq!(*count, 1, "{token} is in new/ {count} times");
    }
    for (token, message) in sent.iter().filter(|(_, s)| s.acked) {
        assert!(
            seen.contains_key(token),
            "{token} got a 250 but is not in {}'s new/",
            message.user
        );
    }
    println!(
        "{acked} acknowledged, {} stored, {} sent in {:?}",
        seen.len(),
        sent.len(),
        started.elapsed()
    );
}

/// Sends messages until `stop`, over connections of a few transactions each, recording every
/// token it sent and whether the DATA got a 250. Errors are expected: the server is killed.
fn client(
    round: usize,
    n: usize,
    port: u16,
    stop: &AtomicBool,
    sent: &Mutex<BTreeMap<String, Sent>>,
    mut rng: Rng,
) {
    let mut counter = 0;
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut conn) = Conn::connect(port) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        for _ in 0..5 {
            counter += 1;
            let token = format!("r{round}c{n}m{counter}");
            let (user, rcpt) = USERS[counter % 2];
            let lines = 1 + (rng.next() % 300) as usize;
            // Recorded before sending: a message may be stored although its 250 is lost.
            let stored_body = body(&token, lines).1;
            sent.lock().unwrap().insert(
                token.clone(),
                Sent {
                    user,
                    stored_body,
                    acked: false,
                },
            );
            match conn.transaction(rcpt, &token, lines) {
                Ok((_, true)) => {
                    sent.lock().unwrap().get_mut(&token).unwrap().acked = true;
                }
                _ => break,
            }
        }
    }
}

/// The message for `token` with `lines` body lines, as (wire form, stored form). Lines that
/// start with a dot exercise dot-stuffing.
fn body(token: &str, lines: usize) -> (String, String) {
    let mut stored = format!("Message-ID: <{token}@client.test>\nSubject: crash {token}\n\n");
    for i in 0..lines {
        if i % 7 == 3 {
            stored.push_str(&format!(".{token} line {i} starts with a dot\n"));
        } else {
            stored.push_str(&format!("{token} line {i} {}\n", "z".repeat(i % 60)));
        }
    }
    stored.push_str(&format!("end of {token}\n"));

    let mut wire = String::new();
    for line in stored.lines() {
        if line.starts_with('.') {
            wire.push('.');
        }
        wire.push_str(line);
        wire.push_str("\r\n");
    }
    wire.push_str(".\r\n");
    (wire, stored)
}

/// The token in a stored file's Message-ID.
fn token_of(text: &str) -> Option<&str> {
    let start = text.find("Message-ID: <")? + "Message-ID: <".len();
    let end = text[start..].find("@client.test>")?;
    Some(&text[start..start + end])
}

/// A minimal client that returns errors instead of panicking.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn connect(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        conn.expect("220 ")?;
        conn.writer.write_all(b"EHLO client.test\r\n")?;
        conn.expect("250 ")?;
        Ok(conn)
    }

    /// One transaction; returns the stored form of the body and whether DATA got a 250.
    fn transaction(&mut self, rcpt: &str, token: &str, lines: usize) -> io::Result<(String, bool)> {
        let (wire, stored) = body(token, lines);
        let envelope = format!("MAIL FROM:<sender@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
        self.writer.write_all(envelope.as_bytes())?;
        self.expect("250 ")?;
        self.expect("250 ")?;
        self.expect("354 ")?;
        self.writer.write_all(wire.as_bytes())?;
        let reply = self.reply()?;
        Ok((stored, reply.starts_with("250 2.0.0 ")))
    }

    fn expect(&mut self, prefix: &str) -> io::Result<String> {
        let reply = self.reply()?;
        if reply.starts_with(prefix) {
            Ok(reply)
        } else {
            Err(io::Error::other(format!(
                "expected {prefix:?}, got {reply:?}"
            )))
        }
    }

    /// The last line of a reply.
    fn reply(&mut self) -> io::Result<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line);
            }
        }
    }
}

/// xorshift64, so a failing run can be told apart by its printed seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
