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

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use http::{HeaderName, HeaderValue, StatusCode, header};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Timeout;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::access::{self, Access, StatusRules};
use super::correlation::{self, X_CORRELATION_ID};
use crate::error::Error;
use crate::observe::metrics::{RouteMetrics, method_label};
use crate::observe::trace;
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};
use tracing_opentelemetry::OpenTelemetrySpanExt;

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
    /// Service-wide response settings.
    pub shared: &'static HttpShared,
    /// The route's token bucket, from `rate_limit = "…"`.
    pub rate_limit: Option<DefaultDirectRateLimiter>,
}

/// Response settings every route shares.
pub(crate) struct HttpShared {
    /// Statuses logged at ERROR level with their body.
    pub status_rules: StatusRules,
    /// `X-App-Name` and `X-App-Version`, when turned on.
    pub app_headers: Option<(HeaderValue, HeaderValue)>,
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The `X-App-Name` response header.
pub const X_APP_NAME: HeaderName = HeaderName::from_static("x-app-name");
/// The `X-App-Version` response header.
pub const X_APP_VERSION: HeaderName = HeaderName::from_static("x-app-version");

/// Completes a response: metrics, correlation id, app headers, and the
/// access or error log line.
fn finish(
    route: &RouteRuntime,
    method: &'static str,
    started: Instant,
    id: HeaderValue,
    mut response: Response,
    span: &tracing::Span,
) -> Response {
    let status = response.status();
    let method = route_method(route, method);
    if let Some(m) = &route.metrics {
        m.observe(method, status, started.elapsed().as_secs_f64());
    }
    let headers = response.headers_mut();
    if let Some((name, version)) = &route.shared.app_headers {
        headers.insert(X_APP_NAME, name.clone());
        headers.insert(X_APP_VERSION, version.clone());
    }
    if route.shared.status_rules.matches(status) {
        headers.insert(X_CORRELATION_ID, id.clone());
        let access = Access {
            method,
            route: route.route,
            status,
            started,
            correlation_id: id,
            span: span.clone(),
        };
        let (parts, body) = response.into_parts();
        let encoding = parts.headers.get(http::header::CONTENT_ENCODING).cloned();
        return Response::from_parts(
            parts,
            access::log(&route.shared.status_rules, access, encoding, body),
        );
    }
    access::log_served(span, method, route.route, status, started, &id);
    headers.insert(X_CORRELATION_ID, id);
    response
}

fn route_method(route: &RouteRuntime, method: &'static str) -> &'static str {
    if route.method.is_empty() {
        method
    } else {
        route.method
    }
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

/// Per-request (or per-message) context, available to everything the
/// request or the message's handler runs. Both variants are one pointer:
/// the task-local holding it swaps it in and out around every poll of the
/// work it scopes (and around every consumed message's first poll).
#[derive(Debug, Clone)]
pub(crate) enum RequestContext {
    /// Known when the work starts: an HTTP request's, a message batch's.
    Known(Box<KnownContext>),
    /// A consumed message's, read from its headers (and its correlation id
    /// generated) only when asked for: a handler that logs nothing and
    /// calls nothing costs no lookup.
    Message(Arc<crate::consumer::Envelope>),
}

/// A [`RequestContext`] known when the work starts.
#[derive(Debug, Clone)]
pub(crate) struct KnownContext {
    pub(crate) correlation_id: HeaderValue,
    /// The incoming W3C trace context, passed on when this service exports
    /// no span of its own.
    pub(crate) traceparent: Option<HeaderValue>,
    pub(crate) baggage: Option<HeaderValue>,
}

impl RequestContext {
    fn borrow(&self) -> Current<'_> {
        match self {
            RequestContext::Known(known) => Current::Known(known),
            RequestContext::Message(envelope) => Current::Message(envelope),
        }
    }
}

/// The context of the work running now, as its readers see it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Current<'a> {
    Known(&'a KnownContext),
    Message(&'a crate::consumer::Envelope),
}

impl Current<'_> {
    /// The correlation id.
    pub(crate) fn correlation_id(&self) -> &HeaderValue {
        match self {
            Current::Known(known) => &known.correlation_id,
            Current::Message(envelope) => envelope.correlation_id(),
        }
    }

    /// The incoming `traceparent`.
    pub(crate) fn traceparent(&self) -> Option<HeaderValue> {
        match self {
            Current::Known(known) => known.traceparent.clone(),
            Current::Message(envelope) => envelope.header_value("traceparent"),
        }
    }

    /// The incoming `baggage`.
    pub(crate) fn baggage(&self) -> Option<HeaderValue> {
        match self {
            Current::Known(known) => known.baggage.clone(),
            Current::Message(envelope) => envelope.header_value("baggage"),
        }
    }
}

tokio::task_local! {
    pub(crate) static REQUEST: RequestContext;
}

thread_local! {
    /// The envelope of the consumed message whose handler is being called
    /// and first polled on this thread, when no [`REQUEST`] scope is
    /// active: see [`in_message_context`].
    static FIRST_POLL: Cell<Option<NonNull<crate::consumer::Envelope>>> = const { Cell::new(None) };
}

/// Runs `f` — a message handler's call and first poll, which cannot yield
/// — with `envelope` as the current context. It does what
/// `REQUEST.sync_scope` does, without a reference count on the envelope or
/// swapping a context in and out of the task-local: the envelope is
/// borrowed through a thread-local pointer for the duration of `f` (the
/// task-local scope cost about 0.04 µs per consumed Kafka record, a fifth
/// of what patron adds to a hand-written loop). Inside an active `REQUEST`
/// scope it falls back to a nested scope, so the innermost context always
/// wins.
pub(crate) fn in_message_context<R>(
    envelope: &Arc<crate::consumer::Envelope>,
    f: impl FnOnce() -> R,
) -> R {
    if REQUEST.try_with(|_| ()).is_ok() {
        return REQUEST.sync_scope(RequestContext::Message(Arc::clone(envelope)), f);
    }
    /// Puts back the previous pointer, on unwinding too.
    struct Restore(Option<NonNull<crate::consumer::Envelope>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FIRST_POLL.set(self.0);
        }
    }
    let _restore = Restore(FIRST_POLL.replace(Some(NonNull::from(&**envelope))));
    f()
}

/// Calls `f` with the context of the work running now: the innermost
/// [`REQUEST`] scope, else the message in its first poll on this thread;
/// `None` outside both.
pub(crate) fn with_current<R>(f: impl FnOnce(Current<'_>) -> R) -> Option<R> {
    let mut f = Some(f);
    if let Ok(r) = REQUEST.try_with(|c| f.take().map(|f| f(c.borrow()))) {
        return r;
    }
    let envelope = FIRST_POLL.get()?;
    // SAFETY: the pointer is set only while `in_message_context` runs on
    // this thread, with the envelope borrowed for that whole time, and
    // reset when it returns or unwinds; `f` cannot keep the reference.
    let envelope = unsafe { envelope.as_ref() };
    f.take().map(|f| f(Current::Message(envelope)))
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
            body: Option<Arc<super::body::BodyWatch>>,
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
        let response = Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {len} bytes exceeds this route's limit of {} bytes",
                route.body_limit
            ),
        )
        .into_response();
        let response = finish(route, method, started, id, response, &tracing::Span::none());
        return CoreFuture::Rejected {
            response: Some(response),
        };
    }
    if let Some(limiter) = &route.rate_limit
        && let Err(not_until) = limiter.check()
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this route's rate limit is exhausted; retry in {retry_after} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        let response = finish(route, method, started, id, response, &tracing::Span::none());
        return CoreFuture::Rejected {
            response: Some(response),
        };
    }
    // With trace export on, unsampled requests get no span at all.
    let sampled = !trace::enabled() || trace::sample_request(req.headers());
    let span = if route.trace && sampled {
        tracing::debug_span!(
            "HTTP request",
            otel.name = route.span_name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = route.method,
            http.route = route.route,
            http.response.status_code = tracing::field::Empty,
            url.path = req.uri().path(),
            url.scheme = "http",
            correlation_id = id.to_str().unwrap_or_default(),
            patron.sampled = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    if trace::enabled() && !span.is_disabled() {
        span.record("patron.sampled", true);
        // A malformed traceparent yields an empty context: a new root.
        let _ = span.set_parent(trace::extract(req.headers()));
    }
    let context = RequestContext::Known(Box::new(KnownContext {
        correlation_id: id.clone(),
        traceparent: req.headers().get(TRACEPARENT).cloned(),
        baggage: req.headers().get(BAGGAGE).cloned(),
    }));
    let mut req = req;
    let body = super::body::watch(&mut req);
    let handled = AssertUnwindSafe(call(req)).catch_unwind();
    let inner = REQUEST.scope(context, tokio::time::timeout(route.timeout, handled));
    let active = Active::enter(route.metrics.as_ref());
    CoreFuture::Running {
        inner: inner.instrument(span),
        route,
        id: Some(id),
        method,
        started,
        active,
        body,
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
                mut inner,
                route,
                id,
                method,
                started,
                active: _,
                body,
            } => {
                let outcome = ready!(inner.as_mut().poll(cx));
                let id = id.take().unwrap_or_else(|| HeaderValue::from_static(""));
                let span = inner.span();
                // The panic and timeout lines belong to the request's trace.
                let entered = (!span.is_disabled()).then(|| span.enter());
                let response = match outcome {
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
                    Err(_) if body.as_ref().is_some_and(|b| b.waiting()) => {
                        tracing::info!(
                            timeout = ?route.timeout,
                            route = route.span_name,
                            correlation_id = id.to_str().unwrap_or_default(),
                            "request body did not arrive in time"
                        );
                        Error::new(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request body did not arrive within {}",
                                humantime::format_duration(route.timeout)
                            ),
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
                drop(entered);
                if !span.is_disabled() {
                    span.record(
                        "http.response.status_code",
                        i64::from(response.status().as_u16()),
                    );
                    if response.status().is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                let response = finish(route, method, *started, id, response, span);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{Delivery, Headers, Metadata};
    use crate::http::correlation::CorrelationId;

    fn delivery(id: &str) -> Delivery {
        let mut headers = Headers::new();
        headers.insert("X-Correlation-Id", id.as_bytes().to_vec());
        headers.insert(
            "traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
        );
        Delivery::new(b"{}".to_vec(), None, headers, Metadata::None)
    }

    fn current() -> Option<String> {
        CorrelationId::current().map(|c| c.as_str().to_string())
    }

    fn known(id: &str) -> RequestContext {
        RequestContext::Known(Box::new(KnownContext {
            correlation_id: HeaderValue::from_str(id).expect("header value"),
            traceparent: None,
            baggage: None,
        }))
    }

    #[test]
    fn a_message_in_its_first_poll_is_the_current_context_until_it_returns() {
        let d = delivery("msg-1");
        assert_eq!(current(), None);
        let inside = in_message_context(d.envelope(), || {
            let traceparent = with_current(|c| c.traceparent()).flatten();
            (current(), traceparent.map(|t| t.len()))
        });
        assert_eq!(inside, (Some("msg-1".to_string()), Some(55)));
        assert_eq!(current(), None, "nothing is left behind");
    }

    #[test]
    fn a_panic_in_the_first_poll_leaves_no_context_behind() {
        let d = delivery("msg-2");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            in_message_context(d.envelope(), || panic!("handler panicked"))
        }));
        assert!(result.is_err());
        assert_eq!(current(), None);
    }

    #[test]
    fn the_innermost_context_wins() {
        let (outer, inner) = (delivery("outer"), delivery("inner"));
        // A message inside a message: the inner one, then the outer again.
        let seen = in_message_context(outer.envelope(), || {
            let nested = in_message_context(inner.envelope(), current);
            // A REQUEST scope opened inside the first poll.
            let scoped = REQUEST.sync_scope(known("scoped"), current);
            (nested, scoped, current())
        });
        assert_eq!(
            seen,
            (
                Some("inner".to_string()),
                Some("scoped".to_string()),
                Some("outer".to_string())
            )
        );
        // A message's first poll inside an active REQUEST scope.
        let seen = REQUEST.sync_scope(known("request"), || {
            (in_message_context(inner.envelope(), current), current())
        });
        assert_eq!(
            seen,
            (Some("inner".to_string()), Some("request".to_string()))
        );
    }
}
