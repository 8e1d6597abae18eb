//! `kill -9` in the middle of a replay, then a restart: every line is delivered.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// The most lines a source puts in one batch (`deepsentry_core::MAX_BATCH_EVENTS`).
const BATCH: usize = 1024;

#[test]
fn kill_9_during_replay_then_restart_loses_nothing() {
    let s = Scratch::new();
    let input = fixture_lines(50_000, 10);
    write_lines(&s.path("in.log"), &input, false);
    // The console sink writes into a pipe this test reads slowly, so the pipeline is busy
    // (and held back by backpressure) when it is killed.
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  in:\n    type: file\n    include: ['{dir}/in.log']\n    exit_on_eof: true\n\
         sinks:\n  out:\n    type: console\n    inputs: [in]\n    encoding: text\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::piped());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut delivered = Vec::new();
    let mut line = String::new();
    while delivered.len() < 20_000 {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{}", s.stderr());
        delivered.push(line.trim_end().to_string());
        if delivered.len() % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    signal(&child, "KILL");
    let _ = child.wait();
    // What the killed process had already written is delivered too.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    delivered.extend(rest.lines().map(str::to_owned));
    let first_run = delivered.len();
    assert!(
        first_run < input.len(),
        "the kill came after the whole replay"
    );

    let restarted = s.start(&config, Stdio::null(), Stdio::piped());
    let output = restarted.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", s.stderr());
    delivered.extend(
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned),
    );

    let seen = counts(&delivered);
    let missing = input
        .iter()
        .filter(|l| !seen.contains_key(l.as_str()))
        .count();
    assert_eq!(missing, 0, "lines lost after kill -9 and restart");
    let duplicates = delivered.len() - input.len();
    assert!(
        duplicates <= BATCH,
        "{duplicates} lines delivered twice; at most one batch ({BATCH}) may be"
    );
    eprintln!("first run delivered {first_run} lines; {duplicates} duplicates after restart");
}
