//! Command-line framing: only CRLF ends a line (RFC 5321 section 2.3.8); a bare CR or LF is
//! an attack (SMTP smuggling) and ends the session; an overlong line is thrown away up to
//! its CRLF so its tail is never read as a command.

use memchr::memchr2;

/// What [`LineReader::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineEvent {
    /// All input consumed; the line goes on.
    Incomplete,
    /// A whole line is ready: take it with [`LineReader::take`].
    Line,
    /// A line over the limit ended; its bytes are gone.
    Overlong,
    /// A CR not followed by LF, or an LF without CR.
    BareLineEnding,
}

/// Gathers one line at a time, holding at most the limit passed to `read`.
#[derive(Debug, Default)]
pub(super) struct LineReader {
    buf: Vec<u8>,
    cr_pending: bool,
    overlong: bool,
}

impl LineReader {
    /// Consumes input up to and including the next line end, or all of it.
    pub(super) fn read(&mut self, input: &[u8], max: usize) -> (usize, LineEvent) {
        if self.cr_pending {
            let Some(&first) = input.first() else {
                return (0, LineEvent::Incomplete);
            };
            self.cr_pending = false;
            return if first == b'\n' {
                (1, self.finish())
            } else {
                (0, LineEvent::BareLineEnding)
            };
        }
        let Some(at) = memchr2(b'\r', b'\n', input) else {
            self.append(input, max);
            return (input.len(), LineEvent::Incomplete);
        };
        self.append(&input[..at], max);
        if input[at] == b'\n' {
            return (at + 1, LineEvent::BareLineEnding);
        }
        match input.get(at + 1) {
            None => {
                self.cr_pending = true;
                (at + 1, LineEvent::Incomplete)
            }
            Some(b'\n') => (at + 2, self.finish()),
            Some(_) => (at + 1, LineEvent::BareLineEnding),
        }
    }

    /// The completed line, without CRLF. Give the buffer back with [`Self::restore`].
    pub(super) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Returns a taken buffer so its allocation is reused.
    pub(super) fn restore(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        if self.buf.is_empty() {
            self.buf = buf;
        }
    }

    /// Bytes held for the line in progress.
    #[cfg(test)]
    pub(super) fn buf_len(&self) -> usize {
        self.buf.len()
    }

    fn append(&mut self, bytes: &[u8], max: usize) {
        if self.overlong {
            return;
        }
        if self.buf.len() + bytes.len() > max {
            self.overlong = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn finish(&mut self) -> LineEvent {
        if std::mem::take(&mut self.overlong) {
            LineEvent::Overlong
        } else {
            LineEvent::Line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_errors() {
        let mut reader = LineReader::default();
        assert_eq!(reader.read(b"NOOP\r\nQUIT", 100), (6, LineEvent::Line));
        assert_eq!(reader.take(), b"NOOP");
        assert_eq!(reader.read(b"QUIT\r", 100), (5, LineEvent::Incomplete));
        assert_eq!(reader.read(b"\n", 100), (1, LineEvent::Line));
        assert_eq!(reader.take(), b"QUIT");
        assert_eq!(reader.read(b"A\nB", 100), (2, LineEvent::BareLineEnding));
        let mut reader = LineReader::default();
        assert_eq!(reader.read(b"A\rB", 100), (2, LineEvent::BareLineEnding));
        let mut reader = LineReader::default();
        assert_eq!(reader.read(b"A\r", 100), (2, LineEvent::Incomplete));
        assert_eq!(reader.read(b"B", 100), (0, LineEvent::BareLineEnding));
    }

    #[test]
    fn overlong_lines_are_dropped_whole() {
        let mut reader = LineReader::default();
        assert_eq!(reader.read(b"0123456789", 8), (10, LineEvent::Incomplete));
        assert_eq!(
            reader.read(b"MAIL FROM:<x>\r\nNOOP\r\n", 8),
            (15, LineEvent::Overlong)
        );
        assert_eq!(reader.read(b"NOOP\r\n", 8), (6, LineEvent::Line));
        assert_eq!(reader.take(), b"NOOP");
    }
}
