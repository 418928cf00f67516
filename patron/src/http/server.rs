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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use super::body::BodyWatch;
use super::router::App;
use super::tls::Tls;
use super::watchdog::{ConnState, InFlight, Liveness, Served, Watch, WatchedIo};

/// How long an HTTP/1 connection must be quiet while draining before it is
/// closed.
const QUIET: Duration = Duration::from_millis(250);
/// The watchdog's tick while draining.
const DRAIN_TICK: Duration = Duration::from_millis(100);
/// How long handshakes under way get to complete once new ones are refused.
const HANDSHAKE_GRACE: Duration = Duration::from_millis(100);

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
    /// Request bodies are watched (see `body.rs`): whether the handler
    /// waits for the client, and whether a JSON body is UTF-8. The server
    /// wraps hyper's body once, and hands the watch over with the request.
    const WATCHES_BODY: bool = false;
    /// Handles one request; `watch` is its body's, with `WATCHES_BODY`
    /// and a body with bytes to come.
    fn handle(&self, req: http::Request<Body>, watch: Option<Arc<BodyWatch>>) -> Self::Future;
}

impl Handler for App {
    type Future = super::router::AppFuture;
    const WATCHES_BODY: bool = true;

    fn handle(&self, req: http::Request<Body>, watch: Option<Arc<BodyWatch>>) -> Self::Future {
        self.call(req, watch)
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

fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
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
        let mut watch = None;
        let req = req.map(|body| super::body::from_hyper(body, A::WATCHES_BODY, &mut watch));
        Served {
            call: app.handle(req, watch),
            guard: Some(guard),
            http1,
            hold_body: A::HTTP2_ONLY,
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let drain = draining.cancelled_owned();
    tokio::pin!(drain);
    let mut watch = Watch::new(Instant::now());
    let mut tick = tokio::time::interval(timeouts.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    let mut drain_started = false;
    // The watchdog's timer and the drain signal wake the task through the
    // alarm, which notes that they did: a wake by the connection's own IO
    // polls only the connection, not them.
    // Rung to begin with: the first poll arms the timer and the signal.
    let alarm = Arc::new(Alarm {
        rang: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let alarm_waker = Waker::from(Arc::clone(&alarm));
    let ended = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            if !alarm.rang() {
                return Poll::Pending;
            }
            alarm.task.register(cx.waker());
            let mut watchers = Context::from_waker(&alarm_waker);
            let mut shut_down = false;
            if !drain_started && drain.as_mut().poll(&mut watchers).is_ready() {
                drain_started = true;
                state.draining.store(true, Ordering::Relaxed);
                if state.h2.load(Ordering::Relaxed) && !closing {
                    // GOAWAY: streams under way finish, new ones go elsewhere.
                    closing = true;
                    shut_down = true;
                }
                tick = tokio::time::interval(DRAIN_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            while tick.poll_tick(&mut watchers).is_ready() {
                match watch.check(&state, Instant::now(), &timeouts) {
                    Liveness::Fine => {
                        if drain_started
                            && !closing
                            && watch.quiet_for(&state, Instant::now()) >= QUIET
                        {
                            closing = true;
                            shut_down = true;
                        }
                    }
                    Liveness::Idle => {
                        if !closing {
                            tracing::debug!(%peer, "closing idle HTTP connection");
                            closing = true;
                            shut_down = true;
                        }
                    }
                    Liveness::ReadTimeout => {
                        tracing::debug!(%peer, "HTTP read timeout: request head not received in time");
                        return Poll::Ready(None);
                    }
                    Liveness::WriteStalled => {
                        tracing::debug!(%peer, "HTTP write timeout: client stopped reading");
                        return Poll::Ready(None);
                    }
                }
            }
            if !shut_down {
                return Poll::Pending;
            }
            // The connection has to be polled to act on it.
            conn.as_mut().graceful_shutdown();
        }
    })
    .await;
    if let Some(Err(err)) = ended {
        tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
    }
}

/// Wakes a connection's task for its watchdog's timer or the drain signal,
/// and remembers that it did.
struct Alarm {
    rang: AtomicBool,
    task: AtomicWaker,
}

impl Alarm {
    /// Whether the alarm rang since the last call (and the task's waker
    /// must be registered again: ringing takes it).
    fn rang(&self) -> bool {
        self.rang.load(Ordering::Relaxed) && self.rang.swap(false, Ordering::AcqRel)
    }
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::Release);
        self.task.wake();
    }
}
