//! A running Dovecot as tern's account source (`[accounts] dovecot_auth` and
//! `dovecot_userdb`), asked with blocking calls on Unix sockets.
//!
//! Passwords are checked with the core [`Client`] machine on Dovecot's auth-client socket;
//! users are looked up on its auth-userdb socket (the auth-master protocol's `USER`
//! command). Each check opens its own connection and closes it after the answer: no pool.
//! That costs one `connect` and a handshake (two short lines each way) per AUTH or RCPT,
//! which is small next to a password hash, and means a restarted Dovecot is picked up
//! at once. Any failure to reach Dovecot, or a broken answer, is a temporary failure, never
//! a success.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use tern_core::dovecot::{AuthRequest, AuthResult, Client, ClientConfig, ClientOutput};
use tern_core::dovecot::{escape, unescape};

/// How long a check may take before Dovecot counts as unreachable.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the Dovecot auth-client socket at `socket` whether `request`'s password is right,
/// with PLAIN and `service=smtp`. An `OK` that carries `nologin` is a failure.
pub fn check_password(socket: &Path, request: AuthRequest, timeout: Duration) -> AuthResult {
    match run_client(socket, request, timeout) {
        Ok(result) => result,
        Err(e) => AuthResult::TempFail {
            reason: Some(format!("{}: {e}", socket.display())),
        },
    }
}

/// Dovecot's answer to a userdb lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLookup {
    /// The user exists; `user` is the name Dovecot gave back, `fields` its userdb fields
    /// (`home`, `uid`, `gid`, ...), unescaped.
    Found {
        /// The canonical user name.
        user: String,
        /// The userdb fields, `name=value` split at the first `=`; a bare flag has an empty
        /// value.
        fields: Vec<(String, String)>,
    },
    /// No such user.
    NotFound,
    /// Dovecot could not answer (`FAIL`, unreachable, a broken reply); the reason is for
    /// the log.
    TempFail(String),
}

/// Looks `user` up on the Dovecot auth-userdb socket at `socket` (`USER` with
/// `service=smtp`).
pub fn lookup_user(socket: &Path, user: &str, timeout: Duration) -> UserLookup {
    match run_userdb(socket, user, timeout) {
        Ok(lookup) => lookup,
        Err(e) => UserLookup::TempFail(format!("{}: {e}", socket.display())),
    }
}

fn run_client(socket: &Path, request: AuthRequest, timeout: Duration) -> io::Result<AuthResult> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(timeout))?;
    let now = Instant::now();
    let mut config = ClientConfig::new(std::process::id());
    config.timeout = timeout;
    let mut client = Client::new(config, now);
    let id = client.authenticate(now, request);
    let mut buf = [0u8; 4096];
    loop {
        while let Some(output) = client.poll_output() {
            match output {
                ClientOutput::Send(bytes) => {
                    if let Err(e) = stream.write_all(&bytes) {
                        client.handle_eof();
                        tracing::debug!(error = %e, "write to the Dovecot auth socket failed");
                    }
                }
                ClientOutput::Result { id: done, result } if done == id => return Ok(result),
                ClientOutput::Ready { .. } | ClientOutput::Result { .. } => {}
                ClientOutput::Error(error) => tracing::debug!(%error, "Dovecot auth connection"),
                ClientOutput::Close => {}
            }
        }
        let now = Instant::now();
        let Some(deadline) = client.poll_timeout() else {
            // Closed without an answer; the machine always answers first, so this is only
            // a safety net.
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        if deadline <= now {
            client.handle_timeout(now);
            continue;
        }
        stream.set_read_timeout(Some(deadline - now))?;
        match stream.read(&mut buf) {
            Ok(0) => client.handle_eof(),
            Ok(n) => {
                client.receive(Instant::now(), &buf[..n]);
            }
            Err(e) if is_wait(&e) => client.handle_timeout(Instant::now()),
            Err(_) => client.handle_eof(),
        }
    }
}

/// The auth-master protocol is simple enough that a line exchange does it: both sides send
/// `VERSION 1 x`, the server adds `SPID`, then one `USER` gets one answer.
fn run_userdb(socket: &Path, user: &str, timeout: Duration) -> io::Result<UserLookup> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = b"VERSION\t1\t0\nUSER\t1\t".to_vec();
    request.extend(escape(user.as_bytes()));
    request.extend_from_slice(b"\tservice=smtp\n");
    stream.write_all(&request)?;

    let deadline = Instant::now() + timeout;
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    let mut version_seen = false;
    loop {
        while let Some(end) = memchr::memchr(b'\n', &input) {
            let line: Vec<u8> = input.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            match parse_userdb_line(line, version_seen) {
                UserdbLine::Version => version_seen = true,
                UserdbLine::Skip => {}
                UserdbLine::Answer(lookup) => return Ok(lookup),
                UserdbLine::Broken(what) => return Ok(UserLookup::TempFail(what)),
            }
        }
        if input.len() > tern_core::dovecot::MAX_LINE {
            return Ok(UserLookup::TempFail("overlong line from userdb".into()));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(deadline - now))?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if is_wait(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum UserdbLine {
    Version,
    Skip,
    Answer(UserLookup),
    Broken(String),
}

/// One line from the auth-userdb socket, for our single request with id 1.
fn parse_userdb_line(line: &[u8], version_seen: bool) -> UserdbLine {
    let fields: Vec<Vec<u8>> = line.split(|&b| b == b'\t').map(unescape).collect();
    let command = fields[0].as_slice();
    let id_ok = fields.get(1).map(Vec::as_slice) == Some(b"1");
    match command {
        b"VERSION" if fields.get(1).map(Vec::as_slice) == Some(b"1") => UserdbLine::Version,
        b"VERSION" => UserdbLine::Broken("userdb speaks another protocol version".into()),
        _ if !version_seen => UserdbLine::Broken("userdb sent no VERSION".into()),
        b"USER" if id_ok && fields.len() >= 3 => {
            let user = String::from_utf8_lossy(&fields[2]).into_owned();
            let fields = fields[3..]
                .iter()
                .map(|f| {
                    let f = String::from_utf8_lossy(f);
                    let (name, value) = f.split_once('=').unwrap_or((&f, ""));
                    (name.to_owned(), value.to_owned())
                })
                .collect();
            UserdbLine::Answer(UserLookup::Found { user, fields })
        }
        b"NOTFOUND" if id_ok => UserdbLine::Answer(UserLookup::NotFound),
        b"FAIL" if id_ok => {
            let reason = fields[2..]
                .iter()
                .find_map(|f| f.strip_prefix(b"reason="))
                .map_or("userdb lookup failed".into(), |r| {
                    String::from_utf8_lossy(r).into_owned()
                });
            UserdbLine::Answer(UserLookup::TempFail(reason))
        }
        b"USER" | b"NOTFOUND" | b"FAIL" => UserdbLine::Broken("malformed userdb reply".into()),
        // SPID, and whatever newer servers add.
        _ => UserdbLine::Skip,
    }
}

fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;
    use std::thread;

    use tern_core::sasl::Secret;

    use super::*;

    #[test]
    fn userdb_lines_are_read_as_dovecot_writes_them() {
        assert_eq!(
            parse_userdb_line(b"VERSION\t1\t1", false),
            UserdbLine::Version
        );
        assert!(matches!(
            parse_userdb_line(b"VERSION\t2\t0", false),
            UserdbLine::Broken(_)
        ));
        assert!(matches!(
            parse_userdb_line(b"NOTFOUND\t1", false),
            UserdbLine::Broken(_)
        ));
        assert_eq!(parse_userdb_line(b"SPID\t123", true), UserdbLine::Skip);
        assert_eq!(
            parse_userdb_line(b"USER\t1\tbob\thome=/h/b\x01tx\tuid=10\tnologin", true),
            UserdbLine::Answer(UserLookup::Found {
                user: "bob".into(),
                fields: vec![
                    ("home".into(), "/h/b\tx".into()),
                    ("uid".into(), "10".into()),
                    ("nologin".into(), String::new()),
                ],
            })
        );
        assert_eq!(
            parse_userdb_line(b"NOTFOUND\t1", true),
            UserdbLine::Answer(UserLookup::NotFound)
        );
        assert_eq!(
            parse_userdb_line(b"FAIL\t1\treason=db down", true),
            UserdbLine::Answer(UserLookup::TempFail("db down".into()))
        );
        assert!(matches!(
            parse_userdb_line(b"USER\t2\tbob", true),
            UserdbLine::Broken(_)
        ));
    }

    /// A one-connection fake server: answers each line it gets with `reply(line)`.
    fn fake(
        dir: &Path,
        greeting: &'static str,
        reply: fn(&str) -> Option<String>,
    ) -> std::path::PathBuf {
        let path = dir.join("sock");
        let listener = UnixListener::bind(&path).unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            writer.write_all(greeting.as_bytes()).unwrap();
            for line in io::BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if let Some(answer) = reply(&line) {
                    writer.write_all(answer.as_bytes()).unwrap();
                }
            }
        });
        path
    }

    #[test]
    fn a_userdb_lookup_sends_dovecots_request() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake(dir.path(), "VERSION\t1\t1\nSPID\t9\n", |line| {
            (line == "USER\t1\tbob\tservice=smtp").then(|| "USER\t1\tbob\thome=/h\n".into())
        });
        assert_eq!(
            lookup_user(&socket, "bob", Duration::from_secs(5)),
            UserLookup::Found {
                user: "bob".into(),
                fields: vec![("home".into(), "/h".into())],
            }
        );
    }

    #[test]
    fn an_unreachable_dovecot_is_a_temporary_failure() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        assert!(matches!(
            lookup_user(&missing, "bob", TIMEOUT),
            UserLookup::TempFail(_)
        ));
        let request = AuthRequest {
            login: "bob".into(),
            password: Secret::new("pw".into()),
            authzid: String::new(),
            local_ip: None,
            remote_ip: None,
            secured: false,
        };
        assert!(matches!(
            check_password(&missing, request.clone(), TIMEOUT),
            AuthResult::TempFail { .. }
        ));

        // A server that never answers is given up after the timeout.
        let silent = fake(dir.path(), "", |_| None);
        let started = Instant::now();
        assert!(matches!(
            check_password(&silent, request, Duration::from_millis(300)),
            AuthResult::TempFail { .. }
        ));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_password_check_takes_dovecots_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake(
            dir.path(),
            "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tab\nDONE\n",
            |line| {
                // base64("\0bob\0right")
                if line.starts_with("AUTH\t1\tPLAIN\tservice=smtp\t") {
                    return Some(if line.ends_with("resp=AGJvYgByaWdodA==") {
                        "OK\t1\tuser=bob\n".into()
                    } else {
                        "FAIL\t1\tuser=bob\n".into()
                    });
                }
                None
            },
        );
        let request = AuthRequest {
            login: "bob".into(),
            password: Secret::new("right".into()),
            authzid: String::new(),
            local_ip: None,
            remote_ip: None,
            secured: true,
        };
        assert_eq!(
            check_password(&socket, request, Duration::from_secs(5)),
            AuthResult::Ok { user: "bob".into() }
        );
    }
}
