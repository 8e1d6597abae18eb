//! Config loading against plugins registered by this test module only.

use async_trait::async_trait;
use serde::Deserialize;

use super::*;
use crate::component::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSourceConfig {
    #[serde(default)]
    #[allow(dead_code)]
    path: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    mode: Option<TestMode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TestMode {
    Server,
    Client,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSinkConfig {}

#[async_trait]
impl SourceConfig for TestSourceConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        anyhow::bail!("not used")
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl TransformConfig for TestSinkConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Transform>> {
        anyhow::bail!("not used")
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl SinkConfig for TestSinkConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
        anyhow::bail!("not used")
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        Ok(())
    }
}

crate::register_source!("testfile", "test source", TestSourceConfig);
crate::register_transform!("testpass", "test transform", TestSinkConfig);
crate::register_sink!("testsink", "test sink", TestSinkConfig);

fn errors(text: &str) -> Vec<ConfigError> {
    load_str(text, "p.yml")
        .expect_err("config should be rejected")
        .0
}

#[test]
fn a_valid_pipeline_loads_in_file_order() {
    let config = load_str(
        "data_dir: /tmp/ds\nsources:\n  a:\n    type: testfile\n    path: x\n\
         transforms:\n  t:\n    type: testpass\n    inputs: [a]\n\
         sinks:\n  out:\n    type: testsink\n    inputs: [t, a]\n",
        "p.yml",
    )
    .unwrap();
    let ids: Vec<_> = config.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "t", "out"]);
    assert_eq!(config.components[2].inputs, ["t", "a"]);
    assert_eq!(config.data_dir, PathBuf::from("/tmp/ds"));
    assert!(config.warnings.is_empty());
}

#[test]
fn unknown_type_names_the_place_and_the_choices() {
    let e = &errors(
        "sources:\n  a:\n    type: testfil\nsinks:\n  o:\n    type: testsink\n    inputs: [a]\n",
    )[0];
    assert_eq!((e.line, e.column), (Some(3), Some(5)));
    assert_eq!(e.component.as_deref(), Some("sources.a"));
    assert!(
        e.message.contains("unknown source type `testfil`"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("did you mean `testfile`"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("valid types: `testfile`"),
        "{}",
        e.message
    );
    assert!(e
        .to_string()
        .starts_with("p.yml:3:5: sources.a: key `type`: "));
}

#[test]
fn a_pipeline_built_in_code_is_checked_the_same_without_lines() {
    let yaml = "sources:\n  a:\n    type: testfile\n    paht: x\nsinks:\n  o:\n    type: testsink\n    inputs: [a]\n";
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let errors = load_value(value, "live.yml").unwrap_err();
    let e = &errors.0[0];
    assert_eq!((e.file.as_str(), e.line), ("live.yml", None));
    assert_eq!(e.component.as_deref(), Some("sources.a"));
    assert_eq!(e.key.as_deref(), Some("paht"));
    assert!(
        e.message.contains("expected `path` or `mode`"),
        "{}",
        e.message
    );
    // And a good one loads.
    let good: serde_yaml::Value = serde_yaml::from_str(&yaml.replace("paht", "path")).unwrap();
    assert_eq!(load_value(good, "live.yml").unwrap().components.len(), 2);
}

#[test]
fn unknown_key_lists_the_valid_keys() {
    let e = &errors(
        "sources:\n  a:\n    type: testfile\n    paht: x\nsinks:\n  o:\n    type: testsink\n    inputs: [a]\n",
    )[0];
    assert_eq!(e.line, Some(4));
    assert_eq!(e.key.as_deref(), Some("paht"));
    assert!(
        e.message.contains("expected `path` or `mode`"),
        "{}",
        e.message
    );
}

#[test]
fn bad_enum_value_points_at_its_key() {
    let e = &errors(
        "sources:\n  a:\n    type: testfile\n    mode: listen\nsinks:\n  o:\n    type: testsink\n    inputs: [a]\n",
    )[0];
    assert_eq!(e.line, Some(4));
    assert_eq!(e.key.as_deref(), Some("mode"));
    assert!(
        e.message.contains("expected `server` or `client`"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_top_level_key() {
    let e = &errors("sorces:\n  a:\n    type: testfile\n")[0];
    assert_eq!(e.line, Some(1));
    assert!(
        e.message.contains("unknown field `sorces`"),
        "{}",
        e.message
    );
    assert!(e.message.contains("`sources`"), "{}", e.message);
}

#[test]
fn missing_and_dangling_inputs() {
    let all = errors(
        "sources:\n  app:\n    type: testfile\nsinks:\n  o:\n    type: testsink\n  p:\n    type: testsink\n    inputs: [ap]\n",
    );
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[0].message.contains("missing key `inputs`"));
    assert_eq!(all[0].line, Some(5));
    assert!(all[1]
        .message
        .contains("input `ap` does not exist (did you mean `app`?)"));
    assert_eq!(all[1].line, Some(9));
}

#[test]
fn a_component_with_an_error_is_not_also_a_missing_input() {
    let all = errors(
        "sources:\n  a:\n    type: testfile\n    paht: x\nsinks:\n  o:\n    type: testsink\n    inputs: [a]\n",
    );
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].key.as_deref(), Some("paht"));
}

#[test]
fn a_sink_is_not_an_input() {
    let all = errors(
        "sources:\n  a:\n    type: testfile\nsinks:\n  o:\n    type: testsink\n    inputs: [a]\n  p:\n    type: testsink\n    inputs: [o]\n",
    );
    assert!(all[0].message.contains("`o` is a sink"), "{all:?}");
}

#[test]
fn cycles_are_rejected() {
    let all = errors(
        "sources:\n  a:\n    type: testfile\ntransforms:\n  t1:\n    type: testpass\n    inputs: [a, t2]\n  t2:\n    type: testpass\n    inputs: [t1]\nsinks:\n  o:\n    type: testsink\n    inputs: [t2]\n",
    );
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].message.contains("cycle: t1 -> t2 -> t1"),
        "{}",
        all[0].message
    );
}

#[test]
fn missing_environment_variable() {
    let all =
        errors("sources:\n  a:\n    type: testfile\n    path: ${DEEPSENTRY_TEST_SURELY_UNSET}\n");
    assert_eq!(all[0].line, Some(4));
    assert!(all[0]
        .message
        .contains("DEEPSENTRY_TEST_SURELY_UNSET is not set"));
}

#[test]
fn empty_and_non_mapping_files() {
    assert!(errors("")[0].message.contains("empty"));
    assert!(errors("# just a comment\n")[0].message.contains("empty"));
    assert!(errors("- a\n- b\n")[0].message.contains("a mapping with"));
}

#[test]
fn sources_need_a_sink_and_take_no_inputs() {
    let all = errors("sources:\n  a:\n    type: testfile\n    inputs: [b]\n");
    assert!(all[0].message.contains("take no `inputs`"), "{all:?}");
    assert!(
        all.iter().any(|e| e.message.contains("no sink defined")),
        "{all:?}"
    );
}

#[test]
fn unread_outputs_warn() {
    let config = load_str(
        "sources:\n  a:\n    type: testfile\n  b:\n    type: testfile\nsinks:\n  o:\n    type: testsink\n    inputs: [a]\n",
        "p.yml",
    )
    .unwrap();
    assert_eq!(config.warnings.len(), 1);
    assert!(config.warnings[0].contains("sources.b"));
}

#[test]
fn suggestions_only_for_close_words() {
    assert_eq!(suggest("fiel", &["file", "stdin"]), Some("file"));
    assert_eq!(suggest("kafka", &["file", "stdin"]), None);
}

#[test]
fn the_api_section_is_optional_and_checked() {
    let pipeline = "sources:\n  a:\n    type: testfile\nsinks:\n  out:\n    type: testsink\n    \
                    inputs: [a]\n";
    assert_eq!(load_str(pipeline, "p.yml").unwrap().api, None);
    let config = load_str(
        &format!("api:\n  address: 127.0.0.1:8686\n{pipeline}"),
        "p.yml",
    )
    .unwrap();
    assert_eq!(
        config.api.unwrap().address,
        "127.0.0.1:8686".parse().unwrap()
    );
    let e = &errors(&format!("api:\n  address: localhost\n{pipeline}"))[0];
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("socket address"), "{e}");
    let e = &errors(&format!("api:\n  adress: 127.0.0.1:1\n{pipeline}"))[0];
    assert!(e.message.contains("`address`"), "{e}");
}
