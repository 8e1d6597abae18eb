use super::*;

fn info(vocabulary: &mut Vocabulary, text: &str, class: Option<usize>) -> TemplateInfo {
    TemplateInfo {
        id: vocabulary.next_id(),
        text: text.into(),
        class,
        variant: false,
        family: None,
        statement: None,
        vector: vec![0.0; 8],
        reconstruction_error: 0.0,
        severity: Severity::Info,
    }
}

#[test]
fn novelty_is_learned_per_severity() {
    // Earlier half: templates 0 and 1; later half: 0 again, a new info line (2) twice.
    let lines = [
        (0, Severity::Info),
        (1, Severity::Error),
        (0, Severity::Info),
        (2, Severity::Info),
        (2, Severity::Info),
        (0, Severity::Info),
    ];
    let stats = NoveltyStats::learn(&lines, 0);
    assert_eq!(stats.later_lines, 3);
    assert_eq!(stats.later_new.info, 2);
    assert_eq!(stats.lines.error, 1);
    // New info lines were common, a new error never seen: the error is far more surprising.
    assert!(
        stats.new_template_surprise(Severity::Error)
            > stats.new_template_surprise(Severity::Info) + 1.0
    );
    // A system where new error templates never came keeps them suspicious once learned.
    assert!(stats.lasting_novelty(Severity::Error) >= stats.lasting_novelty(Severity::Info));
}

#[test]
fn an_updated_bundles_templates_are_no_news_in_its_new_logs() {
    // The bundle knew templates 0 to 2; in the new logs only 3 is new.
    let lines = [
        (0, Severity::Info),
        (0, Severity::Info),
        (2, Severity::Info),
        (3, Severity::Info),
    ];
    assert_eq!(NoveltyStats::learn(&lines, 0).later_new.info, 2);
    assert_eq!(NoveltyStats::learn(&lines, 3).later_new.info, 1);
}

#[test]
fn a_new_template_is_as_surprising_as_new_templates_at_least_as_severe() {
    // The later half brings new fatal lines often and new errors or warnings never.
    let mut lines: Vec<(u32, Severity)> = (0..100).map(|i| (i % 4, Severity::Info)).collect();
    lines.extend((0..100).map(|i| {
        if i % 10 == 0 {
            (1000 + i, Severity::Fatal)
        } else {
            (i % 4, Severity::Info)
        }
    }));
    let stats = NoveltyStats::learn(&lines, 0);
    assert_eq!(stats.later_new.fatal, 10);
    assert_eq!(stats.later_new.error, 0);
    let surprise = |severity| stats.new_template_surprise(severity);
    // A system that keeps bringing new fatal statements brings new errors as a matter of
    // course: a new error is no more surprising than a new fatal line.
    assert!((surprise(Severity::Error) - surprise(Severity::Fatal)).abs() < 1e-12);
    assert!((surprise(Severity::Warn) - surprise(Severity::Fatal)).abs() < 1e-12);
    assert!(
        surprise(Severity::Error) < 3.0,
        "{}",
        surprise(Severity::Error)
    );
    // The surprise never falls as the severity rises.
    for pair in Severity::ALL.windows(2) {
        assert!(surprise(pair[0]) <= surprise(pair[1]), "{pair:?}");
    }
}

#[test]
fn a_system_that_never_changes_makes_novelty_expensive() {
    let steady: Vec<(u32, Severity)> = (0..20_000).map(|i| (i % 7, Severity::Info)).collect();
    let churning: Vec<(u32, Severity)> = (0..20_000).map(|i| (i / 3, Severity::Info)).collect();
    let steady = NoveltyStats::learn(&steady, 0).new_template_surprise(Severity::Info);
    let churning = NoveltyStats::learn(&churning, 0).new_template_surprise(Severity::Info);
    assert!(steady > 9.0, "{steady}");
    assert!(churning < 0.5, "{churning}");
}

#[test]
fn online_templates_count_and_are_evicted_least_recent_first() {
    let mut v = Vocabulary::new(VocabularyLimits {
        max_templates: 10,
        max_bytes: usize::MAX,
    });
    let known = info(&mut v, "known", Some(0));
    v.insert(known);
    let mut held = Vec::new();
    for i in 0..10 {
        let t = info(&mut v, &format!("t{i}"), None);
        held.push(v.insert(t));
        v.observe(&format!("t{i}"), i + 1);
    }
    assert_eq!(v.observe("t3", 20).map(|o| o.count), Some(1));
    assert_eq!(v.observe("t3", 21).map(|o| o.count), Some(2));
    assert_eq!(v.observe("known", 22), None);
    // An eleventh template: over the limit, down to 9, the least recently seen go first.
    let t = info(&mut v, "t10", None);
    v.insert(t);
    assert_eq!(v.online_len(), 9);
    assert_eq!(v.evicted(), 2);
    assert!(v.get("t0").is_none() && v.get("t1").is_none());
    assert!(v.get("t3").is_some() && v.get("t10").is_some());
    assert!(v.get("known").is_some());
    // Evicted templates stay valid for whoever holds them.
    assert_eq!(&*held[0].text, "t0");
}

#[test]
fn a_variant_of_an_online_template_shares_its_occurrences() {
    let mut v = Vocabulary::new(VocabularyLimits::default());
    let first = "disk <NUM> of pool alpha degraded";
    let t = info(&mut v, first, None);
    v.insert(t);
    v.observe(first, 10);
    v.observe(first, 11);
    // One word different: the same statement.
    let variant = "disk <NUM> of pool beta degraded";
    assert_eq!(v.family_of(variant).as_deref(), Some(first));
    let mut t = info(&mut v, variant, None);
    t.family = v.family_of(variant);
    v.insert(t);
    let before = v.observe(variant, 12).expect("online");
    assert_eq!((before.count, before.first_seen), (2, 10));
    assert_eq!(v.observe(first, 13).map(|o| o.count), Some(3));
    // Two words different, or another level, is another statement.
    assert!(v.family_of("disk <NUM> of array beta degraded").is_none());
    assert!(v.family_of("disk <NUM> of pool alpha ERROR").is_none());
    // A level word that leaves the line's level as it was is a field (a status).
    let status = "switch ERROR port <NUM> link ok";
    let t = info(&mut v, status, None);
    v.insert(t);
    v.observe(status, 12);
    let same_level = "switch ERROR port <NUM> link error";
    assert_eq!(v.family_of(same_level).as_deref(), Some(status));

    // After a restart, restored in the order first seen, the family counts again.
    let mut restored = Vocabulary::new(VocabularyLimits::default());
    let mut online: Vec<(String, Occurrences)> =
        v.online().map(|(t, o)| (t.to_string(), o)).collect();
    online.sort_by_key(|(_, o)| o.first_seen);
    for (text, seen) in &online {
        let mut t = info(&mut restored, text, None);
        t.family = restored.family_of(text);
        restored.insert(t);
        restored.restore(text, *seen);
    }
    assert_eq!(restored.observe(variant, 14).map(|o| o.count), Some(4));
}

#[test]
fn what_follows_an_online_template_is_counted_for_its_family_and_bounded() {
    let mut vocabulary = Vocabulary::new(VocabularyLimits::default());
    let first = info(&mut vocabulary, "disk alpha rebuilt", None);
    vocabulary.insert(first);
    let mut variant = info(&mut vocabulary, "disk beta rebuilt", None);
    variant.family = vocabulary.family_of("disk beta rebuilt");
    assert!(variant.family.is_some());
    vocabulary.insert(variant);
    let known = info(&mut vocabulary, "job done", Some(0));
    vocabulary.insert(known);

    let done = || Next::Template("job done".into());
    assert_eq!(
        vocabulary.follow("job done", done()),
        None,
        "a training template"
    );
    assert_eq!(
        vocabulary.follow("disk alpha rebuilt", done()),
        Some((0, 0))
    );
    assert_eq!(vocabulary.follow("disk beta rebuilt", done()), Some((1, 1)));
    assert_eq!(
        vocabulary.follow("disk alpha rebuilt", Next::End),
        Some((0, 2))
    );
    assert_eq!(
        vocabulary.follow("disk alpha rebuilt", done()),
        Some((2, 3))
    );
    // Past the remembered successors, a new one counts in the total only.
    for i in 0..2 * MAX_FOLLOWERS {
        let next = Next::Template(format!("step {i}").into());
        vocabulary.follow("disk alpha rebuilt", next);
    }
    let late = Next::Template(format!("step {}", 2 * MAX_FOLLOWERS - 1).into());
    let total = 4 + 2 * MAX_FOLLOWERS as u32;
    assert_eq!(
        vocabulary.follow("disk alpha rebuilt", late),
        None,
        "one of the successors past the remembered ones: how often it came is not known"
    );
    assert_eq!(
        vocabulary.follow("disk alpha rebuilt", done()),
        Some((3, total + 1))
    );

    // Kept across a restart by the first of the family.
    let saved = vocabulary.followers();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].0, "disk alpha rebuilt");
    assert_eq!(saved[0].1.next.len(), MAX_FOLLOWERS);
    assert_eq!(saved[0].1.next[1], (None, 1), "the end of a session");
    let mut restored = Vocabulary::new(VocabularyLimits::default());
    let first = info(&mut restored, "disk alpha rebuilt", None);
    restored.insert(first);
    restored.restore_followers(&saved[0].0, &saved[0].1, &[]);
    assert_eq!(
        restored.follow("disk alpha rebuilt", done()),
        Some((4, total + 2))
    );
}

#[test]
fn the_byte_bound_holds() {
    let mut v = Vocabulary::new(VocabularyLimits {
        max_templates: usize::MAX,
        max_bytes: 64 << 10,
    });
    for i in 0..10_000u64 {
        let text = format!("request served by worker {i:0>200}");
        let t = info(&mut v, &text, None);
        v.insert(t);
        v.observe(&text, i + 1);
        assert!(v.online_bytes() <= 64 << 10);
    }
    assert!(v.evicted() > 9_000);
}

#[test]
fn a_family_takes_the_words_its_variants_differ_in_as_fields() {
    let mut v = Vocabulary::new(VocabularyLimits::default());
    let add = |v: &mut Vocabulary, text: &str| {
        let mut t = info(v, text, None);
        t.family = v.family_of(text);
        let family = t.family.clone();
        v.insert(t);
        family
    };
    // Eight words: two of them may be fields.
    let head = "WARN [main] retrying call to billing attempt <NUM>";
    assert_eq!(add(&mut v, head), None);
    // The service varies, then the thread: each one word away from the family's pattern...
    let auth = "WARN [main] retrying call to auth attempt <NUM>";
    assert_eq!(add(&mut v, auth).as_deref(), Some(head));
    // ...though two from its first template.
    let search = "WARN [worker] retrying call to search attempt <NUM>";
    assert_eq!(add(&mut v, search).as_deref(), Some(head));
    // Where the fields are, any word.
    let storage = "WARN [io] retrying call to storage attempt <NUM>";
    assert_eq!(v.family_of(storage).as_deref(), Some(head));
    // The pattern holds its two fields: a third word that differs is another statement.
    assert_eq!(
        v.family_of("WARN [main] retrying query to billing attempt <NUM>"),
        None
    );
    // They count their occurrences together.
    v.observe(head, 1);
    v.observe(auth, 2);
    assert_eq!(v.observe(search, 3).map(|o| o.count), Some(2));
}
