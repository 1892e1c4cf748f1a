//! The SMTP/LMTP server session under an arbitrary sequence of inputs, timer steps and
//! answers. Checks: no panic; nothing is sent after a 521/421 but the close; message text
//! handed out stays within the size limit; when no time passes, feeding all the bytes at
//! once gives the same transcript as feeding them piece by piece; and the run, recorded,
//! replays with every output matching and without the AUTH credentials in the recording.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tern_core::recipient::Policy;
use tern_core::replay::{self, Recorder};
use tern_core::server::{
    AuthMode, AuthVerdict, Config, DeliveryReport, Lookup, Mode, Output, Peer, RcptOutcome, TlsMode,
};

const SIZE_LIMIT: u64 = 4096;
/// The base64 of the PLAIN credentials the `AuthPlain` word sends.
const CREDENTIALS: &str = "AGFsaWNlAHNlY3JldA==";

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    Words(Vec<Word>),
    Wait(u16),
}

/// Pieces of SMTP, so the fuzzer reaches deep states quickly.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Word {
    Ehlo,
    Lhlo,
    Mail,
    MailSmtputf8,
    RcptLocal,
    RcptRemote,
    RcptUnknown,
    Data,
    Bdat(u8),
    BdatLast(u8),
    AuthPlain,
    AuthLogin,
    StartTls,
    Rset,
    Dot,
    Crlf,
    Lf,
    Cr,
    Text,
    Nul,
}

impl Word {
    fn is_whole_line(self) -> bool {
        !matches!(
            self,
            Word::Data
                | Word::Bdat(_)
                | Word::BdatLast(_)
                | Word::Dot
                | Word::Crlf
                | Word::Lf
                | Word::Cr
                | Word::Text
                | Word::Nul
        )
    }

    fn bytes(self) -> Vec<u8> {
        match self {
            Word::Ehlo => b"EHLO c\r\n".to_vec(),
            Word::Lhlo => b"LHLO c\r\n".to_vec(),
            Word::Mail => b"MAIL FROM:<a@example.org>\r\n".to_vec(),
            Word::MailSmtputf8 => "MAIL FROM:<jö@example.org> SMTPUTF8\r\n".into(),
            Word::RcptLocal => b"RCPT TO:<bob@example.net>\r\n".to_vec(),
            Word::RcptRemote => b"RCPT TO:<x@example.org>\r\n".to_vec(),
            Word::RcptUnknown => b"RCPT TO:<nobody@example.net>\r\n".to_vec(),
            Word::Data => b"DATA\r\n".to_vec(),
            Word::Bdat(n) => format!("BDAT {n}\r\n").into(),
            Word::BdatLast(n) => format!("BDAT {n} LAST\r\n").into(),
            Word::AuthPlain => format!("AUTH PLAIN {CREDENTIALS}\r\n").into_bytes(),
            Word::AuthLogin => b"AUTH LOGIN\r\n".to_vec(),
            Word::StartTls => b"STARTTLS\r\n".to_vec(),
            Word::Rset => b"RSET\r\n".to_vec(),
            Word::Dot => b".".to_vec(),
            Word::Crlf => b"\r\n".to_vec(),
            Word::Lf => b"\n".to_vec(),
            Word::Cr => b"\r".to_vec(),
            Word::Text => b"text".to_vec(),
            Word::Nul => b"\0".to_vec(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Case {
    lmtp: bool,
    tls: u8,
    answers: u64,
    ops: Vec<Op>,
}

fuzz_target!(|case: Case| {
    let config = Arc::new(config(&case));
    let pieces: Vec<Option<Vec<u8>>> = case
        .ops
        .iter()
        .map(|op| match op {
            Op::Raw(bytes) => Some(bytes.clone()),
            Op::Words(words) => Some(words.iter().flat_map(|w| w.bytes()).collect()),
            Op::Wait(_) => None,
        })
        .collect();

    let mut run = Run::new(config.clone(), case.answers, true);
    for (op, piece) in case.ops.iter().zip(&pieces) {
        match (op, piece) {
            (Op::Wait(ms), _) => run.wait(Duration::from_millis(u64::from(*ms) * 50)),
            (_, Some(bytes)) => run.feed(bytes),
            _ => {}
        }
    }

    // Where every piece is a whole command line, every AUTH payload is one: the credentials
    // must not show. (Elsewhere they may sit in message text or inside another line.)
    let recording = run.session.recording().expect("recorded");
    let payload_only = case.ops.iter().all(|op| match op {
        Op::Words(words) => words.iter().all(|w| w.is_whole_line()),
        Op::Wait(_) => true,
        Op::Raw(_) => false,
    });
    if payload_only {
        assert!(!recording.contains(CREDENTIALS), "{recording}");
    }
    if let Err(e) = replay::replay(&recording, Instant::now()) {
        panic!("{e}\n{recording}");
    }

    // TLS begins between reads, so a split right after STARTTLS legitimately differs.
    let tls_started = run.transcript.windows(5).any(|w| w == b"[tls]");
    if !tls_started && case.ops.iter().all(|op| !matches!(op, Op::Wait(_))) {
        let all: Vec<u8> = pieces.into_iter().flatten().flatten().collect();
        let mut whole = Run::new(config, case.answers, false);
        whole.feed(&all);
        assert_eq!(whole.transcript, run.transcript);
    }
});

fn config(case: &Case) -> Config {
    let mode = if case.lmtp { Mode::Lmtp } else { Mode::Smtp };
    let mut config = Config::new("mx.example.net", mode);
    config.tls = match case.tls % 4 {
        0 => TlsMode::None,
        1 => TlsMode::May,
        2 => TlsMode::Encrypt,
        _ => TlsMode::Implicit,
    };
    config.auth = if case.tls % 3 == 0 {
        AuthMode::Required
    } else {
        AuthMode::Optional
    };
    config.plaintext_auth = case.tls % 2 == 0;
    config.limits.message_size = SIZE_LIMIT;
    config.limits.errors = 50;
    config.policy = Policy {
        domains: vec!["example.net".into()],
        trusted_networks: vec!["127.0.0.0/8".parse().unwrap()],
        recipient_delimiter: "+".into(),
        ..Policy::default()
    };
    config
}

struct Run {
    session: Recorder,
    now: Instant,
    answers: u64,
    transcript: Vec<u8>,
    recipients: usize,
    text: u64,
    ended: bool,
    tls_pending: bool,
}

impl Run {
    fn new(config: Arc<Config>, answers: u64, record: bool) -> Self {
        let now = Instant::now();
        let peer = Peer {
            client: Some([127, 0, 0, 1].into()),
            local: None,
        };
        let mut run = Run {
            session: if record {
                Recorder::new(config, peer, now)
            } else {
                Recorder::unrecorded(config, peer, now)
            },
            now,
            answers,
            transcript: Vec::new(),
            recipients: 0,
            text: 0,
            ended: false,
            tls_pending: false,
        };
        run.drain();
        run
    }

    /// The next answer, drawn from the case's answer bits so runs are reproducible.
    fn pick(&mut self, n: u64) -> u64 {
        let choice = self.answers % n;
        self.answers = self.answers.rotate_right(3) ^ 0x9e37_79b9;
        choice
    }

    fn feed(&mut self, mut input: &[u8]) {
        // The handshake finishes between reads: what came with STARTTLS was in the clear.
        if std::mem::take(&mut self.tls_pending) {
            self.session.handle_tls_established(self.now);
        }
        while !input.is_empty() {
            self.drain();
            let used = self.session.receive(self.now, input);
            input = &input[used..];
            if used == 0 && !self.drain() {
                match self.session.poll_timeout() {
                    Some(at) => {
                        self.now = self.now.max(at);
                        self.session.handle_timeout(self.now);
                    }
                    None => break,
                }
            }
        }
        self.drain();
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.drain();
    }

    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.session.poll_output() {
            any = true;
            assert!(
                !self.ended || matches!(output, Output::Close),
                "{output:?} after the end"
            );
            match output {
                Output::Send(bytes) => {
                    if bytes.windows(4).any(|w| w == b"521 ") {
                        self.ended = true;
                    }
                    self.transcript.extend_from_slice(&bytes);
                }
                Output::StartTls => {
                    self.transcript.extend_from_slice(b"[tls]");
                    self.tls_pending = true;
                }
                Output::Authenticate(_) => {
                    let verdict = match self.pick(3) {
                        0 => AuthVerdict::Ok {
                            login: "alice".into(),
                        },
                        1 => AuthVerdict::Fail,
                        _ => AuthVerdict::TempFail,
                    };
                    self.session.handle_auth(self.now, verdict);
                }
                Output::CheckRecipient(_) | Output::CheckDomain(_) => {
                    let lookup = match self.pick(3) {
                        0 => Lookup::Found,
                        1 => Lookup::NotFound,
                        _ => Lookup::TempFail,
                    };
                    self.session.handle_recipient(self.now, lookup);
                    self.session.handle_domain(self.now, lookup);
                }
                Output::MessageStart(envelope) => {
                    self.recipients = envelope.recipients.len();
                    self.text = 0;
                }
                Output::MessageData(bytes) => {
                    self.text += bytes.len() as u64;
                    assert!(self.text <= SIZE_LIMIT);
                }
                Output::MessageEnd => {
                    self.transcript.extend_from_slice(b"[end]");
                    let outcome = match self.pick(3) {
                        0 => RcptOutcome::Delivered,
                        1 => RcptOutcome::TempFailure,
                        _ => RcptOutcome::DiskFull,
                    };
                    let report = DeliveryReport {
                        queue_id: "Q".into(),
                        recipients: vec![outcome; self.recipients],
                    };
                    self.session.handle_delivery(self.now, report);
                }
                Output::MessageAbort => self.transcript.extend_from_slice(b"[abort]"),
                Output::Close => self.transcript.extend_from_slice(b"[close]"),
                Output::AuthFailed(_) => self.transcript.extend_from_slice(b"[auth failed]"),
                Output::LookupScram(_) => {}
            }
        }
        any
    }
}
