//! Helpers shared by the end-to-end tests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use deepsentry_source_demo::HdfsGenerator;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_deepsentry")
}

/// A scratch directory with helpers to write pipelines and start the binary.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a pipeline file; `{dir}` in the text is replaced by the scratch directory.
    pub fn pipeline(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.path(name);
        let text = yaml.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&path, text).expect("write pipeline");
        path
    }

    /// Starts `deepsentry run -c config` with stderr going to `stderr.log` (appended).
    pub fn start(&self, config: &Path, stdin: Stdio, stdout: Stdio) -> Child {
        self.start_with_env(config, &[], stdin, stdout)
    }

    /// [`start`](Self::start) with `env` set for the process (what `${VAR}` in the config
    /// reads).
    pub fn start_with_env(
        &self,
        config: &Path,
        env: &[(&str, &str)],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("stderr.log"))
            .expect("stderr log");
        Command::new(bin())
            .args(["run", "-c"])
            .arg(config)
            .args(["--grace-period", "20"])
            .env("DEEPSENTRY_LOG", "info")
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("start deepsentry")
    }

    /// Starts the shipped `pipelines/NAME` with `env`, its console output going to
    /// `console.log` and its data and API kept to this scratch directory and a free port.
    pub fn start_shipped(&self, name: &str, env: &[(&str, &str)]) -> Child {
        self.start_shipped_with_stdin(name, env, Stdio::null())
    }

    /// [`start_shipped`](Self::start_shipped) with `stdin` as its standard input.
    pub fn start_shipped_with_stdin(
        &self,
        name: &str,
        env: &[(&str, &str)],
        stdin: Stdio,
    ) -> Child {
        let pipeline = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../pipelines")
            .join(name);
        let data = self.path("data").display().to_string();
        let api = format!("127.0.0.1:{}", free_port());
        let mut all = vec![
            ("DEEPSENTRY_DATA_DIR", data.as_str()),
            ("DEEPSENTRY_API_ADDRESS", api.as_str()),
        ];
        all.extend_from_slice(env);
        let console = std::fs::File::create(self.path("console.log")).expect("console log");
        self.start_with_env(&pipeline, &all, stdin, Stdio::from(console))
    }

    /// What a run started with [`start_shipped`](Self::start_shipped) printed so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.path("console.log")).unwrap_or_default()
    }

    /// Runs `config` with `input` on its standard input to its end; the exit status.
    pub fn run_with_input(&self, config: &Path, input: &[u8]) -> ExitStatus {
        let child = self.start(config, Stdio::piped(), Stdio::null());
        self.feed_to_end(child, input, Duration::from_secs(30))
    }

    /// Writes `input` to `child`'s standard input, closes it and waits for the exit status.
    pub fn feed_to_end(&self, mut child: Child, input: &[u8], timeout: Duration) -> ExitStatus {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        wait_exit(self, &mut child, timeout)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// Asserts that the program logged `text` (to its standard error), showing the log if not.
    pub fn assert_logged(&self, text: &str) {
        let stderr = self.stderr();
        assert!(stderr.contains(text), "not logged: {text}\n{stderr}");
    }
}

/// `n` realistic HDFS lines, each made unique by a sequence number prefix.
pub fn fixture_lines(n: usize, seed: u64) -> Vec<String> {
    HdfsGenerator::new(seed, 0.05, 8)
        .take(n)
        .enumerate()
        .map(|(i, line)| format!("{i:07} {}", line.text))
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String], append: bool) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .expect("open for writing");
    let mut text = lines.join("\n");
    text.push('\n');
    file.write_all(text.as_bytes()).expect("write lines");
}

/// The complete lines of the file at `path` (none where there is no file).
pub fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line with no newline yet is one a sink is still writing (the tests poll files that
    // pipelines write): reading half of it would fail a test by chance.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Waits until `path` holds at least `n` lines; panics with context otherwise.
pub fn wait_for_lines(scratch: &Scratch, path: &Path, n: usize, timeout: Duration) {
    let ok = wait_until(timeout, || read_lines(path).len() >= n);
    assert!(
        ok,
        "expected {n} lines in {}, found {}\n--- stderr ---\n{}",
        path.display(),
        read_lines(path).len(),
        scratch.stderr()
    );
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
}

/// Waits for the child to exit within `timeout`; kills it and panics otherwise.
pub fn wait_exit(scratch: &Scratch, child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "deepsentry did not exit within {timeout:?}\n--- stderr ---\n{}",
                scratch.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How often each line occurs.
pub fn counts(lines: &[String]) -> HashMap<&str, usize> {
    let mut map = HashMap::new();
    for line in lines {
        *map.entry(line.as_str()).or_default() += 1;
    }
    map
}

/// A localhost port held by the returned listener (in use for as long as it lives).
pub fn taken_port() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

/// Ports [`free_port`] picks from: below the kernel's ephemeral range (32768 and up on Linux),
/// where outgoing connections take their source ports. A port the kernel handed out there
/// could be taken by another test's client between the moment it was found free and the
/// moment the pipeline binds it.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A localhost port that was free a moment ago, and that no other call of this test process
/// returned.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    // Each process starts elsewhere, so that two test runs on one machine rarely meet.
    let start = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed) % span) % span;
        let port = TEST_PORTS.start + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free localhost port in {TEST_PORTS:?}");
}

/// Runs `deepsentry run -c config` with no input to its end; returns the exit code and stderr.
pub fn run_to_end(config: &Path) -> (Option<i32>, String) {
    let output = Command::new(bin())
        .args(["run", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run deepsentry");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends SIGTERM and checks that the pipeline drains and exits 0 within 30 s.
/// Ends a run whose drain would wait out the grace period (a sink that cannot deliver): a
/// SIGTERM starts the drain, a second one exits at once.
pub fn stop_without_draining(scratch: &Scratch, child: &mut Child) -> ExitStatus {
    signal(child, "TERM");
    std::thread::sleep(Duration::from_millis(200));
    signal(child, "TERM");
    wait_exit(scratch, child, Duration::from_secs(30))
}

pub fn stop(scratch: &Scratch, child: &mut Child) {
    signal(child, "TERM");
    let status = wait_exit(scratch, child, Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", scratch.stderr());
}

/// The value of the counter `name` (as `name=N` in the counters logged at exit), if logged;
/// the first one logged when several components have it.
pub fn logged_counter(stderr: &str, name: &str) -> Option<u64> {
    let pattern = format!(r"{}=(\d+)", regex::escape(name));
    regex::Regex::new(&pattern).unwrap().captures(stderr)?[1]
        .parse()
        .ok()
}

/// The value of `component`'s counter `name` logged at exit, if logged.
pub fn component_counter(stderr: &str, component: &str, name: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| {
        l.contains(&format!("component={component}")) && l.contains(&format!("{name}="))
    })?;
    logged_counter(line, name)
}

/// A pipeline from standard input to `{dir}/out.log`.
pub fn stdin_to_file_pipeline(scratch: &Scratch) -> PathBuf {
    scratch.pipeline(
        "p.yml",
        "sources:\n  in:\n    type: stdin\n\
         sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {dir}/out.log\n",
    )
}

/// A pipeline that replays `{dir}/in.log` once into the sink described by `sink_yaml` (the
/// keys under `out:`, each line indented by four spaces, after `inputs: [in]`).
pub fn replay_pipeline(scratch: &Scratch, sink_yaml: &str) -> PathBuf {
    scratch.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n    exit_on_eof: true\n\
             sinks:\n  out:\n    inputs: [in]\n{sink_yaml}"
        ),
    )
}

/// A pipeline that scores 20,000 demo lines with faults by the shipped model and sends only
/// the anomalies to the sink described by `sink_yaml` (the keys under `out:`, each line
/// indented by four spaces, after `inputs: [alerts]`).
pub fn detector_alerts_pipeline(scratch: &Scratch, sink_yaml: &str) -> PathBuf {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default");
    scratch.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  demo:\n    type: demo\n    rate: 0\n    count: 20000\n    seed: 7\n    \
             fault_rate: 0.1\n\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [demo]\n    model: {model}\n    \
             session_key: 'blk_-?\\d+'\n  \
             alerts:\n    type: filter\n    inputs: [detect]\n    condition:\n      is_anomaly: true\n\
             sinks:\n  out:\n    inputs: [alerts]\n{sink_yaml}"
        ),
    )
}

/// The model shipped in `models/default`.
pub const SHIPPED_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default");

/// A pipeline reading `{dir}/in.log` (followed, not replayed to its end), scoring it with the
/// model at `model` (HDFS block sessions, batches every 0.1 s) into the sink described by
/// `sink_yaml` (the keys under `out:`, each line indented by four spaces, after
/// `inputs: [detect]`), with the API on `api_port` when given.
pub fn scored_file_pipeline(model: &Path, api_port: Option<u16>, sink_yaml: &str) -> String {
    let api = api_port
        .map(|port| format!("api:\n  address: 127.0.0.1:{port}\n"))
        .unwrap_or_default();
    format!(
        "data_dir: {{dir}}/data\n{api}\
         sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n\
         transforms:\n  detect:\n    type: deepsentry\n    inputs: [in]\n    model: {}\n    \
         session_key: 'blk_-?\\d+'\n    batch_interval: 0.1\n\
         sinks:\n  out:\n    inputs: [detect]\n{sink_yaml}",
        model.display()
    )
}

/// `GET path` on 127.0.0.1:`port`: the status and the body, or `None` while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Runs `command` to its end and asserts that it succeeded, showing its stderr if not.
pub fn run_ok(command: &mut Command) -> std::process::Output {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The JSON lines a sink wrote to `path`, parsed.
pub fn json_events(path: &Path) -> Vec<serde_json::Value> {
    read_lines(path)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}
