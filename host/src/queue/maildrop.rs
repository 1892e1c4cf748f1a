//! The maildrop directory, `data_dir/maildrop`: where `tern sendmail` leaves messages for
//! the server, as Postfix's postdrop does, and where the server picks them up (at start and
//! every second after).
//!
//! A drop file is written as `<name>.tmp`, fsynced, renamed to `<name>.drop` and the
//! directory fsynced, so the server never sees half a file. Its format: lines `F <sender>`
//! (empty for the null sender) and `R <recipient>` (one or more), an empty line, then the
//! message with CRLF line ends. A file the server cannot read is renamed to `<name>.bad`
//! and logged, never removed.
//!
//! Known limit: the directory is mode 0700, like `data_dir`: `tern sendmail` must run as
//! the user the server runs as (or root). Postfix lets every user drop mail through a
//! setgid helper; tern has none.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Kind;
use crate::service::{Services, Submission};

/// The maildrop directory under `data_dir`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("maildrop")
}

/// A message as `tern sendmail` hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    /// The envelope sender; empty for the null sender.
    pub sender: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The text, CRLF line ends.
    pub text: Vec<u8>,
}

/// Writes `drop` durably into the maildrop of `data_dir` and returns the file's path.
pub fn write(data_dir: &Path, drop: &Drop) -> io::Result<PathBuf> {
    let dir = dir(data_dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
    for field in std::iter::once(&drop.sender).chain(&drop.recipients) {
        if field.chars().any(char::is_control) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("control character in address {field:?}"),
            ));
        }
    }

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!(
        "{stamp}.P{}Q{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join(format!("{name}.tmp"));
    let done = dir.join(format!("{name}.drop"));
    let mut head = format!("F {}\n", drop.sender);
    for rcpt in &drop.recipients {
        head.push_str(&format!("R {rcpt}\n"));
    }
    head.push('\n');

    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(head.as_bytes())?;
            file.write_all(&drop.text)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, &done))
        .and_then(|()| File::open(&dir)?.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", done.display()),
        ));
    }
    Ok(done)
}

/// Reads a drop file back.
pub fn read(path: &Path) -> io::Result<Drop> {
    let bytes = fs::read(path)?;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = memchr::memmem::find(&bytes, b"\n\n").ok_or_else(|| invalid("no envelope end"))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| invalid("envelope not UTF-8"))?;
    let mut sender = None;
    let mut recipients = Vec::new();
    for line in head.lines() {
        match line.split_at_checked(2) {
            Some(("F ", rest)) => sender = Some(rest.to_owned()),
            Some(("R ", rest)) => recipients.push(rest.to_owned()),
            _ => return Err(invalid("unknown envelope line")),
        }
    }
    let sender = sender.ok_or_else(|| invalid("no sender"))?;
    if recipients.is_empty() {
        return Err(invalid("no recipients"));
    }
    Ok(Drop {
        sender,
        recipients,
        text: bytes[end + 2..].to_vec(),
    })
}

/// Delivers every drop file in the maildrop (local copies, remote recipients queued) and
/// removes each once it is delivered.
pub(super) fn pick_up(services: &Services) {
    let dir = dir(&services.config().data_dir);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "drop"))
        .collect();
    paths.sort();
    let log = services.log();
    for path in paths {
        let drop = match read(&path) {
            Ok(drop) => drop,
            Err(e) => {
                let bad = path.with_extension("bad");
                let _ = fs::rename(&path, &bad);
                log.write(
                    "pickup",
                    &format!(
                        "warning: {}: {e}; kept as {}",
                        path.display(),
                        bad.display()
                    ),
                );
                continue;
            }
        };
        let submission = Submission {
            sender: (!drop.sender.is_empty()).then(|| drop.sender.clone()),
            recipients: drop.recipients.clone(),
            text: &drop.text,
            kind: Kind::Message,
            eight_bit: drop.text.iter().any(|&b| b > 127),
            smtputf8: !drop.sender.is_ascii() || drop.recipients.iter().any(|r| !r.is_ascii()),
        };
        match services.submit(submission) {
            Ok(id) => {
                let uid = fs::metadata(&path).map_or(0, |m| m.uid());
                log.write("pickup", &format!("{id}: uid={uid} from=<{}>", drop.sender));
                if let Err(e) = fs::remove_file(&path) {
                    log.write("pickup", &format!("warning: {}: {e}", path.display()));
                }
            }
            Err(e) => log.write(
                "pickup",
                &format!("warning: {}: {e}; will try again", path.display()),
            ),
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(1);
