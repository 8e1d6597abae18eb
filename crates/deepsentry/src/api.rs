//! The HTTP API, on when the pipeline sets `api.address`: `GET /health` says whether every
//! component runs, `GET /metrics` gives every metric in Prometheus' text format.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use deepsentry_core::health::Health;
use deepsentry_core::metrics::Metrics;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers (or, kept alive, the next one).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long any one connection may last.
const CONNECTION_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Binds `address` (failing start-up when it cannot) and serves the API on a task of its own,
/// for as long as the runtime runs.
pub async fn start(address: SocketAddr, metrics: Metrics, health: Health) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("api: cannot listen on {address}"))?;
    tracing::info!(%address, "API listening: GET /health, GET /metrics");
    // Clients past the cap wait in the listen backlog; a slow or silent one is cut off after
    // the header timeout (and any one after the connection limit), so none holds a slot long.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("api: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, health) = (metrics.clone(), health.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let response =
                        respond(request.method(), request.uri().path(), &metrics, &health);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIMIT, connection).await;
                drop(permit);
            });
        }
    });
    Ok(())
}

/// `deepsentry health`: `GET /health` on the API at `address` (or `DEEPSENTRY_API_ADDRESS`,
/// else `127.0.0.1:8686`); prints the answer, and exits 0 only for a 200.
pub fn check_health(address: Option<String>) -> std::process::ExitCode {
    use std::io::{Read, Write};
    let address = address
        .or_else(|| std::env::var("DEEPSENTRY_API_ADDRESS").ok())
        .unwrap_or_else(|| "127.0.0.1:8686".to_owned());
    // An API listening on every interface is reached on this machine's loopback.
    let address = address.replace("0.0.0.0:", "127.0.0.1:");
    let answer = (|| -> std::io::Result<String> {
        let timeout = std::time::Duration::from_secs(5);
        let target = std::net::ToSocketAddrs::to_socket_addrs(&address)?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match answer {
        Ok(answer) => {
            let healthy = answer.starts_with("HTTP/1.1 200");
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            print!("{body}");
            if healthy {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("deepsentry health: cannot reach the API at {address}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The answer to `method path`.
fn respond(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    match (method, path) {
        (&Method::GET, "/health") => {
            let (status, body) = health_report(health);
            reply(status, "application/json", body)
        }
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render_prometheus(),
        ),
        (_, "/health" | "/metrics") => {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "only GET\n".into(),
            );
            response
                .headers_mut()
                .insert(ALLOW, hyper::header::HeaderValue::from_static("GET"));
            response
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; the API serves GET /health and GET /metrics\n".into(),
        ),
    }
}

/// `/health`: 200 `{"status":"ok",...}` while no component has failed; 503 naming the failed
/// components and why, or while the pipeline is still starting (no component runs yet).
fn health_report(health: &Health) -> (StatusCode, String) {
    let components = health.components();
    let failed = health.failed();
    let status = if components.is_empty() {
        "starting"
    } else if failed.is_empty() {
        "ok"
    } else {
        "failed"
    };
    let body = serde_json::json!({
        "status": status,
        "failed": failed
            .iter()
            .map(|(name, why)| serde_json::json!({"component": name, "error": why}))
            .collect::<Vec<_>>(),
        "components": components
            .iter()
            .map(|(name, state)| (name.clone(), serde_json::Value::from(state.as_str())))
            .collect::<serde_json::Map<_, _>>(),
    });
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepsentry_core::health::ComponentState;

    #[test]
    fn health_follows_the_components() {
        let health = Health::default();
        let (code, body) = health_report(&health);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"starting\""), "{body}");
        health.set("sources.in", ComponentState::Running);
        health.set("sinks.out", ComponentState::Finished);
        let (code, body) = health_report(&health);
        assert_eq!(code, StatusCode::OK, "{body}");
        health.set("sinks.out", ComponentState::Failed("disk full".into()));
        let (code, body) = health_report(&health);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["failed"][0]["component"], "sinks.out");
        assert_eq!(json["failed"][0]["error"], "disk full");
        assert_eq!(json["components"]["sources.in"], "running");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let (metrics, health) = (Metrics::default(), Health::default());
        assert_eq!(
            respond(&Method::GET, "/", &metrics, &health).status(),
            StatusCode::NOT_FOUND
        );
        let response = respond(&Method::POST, "/metrics", &metrics, &health);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET");
        assert_eq!(
            respond(&Method::GET, "/metrics", &metrics, &health).status(),
            StatusCode::OK
        );
    }
}
