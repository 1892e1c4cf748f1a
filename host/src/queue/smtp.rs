//! One outbound SMTP connection: the core client session driven over a blocking
//! `TcpStream`, with rustls after STARTTLS.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tern_core::client::{Config, Message, Output, Report, Session, SessionError};

/// How long to wait for a TCP connection.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the session says next, once the I/O it asked for is done.
#[derive(Debug)]
pub(super) enum Event {
    /// Idle: send a message or quit.
    Ready,
    /// The text of the current message is wanted.
    MessageText,
    /// The outcome of the current message.
    Report(Report),
    /// The connection is over, with the error if it failed.
    Closed(Option<SessionError>),
}

/// A connection to one server.
pub(super) struct Connection {
    session: Session,
    stream: Stream,
    tls: Arc<ClientConfig>,
    host: String,
    input: Vec<u8>,
    /// Outputs that came while the text streamed, returned first by `next_event`.
    pending: VecDeque<Output>,
    closed: bool,
}

/// A connected socket for [`Connection::new`].
pub(super) enum Transport {
    /// TCP, where STARTTLS may follow.
    Tcp(TcpStream),
    /// A Unix socket (an LMTP server on this host).
    Unix(UnixStream),
}

enum Stream {
    Plain(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

impl Connection {
    /// Starts a session over a connected stream; `host` is the name TLS checks.
    pub fn new(
        config: Arc<Config>,
        transport: Transport,
        tls: Arc<ClientConfig>,
        host: &str,
    ) -> io::Result<Connection> {
        let session = Session::new(config, Instant::now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Connection {
            session,
            stream: match transport {
                Transport::Tcp(tcp) => Stream::Plain(tcp),
                Transport::Unix(unix) => Stream::Unix(unix),
            },
            tls,
            host: host.to_owned(),
            input: Vec::new(),
            pending: VecDeque::new(),
            closed: false,
        })
    }

    /// The session, for its extensions and TLS state.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Runs the conversation until the session needs the caller.
    pub fn next_event(&mut self) -> Event {
        loop {
            while let Some(output) = self
                .pending
                .pop_front()
                .or_else(|| self.session.poll_output())
            {
                match output {
                    Output::Send(bytes) => {
                        if self.write(&bytes).is_err() {
                            self.session.handle_eof(Instant::now());
                        }
                    }
                    Output::StartTls => self.start_tls(),
                    Output::Ready => return Event::Ready,
                    Output::MessageText => return Event::MessageText,
                    Output::Report(report) => return Event::Report(report),
                    Output::Error(_) => {}
                    Output::Close => {
                        self.close();
                        return Event::Closed(self.session.error().cloned());
                    }
                }
            }
            if self.closed {
                return Event::Closed(self.session.error().cloned());
            }
            self.read_some();
        }
    }

    /// Starts `message`; the session answers with events.
    pub fn start_message(&mut self, message: Message) -> Result<(), String> {
        self.session
            .start_message(Instant::now(), message)
            .map_err(|e| e.to_string())
    }

    /// Streams the message text (LF line ends in `reader`, sent as CRLF) and ends it. Fails
    /// only when `reader` does; the caller then quits, which fails the message temporarily.
    pub fn send_text(&mut self, prefix: &[u8], reader: &mut impl Read) -> io::Result<()> {
        let now = Instant::now();
        self.session.handle_message_text(now, &lf_to_crlf(prefix));
        // A failed write has ended the session, which the next event reports.
        if self.flush_sends().is_err() {
            return Ok(());
        }
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.session
                .handle_message_text(Instant::now(), &lf_to_crlf(&buf[..n]));
            if self.flush_sends().is_err()
                || !self.session.wants_message_text()
                || !self.pending.is_empty()
            {
                return Ok(());
            }
        }
        self.session.handle_message_end(Instant::now());
        Ok(())
    }

    /// Gives up on the message in progress: it fails temporarily and the session ends.
    pub fn abort(&mut self) {
        self.session.quit(Instant::now());
    }

    /// Says QUIT (or aborts) and waits for the end.
    pub fn quit(mut self) {
        self.session.quit(Instant::now());
        while !matches!(self.next_event(), Event::Closed(_)) {
            self.session.quit(Instant::now());
        }
    }

    /// Writes what the session has queued, without reading; anything else it says is kept
    /// for `next_event`. A write failure ends the session.
    fn flush_sends(&mut self) -> io::Result<()> {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Send(bytes) => {
                    if let Err(e) = self.write(&bytes) {
                        self.session.handle_eof(Instant::now());
                        return Err(e);
                    }
                }
                other => self.pending.push_back(other),
            }
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.write_all(bytes),
            Stream::Unix(unix) => unix.write_all(bytes),
            Stream::Tls(tls) => tls.write_all(bytes).and_then(|()| tls.flush()),
            Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn read_some(&mut self) {
        if !self.input.is_empty() {
            let used = self.session.receive(Instant::now(), &self.input);
            self.input.drain(..used);
            if used > 0 {
                return;
            }
        }
        let now = Instant::now();
        let timeout = self
            .session
            .poll_timeout()
            .map_or(Duration::from_secs(300), |deadline| {
                deadline.saturating_duration_since(now)
            });
        if timeout.is_zero() {
            self.session.handle_timeout(now);
            return;
        }
        let mut buf = [0u8; 8192];
        let result = match &mut self.stream {
            Stream::Plain(tcp) => tcp
                .set_read_timeout(Some(timeout))
                .and_then(|()| tcp.read(&mut buf)),
            Stream::Unix(unix) => unix
                .set_read_timeout(Some(timeout))
                .and_then(|()| unix.read(&mut buf)),
            Stream::Tls(tls) => tls
                .sock
                .set_read_timeout(Some(timeout))
                .and_then(|()| tls.read(&mut buf)),
            Stream::Gone => Ok(0),
        };
        match result {
            Ok(0) => self.session.handle_eof(Instant::now()),
            Ok(n) => {
                self.input.extend_from_slice(&buf[..n]);
                let used = self.session.receive(Instant::now(), &self.input);
                self.input.drain(..used);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.session.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.session.handle_eof(Instant::now()),
        }
    }

    fn start_tls(&mut self) {
        // RFC 3207 section 4.2: what came in the clear after the 220 is not kept.
        self.input.clear();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            // Never asked for: local transports run without TLS.
            self.session.handle_tls_failed(Instant::now());
            return;
        };
        let name = ServerName::try_from(self.host.clone())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a valid name"));
        let handshake = ClientConnection::new(Arc::clone(&self.tls), name).and_then(|conn| {
            let mut stream = StreamOwned::new(conn, tcp);
            let _ = stream.sock.set_read_timeout(Some(Duration::from_secs(60)));
            while stream.conn.is_handshaking() {
                stream
                    .conn
                    .complete_io(&mut stream.sock)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            }
            Ok(stream)
        });
        match handshake {
            Ok(stream) => {
                self.stream = Stream::Tls(Box::new(stream));
                self.session.handle_tls_established(Instant::now());
            }
            Err(_) => self.session.handle_tls_failed(Instant::now()),
        }
    }

    fn close(&mut self) {
        self.closed = true;
        match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(tcp) => {
                let _ = tcp.shutdown(Shutdown::Both);
            }
            Stream::Unix(unix) => {
                let _ = unix.shutdown(Shutdown::Both);
            }
            Stream::Tls(mut tls) => {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let _ = tls.sock.shutdown(Shutdown::Both);
            }
            Stream::Gone => {}
        }
    }
}

/// Turns LF line ends into CRLF. The queue stores LF only (a bare CR never got in), so this
/// gives back the text as it came off the wire.
pub(super) fn lf_to_crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    let mut rest = text;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out
}
