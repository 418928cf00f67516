//! The OTLP `ExportTraceServiceRequest` written as protobuf straight from
//! the SDK's [`SpanData`], without building the intermediate
//! `opentelemetry-proto` structs (a `String` per attribute key and value, a
//! `Vec` per id) that cost three times the encoding itself. Fields are
//! written in tag order and proto3 defaults are left out, as prost does, so
//! the bytes equal those of the reference conversion (tested).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use super::record::{STATUS_CODE, ServerRecord};
use crate::observe::protobuf::{
    FIXED64, LEN, VARINT, bytes, fixed32, fixed64, message, string, tag, uint, varint,
};

/// `SpanFlags.CONTEXT_HAS_IS_REMOTE_MASK` and `CONTEXT_IS_REMOTE_MASK`.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The resource part of every request, encoded once: its attributes do not
/// change for the life of the exporter.
#[derive(Debug, Default, Clone)]
pub(crate) struct EncodedResource {
    /// The `Resource` message's fields.
    resource: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub(crate) fn new(resource: &Resource) -> Self {
        let mut buf = Vec::new();
        for (key, value) in resource.iter() {
            key_value(&mut buf, 1, key.as_str(), value);
        }
        EncodedResource {
            resource: buf,
            schema_url: resource.schema_url().unwrap_or_default().to_string(),
        }
    }
}

/// Appends the `ExportTraceServiceRequest` holding `spans` to `buf`: one
/// `ResourceSpans`, one `ScopeSpans` per instrumentation scope in order of
/// first appearance.
pub(crate) fn export_request(buf: &mut Vec<u8>, resource: &EncodedResource, spans: &[SpanData]) {
    message(buf, 1, |buf| {
        message(buf, 1, |buf| buf.extend_from_slice(&resource.resource));
        let mut scopes: Vec<&InstrumentationScope> = Vec::new();
        for span in spans {
            if !scopes.contains(&&span.instrumentation_scope) {
                scopes.push(&span.instrumentation_scope);
            }
        }
        for scope in scopes {
            message(buf, 2, |buf| {
                message(buf, 1, |buf| instrumentation_scope(buf, scope));
                for span in spans.iter().filter(|s| s.instrumentation_scope == *scope) {
                    message(buf, 2, |buf| encode_span(buf, span));
                }
                string(buf, 3, scope.schema_url().unwrap_or_default());
            });
        }
        string(buf, 3, &resource.schema_url);
    });
}

fn instrumentation_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(buf, 1, scope.name());
    string(buf, 2, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        attribute(buf, 3, kv);
    }
}

fn encode_span(buf: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    span_head(
        buf,
        cx,
        span.parent_span_id,
        &span.name,
        &span.span_kind,
        [span.start_time, span.end_time],
    );
    for kv in &span.attributes {
        attribute(buf, 9, kv);
    }
    uint(buf, 10, span.dropped_attributes_count.into());
    for e in span.events.iter() {
        message(buf, 11, |buf| event(buf, e));
    }
    uint(buf, 12, span.events.dropped_count.into());
    for l in span.links.iter() {
        message(buf, 13, |buf| link(buf, l));
    }
    uint(buf, 14, span.links.dropped_count.into());
    message(buf, 15, |buf| status(buf, &span.status));
    fixed32(buf, 16, flags(cx, span.parent_span_is_remote));
}

/// An `ExportTraceServiceRequest` of patron's own HTTP server spans: one
/// `ResourceSpans` with one `ScopeSpans`, scope `patron`, as the SDK wrote
/// them when they were SDK spans of the `patron` tracer.
pub(crate) fn export_records(
    buf: &mut Vec<u8>,
    resource: &EncodedResource,
    records: &[ServerRecord],
) {
    message(buf, 1, |buf| {
        message(buf, 1, |buf| buf.extend_from_slice(&resource.resource));
        message(buf, 2, |buf| {
            message(buf, 1, |buf| string(buf, 1, SCOPE));
            for record in records {
                message(buf, 2, |buf| encode_record(buf, record));
            }
        });
        string(buf, 3, &resource.schema_url);
    });
}

/// A route's constant server span attributes as `Span.attributes`
/// fields: `http.request.method`, `http.route` and `url.scheme`, written
/// once at start-up and copied into each span as one block.
pub(crate) fn route_attributes(method: &str, route: &str) -> Box<[u8]> {
    let mut buf = Vec::new();
    string_attribute(&mut buf, 9, "http.request.method", method);
    string_attribute(&mut buf, 9, "http.route", route);
    string_attribute(&mut buf, 9, "url.scheme", "http");
    buf.into_boxed_slice()
}

/// The instrumentation scope of patron's HTTP server spans.
pub(crate) const SCOPE: &str = "patron";

fn encode_record(buf: &mut Vec<u8>, record: &ServerRecord) {
    let cx = &record.span_context;
    let span = &record.fields;
    span_head(
        buf,
        cx,
        span.parent_span_id,
        &span.name,
        &SpanKind::Server,
        [span.start, record.end],
    );
    buf.extend_from_slice(span.attributes);
    string_attribute(buf, 9, "url.path", span.path());
    let correlation_id = span.correlation_id.to_str().unwrap_or_default();
    string_attribute(buf, 9, "correlation_id", correlation_id);
    if let Some(code) = span.status_code {
        int_attribute(buf, 9, STATUS_CODE, code);
    }
    if let Some(extra) = &span.extra {
        for kv in &extra.attributes {
            attribute(buf, 9, kv);
        }
        uint(buf, 10, extra.dropped_attributes.into());
        for e in &extra.events {
            message(buf, 11, |buf| event(buf, e));
        }
        uint(buf, 12, extra.dropped_events.into());
        for l in &extra.links {
            message(buf, 13, |buf| link(buf, l));
        }
        uint(buf, 14, extra.dropped_links.into());
    }
    message(buf, 15, |buf| status(buf, &span.status));
    fixed32(buf, 16, flags(cx, span.parent_is_remote));
}

/// A `Span`'s fields 1 to 8: ids, trace state, name, kind, start and end.
fn span_head(
    buf: &mut Vec<u8>,
    cx: &SpanContext,
    parent: SpanId,
    name: &str,
    span_kind: &SpanKind,
    [start, end]: [SystemTime; 2],
) {
    bytes(buf, 1, &cx.trace_id().to_bytes());
    bytes(buf, 2, &cx.span_id().to_bytes());
    trace_state(buf, 3, cx.trace_state());
    if parent != SpanId::INVALID {
        bytes(buf, 4, &parent.to_bytes());
    }
    string(buf, 5, name);
    uint(buf, 6, kind(span_kind));
    fixed64(buf, 7, nanos(start));
    fixed64(buf, 8, nanos(end));
}

fn event(buf: &mut Vec<u8>, event: &Event) {
    fixed64(buf, 1, nanos(event.timestamp));
    string(buf, 2, &event.name);
    for kv in &event.attributes {
        attribute(buf, 3, kv);
    }
    uint(buf, 4, event.dropped_attributes_count.into());
}

fn link(buf: &mut Vec<u8>, link: &Link) {
    let cx = &link.span_context;
    bytes(buf, 1, &cx.trace_id().to_bytes());
    bytes(buf, 2, &cx.span_id().to_bytes());
    trace_state(buf, 3, cx.trace_state());
    for kv in &link.attributes {
        attribute(buf, 4, kv);
    }
    uint(buf, 5, link.dropped_attributes_count.into());
    fixed32(buf, 6, flags(cx, cx.is_remote()));
}

fn status(buf: &mut Vec<u8>, status: &Status) {
    match status {
        Status::Unset => {}
        Status::Ok => uint(buf, 3, 1),
        Status::Error { description } => {
            string(buf, 2, description);
            uint(buf, 3, 2);
        }
    }
}

/// The span's W3C trace flags plus whether its parent is remote.
fn flags(cx: &SpanContext, remote: bool) -> u32 {
    let mut flags = u32::from(cx.trace_flags().to_u8()) | HAS_IS_REMOTE;
    if remote {
        flags |= IS_REMOTE;
    }
    flags
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn trace_state(buf: &mut Vec<u8>, field: u32, state: &TraceState) {
    if *state != TraceState::NONE {
        string(buf, field, &state.header());
    }
}

fn attribute(buf: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    key_value(buf, field, kv.key.as_str(), &kv.value);
}

fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    match value {
        Value::String(s) => string_attribute(buf, field, key, s.as_str()),
        Value::I64(i) => int_attribute(buf, field, key, *i),
        _ => message(buf, field, |buf| {
            string(buf, 1, key);
            message(buf, 2, |buf| any_value(buf, value));
        }),
    }
}

/// A `KeyValue` holding a string, its lengths computed first: the same
/// bytes as the general path without reserving and patching lengths.
fn string_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: &str) {
    // AnyValue { string_value = 1 }
    let any = 1 + varint_len(value.len()) + value.len();
    attribute_head(buf, field, key, any);
    tag(buf, 1, LEN);
    varint(buf, value.len() as u64);
    buf.extend_from_slice(value.as_bytes());
}

/// A `KeyValue` holding an integer, as [`string_attribute`].
fn int_attribute(buf: &mut Vec<u8>, field: u32, key: &str, value: i64) {
    // AnyValue { int_value = 3 }, two's complement as protobuf's int64.
    let any = 1 + varint_len(value as u64 as usize);
    attribute_head(buf, field, key, any);
    tag(buf, 3, VARINT);
    varint(buf, value as u64);
}

/// A `KeyValue`'s tag and length, its key, and the tag and length of its
/// `AnyValue` of `any` bytes.
fn attribute_head(buf: &mut Vec<u8>, field: u32, key: &str, any: usize) {
    let len = 1 + varint_len(key.len()) + key.len() + 1 + varint_len(any) + any;
    buf.reserve(len + 4);
    tag(buf, field, LEN);
    varint(buf, len as u64);
    tag(buf, 1, LEN);
    varint(buf, key.len() as u64);
    buf.extend_from_slice(key.as_bytes());
    tag(buf, 2, LEN);
    varint(buf, any as u64);
}

/// Bytes of `v` as a varint.
fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

/// An `AnyValue`'s fields. Its `oneof` is written even when it holds the
/// default (`false`, `0`, `""`): presence is the value.
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            tag(buf, 2, VARINT);
            varint(buf, u64::from(*b));
        }
        Value::I64(i) => {
            tag(buf, 3, VARINT);
            // Two's complement, as protobuf's int64.
            varint(buf, *i as u64);
        }
        Value::F64(f) => {
            tag(buf, 4, FIXED64);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            tag(buf, 1, LEN);
            varint(buf, s.as_str().len() as u64);
            buf.extend_from_slice(s.as_str().as_bytes());
        }
        Value::Array(array) => message(buf, 5, |buf| match array {
            Array::Bool(values) => elements(buf, values, |b| Value::Bool(*b)),
            Array::I64(values) => elements(buf, values, |i| Value::I64(*i)),
            Array::F64(values) => elements(buf, values, |f| Value::F64(*f)),
            Array::String(values) => elements(buf, values, |s| Value::String(s.clone())),
            // A kind of array added to the API after this encoder: written
            // as an empty array rather than dropping the whole span.
            _ => {}
        }),
        // A kind of value added to the API after this encoder: an empty
        // `AnyValue`, which receivers read as unset.
        _ => {}
    }
}

fn elements<T>(buf: &mut Vec<u8>, values: &[T], value: impl Fn(&T) -> Value) {
    for v in values {
        message(buf, 1, |buf| any_value(buf, &value(v)));
    }
}

#[cfg(test)]
pub(super) mod tests;
