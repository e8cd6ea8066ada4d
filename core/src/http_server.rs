//! The HTTP listener: hyper HTTP/1 connections with a header read timeout,
//! a cap on open connections, and a shutdown that closes every connection
//! not in the middle of a request at once.
//!
//! `axum::serve` has none of these: a client that connects and sends
//! nothing (or half a header) is held forever, and its graceful shutdown
//! waits for every such client, so a few hundred of them kept SIGTERM from
//! ever finishing. Body reads are bounded by the handler (`ingest`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// The listener's limits (`[ingest]` settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A request's headers must arrive within this.
    pub(crate) read_timeout: Duration,
    /// Connections past this are closed as soon as they are accepted.
    pub(crate) max_connections: usize,
}

/// Serves `service` (a [`routed`] router, or the ingest listener's own
/// service) until `stop` turns true, then closes idle and stalled
/// connections at once and lets the requests being handled finish.
pub(crate) async fn serve<S>(listener: TcpListener, service: S, limits: Limits, mut stop: watch::Receiver<bool>)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    let mut connections = JoinSet::new();
    let mut refused_since_log = 0u64;
    let each_connection = stop.clone();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // Closed at once: the connections already open keep
                        // being served.
                        refused_since_log += 1;
                        if refused_since_log.is_power_of_two() {
                            tracing::warn!(max_connections = limits.max_connections, refused = refused_since_log,
                                "connection limit reached; closing new connections (ingest.max_connections)");
                        }
                        drop(stream);
                        continue;
                    };
                    refused_since_log = 0;
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(builder.clone(), stream, service.clone(), each_connection.clone(), permit));
                }
                // Out of file descriptors, say: wait rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection<S>(
    builder: http1::Builder,
    stream: TcpStream,
    service: S,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let active = Arc::new(AtomicUsize::new(0));
    let service = Counted {
        inner: service,
        active: active.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stopped(&mut stop) => {}
    }
    // Idle, or still sending its headers: dropping the connection closes it.
    if active.load(Ordering::Acquire) == 0 {
        return;
    }
    // A request is being handled (a body still arriving ends at once with
    // 503): answer it, then close.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Resolves once `stop` turns true. (The guard `wait_for` returns is not
/// `Send`; dropping it here keeps the listener's future `Send`, so it can
/// be spawned.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// A router as a hyper service, for [`serve`].
pub(crate) fn routed(router: Router) -> TowerToHyperService<Router> {
    TowerToHyperService::new(router)
}

/// Counts the requests a connection is handling.
struct Counted<S> {
    inner: S,
    active: Arc<AtomicUsize>,
}

/// Decrements the count when the request's response is ready (or dropped).
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, R> hyper::service::Service<R> for Counted<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        self.active.fetch_add(1, Ordering::AcqRel);
        let active = Active(self.active.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(active);
            response
        })
    }
}
