use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_core::policy::Restriction;
use tern_core::recipient::Destination;
use tern_core::server::Peer;

use super::connection::{build_copies, message_id};
use super::*;
use crate::accounts::add_user;
use crate::headers::ReceivedInfo;
use crate::password::{Scheme, hash_password};

/// A site with two listeners, every session-relevant key set away from its default.
fn site(dir: &Path, extra: &str) -> Config {
    let text = format!(
        r#"
hostname = "mail.example.net"
domains = ["example.net", "Example.COM."]
trusted_networks = ["192.0.2.0/24"]
data_dir = "{dir}/data"
log = "{dir}/mail.log"

[accounts]
file = "{dir}/users"

[mailbox]
path = "{dir}/mail/%d/%n/Maildir"
recipient_delimiter = "-"

[aliases]
postmaster = "bob"
"sales@example.net" = ["bob@example.net", "carol@example.org"]

[limits]
message_size = 5000
recipients = 7
command_timeout = "30s"
data_timeout = "40s"
errors = 5
auth_failures = 2
auth_failure_delay = "100ms"
{extra}

[[listener]]
name = "submission"
protocol = "smtp"
address = "127.0.0.1:0"
tls = "none"
auth = "required"
plaintext_auth = true
restrictions = ["permit_sasl_authenticated", "reject"]

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "{dir}/lmtp.sock"

[[listener]]
name = "auth"
protocol = "dovecot-auth"
path = "{dir}/auth.sock"
"#,
        dir = dir.display()
    );
    config::parse(&text, Path::new("test.toml")).expect("test config parses")
}

fn services(dir: &Path, extra: &str) -> Arc<Services> {
    let users = dir.join("users");
    add_user(&users, "bob", &hash_password(Scheme::Plain, "secret")).unwrap();
    Arc::new(Services::new(site(dir, extra)).expect("services start"))
}

#[test]
fn session_config_follows_the_listener_and_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let config = site(dir.path(), "");

    let smtp = session_config(&config, &config.listeners[0]).unwrap();
    assert_eq!(smtp.hostname, "mail.example.net");
    assert_eq!(smtp.mode, Mode::Smtp);
    assert_eq!(smtp.tls, TlsMode::None);
    assert_eq!(smtp.auth, AuthMode::Required);
    assert!(smtp.plaintext_auth);
    assert_eq!(smtp.mechanisms, vec![Mechanism::Plain, Mechanism::Login]);
    assert_eq!(
        smtp.restrictions,
        vec![Restriction::PermitSaslAuthenticated, Restriction::Reject]
    );
    assert_eq!(
        smtp.limits,
        server::Limits {
            message_size: 5000,
            recipients: 7,
            command_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(40),
            errors: 5,
            auth_failures: 2,
            auth_failure_delay: Duration::from_millis(100),
        }
    );
    assert_eq!(smtp.policy.domains, vec!["example.net", "example.com"]);
    assert!(smtp.policy.is_trusted(Some("192.0.2.9".parse().unwrap())));
    assert!(!smtp.policy.is_trusted(Some("127.0.0.1".parse().unwrap())));
    assert_eq!(smtp.policy.recipient_delimiter, "-");

    // The aliases arrive: the bare key in every local domain, the full one with its targets.
    let mailbox = |text: &str| tern_core::address::Mailbox::parse(text).unwrap();
    assert_eq!(
        smtp.policy
            .resolve_local(&mailbox("postmaster@example.com"), None),
        vec![Destination::Local {
            account: "bob@example.com".into(),
            address: "bob@example.com".into()
        }]
    );
    assert_eq!(
        smtp.policy
            .resolve_local(&mailbox("sales@example.net"), None)
            .len(),
        2
    );

    let lmtp = session_config(&config, &config.listeners[1]).unwrap();
    assert_eq!(lmtp.mode, Mode::Lmtp);
    assert_eq!(lmtp.auth, AuthMode::None);
    assert!(lmtp.restrictions.is_empty());
    assert!(session_config(&config, &config.listeners[2]).is_none());
}

#[test]
fn a_server_without_an_account_source_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = site(dir.path(), "");
    config.accounts.file = None;
    let error = Services::new(config).err().unwrap();
    assert!(error.0.contains("[accounts] file"), "{error}");
}

#[test]
fn a_missing_accounts_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = Services::new(site(dir.path(), "")).err().unwrap();
    assert!(
        error
            .0
            .contains(&dir.path().join("users").display().to_string()),
        "{error}"
    );
}

#[test]
fn copies_carry_their_own_trace_headers() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "");
    let info = ReceivedInfo {
        helo: Some("client.example".into()),
        client_ip: Some("192.0.2.7".parse().unwrap()),
        hostname: "mail.example.net".into(),
        protocol: "ESMTP",
        tls: None,
        queue_id: "0123456789AB".into(),
        recipient: None,
    };
    let local = |address: &str| Destination::Local {
        account: "bob@example.net".into(),
        address: address.into(),
    };
    // Two envelope recipients reaching the same final address give one copy.
    let destinations = vec![
        (
            "bob-lists@example.net".to_owned(),
            local("bob-lists@example.net"),
        ),
        (
            "postmaster@example.net".to_owned(),
            local("bob@example.net"),
        ),
        ("bob@example.net".to_owned(), local("bob@example.net")),
    ];
    let when = UNIX_EPOCH + Duration::from_secs(1_796_311_491);
    let copies = build_copies(&services, "alice@example.org", &info, &destinations, when).unwrap();

    assert_eq!(copies.len(), 2);
    let maildir = dir.path().join("mail/example.net/bob/Maildir");
    assert_eq!(copies[0].maildir, maildir);
    assert_eq!(
        String::from_utf8(copies[0].headers.clone()).unwrap(),
        "Return-Path: <alice@example.org>\n\
         Delivered-To: bob-lists@example.net\n\
         Received: from client.example (unknown [192.0.2.7])\n\
         \tby mail.example.net (tern) with ESMTP id 0123456789AB\n\
         \tfor <bob-lists@example.net>; Thu, 3 Dec 2026 15:24:51 +0000\n"
    );
    assert!(
        String::from_utf8_lossy(&copies[1].headers).contains("\nDelivered-To: bob@example.net\n")
    );
    assert!(
        String::from_utf8_lossy(&copies[1].headers).contains("\tfor <postmaster@example.net>;")
    );
}

#[test]
fn a_vanished_account_is_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "");
    let info = ReceivedInfo {
        helo: None,
        client_ip: None,
        hostname: "h".into(),
        protocol: "LMTP",
        tls: None,
        queue_id: "1".into(),
        recipient: None,
    };
    let gone = Destination::Local {
        account: "eve@example.net".into(),
        address: "eve@example.net".into(),
    };
    let error = build_copies(
        &services,
        "",
        &info,
        &[("eve@example.net".into(), gone)],
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(error.contains("eve@example.net"), "{error}");
}

#[test]
fn a_message_over_smtp_lands_in_the_maildir_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "");
    let body = "Subject: test\r\nMessage-ID:\r\n <m1@example.org>\r\n\r\nline one\r\n..dotted\r\n";
    let script = format!(
        "EHLO client.example\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\nMAIL FROM:<alice@example.org>\r\n\
         RCPT TO:<Bob-x@example.net>\r\nDATA\r\n{body}.\r\nQUIT\r\n"
    );
    let client: IpAddr = "192.0.2.7".parse().unwrap();
    let sent = converse(&services, 0, Some(client), script.as_bytes());
    assert!(sent.contains("235 2.7.0"), "{sent}");
    assert!(sent.contains("250 2.0.0 Ok: queued as "), "{sent}");

    let new = dir.path().join("mail/example.net/bob/Maildir/new");
    let files: Vec<_> = fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let stored = fs::read_to_string(&files[0]).unwrap();
    let queue_id = sent
        .split("queued as ")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap();
    let date = stored
        .split("for <Bob-x@example.net>; ")
        .nth(1)
        .unwrap()
        .split('\n')
        .next()
        .unwrap();
    let expected = format!(
        "Return-Path: <alice@example.org>\n\
         Delivered-To: Bob-x@example.net\n\
         Received: from client.example (unknown [192.0.2.7])\n\
         \tby mail.example.net (tern) with ESMTPA id {queue_id}\n\
         \tfor <Bob-x@example.net>; {date}\n\
         Subject: test\nMessage-ID:\n <m1@example.org>\n\nline one\n.dotted\n"
    );
    assert_eq!(stored, expected);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(&format!(",S={}", expected.len())), "{name}");

    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    for needle in [
        "tern/smtpd[",
        "connect from unknown[192.0.2.7]",
        &format!("{queue_id}: client=unknown[192.0.2.7], sasl_method=PLAIN, sasl_username=bob"),
        "tern/cleanup[",
        &format!("{queue_id}: message-id=<m1@example.org>"),
        &format!(
            "{queue_id}: from=<alice@example.org>, size={}, nrcpt=1 (queue active)",
            body.len() - 1
        ),
        &format!("{queue_id}: to=<Bob-x@example.net>, relay=local, delay="),
        "dsn=2.0.0, status=sent (delivered to maildir)",
        "disconnect from unknown[192.0.2.7] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
    ] {
        assert!(log.contains(needle), "{needle:?} not in\n{log}");
    }
}

#[test]
fn a_failed_login_is_logged_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "");
    // bob / wrongpass
    let sent = converse(
        &services,
        0,
        None,
        b"EHLO x\r\nAUTH PLAIN AGJvYgB3cm9uZ3Bhc3M=\r\n",
    );
    assert!(sent.contains("535 5.7.8"), "{sent}");
    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    assert!(
        log.contains("warning: local: SASL PLAIN authentication failed: authentication failure")
    );
    assert!(
        !log.contains("wrongpass") && !log.contains("AGJvYgB3cm9uZ3Bhc3M="),
        "{log}"
    );
}

#[test]
fn mail_for_another_domain_is_queued_with_the_local_copies() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "");
    let script =
        b"EHLO x\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\nMAIL FROM:<bob@example.net> RET=HDRS\r\n\
        RCPT TO:<bob@example.net>\r\nRCPT TO:<sales@example.net> NOTIFY=SUCCESS,FAILURE\r\n\
        DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n";
    let sent = converse(&services, 0, None, script);
    assert!(sent.contains("250 2.0.0 Ok: queued as"), "{sent}");
    let new = dir.path().join("mail/example.net/bob/Maildir/new");
    assert_eq!(fs::read_dir(&new).unwrap().count(), 1);

    // sales@ is bob@example.net (local, delivered above) and carol@example.org (queued).
    let (entries, errors) = services.queue().entries().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.sender, "bob@example.net");
    assert_eq!(entry.ret.as_deref(), Some("HDRS"));
    assert_eq!(entry.recipients.len(), 1);
    let rcpt = &entry.recipients[0];
    assert_eq!(rcpt.address, "carol@example.org");
    assert_eq!(rcpt.orcpt.as_deref(), Some("rfc822;sales@example.net"));
    assert_eq!(rcpt.notify.as_deref(), Some("SUCCESS,FAILURE"));
    assert_eq!(rcpt.state, crate::queue::State::Pending);
    assert!(
        entry.received.starts_with("Received: from x ("),
        "{}",
        entry.received
    );
    assert!(
        entry.received.contains("for <carol@example.org>;"),
        "{}",
        entry.received
    );
    let text = services.queue().read_text(&entry.id).unwrap();
    assert_eq!(text, b"Subject: x\n\nbody\n");
}

#[test]
fn connection_limits_count_per_listener_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "connections = 2\nconnections_per_ip = 1");
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    let c: IpAddr = "192.0.2.3".parse().unwrap();
    let too_many = b"421 4.7.0 mail.example.net Error: too many connections\r\n".to_vec();

    let first = services.admit(0, Some(a)).unwrap();
    // Per address, across listeners.
    assert_eq!(
        services.admit(1, Some(a)).err().unwrap().reply,
        Some(too_many.clone())
    );
    let _second = services.admit(0, Some(b)).unwrap();
    // Per listener: the LMTP listener has room, the submission listener has not.
    assert_eq!(
        services.admit(0, Some(c)).err().unwrap().reply,
        Some(too_many)
    );
    let on_lmtp = services.admit(1, Some(c)).unwrap();
    drop(first);
    drop(on_lmtp);
    assert!(services.admit(0, Some(c)).is_ok());
    // Unix sockets have no address to count.
    assert!(services.admit(1, None).is_ok());
}

#[test]
fn message_ids_are_found_unfolded_and_only_in_the_header() {
    assert_eq!(
        message_id(b"Message-Id: <a@b>\r\n\r\n"),
        Some("<a@b>".into())
    );
    assert_eq!(
        message_id(b"X: y\r\nMESSAGE-ID:\r\n\t<a@b>\r\nZ: 1\r\n\r\n"),
        Some("<a@b>".into())
    );
    assert_eq!(
        message_id(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n"),
        None
    );
    assert_eq!(message_id(b"\r\nMessage-ID: <body@x>\r\n"), None);
    assert_eq!(message_id(b""), None);
}

#[test]
fn an_unreachable_lmtp_server_is_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let services = services(dir.path(), &lmtp_delivery(&socket));
    let sent = converse(&services, 0, None, &submit(&["bob@example.net"]));
    assert!(sent.contains("451 4.3.0"), "{sent}");
    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    assert!(
        log.contains(&format!("tern/lmtp[{}]: ", std::process::id())),
        "{log}"
    );
    assert!(
        log.contains("to=<bob@example.net>, relay=none, delay="),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "dsn=4.4.1, status=deferred (connect to lmtp[{}]: ",
            socket.display()
        )),
        "{log}"
    );
}

#[test]
fn smtp_answers_250_when_the_lmtp_server_takes_some_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("down.sock");
    let services = services(dir.path(), &lmtp_delivery(&socket));
    add_user(&dir.path().join("users"), "carol", "{PLAIN}x").unwrap();
    let server = FakeLmtp::start(
        &socket,
        &[("carol@example.net", "550 5.1.1 no such user")],
        &[],
    );

    let sent = converse(
        &services,
        0,
        None,
        &submit(&["bob@example.net", "carol@example.net"]),
    );
    assert!(sent.contains("250 2.0.0 Ok: queued as "), "{sent}");
    let seen = server.finish();
    assert!(seen.contains("LHLO mail.example.net\r\n"), "{seen}");
    assert!(seen.contains("MAIL FROM:<bob@example.net>"), "{seen}");
    assert!(seen.contains("RCPT TO:<carol@example.net>\r\n"), "{seen}");
    // The text goes on behind tern's Received header, CRLF and dot-stuffed again.
    assert!(
        seen.contains("\r\n\tby mail.example.net (tern) with ESMTPA id "),
        "{seen}"
    );
    assert!(
        seen.contains("\r\nSubject: lmtp\r\n\r\nbody\r\n..dot\r\n.\r\n"),
        "{seen}"
    );

    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    let relay = format!("relay=lmtp[{}]", socket.display());
    assert!(
        log.contains(&format!("to=<bob@example.net>, {relay}, delay=")),
        "{log}"
    );
    assert!(
        log.contains("dsn=2.1.5, status=sent (250 2.1.5 bob@example.net ok)"),
        "{log}"
    );
    assert!(
        log.contains(&format!("to=<carol@example.net>, {relay}, delay=")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "dsn=5.1.1, status=bounced (host lmtp[{}] said: 550 5.1.1 no such user (in reply \
             to RCPT TO command))",
            socket.display()
        )),
        "{log}"
    );
}

#[test]
fn smtp_answers_451_when_the_lmtp_server_takes_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("down.sock");
    let services = services(dir.path(), &lmtp_delivery(&socket));
    add_user(&dir.path().join("users"), "carol", "{PLAIN}x").unwrap();
    let server = FakeLmtp::start(
        &socket,
        &[("carol@example.net", "550 5.1.1 no such user")],
        &[("bob@example.net", "452 4.2.2 mailbox full")],
    );
    let sent = converse(
        &services,
        0,
        None,
        &submit(&["bob@example.net", "carol@example.net"]),
    );
    assert!(sent.contains("451 4.3.0"), "{sent}");
    assert!(!sent.contains("queued as"), "{sent}");
    server.finish();
    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    assert!(
        log.contains("dsn=4.2.2, status=deferred (host lmtp["),
        "{log}"
    );
    assert!(
        log.contains("mailbox full (in reply to end of data command))"),
        "{log}"
    );
    // Nobody took it and the client will try again: nothing is logged as bounced.
    assert!(log.contains("dsn=5.1.1, status=deferred ("), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
}

#[test]
fn lmtp_in_front_of_lmtp_answers_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("down.sock");
    let services = services(dir.path(), &lmtp_delivery(&socket));
    add_user(&dir.path().join("users"), "carol", "{PLAIN}x").unwrap();
    add_user(&dir.path().join("users"), "dave", "{PLAIN}x").unwrap();
    let server = FakeLmtp::start(
        &socket,
        &[("carol@example.net", "550 5.1.1 no such user")],
        &[("dave@example.net", "452 4.2.2 mailbox full")],
    );
    let script = "LHLO up.example\r\nMAIL FROM:<alice@example.org>\r\n\
        RCPT TO:<carol@example.net>\r\nRCPT TO:<bob@example.net>\r\n\
        RCPT TO:<dave@example.net>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n";
    let sent = converse(&services, 1, None, script.as_bytes());
    server.finish();
    let finals: Vec<&str> = sent
        .split("\r\n")
        .skip_while(|line| !line.starts_with("354"))
        .skip(1)
        .take(3)
        .collect();
    assert_eq!(finals.len(), 3, "{sent}");
    assert!(finals[0].starts_with("550 5.1.1 "), "{sent}");
    assert!(finals[1].starts_with("250 2.1.5 "), "{sent}");
    assert!(finals[2].starts_with("451 4.3.0 "), "{sent}");
}

#[test]
fn a_server_that_hangs_up_after_the_data_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("down.sock");
    let services = services(dir.path(), &lmtp_delivery(&socket));
    let server = FakeLmtp::start(&socket, &[], &[("bob@example.net", "CLOSE")]);
    let sent = converse(&services, 0, None, &submit(&["bob@example.net"]));
    server.finish();
    assert!(sent.contains("451 4.3.0"), "{sent}");
    assert!(!sent.contains("queued as"), "{sent}");
    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    assert!(log.contains("dsn=4.4.2, status=deferred (lmtp["), "{log}");
    assert!(log.contains("lost connection at end of data)"), "{log}");
}

#[test]
fn recipients_that_alias_to_one_account_are_sent_once_and_share_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("down.sock");
    let services = services(dir.path(), &lmtp_delivery(&socket));
    let server = FakeLmtp::start(&socket, &[], &[("bob@example.net", "452 4.2.2 full")]);
    let script = "LHLO up.example\r\nMAIL FROM:<alice@example.org>\r\n\
        RCPT TO:<postmaster@example.net>\r\nRCPT TO:<bob@example.net>\r\n\
        DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n";
    let sent = converse(&services, 1, None, script.as_bytes());
    let seen = server.finish();
    assert_eq!(seen.matches("RCPT TO:").count(), 1, "{seen}");
    assert!(seen.contains("RCPT TO:<bob@example.net>"), "{seen}");
    let after_data: Vec<&str> = sent
        .split("\r\n")
        .skip_while(|line| !line.starts_with("354"))
        .skip(1)
        .take(2)
        .collect();
    assert_eq!(after_data.len(), 2, "{sent}");
    assert!(
        after_data.iter().all(|l| l.starts_with("451 4.3.0 ")),
        "{sent}"
    );
    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    assert!(
        log.contains("to=<bob@example.net>, orig_to=<postmaster@example.net>, relay=lmtp["),
        "{log}"
    );
    assert!(
        log.contains("dsn=4.2.2, status=deferred (host lmtp["),
        "{log}"
    );
}

/// `[delivery] local` to the LMTP socket at `path`, for `site`'s extra text.
fn lmtp_delivery(path: &Path) -> String {
    format!("\n[delivery]\nlocal = \"lmtp:unix:{}\"\n", path.display())
}

/// A submission session as bob with one message to `rcpts`.
fn submit(rcpts: &[&str]) -> Vec<u8> {
    let mut script = String::from(
        "EHLO client.example\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\nMAIL FROM:<bob@example.net>\r\n",
    );
    for rcpt in rcpts {
        script.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
    }
    script.push_str("DATA\r\nSubject: lmtp\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n");
    script.into_bytes()
}

/// A scripted LMTP server on a Unix socket for one connection, with PIPELINING: it answers
/// RCPT with the reply `at_rcpt` gives for the address (else 250), and after the text each
/// accepted recipient with what `after_data` gives (else 250); `CLOSE` there hangs up
/// instead of answering.
struct FakeLmtp {
    thread: std::thread::JoinHandle<String>,
}

impl FakeLmtp {
    fn start(path: &Path, at_rcpt: &[(&str, &str)], after_data: &[(&str, &str)]) -> FakeLmtp {
        use std::io::{BufRead, BufReader, Write};

        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let at_rcpt: Vec<(String, String)> = at_rcpt
            .iter()
            .map(|(a, r)| (a.to_string(), r.to_string()))
            .collect();
        let after_data: Vec<(String, String)> = after_data
            .iter()
            .map(|(a, r)| (a.to_string(), r.to_string()))
            .collect();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let reply = |rcpt: &str, table: &[(String, String)]| {
                table
                    .iter()
                    .find(|(a, _)| a == rcpt)
                    .map_or_else(|| format!("250 2.1.5 {rcpt} ok"), |(_, r)| r.clone())
            };
            let mut seen = String::new();
            let mut accepted: Vec<String> = Vec::new();
            let mut in_data = false;
            out.write_all(b"220 fake LMTP\r\n").unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                seen.push_str(&line);
                let answer = if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        if accepted
                            .iter()
                            .any(|rcpt| reply(rcpt, &after_data) == "CLOSE")
                        {
                            break;
                        }
                        let finals: Vec<String> = accepted
                            .drain(..)
                            .map(|rcpt: String| reply(&rcpt, &after_data) + "\r\n")
                            .collect();
                        finals.concat()
                    } else {
                        String::new()
                    }
                } else if line.starts_with("LHLO") {
                    "250-fake\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n".into()
                } else if line.starts_with("MAIL") {
                    "250 2.1.0 ok\r\n".into()
                } else if let Some(rest) = line.strip_prefix("RCPT TO:<") {
                    let rcpt = rest.split('>').next().unwrap().to_owned();
                    let answer = reply(&rcpt, &at_rcpt);
                    if answer.starts_with('2') {
                        accepted.push(rcpt);
                    }
                    answer + "\r\n"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    "354 go on\r\n".into()
                } else if line.starts_with("QUIT") {
                    out.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else {
                    "500 what\r\n".into()
                };
                out.write_all(answer.as_bytes()).unwrap();
                line.clear();
            }
            seen
        });
        FakeLmtp { thread }
    }

    /// Waits for the connection to end; returns everything the client sent.
    fn finish(self) -> String {
        self.thread.join().unwrap()
    }
}

/// Runs `input` through a session of listener `index` with its handler, the way a runtime
/// does, and returns everything sent.
fn converse(
    services: &Arc<Services>,
    index: usize,
    client: Option<IpAddr>,
    input: &[u8],
) -> String {
    let admission = services.admit(index, client).unwrap();
    let peer = Peer {
        client,
        local: None,
    };
    let now = Instant::now();
    let (mut session, mut handler) = services.open_session(admission, peer, None, now);
    let mut sent = Vec::new();
    let mut pending = input.to_vec();
    let mut clock = now;
    for _ in 0..1000 {
        while let Some(output) = session.poll_output() {
            match Action::from(output) {
                Action::Send(bytes) => sent.extend_from_slice(&bytes),
                Action::StartTls => panic!("no TLS in these tests"),
                Action::Close => {
                    handler.finish(&session);
                    return String::from_utf8(sent).unwrap();
                }
                Action::Work(work) => {
                    if let Some(answer) = handler.work(work) {
                        answer.apply(&mut session, clock);
                    }
                }
            }
        }
        let used = session.receive(clock, &pending);
        pending.drain(..used);
        if used > 0 {
            continue;
        }
        // Waiting out an AUTH failure delay: let virtual time pass, but not up to the idle
        // timeout.
        match session.poll_timeout() {
            Some(deadline) if deadline <= clock + Duration::from_secs(1) => {
                clock = deadline;
                session.handle_timeout(clock);
            }
            _ => break,
        }
    }
    handler.finish(&session);
    String::from_utf8(sent).unwrap()
}

#[test]
fn dovecot_accounts_need_no_file_and_turn_scram_off() {
    let dir = tempfile::tempdir().unwrap();
    // bob's {PLAIN} password could give SCRAM keys: offered while tern checks passwords.
    let own = services(dir.path(), "");
    let scram = |services: &Services| {
        let session = services.session_config(0).unwrap();
        let auth = services.auth_server.as_ref().unwrap();
        (
            session.mechanisms.contains(&Mechanism::ScramSha256),
            auth.mechanisms.contains(&Mechanism::ScramSha256) && auth.scram_secret.is_some(),
        )
    };
    assert_eq!(scram(&own), (true, true));
    assert_eq!(
        own.auth_server.as_ref().unwrap().failure_delay,
        Duration::from_millis(100)
    );

    let mut config = site(dir.path(), "");
    config.accounts.dovecot_auth = Some(dir.path().join("auth-client"));
    let with_dovecot = Services::new(config).unwrap();
    assert_eq!(scram(&with_dovecot), (false, false));

    let mut config = site(dir.path(), "");
    config.accounts.file = None;
    config.accounts.dovecot_auth = Some(dir.path().join("auth-client"));
    let error = Services::new(config.clone()).err().unwrap();
    assert!(error.0.contains("[accounts] file"), "{error}");
    config.accounts.dovecot_userdb = Some(dir.path().join("auth-userdb"));
    assert!(Services::new(config).is_ok());
}

/// A Dovecot auth-userdb socket that knows `bob` (home `home`) and no one else; it is asked
/// with the whole address.
fn fake_userdb(path: &Path, home: &Path) {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    let listener = UnixListener::bind(path).unwrap();
    let home = home.display().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut writer = stream.try_clone().unwrap();
            let _ = writer.write_all(b"VERSION\t1\t1\nSPID\t77\n");
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let fields: Vec<&str> = line.split('\t').collect();
                if fields[0] != "USER" {
                    continue;
                }
                // Dovecot's auth_username_format = %Ln: the domain goes.
                let answer = if fields[2].split('@').next() == Some("bob") {
                    format!("USER\t{}\tbob\thome={home}\tuid=1000\n", fields[1])
                } else {
                    format!("NOTFOUND\t{}\n", fields[1])
                };
                let _ = writer.write_all(answer.as_bytes());
            }
        }
    });
}

#[test]
fn a_userdb_decides_who_exists_and_where_mail_goes() {
    let dir = tempfile::tempdir().unwrap();
    let userdb = dir.path().join("auth-userdb");
    fake_userdb(&userdb, &dir.path().join("home/bob"));
    let mut config = site(dir.path(), "");
    config.accounts.file = None;
    config.accounts.dovecot_auth = Some(dir.path().join("auth-client"));
    config.accounts.dovecot_userdb = Some(userdb);
    config.mailbox.path = "~/Maildir".into();
    let services = Arc::new(Services::new(config).unwrap());

    let sent = converse(
        &services,
        1,
        None,
        b"LHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
          RCPT TO:<nobody@example.net>\r\nDATA\r\nSubject: userdb\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(sent.contains("550 5.1.1"), "{sent}");
    assert!(
        sent.contains("354 ") && sent.contains("<bob@example.net> Ok"),
        "{sent}"
    );
    let new = dir.path().join("home/bob/Maildir/new");
    let files: Vec<_> = fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1, "{sent}");
}

#[test]
fn an_unreachable_dovecot_fails_auth_temporarily() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    add_user(&users, "bob", &hash_password(Scheme::Plain, "secret")).unwrap();
    let mut config = site(dir.path(), "");
    config.accounts.dovecot_auth = Some(dir.path().join("no-such-socket"));
    let services = Arc::new(Services::new(config).unwrap());
    // bob / secret is right in the file, but the file is not asked.
    let sent = converse(
        &services,
        0,
        None,
        b"EHLO x\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\nQUIT\r\n",
    );
    assert!(sent.contains("454 4.7.0"), "{sent}");
    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    assert!(
        log.contains("SASL PLAIN authentication temporarily unavailable: "),
        "{log}"
    );
    assert!(!log.contains("secret"), "{log}");
}

#[test]
fn an_auth_connection_is_served_from_the_accounts() {
    use std::io::{BufRead, BufReader, Write};

    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path(), "");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = {
        let services = Arc::clone(&services);
        std::thread::spawn(move || serve_auth_connection(&services, 2, theirs))
    };
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = ours.try_clone().unwrap();
    let mut reader = BufReader::new(ours);
    let mut line = || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    };
    writer.write_all(b"VERSION\t1\t0\nCPID\t99\n").unwrap();
    while line() != "DONE\n" {}
    // bob / secret, then bob / wrongpass.
    writer
        .write_all(b"AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp=AGJvYgBzZWNyZXQ=\n")
        .unwrap();
    assert_eq!(line(), "OK\t1\tuser=bob\n");
    let started = Instant::now();
    writer
        .write_all(b"AUTH\t2\tPLAIN\tservice=smtp\tresp=AGJvYgB3cm9uZ3Bhc3M=\n")
        .unwrap();
    assert_eq!(line(), "FAIL\t2\tuser=bob\n");
    assert!(started.elapsed() >= Duration::from_millis(100));

    // A broken line ends the connection, and the thread with it.
    writer.write_all(b"NONSENSE\n").unwrap();
    assert_eq!(line(), "");
    server.join().unwrap();
    let log = fs::read_to_string(dir.path().join("mail.log")).unwrap();
    assert!(
        log.contains("tern/auth[")
            && log.contains(
                "warning: local: SASL PLAIN authentication failed: authentication failure"
            )
            && log.contains("warning: auth client broke the protocol, disconnecting"),
        "{log}"
    );
    assert!(
        !log.contains("wrongpass") && !log.contains("AGJvYgB3"),
        "{log}"
    );
}

#[test]
fn only_a_message_start_and_its_text_may_be_deferred() {
    use tern_core::address::ReversePath;
    use tern_core::server::{Envelope, Output};
    let deferrable = |output| match Action::from(output) {
        Action::Work(work) => work.deferrable_len(),
        other => panic!("not work: {other:?}"),
    };
    let envelope = Envelope {
        sender: ReversePath::Null,
        params: Default::default(),
        recipients: Vec::new(),
        helo: None,
        protocol: "ESMTP",
        login: None,
        mechanism: None,
    };
    assert_eq!(deferrable(Output::MessageStart(envelope)), Some(0));
    assert_eq!(
        deferrable(Output::MessageData(b"hello\r\n".to_vec().into())),
        Some(7)
    );
    assert_eq!(deferrable(Output::MessageEnd), None);
    assert_eq!(deferrable(Output::MessageAbort), None);
    assert_eq!(deferrable(Output::CheckDomain("example.org".into())), None);
}
