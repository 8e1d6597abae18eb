//! Turning a byte stream into batches of events: shared by the sources that read lines.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::batch::Batch;
use crate::event::{Event, Origin};
use crate::framing::{Frame, LineFramer};
use crate::metrics::{ComponentMetrics, Counter};
use crate::output::{Output, OutputClosed};
use crate::ratelimit::LogRateLimit;
use crate::shutdown::ShutdownSignal;
use crate::MAX_BATCH_EVENTS;

/// Default limit on one line: longer lines are truncated to this many bytes and counted.
pub const DEFAULT_MAX_LINE_BYTES: usize = 102_400;

/// Builds events from frames, counting truncated and invalid-UTF-8 lines.
#[derive(Debug)]
pub struct LineDecoder {
    origin: Arc<Origin>,
    truncated: Counter,
    invalid_utf8: Counter,
    received: Counter,
    bytes: Counter,
    max_line_bytes: usize,
    /// A stream of bad lines warns once per interval, not once per batch.
    warnings: LogRateLimit,
}

impl LineDecoder {
    /// A decoder for lines of `origin`, reporting into `metrics`.
    pub fn new(origin: Arc<Origin>, metrics: &ComponentMetrics, max_line_bytes: usize) -> Self {
        Self {
            origin,
            truncated: metrics.counter_with_reason("lines_modified", "truncated"),
            invalid_utf8: metrics.counter_with_reason("lines_modified", "invalid_utf8"),
            received: metrics.counter("events_received"),
            bytes: metrics.counter("bytes_received"),
            max_line_bytes,
            warnings: LogRateLimit::new(Duration::from_secs(10)),
        }
    }

    /// The origin stamped on the events.
    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// Moves every complete line of `framer` (and with `at_eof`, the unterminated last one)
    /// into `events`, at most `limit` of them. Returns how many were added.
    pub fn drain(
        &self,
        framer: &mut LineFramer,
        events: &mut Vec<Event>,
        limit: usize,
        at_eof: bool,
    ) -> usize {
        let now = Utc::now();
        let (mut truncated, mut lossy, mut added, mut bytes) = (0u64, 0u64, 0usize, 0u64);
        while added < limit {
            let frame = if at_eof {
                framer.finish()
            } else {
                framer.next_frame()
            };
            let Some(Frame {
                line,
                truncated: cut,
            }) = frame
            else {
                break;
            };
            bytes += line.len() as u64;
            let (event, was_lossy) = Event::from_bytes(line, now, self.origin.clone());
            truncated += u64::from(cut);
            lossy += u64::from(was_lossy);
            events.push(event);
            added += 1;
        }
        self.received.add(added as u64);
        self.bytes.add(bytes);
        if truncated > 0 {
            self.truncated.add(truncated);
        }
        if lossy > 0 {
            self.invalid_utf8.add(lossy);
        }
        if truncated + lossy > 0 {
            if let Some(held_back) = self.warnings.check() {
                tracing::warn!(
                    stream = %self.origin.stream,
                    truncated,
                    invalid_utf8 = lossy,
                    max_line_bytes = self.max_line_bytes,
                    earlier_warnings_not_logged = held_back,
                    "lines modified on the way in: longer than max_line_bytes were truncated (the \
                     rest of each dropped), invalid UTF-8 kept with U+FFFD replacement \
                     characters; totals in lines_modified{{reason=...}}"
                );
            }
        }
        added
    }
}

/// Why [`pump`] returned.
#[derive(Debug)]
pub enum PumpEnd {
    /// The stream ended; its last partial line was sent.
    Eof,
    /// The shutdown signal fired; complete lines read so far were sent.
    Shutdown,
    /// Reading failed; complete lines read before the error were sent.
    ReadError(std::io::Error),
}

/// Reads `reader` to its end (or until shutdown), sending every line as events through `out`
/// in batches of at most [`MAX_BATCH_EVENTS`]. One read becomes at most one or a few batches,
/// so a slow trickle is forwarded at once and a fast stream in large batches.
pub async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    framer: &mut LineFramer,
    decoder: &LineDecoder,
    out: &mut Output,
    shutdown: &ShutdownSignal,
) -> Result<PumpEnd, OutputClosed> {
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => None,
            read = reader.read_buf(framer.buffer_mut()) => Some(read),
        };
        let (end, at_eof) = match read {
            None => (Some(PumpEnd::Shutdown), false),
            Some(Ok(0)) => (Some(PumpEnd::Eof), true),
            Some(Ok(_)) => (None, false),
            Some(Err(e)) => (Some(PumpEnd::ReadError(e)), false),
        };
        loop {
            let mut events = Vec::new();
            if decoder.drain(framer, &mut events, MAX_BATCH_EVENTS, at_eof) == 0 {
                break;
            }
            out.send(Batch::new(events)).await?;
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}
