//! The middleware every user route gets, in one service so a request pays
//! for one boxed future instead of one per layer. Outermost first:
//! correlation id → request span → panic catcher → timeout → body limit.
//! All per-route values are resolved at start-up; a request allocates only
//! the correlation id it generates.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{StatusCode, header};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use super::correlation::{self, X_CORRELATION_ID};
use crate::error::Error;

/// What the core middleware needs to know about one route.
#[derive(Debug)]
pub(crate) struct RouteRuntime {
    pub method: &'static str,
    pub route: &'static str,
    pub span_name: &'static str,
    pub trace: bool,
    pub timeout: Duration,
    pub body_limit: usize,
}

#[derive(Clone, Copy)]
pub(crate) struct CoreLayer {
    route: &'static RouteRuntime,
}

impl CoreLayer {
    /// The layer for one route. The route description is leaked once per
    /// route and service build so requests reach it without a refcount.
    pub fn new(route: RouteRuntime) -> Self {
        CoreLayer {
            route: Box::leak(Box::new(route)),
        }
    }
}

impl<S> Layer<S> for CoreLayer {
    type Service = CoreService<S>;
    fn layer(&self, inner: S) -> CoreService<S> {
        CoreService {
            inner,
            route: self.route,
        }
    }
}

#[derive(Clone)]
pub(crate) struct CoreService<S> {
    inner: S,
    route: &'static RouteRuntime,
}

impl<S> Service<Request> for CoreService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let route = self.route;
        let id = correlation::ensure(req.headers_mut());
        let inner = self.inner.clone();
        Box::pin(async move {
            let span = if route.trace {
                tracing::info_span!(
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
            let mut response = async move {
                if let Some(len) = content_length(&req)
                    && len > route.body_limit as u64
                {
                    return Error::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "request body of {len} bytes exceeds this route's limit of {} bytes",
                            route.body_limit
                        ),
                    )
                    .into_response();
                }
                let handled = AssertUnwindSafe(inner.oneshot(req)).catch_unwind();
                match tokio::time::timeout(route.timeout, handled).await {
                    Ok(Ok(Ok(response))) => response,
                    Ok(Ok(Err(never))) => match never {},
                    Ok(Err(panic)) => {
                        let message = panic_message(panic.as_ref());
                        tracing::error!(panic = message, "request handler panicked");
                        Error::internal(
                            "the request handler panicked; the service is still running",
                        )
                        .into_response()
                    }
                    Err(_) => {
                        tracing::warn!(timeout = ?route.timeout, "request timed out");
                        Error::unavailable(format!(
                            "the request did not complete within {}",
                            humantime::format_duration(route.timeout)
                        ))
                        .into_response()
                    }
                }
            }
            .instrument(span)
            .await;
            response.headers_mut().insert(X_CORRELATION_ID, id);
            Ok(response)
        })
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
