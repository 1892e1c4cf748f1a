//! The message-data scanners: DATA text (RFC 5321 section 4.5.2 dot-stuffing, end at
//! `CRLF.CRLF`) and BDAT chunks (RFC 3030), both enforcing the rule that only CRLF ends a line.
//!
//! Both take input in pieces of any size and give the same result however it is split.

use memchr::memchr2;

/// What [`DataDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStatus {
    /// All input consumed; the message goes on.
    NeedMore,
    /// The end-of-data line was consumed; input after it is the next command.
    End,
    /// A bare CR or bare LF was seen (SMTP smuggling): the message must be thrown away.
    BareLineEnding,
}

/// Decodes DATA text: removes dot-stuffing, finds the terminating `.` line, and refuses any
/// CR or LF that is not part of a CRLF pair.
///
/// The decoder is positioned at the start of a line when created (right after the 354).
/// Lines longer than 1000 octets pass unchanged (SPEC.md section 4).
#[derive(Debug, Clone, Default)]
pub struct DataDecoder {
    state: State,
}

impl DataDecoder {
    /// A decoder at the start of the message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a prefix of `input`, appending message bytes (CRLF line ends kept, the stuffed
    /// dots and the terminating `.CRLF` removed) to `out`. Returns the number of input bytes
    /// consumed and the status. After `End` or `BareLineEnding` the decoder must not be used;
    /// if it is, it consumes nothing and repeats that status.
    ///
    /// On `BareLineEnding` the count stops just before the byte that proved the line ending
    /// bare (the LF itself, or the byte after a lone CR), and `out` ends before the bare CR or
    /// LF. A CR at the end of `input` is consumed but written only once its LF arrives.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, DataStatus) {
        let mut state = self.state;
        let mut i = 0;
        // Start of the input not yet copied to `out`: runs are copied whole, split only
        // where a stuffed dot is left out.
        let mut run = 0;

        let status = loop {
            match state {
                State::Done(status) => return (0, status),
                State::LineStart => match input.get(i) {
                    None => break DataStatus::NeedMore,
                    Some(b'.') => {
                        out.extend_from_slice(&input[run..i]);
                        i += 1;
                        run = i;
                        state = State::Dot;
                    }
                    Some(_) => state = State::Text,
                },
                // RFC 5321 section 4.5.2: a line starting with a dot loses that dot, and a
                // line that is only a dot ends the data.
                State::Dot => match input.get(i) {
                    None => break DataStatus::NeedMore,
                    Some(b'\r') => {
                        i += 1;
                        run = i;
                        state = State::DotCr;
                    }
                    Some(_) => state = State::Text,
                },
                State::DotCr => match input.get(i) {
                    None => break DataStatus::NeedMore,
                    Some(b'\n') => {
                        self.state = State::Done(DataStatus::End);
                        return (i + 1, DataStatus::End);
                    }
                    Some(_) => {
                        self.state = State::Done(DataStatus::BareLineEnding);
                        return (i, DataStatus::BareLineEnding);
                    }
                },
                State::Text => {
                    let Some(found) = memchr2(b'\r', b'\n', &input[i..]) else {
                        i = input.len();
                        break DataStatus::NeedMore;
                    };
                    let at = i + found;
                    match (input[at], input.get(at + 1)) {
                        (b'\r', Some(b'\n')) => {
                            i = at + 2;
                            state = State::LineStart;
                        }
                        (b'\r', None) => {
                            out.extend_from_slice(&input[run..at]);
                            i = at + 1;
                            run = i;
                            state = State::Cr;
                            break DataStatus::NeedMore;
                        }
                        (b'\r', Some(_)) => {
                            out.extend_from_slice(&input[run..at]);
                            self.state = State::Done(DataStatus::BareLineEnding);
                            return (at + 1, DataStatus::BareLineEnding);
                        }
                        _ => {
                            out.extend_from_slice(&input[run..at]);
                            self.state = State::Done(DataStatus::BareLineEnding);
                            return (at, DataStatus::BareLineEnding);
                        }
                    }
                }
                State::Cr => match input.get(i) {
                    None => break DataStatus::NeedMore,
                    Some(b'\n') => {
                        out.extend_from_slice(b"\r\n");
                        i += 1;
                        run = i;
                        state = State::LineStart;
                    }
                    Some(_) => {
                        self.state = State::Done(DataStatus::BareLineEnding);
                        return (i, DataStatus::BareLineEnding);
                    }
                },
            }
        };

        out.extend_from_slice(&input[run..i]);
        self.state = state;
        (i, status)
    }
}

/// Checks BDAT chunk data for bare CR and bare LF across chunk boundaries.
///
/// Once a bare line ending is seen every later call returns false.
#[derive(Debug, Clone, Default)]
pub struct LineEndingChecker {
    /// The last piece ended in a CR whose LF has not been seen.
    pending_cr: bool,
    bad: bool,
}

impl LineEndingChecker {
    /// A checker at the start of the message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece of message text; false when it holds a bare CR or bare LF.
    pub fn check(&mut self, text: &[u8]) -> bool {
        if self.bad || text.is_empty() {
            return !self.bad;
        }

        let mut i = 0;
        if self.pending_cr {
            if text[0] != b'\n' {
                self.bad = true;
                return false;
            }
            self.pending_cr = false;
            i = 1;
        }

        while let Some(found) = memchr2(b'\r', b'\n', &text[i..]) {
            let at = i + found;
            match (text[at], text.get(at + 1)) {
                (b'\r', Some(b'\n')) => i = at + 2,
                (b'\r', None) => {
                    self.pending_cr = true;
                    return true;
                }
                _ => {
                    self.bad = true;
                    return false;
                }
            }
        }
        true
    }

    /// Called at the end of the message: false when it ended in a lone CR (or a bare line
    /// ending was seen earlier).
    pub fn finish(&self) -> bool {
        !self.pending_cr && !self.bad
    }
}

/// Where [`DataDecoder`] is, between two calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    #[default]
    LineStart,
    /// A dot at the start of a line was read and left out.
    Dot,
    /// `.` and CR at the start of a line: an LF ends the data.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR was read (not yet written) and must be followed by LF.
    Cr,
    /// The decoder finished with this status.
    Done(DataStatus),
}
