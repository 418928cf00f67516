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
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

/// Most of a response body an error log line carries.
const BODY_CAP: usize = 4096;

/// Which statuses are logged at ERROR level with their body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusRules {
    /// Half-open ranges `[from, to)`.
    ranges: Vec<(u16, u16)>,
}

impl StatusRules {
    /// Parses Go Patron's syntax: `;`-separated codes (`404`) and intervals
    /// (`[500,600)`, `(400,410]`). Returns what is wrong on failure.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let range = if let Some(rest) = part.strip_prefix(['[', '(']) {
                let inclusive_start = part.starts_with('[');
                let (body, inclusive_end) = match (rest.strip_suffix(')'), rest.strip_suffix(']')) {
                    (Some(b), _) => (b, false),
                    (None, Some(b)) => (b, true),
                    _ => return Err(format!("interval {part:?} must end with `)` or `]`")),
                };
                let (a, b) = body
                    .split_once(',')
                    .ok_or_else(|| format!("interval {part:?} needs two bounds, e.g. [500,600)"))?;
                let a = code(a)?;
                let b = code(b)?;
                let from = if inclusive_start { a } else { a + 1 };
                let to = if inclusive_end { b + 1 } else { b };
                if from >= to {
                    return Err(format!("interval {part:?} is empty"));
                }
                (from, to)
            } else {
                let c = code(part)?;
                (c, c + 1)
            };
            ranges.push(range);
        }
        Ok(StatusRules { ranges })
    }

    /// Whether `status` is logged at ERROR level.
    pub fn matches(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        self.ranges
            .iter()
            .any(|(from, to)| (*from..*to).contains(&s))
    }
}

fn code(text: &str) -> Result<u16, String> {
    let t = text.trim();
    match t.parse::<u16>() {
        Ok(c) if (100..=1000).contains(&c) => Ok(c),
        _ => Err(format!("{t:?} is not an HTTP status code")),
    }
}

/// What an access log line says about a request.
pub(crate) struct Access {
    pub method: &'static str,
    pub route: &'static str,
    pub status: StatusCode,
    pub started: Instant,
    pub correlation_id: HeaderValue,
    /// The request span, entered for the line so that it carries the
    /// trace and span ids operators join to traces.
    pub span: tracing::Span,
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
    span: &tracing::Span,
    method: &'static str,
    route: &'static str,
    status: StatusCode,
    started: Instant,
    correlation_id: &HeaderValue,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let _entered = (!span.is_disabled()).then(|| span.enter());
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
                let _entered = (!access.span.is_disabled()).then(|| access.span.enter());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let r = StatusRules::parse("404;[500,600)").unwrap();
        assert!(r.matches(StatusCode::NOT_FOUND));
        assert!(r.matches(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(r.matches(StatusCode::from_u16(599).unwrap()));
        assert!(!r.matches(StatusCode::OK));
        assert!(!r.matches(StatusCode::BAD_REQUEST));
        let r = StatusRules::parse("(400,403]").unwrap();
        assert!(!r.matches(StatusCode::BAD_REQUEST));
        assert!(r.matches(StatusCode::FORBIDDEN));
        assert_eq!(StatusRules::parse("").unwrap(), StatusRules::default());
    }

    #[test]
    fn rejects_nonsense() {
        assert!(
            StatusRules::parse("[500,600")
                .unwrap_err()
                .contains("must end")
        );
        assert!(
            StatusRules::parse("[600,500)")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            StatusRules::parse("abc")
                .unwrap_err()
                .contains("not an HTTP status code")
        );
        assert!(
            StatusRules::parse("[500)")
                .unwrap_err()
                .contains("two bounds")
        );
    }
}
