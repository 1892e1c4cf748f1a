//! The scheduler thread and its workers: pick due recipients, group them by destination,
//! send each group over one connection, record every outcome durably, and turn failures into
//! notifications (see the module documentation of [`super`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_core::address::{Mailbox, ReversePath};
use tern_core::client::{
    self, Config as ClientConfig, Message, Recipient, Report, TlsPolicy, Verdict,
};
use tern_core::command::{Body, MailParams, RcptParams, Ret};
use tern_core::reply::Mode;

use super::route::{RouteError, Router, Target};
use super::smtp::{CONNECT_TIMEOUT, Connection, Event, Transport};
use super::{DESTINATION_CONCURRENCY, Entry, State, bounce, maildrop, unix_now};
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

/// The destination key of every message when a relay host is set.
const RELAY_KEY: &str = "[relay]";

/// The destination key of recipients for `delivery.local`.
const LOCAL_KEY: &str = "[local]";

/// Starts the scheduler thread for `services`' queue. It stops when the services are
/// dropped.
pub fn start(services: &Arc<Services>) -> io::Result<()> {
    let weak = Arc::downgrade(services);
    let busy = Arc::new(Mutex::new(Busy::default()));
    thread::Builder::new()
        .name("queue".into())
        .spawn(move || schedule(&weak, &busy))
        .map(drop)
}

/// What the workers hold: (message, destination) pairs and connections per destination.
#[derive(Default)]
struct Busy {
    jobs: HashSet<(String, String)>,
    /// How many jobs each message has in `jobs`.
    per_message: HashMap<String, usize>,
    per_destination: HashMap<String, usize>,
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

fn schedule(weak: &Weak<Services>, busy: &Arc<Mutex<Busy>>) {
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
            if let Some(next) = plan(&services, entry, now, force, busy, &mut due) {
                wait = wait.min(Duration::from_secs(next.saturating_sub(now)));
            }
        }
        for (destination, jobs) in due {
            dispatch(&services, busy, destination, jobs);
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

/// Looks at one entry: expires, settles and collects its due recipients into `due`.
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

/// Hands the due jobs of one destination to up to [`DESTINATION_CONCURRENCY`] workers.
fn dispatch(
    services: &Arc<Services>,
    busy: &Arc<Mutex<Busy>>,
    destination: String,
    jobs: Vec<Job>,
) {
    let mut busy_now = busy.lock().unwrap_or_else(|e| e.into_inner());
    let running = busy_now
        .per_destination
        .get(&destination)
        .copied()
        .unwrap_or(0);
    let free = DESTINATION_CONCURRENCY.saturating_sub(running);
    if free == 0 {
        return;
    }
    let chunk = jobs.len().div_ceil(free).max(1);
    for batch in jobs.chunks(chunk).take(free) {
        let batch = batch.to_vec();
        for job in &batch {
            busy_now.jobs.insert((job.id.clone(), destination.clone()));
            *busy_now.per_message.entry(job.id.clone()).or_default() += 1;
        }
        *busy_now
            .per_destination
            .entry(destination.clone())
            .or_default() += 1;
        let (worker_services, busy, destination) =
            (Arc::clone(services), Arc::clone(busy), destination.clone());
        let spawned = thread::Builder::new()
            .name(format!("smtp-{destination}"))
            .spawn(move || {
                let services = worker_services;
                work(&services, &destination, batch.clone());
                let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
                for job in &batch {
                    busy.jobs.remove(&(job.id.clone(), destination.clone()));
                    if let Some(n) = busy.per_message.get_mut(&job.id) {
                        *n -= 1;
                        if *n == 0 {
                            busy.per_message.remove(&job.id);
                        }
                    }
                }
                if let Some(n) = busy.per_destination.get_mut(&destination) {
                    *n -= 1;
                    if *n == 0 {
                        busy.per_destination.remove(&destination);
                    }
                }
                drop(busy);
                services.queue().wake();
            });
        if let Err(e) = spawned {
            services.log().write(
                "qmgr",
                &format!("warning: cannot start a delivery thread: {e}"),
            );
        }
    }
}

/// Delivers a batch for one destination over as few connections as it can.
fn work(services: &Arc<Services>, destination: &str, jobs: Vec<Job>) {
    if destination == LOCAL_KEY {
        work_local(services, jobs);
        return;
    }
    let delivery = &services.config().delivery;
    let router = match Router::new(delivery) {
        Ok(router) => router,
        Err(text) => {
            fail_all(services, &jobs, false, "4.3.0", &text);
            return;
        }
    };
    let targets = match router.targets(destination) {
        Ok(targets) => targets,
        Err(RouteError {
            permanent,
            status,
            text,
        }) => {
            fail_all(services, &jobs, permanent, status, &text);
            return;
        }
    };

    let config = Arc::new(client_config(services));
    let tls = super::tls::client_config(delivery.relay_tls == RelayTls::Verify);
    let mut jobs: VecDeque<Job> = jobs.into();
    let mut last_error = String::from("no mail host to try");
    for target in targets {
        if jobs.is_empty() {
            break;
        }
        let relay = relay_name(&target);
        let tcp = match TcpStream::connect_timeout(&target.addr, CONNECT_TIMEOUT) {
            Ok(tcp) => tcp,
            Err(e) => {
                last_error = format!("connect to {relay}: {e}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut conn = match Connection::new(
            Arc::clone(&config),
            Transport::Tcp(tcp),
            Arc::clone(&tls),
            &target.host,
        ) {
            Ok(conn) => conn,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        match conn.next_event() {
            Event::Ready => {}
            Event::Closed(error) => {
                last_error = match error {
                    Some(error) => format!("host {relay} said: {error}"),
                    None => format!("lost connection with {relay}"),
                };
                continue;
            }
            other => {
                last_error = format!("unexpected {other:?} from {relay}");
                continue;
            }
        }
        let via = Via {
            service: "smtp",
            relay: &relay,
            host: &target.host,
        };
        send_jobs(services, &mut conn, &via, &mut jobs);
        conn.quit();
    }
    if !jobs.is_empty() {
        let jobs: Vec<Job> = jobs.into();
        fail_all(services, &jobs, false, "4.4.1", &last_error);
    }
}

/// Sends jobs over `conn` while it lives; a job whose message was started is taken off
/// `jobs` whatever became of it.
fn send_jobs(
    services: &Arc<Services>,
    conn: &mut Connection,
    via: &Via<'_>,
    jobs: &mut VecDeque<Job>,
) {
    let queue = services.queue();
    while let Some(job) = jobs.pop_front() {
        let Ok(entry) = queue.load(&job.id) else {
            continue;
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
            continue;
        }
        let message = match message_of(&entry, &indices) {
            Ok(message) => message,
            Err(text) => {
                let outcomes = vec![Outcome::failed(true, "5.1.3", &text); indices.len()];
                record(services, via.service, &entry.id, &indices, &outcomes, None);
                continue;
            }
        };
        if let Err(text) = conn.start_message(message) {
            let outcomes = vec![Outcome::failed(true, "5.5.4", &text); indices.len()];
            record(services, via.service, &entry.id, &indices, &outcomes, None);
            continue;
        }
        let mut reported = false;
        loop {
            match conn.next_event() {
                Event::MessageText => {
                    let sent = File::open(queue.message_path(&entry.id))
                        .and_then(|mut file| conn.send_text(entry.received.as_bytes(), &mut file));
                    if let Err(e) = sent {
                        services.log().write(
                            "smtp",
                            &format!("warning: {}: cannot read the queue file: {e}", entry.id),
                        );
                        conn.abort();
                    }
                }
                Event::Report(report) => {
                    let remote_dsn = conn.session().extensions().dsn;
                    let outcomes = outcomes_of(&report, remote_dsn);
                    let (service, id) = (via.service, &entry.id);
                    record(services, service, id, &indices, &outcomes, Some(via));
                    reported = true;
                }
                Event::Ready => break,
                Event::Closed(error) => {
                    if !reported {
                        let relay = via.relay;
                        let text = error.map_or_else(
                            || format!("lost connection with {relay}"),
                            |e| format!("host {relay} said: {e}"),
                        );
                        let outcomes = vec![Outcome::failed(false, "4.4.2", &text); indices.len()];
                        let (service, id) = (via.service, &entry.id);
                        record(services, service, id, &indices, &outcomes, Some(via));
                    }
                    return;
                }
            }
        }
    }
}

/// Where a connection goes, as the log and the notifications name it.
struct Via<'a> {
    /// The log's service: `smtp` or `lmtp`.
    service: &'a str,
    /// Postfix's `relay=` value: `host[addr]:port`, or `lmtp[path]`.
    relay: &'a str,
    /// The host name for `Remote-MTA:`.
    host: &'a str,
}

/// Retries recipients that the `delivery.local` LMTP server refused after the data.
fn work_local(services: &Arc<Services>, jobs: Vec<Job>) {
    let LocalDelivery::Lmtp(target) = &services.config().delivery.local else {
        let text = "delivery.local is maildir, but these recipients wait for an LMTP server";
        fail_all(services, &jobs, false, "4.3.5", text);
        return;
    };
    let (transport, relay) = match connect_local(target) {
        Ok(connected) => connected,
        Err(text) => {
            fail_all(services, &jobs, false, "4.4.1", &text);
            return;
        }
    };
    let config = Arc::new(ClientConfig::new(&services.config().hostname, Mode::Lmtp));
    let tls = super::tls::client_config(false);
    let host = relay.split('[').next().unwrap_or("lmtp").to_owned();
    let mut conn = match Connection::new(config, transport, tls, &host) {
        Ok(conn) => conn,
        Err(e) => {
            fail_all(services, &jobs, false, "4.3.0", &e.to_string());
            return;
        }
    };
    let mut jobs: VecDeque<Job> = jobs.into();
    match conn.next_event() {
        Event::Ready => {
            let via = Via {
                service: "lmtp",
                relay: &relay,
                host: &host,
            };
            send_jobs(services, &mut conn, &via, &mut jobs);
            conn.quit();
        }
        other => {
            let text = format!("{relay}: no greeting or LHLO: {other:?}");
            fail_all(services, &Vec::from(jobs), false, "4.4.2", &text);
            return;
        }
    }
    if !jobs.is_empty() {
        let text = format!("lost connection with {relay}");
        fail_all(services, &Vec::from(jobs), false, "4.4.2", &text);
    }
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
    via: Option<&Via<'_>>,
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
            rcpt.remote_mta = via.map(|via| via.host.to_owned());
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

    let relay_text = via.map_or("none", |via| via.relay);
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
