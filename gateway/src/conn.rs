//! Connection hygiene (SPEC §11): one socket, or one slow client, never takes the process from
//! the others.
//!
//! ```text
//!  accept ─► slot free? ─no─► closed at once (counted)
//!             │ yes
//!             ▼
//!  hyper connection: a request head must arrive within --header-timeout of the connection
//!  opening or going idle (so an idle keep-alive connection is closed too); a response being
//!  streamed is exempt ─► request body: whole within --body-timeout (DeadlineBody)
//!  ─► response: a write that waits --body-timeout for a client that stopped reading closes
//!  the connection (StallIo)
//! ```
//!
//! The slot count is `--max-connections`, kept below the open-file limit, which is raised to
//! its hard limit at start-up: at the cap, new connections are refused quickly instead of the
//! process running out of file descriptors and starving every client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// File descriptors kept for everything but client connections (Redis, files, the metrics
/// listener, …).
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force
/// (`None` where it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The connection cap: `wanted`, kept below the open-file limit.
pub fn connection_cap(wanted: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => wanted.min(n.saturating_sub(RESERVED_FDS).max(1) as usize),
        None => wanted,
    }
    .max(1)
}

/// hyper's per-connection read/write buffer bound.
pub const HTTP1_BUFFER_BYTES: usize = 64 * 1024;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A request head must arrive within this time of the connection opening or going idle.
    pub header_timeout: Duration,
    /// A response write may wait this long for a client that stopped reading; then the
    /// connection is closed (its slot and buffers freed).
    pub write_stall: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Accepts connections on `listener` and serves `service` on each until `stop` is cancelled,
/// then waits for the open connections to finish (the caller bounds that wait).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // HTTP/1.1 only: every client Understudy stands in for speaks it, and its header timer is
    // the idle timer too (an HTTP/2 connection could sit idle forever, answering pings).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // What one connection may buffer for reading and writing (hyper's default is about
        // 408 KiB): request heads fit easily, and a stream nobody reads holds this much at most.
        .max_buf_size(HTTP1_BUFFER_BYTES);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning; slots free up as
                // connections close.
                metrics.connection_refused("accept_error");
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connection_refused("cap");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let hyper_service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                service.clone().oneshot(req.map(Body::new))
            });
        let io = TokioIo::new(StallIo::new(tcp, limits.write_stall));
        let conn = graceful.watch(builder.serve_connection(io, hyper_service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A socket whose writes fail once they have waited `limit` for the peer to read: a client that
/// stops reading cannot hold its connection (and the response it is not reading) forever.
struct StallIo<T> {
    inner: T,
    limit: Duration,
    /// Armed when a write first has to wait; disarmed by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallIo<T> {
    fn new(inner: T, limit: Duration) -> Self {
        StallIo {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a write returned `Pending`: `Ready(err)` once the stall has lasted `limit`.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.stall(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.stall(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.stall(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive in full by a deadline: past it, reading fails (the route
/// answers 400 in its shape). The timer is armed only while the body is actually waiting.
pub struct DeadlineBody {
    inner: Body,
    limit: Duration,
    deadline: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    read: BodyRead,
}

/// Whether a request's body was read to its end. A response sent before that (an early refusal:
/// unknown tenant, credentials, chaos, an oversized body) is marked `Connection: close`: the
/// unread rest would otherwise be taken for the next request, so the server closes the
/// connection, and the client must know before it sends another request on it.
#[derive(Debug, Clone, Default)]
pub struct BodyRead(Arc<std::sync::atomic::AtomicBool>);

impl BodyRead {
    /// Whether the body was read to its end.
    pub fn done(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Why a body read failed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

impl DeadlineBody {
    /// Wraps `inner`, due within `limit` from now.
    pub fn new(inner: Body, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            limit,
            deadline: Instant::now() + limit,
            sleep: None,
            read: BodyRead::default(),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.read.set();
                Poll::Ready(None)
            }
            Poll::Ready(frame) => {
                if this.inner.is_end_stream() {
                    this.read.set();
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(this.limit)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Puts a deadline on requests that carry a body (those without one are left as they are), and
/// returns what tells whether it was read to its end.
pub fn with_body_deadline(
    req: http::Request<Body>,
    limit: Duration,
) -> (http::Request<Body>, Option<BodyRead>) {
    if req.body().is_end_stream() {
        return (req, None);
    }
    let mut read = None;
    let req = req.map(|b| {
        let body = DeadlineBody::new(b, limit);
        read = Some(body.read.clone());
        Body::new(body)
    });
    (req, read)
}

/// Marks a response `Connection: close` when its request's body was not read to the end.
pub fn close_if_unread(
    read: Option<BodyRead>,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    if read.is_some_and(|r| !r.done()) {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, Some(1024)), 960);
        assert_eq!(connection_cap(10_000, Some(10)), 1);
        assert_eq!(connection_cap(500, None), 500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_body_fails_at_its_deadline() {
        use http_body_util::BodyExt;
        let drip = futures::stream::unfold(0, |i| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
        });
        let body = DeadlineBody::new(Body::from_stream(drip), Duration::from_secs(5));
        let err = body.collect().await.expect_err("cut at the deadline");
        assert!(
            err.to_string().contains("did not arrive within 5s"),
            "{err}"
        );
        // A body that arrives in time is untouched.
        let body = DeadlineBody::new(Body::from("hello"), Duration::from_secs(5));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
    }
}
