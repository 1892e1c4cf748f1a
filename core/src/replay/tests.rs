//! Conversations recorded through a [`Recorder`] played by a small runtime, then replayed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::*;
use crate::recipient::{Aliases, Policy};
use crate::server::{AuthMode, RcptOutcome, TlsMode};

const PASSWORD: &str = "correct horse battery";

fn config(mode: Mode) -> Config {
    let mut aliases = Aliases::default();
    aliases.insert("postmaster", vec!["alice".into()]);
    let mut config = Config::new("mx.example.net", mode);
    config.plaintext_auth = true;
    config.policy = Policy {
        domains: vec!["example.net".into()],
        trusted_networks: vec!["192.0.2.0/24".parse().unwrap()],
        recipient_delimiter: "+".into(),
        aliases,
    };
    config
}

fn peer() -> Peer {
    Peer {
        client: Some("203.0.113.9".parse().unwrap()),
        local: Some("198.51.100.1".parse().unwrap()),
    }
}

/// Plays the runtime: answers every question at once, as a small site would.
struct Runtime {
    recorder: Recorder,
    now: Instant,
    transcript: String,
    recipients: usize,
    verdicts: Vec<AuthVerdict>,
}

impl Runtime {
    fn new(config: Config) -> Runtime {
        // Any origin will do: the virtual clock only moves when a test moves it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut runtime = Runtime {
            recorder: Recorder::new(Arc::new(config), peer(), now),
            now,
            transcript: String::new(),
            recipients: 0,
            verdicts: Vec::new(),
        };
        runtime.drain();
        runtime
    }

    /// Feeds `input` in pieces of `split` octets, as reads from a socket might come.
    fn feed(&mut self, input: &[u8], split: usize) {
        for piece in input.chunks(split) {
            let mut piece = piece;
            loop {
                self.now += Duration::from_millis(1);
                let used = self.recorder.receive(self.now, piece);
                piece = &piece[used..];
                let produced = self.drain();
                if piece.is_empty() {
                    break;
                }
                if used == 0 && !produced {
                    // Waiting on a timer (the AUTH failure delay): let it pass.
                    let at = self.recorder.poll_timeout().expect("stuck without a timer");
                    self.now = self.now.max(at);
                    self.recorder.handle_timeout(self.now);
                    self.drain();
                }
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.recorder.handle_timeout(self.now);
        self.drain();
    }

    fn drain(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.recorder.poll_output() {
            any = true;
            let now = self.now;
            match output {
                Output::Send(bytes) => self.transcript.push_str(&String::from_utf8_lossy(&bytes)),
                Output::StartTls => self.recorder.handle_tls_established(now),
                Output::Authenticate(credentials) => {
                    let verdict = if self.verdicts.is_empty() {
                        match credentials.password.expose() {
                            PASSWORD => AuthVerdict::Ok {
                                login: credentials.login.clone(),
                            },
                            _ => AuthVerdict::Fail,
                        }
                    } else {
                        self.verdicts.remove(0)
                    };
                    self.recorder.handle_auth(now, verdict);
                }
                Output::CheckRecipient(_) => self.recorder.handle_recipient(now, Lookup::Found),
                Output::CheckDomain(_) => self.recorder.handle_domain(now, Lookup::NotFound),
                Output::MessageStart(envelope) => self.recipients = envelope.recipients.len(),
                Output::MessageEnd => {
                    let report = DeliveryReport {
                        queue_id: "4XyZ".into(),
                        recipients: vec![RcptOutcome::Delivered; self.recipients],
                    };
                    self.recorder.handle_delivery(now, report);
                }
                Output::LookupScram(_) => {
                    let nonce = crate::sasl::ScramNonce::new("servernonce").unwrap();
                    let lookup = crate::sasl::ScramLookup::UnknownUser;
                    self.recorder.handle_scram_lookup(now, lookup, &nonce);
                }
                Output::MessageData(_)
                | Output::MessageAbort
                | Output::Close
                | Output::AuthFailed(_) => {}
            }
        }
        any
    }

    fn recording(&self) -> String {
        self.recorder.recording().unwrap()
    }
}

fn plain_credentials() -> String {
    BASE64.encode(format!("\0alice\0{PASSWORD}"))
}

/// The recorded conversations, by name, as `tests/replay/` holds them.
fn conversations() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let message = b"EHLO client.example\r\nMAIL FROM:<bob@example.org>\r\n\
RCPT TO:<alice@example.net>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";

    let mut smtp = Runtime::new(config(Mode::Smtp));
    smtp.feed(message, 7);
    out.push(("smtp-data", smtp.recording()));

    let mut plain = Runtime::new(config(Mode::Smtp));
    let auth = format!("EHLO c\r\nAUTH PLAIN {}\r\n", plain_credentials());
    plain.feed(auth.as_bytes(), 1000);
    plain.feed(
        b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<x@elsewhere.example>\r\nQUIT\r\n",
        5,
    );
    assert!(
        plain.transcript.contains("235 2.7.0"),
        "{}",
        plain.transcript
    );
    out.push(("auth-plain", plain.recording()));

    let mut login = Runtime::new(config(Mode::Smtp));
    let user = BASE64.encode("alice");
    let wrong = BASE64.encode("not it");
    let right = BASE64.encode(PASSWORD);
    let lines = format!(
        "EHLO c\r\nAUTH LOGIN\r\n{user}\r\n{wrong}\r\nAUTH LOGIN {user}\r\n{right}\r\nQUIT\r\n"
    );
    // One octet at a time: every payload is spread over many `in` events.
    login.feed(lines.as_bytes(), 1);
    assert!(
        login.transcript.contains("535 5.7.8"),
        "{}",
        login.transcript
    );
    assert!(
        login.transcript.contains("235 2.7.0"),
        "{}",
        login.transcript
    );
    out.push(("auth-login", login.recording()));

    let mut bdat = Runtime::new(config(Mode::Smtp));
    bdat.feed(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.net>\r\nBDAT 5\r\nab\r\nBDAT 4 LAST\r\n\
cd\r\nAUTH PLAIN AAAA\r\nQUIT\r\n",
        9,
    );
    assert!(bdat.transcript.contains("250 2.0.0"), "{}", bdat.transcript);
    out.push(("bdat", bdat.recording()));

    let mut lmtp = Runtime::new(config(Mode::Lmtp));
    lmtp.feed(
        b"LHLO c\r\nMAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.net>\r\n\
RCPT TO:<carol+x@example.net>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n",
        64,
    );
    assert_eq!(
        lmtp.transcript.matches("250 2.1.5").count(),
        4,
        "{}",
        lmtp.transcript
    );
    out.push(("lmtp", lmtp.recording()));

    let mut idle = Runtime::new(config(Mode::Smtp));
    idle.feed(b"EHLO c\r\nAUTH PLAIN\r\n", 100);
    idle.advance(Duration::from_secs(299));
    idle.advance(Duration::from_secs(2));
    assert!(idle.transcript.contains("421 4.4.2"), "{}", idle.transcript);
    out.push(("timeout", idle.recording()));
    out
}

/// Found by fuzzing: bytes thrown away while STARTTLS waits for the handshake, and the rest
/// of their line read after it, were once redacted as one line.
#[test]
fn a_line_across_the_tls_handshake_replays() {
    let mut config = config(Mode::Smtp);
    config.tls = TlsMode::Encrypt;
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut recorder = Recorder::new(Arc::new(config), peer(), now);
    let mut sent = Vec::new();
    assert_eq!(recorder.receive(now, b"STARTTLS\r\nAB"), 12);
    while let Some(output) = recorder.poll_output() {
        sent.push(output);
    }
    assert!(sent.contains(&Output::StartTls), "{sent:?}");
    recorder.handle_tls_established(now);
    assert_eq!(recorder.receive(now, b"C\nD"), 3);
    while let Some(output) = recorder.poll_output() {
        sent.push(output);
    }
    assert!(recorder.is_closed(), "{sent:?}");
    let recording = recorder.recording().unwrap();
    assert!(
        recording.contains(" in \\{secret fill 2 0..2}\n"),
        "{recording}"
    );
    replay(&recording, now).unwrap_or_else(|e| panic!("{e}\n{recording}"));
}

/// Found by the `smtp_server` fuzz target: a SASL response with a bare CR or LF was redacted
/// whole, line end included, so its replay did not end the session as the original had.
#[test]
fn a_bare_line_end_inside_a_sasl_response_replays() {
    // The fuzz case: the bare CRs end the input, after five LHLOs and AUTH LOGIN.
    let fuzz_case = b"LHLO c\r\nLHLO c\r\nLHLO c\r\nLHLO c\r\nLHLO c\r\nAUTH LOGIN\r\n\r\r";
    let mut lmtp = config(Mode::Lmtp);
    lmtp.auth = AuthMode::Required;
    lmtp.plaintext_auth = true;
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut recorder = Recorder::new(Arc::new(lmtp), peer(), now);
    let mut rest = &fuzz_case[..];
    while !rest.is_empty() {
        let used = recorder.receive(now, rest);
        rest = &rest[used..];
        let mut any = false;
        while recorder.poll_output().is_some() {
            any = true;
        }
        assert!(used > 0 || any, "stuck");
    }
    assert!(recorder.is_closed());
    let recording = recorder.recording().unwrap();
    replay(&recording, now).unwrap_or_else(|e| panic!("{e}\n{recording}"));

    for response in [&b"x\n"[..], b"\nx", b"\r\r", b"\n\n", b"ab\rc\r\n", b"\r"] {
        let mut config = config(Mode::Lmtp);
        config.auth = AuthMode::Required;
        config.plaintext_auth = true;
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut recorder = Recorder::new(Arc::new(config), peer(), now);
        let mut input = b"LHLO c\r\nAUTH LOGIN\r\n".to_vec();
        input.extend_from_slice(response);
        input.extend_from_slice(b"NOOP\r\n");
        let used = recorder.receive(now, &input);
        while recorder.poll_output().is_some() {}
        assert_eq!(used, input.len(), "{response:?}");
        let recording = recorder.recording().unwrap();
        replay(&recording, now).unwrap_or_else(|e| panic!("{response:?}: {e}\n{recording}"));
    }
}

#[test]
fn every_conversation_replays_exactly() {
    for (name, recording) in conversations() {
        #[allow(clippy::disallowed_methods)]
        let summary = replay(&recording, Instant::now())
            .unwrap_or_else(|e| panic!("{name}: {e}\n{recording}"));
        let events = recording.lines().skip_while(|l| *l != "events").count() - 1;
        assert_eq!(summary.events, events, "{name}");
    }
}

#[test]
fn recordings_hold_no_credentials() {
    let encoded_password = BASE64.encode(PASSWORD);
    for (name, recording) in conversations() {
        for secret in [PASSWORD, &plain_credentials(), &encoded_password] {
            assert!(!recording.contains(secret), "{name} holds {secret}");
        }
        if name.starts_with("auth") {
            assert!(recording.contains("\\{secret "), "{name}");
            assert!(recording.contains(" auth ok alice\n"), "{name}");
            assert!(recording.contains(" authenticate "), "{name}");
        }
    }
}

#[test]
fn a_tampered_recording_reports_the_first_difference() {
    let (_, recording) = conversations().remove(0);
    let tampered = recording.replacen("250 2.1.5 Ok", "250 2.1.5 Fine", 1);
    assert_ne!(tampered, recording);
    #[allow(clippy::disallowed_methods)]
    let Err(ReplayError::Mismatch(mismatch)) = replay(&tampered, Instant::now()) else {
        panic!("the tampered recording replayed");
    };
    assert!(mismatch.expected.contains("Fine"), "{mismatch}");
    assert!(mismatch.actual.contains("250 2.1.5 Ok"), "{mismatch}");
    let line = tampered.lines().nth(mismatch.line - 1).unwrap();
    assert!(line.ends_with(&mismatch.expected), "{line}");
}

#[test]
fn a_changed_verdict_changes_the_replies() {
    let (_, recording) = conversations().remove(1);
    let tampered = recording.replace(" auth ok alice", " auth fail");
    #[allow(clippy::disallowed_methods)]
    let result = replay(&tampered, Instant::now());
    assert!(
        matches!(result, Err(ReplayError::Mismatch(_))),
        "{result:?}"
    );
}

#[test]
fn header_round_trips_the_configuration() {
    let mut config = config(Mode::Smtp);
    config.tls = TlsMode::Encrypt;
    config.limits.auth_failure_delay = Duration::from_millis(1500);
    config
        .policy
        .aliases
        .insert("a b", vec!["x y".into(), "z".into()]);
    config.policy.recipient_delimiter = String::new();
    let header = text::header(&config, &peer());
    let parsed = Recording::parse(&header).unwrap();
    assert_eq!(text::header(&parsed.config, &parsed.peer), header);
    assert!(parsed.is_empty());
}

#[test]
fn bad_recordings_are_parse_errors() {
    let good = conversations().remove(0).1;
    let cases = [
        ("", 1),
        ("tern-replay 1\nmode smtp\n", 1),
        ("tern-replay 1\nmode smtp\nlimits errors=x\nevents\n", 3),
        ("tern-replay 1\nmode smtp\nevents\n0.5 in x\n", 4),
        (
            "tern-replay 1\nmode smtp\nevents\n18446744073709551615.000000000 timeout\n",
            4,
        ),
        (
            "tern-replay 1\nmode smtp\nlimits data_timeout=9999999999.000000000\nevents\n",
            3,
        ),
        (
            "tern-replay 1\nmode smtp\nevents\n0.000000000 frobnicate\n",
            4,
        ),
        (
            "tern-replay 1\nmode smtp\nevents\n0.000000000 in \\{secret plain-done/1 4 0..4}\n",
            4,
        ),
    ];
    for (text, line) in cases {
        let error = Recording::parse(text).unwrap_err();
        assert_eq!(error.line, line, "{text:?}: {error}");
    }
    assert!(Recording::parse(&good).is_ok());
}
