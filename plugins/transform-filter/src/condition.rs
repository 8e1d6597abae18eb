//! Conditions on events, parsed from YAML and compiled once (regexes included).

use deepsentry_core::anomaly;
use deepsentry_core::event::Value;
use deepsentry_core::Event;
use regex::Regex;
use serde::Deserialize;

/// A condition as written in the config: exactly one of `is_anomaly`, `alert`, `field` with
/// one test, `all` or `any`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Keep events the detector flagged (`true`) or did not flag (`false`).
    #[serde(default)]
    pub is_anomaly: Option<bool>,
    /// Keep the first anomaly of each alert group (`true`): one event per distinct anomaly,
    /// what alert pipelines forward; `false` keeps everything else.
    #[serde(default)]
    pub alert: Option<bool>,
    /// The field to test: `message`, `source`, `stream`, or a field set by a source or
    /// transform (`anomaly_score`, `key`, `headers.trace_id`, ...).
    #[serde(default)]
    pub field: Option<String>,
    /// The field's value, written as text, equals this.
    #[serde(default)]
    pub equals: Option<serde_yaml::Value>,
    /// The field is missing or its value differs from this.
    #[serde(default)]
    pub not_equals: Option<serde_yaml::Value>,
    /// The field's value matches this regex (anywhere; anchor with `^...$`).
    #[serde(default)]
    pub matches: Option<String>,
    /// Every condition of the list holds.
    #[serde(default)]
    pub all: Option<Vec<ConditionConfig>>,
    /// At least one condition of the list holds.
    #[serde(default)]
    pub any: Option<Vec<ConditionConfig>>,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// The detector's flag (`is_anomaly` or `alert`) equals the value (a missing flag counts
    /// as `false`).
    Flag(&'static str, bool),
    /// The field exists and its text equals the value.
    Equals(String, String),
    /// The field is missing or its text differs from the value.
    NotEquals(String, String),
    /// The field exists and its text matches the regex.
    Matches(String, Regex),
    /// Every condition holds (true when empty).
    All(Vec<Condition>),
    /// Some condition holds (false when empty).
    Any(Vec<Condition>),
}

/// A YAML scalar as the text a field's value is compared with.
fn scalar_text(value: &serde_yaml::Value, path: &str) -> anyhow::Result<String> {
    Ok(match value {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        _ => anyhow::bail!("{path}: compare with a string, number or boolean"),
    })
}

const FORMS: &str =
    "`is_anomaly: true`, `alert: true`, `field` with one of `equals`, `not_equals`, \
                     `matches`, `all: [...]` or `any: [...]`";

impl Condition {
    /// Checks and compiles `config`; `path` names it in errors (`condition.all[1]`).
    pub fn compile(config: &ConditionConfig, path: &str) -> anyhow::Result<Self> {
        let tests = [
            config.equals.is_some(),
            config.not_equals.is_some(),
            config.matches.is_some(),
        ];
        let test_count = tests.iter().filter(|t| **t).count();
        let kinds = [
            config.is_anomaly.is_some(),
            config.alert.is_some(),
            config.field.is_some() || test_count > 0,
            config.all.is_some(),
            config.any.is_some(),
        ];
        anyhow::ensure!(
            kinds.iter().filter(|k| **k).count() == 1,
            "{path}: give exactly one of {FORMS}"
        );
        if let Some(flag) = config.is_anomaly {
            return Ok(Condition::Flag(anomaly::IS_ANOMALY, flag));
        }
        if let Some(flag) = config.alert {
            return Ok(Condition::Flag(anomaly::ALERT, flag));
        }
        let compile_list = |list: &[ConditionConfig], key: &str| {
            list.iter()
                .enumerate()
                .map(|(i, c)| Condition::compile(c, &format!("{path}.{key}[{i}]")))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        if let Some(list) = &config.all {
            return Ok(Condition::All(compile_list(list, "all")?));
        }
        if let Some(list) = &config.any {
            return Ok(Condition::Any(compile_list(list, "any")?));
        }
        let field = config
            .field
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{path}: `field` names the field to test"))?;
        anyhow::ensure!(
            test_count == 1,
            "{path}: give `field` exactly one of `equals`, `not_equals`, `matches`"
        );
        if let Some(value) = &config.equals {
            return Ok(Condition::Equals(field, scalar_text(value, path)?));
        }
        if let Some(value) = &config.not_equals {
            return Ok(Condition::NotEquals(field, scalar_text(value, path)?));
        }
        let pattern = config.matches.as_deref().unwrap_or_default();
        let regex = Regex::new(pattern)
            .map_err(|e| anyhow::anyhow!("{path}.matches: not a valid regex: {e}"))?;
        Ok(Condition::Matches(field, regex))
    }

    /// Whether `event` satisfies the condition.
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Condition::Flag(key, flag) => {
                let set = matches!(event.fields.get(key), Some(Value::Bool(true)));
                set == *flag
            }
            Condition::Equals(field, value) => event
                .with_field_text(field, |text| text == value)
                .unwrap_or(false),
            Condition::NotEquals(field, value) => event
                .with_field_text(field, |text| text != value)
                .unwrap_or(true),
            Condition::Matches(field, regex) => event
                .with_field_text(field, |text| regex.is_match(text))
                .unwrap_or(false),
            Condition::All(list) => list.iter().all(|c| c.matches(event)),
            Condition::Any(list) => list.iter().any(|c| c.matches(event)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepsentry_core::Origin;

    fn event(message: &str, anomaly: Option<bool>) -> Event {
        let mut event = Event::from_str(message, chrono::Utc::now(), Origin::new("in", "app"));
        if let Some(flag) = anomaly {
            event.fields.insert(anomaly::IS_ANOMALY, Value::Bool(flag));
            event
                .fields
                .insert(anomaly::ANOMALY_SCORE, Value::Float(3.5));
        }
        event
    }

    fn compile(yaml: &str) -> anyhow::Result<Condition> {
        let config: ConditionConfig = serde_yaml::from_str(yaml)?;
        Condition::compile(&config, "condition")
    }

    #[test]
    fn is_anomaly_treats_a_missing_flag_as_false() {
        let flagged = compile("is_anomaly: true").unwrap();
        assert!(flagged.matches(&event("x", Some(true))));
        assert!(!flagged.matches(&event("x", Some(false))));
        assert!(!flagged.matches(&event("x", None)));
        assert!(compile("is_anomaly: false")
            .unwrap()
            .matches(&event("x", None)));
    }

    #[test]
    fn alert_keeps_the_first_anomaly_of_each_group() {
        let condition = compile("alert: true").unwrap();
        let mut first = event("disk failed", Some(true));
        first.fields.insert(anomaly::ALERT, Value::Bool(true));
        let mut repeat = event("disk failed", Some(true));
        repeat.fields.insert(anomaly::ALERT, Value::Bool(false));
        assert!(condition.matches(&first));
        assert!(!condition.matches(&repeat));
        assert!(!condition.matches(&event("x", None)));
        let err = compile("alert: true\nis_anomaly: true").unwrap_err();
        assert!(err.to_string().contains("`alert: true`"), "{err}");
    }

    #[test]
    fn field_tests_on_message_origin_and_fields() {
        let e = event("connection refused by peer", Some(true));
        assert!(compile("field: message\nmatches: 'refused|timeout'")
            .unwrap()
            .matches(&e));
        assert!(compile("field: stream\nequals: app").unwrap().matches(&e));
        assert!(compile("field: anomaly_score\nequals: 3.5")
            .unwrap()
            .matches(&e));
        assert!(compile("field: is_anomaly\nequals: true")
            .unwrap()
            .matches(&e));
        assert!(!compile("field: source\nnot_equals: in")
            .unwrap()
            .matches(&e));
        // A missing field differs from any value and matches nothing.
        assert!(compile("field: tenant\nnot_equals: a").unwrap().matches(&e));
        assert!(!compile("field: tenant\nequals: a").unwrap().matches(&e));
        assert!(!compile("field: tenant\nmatches: '.*'").unwrap().matches(&e));
    }

    #[test]
    fn all_and_any_combine() {
        let condition = compile(
            "all:\n  - is_anomaly: true\n  - any:\n      - field: message\n        matches: disk\n      - field: stream\n        equals: db\n",
        )
        .unwrap();
        assert!(condition.matches(&event("disk full", Some(true))));
        assert!(!condition.matches(&event("disk full", Some(false))));
        assert!(!condition.matches(&event("cpu hot", Some(true))));
        assert!(compile("all: []").unwrap().matches(&event("x", None)));
        assert!(!compile("any: []").unwrap().matches(&event("x", None)));
    }

    #[test]
    fn mistakes_are_named() {
        let err = compile("is_anomaly: true\nfield: x\nequals: 1").unwrap_err();
        assert!(err.to_string().contains("exactly one of"), "{err}");
        let err = compile("field: x").unwrap_err();
        assert!(
            err.to_string()
                .contains("`equals`, `not_equals`, `matches`"),
            "{err}"
        );
        let err = compile("field: x\nmatches: '('").unwrap_err();
        assert!(
            err.to_string()
                .contains("condition.matches: not a valid regex"),
            "{err}"
        );
        let err = compile("all:\n  - field: x\n    equals: [1]\n").unwrap_err();
        assert!(err.to_string().contains("condition.all[0]"), "{err}");
        let err = compile("field: x\nequal: 1").unwrap_err();
        assert!(err.to_string().contains("unknown field `equal`"), "{err}");
    }
}
