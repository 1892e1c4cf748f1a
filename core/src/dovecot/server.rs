//! The server side of Dovecot's authentication protocol: what tern runs on a
//! `protocol = "dovecot-auth"` listener so that Postfix (`smtpd_sasl_type = dovecot`) can
//! check passwords against tern's accounts.
//!
//! States: `ExpectVersion` (the client's `VERSION`), `ExpectCpid`, then `Ready`, where any
//! number of `AUTH` requests run side by side, each with its own [`SaslServer`]. A broken
//! line, an unknown command or an overlong line ends the connection, as in Dovecot.
//!
//! Failures are held for `failure_delay` before their `FAIL` goes out (Dovecot's
//! `auth_failure_delay`); the same delay and the same line serve unknown users and wrong
//! passwords. Like Dovecot's auth process, the server does not refuse plaintext mechanisms
//! on connections the client calls insecure: that policy belongs to the client (Postfix's
//! `smtpd_tls_auth_only`). It only passes the `secured` flag on in [`RequestInfo`].
//!
//! Requests run side by side, but one question to the runtime at a time: while a verdict or
//! a SCRAM lookup is open, no further line is read (as the SMTP session does). Postfix opens
//! one connection per smtpd process and asks one thing at a time, so it never waits on this.
//!
//! Known limits: no `userdb` lookups (that is the master socket's protocol), no `CPID`
//! bookkeeping across connections, and no per-request timeout for clients that leave a
//! challenge unanswered (the request stays until the connection ends or it is cancelled).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{LineEvent, LineReader, RequestId, VERSION_LINE, VERSION_MAJOR, escape_str};
use super::{fields, format_line, parse_id, text};
use crate::sasl::{
    AuthVerdict, Credentials, Mechanism, SaslServer, ScramLookup, ScramNonce, ScramSecret, Step,
};

/// Requests one connection may have open at once; more get an immediate temporary failure.
const MAX_REQUESTS: usize = 128;

/// What every connection of a listener shares.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The mechanisms offered, in order (`MECH` lines).
    pub mechanisms: Vec<Mechanism>,
    /// The secret for SCRAM's stand-in credentials; SCRAM-SHA-256 is offered only with it.
    pub scram_secret: Option<ScramSecret>,
    /// Our process id, for the `SPID` line.
    pub spid: u32,
    /// How long a failure waits before its `FAIL` (Dovecot's `auth_failure_delay`).
    pub failure_delay: Duration,
}

impl ServerConfig {
    /// PLAIN and LOGIN, no SCRAM, and Dovecot's 2 second failure delay.
    pub fn new(spid: u32) -> Self {
        ServerConfig {
            mechanisms: vec![Mechanism::Plain, Mechanism::Login],
            scram_secret: None,
            spid,
            failure_delay: Duration::from_secs(2),
        }
    }
}

/// The context the client gave with an `AUTH` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `service=`: the protocol the user is logging in with (`smtp`).
    pub service: String,
    /// `lip=`: the address the user connected to, as the client wrote it.
    pub local_ip: Option<String>,
    /// `rip=`: the user's address, as the client wrote it.
    pub remote_ip: Option<String>,
    /// `secured`: the client says the user's connection is encrypted (or local).
    pub secured: bool,
}

/// What the runtime must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Bytes to write to the client.
    Send(Vec<u8>),
    /// Check these credentials; answer with [`Server::handle_auth`] for this id.
    Authenticate {
        /// The request.
        id: RequestId,
        /// What the user claimed.
        credentials: Credentials,
        /// The client's context for the request.
        info: RequestInfo,
    },
    /// Look up the SCRAM credentials of this login; answer with
    /// [`Server::handle_scram_lookup`] for this id.
    LookupScram {
        /// The request.
        id: RequestId,
        /// The login as the user gave it.
        login: String,
        /// The client's context for the request.
        info: RequestInfo,
    },
    /// The machine itself failed request `id` (a wrong SCRAM proof, a malformed exchange,
    /// a request to act as another user): for the log only, no answer is expected.
    /// A failure the runtime decided through [`Server::handle_auth`] is not reported back.
    Failed {
        /// The request.
        id: RequestId,
        /// Its mechanism.
        mechanism: Mechanism,
        /// The client's context for the request.
        info: RequestInfo,
    },
    /// Close the connection after sending what came before.
    Close,
}

/// One connection from an auth client.
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    state: State,
    line: LineReader,
    requests: BTreeMap<RequestId, Request>,
    /// `FAIL` lines waiting out the failure delay, oldest first.
    delayed: VecDeque<(Instant, Vec<u8>)>,
    outputs: VecDeque<ServerOutput>,
    send: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ExpectVersion,
    ExpectCpid,
    Ready,
    Closed,
}

#[derive(Debug)]
struct Request {
    info: RequestInfo,
    mechanism: Mechanism,
    /// The login, once the mechanism has seen it (for `user=` on failures).
    login: Option<String>,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// A `CONT` went out; waiting for the client's response.
    ExpectCont(SaslServer),
    /// Waiting for the runtime's verdict.
    AwaitVerdict,
    /// Waiting for the runtime's SCRAM credentials.
    AwaitScramLookup(SaslServer),
}

impl Server {
    /// A new connection; the handshake (`VERSION`, `MECH`s, `SPID`, `CUID`, `COOKIE`, `DONE`)
    /// is queued at once. `cuid` numbers the connection and `cookie` is random, both from the
    /// runtime.
    pub fn new(config: Arc<ServerConfig>, cuid: u32, cookie: [u8; 16]) -> Self {
        let mut send = VERSION_LINE.as_bytes().to_vec();
        for mechanism in offered(&config) {
            let flags = if mechanism.is_plaintext() {
                "plaintext"
            } else {
                "mutual-auth"
            };
            send.extend(format_line(&["MECH", mechanism.name(), flags]));
        }
        let cookie: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
        send.extend(format_line(&["SPID", &config.spid.to_string()]));
        send.extend(format_line(&["CUID", &cuid.to_string()]));
        send.extend(format_line(&["COOKIE", &cookie]));
        send.extend(format_line(&["DONE"]));
        Server {
            config,
            state: State::ExpectVersion,
            line: LineReader::default(),
            requests: BTreeMap::new(),
            delayed: VecDeque::new(),
            outputs: VecDeque::new(),
            send,
        }
    }

    /// Feeds bytes from the client and returns how many were consumed. While a question to
    /// the runtime is open the server reads no further line: feed the rest after answering.
    pub fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        if self.state == State::Closed {
            return input.len();
        }
        let mut pos = 0;
        while pos < input.len() && self.state != State::Closed && !self.is_waiting() {
            let (used, event) = self.line.read(&input[pos..]);
            pos += used;
            match event {
                None => {}
                Some(LineEvent::Overlong) => self.close(),
                Some(LineEvent::Line(line)) => self.handle_line(now, &line),
            }
        }
        if self.state == State::Closed {
            return input.len();
        }
        pos
    }

    /// Sends the failures whose delay has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, _)) = self.delayed.front() {
            if *at > now {
                break;
            }
            if let Some((_, line)) = self.delayed.pop_front() {
                self.send.extend(line);
            }
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.delayed.front().map(|(at, _)| *at)
    }

    /// The next thing the runtime must do, if any.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        if self.send.is_empty() {
            return None;
        }
        Some(ServerOutput::Send(std::mem::take(&mut self.send)))
    }

    /// Answers [`ServerOutput::Authenticate`] for request `id`; stale ids are ignored.
    pub fn handle_auth(&mut self, now: Instant, id: RequestId, verdict: AuthVerdict) {
        let Some(request) = self.requests.get(&id) else {
            return;
        };
        if !matches!(request.stage, Stage::AwaitVerdict) {
            return;
        }
        match verdict {
            AuthVerdict::Ok { login } => self.succeed(id, &login, None),
            AuthVerdict::Fail => self.fail(now, id),
            AuthVerdict::TempFail => self.temp_fail(id),
        }
    }

    /// Answers [`ServerOutput::LookupScram`] for request `id` with the stored keys and the
    /// server's part of the nonce (random, from the runtime); stale ids are ignored.
    pub fn handle_scram_lookup(
        &mut self,
        now: Instant,
        id: RequestId,
        lookup: ScramLookup,
        nonce: &ScramNonce,
    ) {
        let Some(request) = self.requests.get_mut(&id) else {
            return;
        };
        let Stage::AwaitScramLookup(sasl) = &mut request.stage else {
            return;
        };
        let mut sasl = sasl.clone();
        let Some(secret) = self.config.scram_secret.clone() else {
            self.temp_fail(id);
            return;
        };
        let step = sasl.handle_scram_lookup(lookup, nonce, &secret);
        self.step(now, id, sasl, step);
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether a question to the runtime is open.
    pub fn is_waiting(&self) -> bool {
        self.requests
            .values()
            .any(|r| matches!(r.stage, Stage::AwaitVerdict | Stage::AwaitScramLookup(_)))
    }
}

// Input.
impl Server {
    fn handle_line(&mut self, now: Instant, line: &[u8]) {
        let fields = fields(line);
        let command = fields[0].as_slice();
        match (self.state, command) {
            // Dovecot: the first line must be VERSION with our major version.
            (State::ExpectVersion, b"VERSION")
                if fields.get(1).map(Vec::as_slice) == Some(VERSION_MAJOR.as_bytes()) =>
            {
                self.state = State::ExpectCpid;
            }
            (State::ExpectCpid, b"CPID")
                if fields
                    .get(1)
                    .and_then(|f| parse_id(f))
                    .is_some_and(|pid| pid.0 > 0) =>
            {
                self.state = State::Ready;
            }
            (State::Ready, b"AUTH") => self.auth(now, &fields[1..]),
            (State::Ready, b"CONT") => self.cont(now, &fields[1..]),
            (State::Ready, b"CANCEL") => match fields.get(1).and_then(|f| parse_id(f)) {
                Some(id) => {
                    self.requests.remove(&id);
                }
                None => self.close(),
            },
            _ => self.close(),
        }
    }

    /// `AUTH <id> <mechanism> [name=value | flag]... [resp=<base64>]`
    fn auth(&mut self, now: Instant, args: &[Vec<u8>]) {
        let (Some(id), Some(mechanism)) = (
            args.first().and_then(|f| parse_id(f)),
            args.get(1).and_then(|f| text(f)),
        ) else {
            self.close();
            return;
        };
        // Dovecot treats an unknown mechanism, a reused id or a missing service as a bug in
        // the client and disconnects.
        let Some(mechanism) = mechanism
            .parse::<Mechanism>()
            .ok()
            .filter(|m| offered(&self.config).any(|o| o == *m))
        else {
            self.close();
            return;
        };
        if self.requests.contains_key(&id) {
            self.close();
            return;
        }
        let mut info = RequestInfo::default();
        let mut service = None;
        let mut initial = None;
        for (n, param) in args[2..].iter().enumerate() {
            let param = String::from_utf8_lossy(param);
            let (name, value) = param.split_once('=').unwrap_or((&param, ""));
            match name {
                "service" => service = Some(value.to_owned()),
                "lip" => info.local_ip = Some(value.to_owned()),
                "rip" => info.remote_ip = Some(value.to_owned()),
                "secured" => info.secured = true,
                // The initial response must be the last parameter.
                "resp" if n + 3 == args.len() => initial = Some(value.to_owned()),
                "resp" => {
                    self.close();
                    return;
                }
                _ => {}
            }
        }
        let Some(service) = service else {
            self.close();
            return;
        };
        info.service = service;

        if self.requests.len() >= MAX_REQUESTS {
            self.send_line(&["FAIL", &id.to_string(), "code=temp_fail", "temp"]);
            return;
        }
        // Exim sends an empty resp= for "no initial response"; "=" is an empty one.
        let initial = match initial.as_deref() {
            None | Some("") => None,
            Some(encoded) => match BASE64.decode(encoded) {
                Ok(bytes) => Some(bytes),
                Err(_) => {
                    let reason = "reason=Invalid base64 data in initial response";
                    self.send_line(&["FAIL", &id.to_string(), reason]);
                    return;
                }
            },
        };
        let (sasl, step) = SaslServer::start(mechanism, initial.as_deref());
        self.requests.insert(
            id,
            Request {
                info,
                mechanism,
                login: None,
                stage: Stage::AwaitVerdict,
            },
        );
        self.step(now, id, sasl, step);
    }

    /// `CONT <id> <base64>`
    fn cont(&mut self, now: Instant, args: &[Vec<u8>]) {
        let (Some(id), Some(data)) = (args.first().and_then(|f| parse_id(f)), args.get(1)) else {
            self.close();
            return;
        };
        let Some(request) = self.requests.remove(&id) else {
            let reason = "reason=Authentication request timed out";
            self.send_line(&["FAIL", &id.to_string(), reason]);
            return;
        };
        let Stage::ExpectCont(mut sasl) = request.stage else {
            self.send_line(&["FAIL", &id.to_string(), "reason=Unexpected continuation"]);
            return;
        };
        let Ok(response) = BASE64.decode(data) else {
            let reason = "reason=Invalid base64 data in continued response";
            self.send_line(&["FAIL", &id.to_string(), reason]);
            return;
        };
        let step = sasl.step(&response);
        self.requests.insert(
            id,
            Request {
                stage: Stage::AwaitVerdict,
                ..request
            },
        );
        self.step(now, id, sasl, step);
    }
}

// Replies.
impl Server {
    /// Acts on a mechanism's step for a request that is in `self.requests`.
    fn step(&mut self, now: Instant, id: RequestId, sasl: SaslServer, step: Step) {
        let Some(request) = self.requests.get_mut(&id) else {
            return;
        };
        match step {
            Step::Challenge(challenge) => {
                request.stage = Stage::ExpectCont(sasl);
                let challenge = BASE64.encode(challenge);
                self.send_line(&["CONT", &id.to_string(), &challenge]);
            }
            Step::Done(credentials) => {
                request.login = Some(credentials.login.clone());
                // tern has no master users: acting as someone else fails like a wrong
                // password.
                if !credentials.authzid.is_empty() && credentials.authzid != credentials.login {
                    self.fail_here(now, id);
                    return;
                }
                request.stage = Stage::AwaitVerdict;
                let info = request.info.clone();
                self.push(ServerOutput::Authenticate {
                    id,
                    credentials,
                    info,
                });
            }
            Step::LookupScram(login) => {
                request.login = Some(login.clone());
                request.stage = Stage::AwaitScramLookup(sasl);
                let info = request.info.clone();
                self.push(ServerOutput::LookupScram { id, login, info });
            }
            Step::Authenticated(done) => {
                if !done.authzid.is_empty() && done.authzid != done.login {
                    self.fail_here(now, id);
                    return;
                }
                // Dovecot hands SCRAM's server-final to the client in OK's resp=.
                self.succeed(id, &done.account, Some(&done.final_message));
            }
            Step::Failed | Step::Malformed => self.fail_here(now, id),
            Step::Unavailable => self.temp_fail(id),
        }
    }

    fn succeed(&mut self, id: RequestId, login: &str, final_message: Option<&[u8]>) {
        self.requests.remove(&id);
        let user = format!("user={}", escape_str(login));
        let id = id.to_string();
        match final_message {
            Some(data) => {
                let resp = format!("resp={}", BASE64.encode(data));
                self.send_line(&["OK", &id, &user, &resp]);
            }
            None => self.send_line(&["OK", &id, &user]),
        }
    }

    /// A failure the machine decided: reported for the log, then failed as usual.
    fn fail_here(&mut self, now: Instant, id: RequestId) {
        if let Some(request) = self.requests.get(&id) {
            let output = ServerOutput::Failed {
                id,
                mechanism: request.mechanism,
                info: request.info.clone(),
            };
            self.push(output);
        }
        self.fail(now, id);
    }

    /// Wrong password, unknown user, or a malformed exchange: `FAIL` after the delay.
    fn fail(&mut self, now: Instant, id: RequestId) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        let id = id.to_string();
        let user = request.login.map(|l| format!("user={}", escape_str(&l)));
        let mut parts = vec!["FAIL", &id];
        parts.extend(user.as_deref());
        let line = format_line(&parts);
        if self.config.failure_delay.is_zero() {
            self.send.extend(line);
        } else {
            self.delayed
                .push_back((now + self.config.failure_delay, line));
        }
    }

    /// The backend could not be asked: `FAIL` at once with Dovecot 2.3's `code=temp_fail`
    /// and the older `temp` flag, so clients of either age see a temporary failure.
    fn temp_fail(&mut self, id: RequestId) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        let id = id.to_string();
        let user = request.login.map(|l| format!("user={}", escape_str(&l)));
        let mut parts = vec!["FAIL", &id];
        parts.extend(user.as_deref());
        parts.extend(["code=temp_fail", "temp"]);
        self.send_line(&parts);
    }

    fn send_line(&mut self, parts: &[&str]) {
        self.send.extend(format_line(parts));
    }

    fn push(&mut self, output: ServerOutput) {
        if !self.send.is_empty() {
            self.outputs
                .push_back(ServerOutput::Send(std::mem::take(&mut self.send)));
        }
        self.outputs.push_back(output);
    }

    /// Ends the connection; requests in flight and held failures are dropped.
    fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.requests.clear();
        self.delayed.clear();
        self.push(ServerOutput::Close);
    }
}

/// The mechanisms a server offers: SCRAM-SHA-256 only with a secret for unknown users.
fn offered(config: &ServerConfig) -> impl Iterator<Item = Mechanism> + '_ {
    config
        .mechanisms
        .iter()
        .copied()
        .filter(|m| *m != Mechanism::ScramSha256 || config.scram_secret.is_some())
}
