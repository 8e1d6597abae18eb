//! Loading and validating a pipeline config.
//!
//! The file is Vector-shaped YAML:
//!
//! ```yaml
//! data_dir: /var/lib/deepsentry      # state such as file checkpoints
//! api: { address: 127.0.0.1:8686 }    # /health and /metrics (off unless set)
//! sources:
//!   app:   { type: file, include: [/var/log/app.log] }
//! transforms:
//!   detect: { type: deepsentry, inputs: [app], model: models/default }
//! sinks:
//!   alerts: { type: file, inputs: [detect], path: alerts.log, format: alert }
//! ```
//!
//! Every error names the file, line and column, the component and the key, and lists the valid
//! choices where there is a fixed set of them. All errors of a file are reported at once.

mod interpolate;
mod locate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use interpolate::interpolate;
pub use locate::locate;

use crate::registry::{self, ComponentConfig, ComponentKind};

/// The `data_dir` used when the config sets none, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".deepsentry";

/// One problem in a config file, with as much of its position as is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or a description such as `<built-in default pipeline>`).
    pub file: String,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// `sources.app`, `sinks.out`, ...
    pub component: Option<String>,
    /// The key at fault inside the component.
    pub key: Option<String>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(component) = &self.component {
            write!(f, "{component}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One component of a loaded pipeline.
#[derive(Debug)]
pub struct ComponentSpec {
    /// Its id (the key under `sources:`, `transforms:` or `sinks:`).
    pub id: String,
    /// Source, transform or sink.
    pub kind: ComponentKind,
    /// The plugin's `type:` name.
    pub plugin: &'static str,
    /// Ids of the components it reads from (empty for sources).
    pub inputs: Vec<String>,
    /// Its settings as written (after `${VAR}` interpolation, without `type` and `inputs`):
    /// a reload keeps a component running when they are unchanged.
    pub settings: serde_yaml::Value,
    /// Its parsed settings.
    pub config: ComponentConfig,
}

/// A validated pipeline: every type known, every key parsed, inputs resolved, no cycle.
#[derive(Debug)]
pub struct PipelineConfig {
    /// Where the config came from, for messages.
    pub origin: String,
    /// Directory for state (checkpoints).
    pub data_dir: PathBuf,
    /// The HTTP API (`/health`, `/metrics`), when `api:` is set.
    pub api: Option<ApiConfig>,
    /// Sources, transforms and sinks in file order.
    pub components: Vec<ComponentSpec>,
    /// Things that are allowed but probably unintended (an output nobody reads).
    pub warnings: Vec<String>,
    /// The environment variables interpolated into it, for [`PipelineConfig::redact`].
    pub interpolated: Interpolated,
}

/// The `${NAME}` values a config was filled with. Messages about the config name the
/// variable instead of printing its value, which may be a secret (a token in a header).
#[derive(Debug, Clone, Default)]
pub struct Interpolated(Vec<(String, String)>);

impl Interpolated {
    /// Values shorter than this are left in messages: too short to be a secret, and
    /// replacing them would garble the rest of the text.
    const MIN_REDACTED: usize = 3;

    fn record(&mut self, name: &str, value: &str) {
        if value.len() >= Self::MIN_REDACTED && !self.0.iter().any(|(n, _)| n == name) {
            self.0.push((name.to_owned(), value.to_owned()));
            // Longest first, so a value inside another is not replaced first.
            self.0.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        }
    }

    /// `message` with every interpolated value replaced by `${NAME}`.
    pub fn redact(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for (name, value) in &self.0 {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("${{{name}}}"));
            }
        }
        out
    }
}

impl PipelineConfig {
    /// `message` (an error about this config) without the values of the environment
    /// variables interpolated into it (see [`Interpolated`]).
    pub fn redact(&self, message: &str) -> String {
        self.interpolated.redact(message)
    }
}

/// The `api:` section: where the HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port`, e.g. `127.0.0.1:8686`.
    pub address: std::net::SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    api: Option<ApiConfig>,
    #[serde(default)]
    sources: Option<serde_yaml::Mapping>,
    #[serde(default)]
    transforms: Option<serde_yaml::Mapping>,
    #[serde(default)]
    sinks: Option<serde_yaml::Mapping>,
}

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads, interpolates and validates the pipeline at `path`.
pub fn load_file(path: &Path) -> Result<PipelineConfig, ConfigErrors> {
    let name = path.display().to_string();
    let read = std::fs::File::open(path).and_then(|file| {
        // A pipeline is a few KB; anything past the cap is not one (and is not read whole).
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
            &mut text,
        )?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(std::io::Error::other(format!(
                "the file is larger than {} KiB; a pipeline config is never that big",
                MAX_CONFIG_BYTES / 1024
            )));
        }
        Ok(text)
    });
    match read {
        Ok(text) => load_str(&text, &name),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: None,
            column: None,
            component: None,
            key: None,
            message: format!("cannot read the config file: {e}"),
        }])),
    }
}

/// Interpolates and validates a pipeline given as text; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<PipelineConfig, ConfigErrors> {
    Loader::new(origin).load(text)
}

struct Loader<'a> {
    origin: &'a str,
    text: String,
    errors: Vec<ConfigError>,
    interpolated: Interpolated,
}

/// Splits a serde_yaml message from the ` at line L column C` it appends.
fn strip_location(message: &str) -> &str {
    match message.find(" at line ") {
        Some(pos) => &message[..pos],
        None => message,
    }
}

/// The closest of `choices` to `word`, if it is close enough to be a typo.
pub fn suggest<'c>(word: &str, choices: &[&'c str]) -> Option<&'c str> {
    choices
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn list(choices: &[&str]) -> String {
    choices
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'a> Loader<'a> {
    fn new(origin: &'a str) -> Self {
        Self {
            origin,
            text: String::new(),
            errors: Vec::new(),
            interpolated: Interpolated::default(),
        }
    }

    fn error_at(
        &mut self,
        path: &[&str],
        component: Option<String>,
        key: Option<String>,
        message: String,
    ) {
        let position = locate(&self.text, path);
        self.errors.push(ConfigError {
            file: self.origin.to_string(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            component,
            key,
            message,
        });
    }

    fn fail(self) -> ConfigErrors {
        let interpolated = self.interpolated;
        ConfigErrors(
            self.errors
                .into_iter()
                .map(|mut error| {
                    error.message = interpolated.redact(&error.message);
                    error
                })
                .collect(),
        )
    }

    fn load(mut self, text: &str) -> Result<PipelineConfig, ConfigErrors> {
        let interpolated = std::cell::RefCell::new(Interpolated::default());
        let filled = interpolate(text, |name| {
            let value = std::env::var(name).ok();
            if let Some(value) = &value {
                interpolated.borrow_mut().record(name, value);
            }
            value
        });
        self.interpolated = interpolated.into_inner();
        self.text = match filled {
            Ok(text) => text,
            Err(errors) => {
                for (line, message) in errors {
                    self.errors.push(ConfigError {
                        file: self.origin.to_string(),
                        line: Some(line),
                        column: None,
                        component: None,
                        key: None,
                        message,
                    });
                }
                return Err(self.fail());
            }
        };
        let blank = self
            .text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if blank {
            self.error_at(
                &[],
                None,
                None,
                "the config is empty; a pipeline needs `sources:` and `sinks:`".into(),
            );
            return Err(self.fail());
        }
        let raw: RawConfig = match serde_yaml::from_str(&self.text) {
            Ok(raw) => raw,
            Err(e) => {
                let location = e.location();
                let mut message = strip_location(&e.to_string()).replace(
                    "struct RawConfig",
                    "a mapping with `data_dir`, `api`, `sources`, `transforms`, `sinks`",
                );
                if message.starts_with("unknown field") {
                    message.push_str(" (top-level keys)");
                }
                self.errors.push(ConfigError {
                    file: self.origin.to_string(),
                    line: location.as_ref().map(|l| l.line()),
                    column: location.as_ref().map(|l| l.column()),
                    component: None,
                    key: None,
                    message,
                });
                return Err(self.fail());
            }
        };
        let mut components = Vec::new();
        for (kind, section) in [
            (ComponentKind::Source, raw.sources),
            (ComponentKind::Transform, raw.transforms),
            (ComponentKind::Sink, raw.sinks),
        ] {
            for (id, body) in section.unwrap_or_default() {
                if let Some(spec) = self.component(kind, id, body) {
                    components.push(spec);
                }
            }
        }
        let warnings = self.check_graph(&components);
        if !self.errors.is_empty() {
            return Err(self.fail());
        }
        Ok(PipelineConfig {
            origin: self.origin.to_string(),
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            api: raw.api,
            components,
            warnings,
            interpolated: self.interpolated,
        })
    }

    fn component(
        &mut self,
        kind: ComponentKind,
        id: serde_yaml::Value,
        body: serde_yaml::Value,
    ) -> Option<ComponentSpec> {
        let section = kind.section();
        let Some(id) = id.as_str().map(str::to_owned) else {
            self.error_at(
                &[section],
                None,
                None,
                format!("component ids under `{section}` must be strings"),
            );
            return None;
        };
        let name = format!("{section}.{id}");
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.error_at(
                &[section, &id],
                Some(name),
                None,
                "a component id may only hold letters, digits, `_` and `-`".into(),
            );
            return None;
        }
        let serde_yaml::Value::Mapping(mut body) = body else {
            self.error_at(
                &[section, &id],
                Some(name),
                None,
                format!("expected a mapping with at least `type:`, found {body:?}"),
            );
            return None;
        };
        let valid = registry::names(kind);
        let type_name = match body.remove("type") {
            Some(serde_yaml::Value::String(t)) => t,
            Some(other) => {
                self.error_at(
                    &[section, &id, "type"],
                    Some(name),
                    Some("type".into()),
                    format!(
                        "expected a {} type name, found {other:?}; valid types: {}",
                        kind.noun(),
                        list(&valid)
                    ),
                );
                return None;
            }
            None => {
                self.error_at(
                    &[section, &id],
                    Some(name),
                    Some("type".into()),
                    format!(
                        "missing key `type`; valid {} types: {}",
                        kind.noun(),
                        list(&valid)
                    ),
                );
                return None;
            }
        };
        let Some(plugin) = registry::find(kind, &type_name) else {
            let hint = suggest(&type_name, &valid)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            self.error_at(
                &[section, &id, "type"],
                Some(name),
                Some("type".into()),
                format!(
                    "unknown {} type `{type_name}`{hint}; valid types: {}",
                    kind.noun(),
                    list(&valid)
                ),
            );
            return None;
        };
        let inputs = self.inputs(kind, &id, &name, body.remove("inputs"))?;
        let settings = serde_yaml::Value::Mapping(body);
        match (plugin.parse)(settings.clone()) {
            Ok(config) => Some(ComponentSpec {
                id,
                kind,
                plugin: plugin.name,
                inputs,
                settings,
                config,
            }),
            Err(e) => {
                let message = strip_location(&e.inner().to_string()).to_string();
                let key = unknown_field(&message).or_else(|| {
                    let path = e.path().to_string();
                    (path != ".").then_some(path)
                });
                let top_key = key
                    .as_deref()
                    .map(|k| k.split(['.', '[']).next().unwrap_or(k).to_string());
                let mut path = vec![section, id.as_str()];
                if let Some(k) = top_key.as_deref() {
                    path.push(k);
                }
                self.error_at(
                    &path,
                    Some(name),
                    key,
                    format!("{message} (in {} `{}`)", kind.noun(), plugin.name),
                );
                None
            }
        }
    }

    fn inputs(
        &mut self,
        kind: ComponentKind,
        id: &str,
        name: &str,
        inputs: Option<serde_yaml::Value>,
    ) -> Option<Vec<String>> {
        let section = kind.section();
        match (kind, inputs) {
            (ComponentKind::Source, None) => Some(Vec::new()),
            (ComponentKind::Source, Some(_)) => {
                self.error_at(
                    &[section, id, "inputs"],
                    Some(name.into()),
                    Some("inputs".into()),
                    "sources read from the outside world and take no `inputs`".into(),
                );
                None
            }
            (_, None) => {
                self.error_at(
                    &[section, id],
                    Some(name.into()),
                    Some("inputs".into()),
                    format!(
                        "missing key `inputs`: a {} needs a list of the sources or transforms \
                         it reads from",
                        kind.noun()
                    ),
                );
                None
            }
            (_, Some(value)) => match serde_yaml::from_value::<Vec<String>>(value) {
                Ok(list) if !list.is_empty() => Some(list),
                Ok(_) => {
                    self.error_at(
                        &[section, id, "inputs"],
                        Some(name.into()),
                        Some("inputs".into()),
                        "`inputs` is empty; name at least one source or transform".into(),
                    );
                    None
                }
                Err(_) => {
                    self.error_at(
                        &[section, id, "inputs"],
                        Some(name.into()),
                        Some("inputs".into()),
                        "`inputs` must be a list of component ids, e.g. `inputs: [app]`".into(),
                    );
                    None
                }
            },
        }
    }

    fn check_graph(&mut self, components: &[ComponentSpec]) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut kinds: BTreeMap<&str, ComponentKind> = BTreeMap::new();
        for c in components {
            if let Some(previous) = kinds.insert(&c.id, c.kind) {
                self.error_at(
                    &[c.kind.section(), &c.id],
                    Some(format!("{}.{}", c.kind.section(), c.id)),
                    None,
                    format!(
                        "the id `{}` is also used under `{}`; ids must be unique",
                        c.id,
                        previous.section()
                    ),
                );
            }
        }
        if !components.iter().any(|c| c.kind == ComponentKind::Source) {
            self.error_at(
                &["sources"],
                None,
                None,
                format!(
                    "no source defined; add one under `sources:` (types: {})",
                    list(&registry::names(ComponentKind::Source))
                ),
            );
        }
        if !components.iter().any(|c| c.kind == ComponentKind::Sink) {
            self.error_at(
                &["sinks"],
                None,
                None,
                format!(
                    "no sink defined; add one under `sinks:` (types: {})",
                    list(&registry::names(ComponentKind::Sink))
                ),
            );
        }
        let producers: Vec<&str> = components
            .iter()
            .filter(|c| c.kind != ComponentKind::Sink)
            .map(|c| c.id.as_str())
            .collect();
        let mut consumed = BTreeSet::new();
        for c in components {
            for input in &c.inputs {
                consumed.insert(input.as_str());
                let problem = match kinds.get(input.as_str()) {
                    Some(ComponentKind::Sink) => Some(format!(
                        "input `{input}` is a sink, and sinks have no output"
                    )),
                    Some(_) => None,
                    None => {
                        let hint = suggest(input, &producers)
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        Some(format!(
                            "input `{input}` does not exist{hint}; valid inputs: {}",
                            list(&producers)
                        ))
                    }
                };
                if input == &c.id {
                    self.error_at(
                        &[c.kind.section(), &c.id, "inputs"],
                        Some(format!("{}.{}", c.kind.section(), c.id)),
                        Some("inputs".into()),
                        "a component cannot read its own output".into(),
                    );
                } else if let Some(message) = problem {
                    self.error_at(
                        &[c.kind.section(), &c.id, "inputs"],
                        Some(format!("{}.{}", c.kind.section(), c.id)),
                        Some("inputs".into()),
                        message,
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(components) {
            let first = cycle[0].clone();
            self.error_at(
                &["transforms", &first, "inputs"],
                Some(format!("transforms.{first}")),
                Some("inputs".into()),
                format!("the transforms form a cycle: {}", cycle.join(" -> ")),
            );
        }
        for c in components {
            if c.kind != ComponentKind::Sink && !consumed.contains(c.id.as_str()) {
                warnings.push(format!(
                    "{}.{}: no transform or sink reads its output; its events go nowhere",
                    c.kind.section(),
                    c.id
                ));
            }
        }
        warnings
    }
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// A cycle among transforms, as the ids along it (first repeated at the end).
fn find_cycle(components: &[ComponentSpec]) -> Option<Vec<String>> {
    let inputs: BTreeMap<&str, &[String]> = components
        .iter()
        .filter(|c| c.kind == ComponentKind::Transform)
        .map(|c| (c.id.as_str(), c.inputs.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        inputs: &BTreeMap<&'a str, &'a [String]>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node, 1);
        path.push(node);
        for input in inputs.get(node).copied().unwrap_or_default() {
            if inputs.contains_key(input.as_str()) {
                if let Some(cycle) = visit(input, inputs, state, path) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        state.insert(node, 2);
        None
    }
    for node in inputs.keys() {
        if let Some(cycle) = visit(node, &inputs, &mut state, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests;
