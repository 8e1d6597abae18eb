//! The loader: parses a pipeline's YAML, checks every component and key, and gathers every
//! error with its position.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::graph::find_cycle;
use super::suggest::list;
use super::suggest::suggest;
use super::{
    interpolate, locate, strip_location, ComponentSpec, ConfigError, ConfigErrors, Interpolated,
    PipelineConfig, RawConfig, DEFAULT_DATA_DIR,
};
use crate::registry::{self, ComponentKind};

pub(super) struct Loader<'a> {
    origin: &'a str,
    text: String,
    errors: Vec<ConfigError>,
    interpolated: Interpolated,
}

impl<'a> Loader<'a> {
    pub(super) fn new(origin: &'a str) -> Self {
        Self {
            origin,
            text: String::new(),
            errors: Vec::new(),
            interpolated: Interpolated::default(),
        }
    }

    pub(super) fn error_at(
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

    pub(super) fn fail(self) -> ConfigErrors {
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

    pub(super) fn load(mut self, text: &str) -> Result<PipelineConfig, ConfigErrors> {
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
                self.errors
                    .extend(ConfigErrors::from_interpolation(self.origin, errors).0);
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
                let mut error = ConfigError::from_yaml(self.origin, &e);
                error.message = error.message.replace(
                    "struct RawConfig",
                    "a mapping with `data_dir`, `api`, `sources`, `transforms`, `sinks`",
                );
                if error.message.starts_with("unknown field") {
                    error.message.push_str(" (top-level keys)");
                }
                self.errors.push(error);
                return Err(self.fail());
            }
        };
        self.assemble(raw)
    }

    /// [`Loader::load`] for a pipeline built in code as a tree of values: there is no text,
    /// so errors name the component and key but no line.
    pub(super) fn load_value(
        mut self,
        value: serde_yaml::Value,
    ) -> Result<PipelineConfig, ConfigErrors> {
        match serde_yaml::from_value::<RawConfig>(value) {
            Ok(raw) => self.assemble(raw),
            Err(e) => {
                self.errors.push(ConfigError::from_yaml(self.origin, &e));
                Err(self.fail())
            }
        }
    }

    /// Builds every component of `raw` and checks the graph.
    fn assemble(mut self, raw: RawConfig) -> Result<PipelineConfig, ConfigErrors> {
        let mut components = Vec::new();
        // Components whose own errors are reported: their ids still exist for the graph.
        let mut invalid = BTreeMap::new();
        for (kind, section) in [
            (ComponentKind::Source, raw.sources),
            (ComponentKind::Transform, raw.transforms),
            (ComponentKind::Sink, raw.sinks),
        ] {
            for (id, body) in section.unwrap_or_default() {
                match self.component(kind, id.clone(), body) {
                    Some(spec) => components.push(spec),
                    None => {
                        if let Some(id) = id.as_str() {
                            invalid.insert(id.to_owned(), kind);
                        }
                    }
                }
            }
        }
        let warnings = self.check_graph(&components, &invalid);
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

    pub(super) fn component(
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

    pub(super) fn inputs(
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

    /// Checks ids, inputs and cycles of the `components` that built; `invalid` are those whose
    /// own errors were reported, which exist for their readers without another error.
    pub(super) fn check_graph(
        &mut self,
        components: &[ComponentSpec],
        invalid: &BTreeMap<String, ComponentKind>,
    ) -> Vec<String> {
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
        let declared = |kind: ComponentKind| {
            components.iter().any(|c| c.kind == kind) || invalid.values().any(|&k| k == kind)
        };
        if !declared(ComponentKind::Source) {
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
        if !declared(ComponentKind::Sink) {
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
                let problem = match kinds
                    .get(input.as_str())
                    .or_else(|| invalid.get(input.as_str()))
                {
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

pub(super) fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}
