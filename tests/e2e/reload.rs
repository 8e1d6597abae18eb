//! Hot reload: SIGHUP re-reads the config and the models it names, replaces what changed,
//! keeps the rest running, and rejects a bad config or model with the old pipeline going on.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const KEY: &str = r"blk_-?\d+";

/// Every scored event as a JSON line in `{dir}/out.jsonl`.
const JSON_SINK: &str = "    type: file\n    path: '{dir}/out.jsonl'\n    encoding: json\n";

/// Sends SIGHUP and waits for the outcome to be logged (the `n`-th reload line).
fn hangup(s: &Scratch, child: &std::process::Child, n: usize) -> String {
    signal(child, "HUP");
    let said = wait_until(Duration::from_secs(30), || {
        let stderr = s.stderr();
        stderr.matches("reload applied").count()
            + stderr.matches("reload rejected").count()
            + stderr.matches("reload: nothing changed").count()
            >= n
    });
    assert!(said, "no reload outcome logged\n{}", s.stderr());
    s.stderr()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn file_pipeline(sink_path: &str, extra_sink: &str) -> String {
    format!(
        "data_dir: {{dir}}/data\n\
         sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n\
         sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: '{{dir}}/{sink_path}'\n{extra_sink}"
    )
}

#[test]
fn a_changed_sink_is_replaced_while_the_source_keeps_running() {
    let s = Scratch::new();
    let config = s.pipeline("p.yml", &file_pipeline("first.log", ""));
    let lines: Vec<String> = (0..400).map(|i| format!("reload line {i:04}")).collect();
    write_lines(&s.path("in.log"), &lines[..200], false);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("first.log"), 200, Duration::from_secs(20));

    s.pipeline("p.yml", &file_pipeline("second.log", ""));
    let stderr = hangup(&s, &child, 1);
    assert!(stderr.contains("reload applied"), "{stderr}");
    assert!(stderr.contains(r#"replaced=["sinks.out"]"#), "{stderr}");
    write_lines(&s.path("in.log"), &lines[200..], true);
    wait_for_lines(&s, &s.path("second.log"), 200, Duration::from_secs(20));

    // A sink added next to it: the source's consumers change, so it is replaced too and
    // resumes from its checkpoint.
    s.pipeline(
        "p.yml",
        &file_pipeline(
            "second.log",
            "  copy:\n    type: file\n    inputs: [in]\n    path: '{dir}/copy.log'\n",
        ),
    );
    let stderr = hangup(&s, &child, 2);
    assert!(stderr.contains(r#"added=["sinks.copy"]"#), "{stderr}");
    let more: Vec<String> = (400..500).map(|i| format!("reload line {i:04}")).collect();
    write_lines(&s.path("in.log"), &more, true);
    wait_for_lines(&s, &s.path("copy.log"), 100, Duration::from_secs(20));
    stop(&s, &mut child);

    let stderr = s.stderr();
    assert_eq!(
        stderr.matches("watching file").count(),
        2,
        "the source started once, then once more for the added sink\n{stderr}"
    );
    // Nothing lost on the way, and the first sink wrote nothing after it was replaced.
    let first = read_lines(&s.path("first.log"));
    let second = read_lines(&s.path("second.log"));
    assert_eq!(first, lines[..200]);
    let mut after: Vec<String> = lines[200..].to_vec();
    after.extend(more.iter().cloned());
    let counted = counts(&second);
    for line in &after {
        assert!(counted.contains_key(line.as_str()), "{line} lost");
    }
    assert!(read_lines(&s.path("copy.log")).ends_with(&more));
}

#[test]
fn a_bad_config_or_model_is_rejected_and_the_old_pipeline_goes_on() {
    let s = Scratch::new();
    let model = s.path("model");
    copy_dir(Path::new(SHIPPED_MODEL), &model);
    let pipeline = scored_file_pipeline(&model, None, JSON_SINK);
    let config = s.pipeline("p.yml", &pipeline);
    let lines = fixture_lines(900, 21);
    write_lines(&s.path("in.log"), &lines[..300], false);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.jsonl"), 300, Duration::from_secs(30));

    // A typo: rejected with the file, line and key; the pipeline goes on.
    s.pipeline(
        "p.yml",
        &pipeline.replace("batch_interval", "batch_intervall"),
    );
    let stderr = hangup(&s, &child, 1);
    assert!(stderr.contains("reload rejected"), "{stderr}");
    assert!(stderr.contains("p.yml:12"), "{stderr}");
    assert!(stderr.contains("batch_intervall"), "{stderr}");
    write_lines(&s.path("in.log"), &lines[300..600], true);
    wait_for_lines(&s, &s.path("out.jsonl"), 600, Duration::from_secs(30));

    // A model whose weights are cut short: rejected, the loaded model goes on scoring.
    s.pipeline("p.yml", &pipeline);
    let weights = model.join("detector.bpk");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    let stderr = hangup(&s, &child, 2);
    assert!(
        stderr.contains("reload rejected") && stderr.contains("transforms.detect: cannot start"),
        "{stderr}"
    );
    write_lines(&s.path("in.log"), &lines[600..], true);
    wait_for_lines(&s, &s.path("out.jsonl"), 900, Duration::from_secs(30));
    stop(&s, &mut child);
    let scored = read_lines(&s.path("out.jsonl"))
        .iter()
        .filter(|l| l.contains("\"anomaly_score\""))
        .count();
    assert!(scored >= 900, "every line scored: {scored}");
    assert_eq!(s.stderr().matches("anomaly model loaded").count(), 1);
}

#[test]
fn a_retrained_model_is_picked_up_on_sighup() {
    let s = Scratch::new();
    let model = s.path("model");
    copy_dir(Path::new(SHIPPED_MODEL), &model);
    let port = free_port();
    let config = s.pipeline(
        "p.yml",
        &scored_file_pipeline(&model, Some(port), JSON_SINK),
    );
    let lines = fixture_lines(600, 8);
    write_lines(&s.path("in.log"), &lines[..300], false);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.jsonl"), 300, Duration::from_secs(30));
    let templates = |metrics: &str| -> Option<String> {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("deepsentry_model_info"))?;
        let start = line.find("templates=\"")? + "templates=\"".len();
        Some(line[start..].split('"').next()?.to_owned())
    };
    let before =
        templates(&http_get(port, "/metrics").expect("the API answers").1).expect("model info");

    // Retrain on this application's own normal logs, replace the model's files, SIGHUP.
    let normal = s.path("normal.log");
    let training: Vec<String> = deepsentry_source_demo::HdfsGenerator::new(99, 0.0, 4)
        .take(3000)
        .map(|l| l.text)
        .collect();
    write_lines(&normal, &training, false);
    let retrained = s.path("retrained");
    let output = Command::new(bin())
        .args(["train", "--session-key", KEY, "--epochs", "2", "--input"])
        .arg(&normal)
        .arg("--out")
        .arg(&retrained)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    copy_dir(&retrained, &model);
    let stderr = hangup(&s, &child, 1);
    assert!(
        stderr.contains(r#"replaced=["transforms.detect"]"#),
        "the retrained model was not picked up\n{stderr}"
    );
    assert_eq!(stderr.matches("anomaly model loaded").count(), 2);
    let after =
        templates(&http_get(port, "/metrics").expect("the API answers").1).expect("model info");
    assert_ne!(before, after, "model_info still shows the old model");

    write_lines(&s.path("in.log"), &lines[300..], true);
    wait_for_lines(&s, &s.path("out.jsonl"), 600, Duration::from_secs(30));
    stop(&s, &mut child);
    assert_eq!(
        s.stderr().matches("watching file").count(),
        1,
        "the source kept running"
    );
}
