//! `deepsentry run`, `live` and `validate`: loading a pipeline, running it, reloading it on
//! SIGHUP, stopping it on SIGINT/SIGTERM, and the report at its end.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use deepsentry_core::config::{self, ConfigErrors, PipelineConfig};
use deepsentry_core::health::Health;
use deepsentry_core::metrics::Metrics;
use deepsentry_core::topology::{self, RunOutcome};
use deepsentry_core::ShutdownSignal;

use crate::{api, EX_CONFIG};

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

pub(crate) fn validate(path: &Path) -> ExitCode {
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

/// Loads the pipeline again, for a reload (SIGHUP).
pub(crate) type Loader = Box<dyn Fn() -> Result<PipelineConfig, ConfigErrors> + Send + Sync>;

/// Loads the pipeline with `loader` and runs it; SIGHUP loads it again and applies what
/// changed.
pub(crate) fn run(loader: Loader, grace_period: Duration) -> ExitCode {
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
