//! A model trained here, on the demo generator's normal sessions, against the generator's
//! injected faults; and the bundle's save/load checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use deepsentry_core::anomaly;
use deepsentry_core::{Event, Origin, Value};
use deepsentry_loggen::{Fault, HdfsGenerator};
use deepsentry_model::bundle::{LoadedModel, ModelMetadata, FORMAT_VERSION};
use deepsentry_model::invariants::Invariant;
use deepsentry_model::session_key::SessionKeySpec;
use deepsentry_model::{
    train, BackendKind, Scorer, ScorerSettings, SequenceModel, SessionKey, TrainOptions,
};
use regex::Regex;

const SESSION_KEY: &str = r"blk_-?\d+";

/// The model every test here shares: trained once per test binary.
fn model_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("normal.log");
        let lines: Vec<String> = HdfsGenerator::new(1, 0.0, 8)
            .take(6000)
            .map(|l| l.text)
            .collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let options = TrainOptions {
            inputs: vec![input],
            session_key: SessionKeySpec::Regex(SESSION_KEY.into()),
            ..TrainOptions::default()
        };
        let model = train(&options).unwrap();
        let out = dir.path().join("model");
        model.save(&out).unwrap();
        (dir, out)
    })
    .1
}

fn settings() -> ScorerSettings {
    ScorerSettings {
        window_size: 100,
        threshold_multiplier: 2.5,
        min_samples: 20,
        exclude_anomalies: true,
        threshold_floor: None,
        session_key: SessionKey::Regex(Regex::new(SESSION_KEY).unwrap()),
        session_ttl_secs: 3600,
        max_sessions: 100_000,
        ..ScorerSettings::default()
    }
}

fn events(lines: &[String]) -> Vec<Event> {
    let origin = Origin::new("test", "demo");
    let now = chrono::Utc::now();
    lines
        .iter()
        .map(|l| Event::from_str(l, now, Arc::clone(&origin)))
        .collect()
}

fn flag(event: &Event) -> bool {
    matches!(
        event.fields.get(anomaly::IS_ANOMALY),
        Some(Value::Bool(true))
    )
}

#[test]
fn flags_injected_faults_and_passes_normal_sessions() {
    let model = LoadedModel::load(model_dir(), BackendKind::Flex).unwrap();
    let mut scorer = Scorer::new(Arc::new(model), settings());
    let generated: Vec<_> = HdfsGenerator::new(99, 0.1, 8).take(8000).collect();
    let faults: HashMap<String, Option<Fault>> = generated
        .iter()
        .map(|l| (l.block.clone(), l.session_fault))
        .collect();
    let lines: Vec<String> = generated.iter().map(|l| l.text.clone()).collect();
    let mut flagged: HashMap<String, bool> = HashMap::new();
    let mut out = Vec::new();
    for chunk in lines.chunks(1024) {
        out.extend(scorer.process(events(chunk)));
    }
    out.extend(scorer.finish());
    for event in &out {
        let session = event.fields.get(anomaly::SESSION).unwrap().to_string();
        *flagged.entry(session).or_default() |= flag(event);
    }
    // Every line scored, plus one end event per session.
    assert_eq!(out.len(), lines.len() + faults.len());
    let count = |want_fault: bool, want_flag: bool, kind: Option<Fault>| {
        faults
            .iter()
            .filter(|(block, fault)| {
                fault.is_some() == want_fault
                    && kind.is_none_or(|k| **fault == Some(k))
                    && flagged[*block] == want_flag
            })
            .count()
    };
    // Errors never seen in normal sessions, and blocks that were never written, are caught.
    for kind in [
        Fault::DeleteError,
        Fault::MirrorWriteFailed,
        Fault::NeverWritten,
    ] {
        assert_eq!(
            count(true, false, Some(kind)),
            0,
            "missed {kind:?} sessions"
        );
        assert!(
            count(true, true, Some(kind)) > 0,
            "no {kind:?} session generated"
        );
    }
    // Normal sessions that completed pass; a session cut off by the end of the input may
    // rightly look unfinished.
    let complete_normal: Vec<_> = faults
        .iter()
        .filter(|(block, fault)| {
            fault.is_none()
                && generated
                    .iter()
                    .rev()
                    .find(|l| &l.block == *block)
                    .is_some_and(|l| l.text.contains("Deleting block"))
        })
        .collect();
    let false_alarms = complete_normal
        .iter()
        .filter(|(block, _)| flagged[*block])
        .count();
    assert!(complete_normal.len() > 200);
    assert!(
        false_alarms * 100 <= complete_normal.len(),
        "{false_alarms} of {} normal sessions flagged",
        complete_normal.len()
    );
    // Flagged lines carry their context.
    let alert = out.iter().find(|e| flag(e)).unwrap();
    let Some(Value::Str(context)) = alert.fields.get(anomaly::CONTEXT_WINDOW) else {
        panic!("no context window")
    };
    assert!(context.contains(" → ") || alert.fields.get(anomaly::SESSION_END).is_some());
}

#[test]
fn bundle_round_trip_gives_identical_scores() {
    let original = LoadedModel::load(model_dir(), BackendKind::Flex).unwrap();
    let copy_dir = tempfile::tempdir().unwrap();
    original.save(copy_dir.path()).unwrap();
    let copy = LoadedModel::load(copy_dir.path(), BackendKind::Ndarray).unwrap();
    assert_eq!(original.metadata, copy.metadata);
    let templates: Vec<&str> = original
        .metadata
        .templates
        .iter()
        .map(String::as_str)
        .collect();
    let a = original.embed(&templates);
    let b = copy.embed(&templates);
    for (ea, eb) in a.iter().zip(&b) {
        assert!((ea.error - eb.error).abs() < 1e-5);
        assert_eq!(ea.class, eb.class);
        assert!(ea
            .vector
            .iter()
            .zip(&eb.vector)
            .all(|(x, y)| (x - y).abs() < 1e-5));
    }
    let window: Vec<&[f32]> = a.iter().take(3).map(|e| e.vector.as_slice()).collect();
    let pa = original.log_probs(std::slice::from_ref(&window));
    let pb = copy.log_probs(&[window]);
    assert!(pa[0].iter().zip(&pb[0]).all(|(x, y)| (x - y).abs() < 1e-4));
}

fn copy_bundle(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let yml = dir.path().join("model.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(&yml, edit(text)).unwrap();
    dir
}

#[test]
fn mismatched_bundles_say_what_does_not_match() {
    let err = |dir: &tempfile::TempDir| {
        format!(
            "{:#}",
            LoadedModel::load(dir.path(), BackendKind::Flex).unwrap_err()
        )
    };
    let bigger = copy_bundle(|t| t.replace("embedding_size: 16", "embedding_size: 24"));
    let e = err(&bigger);
    assert!(
        e.contains("autoencoder.bpk: the weights do not match model.yml"),
        "{e}"
    );
    assert!(e.contains("embedding_size 24"), "{e}");

    let hidden = copy_bundle(|t| t.replace("detector_hidden: 128", "detector_hidden: 32"));
    let e = err(&hidden);
    assert!(e.contains("detector.bpk: the weights do not match"), "{e}");
    assert!(e.contains("detector_hidden 32"), "{e}");

    let fewer = copy_bundle(|t| {
        let mut metadata: ModelMetadata = serde_yaml::from_str(&t).unwrap();
        metadata.templates.remove(0);
        metadata.invariants.clear();
        serde_yaml::to_string(&metadata).unwrap()
    });
    assert!(err(&fewer).contains("classes"), "{}", err(&fewer));

    let version = copy_bundle(|t| {
        t.replace(
            &format!("format_version: {FORMAT_VERSION}"),
            "format_version: 9",
        )
    });
    assert!(
        err(&version).contains("format_version is 9"),
        "{}",
        err(&version)
    );

    let stray = copy_bundle(|t| {
        let mut metadata: ModelMetadata = serde_yaml::from_str(&t).unwrap();
        metadata.invariants.push(Invariant {
            terms: vec![(0, 1), (99, -1)],
            support: 10,
            violations: 0,
        });
        serde_yaml::to_string(&metadata).unwrap()
    });
    assert!(
        err(&stray).contains("an invariant names template 99"),
        "{}",
        err(&stray)
    );

    let missing = tempfile::tempdir().unwrap();
    assert!(err(&missing).contains("model.yml"), "{}", err(&missing));
}

#[test]
fn memory_stays_bounded_with_100k_distinct_sessions() {
    let model = LoadedModel::load(model_dir(), BackendKind::Flex).unwrap();
    let mut scorer = Scorer::new(
        Arc::new(model),
        ScorerSettings {
            max_sessions: 1000,
            ..settings()
        },
    );
    let line = |i: usize| {
        format!(
            "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_{i} src: /10.250.19.102:54106 dest: /10.250.19.102:50010"
        )
    };
    let mut ended = 0;
    for start in (0..100_000).step_by(1000) {
        let lines: Vec<String> = (start..start + 1000).map(line).collect();
        let out = scorer.process(events(&lines));
        ended += out
            .iter()
            .filter(|e| e.fields.get(anomaly::SESSION_END).is_some())
            .count();
        assert!(scorer.session_count() <= 1000);
    }
    assert_eq!(ended, 99_000, "every evicted session was ended and scored");
    assert_eq!(scorer.stats().sessions_evicted, 99_000);
}

#[test]
fn idle_sessions_end_by_the_log_clock() {
    let model = LoadedModel::load(model_dir(), BackendKind::Flex).unwrap();
    // No warm-up, so that the second score already counts.
    let mut scorer = Scorer::new(
        Arc::new(model),
        ScorerSettings {
            min_samples: 0,
            ..settings()
        },
    );
    let lines = vec![
        "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010".to_string(),
        // Two hours later (past the one-hour TTL), another block: blk_1 ends first.
        "081109 223518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_2 src: /10.0.0.1:5 dest: /10.0.0.2:50010".to_string(),
    ];
    let out = scorer.process(events(&lines));
    assert_eq!(out.len(), 3);
    assert!(out[1].fields.get(anomaly::SESSION_END).is_some());
    assert!(out[1].message().contains("blk_1"));
    assert!(out[1].message().contains("idle"));
    assert!(
        flag(&out[1]),
        "a block that was never written ends too early"
    );
}

#[test]
fn order_noise_applies_to_sessions_and_not_to_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("normal.log");
    let lines: Vec<String> = HdfsGenerator::new(2, 0.0, 8)
        .take(1500)
        .map(|l| l.text)
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let sessions = TrainOptions {
        inputs: vec![input],
        session_key: SessionKeySpec::Regex(SESSION_KEY.into()),
        order_noise: 0.3,
        epochs: 2,
        ..TrainOptions::default()
    };
    let model = train(&sessions).unwrap();
    assert_eq!(model.metadata.training.order_noise, 0.3);
    let one_stream = TrainOptions {
        session_key: SessionKeySpec::Stream,
        ..sessions.clone()
    };
    assert_eq!(
        train(&one_stream).unwrap().metadata.training.order_noise,
        0.0
    );
    let not_a_share = TrainOptions {
        order_noise: 1.0,
        ..sessions
    };
    let error = match train(&not_a_share) {
        Ok(_) => panic!("an order noise of 1 was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("order noise 1 is not a share"), "{error}");
}

#[test]
fn a_word_that_takes_many_values_in_training_is_a_field_of_one_template() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("normal.log");
    let users = ["alice", "bob", "carol", "dave"];
    let lines: Vec<String> = (0..600)
        .map(|i| match i % 3 {
            0 => format!("session opened for user {} by sshd", users[i % 4]),
            1 => "reading the mail spool".to_string(),
            _ => "session closed".to_string(),
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let options = TrainOptions {
        inputs: vec![input],
        session_key: SessionKeySpec::Stream,
        epochs: 2,
        ..TrainOptions::default()
    };
    let model = train(&options).unwrap();
    let templates = &model.metadata.templates;
    let folded = "session opened for user <*> by sshd";
    assert!(templates.iter().any(|t| t == folded), "{templates:?}");
    assert!(
        !templates.iter().any(|t| t.contains("alice")),
        "{templates:?}"
    );
    let class = model.class_of(folded);
    assert!(class.is_some());
    assert_eq!(model.class_of("session opened for user bob by sshd"), class);
    assert_eq!(
        model.class_of("session opened for user zed by sshd"),
        class,
        "a name training never saw is the same statement"
    );
    assert_eq!(model.class_of("session opened for a user by sshd"), None);

    // Its events name the statement, not the value.
    let mut scorer = Scorer::new(
        Arc::new(model),
        ScorerSettings {
            session_key: SessionKey::Stream,
            ..settings()
        },
    );
    let scored = scorer.process(events(&["session opened for user zed by sshd".to_string()]));
    assert_eq!(
        scored[0].fields.get(anomaly::TEMPLATE),
        Some(&Value::Str(folded.into()))
    );
}

#[test]
fn a_training_past_max_lines_learns_the_last_lines_of_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    // Two files: the first's lines and a statement only they hold come before the last 600.
    let older = dir.path().join("older.log");
    let newer = dir.path().join("newer.log");
    let statement = |i: usize| match i % 3 {
        0 => format!("request {i} accepted"),
        1 => format!("request {i} served in {} ms", i % 90),
        _ => format!("request {i} closed"),
    };
    let mut lines: Vec<String> = (0..500).map(statement).collect();
    lines[7] = "cache warmed with 3 entries".into();
    std::fs::write(&older, lines.join("\n") + "\n").unwrap();
    let lines: Vec<String> = (500..1400).map(statement).collect();
    std::fs::write(&newer, lines.join("\n") + "\n").unwrap();
    let options = TrainOptions {
        inputs: vec![older, newer],
        max_lines: 600,
        session_key: SessionKeySpec::Stream,
        epochs: 2,
        ..TrainOptions::default()
    };
    let model = train(&options).unwrap();
    assert_eq!(model.metadata.training.lines, 600);
    // Every class is a template of the lines kept, the dropped statement none.
    let templates = &model.metadata.templates;
    assert_eq!(templates.len(), 3, "{templates:?}");
    assert!(
        !templates.iter().any(|t| t.contains("cache")),
        "{templates:?}"
    );
    // 0: every line.
    let all = train(&TrainOptions {
        max_lines: 0,
        ..options
    })
    .unwrap();
    assert_eq!(all.metadata.training.lines, 1400);
    assert!(all.metadata.templates.iter().any(|t| t.contains("cache")));
}

/// Requests that open, write three times and close, interleaved (one starts every fifth
/// step, and closes `close_after` steps after it opened), a line every `pace` seconds from
/// the Unix time `start`; the requests `rare` names retry once and write a fourth time.
fn request_log(
    requests: std::ops::Range<usize>,
    rare: &[usize],
    start: i64,
    pace: i64,
    close_after: usize,
) -> Vec<String> {
    let mut events: Vec<(usize, usize, String)> = Vec::new();
    for k in requests {
        let at = 5 * k;
        let write = "stored a chunk on disk for";
        let mut steps = vec![
            (0, "opened a connection for"),
            (3, write),
            (6, write),
            (9, write),
        ];
        if rare.contains(&k) {
            steps.extend([(10, "retrying the write after a timeout for"), (12, write)]);
        }
        steps.push((close_after, "closed the connection for"));
        events.extend(
            steps
                .into_iter()
                .map(|(after, what)| (at + after, k, format!("{what} req-{k}"))),
        );
    }
    events.sort();
    events
        .into_iter()
        .enumerate()
        .map(|(line, (_, _, text))| {
            let at = chrono::DateTime::from_timestamp(start + pace * line as i64, 0).unwrap();
            format!("{} {text}", at.format("%Y-%m-%d %H:%M:%S"))
        })
        .collect()
}

/// Quick training options for [`request_log`]'s logs, one session per request.
fn request_options() -> TrainOptions {
    TrainOptions {
        session_key: SessionKeySpec::Regex(r"req-\d+".into()),
        epochs: 1,
        detector_members: 1,
        ..TrainOptions::default()
    }
}

/// The count invariants of `model`, in words.
fn relations(model: &LoadedModel) -> std::collections::BTreeSet<String> {
    model
        .metadata
        .invariants
        .iter()
        .map(|i| i.relation(&model.metadata.templates))
        .collect()
}

#[test]
fn an_update_mines_count_invariants_over_the_old_sessions_and_the_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Six rare requests early in the old logs (before the last 2,000 lines a bundle keeps),
    // six in the new: twelve support the relation that holds them, six do not.
    let rare = [20, 40, 60, 80, 100, 120, 1100, 1200, 1300, 1400, 1500, 1600];
    let lines = request_log(0..2000, &rare, 1_700_000_000, 1, 15);
    let cut = lines.len() / 2;
    let write = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let (old, new, all) = (
        write("old.log", &lines[..cut]),
        write("new.log", &lines[cut..]),
        write("all.log", &lines),
    );
    let options = request_options();
    let train_on = |inputs: Vec<PathBuf>, from: Option<PathBuf>, out: &str| {
        let model = train(&TrainOptions {
            inputs,
            from,
            ..options.clone()
        })
        .unwrap();
        model.save(&dir.path().join(out)).unwrap();
        model
    };

    let whole = relations(&train_on(vec![all], None, "whole"));
    assert!(
        whole.iter().any(|r| r.contains("retry")),
        "twelve rare requests support a relation: {whole:?}"
    );
    train_on(vec![old.clone()], None, "old");
    let updated = relations(&train_on(
        vec![new.clone()],
        Some(dir.path().join("old")),
        "updated",
    ));
    assert_eq!(
        updated, whole,
        "the update mines what one training on all the logs mines"
    );

    // Without the counts the old bundle kept, the new logs and the replay sample hold six
    // rare requests and the requests the cut split in two.
    std::fs::remove_file(dir.path().join("old").join("sessions.json")).unwrap();
    let alone = relations(&train_on(vec![new], Some(dir.path().join("old")), "alone"));
    assert!(!alone.iter().any(|r| r.contains("retry")), "{alone:?}");
}

/// A bundle trained on `old` lines (with [`request_options`]), saved in `dir`, and its update
/// with `new` lines.
fn trained_then_updated(dir: &Path, old: &[String], new: &[String]) -> (LoadedModel, LoadedModel) {
    let write = |name: &str, lines: &[String]| {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let before = train(&TrainOptions {
        inputs: vec![write("old.log", old)],
        ..request_options()
    })
    .unwrap();
    before.save(&dir.join("old")).unwrap();
    let after = train(&TrainOptions {
        inputs: vec![write("new.log", new)],
        from: Some(dir.join("old")),
        ..request_options()
    })
    .unwrap();
    (before, after)
}

#[test]
fn an_update_whose_logs_start_after_a_gap_does_not_count_the_sessions_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    // Requests that close a few hundred lines after they open: far more than 1 % of a log.
    let old = request_log(0..600, &[], 1_700_000_000, 1, 400);
    // The new logs come a few hours later and start in the middle of requests (a period
    // that was never kept): the requests they start in lack their first lines, and their
    // last lines come well after the new logs' first 1 %.
    let start = 1_700_000_000 + old.len() as i64 + 10_000;
    let new = request_log(600..1200, &[], start, 1, 400);
    let (before, after) = trained_then_updated(dir.path(), &old, &new[300..]);
    assert!(!before.metadata.invariants.is_empty());
    assert_eq!(relations(&after), relations(&before));
}

#[test]
fn an_update_keeps_the_longest_pause_and_the_novelty_counts_of_all_its_logs() {
    let dir = tempfile::tempdir().unwrap();
    // The old logs came a line a minute, then (in all the lines the bundle keeps as its
    // replay sample) a line a second, as the new ones do.
    let slow = request_log(0..300, &[], 1_700_000_000, 60, 15);
    let start = 1_700_000_000 + 60 * slow.len() as i64;
    let fast = request_log(300..800, &[], start, 1, 15);
    assert!(fast.len() > 2000);
    let new = request_log(800..1100, &[], start + 10_000, 1, 15);
    let (before, after) = trained_then_updated(dir.path(), &[slow, fast].concat(), &new);
    let gap = before.metadata.training.max_session_gap_secs;
    assert!(gap >= 60, "{gap}");
    assert_eq!(after.metadata.training.max_session_gap_secs, gap);
    // The novelty counts add up too, the new lines once (not the replay sample's again).
    let (old, counts) = (&before.metadata.novelty, &after.metadata.novelty);
    assert_eq!(counts.lines.info, old.lines.info + new.len() as u64);
    assert_eq!(
        counts.later_lines,
        old.later_lines + (new.len() - new.len() / 2) as u64
    );
    // And so does the evidence the class prior's weight is chosen on: the update's held-out
    // events' log-likelihood is added to the bundle's, under every weight.
    let (old, both) = (
        &before.metadata.prior.evidence,
        &after.metadata.prior.evidence,
    );
    assert_eq!(old.len(), both.len());
    assert!(
        old.iter().zip(both).all(|(old, both)| both < old),
        "{old:?} {both:?}"
    );
}
