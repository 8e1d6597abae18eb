//! The `webhook` sink against a real HTTP server (hyper, on 127.0.0.1) that the test scripts
//! request by request: it fails, stalls, refuses or throttles the requests it is told to, and
//! records every request it receives.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::common::*;

/// How the server answers one request.
#[derive(Debug, Clone)]
enum Answer {
    /// This status, with a short body.
    Status(u16),
    /// 429 with this `Retry-After` value.
    Throttle(&'static str),
    /// 200, but only after this long (past the client's timeout).
    Stall(Duration),
    /// 302 to this location.
    Redirect(&'static str),
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    method: String,
    headers: hyper::HeaderMap,
    body: String,
    /// The status the server answered (or was going to answer, for a stalled request).
    status: u16,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

/// An HTTP/1.1 server on its own thread and runtime; answers 200 once the script is used up.
struct Server {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(script: Vec<Answer>) -> Self {
        Self::listen(
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
            script,
        )
    }

    fn start_on(port: u16, script: Vec<Answer>) -> Self {
        Self::listen(
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the given port"),
            script,
        )
    }

    fn listen(listener: std::net::TcpListener, script: Vec<Answer>) -> Self {
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            received: Vec::new(),
        }));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let stream = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => return,
                    };
                    let state = shared.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| answer(state.clone(), request));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Server {
            address,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// How many requests arrived.
    fn requests(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The bodies the server answered 2xx to, split into one entry per event (a JSON array's
    /// elements' messages, or the lines of a newline-delimited body).
    fn delivered_messages(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| event_messages(&r.body))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = request.method().to_string();
    let headers = request.headers().clone();
    let body = request.into_body().collect().await?.to_bytes();
    let next = state.lock().unwrap().script.pop_front();
    let status = match &next {
        None | Some(Answer::Stall(_)) => 200,
        Some(Answer::Status(status)) => *status,
        Some(Answer::Throttle(_)) => 429,
        Some(Answer::Redirect(_)) => 302,
    };
    state.lock().unwrap().received.push(Received {
        at: Instant::now(),
        method,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
    });
    let mut response = Response::builder().status(status);
    match next {
        Some(Answer::Stall(pause)) => tokio::time::sleep(pause).await,
        Some(Answer::Throttle(retry_after)) => {
            response = response.header("Retry-After", retry_after)
        }
        Some(Answer::Redirect(location)) => response = response.header("Location", location),
        _ => {}
    }
    Ok(response
        .body(Full::new(Bytes::from(format!("answer {status}"))))
        .unwrap())
}

/// The `message` of each event of a body: a JSON array, newline-delimited JSON objects, or
/// plain lines.
fn event_messages(body: &str) -> Vec<String> {
    let message = |value: &serde_json::Value| value["message"].as_str().unwrap().to_owned();
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(events)) => events.iter().map(message).collect(),
        Ok(event) => vec![message(&event)],
        Err(_) => body
            .lines()
            .map(
                |line| match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(event) => message(&event),
                    Err(_) => line.to_owned(),
                },
            )
            .collect(),
    }
}

fn input_lines(n: usize, what: &str) -> Vec<String> {
    (0..n).map(|i| format!("{what} alert {i}")).collect()
}

#[test]
fn server_errors_and_throttling_are_retried_until_every_event_arrives() {
    let s = Scratch::new();
    let server = Server::start(vec![
        Answer::Status(500),
        Answer::Status(503),
        Answer::Throttle("1"),
    ]);
    let input = input_lines(200, "retried");
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: webhook\n    url: {}\n    encoding: json_array\n    max_events: 50\n    \
             concurrency: 1\n    retry_initial_backoff_secs: 0.05\n",
            server.url("/hook")
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    // One request at a time, so the events arrive once each, in order.
    assert_eq!(server.delivered_messages(), input, "{stderr}");
    let received = server.received();
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..3], [500, 503, 429]);
    assert!(statuses[3..].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        received[..4].iter().all(|r| r.body == received[0].body),
        "a retry sends the same body"
    );
    let after_throttle = received[3].at - received[2].at;
    assert!(
        after_throttle >= Duration::from_millis(900),
        "Retry-After: 1 was not honoured: the retry came after {after_throttle:?}"
    );
    assert!(
        stderr.contains("cannot deliver to the webhook (HTTP 500"),
        "{stderr}"
    );
    assert_eq!(
        logged_counter(&stderr, "send_errors{reason=server_error}"),
        Some(2)
    );
    assert_eq!(
        logged_counter(&stderr, "send_errors{reason=throttled}"),
        Some(1)
    );
    assert_eq!(logged_counter(&stderr, "events_delivered"), Some(200));
    assert!(
        stderr.contains("the webhook takes events again"),
        "{stderr}"
    );
}

#[test]
fn a_request_past_its_timeout_is_sent_again() {
    let s = Scratch::new();
    let server = Server::start(vec![Answer::Stall(Duration::from_secs(3))]);
    let input = input_lines(20, "stalled");
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: webhook\n    url: {}\n    request_timeout_secs: 0.5\n    concurrency: 1\n    \
             retry_initial_backoff_secs: 0.05\n",
            server.url("/hook")
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    let delivered = server.delivered_messages();
    let times = counts(&delivered);
    for line in &input {
        assert!(times.contains_key(line.as_str()), "{line} never arrived");
    }
    assert_eq!(
        times[input[0].as_str()],
        2,
        "the stalled request was sent again"
    );
    assert_eq!(
        logged_counter(&stderr, "send_errors{reason=timeout}"),
        Some(1)
    );
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[test]
fn a_refused_request_is_counted_and_not_retried() {
    let s = Scratch::new();
    let server = Server::start(vec![Answer::Status(400)]);
    let input = input_lines(30, "refused");
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: webhook\n    url: {}\n    max_events: 10\n    concurrency: 1\n",
            server.url("/hook")
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        server.received().len(),
        3,
        "the refused request was retried"
    );
    assert_eq!(server.delivered_messages(), input[10..]);
    assert_eq!(
        logged_counter(&stderr, "events_dropped{reason=rejected}"),
        Some(10)
    );
    assert!(
        stderr.contains("refused a request with HTTP 400 Bad Request `answer 400`"),
        "{stderr}"
    );
}

#[test]
fn a_redirect_is_refused_not_followed() {
    let s = Scratch::new();
    let redirects = (0..5).map(|_| Answer::Redirect("/ok")).collect();
    let server = Server::start(redirects);
    let input = input_lines(5, "redirected");
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: webhook\n    url: {}\n    concurrency: 1\n    headers:\n      X-Token: s3cret\n",
            server.url("/hook")
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    let received = server.received();
    assert_eq!(
        received.len(),
        5,
        "one POST per event, nothing sent to the new location"
    );
    assert!(received
        .iter()
        .all(|r| r.method == "POST" && r.status == 302));
    assert_eq!(
        logged_counter(&stderr, "events_delivered").unwrap_or(0),
        0,
        "{stderr}"
    );
    assert_eq!(
        logged_counter(&stderr, "events_dropped{reason=rejected}"),
        Some(5)
    );
    assert!(stderr.contains("HTTP 302 Found"), "{stderr}");
    assert!(
        stderr.contains(&format!("redirects to {})", server.url(""))),
        "{stderr}"
    );
}

#[test]
fn credentials_and_tokens_in_the_url_never_reach_the_log() {
    let s = Scratch::new();
    // Nothing listens there: every attempt fails and is logged.
    let port = free_port();
    let input = input_lines(3, "secret");
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: webhook\n    url: http://u:S3CRET@127.0.0.1:{port}/services/T0/B0/TOKEN123?key=K3Y\n    \
             max_retries: 1\n    retry_initial_backoff_secs: 0.05\n"
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("cannot deliver to the webhook"), "{stderr}");
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{port}")),
        "{stderr}"
    );
    for secret in ["S3CRET", "TOKEN123", "K3Y", "/services/"] {
        assert!(!stderr.contains(secret), "{secret} logged:\n{stderr}");
    }
}

/// Where the process `pid` is reading `path`: the offset of its open file (Linux).
fn read_position(pid: u32, path: &std::path::Path) -> Option<u64> {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let fd = fd.ok()?;
        if std::fs::read_link(fd.path()).ok()? == path {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            let pos = info.lines().find_map(|l| l.strip_prefix("pos:"))?;
            return pos.trim().parse().ok();
        }
    }
    None
}

#[test]
fn a_down_endpoint_holds_the_pipeline_back_then_gets_every_event() {
    let s = Scratch::new();
    let port = free_port();
    let input: Vec<String> = (0..300_000)
        .map(|i| format!("held alert {i:06} ...................."))
        .collect();
    let path = s.path("in.log");
    write_lines(&path, &input, false);
    let size = std::fs::metadata(&path).unwrap().len();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n\
             sinks:\n  out:\n    type: webhook\n    inputs: [in]\n    \
             url: http://127.0.0.1:{port}/hook\n    encoding: json_array\n    max_events: 1000\n    \
             retry_initial_backoff_secs: 0.1\n    retry_max_backoff_secs: 0.5\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let said = wait_until(Duration::from_secs(20), || {
        s.stderr().contains("cannot deliver to the webhook")
    });
    assert!(said, "no log line about the endpoint\n{}", s.stderr());
    assert!(s.stderr().contains("Connection refused"), "{}", s.stderr());
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the pipeline gave up");
    // Backpressure: with the endpoint down, the source stops reading once the channels and
    // the requests in flight are full, far from the end of the file.
    let position = read_position(child.id(), &path).expect("the source has the file open");
    assert!(
        position < size / 2,
        "the source read {position} of {size} bytes while nothing could be delivered"
    );

    let server = Server::start_on(port, Vec::new());
    let ok = wait_until(Duration::from_secs(120), || {
        server.requests() >= input.len() / 1000
    });
    stop(&s, &mut child);
    assert!(ok, "{} requests\n{}", server.requests(), s.stderr());
    let mut delivered = server.delivered_messages();
    delivered.sort();
    assert_eq!(delivered, input, "each event once");
    s.assert_logged("the webhook takes events again");
    s.assert_logged("send_errors{reason=connection}=");
}

#[test]
fn shutdown_flushes_the_pending_request() {
    let s = Scratch::new();
    let server = Server::start(Vec::new());
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n\
             sinks:\n  out:\n    type: webhook\n    inputs: [in]\n    url: {}\n    \
             encoding: json_array\n    max_events: 1000\n    timeout_secs: 600\n",
            server.url("/hook")
        ),
    );
    let input = input_lines(25, "pending");
    write_lines(&s.path("in.log"), &input, false);
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    // Long enough for the lines to reach the sink, far from its 600 s batch timeout.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        server.received().is_empty(),
        "the batch went before its time"
    );
    stop(&s, &mut child);
    let received = server.received();
    assert_eq!(received.len(), 1, "one request with the whole batch");
    assert_eq!(event_messages(&received[0].body), input);
}

#[test]
fn headers_method_and_the_monitor_line_follow_the_config() {
    let s = Scratch::new();
    let server = Server::start(Vec::new());
    let input = input_lines(3, "formatted");
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: webhook\n    url: {}\n    method: put\n    encoding: monitor\n    \
             headers:\n      Authorization: 'Bearer ${{ALERT_TOKEN}}'\n      X-Team: sre\n",
            server.url("/alerts?source=deepsentry")
        ),
    );
    let output = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&config)
        .env("ALERT_TOKEN", "s3cr3t")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let received = server.received();
    assert_eq!(received.len(), 3, "one request per line");
    let line = regex::Regex::new(r"^\[\d\d:\d\d:\d\d\] formatted alert \d$").unwrap();
    for request in &received {
        assert_eq!(request.method, "PUT");
        assert_eq!(request.headers["authorization"], "Bearer s3cr3t");
        assert_eq!(request.headers["x-team"], "sre");
        assert_eq!(request.headers["content-type"], "text/plain; charset=utf-8");
        assert!(line.is_match(&request.body), "{:?}", request.body);
    }
    assert!(!stderr.contains("s3cr3t"), "the token leaked into the log");
}

#[test]
fn dns_and_tls_failures_are_said_and_the_rest_of_the_pipeline_runs() {
    let s = Scratch::new();
    // A plain HTTP server: a TLS handshake with it fails.
    let plain = Server::start(Vec::new());
    let input = input_lines(10, "unreachable");
    write_lines(&s.path("in.log"), &input, false);
    let retry = "    max_retries: 2\n    retry_initial_backoff_secs: 0.05\n";
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n    exit_on_eof: true\n\
             sinks:\n  dns:\n    type: webhook\n    inputs: [in]\n    \
             url: https://no-such-host.invalid/hook\n    max_events: 10\n{retry}  \
             tls:\n    type: webhook\n    inputs: [in]\n    \
             url: https://{}/hook\n    max_events: 10\n{retry}  \
             copy:\n    type: file\n    inputs: [in]\n    path: '{{dir}}/copy.log'\n",
            plain.address
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read_lines(&s.path("copy.log")), input);
    let said = |sink: &str| -> String {
        stderr
            .lines()
            .filter(|l| {
                l.contains(&format!("sink={sink}")) || l.contains(&format!("sink=\"{sink}\""))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let dns = said("dns");
    assert!(dns.contains("cannot deliver to the webhook"), "{stderr}");
    assert!(dns.contains("dns error"), "{dns}");
    assert!(dns.contains("giving up after 2 retries"), "{dns}");
    let tls = said("tls");
    assert!(tls.contains("cannot deliver to the webhook"), "{stderr}");
    assert!(
        tls.to_lowercase().contains("tls") || tls.contains("corrupt message"),
        "{tls}"
    );
    for component in ["dns", "tls"] {
        let counter = |name| component_counter(&stderr, component, name);
        assert_eq!(
            counter("events_dropped{reason=retries_exhausted}"),
            Some(10),
            "{stderr}"
        );
        assert_eq!(
            counter("send_errors{reason=connection}"),
            Some(3),
            "{stderr}"
        );
    }
}

#[test]
fn the_detectors_alerts_arrive_as_json_with_score_and_threshold() {
    let s = Scratch::new();
    let server = Server::start(Vec::new());
    let config = detector_alerts_pipeline(
        &s,
        &format!("    type: webhook\n    url: {}\n", server.url("/hook")),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    let flagged = logged_counter(&stderr, "anomalies").expect("the detector's counters") as usize;
    assert!(flagged > 0);
    let received = server.received();
    assert_eq!(received.len(), flagged, "one request per alert");
    for request in &received {
        assert_eq!(request.headers["content-type"], "application/json");
        let event: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(event["is_anomaly"], true, "{}", request.body);
        let score = event["anomaly_score"].as_f64().unwrap();
        let threshold = event["anomaly_threshold"].as_f64().unwrap();
        assert!(score > threshold, "{}", request.body);
        assert!(event["context_window"].is_string(), "{}", request.body);
    }
}
