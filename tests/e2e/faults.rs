//! Faults found by running the binary against hostile conditions: each test reproduces one
//! and checks the promise it broke.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// The most lines a source puts in one batch (`deepsentry_core::MAX_BATCH_EVENTS`).
const BATCH: usize = 1024;

/// `deepsentry run -c p.yml | head -n1` with a second, file sink: the console sink dies on
/// EPIPE. The run must end promptly and non-zero (not wedge the file sink until the grace
/// period), keep the checkpoint behind every line the console did not write, and a restart
/// must deliver the rest to both sinks.
#[test]
fn a_dead_console_sink_ends_the_run_and_loses_nothing() {
    let s = Scratch::new();
    let input = fixture_lines(200_000, 21);
    write_lines(&s.path("in.log"), &input, false);
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  in:\n    type: file\n    include: ['{dir}/in.log']\n    exit_on_eof: true\n\
         sinks:\n  screen:\n    type: console\n    inputs: [in]\n    encoding: text\n\
         \x20 copy:\n    type: file\n    inputs: [in]\n    path: {dir}/out.log\n",
    );
    let started = Instant::now();
    let mut child = s.start(&config, Stdio::null(), Stdio::piped());
    {
        // `head -n1`: one line, then the pipe closes.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
    }
    let status = wait_exit(&s, &mut child, Duration::from_secs(15));
    let took = started.elapsed();
    assert!(
        !status.success(),
        "a failed sink must make the exit status non-zero\n{}",
        s.stderr()
    );
    assert!(
        took < Duration::from_secs(12),
        "the run took {took:?}: it waited for the grace period instead of ending\n{}",
        s.stderr()
    );
    let stderr = s.stderr();
    assert!(
        stderr.contains("a component failed"),
        "the failure policy is logged\n{stderr}"
    );

    // The restart with a console that reads everything: both sinks end up with every line.
    let restarted = s.start(&config, Stdio::null(), Stdio::piped());
    let output = restarted.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", s.stderr());
    let screen: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let on_screen = counts(&screen);
    let not_shown: Vec<usize> = (0..input.len())
        .filter(|&i| !on_screen.contains_key(input[i].as_str()))
        .collect();
    // What the dead console wrote into the pipe before it closed counts as delivered; that
    // is at most the first batch. Everything after it must be shown by the restart.
    assert!(
        not_shown.iter().all(|&i| i < BATCH),
        "{} lines the dead console never wrote were checkpointed past (first: {:?})",
        not_shown.len(),
        not_shown.iter().find(|&&i| i >= BATCH)
    );
    let copied = read_lines(&s.path("out.log"));
    let in_copy = counts(&copied);
    let missing = input
        .iter()
        .filter(|l| !in_copy.contains_key(l.as_str()))
        .count();
    assert_eq!(missing, 0, "lines lost from the file sink");
}

/// Standard input into a console sink whose reader is gone and a file sink: the process
/// stops by itself, promptly and non-zero, instead of wedging while stdin stays open.
#[test]
fn a_dead_sink_stops_a_stdin_pipeline_promptly() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  in:\n    type: stdin\n\
         sinks:\n  screen:\n    type: console\n    inputs: [in]\n    encoding: text\n\
         \x20 copy:\n    type: file\n    inputs: [in]\n    path: {dir}/out.log\n",
    );
    let mut child = s.start(&config, Stdio::piped(), Stdio::piped());
    drop(child.stdout.take()); // the console's reader is gone before anything is written
    let mut stdin = child.stdin.take().unwrap();
    let lines = fixture_lines(5_000, 22);
    // Written from a thread that keeps stdin open: a wedged process would stop reading it.
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, (lines.join("\n") + "\n").as_bytes());
        std::thread::sleep(Duration::from_secs(20));
    });
    let started = Instant::now();
    let status = wait_exit(&s, &mut child, Duration::from_secs(15));
    assert!(!status.success(), "{}", s.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}\n{}",
        started.elapsed(),
        s.stderr()
    );
    drop(writer);
}
