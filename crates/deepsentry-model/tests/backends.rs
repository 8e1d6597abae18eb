//! One bundle, every backend: the shipped default model scores the same stream on each
//! backend this build has, and the scores must agree. burn dispatches on the device, so the
//! model code is the same everywhere; this catches a backend whose kernels compute something
//! else (precision, a reduction order gone wrong, a missing op).

use std::path::PathBuf;
use std::sync::Arc;

use deepsentry_core::anomaly;
use deepsentry_core::{Event, Origin, Value};
use deepsentry_loggen::HdfsGenerator;
use deepsentry_model::{BackendKind, LoadedModel, Scorer, ScorerSettings, SessionKey};
use regex::Regex;

/// How far two backends' scores (in nats) may drift apart.
const TOLERANCE: f64 = 1e-4;

fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/default")
}

/// Scores of a demo stream with injected faults (unseen templates, cut sessions) on `backend`.
fn scores(model: LoadedModel) -> Vec<f64> {
    let settings = ScorerSettings {
        window_size: 100,
        threshold_multiplier: 2.5,
        min_samples: 20,
        exclude_anomalies: true,
        threshold_floor: None,
        session_key: SessionKey::Regex(Regex::new(r"blk_-?\d+").unwrap()),
        session_ttl_secs: 3600,
        max_sessions: 100_000,
        ..ScorerSettings::default()
    };
    let mut scorer = Scorer::new(Arc::new(model), settings);
    let origin = Origin::new("test", "demo");
    let now = chrono::Utc::now();
    let events: Vec<Event> = HdfsGenerator::new(7, 0.2, 8)
        .take(3000)
        .map(|line| Event::from_str(&line.text, now, Arc::clone(&origin)))
        .collect();
    let mut out = Vec::new();
    for chunk in events.chunks(500) {
        out.extend(scorer.process(chunk.to_vec()));
    }
    out.extend(scorer.finish());
    out.iter()
        .map(|e| match e.fields.get(anomaly::ANOMALY_SCORE) {
            Some(Value::Float(score)) => *score,
            other => panic!("event without a score: {other:?}"),
        })
        .collect()
}

fn assert_agree(reference: &[f64], other: &[f64], name: &str) {
    assert_eq!(reference.len(), other.len(), "{name}: event counts differ");
    let (worst, at) = reference
        .iter()
        .zip(other)
        .enumerate()
        .map(|(i, (a, b))| ((a - b).abs(), i))
        .fold((0.0, 0), |m, d| if d.0 > m.0 { d } else { m });
    assert!(
        worst <= TOLERANCE,
        "{name}: event {at} scores {} vs {} on ndarray (difference {worst:e})",
        other[at],
        reference[at]
    );
    eprintln!(
        "{name} agrees with ndarray on {} scores (largest difference {worst:e})",
        reference.len()
    );
}

#[test]
fn flex_and_ndarray_agree() {
    let ndarray = scores(LoadedModel::load(&default_model(), BackendKind::Ndarray).unwrap());
    let flex = scores(LoadedModel::load(&default_model(), BackendKind::Flex).unwrap());
    assert!(ndarray.len() > 3000, "the stream gained its session ends");
    assert_agree(&ndarray, &flex, "flex");
}

/// Runs wherever a wgpu adapter answers (CI installs Mesa's software Vulkan driver); says why
/// when none does.
#[cfg(feature = "gpu")]
#[test]
fn wgpu_and_ndarray_agree() {
    let model = match LoadedModel::load(&default_model(), BackendKind::Wgpu) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("wgpu_and_ndarray_agree: skipped, {e:#}");
            return;
        }
    };
    let ndarray = scores(LoadedModel::load(&default_model(), BackendKind::Ndarray).unwrap());
    assert_agree(&ndarray, &scores(model), "wgpu");
}
