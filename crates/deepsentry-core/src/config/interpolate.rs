//! `${VAR}` and `${VAR:-default}` in config files, filled from the environment.

/// Replaces `${NAME}` with the variable's value and `${NAME:-default}` with the value, or
/// `default` when the variable is unset or empty; `$$` stands for a literal `$`. Any other `$`
/// is kept as is (regexes end in `$`). Line structure is preserved so that errors found later
/// still point at the right line, which is why a value holding a newline is refused.
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
                        (Some(value), _) => out.push_str(&value),
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
    fn reports_unset_variables_with_their_line() {
        let errors = interpolate("a: 1\nb: ${NOPE}\nc: ${1BAD}\nd: ${OPEN\n", env).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].0, 2);
        assert!(errors[0].1.contains("NOPE is not set"));
        assert_eq!(errors[1].0, 3);
        assert_eq!(errors[2].0, 4);
    }
}
