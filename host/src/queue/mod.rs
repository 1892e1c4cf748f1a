//! The outbound queue (SPEC.md section 5, "Mail for other domains"): what Postfix's qmgr,
//! smtp client and bounce daemon do.
//!
//! # On disk
//!
//! Under `data_dir/queue`, one message is two files: `<id>.msg`, its text as received (LF
//! line ends, like a Maildir copy; the spool file itself, hard-linked, not copied) and
//! `<id>.env`, its envelope ([`Entry`], TOML): sender, ENVID/RET, arrival time, and per
//! recipient NOTIFY/ORCPT, state, attempts, next attempt, last error and whether its delay
//! notice went out.
//!
//! A message enters in two steps. [`Queue::prepare`] writes and fsyncs the text and the
//! envelope under a temporary name (`<id>.env.tmp`); [`Pending::commit`] renames the
//! envelope into place and fsyncs the directory. The SMTP 250 comes after the commit, and
//! local copies of the same message are made between the two steps, so a message is queued
//! for its remote recipients exactly when its local copies are delivered. A `.env.tmp`, or a
//! `.msg` without `.env`, left by a crash is removed by [`Queue::open`].
//!
//! A message with no local copies enters in one step instead ([`Queue::enqueue`]): one file,
//! `<id>.qf`, holds its text and, after it, its first envelope, followed by a fixed-size
//! footer line `tern-envelope <length in 16 hex digits>`; it is fsynced under the spool's
//! name, then linked into the queue, and the directory fsynced. Accepting such a message
//! thus waits for two writes instead of three. A `.qf` is in the queue as soon as it has
//! its name there, and its envelope is complete by then. Its first change of state writes
//! an `<id>.env` as above, which from then on is the envelope; the text stays in the `.qf`.
//!
//! Every change of a recipient's state rewrites the envelope (temporary name, fsync,
//! rename, directory fsync) before anything else happens, so a recipient a server took is
//! never sent again, except when tern dies between that server's 250 and this rewrite.
//!
//! # Delivery
//!
//! [`start`] runs a scheduler thread that picks due recipients, groups them by destination
//! (the `relay_host`, else the recipient's domain; `delivery.local` for recipients an LMTP
//! server refused after the data) and puts them in that destination's lane, served by up to
//! [`DESTINATION_CONCURRENCY`] worker threads, [`TOTAL_CONCURRENCY`] across lanes (a thread
//! whose lane runs out takes up one left without enough). A worker opens one connection (MX
//! hosts in preference order, then the next address on a connection failure or a refused
//! greeting) and sends message after message from its lane over it, keeping it open for two
//! seconds after the lane runs empty, so a steady stream to one destination reuses a few
//! connections instead of opening one per message. A kept connection that the server closed
//! meanwhile (lost, or a 421, before the message text was asked for) is replaced at once
//! and the message sent again over the new one, without counting an attempt. When no host
//! of a destination can be reached, every message waiting in its lane is deferred with the
//! same error. It uses the core client session: STARTTLS as `relay_tls` says, PIPELINING,
//! SIZE, 8BITMIME, SMTPUTF8 and DSN where offered. The scheduler keeps the entries in
//! memory, reads again only those that changed, and reads the whole directory every minute
//! and on a flush.
//!
//! Retries come after 1, 5, 15 and 30 minutes, then every hour, until `queue_lifetime`
//! has passed since arrival; then the recipient fails with 4.4.7. The environment variable
//! `TERN_QUEUE_RETRY` (a comma-separated list of durations such as `1s,2s`; the last one
//! repeats) replaces the schedule, for tests.
//!
//! `tern queue flush` creates the file `flush` in the queue directory; the scheduler looks
//! for it (and for new files in the maildrop) every second, removes it and makes every
//! pending recipient due at once.
//!
//! # Notifications
//!
//! A permanent failure, or a temporary one past `queue_lifetime`, is reported to the sender
//! (see `bounce`): RFC 3464, honouring NOTIFY, RET, ENVID and ORCPT; from the null sender
//! to postmaster instead; a failing postmaster notification is dropped with a log line.
//!
//! A recipient still pending `delivery.delay_warning` after the message arrived (and tried
//! at least once) gets one delay notice (`Action: delayed`, `Will-Retry-Until:` the arrival
//! plus `queue_lifetime`), when its NOTIFY names DELAY: without NOTIFY, RFC 3461 section
//! 4.1 leaves delay notices to the server, and tern sends none. Never for the null sender.
//! The scheduler looks for them where it expires and settles entries; the recipients of a
//! message that come due in the same round share one notice, and each is marked
//! `delay_warned` in the envelope after the notice is queued.
//!
//! Known limits:
//! - A notification is queued before the recipients it reports on are marked (done, or
//!   `delay_warned`), so a crash between the two sends it twice (never zero times).
//! - Recipients that an LMTP server refused are retried over LMTP only; if `delivery.local`
//!   has become `maildir` meanwhile they wait until they expire.
//! - Notifications to local senders go into the Maildir even with `delivery.local =
//!   "lmtp:..."`.
//! - At shutdown the delivery threads are not waited for: a message in the middle of a
//!   transfer is sent again after the restart, unless the server's reply was recorded.
//! - While [`TOTAL_CONCURRENCY`] threads are busy or keeping idle connections, a message
//!   for a destination without a thread waits for one of them to finish, up to two
//!   seconds after the traffic ends, rather than preempting an idle connection.

mod bounce;
mod deliver;
mod entry;
pub mod maildrop;
mod route;
mod smtp;
mod tls;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use self::deliver::start;
pub use self::entry::{Entry, Kind, QueuedRecipient, State};
use crate::maildir::Spool;

/// How many connections tern opens at once to one destination.
pub const DESTINATION_CONCURRENCY: usize = 4;

/// At most this many delivery threads (so connections) at once, across destinations, as
/// Postfix's `default_process_limit` caps its smtp processes. The environment variable
/// `TERN_QUEUE_THREADS` replaces it, for tests.
pub const TOTAL_CONCURRENCY: usize = 100;

/// How many locks the envelope rewrites are spread over.
const WRITE_LOCKS: usize = 32;

/// The default retry intervals; the last one repeats.
pub const RETRY_SCHEDULE: [Duration; 5] = [
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(900),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
];

/// The name of the trigger file `tern queue flush` creates.
pub const FLUSH_FILE: &str = "flush";

/// The queue directory and what the threads working on it share.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    /// Serialises envelope rewrites of one message, so two workers updating recipients of
    /// the same message (in different domains) never lose each other's change. Striped by
    /// id, so that workers on different messages fsync side by side.
    write: [Mutex<()>; WRITE_LOCKS],
    wake: (Mutex<bool>, Condvar),
    /// Ids whose entry was committed, changed or removed since the scheduler last looked.
    touched: Mutex<Vec<String>>,
    retry: Vec<Duration>,
}

/// A message written into the queue but not yet part of it; dropping it removes it.
#[derive(Debug)]
pub struct Pending<'a> {
    queue: &'a Queue,
    id: String,
    committed: bool,
}

/// Where a queued message's text comes from.
pub enum Text<'a> {
    /// A spool file, linked into the queue.
    Spool(&'a mut Spool),
    /// Text in memory, LF line ends.
    Bytes(&'a [u8]),
}

impl Queue {
    /// Opens (creating it, mode 0700) the queue directory `dir` and removes what a crash
    /// left half-written. The retry schedule comes from `TERN_QUEUE_RETRY` when set.
    pub fn open(dir: &Path) -> io::Result<Queue> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| annotate(e, "cannot create", dir))?;
        let queue = Queue {
            dir: dir.to_owned(),
            write: Default::default(),
            wake: (Mutex::new(false), Condvar::new()),
            touched: Mutex::new(Vec::new()),
            retry: retry_schedule(std::env::var("TERN_QUEUE_RETRY").ok().as_deref()),
        };
        queue.clean()?;
        Ok(queue)
    }

    /// Opens an existing queue directory to read it (`tern queue`), touching nothing: a
    /// running server may be writing there.
    pub fn open_for_listing(dir: &Path) -> io::Result<Queue> {
        Ok(Queue {
            dir: dir.to_owned(),
            write: Default::default(),
            wake: (Mutex::new(false), Condvar::new()),
            touched: Mutex::new(Vec::new()),
            retry: RETRY_SCHEDULE.to_vec(),
        })
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a message into the queue, fsynced, but not yet visible to delivery: call
    /// [`Pending::commit`]. `entry.id` must be unused.
    pub fn prepare(&self, entry: &Entry, text: Text<'_>) -> io::Result<Pending<'_>> {
        let pending = Pending {
            queue: self,
            id: entry.id.clone(),
            committed: false,
        };
        let msg = self.message_path(&entry.id);
        match text {
            Text::Spool(spool) => spool.link_durably(&msg)?,
            Text::Bytes(bytes) => write_new(&msg, bytes)?,
        }
        let env = toml::to_string(entry).map_err(io::Error::other)?;
        write_new(&self.tmp_path(&entry.id), env.as_bytes())?;
        Ok(pending)
    }

    /// Every entry in the queue, oldest first. An envelope that cannot be read is skipped
    /// and named in the returned errors.
    pub fn entries(&self) -> io::Result<(Vec<Entry>, Vec<String>)> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for dirent in fs::read_dir(&self.dir).map_err(|e| annotate(e, "cannot read", &self.dir))? {
            let path = dirent?.path();
            let read = match path.extension().and_then(|ext| ext.to_str()) {
                Some("env") => read_entry(&path),
                // Unless its `.env` (read on its own) has taken over.
                Some("qf") if !path.with_extension("env").exists() => read_whole(&path),
                _ => continue,
            };
            match read {
                Ok(entry) => entries.push(entry),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
        entries.sort_by(|a, b| (a.arrival, &a.id).cmp(&(b.arrival, &b.id)));
        Ok((entries, errors))
    }

    /// One entry by id: its `.env`, or the envelope inside its `.qf` when it has none yet.
    pub fn load(&self, id: &str) -> io::Result<Entry> {
        match read_entry(&self.env_path(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => read_whole(&self.whole_path(id)),
            other => other,
        }
    }

    /// Changes an entry with `change` and makes the change durable before returning it. An
    /// entry whose recipients are all done is removed instead (the removal made durable by
    /// a directory fsync), which saves rewriting it first.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Entry)) -> io::Result<Entry> {
        let _guard = self.lock_entry(id);
        let mut entry = self.load(id)?;
        change(&mut entry);
        if entry.is_done() {
            self.remove_files(id)?;
        } else {
            self.store(&entry)?;
        }
        self.touch(id);
        Ok(entry)
    }

    /// Removes a finished message, durably.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let _guard = self.lock_entry(id);
        self.remove_files(id)?;
        self.touch(id);
        Ok(())
    }

    /// Removes a message's files in an order that no crash can turn back into a message
    /// to deliver, with one directory fsync: first whatever can stand as an entry without
    /// the other files (the `.qf`, which holds an envelope; or else the `.env`), then,
    /// after the fsync, the rest, whose leftovers (a `.msg` or an `.env` without text)
    /// [`Queue::open`] removes.
    fn remove_files(&self, id: &str) -> io::Result<()> {
        let whole = self.whole_path(id);
        if whole.exists() {
            remove_if_present(&whole)?;
            sync_dir(&self.dir)?;
            remove_if_present(&self.env_path(id))
        } else {
            remove_if_present(&self.env_path(id))?;
            sync_dir(&self.dir)?;
            remove_if_present(&self.message_path(id))
        }
    }

    /// Holds the write lock of entry `id`.
    fn lock_entry(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let stripe = BuildHasherDefault::<DefaultHasher>::default().hash_one(id) as usize;
        self.write[stripe % WRITE_LOCKS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The path of a message's text, for one queued in two steps ([`Queue::prepare`]).
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.msg"))
    }

    /// The path of a message queued in one step ([`Queue::enqueue`]): text and envelope.
    fn whole_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.qf"))
    }

    /// Queues a message that has no local copies in one step: `spool`'s text with `entry`
    /// after it, fsynced and linked into the queue, the directory fsynced. When this
    /// returns, the message is queued durably. `entry.id` must be unused.
    pub fn enqueue(&self, entry: &Entry, spool: &mut Spool) -> io::Result<()> {
        let envelope = toml::to_string(entry).map_err(io::Error::other)?;
        let mut trailer = envelope.into_bytes();
        let footer = format!("\n{FOOTER_TAG}{:016x}\n", trailer.len());
        trailer.extend_from_slice(footer.as_bytes());
        let path = self.whole_path(&entry.id);
        spool.link_durably_with(&trailer, &path)?;
        if let Err(e) = sync_dir(&self.dir) {
            // Not acknowledged, so not kept.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.touch(&entry.id);
        self.wake();
        Ok(())
    }

    /// A message's text, for reading from its start: the `.msg` file, or the text part of
    /// the `.qf`.
    pub fn open_text(&self, id: &str) -> io::Result<io::Take<File>> {
        match File::open(self.message_path(id)) {
            Ok(file) => Ok(file.take(u64::MAX)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut file = File::open(self.whole_path(id))?;
                let (text_len, _) = read_footer(&mut file)?;
                file.seek(SeekFrom::Start(0))?;
                Ok(file.take(text_len))
            }
            Err(e) => Err(e),
        }
    }

    /// A message's whole text.
    pub fn read_text(&self, id: &str) -> io::Result<Vec<u8>> {
        let mut text = Vec::new();
        self.open_text(id)?.read_to_end(&mut text)?;
        Ok(text)
    }

    /// Asks the scheduler to look at the queue now.
    pub fn wake(&self) {
        let (flag, condvar) = &self.wake;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        condvar.notify_all();
    }

    /// Asks a running server to retry every message now, by creating the trigger file.
    pub fn request_flush(dir: &Path) -> io::Result<()> {
        let path = dir.join(FLUSH_FILE);
        File::create(&path)
            .map(drop)
            .map_err(|e| annotate(e, "cannot create", &path))
    }

    /// The wait before attempt number `attempts + 1`, after `attempts` failed ones.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let index = (attempts.max(1) as usize - 1).min(self.retry.len() - 1);
        self.retry[index]
    }

    /// Waits until [`Queue::wake`] is called or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let (flag, condvar) = &self.wake;
        let mut woken = flag.lock().unwrap_or_else(|e| e.into_inner());
        if !*woken {
            woken = condvar
                .wait_timeout(woken, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *woken = false;
    }

    /// The ids touched since the last call.
    fn take_touched(&self) -> Vec<String> {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn touch(&self, id: &str) {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_owned());
    }

    /// Whether the flush trigger file exists; removes it.
    fn take_flush_request(&self) -> bool {
        fs::remove_file(self.dir.join(FLUSH_FILE)).is_ok()
    }

    fn store(&self, entry: &Entry) -> io::Result<()> {
        let text = toml::to_string(entry).map_err(io::Error::other)?;
        let tmp = self.tmp_path(&entry.id);
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, text.as_bytes())?;
        fs::rename(&tmp, self.env_path(&entry.id))
            .map_err(|e| annotate(e, "cannot rename", &tmp))?;
        sync_dir(&self.dir)
    }

    /// Removes what a crash left of a message that was never queued, or of one being
    /// removed: a `.env.tmp`, a `.msg` without `.env`, an `.env` without text.
    fn clean(&self) -> io::Result<()> {
        let mut envelopes = HashMap::new();
        let mut messages = HashMap::new();
        let mut texts = HashSet::new();
        for dirent in fs::read_dir(&self.dir).map_err(|e| annotate(e, "cannot read", &self.dir))? {
            let path = dirent?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name else { continue };
            if let Some(id) = name.strip_suffix(".env") {
                envelopes.insert(id.to_owned(), path);
            } else if let Some(id) = name.strip_suffix(".msg") {
                texts.insert(id.to_owned());
                messages.insert(id.to_owned(), path);
            } else if let Some(id) = name.strip_suffix(".qf") {
                texts.insert(id.to_owned());
            } else if name.ends_with(".env.tmp") {
                remove_if_present(&path)?;
            }
        }
        for (id, path) in &messages {
            if !envelopes.contains_key(id) {
                remove_if_present(path)?;
            }
        }
        for (id, path) in &envelopes {
            if !texts.contains(id) {
                remove_if_present(path)?;
            }
        }
        Ok(())
    }

    fn env_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.env"))
    }

    fn tmp_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.env.tmp"))
    }
}

impl Pending<'_> {
    /// Makes the message part of the queue, durably, and wakes the scheduler.
    pub fn commit(mut self) -> io::Result<()> {
        let tmp = self.queue.tmp_path(&self.id);
        fs::rename(&tmp, self.queue.env_path(&self.id))
            .map_err(|e| annotate(e, "cannot rename", &tmp))?;
        self.committed = true;
        sync_dir(&self.queue.dir)?;
        self.queue.touch(&self.id);
        self.queue.wake();
        Ok(())
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(self.queue.tmp_path(&self.id));
            let _ = fs::remove_file(self.queue.message_path(&self.id));
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses `TERN_QUEUE_RETRY`; anything unreadable gives the default schedule.
fn retry_schedule(text: Option<&str>) -> Vec<Duration> {
    let parsed: Option<Vec<Duration>> = text.map(|text| {
        text.split(',')
            .map(|part| crate::config::parse_duration(part.trim()).ok())
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    });
    match parsed {
        Some(list) if !list.is_empty() => list,
        _ => RETRY_SCHEDULE.to_vec(),
    }
}

fn read_entry(path: &Path) -> io::Result<Entry> {
    parse_entry(&fs::read(path)?)
}

fn parse_entry(toml: &[u8]) -> io::Result<Entry> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let text = std::str::from_utf8(toml).map_err(|e| invalid(e.to_string()))?;
    toml::from_str(text).map_err(|e| invalid(e.to_string()))
}

/// The start of a `.qf`'s footer line, which ends with the envelope's length in 16 hex
/// digits and a LF.
const FOOTER_TAG: &str = "tern-envelope ";

/// The footer: LF, the tag, 16 hex digits, LF.
const FOOTER_LEN: u64 = 1 + FOOTER_TAG.len() as u64 + 16 + 1;

/// The envelope inside a `.qf`.
fn read_whole(path: &Path) -> io::Result<Entry> {
    let mut file = File::open(path)?;
    let (text_len, envelope_len) = read_footer(&mut file)?;
    file.seek(SeekFrom::Start(text_len))?;
    let mut envelope = vec![0; envelope_len as usize];
    file.read_exact(&mut envelope)?;
    parse_entry(&envelope)
}

/// A `.qf`'s text length and envelope length, from its footer.
fn read_footer(file: &mut File) -> io::Result<(u64, u64)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let size = file.metadata()?.len();
    if size < FOOTER_LEN {
        return Err(bad("queue file too short for its envelope"));
    }
    file.seek(SeekFrom::Start(size - FOOTER_LEN))?;
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_exact(&mut footer)?;
    let digits = footer
        .strip_prefix(b"\n")
        .and_then(|f| f.strip_prefix(FOOTER_TAG.as_bytes()))
        .and_then(|f| f.strip_suffix(b"\n"))
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or_else(|| bad("queue file without its envelope footer"))?;
    let text_len = (size - FOOTER_LEN)
        .checked_sub(digits)
        .ok_or_else(|| bad("queue file envelope longer than the file"))?;
    Ok((text_len, digits))
}

/// Creates `path` (mode 0600), writes `bytes` and fsyncs it.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| annotate(e, "cannot create", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| annotate(e, "cannot write", path))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(annotate(e, "cannot remove", path)),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| annotate(e, "cannot sync directory", dir))
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
