//! The `http` source against real clients: `curl`, and DeepSentry's own `webhook` sink
//! running in a second `deepsentry run` process.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "e2e-s3cret-t0ken";

/// Starts `deepsentry run -c config` the way [`Scratch::start`] does, with `env` set.
/// Waits until something accepts connections on `port`.
fn wait_listening(s: &Scratch, port: u16) {
    let ok = wait_until(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ok, "nothing listens on {port}\n{}", s.stderr());
}

/// Runs `curl` with `args` against `url`, giving up after `max_secs`; returns the status (0
/// when no answer came) and what curl printed before it (the body, and the headers with `-i`).
fn curl_for(max_secs: u32, url: &str, args: &[&str]) -> (u16, String) {
    let max_secs = max_secs.to_string();
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            max_secs.as_str(),
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// [`curl_for`] with the tests' usual patience.
fn curl(url: &str, args: &[&str]) -> (u16, String) {
    curl_for(30, url, args)
}

/// POSTs the file at `path` to `url` with the `auth` header and the `extra` curl arguments.
fn post_file(url: &str, auth: &str, path: &Path, extra: &[&str]) -> (u16, String) {
    let data = format!("@{}", path.display());
    let mut args = vec!["-H", auth, "--data-binary", data.as_str()];
    args.extend_from_slice(extra);
    curl(url, &args)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The `message` of each event of a file written with `encoding: json`.
fn messages_in(path: &Path) -> Vec<String> {
    read_lines(path)
        .iter()
        .map(|line| {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            event["message"].as_str().expect("a message").to_owned()
        })
        .collect()
}

#[test]
fn curl_gets_200_once_the_events_are_written_and_a_clear_refusal_otherwise() {
    let s = Scratch::new();
    let port = free_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  web:\n    type: http\n    address: 127.0.0.1:{port}\n    path: /ingest\n    \
             decoding: json\n    max_body_bytes: 4096\n    auth_token: \"${{HTTP_SOURCE_TOKEN}}\"\n\
             sinks:\n  out:\n    type: file\n    inputs: [web]\n    path: {{dir}}/out.log\n    \
             encoding: json\n"
        ),
    );
    let mut child = s.start_with_env(
        &config,
        &[("HTTP_SOURCE_TOKEN", TOKEN)],
        Stdio::null(),
        Stdio::null(),
    );
    wait_listening(&s, port);
    let url = format!("http://127.0.0.1:{port}/ingest");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let out = s.path("out.log");

    // NDJSON, with CRLF line ends: 200 only once the file sink has written every event, so
    // the file holds them the moment curl returns.
    let ndjson = s.path("events.ndjson");
    let records: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"message":"ndjson event {i}","level":"info","n":{i}}}"#))
        .collect();
    std::fs::write(&ndjson, records.join("\r\n") + "\r\n").unwrap();
    let (code, body) = post_file(&url, &auth, &ndjson, &[]);
    assert_eq!(code, 200, "{body}\n{}", s.stderr());
    let expected: Vec<String> = (0..50).map(|i| format!("ndjson event {i}")).collect();
    assert_eq!(
        messages_in(&out),
        expected,
        "not every event was written before the 200"
    );
    let first: serde_json::Value = serde_json::from_str(&read_lines(&out)[0]).unwrap();
    assert_eq!(first["level"], "info", "{first}");

    // A body with one record that does not decode is refused whole: 400, nothing written.
    let bad = s.path("bad.ndjson");
    std::fs::write(&bad, "{\"message\":\"fine\"}\n{\"message\": broken\n").unwrap();
    let (code, body) = post_file(&url, &auth, &bad, &[]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("line 2"), "{body}");
    std::fs::write(&bad, r#"[{"message":"fine"}, "not an object"]"#).unwrap();
    let (code, body) = post_file(&url, &auth, &bad, &[]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("element 2"), "{body}");
    assert_eq!(read_lines(&out).len(), 50, "a refused request wrote events");

    // One JSON array: one event per element.
    let array = s.path("events.json");
    std::fs::write(
        &array,
        r#"[{"message":"array event 0"}, {"message":"array event 1"}]"#,
    )
    .unwrap();
    let (code, body) = post_file(&url, &auth, &array, &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(messages_in(&out)[50..], ["array event 0", "array event 1"]);

    // gzip, as `Content-Encoding` says.
    let compressed = s.path("events.ndjson.gz");
    let text: String = (0..20)
        .map(|i| format!("{{\"message\":\"gzip event {i}\"}}\n"))
        .collect();
    std::fs::write(&compressed, gzip(text.as_bytes())).unwrap();
    let (code, body) = post_file(&url, &auth, &compressed, &["-H", "Content-Encoding: gzip"]);
    assert_eq!(code, 200, "{body}");
    let gzipped: Vec<String> = (0..20).map(|i| format!("gzip event {i}")).collect();
    assert_eq!(messages_in(&out)[52..], gzipped[..]);

    // Over max_body_bytes as sent, and once inflated (a gzip bomb): 413.
    let big = s.path("big.ndjson");
    let text: String = (0..100)
        .map(|i| format!("{{\"message\":\"too big {i:03} ..............................\"}}\n"))
        .collect();
    assert!(text.len() > 4096);
    std::fs::write(&big, text).unwrap();
    let (code, body) = post_file(&url, &auth, &big, &[]);
    assert_eq!(code, 413, "{body}");
    let bomb = s.path("bomb.gz");
    let inflated = vec![b' '; 1_000_000];
    let deflated = gzip(&inflated);
    assert!(deflated.len() < 4096, "{} bytes", deflated.len());
    std::fs::write(&bomb, deflated).unwrap();
    let (code, body) = post_file(&url, &auth, &bomb, &["-H", "Content-Encoding: gzip"]);
    assert_eq!(code, 413, "{body}");

    // No token, or a wrong one: 401 with the scheme to use.
    let data = format!("@{}", ndjson.display());
    let (code, answer) = curl(&url, &["-i", "--data-binary", data.as_str()]);
    assert_eq!(code, 401, "{answer}");
    assert!(
        answer.to_lowercase().contains("www-authenticate: bearer"),
        "{answer}"
    );
    let wrong = "Authorization: Bearer not-the-token";
    let (code, answer) = curl(&url, &["-H", wrong, "--data-binary", data.as_str()]);
    assert_eq!(code, 401, "{answer}");

    // Only POST, only on the configured path.
    let (code, answer) = curl(&url, &["-i", "-H", auth.as_str()]);
    assert_eq!(code, 405, "{answer}");
    assert!(answer.to_lowercase().contains("allow: post"), "{answer}");
    let elsewhere = format!("http://127.0.0.1:{port}/elsewhere");
    let (code, answer) = post_file(&elsewhere, &auth, &ndjson, &[]);
    assert_eq!(code, 404, "{answer}");

    assert_eq!(
        read_lines(&out).len(),
        72,
        "only accepted requests wrote events"
    );
    stop(&s, &mut child);
    let stderr = s.stderr();
    assert!(
        !stderr.contains(TOKEN),
        "the token reached the log:\n{stderr}"
    );
    assert_eq!(
        logged_counter(&stderr, "requests_accepted"),
        Some(3),
        "{stderr}"
    );
    for (reason, count) in [
        ("bad_body", 2),
        ("too_large", 2),
        ("unauthorized", 2),
        ("method_not_allowed", 1),
        ("not_found", 1),
    ] {
        let name = format!("requests_refused{{reason={reason}}}");
        assert_eq!(
            logged_counter(&stderr, &name),
            Some(count),
            "{name}\n{stderr}"
        );
    }
}

#[test]
fn a_second_deepsentrys_webhook_sink_delivers_every_line_through_the_http_source() {
    let receiver = Scratch::new();
    let (ndjson_port, array_port) = (free_port(), free_port());
    assert_ne!(ndjson_port, array_port);
    let config = receiver.pipeline(
        "p.yml",
        &format!(
            "sources:\n  \
             ndjson:\n    type: http\n    address: 127.0.0.1:{ndjson_port}\n    decoding: json\n  \
             array:\n    type: http\n    address: 127.0.0.1:{array_port}\n    path: /events\n    \
             decoding: json\n\
             sinks:\n  \
             from_ndjson:\n    type: file\n    inputs: [ndjson]\n    path: {{dir}}/ndjson.log\n  \
             from_array:\n    type: file\n    inputs: [array]\n    path: {{dir}}/array.log\n"
        ),
    );
    let mut receiving = receiver.start(&config, Stdio::null(), Stdio::null());
    wait_listening(&receiver, ndjson_port);
    wait_listening(&receiver, array_port);

    // The sender replays a file into two webhooks: newline-delimited JSON objects, and JSON
    // arrays.
    let sender = Scratch::new();
    let input: Vec<String> = (0..1000)
        .map(|i| format!("webhook line {i:04} from the other deepsentry"))
        .collect();
    write_lines(&sender.path("in.log"), &input, false);
    let config = sender.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n    exit_on_eof: true\n\
             sinks:\n  \
             ndjson:\n    type: webhook\n    inputs: [in]\n    \
             url: http://127.0.0.1:{ndjson_port}/anything\n    encoding: json\n    max_events: 50\n  \
             array:\n    type: webhook\n    inputs: [in]\n    \
             url: http://127.0.0.1:{array_port}/events\n    encoding: json_array\n    \
             max_events: 100\n"
        ),
    );
    let mut sending = sender.start(&config, Stdio::null(), Stdio::null());
    let status = wait_exit(&sender, &mut sending, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", sender.stderr());

    // The webhook counts a request delivered on a 2xx, which the receiver gives only once its
    // file sink wrote the events: they are all there already.
    for name in ["ndjson.log", "array.log"] {
        let mut received = read_lines(&receiver.path(name));
        received.sort();
        assert_eq!(
            received,
            input,
            "{name}\n--- receiver ---\n{}\n--- sender ---\n{}",
            receiver.stderr(),
            sender.stderr()
        );
    }
    stop(&receiver, &mut receiving);
    let stderr = receiver.stderr();
    for source in ["ndjson", "array"] {
        let refused = stderr
            .lines()
            .filter(|l| l.contains(&format!("component={source}")))
            .any(|l| l.contains("requests_refused"));
        assert!(!refused, "{source} refused requests:\n{stderr}");
    }
}

#[test]
fn a_backed_up_pipeline_answers_503_instead_of_taking_more() {
    let s = Scratch::new();
    let port = free_port();
    // Takes connections into its backlog and never answers: every webhook request hangs, the
    // sink stops reading, and its input channel fills.
    let (_silent, silent_port) = taken_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  web:\n    type: http\n    address: 127.0.0.1:{port}\n    \
             backpressure_timeout_ms: 200\n\
             sinks:\n  out:\n    type: webhook\n    inputs: [web]\n    \
             url: http://127.0.0.1:{silent_port}/hook\n    request_timeout_secs: 120\n    \
             concurrency: 1\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_listening(&s, port);
    let url = format!("http://127.0.0.1:{port}/");
    // More requests than the pipeline holds (a channel of 16 batches, and what the sink has
    // in hand); the ones it holds wait for a delivery that never comes, until curl gives up.
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = format!("request {i}");
                curl_for(8, &url, &["--data-binary", body.as_str()]).0
            })
        })
        .collect();
    let codes: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(codes.contains(&503), "{codes:?}\n{}", s.stderr());
    assert!(
        !codes.contains(&200),
        "a request was answered 200 while nothing could be delivered: {codes:?}"
    );
    s.assert_logged("the pipeline is backed up");
    stop_without_draining(&s, &mut child);
}
