//! The `deepsentry` transform: scores every event with the learned anomaly detector and
//! enriches it with `anomaly_score`, `anomaly_threshold`, `is_anomaly`, `context_window` and
//! `session`. Events are scored in batches (`batch_size` events or `batch_interval` seconds,
//! whichever comes first); session ends are emitted as events of their own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deepsentry_core::metrics::{ComponentMetrics, Counter};
use deepsentry_core::{Batch, Transform, TransformContext};
use deepsentry_model::novelty::OnlineState;
use deepsentry_model::{LoadedModel, Scorer, SequenceModel};

mod config;
mod prepare;
mod report;
pub mod retrain;

pub use config::DeepsentryTransformConfig;
use prepare::{PrepareStage, Waiting};
use report::Reporter;
use retrain::{Outcome, RecentLines, RetrainJob};

/// A running `deepsentry` transform.
pub struct DeepsentryTransform {
    config: DeepsentryTransformConfig,
    scorer: Scorer<Arc<LoadedModel>>,
    /// Where the online vocabulary is kept between runs (`data_dir/<id>/vocabulary.json`).
    state_path: PathBuf,
    /// Where retraining keeps its files (`data_dir/<id>/retrain`).
    retrain_root: PathBuf,
    /// The bundle the running model was loaded from.
    model_dir: PathBuf,
    /// The configured model's fingerprint, which a retrained model records as its base.
    base_fingerprint: String,
}

/// Publishes `deepsentry_model_info` for the model loaded from `dir`.
fn publish_model_info(metrics: &ComponentMetrics, dir: &std::path::Path, model: &LoadedModel) {
    metrics.info(
        "model",
        vec![
            ("path".into(), dir.display().to_string()),
            (
                "backend".into(),
                format!("{:?}", model.backend).to_lowercase(),
            ),
            (
                "sequence_length".into(),
                model.sequence_length().to_string(),
            ),
            (
                "templates".into(),
                model.metadata.templates.len().to_string(),
            ),
        ],
    );
}

/// A retraining in the background: where its outcome comes, its directory, and the flag that
/// stops it. Dropping it (the transform stopped: a shutdown, a reload that replaced it) stops
/// the training at its next batch, so a job nobody waits for does not use the CPU.
struct RetrainInFlight {
    outcome: tokio::sync::oneshot::Receiver<Outcome>,
    dir: PathBuf,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for RetrainInFlight {
    fn drop(&mut self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Continual retraining while the transform runs (`retrain_every`).
struct Retraining {
    every: Duration,
    recent: RecentLines,
    next: tokio::time::Instant,
    swapped: Counter,
    refused: Counter,
    failed: Counter,
    skipped: Counter,
    /// Where `deepsentry_model_info` is published again after a swap.
    metrics: ComponentMetrics,
}

impl DeepsentryTransform {
    /// Sets up retraining when `retrain_every` asks for it: the next one is a period after the
    /// last one began (kept across restarts), and job directories a stopped run left go.
    fn retraining(&self, metrics: &ComponentMetrics) -> Option<Retraining> {
        let every = self.config.retrain_every?.0;
        let root = &self.retrain_root;
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("job-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let state = retrain::load_state(root);
        let now = chrono::Utc::now().timestamp();
        let wait = state
            .last_started
            .map_or(every.as_secs() as i64, |at| {
                at + every.as_secs() as i64 - now
            })
            .clamp(0, every.as_secs() as i64);
        Some(Retraining {
            every,
            recent: RecentLines::new(root.join("recent"), self.config.retrain_max_bytes),
            next: tokio::time::Instant::now() + Duration::from_secs(wait as u64),
            swapped: metrics.counter_with_reason("model_retrains", "swapped"),
            refused: metrics.counter_with_reason("model_retrains", "refused"),
            failed: metrics.counter_with_reason("model_retrains", "failed"),
            skipped: metrics.counter_with_reason("model_retrains", "skipped"),
            metrics: metrics.clone(),
        })
    }

    /// Starts a retraining on the lines kept since the last one; `None` when it cannot start
    /// (said and counted).
    fn start_retraining(&self, retraining: &mut Retraining) -> Option<RetrainInFlight> {
        retraining.next = tokio::time::Instant::now() + retraining.every;
        let now = chrono::Utc::now();
        let mut state = retrain::load_state(&self.retrain_root);
        state.last_started = Some(now.timestamp());
        if let Err(e) = retrain::save_state(&self.retrain_root, &state) {
            tracing::warn!("cannot record the retraining time: {e:#}");
        }
        let dir = self
            .retrain_root
            .join(format!("job-{}", now.timestamp_millis()));
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let carry_to = retraining.recent.carried();
        let started = retraining.recent.take(&dir).and_then(|inputs| {
            RetrainJob {
                running_dir: self.model_dir.clone(),
                running: self.scorer.model_handle().clone(),
                config: self.config.clone(),
                online: self.scorer.online_state(),
                dir: dir.clone(),
                inputs,
                carry_to,
                cancel: cancel.clone(),
            }
            .spawn()
        });
        match started {
            Ok(outcome) => {
                tracing::info!(model = %self.model_dir.display(), "retraining the model on recent lines in the background");
                Some(RetrainInFlight {
                    outcome,
                    dir,
                    cancel,
                })
            }
            Err(e) => {
                tracing::warn!("cannot start retraining: {e:#}");
                retraining.failed.inc();
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    /// Acts on how a retraining ended: an accepted model becomes the retrained model in
    /// `data_dir` and replaces the running one here, between two batches.
    fn finish_retraining(
        &mut self,
        retraining: &Retraining,
        outcome: Option<Outcome>,
        dir: &std::path::Path,
    ) {
        match outcome {
            Some(Outcome::Accepted {
                model,
                dir: candidate,
                running,
                candidate: candidate_flags,
                held_out,
                trained_on,
                seconds,
            }) => {
                let swapped =
                    retrain::promote(&self.retrain_root, &candidate, &self.base_fingerprint)
                        .and_then(|()| self.scorer.replace_model(Arc::from(model)));
                match swapped {
                    Ok(()) => {
                        self.model_dir = self.retrain_root.join("model");
                        publish_model_info(
                            &retraining.metrics,
                            &self.model_dir,
                            self.scorer.model(),
                        );
                        retraining.swapped.inc();
                        tracing::info!(
                            trained_on,
                            held_out,
                            flagged_by_running = running,
                            flagged_by_retrained = candidate_flags,
                            seconds = format!("{seconds:.1}"),
                            model = %self.model_dir.display(),
                            "retrained model swapped in"
                        );
                    }
                    Err(e) => {
                        retraining.failed.inc();
                        tracing::warn!("the retrained model cannot be swapped in: {e:#}");
                    }
                }
            }
            Some(Outcome::Refused {
                running,
                candidate,
                held_out,
            }) => {
                retraining.refused.inc();
                tracing::warn!(
                    held_out,
                    flagged_by_running = running,
                    flagged_by_retrained = candidate,
                    "retrained model refused: it flags more of the latest lines than the running model"
                );
            }
            Some(Outcome::Skipped { lines }) => {
                retraining.skipped.inc();
                tracing::info!(
                    lines,
                    needed = retrain::MIN_RETRAIN_LINES,
                    "retraining skipped: too few normal lines in the period; they are kept for the next"
                );
            }
            Some(Outcome::Failed(e)) => {
                retraining.failed.inc();
                tracing::warn!("retraining failed; the running model stays: {e:#}");
            }
            None => {
                retraining.failed.inc();
                tracing::warn!(
                    "the retraining thread stopped without a result; the running model stays"
                );
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// How often, at most, the online vocabulary is written while events flow.
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(30);

impl DeepsentryTransform {
    /// Reads what an earlier run learned online; a missing file is a first start, an
    /// unreadable one (and no good backup) is said and ignored (the templates are learned
    /// again).
    fn restore_state(&mut self) {
        match deepsentry_core::checkpoint::load_json::<OnlineState>(&self.state_path) {
            Ok(None) => {}
            Ok(Some(state)) => {
                let templates = state.templates.len();
                self.scorer.restore_online_state(state);
                tracing::info!(path = %self.state_path.display(), templates, "templates learned online restored");
            }
            Err(e) => tracing::warn!(
                path = %self.state_path.display(),
                "the learned templates file is not usable ({e:#}); starting without it"
            ),
        }
    }

    /// Writes the online vocabulary (atomically, see
    /// [`deepsentry_core::checkpoint::write_atomic`]).
    fn save_state(&self) {
        let state = self.scorer.online_state();
        let saved = self
            .state_path
            .parent()
            .map_or(Ok(()), deepsentry_core::checkpoint::private_dir)
            .and_then(|()| deepsentry_core::checkpoint::save_json(&self.state_path, &state, false));
        if let Err(e) = saved {
            tracing::warn!(path = %self.state_path.display(), "cannot save the learned templates: {e:#}");
        }
    }
}

#[async_trait]
impl Transform for DeepsentryTransform {
    async fn run(mut self: Box<Self>, mut cx: TransformContext) -> anyhow::Result<()> {
        let interval = Duration::from_secs_f64(self.config.batch_interval.max(0.001));
        let mut reporter = Reporter::new(&cx.metrics);
        // Read here, not at build: on a reload the predecessor saves when it stops, which is
        // before its successor runs.
        tokio::task::block_in_place(|| self.restore_state());
        let mut saved_at = Instant::now();
        let mut retraining = self.retraining(&cx.metrics);
        let mut job: Option<RetrainInFlight> = None;
        let (mut preparing, mut prepared) = PrepareStage::start(cx.input, self.scorer.preparer());
        let mut waiting = Waiting::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        // While the input is quiet, sessions still time out (see `Scorer::tick`).
        let mut ticks = tokio::time::interval(interval.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retrain_idle = job.is_none();
            let retrain_due = async {
                match retraining.as_ref().map(|r| r.next) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retrain_done = async {
                match job.as_mut() {
                    Some(in_flight) => (&mut in_flight.outcome).await.ok(),
                    None => std::future::pending().await,
                }
            };
            let mut closed = false;
            tokio::select! {
                _ = retrain_due, if retrain_idle => {
                    if let Some(retraining) = retraining.as_mut() {
                        job = tokio::task::block_in_place(|| self.start_retraining(retraining));
                    }
                }
                outcome = retrain_done => {
                    if let (Some(in_flight), Some(retraining)) = (job.take(), retraining.as_ref()) {
                        // Between two batches: nothing is in flight in the scorer.
                        tokio::task::block_in_place(|| self.finish_retraining(retraining, outcome, &in_flight.dir));
                    }
                }
                batch = prepared.recv() => match batch {
                    Some((batch, acks)) => {
                        waiting.push(batch, acks);
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + interval);
                    }
                    None => {
                        if let Err(e) = preparing.ended().await {
                            self.save_state();
                            return Err(e);
                        }
                        closed = true;
                    }
                },
                _ = due => {}
                _ = ticks.tick(), if waiting.is_empty() && self.scorer.session_count() > 0 => {
                    let scorer = &mut self.scorer;
                    let ended = tokio::task::block_in_place(|| scorer.tick());
                    reporter.report(self.scorer.stats(), self.scorer.session_count());
                    if !ended.is_empty() && cx.out.send(Batch::new(ended)).await.is_err() {
                        self.save_state();
                        return Ok(());
                    }
                }
            }
            let due = deadline.is_some_and(|at| at <= tokio::time::Instant::now());
            if !waiting.is_empty() && (closed || due || waiting.len() >= self.config.batch_size) {
                deadline = None;
                let (batch, acks) = waiting.take().expect("a batch is waiting");
                let scorer = &mut self.scorer;
                // Scoring is CPU work: keep the other tasks of this worker thread moving.
                let started = Instant::now();
                let recent = retraining.as_mut().map(|r| &mut r.recent);
                let scored = tokio::task::block_in_place(|| {
                    let scored = scorer.process_prepared(batch);
                    if let Some(recent) = recent {
                        recent.record(&scored);
                    }
                    scored
                });
                reporter.scored(&scored, started.elapsed());
                let mut out = Batch::new(scored);
                out.add_acks(acks);
                reporter.report(self.scorer.stats(), self.scorer.session_count());
                if saved_at.elapsed() >= STATE_SAVE_INTERVAL {
                    tokio::task::block_in_place(|| self.save_state());
                    saved_at = Instant::now();
                }
                if cx.out.send(out).await.is_err() {
                    self.save_state();
                    return Ok(());
                }
            }
            if closed {
                break;
            }
        }
        self.save_state();
        if cx.shutdown.is_triggered() {
            // Stopping is not the end of the sessions: judging them unfinished would raise an
            // alert for every block in flight at each restart.
            tracing::info!(
                transform = %cx.id,
                open_sessions = self.scorer.session_count(),
                "shutting down; open sessions are not judged"
            );
            return Ok(());
        }
        // The input ended (end of a replay, of standard input): every open session ends here,
        // a batch at a time, so a hundred thousand open sessions do not become a hundred
        // thousand events in memory at once.
        loop {
            let scorer = &mut self.scorer;
            let batch_size = self.config.batch_size.max(1);
            let ends = tokio::task::block_in_place(|| scorer.finish_some(batch_size));
            reporter.report(self.scorer.stats(), self.scorer.session_count());
            if ends.is_empty() || cx.out.send(Batch::new(ends)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
