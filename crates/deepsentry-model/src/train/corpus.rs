//! Reading the training data: lines, templates, sessions, the session key, and the hold-out.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};

use anyhow::Context;
use deepsentry_core::rng::SplitMix64;
use deepsentry_core::Origin;
use regex::Regex;

use super::TrainOptions;
use crate::invariants::{add_counts, counts_of, OpenSession, SessionTally, TallyBuilder};
use crate::normalize::{
    fold_variable_words, fold_words_with_values, instance_of, template_into, wildcard_forms,
    MIN_FIELD_VALUES, WILDCARD,
};
use crate::scorer::SessionKey;
use crate::session_key::{find_session_key, SessionKeySpec};
use crate::severity::{level_of, severity_of, severity_with_level, Severity};
use deepsentry_core::lines::{read_all, LineDecoder};
use deepsentry_core::timestamp::yearless_clock;

/// A line of the training data.
pub(super) struct Line {
    pub(super) text: String,
    pub(super) template: u32,
    /// The template as the normalizer made it, before fields found in training were folded
    /// (see [`fold_variable_words`]): what novelty is measured on.
    pub(super) shape: u32,
    pub(super) session: u32,
    /// The line's own timestamp, if it leads with one.
    pub(super) at: Option<i64>,
    /// How serious it is: its decoded level or its template's words, as the scorer reads it.
    pub(super) severity: Severity,
}

/// The training data after normalization.
pub(super) struct Corpus {
    pub(super) lines: Vec<Line>,
    pub(super) templates: Vec<String>,
    /// The templates as the normalizer made them, before folding: what [`Line::shape`]
    /// indexes.
    pub(super) shapes: Vec<String>,
    pub(super) session_names: Vec<String>,
    /// Template ids of each session, in order.
    pub(super) sessions: Vec<Vec<u32>>,
    pub(super) max_gap: i64,
    pub(super) origins: Vec<std::sync::Arc<Origin>>,
    pub(super) line_origin: Vec<u16>,
}

/// Reads and normalizes the inputs; every line starts in its file's session (see
/// [`assign_sessions`]). `known` templates (those of a bundle being updated) keep their
/// places; the inputs' other templates follow.
pub(super) fn read_corpus(options: &TrainOptions, known: &[String]) -> anyhow::Result<Corpus> {
    let mut templates: Vec<String> = known.to_vec();
    let mut template_ids: HashMap<String, u32> = known
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut lines = VecDeque::new();
    let mut origins = Vec::new();
    let mut line_origin = VecDeque::new();
    let mut dropped = 0u64;
    let mut scratch = String::new();
    let metrics = deepsentry_core::metrics::Metrics::default();
    let clock = yearless_clock();
    for (file_index, path) in options.inputs.iter().enumerate() {
        let file = deepsentry_core::lines::open_log(path)
            .with_context(|| format!("cannot open training input {}", path.display()))?;
        let stream = path.display().to_string();
        let origin = Origin::new("train", stream.as_str());
        origins.push(origin.clone());
        let mut decoder =
            LineDecoder::new(origin, &metrics.component("train"), &options.lines).with_clock(clock);
        read_all(file, &mut decoder, |event| {
            let text = event.message();
            if text.is_empty() {
                return;
            }
            template_into(text, &mut scratch);
            let template = match template_ids.get(scratch.as_str()) {
                Some(&id) => id,
                None => {
                    let id = templates.len() as u32;
                    template_ids.insert(scratch.clone(), id);
                    templates.push(scratch.clone());
                    id
                }
            };
            // Dated at the clock: the event has no time of its own.
            let at = (event.timestamp != clock).then(|| event.timestamp.timestamp());
            let severity = match level_of(&event, None) {
                Some(level) => severity_with_level(&scratch, &level.to_string()),
                None => severity_of(&scratch),
            };
            lines.push_back(Line {
                text: text.to_owned(),
                template,
                shape: template,
                session: 0,
                at,
                severity,
            });
            line_origin.push_back(file_index as u16);
            if options.max_lines > 0 && lines.len() > options.max_lines {
                lines.pop_front();
                line_origin.pop_front();
                dropped += 1;
            }
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    }
    anyhow::ensure!(!lines.is_empty(), "the training inputs hold no lines");
    let mut lines = Vec::from(lines);
    if dropped > 0 {
        tracing::warn!(
            lines = lines.len() as u64 + dropped,
            trained_on = lines.len(),
            "the inputs hold more lines than --max-lines: training on the last of them"
        );
        templates = templates_in_use(&mut lines, templates, known.len());
    }
    let shapes = templates.clone();
    let folded = fold_variable_words(&mut templates, known.len());
    for line in &mut lines {
        line.template = folded[line.template as usize];
    }
    let mut corpus = Corpus {
        lines,
        templates,
        shapes,
        session_names: Vec::new(),
        sessions: Vec::new(),
        max_gap: 0,
        origins,
        line_origin: Vec::from(line_origin),
    };
    assign_sessions(&mut corpus, &SessionKey::Stream);
    Ok(corpus)
}

/// Values of one place among the earlier half's templates that make it a field for measuring
/// novelty: one fewer than training folds on, since a later value that fits there is the
/// field's third at least (training's own rule), with all but one of them seen before.
const EARLIER_FIELD_VALUES: usize = MIN_FIELD_VALUES - 1;

/// The lines novelty is measured on (`(shape, severity)` in order, see [`NoveltyStats::learn`]),
/// with each shape of the later half that is a value of a field the earlier half showed taken
/// as that field's first shape. Fields are found on the earlier half's own shapes (and the
/// `known` templates of a bundle being updated; see [`EARLIER_FIELD_VALUES`]): a user name the
/// earlier half never logged is no new statement, but the later half's new values do not get
/// to make by themselves the field that would then excuse them.
///
/// [`NoveltyStats::learn`]: crate::novelty::NoveltyStats::learn
pub(super) fn novelty_lines(
    lines: &[(u32, Severity)],
    shapes: &[String],
    known: usize,
) -> Vec<(u32, Severity)> {
    let half = lines.len() / 2;
    let mut earlier: Vec<u32> = (0..known as u32)
        .chain(lines[..half].iter().map(|&(shape, _)| shape))
        .collect();
    earlier.sort_unstable();
    earlier.dedup();
    let mut folded: Vec<String> = earlier
        .iter()
        .map(|&s| shapes[s as usize].clone())
        .collect();
    let index = fold_words_with_values(&mut folded, known, EARLIER_FIELD_VALUES);
    // Each field's form and severity, with the first earlier shape that is a value of it.
    let mut fields: HashMap<(&str, Severity), u32> = HashMap::new();
    for (&shape, &to) in earlier.iter().zip(&index) {
        let form = folded[to as usize].as_str();
        if form.split(' ').any(|w| w == WILDCARD) {
            fields.entry((form, severity_of(form))).or_insert(shape);
        }
    }
    // Fields of several places (a first and a last name), by word count: a later shape is a
    // value of one where no single-place form of it names a field.
    let mut several: HashMap<usize, Vec<(&str, Severity, u32)>> = HashMap::new();
    for (&(form, severity), &first) in &fields {
        if form.split(' ').filter(|w| *w == WILDCARD).count() > 1 {
            let entry = several.entry(form.split(' ').count()).or_default();
            entry.push((form, severity, first));
        }
    }
    // The earliest field first, so that the count does not depend on the map's order.
    several
        .values_mut()
        .for_each(|forms| forms.sort_by_key(|f| f.2));
    let mut field_of: HashMap<u32, u32> = HashMap::new();
    lines
        .iter()
        .enumerate()
        .map(|(i, &(shape, severity))| {
            if i < half || fields.is_empty() || earlier.binary_search(&shape).is_ok() {
                return (shape, severity);
            }
            let to = *field_of.entry(shape).or_insert_with(|| {
                let text = &shapes[shape as usize];
                let words: Vec<&str> = text.split(' ').collect();
                let own = severity_of(text);
                let field = wildcard_forms(&words)
                    .find_map(|(_, form)| fields.get(&(form.as_str(), own)).copied());
                let field = field.or_else(|| {
                    several
                        .get(&words.len())?
                        .iter()
                        .find_map(|&(form, severity, first)| {
                            (severity == own && instance_of(form, &words)).then_some(first)
                        })
                });
                field.unwrap_or(shape)
            });
            (to, severity)
        })
        .collect()
}

/// The templates `lines` use, renumbered in the order they first use them after the `known`
/// ones (a bundle's being updated, which keep their places): lines dropped from the front of
/// the inputs leave templates no kept line has, which would be classes never trained.
fn templates_in_use(lines: &mut [Line], templates: Vec<String>, known: usize) -> Vec<String> {
    let mut renumbered: HashMap<u32, u32> = (0..known as u32).map(|id| (id, id)).collect();
    let mut kept: Vec<Option<String>> = templates.into_iter().map(Some).collect();
    let mut in_use: Vec<String> = kept[..known].iter_mut().flat_map(Option::take).collect();
    for line in lines {
        let id = *renumbered.entry(line.template).or_insert_with(|| {
            in_use.push(kept[line.template as usize].take().unwrap_or_default());
            (in_use.len() - 1) as u32
        });
        line.template = id;
        line.shape = id;
    }
    in_use
}

/// Most lines a bundle keeps as its replay sample.
pub const REPLAY_LINES: usize = 2000;

/// The replay sample a bundle keeps: the last lines of each input, an equal share each, so
/// sequences stay whole and, after updates, the old logs' share shrinks but never vanishes.
pub(super) fn replay_sample(corpus: &Corpus) -> Vec<String> {
    let files = corpus.origins.len().max(1);
    let share = REPLAY_LINES / files;
    let mut sample = Vec::new();
    for file in 0..files {
        let lines: Vec<&str> = corpus
            .lines
            .iter()
            .zip(&corpus.line_origin)
            .filter(|(_, &origin)| usize::from(origin) == file)
            .map(|(line, _)| line.text.as_str())
            .collect();
        let from = lines.len().saturating_sub(share);
        sample.extend(lines[from..].iter().map(|l| l.to_string()));
    }
    sample
}

/// Groups the corpus's lines into sessions by `key` (lines it does not name stay in their
/// file's session), and measures the longest pause inside a session.
pub(super) fn assign_sessions(corpus: &mut Corpus, key: &SessionKey) {
    let mut session_ids: HashMap<String, u32> = HashMap::new();
    let mut last_seen: Vec<i64> = Vec::new();
    corpus.session_names.clear();
    corpus.sessions.clear();
    corpus.max_gap = 0;
    for (line, &file) in corpus.lines.iter_mut().zip(&corpus.line_origin) {
        let stream = || corpus.origins[usize::from(file)].stream.to_string();
        let name = key.id_in(&line.text).map_or_else(stream, str::to_string);
        let next_id = session_ids.len() as u32;
        let session = *session_ids.entry(name.clone()).or_insert_with(|| {
            corpus.session_names.push(name);
            corpus.sessions.push(Vec::new());
            last_seen.push(i64::MIN);
            next_id
        });
        corpus.sessions[session as usize].push(line.template);
        line.session = session;
        if let Some(at) = line.at {
            let last = &mut last_seen[session as usize];
            if *last != i64::MIN {
                corpus.max_gap = corpus.max_gap.max(at - *last);
            }
            *last = at;
        }
    }
}

/// Resolves the session key of `options`; with `auto`, looks for one in the corpus and logs
/// what it tried. Returns the key and, when it was found, the name of its shape.
pub(super) fn resolve_session_key(
    options: &TrainOptions,
    corpus: &Corpus,
) -> anyhow::Result<(SessionKey, Option<String>)> {
    match &options.session_key {
        SessionKeySpec::Regex(pattern) => Ok((
            SessionKey::Regex(
                Regex::new(pattern)
                    .with_context(|| format!("bad --session-key regex `{pattern}`"))?,
            ),
            None,
        )),
        SessionKeySpec::Stream => Ok((SessionKey::Stream, None)),
        SessionKeySpec::Auto => {
            let view: Vec<(&str, u32, u16)> = corpus
                .lines
                .iter()
                .zip(&corpus.line_origin)
                .map(|(l, &f)| (l.text.as_str(), l.template, f))
                .collect();
            let finding = find_session_key(&view);
            for tried in finding.tried.iter().take(5) {
                tracing::debug!(
                    key = tried.candidate.as_ref().map_or("-", |c| c.name.as_str()),
                    nats_per_line = format!("{:.3}", tried.nats_per_line),
                    coverage = format!("{:.3}", tried.coverage),
                    sessions = tried.sessions,
                    session_given_template = format!("{:.3}", tried.session_given_template),
                    interleaving = format!("{:.3}", tried.interleaving),
                    continued = format!("{:.3}", tried.continued),
                    "session key candidate"
                );
            }
            match finding.chosen {
                Some(candidate) => {
                    let nats = finding
                        .tried
                        .iter()
                        .find(|t| t.candidate.as_ref() == Some(&candidate))
                        .map_or(f64::NAN, |t| t.nats_per_line);
                    tracing::info!(
                        key = candidate.name,
                        pattern = candidate.pattern,
                        nats_per_line = format!("{nats:.3}"),
                        stream_nats_per_line = format!("{:.3}", finding.stream.nats_per_line),
                        "session key found"
                    );
                    Ok((
                        SessionKey::Regex(Regex::new(&candidate.pattern)?),
                        Some(candidate.name),
                    ))
                }
                None => {
                    tracing::info!(
                        stream_nats_per_line = format!("{:.3}", finding.stream.nats_per_line),
                        "no session key makes the next line more predictable; one session per input"
                    );
                    Ok((SessionKey::Stream, None))
                }
            }
        }
    }
}

/// Counts the corpus's sessions for mining count invariants, going on with the sessions an
/// earlier training left open (an update's bundle's; see [`SessionTally`]).
///
/// A session counts when nothing cut it: it has no line in the first or last 1 % of an
/// input's lines (a log that starts or stops in the middle of sessions would otherwise break
/// every relation), unless it goes on from an open session of `earlier`, whose counts its
/// lines add to. A session that may still go on (its last line within `max_gap` seconds of
/// the logs' last time, or in the last 1 % of the last input) is kept open, and counted as
/// it is unless it ran into that end. Lines of the input numbered `counted` (an update's
/// replay sample, whose sessions `earlier` holds already) are not counted again, and a
/// session with some of them that `earlier` did not keep open began before what `earlier`
/// can tell of, so it is left out. So are, where the logs begin more than `max_gap` after
/// `earlier` ended (what came between was never seen), the sessions whose first line comes
/// within `max_gap` of their start, and the open sessions of `earlier` they go on with.
pub(super) fn tally_sessions(
    corpus: &Corpus,
    earlier: &SessionTally,
    counted: Option<usize>,
    max_gap: i64,
) -> SessionTally {
    #[derive(Default)]
    struct Seen {
        /// Its templates in the new logs.
        templates: Vec<u32>,
        new: bool,
        replayed: bool,
        at_start: bool,
        at_end: bool,
        at_final_end: bool,
        first_at: Option<i64>,
        last_at: Option<i64>,
    }
    let mut bounds = vec![(usize::MAX, 0usize); corpus.origins.len()];
    for (i, &file) in corpus.line_origin.iter().enumerate() {
        let (first, last) = &mut bounds[usize::from(file)];
        *first = (*first).min(i);
        *last = (*last).max(i);
    }
    let final_file = (0..bounds.len())
        .rev()
        .find(|&f| Some(f) != counted && bounds[f].0 != usize::MAX);
    let mut seen: Vec<Seen> = (0..corpus.sessions.len())
        .map(|_| Seen::default())
        .collect();
    let (mut start_at, mut end_at): (Option<i64>, Option<i64>) = (None, None);
    for (i, (line, &file)) in corpus.lines.iter().zip(&corpus.line_origin).enumerate() {
        let session = &mut seen[line.session as usize];
        let file = usize::from(file);
        if Some(file) == counted {
            session.replayed = true;
            continue;
        }
        session.new = true;
        session.templates.push(line.template);
        let (first, last) = bounds[file];
        let edge = (last - first + 1) / 100;
        session.at_start |= i < first + edge;
        if i + edge > last {
            session.at_end = true;
            session.at_final_end |= Some(file) == final_file;
        }
        if let Some(at) = line.at {
            session.first_at = Some(session.first_at.map_or(at, |first| first.min(at)));
            session.last_at = Some(session.last_at.map_or(at, |last| last.max(at)));
            start_at = Some(start_at.map_or(at, |start| start.min(at)));
            end_at = Some(end_at.map_or(at, |end| end.max(at)));
        }
    }
    let unseen_gap = match (earlier.end_at, start_at) {
        (Some(before), Some(start)) => start - before > max_gap,
        _ => false,
    };
    tracing::debug!(
        ?start_at,
        ?end_at,
        earlier_end_at = ?earlier.end_at,
        max_gap,
        unseen_gap,
        "counting sessions for count invariants"
    );
    let cut_by_gap = |first_at: Option<i64>| match (first_at, start_at) {
        (Some(first), Some(start)) => unseen_gap && first - start <= max_gap,
        _ => false,
    };
    let recent = |last_at: Option<i64>| match (last_at, end_at) {
        (Some(at), Some(end)) => max_gap > 0 && end - at <= max_gap,
        _ => false,
    };
    let open_before: HashMap<&str, &OpenSession> = earlier
        .open
        .iter()
        .map(|session| (session.name.as_str(), session))
        .collect();
    let mut tally = TallyBuilder::from_tally(earlier);
    let mut went_on: HashSet<&str> = HashSet::new();
    let mut fresh = Vec::new();
    for (name, session) in corpus.session_names.iter().zip(&seen) {
        if !session.new {
            continue;
        }
        let counts = counts_of(&session.templates);
        let open = |last_at| session.at_final_end || recent(last_at);
        if let Some(before) = open_before.get(name.as_str()) {
            went_on.insert(name);
            if before.counted {
                tally.uncount(&before.counts);
            }
            if unseen_gap {
                // It went on where nobody saw it: its counts are not whole either way.
                continue;
            }
            let counts = add_counts(&before.counts, &counts);
            let last_at = session.last_at.or(before.last_at);
            if open(last_at) {
                fresh.push(OpenSession {
                    name: name.clone(),
                    counts,
                    last_at,
                    counted: !session.at_final_end,
                });
            } else {
                tally.count(&counts);
            }
        } else if session.replayed || session.at_start || cut_by_gap(session.first_at) {
            continue;
        } else if open(session.last_at) {
            fresh.push(OpenSession {
                name: name.clone(),
                counts,
                last_at: session.last_at,
                counted: !session.at_end,
            });
        } else if !session.at_end {
            tally.count(&counts);
        }
    }
    for before in &earlier.open {
        if went_on.contains(before.name.as_str()) {
            continue;
        }
        if recent(before.last_at) {
            tally.carry(before.clone());
        } else if !before.counted && !unseen_gap {
            // It ended where the earlier logs did: whole after all.
            tally.count(&before.counts);
        }
    }
    for session in fresh {
        tally.keep_open(session);
    }
    tally.finish(end_at.max(earlier.end_at))
}

/// Each session's events that come before the last `share` of its file's lines: what a
/// model trained on one stream learns from, the rest being what it meets next.
pub(super) fn before_tail(corpus: &Corpus, share: f64) -> Vec<&[u32]> {
    let mut file_lines = vec![0usize; corpus.origins.len()];
    for &file in &corpus.line_origin {
        file_lines[usize::from(file)] += 1;
    }
    let tail_start: Vec<usize> = file_lines
        .iter()
        .map(|&n| n - (n as f64 * share) as usize)
        .collect();
    let mut position = vec![0usize; corpus.origins.len()];
    let mut keep = vec![0usize; corpus.sessions.len()];
    for (line, &file) in corpus.lines.iter().zip(&corpus.line_origin) {
        let at = &mut position[usize::from(file)];
        if *at < tail_start[usize::from(file)] {
            keep[line.session as usize] += 1;
        }
        *at += 1;
    }
    corpus
        .sessions
        .iter()
        .zip(keep)
        .map(|(session, keep)| &session[..keep])
        .collect()
}

/// Whether session `index` is held out (a stable hash of its name and the seed).
fn held_out(name: &str, seed: u64, share: f64) -> bool {
    let h = deepsentry_core::hash::fnv1a(name.as_bytes(), seed);
    (h % 10_000) as f64 / 10_000.0 < share
}

/// Fewest sessions a hold-out of repeated paths must have; with fewer, any session may be
/// held out.
const MIN_HELD_OUT_SESSIONS: usize = 20;

/// Which sessions are held out to calibrate the floor: a `share` of them, drawn by name and
/// seed, among the sessions whose path (their sequence of templates) an earlier session
/// already had, so that a copy of every path stays in training. The floor then measures how
/// surprising normal sessions of the kinds the detector learned are. Holding out the only copy
/// of a rare path measured the detector's ignorance of that path instead, which moved the
/// floor with the draw (HDFS floors 9.6 to 11.6 over seven seeds, 8.0 to 8.9 this way).
/// Where fewer than [`MIN_HELD_OUT_SESSIONS`] sessions repeat a path, any session may be
/// drawn.
pub(super) fn held_out_sessions(
    sessions: &[Vec<u32>],
    names: &[String],
    seed: u64,
    share: f64,
) -> Vec<bool> {
    let mut seen = HashSet::new();
    let repeats: Vec<bool> = sessions
        .iter()
        .map(|s| !seen.insert(s.as_slice()))
        .collect();
    let drawn: Vec<bool> = names.iter().map(|n| held_out(n, seed, share)).collect();
    let of_repeats: Vec<bool> = drawn.iter().zip(&repeats).map(|(d, r)| d & r).collect();
    if of_repeats.iter().filter(|h| **h).count() >= MIN_HELD_OUT_SESSIONS {
        of_repeats
    } else {
        drawn
    }
}

/// `session` with neighbouring events swapped at `rate`: each neighbouring pair of
/// `unordered` templates (see [`unordered_pairs`]) is swapped with that chance, and an event
/// swapped once is not swapped again, so none moves more than one place.
/// Events that happen close together in a session often arrive from several writers (a
/// block's datanodes, a request's services) whose clocks and buffers do not agree, so their
/// order in the log is not the order of what happened; a detector trained only on the orders
/// of the training log finds every other such order surprising.
pub(super) fn jostled(
    session: &[u32],
    rate: f64,
    unordered: &HashSet<(u32, u32)>,
    rng: &mut SplitMix64,
) -> Vec<u32> {
    let mut out = session.to_vec();
    let mut i = 0;
    while i + 1 < out.len() {
        if unordered.contains(&(out[i], out[i + 1])) && rng.chance(rate) {
            out.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// The training sessions as one pass over them reads them: those `used` jostled at `rate`
/// (see [`jostled`]), drawn anew for each pass; the others, or all with a `rate` of 0, as
/// they are.
pub(super) fn pass_sessions<'a>(
    sessions: &'a [Vec<u32>],
    used: &[bool],
    rate: f64,
    unordered: &HashSet<(u32, u32)>,
    rng: &mut SplitMix64,
) -> Vec<Cow<'a, [u32]>> {
    sessions
        .iter()
        .zip(used)
        .map(|(session, &used)| {
            if used && rate > 0.0 {
                Cow::Owned(jostled(session, rate, unordered, rng))
            } else {
                Cow::Borrowed(session.as_slice())
            }
        })
        .collect()
}

/// The pairs of templates that the `used` sessions show next to each other in both orders:
/// neighbours whose order the log does not keep. A pair always seen in one order (a block
/// is invalidated, then deleted) is an order that means something, and is never swapped.
pub(super) fn unordered_pairs(sessions: &[Vec<u32>], used: &[bool]) -> HashSet<(u32, u32)> {
    let mut seen = HashSet::new();
    for (session, _) in sessions.iter().zip(used).filter(|(_, &u)| u) {
        for pair in session.windows(2) {
            if pair[0] != pair[1] {
                seen.insert((pair[0], pair[1]));
            }
        }
    }
    seen.iter()
        .copied()
        .filter(|&(a, b)| seen.contains(&(b, a)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair of different templates below `n`, in both orders.
    fn all_pairs(n: u32) -> HashSet<(u32, u32)> {
        (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .filter(|(a, b)| a != b)
            .collect()
    }

    /// The counted lines of `texts` as `novelty_lines` takes them, with the shapes they index.
    fn shaped(texts: &[&str]) -> (Vec<(u32, Severity)>, Vec<String>) {
        let mut shapes: Vec<String> = Vec::new();
        let lines = texts
            .iter()
            .map(|text| {
                let id = shapes.iter().position(|s| s == text).unwrap_or_else(|| {
                    shapes.push(text.to_string());
                    shapes.len() - 1
                });
                (id as u32, severity_of(text))
            })
            .collect();
        (lines, shapes)
    }

    #[test]
    fn a_later_value_of_an_earlier_field_is_no_new_statement() {
        let (lines, shapes) = shaped(&[
            "ERROR payment declined for alice",
            "ERROR payment declined for bob",
            "INFO ready",
            "ERROR payment declined for carol",
            // The later half: a new value of that field, a new statement, and a word the
            // earlier half had as one value only (no field yet).
            "ERROR payment declined for dave",
            "ERROR database connection lost",
            "INFO ready now",
            "INFO ready now",
        ]);
        let counted = novelty_lines(&lines, &shapes, 0);
        let stats = crate::novelty::NoveltyStats::learn(&counted, 0);
        assert_eq!(counted[4].0, 0, "dave is a value of the earlier field");
        assert_eq!(counted[5], lines[5]);
        assert_eq!(counted[6], lines[6]);
        assert_eq!(counted[..4], lines[..4]);
        // One new error line of four, where it would be two without the field.
        let expected = -(1.5f64 / 5.0).ln();
        assert!((stats.new_template_surprise(Severity::Error) - expected).abs() < 1e-9);
    }

    #[test]
    fn a_later_value_of_an_earlier_statement_of_two_fields_is_no_new_statement() {
        let (lines, shapes) = shaped(&[
            "ERROR card declined for Jane Smith",
            "ERROR card declined for John Chen",
            "ERROR card declined for Jane Chen",
            "ERROR card declined for John Smith",
            // A name whose first and last name the earlier half showed, never together.
            "ERROR card declined for Jane Kim",
            "ERROR ledger write failed",
            "ERROR ledger write failed",
            "ERROR ledger write failed",
        ]);
        let counted = novelty_lines(&lines, &shapes, 0);
        assert_eq!(
            counted[4].0, 0,
            "a value of the earlier statement's two fields"
        );
        assert_eq!(counted[5], lines[5], "a new statement");
    }

    #[test]
    fn a_field_made_by_later_values_alone_does_not_excuse_them() {
        let (lines, shapes) = shaped(&[
            "INFO start",
            "INFO user alice logged in",
            "INFO disk sda ok",
            "INFO user bob logged in",
            // Two earlier values and a later third: training's field, mostly seen before.
            "INFO user carol logged in",
            // One earlier value: the later ones would make the field on their own.
            "INFO disk sdb ok",
            "INFO disk sdc ok",
            "INFO start",
        ]);
        let counted = novelty_lines(&lines, &shapes, 0);
        assert_eq!(counted[4].0, 1);
        assert_eq!(counted[..4], lines[..4]);
        assert_eq!(counted[5..], lines[5..]);
    }

    #[test]
    fn jostling_swaps_neighbours_only_and_keeps_every_event() {
        let session: Vec<u32> = (0..400).collect();
        let any = all_pairs(400);
        let mut rng = SplitMix64::new(7);
        assert_eq!(jostled(&session, 0.0, &any, &mut rng), session);
        assert_eq!(
            jostled(&[1, 2, 3, 4, 5], 1.0, &any, &mut rng),
            vec![2, 1, 4, 3, 5]
        );

        let out = jostled(&session, 0.1, &any, &mut rng);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, session, "the same events");
        assert!(out
            .iter()
            .enumerate()
            .all(|(at, &event)| (at as i64 - i64::from(event)).abs() <= 1));
        let moved = out.iter().zip(&session).filter(|(a, b)| a != b).count();
        // About one pair in ten swapped: some 70 of 400 events moved.
        assert!((30..120).contains(&moved), "{moved} moved");
        // The same seed, the same passes.
        let first = jostled(&session, 0.1, &any, &mut SplitMix64::new(9));
        assert_eq!(jostled(&session, 0.1, &any, &mut SplitMix64::new(9)), first);
    }

    #[test]
    fn only_neighbours_seen_in_both_orders_are_swapped() {
        // 1 and 2 come in either order; 3 always follows 2 (invalidated, then deleted).
        let sessions = vec![vec![0, 1, 2, 3], vec![0, 2, 1, 3], vec![0, 1, 2, 3, 3]];
        let unordered = unordered_pairs(&sessions, &[true, true, true]);
        assert_eq!(unordered, HashSet::from([(1, 2), (2, 1)]));
        // A session not trained on says nothing about orders.
        assert!(unordered_pairs(&sessions, &[true, false, true]).is_empty());
        let mut rng = SplitMix64::new(3);
        for _ in 0..20 {
            let out = jostled(&[0, 1, 2, 3], 1.0, &unordered, &mut rng);
            assert_eq!(out, vec![0, 2, 1, 3]);
        }
    }

    #[test]
    fn only_repeated_paths_are_held_out_when_enough_repeat() {
        // 200 sessions of 40 paths: a copy of each path stays in training.
        let sessions: Vec<Vec<u32>> = (0..200u32).map(|i| vec![i % 40, 99]).collect();
        let names: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        let held = held_out_sessions(&sessions, &names, 42, 0.5);
        assert!(held.iter().filter(|h| **h).count() >= MIN_HELD_OUT_SESSIONS);
        for path in 0..40u32 {
            assert!(
                (0..200).any(|i| sessions[i][0] == path && !held[i]),
                "path {path} stays in training"
            );
        }
        assert!(
            held[..40].iter().all(|h| !h),
            "first copies are never held out"
        );
        // Every path unique: any session may be held out.
        let unique: Vec<Vec<u32>> = (0..200u32).map(|i| vec![i]).collect();
        let held = held_out_sessions(&unique, &names, 42, 0.5);
        assert!(held.iter().filter(|h| **h).count() > 50);
    }

    #[test]
    fn a_pass_jostles_the_sessions_it_uses_and_no_others() {
        let sessions = vec![(0..50).collect::<Vec<u32>>(), (0..50).collect()];
        let any = all_pairs(50);
        let mut rng = SplitMix64::new(1);
        let pass = pass_sessions(&sessions, &[true, false], 0.5, &any, &mut rng);
        assert_ne!(&*pass[0], sessions[0].as_slice());
        assert!(matches!(pass[1], Cow::Borrowed(_)));
        let pass = pass_sessions(&sessions, &[true, true], 0.0, &any, &mut rng);
        assert!(pass.iter().all(|s| matches!(s, Cow::Borrowed(_))));
    }
}
