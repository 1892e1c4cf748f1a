//! The smol runtime: one async task per connection on a multi-threaded `smol::Executor`
//! (one thread per core), `async-io` sockets and timers, and `futures-rustls` for TLS.
//!
//! Every [`Work`] of a session (password hashing, spool and Maildir writes, fsync, DNS)
//! runs on the `blocking` thread pool through `smol::unblock`, never on an executor thread;
//! consecutive ones go together in one call. A message's start and its pieces of text need
//! no answer, so they wait until [`TEXT_BATCH`] octets have gathered or other work follows:
//! a message costs a hand-off per 64 KiB and one at its end, rather than one per read. The
//! few log lines written at connect, STARTTLS and refusal are plain appends and stay on the
//! executor.
//!
//! An idle plain session holds no read buffer: it borrows [`READ_SIZE`] octets for a read
//! and gives them back when the read would block, before it waits for readability. On
//! SIGTERM or SIGINT the acceptors stop, every session is asked to shut down (idle ones
//! close at once with 421, ones inside a transaction finish it), and [`run`] returns once
//! they are gone or [`SHUTDOWN_GRACE`] has passed.

use std::future::Future;
use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use smol::channel::{self, Receiver, Sender};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use smol::{Async, Executor, Timer};
use tern_core::replay::Recorder;
use tern_core::server::{Peer, TlsMode};
use tern_host::service::{
    Action, Admission, Answer, Bound, ConnectionHandler, Driver, SHUTDOWN_GRACE, Services, Socket,
    Step, Work, handshake_deadline, serve_auth_connection,
};
use tern_host::tls::connection_info;

/// How much a session reads at a time; more is borrowed only while input keeps coming.
pub const READ_SIZE: usize = 4096;

/// How much message text a session holds back before handing it to the blocking pool (see
/// [`Work::deferrable_len`]).
/// Each hand-off wakes a pool thread and then the session's task again; done per read, the
/// two wake-ups cost more than writing the text (which mostly lands in the spool's buffer).
pub const TEXT_BATCH: usize = 64 * 1024;

/// How many reads in a row may find input already waiting before the session's task yields
/// to the others on its executor thread.
const FAIR_READS: u32 = 16;

/// How long a refused connection gets to take its 421.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves every bound listener until SIGTERM or SIGINT, then shuts down gracefully.
/// `ready` is called once the signal handlers are installed and the acceptors run.
pub fn run(services: Arc<Services>, bound: Vec<Bound>, ready: impl FnOnce()) -> io::Result<()> {
    let signals = signal_pipe()?;
    let executor = Arc::new(Executor::new());
    let (quit, quitting) = channel::bounded::<()>(1);
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let mut helpers = Vec::new();
    for n in 1..threads {
        let (executor, quitting) = (Arc::clone(&executor), quitting.clone());
        let helper = thread::Builder::new()
            .name(format!("smol-{n}"))
            .spawn(move || smol::block_on(executor.run(quitting.recv())))?;
        helpers.push(helper);
    }
    let main = serve_all(Arc::clone(&executor), services, bound, signals, ready);
    let result = smol::block_on(executor.run(main));
    drop(quit);
    for helper in helpers {
        let _ = helper.join();
    }
    result
}

async fn serve_all(
    executor: Arc<Executor<'static>>,
    services: Arc<Services>,
    bound: Vec<Bound>,
    signals: Async<UnixStream>,
    ready: impl FnOnce(),
) -> io::Result<()> {
    // Nothing is ever sent on these: closing `stop` tells every task to stop, and `alive`
    // closes once the last task holding a sender is gone.
    let (stop_sender, stop) = channel::bounded::<()>(1);
    let (alive, all_gone) = channel::bounded::<()>(1);
    let mut acceptors = Vec::new();
    for listener in bound {
        let index = listener.listener;
        let socket = match listener.socket {
            Socket::Tcp(socket) => Listener::Tcp(Async::new(socket)?),
            Socket::Unix(socket) => Listener::Unix(Async::new(socket)?),
        };
        let accept = accept_loop(
            Arc::clone(&executor),
            Arc::clone(&services),
            (index, listener.name, socket),
            stop.clone(),
            alive.clone(),
        );
        acceptors.push(executor.spawn(accept));
    }
    drop(alive);
    ready();

    signals.readable().await?;
    drop(stop_sender);
    for acceptor in acceptors {
        acceptor.await;
    }
    // Sessions end themselves SHUTDOWN_GRACE after the stop; the margin lets them log.
    let _ = all_gone
        .recv()
        .or(async {
            Timer::after(SHUTDOWN_GRACE + Duration::from_secs(1)).await;
            Ok(())
        })
        .await;
    Ok(())
}

async fn accept_loop(
    executor: Arc<Executor<'static>>,
    services: Arc<Services>,
    (index, name, listener): (usize, String, Listener),
    stop: Receiver<()>,
    alive: Sender<()>,
) {
    if services.is_dovecot_auth(index) {
        return auth_accept_loop(services, index, listener, stop).await;
    }
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                let _ = stop.recv().await;
                None
            })
            .await;
        let (stream, peer) = match accepted {
            None => return,
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let task = match services.admit(index, peer.client) {
            Ok(admission) => {
                let (services, stop, alive) = (Arc::clone(&services), stop.clone(), alive.clone());
                let serve = connection(services, index, admission, peer, stream, stop, alive);
                executor.spawn(serve)
            }
            Err(refusal) => executor.spawn(async move {
                let mut stream = stream;
                if let Some(reply) = refusal.reply {
                    let _ = timeout(REFUSAL_TIMEOUT, stream.write_all(&reply)).await;
                }
            }),
        };
        task.detach();
    }
}

/// Accepts on a `dovecot-auth` listener: each connection is served by the host's blocking
/// driver on a thread of its own (it admits itself), as Postfix keeps only a few of them open.
async fn auth_accept_loop(
    services: Arc<Services>,
    index: usize,
    listener: Listener,
    stop: Receiver<()>,
) {
    loop {
        let accepted = async { Some(listener.accept_std().await) }
            .or(async {
                let _ = stop.recv().await;
                None
            })
            .await;
        let services = Arc::clone(&services);
        match accepted {
            None => return,
            Some(Ok(AuthConn::Unix(stream))) => {
                thread::spawn(move || serve_auth_connection(&services, index, stream));
            }
            Some(Ok(AuthConn::Tcp(stream))) => {
                thread::spawn(move || serve_auth_connection(&services, index, stream));
            }
            Some(Err(e)) => {
                tracing::warn!(listener = index, error = %e, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one admitted connection to its end and logs its disconnect.
async fn connection(
    services: Arc<Services>,
    index: usize,
    admission: Admission,
    peer: Peer,
    stream: Conn,
    stop: Receiver<()>,
    _alive: Sender<()>,
) {
    let (mut session, handler) = services.open_session(admission, peer, None, Instant::now());
    let mut held = Vec::new();
    let mut handler = serve(
        &services,
        index,
        &mut session,
        handler,
        stream,
        &stop,
        &mut held,
    )
    .await;
    // Dropping an unfinished message removes its spool file: file system work too. Work
    // still held back is done first, so the handler sees every piece as it would have.
    smol::unblock(move || {
        for work in held {
            handler.work(work);
        }
        handler.finish(&session);
    })
    .await;
}

/// Runs one connection until the session closes, the client goes away, or shutdown ends
/// it; hands the handler back for [`ConnectionHandler::finish`], and leaves in `held` the
/// work it was holding back (a message's start and text) for the handler to do first.
async fn serve(
    services: &Services,
    index: usize,
    session: &mut Recorder,
    mut handler: ConnectionHandler,
    stream: Conn,
    stop: &Receiver<()>,
    held: &mut Vec<Work>,
) -> ConnectionHandler {
    let Some(config) = services.session_config(index).cloned() else {
        return handler;
    };
    // A client that stops reading must not hold its session forever.
    let write_timeout = config.limits.command_timeout;
    let mut conn = stream;
    if config.tls == TlsMode::Implicit {
        let deadline = handshake_deadline(session, &config, Instant::now());
        match start_tls(conn, services, &mut handler, deadline, stop).await {
            Some(tls) => conn = tls,
            None => return handler,
        }
    }

    let mut driver = Driver::new();
    let mut next: Option<Action> = None;
    let mut streak = 0;
    loop {
        while let Some(action) = next
            .take()
            .or_else(|| session.poll_output().map(Action::from))
        {
            match action {
                Action::Send(bytes) => {
                    if timeout(write_timeout, conn.write_all(&bytes))
                        .await
                        .is_err()
                    {
                        return handler;
                    }
                }
                Action::StartTls => {
                    driver.discard_input();
                    let deadline = handshake_deadline(session, &config, Instant::now());
                    if timeout(write_timeout, conn.flush()).await.is_err() {
                        return handler;
                    }
                    match start_tls(conn, services, &mut handler, deadline, stop).await {
                        Some(tls) => conn = tls,
                        None => return handler,
                    }
                    session.handle_tls_established(Instant::now());
                }
                Action::Close => {
                    let _ = timeout(write_timeout, conn.close()).await;
                    conn.shutdown();
                    return handler;
                }
                Action::Work(work) => {
                    let mut batch = std::mem::take(held);
                    batch.push(work);
                    loop {
                        match session.poll_output().map(Action::from) {
                            Some(Action::Work(work)) => batch.push(work),
                            other => break next = other,
                        }
                    }
                    let text: Option<usize> = batch.iter().map(Work::deferrable_len).sum();
                    if text.is_some_and(|len| len < TEXT_BATCH) {
                        *held = batch;
                        continue;
                    }
                    let answers;
                    (handler, answers) = unblock_work(handler, batch).await;
                    for answer in answers {
                        answer.apply(session, Instant::now());
                    }
                }
            }
        }
        if timeout(write_timeout, conn.flush()).await.is_err() {
            return handler;
        }

        let (until, read) = match driver.step(session, stop.is_closed(), Instant::now()) {
            Step::Outputs => continue,
            Step::End => return handler,
            Step::Wait { until, read } => (until, read),
        };
        let stopping = driver.is_stopping();
        let input = async {
            if !read {
                future::pending::<()>().await;
            }
            Some(read_into(&mut conn, driver.input(), &mut streak).await)
        };
        let timer = async {
            until.map_or_else(Timer::never, Timer::at).await;
            None
        };
        let stopped = async {
            if stopping {
                future::pending::<()>().await;
            }
            let _ = stop.recv().await;
            None
        };
        if let Some(Ok(0) | Err(_)) = input.or(timer).or(stopped).await {
            return handler;
        }
    }
}

/// Runs the TLS handshake on `conn` and tells the handler how it went; `None` when it failed
/// or no certificate is configured.
async fn start_tls(
    conn: Conn,
    services: &Services,
    handler: &mut ConnectionHandler,
    deadline: Instant,
    stop: &Receiver<()>,
) -> Option<Conn> {
    let tls = services.tls()?;
    let give_up = async {
        Timer::at(deadline)
            .or(async {
                let _ = stop.recv().await;
                Instant::now()
            })
            .await;
        Err(io::ErrorKind::TimedOut.into())
    };
    match TlsAcceptor::from(Arc::clone(tls))
        .accept(conn)
        .or(give_up)
        .await
    {
        Ok(stream) => {
            handler.tls_established(connection_info(stream.get_ref().1));
            Some(Box::new(stream))
        }
        Err(e) => {
            handler.tls_failed(&e);
            None
        }
    }
}

/// Does a batch of work on the blocking pool, in order, and collects the answers.
async fn unblock_work(
    mut handler: ConnectionHandler,
    batch: Vec<Work>,
) -> (ConnectionHandler, Vec<Answer>) {
    smol::unblock(move || {
        let answers = batch.into_iter().filter_map(|w| handler.work(w)).collect();
        (handler, answers)
    })
    .await
}

/// Gives up on `work` with `TimedOut` after `limit`.
async fn timeout<T>(limit: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    work.or(async {
        Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// The read end of a pipe that SIGTERM and SIGINT write to: readable once one came.
fn signal_pipe() -> io::Result<Async<UnixStream>> {
    let (read, write) = UnixStream::pair()?;
    write.set_nonblocking(true)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Async::new(read)
}

enum Listener {
    Tcp(Async<TcpListener>),
    Unix(Async<UnixListener>),
}

/// A `dovecot-auth` connection, back in blocking mode for the host's driver.
enum AuthConn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Listener {
    async fn accept_std(&self) -> io::Result<AuthConn> {
        Ok(match self {
            Listener::Tcp(listener) => {
                let stream = listener.accept().await?.0.into_inner()?;
                stream.set_nonblocking(false)?;
                AuthConn::Tcp(stream)
            }
            Listener::Unix(listener) => {
                let stream = listener.accept().await?.0.into_inner()?;
                stream.set_nonblocking(false)?;
                AuthConn::Unix(stream)
            }
        })
    }

    async fn accept(&self) -> io::Result<(Conn, Peer)> {
        Ok(match self {
            Listener::Tcp(listener) => {
                let (stream, client) = listener.accept().await?;
                let local = stream.get_ref().local_addr().ok().map(|a| a.ip());
                let peer = Peer {
                    client: Some(client.ip()),
                    local,
                };
                (Box::new(stream), peer)
            }
            Listener::Unix(listener) => (Box::new(listener.accept().await?.0), Peer::default()),
        })
    }
}

/// A connection: TCP or a Unix socket, or TLS on top of one.
type Conn = Box<dyn Stream>;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {
    /// Ready when a read would not block; TLS may hold decrypted input, so it always is.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ends the socket after `close` sent what was left (and a TLS close_notify).
    fn shutdown(&self);

    /// Reads what has arrived without waiting (`WouldBlock` if nothing has); `None` under
    /// TLS, whose reads are awaited.
    fn read_now(&self, buf: &mut [u8]) -> Option<io::Result<usize>>;
}

impl Stream for Async<TcpStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_readable(self, cx)
    }

    fn shutdown(&self) {
        let _ = self.get_ref().shutdown(Shutdown::Both);
    }

    fn read_now(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        Some(Read::read(&mut self.get_ref(), buf))
    }
}

impl Stream for Async<UnixStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_readable(self, cx)
    }

    fn shutdown(&self) {
        let _ = self.get_ref().shutdown(Shutdown::Both);
    }

    fn read_now(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        Some(Read::read(&mut self.get_ref(), buf))
    }
}

impl Stream for TlsStream<Conn> {
    fn poll_readable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn shutdown(&self) {
        self.get_ref().0.shutdown();
    }

    fn read_now(&self, _: &mut [u8]) -> Option<io::Result<usize>> {
        None
    }
}

/// Appends what the client sent next to `pending`; 0 at end of input. An idle plain
/// connection waits without a buffer.
///
/// A plain connection tries the read first and waits for readability only when it would
/// block: waiting first costs a trip through the reactor (an `epoll_ctl` and a wake-up) for
/// every read, even when the input is already there, as it is all through a message's text.
/// `streak` counts the reads that found input waiting; after [`FAIR_READS`] of them the task
/// yields once, so a client that never lets its socket run dry cannot hold an executor
/// thread.
async fn read_into(conn: &mut Conn, pending: &mut Vec<u8>, streak: &mut u32) -> io::Result<usize> {
    if *streak >= FAIR_READS {
        *streak = 0;
        future::yield_now().await;
    }
    let start = pending.len();
    loop {
        pending.resize(start + READ_SIZE, 0);
        let mut fill = Truncate(pending, start);
        let read = match conn.read_now(&mut fill.0[start..]) {
            Some(read) => read,
            None => conn.read(&mut fill.0[start..]).await,
        };
        match read {
            Ok(n) => {
                fill.1 += n;
                *streak += 1;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            Err(_) => {}
        }
        drop(fill);
        if pending.is_empty() {
            *pending = Vec::new();
        }
        *streak = 0;
        future::poll_fn(|cx| conn.poll_readable(cx)).await?;
    }
}

/// Cuts a buffer back to a length on drop: the room a read did not fill goes also when the
/// read is abandoned for a timer.
struct Truncate<'a>(&'a mut Vec<u8>, usize);

impl Drop for Truncate<'_> {
    fn drop(&mut self) {
        self.0.truncate(self.1);
    }
}
