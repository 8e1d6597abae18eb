//! After training: the class prior and the threshold floor, learned on held-out data.

use deepsentry_core::anomaly;
use std::collections::{HashMap, VecDeque};

use deepsentry_core::Event;

use super::corpus::Corpus;
use super::TrainOptions;
use crate::bundle::{ClassPrior, LoadedModel};
use crate::novelty::VocabularyLimits;
use crate::scorer::{Scorer, ScorerSettings, SequenceModel, SessionKey, NOVELTY_FLOOR};

/// How many times less likely than the 99th percentile of held-out lines an event must be to
/// pass the floor of a model trained on one stream (no sessions).
pub(super) const LINE_FLOOR_MARGIN: f64 = 10.0;

/// Fewer held-out lines than this cannot show the one line in a thousand the floor of a
/// model trained on one stream stands for; the highest of them, carried out to it, stands in.
pub(super) const LINE_TAIL_SAMPLE: usize = 1_000;

/// Mixture weights tried for the class prior (see [`ClassPrior`]).
pub(super) const PRIOR_WEIGHTS: [f64; 11] =
    [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5];

/// The least prior weight of a model of sessions. Its networks learn each distinct training
/// session's orders and grow sure of them, and its floor is calibrated on a few hundred
/// held-out sessions, which cannot show the rare normal orders a later day brings (held-out
/// likelihood chose no prior at all on HDFS). With one part in a hundred of how often each
/// event comes, no event of a template that is 5 % of the training lines costs more than
/// 7.6 nats, however unexpected the detector finds it there. A model of one stream is
/// calibrated on its held-out lines, which show those orders as they come, and keeps the
/// full choice: an order anomaly of common events stays visible there.
pub(super) const SESSION_PRIOR_WEIGHT: f64 = 0.01;

/// What the bundle being updated learned of the class prior.
#[derive(Default)]
pub(super) struct PriorSoFar<'a> {
    /// How often each class came, as counts, in the updated model's class order.
    pub(super) counts: Vec<f64>,
    /// The held-out evidence its weight was chosen on ([`ClassPrior::evidence`]).
    pub(super) evidence: &'a [f64],
}

/// Sets the class prior: how often each class came (over all training targets, smoothed,
/// plus the counts of a bundle being updated), and its weight, the one of [`PRIOR_WEIGHTS`]
/// (from [`SESSION_PRIOR_WEIGHT`] up for a model of sessions) under which the held-out events
/// are most likely, with the evidence of a bundle being updated.
pub(super) fn learn_prior(
    model: &mut LoadedModel,
    so_far: &PriorSoFar,
    corpus: &Corpus,
    training_part: &[&[u32]],
    is_held_out: &[bool],
    by_sessions: bool,
    vectors: &[Vec<f32>],
) {
    let classes = model.metadata.classes();
    let end = model.metadata.templates.len();
    let mut counts = vec![0.5f64; classes];
    for (count, earlier) in counts.iter_mut().zip(&so_far.counts) {
        *count += earlier;
    }
    // (session, position, target) of every held-out event.
    let mut held: Vec<(usize, usize, usize)> = Vec::new();
    for (s, session) in corpus.sessions.iter().enumerate() {
        for &t in session.iter() {
            counts[t as usize] += 1.0;
        }
        counts[end] += 1.0;
        let first = if by_sessions {
            if !is_held_out[s] {
                continue;
            }
            0
        } else {
            training_part[s].len()
        };
        for (i, &t) in session.iter().enumerate().skip(first) {
            held.push((s, i, t as usize));
        }
        if by_sessions {
            held.push((s, session.len(), end));
        }
    }
    let total: f64 = counts.iter().sum();
    let least = if by_sessions {
        SESSION_PRIOR_WEIGHT
    } else {
        0.0
    };
    model.metadata.prior = ClassPrior {
        weight: least,
        probabilities: counts.iter().map(|c| (c / total) as f32).collect(),
        evidence: Vec::new(),
    };
    let earlier = (so_far.evidence.len() == PRIOR_WEIGHTS.len()).then_some(so_far.evidence);
    if held.is_empty() && earlier.is_none() {
        return;
    }
    // Held-out events are many; a sample of them decides as well.
    let step = held.len().div_ceil(20_000);
    let steps = model.metadata.sizes.sequence_length;
    let mut likelihood = [0.0f64; PRIOR_WEIGHTS.len()];
    for chunk in held.iter().step_by(step).collect::<Vec<_>>().chunks(512) {
        let windows: Vec<Vec<&[f32]>> = chunk
            .iter()
            .map(|&&(s, i, _)| {
                corpus.sessions[s][i.saturating_sub(steps)..i]
                    .iter()
                    .map(|&t| vectors[t as usize].as_slice())
                    .collect()
            })
            .collect();
        // The detector's own predictions: the prior is mixed when a class is looked up.
        let rows = model.log_probs(&windows);
        for (&&(_, _, target), row) in chunk.iter().zip(rows) {
            let detector = f64::from(row[target]).exp();
            let prior = f64::from(model.metadata.prior.probabilities[target]);
            for (l, w) in likelihood.iter_mut().zip(PRIOR_WEIGHTS) {
                // Each sampled event stands for `step` of them.
                *l += step as f64 * ((1.0 - w) * detector + w * prior).max(1e-30).ln();
            }
        }
    }
    let own = likelihood;
    if let Some(earlier) = earlier {
        for (l, e) in likelihood.iter_mut().zip(earlier) {
            *l += e;
        }
    }
    let best = (0..PRIOR_WEIGHTS.len())
        .filter(|&i| PRIOR_WEIGHTS[i] >= least)
        .max_by(|&a, &b| likelihood[a].total_cmp(&likelihood[b]))
        .unwrap_or(0);
    model.metadata.prior.weight = PRIOR_WEIGHTS[best];
    model.metadata.prior.evidence = likelihood.to_vec();
    let events = held.len().max(1) as f64;
    tracing::info!(
        weight = PRIOR_WEIGHTS[best],
        held_out_nats_per_event = format!("{:.3}", -own[best] / events),
        detector_alone = format!("{:.3}", -own[0] / events),
        with_the_bundles_evidence = earlier.is_some(),
        "class prior mixed into the detector's predictions"
    );
}

/// Marks an event calibration scores for its context only, not for the floor.
const WARM_UP: &str = "calibration_warm_up";

/// Scores the held-out sessions with the pipeline's own scorer and sets the floor.
pub(super) fn calibrate(
    model: &mut LoadedModel,
    corpus: &Corpus,
    training_part: &[&[u32]],
    is_held_out: &[bool],
    by_sessions: bool,
    key: &SessionKey,
    options: &TrainOptions,
) -> anyhow::Result<()> {
    let use_all = by_sessions && !is_held_out.iter().any(|h| *h);
    // Without sessions to hold out, the tail of each stream is the held-out part.
    let mut position = vec![0usize; corpus.sessions.len()];
    let settings = ScorerSettings {
        window_size: 100,
        threshold_multiplier: 2.5,
        min_samples: usize::MAX,
        exclude_anomalies: false,
        threshold_floor: Some(f64::INFINITY),
        session_key: key.clone(),
        session_ttl_secs: i64::MAX / 4,
        max_sessions: usize::MAX,
        alert_group_secs: 0,
        vocabulary: VocabularyLimits::default(),
        novelty_floor: f64::INFINITY,
        ..ScorerSettings::default()
    };
    let mut scorer = Scorer::new(&*model, settings);
    let mut session_max: HashMap<String, f64> = HashMap::new();
    let mut scores = Vec::new();
    let mut record = |events: Vec<Event>| {
        for event in events {
            if event.fields.get(WARM_UP).is_some() {
                continue;
            }
            let Some(deepsentry_core::Value::Float(score)) =
                event.fields.get(anomaly::ANOMALY_SCORE).cloned()
            else {
                continue;
            };
            let session = event
                .fields
                .get(anomaly::SESSION)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let is_end = event.fields.get(anomaly::SESSION_END).is_some();
            if is_end && !by_sessions {
                // The stream was cut for the hold-out; it did not end there.
                continue;
            }
            scores.push(score);
            // One stream is judged line by line: each line is its own unit.
            let unit = if by_sessions {
                session
            } else {
                scores.len().to_string()
            };
            let max = session_max.entry(unit).or_insert(0.0);
            *max = max.max(score);
        }
    };
    let now = chrono::Utc::now();
    let event_of = |line: &super::corpus::Line, origin: u16| {
        Event::from_str(&line.text, now, corpus.origins[usize::from(origin)].clone())
    };
    // The last lines before the tail of each keyed session the tail cuts, to score its
    // held-out lines after them: a request the tail takes up in the middle did not begin
    // there, and scored from an empty window its first held-out lines would look like a
    // request whose first steps were skipped (the highest scores of the hold-out, which set
    // the floor above every such anomaly). A stream that is one session keeps its fresh start:
    // a replay or a restart begins there too.
    let warm_up_lines = match key {
        SessionKey::Stream => 0,
        _ => model.metadata.sizes.sequence_length,
    };
    let mut before_tail: HashMap<usize, VecDeque<(usize, u16)>> = HashMap::new();
    let mut batch = Vec::new();
    for (index, (line, &origin)) in corpus.lines.iter().zip(&corpus.line_origin).enumerate() {
        let session = line.session as usize;
        let at = position[session];
        position[session] += 1;
        let held = if by_sessions {
            is_held_out[session]
        } else {
            at >= training_part[session].len()
        };
        if !use_all && !held {
            if !by_sessions
                && warm_up_lines > 0
                && training_part[session].len() < corpus.sessions[session].len()
            {
                let recent = before_tail.entry(session).or_default();
                if recent.len() == warm_up_lines {
                    recent.pop_front();
                }
                recent.push_back((index, origin));
            }
            continue;
        }
        for (earlier, origin) in before_tail.remove(&session).into_iter().flatten() {
            let mut event = event_of(&corpus.lines[earlier], origin);
            event
                .fields
                .insert(WARM_UP, deepsentry_core::Value::Bool(true));
            batch.push(event);
        }
        batch.push(event_of(line, origin));
        if batch.len() == 1024 {
            record(scorer.process(std::mem::take(&mut batch)));
        }
    }
    record(scorer.process(batch));
    record(scorer.finish());
    anyhow::ensure!(
        !scores.is_empty(),
        "too few lines to calibrate the threshold on: of the {} training lines none was held \
         out to score; train on more of the system's normal logs (a few hundred lines at least)",
        corpus.lines.len()
    );
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = session_max.values().copied().fold(0.0, f64::max);
    let mut sorted: Vec<f64> = session_max.values().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let training = &mut model.metadata.training;
    training.score_mean = mean;
    training.score_std = std;
    training.score_max = max;
    training.score_p99 = quantile(0.99);
    // The 99th percentile, not the maximum: one odd session in the hold-out would otherwise
    // decide the floor alone. The margin is in probability, so it adds in nats.
    training.score_floor = score_floor(
        by_sessions,
        training.score_p99,
        max,
        sorted.len(),
        options.floor_margin,
    );
    tracing::info!(
        sessions = sorted.len(),
        score_mean = format!("{mean:.3}"),
        session_max_p50 = format!("{:.3}", quantile(0.5)),
        session_max_p99 = format!("{:.3}", quantile(0.99)),
        session_max_max = format!("{max:.3}"),
        floor = format!("{:.3}", training.score_floor),
        by_sessions,
        "threshold floor calibrated on held-out sessions (or lines)"
    );
    Ok(())
}

/// The threshold floor from the held-out scores: the 99th percentile of `held_out` sessions'
/// maxima `floor_margin` times less likely (`by_sessions`), or [`one_stream_floor`] of lines;
/// never below [`NOVELTY_FLOOR`]. A held-out part that repeats one regime (a log whose tail is
/// one attack's three lines over and over) scores near zero and would set the floor at a few
/// nats, where events that one time in twenty comes next are flagged; and an event of a
/// known template is no more alarming than one of a template never seen, which must be as
/// rare as one line in 200.
fn score_floor(by_sessions: bool, p99: f64, max: f64, held_out: usize, floor_margin: f64) -> f64 {
    let calibrated = if by_sessions {
        p99 + floor_margin.max(1.0).ln()
    } else {
        one_stream_floor(p99, max, held_out)
    };
    calibrated.max(NOVELTY_FLOOR)
}

/// The floor of a model trained on one stream, judged line by line, from the 99th
/// percentile and the highest score of its `lines` held-out lines: about one line in a
/// thousand. The 99th percentile of held-out lines is a far larger sample than that of
/// sessions' maxima, so a smaller margin says as much: ten times less likely than that line
/// is about one line in a thousand (scores are surprises in nats, whose tail falls by a
/// factor e per nat). A short log holds out a few hundred lines, too few to see one in a
/// thousand (their 99th percentile is their third highest): their highest score is the only
/// sight of the tail, and it stands for about one line in `lines + 1`, so it is carried out
/// to one in a thousand by the same rule, `ln(1000 / (lines + 1))` nats further. No held-out
/// line, normal by definition, is left above the floor.
fn one_stream_floor(p99: f64, max: f64, lines: usize) -> f64 {
    let floor = p99 + LINE_FLOOR_MARGIN.ln();
    if lines < LINE_TAIL_SAMPLE {
        let beyond_highest = (LINE_TAIL_SAMPLE as f64 / (lines + 1) as f64).ln();
        floor.max(max + beyond_highest)
    } else {
        floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_stream_keeps_every_held_out_line_under_its_floor() {
        let margin = LINE_FLOOR_MARGIN.ln();
        // 120 held-out lines: the highest, about one line in 121, stands in for the tail
        // they cannot show, carried out to one line in a thousand.
        let beyond = (1000.0f64 / 121.0).ln();
        assert_eq!(one_stream_floor(1.8, 5.8, 120), 5.8 + beyond);
        assert_eq!(one_stream_floor(5.0, 5.1, 120), 5.0 + margin);
        assert!(one_stream_floor(1.8, 5.8, 500) > 5.8 + 0.6);
        // Enough lines to see one in a thousand: one odd line does not decide.
        assert_eq!(one_stream_floor(1.8, 16.0, 5_000), 1.8 + margin);
    }

    #[test]
    fn a_held_out_part_of_one_regime_does_not_set_the_floor_below_the_novelty_floor() {
        // 70 held-out lines of one repeated cycle, all about certain.
        assert_eq!(score_floor(false, 0.013, 0.013, 70, 200.0), NOVELTY_FLOOR);
        assert_eq!(score_floor(true, 0.013, 0.013, 70, 10.0), NOVELTY_FLOOR);
        // A calibrated floor above it stands.
        assert_eq!(score_floor(true, 3.0, 9.0, 500, 200.0), 3.0 + 200f64.ln());
        assert_eq!(
            score_floor(false, 4.0, 16.0, 5_000, 200.0),
            4.0 + LINE_FLOOR_MARGIN.ln()
        );
    }
}
