//! The streaming detector: from events to scored events. The `deepsentry` transform and the
//! `eval` command both run this code, so an evaluation measures exactly what production does.
//!
//! For each batch of events:
//! 1. every message is normalized to its template. A template not yet in the vocabulary is
//!    encoded by the text autoencoder: a training template keeps its class, a template close
//!    to a training template (its embedding nearly the same) is a variant of that one, and any
//!    other joins the online vocabulary (bounded; the least recently seen evicted);
//! 2. each event joins its session; its window is the templates of the session's previous
//!    `sequence_length` events;
//! 3. every distinct window not yet in the cache is scored by the sequence detector, in one
//!    batched forward pass;
//! 4. the event's score, in nats of surprise, and its reason:
//!    - a template the detector knows: `-ln p(template | window)` (`unlikely_next`);
//!    - a template learned online, on its first [`LEARNING_OCCURRENCES`] occurrences: how
//!      rarely this system's normal logs bring a new template of its severity, as learned in
//!      training (`new_template`): a system whose templates never change flags it, one that
//!      keeps producing new INFO lines does not, and a level rare in training makes it more
//!      surprising;
//!    - later on: how rare it still is, `-ln(occurrences / lines since it first came)`, raised,
//!      in a system that never brought new templates of its severity in training, by that
//!      lasting novelty (`rare_template`);
//!
//!    the adaptive threshold gives the verdict, and anomalies of one template and reason are
//!    grouped into one alert (see [`crate::alerts`]).
//!
//! A session that stays idle past `session_ttl` (in the events' own clock), is evicted past
//! `max_sessions`, or is still open at the end of input gets one more event: its end, scored
//! like any other event (a block allocated and never written ends too early). The end is also
//! where the model's count invariants are checked: a session whose template counts end out of
//! balance scores as an impossible event, and its end event names the broken relation.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;

use deepsentry_core::event::keys;
use deepsentry_core::{Event, Origin, Value};
use regex::Regex;

use crate::alerts::{AlertGroups, Reason};
use crate::invariants::{Invariant, InvariantCheck};
use crate::normalize::template_into;
use crate::novelty::{
    NoveltyStats, Occurrences, OnlineState, TemplateInfo, Vocabulary, VocabularyLimits,
};
use crate::sessions::SessionStore;
use crate::severity::{severity_of, Severity};
use crate::threshold::AdaptiveThreshold;

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
/// Occurrences of a template learned online that are judged by novelty; from the next one on,
/// by rarity: a new template that turns common stops alerting.
pub const LEARNING_OCCURRENCES: u64 = 5;
/// What `expected` names for the end of a session.
const END_OF_SESSION: &str = "(end of session)";

/// How the scorer sees one template after the autoencoder encoded it.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The vector the detector reads.
    pub vector: Vec<f32>,
    /// The reconstruction error.
    pub error: f32,
    /// The training class: the template's own, or that of the training template it is a
    /// variant of.
    pub class: Option<usize>,
    /// Whether `class` is a similar training template's.
    pub variant: bool,
}

/// What the scorer needs from a trained model; [`crate::bundle::LoadedModel`] is the real one.
pub trait SequenceModel {
    /// How many previous events form a window.
    fn sequence_length(&self) -> usize;
    /// The class meaning "the session ended".
    fn end_class(&self) -> usize;
    /// Encodes templates in one batch: vectors, errors and the classes they map to.
    fn embed(&self, templates: &[&str]) -> Vec<Embedded>;
    /// Log-probabilities of every class after each window; a window is the vectors of up to
    /// `sequence_length` previous events, oldest first.
    fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>>;
    /// The score below which nothing is flagged, learned in training.
    fn score_floor(&self) -> f64;
    /// How often the system brings new templates, and how common each severity is.
    fn novelty(&self) -> &NoveltyStats;
    /// Whether the model learned where sessions end (trained on many sessions); when not, a
    /// session's end is reported but never flagged.
    fn judges_session_ends(&self) -> bool {
        true
    }
    /// Count relations every normal session satisfies when it ends.
    fn invariants(&self) -> &[Invariant] {
        &[]
    }
    /// The training templates, in class order (to explain a broken invariant, to name the
    /// expected templates).
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
    /// Anomalies of one template and reason within this many seconds are one alert.
    pub alert_group_secs: i64,
    /// Bounds of the online vocabulary.
    pub vocabulary: VocabularyLimits,
    /// Name of a field holding the event's level (decoded by a source), read before the line's
    /// own words; `None` reads the first of [`crate::severity::LEVEL_FIELDS`] the event has.
    pub level_field: Option<String>,
    /// The floor for the surprise of templates learned online (nats): a new template is
    /// alarming when this system's normal logs bring one as rarely as `e^-floor` per line.
    pub novelty_floor: f64,
    /// A line dated more than this many seconds after the time it is scored does not move the
    /// log clock (which ends idle sessions).
    pub max_clock_skew_secs: i64,
}

/// The default [`ScorerSettings::novelty_floor`]: one line in 200.
pub const NOVELTY_FLOOR: f64 = 5.298_317_366_548_036;

impl Default for ScorerSettings {
    /// The `deepsentry` transform's defaults, one session per stream.
    fn default() -> Self {
        Self {
            window_size: 100,
            threshold_multiplier: 2.5,
            min_samples: 20,
            exclude_anomalies: true,
            threshold_floor: None,
            session_key: SessionKey::Stream,
            session_ttl_secs: 3600,
            max_sessions: 100_000,
            alert_group_secs: 60,
            vocabulary: VocabularyLimits::default(),
            level_field: None,
            novelty_floor: NOVELTY_FLOOR,
            max_clock_skew_secs: 300,
        }
    }
}

struct Session {
    /// Templates of the last `sequence_length` events.
    window: Vec<Arc<TemplateInfo>>,
    /// Their messages, for the context window.
    messages: Vec<Box<str>>,
    lines: u64,
    origin: Arc<Origin>,
    /// Counts of the templates the invariants name (see [`InvariantCheck`]).
    counts: Box<[u16]>,
}

/// Counters the scorer keeps for its owner to report.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScorerStats {
    /// Events scored (session ends included).
    pub scored: u64,
    /// Events flagged.
    pub anomalies: u64,
    /// Anomalies sent as alerts (the first of each alert group).
    pub alerts: u64,
    /// Templates known (training and online).
    pub templates: u64,
    /// Templates learned online so far (every one, evicted or not).
    pub templates_learned: u64,
    /// Online templates evicted to stay within the vocabulary's bounds.
    pub templates_evicted: u64,
    /// Bytes the online vocabulary takes.
    pub vocabulary_bytes: u64,
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
    vocabulary: Vocabulary,
    windows: HashMap<Box<[u64]>, Arc<[f32]>>,
    sessions: SessionStore<Session>,
    threshold: AdaptiveThreshold,
    invariants: InvariantCheck,
    alerts: AlertGroups,
    stats: ScorerStats,
    scratch: String,
    /// Lines scored so far (the online vocabulary's clock).
    lines_seen: u64,
    /// The latest event time seen (log clock), and when (wall clock) it was seen.
    clock: Option<(i64, std::time::Instant)>,
}

/// Largest number of cached windows before the cache is cleared (bounds memory).
const MAX_CACHED_WINDOWS: usize = 200_000;

/// What an event is, for scoring.
enum Kind {
    /// A template the detector has a class for.
    Known(usize),
    /// A template learned online, with what was known of it before this occurrence.
    Online(Occurrences),
    /// A session's end.
    End,
}

/// One event on its way through [`Scorer::process`]: its session and window are known, its
/// probabilities may still be missing.
struct Pending {
    event: Event,
    session: Arc<str>,
    window: Window,
    /// The window's template ids: its key in the cache of detector outputs.
    window_key: Box<[u64]>,
    kind: Kind,
    template: Arc<str>,
    /// What its alerts are grouped by: the template, or the first of its online family.
    alert_key: Arc<str>,
    severity: Severity,
    /// The event's time (log clock), for alert grouping.
    at: i64,
    /// The scorer's line counter at this event.
    line: u64,
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

/// The templates of a session's last events, oldest first.
type Window = Vec<Arc<TemplateInfo>>;

fn window_key(window: &[Arc<TemplateInfo>]) -> Box<[u64]> {
    window.iter().map(|t| t.id).collect()
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
            invariants: InvariantCheck::new(model.invariants(), model.templates()),
            sequence_length: model.sequence_length(),
            model,
            sessions: SessionStore::new(settings.session_ttl_secs, settings.max_sessions),
            vocabulary: Vocabulary::new(settings.vocabulary),
            alerts: AlertGroups::new(settings.alert_group_secs),
            settings,
            windows: HashMap::new(),
            threshold,
            stats: ScorerStats::default(),
            scratch: String::new(),
            lines_seen: 0,
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

    /// The model handle itself (e.g. a shared `Arc`), for work beside the scorer.
    pub fn model_handle(&self) -> &M {
        &self.model
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// What the online vocabulary learned, to keep across a restart.
    pub fn online_state(&self) -> OnlineState {
        let mut templates: Vec<(String, Occurrences)> = self
            .vocabulary
            .online()
            .filter(|(_, seen)| seen.count > 0)
            .map(|(t, seen)| (t.to_string(), seen))
            .collect();
        // In the order first seen: the first of a family is learned again before its variants.
        templates.sort_by(|a, b| (a.1.first_seen, &a.0).cmp(&(b.1.first_seen, &b.0)));
        OnlineState {
            lines_seen: self.lines_seen,
            templates,
        }
    }

    /// Takes back what an earlier run learned online (templates are encoded again, in one
    /// batch: the model may have changed since).
    pub fn restore_online_state(&mut self, mut state: OnlineState) {
        self.lines_seen = self.lines_seen.max(state.lines_seen);
        // Files written before families were kept are in text order.
        state
            .templates
            .sort_by(|a, b| (a.1.first_seen, &a.0).cmp(&(b.1.first_seen, &b.0)));
        let texts: Vec<&str> = state.templates.iter().map(|(t, _)| t.as_str()).collect();
        self.learn_templates(&texts);
        for (text, seen) in &state.templates {
            self.vocabulary.restore(text, *seen);
        }
    }

    /// Puts `model` in place of the running one between two batches (a retrained model): the
    /// templates learned online and those in open sessions' windows are encoded again by it
    /// (one it now knows leaves the online part), the cache of detector outputs is emptied, the
    /// threshold's floor becomes the new model's unless the settings fix one, and the recent
    /// scores stay. Sessions open at the swap keep their windows but are not judged by the new
    /// model's invariants: their counts began under the old one. Fails, changing nothing, when
    /// the model reads windows of another length.
    pub fn replace_model(&mut self, model: M) -> anyhow::Result<()> {
        anyhow::ensure!(
            model.sequence_length() == self.sequence_length,
            "the new model reads windows of {} events, the running one {}",
            model.sequence_length(),
            self.sequence_length
        );
        let online = self.online_state();
        let held: Vec<Arc<str>> = self
            .sessions
            .values_mut()
            .flat_map(|s| s.window.iter().map(|t| t.text.clone()))
            .collect();
        let learned_before = self.stats.templates_learned;
        self.model = model;
        self.vocabulary.forget_all();
        self.windows.clear();
        self.invariants = InvariantCheck::new(self.model.invariants(), self.model.templates());
        let floor = self
            .settings
            .threshold_floor
            .unwrap_or_else(|| self.model.score_floor());
        self.threshold.set_floor(floor);
        let mut texts: Vec<&str> = online.templates.iter().map(|(t, _)| t.as_str()).collect();
        texts.extend(held.iter().map(|t| &**t));
        let learned = self.learn_templates(&texts);
        for (text, seen) in &online.templates {
            self.vocabulary.restore(text, *seen);
        }
        for session in self.sessions.values_mut() {
            for template in &mut session.window {
                if let Some(info) = learned.get(&*template.text) {
                    *template = info.clone();
                }
            }
            session.counts = Box::default();
        }
        // Templates encoded again are not learned again.
        self.stats.templates_learned = learned_before;
        Ok(())
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

    /// Encodes templates not yet in the vocabulary, in one batch, and adds them; returns what
    /// it made of each (valid even if the vocabulary's bounds evicted it again at once).
    fn learn_templates<'t>(&mut self, texts: &[&'t str]) -> HashMap<&'t str, Arc<TemplateInfo>> {
        let new: Vec<&str> = {
            let mut seen = HashSet::new();
            texts
                .iter()
                .copied()
                .filter(|t| self.vocabulary.get(t).is_none() && seen.insert(*t))
                .collect()
        };
        let mut learned = HashMap::with_capacity(new.len());
        if new.is_empty() {
            return learned;
        }
        for (text, embedded) in new.iter().zip(self.model.embed(&new)) {
            let online = embedded.class.is_none() || embedded.variant;
            // Unlike any training template: it may still be a variant of one learned online.
            let family = match embedded.class {
                None => self.vocabulary.family_of(text),
                Some(_) => None,
            };
            let info = TemplateInfo {
                id: self.vocabulary.next_id(),
                text: Arc::from(*text),
                class: embedded.class,
                variant: embedded.variant,
                family,
                vector: embedded.vector,
                reconstruction_error: embedded.error,
                severity: severity_of(text),
            };
            learned.insert(*text, self.vocabulary.insert(info));
            self.stats.templates_learned += u64::from(online);
        }
        self.stats.templates = self.vocabulary.len() as u64;
        self.stats.templates_evicted = self.vocabulary.evicted();
        self.stats.vocabulary_bytes = self.vocabulary.online_bytes() as u64;
        learned
    }

    /// The templates of `events`, encoding new ones in one batch. A known template costs a
    /// lookup, no allocation.
    fn intern(&mut self, events: &[Event]) -> Vec<Arc<TemplateInfo>> {
        let mut infos: Vec<Option<Arc<TemplateInfo>>> = Vec::with_capacity(events.len());
        let mut unknown: Vec<(usize, String)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            template_into(event.message(), &mut self.scratch);
            match self.vocabulary.get(&self.scratch) {
                Some((info, _)) => infos.push(Some(info.clone())),
                None => {
                    infos.push(None);
                    unknown.push((i, self.scratch.clone()));
                }
            }
        }
        if !unknown.is_empty() {
            let texts: Vec<&str> = unknown.iter().map(|(_, t)| t.as_str()).collect();
            // A batch holding one template many times encodes it once.
            let learned = self.learn_templates(&texts);
            for (i, text) in &unknown {
                infos[*i] = learned
                    .get(text.as_str())
                    .cloned()
                    .or_else(|| self.vocabulary.get(text).map(|(info, _)| info.clone()));
            }
        }
        infos
            .into_iter()
            .map(|info| info.expect("every template of the batch was learned"))
            .collect()
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
        let broken = self.invariants.broken(&session.counts);
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
            window_key: window_key(&session.window),
            window: session.window,
            kind: Kind::End,
            template: Arc::from(END_OF_SESSION),
            alert_key: Arc::from(END_OF_SESSION),
            severity: Severity::Info,
            at,
            line: self.lines_seen,
            context,
            broken,
        }
    }

    /// The severity of an event: its decoded level field where the settings name one and the
    /// event has it, else what its template says.
    fn severity(&self, event: &Event, template: &TemplateInfo) -> Severity {
        match crate::severity::level_of(event, self.settings.level_field.as_deref()) {
            Some(level) => crate::severity::severity_with_level(&template.text, &level.to_string()),
            None => template.severity,
        }
    }

    /// Scores a batch of events; returns them enriched, in order, with session-end events
    /// inserted where sessions ended.
    pub fn process(&mut self, events: Vec<Event>) -> Vec<Event> {
        let templates = self.intern(&events);
        let mut pending = Vec::with_capacity(events.len());
        let wall = chrono::Utc::now().timestamp();
        for (event, template) in events.into_iter().zip(templates) {
            // The line's own time where it leads with one; else the event's time, which a
            // source sets from the line or a decoded field, or to the arrival.
            let stamped =
                deepsentry_core::timestamp::leading(event.message_bytes(), event.timestamp)
                    .unwrap_or(event.timestamp)
                    .timestamp();
            // A line dated far ahead of the clock (a wrong clock, a mistyped year) would end
            // every open session as idle: its time does not move the log clock.
            let now = if stamped > wall.saturating_add(self.settings.max_clock_skew_secs) {
                self.clock.map_or(wall, |(latest, _)| latest)
            } else {
                stamped
            };
            if self.clock.is_none_or(|(latest, _)| now >= latest) {
                self.clock = Some((now, std::time::Instant::now()));
            }
            for (key, session) in self.sessions.expire(now) {
                let end = self.end_event(key, session, now, "idle");
                pending.push(end);
            }
            self.lines_seen += 1;
            let line = self.lines_seen;
            let kind = match template.class {
                Some(class) => {
                    if template.variant {
                        self.vocabulary.observe(&template.text, line);
                    }
                    Kind::Known(class)
                }
                None => match self.vocabulary.observe(&template.text, line) {
                    Some(before) => Kind::Online(before),
                    // Evicted since it was interned: as new as it gets.
                    None => Kind::Online(Occurrences {
                        count: 0,
                        first_seen: line,
                        last_seen: line,
                    }),
                },
            };
            let severity = self.severity(&event, &template);
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
            let window = session.window.clone();
            let context = Self::context(session, event.message());
            session.lines += 1;
            if session.window.len() == self.sequence_length {
                session.window.remove(0);
                session.messages.remove(0);
            }
            session.window.push(template.clone());
            session.messages.push(clip(event.message()));
            if let Kind::Known(class) = kind {
                if !template.variant {
                    self.invariants.count(&mut session.counts, class);
                }
            }
            if let Some((key, old)) = evicted {
                self.stats.sessions_evicted += 1;
                let end = self.end_event(key, old, now, "evicted");
                pending.push(end);
            }
            pending.push(Pending {
                event,
                session: session_name,
                window_key: window_key(&window),
                window,
                kind,
                template: template.text.clone(),
                alert_key: template
                    .family
                    .clone()
                    .unwrap_or_else(|| template.text.clone()),
                severity,
                at: now,
                line,
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
        self.finish_some(usize::MAX)
    }

    /// End of input, a chunk at a time: up to `max` open sessions (the least recently active)
    /// end now; an empty result means none is left. A caller that sends each chunk before
    /// asking for the next holds the events of `max` session ends at most, however many
    /// sessions were open.
    pub fn finish_some(&mut self, max: usize) -> Vec<Event> {
        let at = self
            .clock
            .map_or_else(|| chrono::Utc::now().timestamp(), |(latest, _)| latest);
        let mut pending = Vec::new();
        for (key, session) in self.sessions.drain_oldest(max) {
            pending.push(self.end_event(key, session, at, "end of input"));
        }
        self.score(pending)
    }

    /// The three classes the detector found most likely, as `expected`.
    fn expected(&self, log_probs: &[f32]) -> Value {
        let templates = self.model.templates();
        let end = self.model.end_class();
        let mut ranked: Vec<(usize, f32)> = log_probs
            .iter()
            .copied()
            .enumerate()
            .filter(|&(class, _)| class < templates.len() || class == end)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list = ranked
            .into_iter()
            .take(3)
            .map(|(class, log_p)| {
                let name = templates.get(class).map_or(END_OF_SESSION, String::as_str);
                let p = (f64::from(log_p).exp() * 1000.0).round() / 1000.0;
                serde_json::json!({ "template": name, "p": p })
            })
            .collect();
        Value::Json(serde_json::Value::Array(list))
    }

    /// The score and reason of an event whose window's probabilities are known.
    fn score_of(&self, p: &Pending, log_probs: Option<&[f32]>) -> (f64, Reason) {
        let surprise = |class: usize| {
            log_probs.map_or(MAX_SURPRISE, |lp| {
                (-f64::from(lp[class])).clamp(0.0, MAX_SURPRISE)
            })
        };
        let novelty = self.model.novelty();
        match &p.kind {
            Kind::Known(class) => (surprise(*class), Reason::UnlikelyNext),
            Kind::End if !p.broken.is_empty() => {
                // No training session ended like this: as surprising as an event can be.
                (MAX_SURPRISE, Reason::BrokenInvariant)
            }
            Kind::End if !self.model.judges_session_ends() => (0.0, Reason::None),
            Kind::End => (surprise(self.model.end_class()), Reason::SessionEndedEarly),
            Kind::Online(before) => {
                let new = novelty.new_template_surprise(p.severity).min(MAX_SURPRISE);
                // Rarity: how often it came since it first did (this occurrence excluded).
                let rarity = if before.count == 0 {
                    0.0
                } else {
                    let span = p.line.saturating_sub(before.first_seen).max(1) as f64;
                    (span / before.count as f64).ln().clamp(0.0, MAX_SURPRISE)
                };
                if before.count < LEARNING_OCCURRENCES {
                    (new.max(rarity), Reason::NewTemplate)
                } else {
                    let score = rarity + novelty.lasting_novelty(p.severity);
                    (score.min(MAX_SURPRISE), Reason::RareTemplate)
                }
            }
        }
    }

    fn score(&mut self, pending: Vec<Pending>) -> Vec<Event> {
        if self.windows.len() > MAX_CACHED_WINDOWS {
            self.windows.clear();
        }
        // Distinct windows not in the cache, scored in one batch. Events of online templates
        // need none unless they end a session.
        let mut missing: Vec<(&[u64], &Window)> = Vec::new();
        let mut seen = HashSet::new();
        for p in &pending {
            if matches!(p.kind, Kind::Online(_)) {
                continue;
            }
            let key = &*p.window_key;
            if !self.windows.contains_key(key) && seen.insert(key) {
                missing.push((key, &p.window));
            }
        }
        if !missing.is_empty() {
            let inputs: Vec<Vec<&[f32]>> = missing
                .iter()
                .map(|(_, w)| w.iter().map(|t| t.vector.as_slice()).collect())
                .collect();
            let outputs = self.model.log_probs(&inputs);
            self.stats.detector_windows += missing.len() as u64;
            for ((key, _), log_probs) in missing.into_iter().zip(outputs) {
                self.windows.insert(key.into(), log_probs.into());
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            let log_probs = match p.kind {
                Kind::Online(_) => None,
                _ => self.windows.get(&*p.window_key).cloned(),
            };
            let (score, reason) = self.score_of(&p, log_probs.as_deref());
            // A template's novelty is a probability learned from counts, not the detector's
            // output: it has its own floor.
            let verdict = match reason {
                Reason::NewTemplate | Reason::RareTemplate => self
                    .threshold
                    .observe_above(score, self.settings.novelty_floor),
                _ => self.threshold.observe(score),
            };
            self.stats.scored += 1;
            let reason = if verdict.is_anomaly {
                reason
            } else {
                Reason::None
            };
            let mut event = p.event;
            let fields = &mut event.fields;
            // The fields below, in one allocation.
            fields.reserve(12);
            fields.insert(SESSION_FIELD, Value::Str(p.session.to_string()));
            fields.insert(keys::ANOMALY_SCORE, Value::Float(score));
            fields.insert(keys::ANOMALY_THRESHOLD, Value::Float(verdict.threshold));
            fields.insert(keys::IS_ANOMALY, Value::Bool(verdict.is_anomaly));
            fields.insert(keys::ANOMALY_REASON, Value::Str(reason.as_str().into()));
            fields.insert(keys::TEMPLATE, Value::Str(p.template.to_string()));
            if p.severity >= Severity::Warn {
                fields.insert(keys::SEVERITY, Value::Str(p.severity.name().into()));
            }
            if verdict.is_anomaly {
                self.stats.anomalies += 1;
                if reason == Reason::UnlikelyNext {
                    if let Some(log_probs) = &log_probs {
                        fields.insert(keys::EXPECTED, self.expected(log_probs));
                    }
                }
                let mark = self.alerts.mark(&p.alert_key, reason, p.at);
                self.stats.alerts += u64::from(mark.alert);
                fields.insert(keys::ALERT, Value::Bool(mark.alert));
                fields.insert(keys::ALERT_GROUP, Value::Str(mark.group.to_string()));
                fields.insert(keys::ALERT_COUNT, Value::Int(mark.count as i64));
            } else {
                fields.insert(keys::ALERT, Value::Bool(false));
            }
            fields.insert(keys::CONTEXT_WINDOW, Value::Str(p.context));
            if !p.broken.is_empty() {
                fields.insert(BROKEN_INVARIANT_FIELD, Value::Str(p.broken.join("; ")));
            }
            out.push(event);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test models' classes: whatever the normalizer makes of the rest of a line, its first
    /// word decides.
    fn by_first_word(known: &[String], templates: &[&str]) -> Vec<Embedded> {
        templates
            .iter()
            .map(|template| Embedded {
                vector: vec![0.0],
                error: 0.0,
                class: known
                    .iter()
                    .position(|t| template.split(' ').next() == Some(t.as_str())),
                variant: false,
            })
            .collect()
    }

    /// Two templates, `open` and `close`, that must come in pairs; every continuation equally
    /// likely, so only the invariant can flag anything.
    struct PairedModel {
        invariants: Vec<Invariant>,
        templates: Vec<String>,
        novelty: NoveltyStats,
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
                novelty: NoveltyStats::default(),
            }
        }
    }

    impl SequenceModel for PairedModel {
        fn sequence_length(&self) -> usize {
            2
        }
        fn end_class(&self) -> usize {
            2
        }
        fn embed(&self, templates: &[&str]) -> Vec<Embedded> {
            by_first_word(&self.templates, templates)
        }
        fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>> {
            windows.iter().map(|_| vec![(0.25f32).ln(); 4]).collect()
        }
        fn score_floor(&self) -> f64 {
            5.0
        }
        fn novelty(&self) -> &NoveltyStats {
            &self.novelty
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
                alert_group_secs: 60,
                vocabulary: VocabularyLimits::default(),
                ..ScorerSettings::default()
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
    fn a_line_dated_far_ahead_does_not_end_the_open_sessions() {
        let mut scorer = scorer();
        let ends = |events: &[Event]| {
            events
                .iter()
                .filter(|e| e.fields.get(SESSION_END_FIELD).is_some())
                .count()
        };
        let scored = scorer.process(events(&[
            "2024-01-01T00:00:00Z open s1",
            "2024-01-01T00:00:01Z open s2",
            "2999-01-01T00:00:00Z open s3",
            "2024-01-01T00:00:02Z close s1",
        ]));
        assert_eq!(ends(&scored), 0, "a wrong date ends nothing");
        // The log clock still moves with believable times: two hours on, all three are idle.
        let scored = scorer.process(events(&["2024-01-01T02:00:00Z open s4"]));
        assert_eq!(ends(&scored), 3);
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

    #[test]
    fn sessions_open_at_a_model_swap_are_not_judged_by_counts_begun_under_the_old_model() {
        let mut scorer = scorer();
        scorer.process(events(&["open s1", "open s2", "close s2"]));
        scorer.replace_model(Box::new(PairedModel::new())).unwrap();
        // s1 closes after the swap; s3 lives wholly under the new model and ends unbalanced.
        scorer.process(events(&["close s1", "open s3", "open s3", "close s3"]));
        let ends = scorer.finish();
        let broken: Vec<String> = ends
            .iter()
            .filter(|e| e.fields.get(BROKEN_INVARIANT_FIELD).is_some())
            .map(|e| text(e, SESSION_FIELD))
            .collect();
        assert_eq!(broken, ["s3"]);
    }

    /// Known templates `alpha` and `beta` (the first word decides); after any window the
    /// detector expects `alpha` (p 0.9), `beta` less (0.09). Its training saw `later_new` new
    /// info templates in `later` lines.
    struct SteadyModel {
        templates: Vec<String>,
        novelty: NoveltyStats,
        /// The probabilities of every window: each class, the end, the unseen class.
        row: Vec<f32>,
    }

    impl SteadyModel {
        fn new(later: u64, later_new: u64) -> Self {
            let mut novelty = NoveltyStats {
                later_lines: later,
                ..NoveltyStats::default()
            };
            novelty.lines.info = 2 * later;
            novelty.later_new.info = later_new;
            Self {
                templates: vec!["alpha".into(), "beta".into()],
                novelty,
                row: vec![0.9f32.ln(), 0.09f32.ln(), 0.005f32.ln(), 0.005f32.ln()],
            }
        }

        /// The same model retrained on logs where `word` lines are as common as `alpha`.
        fn knowing(word: &str) -> Self {
            let mut model = Self::new(20_000, 0);
            model.templates.push(word.into());
            model.row = [0.45f32, 0.09, 0.45, 0.005, 0.005]
                .iter()
                .map(|p| p.ln())
                .collect();
            model
        }
    }

    impl SequenceModel for SteadyModel {
        fn sequence_length(&self) -> usize {
            3
        }
        fn end_class(&self) -> usize {
            self.templates.len()
        }
        fn embed(&self, templates: &[&str]) -> Vec<Embedded> {
            by_first_word(&self.templates, templates)
        }
        fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>> {
            windows.iter().map(|_| self.row.clone()).collect()
        }
        fn score_floor(&self) -> f64 {
            5.0
        }
        fn novelty(&self) -> &NoveltyStats {
            &self.novelty
        }
        fn templates(&self) -> &[String] {
            &self.templates
        }
    }

    fn steady(later: u64, later_new: u64) -> Scorer<Box<SteadyModel>> {
        Scorer::new(
            Box::new(SteadyModel::new(later, later_new)),
            ScorerSettings {
                min_samples: 0,
                ..ScorerSettings::default()
            },
        )
    }

    fn text(event: &Event, key: &str) -> String {
        event
            .fields
            .get(key)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    fn flagged(event: &Event) -> bool {
        event.fields.get(keys::IS_ANOMALY) == Some(&Value::Bool(true))
    }

    /// `lines` of normal traffic with `line(i)` in place of every `every`-th one.
    fn stream(lines: usize, every: usize, line: impl Fn(usize) -> String) -> Vec<String> {
        (0..lines)
            .map(|i| {
                if i % every == every - 1 {
                    line(i)
                } else {
                    ["alpha step", "alpha step", "beta step"][i % 3].to_string()
                }
            })
            .collect()
    }

    fn score_all(scorer: &mut Scorer<Box<SteadyModel>>, lines: &[String]) -> Vec<Event> {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        refs.chunks(16)
            .flat_map(|chunk| scorer.process(events(chunk)))
            .collect()
    }

    #[test]
    fn a_new_template_that_turns_common_is_flagged_a_few_times_then_learned() {
        // A system whose training never brought a new template in 20,000 lines.
        let mut scorer = steady(20_000, 0);
        let lines = stream(300, 4, |i| format!("cache warmed in {i} ms"));
        let scored = score_all(&mut scorer, &lines);
        let new: Vec<&Event> = scored
            .iter()
            .filter(|e| e.message().starts_with("cache warmed"))
            .collect();
        assert_eq!(new.len(), 75);
        assert!(flagged(new[0]), "flagged when it first appears");
        assert_eq!(text(new[0], keys::ANOMALY_REASON), "new_template");
        assert_eq!(text(new[0], keys::TEMPLATE), "cache warmed in <NUM> ms");
        let flags = new.iter().filter(|e| flagged(e)).count();
        assert!((1..=5).contains(&flags), "{flags} flags");
        assert!(
            new[5..].iter().all(|e| !flagged(e)),
            "not flagged from its sixth occurrence on"
        );
        // The known lines around it stay quiet.
        assert!(scored
            .iter()
            .filter(|e| e.message().starts_with("alpha"))
            .all(|e| !flagged(e)));
        assert_eq!(scorer.stats().templates_learned, 1);
    }

    #[test]
    fn a_new_template_that_stays_rare_keeps_scoring_high() {
        let mut scorer = steady(20_000, 0);
        let lines = stream(4000, 400, |_| "fan speed critical".to_string());
        let scored = score_all(&mut scorer, &lines);
        let rare: Vec<&Event> = scored
            .iter()
            .filter(|e| e.message().starts_with("fan speed"))
            .collect();
        assert_eq!(rare.len(), 10);
        assert!(rare.iter().all(|e| flagged(e)));
        assert_eq!(text(rare[9], keys::ANOMALY_REASON), "rare_template");
    }

    #[test]
    fn a_system_that_keeps_bringing_new_templates_is_not_alarmed_by_one() {
        // A quarter of the later training lines had templates the earlier part never showed.
        let mut scorer = steady(20_000, 5_000);
        let lines = stream(300, 4, |i| format!("user {i} opened page number{}", i % 7));
        let scored = score_all(&mut scorer, &lines);
        assert!(scored.iter().all(|e| !flagged(e)));
    }

    #[test]
    fn variants_of_a_new_template_are_one_statement() {
        // One new statement whose one field is a word the normalizer cannot mask.
        let mut scorer = steady(20_000, 0);
        let names = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"];
        let lines = stream(280, 4, |i| {
            format!("disk array {} rebuilt ok", names[i % 7])
        });
        let scored = score_all(&mut scorer, &lines);
        let new: Vec<&Event> = scored
            .iter()
            .filter(|e| e.message().starts_with("disk array"))
            .collect();
        assert_eq!(new.len(), 70);
        let flags = new.iter().filter(|e| flagged(e)).count();
        assert!((1..=5).contains(&flags), "{flags} flags");
        let alerts = new
            .iter()
            .filter(|e| e.fields.get(keys::ALERT) == Some(&Value::Bool(true)))
            .count();
        assert_eq!(alerts, 1, "one alert for the statement");
        // Each event still names its own template.
        assert!(new.iter().all(|e| text(e, keys::TEMPLATE) == e.message()));
    }

    #[test]
    fn what_was_learned_online_survives_a_restart() {
        let mut first = steady(20_000, 0);
        score_all(&mut first, &stream(120, 4, |_| "cache warmed".into()));
        let state = first.online_state();
        assert_eq!(state.templates.len(), 1);
        assert_eq!(state.templates[0].1.count, 30);
        let json = serde_json::to_string(&state).unwrap();
        let mut second = steady(20_000, 0);
        second.restore_online_state(serde_json::from_str(&json).unwrap());
        let scored = score_all(&mut second, &stream(40, 4, |_| "cache warmed".into()));
        assert!(
            scored.iter().all(|e| !flagged(e)),
            "a learned template is not new after a restart"
        );
        // A fresh scorer without the state flags it again.
        let mut fresh = steady(20_000, 0);
        let scored = score_all(&mut fresh, &stream(40, 4, |_| "cache warmed".into()));
        assert!(scored.iter().any(flagged));
    }

    #[test]
    fn a_retrained_model_takes_over_between_batches_with_what_was_learned() {
        let mut scorer = steady(20_000, 0);
        let before = score_all(&mut scorer, &stream(200, 4, |_| "cache warmed".into()));
        assert!(before.iter().any(flagged), "new to the first model");
        assert_eq!(scorer.online_state().templates.len(), 1);
        let learned = scorer.stats().templates_learned;

        scorer
            .replace_model(Box::new(SteadyModel::knowing("cache")))
            .unwrap();
        assert_eq!(scorer.model().templates().len(), 3);
        assert!(
            scorer.online_state().templates.is_empty(),
            "a template the new model knows leaves the online part"
        );
        assert_eq!(scorer.stats().templates_learned, learned);
        let after = score_all(&mut scorer, &stream(200, 2, |_| "cache warmed".into()));
        assert_eq!(after.len(), 200, "every event scored once");
        let cache: Vec<&Event> = after
            .iter()
            .filter(|e| e.message() == "cache warmed")
            .collect();
        assert_eq!(cache.len(), 100);
        assert!(cache.iter().all(|e| !flagged(e)));
        assert!(cache
            .iter()
            .all(|e| text(e, keys::ANOMALY_REASON) != "new_template"
                && text(e, keys::ANOMALY_REASON) != "rare_template"));
    }

    #[test]
    fn an_unexpected_known_template_says_what_was_expected() {
        let mut scorer = Scorer::new(
            Box::new(SteadyModel::new(20_000, 0)),
            ScorerSettings {
                min_samples: 0,
                threshold_floor: Some(2.0),
                ..ScorerSettings::default()
            },
        );
        // `beta` (p 0.09, 2.4 nats) is above the floor of 2.
        let scored = scorer.process(events(&["alpha a", "beta b"]));
        let beta = &scored[1];
        assert!(flagged(beta));
        assert_eq!(text(beta, keys::ANOMALY_REASON), "unlikely_next");
        let Some(Value::Json(expected)) = beta.fields.get(keys::EXPECTED) else {
            panic!("no expected templates: {beta:?}");
        };
        assert_eq!(expected[0]["template"], "alpha");
        assert_eq!(expected[0]["p"], 0.9);
        assert_eq!(expected[1]["template"], "beta");
        assert_eq!(expected.as_array().unwrap().len(), 3);
        assert_eq!(text(&scored[0], keys::ANOMALY_REASON), "none");
    }

    #[test]
    fn anomalies_of_one_template_and_reason_are_one_alert() {
        let mut scorer = steady(20_000, 0);
        let mut lines = stream(40, 1000, |_| String::new());
        lines.extend(["disk 1 failed".to_string(), "disk 2 failed".to_string()]);
        lines.push("power supply lost".to_string());
        let scored = score_all(&mut scorer, &lines);
        let disk: Vec<&Event> = scored
            .iter()
            .filter(|e| e.message().starts_with("disk"))
            .collect();
        assert!(disk.iter().all(|e| flagged(e)));
        assert_eq!(disk[0].fields.get(keys::ALERT), Some(&Value::Bool(true)));
        assert_eq!(disk[1].fields.get(keys::ALERT), Some(&Value::Bool(false)));
        assert_eq!(disk[1].fields.get(keys::ALERT_COUNT), Some(&Value::Int(2)));
        assert_eq!(
            text(disk[0], keys::ALERT_GROUP),
            text(disk[1], keys::ALERT_GROUP)
        );
        let power = scored.last().unwrap();
        assert_eq!(power.fields.get(keys::ALERT), Some(&Value::Bool(true)));
        assert_ne!(
            text(power, keys::ALERT_GROUP),
            text(disk[0], keys::ALERT_GROUP)
        );
        assert_eq!(scorer.stats().alerts, 2);
        assert_eq!(scorer.stats().anomalies, 3);
    }

    #[test]
    fn the_template_cache_is_bounded_and_ids_held_by_sessions_stay_valid() {
        let mut scorer = Scorer::new(
            Box::new(SteadyModel::new(20_000, 5_000)),
            ScorerSettings {
                min_samples: 0,
                vocabulary: VocabularyLimits {
                    max_templates: 100,
                    max_bytes: 1 << 20,
                },
                ..ScorerSettings::default()
            },
        );
        // Random words the normalizer cannot mask: every line a new template.
        let mut rng = deepsentry_core::rng::SplitMix64::new(7);
        for _ in 0..50 {
            let lines: Vec<String> = (0..64)
                .map(|_| {
                    let word: String = (0..12)
                        .map(|_| char::from(b'a' + (rng.next_u64() % 26) as u8))
                        .collect();
                    format!("request served by worker {word}")
                })
                .collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            assert_eq!(scorer.process(events(&refs)).len(), 64);
        }
        let stats = scorer.stats();
        assert!(stats.templates <= 2 + 100, "{stats:?}");
        assert!(stats.templates_evicted >= 3000, "{stats:?}");
        assert_eq!(stats.scored, 3200);
    }
}
