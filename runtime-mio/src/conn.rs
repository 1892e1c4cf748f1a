//! One connection on the event loop: its socket, rustls driven by hand, its session and the
//! buffers between them.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Token};
use rustls::{ServerConfig, ServerConnection};
use tern_core::replay::Recorder as Session;
use tern_host::service::{Action, ConnectionHandler, Work};
use tern_host::tls::connection_info;

use crate::pool::{Job, Pool};

/// Input read ahead of a session that is not consuming (it waits for an answer or out an
/// AUTH failure delay), and output a client does not read, are capped here: reading stops
/// until they drain.
const MAX_PENDING: usize = 64 * 1024;
/// Work waiting for the handler to come back from a worker is capped by count (each piece is
/// at most one read's worth of message text); reading stops until it drains.
const MAX_QUEUED: usize = 16;

/// What the event loop needs while driving a connection.
pub(crate) struct Cx<'a> {
    pub(crate) token: Token,
    pub(crate) now: Instant,
    pub(crate) scratch: &'a mut [u8],
    pub(crate) pool: &'a Pool,
    pub(crate) tls: Option<&'a Arc<ServerConfig>>,
}

/// A plain connection: TCP or a Unix socket.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

pub(crate) struct Conn {
    stream: Stream,
    tls: Option<Box<ServerConnection>>,
    /// TLS came by STARTTLS, so the session is told when the handshake is done.
    starttls: bool,
    pub(crate) session: Session,
    /// `None` while a worker has it.
    pub(crate) handler: Option<ConnectionHandler>,
    queued: Vec<Work>,
    /// Plaintext from the client that the session has not consumed yet.
    input: Vec<u8>,
    /// Bytes for the socket written before TLS starts; TLS output waits inside rustls.
    output: Vec<u8>,
    /// The socket may have more to read (no WouldBlock since the last readable event).
    pub(crate) readable: bool,
    eof: bool,
    /// The session closed or the client went: flush what is left, then end.
    closing: bool,
    /// The socket is shut; only the handler is still awaited.
    pub(crate) gone: bool,
    command_timeout: Duration,
    handshake_deadline: Option<Instant>,
    write_deadline: Option<Instant>,
    pub(crate) interest: Interest,
    /// The deadline the loop's timer set holds for this connection.
    pub(crate) timer: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(
        stream: Stream,
        session: Session,
        handler: ConnectionHandler,
        command_timeout: Duration,
    ) -> Conn {
        Conn {
            stream,
            tls: None,
            starttls: false,
            session,
            handler: Some(handler),
            queued: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
            readable: true,
            eof: false,
            closing: false,
            gone: false,
            command_timeout,
            handshake_deadline: None,
            write_deadline: None,
            interest: Interest::READABLE,
            timer: None,
        }
    }

    /// Starts the server side of TLS (implicit TLS, or after the STARTTLS reply is queued);
    /// false when it cannot start and the connection must end.
    pub(crate) fn start_tls(&mut self, config: Option<&Arc<ServerConfig>>, now: Instant) -> bool {
        let Some(config) = config else {
            return false;
        };
        match ServerConnection::new(Arc::clone(config)) {
            Ok(mut tls) => {
                // Replies are small and bounded by the input limits; never refuse one.
                tls.set_buffer_limit(None);
                self.tls = Some(Box::new(tls));
                self.handshake_deadline = Some(now + self.command_timeout);
                true
            }
            Err(e) => {
                if let Some(handler) = &self.handler {
                    handler.tls_failed(&e);
                }
                false
            }
        }
    }

    /// Runs the session as far as it goes: outputs out, input in, reads until the socket
    /// would block. False when the connection is over.
    pub(crate) fn drive(&mut self, cx: &mut Cx) -> bool {
        if self.gone {
            return true;
        }
        loop {
            if !self.handshaking() && !self.take_outputs(cx) {
                return false;
            }
            if !self.queued.is_empty()
                && let Some(handler) = self.handler.take()
            {
                let works = std::mem::take(&mut self.queued);
                let token = cx.token;
                cx.pool.submit(Job::Work {
                    token,
                    handler,
                    works,
                });
            }
            if self.closing {
                break;
            }
            if !self.handshaking() && !self.input.is_empty() {
                let used = self.session.receive(cx.now, &self.input);
                self.input.drain(..used);
                if used > 0 {
                    continue;
                }
            }
            if self.eof {
                // Whatever was read before the end still gets its answers.
                if self.handler.is_some() && self.queued.is_empty() {
                    self.closing = true;
                }
                break;
            }
            if !self.wants_input() {
                break;
            }
            match self.read(cx) {
                Ok(true) => {}
                Ok(false) => {
                    self.readable = false;
                    break;
                }
                Err(e) => {
                    if self.handshaking()
                        && let Some(handler) = &self.handler
                    {
                        handler.tls_failed(&e);
                    }
                    let _ = self.flush();
                    return false;
                }
            }
        }
        if self.input.is_empty() {
            self.input = Vec::new();
        }
        if self.flush().is_err() {
            return false;
        }
        if self.pending_write() {
            self.write_deadline
                .get_or_insert(cx.now + self.command_timeout);
        } else {
            self.write_deadline = None;
            if self.closing {
                self.shut();
                return false;
            }
        }
        true
    }

    /// Handles the connection's deadline at `now`; false when the connection is over.
    pub(crate) fn expire(&mut self, cx: &mut Cx) -> bool {
        let passed = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= cx.now);
        if self.handshaking() && passed(self.handshake_deadline) {
            self.fail_handshake();
            return false;
        }
        if passed(self.write_deadline) {
            return false;
        }
        if !self.handshaking() && passed(self.session.poll_timeout()) {
            self.session.handle_timeout(cx.now);
        }
        self.drive(cx)
    }

    /// Asks the session to end for a server shutdown; a handshake in progress is cut off.
    pub(crate) fn shutdown(&mut self, cx: &mut Cx) -> bool {
        if self.handshaking() {
            self.fail_handshake();
            return false;
        }
        self.session.shutdown(cx.now);
        self.drive(cx)
    }

    /// When the loop must next call [`Conn::expire`].
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let session = if self.gone || self.closing {
            None
        } else if self.handshaking() {
            self.handshake_deadline
        } else {
            self.session.poll_timeout()
        };
        [session, self.write_deadline].into_iter().flatten().min()
    }

    /// The readiness to wait for.
    pub(crate) fn wanted_interest(&self) -> Interest {
        if self.pending_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// Shuts the socket down; the connection then only waits for its handler.
    pub(crate) fn shut(&mut self) {
        self.gone = true;
        let _ = match &self.stream {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// The socket, to register with the poll.
    pub(crate) fn source(&self) -> RawFd {
        match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    fn fail_handshake(&self) {
        if let Some(handler) = &self.handler {
            handler.tls_failed(&io::Error::from(io::ErrorKind::TimedOut));
        }
    }

    /// Turns the session's outputs into socket writes, TLS starts and queued work; false
    /// when TLS cannot start.
    fn take_outputs(&mut self, cx: &Cx) -> bool {
        while let Some(output) = self.session.poll_output() {
            match Action::from(output) {
                Action::Send(bytes) => match &mut self.tls {
                    Some(tls) => {
                        // Cannot fail: the buffer has no limit.
                        let _ = tls.writer().write_all(&bytes);
                    }
                    None => self.output.extend_from_slice(&bytes),
                },
                Action::StartTls => {
                    // What came in behind STARTTLS is plaintext injection; from here on the
                    // socket carries TLS, once the reply queued above is written.
                    self.input.clear();
                    self.starttls = true;
                    if !self.start_tls(cx.tls, cx.now) {
                        return false;
                    }
                }
                Action::Close => {
                    if let Some(tls) = &mut self.tls {
                        tls.send_close_notify();
                    }
                    self.closing = true;
                    return true;
                }
                Action::Work(work) => self.queued.push(work),
            }
        }
        true
    }

    fn wants_input(&self) -> bool {
        self.readable
            && self.input.len() < MAX_PENDING
            && self.output.len() < MAX_PENDING
            && self.queued.len() < MAX_QUEUED
            // The handler must be home to hear that the handshake finished.
            && !(self.handshaking() && self.handler.is_none())
    }

    /// Reads once from the socket into `input` (through rustls under TLS). Ok(false) when it
    /// would block.
    fn read(&mut self, cx: &mut Cx) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else {
            return match self.stream.read(cx.scratch) {
                Ok(0) => {
                    self.eof = true;
                    Ok(true)
                }
                Ok(n) => {
                    self.input.extend_from_slice(&cx.scratch[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
                Err(e) => Err(e),
            };
        };
        match tls.read_tls(&mut self.stream) {
            Ok(0) if tls.is_handshaking() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake eof",
                ));
            }
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        }
        let was_handshaking = tls.is_handshaking();
        let state = match tls.process_new_packets() {
            Ok(state) => state,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let plaintext = state.plaintext_bytes_to_read();
        if state.peer_has_closed() {
            self.eof = true;
        }
        if plaintext > 0 {
            let start = self.input.len();
            self.input.resize(start + plaintext, 0);
            tls.reader().read_exact(&mut self.input[start..])?;
        }
        if was_handshaking && !tls.is_handshaking() {
            let info = connection_info(tls);
            if let Some(handler) = &mut self.handler {
                handler.tls_established(info);
            }
            if self.starttls {
                self.session.handle_tls_established(cx.now);
            }
        }
        Ok(true)
    }

    /// Writes what it can without blocking: plaintext written before TLS first, then TLS.
    fn flush(&mut self) -> io::Result<()> {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.output.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output = Vec::new();
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn pending_write(&self) -> bool {
        !self.output.is_empty() || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
