//! One gRPC call, as the server runs it: the correlation id (from
//! `x-correlation-id` metadata, or generated) in a task-local context for
//! every log line and echoed in the response metadata; a server span with
//! OpenTelemetry's RPC attributes continuing the caller's `traceparent`;
//! the service's authenticator; the client's `grpc-timeout` deadline and
//! the handler timeout; a panic turned into `INTERNAL`; and the
//! `rpc_server_duration_seconds` histogram. The response body is watched to
//! the end ([`CallBody`]) for the final status.

use std::collections::HashMap;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use prometheus::HistogramVec;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::Routes;
use tower::ServiceExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::body::{CallBody, CallEnd};
use super::registry::CallAuth;
use super::status;
use crate::context::correlation::{self, X_CORRELATION_ID};
use crate::context::{KnownContext, REQUEST, RequestContext};
use crate::http::head::Head;
use crate::http::server::{BodyWatch, Handler};
use crate::observe::trace;
use crate::panic::panic_message;

/// What the server knows about one registered service.
pub(crate) struct ServiceRuntime {
    pub auth: Option<CallAuth>,
    pub timeout: Duration,
}

/// The gRPC server's request handler.
pub(crate) struct GrpcApp {
    pub routes: Routes,
    pub services: HashMap<&'static str, ServiceRuntime>,
    pub metrics: Option<HistogramVec>,
    pub default_timeout: Duration,
    /// Cancelled when the listener closes: open streams then end with
    /// `UNAVAILABLE`.
    pub cut: CancellationToken,
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

impl Handler for GrpcApp {
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;
    const HTTP2_ONLY: bool = true;

    fn handle(
        &self,
        req: http::Request<Body>,
        _: Option<std::sync::Arc<BodyWatch>>,
    ) -> Self::Future {
        let started = Instant::now();
        let known = split(req.uri().path())
            .and_then(|(s, m)| self.services.get_key_value(s).map(|(s, rt)| (*s, m, rt)));
        let (service, method, runtime) = match known {
            Some((s, m, rt)) => (s, std::sync::Arc::<str>::from(m), Some(rt)),
            None => ("unknown", std::sync::Arc::<str>::from("unknown"), None),
        };
        let head = Head::read(req.headers());
        let id = correlation::or_generate(head.correlation_id);
        let sampled = !trace::enabled()
            || trace::sample_parent(head.traceparent.as_ref().map(HeaderValue::as_bytes));
        let span = if sampled {
            // A DEBUG span, as for routes: free at the default log level,
            // taken by the trace exporter whatever the level.
            tracing::debug_span!(
                target: "patron::grpc",
                "gRPC call",
                otel.name = format!("{service}/{method}"),
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
                correlation_id = correlation::text(&id),
            )
        } else {
            tracing::Span::none()
        };
        if trace::enabled() && !span.is_disabled() {
            let _ = span.set_parent(trace::extract(req.headers()));
        }
        let context = RequestContext::Known(Box::new(KnownContext {
            correlation_id: id.clone(),
            traceparent: head.traceparent,
            baggage: head.baggage,
        }));
        let deadline = match status::timeout(req.headers()) {
            Ok(d) => d,
            Err(bad) => {
                tracing::debug!(grpc_timeout = %bad, "ignoring a malformed grpc-timeout");
                None
            }
        };
        let limit = runtime.map_or(self.default_timeout, |rt| rt.timeout);
        let budget = deadline.map_or(limit, |d| d.min(limit));
        let auth = runtime.and_then(|rt| rt.auth.clone());
        let routes = self.routes.clone();
        let end = CallEnd {
            service,
            method,
            started,
            metrics: self.metrics.clone(),
            span: span.clone(),
            correlation_id: id.clone(),
        };
        let cut = self.cut.clone();
        let call_context = context.clone();
        let call = async move {
            // Dropped before it answers, the call was cancelled by the client.
            let method = std::sync::Arc::clone(&end.method);
            let mut unanswered = Unanswered(Some(end));
            let response = respond(routes, req, auth, budget, deadline, (service, &method)).await;
            let Some(end) = unanswered.0.take() else {
                return Ok(response);
            };
            let headers_code = status::code_in(response.headers());
            let mut response = response.map(|body| {
                Body::new(CallBody::new(
                    body,
                    end,
                    call_context,
                    deadline.map(|d| started + d),
                    cut,
                    headers_code,
                ))
            });
            response.headers_mut().insert(X_CORRELATION_ID, id);
            Ok(response)
        };
        Box::pin(REQUEST.scope(context, call.instrument(span)))
    }
}

/// A call that has not answered yet: recorded as `CANCELLED` if dropped so.
struct Unanswered(Option<CallEnd>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(end) = self.0.take() {
            end.finish(tonic::Code::Cancelled);
        }
    }
}

/// The response of one call: authenticated, bounded by `budget`, a panic
/// caught.
async fn respond(
    routes: Routes,
    req: http::Request<Body>,
    auth: Option<CallAuth>,
    budget: Duration,
    deadline: Option<Duration>,
    (service, method): (&'static str, &str),
) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    if let Some(auth) = auth {
        match auth(&parts).await {
            Ok(true) => {}
            Ok(false) => {
                return status::response(Code::Unauthenticated, "missing or invalid credentials");
            }
            Err(e) => {
                tracing::error!(error = %e, rpc.service = service, rpc.method = method, "authenticating a gRPC call failed");
                return status::response(Code::Internal, "authentication failed");
            }
        }
    }
    let call =
        AssertUnwindSafe(routes.oneshot(http::Request::from_parts(parts, body))).catch_unwind();
    match tokio::time::timeout(budget, call).await {
        Ok(Ok(Ok(response))) => response.map(Body::new),
        Ok(Ok(Err(never))) => match never {},
        Ok(Err(panic)) => {
            tracing::error!(
                panic = panic_message(panic.as_ref()),
                rpc.service = service,
                rpc.method = method,
                "gRPC handler panicked"
            );
            status::response(
                Code::Internal,
                "the call's handler panicked; the service is still running",
            )
        }
        Err(_) if deadline.is_some_and(|d| d <= budget) => {
            tracing::info!(deadline = ?budget, rpc.service = service, rpc.method = method, "gRPC call passed the client's deadline; cancelled");
            status::response(Code::DeadlineExceeded, "the call's deadline passed")
        }
        Err(_) => {
            tracing::warn!(timeout = ?budget, rpc.service = service, rpc.method = method, "gRPC call timed out");
            status::response(
                Code::DeadlineExceeded,
                &format!(
                    "the call did not complete within the server's timeout of {}",
                    humantime::format_duration(budget)
                ),
            )
        }
    }
}

/// The correlation id a response echoes, for tests.
#[cfg(test)]
fn echoed(response: &http::Response<Body>) -> Option<&http::HeaderValue> {
    response.headers().get(X_CORRELATION_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split("/greeter.v1.Greeter/SayHello"),
            Some(("greeter.v1.Greeter", "SayHello"))
        );
        assert_eq!(split("/greeter.v1.Greeter/"), None);
        assert_eq!(split("/a/b/c"), None);
        assert_eq!(split("nopath"), None);
    }

    #[tokio::test]
    async fn an_unknown_service_is_unimplemented_and_echoes_the_correlation_id() {
        let app = GrpcApp {
            routes: Routes::default(),
            services: HashMap::new(),
            metrics: None,
            default_timeout: Duration::from_secs(1),
            cut: CancellationToken::new(),
        };
        let req = http::Request::builder()
            .uri("/nope.Service/Method")
            .header("x-correlation-id", "abc-1")
            .body(Body::empty())
            .unwrap();
        let response = app.handle(req, None).await.unwrap();
        assert_eq!(echoed(&response).unwrap(), "abc-1");
        assert_eq!(
            status::code_in(response.headers()),
            Some(Code::Unimplemented)
        );
    }
}
