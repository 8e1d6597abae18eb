//! Logs as they arrive: multiline events, decoded JSON and logfmt, and the event's own time.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

fn message(event: &serde_json::Value) -> &str {
    event["message"].as_str().expect("a message")
}

const JAVA_LOG: &str = "\
2024-01-15 14:23:47,123 INFO  Server started on port 8080
2024-01-15 14:23:48,001 ERROR Request 17 failed
java.lang.IllegalStateException: connection reset
\tat com.acme.Client.send(Client.java:42)
\tat com.acme.Server.handle(Server.java:7)
Caused by: java.io.IOException: broken pipe
\tat java.net.SocketOutputStream.write(SocketOutputStream.java:1)
\t... 12 more
2024-01-15 14:23:49,000 INFO  Request 18 served
";

const PYTHON_LOG: &str = "\
INFO:app:job 1 started
ERROR:app:job 1 failed
Traceback (most recent call last):
  File \"/srv/app/jobs.py\", line 41, in run
    result = step(payload)
  File \"/srv/app/jobs.py\", line 12, in step
    return payload[\"user\"]
KeyError: 'user'
INFO:app:job 2 started
";

#[test]
fn java_and_python_traces_through_the_file_source_are_one_event_each() {
    let s = Scratch::new();
    std::fs::write(s.path("java.log"), JAVA_LOG).unwrap();
    std::fs::write(s.path("python.log"), PYTHON_LOG).unwrap();
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  java:\n    type: file\n    include: ['{dir}/java.log']\n    exit_on_eof: true\n    \
         multiline: java\n  \
         python:\n    type: file\n    include: ['{dir}/python.log']\n    exit_on_eof: true\n    \
         multiline: python\n\
         sinks:\n  out:\n    type: file\n    inputs: [java, python]\n    path: {dir}/out.json\n    \
         encoding: json\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    assert!(wait_exit(&s, &mut child, WAIT).success(), "{}", s.stderr());
    let events = json_events(&s.path("out.json"));
    let from = |source: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["source"] == source)
            .map(|e| message(e).to_owned())
            .collect()
    };
    let java = from("java");
    assert_eq!(java.len(), 3, "{java:#?}");
    assert_eq!(
        java[1],
        JAVA_LOG
            .lines()
            .skip(1)
            .take(7)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let python = from("python");
    assert_eq!(python.len(), 3, "{python:#?}");
    assert!(python[1].starts_with("ERROR:app:job 1 failed\nTraceback"));
    assert!(python[1].ends_with("KeyError: 'user'"));
    assert_eq!(python[2], "INFO:app:job 2 started");
    // Each event is dated by its first line where it has a time.
    let error = events
        .iter()
        .find(|e| message(e).contains("Request 17 failed"))
        .unwrap();
    assert_eq!(error["timestamp"], "2024-01-15T14:23:48.001000Z");
}

#[test]
fn a_kill_between_the_lines_of_a_stack_trace_loses_nothing() {
    let s = Scratch::new();
    let pipeline = |exit_on_eof: bool| {
        s.pipeline(
            "p.yml",
            &format!(
                "data_dir: {{dir}}/data\n\
                 sources:\n  app:\n    type: file\n    include: ['{{dir}}/app.log']\n    \
                 poll_interval_ms: 20\n    exit_on_eof: {exit_on_eof}\n    \
                 multiline:\n      preset: java\n      timeout_ms: 600000\n\
                 sinks:\n  out:\n    type: file\n    inputs: [app]\n    path: {{dir}}/out.json\n    \
                 encoding: json\n"
            ),
        )
    };
    let lines: Vec<&str> = JAVA_LOG.lines().collect();
    // The logged line and the first frame of its trace are written; the rest comes later.
    let head = format!("{}\n", lines[..4].join("\n"));
    std::fs::write(s.path("app.log"), &head).unwrap();
    let mut child = s.start(&pipeline(false), Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.json"), 1, WAIT);
    // The checkpoint reaches the start of the open trace, not past it.
    let first_len = lines[0].len() as u64 + 1;
    let checkpointed = wait_until(WAIT, || {
        std::fs::read_to_string(s.path("data/app/checkpoints.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|cp| {
                cp.get("files")?
                    .as_object()?
                    .values()
                    .next()?
                    .get("offset")?
                    .as_u64()
            })
            == Some(first_len)
    });
    assert!(checkpointed, "{}", s.stderr());
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        read_lines(&s.path("out.json")).len(),
        1,
        "the open trace was not sent"
    );

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(s.path("app.log"))
        .unwrap();
    writeln!(file, "{}", lines[4..].join("\n")).unwrap();
    drop(file);
    let mut child = s.start(&pipeline(true), Stdio::null(), Stdio::null());
    assert!(wait_exit(&s, &mut child, WAIT).success(), "{}", s.stderr());
    let messages: Vec<String> = json_events(&s.path("out.json"))
        .iter()
        .map(|e| message(e).to_owned())
        .collect();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(messages[0], lines[0]);
    assert_eq!(messages[1], lines[1..8].join("\n"), "the whole trace, once");
    assert_eq!(messages[2], lines[8]);
}

#[test]
fn json_and_logfmt_lines_decode_and_a_bad_line_is_passed_on_and_counted() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  json:\n    type: stdin\n    decoding: json\n\
         sinks:\n  out:\n    type: file\n    inputs: [json]\n    path: {dir}/out.json\n    \
         encoding: json\n",
    );
    let input = "{\"time\":\"2024-05-31T10:00:00.250Z\",\"level\":\"error\",\"msg\":\"db down\",\"retries\":3}\n\
                 {\"message\":\"cache warm\",\"ts\":1700000000,\"user\":{\"id\":7}}\n\
                 {this is not json\n";
    let status = s.run_with_input(&config, input.as_bytes());
    assert!(status.success(), "{}", s.stderr());
    let events = json_events(&s.path("out.json"));
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(events[0]["message"], "db down");
    assert_eq!(events[0]["level"], "error");
    assert_eq!(events[0]["retries"], 3);
    assert_eq!(events[0]["timestamp"], "2024-05-31T10:00:00.250000Z");
    assert_eq!(events[1]["message"], "cache warm");
    assert_eq!(events[1]["user"]["id"], 7);
    assert_eq!(events[1]["timestamp"], "2023-11-14T22:13:20.000000Z");
    assert_eq!(events[2]["message"], "{this is not json");
    let stderr = s.stderr();
    assert_eq!(
        logged_counter(&stderr, "lines_modified{reason=decode_failed}"),
        Some(1),
        "{stderr}"
    );
    assert!(
        stderr.contains("not JSON"),
        "the reason is logged: {stderr}"
    );

    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  app:\n    type: stdin\n    decoding: logfmt\n\
         sinks:\n  out:\n    type: file\n    inputs: [app]\n    path: {dir}/out.json\n    \
         encoding: json\n",
    );
    let output = Command::new(bin())
        .args(["run", "-c"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(
                b"time=2024-05-31T10:00:00Z level=warn msg=\"slow query\" took=1.5s\n",
            )?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(output.status.success());
    let events = json_events(&s.path("out.json"));
    assert_eq!(events[0]["message"], "slow query");
    assert_eq!(events[0]["level"], "warn");
    assert_eq!(events[0]["took"], "1.5s");
    assert_eq!(events[0]["timestamp"], "2024-05-31T10:00:00.000000Z");
}

#[test]
fn the_detector_dates_events_by_their_lines_and_templates_a_trace_once() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  app:\n    type: stdin\n    multiline: java\n\
         transforms:\n  detect:\n    type: deepsentry\n    inputs: [app]\n\
         sinks:\n  out:\n    type: file\n    inputs: [detect]\n    path: {dir}/out.json\n    \
         encoding: json\n  alerts:\n    type: file\n    inputs: [detect]\n    path: {dir}/alerts.log\n    \
         encoding: alert\n",
    );
    let second_trace = JAVA_LOG
        .replace("2024-01-15", "2024-01-16")
        .replace("Request 17", "Request 99")
        .replace("Client.java:42", "Pool.java:3");
    let input = format!("{JAVA_LOG}{second_trace}");
    let status = s.run_with_input(&config, input.as_bytes());
    assert!(status.success(), "{}", s.stderr());
    let events = json_events(&s.path("out.json"));
    let scored: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.get("session_end").is_none() && e.get("anomaly_score").is_some())
        .collect();
    assert_eq!(scored.len(), 6, "{events:#?}");
    let traces: Vec<&&serde_json::Value> = scored
        .iter()
        .filter(|e| message(e).contains("failed\n"))
        .collect();
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[0]["template"], traces[1]["template"]);
    assert!(
        traces[0]["template"]
            .as_str()
            .unwrap()
            .ends_with("java.lang.IllegalStateException"),
        "{}",
        traces[0]["template"]
    );
    assert_eq!(traces[1]["timestamp"], "2024-01-16T14:23:48.001000Z");
    // The alert file's TIMESTAMP is the line's own time too.
    let alerts = std::fs::read_to_string(s.path("alerts.log")).unwrap_or_default();
    for stamp in alerts.lines().filter_map(|l| l.strip_prefix("TIMESTAMP=")) {
        assert!(stamp.starts_with("2024-01-1"), "{alerts}");
    }
}

/// Stops a shipped pipeline's run (SIGTERM) once what it was to print was `shown`, checks it
/// was and that the run ended cleanly, and returns what it printed.
fn console_after_stop(s: &Scratch, child: &mut std::process::Child, shown: bool) -> String {
    signal(child, "TERM");
    let status = child.wait().unwrap();
    assert!(shown, "console:\n{}\nstderr:\n{}", s.console(), s.stderr());
    assert!(status.success(), "{}", s.stderr());
    s.console()
}

#[test]
fn the_shipped_json_app_pipeline_scores_decoded_lines_and_whole_traces() {
    let s = Scratch::new();
    // The detector warms up on the service's usual lines (`min_samples`) before it alerts.
    let mut json: String = (0..60)
        .map(|i| {
            format!(
                "{{\"@timestamp\":\"2024-03-01T08:00:{:02}Z\",\"level\":\"INFO\",\"message\":\"order {i} paid\"}}\n",
                i % 60
            )
        })
        .collect();
    json.push_str(
        "{\"@timestamp\":\"2024-03-01T09:00:01Z\",\"level\":\"ERROR\",\"message\":\"payment gateway refused order 2\"}\n",
    );
    std::fs::write(s.path("app.json"), json).unwrap();
    let (json_log, error_log) = (
        s.path("app.json").display().to_string(),
        s.path("stderr.log.app").display().to_string(),
    );
    let mut child = s.start_shipped(
        "json-app.yml",
        &[("APP_JSON_LOG", &json_log), ("APP_ERROR_LOG", &error_log)],
    );
    // The service's stack traces start after its usual lines were scored.
    let shown = wait_until(WAIT, || {
        s.console().contains("payment gateway refused order 2")
    }) && {
        std::fs::write(&error_log, JAVA_LOG).unwrap();
        wait_until(WAIT, || {
            s.console().contains("java.lang.IllegalStateException")
        })
    };
    let text = console_after_stop(&s, &mut child, shown);
    // Decoded: the message alone, dated by its field; the trace as one event.
    assert!(text.contains("[09:00:01] ANOMALY"), "{text}");
    assert!(!text.contains("\"level\""), "{text}");
    let trace_alert = text
        .split("ANOMALY")
        .find(|alert| alert.contains("Request 17 failed"))
        .expect("the trace is one alert");
    assert!(
        trace_alert.contains("Caused by: java.io.IOException"),
        "{text}"
    );
}

#[test]
fn the_shipped_kubernetes_pods_pipeline_scores_container_log_files() {
    let s = Scratch::new();
    // The detector warms up on the pod's usual lines (`min_samples`) before it alerts.
    let mut cri: String = (0..60)
        .map(|i| {
            format!(
                "2024-03-01T08:00:{:02}.000000001Z stdout F order {i} paid\n",
                i
            )
        })
        .collect();
    // An error line the runtime split in two.
    cri.push_str("2024-03-01T09:00:01.5Z stderr P ERROR payment gateway ref\n");
    cri.push_str("2024-03-01T09:00:01.5Z stderr F used order 2\n");
    std::fs::write(s.path("shop-7d9f_production_app-1234.log"), cri).unwrap();
    let pods = s.path("shop-*_production_*.log").display().to_string();
    let mut child = s.start_shipped("kubernetes-pods.yml", &[("POD_LOGS", &pods)]);
    let shown = wait_until(WAIT, || {
        s.console().contains("payment gateway refused order 2")
    });
    let text = console_after_stop(&s, &mut child, shown);
    // The runtime's time, and no line of the file's prefix in the message.
    assert!(text.contains("[09:00:01] ANOMALY"), "{text}");
    assert!(!text.contains("stderr F"), "{text}");
}
