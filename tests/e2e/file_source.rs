//! The file source follows appends and rotation, and resumes from its checkpoints.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

const TAIL: &str = "data_dir: {dir}/data\n\
    sources:\n  app:\n    type: file\n    include: ['{dir}/app.log']\n    READ_FROM\n\
    \x20   poll_interval_ms: 20\n    glob_interval_ms: 100\n    rotate_wait_secs: 1\n\
    sinks:\n  out:\n    type: file\n    inputs: [app]\n    path: {dir}/out.log\n";

fn tail_pipeline(s: &Scratch, read_from: &str) -> std::path::PathBuf {
    s.pipeline(
        "tail.yml",
        &TAIL.replace("READ_FROM", &format!("read_from: {read_from}")),
    )
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn rotation_by_rename_loses_nothing() {
    let s = Scratch::new();
    let lines = fixture_lines(3_000, 4);
    let log = s.path("app.log");
    write_lines(&log, &lines[..1000], false);
    let mut child = s.start(
        &tail_pipeline(&s, "beginning"),
        Stdio::null(),
        Stdio::null(),
    );
    wait_for_lines(&s, &s.path("out.log"), 1000, WAIT);

    // Appended, then rotated away, then late writes to the rotated file, then a new file.
    write_lines(&log, &lines[1000..1500], true);
    std::fs::rename(&log, s.path("app.log.1")).unwrap();
    write_lines(&s.path("app.log.1"), &lines[1500..1700], true);
    write_lines(&log, &lines[1700..], false);

    wait_for_lines(&s, &s.path("out.log"), 3000, WAIT);
    stop(&s, &mut child);
    let output = read_lines(&s.path("out.log"));
    let mut sorted = output.clone();
    sorted.sort();
    assert_eq!(sorted, lines, "every line exactly once");
    // Each file's lines stay in order.
    let old: Vec<_> = output
        .iter()
        .filter(|l| l.as_str() < lines[1700].as_str())
        .collect();
    assert!(old.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn rotation_by_truncation_loses_nothing() {
    let s = Scratch::new();
    let lines = fixture_lines(1_300, 5);
    let log = s.path("app.log");
    write_lines(&log, &lines[..1000], false);
    let mut child = s.start(
        &tail_pipeline(&s, "beginning"),
        Stdio::null(),
        Stdio::null(),
    );
    wait_for_lines(&s, &s.path("out.log"), 1000, WAIT);

    // copytruncate-style: the file is emptied in place, then written again (less than before).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    write_lines(&log, &lines[1000..], true);

    wait_for_lines(&s, &s.path("out.log"), 1300, WAIT);
    stop(&s, &mut child);
    assert_eq!(read_lines(&s.path("out.log")), lines);
    assert!(s.stderr().contains("truncated"), "{}", s.stderr());
}

#[test]
fn restart_resumes_after_the_last_delivered_line() {
    let s = Scratch::new();
    let lines = fixture_lines(1_500, 6);
    let log = s.path("app.log");
    write_lines(&log, &lines[..1000], false);
    let config = s.pipeline(
        "once.yml",
        "data_dir: {dir}/data\n\
         sources:\n  app:\n    type: file\n    include: ['{dir}/app.log']\n    exit_on_eof: true\n\
         sinks:\n  out:\n    type: file\n    inputs: [app]\n    path: {dir}/out.log\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    assert!(wait_exit(&s, &mut child, WAIT).success());
    assert_eq!(read_lines(&s.path("out.log")).len(), 1000);

    write_lines(&log, &lines[1000..], true);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    assert!(wait_exit(&s, &mut child, WAIT).success());
    assert_eq!(
        read_lines(&s.path("out.log")),
        lines,
        "no line twice, none lost"
    );
    assert!(s.path("data/app/checkpoints.json").exists());
}

#[test]
fn read_from_end_skips_existing_lines_and_follows_appends() {
    let s = Scratch::new();
    let lines = fixture_lines(700, 7);
    let log = s.path("app.log");
    write_lines(&log, &lines[..500], false);
    let mut child = s.start(&tail_pipeline(&s, "end"), Stdio::null(), Stdio::null());
    let watching = wait_until(WAIT, || s.stderr().contains("watching file"));
    assert!(watching, "{}", s.stderr());
    write_lines(&log, &lines[500..], true);
    wait_for_lines(&s, &s.path("out.log"), 200, WAIT);
    stop(&s, &mut child);
    assert_eq!(read_lines(&s.path("out.log")), lines[500..]);
}

#[test]
fn files_matching_a_glob_that_appear_later_are_read() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("logs")).unwrap();
    let config = s.pipeline(
        "glob.yml",
        "data_dir: {dir}/data\n\
         sources:\n  app:\n    type: file\n    include: ['{dir}/logs/*.log']\n    exclude: ['{dir}/logs/skip*']\n\
         \x20   glob_interval_ms: 50\n    read_from: end\n\
         sinks:\n  out:\n    type: file\n    inputs: [app]\n    path: {dir}/out.log\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    std::thread::sleep(Duration::from_millis(300));
    let lines = fixture_lines(200, 8);
    write_lines(&s.path("logs/a.log"), &lines[..100], false);
    write_lines(&s.path("logs/skip.log"), &lines[..10], false);
    write_lines(&s.path("logs/b.log"), &lines[100..], false);
    wait_for_lines(&s, &s.path("out.log"), 200, WAIT);
    stop(&s, &mut child);
    let mut output = read_lines(&s.path("out.log"));
    output.sort();
    assert_eq!(
        output, lines,
        "new files are read from their start, excluded ones not at all"
    );
}
