//! The Dovecot auth protocol, client side (tern asking a Dovecot), under arbitrary server
//! bytes, timer steps and new requests. Checks: no panic; every request gets exactly one
//! result; and, with no time passing, the same outcome whether the server's bytes come at
//! once or piece by piece.
#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tern_core::dovecot::RequestId;
use tern_core::dovecot::client::{AuthRequest, Client, ClientConfig, ClientOutput};
use tern_core::sasl::Secret;

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    Lines(Vec<Line>),
    Request,
    Wait(u16),
    Eof,
}

/// Lines as Dovecot writes them.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Line {
    Handshake,
    Ok(u8),
    OkNologin(u8),
    Fail(u8),
    FailTemp(u8),
    Cont(u8),
    Garbage,
}

impl Line {
    fn bytes(self) -> Vec<u8> {
        match self {
            Line::Handshake => b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
                SPID\t1\nCUID\t1\nCOOKIE\t0123456789abcdef0123456789abcdef\nDONE\n"
                .to_vec(),
            Line::Ok(id) => format!("OK\t{id}\tuser=alice\n").into_bytes(),
            Line::OkNologin(id) => format!("OK\t{id}\tuser=alice\tnologin\n").into_bytes(),
            Line::Fail(id) => format!("FAIL\t{id}\tuser=alice\n").into_bytes(),
            Line::FailTemp(id) => format!("FAIL\t{id}\tcode=temp_fail\ttemp\n").into_bytes(),
            Line::Cont(id) => format!("CONT\t{id}\t\n").into_bytes(),
            Line::Garbage => b"\x00\t\n".to_vec(),
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut run = Run::new();
    for op in &ops {
        match op {
            Op::Raw(bytes) => run.feed(bytes),
            Op::Lines(lines) => run.feed(&lines.iter().flat_map(|l| l.bytes()).collect::<Vec<_>>()),
            Op::Request => run.request(),
            Op::Wait(ms) => run.wait(Duration::from_millis(u64::from(*ms) * 100)),
            Op::Eof => run.eof(),
        }
    }
    for (id, results) in &run.results {
        assert!(*results <= 1, "request {id:?} answered {results} times");
    }
    if run.closed {
        for id in &run.asked {
            assert_eq!(
                run.results.get(id),
                Some(&1),
                "request {id:?} never answered"
            );
        }
    }

    // The same server bytes in one piece, requests first where they were first: only when no
    // time passes and requests all come before any server byte is the comparison exact.
    let simple = ops.iter().all(|op| matches!(op, Op::Raw(_) | Op::Lines(_)));
    if simple {
        let all: Vec<u8> = ops
            .iter()
            .flat_map(|op| match op {
                Op::Raw(bytes) => bytes.clone(),
                Op::Lines(lines) => lines.iter().flat_map(|l| l.bytes()).collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut whole = Run::new();
        whole.feed(&all);
        assert_eq!(whole.log, run.log);
    }
});

struct Run {
    client: Client,
    now: Instant,
    log: Vec<String>,
    asked: Vec<RequestId>,
    results: BTreeMap<RequestId, u32>,
    closed: bool,
}

impl Run {
    fn new() -> Self {
        let now = Instant::now();
        let mut run = Run {
            client: Client::new(ClientConfig::new(4021), now),
            now,
            log: Vec::new(),
            asked: Vec::new(),
            results: BTreeMap::new(),
            closed: false,
        };
        run.drain();
        run
    }

    fn request(&mut self) {
        let request = AuthRequest {
            login: "alice".into(),
            password: Secret::new("secret".into()),
            authzid: String::new(),
            local_ip: None,
            remote_ip: None,
            secured: true,
        };
        let id = self.client.authenticate(self.now, request);
        self.asked.push(id);
        self.drain();
    }

    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            self.drain();
            let used = self.client.receive(self.now, input);
            input = &input[used..];
            if used == 0 && !self.drain() {
                break;
            }
        }
        self.drain();
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.drain();
    }

    fn eof(&mut self) {
        self.client.handle_eof();
        self.drain();
    }

    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.client.poll_output() {
            any = true;
            match output {
                ClientOutput::Send(bytes) => self.log.push(format!("send {}", bytes.len())),
                ClientOutput::Ready { mechanisms } => {
                    self.log.push(format!("ready {mechanisms:?}"))
                }
                ClientOutput::Result { id, result } => {
                    *self.results.entry(id).or_default() += 1;
                    self.log
                        .push(format!("result {id:?} {:?}", result.verdict()));
                }
                ClientOutput::Error(error) => self.log.push(format!("error {error:?}")),
                ClientOutput::Close => {
                    self.log.push("close".into());
                    self.closed = true;
                }
            }
        }
        any
    }
}
