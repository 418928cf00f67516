//! Request logging: a DEBUG access line for every user request, and — for
//! statuses matching `PATRON_HTTP_STATUS_ERROR_LOGGING` (Go Patron's syntax,
//! e.g. `404;[500,600)`) — an ERROR line with method, route, status, latency
//! and the response body capped at 4 KiB. The body is captured only for
//! responses that will be logged, by a body wrapper that passes every frame
//! through unchanged and logs when the body is done.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::{Buf, Bytes};
use http::{HeaderValue, StatusCode};

pub use crate::config::StatusRules;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::span::RequestSpan;

/// Most of a response body an error log line carries.
const BODY_CAP: usize = 4096;

/// What an access log line says about a request.
pub(crate) struct Access {
    pub method: &'static str,
    pub route: &'static str,
    pub status: StatusCode,
    pub started: Instant,
    pub correlation_id: HeaderValue,
    /// The request span, entered for the line so that it carries the
    /// trace and span ids operators join to traces.
    pub span: RequestSpan,
}

impl Access {
    fn latency_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

/// Wraps the body of a response whose status `rules` match, so that the
/// ERROR line is written, with the body, once it has been sent.
/// A compressed body (`encoding` set) is not captured: the line says so.
pub(crate) fn log(
    rules: &StatusRules,
    access: Access,
    encoding: Option<HeaderValue>,
    body: Body,
) -> Body {
    debug_assert!(rules.matches(access.status));
    Body::new(CaptureBody {
        inner: body,
        captured: Vec::new(),
        encoding,
        access: Some(access),
    })
}

/// The DEBUG access line of a request whose status is not error-logged,
/// written inside the request span (so it carries the trace and span ids).
/// Free when DEBUG is off: the fields are only evaluated for an enabled line.
pub(crate) fn log_served(
    span: &RequestSpan,
    method: &'static str,
    route: &'static str,
    status: StatusCode,
    started: Instant,
    correlation_id: &HeaderValue,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let _entered = span.enter();
    tracing::debug!(
        http.request.method = method,
        http.route = route,
        http.response.status_code = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        correlation_id = correlation_id.to_str().unwrap_or_default(),
        "request served"
    );
}

pin_project! {
    /// Passes a response body through, keeping its first 4 KiB for the
    /// error log line written when the body is dropped.
    struct CaptureBody {
        #[pin]
        inner: Body,
        captured: Vec<u8>,
        encoding: Option<HeaderValue>,
        access: Option<Access>,
    }

    impl PinnedDrop for CaptureBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(access) = this.access.take() {
                let body = match this.encoding {
                    Some(e) => format!(
                        "({}-encoded body, not shown)",
                        e.to_str().unwrap_or("compressed")
                    )
                    .into(),
                    None => String::from_utf8_lossy(this.captured),
                };
                let _entered = access.span.enter();
                tracing::error!(
                    http.request.method = access.method,
                    http.route = access.route,
                    http.response.status_code = access.status.as_u16(),
                    latency_ms = access.latency_ms(),
                    correlation_id = access.correlation_id.to_str().unwrap_or_default(),
                    body = %body,
                    "request failed"
                );
            }
        }
    }
}

impl http_body::Body for CaptureBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame
            && let Some(data) = f.data_ref()
        {
            let room = if this.encoding.is_some() {
                0
            } else {
                BODY_CAP.saturating_sub(this.captured.len())
            };
            let take = room.min(data.remaining());
            this.captured
                .extend_from_slice(&data.chunk()[..take.min(data.chunk().len())]);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("route", &self.route)
            .field("status", &self.status)
            .finish()
    }
}
