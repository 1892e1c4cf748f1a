//! What every runtime does with a session between draining its outputs and reading again:
//! the stop request, the shutdown grace, the session's timer and the input read ahead.

use std::time::Instant;

use tern_core::replay::Recorder as Session;
use tern_core::server;

use super::SHUTDOWN_GRACE;

/// Input read ahead of a session that is not consuming (it waits out an AUTH failure
/// delay) is capped here; reading stops until it drains.
pub const MAX_PENDING: usize = 64 * 1024;

/// One connection's input read ahead and its shutdown state.
#[derive(Debug, Default)]
pub struct Driver {
    pending: Vec<u8>,
    stopping: Option<Instant>,
}

/// What the runtime does next, from [`Driver::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The session has new outputs: drain them, then step again.
    Outputs,
    /// Wait until `until` (then step again), for input to append to [`Driver::input`] when
    /// `read`, and for a stop request unless [`Driver::is_stopping`].
    Wait {
        /// The session's timer or the end of the shutdown grace, whichever comes first.
        until: Option<Instant>,
        /// Whether to read; false while the read-ahead is full.
        read: bool,
    },
    /// The shutdown grace is over: drop the connection.
    End,
}

impl Driver {
    /// A driver with nothing read yet.
    pub fn new() -> Driver {
        Driver::default()
    }

    /// Call after the outputs are drained and flushed; `stop` is whether the server was
    /// asked to stop. Asks the session to shut down on the first stop, fires its timer, and
    /// feeds it what was read ahead.
    pub fn step(&mut self, session: &mut Session, stop: bool, now: Instant) -> Step {
        if stop && self.stopping.is_none() {
            self.stopping = Some(now);
            session.shutdown(now);
            return Step::Outputs;
        }
        if self
            .stopping
            .is_some_and(|since| now.duration_since(since) >= SHUTDOWN_GRACE)
        {
            return Step::End;
        }
        if session
            .poll_timeout()
            .is_some_and(|deadline| now >= deadline)
        {
            session.handle_timeout(now);
            return Step::Outputs;
        }
        if !self.pending.is_empty() {
            let used = session.receive(now, &self.pending);
            self.pending.drain(..used);
            if used > 0 {
                return Step::Outputs;
            }
        }
        if self.pending.is_empty() {
            // An idle session keeps no input buffer: that is most of an idle connection.
            self.pending = Vec::new();
        }
        let grace_end = self.stopping.map(|since| since + SHUTDOWN_GRACE);
        Step::Wait {
            until: [session.poll_timeout(), grace_end]
                .into_iter()
                .flatten()
                .min(),
            read: self.pending.len() < MAX_PENDING,
        }
    }

    /// Where to append what is read from the client.
    pub fn input(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// At `Action::StartTls`: nothing pipelined behind STARTTLS may survive into the TLS
    /// session (RFC 3207 section 4.2, and the STARTTLS injection attacks).
    pub fn discard_input(&mut self) {
        self.pending = Vec::new();
    }

    /// Whether a stop request was seen.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }
}

/// How long a TLS handshake may take: until the session's timer (for STARTTLS, its command
/// timeout), or one command timeout from `now` (implicit TLS, before the greeting).
pub fn handshake_deadline(session: &Session, config: &server::Config, now: Instant) -> Instant {
    session
        .poll_timeout()
        .unwrap_or(now + config.limits.command_timeout)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tern_core::server::{AuthMode, Config, Mode, Output, Peer};

    use super::*;

    fn session(now: Instant) -> (Session, Config) {
        let mut config = Config::new("mail.example.net", Mode::Smtp);
        config.limits.command_timeout = Duration::from_secs(30);
        config.auth = AuthMode::Optional;
        config.plaintext_auth = true;
        (
            Session::unrecorded(Arc::new(config.clone()), Peer::default(), now),
            config,
        )
    }

    fn sent(session: &mut Session) -> String {
        let mut text = String::new();
        while let Some(output) = session.poll_output() {
            if let Output::Send(bytes) = output {
                text.push_str(&String::from_utf8(bytes).unwrap());
            }
        }
        text
    }

    #[test]
    fn input_is_fed_then_the_driver_waits_for_the_timer_with_no_buffer() {
        let now = Instant::now();
        let (mut session, config) = session(now);
        sent(&mut session);
        let mut driver = Driver::new();
        driver.input().extend_from_slice(b"NOOP\r\nNO");
        assert_eq!(driver.step(&mut session, false, now), Step::Outputs);
        assert_eq!(sent(&mut session), "250 2.0.0 Ok\r\n");
        let until = now + config.limits.command_timeout;
        // The unfinished line was consumed into the session's line reader.
        assert_eq!(
            driver.step(&mut session, false, now),
            Step::Wait {
                until: Some(until),
                read: true
            }
        );
        assert_eq!(driver.input().capacity(), 0);
        assert_eq!(handshake_deadline(&session, &config, now), until);

        let late = now + config.limits.command_timeout;
        assert_eq!(driver.step(&mut session, false, late), Step::Outputs);
        assert!(sent(&mut session).starts_with("421 4.4.2 "));
    }

    #[test]
    fn a_stop_shuts_the_session_down_once_and_the_grace_ends_it() {
        let now = Instant::now();
        let (mut session, _) = session(now);
        sent(&mut session);
        let mut driver = Driver::new();
        assert!(!driver.is_stopping());
        assert_eq!(driver.step(&mut session, true, now), Step::Outputs);
        assert!(driver.is_stopping());
        assert_eq!(
            sent(&mut session),
            "421 4.3.2 mail.example.net Service shutting down\r\n"
        );
        let Step::Wait { until, .. } = driver.step(&mut session, true, now) else {
            panic!("a closed session waits for the grace to end");
        };
        assert!(until.is_some_and(|until| until <= now + SHUTDOWN_GRACE));
        assert_eq!(
            driver.step(&mut session, true, now + SHUTDOWN_GRACE),
            Step::End
        );
    }

    #[test]
    fn reading_stops_while_the_read_ahead_is_full_and_starttls_discards_it() {
        let now = Instant::now();
        let (mut session, _) = session(now);
        sent(&mut session);
        let mut driver = Driver::new();
        // A session waiting for the runtime's verdict on credentials consumes nothing.
        driver
            .input()
            .extend_from_slice(b"EHLO c\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\n");
        while driver.step(&mut session, false, now) == Step::Outputs {
            sent(&mut session);
        }
        driver.input().resize(MAX_PENDING, b'x');
        assert!(matches!(
            driver.step(&mut session, false, now),
            Step::Wait { read: false, .. }
        ));
        driver.discard_input();
        assert!(driver.input().is_empty());
    }
}
