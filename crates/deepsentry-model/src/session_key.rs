//! `session_key: auto`: finding the field that splits one interleaved stream into coherent
//! sessions.
//!
//! A sidecar's log (`app 2>&1 | deepsentry`) interleaves many requests, threads or processes,
//! so the templates before a line are often another request's. Training tries a fixed
//! catalogue of general id shapes (a syslog tag's `program[pid]`, `pid=`/`thread=`/
//! `request_id=`-style fields, bracketed thread names, UUIDs, `word_123` ids, and the first
//! columns of columnar formats) and keeps the one under which the next template is most
//! predictable: a bigram model of "template after the session's previous template" is counted
//! on the first 80 % of the lines and scored on the last 20 %. A key that names real sessions
//! makes the next template far more predictable than the interleaved stream does; a
//! timestamp column or a constant makes it less or no more, and is not chosen. Lines without
//! the key stay in their stream's session, so a key that covers few lines gains little.

use std::collections::HashMap;

use regex::Regex;

/// What a `session_key` setting asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKeySpec {
    /// Train: look for a key ([`find_session_key`]); score: the key the model was trained with.
    Auto,
    /// One session per stream.
    Stream,
    /// This regex; its first capture group (or whole match) names the session.
    Regex(String),
}

impl SessionKeySpec {
    /// Reads a setting: `auto`, `none` (one session per stream) or a regex; no setting is
    /// `auto`.
    pub fn parse(setting: Option<&str>) -> Self {
        match setting.map(str::trim) {
            None | Some("auto") => Self::Auto,
            Some("none") => Self::Stream,
            Some(pattern) => Self::Regex(pattern.to_string()),
        }
    }
}

/// One id shape tried as a session key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What the shape is, for logs and the bundle.
    pub name: String,
    /// The regex; capture group 1 is the session id.
    pub pattern: String,
}

/// Leading whitespace-separated columns tried as keys (columnar formats put pid and thread
/// there).
const COLUMNS: usize = 6;

/// The catalogue of general id shapes.
pub fn candidates() -> Vec<Candidate> {
    let mut list: Vec<Candidate> = [
        // syslog's TAG: `sshd[4711]:`, `su(pam_unix)[311]`.
        ("program[pid]", r"(?:^|\s)([A-Za-z][\w.\-/()]*\[\d+\])"),
        ("pid=", r"(?i)\bpid[=:]\s*(\d+)"),
        (
            "thread=",
            r#"(?i)\b(?:tid|thread(?:[_-]?(?:id|name))?)[=:]\s*"?([\w.\-:#]+)"#,
        ),
        (
            "request_id=",
            r#"(?i)\b(?:req(?:uest)?[_-]?id|trace[_-]?id|correlation[_-]?id|x-request-id)[=:]\s*"?([\w.\-:]+)"#,
        ),
        ("session=", r#"(?i)\bsession(?:[_-]?id)?[=:]\s*"?([\w.\-:]+)"#),
        (
            "connection=",
            r#"(?i)\bconn(?:ection)?(?:[_-]?id)?[=:#]\s*"?([\w.\-:]+)"#,
        ),
        // Java and friends: `[pool-1-thread-3]`, `[http-nio-8080-exec-1]`, `[worker-7]`.
        ("[thread-name-N]", r"\[([A-Za-z][\w.]*(?:-[\w.]+)*[-#]\d+)\]"),
        (
            "uuid",
            r"(?i)\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b",
        ),
        // `job_2301`, `task_-88213`, `attempt_1445_0001`.
        ("word_number", r"\b([A-Za-z]+_-?\d{3,}(?:_\d+)*)\b"),
    ]
    .into_iter()
    .map(|(name, pattern)| Candidate {
        name: name.to_string(),
        pattern: pattern.to_string(),
    })
    .collect();
    for column in 0..COLUMNS {
        list.push(Candidate {
            name: format!("column {}", column + 1),
            // The column, when it holds a digit (ids do; level words and names do not).
            pattern: format!(r"^\s*(?:\S+\s+){{{column}}}(\S*\d\S*)(?:\s|$)"),
        });
    }
    list
}

/// How predictable the next template is under one key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyScore {
    /// The candidate (`None`: one session per stream).
    pub candidate: Option<Candidate>,
    /// Held-out nats per line of the bigram model.
    pub nats_per_line: f64,
    /// Share of the lines the key matched.
    pub coverage: f64,
    /// Distinct sessions it made.
    pub sessions: usize,
    /// How uncertain the session is once the template is known (nats): near zero when the
    /// key merely restates the template (a status-code column), high for real session ids.
    pub session_given_template: f64,
    /// Share of the lines (with an earlier line in their session) whose previous line in the
    /// stream belongs to another session: zero when the key only cuts the stream into runs
    /// (a timestamp column), high when it untangles interleaved sessions.
    pub interleaving: f64,
    /// Share of the lines the key matched that have an earlier line in their session: near
    /// zero when what it finds is an id each line has of its own (an upload's object name,
    /// a commit hash), which makes one-line sessions, not sessions.
    pub continued: f64,
}

/// What [`find_session_key`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFinding {
    /// The key chosen, if one beats the stream.
    pub chosen: Option<Candidate>,
    /// One session per stream.
    pub stream: KeyScore,
    /// Every candidate that matched a line, best first.
    pub tried: Vec<KeyScore>,
}

/// A key must make the next template this much more predictable than the stream, relative
/// to the stream's nats per line...
const MIN_RELATIVE_GAIN: f64 = 0.05;
/// ... and in absolute nats per line.
const MIN_GAIN_NATS: f64 = 0.05;
/// A key whose session the template tells (less than two equally likely sessions per
/// template, on average) groups lines by kind, not by session.
const MIN_SESSION_GIVEN_TEMPLATE: f64 = std::f64::consts::LN_2;
/// A key must untangle at least this share of its lines: one that only cuts the stream into
/// consecutive runs (the second a line was written) changes what starts a window, not
/// which lines belong together.
const MIN_INTERLEAVING: f64 = 0.1;
/// At least this share of the lines a key matches must continue a session: a session holds
/// several lines. A key that gives most lines a session of their own sets them apart from the
/// stream by the shape of their template (those with an id in that column), which the
/// bigram measure rewards although nothing is untangled.
const MIN_CONTINUED: f64 = 0.5;
/// Lines looked at: enough to tell, few enough to be quick on a large training set.
const SAMPLE_LINES: usize = 300_000;

/// Finds the session key of a stream of lines: `lines` are `(text, template id, stream)` in
/// order. See the module docs.
pub fn find_session_key(lines: &[(&str, u32, u16)]) -> KeyFinding {
    let lines = &lines[..lines.len().min(SAMPLE_LINES)];
    let stream_names: Vec<Option<String>> = vec![None; lines.len()];
    let stream = score_key(None, lines, &stream_names);
    let mut tried: Vec<KeyScore> = candidates()
        .into_iter()
        .filter_map(|candidate| {
            let re = Regex::new(&candidate.pattern).ok()?;
            let names: Vec<Option<String>> = lines
                .iter()
                .map(|(text, _, _)| {
                    re.captures(text)
                        .and_then(|c| c.get(1))
                        .map(|m| m.as_str().to_string())
                })
                .collect();
            if names.iter().all(Option::is_none) {
                return None;
            }
            Some(score_key(Some(candidate), lines, &names))
        })
        .collect();
    tried.sort_by(|a, b| a.nats_per_line.total_cmp(&b.nats_per_line));
    let needed = (stream.nats_per_line * MIN_RELATIVE_GAIN).max(MIN_GAIN_NATS);
    let chosen = tried
        .iter()
        .find(|key| {
            key.session_given_template >= MIN_SESSION_GIVEN_TEMPLATE
                && key.interleaving >= MIN_INTERLEAVING
                && key.continued >= MIN_CONTINUED
        })
        .filter(|best| stream.nats_per_line - best.nats_per_line >= needed)
        .and_then(|best| best.candidate.clone());
    KeyFinding {
        chosen,
        stream,
        tried,
    }
}

/// Held-out nats per line of "next template given the session's previous one" (Witten-Bell
/// smoothed towards the template frequencies) when line `i` belongs to session `names[i]`
/// (`None`: its stream's).
fn score_key(
    candidate: Option<Candidate>,
    lines: &[(&str, u32, u16)],
    names: &[Option<String>],
) -> KeyScore {
    const START: u32 = u32::MAX;
    let split = lines.len() * 4 / 5;
    let mut ids: HashMap<(&str, u16), u32> = HashMap::new();
    let session: Vec<u32> = lines
        .iter()
        .zip(names)
        .map(|(&(_, _, stream), name)| {
            let next = ids.len() as u32;
            *ids.entry((name.as_deref().unwrap_or(""), stream))
                .or_insert(next)
        })
        .collect();
    let mut previous: Vec<u32> = Vec::new();
    let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
    let mut contexts: HashMap<u32, (u32, u32)> = HashMap::new(); // (count, distinct next)
    let mut unigram: HashMap<u32, u32> = HashMap::new();
    for i in 0..split {
        let s = session[i] as usize;
        if s >= previous.len() {
            previous.resize(s + 1, START);
        }
        let template = lines[i].1;
        let pair = pairs.entry((previous[s], template)).or_insert(0);
        let context = contexts.entry(previous[s]).or_insert((0, 0));
        context.0 += 1;
        if *pair == 0 {
            context.1 += 1;
        }
        *pair += 1;
        *unigram.entry(template).or_insert(0) += 1;
        previous[s] = template;
    }
    let vocabulary = unigram.len() as f64 + 1.0;
    let counted = split as f64;
    let p_unigram = |t: u32| {
        (f64::from(unigram.get(&t).copied().unwrap_or(0)) + 0.5) / (counted + 0.5 * vocabulary)
    };
    let mut nats = 0.0;
    for i in split..lines.len() {
        let s = session[i] as usize;
        if s >= previous.len() {
            previous.resize(s + 1, START);
        }
        let template = lines[i].1;
        let base = p_unigram(template);
        let p = match contexts.get(&previous[s]) {
            Some(&(count, distinct)) => {
                let pair = f64::from(pairs.get(&(previous[s], template)).copied().unwrap_or(0));
                (pair + f64::from(distinct) * base) / f64::from(count + distinct)
            }
            None => base,
        };
        nats -= p.ln();
        previous[s] = template;
    }
    let held = (lines.len() - split).max(1) as f64;
    // H(session | template) over all lines.
    let mut joint: HashMap<(u32, u32), u32> = HashMap::new();
    let mut per_template: HashMap<u32, u32> = HashMap::new();
    for (i, &s) in session.iter().enumerate() {
        *joint.entry((lines[i].1, s)).or_insert(0) += 1;
        *per_template.entry(lines[i].1).or_insert(0) += 1;
    }
    let mut last_line: HashMap<u32, usize> = HashMap::new();
    let (mut continued, mut untangled) = (0usize, 0usize);
    let (mut matched, mut matched_continued) = (0usize, 0usize);
    for (i, &s) in session.iter().enumerate() {
        let earlier = last_line.insert(s, i);
        if let Some(before) = earlier {
            continued += 1;
            if before + 1 != i {
                untangled += 1;
            }
        }
        if names[i].is_some() {
            matched += 1;
            matched_continued += usize::from(earlier.is_some());
        }
    }
    let interleaving = untangled as f64 / continued.max(1) as f64;
    let total = lines.len().max(1) as f64;
    let session_given_template = joint
        .iter()
        .map(|(&(t, _), &n)| {
            let n = f64::from(n);
            -n / total * (n / f64::from(per_template[&t])).ln()
        })
        .sum();
    KeyScore {
        candidate,
        nats_per_line: nats / held,
        coverage: names.iter().filter(|n| n.is_some()).count() as f64 / lines.len().max(1) as f64,
        sessions: ids.len(),
        session_given_template,
        interleaving,
        continued: matched_continued as f64 / matched.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests of two kinds, each four lines in a fixed order, interleaved three at a time.
    fn interleaved(tag: impl Fn(usize) -> String) -> Vec<(String, u32)> {
        let mut rng = deepsentry_core::rng::SplitMix64::new(7);
        let mut open: Vec<(usize, u32, u32)> = Vec::new(); // (request, kind, step)
        let mut next_request = 0;
        let mut lines = Vec::new();
        while lines.len() < 4000 {
            while open.len() < 3 {
                open.push((next_request, (rng.next_u64() % 2) as u32, 0));
                next_request += 1;
            }
            let pick = (rng.next_u64() % open.len() as u64) as usize;
            let (request, kind, step) = open[pick];
            let template = kind * 4 + step;
            lines.push((
                format!(
                    "2024-01-01 10:00:{:02} {} step {template}",
                    lines.len() % 60,
                    tag(request)
                ),
                template,
            ));
            if step == 3 {
                open.swap_remove(pick);
            } else {
                open[pick].2 += 1;
            }
        }
        lines
    }

    fn find(lines: &[(String, u32)]) -> KeyFinding {
        let view: Vec<(&str, u32, u16)> = lines.iter().map(|(t, c)| (t.as_str(), *c, 0)).collect();
        find_session_key(&view)
    }

    fn assert_no_key(lines: &[(String, u32)]) {
        let finding = find(lines);
        assert!(
            finding.chosen.is_none(),
            "{:?} {:?}",
            finding.chosen,
            finding.tried
        );
    }

    fn assert_chooses(lines: &[(String, u32)], name: &str) {
        let finding = find(lines);
        assert_eq!(
            finding.chosen.map(|c| c.name).as_deref(),
            Some(name),
            "{:?}",
            finding.tried
        );
    }

    #[test]
    fn finds_the_pid_of_interleaved_requests() {
        let lines = interleaved(|r| format!("worker[{}]:", 100 + r % 500));
        assert_chooses(&lines, "program[pid]");
    }

    #[test]
    fn finds_a_request_id_field() {
        let lines = interleaved(|r| format!("request_id=r{r}"));
        assert_chooses(&lines, "request_id=");
    }

    #[test]
    fn keeps_the_stream_when_nothing_names_the_sessions() {
        // The same stream with a pid that has nothing to do with the requests.
        let lines = interleaved(|_| "worker[PID]:".to_string());
        let mut rng = deepsentry_core::rng::SplitMix64::new(11);
        let lines: Vec<(String, u32)> = lines
            .into_iter()
            .map(|(text, t)| {
                let pid = 100 + rng.next_u64() % 4;
                (text.replace("PID", &pid.to_string()), t)
            })
            .collect();
        assert_no_key(&lines);
    }

    #[test]
    fn a_timestamp_column_is_not_a_session() {
        let lines: Vec<(String, u32)> = (0..3000)
            .map(|i| {
                (
                    format!("1700000{:03} host step {}", i / 7, i % 5),
                    (i % 5) as u32,
                )
            })
            .collect();
        assert!(find(&lines).chosen.is_none());
    }

    #[test]
    fn an_id_each_line_has_of_its_own_is_not_a_session() {
        // Statements in no order, half of them naming an object of their own (a pod, an
        // upload) where the others have a word: the column sets those lines apart by their
        // kind, not by session.
        let mut rng = deepsentry_core::rng::SplitMix64::new(5);
        let lines: Vec<(String, u32)> = (0..4000)
            .map(|i| {
                let t = (rng.next_u64() % 10) as u32;
                let what = if t < 5 {
                    format!("obj-{i}")
                } else {
                    "done".to_string()
                };
                (format!("10:00:{:02} app {what} step {t}", i % 60), t)
            })
            .collect();
        assert_no_key(&lines);
    }

    #[test]
    fn settings_read_as_auto_stream_or_regex() {
        assert_eq!(SessionKeySpec::parse(None), SessionKeySpec::Auto);
        assert_eq!(SessionKeySpec::parse(Some("auto")), SessionKeySpec::Auto);
        assert_eq!(SessionKeySpec::parse(Some("none")), SessionKeySpec::Stream);
        assert_eq!(
            SessionKeySpec::parse(Some(r"blk_\d+")),
            SessionKeySpec::Regex(r"blk_\d+".into())
        );
    }
}
