use super::*;

/// Joins `lines` the way a source does, returning the events.
fn join(config: MultilineConfig, lines: &[&str]) -> Vec<String> {
    let mut joiner = Joiner::new(config);
    let now = Instant::now();
    let (mut events, mut open): (Vec<String>, Option<String>) = (Vec::new(), None);
    for line in lines {
        match joiner.push(line.as_bytes(), now) {
            Step::Alone => events.push(line.to_string()),
            Step::Opened { closed } => {
                if closed {
                    events.extend(open.take());
                }
                open = Some(line.to_string());
            }
            Step::Joined | Step::Completed => {
                let event = open.as_mut().expect("an open event");
                event.push('\n');
                event.push_str(line);
                if joiner.push_completed_hint() {
                    events.extend(open.take());
                }
            }
            Step::ClosedThenAlone => {
                events.extend(open.take());
                events.push(line.to_string());
            }
        }
    }
    events.extend(open);
    events
}

impl Joiner {
    fn push_completed_hint(&self) -> bool {
        !self.open
    }
}

const JAVA: &[&str] = &[
    "2024-01-15 14:23:47,123 INFO Server started",
    "2024-01-15 14:23:48,001 ERROR Request failed",
    "java.lang.IllegalStateException: connection reset",
    "\tat com.acme.Client.send(Client.java:42)",
    "\tat com.acme.Server.handle(Server.java:7)",
    "Caused by: java.io.IOException: broken pipe",
    "\tat java.net.Socket.write(Socket.java:1)",
    "\t... 12 more",
    "2024-01-15 14:23:49,000 INFO Next request",
];

#[test]
fn a_java_trace_after_a_logged_line_is_one_event() {
    let events = join(MultilineConfig::preset(Preset::Java), JAVA);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(events[1].lines().count(), 7);
    assert!(events[1].starts_with("2024-01-15 14:23:48,001 ERROR"));
    assert!(events[2].ends_with("Next request"));
}

/// A Java trace in a stream without timestamps.
const JAVA_UNSTAMPED: &[&str] = &[
    "Server started",
    "Request failed",
    "java.lang.IllegalStateException: connection reset",
    "    at com.acme.Client.send(Client.java:42)",
    "Caused by: java.io.IOException: broken pipe",
    "    ... 12 more",
    "Next request",
];

/// Python's default logging format (no timestamp) and a traceback.
const PYTHON_UNSTAMPED: &[&str] = &[
    "ERROR:root:job failed",
    "Traceback (most recent call last):",
    "  File \"job.py\", line 3, in <module>",
    "    run()",
    "KeyNotFound: 'user'",
    "INFO:root:next job",
];

/// A Go panic with its goroutines, and the next line logged.
const GO_PANIC: &[&str] = &[
    "panic: runtime error: index out of range [5] with length 3",
    "",
    "goroutine 1 [running]:",
    "main.main()",
    "\t/tmp/prog.go:8 +0x1d",
    "net/http.(*conn).serve(0xc000120000)",
    "created by net/http.(*Server).Serve",
    "exit status 2",
    "listening on :8080",
];

/// A Ruby error with its frames, and the next line logged.
const RUBY: &[&str] = &[
    "app.rb:3:in `foo': undefined method `bar' for nil (NoMethodError)",
    "\tfrom app.rb:7:in `<main>'",
    "app/models/user.rb:12:in `save'",
    "Started GET /",
];

#[test]
fn without_timestamps_continuations_are_recognised() {
    let events = join(MultilineConfig::preset(Preset::Java), JAVA_UNSTAMPED);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(events[1].lines().count(), 5);
}

#[test]
fn a_python_traceback_ends_with_its_exception_line() {
    let events = join(MultilineConfig::preset(Preset::Python), PYTHON_UNSTAMPED);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events[0].ends_with("KeyNotFound: 'user'"));
    assert_eq!(events[1], "INFO:root:next job");
}

#[test]
fn a_go_panic_with_its_goroutines_is_one_event() {
    let events = join(MultilineConfig::preset(Preset::Go), GO_PANIC);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0].lines().count(), 8);
}

#[test]
fn ruby_frames_join() {
    let events = join(MultilineConfig::preset(Preset::Ruby), RUBY);
    assert_eq!(events.len(), 2, "{events:#?}");
}

#[test]
fn any_joins_each_languages_traces_as_its_own_preset_does() {
    let preset = MultilineConfig::preset;
    for (language, lines) in [
        (Preset::Java, JAVA),
        (Preset::Java, JAVA_UNSTAMPED),
        (Preset::Python, PYTHON_UNSTAMPED),
        (Preset::Go, GO_PANIC),
        (Preset::Ruby, RUBY),
    ] {
        assert_eq!(
            join(preset(Preset::Any), lines),
            join(preset(language), lines),
            "{language:?}"
        );
    }
    // Where the presets differ: Java's leaves a traceback apart from the line that logged it,
    // and its closing `KeyNotFound: 'user'` apart from both.
    assert_eq!(join(preset(Preset::Java), PYTHON_UNSTAMPED).len(), 4);
    // A bare `Name: message` line ends a Python traceback, not a Java trace.
    let lines = [
        "Request failed",
        "java.lang.IllegalStateException: connection reset",
        "    at com.acme.Client.send(Client.java:42)",
        "Server: ready",
    ];
    assert_eq!(join(preset(Preset::Any), &lines).len(), 2);
    assert_eq!(join(preset(Preset::Python), &lines).len(), 1);
}

#[test]
fn vector_modes() {
    let through = MultilineConfig::patterns(r"^\S", r"^\s", Mode::ContinueThrough).unwrap();
    assert_eq!(
        join(through, &["a", " b", " c", "d", "e", " f"]),
        ["a\n b\n c", "d", "e\n f"]
    );
    let past = MultilineConfig::patterns(r"\\$", r"\\$", Mode::ContinuePast).unwrap();
    assert_eq!(
        join(past, &["one", "two \\", "three \\", "four", "five"]),
        ["one", "two \\\nthree \\\nfour", "five"]
    );
    let before = MultilineConfig::patterns(r"^BEGIN", r"^BEGIN", Mode::HaltBefore).unwrap();
    assert_eq!(
        join(before, &["x", "BEGIN 1", "a", "BEGIN 2", "b"]),
        ["x", "BEGIN 1\na", "BEGIN 2\nb"]
    );
    let with = MultilineConfig::patterns(r"^[^;]*$", r";$", Mode::HaltWith).unwrap();
    assert_eq!(
        join(with, &["select *", "from t;", "done;", "x"]),
        ["select *\nfrom t;", "done;", "x"]
    );
}

#[test]
fn settings_parse_from_a_name_or_a_map() {
    let preset: MultilineConfig = serde_yaml::from_str("java").unwrap();
    assert!(matches!(preset.rule, Rule::Preset(Preset::Java)));
    let any: MultilineConfig = serde_yaml::from_str("any").unwrap();
    assert!(matches!(any.rule, Rule::Preset(Preset::Any)));
    let map: MultilineConfig = serde_yaml::from_str(
            "{start_pattern: '^\\S', condition_pattern: '^\\s', mode: continue_through, timeout_ms: 50}",
        )
        .unwrap();
    assert_eq!(map.timeout, Duration::from_millis(50));
    let err = serde_yaml::from_str::<MultilineConfig>("jva").unwrap_err();
    assert!(err.to_string().contains("java"), "{err}");
    let err = serde_yaml::from_str::<MultilineConfig>("{mode: halt_before}").unwrap_err();
    assert!(err.to_string().contains("start_pattern"), "{err}");
}

#[test]
fn the_exception_of_a_trace() {
    let java = JAVA[2..8].join("\n");
    assert_eq!(
        trace_exception(&java),
        Some("java.lang.IllegalStateException")
    );
    let python = "Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyNotFound: 'x'";
    assert_eq!(trace_exception(python), Some("KeyNotFound"));
    assert_eq!(trace_exception("  continued text\n  more: of it"), None);
}

#[test]
fn exception_names() {
    assert_eq!(
        exception_name(b"java.lang.IllegalStateException: x"),
        Some("java.lang.IllegalStateException")
    );
    assert_eq!(
        exception_name(b"Caused by: java.io.IOException: y"),
        Some("java.io.IOException")
    );
    assert_eq!(exception_name(b"ValueError: bad"), Some("ValueError"));
    assert_eq!(
        exception_name(b"ActiveRecord::RecordNotFoundError"),
        Some("ActiveRecord::RecordNotFoundError")
    );
    assert_eq!(exception_name(b"Error handling request"), None);
    assert_eq!(exception_name(b"at Foo.bar(Foo.java:1)"), None);
}

#[test]
fn the_preset_of_a_log_is_found_from_its_traces() {
    let detect = |text: &str| detect_preset(text.lines().map(str::as_bytes));
    let java = "2024-03-01 10:00:00 WARN call failed\n\
                java.net.SocketTimeoutException: Read timed out\n\
                \tat java.net.SocketInputStream.read(SocketInputStream.java:186)\n\
                \tat com.example.Http.call(Http.java:77)\n\
                Caused by: java.io.IOException: reset\n\
                \t... 12 more\n";
    assert_eq!(detect(java), Some(Preset::Java));
    let python = "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>\n    \
                  main()\n  File \"app.py\", line 2, in main\nValueError: bad\n";
    assert_eq!(detect(python), Some(Preset::Python));
    let go = "panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:5 +0x1d\n\
              goroutine 7 [chan receive]:\ngoroutine 9 [select]:\n";
    assert_eq!(detect(go), Some(Preset::Go));
    let ruby = "boom (RuntimeError)\n\tfrom app.rb:3:in `run'\n\tfrom app.rb:9:in `<main>'\n\
                \tfrom lib/x.rb:1:in `y'\n";
    assert_eq!(detect(ruby), Some(Preset::Ruby));
    // Single-line events, some with frame-like words: nothing to join.
    let plain = "081109 203615 148 INFO dfs.DataNode: Receiving block\n\
                 user at home (away)\n\
                 Caused by a timeout, retrying\n";
    assert_eq!(detect(plain), None);
}
