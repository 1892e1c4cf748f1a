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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use DataStatus::*;

    /// Decodes `input` whole, then checks that every split into two pieces and feeding one
    /// byte at a time give the same result.
    fn decode_all(input: &[u8]) -> (Vec<u8>, usize, DataStatus) {
        let whole = decode_pieces(input, &[]);
        for split in 0..=input.len() {
            assert_eq!(decode_pieces(input, &[split]), whole, "split at {split}");
        }
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(decode_pieces(input, &bytewise), whole, "one byte at a time");
        whole
    }

    /// Feeds `input` cut at the sorted `cuts`, stopping at the first status other than
    /// NeedMore; returns output, total consumed and the last status.
    fn decode_pieces(input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize, DataStatus) {
        let mut decoder = DataDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut status = NeedMore;
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            let (n, s) = decoder.decode(&input[start..end], &mut out);
            assert!(n <= end - start);
            consumed += n;
            status = s;
            if s != NeedMore {
                break;
            }
            assert_eq!(n, end - start, "NeedMore must consume everything");
            start = end;
        }
        (out, consumed, status)
    }

    #[test]
    fn decodes_messages() {
        let table: &[(&[u8], &[u8], usize, DataStatus)] = &[
            // (input, output, consumed, status)
            (b".\r\n", b"", 3, End),
            (b".\r\nQUIT\r\n", b"", 3, End),
            (
                b"Subject: hi\r\n\r\nbody\r\n.\r\n",
                b"Subject: hi\r\n\r\nbody\r\n",
                24,
                End,
            ),
            (b"..\r\n.\r\n", b".\r\n", 7, End),
            (b"..hidden\r\n...\r\n.\r\n", b".hidden\r\n..\r\n", 18, End),
            (b".x\r\n.\r\n", b"x\r\n", 7, End),
            (b"a.\r\n .\r\n.\r\n", b"a.\r\n .\r\n", 11, End),
            (b"a\r\n.\r\nnext", b"a\r\n", 6, End),
            (b"\r\n\r\n.\r\n", b"\r\n\r\n", 7, End),
            (b"partial line", b"partial line", 12, NeedMore),
            (b"line\r\n.", b"line\r\n", 7, NeedMore),
            (b"line\r\n.\r", b"line\r\n", 8, NeedMore),
            (b"line\r", b"line", 5, NeedMore),
            (b"", b"", 0, NeedMore),
            // Bare LF: nothing from it on is taken.
            (b"a\nb\r\n.\r\n", b"a", 1, BareLineEnding),
            (b"\n", b"", 0, BareLineEnding),
            (b"ok\r\n.\n", b"ok\r\n", 5, BareLineEnding),
            (b"ok\r\n\n.\r\n", b"ok\r\n", 4, BareLineEnding),
            // Bare CR: consumed up to and including the CR.
            (b"a\rb\r\n", b"a", 2, BareLineEnding),
            (b"a\r\r\n", b"a", 2, BareLineEnding),
            (b"ok\r\n.\rx", b"ok\r\n", 6, BareLineEnding),
            (b"ok\r\n.\r.\r\n", b"ok\r\n", 6, BareLineEnding),
            // The smuggling sequence `\n.\r\n` is not an end of data.
            (
                b"a\r\n\n.\r\nMAIL FROM:<x@y>\r\n",
                b"a\r\n",
                3,
                BareLineEnding,
            ),
            (b"a\r\n.\r\r\n", b"a\r\n", 5, BareLineEnding),
        ];
        for &(input, output, consumed, status) in table {
            let got = decode_all(input);
            let want = (output.to_vec(), consumed, status);
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn long_lines_pass_unchanged() {
        let line = vec![b'x'; 5000];
        let mut input = line.clone();
        input.extend_from_slice(b"\r\n.");
        input.extend_from_slice(&line);
        input.extend_from_slice(b"\r\n.\r\n");

        let mut want = line.clone();
        want.extend_from_slice(b"\r\n");
        want.extend_from_slice(&line);
        want.extend_from_slice(b"\r\n");

        let mut out = Vec::new();
        let got = DataDecoder::new().decode(&input, &mut out);
        assert_eq!(got, (input.len(), End));
        assert_eq!(out, want);
    }

    #[test]
    fn binary_bytes_pass_unchanged() {
        let body: Vec<u8> = (0..=255u8).filter(|b| *b != b'\r' && *b != b'\n').collect();
        let mut input = body.clone();
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, consumed, status) = decode_all(&input);
        assert_eq!((consumed, status), (input.len(), End));
        assert_eq!(out[..body.len()], body[..]);
    }

    #[test]
    fn finished_decoder_consumes_nothing() {
        let mut decoder = DataDecoder::new();
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b".\r\n", &mut out), (3, End));
        assert_eq!(decoder.decode(b"more\r\n", &mut out), (0, End));
        assert!(out.is_empty());

        let mut decoder = DataDecoder::new();
        assert_eq!(decoder.decode(b"\n", &mut out), (0, BareLineEnding));
        assert_eq!(decoder.decode(b"ok\r\n", &mut out), (0, BareLineEnding));
    }

    #[test]
    fn checker_accepts_crlf_across_pieces() {
        let mut checker = LineEndingChecker::new();
        assert!(checker.check(b"a\r\nb\r"));
        assert!(!checker.finish());
        assert!(checker.check(b""));
        assert!(checker.check(b"\nc\r\n"));
        assert!(checker.finish());
        assert!(checker.check(b"\r"));
        assert!(checker.check(b"\n"));
        assert!(checker.check(b".\r\n..\r\nno end of line"));
        assert!(checker.finish());
    }

    #[test]
    fn checker_refuses_bare_endings() {
        let table: &[&[&[u8]]] = &[
            &[b"a\nb"],
            &[b"\n"],
            &[b"a\r\n\n"],
            &[b"a\rb"],
            &[b"a\r", b"b"],
            &[b"a\r", b"\r\n"],
            &[b"a\r\n", b"\n"],
            &[b"\r\r\n"],
        ];
        for pieces in table {
            let mut checker = LineEndingChecker::new();
            let results: Vec<bool> = pieces.iter().map(|p| checker.check(p)).collect();
            assert_eq!(results.last(), Some(&false), "pieces {pieces:?}");
            assert!(!checker.finish());
            assert!(!checker.check(b"fine\r\n"), "a refusal sticks");
        }
    }

    #[test]
    fn checker_refuses_trailing_cr() {
        let mut checker = LineEndingChecker::new();
        assert!(checker.check(b"text\r"));
        assert!(!checker.finish());
    }

    /// Message-like bytes: mostly text, with CR, LF, CRLF and dots common.
    fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => Just(b"\r\n".to_vec()),
            2 => Just(b".".to_vec()),
            2 => Just(b"\r\n.\r\n".to_vec()),
            1 => Just(b"\r".to_vec()),
            1 => Just(b"\n".to_vec()),
            6 => proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same(
            input in message_bytes(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let whole = decode_pieces(&input, &[]);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(decode_pieces(&input, &cuts), whole);
        }

        #[test]
        fn decoder_agrees_with_checker(input in message_bytes()) {
            // Both scanners apply the same CRLF rule, so they must agree on what the decoder
            // read.
            let (_, consumed, status) = decode_pieces(&input, &[]);
            let mut checker = LineEndingChecker::new();
            match status {
                NeedMore => {
                    prop_assert_eq!(consumed, input.len());
                    prop_assert!(checker.check(&input));
                }
                End => {
                    prop_assert!(checker.check(&input[..consumed]));
                    prop_assert!(checker.finish());
                }
                BareLineEnding => prop_assert!(!checker.check(&input)),
            }
        }

        #[test]
        fn any_split_checks_the_same(
            input in message_bytes(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut whole = LineEndingChecker::new();
            let whole_ok = whole.check(&input);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut split = LineEndingChecker::new();
            let mut split_ok = true;
            let mut start = 0;
            for end in cuts.into_iter().chain(std::iter::once(input.len())) {
                split_ok &= split.check(&input[start..end]);
                start = end;
            }
            prop_assert_eq!(split_ok, whole_ok);
            prop_assert_eq!(split.finish(), whole.finish());
        }
    }
}
