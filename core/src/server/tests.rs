//! Scripted conversations against the session, each also fed one byte at a time and split at
//! every offset, with identical output required.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;

use super::*;
use crate::recipient::{Aliases, Policy};
use crate::sasl::{ScramCredentials, ScramLookup, ScramNonce, ScramSecret};

const GREETING: &str = "220 mx.example.net ESMTP tern\r\n";
const EHLO: &str = "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

fn config(mode: Mode) -> Config {
    let mut aliases = Aliases::default();
    aliases.insert("postmaster", vec!["alice".into()]);
    aliases.insert(
        "sales@example.net",
        vec!["bob@example.net".into(), "carol@example.org".into()],
    );
    let mut config = Config::new("mx.example.net", mode);
    config.policy = Policy {
        domains: vec!["example.net".into()],
        trusted_networks: vec!["192.0.2.0/24".parse().unwrap()],
        recipient_delimiter: "+".into(),
        aliases,
    };
    config
}

fn untrusted() -> Peer {
    Peer {
        client: Some(ip("203.0.113.9")),
        local: Some(ip("198.51.100.1")),
    }
}

fn trusted() -> Peer {
    Peer {
        client: Some(ip("192.0.2.7")),
        local: Some(ip("198.51.100.1")),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Plays the runtime: answers every question the way a small site would.
struct Harness {
    session: Session,
    now: Instant,
    transcript: String,
    message: Vec<u8>,
    envelopes: Vec<Envelope>,
    questions: Vec<String>,
    outcome: fn(&Recipient) -> RcptOutcome,
    /// Whether the session asked for TLS and the "handshake" has not been finished yet.
    tls_pending: bool,
}

impl Harness {
    fn new(config: Config, peer: Peer) -> Self {
        // Any origin will do: the virtual clock only moves when a test moves it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let session = Session::new(Arc::new(config), peer, now);
        let mut harness = Harness {
            session,
            now,
            transcript: String::new(),
            message: Vec::new(),
            envelopes: Vec::new(),
            questions: Vec::new(),
            outcome: |_| RcptOutcome::Delivered,
            tls_pending: false,
        };
        harness.drain();
        harness
    }

    fn feed(&mut self, mut input: &[u8]) {
        loop {
            let produced = self.drain();
            if input.is_empty() {
                break;
            }
            let used = self.session.receive(self.now, input);
            input = &input[used..];
            if used == 0 && !produced && !self.drain() {
                // Blocked on a timer (the AUTH failure delay): let it pass.
                match self.session.poll_timeout() {
                    Some(at) => {
                        self.now = self.now.max(at);
                        self.session.handle_timeout(self.now);
                    }
                    None => break,
                }
            }
        }
    }

    fn finish_tls(&mut self) {
        assert!(
            std::mem::take(&mut self.tls_pending),
            "no STARTTLS in progress"
        );
        self.session.handle_tls_established(self.now);
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.drain();
    }

    /// Handles every queued output; true if there was any.
    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.session.poll_output() {
            any = true;
            match output {
                Output::Send(bytes) => self.transcript.push_str(&String::from_utf8_lossy(&bytes)),
                // The handshake finishes only when the test says so: until then, whatever
                // the client sent in the clear must be discarded, however it was split.
                Output::StartTls => {
                    self.transcript.push_str("[tls]");
                    self.tls_pending = true;
                }
                Output::Authenticate(credentials) => {
                    let verdict = match (credentials.login.as_str(), credentials.password.expose())
                    {
                        ("alice", "secret") => AuthVerdict::Ok {
                            login: "alice".into(),
                        },
                        ("down", _) => AuthVerdict::TempFail,
                        _ => AuthVerdict::Fail,
                    };
                    self.session.handle_auth(self.now, verdict);
                }
                Output::LookupScram(login) => {
                    self.questions.push(format!("scram {login}"));
                    let lookup = match login.as_str() {
                        "user" => ScramLookup::Found {
                            account: "user@example.net".into(),
                            credentials: pencil(),
                        },
                        "down" => ScramLookup::TempFail,
                        _ => ScramLookup::UnknownUser,
                    };
                    let nonce = ScramNonce::new("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();
                    self.session.handle_scram_lookup(self.now, lookup, &nonce);
                }
                Output::CheckRecipient(account) => {
                    self.questions.push(account.clone());
                    let lookup = match account.as_str() {
                        "alice@example.net" | "bob@example.net" => Lookup::Found,
                        "slow@example.net" => Lookup::TempFail,
                        _ => Lookup::NotFound,
                    };
                    self.session.handle_recipient(self.now, lookup);
                }
                Output::CheckDomain(domain) => {
                    self.questions.push(domain.clone());
                    let lookup = match domain.as_str() {
                        "example.org" => Lookup::Found,
                        "flaky.example" => Lookup::TempFail,
                        _ => Lookup::NotFound,
                    };
                    self.session.handle_domain(self.now, lookup);
                }
                Output::MessageStart(envelope) => {
                    self.message.clear();
                    self.envelopes.push(envelope);
                }
                Output::MessageData(bytes) => self.message.extend_from_slice(&bytes),
                Output::MessageEnd => {
                    let text = String::from_utf8_lossy(&self.message).into_owned();
                    self.transcript.push_str(&format!("[message {text:?}]"));
                    let envelope = self.envelopes.last().expect("MessageStart came first");
                    let recipients = envelope.recipients.iter().map(self.outcome).collect();
                    let report = DeliveryReport {
                        queue_id: "4F2A9C01".into(),
                        recipients,
                    };
                    self.session.handle_delivery(self.now, report);
                }
                Output::MessageAbort => self.transcript.push_str("[abort]"),
                Output::Close => self.transcript.push_str("[close]"),
                Output::AuthFailed(mechanism) => {
                    self.transcript
                        .push_str(&format!("[auth failed {mechanism}]"));
                }
            }
        }
        any
    }
}

/// Runs `input` whole, one byte at a time, and split in two at every offset; all runs must
/// give the same transcript, which is returned.
fn converse_with(make: impl Fn() -> Harness, input: &str) -> Harness {
    let input = input.as_bytes();
    let mut whole = make();
    whole.feed(input);

    let mut bytewise = make();
    for byte in input.chunks(1) {
        bytewise.feed(byte);
    }
    assert_eq!(
        bytewise.transcript, whole.transcript,
        "byte-by-byte differs"
    );

    for split in 1..input.len() {
        let mut two = make();
        two.feed(&input[..split]);
        two.feed(&input[split..]);
        assert_eq!(two.transcript, whole.transcript, "split at {split} differs");
    }
    whole
}

#[track_caller]
fn assert_ends(transcript: &str, tail: &str) {
    assert!(
        transcript.ends_with(tail),
        "transcript:\n{transcript}\ndoes not end with:\n{tail}"
    );
}

fn converse(mode: Mode, peer: Peer, input: &str) -> Harness {
    converse_with(|| Harness::new(config(mode), peer), input)
}

fn smtp(input: &str) -> String {
    converse(Mode::Smtp, untrusted(), input).transcript
}

fn tls_config() -> Config {
    let mut config = config(Mode::Smtp);
    config.tls = TlsMode::May;
    config
}

#[test]
fn a_whole_message() {
    let h = converse(
        Mode::Smtp,
        untrusted(),
        "EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n\
         RCPT TO:<bob@example.net>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nend\r\n.\r\nQUIT\r\n",
    );
    let expected = format!(
        "{GREETING}{EHLO}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
         [message \"Subject: hi\\r\\n\\r\\n.dot\\r\\nend\\r\\n\"]\
         250 2.0.0 Ok: queued as 4F2A9C01\r\n221 2.0.0 Bye\r\n[close]"
    );
    assert_eq!(h.transcript, expected);
    let envelope = &h.envelopes[0];
    assert_eq!(envelope.protocol, "ESMTP");
    assert_eq!(envelope.helo.as_deref(), Some("client.example"));
    assert_eq!(envelope.recipients.len(), 1);
    assert_eq!(
        envelope.recipients[0].destinations,
        vec![Destination::Local {
            account: "bob@example.net".into(),
            address: "bob@example.net".into()
        }]
    );
    assert_eq!(
        h.session.command_summary(),
        "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    );
}

#[test]
fn helo_gets_a_short_answer_and_plain_smtp() {
    let h = converse(
        Mode::Smtp,
        untrusted(),
        "HELO client\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.net>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(
        h.transcript
            .starts_with(&format!("{GREETING}250 mx.example.net\r\n250 2.1.0 Ok"))
    );
    assert_eq!(h.envelopes[0].protocol, "SMTP");
    assert_eq!(h.envelopes[0].sender, ReversePath::Null);
}

#[test]
fn relay_is_refused_to_strangers_and_allowed_to_trusted_networks() {
    let input = "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@elsewhere.example>\r\n";
    let refused = converse(Mode::Smtp, untrusted(), input);
    assert_ends(
        &refused.transcript,
        "554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n",
    );
    let allowed = converse(Mode::Smtp, trusted(), input);
    assert_ends(&allowed.transcript, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
}

#[test]
fn unknown_local_users_are_refused_whatever_the_list_says() {
    let input = "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@example.net>\r\n\
                 RCPT TO:<slow@example.net>\r\n";
    for peer in [untrusted(), trusted()] {
        let h = converse(Mode::Smtp, peer, input);
        assert_ends(
            &h.transcript,
            "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n\
             451 4.3.0 <slow@example.net>: Recipient address rejected: Temporary lookup failure\r\n",
        );
    }
}

#[test]
fn postmaster_and_aliases() {
    let h = converse(
        Mode::Smtp,
        untrusted(),
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<Postmaster>\r\n\
         RCPT TO:<sales@EXAMPLE.NET.>\r\nRCPT TO:<bob+lists@example.net>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(
        h.transcript
            .contains("250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354")
    );
    let destinations: Vec<_> = h.envelopes[0]
        .recipients
        .iter()
        .map(|r| r.destinations.clone())
        .collect();
    assert_eq!(
        destinations,
        vec![
            vec![Destination::Local {
                account: "alice@example.net".into(),
                address: "alice@example.net".into()
            }],
            vec![
                Destination::Local {
                    account: "bob@example.net".into(),
                    address: "bob@example.net".into()
                },
                Destination::Remote("carol@example.org".into()),
            ],
            vec![Destination::Local {
                account: "bob@example.net".into(),
                address: "bob+lists@example.net".into()
            }],
        ]
    );
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let transcript = smtp(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@example.net>\r\n\
         RCPT TO:<alice@example.net>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\nhello\r\n.\r\n\
         RSET\r\nNOOP\r\nVRFY alice\r\nHELP\r\nQUIT\r\n",
    );
    let expected = format!(
        "{GREETING}{EHLO}250 2.1.0 Ok\r\n\
         550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n\
         250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
         [message \"hello\\r\\n\"]250 2.0.0 Ok: queued as 4F2A9C01\r\n250 2.0.0 Ok\r\n\
         250 2.0.0 Ok\r\n252 2.0.0 Cannot VRFY user, but will accept message\r\n\
         214 2.0.0 See RFC 5321\r\n221 2.0.0 Bye\r\n[close]"
    );
    assert_eq!(transcript, expected);
}

#[test]
fn bare_lf_in_data_throws_the_message_away_and_ends_the_session() {
    let transcript = smtp(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n\
         hello\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<alice@example.net>\r\nDATA\r\n\
         smuggled\r\n.\r\n",
    );
    assert_ends(
        &transcript,
        "354 End data with <CR><LF>.<CR><LF>\r\n[abort]\
         521 5.5.2 Error: bare CR or LF received\r\n[close]",
    );
    assert!(!transcript.contains("[message"));
}

#[test]
fn bare_cr_in_data_and_in_commands() {
    let transcript = smtp(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n\
         a\rb\r\n.\r\n",
    );
    assert_ends(
        &transcript,
        "[abort]521 5.5.2 Error: bare CR or LF received\r\n[close]",
    );
    let transcript = smtp("NOOP\rQUIT\r\n");
    assert_eq!(
        transcript,
        format!("{GREETING}521 5.5.2 Error: bare CR or LF received\r\n[close]")
    );
    let transcript = smtp("NOOP\nQUIT\r\n");
    assert_eq!(
        transcript,
        format!("{GREETING}521 5.5.2 Error: bare CR or LF received\r\n[close]")
    );
}

#[test]
fn smuggled_end_of_data_forms_are_not_an_end() {
    // `\n.\r\n` and `\r\n.\n` must not end DATA early: they end the session instead.
    for body in ["x\n.\r\nRSET\r\n", "x\r\n.\nRSET\r\n"] {
        let transcript = smtp(&format!(
            "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n{body}"
        ));
        assert_ends(
            &transcript,
            "[abort]521 5.5.2 Error: bare CR or LF received\r\n[close]",
        );
    }
}

#[test]
fn an_overlong_line_is_discarded_to_its_end() {
    let long = "X".repeat(600);
    let transcript = smtp(&format!("NOOP {long}QUIT\r\nNOOP\r\n"));
    assert_eq!(
        transcript,
        format!("{GREETING}500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n")
    );
    let huge = "Y".repeat(20_000);
    let transcript = smtp(&format!("{huge}\r\nQUIT\r\n"));
    assert_eq!(
        transcript,
        format!("{GREETING}500 5.5.2 Error: line too long\r\n221 2.0.0 Bye\r\n[close]")
    );
}

#[test]
fn data_lines_over_1000_octets_pass_unchanged() {
    let long = "z".repeat(5000);
    let h = converse(
        Mode::Smtp,
        untrusted(),
        &format!(
            "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n\
             {long}\r\n.\r\n"
        ),
    );
    assert!(
        h.transcript
            .contains(&format!("[message \"{long}\\r\\n\"]250 2.0.0"))
    );
}

#[test]
fn starttls_discards_pipelined_input_and_starts_over() {
    let h = converse_with(
        || Harness::new(tls_config(), untrusted()),
        "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@example.org>\r\n",
    );
    let ehlo_with_tls = EHLO.replace(
        "250-SIZE 10240000\r\n",
        "250-SIZE 10240000\r\n250-STARTTLS\r\n",
    );
    assert_eq!(
        h.transcript,
        format!("{GREETING}{ehlo_with_tls}220 2.0.0 Ready to start TLS\r\n[tls]")
    );

    // After the handshake: no HELO, and EHLO no longer offers STARTTLS.
    let h = converse_with(
        || Harness::new(tls_config(), untrusted()),
        "EHLO c\r\nSTARTTLS\r\n",
    );
    let mut h2 = h;
    h2.finish_tls();
    h2.feed(b"MAIL FROM:<a@example.org>\r\nEHLO c\r\nSTARTTLS\r\n");
    assert_ends(
        &h2.transcript,
        &format!(
            "[tls]503 5.5.1 Error: send HELO/EHLO first\r\n{}454 4.7.0 TLS not available\r\n",
            EHLO.replace(
                "250-ENHANCEDSTATUSCODES",
                "250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES"
            )
        ),
    );
    assert!(h2.session.is_tls_active());
}

#[test]
fn encrypt_listeners_demand_starttls_first() {
    let mut config = config(Mode::Smtp);
    config.tls = TlsMode::Encrypt;
    let h = converse_with(
        || Harness::new(config.clone(), untrusted()),
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nNOOP\r\n",
    );
    assert_ends(
        &h.transcript,
        "530 5.7.0 Must issue a STARTTLS command first\r\n\
         530 5.7.0 Must issue a STARTTLS command first\r\n250 2.0.0 Ok\r\n",
    );
}

fn submission() -> Config {
    let mut config = config(Mode::Smtp);
    config.tls = TlsMode::Implicit;
    config.auth = AuthMode::Required;
    config.limits.auth_failure_delay = Duration::from_secs(2);
    config
}

#[test]
fn auth_plain_and_login() {
    // PLAIN with an initial response; "\0alice\0secret".
    let h = converse_with(
        || Harness::new(submission(), untrusted()),
        "EHLO c\r\nMAIL FROM:<alice@example.net>\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n\
         AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<alice@example.net>\r\n\
         RCPT TO:<friend@example.org>\r\nDATA\r\nhi\r\n.\r\n",
    );
    assert!(h.transcript.contains("250-AUTH PLAIN LOGIN\r\n"));
    assert!(h.transcript.contains(
        "530 5.7.0 Authentication required\r\n235 2.7.0 Authentication successful\r\n\
         503 5.5.1 Error: already authenticated\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
    ));
    let envelope = &h.envelopes[0];
    assert_eq!(envelope.protocol, "ESMTPSA");
    assert_eq!(envelope.login.as_deref(), Some("alice"));
    assert_eq!(
        envelope.recipients[0].destinations,
        vec![Destination::Remote("friend@example.org".into())]
    );

    // LOGIN: "Username:" and "Password:" challenges.
    let h = converse_with(
        || Harness::new(submission(), untrusted()),
        "EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n",
    );
    assert_ends(
        &h.transcript,
        "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n",
    );

    // PLAIN without initial response gets an empty challenge.
    let h = converse_with(
        || Harness::new(submission(), untrusted()),
        "EHLO c\r\nAUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
    );
    assert_ends(
        &h.transcript,
        "334 \r\n235 2.7.0 Authentication successful\r\n",
    );
}

#[test]
fn failed_auth_waits_then_closes_after_the_limit() {
    let mut h = Harness::new(submission(), untrusted());
    h.feed(b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\n");
    assert!(
        !h.transcript.contains("535"),
        "the failure must wait for the delay"
    );
    h.advance(Duration::from_millis(1999));
    assert!(!h.transcript.contains("535"));
    h.advance(Duration::from_millis(1));
    assert_ends(&h.transcript, "535 5.7.8 Error: authentication failed\r\n");

    // The harness lets delays pass while feeding; three failures close the session.
    let h = converse_with(
        || Harness::new(submission(), untrusted()),
        "EHLO c\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AG5vYm9keQB4\r\n\
         AUTH LOGIN YWxpY2U=\r\neA==\r\nNOOP\r\n",
    );
    assert_ends(
        &h.transcript,
        "535 5.7.8 Error: authentication failed\r\n535 5.7.8 Error: authentication failed\r\n\
         334 UGFzc3dvcmQ6\r\n535 5.7.8 Error: authentication failed\r\n\
         421 4.7.0 mx.example.net Error: too many authentication failures\r\n[close]",
    );
}

#[test]
fn auth_errors() {
    let t = converse_with(
        || Harness::new(submission(), untrusted()),
        "EHLO c\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN\r\n%%\r\n\
         AUTH PLAIN AGRvd24AeA==\r\n",
    )
    .transcript;
    assert_ends(
        &t,
        "504 5.5.4 Error: unsupported authentication mechanism\r\n\
         501 5.5.2 Error: invalid base64 data\r\n334 VXNlcm5hbWU6\r\n\
         501 5.0.0 Authentication cancelled\r\n334 \r\n501 5.5.2 Error: invalid base64 data\r\n\
         454 4.7.0 Temporary authentication failure\r\n",
    );

    // No TLS and no plaintext_auth: AUTH is neither offered nor allowed.
    let t = converse_with(
        || Harness::new(config(Mode::Smtp), untrusted()),
        "EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    )
    .transcript;
    assert!(!t.contains("250-AUTH"));
    assert_ends(
        &t,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n",
    );

    // A SASL response line over 12288 octets.
    let long = "A".repeat(13_000);
    let t = converse_with(
        || Harness::new(submission(), untrusted()),
        &format!("EHLO c\r\nAUTH PLAIN\r\n{long}\r\nNOOP\r\n"),
    )
    .transcript;
    assert_ends(
        &t,
        "334 \r\n500 5.5.6 Error: authentication response too long\r\n250 2.0.0 Ok\r\n",
    );
}

/// RFC 7677 section 3's stored keys for "user" / "pencil".
fn pencil() -> ScramCredentials {
    // Derived once: conversations run at every split point, and PBKDF2 is slow unoptimised.
    static PENCIL: OnceLock<ScramCredentials> = OnceLock::new();
    PENCIL
        .get_or_init(|| {
            let salt = BASE64_STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
            ScramCredentials::from_password("pencil", &salt, 4096)
        })
        .clone()
}

fn scram_submission() -> Config {
    let mut config = submission();
    config.mechanisms = vec![Mechanism::ScramSha256, Mechanism::Plain];
    config.scram_secret = Some(ScramSecret::new(b"per-server secret".to_vec()));
    config
}

// RFC 7677 section 3, base64-wrapped as RFC 4954 carries it.
const SCRAM_CLIENT_FIRST: &str = "biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=";
const SCRAM_SERVER_FIRST: &str = "cj1yT3ByTkdmd0ViZVJXZ2JORWtxTyVodllEcFdVYTJSYVRDQWZ1eEZJbGopaE5sRiRrMCxzPVcyMlphSjBTTlk3c29Fc1VFamI2Z1E9PSxpPTQwOTY=";
const SCRAM_CLIENT_FINAL: &str = "Yz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==";
const SCRAM_SERVER_FINAL: &str = "dj02cnJpVFJCaTIzV3BSUi93dHVwK21NaFVaVW4vZEI1bkxUSlJzamw5NUc0PQ==";
/// The same with one bit of the proof flipped.
const SCRAM_BAD_FINAL: &str = "Yz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1lSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==";

/// Asks to act as bob while authenticating as user.
const AS_BOB_FIRST: &str = "n,a=bob,n=user,r=rOprNGfwEbeRWgbNEkqO";

/// A SCRAM client's client-final for `client_first`, against the harness's server-first.
fn scram_client_final(client_first: &str, password: &str) -> String {
    use hmac::{KeyInit, Mac};
    use sha2::{Digest, Sha256};
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes()
    };
    let (gs2_rest, bare) = client_first.split_at(client_first.find(",n=").unwrap() + 1);
    let server_first = String::from_utf8(BASE64_STANDARD.decode(SCRAM_SERVER_FIRST).unwrap());
    let server_first = server_first.unwrap();
    let nonce = server_first.split(',').next().unwrap();
    let without_proof = format!("c={},{nonce}", BASE64_STANDARD.encode(gs2_rest));
    let mut salted = [0u8; 32];
    let salt = BASE64_STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, 4096, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&Sha256::digest(client_key), auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature.iter())
        .map(|(a, b)| a ^ b)
        .collect();
    format!("{without_proof},p={}", BASE64_STANDARD.encode(proof))
}

#[test]
fn scram_sha_256_rfc_7677_exchange() {
    // The test client agrees with the RFC's example.
    let client_first = String::from_utf8(BASE64_STANDARD.decode(SCRAM_CLIENT_FIRST).unwrap());
    assert_eq!(
        BASE64_STANDARD.encode(scram_client_final(&client_first.unwrap(), "pencil")),
        SCRAM_CLIENT_FINAL
    );

    let h = converse_with(
        || Harness::new(scram_submission(), untrusted()),
        &format!(
            "EHLO c\r\nAUTH SCRAM-SHA-256\r\n{SCRAM_CLIENT_FIRST}\r\n{SCRAM_CLIENT_FINAL}\r\n\r\n\
             MAIL FROM:<user@example.net>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nhi\r\n.\r\n"
        ),
    );
    assert!(h.transcript.contains("250-AUTH SCRAM-SHA-256 PLAIN\r\n"));
    assert!(
        h.transcript.contains(&format!(
            "334 \r\n334 {SCRAM_SERVER_FIRST}\r\n334 {SCRAM_SERVER_FINAL}\r\n\
             235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"
        )),
        "{}",
        h.transcript
    );
    assert_eq!(h.questions, ["scram user"]);
    let envelope = &h.envelopes[0];
    assert_eq!(envelope.login.as_deref(), Some("user@example.net"));
    assert_eq!(envelope.mechanism, Some(Mechanism::ScramSha256));

    // The client-first as the initial response.
    let t = converse_with(
        || Harness::new(scram_submission(), untrusted()),
        // Acknowledged with "=", as some clients do.
        &format!(
            "EHLO c\r\nAUTH SCRAM-SHA-256 {SCRAM_CLIENT_FIRST}\r\n{SCRAM_CLIENT_FINAL}\r\n=\r\n"
        ),
    )
    .transcript;
    assert_ends(
        &t,
        &format!(
            "334 {SCRAM_SERVER_FIRST}\r\n334 {SCRAM_SERVER_FINAL}\r\n\
             235 2.7.0 Authentication successful\r\n"
        ),
    );
}

#[test]
fn scram_failures_look_like_wrong_passwords() {
    // Wrong proof for a known user, and the same proof for an unknown one: both get a
    // server-first, both get the delayed 535 after client-final.
    let t = converse_with(
        || Harness::new(scram_submission(), untrusted()),
        &format!(
            "EHLO c\r\nAUTH SCRAM-SHA-256 {SCRAM_CLIENT_FIRST}\r\n{SCRAM_BAD_FINAL}\r\n\
             AUTH SCRAM-SHA-256 biwsbj1ub2JvZHkscj1yT3ByTkdmd0ViZVJXZ2JORWtxTw==\r\n\
             {SCRAM_CLIENT_FINAL}\r\nNOOP\r\n"
        ),
    )
    .transcript;
    let failed = "535 5.7.8 Error: authentication failed\r\n";
    assert!(
        t.contains(&format!(
            "334 {SCRAM_SERVER_FIRST}\r\n[auth failed SCRAM-SHA-256]{failed}334 "
        )),
        "{t}"
    );
    assert_ends(&t, &format!("{failed}250 2.0.0 Ok\r\n"));

    let mut h = Harness::new(scram_submission(), untrusted());
    h.feed(
        format!("EHLO c\r\nAUTH SCRAM-SHA-256 {SCRAM_CLIENT_FIRST}\r\n{SCRAM_BAD_FINAL}\r\n")
            .as_bytes(),
    );
    assert!(
        !h.transcript.contains("535"),
        "the failure waits for the delay"
    );
    h.advance(Duration::from_secs(2));
    assert_ends(&h.transcript, failed);

    // Backend down, cancel at each step, a non-empty acknowledgement, channel binding,
    // acting as someone else.
    let t = converse_with(
        || Harness::new(scram_submission(), untrusted()),
        &format!(
            "EHLO c\r\nAUTH SCRAM-SHA-256 biwsbj1kb3duLHI9YWJj\r\n\
             AUTH SCRAM-SHA-256\r\n*\r\nAUTH SCRAM-SHA-256 {SCRAM_CLIENT_FIRST}\r\n*\r\n\
             AUTH SCRAM-SHA-256 {SCRAM_CLIENT_FIRST}\r\n{SCRAM_CLIENT_FINAL}\r\n*\r\n\
             AUTH SCRAM-SHA-256 {SCRAM_CLIENT_FIRST}\r\n{SCRAM_CLIENT_FINAL}\r\neA==\r\n\
             AUTH SCRAM-SHA-256 cD10bHMtdW5pcXVlLCxuPXVzZXIscj1hYmM=\r\n\
             AUTH SCRAM-SHA-256 {}\r\n{}\r\nNOOP\r\n",
            BASE64_STANDARD.encode(AS_BOB_FIRST),
            BASE64_STANDARD.encode(scram_client_final(AS_BOB_FIRST, "pencil")),
        ),
    )
    .transcript;
    assert_ends(
        &t,
        &format!(
            "454 4.7.0 Temporary authentication failure\r\n\
             334 \r\n501 5.0.0 Authentication cancelled\r\n\
             334 {SCRAM_SERVER_FIRST}\r\n501 5.0.0 Authentication cancelled\r\n\
             334 {SCRAM_SERVER_FIRST}\r\n334 {SCRAM_SERVER_FINAL}\r\n\
             501 5.0.0 Authentication cancelled\r\n\
             334 {SCRAM_SERVER_FIRST}\r\n334 {SCRAM_SERVER_FINAL}\r\n\
             501 5.5.2 Error: malformed authentication response\r\n\
             501 5.5.2 Error: malformed authentication response\r\n\
             334 {SCRAM_SERVER_FIRST}\r\n[auth failed SCRAM-SHA-256]{failed}250 2.0.0 Ok\r\n"
        ),
    );
}

#[test]
fn scram_is_offered_only_with_a_secret() {
    let mut config = scram_submission();
    config.scram_secret = None;
    let t = converse_with(
        || Harness::new(config.clone(), untrusted()),
        &format!("EHLO c\r\nAUTH SCRAM-SHA-256 {SCRAM_CLIENT_FIRST}\r\n"),
    )
    .transcript;
    assert!(t.contains("250-AUTH PLAIN\r\n"), "{t}");
    assert_ends(
        &t,
        "504 5.5.4 Error: unsupported authentication mechanism\r\n",
    );
}

#[test]
fn auth_as_someone_else_fails_like_a_wrong_password() {
    // "bob\0alice\0secret": right password, but acting as bob.
    let t = converse_with(
        || Harness::new(submission(), untrusted()),
        "EHLO c\r\nAUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\nNOOP\r\n",
    )
    .transcript;
    assert_ends(
        &t,
        "535 5.7.8 Error: authentication failed\r\n250 2.0.0 Ok\r\n",
    );
}

#[test]
fn sender_login_mismatch() {
    let mut config = submission();
    config.restrictions = vec![
        Restriction::RejectSenderLoginMismatch,
        Restriction::PermitSaslAuthenticated,
        Restriction::Reject,
    ];
    let t = converse_with(
        || Harness::new(config.clone(), untrusted()),
        "EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<bob@example.net>\r\n\
         RCPT TO:<x@example.org>\r\nRSET\r\nMAIL FROM:<postmaster@example.net>\r\n\
         RCPT TO:<x@example.org>\r\n",
    )
    .transcript;
    assert_ends(
        &t,
        "250 2.1.0 Ok\r\n553 5.7.1 <bob@example.net>: Sender address rejected: not owned by \
         user alice\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",
    );
}

#[test]
fn restriction_list_entries() {
    let mut config = config(Mode::Smtp);
    config.restrictions = vec![
        Restriction::RejectNonFqdnRecipient,
        Restriction::RejectUnknownRecipientDomain,
        Restriction::Permit,
    ];
    let h = converse_with(
        || Harness::new(config.clone(), untrusted()),
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<a@localhost>\r\n\
         RCPT TO:<a@nowhere.example>\r\nRCPT TO:<a@flaky.example>\r\nRCPT TO:<a@example.org>\r\n",
    );
    assert_ends(
        &h.transcript,
        "504 5.5.2 <a@localhost>: Recipient address rejected: need fully-qualified address\r\n\
         550 5.1.2 <a@nowhere.example>: Recipient address rejected: Domain not found\r\n\
         450 4.1.2 <a@flaky.example>: Recipient address rejected: Domain not found (temporary)\r\n\
         250 2.1.5 Ok\r\n",
    );
    assert_eq!(
        h.questions,
        ["nowhere.example", "flaky.example", "example.org"]
    );
}

#[test]
fn sequence_errors() {
    let t = smtp(
        "MAIL FROM:<a@example.org>\r\nEHLO c\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n\
         MAIL FROM:<a@example.org>\r\nMAIL FROM:<b@example.org>\r\nDATA\r\n\
         BDAT 3 LAST\r\nabc",
    );
    let expected = format!(
        "{GREETING}503 5.5.1 Error: send HELO/EHLO first\r\n{EHLO}\
         503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need MAIL command\r\n\
         250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n\
         503 5.5.1 Error: need RCPT command\r\n503 5.5.1 Error: need RCPT command\r\n"
    );
    assert_eq!(t, expected);
}

#[test]
fn syntax_errors_and_the_error_limit() {
    let t = smtp("EHLO\r\nFOO\r\nNOOP \0x\r\nGET / HTTP/1.1\r\nNOOP\r\n");
    assert_eq!(
        t,
        format!(
            "{GREETING}501 5.5.4 Error: syntax error in parameters\r\n\
             500 5.5.2 Error: command not recognized\r\n\
             500 5.5.2 Error: control character in command\r\n\
             521 5.7.0 Error: HTTP request on the mail port\r\n[close]"
        )
    );

    let mut config = config(Mode::Smtp);
    config.limits.errors = 3;
    let t = converse_with(
        || Harness::new(config.clone(), untrusted()),
        "A\r\nB\r\nC\r\nNOOP\r\n",
    )
    .transcript;
    assert_ends(
        &t,
        "500 5.5.2 Error: command not recognized\r\n\
         421 4.7.0 mx.example.net Error: too many errors\r\n[close]",
    );
}

#[test]
fn size_limits() {
    let mut config = config(Mode::Smtp);
    config.limits.message_size = 10;
    let t = converse_with(
        || Harness::new(config.clone(), untrusted()),
        "EHLO c\r\nMAIL FROM:<a@example.org> SIZE=11\r\nMAIL FROM:<a@example.org> SIZE=10\r\n\
         RCPT TO:<bob@example.net>\r\nDATA\r\n0123456789abc\r\n.\r\nNOOP\r\n",
    )
    .transcript;
    assert!(t.contains("250-SIZE 10\r\n"));
    assert_ends(
        &t,
        "552 5.3.4 Error: message file too big\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n[abort]552 5.3.4 Error: message file too big\r\n\
         250 2.0.0 Ok\r\n",
    );
}

#[test]
fn recipient_limit_and_duplicates() {
    let mut config = config(Mode::Smtp);
    config.limits.recipients = 2;
    let h = converse_with(
        || Harness::new(config.clone(), trusted()),
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<a@one.example>\r\nRCPT TO:<A@one.example>\r\n\
         RCPT TO:<b@two.example>\r\nRCPT TO:<c@three.example>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(h.transcript.contains(
        "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n"
    ));
    assert_eq!(h.envelopes[0].recipients.len(), 2);
}

#[test]
fn dsn_and_smtputf8_parameters_reach_the_envelope() {
    let h = converse(
        Mode::Smtp,
        untrusted(),
        "EHLO c\r\nMAIL FROM:<a@example.org> RET=HDRS ENVID=abc123 BODY=8BITMIME SMTPUTF8\r\n\
         RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net\r\n\
         RCPT TO:<jörg@example.net>\r\nDATA\r\nx\r\n.\r\n",
    );
    let envelope = &h.envelopes[0];
    assert_eq!(envelope.params.ret, Some(crate::command::Ret::Hdrs));
    assert_eq!(envelope.params.envid.as_deref(), Some("abc123"));
    assert!(envelope.params.smtputf8);
    let notify = envelope.recipients[0].params.notify.unwrap();
    assert!(notify.success && notify.failure && !notify.delay && !notify.never);
    assert_eq!(
        envelope.recipients[0].params.orcpt.as_deref(),
        Some("rfc822;bob@example.net")
    );
    assert!(h.transcript.contains("550 5.1.1 <jörg@example.net>"));

    let t = smtp(
        "EHLO c\r\nMAIL FROM:<jörg@example.org>\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\n",
    );
    assert_ends(
        &t,
        "553 5.6.7 Error: non-ASCII address needs SMTPUTF8\r\n555 5.5.4 Error: unsupported parameter\r\n",
    );
}

#[test]
fn bdat_chunks() {
    let h = converse(
        Mode::Smtp,
        untrusted(),
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
         BDAT 7\r\nline\r\n.BDAT 4\r\nX\r\nYBDAT 0 LAST\r\nDATA\r\n",
    );
    assert_ends(
        &h.transcript,
        "250 2.0.0 Ok: 7 octets received\r\n250 2.0.0 Ok: 4 octets received\r\n\
         [message \"line\\r\\n.X\\r\\nY\"]250 2.0.0 Ok: queued as 4F2A9C01\r\n\
         503 5.5.1 Error: need MAIL command\r\n",
    );

    let t = smtp(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nBDAT 3\r\nabc\
         DATA\r\nRCPT TO:<alice@example.net>\r\nBDAT 1 LAST\r\nd",
    );
    assert_ends(
        &t,
        "250 2.0.0 Ok: 3 octets received\r\n503 5.5.1 Error: DATA after BDAT\r\n\
         503 5.5.1 Error: RCPT after BDAT\r\n[message \"abcd\"]250 2.0.0 Ok: queued as 4F2A9C01\r\n",
    );

    // Bare LF inside a chunk, even split across chunks as CR | LF-less text.
    let t = smtp(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nBDAT 2\r\na\r\
         BDAT 2 LAST\r\nb\n",
    );
    assert_ends(
        &t,
        "[abort]521 5.5.2 Error: bare CR or LF received\r\n[close]",
    );
}

#[test]
fn bdat_refused_still_reads_its_chunk() {
    let t = smtp("EHLO c\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_ends(&t, "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
}

#[test]
fn bdat_over_the_size_limit() {
    let mut config = config(Mode::Smtp);
    config.limits.message_size = 4;
    let t = converse_with(
        || Harness::new(config.clone(), untrusted()),
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nBDAT 6\r\nabcdef\
         BDAT 1 LAST\r\nx",
    )
    .transcript;
    assert_ends(
        &t,
        "[abort]552 5.3.4 Error: message file too big\r\n503 5.5.1 Error: need MAIL command\r\n",
    );
}

#[test]
fn lmtp_answers_once_per_recipient() {
    let mut h = converse_with(
        || {
            let mut h = Harness::new(config(Mode::Lmtp), Peer::default());
            h.outcome = |r| {
                if r.address.local == "alice" {
                    RcptOutcome::DiskFull
                } else {
                    RcptOutcome::Delivered
                }
            };
            h
        },
        "LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
         RCPT TO:<nobody@example.net>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<alice@example.net>\r\n\
         RCPT TO:<BOB@example.net>\r\nDATA\r\nhi\r\n.\r\n",
    );
    let expected = "220 mx.example.net LMTP tern\r\n250-mx.example.net\r\n250-PIPELINING\r\n\
         250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
         250-SMTPUTF8\r\n250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n\
         550 5.1.1 <x@example.org>: Recipient address rejected: User unknown\r\n\
         250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
         [message \"hi\\r\\n\"]250 2.1.5 <bob@example.net> Ok\r\n\
         452 4.3.1 Error: insufficient system storage\r\n250 2.1.5 <bob@example.net> Ok\r\n";
    assert_eq!(h.transcript, expected);
    assert_eq!(h.envelopes[0].recipients.len(), 2);
    assert_eq!(h.envelopes[0].protocol, "LMTP");
    // One recipient's failure after the data does not make DATA a failed command.
    assert!(
        h.session.command_summary().contains(" data=1 "),
        "{}",
        h.session.command_summary()
    );

    h.feed(b"EHLO c\r\nHELO c\r\n");
    assert_ends(
        &h.transcript,
        "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n",
    );
}

#[test]
fn delivery_failures_are_reported() {
    let mut h = Harness::new(config(Mode::Smtp), untrusted());
    h.outcome = |_| RcptOutcome::TempFailure;
    h.feed(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_ends(
        &h.transcript,
        "451 4.3.0 Error: local delivery failed, try again later\r\n",
    );
    let mut h = Harness::new(config(Mode::Smtp), untrusted());
    h.outcome = |_| RcptOutcome::DiskFull;
    h.feed(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_ends(
        &h.transcript,
        "452 4.3.1 Error: insufficient system storage\r\n",
    );
}

#[test]
fn timeouts() {
    let mut h = Harness::new(config(Mode::Smtp), untrusted());
    h.feed(b"EHLO c\r\n");
    h.advance(Duration::from_secs(299));
    assert!(!h.transcript.contains("421"));
    h.feed(b"NOOP\r\n");
    h.advance(Duration::from_secs(299));
    assert!(!h.transcript.contains("421"));
    h.advance(Duration::from_secs(1));
    assert_ends(
        &h.transcript,
        "421 4.4.2 mx.example.net Error: timeout exceeded\r\n[close]",
    );

    let mut h = Harness::new(config(Mode::Smtp), untrusted());
    h.feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\npart");
    h.advance(Duration::from_secs(599));
    assert!(!h.transcript.contains("421"));
    h.advance(Duration::from_secs(1));
    assert_ends(
        &h.transcript,
        "[abort]421 4.4.2 mx.example.net Error: timeout exceeded\r\n[close]",
    );
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn shutdown_waits_for_a_message_in_progress() {
    let mut h = Harness::new(config(Mode::Smtp), untrusted());
    h.feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\npart");
    h.session.shutdown(h.now);
    h.drain();
    assert!(!h.transcript.contains("421"));
    h.feed(b"\r\n.\r\n");
    assert_ends(
        &h.transcript,
        "250 2.0.0 Ok: queued as 4F2A9C01\r\n421 4.3.2 mx.example.net Service shutting down\r\n[close]",
    );

    let mut h = Harness::new(config(Mode::Smtp), untrusted());
    h.feed(b"EHLO c\r\n");
    h.session.shutdown(h.now);
    h.drain();
    assert_ends(
        &h.transcript,
        "421 4.3.2 mx.example.net Service shutting down\r\n[close]",
    );
}

#[test]
fn address_literals_are_local_only_for_our_own_address() {
    let t = smtp(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<postmaster@[198.51.100.1]>\r\n\
         RCPT TO:<bob@[198.51.100.2]>\r\n",
    );
    assert_ends(
        &t,
        "250 2.1.5 Ok\r\n554 5.7.1 <bob@[198.51.100.2]>: Relay access denied\r\n",
    );
}

#[test]
fn source_routes_and_quoted_local_parts() {
    let h = converse(
        Mode::Smtp,
        untrusted(),
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<@relay.example:\"bob\"@example.net>\r\n\
         RCPT TO:<bob%elsewhere.example@example.net>\r\nDATA\r\nx\r\n.\r\n",
    );
    // The quoted "bob" is bob; `%` is never routed, so bob%elsewhere is an unknown local user.
    assert!(h.transcript.contains(
        "250 2.1.5 Ok\r\n550 5.1.1 <bob%elsewhere.example@example.net>: Recipient address \
         rejected: User unknown\r\n"
    ));
    assert_eq!(h.envelopes[0].recipients[0].address.local, "bob");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn alphabet() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::sample::select(vec![
            &b"EHLO c\r\n"[..],
            b"HELO c\r\n",
            b"LHLO c\r\n",
            b"MAIL FROM:<a@example.org>\r\n",
            b"RCPT TO:<bob@example.net>\r\n",
            b"RCPT TO:<x@example.org>\r\n",
            b"DATA\r\n",
            b"BDAT 5\r\n",
            b"BDAT 0 LAST\r\n",
            b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
            b"AUTH LOGIN\r\n",
            b"STARTTLS\r\n",
            b"RSET\r\n",
            b".\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"x",
            b"..",
            b"\0",
        ]);
        prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
    }

    fn run(config: &Config, input: &[u8], split: usize) -> String {
        let mut h = Harness::new(config.clone(), untrusted());
        let split = split.min(input.len());
        h.feed(&input[..split]);
        h.feed(&input[split..]);
        assert!(h.session.line.buf_len() <= AUTH_LINE_MAX);
        h.transcript
    }

    proptest! {
        #[test]
        fn any_bytes_any_split(input in prop::collection::vec(any::<u8>(), 0..600), split in 0usize..600) {
            let mut config = tls_config();
            config.plaintext_auth = true;
            prop_assert_eq!(run(&config, &input, split), run(&config, &input, usize::MAX));
        }

        #[test]
        fn smtp_alphabet_any_split(input in alphabet(), split in 0usize..1000) {
            let mut config = tls_config();
            config.plaintext_auth = true;
            config.limits.auth_failure_delay = Duration::ZERO;
            prop_assert_eq!(run(&config, &input, split), run(&config, &input, usize::MAX));
        }
    }
}
