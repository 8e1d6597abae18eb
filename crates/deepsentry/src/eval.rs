//! `deepsentry eval`: replays a labelled log through the `deepsentry` transform's own scorer
//! and reports precision, recall, F1 and false-positive rate.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use deepsentry_core::anomaly;
use deepsentry_core::lines::{read_all, LineDecoder};
use deepsentry_core::{Event, Origin, Value};
use deepsentry_model::BackendKind;
use deepsentry_transform_deepsentry::DeepsentryTransformConfig;
use serde::Serialize;

/// The HDFS test ratio of DeepLog's evaluation (553,366 normal to 16,838 anomalous blocks),
/// used to project F1 from recall and false-positive rate.
const PROJECTED_NORMAL: f64 = 553_366.0;
const PROJECTED_ANOMALOUS: f64 = 16_838.0;
/// DeepLog's window plus the predicted key: sessions shorter than this cannot be judged by a
/// window alone.
const LONG_SESSION_LINES: u64 = 11;

/// Options of `deepsentry eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model bundle directory.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Labelled log to replay.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    #[command(flatten)]
    format: crate::input_format::InputFormat,
    /// Session labels, loghub's `BlockId,Label` CSV (`Normal`/`Anomaly`); needs --session-key.
    #[arg(long, value_name = "CSV", conflicts_with = "line_labels")]
    labels: Option<PathBuf>,
    /// The first token of each line is its label (`-` = normal, anything else = anomaly, the
    /// BGL convention); it is removed before scoring.
    #[arg(long)]
    line_labels: bool,
    /// Regex whose first capture group (or match) is the session id, e.g. 'blk_-?\d+';
    /// `none`: the whole input is one session; default (`auto`): the key the model was
    /// trained with.
    #[arg(long, value_name = "REGEX|auto|none")]
    session_key: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Backend: flex, ndarray, wgpu, auto.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Override the transform's `threshold_multiplier` (2.5).
    #[arg(long)]
    threshold_multiplier: Option<f64>,
    /// Override the transform's `window_size` (100).
    #[arg(long)]
    window_size: Option<usize>,
    /// Override the model's learned threshold floor.
    #[arg(long)]
    threshold_floor: Option<f64>,
    /// Write every scored event (session ends included) to this file as JSON lines, with
    /// score, threshold, verdict, reason and template, to see why the detector decided.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
}

/// Confusion counts and the rates they give.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Scores {
    /// Anomalies flagged.
    pub tp: u64,
    /// Normals flagged.
    pub fp: u64,
    /// Anomalies missed.
    pub fn_: u64,
    /// Normals passed.
    pub tn: u64,
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// FP / (FP + TN).
    pub false_positive_rate: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Scores {
    fn from_pairs(pairs: impl Iterator<Item = (bool, bool)>) -> Self {
        let mut s = Scores::default();
        for (actual, flagged) in pairs {
            match (actual, flagged) {
                (true, true) => s.tp += 1,
                (false, true) => s.fp += 1,
                (true, false) => s.fn_ += 1,
                (false, false) => s.tn += 1,
            }
        }
        s.precision = ratio(s.tp, s.tp + s.fp);
        s.recall = ratio(s.tp, s.tp + s.fn_);
        s.f1 = if s.precision + s.recall > 0.0 {
            2.0 * s.precision * s.recall / (s.precision + s.recall)
        } else {
            0.0
        };
        s.false_positive_rate = ratio(s.fp, s.fp + s.tn);
        s
    }

    /// F1 at DeepLog's HDFS class ratio, from recall and false-positive rate only.
    fn projected_f1(&self) -> f64 {
        let tp = self.recall * PROJECTED_ANOMALOUS;
        let fp = self.false_positive_rate * PROJECTED_NORMAL;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        if precision + self.recall > 0.0 {
            2.0 * precision * self.recall / (precision + self.recall)
        } else {
            0.0
        }
    }
}

/// What `eval` prints.
#[derive(Debug, Serialize)]
struct Report {
    input: String,
    model: String,
    level: &'static str,
    lines: u64,
    seconds: f64,
    lines_per_second: f64,
    scores: Scores,
    #[serde(skip_serializing_if = "Option::is_none")]
    projected_f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    without_session_end: Option<Scores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    long_sessions: Option<Scores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unlabelled_sessions: Option<u64>,
    /// Lines (session ends excluded) the detector flagged.
    lines_flagged: u64,
    /// Alerts after grouping (anomalies marked `alert`), session ends included.
    alerts: u64,
    /// Anomalies by `anomaly_reason`.
    reasons: std::collections::BTreeMap<String, u64>,
    /// Lines of templates the model was not trained on.
    unknown_template_lines: u64,
    /// Whether the model fits the log (see `Scorer::model_fits`).
    model_fits: bool,
}

#[derive(Default)]
struct SessionVerdict {
    flagged: bool,
    flagged_by_lines: bool,
    lines: u64,
}

fn read_session_labels(path: &PathBuf) -> anyhow::Result<HashMap<String, bool>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open labels {}", path.display()))?;
    let mut labels = HashMap::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let Some((id, label)) = line.trim().split_once(',') else {
            continue;
        };
        match label.trim() {
            "Anomaly" => labels.insert(id.to_string(), true),
            "Normal" => labels.insert(id.to_string(), false),
            _ if i == 0 => None, // header
            other => anyhow::bail!(
                "{}:{}: label `{other}` is neither `Normal` nor `Anomaly`",
                path.display(),
                i + 1
            ),
        };
    }
    Ok(labels)
}

/// Runs `deepsentry eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.labels.is_some() || args.line_labels,
        "give either --labels CSV (session labels) or --line-labels"
    );
    anyhow::ensure!(
        args.labels.is_none() || args.session_key.is_some(),
        "--labels names sessions: give --session-key too (e.g. 'blk_-?\\d+')"
    );
    let mut config = DeepsentryTransformConfig::for_model(args.model.clone());
    config.backend = args.backend;
    config.session_key = args.session_key.clone();
    config.threshold_multiplier = args
        .threshold_multiplier
        .unwrap_or(config.threshold_multiplier);
    config.window_size = args.window_size.unwrap_or(config.window_size);
    config.threshold_floor = args.threshold_floor;
    let mut scorer = config.build_scorer()?;

    let mut text = Vec::new();
    deepsentry_core::lines::open_log(&args.input)
        .and_then(|mut input| input.read_to_end(&mut text))
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let text = String::from_utf8_lossy(&text);
    let origin = Origin::new("eval", args.input.display().to_string().as_str());
    let total = text.lines().count() as u64;
    let bar =
        deepsentry_model::train::progress_bar(std::io::stderr().is_terminal(), total, "replay");

    let mut line_truth: Vec<bool> = Vec::new();
    let mut line_flagged: Vec<bool> = Vec::new();
    let mut sessions: HashMap<String, SessionVerdict> = HashMap::new();
    let mut dump = match &args.events {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let started = Instant::now();
    // With line labels, each line's label is read off before the line is decoded.
    let unlabelled: String;
    let input = if args.line_labels {
        let mut rest_of_lines = String::with_capacity(text.len());
        for line in text.lines() {
            let (label, rest) = line.split_once(' ').unwrap_or((line, ""));
            line_truth.push(label != "-");
            rest_of_lines.push_str(rest);
            rest_of_lines.push('\n');
        }
        unlabelled = rest_of_lines;
        unlabelled.as_str()
    } else {
        &text
    };
    let settings = if args.line_labels {
        args.format
            .labelled_line_settings(input, scorer.stats().model_joined_lines)
    } else {
        args.format.line_settings_of(input)
    };
    // Whether events may be several lines joined.
    let joins_lines = settings.multiline.is_some();
    let mut alerts = 0u64;
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let mut record = |events: Vec<Event>, line_flagged: &mut Vec<bool>| {
        for event in events {
            let flagged = event.is_anomaly();
            let is_end = event.fields.get(anomaly::SESSION_END).is_some();
            alerts += u64::from(matches!(
                event.fields.get(anomaly::ALERT),
                Some(Value::Bool(true))
            ));
            if let Some(out) = dump.as_mut() {
                let mut line = Vec::new();
                deepsentry_core::codec::encode(
                    deepsentry_core::codec::Encoding::Json,
                    &event,
                    &mut line,
                );
                // A failed write shows at the flush below.
                let _ = std::io::Write::write_all(out, &line);
            }
            if flagged {
                if let Some(reason) = event.fields.get(anomaly::ANOMALY_REASON) {
                    *reasons.entry(reason.to_string()).or_default() += 1;
                }
                tracing::debug!(
                    score = event.fields.number(anomaly::ANOMALY_SCORE),
                    reason = %event.fields.get(anomaly::ANOMALY_REASON).map(|r| r.to_string()).unwrap_or_default(),
                    message = event.message(),
                    "flagged"
                );
            }
            if let Some(session) = event.fields.get(anomaly::SESSION) {
                let verdict = sessions.entry(session.to_string()).or_default();
                verdict.flagged |= flagged;
                if !is_end {
                    verdict.flagged_by_lines |= flagged;
                    verdict.lines += 1;
                }
            }
            if !is_end {
                // A joined event (a trace and the line that logged it) covers its lines: each
                // of them has the event's verdict. (Without joining, a line break in a message
                // came from decoding, as JSON's `"log": "...\n"`: still one line.)
                let lines = if joins_lines {
                    1 + event.message().matches('\n').count()
                } else {
                    1
                };
                line_flagged.extend(std::iter::repeat_n(flagged, lines));
            }
        }
    };
    let mut decoder = LineDecoder::new(
        Arc::clone(&origin),
        &deepsentry_core::metrics::Metrics::default().component("eval"),
        &settings,
    );
    let mut batch = Vec::with_capacity(config.batch_size);
    read_all(input.as_bytes(), &mut decoder, |event| {
        batch.push(event);
        if batch.len() == config.batch_size {
            record(
                scorer.process(std::mem::take(&mut batch)),
                &mut line_flagged,
            );
            bar.inc(config.batch_size as u64);
        }
    })
    .with_context(|| format!("cannot read {}", args.input.display()))?;
    record(scorer.process(batch), &mut line_flagged);
    record(scorer.finish(), &mut line_flagged);
    let stats = scorer.stats();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(mut out) = dump {
        std::io::Write::flush(&mut out).context("cannot write the scored events")?;
    }

    let mut report = Report {
        input: args.input.display().to_string(),
        model: args.model.display().to_string(),
        level: "line",
        lines: total,
        seconds,
        lines_per_second: total as f64 / seconds.max(1e-9),
        scores: Scores::default(),
        projected_f1: None,
        without_session_end: None,
        long_sessions: None,
        unlabelled_sessions: None,
        lines_flagged: line_flagged.iter().filter(|f| **f).count() as u64,
        alerts,
        reasons,
        unknown_template_lines: stats.unknown_lines,
        model_fits: stats.model_fits,
    };
    if let Some(path) = &args.labels {
        let labels = read_session_labels(path)?;
        let verdict = |id: &str| sessions.get(id);
        let pairs = |by_lines: bool, min_lines: u64| {
            labels
                .iter()
                .filter(move |(id, _)| verdict(id).map_or(0, |v| v.lines) >= min_lines)
                .map(move |(id, &actual)| {
                    let v = verdict(id);
                    let flagged = v.is_some_and(|v| {
                        if by_lines {
                            v.flagged_by_lines
                        } else {
                            v.flagged
                        }
                    });
                    (actual, flagged)
                })
        };
        report.level = "session";
        report.scores = Scores::from_pairs(pairs(false, 0));
        report.projected_f1 = Some(report.scores.projected_f1());
        report.without_session_end = Some(Scores::from_pairs(pairs(true, 0)));
        report.long_sessions = Some(Scores::from_pairs(pairs(false, LONG_SESSION_LINES)));
        report.unlabelled_sessions = Some(
            sessions
                .keys()
                .filter(|id| !labels.contains_key(id.as_str()))
                .count() as u64,
        );
    } else {
        report.scores =
            Scores::from_pairs(line_truth.iter().copied().zip(line_flagged.iter().copied()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn row(name: &str, s: &Scores) {
    println!(
        "| {name} | {:.4} | {:.4} | {:.4} | {:.4}% | {} | {} | {} | {} |",
        s.precision,
        s.recall,
        s.f1,
        100.0 * s.false_positive_rate,
        s.tp,
        s.fp,
        s.fn_,
        s.tn
    );
}

fn print_table(report: &Report) {
    println!(
        "DeepSentry eval: {} ({} lines, {:.1} s, {:.0} lines/s), model {}",
        report.input, report.lines, report.seconds, report.lines_per_second, report.model
    );
    println!();
    println!("| level | precision | recall | F1 | FPR | TP | FP | FN | TN |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    row(report.level, &report.scores);
    if let Some(s) = &report.without_session_end {
        row("session, without the session-end rule", s);
    }
    if let Some(s) = &report.long_sessions {
        row("session, sessions of >= 11 lines", s);
    }
    if let Some(f1) = report.projected_f1 {
        println!();
        println!("projected F1 at HDFS's 553,366 normal : 16,838 anomalous blocks: {f1:.4}");
    }
    println!();
    let reasons: Vec<String> = report
        .reasons
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    println!(
        "lines flagged: {} of {} ({:.2} %); alerts after grouping: {} ({:.2} %); by reason: {}",
        report.lines_flagged,
        report.lines,
        100.0 * report.lines_flagged as f64 / report.lines.max(1) as f64,
        report.alerts,
        100.0 * report.alerts as f64 / report.lines.max(1) as f64,
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons.join(", ")
        }
    );
    if let Some(n) = report.unlabelled_sessions.filter(|n| *n > 0) {
        println!("{n} sessions in the input have no label (ignored)");
    }
    if !report.model_fits {
        println!(
            "the model does not fit this log: {} of {} lines are of templates it never saw, so \
             new templates were judged by how often this log brings them; train a model on \
             this system's normal logs",
            report.unknown_template_lines, report.lines
        );
    }
}
