//! The live monitor's recipes, run as written: `dockerrun/run_live_monitoring.sh` with a
//! `live_monitoring_config.yml`, fed by `tail -f`, by an application's pipe, by a TCP peer,
//! and piped on to `grep ANOMALY | logger`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deepsentry_source_demo::HdfsGenerator;

use crate::common::*;
use crate::syslog::Rsyslog;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../dockerrun/run_live_monitoring.sh"
);

/// The live monitor's console line.
fn monitor_line() -> regex::Regex {
    regex::Regex::new(
        r#"^\[\d\d:\d\d:\d\d\] (Normal|ANOMALY) - score: \d+\.\d\d \(threshold: \d+\.\d\d\) - ".*"( ⚠️( \(x\d+\))?)?$"#,
    )
    .unwrap()
}

/// HDFS-style lines with faults, in the format the shipped model was trained on.
fn app_lines(n: usize) -> Vec<String> {
    HdfsGenerator::new(5, 0.2, 8)
        .take(n)
        .map(|line| line.text)
        .collect()
}

/// A `live_monitoring_config.yml` in the scratch directory: the seed's flat keys, plus
/// `extra` lines.
fn live_config(s: &Scratch, extra: &str) -> PathBuf {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default");
    s.pipeline(
        "live_monitoring_config.yml",
        &format!(
            "log_file: /dev/stdin\ntail_mode: true\noutput_file: {{dir}}/alerts.log\n\
             threshold_multiplier: 2.5\nwindow_size: 100\nsequence_length: 10\n\
             batch_interval: 0.2\nmodel: {model}\nsession_key: 'blk_-?\\d+'\n\
             data_dir: {{dir}}/data\n{extra}"
        ),
    )
}

/// `bash -c COMMAND` in its own process group (so the whole pipe can be stopped), with the
/// test's binary and config, stdout to `stdout.log` and stderr to `stderr.log`.
fn shell(s: &Scratch, config: &Path, command: &str, env: &[(&str, &str)]) -> Child {
    Command::new("bash")
        .args(["-c", command])
        .env("DEEPSENTRY_BIN", bin())
        .env("LIVE_MONITORING_CONFIG", config)
        .envs(env.iter().copied())
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(s.path("stdout.log")).unwrap())
        .stderr(std::fs::File::create(s.path("stderr.log")).unwrap())
        .process_group(0)
        .spawn()
        .expect("start bash")
}

/// Stops every process of the pipe.
fn stop_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

#[test]
fn tail_f_into_the_script_prints_monitor_lines_and_writes_the_alert_file() {
    let s = Scratch::new();
    let config = live_config(&s, "");
    let log = s.path("app.log");
    std::fs::write(&log, "").unwrap();
    let mut child = shell(
        &s,
        &config,
        &format!("tail -f {} | bash {SCRIPT}", log.display()),
        &[],
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines = app_lines(3000);
    write_lines(&log, &lines, true);
    let out = s.path("stdout.log");
    let done = wait_until(Duration::from_secs(60), || {
        read_lines(&out).len() >= lines.len()
    });
    stop_group(&mut child);
    assert!(done, "{} lines\n{}", read_lines(&out).len(), s.stderr());
    let printed = read_lines(&out);
    let shape = monitor_line();
    for line in &printed {
        assert!(shape.is_match(line), "{line}");
    }
    let anomalies = printed
        .iter()
        .filter(|l| l.contains("] ANOMALY - "))
        .count();
    assert!(anomalies > 0, "no anomaly among {} lines", printed.len());
    let alerts = std::fs::read_to_string(s.path("alerts.log")).unwrap_or_default();
    let blocks = alerts.matches("TIMESTAMP=").count();
    assert!(blocks > 0, "no alert block\n{}", s.stderr());
    for key in ["SCORE=", "THRESHOLD=", "MESSAGE=\"", "CONTEXT_WINDOW=\""] {
        assert_eq!(alerts.matches(key).count(), blocks, "{key} in\n{alerts}");
    }
}

#[test]
fn an_app_piped_through_grep_anomaly_and_logger_reaches_syslog() {
    let s = Scratch::new();
    let daemon = Rsyslog::start(s.dir.path(), free_port(), free_port());
    let socket = s.dir.path().join("rsyslog/log.sock");
    assert!(wait_until(Duration::from_secs(5), || socket.exists()));
    let config = live_config(&s, "");
    let app = s.path("app.sh");
    let lines = app_lines(3000);
    write_lines(&s.path("app.log"), &lines, false);
    // The "application": writes its log to stderr.
    std::fs::write(&app, format!("cat {} >&2\n", s.path("app.log").display())).unwrap();
    // As in the recipe, with logger pointed at the test's daemon instead of /dev/log.
    let mut child = shell(
        &s,
        &config,
        &format!(
            "bash {} 2>&1 | bash {SCRIPT} | grep ANOMALY | logger -t deepsentry -p user.alert -u {}",
            app.display(),
            socket.display()
        ),
        &[],
    );
    let status = wait_exit(&s, &mut child, Duration::from_secs(120));
    assert!(status.success(), "{status}\n{}", s.stderr());
    let alerts = std::fs::read_to_string(s.path("alerts.log")).unwrap_or_default();
    let flagged = alerts.matches("TIMESTAMP=").count();
    assert!(flagged > 0, "no anomaly flagged\n{}", s.stderr());
    let ok = wait_until(Duration::from_secs(10), || daemon.lines().len() >= flagged);
    let received = daemon.lines();
    assert!(ok, "{} of {flagged} alerts reached syslog", received.len());
    let shape = regex::Regex::new(
        r#"^user\.alert\|deepsentry\|[^|]*\|[^|]*\| ?\[\d\d:\d\d:\d\d\] ANOMALY - score: "#,
    )
    .unwrap();
    for line in &received {
        assert!(shape.is_match(line), "{line}");
    }
}

#[test]
fn a_tcp_peer_is_read_like_dev_tcp() {
    let s = Scratch::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = live_config(&s, &format!("api_address: 127.0.0.1:{}\n", free_port()));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "log_file: /dev/stdin",
        &format!("log_file: /dev/tcp/127.0.0.1/{port}"),
    );
    std::fs::write(&config, text).unwrap();
    let mut child = shell(&s, &config, &format!("bash {SCRIPT}"), &[]);
    listener.set_nonblocking(true).unwrap();
    let mut accepted = None;
    let connected = wait_until(Duration::from_secs(30), || {
        accepted = listener.accept().ok();
        accepted.is_some()
    });
    assert!(connected, "the monitor did not connect\n{}", s.stderr());
    let (mut peer, _) = accepted.unwrap();
    peer.set_nonblocking(false).unwrap();
    let lines = app_lines(500);
    peer.write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    let out = s.path("stdout.log");
    let done = wait_until(Duration::from_secs(60), || {
        read_lines(&out).len() >= lines.len()
    });
    stop_group(&mut child);
    assert!(done, "{} lines\n{}", read_lines(&out).len(), s.stderr());
    let shape = monitor_line();
    assert!(read_lines(&out).iter().all(|l| shape.is_match(l)));
}

#[test]
fn log_file_and_anomaly_model_come_from_the_environment() {
    let s = Scratch::new();
    let config = live_config(&s, "");
    // tail_mode: false reads the file from its start.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("tail_mode: true", "tail_mode: false")
        .replace("model: ", "model: /no/such/model\n# was: ");
    std::fs::write(&config, text).unwrap();
    let log = s.path("from-env.log");
    let lines = app_lines(400);
    write_lines(&log, &lines, false);
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default");
    let mut child = shell(
        &s,
        &config,
        &format!("bash {SCRIPT}"),
        &[
            ("LOG_FILE", log.to_str().unwrap()),
            ("ANOMALY_MODEL", model),
        ],
    );
    let out = s.path("stdout.log");
    let done = wait_until(Duration::from_secs(60), || {
        read_lines(&out).len() >= lines.len()
    });
    stop_group(&mut child);
    assert!(done, "{} lines\n{}", read_lines(&out).len(), s.stderr());
}

#[test]
fn a_bad_live_config_names_the_file_line_and_choices() {
    let s = Scratch::new();
    let config = live_config(&s, "treshold: 3\n");
    let output = Command::new(bin())
        .args(["live", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:11:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("`threshold_multiplier`"), "{stderr}");

    // A model trained with another sequence_length is refused at start, saying both.
    let config = live_config(&s, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("sequence_length: 10", "sequence_length: 20");
    std::fs::write(&config, text).unwrap();
    let output = Command::new(bin())
        .args(["live", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`sequence_length` is 20"), "{stderr}");
    assert!(stderr.contains("sequence_length 10"), "{stderr}");
}
