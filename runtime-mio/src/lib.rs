//! The mio runtime: one thread runs a readiness event loop over every listener and
//! connection, and a small pool of worker threads does the blocking work.
//!
//! Sockets are non-blocking; TLS is rustls's buffered `ServerConnection` driven by hand. A
//! connection hands its [`ConnectionHandler`] to a worker together with every piece of work
//! its session asked for since the last hand-over, and gets it back with the answers, the
//! loop being woken by a [`mio::Waker`]; so one connection's work runs in order, and the loop
//! never blocks on the disk or on password hashing. Each connection's next deadline (the
//! session's timer, a TLS handshake or a client that does not read) sits in one ordered set,
//! and the loop sleeps until the nearest.
//!
//! On SIGTERM or SIGINT the listeners close, every session is asked to shut down (idle ones
//! close at once with 421, ones inside a transaction finish it), and [`run`] returns once
//! they are gone or [`SHUTDOWN_GRACE`] has passed; a session still running then is cut off.
//! A handshake in progress at that moment is cut off at once.

mod conn;
mod pool;

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tern_core::server::{Peer, TlsMode};
use tern_host::service::{Bound, SHUTDOWN_GRACE, Services, Socket, serve_auth_connection};

use crate::conn::{Conn, Cx, Stream};
use crate::pool::{Job, Pool};

/// Threads doing blocking work for all connections. Most of that work is waiting for the disk
/// (a delivery fsyncs twice), not computing, so the pool is sized for how many deliveries may
/// wait at once rather than for the cores: with 4, twenty busy sessions ran a third slower
/// than on the other runtimes (bench/README.md).
pub const WORKERS: usize = 32;

const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_LISTENER: usize = 2;
/// How long to wait before accepting again after accept failed (out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves every bound listener until SIGTERM or SIGINT, then shuts down gracefully.
/// `ready` is called once the signal handlers are installed and the listeners are polled.
pub fn run(services: Arc<Services>, bound: Vec<Bound>, ready: impl FnOnce()) -> io::Result<()> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);

    let (signal_read, signal_write) = StdUnixStream::pair()?;
    signal_read.set_nonblocking(true)?;
    signal_write.set_nonblocking(true)?;
    let mut signals = UnixStream::from_std(signal_read);
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(signal, signal_write.try_clone()?)?;
    }

    let mut listeners = Vec::new();
    for (n, listener) in bound.into_iter().enumerate() {
        let socket = match listener.socket {
            Socket::Tcp(socket) => {
                socket.set_nonblocking(true)?;
                Listening::Tcp(TcpListener::from_std(socket))
            }
            Socket::Unix(socket) => {
                socket.set_nonblocking(true)?;
                Listening::Unix(UnixListener::from_std(socket))
            }
        };
        let token = Token(FIRST_LISTENER + n);
        poll.registry()
            .register(&mut SourceFd(&socket.fd()), token, Interest::READABLE)?;
        listeners.push(Some((listener.listener, socket)));
    }
    let next_token = FIRST_LISTENER + listeners.len();

    let mut event_loop = EventLoop {
        pool: Pool::new(WORKERS, waker)?,
        services,
        poll,
        listeners,
        conns: HashMap::new(),
        timers: BTreeSet::new(),
        next_token,
        scratch: vec![0; 16 * 1024],
        stopping: None,
        accept_retry: None,
    };
    ready();
    let result = event_loop.run(&mut signals);
    event_loop.finish_all();
    event_loop.pool.join();
    result
}

enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listening {
    fn fd(&self) -> RawFd {
        match self {
            Listening::Tcp(s) => s.as_raw_fd(),
            Listening::Unix(s) => s.as_raw_fd(),
        }
    }
}

struct EventLoop {
    services: Arc<Services>,
    poll: Poll,
    /// The listener's index in the configuration and its socket; `None` once closed.
    listeners: Vec<Option<(usize, Listening)>>,
    conns: HashMap<Token, Conn>,
    timers: BTreeSet<(Instant, Token)>,
    next_token: usize,
    scratch: Vec<u8>,
    pool: Pool,
    stopping: Option<Instant>,
    accept_retry: Option<Instant>,
}

impl EventLoop {
    fn run(&mut self, signals: &mut UnixStream) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(since) = self.stopping
                && (self.conns.is_empty() || now >= since + SHUTDOWN_GRACE)
            {
                return Ok(());
            }
            let wake = [
                self.timers.first().map(|(at, _)| *at),
                self.accept_retry,
                self.stopping.map(|since| since + SHUTDOWN_GRACE),
            ];
            let timeout = wake
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(now));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in &events {
                match event.token() {
                    WAKER => self.answers(),
                    SIGNALS => {
                        while signals.read(&mut self.scratch).is_ok_and(|n| n > 0) {}
                        self.stop();
                    }
                    Token(n) if n < FIRST_LISTENER + self.listeners.len() => {
                        self.accept(n - FIRST_LISTENER);
                    }
                    token => {
                        if let Some(conn) = self.conns.get_mut(&token) {
                            conn.readable |=
                                event.is_readable() || event.is_read_closed() || event.is_error();
                            self.with_conn(token, |conn, cx| conn.drive(cx));
                        }
                    }
                }
            }
            self.expire();
        }
    }

    /// Accepts every waiting connection on listener `n`.
    fn accept(&mut self, n: usize) {
        loop {
            let Some((index, listening)) = &self.listeners[n] else {
                return;
            };
            let index = *index;
            let accepted = match listening {
                Listening::Tcp(socket) => socket.accept().map(|(stream, client)| {
                    let local = stream.local_addr().ok().map(|a| a.ip());
                    let client = Some(client.ip());
                    (Stream::Tcp(stream), Peer { client, local })
                }),
                Listening::Unix(socket) => socket
                    .accept()
                    .map(|(stream, _)| (Stream::Unix(stream), Peer::default())),
            };
            let (mut stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(listener = index, error = %e, "accept failed");
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            // A dovecot-auth connection is served by the host's blocking driver on a thread
            // of its own (it admits itself): Postfix keeps only a few of them open.
            if self.services.is_dovecot_auth(index) {
                let services = Arc::clone(&self.services);
                let spawned = match stream {
                    Stream::Tcp(stream) => {
                        let stream = std::net::TcpStream::from(stream);
                        stream.set_nonblocking(false).map(|()| {
                            std::thread::spawn(move || {
                                serve_auth_connection(&services, index, stream)
                            });
                        })
                    }
                    Stream::Unix(stream) => {
                        let stream = StdUnixStream::from(stream);
                        stream.set_nonblocking(false).map(|()| {
                            std::thread::spawn(move || {
                                serve_auth_connection(&services, index, stream)
                            });
                        })
                    }
                };
                if let Err(e) = spawned {
                    tracing::warn!(listener = index, error = %e, "auth connection failed");
                }
                continue;
            }
            let admission = match self.services.admit(index, peer.client) {
                Ok(admission) => admission,
                Err(refusal) => {
                    // One short reply fits an empty socket buffer; if not, it is lost.
                    if let Some(reply) = refusal.reply {
                        let _ = stream.write(&reply);
                    }
                    continue;
                }
            };
            let Some(config) = self.services.session_config(index).cloned() else {
                continue;
            };
            let now = Instant::now();
            let (session, handler) = self.services.open_session(admission, peer, None, now);
            let mut conn = Conn::new(stream, session, handler, config.limits.command_timeout);
            let token = Token(self.next_token);
            self.next_token += 1;
            if config.tls == TlsMode::Implicit && !conn.start_tls(self.services.tls(), now) {
                self.finish(conn);
                continue;
            }
            if let Err(e) = self.poll.registry().register(
                &mut SourceFd(&conn.source()),
                token,
                Interest::READABLE,
            ) {
                tracing::warn!(error = %e, "cannot register a connection");
                self.finish(conn);
                continue;
            }
            self.conns.insert(token, conn);
            self.with_conn(token, |conn, cx| conn.drive(cx));
        }
    }

    /// Hands the answers from the workers to their sessions.
    fn answers(&mut self) {
        let now = Instant::now();
        let done: Vec<_> = self.pool.finished().collect();
        for done in done {
            let Some(conn) = self.conns.get_mut(&done.token) else {
                continue;
            };
            conn.handler = Some(done.handler);
            for answer in done.answers {
                answer.apply(&mut conn.session, now);
            }
            if conn.gone {
                if let Some(conn) = self.conns.remove(&done.token) {
                    self.finish(conn);
                }
                continue;
            }
            self.with_conn(done.token, |conn, cx| conn.drive(cx));
        }
    }

    /// Calls each connection whose deadline has passed.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, token)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.timer = None;
                self.with_conn(token, |conn, cx| conn.expire(cx));
            }
        }
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            for n in 0..self.listeners.len() {
                self.accept(n);
            }
        }
    }

    /// Stops accepting and asks every session to end.
    fn stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(Instant::now());
        for listener in &mut self.listeners {
            if let Some((_, socket)) = listener.take() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&socket.fd()));
            }
        }
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            self.with_conn(token, |conn, cx| conn.gone || conn.shutdown(cx));
        }
    }

    /// Runs `f` on a live connection, then keeps its registration and timer up to date, or
    /// ends it when `f` says it is over.
    fn with_conn(&mut self, token: Token, f: impl FnOnce(&mut Conn, &mut Cx) -> bool) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut cx = Cx {
            token,
            now: Instant::now(),
            scratch: &mut self.scratch,
            pool: &self.pool,
            tls: self.services.tls(),
        };
        let alive = f(conn, &mut cx);
        if !alive && !conn.gone {
            conn.shut();
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&conn.source()));
        }
        if conn.gone {
            if let Some(at) = conn.timer.take() {
                self.timers.remove(&(at, token));
            }
            if conn.handler.is_some()
                && let Some(conn) = self.conns.remove(&token)
            {
                self.finish(conn);
            }
            return;
        }

        let interest = conn.wanted_interest();
        if interest != conn.interest {
            conn.interest = interest;
            let _ = self
                .poll
                .registry()
                .reregister(&mut SourceFd(&conn.source()), token, interest);
        }
        let deadline = conn.deadline();
        if deadline != conn.timer {
            if let Some(at) = conn.timer {
                self.timers.remove(&(at, token));
            }
            if let Some(at) = deadline {
                self.timers.insert((at, token));
            }
            conn.timer = deadline;
        }
    }

    /// Hands an ended connection to a worker, which logs its end and drops what it held.
    fn finish(&self, conn: Conn) {
        let Conn {
            session, handler, ..
        } = conn;
        if let Some(handler) = handler {
            self.pool.submit(Job::Finish {
                handler,
                session: Box::new(session),
            });
        }
    }

    /// At exit: every connection still here ends; those whose handler is out are cut off.
    fn finish_all(&mut self) {
        for (_, conn) in std::mem::take(&mut self.conns) {
            self.finish(conn);
        }
    }
}
