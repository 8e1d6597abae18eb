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
//!    - a template the detector knows: `-ln p(template | window)` (`unlikely_next`); when the
//!      session's previous event is of a template learned online, which the detector has no
//!      class for, `p` is updated by how often this template came after that one in keyed
//!      sessions (a Dirichlet posterior with the detector's `p` as its prior);
//!    - a template learned online, on its first [`LEARNING_OCCURRENCES`] occurrences: how
//!      rarely this system's normal logs bring a new template of its severity, as learned in
//!      training (`new_template`): a system whose templates never change flags it, one that
//!      keeps producing new INFO lines does not, and a level rare in training makes it more
//!      surprising;
//!    - later on: how rare it still is, `-ln(occurrences / lines since it first came)` (updated
//!      the same way after another template learned online), raised,
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

use deepsentry_core::anomaly;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::ops::Deref;
use std::sync::Arc;

use deepsentry_core::{Event, Origin, Value};

use crate::alerts::AlertGroups;
use crate::invariants::InvariantCheck;
use crate::novelty::{
    Followers, Next, NoveltyStats, Occurrences, OnlineState, StreamNovelty, TemplateInfo,
    TemplateRef, Vocabulary,
};
use crate::sessions::SessionStore;
use crate::severity::{severity_of, Severity};
use crate::threshold::AdaptiveThreshold;
use deepsentry_core::hash::Fnv1a;

mod model;
mod prepare;
mod scoring;
mod settings;
#[cfg(test)]
mod tests;

pub use model::{Embedded, SequenceModel};
pub use prepare::{Prepared, Preparer};
pub use settings::{AlertGrouping, ScorerSettings, SessionKey, NOVELTY_FLOOR};

/// Longest message kept per line in a context window (bytes, cut on a char boundary).
const CONTEXT_MESSAGE_BYTES: usize = 240;
/// Highest surprise a score can reach (`-ln 1e-7`); keeps unseen events comparable.
pub const MAX_SURPRISE: f64 = 16.118;
/// Occurrences of a template learned online that are judged by novelty; from the next one on,
/// by rarity: a new template that turns common stops alerting.
pub const LEARNING_OCCURRENCES: u64 = 5;
/// What `expected` names for the end of a session.
const END_OF_SESSION: &str = "(end of session)";

struct Session {
    /// Templates of the last `sequence_length` events.
    window: Vec<Arc<TemplateInfo>>,
    /// Their messages, for the context window.
    messages: Vec<Box<str>>,
    lines: u64,
    origin: Arc<Origin>,
    /// Counts of the templates the invariants name (see [`InvariantCheck`]).
    counts: Box<[u16]>,
    /// Whether the session key found this session's id, so what follows a template learned
    /// online in it is counted. Lines the key finds nothing in (another system's log under a
    /// model's key) share their stream's session, where the next line is anyone's.
    keyed: bool,
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
    /// Lines whose template the model has no class for (learned online), however often seen:
    /// most lines of a log the model was not trained on.
    pub unknown_lines: u64,
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
    /// Whether the model fits the log (see [`Scorer::model_fits`]).
    pub model_fits: bool,
    /// Events that are one line of a stack trace on its own (a frame, `Caused by: ...`),
    /// which a source that joins multi-line events would have joined to the line before.
    pub lone_trace_lines: u64,
    /// Whether the model was trained on multi-line events joined into one (see
    /// [`SequenceModel::joined_lines`]): lone trace lines are then events it never saw.
    pub model_joined_lines: bool,
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
    /// The stream's own novelty: lines scored since the model came, per severity, and those
    /// of templates the model never saw (what training measures on the later half of its
    /// data against the earlier half). It stands in for the model's where the model does not
    /// fit the log.
    stream: NoveltyStats,
    /// Lines scored so far (the online vocabulary's clock).
    lines_seen: u64,
    /// The latest event time seen (log clock), and when (wall clock) it was seen.
    clock: Option<(i64, std::time::Instant)>,
}

/// Lines scored before the scorer judges whether its model fits the log.
pub const FIT_CHECK_LINES: u64 = 100;

/// Share of the lines scored, of templates the model never saw, past which the model does not
/// fit the log. A model of the system itself knows a good part of what it logs, even months
/// later (of the loghub samples' later lines, BGL's own model had never seen 74 % at most,
/// HPC's 71 %); one trained on another system (the built-in model on anything but HDFS)
/// knows next to none.
pub const UNFIT_SHARE: f64 = 0.9;

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
    /// When the session's previous event was of a template learned online: how often this
    /// event's template (or end) came after that one before, and how often anything did.
    followed: Option<(u32, u32)>,
    /// ... and what had come after that template before this event, for what `expected`
    /// ranks by (the counts as this event met them, not as the rest of its batch left them).
    followers_before: Option<Box<Followers>>,
    context: String,
    /// For a session end: the invariants its counts broke.
    broken: Vec<String>,
    /// Whether this is the first event the scorer met of a session of a stream its key
    /// splits (a request's, or the stream's own for lines the key does not match).
    split_start: bool,
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
            stream: NoveltyStats::default(),
            lines_seen: 0,
            clock: None,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ScorerStats {
        ScorerStats {
            model_fits: self.model_fits(),
            model_joined_lines: self.model.joined_lines(),
            ..self.stats
        }
    }

    /// Whether the model fits the log: until [`FIT_CHECK_LINES`] lines are scored, and then
    /// while at most [`UNFIT_SHARE`] of the lines scored since the model came are of templates
    /// it never saw. Where it does not, its novelty statistics describe another system, and a
    /// new template is as surprising as the stream's own lines make it
    /// ([`Scorer::novelty`]): a log that keeps bringing templates the model never saw is
    /// learned as it comes instead of flagged line by line.
    pub fn model_fits(&self) -> bool {
        let lines = self.stream.later_lines;
        lines < FIT_CHECK_LINES
            || self.stream.later_new.at_least(Severity::Debug) as f64 <= UNFIT_SHARE * lines as f64
    }

    /// How often a new template of each severity comes: as the model's training measured, or,
    /// where the model does not fit the log, as the stream measures.
    pub(crate) fn novelty(&self) -> &NoveltyStats {
        if self.model_fits() {
            self.model.novelty()
        } else {
            &self.stream
        }
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
        // Templates are written once: a follower names one of them by its place.
        let places: HashMap<&str, usize> = templates
            .iter()
            .enumerate()
            .map(|(i, (text, _))| (text.as_str(), i))
            .collect();
        let place = |text: String| match places.get(text.as_str()) {
            Some(&i) => TemplateRef::Place(i),
            None => TemplateRef::Text(text),
        };
        let mut followers = self.vocabulary.followers();
        followers.sort_by(|a, b| a.0.cmp(&b.0));
        let followers = followers
            .into_iter()
            .map(|(text, mut state)| {
                for (next, _) in &mut state.next {
                    if let Some(TemplateRef::Text(t)) = next {
                        *next = Some(place(std::mem::take(t)));
                    }
                }
                (place(text), state)
            })
            .collect();
        OnlineState {
            lines_seen: self.lines_seen,
            templates,
            followers,
            stream: Some(StreamNovelty {
                model: self.model_fingerprint(),
                novelty: self.stream.clone(),
            }),
        }
    }

    /// A fingerprint of the model's templates, the same on every run: whether the stream's
    /// novelty kept in a state file was counted under this model.
    fn model_fingerprint(&self) -> u64 {
        self.model
            .templates()
            .iter()
            .fold(Fnv1a::with_seed(0), |hash, template| {
                hash.write(template.as_bytes()).write(b"\n")
            })
            .finish()
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
        self.restore_learned(&state);
        // Whether the model fits goes on being judged where it was, under the same model.
        if let Some(stream) = state.stream {
            if stream.model == self.model_fingerprint() {
                self.stream = stream.novelty;
            }
        }
    }

    /// Puts back the occurrences and followers `state` holds of templates already encoded.
    fn restore_learned(&mut self, state: &OnlineState) {
        for (text, seen) in &state.templates {
            self.vocabulary.restore(text, *seen);
        }
        for (template, followers) in &state.followers {
            if let Some(text) = template.resolve(&state.templates) {
                self.vocabulary
                    .restore_followers(text, followers, &state.templates);
            }
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
        self.restore_learned(&online);
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
        // Whether the new model fits is judged on the lines it scores.
        self.stream = NoveltyStats::default();
        Ok(())
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
            let statement = match embedded.class {
                Some(class) if !embedded.variant => self
                    .model
                    .templates()
                    .get(class)
                    .filter(|t| t.as_str() != *text)
                    .map(|t| Arc::from(t.as_str())),
                _ => None,
            };
            let info = TemplateInfo {
                id: self.vocabulary.next_id(),
                text: Arc::from(*text),
                class: embedded.class,
                variant: embedded.variant,
                family,
                statement,
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

    /// The templates of a prepared batch, encoding new ones in one batch. A known template
    /// costs a lookup, no allocation.
    fn intern(&mut self, prepared: &Prepared) -> Vec<Arc<TemplateInfo>> {
        let mut infos: Vec<Option<Arc<TemplateInfo>>> = Vec::with_capacity(prepared.len());
        let mut unknown: Vec<(usize, &str)> = Vec::new();
        for i in 0..prepared.len() {
            let template = prepared.template(i);
            match self.vocabulary.get(template) {
                Some((info, _)) => infos.push(Some(info.clone())),
                None => {
                    infos.push(None);
                    unknown.push((i, template));
                }
            }
        }
        if !unknown.is_empty() {
            let texts: Vec<&str> = unknown.iter().map(|(_, t)| *t).collect();
            // A batch holding one template many times encodes it once.
            let learned = self.learn_templates(&texts);
            for (i, text) in &unknown {
                infos[*i] = learned
                    .get(text)
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
        event.fields.insert(anomaly::SESSION_END, Value::Bool(true));
        let context = Self::context(&session, "(end)");
        let followed = session
            .window
            .last()
            .filter(|last| last.class.is_none() && Self::counts_followers(&session))
            .and_then(|last| self.vocabulary.follow(&last.text, Next::End));
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
            followed,
            followers_before: None,
            context,
            broken,
            split_start: false,
        }
    }

    /// Whether what follows a template learned online in `session` is counted: only in a
    /// session its key found. In one interleaved stream the line after a new template is
    /// mostly another request's, and counting it teaches noise that makes every other line
    /// more surprising.
    fn counts_followers(session: &Session) -> bool {
        session.keyed
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
        let prepared = self.preparer().prepare(events);
        self.process_prepared(prepared)
    }

    /// What prepares batches for this scorer, on any thread (see [`Prepared`]).
    pub fn preparer(&self) -> Preparer {
        Preparer {
            session_key: self.settings.session_key.clone(),
        }
    }

    /// [`Scorer::process`] for a batch its [`Preparer`] prepared.
    pub fn process_prepared(&mut self, prepared: Prepared) -> Vec<Event> {
        let templates = self.intern(&prepared);
        let mut pending = Vec::with_capacity(prepared.len());
        let wall = chrono::Utc::now().timestamp();
        let Prepared {
            events,
            stamped,
            sessions,
            ..
        } = prepared;
        for (((event, template), stamped), session_at) in
            events.into_iter().zip(templates).zip(stamped).zip(sessions)
        {
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
            if deepsentry_core::multiline::is_trace_line(event.message().as_bytes()) {
                self.stats.lone_trace_lines += 1;
            }
            let kind = match template.class {
                Some(class) => {
                    if template.variant {
                        self.vocabulary.observe(&template.text, line);
                    }
                    Kind::Known(class)
                }
                None => {
                    self.stats.unknown_lines += 1;
                    match self.vocabulary.observe(&template.text, line) {
                        Some(before) => Kind::Online(before),
                        // Evicted since it was interned: as new as it gets.
                        None => Kind::Online(Occurrences {
                            count: 0,
                            first_seen: line,
                            last_seen: line,
                        }),
                    }
                }
            };
            let severity = self.severity(&event, &template);
            self.stream.later_lines += 1;
            self.stream.lines.add(severity);
            if matches!(kind, Kind::Online(_)) {
                self.stream.later_new.add(severity);
            }
            let keyed = session_at.is_keyed();
            let key = session_at.of(&event);
            let origin = event.origin.clone();
            let slots = self.invariants.slots;
            let (session, session_name, evicted) = self.sessions.touch(key, now, || Session {
                window: Vec::new(),
                messages: Vec::new(),
                lines: 0,
                origin,
                counts: vec![0; slots].into_boxed_slice(),
                keyed,
            });
            let window = session.window.clone();
            let split_start =
                session.lines == 0 && !matches!(self.settings.session_key, SessionKey::Stream);
            // The detector has no class for a template learned online: what follows one in its
            // session is learned here, by counting.
            let after_online = window
                .last()
                .filter(|last| last.class.is_none() && Self::counts_followers(session));
            // Only a known template can be flagged `unlikely_next` and name what was expected:
            // no other event pays for the copy.
            let followers_before = after_online
                .filter(|_| matches!(kind, Kind::Known(_)))
                .and_then(|last| self.vocabulary.followers_of(&last.text))
                .map(|followers| Box::new(followers.clone()));
            let followed = after_online.and_then(|last| {
                self.vocabulary
                    .follow(&last.text, Next::Template(template.text.clone()))
            });
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
                template: template
                    .statement
                    .clone()
                    .unwrap_or_else(|| template.text.clone()),
                alert_key: template
                    .family
                    .as_ref()
                    .or(template.statement.as_ref())
                    .unwrap_or(&template.text)
                    .clone(),
                severity,
                at: now,
                line,
                followed,
                followers_before,
                context,
                broken: Vec::new(),
                split_start,
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
}
