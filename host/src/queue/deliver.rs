//! The scheduler thread and its workers: pick due recipients, group them by destination,
//! send each group over one connection, record every outcome durably, and turn failures into
//! notifications (see the module documentation of [`super`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_core::address::{Mailbox, ReversePath};
use tern_core::client::{
    self, Config as ClientConfig, Message, Problem, Recipient, Report, SessionError, TlsPolicy,
    Verdict,
};
use tern_core::command::{Body, MailParams, RcptParams, Ret};
use tern_core::reply::Mode;

use super::route::{RouteError, Router, Target};
use super::smtp::{CONNECT_TIMEOUT, Connection, Event, Transport};
use super::{DESTINATION_CONCURRENCY, Entry, State, TOTAL_CONCURRENCY, bounce, maildrop, unix_now};
use crate::config::{LmtpTarget, LocalDelivery, RelayTls};
use crate::service::Services;

/// The longest the scheduler sleeps: it looks for `tern queue flush` and the maildrop this
/// often.
const TICK: Duration = Duration::from_secs(1);

/// The shortest time between two scheduling rounds.
const ROUND: Duration = Duration::from_millis(20);

/// How often the whole queue directory is read again, in case something outside this
/// process changed it.
const RESCAN: Duration = Duration::from_secs(60);

/// How long a worker keeps its connection open after its lane ran empty, for the next
/// message to the same destination.
const IDLE: Duration = Duration::from_secs(2);

/// The destination key of every message when a relay host is set.
const RELAY_KEY: &str = "[relay]";

/// The destination key of recipients for `delivery.local`.
const LOCAL_KEY: &str = "[local]";

/// Starts the scheduler thread for `services`' queue. It stops when the services are
/// dropped.
pub fn start(services: &Arc<Services>) -> io::Result<()> {
    let weak = Arc::downgrade(services);
    let limit = std::env::var("TERN_QUEUE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(TOTAL_CONCURRENCY);
    let pool = Arc::new(Pool {
        limit,
        ..Pool::default()
    });
    thread::Builder::new()
        .name("queue".into())
        .spawn(move || schedule(&weak, &pool))
        .map(drop)
}

/// The delivery workers: a lane of waiting jobs per destination, each served by up to
/// [`DESTINATION_CONCURRENCY`] threads that keep their connection open while the lane has
/// work, and for [`IDLE`] after; at most `limit` threads in all. A lane left without a
/// thread by that limit is taken up by the next thread whose own lane runs out, so while
/// every thread is busy or keeping a connection, a new destination waits up to [`IDLE`].
#[derive(Default)]
struct Pool {
    /// The most threads at once, across destinations: [`TOTAL_CONCURRENCY`], or
    /// `TERN_QUEUE_THREADS` for tests.
    limit: usize,
    busy: Mutex<Busy>,
    /// Signalled when a lane gets jobs, for the workers waiting on an open connection.
    more: Condvar,
}

/// What the workers hold: (message, destination) pairs waiting or being sent, and the lanes.
#[derive(Default)]
struct Busy {
    jobs: HashSet<(String, String)>,
    /// How many jobs each message has in `jobs`.
    per_message: HashMap<String, usize>,
    lanes: HashMap<String, Lane>,
    /// Worker threads running, across lanes.
    threads: usize,
}

/// One destination's jobs and workers.
#[derive(Default)]
struct Lane {
    waiting: VecDeque<Job>,
    /// Threads serving this lane, idle ones included.
    workers: usize,
    /// Threads waiting for a job with a connection open.
    idle: usize,
}

/// Recipients of one message for one destination.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    recipients: Vec<usize>,
}

/// What became of one recipient in one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    Sent {
        reply: String,
        remote_dsn: bool,
    },
    Failed {
        permanent: bool,
        status: String,
        text: String,
    },
}

fn schedule(weak: &Weak<Services>, pool: &Arc<Pool>) {
    // Every entry, as last read. The directory is read in full at start, on a flush and
    // every RESCAN; in between only the entries this process touched are read again.
    let mut cache: HashMap<String, Entry> = HashMap::new();
    let mut last_scan: Option<Instant> = None;
    let mut last_round = Instant::now();
    loop {
        // Under load every commit wakes the scheduler; a short pause gathers them, so a
        // round over the whole cache is made at most every ROUND.
        let since = last_round.elapsed();
        if since < ROUND {
            thread::sleep(ROUND - since);
        }
        last_round = Instant::now();
        let Some(services) = weak.upgrade() else {
            return;
        };
        let queue = services.queue();
        let force = queue.take_flush_request();
        maildrop::pick_up(&services);

        let touched = queue.take_touched();
        if force || last_scan.is_none_or(|at| at.elapsed() >= RESCAN) {
            match queue.entries() {
                Ok((entries, _unreadable)) => {
                    cache = entries.into_iter().map(|e| (e.id.clone(), e)).collect();
                    last_scan = Some(Instant::now());
                }
                Err(e) => services.log().write("qmgr", &format!("warning: {e}")),
            }
        } else {
            for id in touched {
                match queue.load(&id) {
                    Ok(entry) => {
                        cache.insert(id, entry);
                    }
                    Err(_) => {
                        cache.remove(&id);
                    }
                }
            }
        }

        let now = unix_now();
        let mut wait = TICK;
        let mut due: BTreeMap<String, Vec<Job>> = BTreeMap::new();
        let mut ids: Vec<(u64, String)> =
            cache.values().map(|e| (e.arrival, e.id.clone())).collect();
        ids.sort();
        for (_, id) in ids {
            let Some(entry) = cache.get(&id) else {
                continue;
            };
            if let Some(next) = plan(&services, entry, now, force, &pool.busy, &mut due) {
                wait = wait.min(Duration::from_secs(next.saturating_sub(now)));
            }
        }
        for (destination, jobs) in due {
            pool.dispatch(&services, destination, jobs);
        }
        drop(services);
        if !wait.is_zero() {
            queue_wait(weak, wait);
        }
    }
}

fn queue_wait(weak: &Weak<Services>, wait: Duration) {
    let queue = weak.upgrade().map(|s| Arc::clone(s.queue_arc()));
    if let Some(queue) = queue {
        queue.wait(wait);
    }
}

/// Looks at one entry: expires, settles, sends its delay notices and collects its due
/// recipients into `due`.
/// Returns when its next recipient is due, if later than now.
fn plan(
    services: &Arc<Services>,
    entry: &Entry,
    now: u64,
    force: bool,
    busy: &Mutex<Busy>,
    due: &mut BTreeMap<String, Vec<Job>>,
) -> Option<u64> {
    let relay = Router::has_relay(services.config().delivery.relay_host.as_deref());
    let in_flight = {
        let busy = busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.per_message.contains_key(&entry.id)
    };
    if !in_flight {
        let lifetime = services.config().delivery.queue_lifetime.as_secs();
        let expired = now.saturating_sub(entry.arrival) >= lifetime;
        let stale = |r: &super::QueuedRecipient| r.state == State::Pending && r.attempts > 0;
        if expired && entry.recipients.iter().any(stale) {
            let queue = services.queue();
            match queue.update(&entry.id, |e| {
                for r in e.recipients.iter_mut().filter(|r| stale(r)) {
                    r.state = State::Failed;
                    r.status = Some("4.4.7".into());
                    let last = r.last_error.take().unwrap_or_default();
                    r.last_error = Some(format!("delivery time expired: {last}"));
                }
            }) {
                Ok(updated) => log_expired(services, &updated),
                Err(e) => services.log().write("qmgr", &format!("warning: {e}")),
            }
            // The entry changed; the next round plans it as it is now.
            queue.wake();
            return None;
        }
        let unsettled =
            |r: &super::QueuedRecipient| matches!(r.state, State::Failed | State::Sent { .. });
        if entry.is_done() || entry.recipients.iter().any(unsettled) {
            settle(services, &entry.id);
            services.queue().wake();
            return None;
        }
        // A notice that could not be sent must not hold up the delivery itself: the
        // recipients are planned as usual, and the notice is tried again next round.
        let warn = delay_owed(services, entry, now);
        if !warn.is_empty() && warn_delayed(services, entry, &warn) {
            services.queue().wake();
            return None;
        }
    }

    let mut next = None;
    let mut jobs: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, rcpt) in entry.recipients.iter().enumerate() {
        if rcpt.state != State::Pending {
            continue;
        }
        let destination = if rcpt.local {
            LOCAL_KEY.to_owned()
        } else if relay {
            RELAY_KEY.to_owned()
        } else {
            domain_of(&rcpt.address)
        };
        if force || rcpt.next_attempt <= now {
            jobs.entry(destination).or_default().push(index);
        } else {
            next = Some(next.map_or(rcpt.next_attempt, |n: u64| n.min(rcpt.next_attempt)));
        }
    }
    let busy = busy.lock().unwrap_or_else(|e| e.into_inner());
    for (destination, recipients) in jobs {
        if busy.jobs.contains(&(entry.id.clone(), destination.clone())) {
            continue;
        }
        due.entry(destination).or_default().push(Job {
            id: entry.id.clone(),
            recipients,
        });
    }
    next
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts the due jobs of one destination in its lane, wakes its idle workers and starts
    /// new ones for what they cannot take, up to [`DESTINATION_CONCURRENCY`] and the
    /// pool's limit.
    fn dispatch(self: &Arc<Self>, services: &Arc<Services>, destination: String, jobs: Vec<Job>) {
        let mut busy = self.lock();
        let busy = &mut *busy;
        let lane = busy.lanes.entry(destination.clone()).or_default();
        for job in jobs {
            if busy.jobs.insert((job.id.clone(), destination.clone())) {
                *busy.per_message.entry(job.id.clone()).or_default() += 1;
                lane.waiting.push_back(job);
            }
        }
        if lane.idle > 0 && !lane.waiting.is_empty() {
            self.more.notify_all();
        }
        let wanted = lane.waiting.len().saturating_sub(lane.idle);
        let start = wanted
            .min(DESTINATION_CONCURRENCY.saturating_sub(lane.workers))
            .min(self.limit.saturating_sub(busy.threads));
        lane.workers += start;
        busy.threads += start;
        if lane.workers == 0 && lane.waiting.is_empty() {
            busy.lanes.remove(&destination);
        }
        for _ in 0..start {
            let (pool, worker_services, lane_key) =
                (Arc::clone(self), Arc::clone(services), destination.clone());
            let spawned = thread::Builder::new()
                .name("delivery".into())
                .spawn(move || serve_lanes(&worker_services, &pool, lane_key));
            if let Err(e) = spawned {
                busy.threads -= 1;
                if let Some(lane) = busy.lanes.get_mut(&destination) {
                    lane.workers -= 1;
                }
                services.log().write(
                    "qmgr",
                    &format!("warning: cannot start a delivery thread: {e}"),
                );
            }
        }
    }

    /// The next job of `destination`'s lane, waiting up to `wait` for one. `None` means the
    /// calling worker is no longer counted in the lane and must leave it.
    fn next(&self, destination: &str, wait: Duration) -> Option<Job> {
        let deadline = Instant::now() + wait;
        let mut busy = self.lock();
        loop {
            let lane = busy.lanes.get_mut(destination)?;
            if let Some(job) = lane.waiting.pop_front() {
                return Some(job);
            }
            let now = Instant::now();
            if now >= deadline {
                lane.workers -= 1;
                if lane.workers == 0 {
                    busy.lanes.remove(destination);
                }
                return None;
            }
            lane.idle += 1;
            busy = self
                .more
                .wait_timeout(busy, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if let Some(lane) = busy.lanes.get_mut(destination) {
                lane.idle -= 1;
            }
        }
    }

    /// A lane for a worker whose own lane ran out: one with jobs that its idle workers
    /// cannot take and room for another worker, the one with the fewest workers first. The
    /// worker is counted in it. `None` means there is none, and the worker is no longer
    /// counted at all and must stop.
    fn adopt(&self) -> Option<String> {
        let mut busy = self.lock();
        let busy = &mut *busy;
        let found = busy
            .lanes
            .iter_mut()
            .filter(|(_, lane)| {
                lane.waiting.len() > lane.idle && lane.workers < DESTINATION_CONCURRENCY
            })
            .min_by_key(|(_, lane)| lane.workers)
            .map(|(destination, lane)| {
                lane.workers += 1;
                destination.clone()
            });
        if found.is_none() {
            busy.threads -= 1;
        }
        found
    }

    /// Every job still waiting in `destination`'s lane, taken out of it.
    fn drain(&self, destination: &str) -> Vec<Job> {
        let mut busy = self.lock();
        busy.lanes
            .get_mut(destination)
            .map(|lane| lane.waiting.drain(..).collect())
            .unwrap_or_default()
    }

    /// Forgets a job whose outcome is recorded.
    fn done(&self, destination: &str, job: &Job) {
        let mut busy = self.lock();
        busy.jobs.remove(&(job.id.clone(), destination.to_owned()));
        if let Some(n) = busy.per_message.get_mut(&job.id) {
            *n -= 1;
            if *n == 0 {
                busy.per_message.remove(&job.id);
            }
        }
    }
}

/// A worker thread: serves `destination`'s lane, then any lane left without enough
/// workers, until there is none.
fn serve_lanes(services: &Arc<Services>, pool: &Pool, mut destination: String) {
    loop {
        work(services, pool, &destination);
        match pool.adopt() {
            Some(next) => destination = next,
            None => return,
        }
    }
}

/// A worker: takes jobs from `destination`'s lane and sends them over one connection,
/// opening another when it is lost, until the lane has stayed empty for [`IDLE`].
fn work(services: &Arc<Services>, pool: &Pool, destination: &str) {
    let connector = Connector::new(services, destination);
    let mut job = pool.next(destination, Duration::ZERO);
    while let Some(first) = job {
        let (mut conn, via) = match connector.connect(services) {
            Ok(connected) => connected,
            Err(failure) => {
                // The destination cannot be reached now: neither can it for the jobs
                // behind this one.
                let mut jobs = vec![first];
                jobs.extend(pool.drain(destination));
                fail_all(
                    services,
                    &jobs,
                    failure.permanent,
                    failure.status,
                    &failure.text,
                );
                for job in &jobs {
                    pool.done(destination, job);
                }
                services.queue().wake();
                job = pool.next(destination, Duration::ZERO);
                continue;
            }
        };
        let mut current = first;
        let mut reused = false;
        job = loop {
            let sent = send_job(services, &mut conn, &via, &current, reused);
            if sent == Sent::Stale {
                // Nothing of this message reached the server: it goes again, on a new
                // connection, without counting as an attempt.
                break Some(current);
            }
            pool.done(destination, &current);
            services.queue().wake();
            if sent == Sent::Closed {
                break pool.next(destination, Duration::ZERO);
            }
            reused = true;
            match pool.next(destination, IDLE) {
                Some(next) => current = next,
                None => {
                    conn.quit();
                    break None;
                }
            }
        };
    }
}

/// What a worker needs to connect to its destination, made once per worker: the router
/// and the client and TLS configurations. Why no connection could be made is a
/// [`RouteError`], like why no address could be found.
struct Connector {
    destination: String,
    router: Router,
    config: Arc<ClientConfig>,
    tls: Arc<rustls::ClientConfig>,
}

impl Connector {
    fn new(services: &Services, destination: &str) -> Connector {
        let delivery = &services.config().delivery;
        let local = destination == LOCAL_KEY;
        Connector {
            destination: destination.to_owned(),
            router: Router::new(&services.config().delivery),
            config: Arc::new(if local {
                ClientConfig::new(&services.config().hostname, Mode::Lmtp)
            } else {
                client_config(services)
            }),
            tls: super::tls::client_config(!local && delivery.relay_tls == RelayTls::Verify),
        }
    }

    /// A connection past its greeting (and EHLO, STARTTLS), ready for a message: the LMTP
    /// server of `delivery.local`, or the destination's hosts in order.
    fn connect(&self, services: &Services) -> Result<(Connection, Via), RouteError> {
        if self.destination == LOCAL_KEY {
            return self.connect_local(services);
        }
        let targets = self.router.targets(|| services.dns(), &self.destination)?;
        let mut last_error = String::from("no mail host to try");
        for target in targets {
            let relay = relay_name(&target);
            let tcp = match TcpStream::connect_timeout(&target.addr, CONNECT_TIMEOUT) {
                Ok(tcp) => tcp,
                Err(e) => {
                    last_error = format!("connect to {relay}: {e}");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let via = Via {
                service: "smtp",
                relay,
                host: target.host,
            };
            match self.greet(Transport::Tcp(tcp), via) {
                Ok(connected) => return Ok(connected),
                Err(text) => last_error = text,
            }
        }
        Err(RouteError {
            permanent: false,
            status: "4.4.1",
            text: last_error,
        })
    }

    fn connect_local(&self, services: &Services) -> Result<(Connection, Via), RouteError> {
        let LocalDelivery::Lmtp(target) = &services.config().delivery.local else {
            return Err(RouteError {
                permanent: false,
                status: "4.3.5",
                text: "delivery.local is maildir, but these recipients wait for an LMTP server"
                    .into(),
            });
        };
        let (transport, relay) = connect_local(target).map_err(|text| RouteError {
            permanent: false,
            status: "4.4.1",
            text,
        })?;
        let host = relay.split('[').next().unwrap_or("lmtp").to_owned();
        let via = Via {
            service: "lmtp",
            relay,
            host,
        };
        self.greet(transport, via).map_err(|text| RouteError {
            permanent: false,
            status: "4.4.2",
            text,
        })
    }

    /// Runs a new connection up to its first `Ready`.
    fn greet(&self, transport: Transport, via: Via) -> Result<(Connection, Via), String> {
        let tls = Arc::clone(&self.tls);
        let mut conn = Connection::new(Arc::clone(&self.config), transport, tls, &via.host)
            .map_err(|e| e.to_string())?;
        match conn.next_event() {
            Event::Ready => Ok((conn, via)),
            Event::Closed(Some(error)) => Err(format!("host {} said: {error}", via.relay)),
            Event::Closed(None) => Err(format!("lost connection with {}", via.relay)),
            other => Err(format!("unexpected {other:?} from {}", via.relay)),
        }
    }
}

/// How a job went, for the connection it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The job's outcome is recorded and the connection can take another.
    Alive,
    /// The job's outcome is recorded and the connection is gone.
    Closed,
    /// A connection kept from an earlier message was gone before the server asked for the
    /// text: a server may close an idle connection at any time (RFC 5321 section 4.1.1.5
    /// lets it end one with 421), so this says nothing about the message, and nothing is
    /// recorded.
    Stale,
}

/// Sends one job over `conn`, which has carried other messages before when `reused`.
fn send_job(
    services: &Arc<Services>,
    conn: &mut Connection,
    via: &Via,
    job: &Job,
    reused: bool,
) -> Sent {
    let queue = services.queue();
    let Ok(entry) = queue.load(&job.id) else {
        return Sent::Alive;
    };
    let indices: Vec<usize> = job
        .recipients
        .iter()
        .copied()
        .filter(|&i| {
            entry
                .recipients
                .get(i)
                .is_some_and(|r| r.state == State::Pending)
        })
        .collect();
    if indices.is_empty() {
        return Sent::Alive;
    }
    let service = via.service;
    let message = match message_of(&entry, &indices) {
        Ok(message) => message,
        Err(text) => {
            let outcomes = vec![Outcome::failed(true, "5.1.3", &text); indices.len()];
            record(services, service, &entry.id, &indices, &outcomes, None);
            return Sent::Alive;
        }
    };
    if let Err(text) = conn.start_message(message) {
        let outcomes = vec![Outcome::failed(true, "5.5.4", &text); indices.len()];
        record(services, service, &entry.id, &indices, &outcomes, None);
        return Sent::Alive;
    }
    let mut reported = false;
    let mut text_sent = false;
    let mut stale = false;
    loop {
        match conn.next_event() {
            Event::MessageText => {
                text_sent = true;
                let sent = queue
                    .open_text(&entry.id)
                    .and_then(|mut text| conn.send_text(entry.received.as_bytes(), &mut text));
                if let Err(e) = sent {
                    services.log().write(
                        "smtp",
                        &format!("warning: {}: cannot read the queue file: {e}", entry.id),
                    );
                    conn.abort();
                }
            }
            Event::Report(report) if reused && !text_sent && closed_while_idle(&report) => {
                stale = true;
            }
            Event::Report(report) => {
                let remote_dsn = conn.session().extensions().dsn;
                let outcomes = outcomes_of(&report, remote_dsn);
                record(services, service, &entry.id, &indices, &outcomes, Some(via));
                reported = true;
            }
            Event::Ready => return Sent::Alive,
            Event::Closed(_) if stale => return Sent::Stale,
            Event::Closed(error) => {
                if !reported {
                    let relay = &via.relay;
                    let text = error.map_or_else(
                        || format!("lost connection with {relay}"),
                        |e| format!("host {relay} said: {e}"),
                    );
                    let outcomes = vec![Outcome::failed(false, "4.4.2", &text); indices.len()];
                    record(services, service, &entry.id, &indices, &outcomes, Some(via));
                }
                return Sent::Closed;
            }
        }
    }
}

/// Where a connection goes, as the log and the notifications name it.
struct Via {
    /// The log's service: `smtp` or `lmtp`.
    service: &'static str,
    /// Postfix's `relay=` value: `host[addr]:port`, or `lmtp[path]`.
    relay: String,
    /// The host name for `Remote-MTA:`.
    host: String,
}

/// Connects to the LMTP server of `delivery.local`; returns the socket and its `relay=`
/// name.
fn connect_local(target: &LmtpTarget) -> Result<(Transport, String), String> {
    match target {
        LmtpTarget::Unix(path) => {
            let relay = format!("lmtp[{}]", path.display());
            UnixStream::connect(path)
                .map(|unix| (Transport::Unix(unix), relay.clone()))
                .map_err(|e| format!("connect to {relay}: {e}"))
        }
        LmtpTarget::Inet { host, port } => {
            let addrs = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
            let mut last = format!("connect to {host}:{port}: no address");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(tcp) => {
                        return Ok((Transport::Tcp(tcp), format!("{host}[{}]:{port}", addr.ip())));
                    }
                    Err(e) => last = format!("connect to {host}[{}]:{port}: {e}", addr.ip()),
                }
            }
            Err(last)
        }
    }
}

/// Records the failure of every recipient of `jobs`.
fn fail_all(services: &Arc<Services>, jobs: &[Job], permanent: bool, status: &str, text: &str) {
    for job in jobs {
        let outcomes = vec![Outcome::failed(permanent, status, text); job.recipients.len()];
        record(services, "smtp", &job.id, &job.recipients, &outcomes, None);
    }
}

/// Makes the outcomes durable, logs them, and settles the entry.
fn record(
    services: &Arc<Services>,
    service: &str,
    id: &str,
    indices: &[usize],
    outcomes: &[Outcome],
    via: Option<&Via>,
) {
    let queue = services.queue();
    let now = unix_now();
    let updated = queue.update(id, |entry| {
        for (&index, outcome) in indices.iter().zip(outcomes) {
            let Some(rcpt) = entry.recipients.get_mut(index) else {
                continue;
            };
            if rcpt.state != State::Pending {
                continue;
            }
            rcpt.attempts += 1;
            rcpt.remote_mta = via.map(|via| via.host.clone());
            match outcome {
                Outcome::Sent { reply, remote_dsn } => {
                    let unreported = rcpt.wants_success_notice() && !remote_dsn;
                    rcpt.state = if unreported {
                        State::Sent {
                            relayed_unreported: true,
                        }
                    } else {
                        State::Done
                    };
                    rcpt.status = Some(status_of(reply, "2.0.0"));
                    rcpt.last_error = None;
                }
                Outcome::Failed {
                    permanent,
                    status,
                    text,
                } => {
                    rcpt.status = Some(status.clone());
                    rcpt.last_error = Some(text.clone());
                    if *permanent {
                        rcpt.state = State::Failed;
                    } else {
                        rcpt.next_attempt = now + queue.retry_delay(rcpt.attempts).as_secs();
                    }
                }
            }
        }
    });
    let entry = match updated {
        Ok(entry) => entry,
        Err(e) => {
            services.log().write(
                "smtp",
                &format!("warning: {id}: cannot record the outcome: {e}"),
            );
            return;
        }
    };

    let relay_text = via.map_or("none", |via| via.relay.as_str());
    let delay = SystemTime::now()
        .duration_since(UNIX_EPOCH + Duration::from_secs(entry.arrival))
        .map_or(0.0, |d| d.as_secs_f64());
    for (&index, outcome) in indices.iter().zip(outcomes) {
        let Some(rcpt) = entry.recipients.get(index) else {
            continue;
        };
        let (dsn, status, text) = match outcome {
            Outcome::Sent { reply, .. } => (status_of(reply, "2.0.0"), "sent", reply.clone()),
            Outcome::Failed {
                permanent: true,
                status,
                text,
            } => (status.clone(), "bounced", text.clone()),
            Outcome::Failed { status, text, .. } => (status.clone(), "deferred", text.clone()),
        };
        services.log().write(
            service,
            &format!(
                "{id}: to=<{}>, relay={relay_text}, delay={delay:.2}, dsn={dsn}, \
                 status={status} ({text})",
                rcpt.address
            ),
        );
    }
    if entry.is_done() {
        services.log().write("qmgr", &format!("{id}: removed"));
    } else {
        settle(services, id);
    }
}

/// Sends the notifications an entry owes and removes it when every recipient is done.
fn settle(services: &Arc<Services>, id: &str) {
    let queue = services.queue();
    let Ok(entry) = queue.load(id) else {
        return;
    };
    let owed: Vec<usize> = entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| match r.state {
            State::Failed => r.wants_failure_notice(),
            State::Sent { relayed_unreported } => relayed_unreported,
            State::Pending | State::Done => false,
        })
        .map(|(i, _)| i)
        .collect();
    if !owed.is_empty() {
        match bounce::notify(services, &entry, &owed) {
            Ok(()) => {}
            Err(e) => {
                services.log().write(
                    "bounce",
                    &format!("warning: {id}: cannot send the delivery status notification: {e}"),
                );
                return;
            }
        }
    }
    let finished = entry
        .recipients
        .iter()
        .any(|r| matches!(r.state, State::Failed | State::Sent { .. }));
    let entry = if finished {
        match queue.update(id, |e| {
            for r in &mut e.recipients {
                if matches!(r.state, State::Failed | State::Sent { .. }) {
                    r.state = State::Done;
                }
            }
        }) {
            Ok(entry) => entry,
            Err(e) => {
                services.log().write("qmgr", &format!("warning: {id}: {e}"));
                return;
            }
        }
    } else {
        // Left done by a crash before its removal.
        if entry.is_done()
            && let Err(e) = queue.remove(id)
        {
            services.log().write("qmgr", &format!("warning: {id}: {e}"));
            return;
        }
        entry
    };
    if entry.is_done() {
        services.log().write("qmgr", &format!("{id}: removed"));
    }
}

/// The recipients of `entry` owed a delay notice now: still pending (tried and deferred at
/// least once) `delivery.delay_warning` after the message arrived, with NOTIFY=DELAY, and
/// not yet warned. A message from the null sender (a notification among them) gets none.
fn delay_owed(services: &Services, entry: &Entry, now: u64) -> Vec<usize> {
    let warning = services.config().delivery.delay_warning;
    let age = Duration::from_secs(now.saturating_sub(entry.arrival));
    if warning.is_zero() || age < warning || entry.is_from_null_sender() {
        return Vec::new();
    }
    entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.state == State::Pending && r.attempts > 0 && !r.delay_warned && r.wants_delay_notice()
        })
        .map(|(i, _)| i)
        .collect()
}

/// Sends one delay notice for recipients `owed` of `entry`, then records that they were
/// warned. Returns whether that record was written. Like a failure report, the notice is
/// queued before the record is written, so a crash between the two sends it twice, never
/// zero times.
fn warn_delayed(services: &Arc<Services>, entry: &Entry, owed: &[usize]) -> bool {
    let id = &entry.id;
    if let Err(e) = bounce::notify(services, entry, owed) {
        services.log().write(
            "bounce",
            &format!("warning: {id}: cannot send the delay notification: {e}"),
        );
        return false;
    }
    let marked = services.queue().update(id, |e| {
        for &i in owed {
            if let Some(rcpt) = e.recipients.get_mut(i) {
                rcpt.delay_warned = true;
            }
        }
    });
    match marked {
        Ok(_) => true,
        Err(e) => {
            services.log().write("qmgr", &format!("warning: {id}: {e}"));
            false
        }
    }
}

fn log_expired(services: &Services, entry: &Entry) {
    services.log().write(
        "qmgr",
        &format!(
            "{}: from=<{}>, status=expired, returned to sender",
            entry.id, entry.sender
        ),
    );
}

/// The client configuration for the `[delivery]` settings.
fn client_config(services: &Services) -> ClientConfig {
    let config = services.config();
    let mut client = ClientConfig::new(&config.hostname, Mode::Smtp);
    client.tls = match config.delivery.relay_tls {
        RelayTls::None => TlsPolicy::None,
        RelayTls::May => TlsPolicy::May,
        RelayTls::Encrypt | RelayTls::Verify => TlsPolicy::Encrypt,
    };
    client
}

/// The client message for some recipients of an entry.
fn message_of(entry: &Entry, indices: &[usize]) -> Result<Message, String> {
    let sender = if entry.sender.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Mailbox(
            Mailbox::parse(&entry.sender)
                .map_err(|e| format!("bad sender {}: {e}", entry.sender))?,
        )
    };
    let mut recipients = Vec::new();
    for &i in indices {
        let rcpt = &entry.recipients[i];
        let address = Mailbox::parse(&rcpt.address)
            .map_err(|e| format!("bad recipient {}: {e}", rcpt.address))?;
        recipients.push(Recipient {
            address,
            params: RcptParams {
                notify: rcpt.notify(),
                orcpt: rcpt.orcpt.clone(),
            },
        });
    }
    Ok(Message {
        sender,
        params: MailParams {
            size: Some(entry.size),
            body: entry.eight_bit.then_some(Body::EightBitMime),
            smtputf8: entry.smtputf8,
            ret: match entry.ret.as_deref() {
                Some("FULL") => Some(Ret::Full),
                Some("HDRS") => Some(Ret::Hdrs),
                _ => None,
            },
            envid: entry.envid.clone(),
            auth: None,
        },
        recipients,
    })
}

/// Whether the server ended the session before it said anything about the message: the
/// connection lost, or a 421, before any recipient's verdict.
fn closed_while_idle(report: &Report) -> bool {
    report.recipients.iter().all(|r| match &r.verdict {
        Verdict::NotSent(Problem::Session(SessionError::ConnectionLost { .. })) => true,
        Verdict::NotSent(Problem::Session(SessionError::Refused { reply, .. })) => {
            reply.code == 421
        }
        _ => false,
    })
}

fn outcomes_of(report: &Report, remote_dsn: bool) -> Vec<Outcome> {
    report
        .recipients
        .iter()
        .map(|r| match &r.verdict {
            Verdict::Sent(reply) => Outcome::Sent {
                reply: reply.to_string(),
                remote_dsn,
            },
            Verdict::Refused { reply, stage } => Outcome::Failed {
                permanent: reply.is_permanent(),
                status: reply.enhanced.map_or_else(
                    || {
                        if reply.is_permanent() {
                            "5.0.0".into()
                        } else {
                            "4.0.0".into()
                        }
                    },
                    |c| format!("{}.{}.{}", c.class, c.subject, c.detail),
                ),
                text: format!("{reply} (in reply to {stage})"),
            },
            Verdict::NotSent(problem) => Outcome::Failed {
                permanent: problem.is_permanent(),
                status: match problem {
                    client::Problem::NeedsSmtpUtf8 => "5.6.7".into(),
                    client::Problem::TooBig { .. } => "5.3.4".into(),
                    client::Problem::Session(_) => "4.4.2".into(),
                },
                text: problem.to_string(),
            },
        })
        .collect()
}

impl Outcome {
    fn failed(permanent: bool, status: &str, text: &str) -> Outcome {
        Outcome::Failed {
            permanent,
            status: status.to_owned(),
            text: text.to_owned(),
        }
    }
}

/// The enhanced code at the start of a reply's text (`250 2.0.0 Ok`), or `default`.
fn status_of(reply: &str, default: &str) -> String {
    reply
        .split_whitespace()
        .nth(1)
        .filter(|word| client::EnhancedCode::parse(word).is_some())
        .map_or_else(|| default.to_owned(), str::to_owned)
}

/// Postfix's `host[addr]:port`.
fn relay_name(target: &Target) -> String {
    format!(
        "{}[{}]:{}",
        target.host,
        target.addr.ip(),
        target.addr.port()
    )
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, domain)| domain)
        .to_ascii_lowercase()
}
