//! The client side of Dovecot's authentication protocol: tern checking passwords against a
//! running Dovecot (`[accounts] dovecot_auth`), the way Postfix's `xsasl_dovecot_server.c`
//! does.
//!
//! States: `ExpectHandshake` (collecting `MECH` lines until `DONE`), `Ready`, `Closed`.
//! Requests made before `DONE` wait and go out with it. Each request is one `AUTH` with
//! PLAIN and the initial response; its [`AuthResult`] comes back as
//! [`ClientOutput::Result`]. Anything wrong with the connection (a malformed line, another
//! major version, no PLAIN, a timeout, the peer closing) ends it: every request still open
//! gets [`AuthResult::TempFail`], then [`ClientOutput::Error`] and [`ClientOutput::Close`],
//! so the runtime can answer 454 4.7.0 and connect again for the next request.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{LineEvent, LineReader, Outgoing, RequestId, VERSION_LINE, VERSION_MAJOR, escape_str};
use super::{fields, format_line, parse_id, text};
use crate::sasl::{AuthVerdict, Secret};

/// How the client identifies itself and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Our process id, for the `CPID` line (Dovecot refuses 0).
    pub pid: u32,
    /// The `service=` of every request.
    pub service: String,
    /// How long the handshake, and each request, may take before the connection is given up.
    pub timeout: Duration,
}

impl ClientConfig {
    /// Service `smtp`, 30 seconds.
    pub fn new(pid: u32) -> Self {
        ClientConfig {
            pid,
            service: "smtp".to_owned(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One password to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The login as the user gave it.
    pub login: String,
    /// The password.
    pub password: Secret,
    /// The authorization identity; empty for none.
    pub authzid: String,
    /// The address the user connected to.
    pub local_ip: Option<IpAddr>,
    /// The user's address.
    pub remote_ip: Option<IpAddr>,
    /// Whether the user's connection is encrypted.
    pub secured: bool,
}

/// Dovecot's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// The password is right; `user` is the name Dovecot knows the account by.
    Ok {
        /// The canonical user name (`user=`).
        user: String,
    },
    /// Wrong password, unknown user, or a user who may not log in (`OK` with `nologin`).
    Fail {
        /// Dovecot's `reason=`, if any; for the log, not for the SMTP client.
        reason: Option<String>,
    },
    /// Dovecot could not decide now (`code=temp_fail`, `temp`), or the connection failed.
    TempFail {
        /// Why, for the log.
        reason: Option<String>,
    },
}

impl AuthResult {
    /// The same answer as the SMTP session takes it.
    pub fn verdict(&self) -> AuthVerdict {
        match self {
            AuthResult::Ok { user } => AuthVerdict::Ok {
                login: user.clone(),
            },
            AuthResult::Fail { .. } => AuthVerdict::Fail,
            AuthResult::TempFail { .. } => AuthVerdict::TempFail,
        }
    }
}

/// Why the connection to Dovecot was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionError {
    /// The server speaks another major version.
    Version,
    /// The server does not offer PLAIN.
    NoPlain,
    /// A line that breaks the protocol; the command name, for the log.
    Malformed(String),
    /// A line longer than [`super::MAX_LINE`].
    LineTooLong,
    /// No handshake, or no answer to a request, within the timeout.
    Timeout,
    /// The server closed the connection.
    Closed,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Version => f.write_str("auth server speaks another protocol version"),
            ConnectionError::NoPlain => f.write_str("auth server does not offer PLAIN"),
            ConnectionError::Malformed(command) => {
                write!(f, "malformed {command:?} line from auth server")
            }
            ConnectionError::LineTooLong => f.write_str("auth server sent an overlong line"),
            ConnectionError::Timeout => f.write_str("auth server did not answer in time"),
            ConnectionError::Closed => f.write_str("auth server closed the connection"),
        }
    }
}

impl std::error::Error for ConnectionError {}

/// What the runtime must do next. `Debug` shows only the length of [`ClientOutput::Send`],
/// which carries the base64 PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Bytes to write to the server.
    Send(Vec<u8>),
    /// The handshake is done; these are the mechanisms the server offers.
    Ready {
        /// The `MECH` names, in order.
        mechanisms: Vec<String>,
    },
    /// The answer to a request made with [`Client::authenticate`].
    Result {
        /// The request.
        id: RequestId,
        /// Dovecot's answer.
        result: AuthResult,
    },
    /// The connection failed; every open request has had its `TempFail` result.
    Error(ConnectionError),
    /// Close the connection.
    Close,
}

impl fmt::Debug for ClientOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientOutput::Send(bytes) => write!(f, "Send({} bytes)", bytes.len()),
            ClientOutput::Ready { mechanisms } => f
                .debug_struct("Ready")
                .field("mechanisms", mechanisms)
                .finish(),
            ClientOutput::Result { id, result } => f
                .debug_struct("Result")
                .field("id", id)
                .field("result", result)
                .finish(),
            ClientOutput::Error(error) => f.debug_tuple("Error").field(error).finish(),
            ClientOutput::Close => f.write_str("Close"),
        }
    }
}

/// One connection to a Dovecot auth socket.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    state: State,
    line: LineReader,
    next_id: u32,
    /// Requests made before the handshake finished: id, when, the AUTH line's middle, and
    /// the base64 PLAIN message.
    waiting: Vec<(RequestId, Instant, Vec<u8>, Secret)>,
    pending: BTreeMap<RequestId, Pending>,
    outputs: VecDeque<ClientOutput>,
    send: Outgoing,
}

#[derive(Debug)]
enum State {
    ExpectHandshake {
        deadline: Instant,
        mechanisms: Vec<String>,
    },
    Ready,
    Closed,
}

#[derive(Debug)]
struct Pending {
    sent: Instant,
    /// The base64 PLAIN message, kept to answer one empty challenge.
    response: Option<Secret>,
}

impl Client {
    /// A new connection; `VERSION` and `CPID` are queued at once.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let mut send = VERSION_LINE.as_bytes().to_vec();
        send.extend(format_line(&["CPID", &config.pid.to_string()]));
        let deadline = now + config.timeout;
        Client {
            config,
            state: State::ExpectHandshake {
                deadline,
                mechanisms: Vec::new(),
            },
            line: LineReader::default(),
            next_id: 1,
            waiting: Vec::new(),
            pending: BTreeMap::new(),
            outputs: VecDeque::new(),
            send: Outgoing(send),
        }
    }

    /// Asks whether `request`'s password is right; the answer comes as
    /// [`ClientOutput::Result`] with the id returned here. On a closed connection the
    /// answer is an immediate `TempFail`.
    pub fn authenticate(&mut self, now: Instant, request: AuthRequest) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);

        // RFC 4616: authzid NUL authcid NUL password.
        let mut message = Vec::new();
        message.extend_from_slice(request.authzid.as_bytes());
        message.push(0);
        message.extend_from_slice(request.login.as_bytes());
        message.push(0);
        message.extend_from_slice(request.password.expose().as_bytes());
        let response = Secret::new(BASE64.encode(&message));

        let mut parts = vec![
            "PLAIN".to_owned(),
            format!("service={}", escape_str(&self.config.service)),
            // As Postfix does: only a password check, no login session to hand over.
            "nologin".to_owned(),
        ];
        if let Some(ip) = request.local_ip {
            parts.push(format!("lip={ip}"));
        }
        if let Some(ip) = request.remote_ip {
            parts.push(format!("rip={ip}"));
        }
        if request.secured {
            parts.push("secured".to_owned());
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        // The line without "AUTH\t<id>" and without resp=, which are added when it is sent.
        let head = format_line(&parts);

        match self.state {
            State::Closed => self.push(ClientOutput::Result {
                id,
                result: AuthResult::TempFail {
                    reason: Some("connection to auth server closed".to_owned()),
                },
            }),
            State::ExpectHandshake { .. } => self.waiting.push((id, now, head, response)),
            State::Ready => self.send_auth(now, id, &head, response),
        }
        id
    }

    /// Feeds bytes from the server; all of them are consumed.
    pub fn receive(&mut self, now: Instant, input: &[u8]) -> usize {
        let mut pos = 0;
        while pos < input.len() && !matches!(self.state, State::Closed) {
            let (used, event) = self.line.read(&input[pos..]);
            pos += used;
            match event {
                None => {}
                Some(LineEvent::Overlong) => self.fail_connection(ConnectionError::LineTooLong),
                Some(LineEvent::Line(line)) => self.handle_line(now, &line),
            }
        }
        input.len()
    }

    /// Tells the client that the server closed the connection.
    pub fn handle_eof(&mut self) {
        self.fail_connection(ConnectionError::Closed);
    }

    /// Tells the client that time has reached `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|at| at <= now) {
            self.fail_connection(ConnectionError::Timeout);
        }
    }

    /// When [`Self::handle_timeout`] should next be called: the end of the handshake, or
    /// the oldest open request's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::ExpectHandshake { deadline, .. } => Some(*deadline),
            State::Ready => self
                .pending
                .values()
                .map(|p| p.sent + self.config.timeout)
                .min(),
            State::Closed => None,
        }
    }

    /// The next thing the runtime must do, if any.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        if self.send.0.is_empty() {
            return None;
        }
        Some(ClientOutput::Send(std::mem::take(&mut self.send.0)))
    }

    /// Whether the connection has ended; make a new client for further requests.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
}

impl Client {
    fn handle_line(&mut self, now: Instant, line: &[u8]) {
        let fields = fields(line);
        let command = String::from_utf8_lossy(&fields[0]).into_owned();
        if let State::ExpectHandshake { mechanisms, .. } = &mut self.state {
            match command.as_str() {
                "VERSION" if fields.get(1).map(Vec::as_slice) != Some(VERSION_MAJOR.as_bytes()) => {
                    self.fail_connection(ConnectionError::Version);
                }
                "MECH" => match fields.get(1).and_then(|f| text(f)) {
                    Some(name) if !name.is_empty() => mechanisms.push(name.to_owned()),
                    _ => self.fail_connection(ConnectionError::Malformed(command)),
                },
                "DONE" => self.handshake_done(now),
                // VERSION, SPID, CUID, COOKIE, and whatever newer servers add.
                _ => {}
            }
            return;
        }
        match command.as_str() {
            "OK" | "FAIL" | "CONT" => {}
            // Like Postfix, ignore what this client has no use for.
            _ => return,
        }
        let Some(id) = fields.get(1).and_then(|f| parse_id(f)) else {
            self.fail_connection(ConnectionError::Malformed(command));
            return;
        };
        // An answer to a request we no longer wait for (cancelled): nothing to do.
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        let params = Params::parse(&fields[2..]);
        let result = match command.as_str() {
            // OK with nologin: the password is right but the user may not log in.
            "OK" if params.nologin => AuthResult::Fail {
                reason: Some(params.reason.unwrap_or_else(|| "nologin".to_owned())),
            },
            "OK" => match params.user {
                Some(user) => AuthResult::Ok { user },
                None => {
                    self.fail_connection(ConnectionError::Malformed(command));
                    return;
                }
            },
            "FAIL" if params.temp => AuthResult::TempFail {
                reason: params.reason,
            },
            "FAIL" => AuthResult::Fail {
                reason: params.reason,
            },
            // PLAIN needs no challenge; a server that asks anyway (dropped the initial
            // response?) gets the message once more, and a second challenge ends the request.
            _ => match pending.response.take() {
                Some(response) => {
                    let id = id.to_string();
                    self.send
                        .0
                        .extend(format_line(&["CONT", &id, response.expose()]));
                    return;
                }
                None => {
                    self.send
                        .0
                        .extend(format_line(&["CANCEL", &id.to_string()]));
                    AuthResult::TempFail {
                        reason: Some("unexpected challenge for PLAIN".to_owned()),
                    }
                }
            },
        };
        self.pending.remove(&id);
        self.push(ClientOutput::Result { id, result });
    }

    fn handshake_done(&mut self, now: Instant) {
        let State::ExpectHandshake { mechanisms, .. } =
            std::mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        if !mechanisms.iter().any(|m| m.eq_ignore_ascii_case("PLAIN")) {
            self.fail_connection(ConnectionError::NoPlain);
            return;
        }
        self.push(ClientOutput::Ready { mechanisms });
        for (id, queued, head, response) in std::mem::take(&mut self.waiting) {
            // The wait for the handshake counts against the request's timeout.
            self.send_auth(queued.min(now), id, &head, response);
        }
    }

    fn send_auth(&mut self, now: Instant, id: RequestId, head: &[u8], response: Secret) {
        self.send.0.extend_from_slice(b"AUTH\t");
        self.send.0.extend_from_slice(id.to_string().as_bytes());
        self.send.0.extend_from_slice(b"\t");
        self.send.0.extend_from_slice(&head[..head.len() - 1]);
        self.send.0.extend_from_slice(b"\tresp=");
        self.send.0.extend_from_slice(response.expose().as_bytes());
        self.send.0.push(b'\n');
        self.pending.insert(
            id,
            Pending {
                sent: now,
                response: Some(response),
            },
        );
    }

    /// Ends the connection: every open request fails temporarily, then the error and the
    /// close are reported.
    fn fail_connection(&mut self, error: ConnectionError) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.state = State::Closed;
        let waiting = self.waiting.drain(..).map(|(id, ..)| id);
        let ids: Vec<RequestId> = waiting.chain(self.pending.keys().copied()).collect();
        self.pending.clear();
        for id in ids {
            self.push(ClientOutput::Result {
                id,
                result: AuthResult::TempFail {
                    reason: Some(error.to_string()),
                },
            });
        }
        self.push(ClientOutput::Error(error));
        self.push(ClientOutput::Close);
    }

    /// Queues an output after the bytes already due, so the runtime sees them in order.
    fn push(&mut self, output: ClientOutput) {
        if !self.send.0.is_empty() {
            self.outputs
                .push_back(ClientOutput::Send(std::mem::take(&mut self.send.0)));
        }
        self.outputs.push_back(output);
    }
}

/// The optional parameters of OK and FAIL that matter here.
#[derive(Debug, Default)]
struct Params {
    user: Option<String>,
    reason: Option<String>,
    nologin: bool,
    temp: bool,
}

impl Params {
    fn parse(fields: &[Vec<u8>]) -> Self {
        let mut params = Params::default();
        for field in fields {
            let field = String::from_utf8_lossy(field);
            let (name, value) = field.split_once('=').unwrap_or((&field, ""));
            match name {
                "user" => params.user = Some(value.to_owned()),
                "reason" => params.reason = Some(value.to_owned()),
                "nologin" => params.nologin = true,
                // Dovecot 2.2 said "temp"; 2.3 says code=temp_fail.
                "temp" => params.temp = true,
                "code" if value == "temp_fail" => params.temp = true,
                _ => {}
            }
        }
        params
    }
}
