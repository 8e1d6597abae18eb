//! The program's own logs: to stderr, as text or JSON, filtered by level.

use crate::cli::LogFormat;

/// Logs go to stderr (stdout carries data). The filter comes from `--log-level`, else
/// `DEEPSENTRY_LOG`, else `RUST_LOG`, else `info`.
pub(crate) fn init_logging(level: Option<&str>, format: LogFormat) -> Result<(), String> {
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
