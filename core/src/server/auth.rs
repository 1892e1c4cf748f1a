//! AUTH (RFC 4954): the SASL exchange inside the session, and the runtime's answers to it.
//!
//! PLAIN and LOGIN end in [`Output::Authenticate`]; SCRAM-SHA-256 asks for the stored keys
//! with [`Output::LookupScram`], checks the proof itself, and sends the server-final message
//! as a 334 challenge that the client acknowledges with an empty line before the 235
//! (RFC 4954 section 4, SPEC.md section 4).

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{AuthMode, AuthVerdict, Output, Session, State};
use crate::reply::Reply;
use crate::sasl::{Authenticated, Mechanism, SaslServer, ScramLookup, ScramNonce, Step};

impl Session {
    /// Answers [`Output::Authenticate`].
    pub fn handle_auth(&mut self, now: Instant, verdict: AuthVerdict) {
        if !matches!(self.state, State::AwaitAuthVerdict) {
            return;
        }
        self.state = State::ExpectCommand(None);
        match verdict {
            AuthVerdict::Ok { login } => {
                let mechanism = self.pending_mechanism.take().unwrap_or(Mechanism::Plain);
                self.login = Some((login, mechanism));
                self.reply(Reply::AuthSucceeded);
            }
            AuthVerdict::Fail => self.auth_failed(now),
            AuthVerdict::TempFail => self.reply(Reply::AuthUnavailable),
        }
        self.rearm(now);
    }
    /// Answers [`Output::LookupScram`] with the stored keys and the server's part of the
    /// nonce (drawn at random by the runtime, e.g. `ScramNonce::from_random(&[u8; 18])`).
    pub fn handle_scram_lookup(&mut self, now: Instant, lookup: ScramLookup, nonce: &ScramNonce) {
        let State::AwaitScramLookup(mut sasl) = std::mem::replace(&mut self.state, State::Closed)
        else {
            return;
        };
        let Some(secret) = self.config.scram_secret.clone() else {
            // Unreachable: SCRAM is not offered without a secret.
            self.state = State::ExpectCommand(None);
            self.reply(Reply::AuthUnavailable);
            self.rearm(now);
            return;
        };
        let step = sasl.handle_scram_lookup(lookup, nonce, &secret);
        self.sasl_step(now, sasl, step);
        self.rearm(now);
    }

    /// The mechanisms this session offers: SCRAM-SHA-256 only with a secret for unknown users.
    pub(super) fn offered_mechanisms(&self) -> impl Iterator<Item = Mechanism> + '_ {
        self.config
            .mechanisms
            .iter()
            .copied()
            .filter(|m| *m != Mechanism::ScramSha256 || self.config.scram_secret.is_some())
    }

    pub(super) fn auth(&mut self, now: Instant, mechanism: &str, initial: Option<String>) {
        if self.config.auth == AuthMode::None {
            self.reply(Reply::AuthNotEnabled);
            return;
        }
        if self.helo.is_none() {
            self.reply(Reply::BadSequence("send HELO/EHLO first"));
            return;
        }
        if self.login.is_some() {
            self.reply(Reply::AlreadyAuthenticated);
            return;
        }
        if matches!(self.state, State::ExpectCommand(Some(_))) {
            self.reply(Reply::AuthInTransaction);
            return;
        }
        if !self.tls_active && !self.config.plaintext_auth {
            self.reply(Reply::AuthNeedsEncryption);
            return;
        }
        let Some(mechanism) = mechanism
            .parse::<Mechanism>()
            .ok()
            .filter(|m| self.offered_mechanisms().any(|offered| offered == *m))
        else {
            self.reply(Reply::AuthUnknownMechanism);
            return;
        };
        let initial = match initial.as_deref() {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(text) => match BASE64.decode(text) {
                Ok(bytes) => Some(bytes),
                Err(_) => {
                    self.reply(Reply::AuthBadBase64);
                    return;
                }
            },
        };
        self.pending_mechanism = Some(mechanism);
        let (sasl, step) = SaslServer::start(mechanism, initial.as_deref());
        self.sasl_step(now, sasl, step);
    }

    pub(super) fn handle_sasl_response(&mut self, now: Instant, mut sasl: SaslServer, line: &[u8]) {
        self.state = State::ExpectCommand(None);
        if line == b"*" {
            self.reply(Reply::AuthCancelled);
            return;
        }
        let Ok(response) = BASE64.decode(line) else {
            self.reply(Reply::AuthBadBase64);
            return;
        };
        let step = sasl.step(&response);
        self.sasl_step(now, sasl, step);
    }

    fn sasl_step(&mut self, now: Instant, sasl: SaslServer, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.reply_intermediate(Reply::Challenge(BASE64.encode(challenge)));
                self.state = State::ExpectSaslResponse(sasl);
            }
            Step::Malformed => {
                self.state = State::ExpectCommand(None);
                self.reply(Reply::AuthMalformed);
            }
            // tern has no master users: asking to act as someone else fails like a wrong
            // password, without telling the client which.
            Step::Done(credentials)
                if !credentials.authzid.is_empty() && credentials.authzid != credentials.login =>
            {
                self.state = State::ExpectCommand(None);
                self.push(Output::AuthFailed(credentials.mechanism));
                self.auth_failed(now);
            }
            Step::Done(credentials) => {
                self.state = State::AwaitAuthVerdict;
                self.push(Output::Authenticate(credentials));
            }
            Step::LookupScram(login) => {
                self.state = State::AwaitScramLookup(sasl);
                self.push(Output::LookupScram(login));
            }
            Step::Authenticated(done) if !done.authzid.is_empty() && done.authzid != done.login => {
                self.state = State::ExpectCommand(None);
                self.push(Output::AuthFailed(done.mechanism));
                self.auth_failed(now);
            }
            Step::Authenticated(done) => {
                self.reply_intermediate(Reply::Challenge(BASE64.encode(&done.final_message)));
                self.state = State::ExpectScramAck(done);
            }
            Step::Failed => {
                self.state = State::ExpectCommand(None);
                let mechanism = self.pending_mechanism.unwrap_or(Mechanism::ScramSha256);
                self.push(Output::AuthFailed(mechanism));
                self.auth_failed(now);
            }
            Step::Unavailable => {
                self.state = State::ExpectCommand(None);
                self.reply(Reply::AuthUnavailable);
            }
        }
    }

    pub(super) fn auth_failed(&mut self, now: Instant) {
        self.auth_failures += 1;
        let delay = self.config.limits.auth_failure_delay;
        if delay.is_zero() {
            self.state = State::ExpectCommand(None);
            self.reply(Reply::AuthFailed);
            if self.auth_failures >= self.config.limits.auth_failures {
                let hostname = self.config.hostname.clone();
                self.fatal(Reply::TooManyAuthFailures { hostname });
            }
        } else {
            self.state = State::AwaitFailureDelay(now + delay);
        }
    }

    /// RFC 4954 section 4: after the server-final challenge the client sends an empty line.
    pub(super) fn handle_scram_ack(&mut self, done: Authenticated, line: &[u8]) {
        self.state = State::ExpectCommand(None);
        match line {
            b"*" => self.reply(Reply::AuthCancelled),
            // Some clients send "=" for an empty response, as in an initial response.
            b"" | b"=" => {
                self.pending_mechanism = None;
                self.login = Some((done.account, done.mechanism));
                self.reply(Reply::AuthSucceeded);
            }
            _ => self.reply(Reply::AuthMalformed),
        }
    }
}
