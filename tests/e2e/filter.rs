//! The `filter` transform in a pipeline: alerts only, and filtered lines still move the
//! checkpoint.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[test]
fn only_the_detectors_anomalies_pass_an_is_anomaly_filter() {
    let s = Scratch::new();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default");
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  demo:\n    type: demo\n    rate: 0\n    count: 20000\n    seed: 7\n    \
             fault_rate: 0.1\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [demo]\n    model: {model}\n    \
             session_key: 'blk_-?\\d+'\n  \
             alerts:\n    type: filter\n    inputs: [detect]\n    condition:\n      is_anomaly: true\n\
             sinks:\n  out:\n    type: file\n    inputs: [alerts]\n    path: '{{dir}}/alerts.jsonl'\n    \
             encoding: json\n"
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    let alerts = read_lines(&s.path("alerts.jsonl"));
    let flagged = logged_counter(&stderr, "anomalies").expect("the detector's counters") as usize;
    assert!(flagged > 0, "the demo's faults raise alerts\n{stderr}");
    assert_eq!(
        alerts.len(),
        flagged,
        "every flagged event and nothing else"
    );
    for line in &alerts {
        assert!(line.contains("\"is_anomaly\":true"), "{line}");
    }
    let discarded =
        logged_counter(&stderr, "events_discarded{reason=filtered}").expect("the filter's counter");
    assert!(discarded > 10_000, "{stderr}");
}

#[test]
fn filtered_out_lines_move_the_file_checkpoint() {
    let s = Scratch::new();
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            let level = if i % 100 == 0 { "ERROR" } else { "INFO" };
            format!("{i:05} {level} request served")
        })
        .collect();
    write_lines(&s.path("in.log"), &lines, false);
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  in:\n    type: file\n    include: ['{dir}/in.log']\n\
         transforms:\n  errors:\n    type: filter\n    inputs: [in]\n    condition:\n      \
         any:\n        - field: message\n          matches: ' ERROR '\n        \
         - field: message\n          equals: never\n\
         sinks:\n  out:\n    type: file\n    inputs: [errors]\n    path: '{dir}/out.log'\n",
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.log"), 30, Duration::from_secs(30));
    stop(&s, &mut child);
    let expected: Vec<String> = lines
        .iter()
        .filter(|l| l.contains(" ERROR "))
        .cloned()
        .collect();
    assert_eq!(read_lines(&s.path("out.log")), expected);

    // A restart reads nothing again: the dropped INFO lines were acknowledged too.
    let mut restarted = s.start(&config, Stdio::null(), Stdio::null());
    std::thread::sleep(Duration::from_secs(2));
    stop(&s, &mut restarted);
    assert_eq!(read_lines(&s.path("out.log")), expected, "nothing re-read");
}

/// An alert pipeline paced by `throttle`: at most three alerts per template in the window
/// reach the sink, the rest are counted and said, and nothing else is lost.
#[test]
fn throttle_lets_a_bounded_number_of_alerts_per_template_through() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "data_dir: {dir}/data\n\
         sources:\n  demo:\n    type: demo\n    rate: 0\n    count: 20000\n    seed: 7\n    \
         fault_rate: 0.1\n\
         transforms:\n  detect:\n    type: deepsentry\n    inputs: [demo]\n    \
         session_key: 'blk_-?\\d+'\n  \
         alerts:\n    type: filter\n    inputs: [detect]\n    condition:\n      is_anomaly: true\n  \
         paced:\n    type: throttle\n    inputs: [alerts]\n    threshold: 3\n    window_secs: 3600\n    \
         key_field: template\n\
         sinks:\n  out:\n    type: file\n    inputs: [paced]\n    path: '{dir}/alerts.jsonl'\n    \
         encoding: json\n",
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    let alerts = read_lines(&s.path("alerts.jsonl"));
    let mut per_template = std::collections::HashMap::new();
    for line in &alerts {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["is_anomaly"], true, "{line}");
        *per_template
            .entry(event["template"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert!(!per_template.is_empty(), "{stderr}");
    assert!(per_template.values().all(|&n| n <= 3), "{per_template:?}");
    let flagged = logged_counter(&stderr, "anomalies").expect("the detector's counters") as usize;
    let throttled = logged_counter(&stderr, "events_discarded{reason=throttled}")
        .expect("the throttle's counter") as usize;
    assert!(throttled > 0, "{stderr}");
    assert_eq!(alerts.len() + throttled, flagged, "{stderr}");
    assert!(stderr.contains("throttled: events over the threshold were dropped"));
}
