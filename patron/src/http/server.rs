//! The HTTP server: an accept loop over hyper-util's auto (HTTP/1 + HTTP/2)
//! connection builder, with Go Patron's read, write and idle timeouts
//! enforced by a per-connection watchdog, and a bounded graceful drain.
//!
//! Timeouts, as enforced here:
//! - read: a connection must deliver a complete request head within it,
//!   counted from the connection's first byte or from the end of the
//!   previous response (request bodies fall under the handler timeout);
//! - write: a response write may stall on a slow reader for at most this;
//! - idle: a keep-alive connection with no request in flight is closed after
//!   this long without traffic.
//!
//! The watchdog ticks at a fraction of the shortest timeout, so the hot path
//! only bumps counters; no clock is read and no timer is armed per request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::router::App;

/// The three connection timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl Timeouts {
    fn tick(&self) -> Duration {
        let shortest = self.read.min(self.write).min(self.idle);
        (shortest / 8).clamp(Duration::from_millis(25), Duration::from_secs(1))
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then stops
/// accepting and waits up to `drain` for open connections to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), String> {
    let builder = Arc::new(Builder::new(TokioExecutor::new()));
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(connection(
                        stream,
                        peer,
                        Arc::clone(&builder),
                        Arc::clone(&app),
                        timeouts,
                        shutdown.clone(),
                    ));
                }
                Err(err) if is_per_connection(&err) => {}
                Err(err) => {
                    // Out of file descriptors and the like: back off, as
                    // axum::serve and Go's net/http do, rather than spin.
                    tracing::error!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        tracing::info!(connections = open, "draining open HTTP connections");
    }
    match tokio::time::timeout(drain, tracker.wait()).await {
        Ok(()) => Ok(()),
        Err(_) => Err(format!(
            "{} HTTP connection(s) still busy after the shutdown timeout of {}",
            tracker.len(),
            humantime::format_duration(drain)
        )),
    }
}

fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Activity counters a connection's IO updates and its watchdog reads.
#[derive(Default)]
struct ConnState {
    activity: AtomicU64,
    in_flight: AtomicU32,
    reading: AtomicBool,
    write_blocked: AtomicBool,
}

impl ConnState {
    fn bump(&self) {
        // Single writer (the connection's task): no read-modify-write needed.
        self.activity.store(
            self.activity.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(state: &Arc<ConnState>) -> Self {
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

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    builder: Arc<Builder<TokioExecutor>>,
    app: Arc<App>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let state = Arc::new(ConnState::default());
    state.reading.store(true, Ordering::Relaxed);
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        state: Arc::clone(&state),
    });
    let svc_state = Arc::clone(&state);
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let guard = InFlight::enter(&svc_state);
        let call = app.call(req.map(Body::new));
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut watch = Watch::new(Instant::now());
    let mut tick = tokio::time::interval(timeouts.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => match watch.check(&state, Instant::now(), &timeouts) {
                Verdict::Fine => {}
                Verdict::Idle => {
                    if !closing {
                        tracing::debug!(%peer, "closing idle HTTP connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                Verdict::ReadTimeout => {
                    tracing::debug!(%peer, "HTTP read timeout: request head not received in time");
                    return;
                }
                Verdict::WriteStalled => {
                    tracing::debug!(%peer, "HTTP write timeout: client stopped reading");
                    return;
                }
            },
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    Idle,
    ReadTimeout,
    WriteStalled,
}

/// The watchdog's view of one connection, updated on each tick.
struct Watch {
    seen: u64,
    last_activity: Instant,
    reading_since: Option<Instant>,
    blocked_since: Option<Instant>,
}

impl Watch {
    fn new(now: Instant) -> Self {
        Watch {
            seen: 0,
            last_activity: now,
            reading_since: Some(now),
            blocked_since: None,
        }
    }

    fn check(&mut self, state: &ConnState, now: Instant, t: &Timeouts) -> Verdict {
        let activity = state.activity.load(Ordering::Relaxed);
        if activity != self.seen {
            self.seen = activity;
            self.last_activity = now;
        }
        let in_flight = state.in_flight.load(Ordering::Relaxed) > 0;
        if state.reading.load(Ordering::Relaxed) && !in_flight {
            let since = *self.reading_since.get_or_insert(now);
            if now.duration_since(since) >= t.read {
                return Verdict::ReadTimeout;
            }
        } else {
            self.reading_since = None;
        }
        if state.write_blocked.load(Ordering::Relaxed) {
            let since = *self.blocked_since.get_or_insert(now);
            if now.duration_since(since) >= t.write {
                return Verdict::WriteStalled;
            }
        } else {
            self.blocked_since = None;
        }
        if !in_flight
            && self.reading_since.is_none()
            && now.duration_since(self.last_activity) >= t.idle
        {
            return Verdict::Idle;
        }
        Verdict::Fine
    }
}

/// A TCP stream that reports its activity to the watchdog.
struct WatchedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for WatchedIo {
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
            self.state.bump();
            if self.state.in_flight.load(Ordering::Relaxed) == 0 {
                self.state.reading.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
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

impl WatchedIo {
    fn note_write(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Pending => self.state.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                self.state.write_blocked.store(false, Ordering::Relaxed);
                self.state.bump();
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
            Verdict::Fine
        );
        assert_eq!(
            w.check(&state, start + Duration::from_secs(3), &t()),
            Verdict::ReadTimeout
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
            Verdict::Fine
        );
        state.in_flight.store(0, Ordering::Relaxed);
        state.bump();
        let now = start + Duration::from_secs(12);
        assert_eq!(w.check(&state, now, &t()), Verdict::Fine);
        assert_eq!(
            w.check(&state, now + Duration::from_secs(10), &t()),
            Verdict::Idle
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
            Verdict::Fine
        );
        assert_eq!(
            w.check(&state, start + Duration::from_secs(6), &t()),
            Verdict::WriteStalled
        );
    }
}
