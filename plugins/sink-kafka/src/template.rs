//! Topic names built from event fields: `logs-{{ service }}`.

use deepsentry_core::Event;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(String),
}

/// A string with `{{ field }}` placeholders, parsed once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; an unclosed `{{` or an empty placeholder is an error.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow::anyhow!("`{{{{` without a closing `}}}}` in `{text}`"))?;
            let field = after[..end].trim();
            anyhow::ensure!(!field.is_empty(), "empty `{{{{ }}}}` in `{text}`");
            parts.push(Part::Field(field.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        anyhow::ensure!(!parts.is_empty(), "the topic is empty");
        Ok(Self { parts })
    }

    /// Writes the template for `event` into `out`; on a missing field, returns its name.
    pub fn render<'t>(&'t self, event: &Event, out: &mut String) -> Result<(), &'t str> {
        use std::fmt::Write;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(name) => {
                    let value = event.fields.get(name).ok_or(name.as_str())?;
                    let _ = write!(out, "{value}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepsentry_core::{Origin, Value};

    #[test]
    fn renders_fields_and_reports_missing_ones() {
        let template = Template::parse("logs-{{ topic }}-{{partition}}").unwrap();
        let mut event = Event::from_str("x", chrono::Utc::now(), Origin::new("s", "t"));
        event.fields.insert("topic", Value::Str("app".into()));
        let mut out = String::new();
        assert_eq!(template.render(&event, &mut out), Err("partition"));
        event.fields.insert("partition", Value::Int(3));
        out.clear();
        template.render(&event, &mut out).unwrap();
        assert_eq!(out, "logs-app-3");
    }

    #[test]
    fn plain_names_and_errors() {
        let plain = Template::parse("alerts").unwrap();
        let mut out = String::new();
        let event = Event::from_str("x", chrono::Utc::now(), Origin::new("s", "t"));
        plain.render(&event, &mut out).unwrap();
        assert_eq!(out, "alerts");
        assert!(Template::parse("a-{{ b").is_err());
        assert!(Template::parse("a-{{ }}").is_err());
        assert!(Template::parse("").is_err());
    }
}
