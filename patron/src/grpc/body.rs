//! The response body of one gRPC call, watched to its end: the final status
//! comes from its trailers (or from the headers of a trailers-only
//! response), and only then are the span, the histogram and the log line
//! completed. Streams are polled inside the call's context, end with
//! `DEADLINE_EXCEEDED` when the client's deadline passes, with `INTERNAL`
//! when the stream panics, and with `UNAVAILABLE` when the server stops.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use prometheus::HistogramVec;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Code;

use super::status::{self, code_name, is_server_error};
use crate::context::correlation;
use crate::context::{REQUEST, RequestContext};
use crate::panic::panic_message;

/// What completing a call needs.
pub(crate) struct CallEnd {
    pub service: &'static str,
    /// Shared with the call's own log lines, so one allocation serves both.
    pub method: std::sync::Arc<str>,
    pub started: Instant,
    pub metrics: Option<HistogramVec>,
    pub span: tracing::Span,
    pub correlation_id: HeaderValue,
}

impl CallEnd {
    /// Records the call's final `code`: span attributes, the histogram, and
    /// a DEBUG line — ERROR when the server failed (`UNKNOWN`, `INTERNAL`,
    /// `DATA_LOSS`), WARN when it ran out of time or was stopping.
    pub(crate) fn finish(&self, code: Code) {
        let name = code_name(code);
        // A method no service has is not a label value: clients choose it.
        let method = if code == Code::Unimplemented {
            "unknown"
        } else {
            &self.method
        };
        if let Some(m) = &self.metrics {
            m.with_label_values(&[self.service, method, name])
                .observe(self.started.elapsed().as_secs_f64());
        }
        if !self.span.is_disabled() {
            self.span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                self.span.record("otel.status_code", "ERROR");
            }
        }
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let id = correlation::text(&self.correlation_id);
        let _entered = (!self.span.is_disabled()).then(|| self.span.enter());
        if matches!(code, Code::Unknown | Code::Internal | Code::DataLoss) {
            tracing::error!(
                rpc.service = self.service,
                rpc.method = method,
                rpc.grpc.status_code = name,
                latency_ms,
                correlation_id = id,
                "gRPC call failed"
            );
        } else if matches!(code, Code::DeadlineExceeded | Code::Unavailable) {
            tracing::warn!(
                rpc.service = self.service,
                rpc.method = method,
                rpc.grpc.status_code = name,
                latency_ms,
                correlation_id = id,
                "gRPC call failed"
            );
        } else {
            tracing::debug!(
                rpc.service = self.service,
                rpc.method = method,
                rpc.grpc.status_code = name,
                latency_ms,
                correlation_id = id,
                "gRPC call served"
            );
        }
    }
}

/// A call's response body; see the module doc.
pub(crate) struct CallBody {
    inner: Body,
    end: CallEnd,
    context: RequestContext,
    /// The client's deadline, for streamed responses.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: Option<CancellationToken>,
    /// Armed the first time the stream waits, so unary calls never pay for it.
    cut_wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Known from the headers of a trailers-only response.
    code: Option<Code>,
    done: bool,
}

impl CallBody {
    pub(crate) fn new(
        inner: Body,
        end: CallEnd,
        context: RequestContext,
        deadline: Option<Instant>,
        cut: CancellationToken,
        headers_code: Option<Code>,
    ) -> Self {
        CallBody {
            inner,
            end,
            context,
            deadline: deadline
                .map(|at| Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)))),
            cut: Some(cut),
            cut_wait: None,
            code: headers_code,
            done: false,
        }
    }

    fn complete(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.end.finish(code);
        }
    }

    /// Ends the stream with `code`: its trailers, recorded.
    fn end_with(
        &mut self,
        code: Code,
        message: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.complete(code);
        Poll::Ready(Some(Ok(Frame::trailers(status::trailers(code, message)))))
    }

    /// Whether the server stopped while the stream waits.
    fn cut(&mut self, cx: &mut Context<'_>) -> bool {
        if self.cut_wait.is_none() {
            let Some(token) = self.cut.take() else {
                return false;
            };
            self.cut_wait = Some(Box::pin(token.cancelled_owned()));
        }
        self.cut_wait
            .as_mut()
            .is_some_and(|w| w.as_mut().poll(cx).is_ready())
    }
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let context = this.context.clone();
        let inner = &mut this.inner;
        let span = &this.end.span;
        let polled = REQUEST.sync_scope(context, || {
            let _entered = (!span.is_disabled()).then(|| span.enter());
            std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll_frame(cx)))
        });
        match polled {
            Err(panic) => {
                tracing::error!(
                    panic = panic_message(panic.as_ref()),
                    rpc.service = this.end.service,
                    rpc.method = %this.end.method,
                    correlation_id = correlation::text(&this.end.correlation_id),
                    "gRPC stream panicked"
                );
                this.end_with(
                    Code::Internal,
                    "the call's handler panicked; the service is still running",
                )
            }
            Ok(Poll::Ready(Some(Ok(frame)))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status::code_in(trailers).unwrap_or(Code::Unknown);
                    this.complete(code);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(Poll::Ready(Some(Err(e)))) => {
                this.complete(Code::Internal);
                Poll::Ready(Some(Err(e)))
            }
            Ok(Poll::Ready(None)) => {
                let code = this.code.unwrap_or(Code::Ok);
                this.complete(code);
                Poll::Ready(None)
            }
            Ok(Poll::Pending) => {
                if this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready())
                {
                    tracing::info!(
                        rpc.service = this.end.service,
                        rpc.method = %this.end.method,
                        "gRPC stream passed the client's deadline; cancelled"
                    );
                    return this.end_with(Code::DeadlineExceeded, "the call's deadline passed");
                }
                if this.cut(cx) {
                    return this.end_with(Code::Unavailable, "the server is shutting down");
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        // Dropped before its end: the client cancelled or went away.
        if !self.done {
            let code = self.code.unwrap_or(Code::Cancelled);
            self.complete(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn end() -> CallEnd {
        CallEnd {
            service: "t.S",
            method: "M".into(),
            started: Instant::now(),
            metrics: None,
            span: tracing::Span::none(),
            correlation_id: HeaderValue::from_static("c"),
        }
    }

    fn context() -> RequestContext {
        RequestContext::Known(Box::new(crate::context::KnownContext {
            correlation_id: HeaderValue::from_static("c"),
            traceparent: None,
            baggage: None,
        }))
    }

    #[tokio::test]
    async fn a_waiting_stream_ends_with_unavailable_when_the_server_stops() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, axum::Error>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let cut = CancellationToken::new();
        let mut body = CallBody::new(Body::new(stream), end(), context(), None, cut.clone(), None);
        let stop = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            cut.cancel();
        });
        let frame = body.frame().await.unwrap().unwrap();
        let trailers = frame.into_trailers().unwrap();
        assert_eq!(status::code_in(&trailers), Some(Code::Unavailable));
        assert!(body.frame().await.is_none());
        stop.await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_past_the_client_deadline_ends_with_deadline_exceeded() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, axum::Error>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let at = Instant::now() + std::time::Duration::from_millis(20);
        let mut body = CallBody::new(
            Body::new(stream),
            end(),
            context(),
            Some(at),
            CancellationToken::new(),
            None,
        );
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(status::code_in(&trailers), Some(Code::DeadlineExceeded));
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
