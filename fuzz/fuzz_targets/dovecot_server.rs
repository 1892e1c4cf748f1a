//! The Dovecot auth protocol, server side (what Postfix talks to), under arbitrary bytes,
//! Postfix-like lines, timer steps and verdicts. Checks: no panic; after `Close` nothing but
//! nothing; and, with no time passing, the same bytes out whether the input comes at once or
//! piece by piece.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tern_core::dovecot::server::{Server, ServerConfig, ServerOutput};
use tern_core::sasl::AuthVerdict;

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    Lines(Vec<Line>),
    Wait(u16),
}

/// Lines as Postfix writes them, so the fuzzer gets past the handshake quickly.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Line {
    Version,
    Cpid,
    AuthPlain(u8),
    AuthPlainNoResp(u8),
    AuthLogin(u8),
    Cont(u8, bool),
    BadVersion,
    Garbage,
}

impl Line {
    fn bytes(self) -> Vec<u8> {
        match self {
            Line::Version => b"VERSION\t1\t2\n".to_vec(),
            Line::Cpid => b"CPID\t4021\n".to_vec(),
            Line::AuthPlain(id) => format!(
                "AUTH\t{id}\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.1\t\
                 secured\tresp=AGFsaWNlAHNlY3JldA==\n"
            )
            .into_bytes(),
            Line::AuthPlainNoResp(id) => format!("AUTH\t{id}\tPLAIN\tservice=smtp\n").into_bytes(),
            Line::AuthLogin(id) => format!("AUTH\t{id}\tLOGIN\tservice=smtp\n").into_bytes(),
            Line::Cont(id, good) => {
                let data = if good { "YWxpY2U=" } else { "!!" };
                format!("CONT\t{id}\t{data}\n").into_bytes()
            }
            Line::BadVersion => b"VERSION\t2\t0\n".to_vec(),
            Line::Garbage => b"\t\x01\x02\n".to_vec(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Case {
    answers: u64,
    ops: Vec<Op>,
}

fuzz_target!(|case: Case| {
    let pieces: Vec<Option<Vec<u8>>> = case
        .ops
        .iter()
        .map(|op| match op {
            Op::Raw(bytes) => Some(bytes.clone()),
            Op::Lines(lines) => Some(lines.iter().flat_map(|l| l.bytes()).collect()),
            Op::Wait(_) => None,
        })
        .collect();

    let mut run = Run::new(case.answers);
    for (op, piece) in case.ops.iter().zip(&pieces) {
        match (op, piece) {
            (Op::Wait(ms), _) => run.wait(Duration::from_millis(u64::from(*ms) * 10)),
            (_, Some(bytes)) => run.feed(bytes),
            _ => {}
        }
    }

    if case.ops.iter().all(|op| !matches!(op, Op::Wait(_))) {
        let all: Vec<u8> = pieces.into_iter().flatten().flatten().collect();
        let mut whole = Run::new(case.answers);
        whole.feed(&all);
        assert_eq!(whole.out, run.out);
    }
});

struct Run {
    server: Server,
    now: Instant,
    answers: u64,
    out: Vec<u8>,
    closed: bool,
}

impl Run {
    fn new(answers: u64) -> Self {
        let now = Instant::now();
        let config = Arc::new(ServerConfig::new(4242));
        let mut run = Run {
            server: Server::new(config, 7, [9; 16]),
            now,
            answers,
            out: Vec::new(),
            closed: false,
        };
        run.drain();
        run
    }

    fn pick(&mut self, n: u64) -> u64 {
        let choice = self.answers % n;
        self.answers = self.answers.rotate_right(5) ^ 0x2545_f491;
        choice
    }

    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            self.drain();
            let used = self.server.receive(self.now, input);
            input = &input[used..];
            if used == 0 && !self.drain() {
                // Waiting for a failure delay: let it pass.
                match self.server.poll_timeout() {
                    Some(at) => {
                        self.now = self.now.max(at);
                        self.server.handle_timeout(self.now);
                    }
                    None => break,
                }
            }
        }
        self.drain();
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        self.drain();
    }

    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.server.poll_output() {
            any = true;
            assert!(!self.closed, "{output:?} after Close");
            match output {
                ServerOutput::Send(bytes) => self.out.extend_from_slice(&bytes),
                ServerOutput::Authenticate { id, .. } => {
                    let verdict = match self.pick(3) {
                        0 => AuthVerdict::Ok {
                            login: "alice".into(),
                        },
                        1 => AuthVerdict::Fail,
                        _ => AuthVerdict::TempFail,
                    };
                    self.server.handle_auth(self.now, id, verdict);
                }
                ServerOutput::LookupScram { .. } => panic!("SCRAM is not offered here"),
                // For the log only: nothing to answer.
                ServerOutput::Failed { .. } => {}
                ServerOutput::Close => {
                    self.out.extend_from_slice(b"[close]");
                    self.closed = true;
                }
            }
        }
        any
    }
}
