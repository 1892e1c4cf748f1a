//! Crash-safe Maildir delivery (SPEC.md section 5, qmail's maildir(5)).
//!
//! A message is received once into a [`Spool`] file, converted to LF line ends as it arrives.
//! [`Maildirs::deliver`] then copies it, behind each recipient's own headers, into the `tmp/`
//! directory of every recipient's Maildir and fsyncs each copy. Only when every copy is on
//! disk are they hard-linked into `new/` and the directories fsynced, so a crash at any point
//! leaves either no visible message or a complete, durable one in every mailbox; the leftovers
//! in `tmp/` are removed by [`Maildirs::clean_tmp`], the leftovers in the spool directory by
//! [`clean_spool`].
//!
//! File names are `<seconds>.M<micros>P<pid>Q<counter>.<hostname>` in `tmp/` and the same
//! with `,S=<size>` in `new/`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The message as received, written to a file as it arrives.
///
/// When the spool is dropped or delivered its file is emptied and kept for the next message
/// in the same directory (a few dozen at most; beyond that, or if emptying fails, the file is
/// removed). Creating and deleting a file per message made the file system's inode
/// allocator the largest cost of receiving small messages (ext4 scans past every inode freed
/// in the last seconds); an emptied file costs no inode at all. Spool files are never synced:
/// after a crash they are only leftovers, which [`clean_spool`] removes at start.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Text not yet written to `file`.
    buf: Vec<u8>,
    /// The last call ended in CR; whether it is a line end depends on the next byte.
    pending_cr: bool,
    len: u64,
    /// The file has another name (see [`Spool::link_durably`]), so it must not be reused.
    linked: bool,
}

impl Spool {
    /// Opens a spool file in `dir`: an emptied one kept from an earlier message, or a new one
    /// (mode 0600, a fresh unique name), creating `dir` with mode 0700 if it is missing.
    pub fn create(dir: &Path) -> io::Result<Spool> {
        let (path, file) = match reuse(dir) {
            Some(kept) => kept,
            None => match create_spool_file(dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(|e| with_path(e, "cannot create spool directory", dir))?;
                    create_spool_file(dir)?
                }
                other => other?,
            },
        };
        Ok(Spool {
            path,
            file,
            buf: Vec::with_capacity(SPOOL_BUFFER),
            pending_cr: false,
            len: 0,
            linked: false,
        })
    }

    /// Appends message text as it came off the wire: CRLF line ends, dot-stuffing already
    /// removed. Each CRLF is stored as LF, also when the CR ends one call and the LF starts
    /// the next. A CR not followed by LF is stored unchanged (the protocol layer refuses bare
    /// CR before it gets here).
    pub fn write(&mut self, wire: &[u8]) -> io::Result<()> {
        let mut rest = wire;
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            if rest[0] != b'\n' {
                self.put(b"\r")?;
            }
        }

        while let Some(i) = memchr::memchr(b'\r', rest) {
            match rest.get(i + 1) {
                // Drop the CR; the LF goes out with the next piece.
                Some(b'\n') => {
                    self.put(&rest[..i])?;
                    rest = &rest[i + 1..];
                }
                Some(_) => {
                    self.put(&rest[..=i])?;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.put(&rest[..i])?;
                    self.pending_cr = true;
                    return Ok(());
                }
            }
        }
        self.put(rest)
    }

    /// The number of bytes stored so far (with LF line ends). A CR held back at the end of
    /// the last call counts as one byte, which it stays whether or not an LF follows.
    pub fn len(&self) -> u64 {
        self.len + u64::from(self.pending_cr)
    }

    /// Whether nothing has been stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the text out, fsyncs it and gives it a second name, `to` (on the same file
    /// system), that outlives the spool: how the outbound queue keeps a message without
    /// copying it. The directory of `to` is not fsynced here. A spool linked this way is
    /// never emptied for reuse: when it is dropped only its own name is removed.
    pub fn link_durably(&mut self, to: &Path) -> io::Result<()> {
        self.link_durably_with(&[], to)
    }

    /// [`Spool::link_durably`], with `trailer` written after the text as it is (no line
    /// end conversion). [`Spool::len`] does not count it.
    pub fn link_durably_with(&mut self, trailer: &[u8], to: &Path) -> io::Result<()> {
        self.finish()
            .and_then(|()| self.file.write_all(trailer))
            .and_then(|()| self.file.sync_all())
            .map_err(|e| with_path(e, "cannot write spool file", &self.path))?;
        // Set before linking: a file that may have a second name is never emptied.
        self.linked = true;
        fs::hard_link(&self.path, to).map_err(|e| with_path(e, "cannot link into", to))
    }

    /// Finishes writing and returns the stored text (LF line ends), for reading from its
    /// start: what is handed to another LMTP server instead of a Maildir. The reader shares
    /// the spool's file, which is emptied for the next message when the spool is dropped:
    /// drop the reader first.
    pub fn reader(&mut self) -> io::Result<File> {
        self.finish()
            .map_err(|e| with_path(e, "cannot write spool file", &self.path))?;
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Large pieces go straight to the file rather than through the buffer.
        if self.buf.len() + bytes.len() > SPOOL_BUFFER {
            self.flush_buf()?;
        }
        if bytes.len() >= SPOOL_BUFFER {
            self.file.write_all(bytes)?;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        let result = self.file.write_all(&self.buf);
        self.buf.clear();
        result
    }

    /// Writes out a CR still held back and the buffer.
    fn finish(&mut self) -> io::Result<()> {
        if self.pending_cr {
            self.pending_cr = false;
            self.put(b"\r")?;
        }
        self.flush_buf()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.linked {
            let _ = fs::remove_file(&self.path);
            return;
        }
        // The file itself cannot move out of `self` here; a second descriptor of it can.
        let emptied = self.file.try_clone().and_then(|mut file| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            Ok(file)
        });
        match emptied {
            Ok(file) => keep(std::mem::take(&mut self.path), file),
            Err(_) => {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// One recipient's copy: the Maildir it goes to and the header lines (LF ends) put before
/// the spooled message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The Maildir's own directory (the one holding `tmp/`, `new/`, `cur/`).
    pub maildir: PathBuf,
    /// Header lines to prepend, LF ends: `Return-Path:`, `Delivered-To:`, `Received:`.
    pub headers: Vec<u8>,
}

/// The files a delivery created, one per copy, in the order of the copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Paths in each Maildir's `new/`.
    pub paths: Vec<PathBuf>,
}

/// Why a delivery failed; nothing of it is visible in any Maildir.
#[derive(Debug)]
pub enum DeliveryError {
    /// The disk or a quota is full (ENOSPC, EDQUOT): SMTP reply 452 4.3.1.
    DiskFull(io::Error),
    /// Any other failure: SMTP reply 451 4.3.0.
    Failed(io::Error),
}

impl From<io::Error> for DeliveryError {
    fn from(e: io::Error) -> DeliveryError {
        classify(e)
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::DiskFull(e) => write!(f, "disk full: {e}"),
            DeliveryError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeliveryError::DiskFull(e) | DeliveryError::Failed(e) => Some(e),
        }
    }
}

/// Per-process state for naming Maildir files: the pid, a counter and the host name.
#[derive(Debug)]
pub struct Maildirs {
    /// The host name as it appears in file names, `/` and `:` escaped.
    hostname: String,
    pid: u32,
    counter: AtomicU64,
    started: SystemTime,
}

impl Maildirs {
    /// Starts naming files for this process on `hostname`.
    pub fn new(hostname: &str) -> Maildirs {
        // maildir(5): these two characters would break the name's syntax.
        let hostname = hostname.replace('/', "\\057").replace(':', "\\072");
        Maildirs {
            hostname,
            pid: std::process::id(),
            counter: AtomicU64::new(1),
            started: SystemTime::now(),
        }
    }

    /// Stores `spool` into every copy's Maildir, all or nothing, and removes the spool.
    ///
    /// On success every file is in `new/` and on stable storage, with the `new/` directories
    /// (and any directory created on the way) fsynced. On failure every file this call made is
    /// removed again. If the machine crashes during that removal, a copy already linked into
    /// `new/` may survive, so a message answered with an error may be delivered twice, but a
    /// message is never lost.
    pub fn deliver(&self, mut spool: Spool, copies: &[Copy]) -> Result<Delivered, DeliveryError> {
        // The copies are fsynced; the spool itself need not survive a crash, so it is only
        // flushed to the kernel, not synced.
        spool
            .finish()
            .map_err(|e| with_path(e, "cannot write spool file", &spool.path))?;

        let mut work = Work::default();
        match self.write_all_copies(&spool.file, copies, &mut work) {
            Ok(paths) => {
                // The links in new/ are durable; a tmp name that outlives a crash here is
                // only a second name for the same file, and clean_tmp removes it.
                for tmp in &work.tmp {
                    let _ = fs::remove_file(tmp);
                }
                Ok(Delivered { paths })
            }
            Err(e) => {
                for path in work.linked.iter().chain(&work.tmp) {
                    let _ = fs::remove_file(path);
                }
                Err(classify(e))
            }
        }
    }

    /// Removes files left in `maildir`'s `tmp/` by a crash; returns how many.
    ///
    /// Removed are files named the way tern names them, with this host name, and last
    /// modified more than two seconds before this `Maildirs` was made (so never a file of this
    /// process in flight, even when a restarted tern got the pid of the crashed one), and any
    /// file at all untouched for 36 hours, as maildir(5) advises. Younger files of other
    /// programs are kept, since a Maildir may be shared with an IMAP server or another
    /// delivery agent writing there right now. A file in tmp/ whose mtime is in the future
    /// (a clock set back) is kept until the clock passes it.
    pub fn clean_tmp(&self, maildir: &Path) -> io::Result<usize> {
        let tmp = maildir.join("tmp");
        let entries = match fs::read_dir(&tmp) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(with_path(e, "cannot read", &tmp)),
        };

        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                continue;
            }
            let modified = meta.modified()?;
            let stale = now
                .duration_since(modified)
                .is_ok_and(|age| age > FOREIGN_TMP_AGE);
            let ours_from_before = self.is_tern_name(&entry.file_name().to_string_lossy())
                && modified + START_SLACK < self.started;
            if stale || ours_from_before {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(with_path(e, "cannot remove", &entry.path())),
                }
            }
        }
        Ok(removed)
    }

    /// Writes and fsyncs every copy into tmp/, then links them all into new/ and fsyncs the
    /// directories. Everything made is recorded in `work`, so the caller can undo it.
    fn write_all_copies(
        &self,
        spool: &File,
        copies: &[Copy],
        work: &mut Work,
    ) -> io::Result<Vec<PathBuf>> {
        let mut pending = Vec::with_capacity(copies.len());
        let mut written = Vec::with_capacity(copies.len());
        for copy in copies {
            let name = self.unique_name();
            let tmp = copy.maildir.join("tmp").join(&name);
            let (file, size) = write_copy(&copy.maildir, &tmp, &copy.headers, spool, work)?;
            let new = copy.maildir.join("new").join(format!("{name},S={size}"));
            written.push(file);
            pending.push((&copy.maildir, tmp, new));
        }

        // Every copy is on disk before any is linked into new/. Syncing the copies on threads
        // at once was tried: with 20 busy sessions it was no faster, the journal rather than
        // one message's wait being the bottleneck (bench/README.md).
        for (file, (_, tmp, _)) in written.iter().zip(&pending) {
            file.sync_all()
                .map_err(|e| with_path(e, "cannot write", tmp))?;
        }

        for (maildir, tmp, new) in &pending {
            let linked = match fs::hard_link(tmp, new) {
                // new/ went missing while tmp/ is there: make it and try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    ensure_maildir(maildir, &mut work.dirs_to_sync)
                        .and_then(|()| fs::hard_link(tmp, new))
                }
                other => other,
            };
            linked.map_err(|e| with_path(e, "cannot link into", new))?;
            work.linked.push(new.clone());
            push_unique(&mut work.dirs_to_sync, parent_dir(new));
        }
        for dir in &work.dirs_to_sync {
            sync_dir(dir)?;
        }
        Ok(pending.into_iter().map(|(_, _, new)| new).collect())
    }

    fn unique_name(&self) -> String {
        let now = since_epoch(SystemTime::now());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            self.pid,
            n,
            self.hostname
        )
    }

    /// Whether `name` has the shape `<digits>.M<digits>P<digits>Q<digits>.<our hostname>`.
    fn is_tern_name(&self, name: &str) -> bool {
        let Some(unique) = name
            .strip_suffix(self.hostname.as_str())
            .and_then(|n| n.strip_suffix('.'))
        else {
            return false;
        };
        let Some((secs, rest)) = unique.split_once(".M") else {
            return false;
        };
        let Some((micros, rest)) = rest.split_once('P') else {
            return false;
        };
        let Some((pid, counter)) = rest.split_once('Q') else {
            return false;
        };
        [secs, micros, pid, counter]
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// Removes every file in the spool directory `dir`; returns how many. Meant for start-up,
/// before any [`Spool`] of this process exists. A missing directory holds nothing.
pub fn clean_spool(dir: &Path) -> io::Result<usize> {
    forget_kept(dir);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(with_path(e, "cannot read spool directory", dir)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        fs::remove_file(entry.path()).map_err(|e| with_path(e, "cannot remove", &entry.path()))?;
        removed += 1;
    }
    Ok(removed)
}

const SPOOL_BUFFER: usize = 64 * 1024;

/// maildir(5): a file untouched this long in tmp/ is abandoned, whoever wrote it.
const FOREIGN_TMP_AGE: Duration = Duration::from_secs(36 * 3600);

/// File times come from a coarse kernel clock that may lag `SystemTime::now`, so a file made
/// just after start can look older than the start; this margin keeps such files ours.
const START_SLACK: Duration = Duration::from_secs(2);

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(1);

/// How many emptied spool files are kept for reuse, over all spool directories.
const KEPT_SPOOLS: usize = 64;

/// Emptied spool files with their paths, the most recently emptied last. Kept per process,
/// not per [`Maildirs`], so that the [`Spool`] API stays a plain constructor.
static KEPT: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// An emptied spool file in `dir`, if one is kept.
fn reuse(dir: &Path) -> Option<(PathBuf, File)> {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let i = kept
        .iter()
        .rposition(|(path, _)| path.parent() == Some(dir))?;
    Some(kept.swap_remove(i))
}

/// Keeps an emptied spool file for reuse, removing the oldest kept one if there are too
/// many.
fn keep(path: PathBuf, file: File) {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= KEPT_SPOOLS {
        let (oldest, _) = kept.remove(0);
        let _ = fs::remove_file(oldest);
    }
    kept.push((path, file));
}

/// Forgets the kept files of `dir`, whose files are about to be removed.
fn forget_kept(dir: &Path) {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    kept.retain(|(path, _)| path.parent() != Some(dir));
}

/// Creates a new spool file in the existing directory `dir`.
fn create_spool_file(dir: &Path) -> io::Result<(PathBuf, File)> {
    // The name is unique within the process; O_EXCL catches a leftover from an earlier
    // process that had the same pid.
    for _ in 0..100 {
        let now = since_epoch(SystemTime::now());
        let n = SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.N{}P{}Q{}.spool",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id(),
            n
        );
        let path = dir.join(name);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match opened {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            Err(e) => return Err(with_path(e, "cannot create spool file", &path)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("cannot find a free spool file name in {}", dir.display()),
    ))
}

/// What one delivery has made so far, to undo on failure.
#[derive(Debug, Default)]
struct Work {
    tmp: Vec<PathBuf>,
    linked: Vec<PathBuf>,
    dirs_to_sync: Vec<PathBuf>,
}

/// Classifies a delivery failure: a full disk or quota (ENOSPC, EDQUOT) is
/// [`DeliveryError::DiskFull`], anything else [`DeliveryError::Failed`].
fn classify(e: io::Error) -> DeliveryError {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => DeliveryError::DiskFull(e),
        _ => DeliveryError::Failed(e),
    }
}

/// Writes `headers` and the whole spool to the new file `tmp` in `maildir`'s tmp/ and returns
/// the file, not yet synced, and its size.
///
/// The Maildir's directories are checked only by trying: they are made (see
/// [`ensure_maildir`]) when the file cannot be created for want of them, or when cur/ is
/// missing. An existing Maildir thus costs one `stat` per copy instead of eight system calls.
fn write_copy(
    maildir: &Path,
    tmp: &Path,
    headers: &[u8],
    spool: &File,
    work: &mut Work,
) -> io::Result<(File, u64)> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
    };
    let mut file = match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ensure_maildir(maildir, &mut work.dirs_to_sync)?;
            create()
        }
        other => other,
    }
    .map_err(|e| with_path(e, "cannot create", tmp))?;
    work.tmp.push(tmp.to_path_buf());
    if !maildir.join("cur").is_dir() {
        ensure_maildir(maildir, &mut work.dirs_to_sync)?;
    }

    let written = (|| {
        file.write_all(headers)?;
        let mut source = spool;
        source.seek(SeekFrom::Start(0))?;
        let copied = io::copy(&mut source, &mut file)?;
        Ok(headers.len() as u64 + copied)
    })();
    let size = written.map_err(|e: io::Error| with_path(e, "cannot write", tmp))?;
    Ok((file, size))
}

/// Creates the Maildir, its missing parents and its tmp/, new/, cur/ with mode 0700. The
/// directory holding each new entry is added to `changed`, to be fsynced.
fn ensure_maildir(maildir: &Path, changed: &mut Vec<PathBuf>) -> io::Result<()> {
    make_dir(maildir, changed)?;
    for sub in ["tmp", "new", "cur"] {
        make_dir(&maildir.join(sub), changed)?;
    }
    Ok(())
}

fn make_dir(path: &Path, changed: &mut Vec<PathBuf>) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            push_unique(changed, parent_dir(path));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(
                    e.kind(),
                    format!("{} exists and is not a directory", path.display()),
                ))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && parent != path => {
                make_dir(parent, changed)?;
                make_dir(path, changed)
            }
            _ => Err(with_path(e, "cannot create", path)),
        },
        Err(e) => Err(with_path(e, "cannot create", path)),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, "cannot sync directory", dir))
}

/// The directory holding `path`; `.` for a bare relative name.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn push_unique(dirs: &mut Vec<PathBuf>, dir: PathBuf) {
    if !dirs.contains(&dir) {
        dirs.push(dir);
    }
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Adds what was being done and to which path, keeping the error kind for [`classify`].
fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    const HEADERS: &[u8] = b"Return-Path: <alice@example.net>\nDelivered-To: bob@example.net\n";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The bytes in all files of a spool directory: 0 when every spool was emptied.
    fn spooled_bytes(dir: &Path) -> u64 {
        files_in(dir)
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum()
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        match fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn spool_with(dir: &Path, pieces: &[&[u8]]) -> Spool {
        let mut spool = Spool::create(&dir.join("spool")).unwrap();
        for piece in pieces {
            spool.write(piece).unwrap();
        }
        spool
    }

    fn copy(maildir: &Path, headers: &[u8]) -> Copy {
        Copy {
            maildir: maildir.to_path_buf(),
            headers: headers.to_vec(),
        }
    }

    /// The stored bytes for `wire` fed in `pieces`, without headers.
    fn stored(pieces: &[&[u8]]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path(), pieces);
        let expected_len = spool.len();
        let maildirs = Maildirs::new("mail.example.net");
        let done = maildirs
            .deliver(spool, &[copy(&dir.path().join("Maildir"), b"")])
            .unwrap();
        let bytes = fs::read(&done.paths[0]).unwrap();
        assert_eq!(bytes.len() as u64, expected_len);
        bytes
    }

    #[test]
    fn byte_exact_content_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let long = vec![b'x'; 5000];
        let spool = spool_with(
            dir.path(),
            &[
                b"Subject: hi\r\n\r\nfirst\r",
                b"\nsecond\r\n",
                &long,
                b"\r\n",
            ],
        );
        let maildir = dir.path().join("Maildir");
        let maildirs = Maildirs::new("mail.example.net");
        let done = maildirs.deliver(spool, &[copy(&maildir, HEADERS)]).unwrap();

        let mut expected = HEADERS.to_vec();
        expected.extend_from_slice(b"Subject: hi\n\nfirst\nsecond\n");
        expected.extend_from_slice(&long);
        expected.push(b'\n');
        assert_eq!(fs::read(&done.paths[0]).unwrap(), expected);

        let path = &done.paths[0];
        assert_eq!(path.parent().unwrap(), maildir.join("new"));
        let name = path.file_name().unwrap().to_str().unwrap();
        let (unique, size) = name.split_once(",S=").unwrap();
        assert_eq!(size.parse::<u64>().unwrap(), expected.len() as u64);
        assert_eq!(
            size.parse::<u64>().unwrap(),
            fs::metadata(path).unwrap().len()
        );
        assert!(maildirs.is_tern_name(unique), "{unique}");
        assert!(
            unique.contains(&format!("P{}Q", std::process::id())),
            "{unique}"
        );
        assert_eq!(mode(path), 0o600);

        // Nothing left behind: tmp/ empty, the spool emptied.
        assert!(files_in(&maildir.join("tmp")).is_empty());
        assert!(files_in(&maildir.join("cur")).is_empty());
        assert_eq!(spooled_bytes(&dir.path().join("spool")), 0);
    }

    #[test]
    fn every_split_point_stores_the_same() {
        let wire: &[u8] = b"A: b\r\n\r\nx\r\n\r\ny\rz\r\n.\r\nlast\r\n";
        let whole = stored(&[wire]);
        assert_eq!(whole, b"A: b\n\nx\n\ny\rz\n.\nlast\n");
        for i in 0..=wire.len() {
            assert_eq!(stored(&[&wire[..i], &wire[i..]]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(stored(&bytes), whole);
    }

    #[test]
    fn cr_at_end_of_call_then_other_byte_or_end() {
        assert_eq!(stored(&[b"a\r", b"b\r\n"]), b"a\rb\n");
        assert_eq!(stored(&[b"a\r", b"", b"\nb"]), b"a\nb");
        assert_eq!(stored(&[b"a\r"]), b"a\r");
    }

    #[test]
    fn spool_len_and_emptied_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = spool_with(dir.path(), &[]);
        assert!(spool.is_empty());
        spool.write(b"ab\r\ncd\r").unwrap();
        assert_eq!(spool.len(), 6);
        spool.write(b"\n").unwrap();
        assert_eq!(spool.len(), 6);
        spool.write(b"e").unwrap();
        assert_eq!(spool.len(), 7);

        let spool_dir = dir.path().join("spool");
        assert_eq!(mode(&spool_dir), 0o700);
        let files = files_in(&spool_dir);
        assert_eq!(files.len(), 1);
        assert_eq!(mode(&files[0]), 0o600);
        drop(spool);
        assert_eq!(files_in(&spool_dir), files);
        assert_eq!(spooled_bytes(&spool_dir), 0);
    }

    #[test]
    fn a_spool_linked_elsewhere_is_never_emptied_or_reused() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let mut spool = spool_with(dir.path(), &[b"queued\r\n"]);
        let queued = dir.path().join("queued");
        spool.link_durably(&queued).unwrap();
        drop(spool);
        assert!(files_in(&spool_dir).is_empty());

        let mut next = spool_with(dir.path(), &[b"other\r\n"]);
        next.reader().unwrap();
        drop(next);
        assert_eq!(fs::read(&queued).unwrap(), b"queued\n");
    }

    #[test]
    fn an_emptied_spool_file_is_reused_without_its_old_text() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let long = vec![b'y'; 3 * SPOOL_BUFFER];
        let mut first = spool_with(dir.path(), &[b"first\r\n", &long]);
        let first_file = files_in(&spool_dir);
        first.reader().unwrap();
        drop(first);

        let second = spool_with(dir.path(), &[b"second\r\n"]);
        assert_eq!(files_in(&spool_dir), first_file);
        let maildir = dir.path().join("Maildir");
        let done = Maildirs::new("mail.example.net")
            .deliver(second, &[copy(&maildir, b"H: 1\n")])
            .unwrap();
        assert_eq!(fs::read(&done.paths[0]).unwrap(), b"H: 1\nsecond\n");
        assert_eq!(spooled_bytes(&spool_dir), 0);

        // After clean_spool removed the kept file, a new one is made.
        assert_eq!(clean_spool(&spool_dir).unwrap(), 1);
        let third = Spool::create(&spool_dir).unwrap();
        let third_file = files_in(&spool_dir);
        assert_eq!(third_file.len(), 1);
        assert_ne!(third_file, first_file);
        drop(third);
    }

    #[test]
    fn two_copies_two_maildirs() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path(), &[b"Subject: s\r\n\r\nbody\r\n"]);
        let a = dir.path().join("a/Maildir");
        let b = dir.path().join("b/Maildir");
        let maildirs = Maildirs::new("mail.example.net");
        let done = maildirs
            .deliver(
                spool,
                &[
                    copy(&a, b"Delivered-To: a@x\n"),
                    copy(&b, b"Delivered-To: bb@x\n"),
                ],
            )
            .unwrap();

        assert_eq!(done.paths.len(), 2);
        assert!(done.paths[0].starts_with(a.join("new")));
        assert!(done.paths[1].starts_with(b.join("new")));
        assert_eq!(
            fs::read(&done.paths[0]).unwrap(),
            b"Delivered-To: a@x\nSubject: s\n\nbody\n"
        );
        assert_eq!(
            fs::read(&done.paths[1]).unwrap(),
            b"Delivered-To: bb@x\nSubject: s\n\nbody\n"
        );
        assert!(done.paths[1].to_str().unwrap().ends_with(",S=36"));
        assert_eq!(files_in(&a.join("new")), vec![done.paths[0].clone()]);
        assert_eq!(files_in(&b.join("new")), vec![done.paths[1].clone()]);
    }

    #[test]
    fn same_maildir_twice_gets_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path(), &[b"x\r\n"]);
        let m = dir.path().join("Maildir");
        let done = Maildirs::new("h")
            .deliver(spool, &[copy(&m, b"1\n"), copy(&m, b"2\n")])
            .unwrap();
        assert_ne!(done.paths[0], done.paths[1]);
        assert_eq!(files_in(&m.join("new")).len(), 2);
    }

    #[test]
    fn created_directories_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path(), &[b"x\r\n"]);
        let maildir = dir.path().join("vmail/example.net/bob/Maildir");
        Maildirs::new("h")
            .deliver(spool, &[copy(&maildir, b"")])
            .unwrap();
        for sub in [
            "vmail",
            "vmail/example.net",
            "vmail/example.net/bob",
            "vmail/example.net/bob/Maildir",
            "vmail/example.net/bob/Maildir/tmp",
            "vmail/example.net/bob/Maildir/new",
            "vmail/example.net/bob/Maildir/cur",
        ] {
            assert_eq!(mode(&dir.path().join(sub)), 0o700, "{sub}");
        }
    }

    #[test]
    fn many_copies_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path(), &[b"x\r\n"]);
        let n = 35;
        let copies: Vec<Copy> = (0..n)
            .map(|i| {
                copy(
                    &dir.path().join(format!("m{i}")),
                    format!("{i}\n").as_bytes(),
                )
            })
            .collect();
        let done = Maildirs::new("h").deliver(spool, &copies).unwrap();
        assert_eq!(done.paths.len(), n);
        for (i, path) in done.paths.iter().enumerate() {
            assert!(path.starts_with(dir.path().join(format!("m{i}/new"))));
            assert_eq!(fs::read(path).unwrap(), format!("{i}\nx\n").as_bytes());
            assert!(files_in(&dir.path().join(format!("m{i}/tmp"))).is_empty());
        }
    }

    #[test]
    fn missing_new_or_cur_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        let maildirs = Maildirs::new("h");
        for gone in ["new", "cur"] {
            fs::create_dir_all(maildir.join("tmp")).unwrap();
            let _ = fs::remove_dir_all(maildir.join(gone));
            let spool = spool_with(dir.path(), &[b"x\r\n"]);
            let done = maildirs.deliver(spool, &[copy(&maildir, b"")]).unwrap();
            assert_eq!(fs::read(&done.paths[0]).unwrap(), b"x\n", "{gone}");
            assert_eq!(mode(&maildir.join(gone)), 0o700, "{gone}");
        }
    }

    #[test]
    fn existing_directory_modes_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        fs::create_dir(&maildir).unwrap();
        fs::set_permissions(&maildir, fs::Permissions::from_mode(0o750)).unwrap();
        let spool = spool_with(dir.path(), &[b"x\r\n"]);
        Maildirs::new("h")
            .deliver(spool, &[copy(&maildir, b"")])
            .unwrap();
        assert_eq!(mode(&maildir), 0o750);
        assert_eq!(mode(&maildir.join("new")), 0o700);
    }

    #[test]
    fn failure_while_writing_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path(), &[b"Subject: s\r\n\r\nbody\r\n"]);
        let good = dir.path().join("good/Maildir");
        fs::write(dir.path().join("file"), b"").unwrap();
        let bad = dir.path().join("file/Maildir");

        let err = Maildirs::new("h")
            .deliver(spool, &[copy(&good, b""), copy(&bad, b"")])
            .unwrap_err();
        let DeliveryError::Failed(e) = &err else {
            panic!("expected Failed, got {err:?}");
        };
        assert!(e.to_string().contains("file/Maildir"), "{e}");

        assert!(files_in(&good.join("tmp")).is_empty());
        assert!(files_in(&good.join("new")).is_empty());
        assert_eq!(spooled_bytes(&dir.path().join("spool")), 0);
    }

    #[test]
    fn failure_while_linking_removes_links_already_made() {
        // new/ of the second Maildir is on another file system (/proc), so its link fails
        // after the first Maildir's link exists.
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(dir.path(), &[b"x\r\n"]);
        let good = dir.path().join("good");
        let bad = dir.path().join("bad");
        for sub in ["tmp", "cur"] {
            fs::create_dir_all(bad.join(sub)).unwrap();
        }
        symlink("/proc", bad.join("new")).unwrap();

        let err = Maildirs::new("h")
            .deliver(spool, &[copy(&good, b""), copy(&bad, b"")])
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Failed(_)), "{err:?}");
        assert!(err.to_string().contains("cannot link into"), "{err}");

        assert!(files_in(&good.join("tmp")).is_empty());
        assert!(files_in(&good.join("new")).is_empty());
        assert!(files_in(&bad.join("tmp")).is_empty());
    }

    #[test]
    fn clean_tmp_removes_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        fs::create_dir_all(maildir.join("tmp")).unwrap();
        let maildirs = Maildirs::new("mail.example.net");
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);

        let touch = |name: &str, mtime: Option<SystemTime>| {
            let path = maildir.join("tmp").join(name);
            let file = File::create(&path).unwrap();
            if let Some(t) = mtime {
                file.set_modified(t).unwrap();
            }
            path
        };
        // A crashed tern's file (another pid, or even ours after pid reuse): removed.
        let crashed = touch("1700000000.M5P1Q7.mail.example.net", Some(hour_ago));
        let reused_pid = format!("1700000000.M5P{}Q1.mail.example.net", std::process::id());
        let reused_pid = touch(&reused_pid, Some(hour_ago));
        // Another program's file, young: kept; old: removed.
        let imap = touch("1700000000.M5P1.other-host", Some(hour_ago));
        let abandoned = touch("whatever", Some(two_days_ago));
        // Ours in flight: kept.
        let in_flight = touch(&maildirs.unique_name(), None);

        assert_eq!(maildirs.clean_tmp(&maildir).unwrap(), 3);
        assert!(!crashed.exists());
        assert!(!reused_pid.exists());
        assert!(!abandoned.exists());
        assert!(imap.exists());
        assert!(in_flight.exists());

        assert_eq!(maildirs.clean_tmp(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn clean_spool_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let a = Spool::create(&spool_dir).unwrap();
        let b = Spool::create(&spool_dir).unwrap();
        // As after a crash: the files stay, the process is gone.
        std::mem::forget(a);
        std::mem::forget(b);
        assert_eq!(files_in(&spool_dir).len(), 2);
        assert_eq!(clean_spool(&spool_dir).unwrap(), 2);
        assert!(files_in(&spool_dir).is_empty());
        assert_eq!(clean_spool(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn hostname_is_escaped_in_names() {
        let maildirs = Maildirs::new("a/b:c");
        let name = maildirs.unique_name();
        assert!(name.ends_with(".a\\057b\\072c"), "{name}");
        assert!(maildirs.is_tern_name(&name));
        assert!(!maildirs.is_tern_name("1.M2P3Q4.other"));
        assert!(!maildirs.is_tern_name("1.M2P3.a\\057b\\072c"));
        assert!(!maildirs.is_tern_name("x.M2P3Q4.a\\057b\\072c"));
    }

    #[test]
    fn big_message_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(&dir.path().join("spool")).unwrap();
        let mut line = vec![b'y'; 998];
        line.extend_from_slice(b"\r\n");
        // Each piece ends with a CR whose LF starts the next piece.
        let mut piece = b"\n".to_vec();
        piece.extend(line.iter().copied().cycle().take(64 * 1024 - 2));
        piece.push(b'\r');
        let pieces = 20 * 1024 * 1024 / piece.len();
        for _ in 0..pieces {
            spool.write(&piece).unwrap();
        }
        let crlfs = piece.windows(2).filter(|w| w == b"\r\n").count();
        let expected = (piece.len() * pieces) as u64
            - (crlfs * pieces) as u64
            - u64::from(piece.ends_with(b"\r")) * (pieces as u64 - 1);
        assert_eq!(spool.len(), expected);

        let maildir = dir.path().join("Maildir");
        let done = Maildirs::new("h")
            .deliver(spool, &[copy(&maildir, HEADERS)])
            .unwrap();
        let size = fs::metadata(&done.paths[0]).unwrap().len();
        assert_eq!(size, expected + HEADERS.len() as u64);
        assert!(
            done.paths[0]
                .to_str()
                .unwrap()
                .ends_with(&format!(",S={size}"))
        );
    }

    #[test]
    fn classification() {
        // A real ENOSPC: /dev/full refuses every write.
        let mut full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let e = full
            .write_all(b"x")
            .and_then(|()| full.flush())
            .unwrap_err();
        assert!(matches!(classify(e), DeliveryError::DiskFull(_)));

        let edquot = io::Error::from_raw_os_error(122);
        assert!(matches!(classify(edquot), DeliveryError::DiskFull(_)));
        let wrapped = with_path(
            io::Error::from_raw_os_error(28),
            "cannot write",
            Path::new("/x"),
        );
        assert!(matches!(classify(wrapped), DeliveryError::DiskFull(_)));
        let eacces = io::Error::from_raw_os_error(13);
        assert!(matches!(classify(eacces), DeliveryError::Failed(_)));
    }
}
