//! Client transcripts against scripted servers, well-behaved and not. Every server reply
//! stream is also fed one byte at a time and split at every offset, with identical outcome.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod edges;

use super::*;
use crate::address::Domain;
use crate::command::{Body, Notify, Ret};

const GREETING: &str = "220 mx.example ESMTP\r\n";
/// An EHLO answer with every extension the client uses but CHUNKING.
const EHLO: &str = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n\
250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n";
/// An EHLO answer of an old server: no extension worth using.
const EHLO_PLAIN: &str = "250-mx.example\r\n250 HELP\r\n";

fn config(mode: Mode) -> Config {
    Config::new("client.example", mode)
}

fn mailbox(text: &str) -> Mailbox {
    Mailbox::parse(text).unwrap()
}

fn message(sender: &str, recipients: &[&str]) -> Message {
    Message {
        sender: ReversePath::Mailbox(mailbox(sender)),
        params: MailParams::default(),
        recipients: recipients
            .iter()
            .map(|r| Recipient {
                address: mailbox(r),
                params: RcptParams::default(),
            })
            .collect(),
    }
}

/// Plays the runtime: hands over queued messages, streams their text in small pieces and
/// writes down everything the session does.
struct Harness {
    session: Session,
    now: Instant,
    transcript: String,
    messages: VecDeque<(Message, Vec<u8>)>,
    /// The size of the text pieces fed to the session.
    piece: usize,
    /// Server bytes the session did not consume yet.
    pending: Vec<u8>,
    tls_pending: bool,
    reports: Vec<Report>,
}

impl Harness {
    fn new(config: Config, messages: Vec<(Message, &str)>) -> Self {
        // Any origin will do: the virtual clock only moves when a test moves it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let session = Session::new(Arc::new(config), now).unwrap();
        let mut harness = Harness {
            session,
            now,
            transcript: String::new(),
            messages: messages
                .into_iter()
                .map(|(m, text)| (m, text.as_bytes().to_vec()))
                .collect(),
            piece: 7,
            pending: Vec::new(),
            tls_pending: false,
            reports: Vec::new(),
        };
        harness.drain();
        harness
    }

    fn feed(&mut self, input: &[u8]) {
        self.pending.extend_from_slice(input);
        loop {
            self.drain();
            if self.pending.is_empty() {
                break;
            }
            let used = self.session.receive(self.now, &self.pending);
            self.pending.drain(..used);
            if used == 0 && !self.drain() {
                break;
            }
        }
    }

    fn finish_tls(&mut self) {
        assert!(std::mem::take(&mut self.tls_pending), "no STARTTLS pending");
        self.session.handle_tls_established(self.now);
        self.drain();
    }

    fn eof(&mut self) {
        self.transcript.push_str("[eof]");
        self.session.handle_eof(self.now);
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
                Output::StartTls => {
                    self.transcript.push_str("[tls]");
                    self.tls_pending = true;
                }
                Output::Ready => self.next_message(),
                Output::MessageText => {
                    let (_, text) = self.messages.front().expect("a message in progress");
                    let text = text.clone();
                    for piece in text.chunks(self.piece) {
                        self.session.handle_message_text(self.now, piece);
                    }
                    self.session.handle_message_end(self.now);
                }
                Output::Report(report) => {
                    self.messages.pop_front();
                    self.transcript.push_str(&describe(&report));
                    self.reports.push(report);
                }
                Output::Error(error) => self.transcript.push_str(&format!("[error: {error}]")),
                Output::Close => self.transcript.push_str("[close]"),
            }
        }
        any
    }

    fn next_message(&mut self) {
        while let Some((message, _)) = self.messages.front() {
            match self.session.start_message(self.now, message.clone()) {
                Ok(()) => return,
                Err(error) => {
                    self.transcript.push_str(&format!("[refused: {error}]"));
                    self.messages.pop_front();
                }
            }
        }
        self.session.quit(self.now);
    }
}

fn describe(report: &Report) -> String {
    let verdicts: Vec<String> = report
        .recipients
        .iter()
        .map(|r| match &r.verdict {
            Verdict::Sent(reply) => format!("sent {}", reply.code),
            Verdict::Refused { stage, reply } => format!("refused at {stage} {reply}"),
            Verdict::NotSent(problem) => format!("not sent: {problem}"),
        })
        .collect();
    format!("[report: {}]", verdicts.join(" | "))
}

/// A scripted server: its reply stream in parts (a TLS handshake completes between two
/// parts when one is pending), and whether it closes the connection at the end.
struct Script<'a> {
    parts: &'a [&'a str],
    eof: bool,
}

fn run(make: &dyn Fn() -> Harness, script: &Script, split: Option<(usize, usize)>) -> Harness {
    let mut h = make();
    for (n, part) in script.parts.iter().enumerate() {
        let part = part.as_bytes();
        match split {
            Some((which, at)) if which == n => {
                h.feed(&part[..at]);
                h.feed(&part[at..]);
            }
            Some((usize::MAX, _)) => part.chunks(1).for_each(|b| h.feed(b)),
            _ => h.feed(part),
        }
        if h.tls_pending {
            h.finish_tls();
        }
    }
    if script.eof {
        h.eof();
    }
    if !h.pending.is_empty() {
        h.transcript
            .push_str(&format!("[unread {}]", String::from_utf8_lossy(&h.pending)));
    }
    h
}

/// Runs the script whole, one byte at a time, and split in two at every offset of every
/// part; all runs must give the same transcript. Returns the whole run.
fn converse(make: impl Fn() -> Harness, script: Script) -> Harness {
    let whole = run(&make, &script, None);
    let bytewise = run(&make, &script, Some((usize::MAX, 0)));
    assert_eq!(
        bytewise.transcript, whole.transcript,
        "byte-by-byte differs"
    );
    for (n, part) in script.parts.iter().enumerate() {
        for at in 1..part.len() {
            let split = run(&make, &script, Some((n, at)));
            assert_eq!(
                split.transcript, whole.transcript,
                "part {n} split at {at} differs"
            );
        }
    }
    whole
}

fn smtp(messages: Vec<(Message, &'static str)>, parts: &[&str], eof: bool) -> Harness {
    let make = || {
        let mut config = config(Mode::Smtp);
        config.chunking = false;
        Harness::new(config, messages.clone())
    };
    converse(make, Script { parts, eof })
}

#[track_caller]
fn assert_transcript(h: &Harness, want: &str) {
    assert_eq!(
        h.transcript, want,
        "\ngot:  {}\nwant: {}",
        h.transcript, want
    );
}

#[test]
fn one_command_at_a_time_with_dot_stuffing() {
    let text = "Subject: dots\r\n\r\n.leading dot\r\n..two\r\nmid.dle\r\n.\r\nlast line";
    let h = smtp(
        vec![(
            message("a@client.example", &["b@mx.example", "c@mx.example"]),
            text,
        )],
        &[&[
            GREETING,
            EHLO_PLAIN,
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "550 5.1.1 <c@mx.example>: unknown\r\n",
            "354 go ahead\r\n",
            "250 2.0.0 queued as 1234\r\n",
            "221 2.0.0 Bye\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\n\
         RCPT TO:<b@mx.example>\r\n\
         RCPT TO:<c@mx.example>\r\n\
         DATA\r\n\
         Subject: dots\r\n\r\n..leading dot\r\n...two\r\nmid.dle\r\n..\r\nlast line\r\n.\r\n\
         [report: sent 250 | refused at RCPT TO 550 5.1.1 <c@mx.example>: unknown]\
         QUIT\r\n[close]",
    );
    let report = &h.reports[0];
    assert_eq!(report.mail.as_ref().unwrap().code, 250);
    assert_eq!(report.recipients[0].rcpt.as_ref().unwrap().code, 250);
    let Verdict::Sent(reply) = &report.recipients[0].verdict else {
        panic!("not sent");
    };
    assert_eq!(reply.text(), "2.0.0 queued as 1234");
    let refused = &report.recipients[1].verdict;
    assert!(refused.is_permanent());
    let Verdict::Refused { reply, .. } = refused else {
        panic!("not refused");
    };
    assert_eq!(reply.enhanced.unwrap().to_string(), "5.1.1");
    assert!(h.session.is_closed());
    assert_eq!(h.session.error(), None);
}

#[test]
fn pipelining_sends_one_batch_and_matches_mixed_replies_in_order() {
    let h = smtp(
        vec![(
            message(
                "a@client.example",
                &["b@mx.example", "c@mx.example", "d@mx.example"],
            ),
            "Hi\r\n",
        )],
        &[&[
            GREETING,
            EHLO,
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "550 5.1.1 no such user\r\n",
            "450 4.2.0 greylisted\r\n",
            "354 go ahead\r\n",
            "250 2.0.0 queued\r\n",
            "221 Bye\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.example>\r\n\
         RCPT TO:<c@mx.example>\r\nRCPT TO:<d@mx.example>\r\nDATA\r\n\
         Hi\r\n.\r\n\
         [report: sent 250 | refused at RCPT TO 550 5.1.1 no such user | \
         refused at RCPT TO 450 4.2.0 greylisted]QUIT\r\n[close]",
    );
    let verdicts = &h.reports[0].recipients;
    assert!(verdicts[0].verdict.is_sent());
    assert!(verdicts[1].verdict.is_permanent());
    assert!(!verdicts[2].verdict.is_permanent() && !verdicts[2].verdict.is_sent());
}

#[test]
fn a_connection_carries_several_messages_with_rset_after_a_failed_one() {
    let h = smtp(
        vec![
            (message("a@client.example", &["x@mx.example"]), "one\r\n"),
            (message("a@client.example", &["y@mx.example"]), "two\r\n"),
            (message("a@client.example", &["z@mx.example"]), "three\r\n"),
        ],
        &[&[
            GREETING,
            EHLO,
            // Message one: its only recipient is refused, DATA with it.
            "250 2.1.0 Ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n",
            "250 2.0.0 reset\r\n",
            // Message two goes through; no RSET is needed after a finished transaction.
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n250 2.0.0 queued\r\n",
            // Message three: a 354 although every RCPT was refused gets an empty message.
            "250 2.1.0 Ok\r\n550 5.1.1 no\r\n354 go\r\n554 5.5.1 no recipients\r\n",
            "250 2.0.0 reset\r\n",
            "221 Bye\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<x@mx.example>\r\nDATA\r\n\
         [report: refused at RCPT TO 550 5.1.1 no]RSET\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<y@mx.example>\r\nDATA\r\n\
         two\r\n.\r\n[report: sent 250]\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<z@mx.example>\r\nDATA\r\n\
         .\r\n[report: refused at RCPT TO 550 5.1.1 no]RSET\r\n\
         QUIT\r\n[close]",
    );
}

#[test]
fn refused_mail_and_refused_data() {
    let h = smtp(
        vec![
            (
                message("a@client.example", &["x@mx.example", "y@mx.example"]),
                "one\r\n",
            ),
            (message("a@client.example", &["x@mx.example"]), "two\r\n"),
        ],
        &[&[
            GREETING,
            EHLO,
            // MAIL refused: the pipelined RCPTs and DATA are refused too; MAIL's reply counts.
            "553 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n\
             503 5.5.1 need MAIL\r\n",
            // DATA refused after an accepted RCPT: RSET, as the server holds the envelope.
            "250 Ok\r\n250 Ok\r\n451 4.3.0 try later\r\n250 Ok\r\n",
            "221 Bye\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<x@mx.example>\r\n\
         RCPT TO:<y@mx.example>\r\nDATA\r\n\
         [report: refused at MAIL FROM 553 5.7.1 sender refused | \
         refused at MAIL FROM 553 5.7.1 sender refused]\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<x@mx.example>\r\nDATA\r\n\
         [report: refused at DATA 451 4.3.0 try later]RSET\r\nQUIT\r\n[close]",
    );
}

#[test]
fn bdat_streams_chunks_without_dot_stuffing() {
    let make = || {
        let mut h = Harness::new(
            config(Mode::Smtp),
            vec![(
                message("a@client.example", &["b@mx.example", "c@mx.example"]),
                ".dot\r\nbody\nline",
            )],
        );
        h.piece = 10;
        h
    };
    let h = converse(
        make,
        Script {
            parts: &[&[
                GREETING,
                "250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n",
                "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n",
                "250 2.0.0 chunk 1\r\n250 2.0.0 chunk 2\r\n250 2.0.0 queued\r\n",
                "221 Bye\r\n",
            ]
            .concat()],
            eof: false,
        },
    );
    // One chunk per 10-byte piece: the bare LF that starts the second piece becomes a CRLF
    // there, and the CRLF that ends the text goes with LAST.
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.example>\r\nRCPT TO:<c@mx.example>\r\n\
         BDAT 10\r\n.dot\r\nbody\
         BDAT 6\r\n\r\nline\
         BDAT 2 LAST\r\n\r\n\
         [report: sent 250 | refused at RCPT TO 550 5.1.1 no]QUIT\r\n[close]",
    );
}

#[test]
fn a_refused_bdat_chunk_abandons_the_message() {
    let make = || {
        let mut h = Harness::new(
            config(Mode::Smtp),
            vec![(
                message("a@client.example", &["b@mx.example"]),
                "0123456789abc",
            )],
        );
        h.piece = 5;
        h
    };
    let h = converse(
        make,
        Script {
            parts: &[&[
                GREETING,
                "250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
                "250 Ok\r\n250 Ok\r\n",
                "552 5.3.4 too big\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n",
                "250 reset\r\n221 Bye\r\n",
            ]
            .concat()],
            eof: false,
        },
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.example>\r\n\
         BDAT 5\r\n01234BDAT 5\r\n56789BDAT 3\r\nabcBDAT 2 LAST\r\n\r\n\
         [report: refused at end of data 552 5.3.4 too big]RSET\r\nQUIT\r\n[close]",
    );
}

#[test]
fn lmtp_answers_once_per_accepted_recipient() {
    let make = || {
        Harness::new(
            config(Mode::Lmtp),
            vec![(
                message(
                    "a@client.example",
                    &["u1@mx.example", "u2@mx.example", "u3@mx.example"],
                ),
                "Hi\r\n",
            )],
        )
    };
    let h = converse(
        make,
        Script {
            parts: &[&[
                "220 mx.example LMTP\r\n",
                "250-mx.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                "250 Ok\r\n250 Ok\r\n550 5.1.1 unknown\r\n250 Ok\r\n354 go\r\n",
                "250 2.0.0 <u1@mx.example> saved\r\n452 4.2.2 <u3@mx.example> over quota\r\n",
                "221 Bye\r\n",
            ]
            .concat()],
            eof: false,
        },
    );
    assert_transcript(
        &h,
        "LHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<u1@mx.example>\r\n\
         RCPT TO:<u2@mx.example>\r\nRCPT TO:<u3@mx.example>\r\nDATA\r\nHi\r\n.\r\n\
         [report: sent 250 | refused at RCPT TO 550 5.1.1 unknown | \
         refused at end of data 452 4.2.2 <u3@mx.example> over quota]QUIT\r\n[close]",
    );
}

#[test]
fn lmtp_over_bdat_answers_after_the_last_chunk() {
    let make = || {
        Harness::new(
            config(Mode::Lmtp),
            vec![(
                message("a@client.example", &["u1@mx.example", "u2@mx.example"]),
                "Hi\r\n",
            )],
        )
    };
    let h = converse(
        make,
        Script {
            parts: &[&[
                "220 mx.example LMTP\r\n",
                "250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
                "250 Ok\r\n250 Ok\r\n250 Ok\r\n250 2.0.0 chunk\r\n",
                "550 5.2.1 <u1@mx.example> mailbox disabled\r\n250 2.0.0 <u2@mx.example> saved\r\n",
                "221 Bye\r\n",
            ]
            .concat()],
            eof: false,
        },
    );
    assert_transcript(
        &h,
        "LHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<u1@mx.example>\r\nRCPT TO:<u2@mx.example>\r\n\
         BDAT 4\r\nHi\r\nBDAT 0 LAST\r\n\
         [report: refused at end of data 550 5.2.1 <u1@mx.example> mailbox disabled | sent 250]\
         QUIT\r\n[close]",
    );
}

#[test]
fn lmtp_server_that_closes_after_k_of_n_replies() {
    let make = || {
        Harness::new(
            config(Mode::Lmtp),
            vec![(
                message(
                    "a@client.example",
                    &["u1@mx.example", "u2@mx.example", "u3@mx.example"],
                ),
                "Hi\r\n",
            )],
        )
    };
    let h = converse(
        make,
        Script {
            parts: &[&[
                "220 mx.example LMTP\r\n",
                "250-mx.example\r\n250 PIPELINING\r\n",
                "250 Ok\r\n250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n",
                "250 2.0.0 <u1@mx.example> saved\r\n",
            ]
            .concat()],
            eof: true,
        },
    );
    assert_transcript(
        &h,
        "LHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<u1@mx.example>\r\n\
         RCPT TO:<u2@mx.example>\r\nRCPT TO:<u3@mx.example>\r\nDATA\r\nHi\r\n.\r\n\
         [eof][report: sent 250 | not sent: lost connection at end of data | \
         not sent: lost connection at end of data]\
         [error: lost connection at end of data][close]",
    );
    let unfinished = &h.reports[0].recipients[1].verdict;
    assert!(!unfinished.is_sent() && !unfinished.is_permanent());
}

#[test]
fn smtp_server_that_closes_in_the_middle_of_a_pipelined_batch() {
    let h = smtp(
        vec![(
            message("a@client.example", &["b@mx.example", "c@mx.example"]),
            "Hi\r\n",
        )],
        &[&[GREETING, EHLO, "250 Ok\r\n250 Ok\r\n"].concat()],
        true,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.example>\r\n\
         RCPT TO:<c@mx.example>\r\nDATA\r\n\
         [eof][report: not sent: lost connection at RCPT TO | \
         not sent: lost connection at RCPT TO][error: lost connection at RCPT TO][close]",
    );
    // The accepted RCPT is still reported, with its reply.
    assert_eq!(h.reports[0].recipients[0].rcpt.as_ref().unwrap().code, 250);
}

#[test]
fn a_421_at_any_point_fails_every_unfinished_recipient() {
    let h = smtp(
        vec![(
            message("a@client.example", &["b@mx.example", "c@mx.example"]),
            "Hi\r\n",
        )],
        &[&[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n550 5.1.1 no\r\n421 4.3.2 shutting down\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\nMAIL FROM:<a@client.example>\r\n\
         RCPT TO:<b@mx.example>\r\nRCPT TO:<c@mx.example>\r\n\
         [report: refused at RCPT TO 550 5.1.1 no | \
         not sent: 421 4.3.2 shutting down (in reply to RCPT TO)]\
         [error: 421 4.3.2 shutting down (in reply to RCPT TO)][close]",
    );
    assert!(!h.reports[0].recipients[1].verdict.is_permanent());

    // During the text's final reply too; and at the greeting, no QUIT is sent.
    let h = smtp(
        vec![(message("a@client.example", &["b@mx.example"]), "Hi\r\n")],
        &[&[
            GREETING,
            EHLO,
            "250 Ok\r\n250 Ok\r\n354 go\r\n421 4.4.2 timeout\r\n",
        ]
        .concat()],
        false,
    );
    assert!(h.transcript.ends_with(
        "Hi\r\n.\r\n[report: not sent: 421 4.4.2 timeout (in reply to end of data)]\
         [error: 421 4.4.2 timeout (in reply to end of data)][close]"
    ));
    let h = smtp(vec![], &["421 mx.example busy\r\n"], false);
    assert_transcript(
        &h,
        "[error: 421 mx.example busy (in reply to the greeting)][close]",
    );
}

#[test]
fn bad_greetings() {
    for garbage in [
        "hello there\r\n",
        "220-mx\r\n250 mixed\r\n",
        "22 short\r\n",
        "220 a\rb\r\n",
    ] {
        let h = smtp(vec![], &[garbage], false);
        assert!(
            h.transcript.starts_with("[error: ")
                && h.transcript.ends_with("(at the greeting)][close]"),
            "{garbage:?}: {}",
            h.transcript
        );
        assert!(matches!(
            h.session.error(),
            Some(SessionError::Protocol { .. })
        ));
    }
    // A refusal is a reply: it gets a QUIT.
    let h = smtp(vec![], &["554 5.7.1 go away\r\n"], false);
    assert_transcript(
        &h,
        "[error: 554 5.7.1 go away (in reply to the greeting)]QUIT\r\n[close]",
    );
    // Whatever follows a fatal error is ignored.
    let h = smtp(vec![], &["hello\r\n220 mx ESMTP\r\n"], false);
    assert_transcript(&h, "[error: malformed reply line (at the greeting)][close]");
}

#[test]
fn overlong_replies_end_the_session() {
    let long = format!("220 {}\r\n", "x".repeat(LINE_MAX));
    let mut h = Harness::new(config(Mode::Smtp), vec![]);
    h.feed(long.as_bytes());
    assert_transcript(&h, "[error: reply too long (at the greeting)][close]");
    assert_eq!(h.session.parser.held(), 0);
}

#[test]
fn bare_lf_replies_are_read_like_crlf() {
    let h = smtp(
        vec![(message("a@client.example", &["b@mx.example"]), "Hi\r\n")],
        &["220 mx\n250-mx\n250 PIPELINING\n250 Ok\n250 Ok\n354 go\n250 queued\n221 Bye\n"],
        false,
    );
    assert!(
        h.transcript
            .ends_with("Hi\r\n.\r\n[report: sent 250]QUIT\r\n[close]")
    );
}

#[test]
fn ehlo_refused_falls_back_to_helo_but_not_in_lmtp() {
    let h = smtp(
        vec![(message("a@client.example", &["b@mx.example"]), "Hi\r\n")],
        &[&[
            GREETING,
            "502 5.5.2 what?\r\n250 mx.example\r\n",
            "250 Ok\r\n250 Ok\r\n354 go\r\n250 queued\r\n221 Bye\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\nHELO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.example>\r\nDATA\r\nHi\r\n.\r\n\
         [report: sent 250]QUIT\r\n[close]",
    );
    assert_eq!(h.session.extensions(), &Extensions::default());

    let make = || Harness::new(config(Mode::Lmtp), vec![]);
    let h = converse(
        make,
        Script {
            parts: &["220 lmtp\r\n500 5.5.2 what?\r\n"],
            eof: false,
        },
    );
    assert_transcript(
        &h,
        "LHLO client.example\r\n[error: 500 5.5.2 what? (in reply to HELO/EHLO/LHLO)]QUIT\r\n[close]",
    );
    // A temporary EHLO refusal is not a reason to try HELO.
    let h = smtp(vec![], &[GREETING, "450 busy\r\n"], false);
    assert_transcript(
        &h,
        "EHLO client.example\r\n[error: 450 busy (in reply to HELO/EHLO/LHLO)]QUIT\r\n[close]",
    );
}

fn tls_harness(policy: TlsPolicy) -> Harness {
    let mut config = config(Mode::Smtp);
    config.tls = policy;
    Harness::new(
        config,
        vec![(message("a@client.example", &["b@mx.example"]), "Hi\r\n")],
    )
}

#[test]
fn starttls_discards_whatever_the_server_sent_after_its_220() {
    let ehlo_tls = "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
    let h = converse(
        || tls_harness(TlsPolicy::May),
        Script {
            parts: &[
                // The injected lines look like answers to the EHLO and MAIL that follow the
                // handshake; taken as such, the message would go to an unchecked server.
                &[
                    GREETING,
                    ehlo_tls,
                    "220 2.0.0 Ready\r\n250-evil\r\n250 PIPELINING\r\n250 Ok\r\n250-partial",
                ]
                .concat(),
                &[
                    "250-mx.example\r\n250 PIPELINING\r\n",
                    "451 4.3.0 real answer\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n221 Bye\r\n",
                ]
                .concat(),
            ],
            eof: false,
        },
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\nSTARTTLS\r\n[tls]EHLO client.example\r\n\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.example>\r\nDATA\r\n\
         [report: refused at MAIL FROM 451 4.3.0 real answer]QUIT\r\n[close]",
    );
    assert!(h.session.is_tls_active());
    assert!(!h.session.extensions().starttls);
}

#[test]
fn tls_policies() {
    // `may` goes on in the clear without STARTTLS, or when STARTTLS is refused.
    let rest = "250 Ok\r\n250 Ok\r\n354 go\r\n250 queued\r\n221 Bye\r\n";
    let sent = "[report: sent 250]QUIT\r\n[close]";
    let h = converse(
        || tls_harness(TlsPolicy::May),
        Script {
            parts: &[&[GREETING, EHLO, rest].concat()],
            eof: false,
        },
    );
    assert!(h.transcript.ends_with(sent) && !h.transcript.contains("STARTTLS"));
    let h = converse(
        || tls_harness(TlsPolicy::May),
        Script {
            parts: &[&[
                GREETING,
                "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                "454 4.7.0 TLS not available\r\n",
                rest,
            ]
            .concat()],
            eof: false,
        },
    );
    assert!(
        h.transcript
            .starts_with("EHLO client.example\r\nSTARTTLS\r\nMAIL")
    );
    assert!(h.transcript.ends_with(sent) && !h.session.is_tls_active());

    // `encrypt` gives up on both.
    let h = converse(
        || tls_harness(TlsPolicy::Encrypt),
        Script {
            parts: &[&[GREETING, EHLO].concat()],
            eof: false,
        },
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n[error: TLS is required, but was not offered]QUIT\r\n[close]",
    );
    let h = converse(
        || tls_harness(TlsPolicy::Encrypt),
        Script {
            parts: &[&[GREETING, "250-mx\r\n250 STARTTLS\r\n454 4.7.0 no\r\n"].concat()],
            eof: false,
        },
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\nSTARTTLS\r\n\
         [error: 454 4.7.0 no (in reply to STARTTLS)]QUIT\r\n[close]",
    );

    // A failed handshake ends the session; a timed-out one too.
    let mut h = tls_harness(TlsPolicy::Encrypt);
    h.feed(format!("{GREETING}250-mx\r\n250 STARTTLS\r\n220 go\r\n").as_bytes());
    h.session.handle_tls_failed(h.now);
    h.drain();
    assert!(
        h.transcript
            .ends_with("[tls][error: TLS handshake failed][close]")
    );
    let mut h = tls_harness(TlsPolicy::Encrypt);
    h.feed(format!("{GREETING}250-mx\r\n250 STARTTLS\r\n220 go\r\n").as_bytes());
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(300))
    );
    h.advance(Duration::from_secs(300));
    assert!(
        h.transcript
            .ends_with("[tls][error: conversation timed out at STARTTLS][close]")
    );
}

#[test]
fn a_message_needing_smtputf8_to_a_server_without_it_fails_permanently() {
    let mut needs = message("a@client.example", &["b@mx.example"]);
    needs.params.smtputf8 = true;
    let utf8_address = message("a@client.example", &["jörg@mx.example"]);
    let plain = message("a@client.example", &["c@mx.example"]);
    let h = smtp(
        vec![(needs, "x\r\n"), (utf8_address, "y\r\n"), (plain, "z\r\n")],
        &[&[
            GREETING,
            "250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            "250 Ok\r\n250 Ok\r\n354 go\r\n250 queued\r\n221 Bye\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         [report: not sent: SMTPUTF8 is required, but was not offered]\
         [report: not sent: SMTPUTF8 is required, but was not offered]\
         MAIL FROM:<a@client.example>\r\nRCPT TO:<c@mx.example>\r\nDATA\r\nz\r\n.\r\n\
         [report: sent 250]QUIT\r\n[close]",
    );
    assert!(h.reports[0].recipients[0].verdict.is_permanent());

    // With SMTPUTF8 offered, the parameter goes out.
    let h = smtp(
        vec![(message("jörg@client.example", &["b@mx.example"]), "x\r\n")],
        &[&[
            GREETING,
            EHLO,
            "250 Ok\r\n250 Ok\r\n354 go\r\n250 queued\r\n",
        ]
        .concat()],
        false,
    );
    assert!(
        h.transcript
            .contains("MAIL FROM:<jörg@client.example> SMTPUTF8\r\n")
    );
}

#[test]
fn parameters_go_out_only_where_offered() {
    let mut m = message("a@client.example", &["b@mx.example", "c@mx.example"]);
    m.params = MailParams {
        size: Some(1234),
        body: Some(Body::EightBitMime),
        smtputf8: false,
        ret: Some(Ret::Hdrs),
        envid: Some("QQ+2B1".into()),
        auth: Some("<>".into()),
    };
    m.recipients[0].params = RcptParams {
        notify: Some(Notify {
            success: true,
            failure: true,
            ..Notify::default()
        }),
        orcpt: Some("rfc822;b@mx.example".into()),
    };
    m.recipients[1].params.notify = Some(Notify {
        never: true,
        ..Notify::default()
    });
    let replies = "250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n250 queued\r\n221 Bye\r\n";
    let h = smtp(
        vec![(m.clone(), "x\r\n")],
        &[&[GREETING, EHLO, replies].concat()],
        false,
    );
    assert!(h.transcript.contains(
        "MAIL FROM:<a@client.example> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1\r\n\
         RCPT TO:<b@mx.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@mx.example\r\n\
         RCPT TO:<c@mx.example> NOTIFY=NEVER\r\nDATA\r\n"
    ));
    // Without DSN, SIZE or 8BITMIME, no parameter goes out, and the 8-bit text is sent as it
    // is (no MIME downgrade).
    let h = smtp(
        vec![(m, "x\r\n")],
        &[&[GREETING, "250-mx\r\n250 PIPELINING\r\n", replies].concat()],
        false,
    );
    assert!(h.transcript.contains(
        "MAIL FROM:<a@client.example>\r\nRCPT TO:<b@mx.example>\r\nRCPT TO:<c@mx.example>\r\n"
    ));
}

#[test]
fn a_message_over_the_servers_size_limit_is_not_sent() {
    let mut big = message("a@client.example", &["b@mx.example"]);
    big.params.size = Some(1_000_001);
    let mut fits = big.clone();
    fits.params.size = Some(1_000_000);
    let h = smtp(
        vec![(big, "x\r\n"), (fits, "y\r\n")],
        &[&[
            GREETING,
            EHLO,
            "250 Ok\r\n250 Ok\r\n354 go\r\n250 queued\r\n",
        ]
        .concat()],
        false,
    );
    assert_transcript(
        &h,
        "EHLO client.example\r\n\
         [report: not sent: message size exceeds the server's limit of 1000000 octets]\
         MAIL FROM:<a@client.example> SIZE=1000000\r\nRCPT TO:<b@mx.example>\r\nDATA\r\n\
         y\r\n.\r\n[report: sent 250]QUIT\r\n",
    );
    assert!(h.reports[0].recipients[0].verdict.is_permanent());
}
