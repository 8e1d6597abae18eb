//! Turning a byte stream into batches of events: shared by the sources that read lines.
//! Lines may be joined into multiline events, decoded (JSON, logfmt, syslog) and dated by
//! their own timestamps on the way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::batch::Batch;
use crate::decode::{cri_line, decode_and_date, joinable_text, Decoding};
use crate::event::{Event, Origin};
use crate::framing::{Frame, LineFramer};
use crate::metrics::{ComponentMetrics, Counter};
use crate::multiline::{Joiner, MultilineConfig, Step};
use crate::output::{Output, OutputClosed};
use crate::ratelimit::LogRateLimit;
use crate::shutdown::ShutdownSignal;
use crate::timestamp::EventTime;
use crate::MAX_BATCH_EVENTS;

/// Default limit on one line: longer lines are truncated to this many bytes and counted.
pub const DEFAULT_MAX_LINE_BYTES: usize = 102_400;

/// How a line-reading source turns lines into events: the settings every such source shares.
#[derive(Debug, Clone)]
pub struct LineSettings {
    /// Lines longer than this are truncated; a multiline event is split at this size.
    pub max_line_bytes: usize,
    /// Joins the lines of one event (stack traces), when set.
    pub multiline: Option<MultilineConfig>,
    /// How each event's text is decoded into a message and fields.
    pub decoding: Decoding,
    /// The decoded field holding the message (else the first of `message`, `msg`, `log`).
    pub message_field: Option<String>,
    /// Where the event's time comes from.
    pub timestamp: EventTime,
}

impl LineSettings {
    /// Plain lines with the given limit: no joining, no decoding, the line's own time.
    pub fn plain(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            multiline: None,
            decoding: Decoding::Text,
            message_field: None,
            timestamp: EventTime::Auto,
        }
    }
}

/// A multiline event being joined.
#[derive(Debug)]
struct OpenEvent {
    text: BytesMut,
    /// Stream offset of its first line: a source resumes here while it is open.
    start: u64,
    arrived: DateTime<Utc>,
}

/// How long a split CRI line waits for its next piece before it is sent as far as it got. A
/// runtime writes the pieces of a long line one after another as the container writes it, so
/// the next piece is late only where the container stopped halfway through a line.
pub const PARTIAL_LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// A line of a CRI container log that the runtime split (`P` pieces), being put back together.
#[derive(Debug)]
struct PartialLine {
    /// The container's stream it was written to (`stdout`, `stderr`): the runtime splits the
    /// lines of each, and their pieces may interleave.
    stream: String,
    /// The first piece's whole line (time, stream, tag) and the later pieces' text.
    text: BytesMut,
    /// Stream offset of its first piece: a source resumes here while it is open.
    start: u64,
    /// It grew over the line limit and was cut.
    truncated: bool,
    /// When its latest piece came: one whose next piece does not come within
    /// [`PARTIAL_LINE_TIMEOUT`] is sent as far as it got, so a container that wrote half a
    /// line and went quiet holds neither its line nor the checkpoint.
    arrived: Instant,
}

impl PartialLine {
    /// The line put back together, as a frame.
    fn into_frame(self) -> Frame {
        Frame {
            line: self.text.freeze(),
            truncated: self.truncated,
            start: self.start,
        }
    }
}

/// Counts of one drain, added to the metrics once.
#[derive(Debug, Default)]
struct Tally {
    truncated: u64,
    invalid_utf8: u64,
    decode_failed: u64,
    split: u64,
    bytes: u64,
    events: u64,
}

/// Builds events from frames: joins multiline events, decodes, reads the event's time, and
/// counts truncated, invalid-UTF-8, undecodable and split lines. One per stream (a file, a
/// connection), since a multiline event in progress belongs to its stream.
#[derive(Debug)]
pub struct LineDecoder {
    origin: Arc<Origin>,
    settings: LineSettings,
    joiner: Option<Joiner>,
    open: Option<OpenEvent>,
    /// Split CRI lines whose last piece has not come yet, one per stream at most.
    partials: Vec<PartialLine>,
    truncated: Counter,
    invalid_utf8: Counter,
    decode_failed: Counter,
    split: Counter,
    received: Counter,
    bytes: Counter,
    /// A stream of bad lines warns once per interval, not once per batch.
    warnings: LogRateLimit,
    /// The last reason a line did not decode, for the rate-limited warning.
    last_decode_error: Option<String>,
    /// A fixed arrival time (reading a file as a whole), else the wall clock.
    clock: Option<DateTime<Utc>>,
}

impl LineDecoder {
    /// A decoder for lines of `origin`, reporting into `metrics`.
    pub fn new(origin: Arc<Origin>, metrics: &ComponentMetrics, settings: &LineSettings) -> Self {
        Self {
            origin,
            joiner: settings.multiline.clone().map(Joiner::new),
            settings: settings.clone(),
            open: None,
            partials: Vec::new(),
            truncated: metrics.counter_with_reason("lines_modified", "truncated"),
            invalid_utf8: metrics.counter_with_reason("lines_modified", "invalid_utf8"),
            decode_failed: metrics.counter_with_reason("lines_modified", "decode_failed"),
            split: metrics.counter_with_reason("lines_modified", "multiline_split"),
            received: metrics.counter("events_received"),
            bytes: metrics.counter("bytes_received"),
            warnings: LogRateLimit::new(Duration::from_secs(10)),
            last_decode_error: None,
            clock: None,
        }
    }

    /// Dates every event without a time of its own at `clock` instead of its arrival: for
    /// reading a whole file, where the arrival means nothing and an undated event must be
    /// told from a dated one.
    pub fn with_clock(mut self, clock: DateTime<Utc>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The origin stamped on the events.
    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// Stamps later events with `origin` (the stream was renamed); an event being joined
    /// stays open.
    pub fn set_origin(&mut self, origin: Arc<Origin>) {
        self.origin = origin;
    }

    /// Where the multiline event being joined (or the split CRI line being put back
    /// together) starts in the stream, if one is open: a checkpoint must not pass it, since
    /// its lines are not sent yet.
    pub fn open_event_start(&self) -> Option<u64> {
        let open = self.open.as_ref().map(|open| open.start);
        let partials = self.partials.iter().map(|partial| partial.start);
        open.into_iter().chain(partials).min()
    }

    /// When the open multiline event is due to be sent as it is, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        let open = self
            .open
            .as_ref()
            .and_then(|_| self.joiner.as_ref()?.deadline());
        let partial = self
            .partials
            .iter()
            .map(|p| p.arrived + self.partial_timeout())
            .min();
        open.into_iter().chain(partial).min()
    }

    /// How long a split CRI line waits for its next piece: [`PARTIAL_LINE_TIMEOUT`], or the
    /// multiline timeout where that is longer.
    fn partial_timeout(&self) -> Duration {
        self.settings
            .multiline
            .as_ref()
            .map_or(PARTIAL_LINE_TIMEOUT, |m| {
                m.timeout.max(PARTIAL_LINE_TIMEOUT)
            })
    }

    /// Moves every complete event of `framer` (and with `at_eof`, the unterminated last line
    /// and an open multiline event) into `events`: about `limit` of them (one more where a
    /// line both ends an open event and stands alone). Returns how many were added.
    pub fn drain(
        &mut self,
        framer: &mut LineFramer,
        events: &mut Vec<Event>,
        limit: usize,
        at_eof: bool,
    ) -> usize {
        let now = self.clock.unwrap_or_else(Utc::now);
        let instant = Instant::now();
        let before = events.len();
        let mut tally = Tally::default();
        while events.len() - before < limit {
            let frame = if at_eof {
                framer.finish()
            } else {
                framer.next_frame()
            };
            let Some(frame) = frame else {
                break;
            };
            tally.bytes += frame.line.len() as u64;
            let frame = if self.settings.decoding == Decoding::Cri {
                match self.reassemble(frame) {
                    Some(frame) => frame,
                    None => continue,
                }
            } else {
                frame
            };
            self.line(frame, now, instant, events, &mut tally);
        }
        if at_eof && events.len() - before < limit {
            self.finish_partial(now, events, &mut tally);
            self.close_open(events, &mut tally);
        }
        self.report(tally);
        events.len() - before
    }

    /// Moves one line on: into the multiline event being joined, or out as an event.
    fn line(
        &mut self,
        frame: Frame,
        now: DateTime<Utc>,
        instant: Instant,
        events: &mut Vec<Event>,
        tally: &mut Tally,
    ) {
        tally.truncated += u64::from(frame.truncated);
        if self.joiner.is_some() {
            self.join(frame, now, instant, events, tally);
        } else {
            events.push(self.event(frame.line, now, tally));
        }
    }

    /// Puts the pieces of a CRI line the runtime split back together: a `P` piece is held
    /// (`None`), and the `F` piece of the same stream after it gives the whole line, the
    /// first piece's time, stream and tag before the pieces' text. A line that is not CRI
    /// passes as it is (it is counted when it fails to decode).
    fn reassemble(&mut self, frame: Frame) -> Option<Frame> {
        let Some(cri) = cri_line(&frame.line) else {
            return Some(frame);
        };
        let open = self.partials.iter().position(|p| p.stream == cri.stream);
        match open.map(|at| &mut self.partials[at]) {
            Some(partial) => {
                partial.arrived = Instant::now();
                let text = &frame.line[cri.text_at..];
                let room = self
                    .settings
                    .max_line_bytes
                    .saturating_sub(partial.text.len());
                partial
                    .text
                    .extend_from_slice(&text[..text.len().min(room)]);
                partial.truncated |= frame.truncated || text.len() > room;
            }
            None if cri.partial => {
                self.partials.push(PartialLine {
                    stream: cri.stream.to_owned(),
                    text: BytesMut::from(&frame.line[..]),
                    start: frame.start,
                    truncated: frame.truncated,
                    arrived: Instant::now(),
                });
            }
            None => return Some(frame),
        }
        if cri.partial {
            return None;
        }
        open.map(|at| self.partials.remove(at).into_frame())
    }

    /// Sends the split CRI lines whose last piece never came as far as they got (the
    /// stream ended), the earliest first.
    fn finish_partial(&mut self, now: DateTime<Utc>, events: &mut Vec<Event>, tally: &mut Tally) {
        for partial in std::mem::take(&mut self.partials) {
            self.line(partial.into_frame(), now, Instant::now(), events, tally);
        }
    }

    /// Adds one event per message to `events`, for sources whose transport frames messages
    /// itself (datagrams, octet counting, request bodies): each is decoded and dated like a
    /// line, never joined. `truncated` counts the messages the transport already cut.
    pub fn messages(
        &mut self,
        messages: impl IntoIterator<Item = Bytes>,
        truncated: u64,
        events: &mut Vec<Event>,
    ) {
        let now = self.clock.unwrap_or_else(Utc::now);
        let mut tally = Tally {
            truncated,
            ..Tally::default()
        };
        for message in messages {
            tally.bytes += message.len() as u64;
            events.push(self.event(message, now, &mut tally));
        }
        self.report(tally);
    }

    /// Sends the open multiline event as it is if no line came for its timeout, and a split
    /// CRI line whose next piece did not come for as long (into the multiline event, where
    /// one is joined). Returns how many events were added.
    pub fn flush_expired(&mut self, now: Instant, events: &mut Vec<Event>) -> usize {
        // Sources call this on every poll: nothing due is the common case, and costs nothing.
        if self.deadline().is_none_or(|deadline| deadline > now) {
            return 0;
        }
        let before = events.len();
        let mut tally = Tally::default();
        let timeout = self.partial_timeout();
        let (expired, waiting) = std::mem::take(&mut self.partials)
            .into_iter()
            .partition(|p: &PartialLine| p.arrived + timeout <= now);
        self.partials = waiting;
        let clock = self.clock.unwrap_or_else(Utc::now);
        for partial in expired {
            self.line(partial.into_frame(), clock, now, events, &mut tally);
        }
        let open_expired = self.open.is_some()
            && self
                .joiner
                .as_ref()
                .and_then(Joiner::deadline)
                .is_some_and(|deadline| deadline <= now);
        if open_expired {
            self.close_open(events, &mut tally);
        }
        self.report(tally);
        events.len() - before
    }

    /// Sends the open multiline event, and a split CRI line, as they are (the stream ended).
    /// Returns how many events were added.
    pub fn finish_open(&mut self, events: &mut Vec<Event>) -> usize {
        let before = events.len();
        let mut tally = Tally::default();
        self.finish_partial(self.clock.unwrap_or_else(Utc::now), events, &mut tally);
        self.close_open(events, &mut tally);
        self.report(tally);
        events.len() - before
    }

    fn close_open(&mut self, events: &mut Vec<Event>, tally: &mut Tally) {
        if let Some(open) = self.open.take() {
            events.push(self.event(open.text.freeze(), open.arrived, tally));
        }
        if let Some(joiner) = &mut self.joiner {
            joiner.close();
        }
    }

    /// Puts `frame` where the joiner says: alone, opening an event, or joining the open one.
    fn join(
        &mut self,
        frame: Frame,
        now: DateTime<Utc>,
        instant: Instant,
        events: &mut Vec<Event>,
        tally: &mut Tally,
    ) {
        let joiner = self.joiner.as_mut().expect("joining needs a joiner");
        // A CRI line is joined by its text: a later line of the event adds only its text
        // (the event's time and stream are its first line's).
        let text_at = frame.line.len() - joinable_text(self.settings.decoding, &frame.line).len();
        let step = joiner.push(&frame.line[text_at..], instant);
        let open_new = |frame: Frame| OpenEvent {
            text: BytesMut::from(&frame.line[..]),
            start: frame.start,
            arrived: now,
        };
        match step {
            Step::Alone => events.push(self.event(frame.line, now, tally)),
            Step::Opened { closed } => {
                if closed {
                    if let Some(open) = self.open.take() {
                        events.push(self.event(open.text.freeze(), open.arrived, tally));
                    }
                }
                self.open = Some(open_new(frame));
            }
            Step::Joined | Step::Completed => {
                let max = self.settings.max_line_bytes;
                match self.open.as_mut() {
                    Some(open) if open.text.len() + 1 + frame.line.len() - text_at <= max => {
                        open.text.extend_from_slice(b"\n");
                        open.text.extend_from_slice(&frame.line[text_at..]);
                    }
                    // Too long to join: what is joined so far goes as one event and this
                    // line starts the next part, so nothing is lost.
                    Some(_) => {
                        tally.split += 1;
                        let full = self.open.replace(open_new(frame)).expect("open");
                        events.push(self.event(full.text.freeze(), full.arrived, tally));
                    }
                    None => self.open = Some(open_new(frame)),
                }
                if step == Step::Completed {
                    let done = self.open.take().expect("a completed event is open");
                    events.push(self.event(done.text.freeze(), done.arrived, tally));
                }
            }
            Step::ClosedThenAlone => {
                if let Some(open) = self.open.take() {
                    events.push(self.event(open.text.freeze(), open.arrived, tally));
                }
                events.push(self.event(frame.line, now, tally));
            }
        }
    }

    /// One event from its text: decoded, and dated by its own time where it has one.
    fn event(&mut self, text: Bytes, arrived: DateTime<Utc>, tally: &mut Tally) -> Event {
        let (mut event, lossy) = Event::from_bytes(text, arrived, self.origin.clone());
        tally.invalid_utf8 += u64::from(lossy);
        tally.events += 1;
        if let Err(why) = decode_and_date(
            &mut event,
            self.settings.decoding,
            self.settings.message_field.as_deref(),
            self.settings.timestamp,
            arrived,
        ) {
            tally.decode_failed += 1;
            self.last_decode_error = Some(why);
        }
        event
    }

    fn report(&mut self, tally: Tally) {
        self.received.add(tally.events);
        self.bytes.add(tally.bytes);
        for (counter, n) in [
            (&self.truncated, tally.truncated),
            (&self.invalid_utf8, tally.invalid_utf8),
            (&self.decode_failed, tally.decode_failed),
            (&self.split, tally.split),
        ] {
            if n > 0 {
                counter.add(n);
            }
        }
        if tally.truncated + tally.invalid_utf8 + tally.decode_failed + tally.split == 0 {
            return;
        }
        if let Some(held_back) = self.warnings.check() {
            tracing::warn!(
                stream = %self.origin.stream,
                truncated = tally.truncated,
                invalid_utf8 = tally.invalid_utf8,
                decode_failed = tally.decode_failed,
                multiline_split = tally.split,
                max_line_bytes = self.settings.max_line_bytes,
                decoding = ?self.settings.decoding,
                last_decode_error = self.last_decode_error.as_deref().unwrap_or("-"),
                earlier_warnings_not_logged = held_back,
                "lines modified on the way in: longer than max_line_bytes were truncated (the \
                 rest of each dropped), invalid UTF-8 kept with U+FFFD replacement \
                 characters, lines that did not decode passed on as text, multiline events \
                 over max_line_bytes sent in parts; totals in lines_modified{{reason=...}}"
            );
        }
    }
}

/// Opens a log file to read whole (training, evaluation): a gzip-compressed file (a rotated
/// `app.log.2.gz`, known by its first bytes, whatever its name) is read decompressed.
pub fn open_log(path: &std::path::Path) -> std::io::Result<Box<dyn std::io::Read + Send>> {
    use std::io::BufRead;
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let gzip = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// Reads a blocking `reader` to its end the way a source reads a stream (lines joined,
/// decoded and dated by `decoder`), handing each event to `each`: how `train` and `eval` read
/// their inputs, so a model sees the events a pipeline would give it.
pub fn read_all(
    mut reader: impl std::io::Read,
    decoder: &mut LineDecoder,
    mut each: impl FnMut(Event),
) -> std::io::Result<()> {
    let mut framer = LineFramer::new(decoder.settings.max_line_bytes);
    let mut events = Vec::new();
    loop {
        let read = match framer.read_from(&mut reader) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read?,
        };
        decoder.drain(&mut framer, &mut events, usize::MAX, read == 0);
        events.drain(..).for_each(&mut each);
        if read == 0 {
            return Ok(());
        }
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

/// Reads `reader` to its end (or until shutdown), sending every event through `out` in
/// batches of about [`MAX_BATCH_EVENTS`]. One read becomes at most one or a few batches, so a
/// slow trickle is forwarded at once and a fast stream in large batches. A multiline event
/// left open goes out when its timeout passes, and whenever the stream ends.
pub async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    framer: &mut LineFramer,
    decoder: &mut LineDecoder,
    out: &mut Output,
    shutdown: &ShutdownSignal,
) -> Result<PumpEnd, OutputClosed> {
    loop {
        let deadline = decoder.deadline();
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => None,
            // Cancel-safe: a read cut short by the timer has taken no bytes.
            read = reader.read_buf(framer.buffer_mut()) => Some(read),
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                let mut events = Vec::new();
                if decoder.flush_expired(Instant::now(), &mut events) > 0 {
                    out.send(Batch::new(events)).await?;
                }
                continue;
            }
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
            // The stream is over: an event still being joined is complete as it is.
            let mut events = Vec::new();
            if decoder.finish_open(&mut events) > 0 {
                out.send(Batch::new(events)).await?;
            }
            return Ok(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::multiline::Preset;

    fn decoder(settings: LineSettings) -> (LineDecoder, Metrics) {
        let metrics = Metrics::default();
        let decoder = LineDecoder::new(
            Origin::new("in", "app.log"),
            &metrics.component("in"),
            &settings,
        );
        (decoder, metrics)
    }

    fn messages(events: &[Event]) -> Vec<&str> {
        events.iter().map(Event::message).collect()
    }

    #[test]
    fn an_open_multiline_event_holds_the_resume_point_until_it_is_sent() {
        let (mut decoder, _metrics) = decoder(LineSettings {
            multiline: Some(MultilineConfig::preset(Preset::Java)),
            ..LineSettings::plain(1024)
        });
        let mut framer = LineFramer::at_offset(1024, 1000);
        framer
            .buffer_mut()
            .extend_from_slice(b"first\nfailed\njava.io.IOException: x\n\tat a.B(B.java:1)\n");
        let mut events = Vec::new();
        decoder.drain(&mut framer, &mut events, 100, false);
        assert_eq!(messages(&events), ["first"]);
        assert_eq!(
            decoder.open_event_start(),
            Some(1006),
            "where `failed` starts"
        );
        assert!(decoder.deadline().is_some());
        assert_eq!(
            decoder.flush_expired(Instant::now() + Duration::from_secs(5), &mut events),
            1
        );
        assert_eq!(
            events[1].message(),
            "failed\njava.io.IOException: x\n\tat a.B(B.java:1)"
        );
        assert_eq!(decoder.open_event_start(), None);
    }

    #[test]
    fn a_joined_event_over_the_limit_is_sent_in_parts_and_counted() {
        let (mut decoder, metrics) = decoder(LineSettings {
            multiline: Some(MultilineConfig::preset(Preset::Java)),
            ..LineSettings::plain(20)
        });
        let mut framer = LineFramer::new(20);
        framer
            .buffer_mut()
            .extend_from_slice(b"boom\n  at one.two\n  at three.four\n  at five\n");
        let mut events = Vec::new();
        decoder.drain(&mut framer, &mut events, 100, true);
        assert_eq!(
            messages(&events),
            ["boom\n  at one.two", "  at three.four", "  at five"]
        );
        let split = metrics.counter_with_reason("in", "lines_modified", Some("multiline_split"));
        assert_eq!(split.get(), 2);
    }

    #[test]
    fn lines_are_decoded_and_dated_by_their_own_time() {
        let (mut logfmt, metrics) = decoder(LineSettings {
            decoding: Decoding::Logfmt,
            ..LineSettings::plain(1024)
        });
        let mut framer = LineFramer::new(1024);
        framer
            .buffer_mut()
            .extend_from_slice(b"ts=2024-05-31T10:00:00Z level=warn msg=slow\nno pairs here\n");
        let mut events = Vec::new();
        logfmt.drain(&mut framer, &mut events, 100, false);
        assert_eq!(messages(&events), ["slow", "no pairs here"]);
        assert_eq!(
            events[0].timestamp.to_rfc3339(),
            "2024-05-31T10:00:00+00:00"
        );
        let failed = metrics.counter_with_reason("in", "lines_modified", Some("decode_failed"));
        assert_eq!(failed.get(), 1);

        let (mut plain, _) = decoder(LineSettings::plain(1024));
        framer
            .buffer_mut()
            .extend_from_slice(b"Jun 14 15:16:01 host sshd[1]: x\n");
        plain.drain(&mut framer, &mut events, 100, false);
        assert_eq!(
            events[2].timestamp.format("%m-%d %H:%M:%S").to_string(),
            "06-14 15:16:01"
        );
        let (mut arrival, _) = decoder(LineSettings {
            timestamp: EventTime::Arrival,
            ..LineSettings::plain(1024)
        });
        framer
            .buffer_mut()
            .extend_from_slice(b"2001-01-01T00:00:00Z old\n");
        arrival.drain(&mut framer, &mut events, 100, false);
        assert!(events[3].timestamp.timestamp() > 1_700_000_000);
    }

    #[test]
    fn a_container_logs_split_lines_are_one_event_and_traces_join_by_their_text() {
        let (mut cri, metrics) = decoder(LineSettings {
            decoding: Decoding::Cri,
            multiline: Some(MultilineConfig::preset(Preset::Java)),
            ..LineSettings::plain(1024)
        });
        let mut framer = LineFramer::at_offset(1024, 100);
        framer.buffer_mut().extend_from_slice(
            b"2024-05-31T10:00:00.5Z stdout F ready\n\
              2024-05-31T10:00:01Z stderr P a long line the runt\n\
              2024-05-31T10:00:01Z stderr P ime split in \n",
        );
        let mut events = Vec::new();
        cri.drain(&mut framer, &mut events, 100, false);
        // `ready` may go on with a trace (it is held), and the pieces are not sent yet.
        assert_eq!(messages(&events), [] as [&str; 0]);
        assert_eq!(cri.open_event_start(), Some(100));
        framer.buffer_mut().extend_from_slice(
            b"2024-05-31T10:00:02Z stderr F three\n\
              2024-05-31T10:00:03Z stderr F java.io.IOException: disk gone\n\
              2024-05-31T10:00:03Z stderr F \tat a.B(B.java:1)\n\
              2024-05-31T10:00:04Z stdout F next\n\
              not a container log line\n",
        );
        cri.drain(&mut framer, &mut events, 100, true);
        assert_eq!(
            messages(&events),
            [
                "ready",
                // The line that logged the exception, its exception and the frame.
                "a long line the runtime split in three\n\
                 java.io.IOException: disk gone\n\tat a.B(B.java:1)",
                "next",
                "not a container log line",
            ]
        );
        let when_and_where: Vec<(String, String)> = events[..2]
            .iter()
            .map(|e| {
                (
                    e.timestamp.to_rfc3339(),
                    e.fields.get("stream").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            when_and_where,
            [
                ("2024-05-31T10:00:00.500+00:00".into(), "stdout".into()),
                ("2024-05-31T10:00:01+00:00".into(), "stderr".into()),
            ]
        );

        // The two streams' pieces interleave; each line is put back from its own stream's.
        let (mut plain_cri, _) = decoder(LineSettings {
            decoding: Decoding::Cri,
            ..LineSettings::plain(1024)
        });
        let mut framer = LineFramer::new(1024);
        framer.buffer_mut().extend_from_slice(
            b"2024-05-31T10:00:01Z stdout P out \n\
              2024-05-31T10:00:01Z stderr P err \n\
              2024-05-31T10:00:01Z stderr F one\n\
              2024-05-31T10:00:02Z stdout F two\n",
        );
        let mut interleaved = Vec::new();
        plain_cri.drain(&mut framer, &mut interleaved, 100, false);
        assert_eq!(messages(&interleaved), ["err one", "out two"]);
        assert_eq!(plain_cri.open_event_start(), None);
        assert_eq!(cri.open_event_start(), None);
        let failed = metrics.counter_with_reason("in", "lines_modified", Some("decode_failed"));
        assert_eq!(failed.get(), 1);

        // Pieces over the line limit are cut and counted; the stream's end sends them.
        let (mut small, metrics) = decoder(LineSettings {
            decoding: Decoding::Cri,
            ..LineSettings::plain(40)
        });
        let mut framer = LineFramer::new(40);
        framer.buffer_mut().extend_from_slice(
            b"2024-05-31T10:00:01Z stdout P 0123456789\n\
              2024-05-31T10:00:01Z stdout P abcdefghij\n",
        );
        let mut events = Vec::new();
        small.drain(&mut framer, &mut events, 100, false);
        assert!(events.is_empty());
        // A checkpoint stays before the first piece.
        assert_eq!(small.open_event_start(), Some(0));
        assert_eq!(small.finish_open(&mut events), 1);
        assert_eq!(messages(&events), ["0123456789"]);
        let cut = metrics.counter_with_reason("in", "lines_modified", Some("truncated"));
        assert_eq!(cut.get(), 1);
    }

    #[test]
    fn a_split_container_line_whose_last_piece_never_comes_is_sent_after_the_timeout() {
        let (mut cri, _metrics) = decoder(LineSettings {
            decoding: Decoding::Cri,
            ..LineSettings::plain(1024)
        });
        let mut framer = LineFramer::at_offset(1024, 100);
        framer.buffer_mut().extend_from_slice(
            b"2024-05-31T10:00:00Z stdout F ready\n\
              2024-05-31T10:00:01Z stdout P progress: 10% \n",
        );
        let mut events = Vec::new();
        cri.drain(&mut framer, &mut events, 100, false);
        assert_eq!(messages(&events), ["ready"]);
        assert_eq!(cri.open_event_start(), Some(136), "before the held piece");
        let deadline = cri.deadline().expect("the held piece has a deadline");
        // Not before its time.
        assert_eq!(cri.flush_expired(Instant::now(), &mut events), 0);
        assert_eq!(cri.flush_expired(deadline, &mut events), 1);
        assert_eq!(messages(&events), ["ready", "progress: 10% "]);
        assert_eq!(cri.open_event_start(), None, "the checkpoint moves on");
        assert_eq!(cri.deadline(), None);
    }

    #[test]
    fn a_gzipped_log_is_read_decompressed() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let text = b"first line\nsecond line\n";
        let plain = dir.path().join("app.log");
        std::fs::write(&plain, text).unwrap();
        // Two gzip members, as `cat a.gz b.gz` makes; the name says nothing.
        let zipped = dir.path().join("app.log.1");
        let mut bytes = Vec::new();
        for part in [&text[..11], &text[11..]] {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(part).unwrap();
            bytes.extend(encoder.finish().unwrap());
        }
        std::fs::write(&zipped, bytes).unwrap();
        for path in [&plain, &zipped] {
            let mut read = Vec::new();
            open_log(path).unwrap().read_to_end(&mut read).unwrap();
            assert_eq!(read, text, "{}", path.display());
        }
    }
}
