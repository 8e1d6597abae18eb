//! Accepting connections for the sources that listen on TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::component::SourceContext;
use crate::ratelimit::LogRateLimit;
use crate::shutdown::ShutdownSignal;

/// Checks that `address` (a setting's value) is `host:port` with a valid port, without
/// resolving or binding it.
pub fn check_host_port(address: &str) -> anyhow::Result<()> {
    let port = address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    anyhow::ensure!(
        port.is_some(),
        "`address` must be host:port, not `{address}`"
    );
    Ok(())
}

/// Accepts connections until the source's shutdown fires, at most `max_connections` at once
/// (counted in `connections_accepted`), running what `serve` makes of each (the stream, the
/// peer's address, and a clone of the source's context for it) on a task of its own; then
/// lets go of the source's output, so the pipeline can drain, and waits for the open
/// connections to end.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    cx: SourceContext,
    mut serve: F,
) where
    F: FnMut(TcpStream, String, SourceContext) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let errors = LogRateLimit::new(Duration::from_secs(10));
    let accepted = cx.metrics.counter("connections_accepted");
    let mut connections = tokio::task::JoinSet::new();
    while let Some((stream, peer, permit)) =
        accept(&listener, &slots, &cx.shutdown, &errors, &cx.id).await
    {
        accepted.inc();
        let connection = serve(stream, peer.to_string(), cx.clone());
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    drop(cx);
    while connections.join_next().await.is_some() {}
}

/// The next connection, once one of `slots` is free (clients past the cap wait in the listen
/// backlog); `None` once `shutdown` fires. A failed accept (out of file descriptors, say) is
/// logged at most as often as `errors` allows and retried after a pause rather than in a
/// spin. The permit is the connection's slot: drop it when the connection ends.
pub async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &ShutdownSignal,
    errors: &LogRateLimit,
    source: &str,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        _ = shutdown.wait() => return None,
        permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
    };
    loop {
        tokio::select! {
            _ = shutdown.wait() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
                Err(e) => {
                    if let Some(held_back) = errors.check() {
                        tracing::warn!(
                            source,
                            earlier_warnings_not_logged = held_back,
                            "accept failed: {e}"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
