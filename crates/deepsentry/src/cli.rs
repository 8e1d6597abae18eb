//! The command line: commands, their arguments and options.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use deepsentry_model::train::defaults;

use crate::{eval, input_format};

#[derive(Debug, Parser)]
#[command(
    name = "deepsentry",
    version,
    about = "A log processor with a learned anomaly detector",
    long_about = "A log processor with a learned anomaly detector.\n\n\
                  With no command, runs the built-in default pipeline."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// What the program logs to stderr: `error`, `warn`, `info`, `debug`, `trace`, or a
    /// filter such as `info,deepsentry_sink_webhook=debug`. Default: `DEEPSENTRY_LOG`, else
    /// `RUST_LOG`, else `info`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,
    /// `text` (default) or `json`, one object per line, for log collectors.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub(crate) log_format: LogFormat,
}

/// How the program's own log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, message and fields.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Score the lines an application writes to standard input and print them in the live
    /// monitor's format (`app 2>&1 | deepsentry sidecar`), stack traces joined; ends with the
    /// input. The built-in copy of `pipelines/sidecar.yml`; ANOMALY_MODEL names the model.
    Sidecar {
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
    /// Print the templates the normalizer makes of a log, with the words training would find
    /// to be fields folded to `<*>`, most frequent first, with how many lines each covers and
    /// the severity it names (to see what a model will learn).
    Templates {
        /// Log files to read.
        #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
        input: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct TrainArgs {
    /// Files of normal logs (several allowed).
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub(crate) input: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) format: input_format::InputFormat,
    /// Directory to write the model bundle to.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// How lines form sessions: a regex whose first capture group (or match) is the session
    /// id (e.g. 'blk_-?\d+'), `none` (one session per input file), or `auto`: find the id
    /// (pid, thread, request id, ...) under which the next line is most predictable.
    #[arg(long, value_name = "REGEX|auto|none", default_value = "auto")]
    pub(crate) session_key: String,
    /// Previous events per window.
    #[arg(long, default_value_t = defaults::SEQUENCE_LENGTH)]
    pub(crate) sequence_length: usize,
    /// Size of the message embedding.
    #[arg(long, default_value_t = defaults::EMBEDDING_SIZE)]
    pub(crate) embedding_size: usize,
    /// Passes over the training windows (of the distinct sessions), fewer where they would
    /// exceed `--max-windows`. Default 40, or 10 when updating a bundle with `--from`.
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Update the bundle in DIR with the new normal logs of `--input` instead of training
    /// afresh: its templates keep their classes, new ones are added, both networks are
    /// fine-tuned from its weights (its sizes and session key are kept), and the threshold
    /// floor is calibrated again on the new logs. `--out` may name the same directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) from: Option<PathBuf>,
    /// Seed: the same seed and data give the same model.
    #[arg(long, default_value_t = defaults::SEED)]
    pub(crate) seed: u64,
    /// Backend: flex, ndarray, wgpu, auto.
    #[arg(long, default_value = "flex")]
    pub(crate) backend: deepsentry_model::BackendKind,
    /// Most lines (events) to train on: the last ones of the inputs, read in order, so that a
    /// training's memory and time stay bounded (about 1 GB and five minutes on two cores at
    /// the default); 0 trains on every line.
    #[arg(long, default_value_t = defaults::MAX_LINES)]
    pub(crate) max_lines: usize,
    /// Most windows the detector is trained on over all its passes, so that a long log's
    /// training time stays bounded (a log of one stream has a window per line: at the default,
    /// 40 passes up to 25,000 lines, one from 500,000 on); 0 trains every pass.
    #[arg(long, default_value_t = defaults::MAX_WINDOWS)]
    pub(crate) max_windows: usize,
    /// Share of sessions held out to calibrate the threshold floor.
    #[arg(long, default_value_t = defaults::HOLDOUT)]
    pub(crate) holdout: f64,
    /// How many times less likely than the least likely event of a typical held-out normal
    /// session (99th percentile) an event must be to pass the threshold floor.
    #[arg(long, default_value_t = defaults::FLOOR_MARGIN)]
    pub(crate) floor_margin: f64,
    /// Chance that two neighbouring events of a training session are swapped in a pass,
    /// where the training sessions show those two templates next to each other in both orders
    /// (several writers, clock skew); 0 keeps the order as logged. Sessions
    /// only: a model of one stream keeps the order it was written in.
    #[arg(long, default_value_t = defaults::ORDER_NOISE)]
    pub(crate) order_noise: f64,
    /// Width of the sequence detector's layers (the state size of a GRU detector).
    #[arg(long, default_value_t = defaults::DETECTOR_HIDDEN)]
    pub(crate) detector_hidden: usize,
    /// The sequence detector's network: `window` (two layers over the window's steps side by
    /// side; fast to score) or `gru` (a GRU over the steps). An update (`--from`) keeps the
    /// network of the bundle it updates.
    #[arg(long, default_value = "window")]
    pub(crate) detector: deepsentry_model::detector::DetectorKind,
    /// Window networks trained side by side from different initializations and averaged:
    /// more make scores, and the floor learned from them, steadier from one seed to the next,
    /// at the cost of training and scoring time.
    #[arg(long, default_value_t = defaults::DETECTOR_MEMBERS)]
    pub(crate) detector_members: usize,
    /// Do not mine count invariants (relations between template counts checked when a
    /// session ends).
    #[arg(long)]
    pub(crate) no_invariants: bool,
    /// Keep no sample of the training lines in the bundle (`replay.log`, up to 2,000 raw
    /// lines that a later `--from` update trains on again), nor the ids of the sessions the
    /// logs ended in (`sessions.json` then keeps only template counts): for bundles shared
    /// beyond the logs' audience. Updates of such a bundle train on the new logs alone.
    #[arg(long)]
    pub(crate) no_replay: bool,
}
