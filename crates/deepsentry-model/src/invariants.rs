//! Count invariants: linear relations between how often templates occur in one session that
//! hold in (nearly) every training session, such as "as many `Received block` lines as
//! `PacketResponder ... terminating` lines" or "three `Received block` per `allocateBlock`".
//! They are mined at training time (the idea of Lou et al., "Mining Invariants from Console
//! Logs", USENIX ATC 2010) and checked when a session ends: a session whose counts end out of
//! balance did something no training session did, even when every step and every local order
//! looked familiar to the sequence detector (a block replicated twice, a replica written but
//! never acknowledged).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One relation: `sum(coefficient x count(template))` is zero in a normal session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invariant {
    /// `[template class, coefficient]` pairs (classes index the model's template list).
    pub terms: Vec<(usize, i32)>,
    /// Training sessions with at least one of the templates.
    pub support: u64,
    /// Of those, the sessions where the relation did not hold (at most the mining tolerance).
    pub violations: u64,
}

impl Invariant {
    /// `sum(coefficient x count)`, given each template's count in a session.
    pub fn residual(&self, count: impl Fn(usize) -> u32) -> i64 {
        self.terms
            .iter()
            .map(|&(class, coefficient)| i64::from(coefficient) * i64::from(count(class)))
            .sum()
    }

    /// The relation in words, with the session's counts: `count(A) = 3 x count(B) (here 2 vs
    /// 3 x 1)`. Templates lose their line prefix and are cut, to keep alerts readable.
    pub fn describe(&self, templates: &[String], count: impl Fn(usize) -> u32) -> String {
        format!("{} {}", self.relation(templates), self.counts(count))
    }

    /// The relation in words, `count(A) = 3 x count(B)`: the same for every session, so a
    /// scorer words it once.
    pub fn relation(&self, templates: &[String]) -> String {
        let name = |class: usize| {
            let text = templates.get(class).map_or("?", String::as_str);
            // Lines usually lead with a timestamp, a level and a component (`<NUM> INFO
            // dfs.DataNode: `); the message after them is what tells templates apart.
            let text = match text.split_once(": ") {
                Some((_, message)) if !message.is_empty() => message,
                _ => text,
            };
            match text.char_indices().nth(60) {
                Some((cut, _)) => format!("`{}…`", &text[..cut]),
                None => format!("`{text}`"),
            }
        };
        format!(
            "{} = {}",
            self.side(true, |factor, class| format!(
                "{factor}count({})",
                name(class)
            )),
            self.side(false, |factor, class| format!(
                "{factor}count({})",
                name(class)
            ))
        )
    }

    /// A session's counts in the relation's terms: `(here 2 vs 3 x 1)`. Written straight
    /// into one string: every session that ends out of balance pays for it.
    pub fn counts(&self, count: impl Fn(usize) -> u32) -> String {
        use std::fmt::Write;
        let mut out = String::from("(here ");
        for (n, positive) in [true, false].into_iter().enumerate() {
            if n == 1 {
                out.push_str(" vs ");
            }
            for (i, &(class, c)) in self
                .terms
                .iter()
                .filter(|(_, c)| (*c > 0) == positive)
                .enumerate()
            {
                if i > 0 {
                    out.push_str(" + ");
                }
                if c.abs() != 1 {
                    let _ = write!(out, "{} x ", c.abs());
                }
                let _ = write!(out, "{}", count(class));
            }
        }
        out.push(')');
        out
    }

    /// The terms of one side (positive or negative coefficients), each worded by `term`
    /// from its factor (`3 x `, or nothing for 1) and class, joined by ` + `.
    fn side(&self, positive: bool, term: impl Fn(&str, usize) -> String) -> String {
        let parts: Vec<String> = self
            .terms
            .iter()
            .filter(|(_, c)| (*c > 0) == positive)
            .map(|&(class, c)| {
                let factor = if c.abs() == 1 {
                    String::new()
                } else {
                    format!("{} x ", c.abs())
                };
                term(&factor, class)
            })
            .collect();
        parts.join(" + ")
    }
}

/// Limits of the search.
#[derive(Debug, Clone)]
pub struct MiningOptions {
    /// Templates per relation (2 or 3).
    pub max_terms: usize,
    /// Largest coefficient tried.
    pub max_coefficient: i32,
    /// Fewest training sessions a relation (and each of its templates) must be seen in.
    pub min_support: u64,
    /// Share of supporting sessions allowed to break a relation (noise in "normal" data).
    pub tolerance: f64,
    /// Most templates searched (the most frequent ones): the search grows with its cube.
    pub max_templates: usize,
}

impl Default for MiningOptions {
    fn default() -> Self {
        Self {
            max_terms: 3,
            max_coefficient: 3,
            min_support: 10,
            tolerance: 0.001,
            max_templates: 48,
        }
    }
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// Every coefficient vector of `len` non-zero entries up to `max`, first one positive, without
/// a common factor (so each relation appears once).
fn coefficient_vectors(len: usize, max: i32) -> Vec<Vec<i32>> {
    let values: Vec<i32> = (-max..=max).filter(|v| *v != 0).collect();
    let mut out: Vec<Vec<i32>> = (1..=max).map(|v| vec![v]).collect();
    for _ in 1..len {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |&v| {
                    let mut next = prefix.clone();
                    next.push(v);
                    next
                })
            })
            .collect();
    }
    out.retain(|c| c.iter().fold(0, |g, &v| gcd(g, v)) == 1);
    out
}

/// Keeps a set of vectors linearly independent: a new relation that follows from the ones
/// already kept adds nothing to the check and is dropped.
#[derive(Default)]
struct Basis {
    /// Reduced rows, each with its pivot column.
    rows: Vec<(usize, Vec<f64>)>,
}

impl Basis {
    fn insert(&mut self, mut v: Vec<f64>) -> bool {
        for (pivot, row) in &self.rows {
            let factor = v[*pivot] / row[*pivot];
            if factor != 0.0 {
                v.iter_mut().zip(row).for_each(|(x, r)| *x -= factor * r);
            }
        }
        match v.iter().position(|x| x.abs() > 1e-9) {
            Some(pivot) => {
                self.rows.push((pivot, v));
                true
            }
            None => false,
        }
    }
}

/// How many training sessions held one combination of template counts: what invariants are
/// mined from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionCounts {
    /// `[template class, count]` of every template the sessions held, by class.
    pub counts: Vec<(usize, u32)>,
    /// Sessions with exactly these counts.
    pub sessions: u64,
}

impl SessionCounts {
    /// The count combinations of `sessions` (template classes in order), most common first.
    pub fn of<S: AsRef<[u32]>>(sessions: &[S]) -> Vec<SessionCounts> {
        let mut tally = TallyBuilder::default();
        for session in sessions {
            tally.count(&counts_of(session.as_ref()));
        }
        tally.finish(None).counts
    }
}

/// `[template class, count]` of a session's templates, by class.
pub fn counts_of(session: &[u32]) -> Vec<(usize, u32)> {
    // Sorted, then run lengths: a session may be long and hold many templates.
    let mut sorted = session.to_vec();
    sorted.sort_unstable();
    let mut counts: Vec<(usize, u32)> = Vec::new();
    for t in sorted {
        match counts.last_mut() {
            Some((class, n)) if *class == t as usize => *n += 1,
            _ => counts.push((t as usize, 1)),
        }
    }
    counts
}

/// `a` and `b` added up, by class.
pub fn add_counts(a: &[(usize, u32)], b: &[(usize, u32)]) -> Vec<(usize, u32)> {
    let mut sum = a.to_vec();
    for &(class, n) in b {
        match sum.iter_mut().find(|(c, _)| *c == class) {
            Some((_, m)) => *m += n,
            None => sum.push((class, n)),
        }
    }
    sum.sort_unstable();
    sum
}

/// A training session that ran into the end of its logs and may go on in the logs an update
/// brings: its counts so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    /// The session's id, as the session key found it.
    pub name: String,
    /// `[template class, count]` so far, by class.
    pub counts: Vec<(usize, u32)>,
    /// Unix seconds of its last line, where the lines carry a time.
    pub last_at: Option<i64>,
    /// Whether [`SessionTally::counts`] holds it with these counts (it ended far enough from
    /// the end of the logs to look whole).
    pub counted: bool,
}

/// The training sessions' template counts as a bundle keeps them (`sessions.json`), so that
/// an update (`train --from`) mines invariants over its old sessions and its new ones as
/// one training on all the logs would: the new logs of one day alone may hold too few
/// sessions of a rare kind to support a relation the whole history shows, and the sessions
/// that a period's end cut in two would each break relations that hold for the whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionTally {
    /// The count combinations of the sessions counted, most common first.
    pub counts: Vec<SessionCounts>,
    /// The sessions that may go on, most recent last.
    pub open: Vec<OpenSession>,
    /// Unix seconds of the last line counted, where the lines carry a time: an update whose
    /// logs start longer after it than a session pauses did not see what came between, so
    /// the sessions its logs start in the middle of are not whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<i64>,
}

/// Most distinct count combinations a bundle keeps. Sessions of a batch pipeline repeat a few
/// combinations (HDFS blocks: a few hundred); sessions keyed by something long-lived (a
/// thread) may make one per session, and then a bundle keeps no tally rather than grow with
/// the training data.
pub const MAX_COUNT_COMBINATIONS: usize = 4096;
/// Most open sessions a bundle keeps (the most recent): an update counts a session one of
/// them left out from its new lines only, so this bounds the bundle, not correctness.
pub const MAX_OPEN_SESSIONS: usize = 20_000;

/// Builds a [`SessionTally`].
#[derive(Debug, Default)]
pub struct TallyBuilder {
    rows: HashMap<Vec<(usize, u32)>, u64>,
    open: Vec<OpenSession>,
}

impl TallyBuilder {
    /// Starts from what a bundle kept.
    pub fn from_tally(tally: &SessionTally) -> Self {
        Self {
            rows: tally
                .counts
                .iter()
                .map(|row| (row.counts.clone(), row.sessions))
                .collect(),
            open: Vec::new(),
        }
    }

    /// Counts one session.
    pub fn count(&mut self, counts: &[(usize, u32)]) {
        *self.rows.entry(counts.to_vec()).or_default() += 1;
    }

    /// Takes back a session counted before (one that has since gone on).
    pub fn uncount(&mut self, counts: &[(usize, u32)]) {
        if let Some(n) = self.rows.get_mut(counts) {
            *n -= 1;
            if *n == 0 {
                self.rows.remove(counts);
            }
        }
    }

    /// Keeps a session that may go on, counted now too where it looks whole.
    pub fn keep_open(&mut self, session: OpenSession) {
        if session.counted {
            self.count(&session.counts);
        }
        self.open.push(session);
    }

    /// Keeps an open session of an earlier tally as it was (counted there already, where it
    /// looked whole).
    pub fn carry(&mut self, session: OpenSession) {
        self.open.push(session);
    }

    /// The tally, most common combinations first, with the [`MAX_OPEN_SESSIONS`] most
    /// recent open sessions, of logs that ended at `end_at`.
    pub fn finish(self, end_at: Option<i64>) -> SessionTally {
        let mut counts: Vec<SessionCounts> = self
            .rows
            .into_iter()
            .map(|(counts, sessions)| SessionCounts { counts, sessions })
            .collect();
        counts.sort_by(|a, b| b.sessions.cmp(&a.sessions).then(a.counts.cmp(&b.counts)));
        let mut open = self.open;
        if open.len() > MAX_OPEN_SESSIONS {
            open.drain(..open.len() - MAX_OPEN_SESSIONS);
        }
        SessionTally {
            counts,
            open,
            end_at,
        }
    }
}

impl SessionTally {
    /// What a bundle keeps of this tally: all of it, or nothing past
    /// [`MAX_COUNT_COMBINATIONS`] (a part would make an update mine relations that the
    /// sessions left out break); without the open sessions' ids when the bundle keeps no
    /// sample of its training lines either (`--no-replay`).
    pub fn kept(mut self, with_ids: bool) -> SessionTally {
        if self.counts.len() > MAX_COUNT_COMBINATIONS {
            tracing::info!(
                combinations = self.counts.len(),
                most = MAX_COUNT_COMBINATIONS,
                "the training sessions' template counts are too varied to keep; an update \
                 of this bundle mines count invariants on its own logs only"
            );
            return SessionTally::default();
        }
        if !with_ids {
            self.open.clear();
        }
        self
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.open.is_empty()
    }
}

/// Mines the invariants of `sessions` (template classes in order; `templates` classes in all).
pub fn mine<S: AsRef<[u32]>>(
    sessions: &[S],
    templates: usize,
    options: &MiningOptions,
) -> Vec<Invariant> {
    mine_counts(&SessionCounts::of(sessions), templates, options)
}

/// Mines the invariants of the sessions `rows` count (classes below `templates`).
pub fn mine_counts(
    rows: &[SessionCounts],
    templates: usize,
    options: &MiningOptions,
) -> Vec<Invariant> {
    // Sessions with the same counts are one row with a weight.
    let rows: HashMap<Vec<u32>, u64> = rows
        .iter()
        .map(|row| {
            let mut counts = vec![0u32; templates];
            for &(t, c) in &row.counts {
                if let Some(slot) = counts.get_mut(t) {
                    *slot += c;
                }
            }
            (counts, row.sessions)
        })
        .fold(HashMap::new(), |mut rows, (counts, n)| {
            *rows.entry(counts).or_default() += n;
            rows
        });
    let mut seen_in = vec![0u64; templates];
    for (counts, weight) in &rows {
        for (t, &c) in counts.iter().enumerate() {
            if c > 0 {
                seen_in[t] += weight;
            }
        }
    }
    let mut candidates: Vec<usize> = (0..templates)
        .filter(|&t| seen_in[t] >= options.min_support)
        .collect();
    candidates.sort_by_key(|&t| std::cmp::Reverse(seen_in[t]));
    candidates.truncate(options.max_templates);
    candidates.sort_unstable();
    let rows: Vec<(Vec<u32>, u64)> = rows.into_iter().collect();

    let mut found: Vec<Invariant> = Vec::new();
    for size in 2..=options.max_terms.min(candidates.len()) {
        let coefficients = coefficient_vectors(size, options.max_coefficient);
        for subset in combinations(&candidates, size) {
            // The sessions that contain any of these templates, projected onto them.
            let mut projected: HashMap<Vec<u32>, u64> = HashMap::new();
            for (counts, weight) in &rows {
                let key: Vec<u32> = subset.iter().map(|&t| counts[t]).collect();
                if key.iter().any(|&c| c > 0) {
                    *projected.entry(key).or_default() += weight;
                }
            }
            let support: u64 = projected.values().sum();
            if support < options.min_support {
                continue;
            }
            let allowed = (options.tolerance * support as f64).floor() as u64;
            for coefficient in &coefficients {
                let violations: u64 = projected
                    .iter()
                    .filter(|(key, _)| {
                        key.iter()
                            .zip(coefficient)
                            .map(|(&c, &a)| i64::from(c) * i64::from(a))
                            .sum::<i64>()
                            != 0
                    })
                    .map(|(_, w)| w)
                    .sum();
                if violations <= allowed {
                    found.push(Invariant {
                        terms: subset.iter().copied().zip(coefficient.clone()).collect(),
                        support,
                        violations,
                    });
                }
            }
        }
    }
    // Short, well-supported, exact relations first; keep only independent ones.
    found.sort_by_key(|i| {
        (
            i.terms.len(),
            std::cmp::Reverse(i.support),
            i.violations,
            i.terms.iter().map(|t| t.1.abs()).sum::<i32>(),
        )
    });
    let mut basis = Basis::default();
    found.retain(|invariant| {
        let mut v = vec![0.0; templates];
        for &(class, c) in &invariant.terms {
            v[class] = f64::from(c);
        }
        basis.insert(v)
    });
    found
}

/// Every `size`-element subset of `items`, in order.
fn combinations(items: &[usize], size: usize) -> Vec<Vec<usize>> {
    if size == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for (i, &first) in items.iter().enumerate() {
        for mut rest in combinations(&items[i + 1..], size - 1) {
            rest.insert(0, first);
            out.push(rest);
        }
    }
    out
}

/// The model's invariants over a compact counter per session: only templates an invariant
/// names are counted, so a session costs a few bytes more, not one counter per template.
pub(crate) struct InvariantCheck {
    invariants: Vec<Invariant>,
    /// Each invariant in words (see [`Invariant::relation`]), worded once: a session that
    /// ends out of balance only adds its counts.
    relations: Vec<String>,
    /// Counter slot of each template class (`None`: no invariant names it).
    slot_of: Vec<Option<u16>>,
    /// Counters a session needs.
    pub(crate) slots: usize,
}

impl InvariantCheck {
    /// The check of `invariants`, worded with `templates`.
    pub(crate) fn new(invariants: &[Invariant], templates: &[String]) -> Self {
        let classes = invariants
            .iter()
            .flat_map(|i| i.terms.iter().map(|t| t.0 + 1))
            .max()
            .unwrap_or(0);
        let mut slot_of = vec![None; classes];
        let mut slots = 0u16;
        for invariant in invariants {
            for &(class, _) in &invariant.terms {
                if slot_of[class].is_none() {
                    slot_of[class] = Some(slots);
                    slots += 1;
                }
            }
        }
        Self {
            invariants: invariants.to_vec(),
            relations: invariants.iter().map(|i| i.relation(templates)).collect(),
            slot_of,
            slots: usize::from(slots),
        }
    }

    /// Counts one event of `class` in a session's `counts`.
    pub(crate) fn count(&self, counts: &mut [u16], class: usize) {
        if let Some(Some(slot)) = self.slot_of.get(class) {
            // A session opened under an earlier model has no counters (see
            // `Scorer::replace_model`).
            if let Some(c) = counts.get_mut(usize::from(*slot)) {
                *c = c.saturating_add(1);
            }
        }
    }

    /// The broken relations of a session, in words; none for a session whose counters are
    /// not this check's (it was opened under an earlier model).
    pub(crate) fn broken(&self, counts: &[u16]) -> Vec<String> {
        if counts.len() != self.slots {
            return Vec::new();
        }
        let count = |class: usize| {
            self.slot_of
                .get(class)
                .copied()
                .flatten()
                .map_or(0, |slot| u32::from(counts[usize::from(slot)]))
        };
        self.invariants
            .iter()
            .zip(&self.relations)
            .filter(|(i, _)| i.residual(count) != 0)
            .map(|(i, relation)| format!("{relation} {}", i.counts(count)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write pipeline: `0` opens, then per replica `1` then `2`; sometimes a read `3`.
    fn sessions() -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for replicas in 1..=3u32 {
            for reads in 0..4u32 {
                for _ in 0..5 {
                    let mut s = vec![0];
                    for _ in 0..replicas {
                        s.extend([1, 2]);
                    }
                    s.extend(std::iter::repeat_n(3, reads as usize));
                    out.push(s);
                }
            }
        }
        out
    }

    fn holds(invariants: &[Invariant], session: &[u32]) -> bool {
        invariants.iter().all(|i| {
            i.residual(|class| session.iter().filter(|&&t| t as usize == class).count() as u32) == 0
        })
    }

    #[test]
    fn finds_the_balanced_counts_and_nothing_about_free_ones() {
        let invariants = mine(&sessions(), 4, &MiningOptions::default());
        assert_eq!(invariants.len(), 1, "{invariants:?}");
        assert_eq!(invariants[0].terms, vec![(1, 1), (2, -1)]);
        assert_eq!(invariants[0].support, 60);
        assert!(holds(&invariants, &[0, 1, 2, 1, 2, 3]));
        assert!(
            !holds(&invariants, &[0, 1, 2, 1, 3]),
            "a replica never acked"
        );
    }

    #[test]
    fn finds_ratios_and_three_term_relations() {
        // Each session: one `0`, three `1`; `2` and `3` add up to the `1`s.
        let sessions: Vec<Vec<u32>> = (0..=3u32)
            .flat_map(|twos| {
                let mut s = vec![0, 1, 1, 1];
                s.extend(std::iter::repeat_n(2, twos as usize));
                s.extend(std::iter::repeat_n(3, 3 - twos as usize));
                std::iter::repeat_n(s, 10)
            })
            .collect();
        let invariants = mine(&sessions, 4, &MiningOptions::default());
        assert!(holds(&invariants, &[0, 1, 1, 1, 2, 3, 3]));
        assert!(!holds(&invariants, &[0, 1, 1, 1, 1, 1, 1, 2, 3, 3]));
        assert!(!holds(&invariants, &[0, 1, 1, 1, 2, 2, 3, 3]));
        let ratio = invariants
            .iter()
            .find(|i| i.terms == vec![(0, 3), (1, -1)])
            .expect("three `1` per `0`");
        assert_eq!(ratio.violations, 0);
    }

    #[test]
    fn tolerates_rare_noise_but_not_a_common_exception() {
        let mut noisy = sessions();
        noisy.push(vec![0, 1, 2, 1]); // one broken session in 61
        let options = MiningOptions {
            tolerance: 0.02,
            ..MiningOptions::default()
        };
        assert_eq!(mine(&noisy, 4, &options).len(), 1);
        let strict = MiningOptions {
            tolerance: 0.0,
            ..MiningOptions::default()
        };
        assert!(mine(&noisy, 4, &strict).is_empty());
    }

    #[test]
    fn counts_kept_and_counts_added_later_mine_as_the_sessions_together() {
        // A relation the first half alone supports too rarely: `4` with an extra `1`.
        let older: Vec<Vec<u32>> = sessions()
            .into_iter()
            .chain(std::iter::repeat_n(vec![0, 1, 2, 1, 2, 1, 4], 6))
            .collect();
        let newer: Vec<Vec<u32>> = sessions()
            .into_iter()
            .chain(std::iter::repeat_n(vec![0, 1, 2, 1, 4], 6))
            .collect();
        let options = MiningOptions::default();
        let together: Vec<Vec<u32>> = older.iter().chain(&newer).cloned().collect();
        let kept = SessionTally {
            counts: SessionCounts::of(&older),
            ..SessionTally::default()
        };
        let mut later = TallyBuilder::from_tally(&kept);
        for session in &newer {
            later.count(&counts_of(session));
        }
        let merged = later.finish(None).counts;
        assert_eq!(merged, SessionCounts::of(&together));
        let all = mine(&together, 5, &options);
        assert_eq!(mine_counts(&merged, 5, &options), all);
        assert!(
            all.iter().any(|i| i.terms.iter().any(|t| t.0 == 4)),
            "12 sessions support the relation with `4`: {all:?}"
        );
        assert!(
            !mine(&newer, 5, &options)
                .iter()
                .any(|i| i.terms.iter().any(|t| t.0 == 4)),
            "6 do not"
        );
    }

    #[test]
    fn a_session_taken_back_and_counted_whole_is_counted_once() {
        let mut tally = TallyBuilder::default();
        let part = counts_of(&[0, 1, 2]);
        tally.keep_open(OpenSession {
            name: "a".into(),
            counts: part.clone(),
            last_at: None,
            counted: true,
        });
        tally.uncount(&part);
        tally.count(&add_counts(&part, &counts_of(&[1, 2, 3])));
        let tally = tally.finish(None);
        assert_eq!(
            tally.counts,
            vec![SessionCounts {
                counts: vec![(0, 1), (1, 2), (2, 2), (3, 1)],
                sessions: 1
            }]
        );
    }

    #[test]
    fn a_bundle_keeps_the_whole_tally_or_none() {
        let few = SessionTally {
            counts: SessionCounts::of(&sessions()),
            ..SessionTally::default()
        };
        assert_eq!(few.clone().kept(true), few);
        let many: Vec<Vec<u32>> = (0..=MAX_COUNT_COMBINATIONS)
            .map(|n| vec![0; n + 1])
            .collect();
        let many = SessionTally {
            counts: SessionCounts::of(&many),
            ..SessionTally::default()
        };
        assert!(many.kept(true).is_empty());
    }

    #[test]
    fn describes_the_relation_with_the_counts() {
        let invariant = Invariant {
            terms: vec![(0, 3), (1, -1)],
            support: 10,
            violations: 0,
        };
        let templates = vec![
            "allocateBlock <PATH>".to_string(),
            "<NUM> INFO dfs.DataNode: Received".to_string(),
        ];
        let text = invariant.describe(&templates, |c| [1, 2][c]);
        assert_eq!(
            text,
            "3 x count(`allocateBlock <PATH>`) = count(`Received`) (here 3 x 1 vs 2)"
        );
    }

    #[test]
    fn coefficient_vectors_are_primitive_and_distinct() {
        let v = coefficient_vectors(2, 3);
        assert!(v.contains(&vec![1, -3]) && v.contains(&vec![2, 3]));
        assert!(!v.contains(&vec![2, -2]) && !v.contains(&vec![-1, 1]));
        assert_eq!(v.len(), 3 * 6 - 4); // minus (2,±2), (3,±3)
    }
}
