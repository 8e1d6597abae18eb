//! SIGTERM/SIGINT drain the pipeline and exit 0; a second signal exits at once.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn sigterm_drains_everything_received_and_exits_0() {
    let s = Scratch::new();
    let config = stdin_to_file_pipeline(&s);
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    let input = fixture_lines(20_000, 11);
    let mut stdin = child.stdin.take().unwrap();
    for line in &input {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    wait_for_lines(&s, &s.path("out.log"), input.len(), WAIT);
    // stdin stays open: only the signal ends the run.
    signal(&child, "TERM");
    let status = wait_exit(&s, &mut child, WAIT);
    assert!(status.success(), "{status}\n{}", s.stderr());
    assert_eq!(read_lines(&s.path("out.log")), input);
    assert!(s.stderr().contains("draining"), "{}", s.stderr());
    drop(stdin);
}

/// The default pipeline (no arguments) scores with the model built into the binary, so it
/// runs from a directory that holds no `models/`; SIGINT ends it with status 0.
#[test]
fn sigint_on_the_default_pipeline_run_from_any_directory_exits_0() {
    let s = Scratch::new();
    let mut child = std::process::Command::new(bin())
        .current_dir(s.dir.path())
        .env("DEEPSENTRY_LOG", "info")
        .env_remove("ANOMALY_MODEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(
        line.starts_with('[') && line.contains("score: ") && line.contains("(threshold: "),
        "{line:?}"
    );
    signal(&child, "INT");
    let status = wait_exit(&s, &mut child, WAIT);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("model=builtin"), "{stderr}");
    assert!(!s.dir.path().join("models").exists());
}

#[test]
fn a_second_signal_exits_at_once_when_draining_is_stuck() {
    let s = Scratch::new();
    // The console writes into a pipe nobody reads: the pipeline blocks on backpressure and
    // cannot drain.
    let config = s.pipeline(
        "p.yml",
        "sources:\n  demo:\n    type: demo\n    rate: 0\n\
         sinks:\n  out:\n    type: console\n    inputs: [demo]\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::piped());
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining (grace period 20 s)"
    );
    let sent = Instant::now();
    signal(&child, "TERM");
    let status = wait_exit(&s, &mut child, Duration::from_secs(5));
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{}", s.stderr());
}
