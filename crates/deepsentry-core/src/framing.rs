//! Splitting a byte stream into lines: shared by every source that reads text.

use bytes::{Bytes, BytesMut};

/// One line cut from a stream, without its line ending (`\n` or `\r\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The line's bytes (not yet checked for UTF-8).
    pub line: Bytes,
    /// The line was longer than the limit; this is its first `max_line_bytes` bytes and the rest
    /// was discarded.
    pub truncated: bool,
    /// Where the line starts in the stream: its byte offset from the framer's start offset.
    /// A source that holds lines back (a multiline event being joined) resumes from here.
    pub start: u64,
}

/// Cuts lines out of a growing buffer without copying them: each [`Frame`] is a slice of the
/// buffer the bytes were read into.
///
/// A line longer than `max_line_bytes` is emitted truncated as soon as the limit is passed and
/// the rest of it, up to the next newline, is skipped; so one runaway line (a binary blob, a
/// missing newline) can neither exhaust memory nor swallow the lines that follow it.
#[derive(Debug)]
pub struct LineFramer {
    buf: BytesMut,
    max_line_bytes: usize,
    /// Bytes at the start of `buf` already known to hold no newline.
    scanned: usize,
    /// Inside the tail of an over-long line.
    discarding: bool,
    /// Stream offset of the first byte of `buf`.
    consumed: u64,
}

/// How many bytes a read asks for at least.
pub const READ_CHUNK: usize = 128 * 1024;

impl LineFramer {
    /// A framer that truncates lines longer than `max_line_bytes` (at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        Self::at_offset(max_line_bytes, 0)
    }

    /// A framer whose first byte is at `offset` of the stream (a file read from a checkpoint),
    /// so that [`Frame::start`] is an offset in the file.
    pub fn at_offset(max_line_bytes: usize, offset: u64) -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_line_bytes: max_line_bytes.max(1),
            scanned: 0,
            discarding: false,
            consumed: offset,
        }
    }

    /// Takes the first `len` bytes of the buffer, moving the stream offset past them; returns
    /// them with the offset they started at.
    fn take(&mut self, len: usize) -> (BytesMut, u64) {
        let start = self.consumed;
        self.consumed += len as u64;
        (self.buf.split_to(len), start)
    }

    /// The buffer to read more bytes into (append only), e.g. with `AsyncReadExt::read_buf`.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    /// Reads once from a blocking reader into the buffer; returns the bytes read (0 at EOF).
    pub fn read_from(&mut self, reader: &mut impl std::io::Read) -> std::io::Result<usize> {
        let buf = self.buffer_mut();
        let start = buf.len();
        let room = (buf.capacity() - start).max(READ_CHUNK / 4);
        buf.resize(start + room, 0);
        let result = reader.read(&mut buf[start..]);
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        result
    }

    /// Bytes received but not yet returned as a line (the start of an unfinished line).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete line, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
                let end = self.scanned + pos;
                let (mut line, start) = self.take(end + 1);
                self.scanned = 0;
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                let truncated = line.len() > self.max_line_bytes;
                if truncated {
                    line.truncate(self.max_line_bytes);
                }
                return Some(Frame {
                    line: line.freeze(),
                    truncated,
                    start,
                });
            }
            if self.discarding {
                self.consumed += self.buf.len() as u64;
                self.buf.clear();
                self.scanned = 0;
                return None;
            }
            if self.buf.len() > self.max_line_bytes {
                let (line, start) = self.take(self.max_line_bytes);
                self.discarding = true;
                self.scanned = 0;
                return Some(Frame {
                    line: line.freeze(),
                    truncated: true,
                    start,
                });
            }
            self.scanned = self.buf.len();
            return None;
        }
    }

    /// At end of input: the unterminated last line, if any.
    pub fn finish(&mut self) -> Option<Frame> {
        if let Some(frame) = self.next_frame() {
            return Some(frame);
        }
        self.scanned = 0;
        if self.discarding || self.buf.is_empty() {
            self.discarding = false;
            self.consumed += self.buf.len() as u64;
            self.buf.clear();
            return None;
        }
        let (line, start) = self.take(self.buf.len());
        Some(Frame {
            line: line.freeze(),
            truncated: false,
            start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut LineFramer) -> Vec<(String, bool)> {
        std::iter::from_fn(|| framer.next_frame())
            .map(|f| (String::from_utf8(f.line.to_vec()).unwrap(), f.truncated))
            .collect()
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut framer = LineFramer::new(100);
        framer.buffer_mut().extend_from_slice(b"one\r\ntw");
        assert_eq!(frames(&mut framer), vec![("one".into(), false)]);
        assert_eq!(framer.buffered(), 2);
        framer.buffer_mut().extend_from_slice(b"o\n\nthree");
        assert_eq!(
            frames(&mut framer),
            vec![("two".into(), false), ("".into(), false)]
        );
        let last = framer.finish().unwrap();
        assert_eq!(&last.line[..], b"three");
        assert!(framer.finish().is_none());
    }

    #[test]
    fn truncates_long_lines_and_keeps_the_next() {
        let mut framer = LineFramer::new(4);
        framer.buffer_mut().extend_from_slice(b"abcdefgh");
        assert_eq!(frames(&mut framer), vec![("abcd".into(), true)]);
        framer.buffer_mut().extend_from_slice(b"ijk\nok\n");
        assert_eq!(frames(&mut framer), vec![("ok".into(), false)]);
        framer.buffer_mut().extend_from_slice(b"123456\nxy\n");
        assert_eq!(
            frames(&mut framer),
            vec![("1234".into(), true), ("xy".into(), false)]
        );
    }

    #[test]
    fn frames_know_where_they_start() {
        let mut framer = LineFramer::at_offset(4, 100);
        framer
            .buffer_mut()
            .extend_from_slice(b"ab\r\nabcdefgh\nxy\nlast");
        let starts: Vec<u64> = std::iter::from_fn(|| framer.next_frame())
            .map(|f| f.start)
            .collect();
        assert_eq!(starts, [100, 104, 113]);
        assert_eq!(framer.finish().unwrap().start, 116);
    }

    #[test]
    fn reads_from_blocking_reader() {
        let mut framer = LineFramer::new(100);
        let mut input: &[u8] = b"a\nb\n";
        while framer.read_from(&mut input).unwrap() > 0 {}
        assert_eq!(
            frames(&mut framer),
            vec![("a".into(), false), ("b".into(), false)]
        );
    }
}
