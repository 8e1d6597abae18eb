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

/// `seq 1 100 > in.log`, then `seq 1001 3000 > in.log` on the same inode, larger than the
/// read position: the rewrite is noticed by the file's first bytes, and every new line
/// arrives.
#[test]
fn a_file_rewritten_in_place_is_read_again_whole() {
    let s = Scratch::new();
    let log = s.path("app.log");
    let first: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    write_lines(&log, &first, false);
    let mut child = s.start(
        &tail_pipeline(&s, "beginning"),
        Stdio::null(),
        Stdio::null(),
    );
    wait_for_lines(&s, &s.path("out.log"), 100, WAIT);
    // Rewritten from offset 0 without a visible truncation (same inode, now longer).
    let second: Vec<String> = (1001..=3000).map(|i| i.to_string()).collect();
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        file.write_all((second.join("\n") + "\n").as_bytes())
            .unwrap();
    }
    wait_for_lines(&s, &s.path("out.log"), 2100, WAIT);
    stop(&s, &mut child);
    let output = read_lines(&s.path("out.log"));
    let seen = counts(&output);
    let missing = second
        .iter()
        .filter(|l| !seen.contains_key(l.as_str()))
        .count();
    assert_eq!(
        missing,
        0,
        "{} lines of the rewrite arrived",
        2000 - missing
    );
}

/// `include: ['app.log*']`, `mv app.log app.log.1`, a new `app.log`: the renamed file is the
/// same file (device and inode), followed where it was, not read again.
#[test]
fn a_rotation_within_the_glob_reads_nothing_twice() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        &TAIL
            .replace("{dir}/app.log'", "{dir}/app.log*'")
            .replace("READ_FROM", "read_from: beginning")
            .replace("rotate_wait_secs: 1", "rotate_wait_secs: 0.3"),
    );
    let lines = fixture_lines(150, 31);
    let log = s.path("app.log");
    write_lines(&log, &lines[..100], false);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 100, WAIT);
    std::fs::rename(&log, s.path("app.log.1")).unwrap();
    write_lines(&log, &lines[100..], false);
    wait_for_lines(&s, &s.path("out.log"), 150, WAIT);
    // Well past rotate_wait and several scans: nothing more may come.
    std::thread::sleep(Duration::from_secs(2));
    stop(&s, &mut child);
    let output = read_lines(&s.path("out.log"));
    assert_eq!(output.len(), 150, "{}", s.stderr());
}

/// `read_from: end` starts files at their end only on the first run: a file that appeared
/// while DeepSentry was down (the new file of a rotation) is read from its start.
#[test]
fn read_from_end_reads_a_file_that_appeared_while_down_from_its_start() {
    let s = Scratch::new();
    let log = s.path("app.log");
    let lines = fixture_lines(30, 32);
    write_lines(&log, &lines[..10], false);
    let config = tail_pipeline(&s, "end");
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    // Skipped lines are never delivered; appended ones are.
    assert!(wait_until(WAIT, || s.stderr().contains("watching file")));
    write_lines(&log, &lines[10..15], true);
    wait_for_lines(&s, &s.path("out.log"), 5, WAIT);
    stop(&s, &mut child);

    std::fs::rename(&log, s.path("app.log.1")).unwrap();
    write_lines(&log, &lines[15..], false);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 20, WAIT);
    stop(&s, &mut child);
    assert_eq!(read_lines(&s.path("out.log")), lines[10..].to_vec());
}

/// Lines appended while DeepSentry was stopped, and then rotated away by a rename, are read
/// from the renamed file on the next start (from its checkpoint), before the new file.
#[test]
fn a_file_rotated_while_stopped_is_finished_from_its_checkpoint() {
    let s = Scratch::new();
    let log = s.path("app.log");
    let lines = fixture_lines(100, 33);
    write_lines(&log, &lines[..50], false);
    let config = tail_pipeline(&s, "beginning");
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 50, WAIT);
    stop(&s, &mut child);

    write_lines(&log, &lines[50..80], true);
    std::fs::rename(&log, s.path("app.log.1")).unwrap();
    write_lines(&log, &lines[80..], false);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 100, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    stop(&s, &mut child);
    let mut output = read_lines(&s.path("out.log"));
    output.sort();
    assert_eq!(output, lines, "every line exactly once\n{}", s.stderr());
}

/// A Kubernetes container log file (CRI, as containerd and CRI-O write
/// `/var/log/containers/*.log`): each event's text, time and stream; a long line the runtime
/// split into pieces is one event, and a stack trace is joined by its text.
#[test]
fn a_container_log_file_decodes_with_cri() {
    let s = Scratch::new();
    let lines = [
        "2024-05-31T10:00:00.250000000Z stdout F {\"level\":\"info\",\"msg\":\"ready\"}",
        "2024-05-31T10:00:01.000000000Z stderr P Exception in thread \"main\" java.lang.Illeg",
        "2024-05-31T10:00:01.000000000Z stderr F alStateException: pool closed",
        "2024-05-31T10:00:01.000000000Z stderr F \tat com.shop.Pool.get(Pool.java:42)",
        "2024-05-31T10:00:02.000000000Z stdout F served 3 requests",
    ];
    write_lines(&s.path("pod.log"), &lines.map(str::to_owned), false);
    let config = s.pipeline(
        "cri.yml",
        "data_dir: {dir}/data\n\
         sources:\n  pods:\n    type: file\n    include: ['{dir}/pod.log']\n    exit_on_eof: true\n    \
         decoding: cri\n    multiline: java\n\
         sinks:\n  out:\n    type: file\n    inputs: [pods]\n    path: {dir}/out.json\n    \
         encoding: json\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    assert!(wait_exit(&s, &mut child, WAIT).success(), "{}", s.stderr());
    let events = json_events(&s.path("out.json"));
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap(),
                e["stream"].as_str().unwrap(),
                e["timestamp"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "{\"level\":\"info\",\"msg\":\"ready\"}",
                "stdout",
                "2024-05-31T10:00:00.250000Z"
            ),
            (
                "Exception in thread \"main\" java.lang.IllegalStateException: pool closed\n\
                 \tat com.shop.Pool.get(Pool.java:42)",
                "stderr",
                "2024-05-31T10:00:01.000000Z"
            ),
            ("served 3 requests", "stdout", "2024-05-31T10:00:02.000000Z"),
        ],
        "{}",
        s.stderr()
    );
}

#[test]
fn a_container_logs_split_line_whose_last_piece_never_comes_is_sent_while_tailing() {
    // A container that wrote half a line and went quiet: the piece goes out as far as it got
    // after its timeout, without waiting for the file to end.
    let s = Scratch::new();
    let log = s.path("app.log");
    let lines = [
        "2024-05-31T10:00:00Z stdout F ready".to_owned(),
        "2024-05-31T10:00:01Z stdout P progress: 10% ".to_owned(),
    ];
    write_lines(&log, &lines, false);
    let config = tail_pipeline(&s, "beginning\n    decoding: cri");
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 2, WAIT);
    stop(&s, &mut child);
    assert_eq!(
        read_lines(&s.path("out.log")),
        ["ready", "progress: 10% "],
        "{}",
        s.stderr()
    );
}

/// A long line the runtime split, stopped between its pieces: the checkpoint stays before the
/// first piece, so the next start puts the line together whole, and nothing is sent twice.
#[test]
fn a_container_logs_split_line_survives_a_restart_between_its_pieces() {
    let s = Scratch::new();
    let log = s.path("app.log");
    let first = "2024-05-31T10:00:00Z stdout F ready".to_owned();
    let piece = "2024-05-31T10:00:01Z stderr P a line the runtime split ".to_owned();
    write_lines(&log, &[first, piece], false);
    let config = tail_pipeline(&s, "beginning\n    decoding: cri");
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 1, WAIT);
    // Long enough for a poll to have read the piece.
    std::thread::sleep(Duration::from_millis(500));
    stop(&s, &mut child);
    assert_eq!(read_lines(&s.path("out.log")), ["ready"]);

    let rest = [
        "2024-05-31T10:00:01Z stderr F in two".to_owned(),
        "2024-05-31T10:00:02Z stdout F done".to_owned(),
    ];
    write_lines(&log, &rest, true);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 3, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    stop(&s, &mut child);
    assert_eq!(
        read_lines(&s.path("out.log")),
        ["ready", "a line the runtime split in two", "done"],
        "{}",
        s.stderr()
    );
}
