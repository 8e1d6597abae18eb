//! The streaming detector: from events to scored events. The `deepsentry` transform and the
//! `eval` command both run this code, so an evaluation measures exactly what production does.
//!
//! For each batch of events:
//! 1. every message is normalized to its template; a template seen for the first time is
//!    encoded by the text autoencoder (embedding + reconstruction error), then cached;
//! 2. each event joins its session; its window is the templates of the session's previous
//!    `sequence_length` events;
//! 3. every distinct window not yet in the cache is scored by the sequence detector, in one
//!    batched forward pass (real logs repeat a few hundred windows, so this is rare);
//! 4. the event's score is its surprise, `-ln p(template | window)`, raised by the
//!    reconstruction error when the template was never seen in training; the adaptive
//!    threshold gives the verdict.
//!
//! A session that stays idle past `session_ttl` (in the events' own clock), is evicted past
//! `max_sessions`, or is still open at the end of input gets one more event: its end, scored
//! like any other event (a block allocated and never written ends too early).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use deepsentry_core::event::keys;
use deepsentry_core::{Event, Origin, Value};
use regex::Regex;

use crate::normalize::template_into;
use crate::sessions::SessionStore;
use crate::threshold::AdaptiveThreshold;
use crate::timestamp::leading_timestamp;

/// Field naming the session an event belongs to.
pub const SESSION_FIELD: &str = "session";
/// Field set on the synthetic event that marks a session's end.
pub const SESSION_END_FIELD: &str = "session_end";

/// Longest message kept per line in a context window (bytes, cut on a char boundary).
const CONTEXT_MESSAGE_BYTES: usize = 240;
/// Highest surprise a score can reach (`-ln 1e-7`); keeps unseen events comparable.
pub const MAX_SURPRISE: f64 = 16.118;

/// What the scorer needs from a trained model; [`crate::bundle::LoadedModel`] is the real one.
pub trait SequenceModel {
    /// How many previous events form a window.
    fn sequence_length(&self) -> usize;
    /// The detector's class for a template seen in training.
    fn class_of(&self, template: &str) -> Option<usize>;
    /// The class meaning "the session ended".
    fn end_class(&self) -> usize;
    /// The class meaning "a template never seen in training".
    fn unknown_class(&self) -> usize;
    /// Embeddings and reconstruction errors of templates, in one batch.
    fn embed(&self, templates: &[&str]) -> Vec<(Vec<f32>, f32)>;
    /// Log-probabilities of every class after each window; a window is the embeddings of up
    /// to `sequence_length` previous events, oldest first.
    fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>>;
    /// The score below which nothing is flagged, learned in training.
    fn score_floor(&self) -> f64;
    /// The reconstruction error of a typical training template (scales unseen templates).
    fn reconstruction_scale(&self) -> f64;
}

/// How events are grouped into sessions.
#[derive(Debug, Clone)]
pub enum SessionKey {
    /// One session per source stream (file path, peer, `stdin`).
    Stream,
    /// The regex's first capture group (or whole match) in the message; lines without a
    /// match fall back to their stream.
    Regex(Regex),
    /// The value of a field a previous transform set; falls back to the stream.
    Field(String),
}

/// Settings of the scorer (the transform's keys).
#[derive(Debug, Clone)]
pub struct ScorerSettings {
    /// Rolling window of scores for the threshold.
    pub window_size: usize,
    /// Standard deviations above the mean.
    pub threshold_multiplier: f64,
    /// Scores seen before any alert.
    pub min_samples: usize,
    /// Keep flagged scores out of the rolling window.
    pub exclude_anomalies: bool,
    /// Overrides the model's learned floor.
    pub threshold_floor: Option<f64>,
    /// Session grouping.
    pub session_key: SessionKey,
    /// Seconds (event time) after which an idle session ends.
    pub session_ttl_secs: i64,
    /// Most sessions tracked at once.
    pub max_sessions: usize,
}

struct Template {
    class: Option<usize>,
    embedding: Vec<f32>,
    reconstruction_error: f32,
}

struct Session {
    /// Local template ids of the last `sequence_length` events.
    window: Vec<u32>,
    /// Their messages, for the context window.
    messages: Vec<Box<str>>,
    lines: u64,
    origin: Arc<Origin>,
}

/// Counters the scorer keeps for its owner to report.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScorerStats {
    /// Events scored (session ends included).
    pub scored: u64,
    /// Events flagged.
    pub anomalies: u64,
    /// Templates seen (cache size).
    pub templates: u64,
    /// Detector forward passes run (cache misses).
    pub detector_windows: u64,
    /// Sessions ended by TTL, eviction or end of input.
    pub sessions_ended: u64,
    /// Sessions evicted because of `max_sessions`.
    pub sessions_evicted: u64,
}

/// The streaming detector; see the module docs.
pub struct Scorer<M: Deref>
where
    M::Target: SequenceModel,
{
    model: M,
    settings: ScorerSettings,
    sequence_length: usize,
    template_ids: HashMap<String, u32>,
    templates: Vec<Template>,
    windows: HashMap<Box<[u32]>, Arc<[f32]>>,
    sessions: SessionStore<Session>,
    threshold: AdaptiveThreshold,
    stats: ScorerStats,
    scratch: String,
    /// The latest event time seen (log clock), and when (wall clock) it was seen.
    clock: Option<(i64, std::time::Instant)>,
}

/// Largest number of cached windows before the cache is cleared (bounds memory).
const MAX_CACHED_WINDOWS: usize = 200_000;
/// Largest number of cached templates before the cache is cleared.
const MAX_CACHED_TEMPLATES: usize = 100_000;

/// One event on its way through [`Scorer::process`]: its session and window are known, its
/// probabilities may still be missing.
struct Pending {
    event: Event,
    session: Arc<str>,
    window: Box<[u32]>,
    class: usize,
    unseen_error: Option<f32>,
    context: String,
}

fn clip(message: &str) -> Box<str> {
    if message.len() <= CONTEXT_MESSAGE_BYTES {
        return message.into();
    }
    let mut end = CONTEXT_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end]).into_boxed_str()
}

impl<M: Deref> Scorer<M>
where
    M::Target: SequenceModel,
{
    /// A scorer for `model` with `settings`.
    pub fn new(model: M, settings: ScorerSettings) -> Self {
        let floor = settings
            .threshold_floor
            .unwrap_or_else(|| model.score_floor());
        let threshold = AdaptiveThreshold::new(
            settings.window_size,
            settings.threshold_multiplier,
            settings.min_samples,
            floor,
            settings.exclude_anomalies,
        );
        Self {
            sequence_length: model.sequence_length(),
            model,
            sessions: SessionStore::new(settings.session_ttl_secs, settings.max_sessions),
            settings,
            template_ids: HashMap::new(),
            templates: Vec::new(),
            windows: HashMap::new(),
            threshold,
            stats: ScorerStats::default(),
            scratch: String::new(),
            clock: None,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ScorerStats {
        self.stats
    }

    /// The model.
    pub fn model(&self) -> &M::Target {
        &self.model
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn session_of<'e>(&self, event: &'e Event) -> Cow<'e, str> {
        let stream = || Cow::Borrowed(&*event.origin.stream);
        match &self.settings.session_key {
            SessionKey::Stream => stream(),
            // A plain match is much cheaper than captures; use groups only when there are some.
            SessionKey::Regex(re) if re.captures_len() == 1 => re
                .find(event.message())
                .map_or_else(stream, |m| Cow::Borrowed(m.as_str())),
            SessionKey::Regex(re) => re
                .captures(event.message())
                .and_then(|c| c.get(1).or_else(|| c.get(0)))
                .map_or_else(stream, |m| Cow::Borrowed(m.as_str())),
            SessionKey::Field(name) => match event.fields.get(name) {
                Some(value) => Cow::Owned(value.to_string()),
                None => stream(),
            },
        }
    }

    /// Interns the templates of `events`, encoding new ones in one batch.
    fn intern(&mut self, events: &[Event]) -> Vec<u32> {
        if self.templates.len() > MAX_CACHED_TEMPLATES {
            // Unbounded template churn (ids the normalizer missed): start over rather than grow.
            self.template_ids.clear();
            self.templates.clear();
            self.windows.clear();
            tracing::warn!("template cache full; cleared (normalizer may be missing a pattern)");
        }
        let mut ids = Vec::with_capacity(events.len());
        let mut new: Vec<String> = Vec::new();
        for event in events {
            template_into(event.message(), &mut self.scratch);
            let id = match self.template_ids.get(self.scratch.as_str()) {
                Some(&id) => id,
                None => {
                    let id = (self.templates.len() + new.len()) as u32;
                    self.template_ids.insert(self.scratch.clone(), id);
                    new.push(self.scratch.clone());
                    id
                }
            };
            ids.push(id);
        }
        if !new.is_empty() {
            let refs: Vec<&str> = new.iter().map(String::as_str).collect();
            for (template, (embedding, error)) in new.iter().zip(self.model.embed(&refs)) {
                self.templates.push(Template {
                    class: self.model.class_of(template),
                    embedding,
                    reconstruction_error: error,
                });
            }
            self.stats.templates = self.templates.len() as u64;
        }
        ids
    }

    fn context(session: &Session, current: &str) -> String {
        let len = session.messages.iter().map(|m| m.len() + 5).sum::<usize>() + current.len();
        let mut context = String::with_capacity(len);
        for message in &session.messages {
            context.push_str(message);
            context.push_str(" → ");
        }
        context.push_str(current);
        context
    }

    /// A session is over: its end becomes an event, scored against its last window.
    fn end_event(&mut self, key: Arc<str>, session: Session, at: i64, why: &str) -> Pending {
        self.stats.sessions_ended += 1;
        let message = format!("session {key} ended ({why}) after {} lines", session.lines);
        let timestamp = chrono::DateTime::from_timestamp(at, 0).unwrap_or_else(chrono::Utc::now);
        let mut event = Event::from_str(&message, timestamp, session.origin.clone());
        event.fields.insert(SESSION_END_FIELD, Value::Bool(true));
        let context = Self::context(&session, "(end)");
        Pending {
            event,
            session: key,
            window: session.window.into_boxed_slice(),
            class: self.model.end_class(),
            unseen_error: None,
            context,
        }
    }

    /// Scores a batch of events; returns them enriched, in order, with session-end events
    /// inserted where sessions ended.
    pub fn process(&mut self, events: Vec<Event>) -> Vec<Event> {
        let ids = self.intern(&events);
        let mut pending = Vec::with_capacity(events.len());
        for (event, id) in events.into_iter().zip(ids) {
            let now = leading_timestamp(event.message()).unwrap_or(event.timestamp.timestamp());
            if self.clock.is_none_or(|(latest, _)| now >= latest) {
                self.clock = Some((now, std::time::Instant::now()));
            }
            for (key, session) in self.sessions.expire(now) {
                let end = self.end_event(key, session, now, "idle");
                pending.push(end);
            }
            let key = self.session_of(&event);
            let origin = event.origin.clone();
            let (session, session_name, evicted) = self.sessions.touch(&key, now, || Session {
                window: Vec::new(),
                messages: Vec::new(),
                lines: 0,
                origin,
            });
            let window: Box<[u32]> = session.window.as_slice().into();
            let context = Self::context(session, event.message());
            session.lines += 1;
            if session.window.len() == self.sequence_length {
                session.window.remove(0);
                session.messages.remove(0);
            }
            session.window.push(id);
            session.messages.push(clip(event.message()));
            let template = &self.templates[id as usize];
            let (class, unseen_error) = match template.class {
                Some(class) => (class, None),
                None => (
                    self.model.unknown_class(),
                    Some(template.reconstruction_error),
                ),
            };
            if let Some((key, old)) = evicted {
                self.stats.sessions_evicted += 1;
                let end = self.end_event(key, old, now, "evicted");
                pending.push(end);
            }
            pending.push(Pending {
                event,
                session: session_name,
                window,
                class,
                unseen_error,
                context,
            });
        }
        self.score(pending)
    }

    /// A quiet stream: ends the sessions idle past the TTL by the log clock, advanced by the
    /// wall-clock time since the last event. Called periodically while no events arrive, so a
    /// session whose logs simply stop is still judged.
    pub fn tick(&mut self) -> Vec<Event> {
        let Some((latest, seen_at)) = self.clock else {
            return Vec::new();
        };
        let now = latest + seen_at.elapsed().as_secs() as i64;
        let mut pending = Vec::new();
        for (key, session) in self.sessions.expire(now) {
            pending.push(self.end_event(key, session, now, "idle"));
        }
        self.score(pending)
    }

    /// End of input: every open session ends now.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut pending = Vec::new();
        for (key, session) in self.sessions.drain() {
            let at = chrono::Utc::now().timestamp();
            pending.push(self.end_event(key, session, at, "end of input"));
        }
        self.score(pending)
    }

    fn score(&mut self, pending: Vec<Pending>) -> Vec<Event> {
        if self.windows.len() > MAX_CACHED_WINDOWS {
            self.windows.clear();
        }
        // Distinct windows not in the cache, scored in one batch.
        let mut missing: Vec<&[u32]> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in &pending {
            if !self.windows.contains_key(&p.window) && seen.insert(&p.window) {
                missing.push(&p.window);
            }
        }
        if !missing.is_empty() {
            let inputs: Vec<Vec<&[f32]>> = missing
                .iter()
                .map(|w| {
                    w.iter()
                        .map(|&id| self.templates[id as usize].embedding.as_slice())
                        .collect()
                })
                .collect();
            let outputs = self.model.log_probs(&inputs);
            self.stats.detector_windows += missing.len() as u64;
            for (window, log_probs) in missing.into_iter().zip(outputs) {
                self.windows.insert(window.into(), log_probs.into());
            }
        }
        let scale = self.model.reconstruction_scale().max(1e-6);
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            // A template never seen in training has no class of its own: its probability is
            // taken as nil, and how unlike the training templates it is decides by how much.
            let score = match p.unseen_error {
                Some(error) => MAX_SURPRISE + f64::from(error) / scale,
                None => {
                    let log_probs = &self.windows[&p.window];
                    (-f64::from(log_probs[p.class])).clamp(0.0, MAX_SURPRISE)
                }
            };
            let verdict = self.threshold.observe(score);
            self.stats.scored += 1;
            self.stats.anomalies += u64::from(verdict.is_anomaly);
            let mut event = p.event;
            event
                .fields
                .insert(SESSION_FIELD, Value::Str(p.session.to_string()));
            event
                .fields
                .insert(keys::ANOMALY_SCORE, Value::Float(score));
            event
                .fields
                .insert(keys::ANOMALY_THRESHOLD, Value::Float(verdict.threshold));
            event
                .fields
                .insert(keys::IS_ANOMALY, Value::Bool(verdict.is_anomaly));
            event
                .fields
                .insert(keys::CONTEXT_WINDOW, Value::Str(p.context));
            out.push(event);
        }
        out
    }
}
