//! Cutting syslog messages out of a TCP stream (RFC 6587): each message is either octet
//! counted (`LEN SP MSG`, what rsyslog's `omfwd` and `logger --octet-count` send) or ends at a
//! newline (`logger -T`, most other senders). The two are told apart per message, so one
//! connection may mix them.

use bytes::{Buf, Bytes, BytesMut};

/// A message cut from the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// Its bytes, without framing.
    pub bytes: Bytes,
    /// It was longer than the limit; the rest was discarded.
    pub truncated: bool,
}

/// The framing state of one connection.
#[derive(Debug)]
pub struct SyslogFramer {
    buf: BytesMut,
    max_message_bytes: usize,
    /// Bytes still to discard: the tail of an octet-counted message over the limit.
    skip: usize,
    /// Discarding up to the next newline: the tail of a newline-framed message over the limit.
    skip_line: bool,
}

/// The longest length prefix read (a length of up to a billion bytes).
const MAX_LENGTH_DIGITS: usize = 9;

impl SyslogFramer {
    /// A framer cutting messages of at most `max_message_bytes` (longer ones are truncated).
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(64 * 1024),
            max_message_bytes: max_message_bytes.max(1),
            skip: 0,
            skip_line: false,
        }
    }

    /// The buffer to read more bytes into (append only).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        &mut self.buf
    }

    /// The length prefix at the start of the buffer: `Some(Some(n))` for `n SP`, `Some(None)`
    /// while the digits may still be one (more bytes needed), `None` when this message is not
    /// octet counted.
    fn length_prefix(&self) -> Option<Option<(usize, usize)>> {
        let digits = self
            .buf
            .iter()
            .take(MAX_LENGTH_DIGITS + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > MAX_LENGTH_DIGITS || self.buf[0] == b'0' {
            return None;
        }
        match self.buf.get(digits) {
            None => Some(None),
            Some(b' ') => {
                let len = std::str::from_utf8(&self.buf[..digits])
                    .ok()?
                    .parse()
                    .ok()?;
                Some(Some((len, digits + 1)))
            }
            Some(_) => None,
        }
    }

    /// The next complete message, if the buffer holds one. With `at_eof`, an unterminated
    /// last message is returned as it is.
    pub fn next_message(&mut self, at_eof: bool) -> Option<Message> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            if self.skip_line {
                match memchr(b'\n', &self.buf) {
                    Some(at) => {
                        self.buf.advance(at + 1);
                        self.skip_line = false;
                    }
                    None => {
                        self.buf.clear();
                        return None;
                    }
                }
            }
            if self.buf.is_empty() {
                return None;
            }
            match self.length_prefix() {
                Some(Some((len, header))) => {
                    let take = len.min(self.max_message_bytes);
                    if self.buf.len() < header + take && !at_eof {
                        return None;
                    }
                    self.buf.advance(header);
                    let take = take.min(self.buf.len());
                    let bytes = self.buf.split_to(take).freeze();
                    self.skip = len - take;
                    return Some(Message {
                        bytes: trim_line_end(bytes),
                        truncated: len > self.max_message_bytes,
                    });
                }
                Some(None) if !at_eof => return None,
                _ => {}
            }
            match memchr(b'\n', &self.buf) {
                Some(at) if at <= self.max_message_bytes => {
                    let line = self.buf.split_to(at + 1).freeze();
                    let line = trim_line_end(line);
                    if line.is_empty() {
                        continue;
                    }
                    return Some(Message {
                        bytes: line,
                        truncated: false,
                    });
                }
                found if found.is_some() || self.buf.len() > self.max_message_bytes => {
                    let bytes = self.buf.split_to(self.max_message_bytes).freeze();
                    self.skip_line = true;
                    return Some(Message {
                        bytes,
                        truncated: true,
                    });
                }
                _ if at_eof => {
                    let bytes = trim_line_end(self.buf.split().freeze());
                    return (!bytes.is_empty()).then_some(Message {
                        bytes,
                        truncated: false,
                    });
                }
                _ => return None,
            }
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// Without a trailing `\n`, `\r\n` or NUL (some senders end each message with one).
fn trim_line_end(mut bytes: Bytes) -> Bytes {
    while let Some(last) = bytes.last() {
        if matches!(last, b'\n' | b'\r' | b'\0') {
            bytes.truncate(bytes.len() - 1);
        } else {
            break;
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framer: &mut SyslogFramer, at_eof: bool) -> Vec<(String, bool)> {
        std::iter::from_fn(|| framer.next_message(at_eof))
            .map(|m| (String::from_utf8(m.bytes.to_vec()).unwrap(), m.truncated))
            .collect()
    }

    #[test]
    fn both_framings_on_one_connection() {
        let mut framer = SyslogFramer::new(1024);
        framer
            .buffer_mut()
            .extend_from_slice(b"11 <13>1 - a b\n<13>plain line\r\n6 <13>x");
        assert_eq!(
            all(&mut framer, false),
            [
                ("<13>1 - a b".into(), false),
                ("<13>plain line".into(), false)
            ]
        );
        // The octet-counted message is complete only with its sixth byte.
        framer.buffer_mut().extend_from_slice(b"y");
        assert_eq!(all(&mut framer, false), [("<13>xy".into(), false)]);
        framer.buffer_mut().extend_from_slice(b"unterminated");
        assert_eq!(all(&mut framer, false), []);
        assert_eq!(all(&mut framer, true), [("unterminated".into(), false)]);
    }

    #[test]
    fn long_messages_are_cut_and_the_next_kept() {
        let mut framer = SyslogFramer::new(4);
        framer
            .buffer_mut()
            .extend_from_slice(b"10 abcdefghij6 klmnop\nok\nlonger line\nz\n");
        assert_eq!(
            all(&mut framer, false),
            [
                ("abcd".into(), true),
                ("klmn".into(), true),
                ("ok".into(), false),
                ("long".into(), true),
                ("z".into(), false),
            ]
        );
    }
}
