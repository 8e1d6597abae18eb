//! The HTTP API (`api.address`): `/metrics` and `/health` scraped while a pipeline runs.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// The value of the sample whose line starts with `series` (name and labels), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_and_health_are_served_while_the_pipeline_runs() {
    let s = Scratch::new();
    let port = free_port();
    let lines = fixture_lines(3000, 11);
    write_lines(&s.path("in.log"), &lines, false);
    let model = SHIPPED_MODEL;
    let config = s.pipeline(
        "p.yml",
        &scored_file_pipeline(
            std::path::Path::new(model),
            Some(port),
            "    type: blackhole\n",
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let mut metrics = String::new();
    let scored = wait_until(Duration::from_secs(60), || {
        metrics = http_get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        sample(
            &metrics,
            r#"deepsentry_events_scored_total{component="detect"}"#,
        )
        .is_some_and(|n| n >= lines.len() as f64)
    });
    assert!(scored, "{metrics}\n--- stderr ---\n{}", s.stderr());

    let (code, health) = http_get(port, "/health").expect("/health answers");
    assert_eq!(code, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["components"]["sources.in"], "running");
    assert_eq!(health["components"]["transforms.detect"], "running");

    let count = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(
        count(r#"deepsentry_events_sent_total{component="in"}"#),
        lines.len() as f64
    );
    assert!(count(r#"deepsentry_bytes_received_total{component="in"}"#) > 0.0);
    assert_eq!(
        count(r#"deepsentry_anomaly_score_count{component="detect"}"#),
        count(r#"deepsentry_events_scored_total{component="detect"}"#)
    );
    assert_eq!(
        count(r#"deepsentry_anomaly_score_bucket{component="detect",le="+Inf"}"#),
        count(r#"deepsentry_anomaly_score_count{component="detect"}"#)
    );
    assert!(count(r#"deepsentry_anomaly_threshold{component="detect"}"#) > 0.0);
    assert!(count(r#"deepsentry_scoring_seconds_count{component="detect"}"#) >= 1.0);
    assert!(count(r#"deepsentry_sessions_held{component="detect"}"#) >= 0.0);
    let ratio = count(r#"deepsentry_detector_cache_hit_ratio{component="detect"}"#);
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    assert!(
        metrics.contains(&format!(
            r#"deepsentry_model_info{{component="detect",path="{model}",backend="flex",sequence_length="10","#
        )),
        "{metrics}"
    );
    assert!(count(r#"deepsentry_input_channel_batches{component="out"}"#) >= 0.0);
    assert!(count(r#"deepsentry_events_received_total{component="out"}"#) > 0.0);
    assert_eq!(
        count(r#"deepsentry_events_received_total{component="detect"}"#),
        lines.len() as f64
    );
    assert!(metrics.contains("# TYPE deepsentry_anomaly_score histogram"));
    assert!(metrics.contains("deepsentry_anomalies_total{component=\"detect\"}"));

    // Every series the shipped Grafana dashboard queries is served (those counting failures
    // exist once something failed) and documented.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/deepsentry.json"
    ))
    .unwrap();
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    let names = regex::Regex::new(r"deepsentry_[a-z_]+").unwrap();
    let mut queried: Vec<&str> = names.find_iter(&dashboard).map(|m| m.as_str()).collect();
    queried.sort();
    queried.dedup();
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(docs.contains(family), "{family} is not documented");
        if ![
            "deepsentry_events_dropped_total",
            "deepsentry_send_errors_total",
        ]
        .contains(&name)
        {
            assert!(
                metrics.contains(&format!("\n{name}{{")),
                "the dashboard queries {name}, which is not served:\n{metrics}"
            );
        }
    }

    assert_eq!(http_get(port, "/nothing-here").map(|r| r.0), Some(404));
    // What the container's health check runs.
    let check = std::process::Command::new(bin())
        .args(["health", "--address", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("\"status\":\"ok\""));
    stop(&s, &mut child);
    let check = std::process::Command::new(bin())
        .args(["health", "--address", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "nothing listens any more");
    assert!(String::from_utf8_lossy(&check.stderr).contains("cannot reach the API"));
}

/// A failed component stops the process (see the README's policy); while the others drain,
/// `/health` answers 503 and names it. The console sink fails on its first write (its reader
/// is gone), and a webhook whose server accepts and never answers holds the drain open with
/// the same lines, so the window is there to observe whatever the machine's speed.
#[test]
fn a_failed_component_turns_health_to_503_and_names_it() {
    let s = Scratch::new();
    let port = free_port();
    let (_silent_server, silent_port) = taken_port();
    write_lines(&s.path("in.log"), &fixture_lines(10, 3), false);
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             api:\n  address: 127.0.0.1:{port}\n\
             sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n\
             sinks:\n  shown:\n    type: console\n    inputs: [in]\n  \
             hook:\n    type: webhook\n    inputs: [in]\n    \
             url: http://127.0.0.1:{silent_port}/\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::piped());
    drop(child.stdout.take());
    let mut last = None;
    // 503 also answers while the pipeline is still starting (a loaded machine): wait for the
    // failure itself.
    let failed = wait_until(Duration::from_secs(20), || {
        last = http_get(port, "/health");
        last.as_ref().is_some_and(|(code, body)| {
            *code == 503
                && serde_json::from_str::<serde_json::Value>(body)
                    .is_ok_and(|health| health["status"] == "failed")
        })
    });
    assert!(failed, "{last:?}\n{}", s.stderr());
    let health: serde_json::Value = serde_json::from_str(&last.unwrap().1).unwrap();
    assert_eq!(health["status"], "failed");
    assert_eq!(health["failed"][0]["component"], "sinks.shown");
    assert!(
        health["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot write to Stdout"),
        "{health}"
    );
    assert_eq!(
        health["components"]["sinks.hook"], "running",
        "the webhook still drains: {health}"
    );
    assert!(
        s.stderr()
            .contains("a component failed: the pipeline drains what it can"),
        "{}",
        s.stderr()
    );
    // Draining would wait out the grace period for the silent server.
    let status = stop_without_draining(&s, &mut child);
    assert!(
        !status.success(),
        "a failed component makes the exit status non-zero"
    );
}

#[test]
fn an_address_in_use_stops_the_start_with_a_clear_error() {
    let s = Scratch::new();
    let (_taken, port) = taken_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "api:\n  address: 127.0.0.1:{port}\n\
             sources:\n  in:\n    type: demo\n    count: 10\n    rate: 0\n\
             sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n"
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("api: cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// A client that connects and sends nothing is cut off after the header timeout (10 s), and
/// the API keeps answering others meanwhile.
#[test]
fn a_silent_api_client_is_disconnected() {
    let s = Scratch::new();
    let port = free_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "api:\n  address: 127.0.0.1:{port}\n\
             sources:\n  in:\n    type: stdin\n\
             sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n"
        ),
    );
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    assert!(
        wait_until(Duration::from_secs(30), || http_get(port, "/health")
            .is_some()),
        "{}",
        s.stderr()
    );
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(http_get(port, "/health").is_some(), "others are served");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = std::io::Read::read_to_end(&mut &silent, &mut answer);
    assert!(
        read.is_ok(),
        "the silent connection is closed, not left open: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(child.stdin.take());
    let status = wait_exit(&s, &mut child, Duration::from_secs(30));
    assert!(status.success(), "{}", s.stderr());
}
