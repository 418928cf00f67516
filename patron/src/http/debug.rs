//! Opt-in debug endpoints, off unless `PATRON_DEBUG_ENDPOINTS=true` or
//! [`Service::with_debug_endpoints`](crate::Service::with_debug_endpoints):
//!
//! - `GET /debug/pprof/profile?seconds=N` — a CPU profile (default 30 s, at
//!   most 300 s) in the pprof protobuf format that `go tool pprof` and
//!   `pprof` read;
//! - `POST /debug/log/{level}` — changes the log level at run time; a bad
//!   level is a 400 problem.
//!
//! They sit behind the authenticator given to
//! [`Service::with_debug_auth`](crate::Service::with_debug_auth); without
//! one the service refuses to start, unless they are opened on purpose
//! (`PATRON_DEBUG_ENDPOINTS=unauthenticated`, logged at WARN). They get
//! panic recovery only, like the other management routes. A profile whose
//! client disconnected stops at once.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::config::LogLevel;
use crate::error::Error;
use crate::observe::log;

/// The paths these endpoints take.
pub(crate) const PATHS: &[&str] = &["/debug/pprof/profile", "/debug/log/{level}"];

/// Wraps the debug routes in the authenticator given to
/// `Service::with_debug_auth`.
pub(crate) type DebugAuth = std::sync::Arc<dyn Fn(Router) -> Router + Send + Sync>;

const DEFAULT_SECONDS: u64 = 30;
const MAX_SECONDS: u64 = 300;
/// Samples a second; Go's profiler uses 100, a prime avoids lockstep with
/// periodic work.
const FREQUENCY: i32 = 99;

pub(crate) fn routes() -> Router {
    Router::new()
        .route("/debug/pprof/profile", get(profile))
        .route("/debug/log/{level}", post(set_level))
}

#[derive(Deserialize)]
struct ProfileParams {
    seconds: Option<String>,
}

async fn profile(Query(params): Query<ProfileParams>) -> Response {
    let seconds = match params.seconds.as_deref() {
        None => DEFAULT_SECONDS,
        Some(text) => match text.parse::<u64>() {
            Ok(n) if (1..=MAX_SECONDS).contains(&n) => n,
            _ => {
                return Error::bad_request(format!(
                    "seconds must be a whole number from 1 to {MAX_SECONDS}, not {text:?}"
                ))
                .into_response();
            }
        },
    };
    tracing::info!(seconds, "CPU profile started");
    // The profiling thread waits on this channel: when the client goes
    // away, the server drops this handler's future, the sender with it, and
    // the profile stops at once instead of holding the process's single
    // profiler for up to 300 s.
    let (abandoned, watch) = std::sync::mpsc::channel::<()>();
    let result =
        tokio::task::spawn_blocking(move || record(Duration::from_secs(seconds), &watch)).await;
    drop(abandoned);
    match result {
        Ok(Ok(bytes)) => {
            let mut response = (StatusCode::OK, bytes).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"profile.pb\""),
            );
            response
        }
        Ok(Err(e)) => e.into_response(),
        Err(e) => Error::msg(format!("the profiling task failed: {e}")).into_response(),
    }
}

/// Samples the whole process for `duration`, or until `abandoned`'s sender
/// is dropped (the client left: nothing is encoded), and encodes the
/// profile.
fn record(duration: Duration, abandoned: &std::sync::mpsc::Receiver<()>) -> Result<Vec<u8>, Error> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| {
            Error::new(
                StatusCode::CONFLICT,
                format!("cannot start the CPU profiler (is another profile running?): {e}"),
            )
        })?;
    if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = abandoned.recv_timeout(duration) {
        tracing::info!("CPU profile abandoned: the client disconnected");
        return Err(Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the client disconnected before the profile was done",
        ));
    }
    let report = guard
        .report()
        .build()
        .map_err(|e| Error::msg(format!("cannot build the CPU profile: {e}")))?;
    Ok(crate::observe::profile::encode(&report))
}

async fn set_level(Path(level): Path<String>) -> Response {
    let Some(parsed) = LogLevel::parse(&level) else {
        return Error::bad_request(format!(
            "unknown log level {level:?}; expected one of trace, debug, info, warn, error"
        ))
        .into_response();
    };
    match log::set_level(parsed) {
        Ok(()) => {
            tracing::warn!(level = parsed.as_str(), "log level changed at run time");
            let body = format!("{{\"level\":\"{}\"}}", parsed.as_str());
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}
