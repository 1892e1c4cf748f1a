//! 10,000 idle connections against `tern serve --runtime mio`.
//!
//! Starts the server on a loopback port in a temporary directory, opens N connections that
//! each read the greeting and then stay silent, reports the server's VmRSS, then runs one
//! whole SMTP conversation on a new connection and reports how long it took, and finally
//! stops the server with SIGTERM (every idle session gets its 421) and reports the exit code.
//! Standard library only, so it builds with plain rustc:
//!
//! ```sh
//! cargo build -p tern
//! rustc -O --edition 2021 bench/idle_mio.rs -o target/idle_mio
//! (ulimit -n 20000; target/idle_mio target/debug/tern 10000)
//! ```
//!
//! Each connection takes a descriptor in this program and one in the server, so the limit on
//! open files (which the server inherits) must exceed N; the program refuses to start
//! otherwise.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GREETING: &[u8] = b"220 mail.example.net ESMTP tern\r\n";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tern = args.get(1).map_or("target/debug/tern", String::as_str);
    let count: usize = args.get(2).map_or(10_000, |n| n.parse().expect("a count"));
    let limit = open_file_limit();
    assert!(
        limit > count as u64 + 100,
        "the open-file limit is {limit}; raise it (ulimit -n {}) first",
        count + 1000
    );

    let dir = std::env::temp_dir().join(format!("tern-idle-mio-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("users"), "bob:{PLAIN}secret::::::\n").unwrap();
    let config = dir.join("tern.toml");
    fs::write(
        &config,
        format!(
            "hostname = \"mail.example.net\"\ndomains = [\"example.net\"]\n\
             data_dir = \"{d}/data\"\nlog = \"{d}/mail.log\"\n\n\
             [accounts]\nfile = \"{d}/users\"\n\n[mailbox]\npath = \"{d}/mail/%n/Maildir\"\n\n\
             [limits]\nconnections = {c}\nconnections_per_ip = {c}\n\n\
             [[listener]]\nname = \"smtp\"\nprotocol = \"smtp\"\naddress = \"127.0.0.1:0\"\n",
            d = dir.display(),
            c = count + 100
        ),
    )
    .unwrap();

    let mut child = Command::new(tern)
        .args(["serve", "--runtime", "mio", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start tern");
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let address = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "tern exited");
        if let Some(address) = line.trim_end().strip_prefix("listening: smtp on ") {
            break address.to_owned();
        }
    };
    let base = rss_kb(pid);
    println!("server pid {pid} on {address}, VmRSS at start: {base} kB");

    let start = Instant::now();
    let mut idle = Vec::with_capacity(count);
    for n in 0..count {
        let mut stream = TcpStream::connect(&address).unwrap_or_else(|e| {
            panic!("connection {n}: {e}");
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut greeting = [0u8; GREETING.len()];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, GREETING);
        idle.push(stream);
    }
    println!("{count} connections greeted in {:.2?}", start.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kb(pid);
    println!(
        "VmRSS with {count} idle sessions: {rss} kB ({:.1} kB a session over the start)",
        rss.saturating_sub(base) as f64 / count as f64
    );

    let start = Instant::now();
    let transcript = conversation(&address);
    println!(
        "a new client's whole conversation meanwhile: {:.2?}\n{transcript}",
        start.elapsed()
    );

    let start = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let mut shut = 0;
    for stream in &mut idle {
        let mut reply = Vec::new();
        if stream.read_to_end(&mut reply).is_ok()
            && reply == b"421 4.3.2 mail.example.net Service shutting down\r\n"
        {
            shut += 1;
        }
    }
    let status = child.wait().unwrap();
    println!(
        "SIGTERM: {shut} of {count} idle sessions got 421 4.3.2; exit {:?} after {:.2?}",
        status.code(),
        start.elapsed()
    );
    let _ = fs::remove_dir_all(&dir);
}

/// One delivery from greeting to QUIT; returns the server's replies.
fn conversation(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"EHLO bench.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
              DATA\r\nSubject: meanwhile\r\n\r\nhello\r\n.\r\nQUIT\r\n",
        )
        .unwrap();
    let mut replies = String::new();
    stream.read_to_string(&mut replies).unwrap();
    assert!(replies.contains("250 2.0.0 Ok: queued as "), "{replies}");
    assert!(replies.ends_with("221 2.0.0 Bye\r\n"), "{replies}");
    replies
}

fn rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn open_file_limit() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}
