//! The Kafka source and sink against a real Kafka-protocol broker (Tansu, started per test from
//! `target/tools/bin/tansu`, installed by `tests/kafka-broker.sh install`; or the Kafka named
//! by `KAFKA_BOOTSTRAP`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deepsentry_kafka_tool::{self as tools, Outgoing, Record};
use serde_json::Value as Json;

use crate::common::*;

/// A broker for one test: a Tansu process on its own port, or the user's Kafka.
struct Broker {
    process: Option<Child>,
    bootstrap: String,
}

fn tansu_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return path.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/tansu")
}

fn external_kafka() -> Option<String> {
    std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|s| !s.is_empty())
}

impl Broker {
    fn start() -> Self {
        match external_kafka() {
            Some(bootstrap) => Broker {
                process: None,
                bootstrap,
            },
            None => Self::start_tansu(free_port()),
        }
    }

    fn start_tansu(port: u16) -> Self {
        Self::start_tansu_advertising(port, port)
    }

    /// Tansu listening on `port` and telling clients (in its metadata) that it is at
    /// `advertised`: where a TLS listener in front of it accepts them.
    fn start_tansu_advertising(port: u16, advertised: u16) -> Self {
        let bin = tansu_bin();
        assert!(
            bin.exists(),
            "no Kafka-protocol broker at {}: run `bash tests/kafka-broker.sh install`, or set \
             KAFKA_BOOTSTRAP=host:port to use your own Kafka",
            bin.display()
        );
        let process = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let bootstrap = format!("127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&bootstrap).is_ok()
        });
        assert!(up, "tansu did not listen on {bootstrap}");
        Broker {
            process: Some(process),
            bootstrap,
        }
    }
}

impl Broker {
    /// Reads `topic` from the beginning until `expected` messages arrived and it has been
    /// quiet for a second (so duplicates are seen too), or `timeout_secs` passed.
    fn read(&self, topic: &str, expected: usize, timeout_secs: u64) -> Vec<Record> {
        tools::consume(
            &self.bootstrap,
            topic,
            expected,
            Duration::from_secs(1),
            Duration::from_secs(timeout_secs),
        )
        .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// A topic name no other test (or earlier run against a shared Kafka) uses.
fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Consumer settings every test pipeline uses: Tansu holds a join for half the session
/// timeout, so a short one keeps rebalances quick.
const GROUP_OPTIONS: &str = "    librdkafka_options:\n      session.timeout.ms: '6000'\n      heartbeat.interval.ms: '500'\n";

fn source_yaml(bootstrap: &str, topic: &str, group: &str) -> String {
    format!(
        "  in:\n    type: kafka\n    bootstrap_servers: {bootstrap}\n    topics: [{topic}]\n    \
         group_id: {group}\n    auto_offset_reset: earliest\n{GROUP_OPTIONS}"
    )
}

/// Fixture lines keyed by their HDFS block (the session), as a producer keyed by session.
fn keyed(lines: &[String]) -> Vec<Outgoing> {
    let block = regex::Regex::new(r"blk_-?\d+").unwrap();
    lines
        .iter()
        .map(|line| Outgoing {
            key: block.find(line).map(|m| m.as_str().to_owned()),
            payload: line.clone(),
            headers: Vec::new(),
        })
        .collect()
}

fn json(record: &Record) -> Json {
    serde_json::from_str(&record.payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", record.payload))
}

/// How many of `expected` lines are missing from `seen`.
fn missing<'a>(expected: &'a [String], seen: &HashSet<String>) -> Vec<&'a String> {
    expected.iter().filter(|l| !seen.contains(*l)).collect()
}

#[test]
fn kafka_to_deepsentry_to_kafka_delivers_every_line_with_its_fields() {
    let broker = Broker::start();
    let (input, output) = (unique("in"), unique("out"));
    tools::create_topic(&broker.bootstrap, &input, 6).unwrap();
    let lines = fixture_lines(100_000, 21);
    let messages = keyed(&lines);
    tools::produce(&broker.bootstrap, &input, messages.clone()).unwrap();

    let s = Scratch::new();
    // The producer queue holds 500 messages, so the sink waits on a full queue all the time:
    // backpressure, which must not drop anything.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default");
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n{}\
             transforms:\n  detect:\n    type: deepsentry\n    inputs: [in]\n    model: {}\n\
             sinks:\n  out:\n    type: kafka\n    inputs: [detect]\n    bootstrap_servers: {}\n    \
             topic: {output}\n    key_field: key\n    \
             librdkafka_options:\n      queue.buffering.max.messages: '500'\n",
            source_yaml(&broker.bootstrap, &input, &unique("g")),
            model.display(),
            broker.bootstrap
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let records = broker.read(&output, lines.len(), 240);
    stop(&s, &mut child);

    let key_of: HashMap<&str, Option<&str>> = messages
        .iter()
        .map(|m| (m.payload.as_str(), m.key.as_deref()))
        .collect();
    let mut seen = HashSet::new();
    for record in &records {
        let event = json(record);
        let Some(message) = event["message"].as_str() else {
            continue;
        };
        let Some(key) = key_of.get(message) else {
            // A session-end event of the detector, not one of the input lines.
            continue;
        };
        assert_eq!(
            record.key.as_deref(),
            *key,
            "key_field: key keeps the input key"
        );
        assert_eq!(event["topic"], Json::from(input.as_str()), "{event}");
        assert!(
            event["partition"].is_i64() && event["offset"].is_i64(),
            "{event}"
        );
        assert!(event["anomaly_score"].is_f64(), "{event}");
        assert!(event["is_anomaly"].is_boolean(), "{event}");
        assert_eq!(
            event["stream"], event["key"],
            "the key is the session: {event}"
        );
        seen.insert(message.to_owned());
    }
    let lost = missing(&lines, &seen);
    assert!(
        lost.is_empty(),
        "{} of {} lines missing from the output topic (first: {:?})\n{}",
        lost.len(),
        lines.len(),
        lost.first(),
        s.stderr()
    );
    let payload_bytes: usize = lines.iter().map(String::len).sum();
    let counted = component_counter(&s.stderr(), "in", "bytes_received").unwrap_or(0) as usize;
    assert!(
        counted >= payload_bytes,
        "bytes_received={counted}, payloads hold {payload_bytes}"
    );
}

#[test]
fn kill_9_mid_stream_then_restart_loses_nothing() {
    let broker = Broker::start();
    let (input, output) = (unique("in"), unique("out"));
    tools::create_topic(&broker.bootstrap, &input, 6).unwrap();
    let lines = fixture_lines(100_000, 22);
    tools::produce(&broker.bootstrap, &input, keyed(&lines)).unwrap();

    let s = Scratch::new();
    // Offsets are committed every 100 ms, so the kill finds some committed and some not. A
    // second sink writes a file the test watches to know how far the pipeline got.
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n{}    commit_interval_ms: 100\n\
             sinks:\n  out:\n    type: kafka\n    inputs: [in]\n    bootstrap_servers: {}\n    \
             topic: {output}\n    encoding: text\n  \
             progress:\n    type: file\n    inputs: [in]\n    path: '{{dir}}/progress.log'\n",
            source_yaml(&broker.bootstrap, &input, &unique("g")),
            broker.bootstrap
        ),
    );
    let progress = s.path("progress.log");
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let started = wait_until(Duration::from_secs(60), || {
        read_lines(&progress).len() >= 10_000
    });
    assert!(started, "nothing reached the output\n{}", s.stderr());
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, "KILL");
    let _ = child.wait();
    let at_kill = read_lines(&progress).len();
    assert!(
        at_kill < lines.len(),
        "the kill came after the whole stream"
    );

    let mut restarted = s.start(&config, Stdio::null(), Stdio::null());
    let records = broker.read(&output, lines.len(), 120);
    stop(&s, &mut restarted);
    let seen: HashSet<String> = records.iter().map(|r| r.payload.clone()).collect();
    let lost = missing(&lines, &seen);
    assert!(
        lost.is_empty(),
        "{} lines lost after kill -9 and restart\n{}",
        lost.len(),
        s.stderr()
    );
    // The killed run never logged its counters; the restarted one did, once.
    let received = component_counter(&s.stderr(), "in", "events_received")
        .expect("the restarted run's counters") as usize;
    assert!(
        received < lines.len(),
        "the restart read everything again: no offset was committed before the kill"
    );
    eprintln!(
        "{at_kill} messages out before the kill; the restart read {received}; {} duplicates",
        records.len() - lines.len(),
    );
}

#[test]
fn key_and_headers_follow_the_sink_settings() {
    let broker = Broker::start();
    let (input, output) = (unique("in"), unique("out"));
    tools::create_topic(&broker.bootstrap, &input, 2).unwrap();
    let messages: Vec<Outgoing> = (0..1000)
        .map(|i| Outgoing {
            key: Some(format!("k{i}")),
            payload: format!("line {i}"),
            headers: vec![("tenant".into(), format!("tenant-{}", i % 7))],
        })
        .collect();
    tools::produce(&broker.bootstrap, &input, messages).unwrap();

    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n{}\
             sinks:\n  out:\n    type: kafka\n    inputs: [in]\n    bootstrap_servers: {}\n    \
             topic: '{output}-{{{{ headers.tenant }}}}'\n    key_field: headers.tenant\n    \
             header_fields: [key]\n    encoding: text\n    compression: lz4\n",
            source_yaml(&broker.bootstrap, &input, &unique("g")),
            broker.bootstrap
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let mut records = Vec::new();
    for tenant in 0..7 {
        // The sink creates each topic with its first message; `consume` waits for it.
        let topic = format!("{output}-tenant-{tenant}");
        records.extend(
            broker
                .read(&topic, 1000 / 7, 60)
                .into_iter()
                .map(|r| (tenant, r)),
        );
    }
    stop(&s, &mut child);
    assert_eq!(records.len(), 1000, "every message once");
    for (tenant, record) in &records {
        let i: usize = record.payload["line ".len()..].parse().unwrap();
        assert_eq!(i % 7, *tenant, "topic templated from the header");
        let expected_key = format!("tenant-{tenant}");
        assert_eq!(record.key.as_deref(), Some(expected_key.as_str()));
        let headers: HashMap<&str, &str> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(headers.get("tenant"), Some(&expected_key.as_str()));
        let original_key = format!("k{i}");
        assert_eq!(headers.get("key"), Some(&original_key.as_str()));
    }
}

#[test]
fn a_broker_that_comes_up_late_is_connected_to() {
    if external_kafka().is_some() {
        eprintln!("skipped: with KAFKA_BOOTSTRAP set this test cannot start the broker late");
        return;
    }
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let (input, output) = (unique("in"), unique("out"));
    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n{}\
             sinks:\n  out:\n    type: kafka\n    inputs: [in]\n    bootstrap_servers: {bootstrap}\n    \
             topic: {output}\n    encoding: text\n",
            source_yaml(&bootstrap, &input, &unique("g")),
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let said = wait_until(Duration::from_secs(30), || {
        s.stderr().contains("cannot reach Kafka")
    });
    assert!(
        said,
        "no clear log line about the missing broker\n{}",
        s.stderr()
    );
    assert!(child.try_wait().unwrap().is_none(), "the pipeline gave up");

    let broker = Broker::start_tansu(port);
    tools::create_topic(&broker.bootstrap, &input, 3).unwrap();
    let lines = fixture_lines(1000, 23);
    tools::produce(&broker.bootstrap, &input, keyed(&lines)).unwrap();
    let records = broker.read(&output, lines.len(), 90);
    stop(&s, &mut child);
    let seen: HashSet<String> = records.into_iter().map(|r| r.payload).collect();
    assert!(missing(&lines, &seen).is_empty(), "{}", s.stderr());
}

/// The lines (and the partitions they came from) one instance wrote to its file.
fn instance_output(path: &Path) -> (HashSet<String>, BTreeSet<i64>) {
    let mut lines = HashSet::new();
    let mut partitions = BTreeSet::new();
    for line in read_lines(path) {
        let event: Json = serde_json::from_str(&line).unwrap();
        lines.insert(event["message"].as_str().unwrap().to_owned());
        partitions.insert(event["partition"].as_i64().unwrap());
    }
    (lines, partitions)
}

#[test]
fn two_instances_in_one_group_split_partitions_and_take_over() {
    let broker = Broker::start();
    let input = unique("in");
    let group = unique("g");
    tools::create_topic(&broker.bootstrap, &input, 6).unwrap();

    let s = Scratch::new();
    let start_instance = |name: &str| {
        let config = s.pipeline(
            &format!("{name}.yml"),
            &format!(
                "data_dir: {{dir}}/{name}-data\nsources:\n{}\
                 sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {{dir}}/{name}.jsonl\n    \
                 encoding: json\n",
                source_yaml(&broker.bootstrap, &input, &group)
            ),
        );
        s.start(&config, Stdio::null(), Stdio::null())
    };
    let mut a = start_instance("a");
    let mut b = start_instance("b");
    // Both members have joined once each owns partitions.
    let joined = wait_until(Duration::from_secs(60), || {
        s.stderr().matches("partitions assigned").count() >= 2
    });
    assert!(joined, "{}", s.stderr());

    let first = fixture_lines(30_000, 24);
    tools::produce(&broker.bootstrap, &input, keyed(&first)).unwrap();
    let all_first = |s: &Scratch| {
        let (a_lines, _) = instance_output(&s.path("a.jsonl"));
        let (b_lines, _) = instance_output(&s.path("b.jsonl"));
        missing(&first, &a_lines.union(&b_lines).cloned().collect()).is_empty()
    };
    assert!(
        wait_until(Duration::from_secs(60), || all_first(&s)),
        "{}",
        s.stderr()
    );
    let (_, a_partitions) = instance_output(&s.path("a.jsonl"));
    let (_, b_partitions) = instance_output(&s.path("b.jsonl"));
    assert!(
        !a_partitions.is_empty() && !b_partitions.is_empty(),
        "both instances work: a {a_partitions:?}, b {b_partitions:?}"
    );
    assert!(
        a_partitions.is_disjoint(&b_partitions),
        "each partition has one owner: a {a_partitions:?}, b {b_partitions:?}"
    );
    assert_eq!(a_partitions.len() + b_partitions.len(), 6);

    // b leaves; a takes over every partition, from where b's commits left off.
    stop(&s, &mut b);
    let b_final = instance_output(&s.path("b.jsonl")).0;
    let second = fixture_lines(30_000, 25);
    tools::produce(&broker.bootstrap, &input, keyed(&second)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut a_lines = HashSet::new();
    while Instant::now() < deadline {
        a_lines = instance_output(&s.path("a.jsonl")).0;
        if missing(&second, &a_lines).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(&s, &mut a);
    let lost = missing(&second, &a_lines);
    assert!(
        lost.is_empty(),
        "{} lines produced after b left never reached a\n{}",
        lost.len(),
        s.stderr()
    );
    let everything: HashSet<String> = a_lines.union(&b_final).cloned().collect();
    assert!(missing(&first, &everything).is_empty());
}

#[test]
fn messages_kafka_refuses_are_counted_and_the_rest_flows() {
    let broker = Broker::start();
    let (input, output) = (unique("in"), unique("out"));
    tools::create_topic(&broker.bootstrap, &input, 2).unwrap();
    // Every tenth line is larger than the sink's producer accepts.
    let messages: Vec<Outgoing> = (0..500)
        .map(|i| Outgoing {
            key: Some(format!("k{}", i % 10)),
            payload: if i % 10 == 0 {
                format!("big {i} {}", "x".repeat(3000))
            } else {
                format!("line {i}")
            },
            headers: Vec::new(),
        })
        .collect();
    tools::produce(&broker.bootstrap, &input, messages.clone()).unwrap();

    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n{}\
             sinks:\n  out:\n    type: kafka\n    inputs: [in]\n    bootstrap_servers: {}\n    \
             topic: {output}\n    encoding: text\n    librdkafka_options:\n      \
             message.max.bytes: '2000'\n      batch.size: '2000'\n",
            source_yaml(&broker.bootstrap, &input, &unique("g")),
            broker.bootstrap
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let small: Vec<String> = messages
        .iter()
        .filter(|m| m.payload.len() < 2000)
        .map(|m| m.payload.clone())
        .collect();
    let records = broker.read(&output, small.len(), 60);
    assert!(child.try_wait().unwrap().is_none(), "the pipeline stopped");
    stop(&s, &mut child);
    let seen: HashSet<String> = records.into_iter().map(|r| r.payload).collect();
    assert!(missing(&small, &seen).is_empty(), "{}", s.stderr());
    assert!(seen.iter().all(|m| !m.starts_with("big")));
    let log = s.stderr();
    assert!(log.contains("Kafka refused a message"), "{log}");
    assert!(
        log.contains("events_dropped{reason=delivery_failed}=50"),
        "the 50 refused messages are counted\n{log}"
    );
}

/// A self-signed certificate for 127.0.0.1 (its own CA), made with the `openssl` tool.
fn self_signed_certificate(s: &Scratch) -> (PathBuf, PathBuf) {
    let (cert, key) = (s.path("broker.pem"), s.path("broker.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (the `openssl` package)");
    assert!(made.success(), "openssl could not make a certificate");
    (cert, key)
}

/// The TLS listener of `tests/tls-front.py` on `listen`, in front of `target`.
struct TlsFront(Child);

impl TlsFront {
    fn start(cert: &Path, key: &Path, listen: u16, target: u16) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tls-front.py");
        let child = Command::new("python3")
            .arg(script)
            .args([cert, key])
            .args([listen.to_string(), target.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 tests/tls-front.py");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
        });
        assert!(up, "the TLS listener did not come up on {listen}");
        TlsFront(child)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Production Kafka speaks TLS. A broker reachable only through a TLS listener (its metadata
/// names the TLS port, so every connection of the client goes through it): the kafka sink
/// writes to it and the kafka source reads back every line, both with `security.protocol:
/// SSL` and the broker's certificate as the CA; a sink that does not trust the certificate
/// delivers nothing and says why. This test starts its own Tansu even where
/// `KAFKA_BOOTSTRAP` names another Kafka.
#[test]
fn kafka_over_tls_writes_and_reads_through_a_tls_listener() {
    let s = Scratch::new();
    let (cert, key) = self_signed_certificate(&s);
    let (plain, tls) = (free_port(), free_port());
    let _broker = Broker::start_tansu_advertising(plain, tls);
    let _front = TlsFront::start(&cert, &key, tls, plain);
    let bootstrap = format!("127.0.0.1:{tls}");
    let topic = unique("tls");
    let lines: Vec<String> = (0..500).map(|i| format!("line {i} over tls")).collect();
    write_lines(&s.path("in.log"), &lines, false);
    let tls_options = format!(
        "    librdkafka_options:\n      security.protocol: SSL\n      \
         ssl.ca.location: {}\n",
        cert.display()
    );
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  lines:\n    type: file\n    include: ['{{dir}}/in.log']\n  \
             in:\n    type: kafka\n    bootstrap_servers: {bootstrap}\n    topics: [{topic}]\n    \
             group_id: {group}\n    auto_offset_reset: earliest\n{tls_options}\
             sinks:\n  to_kafka:\n    type: kafka\n    inputs: [lines]\n    \
             bootstrap_servers: {bootstrap}\n    topic: {topic}\n    encoding: text\n\
             {tls_options}  \
             back:\n    type: file\n    inputs: [in]\n    path: '{{dir}}/out.log'\n",
            group = unique("g"),
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let read_back = || -> HashSet<String> {
        std::fs::read_to_string(s.path("out.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let all = wait_until(Duration::from_secs(120), || {
        lines.iter().all(|l| read_back().contains(l))
    });
    stop(&s, &mut child);
    assert!(
        all,
        "{} of {} lines came back over TLS\n{}",
        lines.iter().filter(|l| read_back().contains(*l)).count(),
        lines.len(),
        s.stderr()
    );

    // The same sink without the CA: the handshake fails, it is said, and nothing is written.
    let untrusting = Scratch::new();
    write_lines(&untrusting.path("in.log"), &lines, false);
    let config = untrusting.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  lines:\n    type: file\n    include: ['{{dir}}/in.log']\n\
             sinks:\n  to_kafka:\n    type: kafka\n    inputs: [lines]\n    \
             bootstrap_servers: {bootstrap}\n    topic: {}\n    \
             librdkafka_options:\n      security.protocol: SSL\n",
            unique("untrusted")
        ),
    );
    let mut child = untrusting.start(&config, Stdio::null(), Stdio::null());
    let said = wait_until(Duration::from_secs(30), || {
        untrusting.stderr().contains("certificate verify failed")
    });
    stop_without_draining(&untrusting, &mut child);
    assert!(said, "{}", untrusting.stderr());
}

#[test]
fn json_payloads_are_decoded_and_dated_by_their_own_time() {
    let broker = Broker::start();
    let input = unique("json");
    tools::create_topic(&broker.bootstrap, &input, 1).unwrap();
    let mut messages: Vec<Outgoing> = (0..50)
        .map(|i| Outgoing {
            key: Some("svc".into()),
            payload: format!(
                "{{\"ts\":\"2024-05-31T10:00:{:02}Z\",\"level\":\"info\",\"msg\":\"order {i} paid\"}}",
                i % 60
            ),
            headers: Vec::new(),
        })
        .collect();
    messages.push(Outgoing {
        key: Some("svc".into()),
        payload: "not json at all".into(),
        headers: Vec::new(),
    });
    tools::produce(&broker.bootstrap, &input, messages).unwrap();

    let s = Scratch::new();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n{}    decoding: json\n\
             sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {{dir}}/out.json\n    \
             encoding: json\n",
            source_yaml(&broker.bootstrap, &input, &unique("g"))
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_for_lines(&s, &s.path("out.json"), 51, Duration::from_secs(60));
    stop(&s, &mut child);
    let events: Vec<Json> = read_lines(&s.path("out.json"))
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[0]["message"], "order 0 paid");
    assert_eq!(events[0]["level"], "info");
    assert_eq!(events[0]["timestamp"], "2024-05-31T10:00:00.000000Z");
    assert_eq!(events[0]["topic"], input.as_str());
    assert_eq!(events[50]["message"], "not json at all");
    assert_eq!(
        logged_counter(&s.stderr(), "lines_modified{reason=decode_failed}"),
        Some(1),
        "{}",
        s.stderr()
    );
}
