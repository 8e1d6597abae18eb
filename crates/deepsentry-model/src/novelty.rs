//! Novelty that learns. Training measures how often a system's normal logs bring templates
//! they never showed before ([`NoveltyStats`]: the later half of the training data against the
//! earlier half, per severity); at run time a template never seen in training joins a bounded
//! online vocabulary ([`Vocabulary`]) and is scored by that learned rate on its first
//! occurrences, then by how rare it still is.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::normalize::WILDCARD;

use crate::severity::Severity;

/// New templates as rare as one line in 3,000 are what any system's logs may bring; a system
/// that brought them more rarely than that in training keeps the difference as lasting
/// suspicion of templates it never showed (see [`NoveltyStats::lasting_novelty`]). With the
/// default novelty floor (one line in 200), a template new to a system that never changed
/// over a long training log stops being flagged once it comes about once in eight lines or
/// more often; a rarer one goes on being flagged.
pub const NOVELTY_TOLERANCE: f64 = 8.006_367_567_650_246;

/// A count per severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityCounts {
    /// Debug lines.
    pub debug: u64,
    /// Info lines (and lines naming no level).
    pub info: u64,
    /// Warnings.
    pub warn: u64,
    /// Errors.
    pub error: u64,
    /// Fatal lines.
    pub fatal: u64,
}

impl SeverityCounts {
    /// The count of `severity`.
    pub fn get(&self, severity: Severity) -> u64 {
        match severity {
            Severity::Debug => self.debug,
            Severity::Info => self.info,
            Severity::Warn => self.warn,
            Severity::Error => self.error,
            Severity::Fatal => self.fatal,
        }
    }

    /// The count of `severity` and every severity above it.
    pub fn at_least(&self, severity: Severity) -> u64 {
        Severity::ALL
            .into_iter()
            .filter(|&s| s >= severity)
            .map(|s| self.get(s))
            .sum()
    }

    fn slot(&mut self, severity: Severity) -> &mut u64 {
        match severity {
            Severity::Debug => &mut self.debug,
            Severity::Info => &mut self.info,
            Severity::Warn => &mut self.warn,
            Severity::Error => &mut self.error,
            Severity::Fatal => &mut self.fatal,
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &SeverityCounts) {
        for severity in Severity::ALL {
            *self.slot(severity) += other.get(severity);
        }
    }

    /// Adds one line of `severity`.
    pub fn add(&mut self, severity: Severity) {
        *self.slot(severity) += 1;
    }
}

/// What training learned about a system's novelty and levels, kept in `model.yml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoveltyStats {
    /// Training lines of each severity.
    pub lines: SeverityCounts,
    /// Lines of the later half of the training data (in the order read).
    pub later_lines: u64,
    /// Of those, the lines whose template the earlier half never showed, per severity.
    pub later_new: SeverityCounts,
}

impl NoveltyStats {
    /// Learns from the training lines' templates and severities, in the order read; the
    /// templates numbered below `known` (an updated bundle's) count as shown before them.
    pub fn learn(lines: &[(u32, Severity)], known: u32) -> Self {
        let mut stats = Self::default();
        let half = lines.len() / 2;
        let mut earlier: std::collections::HashSet<u32> = (0..known).collect();
        for (i, &(template, severity)) in lines.iter().enumerate() {
            stats.lines.add(severity);
            if i < half {
                earlier.insert(template);
            } else {
                stats.later_lines += 1;
                if !earlier.contains(&template) {
                    stats.later_new.add(severity);
                }
            }
        }
        stats
    }

    /// These counts and `earlier`'s together: an update's, with those of the bundle it
    /// updates, so that a few new logs do not outweigh everything the bundle learned.
    pub fn after(mut self, earlier: &NoveltyStats) -> Self {
        self.lines.merge(&earlier.lines);
        self.later_lines += earlier.later_lines;
        self.later_new.merge(&earlier.later_new);
        self
    }

    /// Surprise (nats) of a template never seen in training, of `severity`: `-ln P(new and at
    /// least as severe)`, as often as the later half of training met new templates of that
    /// severity or a higher one (with half a line of prior, so "never" is finite and shrinks
    /// with more data). Counting the higher severities too keeps the surprise from falling as
    /// the severity rises, and pools the levels that systems draw apart differently: one whose
    /// logs keep bringing new `FATAL` statements brings new `ERROR` ones as a matter of course.
    pub fn new_template_surprise(&self, severity: Severity) -> f64 {
        let new = self.later_new.at_least(severity);
        let p = (new as f64 + 0.5) / (self.later_lines as f64 + 1.0);
        -p.min(1.0).ln()
    }

    /// What stays surprising about a template the training never showed once it has come often
    /// enough to be learned: how far "never in training" goes beyond [`NOVELTY_TOLERANCE`]
    /// nats. Zero for a system whose logs keep bringing new templates; several nats for one
    /// whose templates never changed over a long training log, where a recurring new template
    /// is still out of the ordinary.
    pub fn lasting_novelty(&self, severity: Severity) -> f64 {
        (self.new_template_surprise(severity) - NOVELTY_TOLERANCE).max(0.0)
    }
}

/// A template the scorer knows: from training, or learned online.
#[derive(Debug)]
pub struct TemplateInfo {
    /// Unique for the scorer's life and never reused, so windows that sessions hold stay
    /// valid when the template leaves the vocabulary.
    pub id: u64,
    /// The masked template.
    pub text: Arc<str>,
    /// The detector's class: the template's own from training, or that of the training
    /// template it is a variant of; `None` for a template unlike any training template.
    pub class: Option<usize>,
    /// Whether `class` comes from a similar training template rather than this one.
    pub variant: bool,
    /// For a template learned online that is a variant of one learned before it (see
    /// [`crate::normalize::variant_distance`]): that one's text. The two are one log
    /// statement: they share their occurrences and their alerts.
    pub family: Option<Arc<str>>,
    /// For an instance of a training template with a field (see
    /// [`crate::normalize::WILDCARD`]): that template, which its events name and group their
    /// alerts by.
    pub statement: Option<Arc<str>>,
    /// The vector the detector reads for it.
    pub vector: Vec<f32>,
    /// The autoencoder's reconstruction error.
    pub reconstruction_error: f32,
    /// The severity its words name.
    pub severity: Severity,
}

impl TemplateInfo {
    fn bytes(&self) -> usize {
        // The map key shares `text`; the rest is the entry's own bookkeeping.
        std::mem::size_of::<Self>() + self.text.len() + 4 * self.vector.len() + 96
    }
}

/// What the online vocabulary knows of a template the training never showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrences {
    /// Times seen.
    pub count: u64,
    /// The scorer's line counter when it was first seen.
    pub first_seen: u64,
    /// ... and when last seen.
    pub last_seen: u64,
}

impl Occurrences {
    /// One more, at line `line`.
    fn add(&mut self, line: u64) {
        if self.count == 0 {
            self.first_seen = line;
        }
        self.count += 1;
        self.last_seen = line;
    }

    /// Adds the occurrences of another template of the same family.
    fn merge(&mut self, other: Occurrences) {
        if other.count == 0 {
            return;
        }
        self.first_seen = if self.count == 0 {
            other.first_seen
        } else {
            self.first_seen.min(other.first_seen)
        };
        self.count += other.count;
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

/// What may come after an event: a template, or the end of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A template, by its text.
    Template(Arc<str>),
    /// The session ended.
    End,
}

/// Distinct successors remembered per online template; any further one counts in the total
/// only, so it keeps the probability the detector gives it.
const MAX_FOLLOWERS: usize = 8;

/// What came after an online template in its sessions: the online statistics through which
/// the sequence part learns a template it has no class for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followers {
    /// The first [`MAX_FOLLOWERS`] distinct successors and how often each came.
    next: Vec<(Next, u32)>,
    /// How often anything came after it.
    total: u32,
}

impl Followers {
    /// How often `next` came after the template, and how often anything did; `None` when
    /// that is not known: `next` is not one of the remembered successors and they are
    /// [`MAX_FOLLOWERS`] already, so it may have come any number of times among the others
    /// (counting it as never would make it more surprising with every line).
    pub fn count(&self, next: &Next) -> Option<(u32, u32)> {
        match self.next.iter().find(|(n, _)| n == next) {
            Some((_, count)) => Some((*count, self.total)),
            None if self.next.len() < MAX_FOLLOWERS => Some((0, self.total)),
            None => None,
        }
    }

    /// The remembered successors and their counts.
    pub fn counts(&self) -> impl Iterator<Item = (&Next, u32)> {
        self.next.iter().map(|(n, c)| (n, *c))
    }

    /// How often anything came after the template.
    pub fn total(&self) -> u32 {
        self.total
    }

    fn add(&mut self, next: Next, count: u32) {
        self.total = self.total.saturating_add(count);
        if let Some((_, c)) = self.next.iter_mut().find(|(n, _)| *n == next) {
            *c = c.saturating_add(count);
        } else if self.next.len() < MAX_FOLLOWERS {
            self.next.push((next, count));
        }
    }

    /// Bytes it may take, whatever it holds (the texts are shared with the vocabulary).
    const BYTES: usize = MAX_FOLLOWERS * std::mem::size_of::<(Next, u32)>();
}

/// A template in [`OnlineState`]: its place among the state's templates where it is one of
/// them (a number, so a successor's text is not written again for every template it
/// followed), else its text (a training template, or a file written before places were).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TemplateRef {
    /// The place of one of [`OnlineState::templates`].
    Place(usize),
    /// The template's text.
    Text(String),
}

/// [`Followers`] as written to `data_dir`: each successor (`None` for a session's end) and
/// its count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowersState {
    /// Successors and their counts.
    pub next: Vec<(Option<TemplateRef>, u32)>,
    /// How often anything came next (successors past the remembered ones included).
    pub total: u32,
}

struct OnlineEntry {
    info: Arc<TemplateInfo>,
    /// Its own occurrences (what is kept across a restart, and what eviction goes by).
    seen: Occurrences,
    /// Those of its family, itself and its variants, kept by the first of the family.
    family: Occurrences,
    /// What came after it.
    followers: Followers,
    /// For the first of a family whose variants differed from it: its text with `<*>` where
    /// they did, what a new template is compared with to join the family (see
    /// [`Vocabulary::family_of`]).
    pattern: Option<Box<str>>,
}

impl OnlineEntry {
    fn bytes(&self) -> usize {
        self.info.bytes() + Followers::BYTES + self.pattern.as_ref().map_or(0, |p| p.len())
    }
}

/// Words of a family's pattern that may be fields (`<*>`): a quarter of them, and at least
/// the [`variant_allowance`] of one join. A variant joins a family where it differs from the
/// pattern in at most that allowance and the pattern then holds no more fields than this;
/// the words it differs in become fields. A statement whose thread name and status word both
/// vary is then one family, while a chain of one-word steps cannot make a pattern of any line
/// of its length.
///
/// [`variant_allowance`]: crate::normalize::variant_allowance
fn family_fields(words: usize, allowed: usize) -> usize {
    (words / 4).max(allowed)
}

/// How many words of `pattern` are fields that `head`, the template it was made from, holds a
/// word in.
fn fields_added(pattern: &str, head: &str) -> usize {
    pattern
        .split(' ')
        .zip(head.split(' '))
        .filter(|(p, h)| *p == WILDCARD && *h != WILDCARD)
        .count()
}

/// Online templates a new one is compared with to find the family it joins, the most recent
/// first: bounds the cost of a new template in a stream that brings them by the thousand.
const FAMILY_CANDIDATES: usize = 256;

/// Bounds of the online vocabulary.
#[derive(Debug, Clone, Copy)]
pub struct VocabularyLimits {
    /// Most templates learned online.
    pub max_templates: usize,
    /// Most bytes they may take (text, vectors, bookkeeping).
    pub max_bytes: usize,
}

impl Default for VocabularyLimits {
    fn default() -> Self {
        Self {
            max_templates: 20_000,
            max_bytes: 32 << 20,
        }
    }
}

/// The templates the scorer knows: those of training (kept for good: the model's classes)
/// and those learned online, bounded in count and bytes, the least recently seen evicted.
pub struct Vocabulary {
    known: HashMap<Arc<str>, Arc<TemplateInfo>>,
    online: HashMap<Arc<str>, OnlineEntry>,
    /// The first templates of online families by their number of words, oldest first (may
    /// name evicted ones until the next eviction pass).
    heads_by_words: HashMap<usize, Vec<Arc<str>>>,
    online_bytes: usize,
    limits: VocabularyLimits,
    next_id: u64,
    evicted: u64,
}

impl Vocabulary {
    /// An empty vocabulary with `limits` for what it learns online.
    pub fn new(limits: VocabularyLimits) -> Self {
        Self {
            known: HashMap::new(),
            online: HashMap::new(),
            heads_by_words: HashMap::new(),
            online_bytes: 0,
            limits,
            next_id: 0,
            evicted: 0,
        }
    }

    /// The template `text`, if known; with its occurrences so far when it was learned online.
    pub fn get(&self, text: &str) -> Option<(&Arc<TemplateInfo>, Option<Occurrences>)> {
        if let Some(info) = self.known.get(text) {
            return Some((info, None));
        }
        self.online.get(text).map(|e| (&e.info, Some(e.seen)))
    }

    /// A fresh id for a template about to be added.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The online template that `text`, a template unlike any training template, is a variant
    /// of: the first of that one's family. It is compared with the family's pattern, where
    /// the words its variants differed in are fields.
    pub fn family_of(&self, text: &str) -> Option<Arc<str>> {
        let words: Vec<&str> = text.split(' ').collect();
        let allowed = crate::normalize::variant_allowance(words.len())?;
        self.heads_by_words
            .get(&words.len())?
            .iter()
            .rev()
            .filter_map(|head| Some((head, self.online.get(head)?)))
            .filter(|(head, _)| ***head != *text)
            .take(FAMILY_CANDIDATES)
            .filter_map(|(head, entry)| {
                let (pattern, fields) = match entry.pattern.as_deref() {
                    Some(pattern) => (pattern, fields_added(pattern, head)),
                    None => (&**head, 0),
                };
                let differing = crate::normalize::variant_distance(pattern, &words, allowed)?;
                (fields + differing <= family_fields(words.len(), allowed))
                    .then_some((differing, head))
            })
            .min_by_key(|(d, _)| *d)
            .map(|(_, head)| head.clone())
    }

    /// Makes the words `member` differs in from the pattern of the family `head` leads fields
    /// of that pattern ([`Vocabulary::family_of`] found it within the family's bounds).
    fn widen_family(&mut self, head: &str, member: &str) {
        let Some(entry) = self.online.get_mut(head) else {
            return;
        };
        let pattern = entry.pattern.as_deref().unwrap_or(head);
        let mut words: Vec<&str> = pattern.split(' ').collect();
        let mut widened = false;
        for (word, other) in words.iter_mut().zip(member.split(' ')) {
            if *word != other && *word != WILDCARD && other != WILDCARD {
                *word = WILDCARD;
                widened = true;
            }
        }
        if widened {
            let pattern: Box<str> = words.join(" ").into();
            self.online_bytes += pattern.len();
            if let Some(old) = entry.pattern.replace(pattern) {
                self.online_bytes -= old.len();
            }
        }
    }

    /// Adds a template: a training template (with its own class) for good, any other one to
    /// the online part with no occurrences yet.
    pub fn insert(&mut self, info: TemplateInfo) -> Arc<TemplateInfo> {
        let info = Arc::new(info);
        let key = info.text.clone();
        if info.class.is_some() && !info.variant {
            self.known.insert(key, info.clone());
            return info;
        }
        self.online_bytes += info.bytes() + Followers::BYTES;
        if info.class.is_none() && info.family.is_none() {
            let words = key.split(' ').count();
            self.heads_by_words
                .entry(words)
                .or_default()
                .push(key.clone());
        }
        let never = Occurrences {
            count: 0,
            first_seen: 0,
            last_seen: 0,
        };
        if let Some(old) = self.online.insert(
            key.clone(),
            OnlineEntry {
                info: info.clone(),
                seen: never,
                family: never,
                followers: Followers::default(),
                pattern: None,
            },
        ) {
            self.online_bytes -= old.bytes();
        }
        if let Some(head) = &info.family {
            self.widen_family(head, &key);
        }
        self.enforce_limits();
        info
    }

    /// Forgets every template, for a new model to encode them anew; the id counter goes on (ids
    /// stay unique) and so does the count of evictions.
    pub fn forget_all(&mut self) {
        self.known.clear();
        self.online.clear();
        self.heads_by_words.clear();
        self.online_bytes = 0;
    }

    /// Records one occurrence of an online template at line `line`; returns what was known
    /// before it of its family (itself and its variants; itself alone once the first of the
    /// family was evicted). `None` for a training template.
    pub fn observe(&mut self, text: &str, line: u64) -> Option<Occurrences> {
        let entry = self.online.get_mut(text)?;
        entry.seen.add(line);
        let key = self.family_head(text);
        let family = &mut self.online.get_mut(key.as_deref().unwrap_or(text))?.family;
        let before = *family;
        family.add(line);
        Some(before)
    }

    /// Restores what was learned of `text` (after a restart): its own occurrences, which also
    /// count for its family. Restore the first of a family before its variants (the order
    /// they were first seen in), so that the variants join the same family again.
    pub fn restore(&mut self, text: &str, seen: Occurrences) {
        let Some(entry) = self.online.get_mut(text) else {
            return;
        };
        entry.seen = seen;
        let key = self.family_head(text);
        if let Some(entry) = self.online.get_mut(key.as_deref().unwrap_or(text)) {
            entry.family.merge(seen);
        }
    }

    /// Records that `next` came after the online template `text` in a session; returns what
    /// was known before: how often `next` came after its family (itself and its variants, one
    /// statement), and how often anything did. `None` when `text` is not an online template,
    /// or that count is not known (see [`Followers::count`]).
    pub fn follow(&mut self, text: &str, next: Next) -> Option<(u32, u32)> {
        let key = self.family_head(text);
        let followers = &mut self
            .online
            .get_mut(key.as_deref().unwrap_or(text))?
            .followers;
        let before = followers.count(&next);
        followers.add(next, 1);
        before
    }

    /// What came after the online template `text` (its family's first), so far.
    pub fn followers_of(&self, text: &str) -> Option<&Followers> {
        let key = self.family_head(text);
        Some(&self.online.get(key.as_deref().unwrap_or(text))?.followers)
    }

    /// What came after each online template, to keep across a restart.
    pub fn followers(&self) -> Vec<(String, FollowersState)> {
        self.online
            .iter()
            .filter(|(_, e)| e.followers.total > 0)
            .map(|(text, e)| {
                let next = e
                    .followers
                    .next
                    .iter()
                    .map(|(n, c)| {
                        let text = match n {
                            Next::Template(t) => Some(TemplateRef::Text(t.to_string())),
                            Next::End => None,
                        };
                        (text, *c)
                    })
                    .collect();
                let state = FollowersState {
                    next,
                    total: e.followers.total,
                };
                (text.to_string(), state)
            })
            .collect()
    }

    /// Restores what came after the online template `text` (after a restart).
    /// Successors given by their place are read in `templates`, the state's own, and those
    /// not found there are left out.
    pub fn restore_followers(
        &mut self,
        text: &str,
        state: &FollowersState,
        templates: &[(String, Occurrences)],
    ) {
        let Some(entry) = self.online.get_mut(text) else {
            return;
        };
        let mut followers = Followers::default();
        for (next, count) in &state.next {
            let next = match next {
                None => Next::End,
                Some(next) => match next.resolve(templates) {
                    Some(text) => Next::Template(text.into()),
                    None => continue,
                },
            };
            followers.add(next, *count);
        }
        // Successors past the remembered ones count in the total only.
        followers.total = followers.total.max(state.total);
        entry.followers = followers;
    }

    /// The first of `text`'s family, which keeps the family's occurrences; `None` when `text`
    /// is the first itself, or the first was evicted (then `text` keeps its own).
    fn family_head(&self, text: &str) -> Option<Arc<str>> {
        let head = self.online.get(text)?.info.family.as_ref()?;
        self.online.contains_key(head).then(|| head.clone())
    }

    /// Templates learned online, with their occurrences.
    pub fn online(&self) -> impl Iterator<Item = (&str, Occurrences)> {
        self.online.iter().map(|(k, e)| (&**k, e.seen))
    }

    /// How many templates are known: training and online.
    pub fn len(&self) -> usize {
        self.known.len() + self.online.len()
    }

    /// Whether no template is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Templates learned online.
    pub fn online_len(&self) -> usize {
        self.online.len()
    }

    /// Bytes the online templates take.
    pub fn online_bytes(&self) -> usize {
        self.online_bytes
    }

    /// Online templates evicted so far to stay within the limits.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Past a limit, the least recently seen online templates go, down to 90 % of it, so an
    /// eviction pass runs once per many insertions. Sessions keep the `Arc`s they hold.
    fn enforce_limits(&mut self) {
        let over = |v: &Self| {
            v.online.len() > v.limits.max_templates || v.online_bytes > v.limits.max_bytes
        };
        if !over(self) {
            return;
        }
        let keep_templates = (self.limits.max_templates - self.limits.max_templates / 10).max(1);
        let keep_bytes = self.limits.max_bytes - self.limits.max_bytes / 10;
        let mut by_age: Vec<(u64, Arc<str>)> = self
            .online
            .iter()
            .map(|(k, e)| (e.seen.last_seen, k.clone()))
            .collect();
        // Never-seen entries (just inserted) count as the newest.
        by_age.sort_unstable_by_key(|(seen, _)| if *seen == 0 { u64::MAX } else { *seen });
        for (_, key) in by_age {
            if self.online.len() <= keep_templates && self.online_bytes <= keep_bytes {
                break;
            }
            if let Some(entry) = self.online.remove(&key) {
                self.online_bytes -= entry.bytes();
                self.evicted += 1;
            }
        }
        let online = &self.online;
        self.heads_by_words.retain(|_, heads| {
            heads.retain(|h| online.contains_key(h));
            !heads.is_empty()
        });
    }
}

impl TemplateRef {
    /// The template's text, where `templates` (the state's) holds its place.
    pub fn resolve<'s>(&'s self, templates: &'s [(String, Occurrences)]) -> Option<&'s str> {
        match self {
            TemplateRef::Place(i) => templates.get(*i).map(|(text, _)| text.as_str()),
            TemplateRef::Text(text) => Some(text),
        }
    }
}

/// What the online vocabulary learned, as written to `data_dir` and read back at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineState {
    /// The scorer's line counter.
    pub lines_seen: u64,
    /// Each online template and its occurrences.
    pub templates: Vec<(String, Occurrences)>,
    /// What came after each online template that something came after.
    #[serde(default)]
    pub followers: Vec<(TemplateRef, FollowersState)>,
    /// The stream's own novelty, as the model it was counted under saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamNovelty>,
}

/// The novelty a scorer counted on its stream (lines per severity, and those of templates
/// its model never saw), kept across a restart for the model it was counted under.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamNovelty {
    /// A fingerprint of that model's templates: another model starts counting afresh.
    pub model: u64,
    /// The counts.
    pub novelty: NoveltyStats,
}

#[cfg(test)]
mod tests;
