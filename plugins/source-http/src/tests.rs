use deepsentry_core::decode::Decoding;
use deepsentry_core::lines::DEFAULT_MAX_LINE_BYTES;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING};
use hyper::HeaderMap;
use std::io::Write;
use std::net::SocketAddr;

use deepsentry_core::metrics::Metrics;
use deepsentry_core::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;

#[test]
fn defaults_and_required_keys() {
    let config: HttpSourceConfig = serde_yaml::from_str("address: 127.0.0.1:8080").unwrap();
    assert_eq!(config.decoding, Decoding::Text);
    assert_eq!(config.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(config.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
    assert_eq!(config.backpressure_timeout_ms, 1000);
    assert!(config.path.is_none() && config.auth_token.is_none());
    config.checked_settings().unwrap();
    let err = serde_yaml::from_str::<HttpSourceConfig>("path: /x").unwrap_err();
    assert!(err.to_string().contains("missing field `address`"), "{err}");
    let err = serde_yaml::from_str::<HttpSourceConfig>("address: x:1\nmethod: put").unwrap_err();
    assert!(err.to_string().contains("unknown field `method`"), "{err}");
}

#[test]
fn bad_settings_are_refused() {
    let check = |yaml: &str| {
        serde_yaml::from_str::<HttpSourceConfig>(yaml)
            .unwrap()
            .checked_settings()
            .unwrap_err()
            .to_string()
    };
    assert!(check("address: localhost").contains("host:port"));
    assert!(check("address: 127.0.0.1:80\npath: ingest").contains("must start with `/`"));
    assert!(check("address: 127.0.0.1:80\nmax_body_bytes: 0").contains("max_body_bytes"));
    assert!(check("address: 127.0.0.1:80\nauth_token: ''").contains("`auth_token` is empty"));
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let config: HttpSourceConfig =
        serde_yaml::from_str("address: 127.0.0.1:80\nauth_token: s3cr3t-t0ken").unwrap();
    assert_eq!(config.auth_token.as_ref().unwrap().expose(), "s3cr3t-t0ken");
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn secrets_compare_whole() {
    assert!(same_secret(b"abc123", b"abc123"));
    assert!(!same_secret(b"abc124", b"abc123"));
    assert!(!same_secret(b"xbc123", b"abc123"));
    assert!(!same_secret(b"abc12", b"abc123"));
    assert!(!same_secret(b"", b"abc123"));
    assert!(same_secret(b"", b""));
}

#[test]
fn bearer_tokens_are_read_from_the_header() {
    assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
    assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
    assert_eq!(bearer_token(b"Basic abc"), None);
    assert_eq!(bearer_token(b"abc"), None);
    let token = Secret("abc".into());
    let mut headers = HeaderMap::new();
    assert!(!authorized(&headers, &token));
    headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abd"));
    assert!(!authorized(&headers, &token));
    headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
    assert!(authorized(&headers, &token));
}

#[test]
fn content_encodings() {
    let mut headers = HeaderMap::new();
    assert!(!gzipped(&headers).unwrap());
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
    assert!(gzipped(&headers).unwrap());
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
    assert!(!gzipped(&headers).unwrap());
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
    assert_eq!(
        gzipped(&headers).unwrap_err().status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

/// A running source with its output channel and counters.
struct Running {
    address: SocketAddr,
    batches: mpsc::Receiver<Batch>,
    shutdown: ShutdownSignal,
    metrics: Metrics,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn refused(&self, reason: &'static str) -> u64 {
        self.metrics
            .component("web")
            .counter_with_reason("requests_refused", reason)
            .get()
    }

    /// Shuts the source down and checks that it returns.
    async fn stop(self) {
        self.shutdown.trigger();
        drop(self.batches);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the source returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Starts a source with `yaml`'s settings on a free port, its output a channel of
/// `capacity` batches.
async fn start(yaml: &str, capacity: usize) -> Running {
    let config: HttpSourceConfig = serde_yaml::from_str(yaml).unwrap();
    config.checked_settings().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, batches) = mpsc::channel(capacity);
    let metrics = Metrics::default();
    let shutdown = ShutdownSignal::new();
    let cx = SourceContext {
        id: "web".into(),
        out: Output::new(vec![("sink".into(), tx)], Counter::default()),
        shutdown: shutdown.clone(),
        metrics: metrics.component("web"),
    };
    let source = Box::new(HttpSource { config, listener });
    let task = tokio::spawn(source.run(cx));
    Running {
        address,
        batches,
        shutdown,
        metrics,
        task,
    }
}

/// Sends one request (`headers`: extra header lines, each ending in `\r\n`) and returns
/// the status and the whole answer.
async fn send(
    address: SocketAddr,
    method: &'static str,
    path: &'static str,
    headers: &'static str,
    body: Vec<u8>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Content-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A refusal may come before the body is read; the answer is what is checked.
    let _ = stream.write_all(&body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn messages(batch: &Batch) -> Vec<&str> {
    batch.events.iter().map(|e| e.message()).collect()
}

#[tokio::test]
async fn a_request_is_answered_once_its_events_are_delivered() {
    let mut web = start("address: x:1\ndecoding: json\npath: /ingest", 4).await;
    let body = b"{\"message\":\"one\"}\r\n\n{\"message\":\"two\",\"level\":\"info\"}\n".to_vec();
    let client = tokio::spawn(send(web.address, "POST", "/ingest", "", body));
    let batch = web.batches.recv().await.unwrap();
    assert_eq!(messages(&batch), ["one", "two"]);
    assert_eq!(
        batch.events[1].fields.get("level"),
        Some(&Value::Str("info".into()))
    );
    assert!(batch.events[0].origin.stream.starts_with("127.0.0.1:"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!client.is_finished(), "answered before the sink delivered");
    batch.delivered();
    let (status, answer) = client.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("2 events delivered\n"), "{answer}");
    assert_eq!(
        web.metrics
            .component("web")
            .counter("requests_accepted")
            .get(),
        1
    );
    web.stop().await;
}

#[tokio::test]
async fn large_requests_go_in_several_batches_and_wait_for_all() {
    let mut web = start("address: x:1", 8).await;
    let lines: Vec<String> = (0..MAX_BATCH_EVENTS + 10)
        .map(|i| format!("line {i}"))
        .collect();
    let body = (lines.join("\n") + "\n").into_bytes();
    let client = tokio::spawn(send(web.address, "POST", "/", "", body));
    let first = web.batches.recv().await.unwrap();
    let second = web.batches.recv().await.unwrap();
    assert_eq!(first.len(), MAX_BATCH_EVENTS);
    let rest: Vec<String> = (MAX_BATCH_EVENTS..MAX_BATCH_EVENTS + 10)
        .map(|i| format!("line {i}"))
        .collect();
    assert_eq!(messages(&second), rest);
    second.delivered();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !client.is_finished(),
        "answered before every batch was delivered"
    );
    first.delivered();
    assert_eq!(client.await.unwrap().0, 200);
    web.stop().await;
}

#[tokio::test]
async fn a_sink_that_gives_up_makes_a_500() {
    let mut web = start("address: x:1", 4).await;
    let client = tokio::spawn(send(web.address, "POST", "/", "", b"x\n".to_vec()));
    let batch = web.batches.recv().await.unwrap();
    batch.fail();
    drop(batch);
    let (status, answer) = client.await.unwrap();
    assert_eq!(status, 500, "{answer}");
    assert_eq!(web.refused("failed"), 1);
    web.stop().await;
}

#[tokio::test]
async fn refusals_send_nothing() {
    let mut web = start(
        "address: x:1\ndecoding: json\npath: /ingest\nmax_body_bytes: 64\nauth_token: t0k",
        4,
    )
    .await;
    let auth = "Authorization: Bearer t0k\r\n";
    let (status, answer) = send(web.address, "POST", "/other", auth, b"{}".to_vec()).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = send(web.address, "GET", "/ingest", auth, Vec::new()).await;
    assert_eq!(status, 405, "{answer}");
    assert!(answer.to_lowercase().contains("allow: post"), "{answer}");
    let (status, answer) = send(web.address, "POST", "/ingest", "", b"{}".to_vec()).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.to_lowercase().contains("www-authenticate: bearer"),
        "{answer}"
    );
    let wrong = "Authorization: Bearer t0x\r\n";
    let (status, _) = send(web.address, "POST", "/ingest", wrong, b"{}".to_vec()).await;
    assert_eq!(status, 401);
    let big = vec![b' '; 100];
    let (status, answer) = send(web.address, "POST", "/ingest", auth, big).await;
    assert_eq!(status, 413, "{answer}");
    let bad = b"{\"message\":\"a\"}\nnope\n".to_vec();
    let (status, answer) = send(web.address, "POST", "/ingest", auth, bad).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("line 2: not JSON"), "{answer}");
    let encoded = "Authorization: Bearer t0k\r\nContent-Encoding: br\r\n";
    let (status, _) = send(web.address, "POST", "/ingest", encoded, b"{}".to_vec()).await;
    assert_eq!(status, 415);
    assert!(
        web.batches.try_recv().is_err(),
        "a refused request sent events"
    );
    for reason in ["not_found", "method_not_allowed", "too_large", "bad_body"] {
        assert_eq!(web.refused(reason), 1, "{reason}");
    }
    assert_eq!(web.refused("unauthorized"), 2);

    // The right token on the right path is taken.
    let client = tokio::spawn(send(
        web.address,
        "POST",
        "/ingest",
        auth,
        b"{\"message\":\"ok\"}".to_vec(),
    ));
    web.batches.recv().await.unwrap().delivered();
    assert_eq!(client.await.unwrap().0, 200);
    web.stop().await;
}

#[tokio::test]
async fn gzip_bodies_are_read_and_bombs_refused() {
    let gzip = |data: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    };
    let mut web = start("address: x:1\nmax_body_bytes: 4096", 4).await;
    let gzipped = "Content-Encoding: gzip\r\n";
    let client = tokio::spawn(send(web.address, "POST", "/", gzipped, gzip(b"a\nb\n")));
    let batch = web.batches.recv().await.unwrap();
    assert_eq!(messages(&batch), ["a", "b"]);
    batch.delivered();
    assert_eq!(client.await.unwrap().0, 200);

    let bomb = gzip(&vec![b'a'; 1_000_000]);
    assert!(bomb.len() < 4096);
    let (status, answer) = send(web.address, "POST", "/", gzipped, bomb).await;
    assert_eq!(status, 413, "{answer}");
    let (status, answer) = send(web.address, "POST", "/", gzipped, b"not gzip".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(web.batches.try_recv().is_err());
    web.stop().await;
}

#[tokio::test]
async fn a_backed_up_pipeline_answers_503_and_so_does_shutdown() {
    // One batch fills the channel, and nothing reads it.
    let web = start("address: x:1\nbackpressure_timeout_ms: 100", 1).await;
    let first = tokio::spawn(send(web.address, "POST", "/", "", b"first\n".to_vec()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, answer) = send(web.address, "POST", "/", "", b"second\n".to_vec()).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("backed up"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
    assert_eq!(web.refused("backed_up"), 1);
    assert!(
        !first.is_finished(),
        "the first request waits for its delivery"
    );

    // At shutdown the first request's batch is dropped undelivered (lost): 503, and the
    // source returns.
    let metrics = web.metrics.clone();
    web.stop().await;
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        metrics
            .component("web")
            .counter_with_reason("requests_refused", "lost")
            .get(),
        1
    );
}

#[tokio::test]
async fn a_request_still_sending_at_shutdown_gets_503() {
    let web = start("address: x:1\nbackpressure_timeout_ms: 60000", 1).await;
    let first = tokio::spawn(send(web.address, "POST", "/", "", b"first\n".to_vec()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The channel is full: this one waits to send, far from its timeout.
    let second = tokio::spawn(send(web.address, "POST", "/", "", b"second\n".to_vec()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    web.shutdown.trigger();
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("shutting down"), "{answer}");
    web.stop().await;
    assert_eq!(first.await.unwrap().0, 503);
}
