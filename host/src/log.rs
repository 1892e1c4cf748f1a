//! The operator's mail log (SPEC.md section 7), queue ids and client names in Postfix's form.
//!
//! Lines look like Postfix's, so that pflogsumm and fail2ban filters read them:
//! `Dec  3 15:24:51 mail tern/smtpd[4021]: connect from unknown[192.0.2.7]`. The stamp is in
//! UTC (see [`crate::clock`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::clock::syslog_stamp;

/// Where log lines go: standard error or a file opened for appending.
///
/// Each line is written with one `write` call under a lock, and files are opened with
/// `O_APPEND`, so lines from several threads (or processes sharing the file) never interleave.
/// A failed write is dropped: losing a log line must not stop mail.
#[derive(Debug)]
pub struct MailLog {
    sink: Mutex<Sink>,
    /// `<short hostname> <syslog_name>/`, cleaned once.
    prefix_host: String,
    syslog_name: String,
    pid: u32,
}

#[derive(Debug)]
enum Sink {
    Stderr,
    File(File),
}

impl MailLog {
    /// Logs to standard error. `hostname` may be fully qualified; only its first label is
    /// logged, as syslog does.
    pub fn stderr(hostname: &str, syslog_name: &str) -> MailLog {
        MailLog::with_sink(Sink::Stderr, hostname, syslog_name)
    }

    /// Logs to the file at `path`, appending; a missing file is created with mode 0640 (less
    /// the umask). The error names the file.
    pub fn file(path: &Path, hostname: &str, syslog_name: &str) -> io::Result<MailLog> {
        use std::os::unix::fs::OpenOptionsExt;

        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open log {}: {e}", path.display()))
            })?;
        Ok(MailLog::with_sink(Sink::File(file), hostname, syslog_name))
    }

    /// Writes one line for `service` (`smtpd`, `local`, ...) stamped with the current time.
    pub fn write(&self, service: &str, text: &str) {
        self.write_at(service, text, SystemTime::now());
    }

    /// Writes one line stamped with `now`. Control characters in `service` and `text`
    /// (newlines above all) become `?`, so nothing a client sends can forge a log line.
    pub fn write_at(&self, service: &str, text: &str, now: SystemTime) {
        let line = format!(
            "{} {} {}/{}[{}]: {}\n",
            syslog_stamp(now),
            self.prefix_host,
            self.syslog_name,
            clean(service),
            self.pid,
            clean(text)
        );

        // A poisoned lock only means another thread panicked mid-write; the sink is still fine.
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match &mut *sink {
            Sink::Stderr => io::stderr().lock().write_all(line.as_bytes()),
            Sink::File(file) => file.write_all(line.as_bytes()),
        };
    }

    fn with_sink(sink: Sink, hostname: &str, syslog_name: &str) -> MailLog {
        let short = hostname.split('.').next().unwrap_or_default();
        MailLog {
            sink: Mutex::new(sink),
            prefix_host: clean(if short.is_empty() { "localhost" } else { short }),
            syslog_name: clean(syslog_name),
            pid: std::process::id(),
        }
    }
}

/// Names a client as Postfix logs it: `unknown[192.0.2.7]`, `unknown[2001:db8::1]`, or `local`
/// for a Unix socket. tern does no reverse DNS lookup, so the name is always `unknown`.
pub fn client_name(ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) => format!("unknown[{ip}]"),
        None => "local".to_string(),
    }
}

/// Issues queue ids: 12 uppercase hex digits, like Postfix's short ids.
///
/// Ids never repeat within one process (for 2^48 ids), and ids of two processes collide only
/// if their ranges happen to overlap, which for a few million ids each is about one chance in
/// ten million: each process starts its counter at a point derived from its start time and
/// pid, and every id is a fixed bijection of that counter.
#[derive(Debug)]
pub struct QueueIds {
    next: AtomicU64,
}

impl QueueIds {
    /// Starts a sequence seeded from the current time and the process id.
    pub fn new() -> QueueIds {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        QueueIds::with_seed(splitmix64(micros ^ (u64::from(std::process::id()) << 44)))
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:012X}", scramble48(n & MASK48))
    }

    fn with_seed(seed: u64) -> QueueIds {
        QueueIds {
            next: AtomicU64::new(seed & MASK48),
        }
    }
}

impl Default for QueueIds {
    fn default() -> QueueIds {
        QueueIds::new()
    }
}

const MASK48: u64 = (1 << 48) - 1;

/// A bijection on 48-bit values, so consecutive counters give ids that look unrelated: each
/// xor-shift and each multiplication by an odd number modulo 2^48 can be undone.
fn scramble48(mut x: u64) -> u64 {
    x ^= x >> 25;
    x = x.wrapping_mul(0x9E37_79B9_7F4B) & MASK48;
    x ^= x >> 23;
    x = x.wrapping_mul(0xC2B2_AE3D_27D5) & MASK48;
    x ^ (x >> 24)
}

/// Spreads a seed over all 64 bits (the SplitMix64 finaliser).
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Replaces every control character with `?`.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    fn spec_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_311_491)
    }

    fn log_in(dir: &Path) -> (MailLog, std::path::PathBuf) {
        let path = dir.join("mail.log");
        (
            MailLog::file(&path, "mail.example.net", "tern").unwrap(),
            path,
        )
    }

    #[test]
    fn line_format() {
        let dir = tempfile::tempdir().unwrap();
        let (log, path) = log_in(dir.path());
        log.write_at("smtpd", "connect from unknown[192.0.2.7]", spec_time());
        log.write_at("local", "5E2A1B9C: to=<bob@example.net>", spec_time());

        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!(
                "Dec  3 15:24:51 mail tern/smtpd[{pid}]: connect from unknown[192.0.2.7]\n\
                 Dec  3 15:24:51 mail tern/local[{pid}]: 5E2A1B9C: to=<bob@example.net>\n"
            )
        );
    }

    #[test]
    fn appends_to_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.log");
        std::fs::write(&path, "old line\n").unwrap();
        let log = MailLog::file(&path, "mail", "postfix-tern").unwrap();
        log.write("smtpd", "hello");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("old line\n"), "{text}");
        assert!(text.contains(" mail postfix-tern/smtpd["), "{text}");
        assert!(text.ends_with("]: hello\n"), "{text}");
    }

    #[test]
    fn injection_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let (log, path) = log_in(dir.path());
        log.write_at(
            "smtpd",
            "helo=x\nDec  3 15:24:51 mail tern/smtpd[1]: fake\r\x1b[2J\0",
            spec_time(),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with(": helo=x?Dec  3 15:24:51 mail tern/smtpd[1]: fake??[2J?\n"));
    }

    #[test]
    fn unwritable_log_file_is_an_error_naming_it() {
        let err = MailLog::file(Path::new("/nonexistent/dir/mail.log"), "h", "tern").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dir/mail.log"),
            "{err}"
        );
    }

    #[test]
    fn concurrent_lines_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (log, path) = log_in(dir.path());
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..500 {
                        log.write("smtpd", &format!("thread {t} line {i} {}", "x".repeat(200)));
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2000);
        assert!(text.lines().all(|l| l.ends_with(&"x".repeat(200))));
    }

    #[test]
    fn client_names() {
        assert_eq!(
            client_name(Some("192.0.2.7".parse().unwrap())),
            "unknown[192.0.2.7]"
        );
        assert_eq!(
            client_name(Some("2001:db8::1".parse().unwrap())),
            "unknown[2001:db8::1]"
        );
        assert_eq!(client_name(None), "local");
    }

    #[test]
    fn queue_ids_unique_and_well_formed() {
        let ids = QueueIds::new();
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let id = ids.next();
            assert_eq!(id.len(), 12, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            );
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn queue_ids_wrap_without_repeating() {
        // Near the top of the 48-bit range the counter wraps; ids must still differ.
        let ids = QueueIds::with_seed(MASK48 - 5);
        let got: HashSet<String> = (0..12).map(|_| ids.next()).collect();
        assert_eq!(got.len(), 12);
    }

    #[test]
    fn different_seeds_differ() {
        let a = QueueIds::with_seed(splitmix64(1));
        let b = QueueIds::with_seed(splitmix64(2));
        let a: HashSet<String> = (0..1000).map(|_| a.next()).collect();
        assert!((0..1000).all(|_| !a.contains(&b.next())));
    }
}
