//! What the operator's two HTTP servers (`/metrics` and the external metrics API) share: a bounded
//! accept loop, and HTTP/1 connections whose clients must send their headers in time.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a client may take to send a request's headers (the first one and every next one on a
/// kept-alive connection) before its connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed accept (out of file descriptors): retrying at once would spin a core.
const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// Accepts connections on `listener` for ever, each served by `serve` in a task of its own, at
/// most `max_connections` at once (more wait in the listen backlog), so that a client holding
/// connections open cannot take every socket of the process. `server` names it in log lines.
pub async fn accept_bounded<F, Fut>(listener: TcpListener, max_connections: usize, server: &'static str, mut serve: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let permit = connections.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, server, "accepting a connection failed; pausing");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let connection = serve(tcp, peer);
        tokio::spawn(async move {
            let _permit = permit;
            connection.await;
        });
    }
}

/// An HTTP/1 server connection builder with [`HEADER_TIMEOUT`].
pub fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder
}
