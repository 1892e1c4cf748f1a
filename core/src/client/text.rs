//! Message text on its way out: every line end made CRLF and, for DATA, every line that starts
//! with `.` given one more (RFC 5321 section 4.5.2).

use memchr::memchr2;

/// Encodes message text piece by piece; the output is the same however the text is split.
///
/// A bare LF becomes CRLF, and so does a bare CR: tern's own server refuses both, and a lone
/// CR or LF sent on could be read by some server as a line end that `.` follows (SMTP
/// smuggling). The text is expected to have CRLF line ends already; this only makes sure.
#[derive(Debug, Clone)]
pub(crate) struct TextEncoder {
    stuff_dots: bool,
    line_start: bool,
    cr_pending: bool,
}

impl TextEncoder {
    /// An encoder at the start of a message; `stuff_dots` for DATA, not for BDAT.
    pub(crate) fn new(stuff_dots: bool) -> Self {
        TextEncoder {
            stuff_dots,
            line_start: true,
            cr_pending: false,
        }
    }

    /// Appends the encoded form of `text` to `out`. A CR at the end of `text` is held until
    /// the next piece shows whether an LF follows it.
    pub(crate) fn encode(&mut self, mut text: &[u8], out: &mut Vec<u8>) {
        out.reserve(text.len() + 2);
        while !text.is_empty() {
            if self.cr_pending {
                self.cr_pending = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if text[0] == b'\n' {
                    text = &text[1..];
                    continue;
                }
            }
            if self.line_start && self.stuff_dots && text[0] == b'.' {
                out.push(b'.');
            }
            let end = memchr2(b'\r', b'\n', text).unwrap_or(text.len());
            out.extend_from_slice(&text[..end]);
            if end > 0 {
                self.line_start = false;
            }
            match text.get(end) {
                None => return,
                Some(b'\r') => self.cr_pending = true,
                Some(_) => {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                }
            }
            text = &text[end + 1..];
        }
    }

    /// Ends the text: a held CR becomes CRLF, and a last line without a line end gets one, so
    /// the message always ends in CRLF.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.cr_pending) || !self.line_start {
            out.extend_from_slice(b"\r\n");
            self.line_start = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &[u8], stuff: bool) -> Vec<u8> {
        let mut encoder = TextEncoder::new(stuff);
        let mut out = Vec::new();
        encoder.encode(text, &mut out);
        encoder.finish(&mut out);
        out
    }

    #[test]
    fn dots_and_line_ends() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a\r\n", b"a\r\n"),
            (b"a", b"a\r\n"),
            (b".\r\n", b"..\r\n"),
            (b".a\r\n..b\r\nc.d\r\n.", b"..a\r\n...b\r\nc.d\r\n..\r\n"),
            (b"a\nb\rc\r\r\n.", b"a\r\nb\r\nc\r\n\r\n..\r\n"),
            (b"\r\n.\r\n", b"\r\n..\r\n"),
            (b"a\r", b"a\r\n"),
        ];
        for (text, want) in table {
            assert_eq!(
                String::from_utf8_lossy(&encode(text, true)),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(encode(b".a\nb", false), b".a\r\nb\r\n");
    }

    #[test]
    fn every_split_gives_the_same_text() {
        let text = b".a\r\n..\r\nb\rc\n.\r\n\r\r\n.x";
        let whole = encode(text, true);
        for split in 0..=text.len() {
            let mut encoder = TextEncoder::new(true);
            let mut out = Vec::new();
            encoder.encode(&text[..split], &mut out);
            encoder.encode(&text[split..], &mut out);
            encoder.finish(&mut out);
            assert_eq!(out, whole, "split at {split}");
        }
        let mut encoder = TextEncoder::new(true);
        let mut out = Vec::new();
        for byte in text.chunks(1) {
            encoder.encode(byte, &mut out);
        }
        encoder.finish(&mut out);
        assert_eq!(out, whole);
    }
}
