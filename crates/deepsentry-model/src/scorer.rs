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
//! like any other event (a block allocated and never written ends too early). The end is also
//! where the model's count invariants are checked: a session whose template counts end out of
//! balance scores as an impossible event, and its end event names the broken relation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use deepsentry_core::event::keys;
use deepsentry_core::{Event, Origin, Value};
use regex::Regex;

use crate::invariants::Invariant;
use crate::normalize::template_into;
use crate::sessions::SessionStore;
use crate::threshold::AdaptiveThreshold;
use crate::timestamp::leading_timestamp;

/// Field naming the session an event belongs to.
pub const SESSION_FIELD: &str = "session";
/// Field set on the synthetic event that marks a session's end.
pub const SESSION_END_FIELD: &str = "session_end";
/// Field of a session-end event whose template counts broke one of the model's invariants.
pub const BROKEN_INVARIANT_FIELD: &str = "broken_invariant";

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
    /// Count relations every normal session satisfies when it ends.
    fn invariants(&self) -> &[Invariant] {
        &[]
    }
    /// The training templates, in class order (to explain a broken invariant).
    fn templates(&self) -> &[String] {
        &[]
    }
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
    /// Counts of the templates the invariants name (see [`InvariantCheck`]).
    counts: Box<[u16]>,
}

/// The model's invariants over a compact counter per session: only templates an invariant
/// names are counted, so a session costs a few bytes more, not one counter per template.
struct InvariantCheck {
    invariants: Vec<Invariant>,
    /// Counter slot of each template class (`None`: no invariant names it).
    slot_of: Vec<Option<u16>>,
    slots: usize,
}

impl InvariantCheck {
    fn new(invariants: &[Invariant]) -> Self {
        let classes = invariants
            .iter()
            .flat_map(|i| i.terms.iter().map(|t| t.0 + 1))
            .max()
            .unwrap_or(0);
        let mut slot_of = vec![None; classes];
        let mut slots = 0u16;
        for invariant in invariants {
            for &(class, _) in &invariant.terms {
                if slot_of[class].is_none() {
                    slot_of[class] = Some(slots);
                    slots += 1;
                }
            }
        }
        Self {
            invariants: invariants.to_vec(),
            slot_of,
            slots: usize::from(slots),
        }
    }

    fn count(&self, counts: &mut [u16], class: usize) {
        if let Some(Some(slot)) = self.slot_of.get(class) {
            let c = &mut counts[usize::from(*slot)];
            *c = c.saturating_add(1);
        }
    }

    /// The broken relations of a session, in words.
    fn broken(&self, counts: &[u16], templates: &[String]) -> Vec<String> {
        let count = |class: usize| {
            self.slot_of
                .get(class)
                .copied()
                .flatten()
                .map_or(0, |slot| u32::from(counts[usize::from(slot)]))
        };
        self.invariants
            .iter()
            .filter(|i| i.residual(count) != 0)
            .map(|i| i.describe(templates, count))
            .collect()
    }
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
    /// Sessions that ended with an invariant broken.
    pub broken_invariants: u64,
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
    invariants: InvariantCheck,
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
    /// For a session end: the invariants its counts broke.
    broken: Vec<String>,
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
            invariants: InvariantCheck::new(model.invariants()),
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
        let broken = self
            .invariants
            .broken(&session.counts, self.model.templates());
        self.stats.broken_invariants += u64::from(!broken.is_empty());
        let mut message = format!("session {key} ended ({why}) after {} lines", session.lines);
        if !broken.is_empty() {
            // In the message too, so every output format shows why.
            message.push_str("; counts out of balance: ");
            message.push_str(&broken.join("; "));
        }
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
            broken,
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
            let slots = self.invariants.slots;
            let (session, session_name, evicted) = self.sessions.touch(&key, now, || Session {
                window: Vec::new(),
                messages: Vec::new(),
                lines: 0,
                origin,
                counts: vec![0; slots].into_boxed_slice(),
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
                Some(class) => {
                    self.invariants.count(&mut session.counts, class);
                    (class, None)
                }
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
                broken: Vec::new(),
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
            let mut score = match p.unseen_error {
                Some(error) => MAX_SURPRISE + f64::from(error) / scale,
                None => {
                    let log_probs = &self.windows[&p.window];
                    (-f64::from(log_probs[p.class])).clamp(0.0, MAX_SURPRISE)
                }
            };
            if !p.broken.is_empty() {
                // No training session ended like this: as surprising as an event can be.
                score = score.max(MAX_SURPRISE);
            }
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
            if !p.broken.is_empty() {
                event
                    .fields
                    .insert(BROKEN_INVARIANT_FIELD, Value::Str(p.broken.join("; ")));
            }
            out.push(event);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two templates, `open` and `close`, that must come in pairs; every continuation equally
    /// likely, so only the invariant can flag anything.
    struct PairedModel {
        invariants: Vec<Invariant>,
        templates: Vec<String>,
    }

    impl PairedModel {
        fn new() -> Self {
            Self {
                invariants: vec![Invariant {
                    terms: vec![(0, 1), (1, -1)],
                    support: 100,
                    violations: 0,
                }],
                templates: vec!["open".into(), "close".into()],
            }
        }
    }

    impl SequenceModel for PairedModel {
        fn sequence_length(&self) -> usize {
            2
        }
        fn class_of(&self, template: &str) -> Option<usize> {
            // Whatever the normalizer makes of the session id, the first word decides.
            self.templates
                .iter()
                .position(|t| template.split(' ').next() == Some(t.as_str()))
        }
        fn end_class(&self) -> usize {
            2
        }
        fn unknown_class(&self) -> usize {
            3
        }
        fn embed(&self, templates: &[&str]) -> Vec<(Vec<f32>, f32)> {
            templates.iter().map(|_| (vec![0.0], 0.0)).collect()
        }
        fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>> {
            windows.iter().map(|_| vec![(0.25f32).ln(); 4]).collect()
        }
        fn score_floor(&self) -> f64 {
            5.0
        }
        fn reconstruction_scale(&self) -> f64 {
            1.0
        }
        fn invariants(&self) -> &[Invariant] {
            &self.invariants
        }
        fn templates(&self) -> &[String] {
            &self.templates
        }
    }

    fn scorer() -> Scorer<Box<PairedModel>> {
        Scorer::new(
            Box::new(PairedModel::new()),
            ScorerSettings {
                window_size: 100,
                threshold_multiplier: 2.5,
                min_samples: 0,
                exclude_anomalies: true,
                threshold_floor: None,
                session_key: SessionKey::Regex(Regex::new(r"s\d+").unwrap()),
                session_ttl_secs: 3600,
                max_sessions: 100,
            },
        )
    }

    fn events(lines: &[&str]) -> Vec<Event> {
        let origin = Origin::new("test", "test");
        let now = chrono::Utc::now();
        lines
            .iter()
            .map(|l| Event::from_str(l, now, Arc::clone(&origin)))
            .collect()
    }

    #[test]
    fn a_session_ending_out_of_balance_is_flagged_and_explained() {
        let mut scorer = scorer();
        let scored = scorer.process(events(&[
            "open s1", "open s2", "close s1", "open s2", "close s2",
        ]));
        assert!(scored
            .iter()
            .all(|e| e.fields.get(keys::IS_ANOMALY) == Some(&Value::Bool(false))));
        let ends = scorer.finish();
        assert_eq!(ends.len(), 2);
        let end = |name: &str| {
            ends.iter()
                .find(|e| e.fields.get(SESSION_FIELD) == Some(&Value::Str(name.into())))
                .unwrap()
        };
        let balanced = end("s1");
        assert_eq!(
            balanced.fields.get(keys::IS_ANOMALY),
            Some(&Value::Bool(false))
        );
        assert_eq!(balanced.fields.get(BROKEN_INVARIANT_FIELD), None);
        let broken = end("s2");
        assert_eq!(
            broken.fields.get(keys::IS_ANOMALY),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            broken.fields.get(keys::ANOMALY_SCORE),
            Some(&Value::Float(MAX_SURPRISE))
        );
        assert_eq!(
            broken.fields.get(BROKEN_INVARIANT_FIELD),
            Some(&Value::Str(
                "count(`open`) = count(`close`) (here 2 vs 1)".into()
            ))
        );
        assert!(broken.message().ends_with(
            "after 3 lines; counts out of balance: count(`open`) = count(`close`) (here 2 vs 1)"
        ));
        assert_eq!(scorer.stats().broken_invariants, 1);
    }
}
