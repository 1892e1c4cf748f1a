//! The blocking runtime: one thread accepts on each listener, one thread runs each
//! connection, with `std::net` sockets and `rustls::StreamOwned` for TLS. A dovecot-auth
//! connection's thread runs `serve_auth_connection` from the host crate.
//!
//! Each connection thread reads with a socket timeout of at most [`POLL`], so it notices
//! the session's timers and a stop request within that time. On SIGTERM or SIGINT the
//! acceptors stop, every session is asked to shut down (idle ones close at once with 421,
//! ones inside a transaction finish it), and [`run`] returns once they are gone or
//! [`SHUTDOWN_GRACE`] has passed; a session still running then is cut off.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tern_core::replay::Recorder;
use tern_core::server::{Peer, TlsMode};
use tern_host::service::{
    Action, Bound, ConnectionHandler, Driver, SHUTDOWN_GRACE, Services, Socket, Step,
    handshake_deadline, serve_auth_connection,
};
use tern_host::tls::connection_info;

/// The longest a connection thread blocks in a read before it looks at the stop flag and
/// the session's timer again.
pub const POLL: Duration = Duration::from_millis(200);

/// Serves every bound listener until SIGTERM or SIGINT, then shuts down gracefully.
/// `ready` is called once the signal handlers are installed and the acceptors run.
pub fn run(services: Arc<Services>, bound: Vec<Bound>, ready: impl FnOnce()) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let active = Arc::new(AtomicUsize::new(0));

    let mut acceptors = Vec::new();
    let mut wake = Vec::new();
    for listener in bound {
        wake.push(wake_address(&listener.socket)?);
        let (services, stop, active) = (services.clone(), stop.clone(), active.clone());
        let acceptor = thread::Builder::new()
            .name(format!("accept-{}", listener.name))
            .spawn(move || accept_loop(&services, listener, &stop, &active))?;
        acceptors.push(acceptor);
    }
    ready();

    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(100));
    }
    // A blocking accept() does not see the flag; one connection of our own wakes it.
    for address in wake {
        address.connect();
    }
    for acceptor in acceptors {
        let _ = acceptor.join();
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE + POLL;
    while active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn accept_loop(
    services: &Arc<Services>,
    bound: Bound,
    stop: &Arc<AtomicBool>,
    active: &Arc<AtomicUsize>,
) {
    loop {
        let accepted = match &bound.socket {
            Socket::Tcp(listener) => listener.accept().map(|(stream, client)| {
                let local = stream.local_addr().ok().map(|a| a.ip());
                (
                    Plain::Tcp(stream),
                    Peer {
                        client: Some(client.ip()),
                        local,
                    },
                )
            }),
            Socket::Unix(listener) => listener
                .accept()
                .map(|(stream, _)| (Plain::Unix(stream), Peer::default())),
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(listener = %bound.name, error = %e, "accept failed");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };

        if services.is_dovecot_auth(bound.listener) {
            // An auth connection holds no mail: shutdown does not wait for it.
            let services = Arc::clone(services);
            let index = bound.listener;
            let spawned = thread::Builder::new()
                .name(format!("auth-{}", bound.name))
                .spawn(move || match stream {
                    Plain::Unix(stream) => serve_auth_connection(&services, index, stream),
                    Plain::Tcp(stream) => serve_auth_connection(&services, index, stream),
                });
            if let Err(e) = spawned {
                tracing::warn!(listener = %bound.name, error = %e, "cannot start a thread");
            }
            continue;
        }

        let admission = match services.admit(bound.listener, peer.client) {
            Ok(admission) => admission,
            Err(refusal) => {
                if let Some(reply) = refusal.reply {
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = stream.write_all(&reply);
                }
                continue;
            }
        };

        active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(Arc::clone(active));
        let (services, stop) = (Arc::clone(services), Arc::clone(stop));
        let index = bound.listener;
        let spawned = thread::Builder::new()
            .name(format!("conn-{}", bound.name))
            .spawn(move || {
                let _guard = guard;
                let now = Instant::now();
                let (mut session, mut handler) = services.open_session(admission, peer, None, now);
                serve(&services, index, &mut session, &mut handler, stream, &stop);
                handler.finish(&session);
            });
        if let Err(e) = spawned {
            tracing::warn!(listener = %bound.name, error = %e, "cannot start a thread");
        }
    }
}

/// Runs one connection until the session closes, the client goes away, or shutdown ends it.
fn serve(
    services: &Services,
    index: usize,
    session: &mut Recorder,
    handler: &mut ConnectionHandler,
    stream: Plain,
    stop: &AtomicBool,
) {
    let Some(config) = services.session_config(index).cloned() else {
        return;
    };
    // A client that stops reading must not hold the thread forever.
    let _ = stream.set_write_timeout(Some(config.limits.command_timeout));
    let mut conn = Conn::Plain(stream);

    if config.tls == TlsMode::Implicit {
        let deadline = handshake_deadline(session, &config, Instant::now());
        let (Some(tls), Conn::Plain(plain)) = (services.tls(), conn) else {
            return;
        };
        let stream = match handshake(plain, tls, deadline, stop) {
            Ok(stream) => stream,
            Err(e) => return handler.tls_failed(&e),
        };
        handler.tls_established(connection_info(&stream.conn));
        conn = Conn::Tls(Box::new(stream));
    }

    let mut driver = Driver::new();
    let mut buf = vec![0u8; 16 * 1024];
    // The socket's read timeout as last set: it is nearly always POLL, and setting it again
    // before every read would cost a system call each time.
    let mut read_timeout = None;
    loop {
        while let Some(output) = session.poll_output() {
            match Action::from(output) {
                Action::Send(bytes) => {
                    if conn.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Action::StartTls => {
                    driver.discard_input();
                    let deadline = handshake_deadline(session, &config, Instant::now());
                    if conn.flush().is_err() {
                        return;
                    }
                    let (Some(tls), Conn::Plain(plain)) = (services.tls(), conn) else {
                        return;
                    };
                    let stream = match handshake(plain, tls, deadline, stop) {
                        Ok(stream) => stream,
                        Err(e) => return handler.tls_failed(&e),
                    };
                    handler.tls_established(connection_info(&stream.conn));
                    conn = Conn::Tls(Box::new(stream));
                    // The handshake set timeouts of its own.
                    read_timeout = None;
                    session.handle_tls_established(Instant::now());
                }
                Action::Close => {
                    let _ = conn.flush();
                    conn.shutdown();
                    return;
                }
                Action::Work(work) => {
                    if let Some(answer) = handler.work(work) {
                        answer.apply(session, Instant::now());
                    }
                }
            }
        }
        if conn.flush().is_err() {
            return;
        }

        let now = Instant::now();
        let (until, read) = match driver.step(session, stop.load(Ordering::Relaxed), now) {
            Step::Outputs => continue,
            Step::End => return,
            Step::Wait { until, read } => (until, read),
        };
        let wait = until
            .map_or(POLL, |deadline| deadline.saturating_duration_since(now))
            .clamp(Duration::from_millis(1), POLL);
        if !read {
            thread::sleep(wait);
            continue;
        }
        if read_timeout != Some(wait) {
            if conn.set_read_timeout(wait).is_err() {
                return;
            }
            read_timeout = Some(wait);
        }
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => driver.input().extend_from_slice(&buf[..n]),
            Err(e) if is_wait(&e) => {}
            Err(_) => return,
        }
    }
}

/// Runs the server side of a TLS handshake on `plain`, giving up at `deadline` or on stop.
fn handshake(
    plain: Plain,
    tls: &Arc<ServerConfig>,
    deadline: Instant,
    stop: &AtomicBool,
) -> io::Result<StreamOwned<ServerConnection, Plain>> {
    let conn = ServerConnection::new(Arc::clone(tls)).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, plain);
    while stream.conn.is_handshaking() {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.sock.set_read_timeout((deadline - now).min(POLL))?;
        match stream.conn.complete_io(&mut stream.sock) {
            Ok(_) => {}
            Err(e) if is_wait(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(stream)
}

fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A plain connection: TCP or a Unix socket.
enum Plain {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The connection as the session sees it: plain, or TLS on top of plain.
enum Conn {
    Plain(Plain),
    Tls(Box<StreamOwned<ServerConnection, Plain>>),
}

impl Plain {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Plain::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Plain::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Plain::Tcp(s) => s.set_write_timeout(timeout),
            Plain::Unix(s) => s.set_write_timeout(timeout),
        }
    }
}

impl Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Plain::Tcp(s) => s.read(buf),
            Plain::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Plain::Tcp(s) => s.write(buf),
            Plain::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Plain::Tcp(s) => s.flush(),
            Plain::Unix(s) => s.flush(),
        }
    }
}

impl Conn {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.set_read_timeout(timeout),
            Conn::Tls(s) => s.sock.set_read_timeout(timeout),
        }
    }

    /// Ends the connection: a TLS close_notify first, then the socket is shut down.
    fn shutdown(&mut self) {
        let plain = match self {
            Conn::Plain(plain) => plain,
            Conn::Tls(stream) => {
                stream.conn.send_close_notify();
                let _ = stream.flush();
                &mut stream.sock
            }
        };
        let _ = match plain {
            Plain::Tcp(s) => s.shutdown(Shutdown::Both),
            Plain::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Counts a running connection thread until dropped.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where to connect to wake a listener's blocking accept.
enum WakeAddress {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl WakeAddress {
    fn connect(&self) {
        match self {
            WakeAddress::Tcp(addr) => {
                let _ = TcpStream::connect_timeout(addr, Duration::from_secs(1));
            }
            WakeAddress::Unix(path) => {
                let _ = UnixStream::connect(path);
            }
        }
    }
}

fn wake_address(socket: &Socket) -> io::Result<WakeAddress> {
    Ok(match socket {
        Socket::Tcp(listener) => {
            let mut addr = listener.local_addr()?;
            // A wildcard address cannot be connected to; its loopback can.
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            WakeAddress::Tcp(addr)
        }
        Socket::Unix(listener) => {
            let addr = listener.local_addr()?;
            let path = addr
                .as_pathname()
                .ok_or_else(|| io::Error::other("unnamed socket"))?;
            WakeAddress::Unix(path.to_owned())
        }
    })
}
