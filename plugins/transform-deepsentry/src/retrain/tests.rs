use super::*;
use std::sync::atomic::Ordering;

#[test]
fn periods_read_seconds_minutes_hours_and_days() {
    assert_eq!(Period::parse("30").unwrap().0, Duration::from_secs(30));
    assert_eq!(Period::parse("30s").unwrap().0, Duration::from_secs(30));
    assert_eq!(Period::parse("15m").unwrap().0, Duration::from_secs(900));
    assert_eq!(Period::parse("24h").unwrap().0, Duration::from_secs(86_400));
    assert_eq!(Period::parse("7d").unwrap().0, Duration::from_secs(604_800));
    let unit = Period::parse("24x").unwrap_err().to_string();
    assert!(unit.contains("valid units: s, m, h, d"), "{unit}");
    assert!(Period::parse("0h").is_err());
    assert!(Period::parse("h").is_err());
    assert!(Period::parse("1.5h").is_err());
}

fn scored(message: &str, anomaly: bool) -> Event {
    let mut event = Event::from_str(message, chrono::Utc::now(), Origin::new("in", "x"));
    event
        .fields
        .insert(anomaly::IS_ANOMALY, Value::Bool(anomaly));
    event
}

#[test]
fn recent_lines_keep_the_latest_normal_lines_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut recent = RecentLines::new(dir.path().join("recent"), 400);
    let mut end = scored("end of a session", false);
    end.fields.insert(anomaly::SESSION_END, Value::Bool(true));
    recent.record(&[scored("flagged line", true), end]);
    for n in 0..100 {
        recent.record(&[scored(&format!("normal line {n:03}"), false)]);
    }
    let job = dir.path().join("job");
    let files = recent.take(&job).unwrap().lines;
    let kept: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let bytes: usize = kept.iter().map(|l| l.len() + 1).sum();
    assert!(bytes <= 400, "{bytes} bytes kept");
    assert!(kept.len() >= 15, "{} lines kept", kept.len());
    let expected: Vec<String> = (100 - kept.len()..100)
        .map(|n| format!("normal line {n:03}"))
        .collect();
    assert_eq!(kept, expected, "the latest lines, in order, nothing else");

    // Taking starts a new period.
    recent.record(&[scored("after", false)]);
    let again = recent.take(&dir.path().join("job2")).unwrap().lines;
    assert_eq!(std::fs::read_to_string(&again[0]).unwrap(), "after\n");
}

#[test]
fn lines_of_flagged_sessions_are_not_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut recent = RecentLines::new(dir.path().join("recent"), 1 << 20);
    let line = |text: &str, session: &str, anomaly: bool| {
        let mut event = scored(text, anomaly);
        event
            .fields
            .insert(anomaly::SESSION, Value::Str(session.into()));
        event
    };
    let end = |session: &str, anomaly: bool| {
        let mut event = line("", session, anomaly);
        event.fields.insert(anomaly::SESSION_END, Value::Bool(true));
        event
    };
    recent.record(&[
        line("open req-1", "req-1", false),
        line("open req-2", "req-2", false),
        line("open req-3", "req-3", true),
        line("hello from the stream", "x", false),
        line("write req-1", "req-1", false),
        line("write req-2", "req-2", false),
        line("write req-3", "req-3", false),
        // Lines the key finds no id in are in their stream's session ("x"): one flagged
        // does not take the others with it.
        line("a flagged line of the stream", "x", true),
        line("open req-4", "req-4", false),
    ]);
    // A broken invariant flags req-2 at its end; req-4 goes on.
    recent.record(&[end("req-1", false), end("req-2", true), end("req-3", false)]);
    let taken = recent.take(&dir.path().join("job")).unwrap();
    let key = SessionKey::Regex(regex::Regex::new(r"req-\d+").unwrap());
    let flagged = read_lines(&taken.flagged).unwrap();
    assert_eq!(flagged, ["req-3", "req-2"]);
    let kept = training_lines(read_lines(&taken.lines).unwrap(), &flagged, &key);
    assert_eq!(
        kept,
        [
            "open req-1",
            "hello from the stream",
            "write req-1",
            "open req-4"
        ],
        "the unflagged sessions' lines and the stream's unflagged line"
    );
    // A model of one stream keeps every unflagged line.
    let all = training_lines(
        read_lines(&taken.lines).unwrap(),
        &flagged,
        &SessionKey::Stream,
    );
    assert_eq!(all.len(), 7);
}

#[test]
fn the_held_out_comparison_does_not_judge_the_ends_of_sessions_that_began_before() {
    let event = |session: &str, anomaly: bool, end: bool| {
        let mut event = scored("x", anomaly);
        event
            .fields
            .insert(anomaly::SESSION, Value::Str(session.into()));
        if end {
            event.fields.insert(anomaly::SESSION_END, Value::Bool(true));
        }
        event
    };
    let scored = [
        event("req-1", true, false), // a flagged line: always a verdict
        event("req-1", true, true),  // the end of a session the trained part began
        event("req-2", true, true),  // the end of a session the held-out lines hold whole
        event("req-3", false, true),
    ];
    let begun: std::collections::HashSet<&str> = ["req-1"].into();
    assert_eq!(judged_flags(&scored, &begun), 2);
    assert_eq!(judged_flags(&scored, &Default::default()), 3);
}

/// A small model trained on a two-message worker log, and a job for it over `lines`
/// recent lines.
fn job(dir: &Path, lines: usize, base: &Path) -> RetrainJob {
    let recent: String = (0..lines)
        .map(|i| format!("worker 1 started job {i}\n"))
        .collect();
    job_over(dir, &recent, base, true, 1)
}

/// A small model trained for `epochs` on a log where each job starts and then finishes
/// (with a replay sample or not), and a job for it over the `recent` lines.
fn job_over(dir: &Path, recent: &str, base: &Path, replay: bool, epochs: usize) -> RetrainJob {
    let log = dir.join("normal.log");
    let text: String = (0..400)
        .map(|i| {
            format!(
                "worker {} started job {i}\nworker {} finished job {i}\n",
                i % 4,
                i % 4
            )
        })
        .collect();
    std::fs::write(&log, text).unwrap();
    let trained = deepsentry_model::train(&TrainOptions {
        inputs: vec![log],
        session_key: deepsentry_model::session_key::SessionKeySpec::Stream,
        epochs,
        replay,
        progress: false,
        ..TrainOptions::default()
    })
    .unwrap();
    trained.save(&dir.join("model")).unwrap();
    let running = Arc::new(LoadedModel::load(&dir.join("model"), BackendKind::default()).unwrap());
    let recent_file = dir.join("job").join("recent.0.log");
    std::fs::create_dir_all(recent_file.parent().unwrap()).unwrap();
    std::fs::write(&recent_file, recent).unwrap();
    let recent = recent_file;
    RetrainJob {
        running_dir: base.to_path_buf(),
        running,
        config: DeepsentryTransformConfig::for_model(dir.join("model")),
        online: OnlineState::default(),
        dir: dir.join("job"),
        inputs: TakenLines {
            lines: vec![recent],
            flagged: Vec::new(),
        },
        carry_to: dir.join("recent").join(CARRIED_FILE),
        cancel: Arc::default(),
    }
}

#[test]
fn a_period_with_too_few_lines_is_skipped_and_one_whose_training_fails_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let few = job(dir.path(), MIN_RETRAIN_LINES - 1, &dir.path().join("model"));
    assert!(matches!(
        few.run().unwrap(),
        Outcome::Skipped { lines } if lines == MIN_RETRAIN_LINES - 1
    ));
    // They wait for the next period.
    let carried = read_lines(std::slice::from_ref(&few.carry_to)).unwrap();
    assert_eq!(carried.len(), MIN_RETRAIN_LINES - 1);
    assert_eq!(carried[0], "worker 1 started job 0");

    let missing = dir.path().join("gone");
    let failing = job(dir.path(), 2 * MIN_RETRAIN_LINES, &missing);
    let receiver = failing.spawn().unwrap();
    match receiver.blocking_recv().unwrap() {
        Outcome::Failed(e) => {
            let message = format!("{e:#}");
            assert!(
                message.contains("cannot load the model to update"),
                "{message}"
            );
        }
        _ => panic!("a retraining without its base model must fail"),
    }
    assert!(
        !dir.path().join("job/candidate").exists(),
        "no candidate is left"
    );
}

/// Lines of a period that only ever starts jobs, then a held-out tail where jobs start and
/// finish again.
fn recent_text(total: usize) -> String {
    let held_out = (total as f64 * HELD_OUT_SHARE).ceil() as usize;
    (0..total)
        .map(|i| {
            if i < total - held_out || i % 2 == 0 {
                format!("worker 1 started job {i}\n")
            } else {
                format!("worker 1 finished job {}\n", i - 1)
            }
        })
        .collect()
}

/// A period that only ever starts jobs, then a held-out tail where jobs start and finish
/// again as they did in training: the update (with no replay sample to remind it) learns
/// that nothing finishes, flags the tail's `finished` lines the running model expects, and
/// is refused; nothing is promoted.
#[test]
fn a_candidate_that_flags_more_of_the_held_out_lines_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let total = 2 * MIN_RETRAIN_LINES;
    let held_out = (total as f64 * HELD_OUT_SHARE).ceil() as usize;
    let recent = recent_text(total);
    let refused = job_over(dir.path(), &recent, &dir.path().join("model"), false, 10);
    match refused.run().unwrap() {
        Outcome::Refused {
            running,
            candidate,
            held_out: judged,
        } => {
            assert_eq!(judged, held_out);
            assert!(candidate > running, "{candidate} > {running}");
        }
        Outcome::Accepted {
            running, candidate, ..
        } => panic!("accepted: the candidate flagged {candidate}, the running model {running}"),
        _ => panic!("the job neither refused nor accepted the candidate"),
    }
    // The held-out tail was not trained on: the next period takes it first, so the sessions
    // it holds part of are not cut in two.
    let mut recent = RecentLines::new(dir.path().join("recent"), 1 << 20);
    recent.record(&[scored("worker 2 started job 0", false)]);
    let taken = recent.take(&dir.path().join("next")).unwrap();
    let lines = read_lines(&taken.lines).unwrap();
    let expected = recent_text(total);
    let tail: Vec<&str> = expected.lines().skip(total - held_out).collect();
    assert_eq!(lines[..held_out], tail[..]);
    assert_eq!(lines[held_out..], ["worker 2 started job 0"]);
    assert!(!recent.carried().exists(), "taken once");
}

/// A job whose transform stopped (the flag set) stops training and leaves no candidate.
#[test]
fn a_cancelled_job_stops_training() {
    let dir = tempfile::tempdir().unwrap();
    let cancelled = job(dir.path(), 2 * MIN_RETRAIN_LINES, &dir.path().join("model"));
    cancelled.cancel.store(true, Ordering::Relaxed);
    match cancelled.run() {
        Err(e) => assert!(format!("{e:#}").contains("training was cancelled"), "{e:#}"),
        Ok(_) => panic!("a cancelled job went on"),
    }
    assert!(!dir.path().join("job/candidate").exists());
}

#[test]
fn promoting_replaces_the_retrained_model_and_records_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("retrain");
    for (name, content) in [("first", "1"), ("second", "2")] {
        let candidate = dir.path().join(name);
        std::fs::create_dir_all(&candidate).unwrap();
        std::fs::write(candidate.join("model.yml"), content).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        promote(&root, &candidate, "base-fingerprint").unwrap();
        assert!(!candidate.exists());
    }
    assert_eq!(
        std::fs::read_to_string(root.join("model/model.yml")).unwrap(),
        "2"
    );
    assert!(!root.join("model.old").exists());
    assert_eq!(load_state(&root).base.as_deref(), Some("base-fingerprint"));
}
