//! Checks of the pipeline's graph.

use std::collections::BTreeMap;

use super::ComponentSpec;
use crate::registry::ComponentKind;

/// A cycle among transforms, as the ids along it (first repeated at the end).
pub(super) fn find_cycle(components: &[ComponentSpec]) -> Option<Vec<String>> {
    let inputs: BTreeMap<&str, &[String]> = components
        .iter()
        .filter(|c| c.kind == ComponentKind::Transform)
        .map(|c| (c.id.as_str(), c.inputs.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    pub(super) fn visit<'a>(
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
