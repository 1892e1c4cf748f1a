//! The edges of the client: refused input, API misuse, timeouts, the end of the connection,
//! and arbitrary server bytes.

use super::*;

#[test]
fn addresses_and_parameters_that_could_inject_commands_are_refused() {
    let evil_local = Mailbox {
        local: "a\r\nRCPT TO:<x@evil.example>".into(),
        domain: Domain::Name("mx.example".into()),
    };
    let evil_domain = Mailbox {
        local: "a".into(),
        domain: Domain::Name("mx.example> NOTIFY=NEVER".into()),
    };
    let mut cases = Vec::new();
    let mut m = message("a@client.example", &["b@mx.example"]);
    m.recipients[0].address = evil_local.clone();
    cases.push((m, "[refused: control character in recipient]"));
    let mut m = message("a@client.example", &["b@mx.example"]);
    m.sender = ReversePath::Mailbox(evil_local);
    cases.push((m, "[refused: control character in sender]"));
    let mut m = message("a@client.example", &["b@mx.example"]);
    m.recipients[0].address = evil_domain;
    cases.push((m, "[refused: malformed recipient]"));
    let mut m = message("a@client.example", &["b@mx.example"]);
    m.params.envid = Some("x\ny".into());
    cases.push((m, "[refused: control character in ENVID]"));
    let mut m = message("a@client.example", &["b@mx.example"]);
    m.recipients[0].params.orcpt = Some("rfc822;a b".into());
    cases.push((m, "[refused: malformed ORCPT]"));
    let mut m = message("a@client.example", &[]);
    m.recipients.clear();
    cases.push((m, "[refused: a message without recipients]"));

    for (m, refusal) in cases {
        let h = smtp(
            vec![(m, "x\r\n")],
            &[&[GREETING, EHLO, "221 Bye\r\n"].concat()],
            false,
        );
        assert_transcript(
            &h,
            &format!("EHLO client.example\r\n{refusal}QUIT\r\n[close]"),
        );
    }

    let mut bad = config(Mode::Smtp);
    bad.hostname = "client\r\nMAIL FROM:<x>".into();
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    assert_eq!(
        Session::new(Arc::new(bad), now).err(),
        Some(InputError::ControlCharacter("hostname"))
    );
}

#[test]
fn api_misuse_changes_nothing() {
    let mut h = Harness::new(config(Mode::Smtp), vec![]);
    let m = message("a@client.example", &["b@mx.example"]);
    assert_eq!(h.session.start_message(h.now, m), Err(InputError::NotReady));
    h.session.handle_message_text(h.now, b"stray");
    h.session.handle_message_end(h.now);
    h.session.handle_tls_established(h.now);
    assert_eq!(h.session.poll_output(), None);
    assert!(!h.session.wants_message_text());
}

#[test]
fn timeouts_follow_rfc_5321() {
    let minutes = |n: u64| Duration::from_secs(60 * n);
    // The greeting.
    let mut h = Harness::new(config(Mode::Smtp), vec![]);
    assert_eq!(h.session.poll_timeout(), Some(h.now + minutes(5)));
    h.advance(minutes(5) - Duration::from_secs(1));
    assert_eq!(h.transcript, "");
    h.advance(Duration::from_secs(1));
    assert_transcript(&h, "[error: conversation timed out at the greeting][close]");
    assert_eq!(h.session.poll_timeout(), None);

    // DATA's 354, the text from the runtime, and the reply after the final dot.
    let mut h = Harness::new(
        config_without_chunking(),
        vec![(message("a@client.example", &["b@mx.example"]), "Hi\r\n")],
    );
    h.feed(format!("{GREETING}{EHLO_PLAIN}250 Ok\r\n250 Ok\r\n").as_bytes());
    assert_eq!(h.session.poll_timeout(), Some(h.now + minutes(2)));
    h.feed(b"354 go\r\n");
    assert_eq!(h.session.poll_timeout(), Some(h.now + minutes(10)));
    h.advance(minutes(10));
    assert!(h.transcript.ends_with(
        "Hi\r\n.\r\n[report: not sent: conversation timed out at end of data]\
         [error: conversation timed out at end of data][close]"
    ));

    // A runtime that stops feeding text: the harness feeds text at once, so the session
    // is driven by hand.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut session = Session::new(Arc::new(config_without_chunking()), now).unwrap();
    session.receive(now, format!("{GREETING}{EHLO_PLAIN}").as_bytes());
    while session.poll_output().is_some() {}
    session
        .start_message(now, message("a@client.example", &["b@mx.example"]))
        .unwrap();
    assert_eq!(session.poll_timeout(), Some(now + minutes(5)));
    session.receive(now, b"250 Ok\r\n250 Ok\r\n354 go\r\n");
    assert!(session.wants_message_text());
    assert_eq!(session.poll_timeout(), Some(now + minutes(3)));
    let later = now + minutes(2);
    session.handle_message_text(later, b"more");
    assert_eq!(session.poll_timeout(), Some(later + minutes(3)));
    session.handle_timeout(later + minutes(3));
    assert_eq!(
        session.error(),
        Some(&SessionError::Timeout { stage: Stage::Text })
    );

    // QUIT's reply is waited for, but its absence is no error.
    let mut h = Harness::new(config_without_chunking(), vec![]);
    h.feed(format!("{GREETING}{EHLO}").as_bytes());
    h.advance(minutes(5));
    assert_transcript(&h, "EHLO client.example\r\nQUIT\r\n[close]");
    assert_eq!(h.session.error(), None);
}

fn config_without_chunking() -> Config {
    let mut config = config(Mode::Smtp);
    config.chunking = false;
    config
}

#[test]
fn eof_after_quit_is_the_normal_end_and_idle_eof_is_reported() {
    let mut h = Harness::new(config_without_chunking(), vec![]);
    h.feed(format!("{GREETING}{EHLO}").as_bytes());
    h.eof();
    assert_transcript(&h, "EHLO client.example\r\nQUIT\r\n[eof][close]");
    assert_eq!(h.session.error(), None);

    // A connection parked between messages that the server closes.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut session = Session::new(Arc::new(config_without_chunking()), now).unwrap();
    session.receive(now, format!("{GREETING}{EHLO}").as_bytes());
    while session.poll_output().is_some() {}
    session.handle_eof(now);
    assert_eq!(
        session.poll_output(),
        Some(Output::Error(SessionError::ConnectionLost {
            stage: Stage::Idle
        }))
    );
    assert_eq!(session.poll_output(), Some(Output::Close));
}

#[test]
fn quitting_in_the_middle_of_a_message() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut session = Session::new(Arc::new(config_without_chunking()), now).unwrap();
    session.receive(now, format!("{GREETING}{EHLO}").as_bytes());
    while session.poll_output().is_some() {}
    session
        .start_message(now, message("a@client.example", &["b@mx.example"]))
        .unwrap();
    while session.poll_output().is_some() {}
    session.quit(now);
    let Some(Output::Report(report)) = session.poll_output() else {
        panic!("no report");
    };
    assert_eq!(
        report.recipients[0].verdict,
        Verdict::NotSent(Problem::Session(SessionError::Aborted))
    );
    assert_eq!(
        session.poll_output(),
        Some(Output::Error(SessionError::Aborted))
    );
    assert_eq!(session.poll_output(), Some(Output::Close));
    assert_eq!(session.receive(now, b"250 Ok\r\n"), 8);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn alphabet() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::sample::select(vec![
            &b"220 mx ESMTP\r\n"[..],
            b"250-mx\r\n",
            b"250-PIPELINING\r\n",
            b"250-CHUNKING\r\n",
            b"250-STARTTLS\r\n",
            b"250-SIZE 10\r\n",
            b"250 Ok\r\n",
            b"250 2.0.0 Ok\r\n",
            b"354 go\r\n",
            b"421 bye\r\n",
            b"450 later\r\n",
            b"550 5.1.1 no\r\n",
            b"220 go\r\n",
            b"221 Bye\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"-",
            b" ",
            b"2",
        ]);
        prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
    }

    fn harness(mode: Mode, tls: TlsPolicy) -> Harness {
        let mut config = config(mode);
        config.tls = tls;
        let mut m = message("a@client.example", &["b@mx.example", "c@mx.example"]);
        m.params.size = Some(5);
        Harness::new(
            config,
            vec![
                (m.clone(), ".a\r\nb\r\n"),
                (m, "x"),
                (message("a@client.example", &["d@mx.example"]), ""),
            ],
        )
    }

    fn transcript(mode: Mode, input: &[u8], split: usize) -> String {
        let mut h = harness(mode, TlsPolicy::May);
        let split = split.min(input.len());
        for part in [&input[..split], &input[split..]] {
            h.feed(part);
            assert!(h.session.parser.held() <= LINE_MAX + 1 + REPLY_MAX);
            if h.tls_pending {
                h.finish_tls();
            }
        }
        h.eof();
        // Every message handed over is reported once, whatever the server did.
        let handed = h.reports.len() + h.messages.len();
        assert_eq!(handed, 3);
        for report in &h.reports {
            assert!(!report.recipients.is_empty());
        }
        assert!(h.session.is_closed());
        h.transcript
    }

    proptest! {
        #[test]
        fn any_bytes_any_split(input in prop::collection::vec(any::<u8>(), 0..600), split in 0usize..600) {
            for mode in [Mode::Smtp, Mode::Lmtp] {
                prop_assert_eq!(transcript(mode, &input, split), transcript(mode, &input, usize::MAX));
            }
        }

        #[test]
        fn reply_alphabet_any_split(input in alphabet(), split in 0usize..1000) {
            for mode in [Mode::Smtp, Mode::Lmtp] {
                prop_assert_eq!(transcript(mode, &input, split), transcript(mode, &input, usize::MAX));
            }
        }
    }
}
