//! Shared harness for the end-to-end tests: a temp dir with a config, certificate and accounts,
//! the real `tern` binary started on it, raw socket clients with timeouts, and Maildir checks.
//!
//! Every test file uses only part of this module, so unused items are allowed here.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How long any single read, start-up or delivery may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The password of both test users.
pub const PASSWORD: &str = "s3cret pass";

/// The client name every test sends in EHLO/HELO/LHLO.
pub const HELO: &str = "client.test";

/// The `tern` binary under test.
pub fn tern_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tern")
}

/// A temp dir with everything `tern serve` needs: certificate, accounts file, config.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub cert_pem: Vec<u8>,
}

/// Fixed TCP ports for the three SMTP listeners, for tests that restart on the same ports.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
}

impl Fixture {
    /// Listeners on `127.0.0.1:0`.
    pub fn new() -> Fixture {
        Fixture::build(None)
    }

    /// Listeners on the given fixed ports.
    pub fn with_ports(ports: Ports) -> Fixture {
        Fixture::build(Some(ports))
    }

    fn build(ports: Option<Ports>) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("tern-e2e-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path();

        let tls = root.join("tls");
        let out = Command::new(tern_bin())
            .args(["cert", "--hostname", "mx.test", "--out"])
            .arg(&tls)
            .output()
            .expect("run tern cert");
        assert!(
            out.status.success(),
            "tern cert failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let cert_pem = fs::read(tls.join("cert.pem")).expect("tern cert wrote no cert.pem");

        // alice gets a real hash made by `tern passwd`; bob a {PLAIN} one, which SPEC allows.
        let hash = tern_passwd("SHA512-CRYPT", PASSWORD);
        assert!(
            hash.starts_with("{SHA512-CRYPT}$6$"),
            "tern passwd printed {hash:?}"
        );
        let home = |name: &str| {
            let h = root.join("home").join(name);
            fs::create_dir_all(&h).unwrap();
            h.display().to_string()
        };
        let users = format!(
            "alice:{hash}:1000:1000::{}::\nbob:{{PLAIN}}{PASSWORD}:1001:1001::{}::\n",
            home("alice"),
            home("bob")
        );
        fs::write(root.join("users"), users).unwrap();

        let addr = |port: Option<u16>| format!("127.0.0.1:{}", port.unwrap_or(0));
        let r = root.display();
        let config = format!(
            r#"hostname = "mx.test"
domains = ["mx.test", "example.net"]
trusted_networks = []
runtime = "{runtime}"
data_dir = "{r}/data"
log = "{r}/mail.log"

[tls]
certificate = "{r}/tls/cert.pem"
private_key = "{r}/tls/key.pem"

[accounts]
file = "{r}/users"

[mailbox]
path = "{r}/mail/%n/Maildir"

[aliases]
postmaster = "alice"

[limits]
auth_failure_delay = "100ms"

[[listener]]
name = "smtp"
protocol = "smtp"
address = "{smtp}"
tls = "may"

[[listener]]
name = "submission"
protocol = "smtp"
address = "{submission}"
tls = "encrypt"
auth = "required"

[[listener]]
name = "submissions"
protocol = "smtp"
address = "{submissions}"
tls = "implicit"
auth = "required"

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "{r}/lmtp.sock"
"#,
            runtime = runtime(),
            smtp = addr(ports.map(|p| p.smtp)),
            submission = addr(ports.map(|p| p.submission)),
            submissions = addr(ports.map(|p| p.submissions)),
        );
        let config_path = root.join("tern.toml");
        fs::write(&config_path, config).unwrap();

        Fixture {
            dir,
            config: config_path,
            cert_pem,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the config file, for tests that need one thing different.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = fs::read_to_string(&self.config).unwrap();
        fs::write(&self.config, edit(text)).unwrap();
    }

    /// `new/` of a user's Maildir.
    pub fn new_dir(&self, user: &str) -> PathBuf {
        self.maildir(user).join("new")
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        self.root().join("mail").join(user).join("Maildir")
    }

    pub fn lmtp_socket(&self) -> PathBuf {
        self.root().join("lmtp.sock")
    }

    /// Starts `tern serve --config` on this fixture and waits for its four listeners.
    pub fn serve(&self) -> Server {
        Server::start(
            Command::new(tern_bin())
                .args(["serve", "--config"])
                .arg(&self.config),
            self.root(),
            4,
        )
    }
}

/// The runtime the fixture's config asks for: `$TERN_E2E_RUNTIME`, else `blocking`, so the
/// same suite can be run once per runtime.
pub fn runtime() -> String {
    std::env::var("TERN_E2E_RUNTIME").unwrap_or_else(|_| "blocking".to_string())
}

/// Runs `tern passwd --scheme SCHEME` with `password` on stdin and returns the printed hash.
pub fn tern_passwd(scheme: &str, password: &str) -> String {
    let mut child = Command::new(tern_bin())
        .args(["passwd", "--scheme", scheme])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tern passwd failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// A running `tern serve`; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    /// Listener name to printed address or socket path.
    pub listeners: BTreeMap<String, String>,
    /// Every stdout line read so far.
    pub stdout: Vec<String>,
    stderr_path: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// Spawns `cmd` with stderr to a file in `dir` and reads stdout until `listeners`
    /// `listening:` lines have appeared.
    pub fn start(cmd: &mut Command, dir: &Path, listeners: usize) -> Server {
        let stderr_path = dir.join(format!("stderr-{}.txt", unique()));
        let stderr = fs::File::create(&stderr_path).unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tern serve");

        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut server = Server {
            child: Some(child),
            listeners: BTreeMap::new(),
            stdout: Vec::new(),
            stderr_path,
            lines,
        };
        let deadline = Instant::now() + TIMEOUT;
        while server.listeners.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(line) => server.take_line(line),
                Err(_) => panic!(
                    "tern serve printed {} of {listeners} `listening:` lines within {TIMEOUT:?}\n\
                     stdout: {:?}\nexit: {:?}\nstderr: {}",
                    server.listeners.len(),
                    server.stdout,
                    server.child.as_mut().unwrap().try_wait(),
                    server.stderr()
                ),
            }
        }
        server
    }

    fn take_line(&mut self, line: String) {
        if let Some(rest) = line.strip_prefix("listening: ") {
            let (name, addr) = rest
                .split_once(" on ")
                .unwrap_or_else(|| panic!("malformed listening line {line:?}"));
            self.listeners.insert(name.to_string(), addr.to_string());
        }
        self.stdout.push(line);
    }

    /// Reads stdout lines that arrive within `wait`.
    pub fn more_stdout(&mut self, wait: Duration) {
        while let Ok(line) = self.lines.recv_timeout(wait) {
            self.take_line(line);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The printed address of a TCP listener.
    pub fn addr(&self, name: &str) -> String {
        self.listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name:?} in {:?}", self.listeners))
            .clone()
    }

    pub fn port(&self, name: &str) -> u16 {
        let addr = self.addr(name);
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("listener {name} printed no port: {addr:?}"))
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        wait_with_timeout(&mut child, TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("tern serve did not exit within {TIMEOUT:?} of SIGTERM");
        })
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().expect("SIGKILL tern");
        child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "TERM");
        if wait_with_timeout(&mut child, Duration::from_secs(5)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Waits for `child` to exit, polling, for at most `limit`.
pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A process-unique number, for file names and tokens.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Held by every test that uses the fixed ports of the embedded default (2525, 2587, 2465),
/// so no two such tests in one test binary run at once. Test binaries run one after another
/// under `cargo test`.
pub fn fixed_ports_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Picks a TCP port that is free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A line-oriented client over any stream, every read bounded by [`TIMEOUT`].
pub struct Client<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    pub fn tcp(addr: &str) -> Client<TcpStream> {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client::new(stream)
    }
}

impl Client<UnixStream> {
    pub fn unix(path: &Path) -> Client<UnixStream> {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client::new(stream)
    }
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Any bytes read from the stream but not yet returned as a reply.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .unwrap_or_else(|e| panic!("write {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    /// Reads one whole reply, all its lines, each ending CRLF.
    pub fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let line = self.line();
            let last = (line.len() >= 4 && line.as_bytes()[3] == b' ') || line.len() == 5;
            reply.push_str(&line);
            if last {
                return reply;
            }
        }
    }

    /// Reads one reply and asserts it equals `expected` exactly.
    #[track_caller]
    pub fn expect(&mut self, expected: &str) {
        let got = self.reply();
        assert_eq!(
            got,
            expected,
            "after {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Reads one reply and asserts it starts with `prefix` (for replies with free text).
    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let got = self.reply();
        assert!(
            got.starts_with(prefix) && got.ends_with("\r\n"),
            "expected a reply starting {prefix:?}, got {got:?}"
        );
        got
    }

    /// Sends `command` + CRLF and reads the reply.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.reply()
    }

    /// Reads one line ending in CRLF.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8(line).expect("reply is not UTF-8");
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed in the middle of a reply; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!(
                    "reading a reply: {e}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Asserts that the server closes the connection, with nothing more to read.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => {}
            // A reset after close is still a close.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
        self.buf.extend_from_slice(&rest);
        assert!(
            self.buf.is_empty(),
            "expected close, got more bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

/// A client over rustls.
pub type TlsClient = Client<StreamOwned<ClientConnection, TcpStream>>;

/// Starts TLS on `tcp` as a client trusting only the fixture's certificate, for mx.test.
pub fn tls_client(fx: &Fixture, tcp: TcpStream) -> TlsClient {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&fx.cert_pem) {
        roots.add(cert.expect("PEM certificate")).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("mx.test").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    Client::new(StreamOwned::new(conn, tcp))
}

/// The `250 2.0.0 Ok: queued as ID` reply's ID.
#[track_caller]
pub fn queue_id(reply: &str) -> String {
    let id = reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .and_then(|r| r.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("not a queued reply: {reply:?}"));
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "odd queue id {id:?}"
    );
    id.to_string()
}

/// A file delivered into a Maildir `new/`.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Delivered {
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.clone()).expect("stored mail is not UTF-8")
    }
}

/// Waits until `new` holds exactly `n` files and returns them sorted by name; fails if more
/// appear or fewer within [`TIMEOUT`]. A 250 means the file is there already, so the wait only
/// covers the LMTP and client-library paths that return before we look.
#[track_caller]
pub fn wait_files(new: &Path, n: usize) -> Vec<Delivered> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let files = read_files(new);
        if files.len() == n {
            // A moment more, to catch an extra file arriving late.
            thread::sleep(Duration::from_millis(50));
            let again = read_files(new);
            assert_eq!(
                again.len(),
                n,
                "more files than expected in {}",
                new.display()
            );
            return again;
        }
        assert!(
            files.len() < n,
            "{} holds {} files, expected {n}: {:?}",
            new.display(),
            files.len(),
            files.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        assert!(
            Instant::now() < deadline,
            "{} holds {} files after {TIMEOUT:?}, expected {n}",
            new.display(),
            files.len()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every file in `dir`, sorted by name; a missing directory holds none.
pub fn read_files(dir: &Path) -> Vec<Delivered> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<Delivered> = entries
        .map(|e| {
            let e = e.unwrap();
            Delivered {
                name: e.file_name().to_string_lossy().into_owned(),
                bytes: fs::read(e.path()).unwrap_or_default(),
            }
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// Asserts `<secs>.M<micros>P<pid>Q<n>.<host>,S=<size>` with S= the file's size.
#[track_caller]
pub fn assert_file_name(file: &Delivered, pid: u32, host: &str) {
    let name = &file.name;
    let (unique, size) = name
        .split_once(",S=")
        .unwrap_or_else(|| panic!("no ,S= in {name:?}"));
    assert_eq!(size, file.bytes.len().to_string(), "S= of {name:?}");
    let rest = unique
        .strip_suffix(&format!(".{host}"))
        .unwrap_or_else(|| panic!("{name:?} does not end in .{host}"));
    let (secs, rest) = rest.split_once(".M").expect("no .M");
    let (micros, rest) = rest.split_once('P').expect("no P");
    let (file_pid, counter) = rest.split_once('Q').expect("no Q");
    for part in [secs, micros, file_pid, counter] {
        assert!(
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
            "bad part {part:?} in {name:?}"
        );
    }
    assert!(micros.parse::<u32>().unwrap() < 1_000_000, "{name:?}");
    assert_eq!(file_pid, pid.to_string(), "pid in {name:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secs: u64 = secs.parse().unwrap();
    assert!(secs <= now && now - secs < 600, "time in {name:?}");
}

/// What the trace headers of one stored copy must say.
pub struct Trace<'a> {
    pub return_path: &'a str,
    /// Our hostname, in `by ... (tern)`.
    pub by: &'a str,
    pub delivered_to: &'a str,
    /// `from ... (...)` part, such as `client.test (unknown [127.0.0.1])`.
    pub from: &'a str,
    /// ESMTP, ESMTPS, ESMTPSA, LMTP...
    pub protocol: &'a str,
    /// Whether a `(TLS1.x SUITE)` clause must follow the protocol.
    pub tls: bool,
    /// The queue id from the 250 reply, if the client saw it.
    pub queue_id: Option<&'a str>,
    /// The `for <...>` recipient.
    pub recipient: &'a str,
}

/// Asserts a stored file byte for byte: the three trace headers, then exactly `body` (the
/// message as sent, with LF line ends and no dot-stuffing).
#[track_caller]
pub fn assert_stored(file: &Delivered, trace: &Trace, body: &[u8]) {
    let text = &file.bytes;
    let head = format!(
        "Return-Path: <{}>\nDelivered-To: {}\nReceived: from {}\n\tby {} (tern) with {}",
        trace.return_path, trace.delivered_to, trace.from, trace.by, trace.protocol
    );
    let shown = String::from_utf8_lossy(text);
    assert!(
        text.starts_with(head.as_bytes()),
        "stored file {} does not start with\n{head}\n---- it is:\n{shown}",
        file.name
    );
    let mut rest = &shown[head.len()..];

    if trace.tls {
        let clause = rest
            .strip_prefix(" (")
            .and_then(|r| r.split_once(')'))
            .map(|(c, _)| c)
            .unwrap_or_else(|| panic!("no TLS clause in\n{shown}"));
        let (version, suite) = clause
            .split_once(' ')
            .expect("TLS clause is `VERSION SUITE`");
        assert!(
            version == "TLS1.3" || version == "TLS1.2",
            "TLS version {version:?}"
        );
        assert!(
            suite.starts_with("TLS_") && !suite.contains(char::is_whitespace),
            "cipher suite {suite:?}"
        );
        rest = &rest[clause.len() + 3..];
    }

    let id_line = rest
        .strip_prefix(" id ")
        .and_then(|r| r.split_once('\n'))
        .unwrap_or_else(|| panic!("no ` id ` in Received of\n{shown}"));
    if let Some(id) = trace.queue_id {
        assert_eq!(id_line.0, id, "queue id in Received of\n{shown}");
    } else {
        assert!(
            !id_line.0.is_empty() && id_line.0.bytes().all(|b| b.is_ascii_alphanumeric()),
            "queue id {:?}",
            id_line.0
        );
    }
    rest = id_line.1;

    let for_prefix = format!("\tfor <{}>; ", trace.recipient);
    let date_line = rest
        .strip_prefix(&for_prefix)
        .and_then(|r| r.split_once('\n'))
        .unwrap_or_else(|| panic!("no `{for_prefix}` line in\n{shown}"));
    assert_rfc5322_date(date_line.0);
    let stored_body = date_line.1;

    assert_eq!(
        stored_body,
        String::from_utf8_lossy(body),
        "body of {} differs",
        file.name
    );
    assert_eq!(
        stored_body.len(),
        body.len(),
        "body of {} is not byte-exact",
        file.name
    );
}

/// `Thu, 3 Dec 2026 15:24:51 +0000`, within ten minutes of now, checked loosely by shape.
#[track_caller]
fn assert_rfc5322_date(date: &str) {
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 6, "date {date:?}");
    let days = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    assert!(days.contains(&parts[0]), "weekday in {date:?}");
    assert!(parts[1].parse::<u8>().is_ok(), "day in {date:?}");
    assert_eq!(parts[3].len(), 4, "year in {date:?}");
    assert_eq!(parts[4].len(), 8, "time in {date:?}");
    assert!(
        parts[5].len() == 5 && (parts[5].starts_with('+') || parts[5].starts_with('-')),
        "zone in {date:?}"
    );
}

/// Converts CRLF to LF, as stored mail has it.
pub fn lf(crlf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crlf.len());
    let mut i = 0;
    while i < crlf.len() {
        if crlf[i] == b'\r' && crlf.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(crlf[i]);
        i += 1;
    }
    out
}

/// Runs a tool that the CI script installs, failing with a pointer to `.ci/run` if it is
/// missing.
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed; run .ci/run (it installs the tools the end-to-end tests use)"
    );
    Command::new(name)
}

/// Runs `cmd` to completion with a time limit; returns (status, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_thread = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = wait_with_timeout(&mut child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {limit:?}");
    });
    let out = String::from_utf8_lossy(&out_thread.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned();
    (status, out, err)
}
