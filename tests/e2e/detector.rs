//! The anomaly detector end to end: `train` on normal logs, a pipeline through the
//! `deepsentry` transform, `eval` on labelled logs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use deepsentry_source_demo::HdfsGenerator;

use crate::common::*;

const KEY: &str = r"blk_-?\d+";

/// A model trained once by the binary on the demo generator's normal sessions.
fn model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let lines: Vec<String> = normal_hdfs_lines(5, 6000);
            write_lines(&dir.path().join("normal.log"), &lines, false);
            let out = dir.path().join("model");
            let output = Command::new(bin())
                .args(["train", "--session-key", KEY, "--input"])
                .arg(dir.path().join("normal.log"))
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(stdout.contains("templates"), "{stdout}");
            assert!(stdout.contains("threshold floor"), "{stdout}");
            (dir, out)
        })
        .1
}

#[test]
fn pipeline_enriches_every_event_and_writes_alerts() {
    let s = Scratch::new();
    let generated: Vec<_> = HdfsGenerator::new(77, 0.1, 8).take(4000).collect();
    let lines: Vec<String> = generated.iter().map(|l| l.text.clone()).collect();
    write_lines(&s.path("in.log"), &lines, false);
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  app:\n    type: file\n    include: ['{{dir}}/in.log']\n    exit_on_eof: true\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [app]\n    model: {}\n    session_key: '{KEY}'\n\
             sinks:\n  all:\n    type: file\n    inputs: [detect]\n    path: {{dir}}/all.jsonl\n    encoding: json\n\
             \x20 alerts:\n    type: file\n    inputs: [detect]\n    path: {{dir}}/alerts.log\n    encoding: alert\n",
            model().display()
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let status = wait_exit(&s, &mut child, Duration::from_secs(120));
    assert!(status.success(), "{}", s.stderr());
    let events: Vec<serde_json::Value> = read_lines(&s.path("all.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sessions: std::collections::HashSet<_> = generated.iter().map(|l| &l.block).collect();
    assert_eq!(
        events.len(),
        lines.len() + sessions.len(),
        "each line, and each session's end"
    );
    for event in &events {
        for key in [
            "anomaly_score",
            "anomaly_threshold",
            "is_anomaly",
            "context_window",
            "session",
        ] {
            assert!(event.get(key).is_some(), "{key} missing in {event}");
        }
    }
    let alerts = std::fs::read_to_string(s.path("alerts.log")).unwrap();
    assert!(
        alerts.contains("Unexpected error trying to delete block"),
        "{alerts}"
    );
    assert!(alerts.contains("\nCONTEXT_WINDOW=\""), "{alerts}");
    assert!(s.stderr().contains("anomalies="), "{}", s.stderr());
}

#[test]
fn eval_reports_line_level_metrics() {
    let s = Scratch::new();
    let labelled: Vec<String> = HdfsGenerator::new(78, 0.1, 8)
        .take(5000)
        .map(|l| format!("{} {}", if l.is_fault_line { "FAULT" } else { "-" }, l.text))
        .collect();
    write_lines(&s.path("labelled.log"), &labelled, false);
    let output = Command::new(bin())
        .args([
            "eval",
            "--line-labels",
            "--json",
            "--session-key",
            KEY,
            "--model",
        ])
        .arg(model())
        .arg("--input")
        .arg(s.path("labelled.log"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["level"], "line");
    assert_eq!(report["lines"], 5000);
    assert_eq!(report["model_fits"], true, "{report}");
    let scores = &report["scores"];
    assert!(scores["recall"].as_f64().unwrap() >= 0.8, "{report}");
    assert!(
        scores["false_positive_rate"].as_f64().unwrap() <= 0.01,
        "{report}"
    );
}

#[test]
fn sequence_length_must_match_the_model() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  in:\n    type: stdin\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [in]\n    model: {}\n    sequence_length: 12\n\
             sinks:\n  out:\n    type: console\n    inputs: [detect]\n",
            model().display()
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("transforms.detect: cannot start"),
        "{stderr}"
    );
    assert!(stderr.contains("`sequence_length` is 12"), "{stderr}");
    assert!(
        stderr.contains("trained with sequence_length 10"),
        "{stderr}"
    );
    // `validate` loads the model the way `run` does and refuses the same config.
    let output = Command::new(bin())
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("transforms.detect: cannot start"),
        "{stderr}"
    );
    assert!(stderr.contains("`sequence_length` is 12"), "{stderr}");
}

#[test]
fn a_missing_model_is_named() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  in:\n    type: stdin\n\
         transforms:\n  detect:\n    type: deepsentry\n    inputs: [in]\n    model: {dir}/nope\n\
         sinks:\n  out:\n    type: console\n    inputs: [detect]\n",
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(78));
    assert!(stderr.contains("nope/model.yml"), "{stderr}");
}

/// A pipeline stdin -> deepsentry (with `settings` added) -> `out.jsonl`.
fn stdin_pipeline(s: &Scratch, settings: &str) -> PathBuf {
    s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  in:\n    type: stdin\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [in]\n    model: {}\n    session_key: '{KEY}'\n    min_samples: 0\n{settings}\
             sinks:\n  out:\n    type: file\n    inputs: [detect]\n    path: {{dir}}/out.jsonl\n    encoding: json\n",
            model().display()
        ),
    )
}

/// The first two lines of a block (one that is still being written), sent to `stdin`.
fn send_unfinished_block(stdin: &mut impl std::io::Write, seed: u64) {
    for line in HdfsGenerator::new(seed, 0.0, 1).take(2) {
        writeln!(stdin, "{}", line.text).unwrap();
    }
}

#[test]
fn a_shutdown_does_not_judge_open_sessions_but_end_of_input_does() {
    let s = Scratch::new();
    let config = stdin_pipeline(&s, "    batch_interval: 0.05\n");
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    let mut stdin = child.stdin.take().unwrap();
    send_unfinished_block(&mut stdin, 3);
    wait_for_lines(&s, &s.path("out.jsonl"), 2, Duration::from_secs(30));
    stop(&s, &mut child);
    let lines = read_lines(&s.path("out.jsonl"));
    assert_eq!(lines.len(), 2, "no session end on shutdown");
    s.assert_logged("open sessions are not judged");

    // The same lines, then end of input: the unfinished block is judged, and flagged.
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    send_unfinished_block(&mut child.stdin.take().unwrap(), 3);
    assert!(wait_exit(&s, &mut child, Duration::from_secs(30)).success());
    let events = read_lines(&s.path("out.jsonl"));
    assert_eq!(events.len(), 5);
    let end: serde_json::Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(end["session_end"], true);
    assert_eq!(end["is_anomaly"], true, "{end}");
}

#[test]
fn a_session_whose_logs_stop_is_judged_without_further_input() {
    let s = Scratch::new();
    let config = stdin_pipeline(&s, "    session_ttl: 1\n    batch_interval: 0.1\n");
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    let mut stdin = child.stdin.take().unwrap();
    send_unfinished_block(&mut stdin, 4);
    // Nothing more arrives, and standard input stays open: the TTL alone ends the block.
    wait_for_lines(&s, &s.path("out.jsonl"), 3, Duration::from_secs(30));
    let end: serde_json::Value =
        serde_json::from_str(&read_lines(&s.path("out.jsonl"))[2]).unwrap();
    assert_eq!(end["session_end"], true);
    assert!(end["message"].as_str().unwrap().contains("(idle)"), "{end}");
    stop(&s, &mut child);
    drop(stdin);
}

/// Demo lines with `benign` (a new INFO message, dated like its neighbours) after every
/// `every`-th line from line `from` on.
fn with_new_message(lines: Vec<String>, from: usize, every: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        let stamp = line[..13].to_string();
        out.push(line);
        if i >= from && i % every == 0 {
            out.push(format!(
                "{stamp} 31 INFO dfs.DataNode: Heartbeat sent to the namenode in {} ms",
                i % 97
            ));
        }
    }
    out
}

/// A file -> deepsentry -> JSON file pipeline over `input`, its state in `{dir}/data`.
fn file_pipeline(s: &Scratch, name: &str, input: &str) -> PathBuf {
    let sinks = format!(
        "  all:\n    type: file\n    inputs: [detect]\n    path: {{dir}}/{input}.jsonl\n    encoding: json\n"
    );
    scored_file_to(s, name, input, "", &sinks)
}

/// A file -> deepsentry (with `settings` added) -> `sinks` pipeline over `input`, its state in
/// `{dir}/data`.
fn scored_file_to(s: &Scratch, name: &str, input: &str, settings: &str, sinks: &str) -> PathBuf {
    s.pipeline(
        name,
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  app:\n    type: file\n    include: ['{{dir}}/{input}']\n    exit_on_eof: true\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [app]\n    model: {}\n    session_key: '{KEY}'\n{settings}\
             sinks:\n{sinks}",
            model().display()
        ),
    )
}

fn scored_events(s: &Scratch, config: &Path, output: &str) -> Vec<serde_json::Value> {
    let mut child = s.start(config, Stdio::null(), Stdio::null());
    let status = wait_exit(s, &mut child, Duration::from_secs(120));
    assert!(status.success(), "{}", s.stderr());
    read_lines(&s.path(output))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `n` normal HDFS lines of the generator seeded with `seed`.
fn normal_hdfs_lines(seed: u64, n: usize) -> Vec<String> {
    HdfsGenerator::new(seed, 0.0, 8)
        .take(n)
        .map(|l| l.text)
        .collect()
}

fn is_heartbeat(event: &serde_json::Value) -> bool {
    event["message"]
        .as_str()
        .unwrap()
        .contains("Heartbeat sent")
}

#[test]
fn a_benign_new_message_is_learned_and_a_new_error_is_still_flagged() {
    let s = Scratch::new();
    let normal: Vec<String> = normal_hdfs_lines(91, 3000);
    let mut lines = with_new_message(normal, 300, 7);
    let stamp = lines[2500][..13].to_string();
    lines.insert(
        2500,
        format!("{stamp} 19 ERROR dfs.FSDataset: Disk /data/3 failed, volume removed from service"),
    );
    write_lines(&s.path("in.log"), &lines, false);
    let events = scored_events(&s, &file_pipeline(&s, "p.yml", "in.log"), "in.log.jsonl");
    assert!(events.iter().all(|e| e["anomaly_reason"].is_string()));
    let heartbeats: Vec<&serde_json::Value> = events.iter().filter(|e| is_heartbeat(e)).collect();
    assert!(heartbeats.len() > 300, "{}", heartbeats.len());
    let flagged: Vec<usize> = heartbeats
        .iter()
        .enumerate()
        .filter(|(_, e)| e["is_anomaly"] == true)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !flagged.is_empty() && flagged.len() <= 5,
        "the new message is flagged a few times at most: {flagged:?}"
    );
    assert!(flagged.iter().all(|&i| i < 5), "{flagged:?}");
    assert_eq!(heartbeats[flagged[0]]["anomaly_reason"], "new_template");
    assert_eq!(
        heartbeats[flagged[0]]["template"],
        "<NUM> INFO dfs.DataNode: Heartbeat sent to the namenode in <NUM> ms"
    );
    let error = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("Disk /data/3 failed")
        })
        .unwrap();
    assert_eq!(error["is_anomaly"], true, "{error}");
    assert_eq!(error["anomaly_reason"], "new_template", "{error}");
    assert_eq!(error["alert"], true, "{error}");
    assert_eq!(error["severity"], "error", "{error}");
    // Learned templates are kept in the data directory.
    let state = std::fs::read_to_string(s.path("data/detect/vocabulary.json")).unwrap();
    assert!(state.contains("Heartbeat sent"), "{state}");
}

#[test]
fn a_restart_keeps_the_templates_it_learned() {
    let s = Scratch::new();
    let normal = |seed| -> Vec<String> { normal_hdfs_lines(seed, 1500) };
    write_lines(
        &s.path("first.log"),
        &with_new_message(normal(92), 100, 5),
        false,
    );
    write_lines(
        &s.path("second.log"),
        &with_new_message(normal(93), 100, 5),
        false,
    );
    let first = scored_events(
        &s,
        &file_pipeline(&s, "first.yml", "first.log"),
        "first.log.jsonl",
    );
    assert!(first
        .iter()
        .any(|e| is_heartbeat(e) && e["is_anomaly"] == true));
    // Another run with the same data directory: the message is known, never new again.
    let second = scored_events(
        &s,
        &file_pipeline(&s, "second.yml", "second.log"),
        "second.log.jsonl",
    );
    let heartbeats: Vec<_> = second.iter().filter(|e| is_heartbeat(e)).collect();
    assert!(heartbeats.len() > 200);
    assert!(
        heartbeats.iter().all(|e| e["is_anomaly"] == false),
        "{:?}",
        heartbeats.iter().find(|e| e["is_anomaly"] == true)
    );
    s.assert_logged("templates learned online restored");
}

#[test]
fn templates_past_the_vocabularys_bound_are_evicted_while_sessions_hold_them() {
    let s = Scratch::new();
    // Every line a template of its own (random words the normalizer cannot mask), in many
    // interleaved sessions, so windows hold templates the vocabulary has already forgotten.
    let mut rng = deepsentry_core::rng::SplitMix64::new(11);
    let lines: Vec<String> = (0..30_000)
        .map(|i| {
            let word: String = (0..12)
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect();
            format!(
                "081109 203615 148 INFO request for blk_{} served by worker {word}",
                i % 500
            )
        })
        .collect();
    write_lines(&s.path("in.log"), &lines, false);
    let config = scored_file_to(
        &s,
        "p.yml",
        "in.log",
        "    max_templates: 1000\n",
        "  out:\n    type: blackhole\n    inputs: [detect]\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let status = wait_exit(&s, &mut child, Duration::from_secs(300));
    let stderr = s.stderr();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Every line scored, and each of the 500 sessions ended at the end of input.
    assert_eq!(
        component_counter(&stderr, "detect", "events_scored"),
        Some(30_500),
        "{stderr}"
    );
    let evicted = component_counter(&stderr, "detect", "templates_evicted").unwrap_or(0);
    assert!(evicted >= 28_000, "{evicted}\n{stderr}");
}

/// A sidecar's log: requests of three kinds, five steps each in a fixed order, four at a time
/// interleaved in one stream, each request's lines tagged `web[pid]`. `swap` makes request
/// `swap` do its steps 2 and 3 the wrong way round.
fn interleaved_requests(seed: u64, requests: usize, swap: Option<usize>) -> Vec<String> {
    const STEPS: [[&str; 5]; 3] = [
        [
            "accepted GET /cart from 10.0.0.{n}",
            "session loaded for user {n}",
            "cart read with {n} items",
            "prices computed in {n} ms",
            "response 200 sent, {n} bytes",
        ],
        [
            "accepted POST /order from 10.0.0.{n}",
            "order validated for user {n}",
            "stock reserved for {n} items",
            "payment authorized in {n} ms",
            "order confirmation queued as {n}",
        ],
        [
            "accepted GET /health from 10.0.0.{n}",
            "database ping took {n} ms",
            "cache ping took {n} ms",
            "queue depth is {n}",
            "health report sent, {n} bytes",
        ],
    ];
    let mut rng = deepsentry_core::rng::SplitMix64::new(seed);
    let mut open: Vec<(usize, usize, usize)> = Vec::new(); // (request, kind, step)
    let mut started = 0;
    let mut lines = Vec::new();
    while started < requests || !open.is_empty() {
        while open.len() < 4 && started < requests {
            open.push((started, (rng.next_u64() % 3) as usize, 0));
            started += 1;
        }
        let pick = (rng.next_u64() % open.len() as u64) as usize;
        let (request, kind, step) = open[pick];
        let shown = match (swap == Some(request), step) {
            (true, 1) => 2,
            (true, 2) => 1,
            _ => step,
        };
        let n = rng.next_u64() % 900 + 10;
        let second = lines.len() / 20;
        lines.push(format!(
            "2024-03-01T10:{:02}:{:02}Z web[{}]: {}",
            second / 60 % 60,
            second % 60,
            20_000 + request,
            STEPS[kind][shown].replace("{n}", &n.to_string())
        ));
        if step == 4 {
            open.swap_remove(pick);
        } else {
            open[pick].2 += 1;
        }
    }
    lines
}

/// A file (`app.log`) -> deepsentry with `model` and no session key (the model's own) ->
/// JSON file (`scored.jsonl`) pipeline, its state in `{dir}/data`.
fn app_pipeline(s: &Scratch, model: &Path) -> PathBuf {
    s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  app:\n    type: file\n    include: ['{{dir}}/app.log']\n    exit_on_eof: true\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [app]\n    model: {}\n\
             sinks:\n  all:\n    type: file\n    inputs: [detect]\n    path: {{dir}}/scored.jsonl\n    encoding: json\n",
            model.display()
        ),
    )
}

/// `deepsentry train --no-replay` on 1,200 of [`interleaved_requests`]' normal requests, with
/// no session key (found by itself): the model (`model`) and what training logged.
fn train_on_interleaved_requests(s: &Scratch) -> (PathBuf, String) {
    train_on(s, &interleaved_requests(1, 1200, None))
}

/// `deepsentry train --no-replay` on `lines` (written to `normal.log`) with the defaults: the
/// model (`model`) and what training logged.
fn train_on(s: &Scratch, lines: &[String]) -> (PathBuf, String) {
    write_lines(&s.path("normal.log"), lines, false);
    let out = s.path("model");
    let output = Command::new(bin())
        .args(["train", "--no-replay", "--input"])
        .arg(s.path("normal.log"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (out, stderr)
}

#[test]
fn a_model_of_another_system_says_it_does_not_fit_and_learns_the_logs_novelty() {
    // The built-in model (HDFS) on an app's log: every template is new to it.
    let s = Scratch::new();
    let lines: Vec<String> = interleaved_requests(2, 300, None)
        .iter()
        .map(|l| format!("- {l}"))
        .collect();
    write_lines(&s.path("app.log"), &lines, false);
    let eval = |json: bool| {
        let mut command = Command::new(bin());
        command.args(["eval", "--line-labels", "--model", "builtin", "--input"]);
        command.arg(s.path("app.log"));
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&eval(true)).unwrap();
    assert_eq!(report["model_fits"], false, "{report}");
    assert_eq!(report["unknown_template_lines"], 1500, "{report}");
    // Its new templates are learned as they come, not flagged line by line.
    let flagged = report["lines_flagged"].as_u64().unwrap();
    assert!(flagged <= 15, "{flagged} of 1500 lines flagged: {report}");
    assert!(
        eval(false).contains("the model does not fit this log"),
        "the table says so"
    );
}

/// `deepsentry eval --line-labels --json` of `input` with `model`: its report and what it
/// logged.
fn eval_line_labels(model: &Path, input: &Path) -> (serde_json::Value, String) {
    let output = run_ok(
        Command::new(bin())
            .args(["eval", "--line-labels", "--json", "--model"])
            .arg(model)
            .arg("--input")
            .arg(input),
    );
    let report = serde_json::from_slice(&output.stdout).unwrap();
    (report, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `HH:MM:SS` of the `i`-th second after 10:00.
fn clock_at(i: usize) -> String {
    format!("{:02}:{:02}:{:02}", 10 + i / 3600, i / 60 % 60, i % 60)
}

/// Trains on 1,200 of `lines` (seed 1) and replays 400 others (seed 2), labelled normal, with
/// `new_error` labelled anomalous halfway: it is flagged, and at most two lines are.
fn a_new_error_is_found_among(lines: fn(u64, usize) -> Vec<String>, new_error: &str) {
    let s = Scratch::new();
    let (model, _) = train_on(&s, &lines(1, 1200));
    let mut replay: Vec<String> = lines(2, 400).iter().map(|l| format!("- {l}")).collect();
    replay.insert(200, format!("A {new_error}"));
    write_lines(&s.path("replay.log"), &replay, false);
    let (report, _) = eval_line_labels(&model, &s.path("replay.log"));
    assert_eq!(report["scores"]["recall"], 1.0, "{report}");
    assert!(report["lines_flagged"].as_u64().unwrap() <= 2, "{report}");
}

/// An app's routine lines and, one line in 40, its one error statement, which names a user
/// in letters the normalizer keeps as a word, nearly every time a new one (`payment declined
/// for user qxkvzt`).
fn lines_naming_users(seed: u64, n: usize) -> Vec<String> {
    let mut rng = deepsentry_core::rng::SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let message = match rng.next_u64() % 40 {
                0 => {
                    let name: String = (0..6)
                        .map(|_| char::from(b'a' + (rng.next_u64() % 26) as u8))
                        .collect();
                    format!("ERROR payment declined for user {name}")
                }
                1..=20 => format!("INFO order {} shipped", rng.next_u64() % 90_000),
                _ => format!("INFO cart {} updated", rng.next_u64() % 90_000),
            };
            format!("2024-03-01T{}Z shop[7]: {message}", clock_at(i))
        })
        .collect()
}

#[test]
fn new_values_of_a_field_do_not_make_a_new_error_statement_routine() {
    // Training's later half brings a new user name in nearly every error line. Counted as
    // new statements, they would teach the model that new error statements are routine.
    a_new_error_is_found_among(
        lines_naming_users,
        "2024-03-01T10:03:20Z shop[7]: ERROR database connection lost",
    );
}

/// A service logging in Chinese: its statements, numbers glued to their words.
fn chinese_lines(seed: u64, n: usize) -> Vec<String> {
    const STATEMENTS: [&str; 5] = [
        "INFO 用户{}登录成功",
        "INFO 订单{}已创建",
        "INFO 订单{}支付完成",
        "WARN 接口响应缓慢，耗时{}毫秒",
        "ERROR 用户{}登录失败，密码错误",
    ];
    let mut rng = deepsentry_core::rng::SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let statement = match rng.next_u64() % 50 {
                0 => STATEMENTS[4],
                1..=3 => STATEMENTS[3],
                k => STATEMENTS[(k % 3) as usize],
            };
            let message = statement.replace("{}", &(rng.next_u64() % 90_000 + 1000).to_string());
            format!("2024-03-01 {} {message}", clock_at(i))
        })
        .collect()
}

#[test]
fn a_new_statement_in_a_language_without_spaces_is_news() {
    // Each message is one "word" with numbers glued in: masked whole, every message of a
    // level would be one template, and a new error the known one.
    a_new_error_is_found_among(
        chinese_lines,
        "2024-03-01 10:03:20 ERROR 数据库连接中断，正在重试第2次",
    );
}

/// A shop's log naming its customers by first and last name, error lines included: two
/// words the normalizer keeps, in as many pairs as there are customers.
fn lines_naming_customers(seed: u64, n: usize) -> Vec<String> {
    const FIRST: [&str; 8] = [
        "Jane", "John", "Maria", "Wei", "Ahmed", "Olga", "Pedro", "Yuki",
    ];
    const LAST: [&str; 8] = [
        "Smith", "Garcia", "Chen", "Khan", "Petrova", "Silva", "Tanaka", "Kim",
    ];
    let mut rng = deepsentry_core::rng::SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let customer = format!(
                "{} {}",
                FIRST[(rng.next_u64() % 8) as usize],
                LAST[(rng.next_u64() % 8) as usize]
            );
            let message = match rng.next_u64() % 20 {
                0 => format!("ERROR card declined for customer \"{customer}\""),
                1..=9 => format!("INFO customer \"{customer}\" signed in"),
                _ => format!("INFO order {} placed", rng.next_u64() % 90_000),
            };
            format!("2024-03-01 {} {message}", clock_at(i))
        })
        .collect()
}

#[test]
fn new_names_of_two_words_do_not_make_a_new_error_statement_routine() {
    // Folded one word at a time, most first-and-last-name pairs stayed templates of their
    // own, and training counted each new pair as a new error statement.
    a_new_error_is_found_among(
        lines_naming_customers,
        "2024-03-01 10:03:20 ERROR ledger write failed, retrying",
    );
}

/// A web server's combined access log: requests for a few pages, mostly answered `200`, some
/// `304`, `302` or `404`, never with a server error.
fn access_lines(seed: u64, n: usize) -> Vec<String> {
    const PATHS: [&str; 4] = ["/", "/login", "/api/users/{}", "/static/img/{}.png"];
    const STATUSES: [u16; 10] = [200, 200, 200, 200, 200, 200, 304, 304, 302, 404];
    let mut rng = deepsentry_core::rng::SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let path = PATHS[(rng.next_u64() % 4) as usize]
                .replace("{}", &(rng.next_u64() % 90_000).to_string());
            let status = STATUSES[(rng.next_u64() % 10) as usize];
            format!(
                "10.0.{}.{} - - [01/Mar/2024:{} +0000] \"GET {path} HTTP/1.1\" {status} {} \"-\" \"curl/8.4.0\"",
                rng.next_u64() % 256,
                rng.next_u64() % 256,
                clock_at(i),
                rng.next_u64() % 90_000 + 100,
            )
        })
        .collect()
}

#[test]
fn a_server_error_in_an_access_log_is_news() {
    // Masked as a number, the status made a server error the known request line.
    a_new_error_is_found_among(
        access_lines,
        r#"10.0.3.7 - - [01/Mar/2024:10:03:20 +0000] "GET /login HTTP/1.1" 503 19 "-" "curl/8.4.0""#,
    );
}

#[test]
fn train_finds_the_session_key_of_an_interleaved_stream_and_the_pipeline_uses_it() {
    let s = Scratch::new();
    let (out, stderr) = train_on_interleaved_requests(&s);
    assert!(
        !out.join("replay.log").exists() && out.join("detector.bpk").exists(),
        "--no-replay keeps no training lines in the bundle"
    );
    let model_yml = std::fs::read_to_string(out.join("model.yml")).unwrap();
    assert!(
        model_yml.contains("session_key_found: program[pid]"),
        "{stderr}\n{model_yml}"
    );
    // The hold-out (the log's last lines) takes up a few requests in the middle; they are
    // scored after their earlier steps, not as requests that began with a later step, which
    // would be the highest held-out scores and lift the floor over such anomalies.
    let highest: f64 = model_yml
        .lines()
        .find_map(|l| l.trim().strip_prefix("score_max:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(highest < 5.0, "{model_yml}");

    let swapped = 150;
    write_lines(
        &s.path("app.log"),
        &interleaved_requests(2, 300, Some(swapped)),
        false,
    );
    // No session_key: the model's own key.
    let config = app_pipeline(&s, &out);
    let events = scored_events(&s, &config, "scored.jsonl");
    let lines: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["session_end"].as_bool() != Some(true))
        .collect();
    assert_eq!(lines.len(), 1500);
    assert!(
        lines
            .iter()
            .all(|e| e["session"].as_str().unwrap().starts_with("web[")),
        "every line is in its request's session"
    );
    let tag = format!("web[{}]", 20_000 + swapped);
    let flagged_in = |swapped_request: bool| {
        lines
            .iter()
            .filter(|e| (e["session"].as_str() == Some(tag.as_str())) == swapped_request)
            .filter(|e| e["is_anomaly"].as_bool() == Some(true))
            .count()
    };
    assert!(
        flagged_in(true) >= 1,
        "the request that did its steps out of order is flagged"
    );
    assert!(
        flagged_in(false) <= 15,
        "{} of 1495 normal lines flagged",
        flagged_in(false)
    );
}

#[test]
fn the_shipped_sidecar_scores_an_apps_output_and_flags_its_stack_trace_once() {
    let s = Scratch::new();
    let (model, _) = train_on_interleaved_requests(&s);

    // The app's output, with a logged failure and its stack trace halfway through.
    let mut lines = interleaved_requests(2, 200, None);
    let trace = [
        "2024-03-01T10:00:30Z web[20050]: payment gateway call failed",
        "java.lang.IllegalStateException: gateway closed the connection",
        "\tat com.example.shop.Payments.authorize(Payments.java:88)",
        "\tat com.example.shop.Orders.place(Orders.java:41)",
        "Caused by: java.net.SocketException: Connection reset",
        "\tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:186)",
        "\t... 2 more",
    ];
    let at = lines.len() / 2;
    lines.splice(at..at, trace.iter().map(|l| l.to_string()));
    let input = lines.join("\n") + "\n";

    run_sidecar(&s, &model.display().to_string(), &input);
    assert!(!s.stderr().contains("does not fit"), "{}", s.stderr());

    let console = s.console();
    let scored: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("] Normal - score: ") || l.contains("] ANOMALY - score: "))
        .collect();
    let traced: Vec<&&str> = scored
        .iter()
        .filter(|l| l.contains("payment gateway call failed"))
        .collect();
    assert_eq!(traced.len(), 1, "the trace is one event:\n{console}");
    assert!(traced[0].contains("ANOMALY"), "{}", traced[0]);
    assert!(
        !scored
            .iter()
            .any(|l| l.contains("Payments.java") && !l.contains("payment gateway call failed")),
        "no frame is an event of its own:\n{console}"
    );
    let flagged = scored.iter().filter(|l| l.contains("ANOMALY")).count();
    assert!(flagged <= 5, "{flagged} events flagged:\n{console}");

    // The built-in model (HDFS) on this app says that it does not fit.
    let builtin = Scratch::new();
    run_sidecar(&builtin, "builtin", &input);
    builtin.assert_logged("the model does not fit this log");
}

/// [`interleaved_requests`] with a handled failure logged with its stack trace every 50
/// lines, as a JVM service writes them.
fn requests_with_traces(seed: u64, requests: usize) -> Vec<String> {
    with_logged_failures(
        seed,
        requests,
        |line| {
            let stamp = line.split(' ').next().unwrap_or_default();
            vec![
                format!("{stamp} web[19999]: upstream call failed, will retry"),
                "java.net.SocketTimeoutException: Read timed out".into(),
                "\tat java.net.SocketInputStream.read(SocketInputStream.java:186)".into(),
                "\tat com.example.shop.Http.call(Http.java:77)".into(),
            ]
        },
        |line| line,
    )
}

/// [`interleaved_requests`] written by `written`, with the lines `failure` makes (of the line
/// after them) before every 50th: a failure logged with its trace.
fn with_logged_failures(
    seed: u64,
    requests: usize,
    failure: impl Fn(&str) -> Vec<String>,
    written: impl Fn(String) -> String,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, line) in interleaved_requests(seed, requests, None)
        .into_iter()
        .enumerate()
    {
        if i % 50 == 25 {
            lines.extend(failure(&line));
        }
        lines.push(written(line));
    }
    lines
}

/// Runs `lines` through the sidecar with `model` and checks that the failures they log with
/// a trace (`upstream call failed, will retry`), which training saw, are normal; returns the
/// console.
fn sidecar_finds_the_logged_failures_normal(s: &Scratch, model: &Path, lines: &[String]) -> String {
    run_sidecar(s, &model.display().to_string(), &(lines.join("\n") + "\n"));
    let console = s.console();
    let failures: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("will retry"))
        .collect();
    assert!(failures.len() >= 10, "{console}");
    assert!(
        failures.iter().all(|l| l.contains("] Normal - score: ")),
        "a trace training saw is normal:\n{}",
        failures.join("\n")
    );
    console
}

#[test]
fn a_model_trained_on_an_apps_traces_knows_them_as_the_sidecar_reads_them() {
    let s = Scratch::new();
    let (model, stderr) = train_on(&s, &requests_with_traces(1, 1200));
    // Training joins each trace into one event, as the sidecar's source does.
    assert!(stderr.contains("the input holds stack traces"), "{stderr}");

    sidecar_finds_the_logged_failures_normal(&s, &model, &requests_with_traces(2, 300));

    // A source that does not join them hands the model lone frames it never saw: it says so,
    // and counts them.
    let split = Scratch::new();
    write_lines(&split.path("app.log"), &requests_with_traces(3, 300), false);
    scored_events(&split, &app_pipeline(&split, &model), "scored.jsonl");
    split.assert_logged("set `multiline: any` on the source");
    split.assert_logged("lone_trace_lines=");
    // The same source with the lines of a model trained on joined traces: nothing to say.
    assert!(!s.stderr().contains("set `multiline: any` on the source"));

    // The bundle says so, and an update on lines without a trace keeps saying so.
    let joined = |dir: &Path| {
        std::fs::read_to_string(dir.join("model.yml"))
            .unwrap()
            .contains("joined_lines: true")
    };
    assert!(joined(&model));
    write_lines(
        &s.path("plain.log"),
        &interleaved_requests(4, 300, None),
        false,
    );
    let updated = s.path("updated");
    run_ok(
        Command::new(bin())
            .args(["train", "--from"])
            .arg(&model)
            .arg("--input")
            .arg(s.path("plain.log"))
            .arg("--out")
            .arg(&updated),
    );
    assert!(joined(&updated));
}

/// [`interleaved_requests`] as a Python app with the default logging format writes them, with
/// no timestamp, and every 50 lines a logged failure with its traceback.
fn python_requests_with_tracebacks(seed: u64, requests: usize) -> Vec<String> {
    with_logged_failures(
        seed,
        requests,
        |_| {
            [
                "ERROR:shop.http:upstream call failed, will retry",
                "Traceback (most recent call last):",
                "  File \"/app/shop/http.py\", line 77, in call",
                "    resp = sock.read()",
                "TimeoutError: timed out",
            ]
            .map(String::from)
            .to_vec()
        },
        |line| {
            let (_, message) = line.split_once(' ').unwrap_or_default();
            format!("INFO:shop.{message}")
        },
    )
}

#[test]
fn a_python_apps_tracebacks_are_read_by_the_sidecar_as_training_read_them() {
    // Without timestamps, Java's preset would leave each `Traceback` apart from the line that
    // logged it; training and the sidecar both join with `any`.
    let s = Scratch::new();
    let (model, stderr) = train_on(&s, &python_requests_with_tracebacks(1, 1200));
    assert!(stderr.contains("language=Python"), "{stderr}");
    let console = sidecar_finds_the_logged_failures_normal(
        &s,
        &model,
        &python_requests_with_tracebacks(2, 300),
    );
    assert!(!console.contains("\"Traceback"), "{console}");
    assert!(
        !s.stderr().contains("set `multiline: any`"),
        "{}",
        s.stderr()
    );
}

#[test]
fn eval_with_line_labels_reads_traces_as_the_model_was_trained_on_them() {
    let s = Scratch::new();
    let (model, _) = train_on(&s, &requests_with_traces(1, 1200));
    // Every line labelled normal, but one failure the training never showed.
    let mut lines: Vec<String> = requests_with_traces(2, 300)
        .into_iter()
        .map(|l| format!("- {l}"))
        .collect();
    let at = lines.len() / 2;
    let stamp = lines[at].split(' ').nth(1).unwrap_or_default().to_string();
    lines.insert(
        at,
        format!("FAIL {stamp} web[19998]: payment ledger corrupted, refusing writes"),
    );
    write_lines(&s.path("labelled.log"), &lines, false);
    let (report, stderr) = eval_line_labels(&model, &s.path("labelled.log"));
    // The model knows its traces joined: the replay joins them too, and each of a trace's
    // lines has its event's verdict.
    assert!(stderr.contains("the input holds stack traces"), "{stderr}");
    let scores = &report["scores"];
    assert_eq!(report["lines"], lines.len(), "{report}");
    assert_eq!(scores["tp"], 1, "{report}");
    let flagged = scores["fp"].as_u64().unwrap();
    assert!(flagged <= 5, "{flagged} normal lines flagged: {report}");
}

#[test]
fn the_built_in_model_on_an_apps_log_stays_quiet_after_a_restart() {
    // The sidecar's default: the built-in model (HDFS, keyed by block id) on an app's output,
    // where its key finds nothing, so the app's lines are one stream. A restart takes back
    // what the first run learned (the same `data_dir`).
    let s = Scratch::new();
    let input = interleaved_requests(3, 400, None).join("\n") + "\n";
    let flagged = || {
        s.console()
            .lines()
            .filter(|l| l.contains("] ANOMALY - score: "))
            .count()
    };
    run_sidecar(&s, "builtin", &input);
    let first = flagged();
    run_sidecar(&s, "builtin", &input);
    let second = flagged();
    assert!(
        first <= 5 && second <= 5,
        "{first} lines flagged, then {second} after the restart:\n{}",
        s.console()
    );
}

#[test]
fn deepsentry_sidecar_scores_a_pipe_line_by_line() {
    use std::io::Write;
    let s = Scratch::new();
    let lines: Vec<String> = normal_hdfs_lines(9, 200);
    let mut child = Command::new(bin())
        .arg("sidecar")
        .current_dir(s.dir.path())
        .env("ANOMALY_MODEL", model())
        .env(
            "DEEPSENTRY_API_ADDRESS",
            format!("127.0.0.1:{}", free_port()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("<built-in sidecar pipeline>"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let scored: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("score: ") && !l.contains("\"session "))
        .collect();
    assert_eq!(scored.len(), lines.len(), "{stdout}");
    assert!(scored[0].contains(&lines[0]), "{}", scored[0]);
}

/// Runs the shipped `sidecar.yml` with `model` on `input` to its end.
fn run_sidecar(s: &Scratch, model: &str, input: &str) {
    let child =
        s.start_shipped_with_stdin("sidecar.yml", &[("ANOMALY_MODEL", model)], Stdio::piped());
    let status = s.feed_to_end(child, input.as_bytes(), Duration::from_secs(60));
    assert!(status.success(), "{}", s.stderr());
}

#[test]
fn train_from_keeps_the_known_templates_and_learns_the_new_ones() {
    let s = Scratch::new();
    let normal: Vec<String> = normal_hdfs_lines(17, 3000);
    write_lines(&s.path("new.log"), &with_new_message(normal, 0, 7), false);
    let out = s.path("updated");
    let output = Command::new(bin())
        .args(["train", "--from"])
        .arg(model())
        .arg("--input")
        .arg(s.path("new.log"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let read = |dir: &Path| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("model.yml")).unwrap()).unwrap()
    };
    let (before, after) = (read(model()), read(&out));
    let templates = |m: &serde_yaml::Value| -> Vec<String> {
        m["templates"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    let (known, updated) = (templates(&before), templates(&after));
    assert_eq!(
        &updated[..known.len()],
        &known[..],
        "known templates keep their classes"
    );
    assert!(
        updated[known.len()..]
            .iter()
            .any(|t| t.contains("Heartbeat sent")),
        "{updated:?}"
    );
    assert_eq!(
        after["training"]["session_key"],
        before["training"]["session_key"]
    );
    assert_eq!(
        after["training"]["updated_from"].as_str(),
        Some(model().display().to_string().as_str())
    );
    assert!(after["training"]["earlier_lines"].as_u64().unwrap() >= 6000);

    // Both bundles keep a sample of their training lines; the update's holds new lines and
    // some of the old sample, which it trained on again.
    let replay = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("replay.log"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let (old_sample, new_sample) = (replay(model()), replay(&out));
    assert!(!old_sample.is_empty() && new_sample.len() <= 2000);
    assert!(
        new_sample.iter().any(|l| l.contains("Heartbeat sent")),
        "the new logs are in the update's sample"
    );
    assert!(
        new_sample.iter().any(|l| old_sample.contains(l)),
        "and so are some of the old ones"
    );

    // The updated model knows the new message: it is never new, and the stream stays quiet.
    let fresh: Vec<String> = normal_hdfs_lines(18, 2000);
    write_lines(&s.path("app.log"), &with_new_message(fresh, 0, 7), false);
    let config = app_pipeline(&s, &out);
    let events = scored_events(&s, &config, "scored.jsonl");
    let heartbeats: Vec<&serde_json::Value> = events.iter().filter(|e| is_heartbeat(e)).collect();
    assert!(heartbeats.len() > 250, "{}", heartbeats.len());
    assert!(
        heartbeats
            .iter()
            .all(|e| e["anomaly_reason"] != "new_template"),
        "the message the update learned is not new"
    );
    let flagged = events
        .iter()
        .filter(|e| e["is_anomaly"].as_bool() == Some(true))
        .count();
    assert!(
        flagged * 100 <= events.len(),
        "{flagged} of {} normal events flagged",
        events.len()
    );
}

#[test]
fn a_model_retrained_in_the_background_is_swapped_in_without_losing_reordering_or_rescoring_events()
{
    let s = Scratch::new();
    let normal: Vec<String> = normal_hdfs_lines(23, 20_000);
    // A benign message the shipped model never saw, every few lines.
    let lines = with_new_message(normal, 0, 7);
    std::fs::write(s.path("app.log"), "").unwrap();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  app:\n    type: file\n    include: ['{{dir}}/app.log']\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [app]\n    model: {}\n    session_key: '{KEY}'\n    retrain_every: 3s\n\
             sinks:\n  all:\n    type: file\n    inputs: [detect]\n    path: {{dir}}/scored.jsonl\n    encoding: json\n",
            model().display()
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let swapped = || s.stderr().contains("retrained model swapped in");
    // A steady stream: a first stretch to retrain on, then a chunk every 200 ms while the
    // model retrains, is swapped in, and for a while after.
    let mut written = 2500;
    write_lines(&s.path("app.log"), &lines[..written], true);
    let started = std::time::Instant::now();
    let mut after_swap = None;
    while written < lines.len() && after_swap.is_none_or(|at| written < at + 1000) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no swap in 300 s: {}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
        let end = (written + 50).min(lines.len());
        write_lines(&s.path("app.log"), &lines[written..end], true);
        written = end;
        if after_swap.is_none() && swapped() {
            after_swap = Some(written);
        }
    }
    assert!(after_swap.is_some(), "{}", s.stderr());
    let scored = s.path("scored.jsonl");
    let lines_out = |events: &[serde_json::Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["session_end"].as_bool() != Some(true))
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let read = || -> Vec<serde_json::Value> {
        read_lines(&scored)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || lines_out(&read()).len()
            >= written),
        "{}",
        s.stderr()
    );
    stop(&s, &mut child);
    assert_eq!(
        lines_out(&read()),
        lines[..written],
        "every line once, in order, across the swap"
    );
    let retrained = std::fs::read_to_string(s.path("data/detect/retrain/model/model.yml")).unwrap();
    assert!(
        retrained.contains("Heartbeat sent to the namenode"),
        "the retrained model learned the new message from the recent lines"
    );

    // A restart goes on with the retrained model.
    let before = s.stderr().len();
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let loaded = |s: &Scratch| {
        s.stderr()[before..]
            .lines()
            .find(|l| l.contains("anomaly model loaded"))
            .map(String::from)
    };
    assert!(
        wait_until(Duration::from_secs(60), || loaded(&s).is_some()),
        "{}",
        s.stderr()
    );
    stop(&s, &mut child);
    let line = loaded(&s).unwrap();
    assert!(line.contains("retrain/model"), "{line}");
}
