//! The OTLP `ExportTraceServiceRequest` written as protobuf straight from
//! the SDK's [`SpanData`], without building the intermediate
//! `opentelemetry-proto` structs (a `String` per attribute key and value, a
//! `Vec` per id) that cost three times the encoding itself. Fields are
//! written in tag order and proto3 defaults are left out, as prost does, so
//! the bytes equal those of the reference conversion (tested).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

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
    bytes(buf, 1, &cx.trace_id().to_bytes());
    bytes(buf, 2, &cx.span_id().to_bytes());
    trace_state(buf, 3, cx.trace_state());
    if span.parent_span_id != SpanId::INVALID {
        bytes(buf, 4, &span.parent_span_id.to_bytes());
    }
    string(buf, 5, &span.name);
    uint(buf, 6, kind(&span.span_kind));
    fixed64(buf, 7, nanos(span.start_time));
    fixed64(buf, 8, nanos(span.end_time));
    for kv in &span.attributes {
        attribute(buf, 9, kv);
    }
    uint(buf, 10, span.dropped_attributes_count.into());
    for event in span.events.iter() {
        message(buf, 11, |buf| {
            fixed64(buf, 1, nanos(event.timestamp));
            string(buf, 2, &event.name);
            for kv in &event.attributes {
                attribute(buf, 3, kv);
            }
            uint(buf, 4, event.dropped_attributes_count.into());
        });
    }
    uint(buf, 12, span.events.dropped_count.into());
    for link in span.links.iter() {
        message(buf, 13, |buf| {
            let cx = &link.span_context;
            bytes(buf, 1, &cx.trace_id().to_bytes());
            bytes(buf, 2, &cx.span_id().to_bytes());
            trace_state(buf, 3, cx.trace_state());
            for kv in &link.attributes {
                attribute(buf, 4, kv);
            }
            uint(buf, 5, link.dropped_attributes_count.into());
            fixed32(buf, 6, flags(cx, cx.is_remote()));
        });
    }
    uint(buf, 14, span.links.dropped_count.into());
    message(buf, 15, |buf| match &span.status {
        Status::Unset => {}
        Status::Ok => uint(buf, 3, 1),
        Status::Error { description } => {
            string(buf, 2, description);
            uint(buf, 3, 2);
        }
    });
    fixed32(buf, 16, flags(cx, span.parent_span_is_remote));
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
    message(buf, field, |buf| {
        string(buf, 1, key);
        message(buf, 2, |buf| any_value(buf, value));
    });
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

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        tag(buf, field, LEN);
        varint(buf, v.len() as u64);
        buf.extend_from_slice(v);
    }
}

fn string(buf: &mut Vec<u8>, field: u32, v: &str) {
    bytes(buf, field, v.as_bytes());
}

/// A length-delimited sub-message written by `body`. One byte is reserved
/// for the length (most sub-messages are shorter than 128 bytes); a longer
/// one moves its body up by the extra length bytes.
fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len;
    while v >= 0x80 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    n += 1;
    buf.resize(buf.len() + n - 1, 0);
    buf.copy_within(at + 1..at + 1 + len, at + n);
    buf[at..at + n].copy_from_slice(&prefix[..n]);
}

#[cfg(test)]
pub(super) mod tests;
