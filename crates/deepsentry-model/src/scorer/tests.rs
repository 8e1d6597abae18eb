use super::*;
use crate::invariants::Invariant;
use crate::novelty::{NoveltyStats, TemplateRef, VocabularyLimits};
use deepsentry_core::anomaly;
use regex::Regex;

/// Test models' classes: whatever the normalizer makes of the rest of a line, its first
/// word decides.
fn by_first_word(known: &[String], templates: &[&str]) -> Vec<Embedded> {
    templates
        .iter()
        .map(|template| Embedded {
            vector: vec![0.0],
            error: 0.0,
            class: known
                .iter()
                .position(|t| template.split(' ').next() == Some(t.as_str())),
            variant: false,
        })
        .collect()
}

/// Two templates, `open` and `close`, that must come in pairs; every continuation equally
/// likely, so only the invariant can flag anything.
struct PairedModel {
    invariants: Vec<Invariant>,
    templates: Vec<String>,
    novelty: NoveltyStats,
}

impl PairedModel {
    fn new() -> Self {
        Self {
            invariants: vec![Invariant {
                terms: vec![(0, 1), (1, -1)],
                support: 100,
                violations: 0,
            }],
            templates: vec!["open".into(), "close".into()],
            novelty: NoveltyStats::default(),
        }
    }
}

impl SequenceModel for PairedModel {
    fn sequence_length(&self) -> usize {
        2
    }
    fn end_class(&self) -> usize {
        2
    }
    fn embed(&self, templates: &[&str]) -> Vec<Embedded> {
        by_first_word(&self.templates, templates)
    }
    fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>> {
        windows.iter().map(|_| vec![(0.25f32).ln(); 4]).collect()
    }
    fn score_floor(&self) -> f64 {
        5.0
    }
    fn novelty(&self) -> &NoveltyStats {
        &self.novelty
    }
    fn invariants(&self) -> &[Invariant] {
        &self.invariants
    }
    fn templates(&self) -> &[String] {
        &self.templates
    }
}

fn scorer() -> Scorer<Box<PairedModel>> {
    Scorer::new(
        Box::new(PairedModel::new()),
        ScorerSettings {
            window_size: 100,
            threshold_multiplier: 2.5,
            min_samples: 0,
            exclude_anomalies: true,
            threshold_floor: None,
            session_key: SessionKey::Regex(Regex::new(r"s\d+").unwrap()),
            session_ttl_secs: 3600,
            max_sessions: 100,
            alert_group_secs: 60,
            vocabulary: VocabularyLimits::default(),
            ..ScorerSettings::default()
        },
    )
}

fn events(lines: &[&str]) -> Vec<Event> {
    let origin = Origin::new("test", "test");
    let now = chrono::Utc::now();
    lines
        .iter()
        .map(|l| Event::from_str(l, now, Arc::clone(&origin)))
        .collect()
}

#[test]
fn a_line_dated_far_ahead_does_not_end_the_open_sessions() {
    let mut scorer = scorer();
    let ends = |events: &[Event]| {
        events
            .iter()
            .filter(|e| e.fields.get(anomaly::SESSION_END).is_some())
            .count()
    };
    let scored = scorer.process(events(&[
        "2024-01-01T00:00:00Z open s1",
        "2024-01-01T00:00:01Z open s2",
        "2999-01-01T00:00:00Z open s3",
        "2024-01-01T00:00:02Z close s1",
    ]));
    assert_eq!(ends(&scored), 0, "a wrong date ends nothing");
    // The log clock still moves with believable times: two hours on, all three are idle.
    let scored = scorer.process(events(&["2024-01-01T02:00:00Z open s4"]));
    assert_eq!(ends(&scored), 3);
}

#[test]
fn batches_prepared_apart_and_joined_score_as_one() {
    let lines = [
        "open s1",
        "open s2",
        "close s1",
        "novel word s3",
        "open s2",
        "close s2",
    ];
    let fields = |events: Vec<Event>| -> Vec<(String, Vec<(String, Value)>)> {
        events
            .into_iter()
            .map(|e| {
                let mut fields: Vec<(String, Value)> = e
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                (e.message().to_string(), fields)
            })
            .collect()
    };
    let mut whole = scorer();
    let mut expected = whole.process(events(&lines));
    expected.extend(whole.finish());

    let mut joined = scorer();
    let preparer = joined.preparer();
    let mut prepared = preparer.prepare(events(&lines[..2]));
    let second = preparer.prepare(events(&lines[2..]));
    assert_eq!((prepared.len(), second.len()), (2, 4));
    prepared.append(second);
    let mut scored = joined.process_prepared(prepared);
    scored.extend(joined.finish());
    assert_eq!(
        scored.len(),
        lines.len() + 3,
        "every line and the three session ends"
    );
    assert_eq!(fields(scored), fields(expected));
}

#[test]
fn a_session_ending_out_of_balance_is_flagged_and_explained() {
    let mut scorer = scorer();
    let scored = scorer.process(events(&[
        "open s1", "open s2", "close s1", "open s2", "close s2",
    ]));
    assert!(scored
        .iter()
        .all(|e| e.fields.get(anomaly::IS_ANOMALY) == Some(&Value::Bool(false))));
    let ends = scorer.finish();
    assert_eq!(ends.len(), 2);
    let end = |name: &str| {
        ends.iter()
            .find(|e| e.fields.get(anomaly::SESSION) == Some(&Value::Str(name.into())))
            .unwrap()
    };
    let balanced = end("s1");
    assert_eq!(
        balanced.fields.get(anomaly::IS_ANOMALY),
        Some(&Value::Bool(false))
    );
    assert_eq!(balanced.fields.get(anomaly::BROKEN_INVARIANT), None);
    let broken = end("s2");
    assert_eq!(
        broken.fields.get(anomaly::IS_ANOMALY),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        broken.fields.get(anomaly::ANOMALY_SCORE),
        Some(&Value::Float(MAX_SURPRISE))
    );
    assert_eq!(
        broken.fields.get(anomaly::BROKEN_INVARIANT),
        Some(&Value::Str(
            "count(`open`) = count(`close`) (here 2 vs 1)".into()
        ))
    );
    assert!(broken.message().ends_with(
        "after 3 lines; counts out of balance: count(`open`) = count(`close`) (here 2 vs 1)"
    ));
    assert_eq!(scorer.stats().broken_invariants, 1);
}

#[test]
fn sessions_open_at_a_model_swap_are_not_judged_by_counts_begun_under_the_old_model() {
    let mut scorer = scorer();
    scorer.process(events(&["open s1", "open s2", "close s2"]));
    scorer.replace_model(Box::new(PairedModel::new())).unwrap();
    // s1 closes after the swap; s3 lives wholly under the new model and ends unbalanced.
    scorer.process(events(&["close s1", "open s3", "open s3", "close s3"]));
    let ends = scorer.finish();
    let broken: Vec<String> = ends
        .iter()
        .filter(|e| e.fields.get(anomaly::BROKEN_INVARIANT).is_some())
        .map(|e| text(e, anomaly::SESSION))
        .collect();
    assert_eq!(broken, ["s3"]);
}

/// Known templates `alpha` and `beta` (the first word decides); after any window the
/// detector expects `alpha` (p 0.9), `beta` less (0.09). Its training saw `later_new` new
/// info templates in `later` lines.
struct SteadyModel {
    templates: Vec<String>,
    novelty: NoveltyStats,
    /// The probabilities of every window: each class, the end, the unseen class.
    row: Vec<f32>,
}

impl SteadyModel {
    fn new(later: u64, later_new: u64) -> Self {
        let mut novelty = NoveltyStats {
            later_lines: later,
            ..NoveltyStats::default()
        };
        novelty.lines.info = 2 * later;
        novelty.later_new.info = later_new;
        Self {
            templates: vec!["alpha".into(), "beta".into()],
            novelty,
            row: vec![0.9f32.ln(), 0.09f32.ln(), 0.005f32.ln(), 0.005f32.ln()],
        }
    }

    /// The same model retrained on logs where `word` lines are as common as `alpha`.
    fn knowing(word: &str) -> Self {
        let mut model = Self::new(20_000, 0);
        model.templates.push(word.into());
        model.row = [0.45f32, 0.09, 0.45, 0.005, 0.005]
            .iter()
            .map(|p| p.ln())
            .collect();
        model
    }
}

impl SequenceModel for SteadyModel {
    fn sequence_length(&self) -> usize {
        3
    }
    fn end_class(&self) -> usize {
        self.templates.len()
    }
    fn embed(&self, templates: &[&str]) -> Vec<Embedded> {
        by_first_word(&self.templates, templates)
    }
    fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>> {
        windows.iter().map(|_| self.row.clone()).collect()
    }
    fn score_floor(&self) -> f64 {
        5.0
    }
    fn novelty(&self) -> &NoveltyStats {
        &self.novelty
    }
    fn templates(&self) -> &[String] {
        &self.templates
    }
}

fn steady(later: u64, later_new: u64) -> Scorer<Box<SteadyModel>> {
    Scorer::new(
        Box::new(SteadyModel::new(later, later_new)),
        ScorerSettings {
            min_samples: 0,
            ..ScorerSettings::default()
        },
    )
}

fn text(event: &Event, key: &str) -> String {
    event
        .fields
        .get(key)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn flagged(event: &Event) -> bool {
    event.fields.get(anomaly::IS_ANOMALY) == Some(&Value::Bool(true))
}

/// `lines` of normal traffic with `line(i)` in place of every `every`-th one.
fn stream(lines: usize, every: usize, line: impl Fn(usize) -> String) -> Vec<String> {
    (0..lines)
        .map(|i| {
            if i % every == every - 1 {
                line(i)
            } else {
                ["alpha step", "alpha step", "beta step"][i % 3].to_string()
            }
        })
        .collect()
}

fn score_all(scorer: &mut Scorer<Box<SteadyModel>>, lines: &[String]) -> Vec<Event> {
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    refs.chunks(16)
        .flat_map(|chunk| scorer.process(events(chunk)))
        .collect()
}

#[test]
fn a_new_template_that_turns_common_is_flagged_a_few_times_then_learned() {
    // A system whose training never brought a new template in 20,000 lines.
    let mut scorer = steady(20_000, 0);
    let lines = stream(300, 4, |i| format!("cache warmed in {i} ms"));
    let scored = score_all(&mut scorer, &lines);
    let new: Vec<&Event> = scored
        .iter()
        .filter(|e| e.message().starts_with("cache warmed"))
        .collect();
    assert_eq!(new.len(), 75);
    assert!(flagged(new[0]), "flagged when it first appears");
    assert_eq!(text(new[0], anomaly::ANOMALY_REASON), "new_template");
    assert_eq!(text(new[0], anomaly::TEMPLATE), "cache warmed in <NUM> ms");
    let flags = new.iter().filter(|e| flagged(e)).count();
    assert!((1..=5).contains(&flags), "{flags} flags");
    assert!(
        new[5..].iter().all(|e| !flagged(e)),
        "not flagged from its sixth occurrence on"
    );
    // The known lines around it stay quiet.
    assert!(scored
        .iter()
        .filter(|e| e.message().starts_with("alpha"))
        .all(|e| !flagged(e)));
    assert_eq!(scorer.stats().templates_learned, 1);
}

#[test]
fn a_new_template_that_stays_rare_keeps_scoring_high() {
    let mut scorer = steady(20_000, 0);
    let lines = stream(4000, 400, |_| "fan speed critical".to_string());
    let scored = score_all(&mut scorer, &lines);
    let rare: Vec<&Event> = scored
        .iter()
        .filter(|e| e.message().starts_with("fan speed"))
        .collect();
    assert_eq!(rare.len(), 10);
    assert!(rare.iter().all(|e| flagged(e)));
    assert_eq!(text(rare[9], anomaly::ANOMALY_REASON), "rare_template");
}

#[test]
fn a_system_that_keeps_bringing_new_templates_is_not_alarmed_by_one() {
    // A quarter of the later training lines had templates the earlier part never showed.
    let mut scorer = steady(20_000, 5_000);
    let lines = stream(300, 4, |i| format!("user {i} opened page number{}", i % 7));
    let scored = score_all(&mut scorer, &lines);
    assert!(scored.iter().all(|e| !flagged(e)));
}

#[test]
fn variants_of_a_new_template_are_one_statement() {
    // One new statement whose one field is a word the normalizer cannot mask.
    let mut scorer = steady(20_000, 0);
    let names = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"];
    let lines = stream(280, 4, |i| {
        format!("disk array {} rebuilt ok", names[i % 7])
    });
    let scored = score_all(&mut scorer, &lines);
    let new: Vec<&Event> = scored
        .iter()
        .filter(|e| e.message().starts_with("disk array"))
        .collect();
    assert_eq!(new.len(), 70);
    let flags = new.iter().filter(|e| flagged(e)).count();
    assert!((1..=5).contains(&flags), "{flags} flags");
    let alerts = new
        .iter()
        .filter(|e| e.fields.get(anomaly::ALERT) == Some(&Value::Bool(true)))
        .count();
    assert_eq!(alerts, 1, "one alert for the statement");
    // Each event still names its own template.
    assert!(new
        .iter()
        .all(|e| text(e, anomaly::TEMPLATE) == e.message()));
}

#[test]
fn what_was_learned_online_survives_a_restart() {
    let mut first = steady(20_000, 0);
    score_all(&mut first, &stream(120, 4, |_| "cache warmed".into()));
    let state = first.online_state();
    assert_eq!(state.templates.len(), 1);
    assert_eq!(state.templates[0].1.count, 30);
    let json = serde_json::to_string(&state).unwrap();
    let mut second = steady(20_000, 0);
    second.restore_online_state(serde_json::from_str(&json).unwrap());
    let scored = score_all(&mut second, &stream(40, 4, |_| "cache warmed".into()));
    assert!(
        scored.iter().all(|e| !flagged(e)),
        "a learned template is not new after a restart"
    );
    // A fresh scorer without the state flags it again.
    let mut fresh = steady(20_000, 0);
    let scored = score_all(&mut fresh, &stream(40, 4, |_| "cache warmed".into()));
    assert!(scored.iter().any(flagged));
}

/// `sessions` keyed sessions in each of which `beta` comes right after `cache warmed`, a
/// template the training never showed.
fn followed_sessions(sessions: usize) -> Vec<String> {
    (0..sessions)
        .flat_map(|i| ["alpha step", "cache warmed", "beta step"].map(|l| format!("{l} req={i}")))
        .collect()
}

fn keyed(session_key: SessionKey) -> Scorer<Box<SteadyModel>> {
    keyed_above(session_key, None)
}

/// A scorer of [`SteadyModel`] with no warm-up, sessions by `session_key` and the floor
/// `threshold_floor` (the model's where `None`).
fn keyed_above(session_key: SessionKey, threshold_floor: Option<f64>) -> Scorer<Box<SteadyModel>> {
    Scorer::new(
        Box::new(SteadyModel::new(20_000, 0)),
        ScorerSettings {
            min_samples: 0,
            session_key,
            threshold_floor,
            ..ScorerSettings::default()
        },
    )
}

/// The scores of the `beta` lines of [`followed_sessions`].
fn beta_scores(scorer: &mut Scorer<Box<SteadyModel>>, sessions: usize) -> Vec<f64> {
    score_all(scorer, &followed_sessions(sessions))
        .iter()
        .filter(|e| e.message().starts_with("beta"))
        .map(|e| match e.fields.get(anomaly::ANOMALY_SCORE) {
            Some(Value::Float(score)) => *score,
            other => panic!("no score: {other:?}"),
        })
        .collect()
}

#[test]
fn what_follows_a_new_template_in_its_sessions_is_learned() {
    let by_request = || SessionKey::Regex(Regex::new(r"req=(\d+)").unwrap());
    let detector = -0.09f64.ln();
    let mut scorer = keyed(by_request());
    let scores = beta_scores(&mut scorer, 20);
    assert_eq!(scorer.online_state().templates.len(), 1);
    assert!((scores[0] - detector).abs() < 1e-6, "nothing counted yet");
    assert!(
        scores.windows(2).all(|w| w[1] < w[0]),
        "less surprising each time: {scores:?}"
    );
    assert!(scores[19] < 0.3, "{scores:?}");
    // What it names as expected after the new template is what came, not the detector's
    // first choice (`alpha`, 0.9).
    let cache = scorer.vocabulary.online().next().unwrap().0.to_string();
    let row = scorer.model.row.clone();
    let expected = scorer.expected(scorer.vocabulary.followers_of(&cache), &row);
    let first = &expected.to_string();
    assert!(
        first.starts_with(r#"[{"p":0.8"#) && first.contains(r#""template":"beta"}"#),
        "{first}"
    );
    let detector_only = scorer.expected(None, &row).to_string();
    assert!(
        detector_only.starts_with(r#"[{"p":0.9,"template":"alpha"}"#),
        "{detector_only}"
    );

    // Kept across a restart.
    let state = scorer.online_state();
    assert_eq!(state.followers.len(), 1);
    // The online template is written once and named by its place; `beta`, a training
    // template, by its text.
    assert_eq!(state.followers[0].0, TemplateRef::Place(0));
    assert!(
        state.followers[0].1.next.iter().any(
            |(next, _)| matches!(next, Some(TemplateRef::Text(t)) if t.starts_with("beta step"))
        ),
        "{state:?}"
    );
    let json = serde_json::to_string(&state).unwrap();
    let mut restarted = keyed(by_request());
    restarted.restore_online_state(serde_json::from_str(&json).unwrap());
    assert!(beta_scores(&mut restarted, 1)[0] < 0.3);
    // A file that names templates by their texts (as earlier versions wrote) reads the same.
    let mut by_text = state.clone();
    by_text.followers[0].0 = TemplateRef::Text(cache.clone());
    let json = serde_json::to_string(&by_text).unwrap();
    assert!(json.contains(r#""followers":[["cache warmed"#), "{json}");
    let mut restarted = keyed(by_request());
    restarted.restore_online_state(serde_json::from_str(&json).unwrap());
    assert!(beta_scores(&mut restarted, 1)[0] < 0.3);

    // In one stream the next line is mostly another request's: not counted.
    let mut stream = keyed(SessionKey::Stream);
    let scores = beta_scores(&mut stream, 20);
    assert!(scores.iter().all(|s| (s - detector).abs() < 1e-6));
    assert!(stream.online_state().followers.is_empty());
}

#[test]
fn what_was_expected_is_what_had_come_before_the_event_not_after_its_batch() {
    // Twenty sessions in one batch: `beta` after the new `cache warmed` line is unlikely to
    // the detector (p 0.09, 2.4 nats, over a floor of 2), and the first one is flagged.
    let by_request = SessionKey::Regex(Regex::new(r"req=(\d+)").unwrap());
    let mut scorer = keyed_above(by_request, Some(2.0));
    let lines = followed_sessions(20);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let scored = scorer.process(events(&refs));
    let first_beta = scored
        .iter()
        .find(|e| e.message().starts_with("beta"))
        .unwrap();
    assert!(flagged(first_beta));
    assert_eq!(text(first_beta, anomaly::ANOMALY_REASON), "unlikely_next");
    // Nothing had come after `cache warmed` yet: the detector's own first choice, although
    // the same batch then brought nineteen more `beta` lines after it.
    let Some(Value::Json(expected)) = first_beta.fields.get(anomaly::EXPECTED) else {
        panic!("no expected templates: {first_beta:?}");
    };
    assert!(
        expected
            .to_string()
            .starts_with(r#"[{"p":0.9,"template":"alpha"}"#),
        "{expected}"
    );
}

#[test]
fn a_model_that_does_not_fit_the_log_learns_its_novelty_from_the_stream() {
    // A model of a system that never brought a new template, on the log of another system:
    // forty statements it never saw, in turn, each unlike the others in every word.
    let letter = |i: usize| char::from(b'a' + (i % 26) as u8);
    let statement = |k: usize| {
        (0..4)
            .map(|j| format!("{}{}{}", letter(k / 26), letter(k), letter(j + 7)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let lines: Vec<String> = (0..600).map(|i| statement(i % 40)).collect();
    let mut scorer = steady(20_000, 0);
    let scored = score_all(&mut scorer, &lines);
    assert!(!scorer.stats().model_fits);
    assert_eq!(scorer.stats().unknown_lines, 600);
    let first = scored[..FIT_CHECK_LINES as usize]
        .iter()
        .filter(|e| flagged(e))
        .count();
    assert!(
        first > 20,
        "judged by the model's novelty at first: {first} flags"
    );
    // Once judged, a new template is as surprising as this stream makes it: not at all.
    let later: Vec<&Event> = scored[FIT_CHECK_LINES as usize..]
        .iter()
        .filter(|e| flagged(e))
        .collect();
    assert!(later.is_empty(), "{later:?}");

    // A log of the model's own system, with a new statement now and then, fits.
    let mut fitting = steady(20_000, 0);
    let scored = score_all(&mut fitting, &stream(600, 50, |_| "cache warmed".into()));
    assert!(fitting.stats().model_fits);
    assert!(scored.iter().any(flagged), "its new statement is news");

    // A restart goes on judging where it was, under the same model, not under another.
    let json = serde_json::to_string(&scorer.online_state()).unwrap();
    let mut restarted = steady(20_000, 0);
    restarted.restore_online_state(serde_json::from_str(&json).unwrap());
    assert!(!restarted.stats().model_fits);
    let mut other = Scorer::new(
        Box::new(SteadyModel::knowing("cache")),
        ScorerSettings::default(),
    );
    other.restore_online_state(serde_json::from_str(&json).unwrap());
    assert!(other.stats().model_fits);

    // A new model is judged afresh.
    scorer
        .replace_model(Box::new(SteadyModel::knowing("cache")))
        .unwrap();
    assert!(scorer.stats().model_fits);
}

#[test]
fn a_retrained_model_takes_over_between_batches_with_what_was_learned() {
    let mut scorer = steady(20_000, 0);
    let before = score_all(&mut scorer, &stream(200, 4, |_| "cache warmed".into()));
    assert!(before.iter().any(flagged), "new to the first model");
    assert_eq!(scorer.online_state().templates.len(), 1);
    let learned = scorer.stats().templates_learned;

    scorer
        .replace_model(Box::new(SteadyModel::knowing("cache")))
        .unwrap();
    assert_eq!(scorer.model().templates().len(), 3);
    assert!(
        scorer.online_state().templates.is_empty(),
        "a template the new model knows leaves the online part"
    );
    assert_eq!(scorer.stats().templates_learned, learned);
    let after = score_all(&mut scorer, &stream(200, 2, |_| "cache warmed".into()));
    assert_eq!(after.len(), 200, "every event scored once");
    let cache: Vec<&Event> = after
        .iter()
        .filter(|e| e.message() == "cache warmed")
        .collect();
    assert_eq!(cache.len(), 100);
    assert!(cache.iter().all(|e| !flagged(e)));
    assert!(cache
        .iter()
        .all(|e| text(e, anomaly::ANOMALY_REASON) != "new_template"
            && text(e, anomaly::ANOMALY_REASON) != "rare_template"));
}

#[test]
fn an_unexpected_known_template_says_what_was_expected() {
    let mut scorer = keyed_above(ScorerSettings::default().session_key, Some(2.0));
    // `beta` (p 0.09, 2.4 nats) is above the floor of 2.
    let scored = scorer.process(events(&["alpha a", "beta b"]));
    let beta = &scored[1];
    assert!(flagged(beta));
    assert_eq!(text(beta, anomaly::ANOMALY_REASON), "unlikely_next");
    let Some(Value::Json(expected)) = beta.fields.get(anomaly::EXPECTED) else {
        panic!("no expected templates: {beta:?}");
    };
    assert_eq!(expected[0]["template"], "alpha");
    assert_eq!(expected[0]["p"], 0.9);
    assert_eq!(expected[1]["template"], "beta");
    assert_eq!(expected.as_array().unwrap().len(), 3);
    assert_eq!(text(&scored[0], anomaly::ANOMALY_REASON), "none");
}

#[test]
fn anomalies_of_one_template_and_reason_are_one_alert() {
    let mut scorer = steady(20_000, 0);
    let mut lines = stream(40, 1000, |_| String::new());
    lines.extend(["disk 1 failed".to_string(), "disk 2 failed".to_string()]);
    lines.push("power supply lost".to_string());
    let scored = score_all(&mut scorer, &lines);
    let disk: Vec<&Event> = scored
        .iter()
        .filter(|e| e.message().starts_with("disk"))
        .collect();
    assert!(disk.iter().all(|e| flagged(e)));
    assert_eq!(disk[0].fields.get(anomaly::ALERT), Some(&Value::Bool(true)));
    assert_eq!(
        disk[1].fields.get(anomaly::ALERT),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        disk[1].fields.get(anomaly::ALERT_COUNT),
        Some(&Value::Int(2))
    );
    assert_eq!(
        text(disk[0], anomaly::ALERT_GROUP),
        text(disk[1], anomaly::ALERT_GROUP)
    );
    let power = scored.last().unwrap();
    assert_eq!(power.fields.get(anomaly::ALERT), Some(&Value::Bool(true)));
    assert_ne!(
        text(power, anomaly::ALERT_GROUP),
        text(disk[0], anomaly::ALERT_GROUP)
    );
    assert_eq!(scorer.stats().alerts, 2);
    assert_eq!(scorer.stats().anomalies, 3);
}

/// Whether each of the flagged events of `lines` (scored with `grouping`, the last line from
/// another stream) was sent as an alert.
fn alerts_of_new_templates(grouping: AlertGrouping, lines: &[&str]) -> Vec<(String, bool)> {
    let mut scorer = Scorer::new(
        Box::new(SteadyModel::new(20_000, 0)),
        ScorerSettings {
            min_samples: 0,
            alert_grouping: grouping,
            ..ScorerSettings::default()
        },
    );
    let normal = stream(40, 1000, |_| String::new());
    let normal: Vec<&str> = normal.iter().map(String::as_str).collect();
    scorer.process(events(&normal));
    let mut batch = events(lines);
    let other = Origin::new("test", "other.log");
    batch.last_mut().unwrap().origin = other;
    scorer
        .process(batch)
        .iter()
        .filter(|e| flagged(e))
        .map(|e| {
            let alert = e.fields.get(anomaly::ALERT) == Some(&Value::Bool(true));
            (e.message().to_string(), alert)
        })
        .collect()
}

#[test]
fn new_templates_of_one_severity_in_one_stream_are_one_alert() {
    let lines = [
        "cache warmed",
        "queue drained",
        "disk failed",
        "index rebuilt",
        "cache warmed",
    ];
    let burst = alerts_of_new_templates(AlertGrouping::Burst, &lines);
    let sent: Vec<&str> = burst
        .iter()
        .filter(|(_, alert)| *alert)
        .map(|(m, _)| m.as_str())
        .collect();
    assert_eq!(burst.len(), 5, "every new template is still flagged");
    // The informational burst, the warning, and the same statement in another stream.
    assert_eq!(sent, ["cache warmed", "disk failed", "cache warmed"]);

    let by_template = alerts_of_new_templates(AlertGrouping::Template, &lines);
    let sent = by_template.iter().filter(|(_, alert)| *alert).count();
    assert_eq!(
        sent, 4,
        "one alert per new template (the last one in its own stream)"
    );
}

#[test]
fn the_template_cache_is_bounded_and_ids_held_by_sessions_stay_valid() {
    let mut scorer = Scorer::new(
        Box::new(SteadyModel::new(20_000, 5_000)),
        ScorerSettings {
            min_samples: 0,
            vocabulary: VocabularyLimits {
                max_templates: 100,
                max_bytes: 1 << 20,
            },
            ..ScorerSettings::default()
        },
    );
    // Random words the normalizer cannot mask: every line a new template.
    let mut rng = deepsentry_core::rng::SplitMix64::new(7);
    for _ in 0..50 {
        let lines: Vec<String> = (0..64)
            .map(|_| {
                let word: String = (0..12)
                    .map(|_| char::from(b'a' + (rng.next_u64() % 26) as u8))
                    .collect();
                format!("request served by worker {word}")
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(scorer.process(events(&refs)).len(), 64);
    }
    let stats = scorer.stats();
    assert!(stats.templates <= 2 + 100, "{stats:?}");
    assert!(stats.templates_evicted >= 3000, "{stats:?}");
    assert_eq!(stats.scored, 3200);
}

/// Two templates: `a` starts sessions, `b` never does (one time in 10,000), and either follows
/// anything; both equally common. Whether it judges where sessions begin and end is set.
struct StartModel {
    templates: Vec<String>,
    novelty: NoveltyStats,
    judges_sessions: bool,
}

impl SequenceModel for StartModel {
    fn sequence_length(&self) -> usize {
        3
    }
    fn end_class(&self) -> usize {
        2
    }
    fn embed(&self, templates: &[&str]) -> Vec<Embedded> {
        by_first_word(&self.templates, templates)
    }
    fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>> {
        windows
            .iter()
            .map(|w| match w.is_empty() {
                true => vec![0.9999f32.ln(), 1e-4f32.ln(), 1e-9f32.ln(), 1e-9f32.ln()],
                false => vec![0.45f32.ln(), 0.45f32.ln(), 0.1f32.ln(), 1e-9f32.ln()],
            })
            .collect()
    }
    fn prior(&self, class: usize) -> Option<f32> {
        (class < 2).then_some(0.5)
    }
    fn score_floor(&self) -> f64 {
        5.0
    }
    fn novelty(&self) -> &NoveltyStats {
        &self.novelty
    }
    fn judges_session_ends(&self) -> bool {
        self.judges_sessions
    }
}

#[test]
fn a_split_streams_first_line_of_a_session_is_not_judged_as_its_beginning() {
    let first_score = |judges_sessions: bool, session_key: SessionKey| {
        let model = StartModel {
            templates: vec!["a".into(), "b".into()],
            novelty: NoveltyStats::default(),
            judges_sessions,
        };
        let mut scorer = Scorer::new(
            Box::new(model),
            ScorerSettings {
                session_key,
                min_samples: 0,
                ..ScorerSettings::default()
            },
        );
        let scored = scorer.process(events(&["b s1"]));
        scored[0].fields.number(anomaly::ANOMALY_SCORE).unwrap()
    };
    let key = || SessionKey::Regex(Regex::new(r"s\d+").unwrap());
    // A key found in one stream: the line may be the middle of a session begun before.
    assert!((first_score(false, key()) - 2f64.ln()).abs() < 1e-6);
    // Sessions the model learned whole (HDFS blocks): a block that begins with `b` is news.
    assert!((first_score(true, key()) - 1e4f64.ln()).abs() < 1e-3);
    // One stream keeps its fresh start, as the model's floor was calibrated with it.
    assert!((first_score(false, SessionKey::Stream) - 1e4f64.ln()).abs() < 1e-3);
}
