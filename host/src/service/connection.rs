//! One connection's side of the work: credentials, recipient and domain lookups, spooling
//! and delivering messages, and the log lines that go with them.

use std::collections::HashSet;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tern_core::address::ReversePath;
use tern_core::dovecot::{AuthRequest, AuthResult};
use tern_core::recipient::Destination;
use tern_core::replay::Recorder;
use tern_core::reply::Mode;
use tern_core::sasl::{Credentials, ScramLookup, ScramNonce};
use tern_core::server::{AuthVerdict, DeliveryReport, Envelope, Lookup, Output, Peer, RcptOutcome};

use super::{Admission, Services, lmtp_out};
use crate::accounts::{self, expand_mailbox_path};
use crate::config::LocalDelivery;
use crate::dovecot;
use crate::headers::{self, ReceivedInfo};
use crate::log::client_name;
use crate::maildir::{Copy, DeliveryError, Spool};

/// Headers are searched for `Message-ID:` in at most this many leading octets.
const HEADER_SCAN_LIMIT: usize = 16 * 1024;

/// What a runtime does with one output of a session.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Flush, run the TLS handshake, then call [`ConnectionHandler::tls_established`] and
    /// `Session::handle_tls_established`; on failure drop the connection.
    StartTls,
    /// Flush and close the connection.
    Close,
    /// Blocking work for [`ConnectionHandler::work`].
    Work(Work),
}

/// An output that [`ConnectionHandler::work`] performs.
#[derive(Debug)]
pub struct Work(Output);

impl Work {
    /// For work that answers nothing and may wait for later work, the octets of message text
    /// it carries: a message's start (0) and its pieces of text. A runtime may hold such work
    /// back and hand it over together with what follows, in order.
    pub fn deferrable_len(&self) -> Option<usize> {
        match &self.0 {
            Output::MessageStart(_) => Some(0),
            Output::MessageData(bytes) => Some(bytes.len()),
            _ => None,
        }
    }
}

/// The answer to feed back into the session after [`ConnectionHandler::work`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For `Output::Authenticate`.
    Auth(AuthVerdict),
    /// For `Output::CheckRecipient`.
    Recipient(Lookup),
    /// For `Output::CheckDomain`.
    Domain(Lookup),
    /// For `Output::MessageEnd`.
    Delivery(DeliveryReport),
    /// For `Output::LookupScram`, with the server's part of the nonce.
    Scram(ScramLookup, ScramNonce),
}

/// Does the blocking work of one connection and keeps the message being received.
pub struct ConnectionHandler {
    services: Arc<Services>,
    /// Held for the connection's lifetime: its place in the connection limits.
    admission: Admission,
    peer: Peer,
    tls: Option<(String, String)>,
    message: Option<Message>,
    /// Where the session's recording goes, when its listener records.
    record: Option<PathBuf>,
}

struct Message {
    queue_id: String,
    envelope: Envelope,
    /// The error once creating or writing the spool failed: the message can then only be
    /// refused.
    spool: Result<Spool, io::ErrorKind>,
    started: Instant,
    size: u64,
    header: Vec<u8>,
    header_done: bool,
}

impl From<Output> for Action {
    fn from(output: Output) -> Action {
        match output {
            Output::Send(bytes) => Action::Send(bytes),
            Output::StartTls => Action::StartTls,
            Output::Close => Action::Close,
            other => Action::Work(Work(other)),
        }
    }
}

impl Answer {
    /// Hands the answer to the session it was asked for.
    pub fn apply(self, session: &mut Recorder, now: Instant) {
        match self {
            Answer::Auth(verdict) => session.handle_auth(now, verdict),
            Answer::Recipient(lookup) => session.handle_recipient(now, lookup),
            Answer::Domain(lookup) => session.handle_domain(now, lookup),
            Answer::Delivery(report) => session.handle_delivery(now, report),
            Answer::Scram(lookup, nonce) => session.handle_scram_lookup(now, lookup, &nonce),
        }
    }
}

impl ConnectionHandler {
    pub(super) fn new(
        services: Arc<Services>,
        admission: Admission,
        peer: Peer,
        tls: Option<(String, String)>,
        record: Option<PathBuf>,
    ) -> ConnectionHandler {
        let handler = ConnectionHandler {
            services,
            admission,
            peer,
            tls,
            message: None,
            record,
        };
        handler.log(&format!("connect from {}", client_name(peer.client)));
        handler
    }

    /// Records the negotiated TLS version and cipher after STARTTLS, for `Received:`.
    pub fn tls_established(&mut self, info: Option<(String, String)>) {
        self.tls = info;
    }

    /// Logs a failed TLS handshake (the runtime then drops the connection), as Postfix's
    /// `SSL_accept error` line.
    pub fn tls_failed(&self, error: &dyn std::fmt::Display) {
        self.log(&format!(
            "SSL_accept error from {}: {error}",
            client_name(self.peer.client)
        ));
    }

    /// Does `work` with blocking calls; returns the answer the session waits for, if any.
    pub fn work(&mut self, work: Work) -> Option<Answer> {
        match work.0 {
            Output::Authenticate(credentials) => {
                let context = AuthContext {
                    client: self.peer.client,
                    local: self.peer.local,
                    secured: self.tls.is_some(),
                };
                let log_as = self.log_name();
                let verdict = authenticate(&self.services, &credentials, &context, log_as);
                Some(Answer::Auth(verdict))
            }
            Output::CheckRecipient(account) => {
                Some(Answer::Recipient(self.check_account(&account)))
            }
            Output::CheckDomain(domain) => {
                Some(Answer::Domain(resolve_domain(&self.services, &domain)))
            }
            Output::LookupScram(login) => {
                let (lookup, nonce) = lookup_scram(&self.services, &login);
                Some(Answer::Scram(lookup, nonce))
            }
            Output::AuthFailed(mechanism) => {
                let client = client_name(self.peer.client);
                self.log(&format!(
                    "warning: {client}: SASL {mechanism} authentication failed: \
                     authentication failure"
                ));
                None
            }
            Output::MessageStart(envelope) => {
                self.start_message(envelope);
                None
            }
            Output::MessageData(bytes) => {
                self.message_data(&bytes);
                None
            }
            Output::MessageAbort => {
                self.message = None;
                None
            }
            Output::MessageEnd => Some(Answer::Delivery(self.deliver())),
            Output::Send(_) | Output::StartTls | Output::Close => None,
        }
    }

    /// The connection is over: logs `disconnect from` with the session's command counts,
    /// writes the session's recording if its listener records, and throws away a message
    /// still being received.
    pub fn finish(self, session: &Recorder) {
        self.log(&format!(
            "disconnect from {} {}",
            client_name(self.peer.client),
            session.command_summary()
        ));
        if let (Some(path), Some(text)) = (&self.record, session.recording()) {
            if let Err(e) = write_recording(path, &text) {
                self.log(&format!(
                    "warning: cannot write recording {}: {e}",
                    path.display()
                ));
            }
        }
    }

    fn check_account(&self, account: &str) -> Lookup {
        match find_account(&self.services, account) {
            Ok(Some(_)) => Lookup::Found,
            Ok(None) => Lookup::NotFound,
            Err(reason) => {
                self.log(&format!("warning: {account}: user lookup failed: {reason}"));
                Lookup::TempFail
            }
        }
    }

    fn start_message(&mut self, envelope: Envelope) {
        let queue_id = self.services.queue_ids.next();
        let mut line = format!("{queue_id}: client={}", client_name(self.peer.client));
        if let (Some(login), Some(mechanism)) = (&envelope.login, envelope.mechanism) {
            line.push_str(&format!(", sasl_method={mechanism}, sasl_username={login}"));
        }
        self.log(&line);

        let spool = match Spool::create(&self.services.spool_dir) {
            Ok(spool) => Ok(spool),
            Err(e) => {
                self.services
                    .log
                    .write("cleanup", &format!("warning: {queue_id}: {e}"));
                Err(e.kind())
            }
        };
        self.message = Some(Message {
            queue_id,
            envelope,
            spool,
            started: Instant::now(),
            size: 0,
            header: Vec::new(),
            header_done: false,
        });
    }

    fn message_data(&mut self, bytes: &[u8]) {
        let Some(message) = &mut self.message else {
            return;
        };
        message.size += bytes.len() as u64;
        if !message.header_done {
            message.header.extend_from_slice(bytes);
            message.header_done =
                header_end(&message.header).is_some() || message.header.len() >= HEADER_SCAN_LIMIT;
        }
        if let Ok(spool) = &mut message.spool
            && let Err(e) = spool.write(bytes)
        {
            let id = &message.queue_id;
            self.services.log.write(
                "cleanup",
                &format!("warning: {id}: spool write failed: {e}"),
            );
            message.spool = Err(e.kind());
        }
    }

    /// Delivers the finished message to every local destination, all or nothing.
    fn deliver(&mut self) -> DeliveryReport {
        let Some(message) = self.message.take() else {
            // The session sends MessageStart before MessageEnd; without one there is nothing
            // that could be acknowledged.
            return DeliveryReport {
                queue_id: String::new(),
                recipients: Vec::new(),
            };
        };
        let services = Arc::clone(&self.services);
        let log = &services.log;
        let Message {
            queue_id: id,
            envelope,
            spool,
            started,
            size,
            header,
            ..
        } = message;
        let envelope = &envelope;
        let sender = match &envelope.sender {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(mailbox) => mailbox.to_string(),
        };
        let all = |outcome| DeliveryReport {
            queue_id: id.clone(),
            recipients: vec![outcome; envelope.recipients.len()],
        };

        let message_id = message_id(&header).unwrap_or_else(|| "<none>".to_owned());
        log.write("cleanup", &format!("{id}: message-id={message_id}"));
        log.write(
            "qmgr",
            &format!(
                "{id}: from=<{sender}>, size={}, nrcpt={} (queue active)",
                size,
                envelope.recipients.len()
            ),
        );

        let destinations = destinations(envelope);
        let defer = |reason: &str, dsn: &str| {
            let delay = started.elapsed().as_secs_f64();
            for (rcpt, destination) in &destinations {
                let (to, relay) = match destination {
                    Destination::Local { address, .. } => (address.as_str(), "local"),
                    Destination::Remote(address) => (address.as_str(), "none"),
                };
                log.write(
                    "local",
                    &format!(
                        "{id}: to=<{to}>{}, relay={relay}, delay={delay:.2}, dsn={dsn}, \
                         status=deferred ({reason})",
                        orig_to(rcpt, to)
                    ),
                );
            }
        };

        let mut spool = match spool {
            Ok(spool) => spool,
            Err(io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => {
                defer("cannot write the spool file: disk full", "4.3.1");
                return all(RcptOutcome::DiskFull);
            }
            Err(_) => {
                defer("cannot write the spool file", "4.3.0");
                return all(RcptOutcome::TempFailure);
            }
        };
        let info = ReceivedInfo {
            helo: envelope.helo.clone(),
            client_ip: self.peer.client,
            hostname: services.config.hostname.clone(),
            protocol: envelope.protocol,
            tls: self.tls.clone(),
            queue_id: id.clone(),
            recipient: None,
        };
        let has_local = destinations
            .iter()
            .any(|(_, d)| matches!(d, Destination::Local { .. }));
        // Remote recipients are queued first and committed only once the local copies are
        // in place, so the one reply holds for all; without local copies, in one step.
        let queued = match super::submit::queue_remote(
            &services, envelope, &info, size, &mut spool, !has_local,
        ) {
            Ok(queued) => queued,
            Err(e) => {
                defer(&format!("cannot queue: {e}"), "4.3.0");
                return all(RcptOutcome::TempFailure);
            }
        };
        if let LocalDelivery::Lmtp(target) = &services.config.delivery.local
            && has_local
        {
            let job = lmtp_out::Handoff {
                id: &id,
                envelope,
                destinations: &destinations,
                info,
                size,
                started,
                mode: self.mode(),
            };
            let recipients = lmtp_out::deliver(&services, target, &job, spool);
            // The queued part stands or falls with the answer: kept when the LMTP server
            // took the message for someone, so the client does not send it again.
            let taken = recipients.contains(&RcptOutcome::Delivered);
            if taken && queued.is_some_and(|pending| pending.commit().is_err()) {
                defer("cannot commit to the queue", "4.3.0");
                return all(RcptOutcome::TempFailure);
            }
            return DeliveryReport {
                queue_id: id.clone(),
                recipients,
            };
        }
        let copies = match build_copies(&services, &sender, &info, &destinations, SystemTime::now())
        {
            Ok(copies) => copies,
            Err(reason) => {
                defer(&reason, "4.3.0");
                return all(RcptOutcome::TempFailure);
            }
        };

        match services.maildirs.deliver(spool, &copies) {
            Ok(_) if queued.is_some_and(|pending| pending.commit().is_err()) => {
                defer("cannot commit to the queue", "4.3.0");
                all(RcptOutcome::TempFailure)
            }
            Ok(_) => {
                let delay = started.elapsed().as_secs_f64();
                for (rcpt, destination) in &destinations {
                    if let Destination::Local { address, .. } = destination {
                        log.write(
                            "local",
                            &format!(
                                "{id}: to=<{address}>{}, relay=local, delay={delay:.2}, \
                                 dsn=2.0.0, status=sent (delivered to maildir)",
                                orig_to(rcpt, address)
                            ),
                        );
                    }
                }
                all(RcptOutcome::Delivered)
            }
            Err(DeliveryError::DiskFull(e)) => {
                defer(&format!("maildir delivery failed: {e}"), "4.3.1");
                all(RcptOutcome::DiskFull)
            }
            Err(DeliveryError::Failed(e)) => {
                defer(&format!("maildir delivery failed: {e}"), "4.3.0");
                all(RcptOutcome::TempFailure)
            }
        }
    }

    /// The protocol of this connection's listener.
    fn mode(&self) -> Mode {
        self.services.sessions[self.admission.listener]
            .as_ref()
            .map_or(Mode::Smtp, |config| config.mode)
    }

    /// Logs as `smtpd`, or as `lmtp` on an LMTP listener.
    fn log(&self, text: &str) {
        self.services.log.write(self.log_name(), text);
    }

    fn log_name(&self) -> &'static str {
        match self.mode() {
            Mode::Lmtp => "lmtp",
            Mode::Smtp => "smtpd",
        }
    }
}

/// Who is logging in: for the log lines, and for Dovecot when it checks the password.
pub(super) struct AuthContext {
    /// The user's address.
    pub client: Option<IpAddr>,
    /// The address the user connected to.
    pub local: Option<IpAddr>,
    /// Whether the user's connection is encrypted.
    pub secured: bool,
}

/// Checks credentials against the account source: the accounts file, or a running Dovecot
/// with `[accounts] dovecot_auth`. A failure is logged as `log_as` in Postfix's words, never
/// with the password.
pub(super) fn authenticate(
    services: &Services,
    credentials: &Credentials,
    context: &AuthContext,
    log_as: &str,
) -> AuthVerdict {
    let client = client_name(context.client);
    let mechanism = credentials.mechanism;
    let failed = || {
        services.log.write(
            log_as,
            &format!(
                "warning: {client}: SASL {mechanism} authentication failed: \
                 authentication failure"
            ),
        );
        AuthVerdict::Fail
    };
    let unavailable = |reason: &str| {
        services.log.write(
            log_as,
            &format!(
                "warning: {client}: SASL {mechanism} authentication temporarily \
                 unavailable{reason}"
            ),
        );
        AuthVerdict::TempFail
    };

    if let Some(socket) = &services.config.accounts.dovecot_auth {
        let request = AuthRequest {
            login: credentials.login.clone(),
            password: credentials.password.clone(),
            authzid: credentials.authzid.clone(),
            local_ip: context.local,
            remote_ip: context.client,
            secured: context.secured,
        };
        return match dovecot::check_password(socket, request, dovecot::TIMEOUT) {
            AuthResult::Ok { user } => AuthVerdict::Ok { login: user },
            AuthResult::Fail { .. } => failed(),
            AuthResult::TempFail { reason } => {
                unavailable(&reason.map(|r| format!(": {r}")).unwrap_or_default())
            }
        };
    }

    let Some(accounts) = &services.accounts else {
        return unavailable(": no accounts file");
    };
    let verdict = accounts.verify(&credentials.login, credentials.password.expose());
    // Logging in as someone else (an authzid naming another user) is not offered.
    let other_identity = !credentials.authzid.is_empty()
        && accounts.lookup_key(&credentials.authzid) != accounts.lookup_key(&credentials.login);
    match verdict {
        accounts::Verdict::Ok(account) if !other_identity => AuthVerdict::Ok {
            login: account.user,
        },
        accounts::Verdict::Ok(_) | accounts::Verdict::Fail => failed(),
        accounts::Verdict::TempFail => unavailable(""),
    }
}

/// SCRAM keys for `login` and a fresh random server nonce. An account without keys, or
/// marked `nologin`, answers as an unknown user would, so the exchange fails at the proof
/// like a wrong password.
pub(super) fn lookup_scram(services: &Services, login: &str) -> (ScramLookup, ScramNonce) {
    let mut random = [0u8; 18];
    let nonce_ok = getrandom::fill(&mut random).is_ok();
    let nonce = ScramNonce::from_random(&random);
    let lookup = match &services.accounts {
        _ if !nonce_ok => ScramLookup::TempFail,
        None => ScramLookup::TempFail,
        Some(accounts) => match accounts.lookup(login) {
            Some(account) if !account.extra.iter().any(|(key, _)| key == "nologin") => {
                let secret = &services.scram_secret;
                match crate::password::scram_credentials(&account.password, login, secret) {
                    Some(credentials) => ScramLookup::Found {
                        account: account.user,
                        credentials,
                    },
                    None => ScramLookup::UnknownUser,
                }
            }
            _ => ScramLookup::UnknownUser,
        },
    };
    (lookup, nonce)
}

/// One Maildir copy per distinct final address, in the order first named. Fails with the
/// reason when an account vanished since RCPT or its mailbox path cannot be made.
pub(super) fn build_copies(
    services: &Services,
    sender: &str,
    info: &ReceivedInfo,
    destinations: &[(String, Destination)],
    now: SystemTime,
) -> Result<Vec<Copy>, String> {
    let mut seen = HashSet::new();
    let mut copies = Vec::new();
    for (rcpt, destination) in destinations {
        let Destination::Local { account, address } = destination else {
            continue;
        };
        if !seen.insert(address.to_lowercase()) {
            continue;
        }
        let (key, found) =
            find_account(services, account)?.ok_or_else(|| format!("account {account} is gone"))?;

        // %n and %d come from the lookup key when it names a domain (`%n@%d` formats), else
        // from the recipient's address.
        let address_domain = account.rsplit_once('@').map_or("", |(_, d)| d);
        let (user, domain) = key
            .split_once('@')
            .unwrap_or((key.as_str(), address_domain));
        let maildir = expand_mailbox_path(&services.config.mailbox.path, &found, user, domain)?;

        let mut header = headers::return_path(sender);
        header.push_str(&headers::delivered_to(address));
        let info = ReceivedInfo {
            recipient: Some(rcpt.clone()),
            ..info.clone()
        };
        header.push_str(&headers::received(&info, now));
        copies.push(Copy {
            maildir,
            headers: header.into_bytes(),
        });
    }
    Ok(copies)
}

/// The account named `login` and the key it was found under: from Dovecot's userdb with
/// `[accounts] dovecot_userdb` (its `home`, `uid` and `gid` fields; the name Dovecot gave
/// back is the key), else from the accounts file. Dovecot is asked with `login` as it is
/// (the whole address at RCPT): its own `auth_username_format` maps it, not tern's. `Err` is
/// a temporary failure, for the log.
pub(super) fn find_account(
    services: &Services,
    login: &str,
) -> Result<Option<(String, accounts::Account)>, String> {
    if let Some(socket) = &services.config.accounts.dovecot_userdb {
        return match dovecot::lookup_user(socket, login, dovecot::TIMEOUT) {
            dovecot::UserLookup::Found { user, fields } => {
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value.clone())
                };
                let account = accounts::Account {
                    user: user.clone(),
                    password: String::new(),
                    uid: field("uid").and_then(|v| v.parse().ok()),
                    gid: field("gid").and_then(|v| v.parse().ok()),
                    gecos: String::new(),
                    home: field("home").filter(|h| !h.is_empty()).map(Into::into),
                    shell: String::new(),
                    extra: fields,
                };
                Ok(Some((user, account)))
            }
            dovecot::UserLookup::NotFound => Ok(None),
            dovecot::UserLookup::TempFail(reason) => Err(reason),
        };
    }
    let accounts = services.accounts.as_ref().ok_or("no accounts file")?;
    Ok(accounts
        .lookup(login)
        .map(|account| (accounts.lookup_key(login), account)))
}

/// Every (envelope recipient, destination) pair, in envelope order.
pub(super) fn destinations(envelope: &Envelope) -> Vec<(String, Destination)> {
    envelope
        .recipients
        .iter()
        .flat_map(|r| {
            r.destinations
                .iter()
                .map(|d| (r.address.to_string(), d.clone()))
        })
        .collect()
}

/// Postfix's `, orig_to=<...>` when an alias or extension changed the address.
fn orig_to(rcpt: &str, to: &str) -> String {
    if rcpt.eq_ignore_ascii_case(to) {
        String::new()
    } else {
        format!(", orig_to=<{rcpt}>")
    }
}

/// Looks `domain` up as Postfix's `reject_unknown_recipient_domain` does (MX, else
/// A/AAAA) through `delivery.dns_servers`; a resolver that cannot be made is a temporary
/// failure.
fn resolve_domain(services: &Services, domain: &str) -> Lookup {
    match services.dns() {
        Ok(dns) => dns.mail_domain(domain),
        Err(_) => Lookup::TempFail,
    }
}

/// Where the header section ends (the offset of the empty line's CRLF), if it does.
fn header_end(text: &[u8]) -> Option<usize> {
    if text.starts_with(b"\r\n") {
        return Some(0);
    }
    memchr::memmem::find(text, b"\r\n\r\n").map(|at| at + 2)
}

/// The `Message-ID:` of a message's header section, unfolded and trimmed.
pub(super) fn message_id(text: &[u8]) -> Option<String> {
    let end = header_end(text).unwrap_or(text.len());
    let header = String::from_utf8_lossy(&text[..end]);
    let mut lines = header.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim_end().eq_ignore_ascii_case("message-id") {
            continue;
        }
        let mut value = value.trim().to_owned();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push_str(next.trim());
        }
        return (!value.is_empty()).then_some(value);
    }
    None
}

/// Writes a recording, creating its directory. Both are private to tern's user: a recording
/// holds whole messages. It appears under its name only once complete.
fn write_recording(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let partial = path.with_extension("partial");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(text.as_bytes())?;
    std::fs::rename(&partial, path)
}
