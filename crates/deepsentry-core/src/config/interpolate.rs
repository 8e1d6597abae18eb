//! `${VAR}` and `${VAR:-default}` in config files, filled from the environment.

/// Replaces `${NAME}` with the variable's value and `${NAME:-default}` with the value, or
/// `default` when the variable is unset or empty; `$$` stands for a literal `$`. Any other `$`
/// is kept as is (regexes end in `$`). Line structure is preserved so that errors found later
/// still point at the right line, which is why a value holding a newline is refused.
///
/// A value stays the scalar it is written in, whatever it holds: inside a double-quoted
/// scalar its `"` and `\` are escaped, inside a single-quoted one its `'` is doubled, and a
/// value that would change the structure of an unquoted scalar (`#`, `: `, a leading `*`, a
/// bracket...) is quoted when it is the whole scalar, or refused when it is part of one.
///
/// Errors are `(line, message)` pairs, one per bad reference.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push((line_no, "`${` is not closed by `}`".to_string()));
                    out.push_str(&rest[pos..]);
                    rest = "";
                    break;
                };
                let inner = &body[..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (inner, None),
                };
                if !is_variable_name(name) {
                    errors.push((
                        line_no,
                        format!(
                            "`${{{inner}}}`: `{name}` is not a valid environment variable name"
                        ),
                    ));
                } else {
                    match (lookup(name).filter(|v| !v.is_empty()), default) {
                        (Some(value), _) if value.contains('\n') => errors.push((
                            line_no,
                            format!("environment variable {name} holds a newline"),
                        )),
                        (Some(value), _) => {
                            let line_start = out.rfind('\n').map_or(0, |i| i + 1);
                            let before = &out[line_start..];
                            let after = &body[end + 1..];
                            match embed(before, after, &value) {
                                Ok(text) => out.push_str(&text),
                                Err(why) => errors.push((
                                    line_no,
                                    format!("the value of {name} {why}; quote the whole value"),
                                )),
                            }
                        }
                        (None, Some(default)) => out.push_str(default),
                        (None, None) => errors.push((
                            line_no,
                            format!(
                                "environment variable {name} is not set; set it or write \
                                 ${{{name}:-default}}"
                            ),
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// How a scalar around a reference is written.
#[derive(Debug, PartialEq, Eq)]
enum Quoting {
    Plain,
    Double,
    Single,
}

/// The quoting in effect at the end of `line` (the line up to a reference): a quote opens a
/// scalar only where a value starts (after `: `, `- `, `[`, `{`, `,` or indentation).
fn quoting(line: &str) -> Quoting {
    let mut state = Quoting::Plain;
    let mut previous = ' ';
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match state {
            Quoting::Plain
                if matches!(c, '"' | '\'')
                    && matches!(previous, ' ' | '\t' | '[' | '{' | ',' | ':' | '-') =>
            {
                state = if c == '"' {
                    Quoting::Double
                } else {
                    Quoting::Single
                };
            }
            Quoting::Double if c == '\\' => {
                chars.next();
            }
            Quoting::Double if c == '"' => state = Quoting::Plain,
            Quoting::Single if c == '\'' => state = Quoting::Plain,
            _ => {}
        }
        previous = c;
    }
    state
}

/// `value` written so that it stays one scalar where the reference stood (`before` and
/// `after` are the rest of its line), or why it cannot be.
fn embed(before: &str, after: &str, value: &str) -> Result<String, &'static str> {
    match quoting(before) {
        Quoting::Double => Ok(value.replace('\\', "\\\\").replace('"', "\\\"")),
        Quoting::Single => Ok(value.replace('\'', "''")),
        Quoting::Plain => {
            let special = value.contains(": ")
                || value.contains(" #")
                || value.ends_with(':')
                || value.starts_with(|c: char| "#&*!|>'\"%@`[]{},".contains(c))
                // `-1` is a number; `- x` and a lone `-` are YAML syntax.
                || ["-", "?", ":"]
                    .iter()
                    .any(|p| value == *p || value.starts_with(&format!("{p} ")))
                || value.contains(['[', ']', '{', '}', ','])
                || value != value.trim();
            if !special {
                return Ok(value.to_owned());
            }
            let trimmed = before.trim_end();
            let starts_value = before.ends_with(' ')
                && (trimmed.ends_with(':') || trimmed.ends_with('-') || trimmed.is_empty());
            let ends_value = after.trim_start().is_empty() || after.trim_start().starts_with('#');
            if starts_value && ends_value {
                Ok(format!("'{}'", value.replace('\'', "''")))
            } else {
                Err("holds characters that would change the YAML around it")
            }
        }
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "LOG_FILE" => Some("/var/log/app.log".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let text = "a: ${LOG_FILE}\nb: ${MISSING:-/dev/stdin}\nc: ${EMPTY:-x}\nd: '^a$'\ne: $$5\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: /var/log/app.log\nb: /dev/stdin\nc: x\nd: '^a$'\ne: $5\n"
        );
    }

    #[test]
    fn a_value_stays_the_scalar_it_is_written_in() {
        let env = |name: &str| match name {
            "TRICKY" => Some("a # b: c".to_string()),
            "QUOTES" => Some(r#"say "hi" \ 'there'"#.to_string()),
            "PORT" => Some("8080".to_string()),
            "NEGATIVE" => Some("-1".to_string()),
            _ => None,
        };
        let text = "a: ${TRICKY}\nb: \"x ${QUOTES}\"\nc: 'x ${QUOTES}'\nd: ${PORT}\ne:\n  - ${TRICKY} # note\nf: ${NEGATIVE}\n";
        let out = interpolate(text, env).unwrap();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(parsed["a"], "a # b: c");
        assert_eq!(parsed["b"], r#"x say "hi" \ 'there'"#);
        assert_eq!(parsed["c"], r#"x say "hi" \ 'there'"#);
        assert_eq!(parsed["d"], 8080, "a plain number stays a number");
        assert_eq!(parsed["e"][0], "a # b: c");
        assert_eq!(parsed["f"], -1);
        let errors = interpolate("f: /var/${TRICKY}/log\n", env).unwrap_err();
        assert!(errors[0].1.contains("quote the whole value"), "{errors:?}");
    }

    #[test]
    fn reports_unset_variables_with_their_line() {
        let errors = interpolate("a: 1\nb: ${NOPE}\nc: ${1BAD}\nd: ${OPEN\n", env).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].0, 2);
        assert!(errors[0].1.contains("NOPE is not set"));
        assert_eq!(errors[1].0, 3);
        assert_eq!(errors[2].0, 4);
    }
}
