//! The half of scoring that reads nothing but the events themselves: each message's template,
//! its time and where its session id is. A pipeline runs it on another task, preparing the
//! next batch while the [`Scorer`](super::Scorer) scores this one, so a second core does part
//! of the work.

use std::ops::Range;

use deepsentry_core::Event;

use super::SessionKey;
use crate::normalize::template_into;

/// Where an event's session id is.
pub(super) enum SessionAt {
    /// It has none: its stream is its session.
    Stream,
    /// This byte range of its message.
    Message(Range<usize>),
    /// A field's value, as text.
    Field(String),
}

impl SessionAt {
    /// Finds the session id of `event` by `key`.
    fn find(key: &SessionKey, event: &Event) -> Self {
        let range = |m: regex::Match| Self::Message(m.range());
        match key {
            SessionKey::Stream => Self::Stream,
            // A plain match is much cheaper than captures; use groups only when there are some.
            SessionKey::Regex(re) if re.captures_len() == 1 => {
                re.find(event.message()).map_or(Self::Stream, range)
            }
            SessionKey::Regex(re) => re
                .captures(event.message())
                .and_then(|c| c.get(1).or_else(|| c.get(0)))
                .map_or(Self::Stream, range),
            SessionKey::Field(name) => event
                .fields
                .get(name)
                .map_or(Self::Stream, |value| Self::Field(value.to_string())),
        }
    }

    /// Whether the key found a session id (the event is not simply in its stream's session).
    pub(super) fn is_keyed(&self) -> bool {
        !matches!(self, Self::Stream)
    }

    /// The session id it names in `event`, the event it was found in.
    pub(super) fn of<'e>(&'e self, event: &'e Event) -> &'e str {
        match self {
            Self::Stream => &event.origin.stream,
            Self::Message(range) => &event.message()[range.clone()],
            Self::Field(value) => value,
        }
    }
}

/// A batch of events with what [`Preparer::prepare`] read of each.
pub struct Prepared {
    pub(super) events: Vec<Event>,
    /// The events' templates one after the other (one allocation for the batch).
    templates: String,
    /// Where each event's template ends in `templates`.
    ends: Vec<usize>,
    /// Each event's time in seconds: the line's own where it leads with one; else the
    /// event's, which a source sets from a decoded field or to the arrival.
    pub(super) stamped: Vec<i64>,
    pub(super) sessions: Vec<SessionAt>,
}

impl Prepared {
    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds the events of `other` after its own.
    pub fn append(&mut self, other: Prepared) {
        let offset = self.templates.len();
        self.templates.push_str(&other.templates);
        self.ends.extend(other.ends.iter().map(|end| end + offset));
        self.events.extend(other.events);
        self.stamped.extend(other.stamped);
        self.sessions.extend(other.sessions);
    }

    /// The template of its `i`-th event.
    pub(super) fn template(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.templates[start..self.ends[i]]
    }
}

/// Prepares batches for a [`Scorer`](super::Scorer); cheap to clone and to send to another
/// thread. [`Scorer::preparer`](super::Scorer::preparer) gives the one matching its settings.
#[derive(Debug, Clone)]
pub struct Preparer {
    pub(super) session_key: SessionKey,
}

impl Preparer {
    /// Reads what scoring needs of each event that depends on nothing but the event.
    pub fn prepare(&self, events: Vec<Event>) -> Prepared {
        let mut prepared = Prepared {
            templates: String::with_capacity(events.iter().map(|e| e.message().len()).sum()),
            ends: Vec::with_capacity(events.len()),
            stamped: Vec::with_capacity(events.len()),
            sessions: Vec::with_capacity(events.len()),
            events: Vec::new(),
        };
        let mut template = String::new();
        for event in &events {
            template_into(event.message(), &mut template);
            prepared.templates.push_str(&template);
            prepared.ends.push(prepared.templates.len());
            let stamped =
                deepsentry_core::timestamp::leading(event.message_bytes(), event.timestamp)
                    .unwrap_or(event.timestamp);
            prepared.stamped.push(stamped.timestamp());
            prepared
                .sessions
                .push(SessionAt::find(&self.session_key, event));
        }
        prepared.events = events;
        prepared
    }
}
