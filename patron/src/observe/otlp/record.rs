//! The server span of a sampled HTTP request, recorded by patron itself
//! rather than through the SDK's tracer.
//!
//! A request span has a fixed shape (name, method, route, path, scheme,
//! correlation id, status), so building it as an SDK span paid for what it
//! does not need: a span builder, a sampler call, an attribute `Vec` of
//! `KeyValue`s (two of them owned strings) that grows when the status is
//! recorded, the SDK's span data moved through its batch processor, and a
//! generic attribute encoder. [`ServerSpan`] keeps the fixed fields as
//! they are and implements the OpenTelemetry [`Span`] trait, so it sits in
//! the request's [`Context`] like any span: user spans become its children,
//! log lines carry its ids, outgoing calls propagate it, and anything a
//! user sets on it (attributes, events, links, status, name) is kept and
//! exported. When it ends it goes to the [`RecordQueue`], which batches it
//! to the same OTLP exporter as the SDK's spans.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::SystemTime;

use http::HeaderValue;
use opentelemetry::trace::{
    Event, Link, Span, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{Context, KeyValue, Value};

use super::queue::RecordQueue;

/// The attribute the request guard records the response status in.
pub(crate) const STATUS_CODE: &str = "http.response.status_code";

/// Attributes, events and links a span keeps beyond its own fields: the
/// SDK's default span limits.
const MAX_EXTRA: usize = 128;

/// The queue of the running exporter, set when trace export starts.
static QUEUE: OnceLock<RecordQueue> = OnceLock::new();

/// Makes `queue` the one finished server spans go to. The first exporter
/// of a process wins, as the SDK tracer does (`trace::tracer`).
pub(crate) fn install(queue: RecordQueue) -> Result<(), RecordQueue> {
    QUEUE.set(queue)
}

/// The installed queue, for shutting it down.
pub(crate) fn installed() -> Option<&'static RecordQueue> {
    QUEUE.get()
}

/// What a request's server span says when it starts, as the OpenTelemetry
/// HTTP semantic conventions name it.
pub(crate) struct ServerSpanStart<'a> {
    /// The span name (`GET /orders/{id}`).
    pub name: &'static str,
    /// `http.request.method`, `http.route` and `url.scheme`, encoded once
    /// per route by [`route_attributes`](super::route_attributes).
    pub attributes: &'static [u8],
    /// `http.route`.
    pub route: &'static str,
    /// `url.path`.
    pub path: &'a str,
    /// The request's correlation id.
    pub correlation_id: HeaderValue,
}

/// Starts a sampled request's server span as a child of `parent` (the
/// incoming trace context, empty for a new trace) and returns `parent`
/// with the span in it. `None` when trace export is not running.
pub(crate) fn start(parent: &Context, span: ServerSpanStart<'_>) -> Option<Context> {
    QUEUE.get()?;
    let (trace_id, parent_span_id, parent_is_remote, trace_state) = {
        let p = parent.span();
        let p = p.span_context();
        if p.is_valid() {
            (
                p.trace_id(),
                p.span_id(),
                p.is_remote(),
                p.trace_state().clone(),
            )
        } else {
            let id = TraceId::from_bytes(fastrand::u128(1..).to_be_bytes());
            (id, SpanId::INVALID, false, TraceState::NONE)
        }
    };
    let span_id = SpanId::from_bytes(fastrand::u64(1..).to_be_bytes());
    let span_context = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, trace_state);
    // A route without parameters is its own path: nothing to copy.
    let path = (span.path != span.route).then(|| Box::<str>::from(span.path));
    let fields = Fields {
        parent_span_id,
        parent_is_remote,
        name: Cow::Borrowed(span.name),
        attributes: span.attributes,
        route: span.route,
        path,
        correlation_id: span.correlation_id,
        start: SystemTime::now(),
        status_code: None,
        status: Status::Unset,
        extra: None,
    };
    Some(parent.with_span(ServerSpan {
        span_context,
        fields: Some(fields),
    }))
}

/// A finished server span, on its way to the exporter.
#[derive(Debug)]
pub(crate) struct ServerRecord {
    pub(super) span_context: SpanContext,
    pub(super) fields: Fields,
    pub(super) end: SystemTime,
}

/// A server span's fields besides its context.
#[derive(Debug)]
pub(crate) struct Fields {
    pub(super) parent_span_id: SpanId,
    pub(super) parent_is_remote: bool,
    pub(super) name: Cow<'static, str>,
    /// The route's constant attributes, encoded.
    pub(super) attributes: &'static [u8],
    pub(super) route: &'static str,
    /// `None` when the path is the route.
    pub(super) path: Option<Box<str>>,
    pub(super) correlation_id: HeaderValue,
    pub(super) start: SystemTime,
    pub(super) status_code: Option<i64>,
    pub(super) status: Status,
    /// What users added; most spans have none, and pay for no allocation.
    pub(super) extra: Option<Box<Extra>>,
}

impl Fields {
    /// `url.path`.
    pub(super) fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(self.route)
    }
}

/// Attributes, events and links set on a server span by user code, with
/// how many were dropped over the limits.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(super) attributes: Vec<KeyValue>,
    pub(super) dropped_attributes: u32,
    pub(super) events: Vec<Event>,
    pub(super) dropped_events: u32,
    pub(super) links: Vec<Link>,
    pub(super) dropped_links: u32,
}

/// Pushes `item` unless `list` is full, counting it as dropped then.
fn keep<T>(list: &mut Vec<T>, dropped: &mut u32, item: T) {
    if list.len() < MAX_EXTRA {
        list.push(item);
    } else {
        *dropped = dropped.saturating_add(1);
    }
}

/// A request's server span while the request runs: `fields` is taken when
/// it ends, by `end` or when the last context holding it is dropped.
#[derive(Debug)]
struct ServerSpan {
    span_context: SpanContext,
    fields: Option<Fields>,
}

impl ServerSpan {
    fn extra(&mut self) -> Option<&mut Extra> {
        self.fields
            .as_mut()
            .map(|f| &mut **f.extra.get_or_insert_with(Box::default))
    }
}

impl Span for ServerSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        if let Some(extra) = self.extra() {
            let event = Event::new(name, timestamp, attributes, 0);
            keep(&mut extra.events, &mut extra.dropped_events, event);
        }
    }

    fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    fn is_recording(&self) -> bool {
        self.fields.is_some()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        let Some(fields) = self.fields.as_mut() else {
            return;
        };
        if let (STATUS_CODE, Value::I64(code)) = (attribute.key.as_str(), &attribute.value) {
            fields.status_code = Some(*code);
            return;
        }
        let extra = fields.extra.get_or_insert_with(Box::default);
        keep(
            &mut extra.attributes,
            &mut extra.dropped_attributes,
            attribute,
        );
    }

    fn set_status(&mut self, status: Status) {
        // As the SDK: Ok is final, and Unset never replaces anything.
        if let Some(fields) = self.fields.as_mut()
            && status > fields.status
        {
            fields.status = status;
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Some(fields) = self.fields.as_mut() {
            fields.name = new_name.into();
        }
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        if span_context.is_valid()
            && let Some(extra) = self.extra()
        {
            let link = Link::new(span_context, attributes, 0);
            keep(&mut extra.links, &mut extra.dropped_links, link);
        }
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        let Some(fields) = self.fields.take() else {
            return;
        };
        if let Some(queue) = QUEUE.get() {
            queue.push(ServerRecord {
                span_context: self.span_context.clone(),
                fields,
                end: timestamp,
            });
        }
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        if self.fields.is_some() {
            self.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span built by hand: `start` needs an installed queue.
    fn span(path: &str) -> ServerSpan {
        ServerSpan {
            span_context: SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([2; 8]),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            fields: Some(Fields {
                parent_span_id: SpanId::INVALID,
                parent_is_remote: false,
                name: Cow::Borrowed("GET /orders/{id}"),
                attributes: &[],
                route: "/orders/{id}",
                path: (path != "/orders/{id}").then(|| path.into()),
                correlation_id: HeaderValue::from_static("c-1"),
                start: SystemTime::now(),
                status_code: None,
                status: Status::Unset,
                extra: None,
            }),
        }
    }

    #[test]
    fn status_code_is_a_field_and_other_attributes_are_extra() {
        let mut s = span("/orders/7");
        s.set_attribute(KeyValue::new(STATUS_CODE, 503));
        s.set_attribute(KeyValue::new("tenant", "acme"));
        let fields = s.fields.as_ref().expect("recording");
        assert_eq!(fields.status_code, Some(503));
        assert_eq!(fields.path(), "/orders/7");
        let extra = fields.extra.as_ref().expect("one user attribute");
        assert_eq!(extra.attributes, vec![KeyValue::new("tenant", "acme")]);
    }

    #[test]
    fn status_follows_the_sdk_rules() {
        let mut s = span("/orders/{id}");
        s.set_status(Status::error("boom"));
        s.set_status(Status::Unset);
        assert_eq!(
            s.fields.as_ref().map(|f| f.status.clone()),
            Some(Status::error("boom"))
        );
        s.set_status(Status::Ok);
        s.set_status(Status::error("later"));
        assert_eq!(
            s.fields.as_ref().map(|f| f.status.clone()),
            Some(Status::Ok)
        );
    }

    #[test]
    fn limits_count_what_they_drop() {
        let mut s = span("/orders/{id}");
        for i in 0..(MAX_EXTRA + 3) {
            s.set_attribute(KeyValue::new("n", i as i64));
            s.add_event("e", Vec::new());
        }
        // An invalid context is no link, as in the SDK.
        s.add_link(SpanContext::empty_context(), Vec::new());
        let extra = s
            .fields
            .as_ref()
            .and_then(|f| f.extra.as_ref())
            .expect("extra");
        assert_eq!(extra.attributes.len(), MAX_EXTRA);
        assert_eq!(extra.dropped_attributes, 3);
        assert_eq!(extra.events.len(), MAX_EXTRA);
        assert_eq!(extra.dropped_events, 3);
        assert!(extra.links.is_empty());
        assert_eq!(s.fields.as_ref().map(Fields::path), Some("/orders/{id}"));
    }

    #[test]
    fn an_ended_span_records_nothing_more() {
        let mut s = span("/orders/{id}");
        s.end();
        assert!(!s.is_recording());
        s.set_attribute(KeyValue::new("late", true));
        s.update_name("renamed");
        assert!(s.fields.is_none());
    }
}
