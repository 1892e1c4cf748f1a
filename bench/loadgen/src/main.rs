//! A load client for tern's benchmarks, in the manner of Postfix's `smtp-source`, plus what
//! `smtp-source` lacks: STARTTLS and AUTH PLAIN, for the submission workload.
//!
//! ```text
//! tern-loadgen [-s SESSIONS] [-m MESSAGES] [-l BYTES] [-r RCPTS] [-f FROM] [-t TO]
//!              [--lmtp] [--starttls] [--auth USER:PASS] HOST:PORT | unix:PATH
//! ```
//!
//! Each session connects once and sends messages over the same connection until the shared
//! count is used up (as `smtp-source -d` does), one command at a time, waiting for each
//! reply. With `-r N` the recipients are `TO`, `2TO`, ... `NTO`, as `smtp-source` names them.
//! The last line reports the messages accepted, the time and the rate; the exit status is 1
//! if any message was refused or a session failed.
//!
//! The server's certificate is not verified (a benchmark talks to its own test server on
//! loopback); the type doing that says so in its name.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => Arc::new(options),
        Err(e) => {
            eprintln!("tern-loadgen: {e}");
            eprintln!(
                "usage: tern-loadgen [-s SESSIONS] [-m MESSAGES] [-l BYTES] [-r RCPTS] [-f FROM] \
                 [-t TO] [--lmtp] [--starttls] [--auth USER:PASS] HOST:PORT | unix:PATH"
            );
            return ExitCode::from(2);
        }
    };
    let tls = options.starttls.then(|| Arc::new(tls_config()));
    let body = Arc::new(message(&options));
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let sessions: Vec<_> = (0..options.sessions)
        .map(|_| {
            let (options, tls, body) = (options.clone(), tls.clone(), body.clone());
            let (next, accepted) = (next.clone(), accepted.clone());
            std::thread::spawn(move || session(&options, tls, &body, &next, &accepted))
        })
        .collect();
    let mut failed = false;
    for handle in sessions {
        if let Err(e) = handle.join().expect("a session thread panicked") {
            eprintln!("tern-loadgen: session: {e}");
            failed = true;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "tern-loadgen: {accepted} of {} messages accepted in {elapsed:.3} s: {:.1} msg/s",
        options.messages,
        accepted as f64 / elapsed
    );
    if failed || accepted != options.messages {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

struct Options {
    sessions: usize,
    messages: usize,
    size: usize,
    rcpts: usize,
    from: String,
    to: String,
    lmtp: bool,
    starttls: bool,
    auth: Option<(String, String)>,
    target: String,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            sessions: 1,
            messages: 1,
            size: 1024,
            rcpts: 1,
            from: "loadgen@example.org".into(),
            to: "bob@example.net".into(),
            lmtp: false,
            starttls: false,
            auth: None,
            target: String::new(),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "-s" => options.sessions = number(&value()?)?,
                "-m" => options.messages = number(&value()?)?,
                "-l" => options.size = number(&value()?)?,
                "-r" => options.rcpts = number(&value()?)?.max(1),
                "-f" => options.from = value()?,
                "-t" => options.to = value()?,
                "--lmtp" => options.lmtp = true,
                "--starttls" => options.starttls = true,
                "--auth" => {
                    let pair = value()?;
                    let (user, pass) = pair.split_once(':').ok_or("--auth wants USER:PASS")?;
                    options.auth = Some((user.into(), pass.into()));
                }
                _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
                _ => options.target = arg,
            }
        }
        if options.target.is_empty() {
            return Err("no target given".into());
        }
        if options.starttls && options.target.starts_with("unix:") {
            return Err("--starttls needs a TCP target".into());
        }
        Ok(options)
    }

    fn recipients(&self) -> Vec<String> {
        (1..=self.rcpts)
            .map(|n| {
                if n == 1 {
                    self.to.clone()
                } else {
                    format!("{n}{}", self.to)
                }
            })
            .collect()
    }
}

fn number(text: &str) -> Result<usize, String> {
    text.parse().map_err(|_| format!("not a number: {text}"))
}

/// The DATA payload, dot-terminated: a few headers and `size` bytes of 78-column lines.
fn message(options: &Options) -> Vec<u8> {
    let mut text = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: tern-loadgen\r\n\r\n",
        options.from, options.to
    )
    .into_bytes();
    let mut left = options.size;
    while left > 0 {
        let line = left.min(80).saturating_sub(2).max(1);
        text.extend(std::iter::repeat_n(b'X', line));
        text.extend_from_slice(b"\r\n");
        left = left.saturating_sub(line + 2);
    }
    text.extend_from_slice(b".\r\n");
    text
}

fn session(
    options: &Options,
    tls: Option<Arc<ClientConfig>>,
    body: &[u8],
    next: &AtomicUsize,
    accepted: &AtomicUsize,
) -> io::Result<()> {
    let stream = match options.target.strip_prefix("unix:") {
        Some(path) => Stream::Unix(UnixStream::connect(path)?),
        None => Stream::Tcp(TcpStream::connect(&options.target)?),
    };
    let mut conn = Conn::new(stream);
    conn.expect(220)?;

    let hello = if options.lmtp { "LHLO" } else { "EHLO" };
    conn.command(&format!("{hello} loadgen.example.org"), 250)?;
    if let Some(config) = tls {
        conn.command("STARTTLS", 220)?;
        conn.start_tls(config)?;
        conn.command(&format!("{hello} loadgen.example.org"), 250)?;
    }
    if let Some((user, pass)) = &options.auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        conn.command(&format!("AUTH PLAIN {token}"), 235)?;
    }

    let recipients = options.recipients();
    while next.fetch_add(1, Ordering::Relaxed) < options.messages {
        conn.command(&format!("MAIL FROM:<{}>", options.from), 250)?;
        for rcpt in &recipients {
            conn.command(&format!("RCPT TO:<{rcpt}>"), 250)?;
        }
        conn.command("DATA", 354)?;
        conn.send(body)?;
        // LMTP answers once per recipient (RFC 2033 section 4.2).
        let answers = if options.lmtp { recipients.len() } else { 1 };
        for _ in 0..answers {
            conn.expect(250)?;
        }
        accepted.fetch_add(1, Ordering::Relaxed);
    }
    conn.command("QUIT", 221)
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A connection with a read buffer for reply lines.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    fn command(&mut self, line: &str, code: u16) -> io::Result<()> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.expect(code)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one whole reply (all its lines) and checks its code.
    fn expect(&mut self, code: u16) -> io::Result<()> {
        loop {
            let line = self.line()?;
            if line.len() < 4 || line[3] == b' ' || line[3] == b'\r' {
                let got = std::str::from_utf8(&line[..line.len().min(3)])
                    .ok()
                    .and_then(|c| c.parse::<u16>().ok());
                if got == Some(code) {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&line);
                return Err(io::Error::other(format!(
                    "wanted {code}, got {}",
                    text.trim_end()
                )));
            }
        }
    }

    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=end).collect());
            }
            let mut chunk = [0; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn start_tls(&mut self, config: Arc<ClientConfig>) -> io::Result<()> {
        let Stream::Tcp(tcp) = std::mem::replace(&mut self.stream, Stream::Unix(dummy()?)) else {
            return Err(io::Error::other(
                "STARTTLS on a connection that is not plain TCP",
            ));
        };
        let name = ServerName::try_from("localhost").expect("a valid name");
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        self.buf.clear();
        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
        Ok(())
    }
}

/// A placeholder stream, held for the moment the TCP stream moves into TLS.
fn dummy() -> io::Result<UnixStream> {
    UnixStream::pair().map(|(a, _)| a)
}

fn tls_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate(provider)))
        .with_no_client_auth()
}

/// Accepts whatever certificate the server shows (still checking the handshake signatures):
/// for benchmarks against a self-signed test server only.
#[derive(Debug)]
struct AcceptAnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
