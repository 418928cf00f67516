//! One call through the channel: rate limit and breaker, the retry of
//! idempotent methods, each attempt's span and `rpc_client_duration_seconds`,
//! and the response body watched to its final status.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus::HistogramVec;
use tonic::Code;
use tonic::body::Body;
use tower::ServiceExt;
use tracing::Instrument;

use super::replay::once;
use super::{BoxError, Channel, Shared, Target};
use crate::observe::metrics;
use crate::observe::rpc::{code_in, code_name, is_server_error};
use crate::reliability::retry::Next;
use crate::reliability::{CircuitPermit, Retry};

fn histogram() -> Option<&'static HistogramVec> {
    static HISTOGRAM: OnceLock<Option<HistogramVec>> = OnceLock::new();
    metrics::global().duration_histogram(
        &HISTOGRAM,
        "rpc_client_duration_seconds",
        "Duration of gRPC client calls, by service, method and status code; retries counted one by one.",
        &["service", "method", "code"],
    )
}

/// Whether the circuit breaker counts this code as a failure.
fn breaker_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}

/// One attempt's telemetry, completed when its final code is known.
struct Attempt {
    service: String,
    method: String,
    span: tracing::Span,
    started: Instant,
}

impl Attempt {
    fn finish(&self, code: Code) {
        if let Some(h) = histogram() {
            h.with_label_values(&[self.service.as_str(), self.method.as_str(), code_name(code)])
                .observe(self.started.elapsed().as_secs_f64());
        }
        if !self.span.is_disabled() {
            self.span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                self.span.record("otel.status_code", "ERROR");
            }
        }
    }
}

impl tower::Service<http::Request<Body>> for Channel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call readies its own clone of tonic's channel.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (inner, shared) = (self.inner.clone(), Arc::clone(&self.shared));
        Box::pin(async move {
            if let Some(limit) = &shared.limit {
                limit.until_ready().await;
            }
            let permit = match &shared.breaker {
                Some(b) => Some(b.try_acquire().map_err(|open| {
                    Box::new(tonic::Status::unavailable(open.to_string())) as BoxError
                })?),
                None => None,
            };
            let retry = shared
                .retry
                .as_ref()
                .filter(|(_, methods)| methods.contains(req.uri().path()))
                .map(|(retry, _)| retry.clone());
            let result = match retry {
                None => once(&inner, &shared, req).await,
                Some(retry) => retried(&inner, &shared, &retry, req).await,
            };
            settle(permit, &result);
            result
        })
    }
}

/// Tells the breaker how the call went, by its code so far.
fn settle(permit: Option<CircuitPermit>, result: &Result<http::Response<Body>, BoxError>) {
    let Some(permit) = permit else { return };
    let failed = match result {
        Err(_) => true,
        Ok(response) => code_in(response.headers()).is_some_and(breaker_failure),
    };
    if failed {
        permit.failure();
    } else {
        permit.success();
    }
}

/// Sends an idempotent call with its request buffered, again while it does
/// not reach the server or comes back `UNAVAILABLE`.
async fn retried(
    inner: &Target,
    shared: &Arc<Shared>,
    retry: &Retry,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = body.collect().await?.to_bytes();
    retry
        .run_with(
            |_| {
                let req = http::Request::from_parts(
                    parts.clone(),
                    Body::new(http_body_util::Full::new(bytes.clone())),
                );
                once(inner, shared, req)
            },
            |outcome| match outcome {
                Err(_) => Next::Retry(None),
                Ok(response) if code_in(response.headers()) == Some(Code::Unavailable) => {
                    Next::Retry(None)
                }
                Ok(_) => Next::Done,
            },
        )
        .await
}

/// One attempt, to an instance not in `tried` (which gets this one when
/// it turned the call away unseen): its span and metrics, the response
/// body watched for the final code.
pub(super) async fn attempt(
    inner: &Target,
    shared: &Shared,
    mut req: http::Request<Body>,
    tried: &mut Vec<String>,
) -> Result<http::Response<Body>, BoxError> {
    let path = req.uri().path();
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("unknown", "unknown"));
    let span = tracing::debug_span!(
        target: "patron::grpc",
        "gRPC client call",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        server.address = %shared.authority,
    );
    let attempt = Attempt {
        service: service.to_string(),
        method: method.to_string(),
        span: span.clone(),
        started: Instant::now(),
    };
    // Inside the span, so the callee's parent is the client span; metadata
    // the caller set wins.
    let mut propagated = http::HeaderMap::new();
    span.in_scope(|| crate::observe::trace::inject(&mut propagated));
    for (name, value) in propagated {
        if let Some(name) = name
            && !req.headers().contains_key(&name)
        {
            req.headers_mut().insert(name, value);
        }
    }
    let (channel, picked) = match inner.pick(tried).await {
        Ok(picked) => picked,
        Err(e) => {
            attempt.finish(Code::Unavailable);
            return Err(e);
        }
    };
    let result = channel.oneshot(req).instrument(span).await;
    Target::report(picked, result.as_ref().err(), tried);
    match result {
        Err(e) => {
            attempt.finish(Code::Unavailable);
            Err(Box::new(e))
        }
        Ok(response) => {
            if let Some(code) = code_in(response.headers()) {
                attempt.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(WatchedBody {
                    inner: body,
                    attempt: Some(attempt),
                })
            }))
        }
    }
}

/// A response body that completes its attempt's telemetry at its trailers
/// (or with `CANCELLED` when dropped before them).
struct WatchedBody {
    inner: Body,
    attempt: Option<Attempt>,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| code_in(t).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Unavailable),
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(attempt) = self.attempt.take()
        {
            attempt.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if let Some(attempt) = self.attempt.take() {
            attempt.finish(Code::Cancelled);
        }
    }
}
