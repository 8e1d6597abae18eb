//! Continual retraining (`retrain_every`): the transform keeps the recent lines it did not
//! flag, and once a period retrains its model on them in the background (`train --from` on one
//! low-priority thread). The candidate is loaded and scored on the last tenth of those lines,
//! which it did not train on, next to the running model; it takes over only when it flags no
//! more of them. The swap itself happens in the transform's loop between two batches, so no
//! event is dropped, reordered or scored twice.
//!
//! Files under `data_dir/<id>/retrain/`: `recent/lines.{0,1}` (the lines kept, bounded in
//! bytes), `recent/sessions.{0,1}` (the sessions it flagged), `recent/carried.log` (the lines
//! a retraining left for the next), `job-*/` (one retraining in progress), `model/` (the last
//! model swapped in, used again after a restart) and `state.json` (which configured model
//! that one was trained from, and when the last retraining started).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deepsentry_core::anomaly;
use deepsentry_core::{Event, Origin, Value};
use deepsentry_model::novelty::OnlineState;
use deepsentry_model::{BackendKind, LoadedModel, Scorer, SessionKey, TrainOptions};
use serde::{Deserialize, Serialize};

use crate::DeepsentryTransformConfig;

/// Fewer recent lines than this are too few to retrain on: the period is skipped.
pub const MIN_RETRAIN_LINES: usize = 500;

/// Passes over the recent lines: fine-tuning from the running model's weights needs far fewer
/// than a training from scratch (see `models/README.md`).
const RETRAIN_EPOCHS: usize = 10;

/// The share of the recent lines, the latest, kept out of training to compare the two models.
const HELD_OUT_SHARE: f64 = 0.1;

/// A period such as `30s`, `15m`, `24h` or `7d` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl Period {
    /// Parses `text`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| {
            anyhow::anyhow!("`{text}` is not a period: write a whole number and a unit, e.g. `24h`")
        })?;
        let seconds = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => anyhow::bail!(
                "`{text}`: unknown unit `{other}`; valid units: s, m, h, d (e.g. `24h`)"
            ),
        };
        anyhow::ensure!(number > 0, "`{text}`: the period must be longer than zero");
        Ok(Self(Duration::from_secs(number.saturating_mul(seconds))))
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Seconds(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Seconds(seconds) => Period::parse(&seconds.to_string()),
            Written::Text(text) => Period::parse(&text),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// What is remembered between runs (`state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetrainState {
    /// The fingerprint of the configured model the one in `model/` was retrained from; a
    /// retrained model is used only while the configuration still names that model.
    pub base: Option<String>,
    /// When the last retraining began (Unix seconds), so a restart does not reset the period.
    pub last_started: Option<i64>,
}

/// An append-only file of lines in two segments under a directory, `NAME.0` (the newer, being
/// written) and `NAME.1`, each at most half of a limit. When the newer is full it replaces the
/// older (whose lines go), so the pair never holds more than the limit and always the latest
/// lines.
struct Segments {
    dir: PathBuf,
    name: &'static str,
    segment_bytes: u64,
    writer: Option<BufWriter<File>>,
    written: u64,
}

impl Segments {
    fn new(dir: PathBuf, name: &'static str, max_bytes: u64) -> Self {
        Self {
            dir,
            name,
            segment_bytes: (max_bytes / 2).max(1),
            writer: None,
            written: 0,
        }
    }

    fn segment(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{}.{n}", self.name))
    }

    fn append(&mut self, line: &str) -> anyhow::Result<()> {
        if self.writer.is_none() {
            deepsentry_core::checkpoint::private_dir(&self.dir)?;
            let path = self.segment(0);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            self.written = file.metadata()?.len();
            self.writer = Some(BufWriter::new(file));
        }
        if self.written + line.len() as u64 + 1 > self.segment_bytes && self.written > 0 {
            self.writer = None;
            std::fs::rename(self.segment(0), self.segment(1))?;
            return self.append(line);
        }
        let writer = self.writer.as_mut().expect("opened above");
        let written = writer
            .write_all(line.as_bytes())
            .and_then(|()| writer.write_all(b"\n"));
        if written.is_err() {
            self.writer = None;
        }
        written?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(writer) = &mut self.writer {
            let _ = writer.flush();
        }
    }

    /// Moves the segments into `into` (created) as `NAME.N.log`, the older first, and starts
    /// afresh.
    fn take(&mut self, into: &Path) -> anyhow::Result<Vec<PathBuf>> {
        if let Some(mut writer) = self.writer.take() {
            writer.flush()?;
        }
        self.written = 0;
        std::fs::create_dir_all(into)
            .with_context(|| format!("cannot create {}", into.display()))?;
        let mut taken = Vec::new();
        for n in [1, 0] {
            let from = self.segment(n);
            if from.exists() {
                let to = into.join(format!("{}.{n}.log", self.name));
                std::fs::rename(&from, &to)
                    .with_context(|| format!("cannot move {}", from.display()))?;
                taken.push(to);
            }
        }
        Ok(taken)
    }
}

/// The lines kept for the next retraining (`recent/lines.{0,1}`, at most the limit), and the
/// keyed sessions the transform flagged (`recent/sessions.{0,1}`, at most a quarter of it): a
/// line is kept when the transform did not flag it, but it is training material only if
/// nothing of its session was flagged either, a step or its end (see [`training_lines`]).
/// The other lines of a session that broke a count invariant or took an unlikely step would
/// otherwise teach the next model that what went wrong is normal. A session still going on
/// when the period is taken is trained on as far as it went: the bundle's session tally
/// carries it on to the next update (see `deepsentry_model::invariants::SessionTally`), and
/// sessions that never end (a thread, a pid) would otherwise never be trained on.
pub struct RecentLines {
    lines: Segments,
    flagged: Segments,
    /// Set while writing fails, so the failure is logged once, not on every line.
    failing: bool,
}

/// The lines a retraining left for the next one (see [`RecentLines::carried`]).
const CARRIED_FILE: &str = "carried.log";

/// The files a period's kept lines went to.
pub struct TakenLines {
    /// The lines, older files first.
    pub lines: Vec<PathBuf>,
    /// The flagged sessions (see [`RecentLines`]), older files first.
    pub flagged: Vec<PathBuf>,
}

impl RecentLines {
    /// Keeps lines under `dir`, at most `max_bytes` of them.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            lines: Segments::new(dir.clone(), "lines", max_bytes),
            flagged: Segments::new(dir, "sessions", max_bytes / 4),
            failing: false,
        }
    }

    /// Keeps the lines of `scored` that were judged normal (session ends and flagged lines
    /// are not training material; a message of several lines would not read back as one),
    /// and the keyed sessions it flagged.
    pub fn record(&mut self, scored: &[Event]) {
        for event in scored {
            let flagged = event.fields.get(anomaly::IS_ANOMALY) != Some(&Value::Bool(false));
            let end = event.fields.get(anomaly::SESSION_END).is_some();
            if let (true, Some(Value::Str(session))) = (flagged, event.fields.get(anomaly::SESSION))
            {
                // A line the key found no id in is in its stream's session, judged line by
                // line.
                if session.as_str() != &*event.origin.stream && !session.contains('\n') {
                    let written = self.flagged.append(session);
                    self.note(written);
                }
            }
            let message = event.message();
            if flagged || end || message.is_empty() || message.contains('\n') {
                continue;
            }
            let written = self.lines.append(message);
            self.note(written);
        }
        // Flushed per batch: a crash loses at most the batch in flight.
        self.lines.flush();
        self.flagged.flush();
    }

    fn note(&mut self, written: anyhow::Result<()>) {
        match written {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                tracing::warn!(dir = %self.lines.dir.display(), "cannot keep recent lines for retraining: {e:#}");
                self.failing = true;
            }
            Err(_) => {}
        }
    }

    /// Where a retraining leaves the lines it did not train on (its held-out tenth, or the
    /// whole of a period too short to train on) for the next one to take first: lines
    /// dropped there would cut every session they belong to in two.
    pub fn carried(&self) -> PathBuf {
        self.lines.dir.join(CARRIED_FILE)
    }

    /// Moves what was kept so far, the lines an earlier retraining carried over first, into
    /// `into` (created), and starts afresh.
    pub fn take(&mut self, into: &Path) -> anyhow::Result<TakenLines> {
        let mut lines = self.lines.take(into)?;
        let carried = self.carried();
        if carried.exists() {
            let to = into.join(CARRIED_FILE);
            std::fs::rename(&carried, &to)
                .with_context(|| format!("cannot move {}", carried.display()))?;
            lines.insert(0, to);
        }
        Ok(TakenLines {
            lines,
            flagged: self.flagged.take(into)?,
        })
    }
}

/// Of `lines`, those to train on: a line whose session `key` names is left out when that
/// session is among the `flagged` ones ([`RecentLines::record`] wrote them).
pub fn training_lines(lines: Vec<String>, flagged: &[String], key: &SessionKey) -> Vec<String> {
    let flagged: std::collections::HashSet<&str> = flagged.iter().map(String::as_str).collect();
    lines
        .into_iter()
        .filter(|line| {
            key.id_in(line)
                .is_none_or(|session| !flagged.contains(session))
        })
        .collect()
}

/// How a retraining ended.
pub enum Outcome {
    /// Too few lines were kept in the period.
    Skipped {
        /// Lines kept.
        lines: usize,
    },
    /// The candidate flagged more held-out lines than the running model.
    Refused {
        /// Held-out lines the running model flagged.
        running: usize,
        /// Held-out lines the candidate flagged.
        candidate: usize,
        /// Lines held out.
        held_out: usize,
    },
    /// The candidate is at least as good: it is swapped in.
    Accepted {
        /// The candidate, loaded.
        model: Box<LoadedModel>,
        /// Where the candidate's files are.
        dir: PathBuf,
        /// Held-out lines the running model flagged.
        running: usize,
        /// Held-out lines the candidate flagged.
        candidate: usize,
        /// Lines held out.
        held_out: usize,
        /// Lines trained on.
        trained_on: usize,
        /// Seconds the training took.
        seconds: f64,
    },
    /// Training, saving or loading the candidate failed.
    Failed(anyhow::Error),
}

/// One retraining, run on a thread of its own.
pub struct RetrainJob {
    /// The directory of the running model's bundle (the base of `train --from`).
    pub running_dir: PathBuf,
    /// The running model.
    pub running: Arc<LoadedModel>,
    /// The transform's settings (backend, scorer settings).
    pub config: DeepsentryTransformConfig,
    /// What the running scorer learned online, given to both scorers of the comparison.
    pub online: OnlineState,
    /// The job's own directory (its inputs are there, it writes the candidate there).
    pub dir: PathBuf,
    /// The recent lines and the sessions flagged among them.
    pub inputs: TakenLines,
    /// Where to leave the lines it does not train on for the next retraining
    /// ([`RecentLines::carried`]).
    pub carry_to: PathBuf,
    /// Set when nobody waits for the outcome any more (the transform stopped): the training
    /// stops at its next batch instead of using the CPU for nothing.
    pub cancel: Arc<AtomicBool>,
}

impl RetrainJob {
    /// Runs the job at low priority on a thread of its own; the outcome comes back through
    /// the receiver.
    pub fn spawn(self) -> anyhow::Result<tokio::sync::oneshot::Receiver<Outcome>> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("deepsentry-retrain".into())
            .spawn(move || {
                lower_this_threads_priority();
                let outcome = self.run().unwrap_or_else(Outcome::Failed);
                // The transform may have stopped meanwhile (shutdown, reload): nobody waits.
                let _ = sender.send(outcome);
            })
            .context("cannot start the retraining thread")?;
        Ok(receiver)
    }

    fn run(&self) -> anyhow::Result<Outcome> {
        let kept = read_lines(&self.inputs.lines)?;
        let key = self.config.scorer_settings(&self.running)?.session_key;
        let before = kept.len();
        let lines = training_lines(kept, &read_lines(&self.inputs.flagged)?, &key);
        if lines.len() < before {
            tracing::info!(
                kept = before,
                left_out = before - lines.len(),
                "retraining leaves out the lines of sessions that were flagged"
            );
        }
        if lines.len() < MIN_RETRAIN_LINES {
            self.carry(&lines)?;
            return Ok(Outcome::Skipped { lines: lines.len() });
        }
        let held_out = ((lines.len() as f64 * HELD_OUT_SHARE).ceil() as usize).max(1);
        let (trained_on, held) = lines.split_at(lines.len() - held_out);
        self.carry(held)?;
        let train_file = self.dir.join("train.log");
        let mut text = trained_on.join("\n");
        text.push('\n');
        std::fs::write(&train_file, text)
            .with_context(|| format!("cannot write {}", train_file.display()))?;

        let started = Instant::now();
        let options = TrainOptions {
            inputs: vec![train_file],
            from: Some(self.running_dir.clone()),
            epochs: RETRAIN_EPOCHS,
            // Training stays on the CPU thread it was given, whatever the scoring backend.
            backend: BackendKind::default(),
            progress: false,
            cancel: Some(self.cancel.clone()),
            ..TrainOptions::default()
        };
        let trained = deepsentry_model::train(&options).context("retraining failed")?;
        let seconds = started.elapsed().as_secs_f64();
        let dir = self.dir.join("candidate");
        trained.save(&dir)?;
        drop(trained);
        let candidate = LoadedModel::load(&dir, self.config.backend)
            .context("the retrained model does not load")?;
        let candidate = Arc::new(candidate);
        // A session the trained part holds lines of is only partly in the held-out lines:
        // its end is no verdict on either model (a model with more count invariants would be
        // refused for the relations such halves break).
        let begun: std::collections::HashSet<&str> = trained_on
            .iter()
            .filter_map(|line| key.id_in(line))
            .collect();
        let running_flags = self.flagged(self.running.clone(), held, &begun)?;
        let candidate_flags = self.flagged(candidate.clone(), held, &begun)?;
        if candidate_flags > running_flags {
            return Ok(Outcome::Refused {
                running: running_flags,
                candidate: candidate_flags,
                held_out,
            });
        }
        let model = Arc::try_unwrap(candidate)
            .map_err(|_| anyhow::anyhow!("the candidate model is still in use"))?;
        Ok(Outcome::Accepted {
            model: Box::new(model),
            dir,
            running: running_flags,
            candidate: candidate_flags,
            held_out,
            trained_on: trained_on.len(),
            seconds,
        })
    }

    /// Leaves `lines` for the next retraining to take first.
    fn carry(&self, lines: &[String]) -> anyhow::Result<()> {
        if let Some(dir) = self.carry_to.parent() {
            deepsentry_core::checkpoint::private_dir(dir)?;
        }
        let mut text = lines.join("\n");
        text.push('\n');
        deepsentry_core::checkpoint::write_atomic(&self.carry_to, text.as_bytes(), false)
            .with_context(|| format!("cannot write {}", self.carry_to.display()))
    }

    /// How many of `lines`, and of the sessions that begin and end in them (not those in
    /// `begun` or still open at their end, which the lines hold only part of), `model` flags,
    /// scored from a fresh start with the running scorer's online templates.
    fn flagged(
        &self,
        model: Arc<LoadedModel>,
        lines: &[String],
        begun: &std::collections::HashSet<&str>,
    ) -> anyhow::Result<usize> {
        let settings = self.config.scorer_settings(&model)?;
        let mut scorer = Scorer::new(model, settings);
        scorer.restore_online_state(self.online.clone());
        let origin = Origin::new("retrain", "held-out");
        let now = chrono::Utc::now();
        let events = lines
            .iter()
            .map(|line| Event::from_str(line, now, origin.clone()))
            .collect();
        Ok(judged_flags(&scorer.process(events), begun))
    }
}

/// The flags among `scored` that judge what held-out lines hold whole: every flagged line,
/// and the flagged ends of sessions not in `begun`.
fn judged_flags(scored: &[Event], begun: &std::collections::HashSet<&str>) -> usize {
    let whole = |event: &Event| match event.fields.get(anomaly::SESSION) {
        Some(Value::Str(session)) => !begun.contains(session.as_str()),
        _ => true,
    };
    scored
        .iter()
        .filter(|e| e.is_anomaly() && (e.fields.get(anomaly::SESSION_END).is_none() || whole(e)))
        .count()
}

/// The non-empty lines of `files`, in order.
fn read_lines(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for path in files {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line?;
            if !line.is_empty() {
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
    Ok(lines)
}

/// Puts the calling thread at the lowest CPU priority (nice 19): retraining must not slow the
/// scoring of live events. On Linux a thread has a priority of its own, and the threads it
/// starts inherit it.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread, no memory passed.
        let failed = unsafe {
            let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, 19) != 0
        };
        if failed {
            tracing::debug!(
                "cannot lower the retraining thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Makes the candidate in `candidate` the retrained model of `root` (`root/model`), replacing
/// the one there, and records that it was trained from the configured model `base`.
pub fn promote(root: &Path, candidate: &Path, base: &str) -> anyhow::Result<()> {
    let live = root.join("model");
    let old = root.join("model.old");
    let _ = std::fs::remove_dir_all(&old);
    if live.exists() {
        std::fs::rename(&live, &old).with_context(|| format!("cannot move {}", live.display()))?;
    }
    std::fs::rename(candidate, &live)
        .with_context(|| format!("cannot move the candidate to {}", live.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    let mut state = load_state(root);
    state.base = Some(base.to_string());
    save_state(root, &state)
}

/// The state kept in `root/state.json` (empty when missing or unreadable).
pub fn load_state(root: &Path) -> RetrainState {
    let path = root.join("state.json");
    match deepsentry_core::checkpoint::load_json::<RetrainState>(&path) {
        Ok(state) => state.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), "the retraining state is not usable ({e:#}); starting without it");
            RetrainState::default()
        }
    }
}

/// Writes `state` to `root/state.json`.
pub fn save_state(root: &Path, state: &RetrainState) -> anyhow::Result<()> {
    deepsentry_core::checkpoint::private_dir(root)?;
    deepsentry_core::checkpoint::save_json(&root.join("state.json"), state, false)
}

#[cfg(test)]
mod tests;
