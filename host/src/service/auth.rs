//! The `protocol = "dovecot-auth"` listener: tern in Dovecot's place, answering Postfix's
//! `smtpd_sasl_type = dovecot` (or any other auth client) from tern's accounts.
//!
//! [`serve_auth_connection`] drives one connection of the core [`Server`] machine with
//! blocking calls until the client leaves; a runtime runs it on a thread of its own per
//! accepted connection. A runtime that would rather drive the machine itself gets it from
//! [`open_auth`], with the [`AuthHandler`] that answers the machine's questions:
//! passwords are checked, and SCRAM keys looked up, exactly as for an SMTP session (the
//! shared functions in `connection.rs`), so both sides offer and accept the same things.
//!
//! Known limits: a connection ends only when the client closes it or breaks the protocol;
//! at shutdown the runtime does not wait for it (it holds no mail).

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tern_core::dovecot::{RequestId, RequestInfo, Server, ServerOutput};
use tern_core::sasl::{AuthVerdict, Credentials, Mechanism, ScramLookup, ScramNonce};

use super::connection::{AuthContext, authenticate, lookup_scram};
use super::{Admission, Services};
use crate::log::client_name;

/// The log's program name for the auth listener, as Dovecot's auth process is `auth`.
const LOG_AS: &str = "auth";

/// A connection a dovecot-auth listener accepted: a Unix socket, or TCP for Dovecot's
/// `inet_listener` style.
pub trait AuthStream: Read + Write {
    /// As `set_read_timeout` of the std streams.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// As `set_write_timeout` of the std streams.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

/// Serves one accepted connection of the dovecot-auth listener `listener` until the client
/// closes it (or breaks the protocol, or stops reading for `limits.command_timeout`).
/// Blocking: run it on a thread of its own. It takes its place in the listener's connection
/// limits itself; over the limit, the connection is closed at once without a word, as a
/// dovecot-auth client expects no SMTP reply.
///
/// The server's `CUID` comes from a counter in [`Services`], its `COOKIE` from the system's
/// random source, its `SPID` is this process's id.
pub fn serve_auth_connection<S: AuthStream>(services: &Arc<Services>, listener: usize, stream: S) {
    if let Some((server, mut handler)) = open_auth(services, listener) {
        drive(&mut handler, server, stream);
    }
}

/// For a runtime that drives the machine itself: the [`Server`] of a new connection on the
/// dovecot-auth listener `listener` (handshake queued, `CUID`, `COOKIE` and `SPID` filled in)
/// and the handler that answers its questions. `None` when the listener is not a
/// dovecot-auth one, the connection limits refuse it, or the random source fails (logged);
/// close the connection then.
pub fn open_auth(services: &Arc<Services>, listener: usize) -> Option<(Server, AuthHandler)> {
    if !services.is_dovecot_auth(listener) {
        return None;
    }
    let config = services.auth_server.clone()?;
    let admission = services.admit(listener, None).ok()?;
    let mut cookie = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut cookie) {
        services
            .log
            .write(LOG_AS, &format!("warning: random source: {e}"));
        return None;
    }
    let cuid = services.auth_connections.fetch_add(1, Ordering::Relaxed) + 1;
    let handler = AuthHandler {
        services: Arc::clone(services),
        _admission: admission,
    };
    Some((Server::new(config, cuid, cookie), handler))
}

/// Answers the questions of one dovecot-auth connection with blocking calls.
pub struct AuthHandler {
    services: Arc<Services>,
    /// Held for the connection's lifetime: its place in the connection limits.
    _admission: Admission,
}

impl AuthHandler {
    /// Checks credentials from an `AUTH` request and logs a failure (never the password).
    pub fn authenticate(&self, credentials: &Credentials, info: &RequestInfo) -> AuthVerdict {
        let context = AuthContext {
            client: parse_ip(info.remote_ip.as_deref()),
            local: parse_ip(info.local_ip.as_deref()),
            secured: info.secured,
        };
        authenticate(&self.services, credentials, &context, LOG_AS)
    }

    /// The SCRAM keys of `login` and a fresh random server nonce.
    pub fn lookup_scram(&self, login: &str) -> (ScramLookup, ScramNonce) {
        lookup_scram(&self.services, login)
    }

    /// Logs a failure the machine decided itself (on [`ServerOutput::Failed`]): a wrong
    /// SCRAM proof, an unknown SCRAM user, a malformed exchange; in the words of a wrong
    /// password.
    pub fn failed(&self, mechanism: Mechanism, info: &RequestInfo) {
        let client = client_name(parse_ip(info.remote_ip.as_deref()));
        self.services.log.write(
            LOG_AS,
            &format!(
                "warning: {client}: SASL {mechanism} authentication failed: \
                 authentication failure"
            ),
        );
    }

    /// Logs the end of a connection that broke the protocol (on [`ServerOutput::Close`]).
    pub fn protocol_error(&self) {
        self.services.log.write(
            LOG_AS,
            "warning: auth client broke the protocol, disconnecting",
        );
    }
}

/// The blocking loop around the machine: drain outputs, wake at its timer, feed input.
fn drive<S: AuthStream>(handler: &mut AuthHandler, mut server: Server, mut stream: S) {
    let timeout = handler.services.config.limits.command_timeout;
    // A client that stops reading must not hold the thread forever.
    if stream.set_write_timeout(Some(timeout)).is_err() {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(output) = server.poll_output() {
            let now = Instant::now();
            match output {
                ServerOutput::Send(bytes) => {
                    if stream
                        .write_all(&bytes)
                        .and_then(|()| stream.flush())
                        .is_err()
                    {
                        return;
                    }
                }
                ServerOutput::Authenticate {
                    id,
                    credentials,
                    info,
                } => {
                    let verdict = handler.authenticate(&credentials, &info);
                    server.handle_auth(now, id, verdict);
                }
                ServerOutput::LookupScram { id, login, .. } => {
                    answer_scram(handler, &mut server, id, &login);
                }
                ServerOutput::Failed {
                    mechanism, info, ..
                } => handler.failed(mechanism, &info),
                // The machine closes only on a broken protocol.
                ServerOutput::Close => {
                    handler.protocol_error();
                    return;
                }
            }
        }

        let now = Instant::now();
        if server.poll_timeout().is_some_and(|at| at <= now) {
            server.handle_timeout(now);
            continue;
        }
        if !pending.is_empty() && !server.is_waiting() {
            let used = server.receive(now, &pending);
            pending.drain(..used);
            if used > 0 {
                continue;
            }
        }

        // Wait for input, but no longer than the next held failure is due.
        let wait = server.poll_timeout().map(|at| {
            at.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        });
        if stream.set_read_timeout(wait).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if is_wait(&e) => {}
            Err(_) => return,
        }
        // A client pipelining far ahead of its answers is not followed further.
        if pending.len() > 4 * tern_core::dovecot::MAX_LINE {
            handler.protocol_error();
            return;
        }
    }
}

fn answer_scram(handler: &AuthHandler, server: &mut Server, id: RequestId, login: &str) {
    let (lookup, nonce) = handler.lookup_scram(login);
    server.handle_scram_lookup(Instant::now(), id, lookup, &nonce);
}

/// `rip=` / `lip=` as Postfix writes them; anything else is logged as `unknown`.
fn parse_ip(text: Option<&str>) -> Option<IpAddr> {
    text?.parse().ok()
}

fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl AuthStream for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, timeout)
    }
}

impl AuthStream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
}
