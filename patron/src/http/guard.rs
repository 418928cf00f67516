//! The guard every user request gets (its middleware), run by the server
//! around the router as one named future, so a request pays for no extra
//! allocation, boxing or nested wrapper futures. Outermost first:
//! correlation id → request span → panic catcher → timeout → body limit.
//! Per-route values are resolved at start-up and found by one path lookup.
//!
//! The request's context (correlation id, incoming trace context) is kept
//! inline in the guard and borrowed as the current context around each poll
//! of the handler, so every log line carries it whether or not the request
//! span is enabled. The span itself is a DEBUG span: at the default INFO
//! level it costs nothing, and layers that want it (debug logging, trace
//! export) get it with the correlation id recorded on it. The handler
//! timeout's timer is armed only when the handler first waits.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::access::{self, Access, StatusRules};
use super::body::BodyWatch;
use super::head::Head;
use super::span::{RequestSpan, ServerSpan};
use crate::context::correlation::{self, X_CORRELATION_ID};
use crate::context::{KnownContext, in_known_context};
use crate::error::Error;
use crate::observe::metrics::{RouteMetrics, method_label};
use crate::observe::trace;
use crate::panic::panic_message;
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};

/// What the request guard needs to know about one route.
pub(crate) struct RouteRuntime {
    pub method: &'static str,
    pub route: &'static str,
    pub span_name: &'static str,
    /// The server span's constant attributes, encoded once.
    pub span_attributes: Box<[u8]>,
    pub trace: bool,
    pub timeout: Duration,
    pub body_limit: usize,
    /// `None` for `trace = false` routes.
    pub metrics: Option<RouteMetrics>,
    /// Service-wide response settings.
    pub shared: &'static ResponseSettings,
    /// The route's token bucket, from `rate_limit = "…"`.
    pub rate_limit: Option<DefaultDirectRateLimiter>,
}

/// Response settings every route shares.
pub(crate) struct ResponseSettings {
    /// Statuses logged at ERROR level with their body.
    pub status_rules: StatusRules,
    /// `X-App-Name` and `X-App-Version`, when turned on.
    pub app_headers: Option<(HeaderValue, HeaderValue)>,
}

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
    span: &RequestSpan,
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

pin_project! {
    #[project = GuardProj]
    pub(crate) enum GuardFuture<F> {
        /// Answered before the handler: a rejected request.
        Ready { response: Option<Response> },
        Running {
            #[pin]
            inner: F,
            route: &'static RouteRuntime,
            // Borrowed as the current context around each poll of `inner`.
            context: KnownContext,
            method: &'static str,
            started: Instant,
            active: Active,
            body: Option<Arc<BodyWatch>>,
            span: RequestSpan,
            // The handler timeout's timer, armed only once the handler
            // waits: a request answered in its first poll pays for none.
            deadline: Option<Pin<Box<Sleep>>>,
        },
    }
}

impl<F> GuardFuture<F> {
    /// A response decided before any handler ran.
    pub(crate) fn ready(response: Response) -> Self {
        GuardFuture::Ready {
            response: Some(response),
        }
    }
}

/// How a handler's run ended, as the guard sees it.
enum Outcome {
    Answered(Response),
    Panicked(Box<dyn std::any::Any + Send>),
    TimedOut,
}

/// Runs `call(req)` as one user request: correlation id, span, panic
/// catcher, timeout and body-size check, as `route` says; `head` is what
/// was read from the request's headers, `body` the watch on its body.
pub(crate) fn guard<F>(
    route: &'static RouteRuntime,
    req: Request,
    head: Head,
    body: Option<Arc<BodyWatch>>,
    call: impl FnOnce(Request) -> F,
) -> GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let started = Instant::now();
    let method = method_label(req.method());
    let id = correlation::or_generate(head.correlation_id);
    if let Some(len) = head.content_length
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
        let response = finish(route, method, started, id, response, &RequestSpan::none());
        return GuardFuture::ready(response);
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
        let response = finish(route, method, started, id, response, &RequestSpan::none());
        return GuardFuture::ready(response);
    }
    // With trace export on, unsampled requests get no span at all, and
    // sampled ones an SDK span (see `span`).
    let span = if !route.trace {
        RequestSpan::none()
    } else if trace::enabled() {
        let traceparent = head.traceparent.as_ref().map(HeaderValue::as_bytes);
        if trace::sample_parent(traceparent) {
            // A malformed traceparent yields an empty context: a new root.
            let parent = if head.traceparent.is_some() || head.baggage.is_some() {
                trace::extract(req.headers())
            } else {
                opentelemetry::Context::new()
            };
            RequestSpan::sampled(
                &parent,
                ServerSpan {
                    name: route.span_name,
                    attributes: &route.span_attributes,
                    route: route.route,
                    path: req.uri().path(),
                    correlation_id: id.clone(),
                },
            )
            .unwrap_or_else(RequestSpan::none)
        } else {
            RequestSpan::none()
        }
    } else {
        RequestSpan::Tracing(tracing::debug_span!(
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
        ))
    };
    let context = KnownContext {
        correlation_id: id,
        traceparent: head.traceparent,
        baggage: head.baggage,
    };
    if head.json
        && let Some(watch) = &body
    {
        watch.check_utf8();
    }
    let inner = call(req);
    let active = Active::enter(route.metrics.as_ref());
    GuardFuture::Running {
        inner,
        route,
        context,
        method,
        started,
        active,
        body,
        span,
        deadline: None,
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Error::msg("response polled twice").into_response()))),
            GuardProj::Running {
                mut inner,
                route,
                context,
                method,
                started,
                active: _,
                body,
                span,
                deadline,
            } => {
                let outcome = {
                    // The handler's log lines and spans belong to the
                    // request's trace.
                    let _entered = span.enter();
                    let polled = in_known_context(context, || {
                        std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)))
                    });
                    match polled {
                        Ok(Poll::Ready(Ok(response))) => Outcome::Answered(response),
                        Ok(Poll::Ready(Err(never))) => match never {},
                        Err(panic) => Outcome::Panicked(panic),
                        Ok(Poll::Pending) => {
                            let Some(at) = started.checked_add(route.timeout) else {
                                // A timeout beyond the clock's range: none.
                                return Poll::Pending;
                            };
                            let timer = deadline.get_or_insert_with(|| {
                                Box::pin(tokio::time::sleep_until(at.into()))
                            });
                            ready!(timer.as_mut().poll(cx));
                            Outcome::TimedOut
                        }
                    }
                };
                let id =
                    std::mem::replace(&mut context.correlation_id, HeaderValue::from_static(""));
                // The panic and timeout lines belong to the request's trace.
                let entered = span.enter();
                let response = match outcome {
                    Outcome::Answered(response) => response,
                    Outcome::Panicked(panic) => {
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
                    Outcome::TimedOut if body.as_ref().is_some_and(|b| b.waiting()) => {
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
                    Outcome::TimedOut => {
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
                span.record_status(response.status());
                let response = finish(route, method, *started, id, response, span);
                Poll::Ready(Ok(response))
            }
        }
    }
}
