//! The `deepsentry` command: runs pipelines, validates configs, lists plugins.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use deepsentry_core::config::{self, ConfigErrors, PipelineConfig};
use deepsentry_core::health::Health;
use deepsentry_core::metrics::Metrics;
use deepsentry_core::registry::{self, ComponentKind};
use deepsentry_core::topology::{self, RunOutcome};
use deepsentry_core::ShutdownSignal;
use deepsentry_model::train::defaults;

// Plugins register themselves at link time; naming each crate here links it in.
use deepsentry_sink_blackhole as _;
use deepsentry_sink_console as _;
use deepsentry_sink_file as _;
use deepsentry_sink_kafka as _;
use deepsentry_sink_syslog as _;
use deepsentry_sink_webhook as _;
use deepsentry_source_demo as _;
use deepsentry_source_file as _;
use deepsentry_source_http as _;
use deepsentry_source_kafka as _;
use deepsentry_source_stdin as _;
use deepsentry_source_syslog as _;
use deepsentry_source_tcp as _;
use deepsentry_transform_deepsentry as _;
use deepsentry_transform_filter as _;
use deepsentry_transform_throttle as _;

mod allocator;
mod api;
mod eval;
mod input_format;
mod live;

/// The pipeline `deepsentry run` uses when no `-c` is given (a copy of
/// `pipelines/default.yml`, built into the binary so it runs from anywhere).
const DEFAULT_PIPELINE: &str = include_str!("../../../pipelines/default.yml");

/// Exit status for a bad config (sysexits.h `EX_CONFIG`).
const EX_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "deepsentry",
    version,
    about = "A log processor with a learned anomaly detector",
    long_about = "A log processor with a learned anomaly detector.\n\n\
                  With no command, runs the built-in default pipeline."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// What the program logs to stderr: `error`, `warn`, `info`, `debug`, `trace`, or a
    /// filter such as `info,deepsentry_sink_webhook=debug`. Default: `DEEPSENTRY_LOG`, else
    /// `RUST_LOG`, else `info`.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    /// `text` (default) or `json`, one object per line, for log collectors.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// How the program's own log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, message and fields.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline until its sources end or SIGINT/SIGTERM.
    Run {
        /// Pipeline config (YAML). Without it, the built-in default pipeline runs.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Seconds to let the pipeline drain after a shutdown signal before stopping anyway.
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        grace_period: f64,
    },
    /// Run the live monitor from its flat config (`live_monitoring_config.yml`: log_file,
    /// tail_mode, output_file, threshold_multiplier, window_size, sequence_length,
    /// batch_interval); LOG_FILE and ANOMALY_MODEL override.
    Live {
        /// The flat config.
        #[arg(
            short,
            long,
            value_name = "FILE",
            default_value = "live_monitoring_config.yml"
        )]
        config: PathBuf,
        /// Seconds to let the pipeline drain after a shutdown signal before stopping anyway.
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        grace_period: f64,
    },
    /// Check a pipeline config and exit: 0 when valid, 78 when not.
    Validate {
        /// Pipeline config (YAML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running DeepSentry's API for its health: prints the answer, exits 0 when healthy
    /// and 1 otherwise (for container health checks, where there is no curl).
    Health {
        /// The API's `host:port`. Default: DEEPSENTRY_API_ADDRESS (0.0.0.0 meaning this
        /// machine), else 127.0.0.1:8686.
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
    },
    /// List every source, transform and sink this binary knows.
    Plugins,
    /// Train an anomaly model on normal logs and write the bundle.
    Train(TrainArgs),
    /// Replay a labelled log through the detector and report precision, recall, F1, FPR.
    Eval(eval::EvalArgs),
    /// Print the templates the normalizer makes of a log, most frequent first, with how many
    /// lines each covers and the severity it names (to see what a model will learn).
    Templates {
        /// Log files to read.
        #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
        input: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Files of normal logs (several allowed).
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    #[command(flatten)]
    format: input_format::InputFormat,
    /// Directory to write the model bundle to.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How lines form sessions: a regex whose first capture group (or match) is the session
    /// id (e.g. 'blk_-?\d+'), `none` (one session per input file), or `auto`: find the id
    /// (pid, thread, request id, ...) under which the next line is most predictable.
    #[arg(long, value_name = "REGEX|auto|none", default_value = "auto")]
    session_key: String,
    /// Previous events per window.
    #[arg(long, default_value_t = defaults::SEQUENCE_LENGTH)]
    sequence_length: usize,
    /// Size of the message embedding.
    #[arg(long, default_value_t = defaults::EMBEDDING_SIZE)]
    embedding_size: usize,
    /// Passes over the training windows (of the distinct sessions). Default 40, or 10 when
    /// updating a bundle with `--from`.
    #[arg(long)]
    epochs: Option<usize>,
    /// Update the bundle in DIR with the new normal logs of `--input` instead of training
    /// afresh: its templates keep their classes, new ones are added, both networks are
    /// fine-tuned from its weights (its sizes and session key are kept), and the threshold
    /// floor is calibrated again on the new logs. `--out` may name the same directory.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Seed: the same seed and data give the same model.
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Backend: flex, ndarray, wgpu, auto.
    #[arg(long, default_value = "flex")]
    backend: deepsentry_model::BackendKind,
    /// Share of sessions held out to calibrate the threshold floor.
    #[arg(long, default_value_t = defaults::HOLDOUT)]
    holdout: f64,
    /// How many times less likely than the least likely event of a typical held-out normal
    /// session (99th percentile) an event must be to pass the threshold floor.
    #[arg(long, default_value_t = defaults::FLOOR_MARGIN)]
    floor_margin: f64,
    /// Width of the sequence detector's layers (the state size of a GRU detector).
    #[arg(long, default_value_t = defaults::DETECTOR_HIDDEN)]
    detector_hidden: usize,
    /// The sequence detector's network: `window` (two layers over the window's steps side by
    /// side; fast to score) or `gru` (a GRU over the steps). An update (`--from`) keeps the
    /// network of the bundle it updates.
    #[arg(long, default_value = "window")]
    detector: deepsentry_model::detector::DetectorKind,
    /// Window networks trained side by side from different initializations and averaged:
    /// more make scores, and the floor learned from them, steadier from one seed to the next,
    /// at the cost of training and scoring time.
    #[arg(long, default_value_t = defaults::DETECTOR_MEMBERS)]
    detector_members: usize,
    /// Do not mine count invariants (relations between template counts checked when a
    /// session ends).
    #[arg(long)]
    no_invariants: bool,
    /// Keep no sample of the training lines in the bundle (`replay.log`, up to 2,000 raw
    /// lines that a later `--from` update trains on again): for bundles shared beyond the
    /// logs' audience. Updates of such a bundle train on the new logs alone.
    #[arg(long)]
    no_replay: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("deepsentry: {e}");
        return ExitCode::from(2);
    }
    match cli.command.unwrap_or(Command::Run {
        config: None,
        grace_period: 30.0,
    }) {
        Command::Run {
            config,
            grace_period,
        } => run(
            match config {
                Some(path) => Box::new(move || config::load_file(&path)),
                None => {
                    Box::new(|| config::load_str(DEFAULT_PIPELINE, "<built-in default pipeline>"))
                }
            },
            Duration::from_secs_f64(grace_period.max(0.0)),
        ),
        Command::Live {
            config,
            grace_period,
        } => run(
            Box::new(move || live::load(&config)),
            Duration::from_secs_f64(grace_period.max(0.0)),
        ),
        Command::Validate { config } => validate(&config),
        Command::Health { address } => api::check_health(address),
        Command::Plugins => {
            list_plugins();
            ExitCode::SUCCESS
        }
        Command::Train(args) => report_error(train(args)),
        Command::Eval(args) => report_error(eval::run(args)),
        Command::Templates { input } => report_error(print_templates(&input)),
    }
}

fn print_templates(inputs: &[PathBuf]) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut scratch = String::new();
    for path in inputs {
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            if text.is_empty() {
                continue;
            }
            deepsentry_model::normalize::template_into(text, &mut scratch);
            *counts.entry(scratch.clone()).or_default() += 1;
        }
    }
    let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = std::io::stdout().lock();
    for (template, count) in sorted {
        let severity = deepsentry_model::severity::severity_of(&template);
        match writeln!(out, "{count}\t{}\t{template}", severity.name()) {
            // `deepsentry templates ... | head`: the reader has seen enough.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

fn report_error(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let options = deepsentry_model::TrainOptions {
        inputs: args.input,
        lines: args.format.line_settings(),
        session_key: deepsentry_model::session_key::SessionKeySpec::parse(Some(&args.session_key)),
        sequence_length: args.sequence_length,
        embedding_size: args.embedding_size,
        epochs: args.epochs.unwrap_or(if args.from.is_some() {
            defaults::UPDATE_EPOCHS
        } else {
            defaults::EPOCHS
        }),
        seed: args.seed,
        backend: args.backend,
        holdout: args.holdout,
        floor_margin: args.floor_margin,
        detector_hidden: args.detector_hidden,
        detector: args.detector,
        detector_members: args.detector_members,
        invariants: !args.no_invariants,
        replay: !args.no_replay,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        from: args.from,
        ..Default::default()
    };
    let model = deepsentry_model::train(&options)?;
    model.save(&args.out)?;
    let t = &model.metadata.training;
    println!("model written to {}", args.out.display());
    println!(
        "  lines {} | sessions {} ({} held out) | templates {}",
        t.lines,
        t.sessions,
        t.held_out_sessions,
        model.metadata.templates.len()
    );
    println!(
        "  autoencoder loss {:.5} | detector loss {:.4} nats",
        t.autoencoder_loss, t.detector_loss
    );
    println!(
        "  held-out scores: mean {:.3}, std {:.3}; session maxima: 99th percentile {:.3}, \
         highest {:.3} -> threshold floor {:.3}",
        t.score_mean, t.score_std, t.score_p99, t.score_max, t.score_floor
    );
    println!("  count invariants: {}", model.metadata.invariants.len());
    println!(
        "  trained in {:.1} s on {:?}",
        t.duration_secs, model.backend
    );
    Ok(())
}

/// Logs go to stderr (stdout carries data). The filter comes from `--log-level`, else
/// `DEEPSENTRY_LOG`, else `RUST_LOG`, else `info`.
fn init_logging(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = level
        .map(str::to_owned)
        .or_else(|| std::env::var("DEEPSENTRY_LOG").ok())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    // A lone word is a level; a typo would otherwise silently become a filter on a target of
    // that name and hide every line.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if !filter.contains(['=', ',', ':']) && !LEVELS.contains(&filter.to_lowercase().as_str()) {
        return Err(format!(
            "invalid log level `{filter}`: valid levels are {}, or a filter such as \
             `info,deepsentry_sink_webhook=debug`",
            LEVELS.map(|l| format!("`{l}`")).join(", ")
        ));
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| format!("invalid log level `{filter}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    Ok(())
}

/// Logs a loaded pipeline's warnings, or prints its errors and gives the config exit status.
fn checked(loaded: Result<PipelineConfig, ConfigErrors>) -> Result<PipelineConfig, ExitCode> {
    match loaded {
        Ok(pipeline) => {
            for warning in &pipeline.warnings {
                tracing::warn!("{warning}");
            }
            Ok(pipeline)
        }
        Err(errors) => {
            eprintln!("invalid config:\n{errors}");
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    let pipeline = match checked(config::load_file(path)) {
        Ok(pipeline) => pipeline,
        Err(code) => return code,
    };
    // Every component checked the way `run` builds it (models loaded), opening nothing.
    let errors = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(topology::check(&pipeline)),
        Err(e) => vec![anyhow::anyhow!("cannot start the runtime: {e}")],
    };
    if !errors.is_empty() {
        eprintln!("invalid config:");
        for error in errors {
            eprintln!("  {}", pipeline.redact(&format!("{error:#}")));
        }
        return ExitCode::from(EX_CONFIG);
    }
    println!(
        "{}: valid ({} components)",
        path.display(),
        pipeline.components.len()
    );
    ExitCode::SUCCESS
}

fn list_plugins() {
    for kind in [
        ComponentKind::Source,
        ComponentKind::Transform,
        ComponentKind::Sink,
    ] {
        println!("{}:", kind.section());
        for plugin in registry::plugins().into_iter().filter(|p| p.kind == kind) {
            println!("  {:<12} {}", plugin.name, plugin.description);
        }
    }
}

/// Loads the pipeline again, for a reload (SIGHUP).
type Loader = Box<dyn Fn() -> Result<PipelineConfig, ConfigErrors> + Send + Sync>;

/// Loads the pipeline with `loader` and runs it; SIGHUP loads it again and applies what
/// changed.
fn run(loader: Loader, grace_period: Duration) -> ExitCode {
    let pipeline = match checked(loader()) {
        Ok(pipeline) => pipeline,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("deepsentry")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Metrics::default();
    let health = Health::default();
    let shutdown = ShutdownSignal::new();
    let interpolated = pipeline.interpolated.clone();
    let outcome = runtime.block_on(async {
        watch_signals(shutdown.clone());
        if let Some(api) = &pipeline.api {
            api::start(api.address, metrics.clone(), health.clone()).await?;
        }
        let reloads = watch_reloads(loader, pipeline.api.clone());
        topology::run(
            pipeline,
            metrics.clone(),
            health,
            shutdown,
            grace_period,
            reloads,
        )
        .await
    });
    // A read of standard input cannot be cancelled and would keep a plain drop of the runtime
    // waiting for the next line; everything that matters has finished by now.
    runtime.shutdown_timeout(Duration::from_millis(200));
    report(&metrics);
    match outcome {
        Ok(RunOutcome::Finished { failed }) if failed.is_empty() => ExitCode::SUCCESS,
        Ok(RunOutcome::Finished { .. }) | Ok(RunOutcome::Forced { .. }) => ExitCode::FAILURE,
        Err(e) => {
            // Nothing ran: a component (or the API) could not start with this config.
            tracing::error!("{}", interpolated.redact(&format!("{e:#}")));
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// SIGHUP: loads the config again (and so every model it names) and hands it to the running
/// pipeline; a config with errors is logged and the pipeline goes on unchanged.
fn watch_reloads(
    loader: Loader,
    api: Option<config::ApiConfig>,
) -> tokio::sync::mpsc::Receiver<PipelineConfig> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let loader = std::sync::Arc::new(loader);
    tokio::spawn(async move {
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; reloads are off");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            let load = loader.clone();
            let loaded = match tokio::task::spawn_blocking(move || load()).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::error!("reload failed: {e}");
                    continue;
                }
            };
            match loaded {
                Ok(pipeline) => {
                    for warning in &pipeline.warnings {
                        tracing::warn!("{warning}");
                    }
                    if pipeline.api != api {
                        tracing::warn!(
                            "`api` changed: that takes a restart; the API stays as it is"
                        );
                    }
                    if tx.send(pipeline).await.is_err() {
                        return;
                    }
                }
                Err(errors) => tracing::error!(
                    "reload rejected, the running pipeline goes on unchanged; the config has \
                     errors:\n{errors}"
                ),
            }
        }
    });
    rx
}

/// First SIGINT/SIGTERM: stop the sources and drain. Second: exit at once.
fn watch_signals(shutdown: ShutdownSignal) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining the pipeline (send it again to exit at once)");
        shutdown.trigger();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

/// One log line per component with its counters, so a run says what it did and dropped.
fn report(metrics: &Metrics) {
    let mut by_component: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (key, value) in metrics.snapshot() {
        if key.reason.is_some() && value == 0 {
            continue;
        }
        let name = match key.reason {
            Some(reason) => format!("{}{{reason={reason}}}", key.name),
            None => key.name.to_string(),
        };
        by_component
            .entry(key.component)
            .or_default()
            .push(format!("{name}={value}"));
    }
    for (component, counters) in by_component {
        tracing::info!(component = %component, "{}", counters.join(" "));
    }
}
