//! Command-line surface: validate, plugins, version, and every class of config error.

use std::process::Command;

use crate::common::*;

fn validate(s: &Scratch, yaml: &str) -> (i32, String) {
    let config = s.pipeline("p.yml", yaml);
    on_config("validate", &config, &[])
}

/// `deepsentry COMMAND -c config` with `env` set and no input: its exit code and its stdout
/// and stderr together.
fn on_config(command: &str, config: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(bin())
        .args([command, "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

const GOOD: &str =
    "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [in]\n";

#[test]
fn a_valid_config_exits_0() {
    let s = Scratch::new();
    let (code, text) = validate(&s, GOOD);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("valid"));
}

#[test]
fn every_shipped_pipeline_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            // From the repository root, as the README runs them: `validate` loads the
            // models they name.
            let output = Command::new(bin())
                .args(["validate", "-c"])
                .arg(&path)
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn config_errors_name_file_line_key_and_choices() {
    let s = Scratch::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown type",
            "sources:\n  in:\n    type: stdn\nsinks:\n  out:\n    type: console\n    inputs: [in]\n",
            &["p.yml:3:5", "sources.in", "unknown source type `stdn`", "did you mean `stdin`", "`file`, `http`, `kafka`, `stdin`, `syslog`, `tcp`"],
        ),
        (
            "unknown key",
            "sources:\n  in:\n    type: file\n    includes: [a]\nsinks:\n  out:\n    type: console\n    inputs: [in]\n",
            &["p.yml:4:5", "key `includes`", "unknown field `includes`", "`include`", "`read_from`"],
        ),
        (
            "bad value",
            "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [in]\n    encoding: xml\n",
            &["p.yml:8:5", "key `encoding`", "unknown variant `xml`", "`monitor`, `text`, `json`, `alert`"],
        ),
        (
            "bad value of a transform key",
            "sources:\n  in:\n    type: stdin\ntransforms:\n  detect:\n    type: deepsentry\n    inputs: [in]\n    alert_group_by: templates\nsinks:\n  out:\n    type: console\n    inputs: [detect]\n",
            &["p.yml:8:5", "key `alert_group_by`", "unknown variant `templates`", "expected `template` or `burst`"],
        ),
        (
            "encoding the sink does not write",
            "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [in]\n    encoding: json_array\n",
            &["p.yml:8:5", "key `encoding`", "does not write `json_array`", "`monitor`, `text`, `json`, `alert`"],
        ),
        (
            "missing input",
            "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [inn]\n",
            &["p.yml:7:5", "sinks.out", "input `inn` does not exist", "did you mean `in`"],
        ),
        (
            "missing inputs key",
            "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n",
            &["p.yml:5:3", "missing key `inputs`"],
        ),
        (
            "yaml syntax",
            "sources:\n  in:\n    type: stdin\n   bad indent: [\n",
            &["p.yml:4"],
        ),
        (
            "unset variable",
            "sources:\n  in:\n    type: file\n    include: [\"${DEEPSENTRY_E2E_UNSET}\"]\nsinks:\n  out:\n    type: console\n    inputs: [in]\n",
            &["p.yml:4", "DEEPSENTRY_E2E_UNSET is not set"],
        ),
        (
            "unknown top-level key",
            "source:\n  in:\n    type: stdin\n",
            &["p.yml:1:1", "unknown field `source`", "`sources`"],
        ),
        // Checked the way the build does, without connecting.
        (
            "infinite seconds",
            "sources:\n  in:\n    type: tcp\n    mode: client\n    address: 127.0.0.1:1\n    reconnect_max_secs: .inf\n\
             sinks:\n  out:\n    type: console\n    inputs: [in]\n",
            &["sources.in: cannot start", "`reconnect_max_secs` must be a positive number"],
        ),
        (
            "syslog timeout",
            "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: syslog\n    inputs: [in]\n    mode: udp\n    address: 127.0.0.1:1\n    write_timeout_secs: -1\n",
            &["sinks.out: cannot start", "`write_timeout_secs` must be a positive number"],
        ),
    ];
    for (name, yaml, expected) in cases {
        let (code, text) = validate(&s, yaml);
        assert_eq!(code, 78, "{name}: {text}");
        for needle in *expected {
            assert!(text.contains(needle), "{name}: `{needle}` not in:\n{text}");
        }
    }
}

#[test]
fn run_with_a_bad_config_exits_78_and_a_missing_file_is_named() {
    let output = Command::new(bin())
        .args(["run", "-c", "/nonexistent/pipeline.yml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/pipeline.yml"), "{stderr}");
}

#[test]
fn start_up_failures_name_the_component() {
    let s = Scratch::new();
    let (_taken, port) = taken_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  net:\n    type: tcp\n    address: 127.0.0.1:{port}\n\
             sinks:\n  out:\n    type: console\n    inputs: [net]\n"
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(78));
    assert!(stderr.contains("sources.net: cannot start"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn plugins_and_version() {
    let output = Command::new(bin()).arg("plugins").output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    for name in ["demo", "file", "stdin", "tcp", "console", "blackhole"] {
        assert!(
            text.contains(&format!("  {name} ")),
            "{name} missing:\n{text}"
        );
    }
    let output = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for command in ["run", "validate", "plugins", "train", "eval"] {
        assert!(
            help.contains(&format!("  {command} ")),
            "{command} missing:\n{help}"
        );
    }
    let output = Command::new(bin()).arg("--version").output().unwrap();
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .starts_with("deepsentry "));
}

#[test]
fn logs_follow_log_level_and_log_format() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  in:\n    type: demo\n    count: 5\n    rate: 0\n\
         sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n",
    );
    let run = |args: &[&str]| {
        let output = Command::new(bin())
            .args(args)
            .args(["run", "-c"])
            .arg(&config)
            .env_remove("DEEPSENTRY_LOG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (code, json) = run(&["--log-format", "json"]);
    assert_eq!(code, Some(0), "{json}");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["message"] == "pipeline started")
        .expect("the start line");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["components"], 2);
    assert!(lines.iter().any(|l| l["component"] == "out"), "{json}");

    let (code, quiet) = run(&["--log-level", "warn"]);
    assert_eq!(code, Some(0));
    assert_eq!(quiet, "", "nothing at info with --log-level warn");

    let (code, typo) = run(&["--log-level", "debgu"]);
    assert_eq!(code, Some(2));
    assert!(typo.contains("invalid log level `debgu`"), "{typo}");
    assert!(typo.contains("`debug`"), "{typo}");
}

/// A config past 1 MiB, and a YAML alias bomb of a few KB that would expand to gigabytes,
/// are refused quickly with a clear error instead of eating the machine's memory.
#[test]
fn an_oversized_config_and_an_alias_bomb_are_refused() {
    let s = Scratch::new();
    let big = format!("{GOOD}# {}\n", "x".repeat(2 * 1024 * 1024));
    let (code, text) = validate(&s, &big);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("larger than 1024 KiB"), "{text}");

    // Nine levels of nine aliases each, inside a component's settings.
    let mut bomb = String::from("sources:\n  in:\n    type: stdin\n    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..9 {
        let previous = format!("*l{}", level - 1);
        let items = [previous.as_str(); 9].join(", ");
        bomb.push_str(&format!("    l{level}: &l{level} [{items}]\n"));
    }
    bomb.push_str("sinks:\n  out:\n    type: console\n    inputs: [in]\n");
    let started = std::time::Instant::now();
    let (code, text) = validate(&s, &bomb);
    assert_eq!(code, 78, "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A config error about a value filled from the environment names the variable, never the
/// value (it may be a token).
#[test]
fn a_config_error_never_prints_an_interpolated_secret() {
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        "sources:\n  in:\n    type: stdin\n\
         sinks:\n  out:\n    type: webhook\n    inputs: [in]\n    url: http://127.0.0.1:1/\n\
         \x20   headers: \"Bearer ${DEEPSENTRY_E2E_TOKEN}\"\n",
    );
    for command in ["validate", "run"] {
        let (code, text) = on_config(command, &config, &[("DEEPSENTRY_E2E_TOKEN", "hunter2")]);
        assert_eq!(code, 78, "{text}");
        assert!(!text.contains("hunter2"), "{command}: {text}");
        assert!(
            text.contains("${DEEPSENTRY_E2E_TOKEN}"),
            "{command}: {text}"
        );
    }
}

#[test]
fn templates_counts_the_lines_of_each_with_fields_folded() {
    let s = Scratch::new();
    let log = s.path("app.log");
    std::fs::write(
        &log,
        "Failed password for admin from 10.0.0.1 port 22\n\
         Failed password for oracle from 10.0.0.2 port 22\n\
         Failed password for guest from 10.0.0.3 port 22\n\
         Failed password for admin from 10.0.0.4 port 22\n\
         ERROR disk sda failed\n",
    )
    .unwrap();
    let output = Command::new(bin())
        .args(["templates", "--input"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "4\twarn\tFailed password for <*> from <IP> port <NUM>",
            "1\terror\tERROR disk sda failed",
        ],
        "{stdout}"
    );
}
