//! The `deepsentry` command: runs pipelines, validates configs, lists plugins.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deepsentry_core::config;
use deepsentry_core::registry::{self, ComponentKind};

use cli::{Cli, Command};
use logging::init_logging;
use running::{run, validate};
use training::{print_templates, train};

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
mod cli;
mod eval;
mod input_format;
mod live;
mod logging;
mod running;
mod training;

/// The pipeline `deepsentry run` uses when no `-c` is given (a copy of
/// `pipelines/default.yml`, built into the binary so it runs from anywhere).
const DEFAULT_PIPELINE: &str = include_str!("../../../pipelines/default.yml");

/// The pipeline of `deepsentry sidecar` (a copy of `pipelines/sidecar.yml`).
const SIDECAR_PIPELINE: &str = include_str!("../../../pipelines/sidecar.yml");

/// Exit status for a bad config (sysexits.h `EX_CONFIG`).
const EX_CONFIG: u8 = 78;

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
        Command::Sidecar { grace_period } => run(
            Box::new(|| config::load_str(SIDECAR_PIPELINE, "<built-in sidecar pipeline>")),
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

fn report_error(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
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
