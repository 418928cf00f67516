//! A request's span. With trace export on, a sampled request's server span
//! is built on the OpenTelemetry SDK directly: going through a `tracing`
//! span and `tracing-opentelemetry` cost a span-registry slot, per-layer
//! filter bookkeeping on every enter, exit and record, and a field visitor
//! per attribute — several times the span itself (docs/benchmarks.md).
//! Its context is made the current OpenTelemetry context while the handler
//! runs, so user spans become its children, log lines carry its trace and
//! span ids, and outgoing calls propagate it. Without export, the request
//! span is a DEBUG `tracing` span, for debug logging.

use http::StatusCode;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{ContextGuard, KeyValue};

use crate::observe::trace;

/// A request's span, cloned into the access log line that may outlive the
/// handler; the span ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) enum RequestSpan {
    /// Export off (or a route without tracing): a `tracing` span, often
    /// disabled.
    Tracing(tracing::Span),
    /// Export on and sampled: the SDK span, in its OpenTelemetry context
    /// (which also holds the incoming baggage).
    Otel(opentelemetry::Context),
}

/// What [`RequestSpan::enter`] returns: while it lives, log lines and new
/// spans belong to the request's trace.
pub(crate) enum Entered<'a> {
    Tracing(#[allow(dead_code)] Option<tracing::span::Entered<'a>>),
    Otel(#[allow(dead_code)] ContextGuard),
}

/// The attributes of a server span, as the OpenTelemetry HTTP semantic
/// conventions name them.
pub(crate) struct ServerSpan<'a> {
    pub name: &'static str,
    pub method: &'static str,
    pub route: &'static str,
    pub path: &'a str,
    pub correlation_id: &'a str,
}

impl RequestSpan {
    /// No span.
    pub(crate) fn none() -> Self {
        RequestSpan::Tracing(tracing::Span::none())
    }

    /// The SDK server span of a sampled request, child of `parent` (the
    /// incoming trace context; empty for a new trace). `None` when no
    /// tracer is installed.
    pub(crate) fn sampled(parent: opentelemetry::Context, span: ServerSpan<'_>) -> Option<Self> {
        let tracer = trace::tracer()?;
        let attributes = vec![
            KeyValue::new("http.request.method", span.method),
            KeyValue::new("http.route", span.route),
            KeyValue::new("url.path", span.path.to_owned()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("correlation_id", span.correlation_id.to_owned()),
            // The sampler's cue: patron decided this request is sampled.
            KeyValue::new("patron.sampled", true),
        ];
        let built = tracer
            .span_builder(span.name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Some(RequestSpan::Otel(parent.with_span(built)))
    }

    /// Makes the span current on this thread until the guard drops.
    pub(crate) fn enter(&self) -> Entered<'_> {
        match self {
            RequestSpan::Tracing(span) => {
                Entered::Tracing((!span.is_disabled()).then(|| span.enter()))
            }
            RequestSpan::Otel(cx) => Entered::Otel(cx.clone().attach()),
        }
    }

    /// Records the response status; a 5xx marks the span as an error.
    pub(crate) fn record_status(&self, status: StatusCode) {
        let code = i64::from(status.as_u16());
        match self {
            RequestSpan::Tracing(span) if !span.is_disabled() => {
                span.record("http.response.status_code", code);
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            RequestSpan::Tracing(_) => {}
            RequestSpan::Otel(cx) => {
                let span = cx.span();
                span.set_attribute(KeyValue::new("http.response.status_code", code));
                if status.is_server_error() {
                    span.set_status(Status::error(""));
                }
            }
        }
    }
}
