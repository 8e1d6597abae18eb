//! Finding where a key sits in a YAML file, for error messages.
//!
//! Component settings are parsed after the file has become a tree of values, which no longer
//! knows its line numbers; this walks the text of block-style YAML (what people write for
//! pipelines) to find the line of `section.id.key`.

/// The 1-based `(line, column)` of the key at `path` (e.g. `["sources", "in", "include"]`).
/// When a step of the path is not found (flow style, an anchor), the deepest step that was
/// found is returned; `None` if not even the first was.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for key in path {
        let mut child_indent = None;
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut indent = line.len() - trimmed.len();
            if parent_indent.is_some_and(|p| indent <= p) {
                break;
            }
            // A key of a mapping that is a list item: `- key: value`.
            let mut body = trimmed;
            while let Some(rest) = body.strip_prefix("- ") {
                let rest_trimmed = rest.trim_start();
                indent += body.len() - rest_trimmed.len();
                body = rest_trimmed;
            }
            if *child_indent.get_or_insert(indent) != indent {
                continue;
            }
            if key_matches(body, key) {
                hit = Some((i, indent));
                break;
            }
        }
        let Some((i, indent)) = hit else { break };
        found = Some((i + 1, indent + 1));
        from = i + 1;
        parent_indent = Some(indent);
    }
    found
}

fn key_matches(line: &str, key: &str) -> bool {
    let unquoted = [("\"", "\""), ("'", "'"), ("", "")]
        .iter()
        .find_map(|(open, close)| {
            line.strip_prefix(open)?
                .strip_prefix(key)?
                .strip_prefix(close)
        });
    unquoted.is_some_and(|rest| rest.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a pipeline
data_dir: /tmp/x
sources:
  app:
    type: file
    include:
      - /var/log/*.log
  net:
    type: tcp
    mode: server
sinks:
  out:
    type: console
    inputs: [app]
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(locate(TEXT, &["sources"]), Some((3, 1)));
        assert_eq!(locate(TEXT, &["sources", "net"]), Some((8, 3)));
        assert_eq!(locate(TEXT, &["sources", "net", "mode"]), Some((10, 5)));
        assert_eq!(locate(TEXT, &["sinks", "out", "inputs"]), Some((14, 5)));
    }

    #[test]
    fn stays_inside_the_parent_block() {
        // `mode` exists under `net`, not under `app`: fall back to `app` itself.
        assert_eq!(locate(TEXT, &["sources", "app", "mode"]), Some((4, 3)));
        assert_eq!(locate(TEXT, &["transforms"]), None);
    }
}
