//! The session as a runtime drives it, all in memory: the DATA path (a 10 MB message in
//! 64 KiB reads, through `Session::receive` and its output chunks) and the command path
//! (whole sessions of EHLO, MAIL, 10 RCPT, DATA of 2 KB, QUIT).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tern_core::recipient::Policy;
use tern_core::server::{Config, DeliveryReport, Lookup, Mode, Output, Peer, RcptOutcome, Session};

const MESSAGE_SIZE: usize = 10 * 1024 * 1024;
const READ_SIZE: usize = 64 * 1024;

fn config() -> Arc<Config> {
    let mut config = Config::new("mx.example.net", Mode::Smtp);
    config.limits.message_size = 64 * 1024 * 1024;
    config.policy = Policy {
        domains: vec!["example.net".into()],
        trusted_networks: vec!["127.0.0.0/8".parse().unwrap()],
        recipient_delimiter: "+".into(),
        ..Policy::default()
    };
    Arc::new(config)
}

fn peer() -> Peer {
    Peer {
        client: Some([127, 0, 0, 1].into()),
        local: Some([127, 0, 0, 1].into()),
    }
}

/// Feeds `input` the way a runtime does, answering every question at once and reporting
/// `recipients` delivered; returns the bytes of message text seen.
fn drive(session: &mut Session, now: Instant, mut input: &[u8], recipients: usize) -> usize {
    let mut text = 0;
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::Send(bytes) => {
                    black_box(bytes);
                }
                Output::CheckRecipient(_) => session.handle_recipient(now, Lookup::Found),
                Output::MessageData(bytes) => text += bytes.len(),
                Output::MessageEnd => {
                    let report = DeliveryReport {
                        queue_id: "4F2A9C01".into(),
                        recipients: vec![RcptOutcome::Delivered; recipients],
                    };
                    session.handle_delivery(now, report);
                }
                _ => {}
            }
        }
        if input.is_empty() {
            return text;
        }
        let used = session.receive(now, input);
        input = &input[used..];
    }
}

fn data_path(c: &mut Criterion) {
    let head = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n";
    let body = message(MESSAGE_SIZE);
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.sample_size(20);
    let config = config();
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    group.bench_function("DATA 10 MB in 64 KiB reads", |b| {
        b.iter(|| {
            let mut session = Session::new(config.clone(), peer(), now);
            drive(&mut session, now, head, 1);
            let mut text = 0;
            for read in body.chunks(READ_SIZE) {
                text += drive(&mut session, now, read, 1);
            }
            assert!(text > MESSAGE_SIZE - MESSAGE_SIZE / 50);
            text
        })
    });
    group.finish();
}

fn command_path(c: &mut Criterion) {
    let mut script = b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n".to_vec();
    for i in 0..10 {
        script.extend_from_slice(format!("RCPT TO:<user{i}@example.net>\r\n").as_bytes());
    }
    script.extend_from_slice(b"DATA\r\n");
    script.extend_from_slice(&message(2048));
    script.extend_from_slice(b"QUIT\r\n");

    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(1));
    let config = config();
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    group.bench_function("EHLO, MAIL, 10 RCPT, DATA 2 KB, QUIT", |b| {
        b.iter(|| {
            let mut session = Session::new(config.clone(), peer(), now);
            // Each command in its own read, as a client without pipelining sends them.
            let mut text = 0;
            for line in script.split_inclusive(|&b| b == b'\n') {
                text += drive(&mut session, now, line, 10);
            }
            assert!(session.is_closed());
            text
        })
    });
    group.finish();
}

/// A header block, then 76-character lines, every 50th dot-stuffed, then the end line.
fn message(size: usize) -> Vec<u8> {
    let mut text = b"From: alice@example.org\r\nSubject: bench\r\n\r\n".to_vec();
    let mut line = 0usize;
    while text.len() < size {
        if line % 50 == 0 {
            text.extend_from_slice(b"..");
        }
        text.extend((0..76).map(|i| b'A' + ((i + line) % 26) as u8));
        text.extend_from_slice(b"\r\n");
        line += 1;
    }
    text.extend_from_slice(b".\r\n");
    text
}

criterion_group!(benches, data_path, command_path);
criterion_main!(benches);
