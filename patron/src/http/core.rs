//! The middleware every user request gets, run by the server around the
//! router with a named future, so a request pays for no extra allocation or
//! boxing. Outermost first: correlation id → request span → panic catcher →
//! timeout → body limit. Per-route values are resolved at start-up and found
//! by one path lookup.
//!
//! The correlation id lives in a task-local [`RequestContext`] for the whole
//! request, so every log line carries it whether or not the request span is
//! enabled. The span itself is a DEBUG span: at the default INFO level it
//! costs nothing, and layers that want it (debug logging, trace export) get
//! it with the correlation id recorded on it.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use http::{HeaderValue, StatusCode, header};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Timeout;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::correlation::{self, X_CORRELATION_ID};
use crate::error::Error;
use crate::observe::metrics::{RouteMetrics, method_label};

/// What the core middleware needs to know about one route.
pub(crate) struct RouteRuntime {
    pub method: &'static str,
    pub route: &'static str,
    pub span_name: &'static str,
    pub trace: bool,
    pub timeout: Duration,
    pub body_limit: usize,
    /// `None` for `trace = false` routes.
    pub metrics: Option<RouteMetrics>,
}

/// Keeps `http_server_active_requests` right even when a request is dropped
/// before it completes (the client went away).
pub(crate) struct Active(Option<&'static RouteMetrics>);

impl Active {
    fn enter(metrics: Option<&'static RouteMetrics>) -> Self {
        if let Some(m) = metrics {
            m.active.inc();
        }
        Active(metrics)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            m.active.dec();
        }
    }
}

/// Per-request context, available to everything the request runs.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    pub(crate) correlation_id: HeaderValue,
}

tokio::task_local! {
    pub(crate) static REQUEST: RequestContext;
}

type Guarded<F> =
    Instrumented<TaskLocalFuture<RequestContext, Timeout<CatchUnwind<AssertUnwindSafe<F>>>>>;

pin_project! {
    #[project = CoreProj]
    pub(crate) enum CoreFuture<F> {
        Rejected { response: Option<Response> },
        Running {
            #[pin]
            inner: Guarded<F>,
            route: &'static RouteRuntime,
            id: Option<HeaderValue>,
            method: &'static str,
            started: Instant,
            active: Active,
        },
    }
}

/// Runs `call(req)` as one user request: correlation id, span, panic
/// catcher, timeout and body-size check, as `route` says.
pub(crate) fn guard<F>(
    route: &'static RouteRuntime,
    req: Request,
    call: impl FnOnce(Request) -> F,
) -> CoreFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let started = Instant::now();
    let method = method_label(req.method());
    let id = correlation::from_headers(req.headers());
    if let Some(len) = content_length(&req)
        && len > route.body_limit as u64
    {
        let mut response = Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {len} bytes exceeds this route's limit of {} bytes",
                route.body_limit
            ),
        )
        .into_response();
        response.headers_mut().insert(X_CORRELATION_ID, id);
        if let Some(m) = &route.metrics {
            m.observe(method, response.status(), started.elapsed().as_secs_f64());
        }
        return CoreFuture::Rejected {
            response: Some(response),
        };
    }
    let span = if route.trace {
        tracing::debug_span!(
            "HTTP request",
            otel.name = route.span_name,
            otel.kind = "server",
            http.request.method = route.method,
            http.route = route.route,
            correlation_id = id.to_str().unwrap_or_default(),
        )
    } else {
        tracing::Span::none()
    };
    let context = RequestContext {
        correlation_id: id.clone(),
    };
    let inner = span.in_scope(|| {
        let handled = AssertUnwindSafe(call(req)).catch_unwind();
        REQUEST.scope(context, tokio::time::timeout(route.timeout, handled))
    });
    let active = Active::enter(route.metrics.as_ref());
    CoreFuture::Running {
        inner: inner.instrument(span),
        route,
        id: Some(id),
        method,
        started,
        active,
    }
}

impl<F> Future for CoreFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CoreProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Error::msg("response polled twice").into_response()))),
            CoreProj::Running {
                inner,
                route,
                id,
                method,
                started,
                active: _,
            } => {
                let outcome = ready!(inner.poll(cx));
                let id = id.take().unwrap_or_else(|| HeaderValue::from_static(""));
                let mut response = match outcome {
                    Ok(Ok(Ok(response))) => response,
                    Ok(Ok(Err(never))) => match never {},
                    Ok(Err(panic)) => {
                        tracing::error!(
                            panic = panic_message(panic.as_ref()),
                            route = route.span_name,
                            correlation_id = id.to_str().unwrap_or_default(),
                            "request handler panicked"
                        );
                        Error::internal(
                            "the request handler panicked; the service is still running",
                        )
                        .into_response()
                    }
                    Err(_) => {
                        tracing::warn!(
                            timeout = ?route.timeout,
                            route = route.span_name,
                            correlation_id = id.to_str().unwrap_or_default(),
                            "request timed out"
                        );
                        Error::unavailable(format!(
                            "the request did not complete within {}",
                            humantime::format_duration(route.timeout)
                        ))
                        .into_response()
                    }
                };
                response.headers_mut().insert(X_CORRELATION_ID, id);
                if let Some(m) = &route.metrics {
                    m.observe(method, response.status(), started.elapsed().as_secs_f64());
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
