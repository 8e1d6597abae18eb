//! The plugin registry: every component type registers itself here under its `type:` name.
//!
//! Registration happens at link time through `inventory`, so the core never names a plugin and
//! a plugin crate is added to the binary by depending on it.

use serde::de::DeserializeOwned;

use crate::component::{SinkConfig, SourceConfig, TransformConfig};

/// Which section of the config a plugin belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComponentKind {
    /// Reads data into the pipeline.
    Source,
    /// Changes or enriches events.
    Transform,
    /// Writes data out.
    Sink,
}

impl ComponentKind {
    /// The config section's name (`sources`, ...).
    pub fn section(self) -> &'static str {
        match self {
            ComponentKind::Source => "sources",
            ComponentKind::Transform => "transforms",
            ComponentKind::Sink => "sinks",
        }
    }

    /// The singular name (`source`, ...).
    pub fn noun(self) -> &'static str {
        match self {
            ComponentKind::Source => "source",
            ComponentKind::Transform => "transform",
            ComponentKind::Sink => "sink",
        }
    }
}

/// A parsed component config of any kind.
#[derive(Debug)]
pub enum ComponentConfig {
    /// A source's config.
    Source(Box<dyn SourceConfig>),
    /// A transform's config.
    Transform(Box<dyn TransformConfig>),
    /// A sink's config.
    Sink(Box<dyn SinkConfig>),
}

/// Why a component's settings did not parse, with the path of the offending key.
pub type ParseError = serde_path_to_error::Error<serde_yaml::Error>;

/// Parses a component's settings (the YAML mapping without `type` and `inputs`).
pub type ParseFn = fn(serde_yaml::Value) -> Result<ComponentConfig, ParseError>;

/// One registered plugin.
#[derive(Debug)]
pub struct Plugin {
    /// Source, transform or sink.
    pub kind: ComponentKind,
    /// The `type:` name.
    pub name: &'static str,
    /// One line for `deepsentry plugins`.
    pub description: &'static str,
    /// Parses its config struct.
    pub parse: ParseFn,
}

inventory::collect!(Plugin);

/// Every registered plugin, sorted by kind then name.
pub fn plugins() -> Vec<&'static Plugin> {
    let mut all: Vec<_> = inventory::iter::<Plugin>.into_iter().collect();
    all.sort_by_key(|p| (p.kind, p.name));
    all
}

/// The plugin of `kind` named `name`.
pub fn find(kind: ComponentKind, name: &str) -> Option<&'static Plugin> {
    inventory::iter::<Plugin>
        .into_iter()
        .find(|p| p.kind == kind && p.name == name)
}

/// The names of every plugin of `kind`, sorted.
pub fn names(kind: ComponentKind) -> Vec<&'static str> {
    plugins()
        .into_iter()
        .filter(|p| p.kind == kind)
        .map(|p| p.name)
        .collect()
}

/// [`ParseFn`] for a source config type (used by [`register_source!`](crate::register_source)).
pub fn parse_source<C: SourceConfig + DeserializeOwned + 'static>(
    value: serde_yaml::Value,
) -> Result<ComponentConfig, ParseError> {
    Ok(ComponentConfig::Source(Box::new(
        serde_path_to_error::deserialize::<_, C>(value)?,
    )))
}

/// [`ParseFn`] for a transform config type.
pub fn parse_transform<C: TransformConfig + DeserializeOwned + 'static>(
    value: serde_yaml::Value,
) -> Result<ComponentConfig, ParseError> {
    Ok(ComponentConfig::Transform(Box::new(
        serde_path_to_error::deserialize::<_, C>(value)?,
    )))
}

/// [`ParseFn`] for a sink config type.
pub fn parse_sink<C: SinkConfig + DeserializeOwned + 'static>(
    value: serde_yaml::Value,
) -> Result<ComponentConfig, ParseError> {
    Ok(ComponentConfig::Sink(Box::new(
        serde_path_to_error::deserialize::<_, C>(value)?,
    )))
}

#[doc(hidden)]
#[macro_export]
macro_rules! __register_plugin {
    ($kind:ident, $parse:ident, $name:literal, $description:literal, $config:ty) => {
        $crate::inventory::submit! {
            $crate::registry::Plugin {
                kind: $crate::registry::ComponentKind::$kind,
                name: $name,
                description: $description,
                parse: $crate::registry::$parse::<$config>,
            }
        }
    };
}

/// Registers a source plugin: `register_source!("file", "Tails files", FileSourceConfig);`
#[macro_export]
macro_rules! register_source {
    ($name:literal, $description:literal, $config:ty) => {
        $crate::__register_plugin!(Source, parse_source, $name, $description, $config);
    };
}

/// Registers a transform plugin: `register_transform!("filter", "Keeps matching events", C);`
#[macro_export]
macro_rules! register_transform {
    ($name:literal, $description:literal, $config:ty) => {
        $crate::__register_plugin!(Transform, parse_transform, $name, $description, $config);
    };
}

/// Registers a sink plugin: `register_sink!("file", "Writes to a file", FileSinkConfig);`
#[macro_export]
macro_rules! register_sink {
    ($name:literal, $description:literal, $config:ty) => {
        $crate::__register_plugin!(Sink, parse_sink, $name, $description, $config);
    };
}
