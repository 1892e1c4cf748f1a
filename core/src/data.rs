//! The message-data scanners: DATA text (RFC 5321 section 4.5.2 dot-stuffing, end at
//! `CRLF.CRLF`) and BDAT chunks (RFC 3030), both enforcing the rule that only CRLF ends a line.

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
#[derive(Debug, Clone, Default)]
pub struct DataDecoder {
    _private: (),
}

impl DataDecoder {
    /// A decoder at the start of the message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a prefix of `input`, appending message bytes (CRLF line ends kept, the stuffed
    /// dots and the terminating `.CRLF` removed) to `out`. Returns the number of input bytes
    /// consumed and the status. After `End` or `BareLineEnding` the decoder must not be used.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, DataStatus) {
        let _ = (input, out);
        todo!("data decoder")
    }
}

/// Checks BDAT chunk data for bare CR and bare LF across chunk boundaries.
#[derive(Debug, Clone, Default)]
pub struct LineEndingChecker {
    _private: (),
}

impl LineEndingChecker {
    /// A checker at the start of the message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece of message text; false when it holds a bare CR or bare LF.
    pub fn check(&mut self, text: &[u8]) -> bool {
        let _ = text;
        todo!("line-ending checker")
    }

    /// Called at the end of the message: false when it ended in a lone CR.
    pub fn finish(&self) -> bool {
        todo!("line-ending checker")
    }
}
