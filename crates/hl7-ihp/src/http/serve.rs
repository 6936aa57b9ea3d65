//! The HTTP accept loop, with the limits `axum::serve` lacks: a header timeout, an idle
//! timeout and a connection limit of its own, so that HTTP clients can never take the file
//! descriptors MLLP needs.
//!
//! - The connection limit is a semaphore taken before `accept`, as on the MLLP side: excess
//!   connections wait in the kernel's backlog, holding no descriptor of ours, instead of
//!   being accepted and closed, which would cost a descriptor and a wake-up per attempt and
//!   give a flood of connects a loop to drive on a small host.
//! - The header timeout is hyper's `header_read_timeout`; hyper starts it whenever it waits
//!   for a request head, so it also ends keep-alive connections that send nothing more.
//! - The idle timeout closes a connection on which no byte moved, either way, for that long:
//!   a client that stops sending its body or stops reading its response.
//! - At shutdown, accepting stops and each connection finishes the request in hand (hyper's
//!   graceful shutdown), for at most [`SHUTDOWN_GRACE`]. A connection with no request in a
//!   handler is closed at once: hyper's graceful shutdown leaves a connection that has not
//!   sent a whole request head open, so half-open clients would hold the exit back. (A
//!   response already produced but not yet written when shutdown comes is lost with it.)
//! - With `--http-tls-cert`, each connection's TLS handshake runs in its own task within the
//!   header timeout; the configuration is the one in force when it was accepted (reloaded
//!   like the MLLP listener's).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service as _;

use crate::config::HttpLimits;
use crate::metrics::Metrics;
use crate::tls::ServerTls;

/// How long shutdown waits for HTTP connections to finish the request in hand.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Longest pause between accepts while file descriptors are exhausted.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` turns true (or its sender is dropped).
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        while tasks.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(error) => {
                if crate::mllp::listener::out_of_descriptors(&error) {
                    tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "http accept failed: out of file descriptors, backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
                continue;
            }
        };
        let router = router.clone();
        let metrics = Arc::clone(&metrics);
        let shutdown = shutdown.clone();
        let tls = tls.as_ref().map(|tls| tls.config());
        tasks.spawn(async move {
            let _permit = permit;
            let _open = OpenHttpConnection::new(Arc::clone(&metrics));
            let _ = stream.set_nodelay(true);
            let Some(tls) = tls else {
                connection(stream, router, limits, &metrics, shutdown).await;
                return;
            };
            // The handshake inside the header timeout: a client that stalls it holds only
            // its own permit, and for no longer than one that stalls its request head.
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => connection(stream, router, limits, &metrics, shutdown).await,
                Ok(Err(_)) => Metrics::inc(&metrics.http_tls_handshake_failures),
                Err(_) => {
                    Metrics::inc(&metrics.http_tls_handshake_failures);
                    Metrics::inc(&metrics.http_connections_timed_out);
                }
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
}

/// Serves one HTTP/1.1 connection until it ends, times out or is drained at shutdown.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    router: Router,
    limits: HttpLimits,
    metrics: &Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        stream,
        activity: Arc::clone(&activity),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Requests inside a handler now, so that shutdown knows whether one is in hand.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let service = {
        let in_flight = Arc::clone(&in_flight);
        hyper::service::service_fn(move |request| {
            let guard = InFlight::enter(&in_flight);
            // Router is always ready, so `call` needs no `poll_ready` first.
            let mut router = router.clone();
            async move {
                let _guard = guard;
                router.call(request).await
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        let idle_until = activity.last() + limits.idle_timeout;
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(error) = served
                    && error.is_timeout()
                {
                    Metrics::inc(&metrics.http_connections_timed_out);
                }
                return;
            }
            () = tokio::time::sleep_until(idle_until) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    // Dropping the connection closes the socket.
                    Metrics::inc(&metrics.http_connections_timed_out);
                    return;
                }
            }
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    if in_flight.load(Ordering::Relaxed) == 0 {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// When a byte last moved on a connection: milliseconds after its start, in an atomic
/// because the stream lives inside hyper's connection future while the task reads it.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream (TCP or TLS) that records when bytes move, for the idle timeout.
struct Tracked<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts a request as in hand while its handler runs.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps the open HTTP connections gauge true, also when a connection task panics.
struct OpenHttpConnection(Arc<Metrics>);

impl OpenHttpConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics
            .http_connections_open
            .fetch_add(1, Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for OpenHttpConnection {
    fn drop(&mut self) {
        self.0.http_connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}
