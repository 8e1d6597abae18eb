//! Lines go in and come out complete, in order, with bad input handled.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[test]
fn file_to_file_100k_lines_complete_and_in_order() {
    let s = Scratch::new();
    let input = fixture_lines(100_000, 1);
    write_lines(&s.path("in.log"), &input, false);
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  in:\n    type: file\n    include: ['{dir}/in.log']\n    exit_on_eof: true\n\
         sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {dir}/out/out.log\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let status = wait_exit(&s, &mut child, Duration::from_secs(120));
    assert!(status.success(), "{status}\n{}", s.stderr());
    let output = read_lines(&s.path("out/out.log"));
    assert_eq!(output.len(), input.len());
    assert!(output == input, "output differs from input");
}

#[test]
fn stdin_to_file_with_bad_lines_kept_and_counted() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  in:\n    type: stdin\n    max_line_bytes: 1000\n\
         sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {dir}/out.log\n",
    );
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    let input = fixture_lines(10_000, 2);
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in &input[..5000] {
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.write_all(b"bad \xff\xfe bytes\n").unwrap();
        stdin.write_all(&vec![b'x'; 5000]).unwrap();
        stdin.write_all(b"\n").unwrap();
        for line in &input[5000..] {
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.write_all(b"last line without newline").unwrap();
    } // EOF
    let status = wait_exit(&s, &mut child, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", s.stderr());
    let output = read_lines(&s.path("out.log"));
    assert_eq!(output.len(), input.len() + 3);
    assert_eq!(output[..5000], input[..5000]);
    assert_eq!(output[5000], "bad \u{fffd}\u{fffd} bytes");
    assert_eq!(output[5001], "x".repeat(1000));
    assert_eq!(output[5002..10_002], input[5000..]);
    assert_eq!(output[10_002], "last line without newline");
    let stderr = s.stderr();
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(stderr.contains("invalid UTF-8"), "{stderr}");
    assert!(
        stderr.contains("lines_modified{reason=truncated}=1"),
        "{stderr}"
    );
}

#[test]
fn a_stream_of_bad_lines_is_counted_in_full_and_warned_about_once() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  in:\n    type: stdin\n\
         sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n",
    );
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    {
        let mut stdin = child.stdin.take().unwrap();
        // Many batches' worth, each line with invalid UTF-8.
        for i in 0..20_000 {
            stdin
                .write_all(format!("bad line {i} ").as_bytes())
                .unwrap();
            stdin.write_all(b"\xff\n").unwrap();
        }
    }
    let status = wait_exit(&s, &mut child, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", s.stderr());
    let stderr = s.stderr();
    assert_eq!(
        logged_counter(&stderr, "lines_modified{reason=invalid_utf8}"),
        Some(20_000),
        "{stderr}"
    );
    let warnings = stderr.matches("lines modified on the way in").count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for one stream of bad lines\n{stderr}"
    );
}

#[test]
fn fan_out_writes_every_line_to_every_sink() {
    let s = Scratch::new();
    let input = fixture_lines(5_000, 3);
    write_lines(&s.path("in.log"), &input, false);
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  in:\n    type: file\n    include: ['{dir}/in.log']\n    exit_on_eof: true\n\
         sinks:\n  text:\n    type: file\n    inputs: [in]\n    path: {dir}/a.log\n\
         \x20 json:\n    type: file\n    inputs: [in]\n    path: {dir}/b.jsonl\n    encoding: json\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    assert!(wait_exit(&s, &mut child, Duration::from_secs(60)).success());
    assert_eq!(read_lines(&s.path("a.log")), input);
    let json = read_lines(&s.path("b.jsonl"));
    assert_eq!(json.len(), input.len());
    let first: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(first["message"], input[0]);
    assert_eq!(first["source"], "in");
    assert!(first["stream"].as_str().unwrap().ends_with("in.log"));
}

#[test]
fn demo_source_feeds_the_console() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  demo:\n    type: demo\n    rate: 0\n    count: 300\n    seed: 9\n\
         sinks:\n  console:\n    type: console\n    inputs: [demo]\n",
    );
    let child = s.start(&config, Stdio::null(), Stdio::piped());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 300);
    assert!(stdout
        .lines()
        .all(|l| l.starts_with('[') && l.contains(" dfs.")));
}

#[test]
fn a_file_sink_whose_file_is_rotated_away_writes_a_new_one() {
    let s = Scratch::new();
    let config = stdin_to_file_pipeline(&s);
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    let input = fixture_lines(2000, 3);
    let mut stdin = child.stdin.take().unwrap();
    for line in &input[..1000] {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    wait_for_lines(&s, &s.path("out.log"), 1000, Duration::from_secs(30));
    // logrotate's default: rename, and the writer is expected to start a new file.
    std::fs::rename(s.path("out.log"), s.path("out.log.1")).unwrap();
    for line in &input[1000..] {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let status = wait_exit(&s, &mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", s.stderr());
    assert_eq!(read_lines(&s.path("out.log.1")), input[..1000]);
    assert_eq!(read_lines(&s.path("out.log")), input[1000..]);
    s.assert_logged("the file was rotated away");
}
