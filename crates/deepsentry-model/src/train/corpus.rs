//! Reading the training data: lines, templates, sessions, the session key, and the hold-out.

use std::collections::HashMap;

use anyhow::Context;
use deepsentry_core::Origin;
use regex::Regex;

use super::TrainOptions;
use crate::normalize::template_into;
use crate::scorer::SessionKey;
use crate::session_key::{find_session_key, SessionKeySpec};
use crate::severity::{level_of, severity_of, severity_with_level, Severity};
use deepsentry_core::lines::{read_all, LineDecoder};
use deepsentry_core::timestamp::yearless_clock;

/// A line of the training data.
pub(super) struct Line {
    pub(super) text: String,
    pub(super) template: u32,
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
    let mut lines = Vec::new();
    let mut origins = Vec::new();
    let mut line_origin = Vec::new();
    let mut scratch = String::new();
    let metrics = deepsentry_core::metrics::Metrics::default();
    let clock = yearless_clock();
    for (file_index, path) in options.inputs.iter().enumerate() {
        let file = std::fs::File::open(path)
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
            lines.push(Line {
                text: text.to_owned(),
                template,
                session: 0,
                at,
                severity,
            });
            line_origin.push(file_index as u16);
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    }
    anyhow::ensure!(!lines.is_empty(), "the training inputs hold no lines");
    let mut corpus = Corpus {
        lines,
        templates,
        session_names: Vec::new(),
        sessions: Vec::new(),
        max_gap: 0,
        origins,
        line_origin,
    };
    assign_sessions(&mut corpus, &SessionKey::Stream);
    Ok(corpus)
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
        let name = match key {
            SessionKey::Regex(re) => re
                .captures(&line.text)
                .and_then(|c| c.get(1).or_else(|| c.get(0)))
                .map(|m| m.as_str().to_string())
                .unwrap_or_else(stream),
            _ => stream(),
        };
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

/// The sessions that cannot have been cut by the start or the end of an input file: those
/// without a line in the first or last 1 % of their file's lines. A log file that starts or
/// stops in the middle of sessions would otherwise break every count invariant.
pub(super) fn sessions_inside_inputs(corpus: &Corpus) -> Vec<&[u32]> {
    let mut bounds = vec![(usize::MAX, 0usize); corpus.origins.len()];
    for (i, &file) in corpus.line_origin.iter().enumerate() {
        let (first, last) = &mut bounds[usize::from(file)];
        *first = (*first).min(i);
        *last = (*last).max(i);
    }
    let mut cut = vec![false; corpus.sessions.len()];
    for (i, (line, &file)) in corpus.lines.iter().zip(&corpus.line_origin).enumerate() {
        let (first, last) = bounds[usize::from(file)];
        let edge = (last - first + 1) / 100;
        if i < first + edge || i + edge > last {
            cut[line.session as usize] = true;
        }
    }
    corpus
        .sessions
        .iter()
        .zip(&cut)
        .filter(|(_, cut)| !**cut)
        .map(|(session, _)| session.as_slice())
        .collect()
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
pub(super) fn held_out(name: &str, seed: u64, share: f64) -> bool {
    let h = deepsentry_core::hash::fnv1a(name.as_bytes(), seed);
    (h % 10_000) as f64 / 10_000.0 < share
}
