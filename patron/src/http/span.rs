//! A request's span. With trace export on, a sampled request's server span
//! is patron's own record (`observe::otlp::record`), not a `tracing` span
//! nor an SDK span: through `tracing-opentelemetry` it cost a span-registry
//! slot, per-layer filter bookkeeping on every enter, exit and record, and
//! a field visitor per attribute, and as an SDK span a builder, a sampler
//! call and an attribute list — several times the span itself
//! (docs/benchmarks.md). Its context is made the current OpenTelemetry
//! context while the handler runs, so user spans become its children, log
//! lines carry its trace and span ids, and outgoing calls propagate it.
//! Without export, the request span is a DEBUG `tracing` span, for debug
//! logging.

use http::StatusCode;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{ContextGuard, KeyValue};

pub(crate) use crate::observe::otlp::ServerSpanStart as ServerSpan;
use crate::observe::otlp::{self, STATUS_CODE};

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

impl RequestSpan {
    /// No span.
    pub(crate) fn none() -> Self {
        RequestSpan::Tracing(tracing::Span::none())
    }

    /// The server span of a sampled request, child of `parent` (the
    /// incoming trace context; empty for a new trace). `None` when trace
    /// export is not running.
    pub(crate) fn sampled(parent: &opentelemetry::Context, span: ServerSpan<'_>) -> Option<Self> {
        otlp::start_server_span(parent, span).map(RequestSpan::Otel)
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
                span.set_attribute(KeyValue::new(STATUS_CODE, code));
                if status.is_server_error() {
                    span.set_status(Status::error(""));
                }
            }
        }
    }
}
