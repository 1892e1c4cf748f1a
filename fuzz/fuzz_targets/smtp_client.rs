//! The SMTP/LMTP client session against an arbitrary server: raw bytes and reply-shaped
//! words, timer steps, end of file, TLS results, and message text of any shape. Checks: no
//! panic; one report per message started, listing every recipient; nothing after `Close`;
//! at most one error; message text is asked for only while the session wants it; and, when
//! no time passes, feeding the server's bytes at once gives the same transcript as feeding
//! them piece by piece.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tern_core::address::{Mailbox, ReversePath};
use tern_core::client::{Config, Message, Mode, Output, Recipient, Session, TlsPolicy};
use tern_core::command::{MailParams, RcptParams};

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    Replies(Vec<ReplyWord>),
    Wait(u16),
    Eof,
}

/// Pieces of server replies, so the fuzzer gets past the greeting and EHLO quickly.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum ReplyWord {
    Greeting,
    EhloAll,
    EhloBare,
    Ok,
    StartData,
    StartTls,
    Temp,
    Perm,
    Bye,
    Continued,
    Code(u16),
    Crlf,
    Lf,
}

impl ReplyWord {
    fn bytes(self) -> Vec<u8> {
        match self {
            ReplyWord::Greeting => b"220 mx.example.net ESMTP\r\n".to_vec(),
            ReplyWord::EhloAll => b"250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 2000\r\n\
250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n\
250 CHUNKING\r\n"
                .to_vec(),
            ReplyWord::EhloBare => b"250 mx.example.net\r\n".to_vec(),
            ReplyWord::Ok => b"250 2.0.0 Ok\r\n".to_vec(),
            ReplyWord::StartData => b"354 go ahead\r\n".to_vec(),
            ReplyWord::StartTls => b"220 2.0.0 Ready to start TLS\r\n".to_vec(),
            ReplyWord::Temp => b"451 4.3.0 Try again\r\n".to_vec(),
            ReplyWord::Perm => b"550 5.1.1 No such user\r\n".to_vec(),
            ReplyWord::Bye => b"221 2.0.0 Bye\r\n".to_vec(),
            ReplyWord::Continued => b"250-more\r\n".to_vec(),
            ReplyWord::Code(code) => format!("{} x\r\n", code % 1000).into_bytes(),
            ReplyWord::Crlf => b"\r\n".to_vec(),
            ReplyWord::Lf => b"\n".to_vec(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Case {
    lmtp: bool,
    tls: u8,
    chunking: bool,
    tls_fails: bool,
    messages: Vec<MessageSpec>,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, Arbitrary)]
struct MessageSpec {
    null_sender: bool,
    utf8: bool,
    recipients: u8,
    text: Vec<u8>,
    /// Message text is handed over in pieces of this many octets (at least one).
    piece: u8,
}

const ADDRESSES: [&str; 4] = [
    "bob@example.net",
    "carol@example.org",
    "dave@[192.0.2.1]",
    "x.y@example.com",
];

fuzz_target!(|case: Case| {
    let mut config = Config::new(
        "client.example",
        if case.lmtp { Mode::Lmtp } else { Mode::Smtp },
    );
    config.tls = match case.tls % 3 {
        0 => TlsPolicy::None,
        1 => TlsPolicy::May,
        _ => TlsPolicy::Encrypt,
    };
    config.chunking = case.chunking;
    let config = Arc::new(config);
    let pieces: Vec<Option<Vec<u8>>> = case
        .ops
        .iter()
        .map(|op| match op {
            Op::Raw(bytes) => Some(bytes.clone()),
            Op::Replies(words) => Some(words.iter().flat_map(|w| w.bytes()).collect()),
            Op::Wait(_) | Op::Eof => None,
        })
        .collect();

    let mut run = Run::new(Arc::clone(&config), &case);
    for (op, piece) in case.ops.iter().zip(&pieces) {
        match (op, piece) {
            (Op::Wait(ms), _) => run.wait(Duration::from_millis(u64::from(*ms) * 100)),
            (Op::Eof, _) => run.eof(),
            (_, Some(bytes)) => run.feed(bytes),
            _ => {}
        }
    }
    run.check_end();

    let simple = case
        .ops
        .iter()
        .all(|op| matches!(op, Op::Raw(_) | Op::Replies(_)));
    if simple && !run.tls_started {
        let all: Vec<u8> = pieces.into_iter().flatten().flatten().collect();
        let mut whole = Run::new(config, &case);
        whole.feed(&all);
        assert_eq!(
            String::from_utf8_lossy(&whole.transcript),
            String::from_utf8_lossy(&run.transcript)
        );
    }
});

struct Run {
    session: Session,
    now: Instant,
    /// Messages not started yet.
    messages: Vec<MessageSpec>,
    /// The message started last, until its report.
    current: Option<MessageSpec>,
    /// Recipients of each message started, in order.
    started: Vec<usize>,
    reports: usize,
    errors: usize,
    closed: bool,
    tls_pending: bool,
    tls_started: bool,
    tls_fails: bool,
    transcript: Vec<u8>,
}

impl Run {
    fn new(config: Arc<Config>, case: &Case) -> Run {
        let now = Instant::now();
        let session = Session::new(config, now).expect("a valid host name");
        let mut run = Run {
            session,
            now,
            messages: case.messages.iter().take(4).cloned().collect(),
            current: None,
            started: Vec::new(),
            reports: 0,
            errors: 0,
            closed: false,
            tls_pending: false,
            tls_started: false,
            tls_fails: case.tls_fails,
            transcript: Vec::new(),
        };
        run.drain();
        run
    }

    fn feed(&mut self, mut input: &[u8]) {
        if std::mem::take(&mut self.tls_pending) {
            if self.tls_fails {
                self.session.handle_tls_failed(self.now);
            } else {
                self.session.handle_tls_established(self.now);
            }
            self.drain();
        }
        let mut stalls = 0;
        while !input.is_empty() && stalls < 2 {
            let used = self.session.receive(self.now, input);
            input = &input[used..];
            let produced = self.drain();
            stalls = if used == 0 && !produced {
                stalls + 1
            } else {
                0
            };
        }
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.drain();
    }

    fn eof(&mut self) {
        self.session.handle_eof(self.now);
        self.drain();
    }

    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.session.poll_output() {
            any = true;
            assert!(!self.closed, "{output:?} after Close");
            match output {
                Output::Send(bytes) => self.transcript.extend_from_slice(&bytes),
                Output::StartTls => {
                    self.transcript.extend_from_slice(b"[tls]");
                    self.tls_pending = true;
                    self.tls_started = true;
                }
                Output::Ready => {
                    assert_eq!(self.started.len(), self.reports, "Ready inside a message");
                    if self.messages.is_empty() {
                        self.session.quit(self.now);
                    } else {
                        let spec = self.messages.remove(0);
                        let message = message(&spec);
                        self.started.push(message.recipients.len());
                        self.session
                            .start_message(self.now, message)
                            .expect("ready");
                        self.current = Some(spec);
                    }
                }
                Output::MessageText => {
                    assert!(self.session.wants_message_text());
                    let spec = self.current.clone().expect("text for a started message");
                    let step = usize::from(spec.piece.max(1));
                    for piece in spec.text.chunks(step) {
                        if !self.session.wants_message_text() {
                            break;
                        }
                        self.session.handle_message_text(self.now, piece);
                    }
                    if self.session.wants_message_text() {
                        self.session.handle_message_end(self.now);
                    }
                }
                Output::Report(report) => {
                    let want = self.started.get(self.reports).copied();
                    assert_eq!(Some(report.recipients.len()), want, "{report:?}");
                    self.reports += 1;
                    self.transcript
                        .extend_from_slice(format!("[report {report:?}]").as_bytes());
                    self.current = None;
                }
                Output::Error(error) => {
                    self.errors += 1;
                    assert_eq!(self.errors, 1, "a second error: {error:?}");
                    self.transcript
                        .extend_from_slice(format!("[error {error:?}]").as_bytes());
                }
                Output::Close => {
                    self.closed = true;
                    self.transcript.extend_from_slice(b"[close]");
                }
            }
        }
        any
    }

    fn check_end(&self) {
        assert!(self.reports <= self.started.len());
        if self.session.is_closed() {
            assert_eq!(
                self.reports,
                self.started.len(),
                "a started message without a report"
            );
        }
    }
}

fn message(spec: &MessageSpec) -> Message {
    let count = usize::from(spec.recipients % 4) + 1;
    let mut recipients: Vec<Recipient> = ADDRESSES
        .iter()
        .take(count)
        .map(|a| Recipient {
            address: Mailbox::parse(a).expect("a valid address"),
            params: RcptParams::default(),
        })
        .collect();
    if spec.utf8 {
        recipients.push(Recipient {
            address: Mailbox::parse("jö@example.net").expect("a valid address"),
            params: RcptParams::default(),
        });
    }
    Message {
        sender: if spec.null_sender {
            ReversePath::Null
        } else {
            ReversePath::Mailbox(Mailbox::parse("alice@example.org").expect("a valid address"))
        },
        params: MailParams {
            smtputf8: spec.utf8,
            ..MailParams::default()
        },
        recipients,
    }
}
