//! Reload decisions, against the test plugins that `config`'s tests register.

use super::*;
use crate::config::load_str;

fn setups_of(yaml: &str) -> BTreeMap<String, Setup> {
    setups(&load_str(yaml, "test").expect("a valid config"))
}

/// What a reload from `old` (everything running) to `new` does with each component.
fn reload(old: &str, new: &str) -> (BTreeMap<String, Action>, Vec<String>) {
    let old = setups_of(old);
    let new = setups_of(new);
    let actions = new
        .iter()
        .map(|(id, setup)| {
            let current = old.get(id).map(|setup| Current {
                setup,
                running: true,
                replacement_pending: false,
            });
            (id.clone(), action(current, setup))
        })
        .collect();
    (actions, removed(old.keys(), &new))
}

const BASE: &str = "
sources:
  app: { type: testfile, path: a.log }
transforms:
  pass: { type: testpass, inputs: [app] }
sinks:
  out: { type: testsink, inputs: [pass] }
";

#[test]
fn the_same_config_keeps_everything_running() {
    let (actions, removed) = reload(BASE, BASE);
    assert!(actions.values().all(|a| *a == Action::Keep), "{actions:?}");
    assert!(removed.is_empty());
}

#[test]
fn a_changed_setting_replaces_that_component_only() {
    let changed = BASE.replace("path: a.log", "path: b.log");
    let (actions, _) = reload(BASE, &changed);
    assert_eq!(actions["app"], Action::Replace);
    assert_eq!(actions["pass"], Action::Keep);
    assert_eq!(actions["out"], Action::Keep);
}

#[test]
fn a_new_consumer_is_added_and_its_producer_replaced_to_feed_it() {
    let more = format!("{BASE}  audit: {{ type: testsink, inputs: [pass] }}\n");
    let (actions, removed) = reload(BASE, &more);
    assert_eq!(actions["audit"], Action::Add);
    assert_eq!(
        actions["pass"],
        Action::Replace,
        "its output gains a channel"
    );
    assert_eq!(actions["app"], Action::Keep);
    assert_eq!(actions["out"], Action::Keep);
    assert!(removed.is_empty());

    // And back: the sink goes, its producer is replaced again.
    let (actions, removed) = reload(&more, BASE);
    assert_eq!(removed, ["audit"]);
    assert_eq!(actions["pass"], Action::Replace);
    assert_eq!(actions["out"], Action::Keep);
}

#[test]
fn a_rewired_input_replaces_the_consumer() {
    let rewired = BASE.replace("inputs: [pass]", "inputs: [app]");
    let (actions, _) = reload(BASE, &rewired);
    assert_eq!(actions["out"], Action::Replace);
    // Both producers' consumers changed.
    assert_eq!(actions["app"], Action::Replace);
    assert_eq!(actions["pass"], Action::Replace);
}

#[test]
fn a_stopped_component_is_started_anew_and_a_pending_replacement_is_not_kept() {
    let old = setups_of(BASE);
    let changed = setups_of(&BASE.replace("path: a.log", "path: b.log"));
    let stopped = Current {
        setup: &old["app"],
        running: false,
        replacement_pending: false,
    };
    assert_eq!(action(Some(stopped), &changed["app"]), Action::Add);
    let waiting = Current {
        setup: &old["out"],
        running: true,
        replacement_pending: true,
    };
    assert_eq!(action(Some(waiting), &old["out"]), Action::Replace);
    assert_eq!(action(None, &old["out"]), Action::Add);
}
