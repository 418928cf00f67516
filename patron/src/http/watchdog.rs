//! The per-connection watchdog of the HTTP (and gRPC) server: the
//! counters a connection's IO and its requests update on the hot path
//! ([`ConnState`], [`InFlight`], [`WatchedIo`]), and the periodic check
//! ([`Watch`]) that turns them into a verdict — fine, idle, a request head
//! that did not arrive in time, a write stalled on a slow reader. See the
//! server module for the timeouts themselves.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::server::Timeouts;

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Activity counters a connection's IO updates and its watchdog reads.
#[derive(Default)]
pub(super) struct ConnState {
    pub(super) activity: AtomicU64,
    pub(super) in_flight: AtomicU32,
    pub(super) reading: AtomicBool,
    pub(super) write_blocked: AtomicBool,
    /// Bytes read so far, up to the HTTP/2 preface's length.
    pub(super) first_bytes: AtomicU32,
    /// The connection speaks HTTP/2 (it began with the preface).
    pub(super) h2: AtomicBool,
    /// The service is draining: HTTP/1 responses say `Connection: close`.
    /// (A flag here, set by the connection's task, costs the service
    /// nothing per request; a request finishing as the signal arrives may
    /// miss it, and its connection then closes after its next response.)
    pub(super) draining: AtomicBool,
}

impl ConnState {
    /// Notes the connection's first bytes: those of the HTTP/2 preface mark
    /// it as HTTP/2 (and end the request-head timer a new connection starts
    /// with).
    pub(super) fn saw(&self, got: &[u8]) {
        let seen = self.first_bytes.load(Ordering::Relaxed) as usize;
        if seen >= H2_PREFACE.len() {
            return;
        }
        let take = got.len().min(H2_PREFACE.len() - seen);
        self.first_bytes
            .store((seen + take) as u32, Ordering::Relaxed);
        if seen == 0 && got.len() >= 3 && H2_PREFACE.starts_with(&got[..take]) {
            self.h2.store(true, Ordering::Relaxed);
            self.reading.store(false, Ordering::Relaxed);
        }
    }

    pub(super) fn bump(&self) {
        // Single writer (the connection's task): no read-modify-write needed.
        self.activity.store(
            self.activity.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

pub(super) struct InFlight(pub(super) Arc<ConnState>);

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends.
    pub(super) struct HeldBody {
        #[pin]
        pub(super) inner: Body,
        pub(super) _guard: InFlight,
    }
}

pin_project_lite::pin_project! {
    /// One request's response as the connection serves it: the handler's
    /// future polled in place (an `async` block would move it, hundreds of
    /// bytes, into its own state at the first poll), the request counted
    /// in flight until the response head — or, with `hold_body` (services
    /// that speak only HTTP/2), until its body ends — and
    /// `Connection: close` on an HTTP/1 response once the connection
    /// drains (hyper closes the connection after it).
    pub(super) struct Served<F> {
        #[pin]
        pub(super) call: F,
        pub(super) guard: Option<InFlight>,
        pub(super) http1: bool,
        pub(super) hold_body: bool,
    }
}

impl<F> Future for Served<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.call.poll(cx));
        let Some(guard) = this.guard.take() else {
            // Polled again after its response: the inner future's answer.
            return Poll::Ready(response);
        };
        if *this.http1
            && guard.0.draining.load(Ordering::Relaxed)
            && let Ok(response) = &mut response
        {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        if *this.hold_body {
            return Poll::Ready(response.map(|r| {
                r.map(|body| {
                    Body::new(HeldBody {
                        inner: body,
                        _guard: guard,
                    })
                })
            }));
        }
        drop(guard);
        Poll::Ready(response)
    }
}

impl http_body::Body for HeldBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl InFlight {
    pub(super) fn enter(state: &Arc<ConnState>) -> Self {
        state.reading.store(false, Ordering::Relaxed);
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.bump();
    }
}

/// What the watchdog concludes about a connection on one tick.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Liveness {
    Fine,
    Idle,
    ReadTimeout,
    WriteStalled,
}

/// The watchdog's view of one connection, updated on each tick.
pub(super) struct Watch {
    seen: u64,
    last_activity: Instant,
    reading_since: Option<Instant>,
    blocked_since: Option<Instant>,
}

impl Watch {
    pub(super) fn new(now: Instant) -> Self {
        Watch {
            seen: 0,
            last_activity: now,
            reading_since: Some(now),
            blocked_since: None,
        }
    }

    /// How long the connection has had no request in flight and no traffic
    /// (requests only, for HTTP/2), as of the last check.
    pub(super) fn quiet_for(&self, state: &ConnState, now: Instant) -> Duration {
        if state.in_flight.load(Ordering::Relaxed) > 0
            || state.activity.load(Ordering::Relaxed) != self.seen
        {
            return Duration::ZERO;
        }
        now.duration_since(self.last_activity)
    }

    pub(super) fn check(&mut self, state: &ConnState, now: Instant, t: &Timeouts) -> Liveness {
        let activity = state.activity.load(Ordering::Relaxed);
        if activity != self.seen {
            self.seen = activity;
            self.last_activity = now;
        }
        let in_flight = state.in_flight.load(Ordering::Relaxed) > 0;
        if state.reading.load(Ordering::Relaxed) && !in_flight {
            let since = *self.reading_since.get_or_insert(now);
            if now.duration_since(since) >= t.read {
                return Liveness::ReadTimeout;
            }
        } else {
            self.reading_since = None;
        }
        if state.write_blocked.load(Ordering::Relaxed) {
            let since = *self.blocked_since.get_or_insert(now);
            if now.duration_since(since) >= t.write {
                return Liveness::WriteStalled;
            }
        } else {
            self.blocked_since = None;
        }
        if !in_flight
            && self.reading_since.is_none()
            && now.duration_since(self.last_activity) >= t.idle
        {
            return Liveness::Idle;
        }
        Liveness::Fine
    }
}

/// A stream (TCP, or TLS over TCP) that reports its activity to the
/// watchdog.
pub(super) struct WatchedIo<S> {
    pub(super) inner: S,
    pub(super) state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            let got = &buf.filled()[before..];
            self.state.saw(got);
            if self.state.h2.load(Ordering::Relaxed) {
                // Frames are no requests: HTTP/2 idles by its requests,
                // which the service counts.
                return result;
            }
            self.state.bump();
            if self.state.in_flight.load(Ordering::Relaxed) == 0
                && got.iter().any(|b| !matches!(b, b'\r' | b'\n'))
            {
                self.state.reading.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> WatchedIo<S> {
    fn note_write(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Pending => self.state.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                self.state.write_blocked.store(false, Ordering::Relaxed);
                if !self.state.h2.load(Ordering::Relaxed) {
                    self.state.bump();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timeouts {
        Timeouts {
            read: Duration::from_secs(3),
            write: Duration::from_secs(5),
            idle: Duration::from_secs(10),
        }
    }

    #[test]
    fn silent_new_connection_hits_read_timeout() {
        let start = Instant::now();
        let state = ConnState::default();
        state.reading.store(true, Ordering::Relaxed);
        let mut w = Watch::new(start);
        assert_eq!(
            w.check(&state, start + Duration::from_secs(2), &t()),
            Liveness::Fine
        );
        assert_eq!(
            w.check(&state, start + Duration::from_secs(3), &t()),
            Liveness::ReadTimeout
        );
    }

    #[test]
    fn idle_only_without_requests_in_flight() {
        let start = Instant::now();
        let state = ConnState::default();
        let mut w = Watch::new(start);
        w.reading_since = None;
        state.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(
            w.check(&state, start + Duration::from_secs(11), &t()),
            Liveness::Fine
        );
        state.in_flight.store(0, Ordering::Relaxed);
        state.bump();
        let now = start + Duration::from_secs(12);
        assert_eq!(w.check(&state, now, &t()), Liveness::Fine);
        assert_eq!(
            w.check(&state, now + Duration::from_secs(10), &t()),
            Liveness::Idle
        );
    }

    #[test]
    fn stalled_write_times_out() {
        let start = Instant::now();
        let state = ConnState::default();
        let mut w = Watch::new(start);
        state.in_flight.store(1, Ordering::Relaxed);
        state.write_blocked.store(true, Ordering::Relaxed);
        assert_eq!(
            w.check(&state, start + Duration::from_secs(1), &t()),
            Liveness::Fine
        );
        assert_eq!(
            w.check(&state, start + Duration::from_secs(6), &t()),
            Liveness::WriteStalled
        );
    }
}
