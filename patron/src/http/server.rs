//! The HTTP server (and, over HTTP/2 only, the gRPC server): an accept loop over hyper-util's auto (HTTP/1 + HTTP/2)
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
//!
//! HTTP/2 connections are told apart by their preface: their reads never
//! start the request-head timer (a PING or SETTINGS frame is no request),
//! and they idle by requests, not by frames, so a pinging client lives
//! until the idle timeout and is then closed with GOAWAY. Bytes that are
//! only CR/LF between HTTP/1 requests do not start the timer either.
//!
//! Draining, from the shutdown signal on (before `PATRON_SHUTDOWN_DELAY`):
//! every HTTP/1 response carries `Connection: close`, HTTP/2 connections
//! get GOAWAY, and an HTTP/1 connection with no request in flight is closed
//! once it has been quiet for [`QUIET`] (closing it the instant it went idle
//! would race the client's next request). When the listener closes, a
//! socket filter first stops the kernel from completing new handshakes,
//! handshakes under way get [`HANDSHAKE_GRACE`] to finish, and every
//! connection already in the accept queue is accepted and served: none is
//! reset with a request on it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::router::App;
use super::tls::Tls;

/// How long an HTTP/1 connection must be quiet while draining before it is
/// closed.
const QUIET: Duration = Duration::from_millis(250);
/// The watchdog's tick while draining.
const DRAIN_TICK: Duration = Duration::from_millis(100);
/// How long handshakes under way get to complete once new ones are refused.
const HANDSHAKE_GRACE: Duration = Duration::from_millis(100);
/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The three connection timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl Timeouts {
    /// The HTTP server's timeouts from the configuration (the gRPC server
    /// uses the same).
    pub(crate) fn from_config(config: &crate::config::Config) -> Self {
        Timeouts {
            read: config.http_read_timeout,
            write: config.http_write_timeout,
            idle: config.http_idle_timeout,
        }
    }

    fn tick(&self) -> Duration {
        let shortest = self.read.min(self.write).min(self.idle);
        (shortest / 8).clamp(Duration::from_millis(25), Duration::from_secs(1))
    }
}

/// What a server serves: one request in, one response out. The HTTP
/// server's [`App`] is one; the gRPC server's call handler is another.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The future of one response.
    type Future: Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static;
    /// Only HTTP/2 is spoken, and a request counts as in flight until its
    /// response body ends (gRPC, whose streams outlive their headers);
    /// otherwise HTTP/1 and HTTP/2, in flight until the response head.
    const HTTP2_ONLY: bool = false;
    /// Handles one request.
    fn handle(&self, req: http::Request<Body>) -> Self::Future;
}

impl Handler for App {
    type Future = super::router::AppFuture;

    fn handle(&self, req: http::Request<Body>) -> Self::Future {
        self.call(req)
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given): from
/// `draining` on, connections drain
/// (see the module doc); when `shutdown` fires the listener closes without
/// resetting a queued connection, and open connections get up to `drain` to
/// finish.
pub(crate) async fn serve<A: Handler>(
    listener: TcpListener,
    app: Arc<A>,
    tls: Option<Arc<Tls>>,
    timeouts: Timeouts,
    draining: CancellationToken,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), String> {
    let mut builder = Builder::new(TokioExecutor::new());
    if A::HTTP2_ONLY {
        builder = builder.http2_only();
    }
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    let open = |stream: TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let (builder, app, draining) = (Arc::clone(&builder), Arc::clone(&app), draining.clone());
        match &tls {
            None => {
                tracker.spawn(connection(stream, peer, builder, app, timeouts, draining));
            }
            Some(tls) => {
                let tls = Arc::clone(tls);
                tracker.spawn(async move {
                    match tls.accept(stream, timeouts.read).await {
                        Ok(stream) => {
                            connection(stream, peer, builder, app, timeouts, draining).await
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS connection refused"),
                    }
                });
            }
        }
    };
    let mut accepting_until = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled(), if accepting_until.is_none() => {
                // Refuse new handshakes, then accept the ones under way.
                if let Err(e) = refuse_new_connections(&listener) {
                    tracing::warn!(error = %e, "cannot stop new connections before closing the listener; queued ones may be reset");
                }
                accepting_until = Some(tokio::time::Instant::now() + HANDSHAKE_GRACE);
            }
            _ = tokio::time::sleep_until(accepting_until.unwrap_or_else(tokio::time::Instant::now)), if accepting_until.is_some() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => open(stream, peer),
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
    // tokio's accept answers from its readiness event, which can lag the
    // kernel's queue: empty the queue with plain non-blocking accepts.
    match listener.into_std() {
        Ok(std_listener) => loop {
            match std_listener.accept() {
                Ok((stream, peer)) => match stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream))
                {
                    Ok(stream) => open(stream, peer),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "cannot adopt a queued connection")
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "emptying the accept queue failed");
                    break;
                }
            }
        },
        Err(e) => tracing::warn!(error = %e, "cannot empty the accept queue"),
    }
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

/// Attaches a socket filter to the listener that drops incoming SYNs (and
/// nothing else), so the kernel completes no new handshake while the
/// handshakes under way finish and the accept queue is emptied: a client
/// then sees a refused or timed-out connect, never a reset after it sent
/// its request.
#[cfg(target_os = "linux")]
fn refuse_new_connections(listener: &TcpListener) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // Classic BPF over the TCP header: load the flags byte, keep SYN and
    // ACK, drop the packet when only SYN is set, else keep it whole.
    let code = [
        libc::sock_filter {
            code: 0x30,
            jt: 0,
            jf: 0,
            k: 13,
        }, // ldb [13]
        libc::sock_filter {
            code: 0x54,
            jt: 0,
            jf: 0,
            k: 0x12,
        }, // and #0x12
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: 0x02,
        }, // jeq #0x02
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ret #0 (drop)
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        }, // ret #-1 (keep)
    ];
    let program = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points to `code`, both alive for the call; the
    // kernel copies the filter.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const program).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn refuse_new_connections(_listener: &TcpListener) -> io::Result<()> {
    Ok(())
}

/// An HTTP/1.1 request must carry exactly one `Host` header (RFC 9112
/// §3.2): the 400 problem for one that does not.
fn host_problem<B>(req: &http::Request<B>) -> Option<http::Response<Body>> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let detail = match (hosts.next(), hosts.next()) {
        (Some(_), None) => return None,
        (None, _) => "an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)",
        (Some(_), Some(_)) => {
            "an HTTP/1.1 request must carry exactly one Host header, not several (RFC 9112 section 3.2)"
        }
    };
    let mut response =
        crate::error::problem(http::StatusCode::BAD_REQUEST, detail, Default::default());
    response.headers_mut().insert(
        super::X_CORRELATION_ID,
        crate::context::correlation::from_headers(req.headers()),
    );
    Some(response)
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
    /// Bytes read so far, up to the HTTP/2 preface's length.
    first_bytes: AtomicU32,
    /// The connection speaks HTTP/2 (it began with the preface).
    h2: AtomicBool,
    /// The service is draining: HTTP/1 responses say `Connection: close`.
    /// (A flag here, set by the connection's task, costs the service
    /// nothing per request; a request finishing as the signal arrives may
    /// miss it, and its connection then closes after its next response.)
    draining: AtomicBool,
}

impl ConnState {
    /// Notes the connection's first bytes: those of the HTTP/2 preface mark
    /// it as HTTP/2 (and end the request-head timer a new connection starts
    /// with).
    fn saw(&self, got: &[u8]) {
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

    fn bump(&self) {
        // Single writer (the connection's task): no read-modify-write needed.
        self.activity.store(
            self.activity.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

struct InFlight(Arc<ConnState>);

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends.
    struct HeldBody {
        #[pin]
        inner: Body,
        _guard: InFlight,
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

async fn connection<S, A: Handler>(
    stream: S,
    peer: SocketAddr,
    builder: Arc<Builder<TokioExecutor>>,
    app: Arc<A>,
    timeouts: Timeouts,
    draining: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::default());
    state.reading.store(true, Ordering::Relaxed);
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        state: Arc::clone(&state),
    });
    let svc_state = Arc::clone(&state);
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let guard = InFlight::enter(&svc_state);
        let http1 = req.version() < http::Version::HTTP_2;
        let call = match host_problem(&req) {
            None => Either::Left(app.handle(req.map(Body::new))),
            Some(response) => Either::Right(std::future::ready(Ok(response))),
        };
        async move {
            let mut response = call.await;
            if http1
                && guard.0.draining.load(Ordering::Relaxed)
                && let Ok(response) = &mut response
            {
                // hyper closes the connection after this response.
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            if A::HTTP2_ONLY {
                return response.map(|r| {
                    r.map(|body| {
                        Body::new(HeldBody {
                            inner: body,
                            _guard: guard,
                        })
                    })
                });
            }
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
    let mut drain_started = false;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
                }
                return;
            }
            _ = draining.cancelled(), if !drain_started => {
                drain_started = true;
                state.draining.store(true, Ordering::Relaxed);
                if state.h2.load(Ordering::Relaxed) && !closing {
                    // GOAWAY: streams under way finish, new ones go elsewhere.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                tick = tokio::time::interval(DRAIN_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            _ = tick.tick() => match watch.check(&state, Instant::now(), &timeouts) {
                Liveness::Fine => {
                    if drain_started && !closing && watch.quiet_for(&state, Instant::now()) >= QUIET {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                Liveness::Idle => {
                    if !closing {
                        tracing::debug!(%peer, "closing idle HTTP connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                Liveness::ReadTimeout => {
                    tracing::debug!(%peer, "HTTP read timeout: request head not received in time");
                    return;
                }
                Liveness::WriteStalled => {
                    tracing::debug!(%peer, "HTTP write timeout: client stopped reading");
                    return;
                }
            },
        }
    }
}

/// What the watchdog concludes about a connection on one tick.
#[derive(Debug, PartialEq, Eq)]
enum Liveness {
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

    /// How long the connection has had no request in flight and no traffic
    /// (requests only, for HTTP/2), as of the last check.
    fn quiet_for(&self, state: &ConnState, now: Instant) -> Duration {
        if state.in_flight.load(Ordering::Relaxed) > 0
            || state.activity.load(Ordering::Relaxed) != self.seen
        {
            return Duration::ZERO;
        }
        now.duration_since(self.last_activity)
    }

    fn check(&mut self, state: &ConnState, now: Instant, t: &Timeouts) -> Liveness {
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
struct WatchedIo<S> {
    inner: S,
    state: Arc<ConnState>,
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
