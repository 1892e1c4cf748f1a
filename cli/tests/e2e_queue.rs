//! The outbound queue end to end (SPEC.md section 5, "Mail for other domains"): tern relays
//! to a scripted SMTP server on loopback (the relay host), retries a 4xx, returns a 5xx to
//! the sender as an RFC 3464 notification, survives SIGKILL in the middle of a delivery,
//! and takes mail from `tern sendmail` (and s-nail through it).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message as DnsMessage, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use common::{Client, Fixture, Server, read_files, tern_bin, wait_files};

/// How long a relayed message may take to arrive (retries come after one second here).
const ARRIVAL: Duration = Duration::from_secs(20);

/// A message the scripted receiver accepted.
#[derive(Debug, Clone)]
struct Received {
    sender: String,
    recipients: Vec<String>,
    text: String,
}

/// A scripted SMTP server: `temp@` is refused with 451 on its first RCPT, `perm@` always
/// with 550; everything else is taken. While `stall` is set it never answers the final dot.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    stall: Arc<AtomicBool>,
    /// Set once a stalled transaction's final dot has arrived.
    stalled: Arc<AtomicBool>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    /// When set, a connection is closed after 200 ms without a command, as a server
    /// that times out idle clients would.
    idle_close: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0")
    }

    fn start_on(address: &str) -> Receiver {
        let listener = TcpListener::bind(address).unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stall = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let refused_once = Arc::new(Mutex::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let idle_close = Arc::new(AtomicBool::new(false));
        let (g, s, sd, n, ic) = (
            got.clone(),
            stall.clone(),
            stalled.clone(),
            connections.clone(),
            idle_close.clone(),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                n.fetch_add(1, Ordering::SeqCst);
                if ic.load(Ordering::SeqCst) {
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                }
                let (g, s, sd, r) = (g.clone(), s.clone(), sd.clone(), refused_once.clone());
                thread::spawn(move || serve_one(stream, &g, &s, &sd, &r));
            }
        });
        Receiver {
            port,
            got,
            stall,
            stalled,
            connections,
            idle_close,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` messages have arrived.
    #[track_caller]
    fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived: {got:#?}",
                got.len()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve_one(
    stream: TcpStream,
    got: &Mutex<Vec<Received>>,
    stall: &AtomicBool,
    stalled: &AtomicBool,
    refused_once: &Mutex<bool>,
) {
    let mut out = stream.try_clone().unwrap();
    let mut lines = BufReader::new(stream);
    let mut say = |text: &str| out.write_all(text.as_bytes()).is_ok();
    say("220 sink.test ESMTP\r\n");
    let (mut sender, mut recipients) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-8BITMIME\r\n250-SIZE 1000000\r\n250 ENHANCEDSTATUSCODES\r\n"
                .to_owned()
        } else if upper.starts_with("MAIL FROM:") {
            sender = angle(&line);
            recipients.clear();
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = angle(&line);
            let mut refused = refused_once.lock().unwrap();
            if rcpt.starts_with("busy@") {
                "451 4.3.2 busy, come back later\r\n".into()
            } else if rcpt.starts_with("perm@") {
                "550 5.1.1 <perm@remote.test>: no such user here\r\n".into()
            } else if rcpt.starts_with("temp@") && !*refused {
                *refused = true;
                "451 4.3.0 try again later\r\n".into()
            } else {
                recipients.push(rcpt);
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper.starts_with("DATA") {
            if recipients.is_empty() {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                say("354 go ahead\r\n");
                let mut text = String::new();
                loop {
                    let mut data = String::new();
                    if lines.read_line(&mut data).unwrap_or(0) == 0 {
                        return;
                    }
                    if data == ".\r\n" {
                        break;
                    }
                    text.push_str(data.strip_prefix('.').unwrap_or(&data));
                }
                if stall.load(Ordering::SeqCst) {
                    // Never answer: the client must not count this message as sent.
                    stalled.store(true, Ordering::SeqCst);
                    loop {
                        thread::sleep(Duration::from_millis(50));
                        let mut probe = String::new();
                        if lines.read_line(&mut probe).unwrap_or(0) == 0 {
                            return;
                        }
                    }
                }
                got.lock().unwrap().push(Received {
                    sender: sender.clone(),
                    recipients: recipients.clone(),
                    text,
                });
                "250 2.0.0 Ok: queued as SINK\r\n".into()
            }
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            "250 2.0.0 Ok\r\n".into()
        } else if upper.starts_with("QUIT") {
            say("221 2.0.0 Bye\r\n");
            return;
        } else {
            "502 5.5.2 what?\r\n".into()
        };
        if !say(&reply) {
            return;
        }
    }
}

fn angle(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}

/// A fixture whose smtp listener trusts loopback and relays to `receiver`.
fn relaying_fixture(receiver: &Receiver) -> Fixture {
    let fx = Fixture::new();
    let port = receiver.port;
    fx.edit_config(|text| {
        text.replace(
            "trusted_networks = []",
            r#"trusted_networks = ["127.0.0.0/8"]"#,
        ) + &format!(
            "\n[delivery]\nrelay_host = \"[127.0.0.1]:{port}\"\nrelay_tls = \"may\"\n\
                 queue_lifetime = \"1h\"\n"
        )
    });
    fx
}

/// `tern serve` with one-second retries.
fn serve(fx: &Fixture) -> Server {
    serve_retrying(fx, "1s")
}

fn serve_retrying(fx: &Fixture, retry: &str) -> Server {
    Server::start(
        Command::new(tern_bin())
            .env("TERN_QUEUE_RETRY", retry)
            .args(["serve", "--config"])
            .arg(&fx.config),
        fx.root(),
        4,
    )
}

/// Sends one message over the smtp listener; returns its queue id.
fn send(server: &Server, from: &str, to: &[&str], subject: &str) -> String {
    let rcpts: Vec<String> = to.iter().map(|rcpt| format!("RCPT TO:<{rcpt}>")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send_lines(server, &format!("MAIL FROM:<{from}>"), &rcpts, subject)
}

/// Sends one message with these MAIL and RCPT command lines; returns its queue id.
fn send_lines(server: &Server, mail: &str, rcpts: &[&str], subject: &str) -> String {
    let mut c = Client::tcp(&server.addr("smtp"));
    c.expect_prefix("220 ");
    c.cmd("EHLO client.test");
    let reply = c.cmd(mail);
    assert!(reply.starts_with("250"), "{mail}: {reply}");
    for rcpt in rcpts {
        let reply = c.cmd(rcpt);
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(
        format!(
            "From: <alice@example.net>\r\nSubject: {subject}\r\n\
             Message-ID: <{subject}@client.test>\r\n\r\n\
             Hello {subject}.\r\n..leading dot\r\n.\r\n"
        )
        .as_bytes(),
    );
    let reply = c.reply();
    c.cmd("QUIT");
    common::queue_id(&reply)
}

/// Messages that follow each other to one destination share a connection: the worker
/// keeps it open for the next one.
#[test]
fn one_connection_carries_a_stream_of_messages() {
    let receiver = Receiver::start();
    let fx = relaying_fixture(&receiver);
    let server = serve(&fx);
    let count = 12;
    for n in 0..count {
        send(
            &server,
            "alice@example.net",
            &["carol@remote.test"],
            &format!("m{n}"),
        );
    }
    let got = receiver.wait_for(count);
    assert_eq!(got.len(), count);
    // Sent one by one, each message is queued well within the two seconds a worker keeps
    // its connection. A message that comes while every worker is busy may open another
    // connection, so the bound is loose; a connection per message would make twelve.
    let connections = receiver.connections.load(Ordering::SeqCst);
    assert!(
        (1..=count / 2).contains(&connections),
        "{count} messages came over {connections} connections"
    );
}

/// A server may close a connection the worker keeps for the next message; the message
/// then goes over a new one at once, with no deferral logged.
#[test]
fn a_connection_closed_while_idle_is_replaced_without_a_deferral() {
    let receiver = Receiver::start();
    receiver.idle_close.store(true, Ordering::SeqCst);
    let fx = relaying_fixture(&receiver);
    let server = serve(&fx);
    send(
        &server,
        "alice@example.net",
        &["carol@remote.test"],
        "first",
    );
    receiver.wait_for(1);
    // Past the receiver's 200 ms, well within the two seconds the worker keeps the
    // connection.
    thread::sleep(Duration::from_millis(600));
    send(
        &server,
        "alice@example.net",
        &["carol@remote.test"],
        "second",
    );
    let got = receiver.wait_for(2);
    assert_eq!(got.len(), 2);
    let log = wait_log(&fx, "status=sent");
    assert!(!log.contains("status=deferred"), "{log}");
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 2);
}

/// Runs the Python script `check` on the stored message at `path` (its text, for the
/// failure message); it must print `ok`.
#[track_caller]
fn python_check(check: &str, path: &std::path::Path, text: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(check)
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "python: {}\n{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn wait_log(fx: &Fixture, needle: &str) -> String {
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let log = fs::read_to_string(fx.root().join("mail.log")).unwrap_or_default();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in the log:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn relayed_retried_and_bounced() {
    let receiver = Receiver::start();
    let fx = relaying_fixture(&receiver);
    let server = serve(&fx);

    let ok = send(&server, "alice@example.net", &["ok@remote.test"], "first");
    let temp = send(
        &server,
        "alice@example.net",
        &["temp@remote.test"],
        "second",
    );
    let perm = send(&server, "alice@example.net", &["perm@remote.test"], "third");

    let got = receiver.wait_for(2);
    let by_subject: BTreeMap<String, &Received> = got
        .iter()
        .map(|r| {
            let subject = r
                .text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap();
            (subject.to_owned(), r)
        })
        .collect();
    assert_eq!(by_subject.len(), 2, "{got:#?}");
    let first = by_subject["first"];
    assert_eq!(first.sender, "alice@example.net");
    assert_eq!(first.recipients, ["ok@remote.test"]);
    assert!(
        first.text.starts_with("Received: from client.test"),
        "{}",
        first.text
    );
    assert!(first.text.contains(&format!("id {ok}")), "{}", first.text);
    // Dot-stuffing undone by the receiver gives back the line as sent.
    assert!(
        first.text.ends_with("Hello first.\r\n.leading dot\r\n"),
        "{:?}",
        first.text
    );
    assert_eq!(by_subject["second"].recipients, ["temp@remote.test"]);

    let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", receiver.port);
    wait_log(&fx, &format!("{ok}: to=<ok@remote.test>, {relay}, delay="));
    wait_log(&fx, &format!("{temp}: to=<temp@remote.test>, {relay}"));
    let log = wait_log(&fx, &format!("{perm}: to=<perm@remote.test>, {relay}"));
    assert!(
        log.contains("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as SINK)"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{temp}: to=<temp@remote.test>, {relay}")),
        "{log}"
    );
    assert!(
        log.contains("dsn=4.3.0, status=deferred (451 4.3.0 try again later"),
        "{log}"
    );
    assert!(
        log.contains("dsn=5.1.1, status=bounced (550 5.1.1"),
        "{log}"
    );

    // The 5xx comes back to alice as a delivery status notification.
    let files = wait_files(&fx.new_dir("alice"), 1);
    let path = fx.new_dir("alice").join(&files[0].name);
    let text = files[0].text();
    assert!(text.starts_with("Return-Path: <>\n"), "{text}");
    let check = r#"
import email, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'))
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'delivery-status'
parts = m.get_payload()
types = [p.get_content_type() for p in parts]
assert types == ['text/plain', 'message/delivery-status', 'message/rfc822'], types
fields = parts[1].get_payload()
per_message, per_rcpt = fields[0], fields[1]
assert per_message['Reporting-MTA'] == 'dns; mx.test', per_message['Reporting-MTA']
assert per_rcpt['Final-Recipient'] == 'rfc822; perm@remote.test'
assert per_rcpt['Action'] == 'failed'
assert per_rcpt['Status'] == '5.1.1'
assert per_rcpt['Diagnostic-Code'].startswith('smtp; 550 5.1.1'), per_rcpt['Diagnostic-Code']
original = parts[2].get_payload()[0]
assert original['Subject'] == 'third', original['Subject']
print('ok')
"#;
    python_check(check, &path, &text);

    // The queue empties; `tern queue` says so.
    wait_log(&fx, &format!("{perm}: removed"));
    let listing = tern(&fx, &["queue"], b"");
    assert!(listing.contains("Mail queue is empty"), "{listing}");
    assert_eq!(receiver.received().len(), 2, "nothing arrived twice");
}

#[test]
fn flush_retries_now_and_expiry_returns_the_message() {
    let receiver = Receiver::start();
    let fx = relaying_fixture(&receiver);
    fx.edit_config(|text| text.replace("queue_lifetime = \"1h\"", "queue_lifetime = \"4s\""));
    let server = serve_retrying(&fx, "1h");
    let id = send(&server, "alice@example.net", &["busy@remote.test"], "busy");
    let deferred = format!("{id}: to=<busy@remote.test>");
    wait_log(&fx, &deferred);

    let listing = tern(&fx, &["queue"], b"");
    assert!(listing.starts_with(&id), "{listing}");
    assert!(listing.contains("alice@example.net"), "{listing}");
    assert!(
        listing.contains("    busy@remote.test  (451 4.3.2 busy, come back later"),
        "{listing}"
    );

    // Without the flush the next attempt would come in an hour.
    let flushed = tern(&fx, &["queue", "flush"], b"");
    assert!(flushed.contains("flush requested"), "{flushed}");
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let log = fs::read_to_string(fx.root().join("mail.log")).unwrap();
        if log.matches(&deferred).count() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no second attempt after flush:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }

    // Past queue_lifetime the message comes back, with the last temporary status.
    let files = wait_files(&fx.new_dir("alice"), 1);
    let text = files[0].text();
    assert!(text.contains("Action: failed\nStatus: 4.4.7\n"), "{text}");
    assert!(
        text.contains("delivery time expired: 451 4.3.2 busy"),
        "{text}"
    );
    assert!(text.contains("Subject: busy\n"), "{text}");
    wait_log(&fx, &format!("{id}: removed"));
    assert!(receiver.received().is_empty());
}

#[test]
fn sigkill_during_delivery_loses_nothing_and_sends_nothing_twice() {
    let receiver = Receiver::start();
    receiver.stall.store(true, Ordering::SeqCst);
    let fx = relaying_fixture(&receiver);
    let server = serve(&fx);
    let subjects = ["k1", "k2", "k3"];
    for subject in subjects {
        send(&server, "alice@example.net", &["ok@remote.test"], subject);
    }
    let deadline = Instant::now() + ARRIVAL;
    while !receiver.stalled.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no delivery started");
        thread::sleep(Duration::from_millis(20));
    }
    server.kill();

    let listing = tern(&fx, &["queue"], b"");
    assert!(listing.contains("-- 3 message(s)"), "{listing}");
    receiver.stall.store(false, Ordering::SeqCst);
    let _server = serve(&fx);
    receiver.wait_for(3);
    thread::sleep(Duration::from_millis(500));
    let mut got: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| {
            r.text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap()
                .to_owned()
        })
        .collect();
    got.sort();
    assert_eq!(got, subjects, "each message exactly once");
}

#[test]
fn sendmail_drops_mail_that_the_server_delivers() {
    let receiver = Receiver::start();
    let fx = relaying_fixture(&receiver);

    // Dropped while the server is down: picked up at start.
    let out = tern(
        &fx,
        &["sendmail", "-f", "alice@example.net", "bob"],
        b"Subject: while down\nTo: bob\n\nline one\nline two\n",
    );
    assert!(out.is_empty(), "{out}");
    let server = serve(&fx);
    let files = wait_files(&fx.new_dir("bob"), 1);
    let text = files[0].text();
    assert!(
        text.starts_with("Return-Path: <alice@example.net>\nDelivered-To: bob@mx.test\n"),
        "{text}"
    );
    assert!(
        text.ends_with("Subject: while down\nTo: bob\n\nline one\nline two\n"),
        "{text}"
    );
    // What Postfix's cleanup adds to local submissions.
    assert!(
        text.contains("\nFrom: <alice@example.net>\nDate: "),
        "{text}"
    );
    assert!(text.contains("\nMessage-ID: <"), "{text}");
    wait_log(&fx, "uid=0 from=<alice@example.net>");

    // -t: To and Bcc are recipients, Bcc is removed, a remote Cc is relayed.
    tern(
        &fx,
        &["sendmail", "-t", "-i", "-f", "bob@example.net"],
        b"To: alice@example.net\nCc: ok@remote.test\nBcc: bob@example.net\nSubject: t\n\nbody\n",
    );
    let alice = wait_files(&fx.new_dir("alice"), 1);
    assert!(!alice[0].text().contains("Bcc:"), "{}", alice[0].text());
    wait_files(&fx.new_dir("bob"), 2);
    let relayed = receiver.wait_for(1);
    assert_eq!(relayed[0].recipients, ["ok@remote.test"]);
    assert!(relayed[0].text.contains("Cc: ok@remote.test\r\n"));

    // No recipient: exit 64, nothing dropped.
    let status = Command::new(tern_bin())
        .args(["sendmail", "--config"])
        .arg(&fx.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(64));

    // s-nail, told to use tern sendmail as its MTA.
    assert!(
        Command::new("s-nail").arg("-V").output().is_ok(),
        "s-nail is missing: run .ci/run, which installs it"
    );
    {
        let mut child = Command::new("s-nail")
            .args(["-:/", "-S"])
            .arg(format!("mta={}", tern_bin()))
            .arg("-S")
            .arg(format!("mta-arguments=--config {}", fx.config.display()))
            .args(["-s", "from s-nail", "alice@example.net"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run s-nail");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"sent with s-nail\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        let alice = wait_files(&fx.new_dir("alice"), 2);
        assert!(
            alice
                .iter()
                .any(|f| f.text().contains("Subject: from s-nail")),
            "{alice:?}"
        );
    }
    drop(server);
    assert!(read_files(&fx.root().join("data/maildrop")).is_empty());
}

/// Runs `tern ARGS --config` with `input` on stdin; returns stdout, asserting success.
fn tern(fx: &Fixture, args: &[&str], input: &[u8]) -> String {
    let (first, rest) = args.split_first().unwrap();
    let mut child = Command::new(tern_bin())
        .arg(first)
        .arg("--config")
        .arg(&fx.config)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tern {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A DNS server on loopback (UDP) that knows a few test names: MX records whose hosts are
/// 127.0.0.x addresses, a domain without MX, and names that do not exist.
fn dns_server(records: BTreeMap<(String, RecordType), Vec<RData>>) -> u16 {
    dns_server_answering(move |query, answer| {
        answer.set_recursion_available(true).set_authoritative(true);
        for q in query.queries() {
            answer.add_query(q.clone());
            let name = q.name().to_ascii().to_ascii_lowercase();
            let known = records.keys().any(|(n, _)| *n == name);
            if !known {
                answer.set_response_code(ResponseCode::NXDomain);
                continue;
            }
            for rdata in records.get(&(name, q.query_type())).into_iter().flatten() {
                answer.add_answer(Record::from_rdata(q.name().clone(), 60, rdata.clone()));
            }
        }
    })
}

/// A DNS server on loopback (UDP; TCP is refused) that answers every question SERVFAIL.
fn failing_dns_server() -> u16 {
    dns_server_answering(|query, answer| {
        answer
            .set_response_code(ResponseCode::ServFail)
            .add_queries(query.queries().to_vec());
    })
}

/// A UDP DNS server on loopback whose answers `fill` completes (the header's id, type and
/// flags are copied from the query first); returns its port.
fn dns_server_answering(fill: impl Fn(&DnsMessage, &mut DnsMessage) + Send + 'static) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let Ok(query) = DnsMessage::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = DnsMessage::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired());
            fill(&query, &mut answer);
            let _ = socket.send_to(&answer.to_vec().unwrap(), peer);
        }
    });
    port
}

#[test]
fn mx_delivery_in_preference_order_with_a_fallback() {
    // Port 25 (forced for MX delivery) on 127.0.0.4 and 127.0.0.5, which needs root;
    // 127.0.0.3 has nothing listening, so the preferred MX host fails.
    let mx2 = Receiver::start_on("127.0.0.4:25");
    let implicit = Receiver::start_on("127.0.0.5:25");

    let name = |n: &str| Name::from_ascii(n).unwrap();
    let a = |ip: &str| RData::A(A(ip.parse::<Ipv4Addr>().unwrap()));
    let mut records = BTreeMap::new();
    records.insert(
        ("mx-a.test.".to_owned(), RecordType::MX),
        vec![
            RData::MX(MX::new(20, name("mx2.mx-a.test."))),
            RData::MX(MX::new(10, name("mx1.mx-a.test."))),
        ],
    );
    records.insert(
        ("mx1.mx-a.test.".to_owned(), RecordType::A),
        vec![a("127.0.0.3")],
    );
    records.insert(
        ("mx2.mx-a.test.".to_owned(), RecordType::A),
        vec![a("127.0.0.4")],
    );
    records.insert(
        ("plain.test.".to_owned(), RecordType::A),
        vec![a("127.0.0.5")],
    );
    let port = dns_server(records);

    let fx = Fixture::new();
    fx.edit_config(|text| {
        text.replace(
            "trusted_networks = []",
            r#"trusted_networks = ["127.0.0.0/8"]"#,
        ) + &format!("\n[delivery]\ndns_servers = [\"127.0.0.1:{port}\"]\nrelay_tls = \"may\"\n")
    });
    let server = serve(&fx);
    send(&server, "alice@example.net", &["one@mx-a.test"], "mx");
    send(
        &server,
        "alice@example.net",
        &["two@plain.test"],
        "implicit",
    );
    let gone = send(
        &server,
        "alice@example.net",
        &["three@nowhere.test"],
        "nxdomain",
    );

    let got = mx2.wait_for(1);
    assert_eq!(got[0].recipients, ["one@mx-a.test"]);
    let got = implicit.wait_for(1);
    assert_eq!(got[0].recipients, ["two@plain.test"]);
    // The receiver has the message before tern logs its reply: wait for each line.
    wait_log(
        &fx,
        "to=<one@mx-a.test>, relay=mx2.mx-a.test[127.0.0.4]:25, delay=",
    );
    wait_log(
        &fx,
        "to=<two@plain.test>, relay=plain.test[127.0.0.5]:25, delay=",
    );
    let log = wait_log(&fx, &format!("{gone}: to=<three@nowhere.test>"));
    assert!(
        log.contains("dsn=5.4.4, status=bounced (Host or domain name not found"),
        "{log}"
    );
    let files = wait_files(&fx.new_dir("alice"), 1);
    assert!(
        files[0]
            .text()
            .contains("Final-Recipient: rfc822; three@nowhere.test")
    );
}

/// With one delivery thread in all, three destinations are still served: the thread
/// takes up each waiting lane once its own has run out.
#[test]
fn one_thread_in_all_serves_every_destination_in_turn() {
    // Port 25 (forced for MX delivery) on addresses of this test's own.
    let hosts = ["127.0.0.6", "127.0.0.7", "127.0.0.8"];
    let receivers: Vec<Receiver> = hosts
        .iter()
        .map(|ip| Receiver::start_on(&format!("{ip}:25")))
        .collect();
    let mut records = BTreeMap::new();
    for (n, ip) in hosts.iter().enumerate() {
        records.insert(
            (format!("d{n}.test."), RecordType::A),
            vec![RData::A(A(ip.parse::<Ipv4Addr>().unwrap()))],
        );
    }
    let port = dns_server(records);
    let fx = Fixture::new();
    fx.edit_config(|text| {
        text.replace(
            "trusted_networks = []",
            r#"trusted_networks = ["127.0.0.0/8"]"#,
        ) + &format!("\n[delivery]\ndns_servers = [\"127.0.0.1:{port}\"]\nrelay_tls = \"none\"\n")
    });
    let server = Server::start(
        Command::new(tern_bin())
            .env("TERN_QUEUE_RETRY", "1s")
            .env("TERN_QUEUE_THREADS", "1")
            .args(["serve", "--config"])
            .arg(&fx.config),
        fx.root(),
        4,
    );
    for n in 0..hosts.len() {
        send(
            &server,
            "alice@example.net",
            &[&format!("user@d{n}.test")],
            &format!("to-d{n}"),
        );
    }
    for (n, receiver) in receivers.iter().enumerate() {
        let got = receiver.wait_for(1);
        assert_eq!(got[0].recipients, [format!("user@d{n}.test")]);
    }
    let log = wait_log(&fx, "to=<user@d2.test>, relay=d2.test[127.0.0.8]:25");
    assert!(!log.contains("status=deferred"), "{log}");
}

/// `reject_unknown_recipient_domain` asks DNS (through `dns_servers`) as Postfix does: a
/// domain with MX records or, without them, an address record takes mail; one that does
/// not exist, has neither, or has only a null MX is refused 550 5.1.2; a resolver that
/// does not answer gives 450 4.1.2.
#[test]
fn unknown_recipient_domains_are_looked_up_by_mx_then_address() {
    let name = |n: &str| Name::from_ascii(n).unwrap();
    let mut records = BTreeMap::new();
    // MX only: the exchange has an address, the domain itself none.
    records.insert(
        ("mx-only.test.".to_owned(), RecordType::MX),
        vec![RData::MX(MX::new(10, name("mail.elsewhere.test.")))],
    );
    records.insert(
        ("a-only.test.".to_owned(), RecordType::A),
        vec![RData::A(A(Ipv4Addr::new(127, 0, 0, 9)))],
    );
    records.insert(
        ("null-mx.test.".to_owned(), RecordType::MX),
        vec![RData::MX(MX::new(0, Name::root()))],
    );
    // The name exists (it has a record of another type) but has neither MX nor address.
    records.insert(("bare.test.".to_owned(), RecordType::TXT), Vec::new());
    let port = dns_server(records);

    let restrictions = r#"restrictions = ["reject_unknown_recipient_domain", "permit"]"#;
    let fixture = |dns_port: u16| {
        let fx = Fixture::new();
        fx.edit_config(|text| {
            text.replacen(
                "name = \"smtp\"\n",
                &format!("name = \"smtp\"\n{restrictions}\n"),
                1,
            ) + &format!("\n[delivery]\ndns_servers = [\"127.0.0.1:{dns_port}\"]\n")
        });
        fx
    };
    let rcpt_replies = |server: &Server, rcpts: &[&str]| -> Vec<String> {
        let mut c = Client::tcp(&server.addr("smtp"));
        c.expect_prefix("220 ");
        c.cmd("EHLO client.test");
        assert!(c.cmd("MAIL FROM:<alice@example.net>").starts_with("250"));
        let replies = rcpts
            .iter()
            .map(|r| c.cmd(&format!("RCPT TO:<{r}>")))
            .collect();
        c.cmd("QUIT");
        replies
    };

    let fx = fixture(port);
    let server = serve(&fx);
    let replies = rcpt_replies(
        &server,
        &[
            "u@mx-only.test",
            "u@a-only.test",
            "u@null-mx.test",
            "u@bare.test",
            "u@nowhere.test",
            "bob@mx.test",
        ],
    );
    let codes: Vec<&str> = replies.iter().map(|r| &r[..9]).collect();
    assert_eq!(
        codes,
        [
            "250 2.1.5",
            "250 2.1.5",
            "550 5.1.2",
            "550 5.1.2",
            "550 5.1.2",
            "250 2.1.5"
        ],
        "{replies:#?}"
    );

    let fx = fixture(failing_dns_server());
    let server = serve(&fx);
    let replies = rcpt_replies(&server, &["u@mx-only.test", "u@a-only.test"]);
    assert!(
        replies.iter().all(|r| r.starts_with("450 4.1.2")),
        "{replies:#?}"
    );
}

/// (recipient, subject) pairs an LMTP server took.
type Delivered = Arc<Mutex<Vec<(String, String)>>>;

/// A scripted LMTP server: after the data, `bob` is refused with 452 on the first message
/// that names him and taken after that, but refused with 550 in a message with the subject
/// `perm`; everyone else is taken. Returns the port and the (recipient, subject) pairs delivered.
fn lmtp_server() -> (u16, Delivered) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let got = delivered.clone();
    thread::spawn(move || {
        let mut bob_refused = false;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let mut out = stream.try_clone().unwrap();
            let mut lines = BufReader::new(stream);
            let _ = out.write_all(b"220 lmtp.test LMTP\r\n");
            let mut rcpts: Vec<String> = Vec::new();
            let mut line = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let upper = line.to_ascii_uppercase();
                let reply = if upper.starts_with("LHLO") {
                    "250-lmtp.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n".to_owned()
                } else if upper.starts_with("MAIL") {
                    rcpts.clear();
                    "250 2.1.0 Ok\r\n".into()
                } else if upper.starts_with("RCPT") {
                    rcpts.push(angle(&line));
                    "250 2.1.5 Ok\r\n".into()
                } else if upper.starts_with("DATA") {
                    let _ = out.write_all(b"354 go\r\n");
                    let mut subject = String::new();
                    loop {
                        let mut data = String::new();
                        if lines.read_line(&mut data).unwrap_or(0) == 0 || data == ".\r\n" {
                            break;
                        }
                        if let Some(s) = data.strip_prefix("Subject: ") {
                            subject = s.trim_end().to_owned();
                        }
                    }
                    let mut replies = String::new();
                    for rcpt in &rcpts {
                        if rcpt.starts_with("bob@") && !bob_refused {
                            bob_refused = true;
                            replies.push_str("452 4.2.2 <bob>: mailbox full\r\n");
                        } else if rcpt.starts_with("bob@") && subject == "perm" {
                            replies.push_str("550 5.2.1 <bob>: mailbox disabled\r\n");
                        } else {
                            got.lock().unwrap().push((rcpt.clone(), subject.clone()));
                            replies.push_str("250 2.0.0 Ok\r\n");
                        }
                    }
                    replies
                } else if upper.starts_with("QUIT") {
                    let _ = out.write_all(b"221 2.0.0 Bye\r\n");
                    break;
                } else {
                    "250 2.0.0 Ok\r\n".into()
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (port, delivered)
}

#[test]
fn recipients_an_lmtp_server_refuses_after_the_data_are_retried_or_returned() {
    let receiver = Receiver::start();
    let (lmtp, delivered) = lmtp_server();
    let fx = Fixture::new();
    let port = receiver.port;
    fx.edit_config(|text| {
        text.replace(
            "trusted_networks = []",
            r#"trusted_networks = ["127.0.0.0/8"]"#,
        ) + &format!(
            "\n[delivery]\nlocal = \"lmtp:inet:127.0.0.1:{lmtp}\"\n\
                 relay_host = \"[127.0.0.1]:{port}\"\nrelay_tls = \"none\"\n"
        )
    });
    let server = serve(&fx);
    // bob is refused with 452 once: the client still gets 250, the queue retries him.
    let first = send(
        &server,
        "someone@remote.test",
        &["alice@example.net", "bob@example.net"],
        "lmtp1",
    );
    wait_log(&fx, &format!("{first}: refused recipients queued as"));
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let got = delivered.lock().unwrap().clone();
        if got
            .iter()
            .any(|(r, s)| r == "bob@example.net" && s == "lmtp1")
        {
            assert_eq!(
                got.iter().filter(|(_, s)| s == "lmtp1").count(),
                2,
                "{got:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "bob never got it: {got:?}");
        thread::sleep(Duration::from_millis(50));
    }

    // A 550 after the data comes back to the (remote) sender as a notification.
    let second = send(
        &server,
        "someone@remote.test",
        &["alice@example.net", "bob@example.net"],
        "perm",
    );
    let got = receiver.wait_for(1);
    assert_eq!(got[0].sender, "");
    assert_eq!(got[0].recipients, ["someone@remote.test"]);
    let text = &got[0].text;
    assert!(
        text.contains(
            "Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.2.1\r\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Diagnostic-Code: smtp; host 127.0.0.1[127.0.0.1]:{lmtp} said: 550 5.2.1"
        )),
        "{text}"
    );
    assert!(text.contains("Subject: perm\r\n"), "{text}");
    wait_log(&fx, &format!("{second}: refused recipients queued as"));
    // The retry went over LMTP, logged as Postfix's lmtp does.
    wait_log(
        &fx,
        &format!("to=<bob@example.net>, relay=127.0.0.1[127.0.0.1]:{lmtp}, delay="),
    );
    drop(server);
}

#[test]
fn relay_to_a_second_tern_over_starttls() {
    // The receiving tern delivers mx.test locally; the sending one has only example.net.
    let receiving = Fixture::new();
    let inbound = receiving.serve();
    let relay = inbound.addr("smtp");

    let fx = Fixture::new();
    fx.edit_config(|text| {
        text.replace(
            r#"domains = ["mx.test", "example.net"]"#,
            r#"domains = ["example.net"]"#,
        )
        .replace(
            "trusted_networks = []",
            r#"trusted_networks = ["127.0.0.0/8"]"#,
        )
        .replace(r#"hostname = "mx.test""#, r#"hostname = "out.test""#)
            + &format!("\n[delivery]\nrelay_host = \"{relay}\"\nrelay_tls = \"encrypt\"\n")
    });
    let server = serve(&fx);
    let id = send(&server, "alice@example.net", &["bob@mx.test"], "tls");

    let files = wait_files(&receiving.new_dir("bob"), 1);
    let text = files[0].text();
    assert!(text.contains("with ESMTPS (TLS"), "{text}");
    assert!(
        text.contains(&format!("by out.test (tern) with ESMTP id {id}")),
        "{text}"
    );
    assert!(
        text.ends_with("Subject: tls\nMessage-ID: <tls@client.test>\n\nHello tls.\n.leading dot\n"),
        "{text}"
    );
    wait_log(
        &fx,
        &format!("{id}: to=<bob@mx.test>, relay=127.0.0.1[127.0.0.1]:"),
    );
}

#[test]
fn encrypt_without_starttls_on_offer_is_deferred() {
    let receiver = Receiver::start();
    let fx = relaying_fixture(&receiver);
    fx.edit_config(|text| text.replace(r#"relay_tls = "may""#, r#"relay_tls = "encrypt""#));
    let server = serve(&fx);
    let id = send(&server, "alice@example.net", &["ok@remote.test"], "plain");
    let log = wait_log(&fx, &format!("{id}: to=<ok@remote.test>"));
    assert!(log.contains("status=deferred"), "{log}");
    assert!(
        log.contains("TLS is required, but was not offered"),
        "{log}"
    );
    assert!(receiver.received().is_empty());
}

#[test]
fn notifications_follow_notify_and_the_null_sender_goes_to_postmaster() {
    let receiver = Receiver::start();
    let fx = relaying_fixture(&receiver);
    let server = serve(&fx);

    // NOTIFY=NEVER: a failure is logged and nobody hears of it.
    let never = send_lines(
        &server,
        "MAIL FROM:<alice@example.net>",
        &["RCPT TO:<perm@remote.test> NOTIFY=NEVER"],
        "never",
    );
    // NOTIFY=SUCCESS to a server without DSN: a "relayed" report, headers only with RET=HDRS,
    // ENVID and ORCPT given back.
    send_lines(
        &server,
        "MAIL FROM:<alice@example.net> RET=HDRS ENVID=env+2B1",
        &["RCPT TO:<ok@remote.test> NOTIFY=SUCCESS ORCPT=rfc822;Original+40remote.test"],
        "success",
    );
    let relayed = wait_files(&fx.new_dir("alice"), 1);
    let text = relayed[0].text();
    assert!(
        text.contains("Subject: Successful Mail Delivery Report\n"),
        "{text}"
    );
    assert!(text.contains("Original-Envelope-Id: env+1\n"), "{text}");
    assert!(
        text.contains("Original-Recipient: rfc822; Original@remote.test\n"),
        "{text}"
    );
    assert!(text.contains("Action: relayed\nStatus: 2.0.0\n"), "{text}");
    assert!(
        text.contains("Content-Type: text/rfc822-headers\n"),
        "{text}"
    );
    assert!(text.contains("Subject: success\n"), "{text}");
    assert!(!text.contains("Hello success."), "headers only: {text}");
    wait_log(&fx, &format!("{never}: removed"));

    // A message that needs SMTPUTF8 to a server without it fails for good (5.6.7).
    send_lines(
        &server,
        "MAIL FROM:<alice@example.net> SMTPUTF8",
        &["RCPT TO:<ok@remote.test>"],
        "utf8",
    );
    let files = wait_files(&fx.new_dir("alice"), 2);
    let utf8 = files
        .iter()
        .map(|f| f.text())
        .find(|t| t.contains("Subject: utf8"))
        .unwrap();
    assert!(utf8.contains("Action: failed\nStatus: 5.6.7\n"), "{utf8}");

    // From the null sender, a failure goes to postmaster (alice here), never to <>.
    let bounce = send_lines(
        &server,
        "MAIL FROM:<>",
        &["RCPT TO:<perm@remote.test>"],
        "null",
    );
    let files = wait_files(&fx.new_dir("alice"), 3);
    let double = files
        .iter()
        .map(|f| f.text())
        .find(|t| t.contains("Subject: null"))
        .unwrap();
    assert!(double.contains("Delivered-To: alice@mx.test\n"), "{double}");
    assert!(
        double.contains("Final-Recipient: rfc822; perm@remote.test\n"),
        "{double}"
    );
    wait_log(&fx, &format!("{bounce}: removed"));
    assert_eq!(
        receiver.received().len(),
        1,
        "only the NOTIFY=SUCCESS message arrived"
    );
}

/// A recipient still deferred after `delay_warning` is reported once, with the others of
/// its message that came due together, to a sender who asked with NOTIFY=DELAY; never to
/// one who did not, nor for a message from the null sender.
#[test]
fn a_delay_notice_goes_once_to_a_sender_who_asked() {
    let receiver = Receiver::start();
    let fx = relaying_fixture(&receiver);
    fx.edit_config(|text| text + "delay_warning = \"1s\"\n");
    let server = serve(&fx);

    // Every busy@ is refused with 451, on every attempt.
    let id = send_lines(
        &server,
        "MAIL FROM:<alice@example.net> RET=FULL",
        &[
            "RCPT TO:<busy@remote.test> NOTIFY=DELAY,FAILURE",
            "RCPT TO:<busy@other.test> NOTIFY=DELAY ORCPT=rfc822;Other+40other.test",
            "RCPT TO:<busy@third.test> NOTIFY=FAILURE",
            "RCPT TO:<busy@fourth.test>",
        ],
        "slow",
    );
    let null = send_lines(
        &server,
        "MAIL FROM:<>",
        &["RCPT TO:<busy@remote.test> NOTIFY=DELAY"],
        "from-null",
    );

    let files = wait_files(&fx.new_dir("alice"), 1);
    let path = fx.new_dir("alice").join(&files[0].name);
    let text = files[0].text();
    assert!(text.starts_with("Return-Path: <>\n"), "{text}");
    assert!(
        text.contains("Subject: Delayed Mail (still being retried)\n"),
        "{text}"
    );
    assert!(text.contains("Action: delayed\nStatus: 4.3.2\n"), "{text}");
    assert!(text.contains("Will-Retry-Until: "), "{text}");
    assert!(text.contains("Remote-MTA: dns; "), "{text}");
    assert!(
        text.contains("Diagnostic-Code: smtp; 451 4.3.2 busy, come back later"),
        "{text}"
    );
    // The original's header section, not its body, even with RET=FULL (RFC 3461 4.3).
    assert!(text.contains("Subject: slow\n"), "{text}");
    assert!(text.contains("Message-ID: <slow@client.test>\n"), "{text}");
    assert!(!text.contains("Hello slow."), "{text}");
    assert!(
        !text.contains("third.test") && !text.contains("fourth.test"),
        "{text}"
    );
    assert!(!text.contains("from-null"), "{text}");

    let check = r#"
import email, sys
from email.utils import parsedate_to_datetime as date
m = email.message_from_binary_file(open(sys.argv[1], 'rb'))
parts = m.get_payload()
types = [p.get_content_type() for p in parts]
assert types == ['text/plain', 'message/delivery-status', 'text/rfc822-headers'], types
fields = parts[1].get_payload()
arrival = date(fields[0]['Arrival-Date'])
rcpts = fields[1:]
assert [r['Final-Recipient'] for r in rcpts] == \
    ['rfc822; busy@remote.test', 'rfc822; busy@other.test'], [r['Final-Recipient'] for r in rcpts]
assert rcpts[1]['Original-Recipient'] == 'rfc822; Other@other.test', rcpts[1]['Original-Recipient']
for r in rcpts:
    assert r['Action'] == 'delayed', r['Action']
    until = date(r['Will-Retry-Until'])
    assert (until - arrival).total_seconds() == 3600, (until, arrival)
print('ok')
"#;
    python_check(check, &path, &text);
    let log = wait_log(&fx, &format!("{id}: sender delay notification: "));
    assert_eq!(log.matches("sender delay notification").count(), 1, "{log}");

    // Two more deferrals of both messages (retries come every second) give the scheduler
    // its chances to send a second notice; none comes. The warning is on record.
    let attempts =
        |log: &str, id: &str| log.matches(&format!("{id}: to=<busy@remote.test>")).count();
    let (before, before_null) = (attempts(&log, &id), attempts(&log, &null));
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let log = fs::read_to_string(fx.root().join("mail.log")).unwrap();
        if attempts(&log, &id) >= before + 2 && attempts(&log, &null) >= before_null + 2 {
            assert_eq!(log.matches("sender delay notification").count(), 1, "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no more attempts:\n{log}");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read_files(&fx.new_dir("alice")).len(), 1, "one notice only");
    let envelope = fs::read_to_string(fx.root().join(format!("data/queue/{id}.env"))).unwrap();
    assert_eq!(
        envelope.matches("delay_warned = true").count(),
        2,
        "{envelope}"
    );
    assert!(receiver.received().is_empty());
}

#[test]
fn verify_refuses_a_self_signed_certificate() {
    let receiving = Fixture::new();
    let inbound = receiving.serve();
    let relay = inbound.addr("smtp");
    let fx = Fixture::new();
    fx.edit_config(|text| {
        text.replace(
            r#"domains = ["mx.test", "example.net"]"#,
            r#"domains = ["example.net"]"#,
        )
        .replace(
            "trusted_networks = []",
            r#"trusted_networks = ["127.0.0.0/8"]"#,
        ) + &format!("\n[delivery]\nrelay_host = \"{relay}\"\nrelay_tls = \"verify\"\n")
    });
    let server = serve(&fx);
    let id = send(&server, "alice@example.net", &["bob@mx.test"], "verify");
    let log = wait_log(&fx, &format!("{id}: to=<bob@mx.test>"));
    assert!(log.contains("status=deferred"), "{log}");
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(read_files(&receiving.new_dir("bob")).is_empty());
}
