//! The encoder against the reference: `opentelemetry-proto`'s conversion of
//! the same spans, encoded by prost.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message;

use super::super::record::{Extra, Fields, ServerRecord};
use super::{EncodedResource, SCOPE, export_records, export_request, route_attributes};

fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: TraceState) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        flags,
        remote,
        state,
    )
}

fn every_value() -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("empty", ""),
        KeyValue::new("http.response.status_code", 200_i64),
        KeyValue::new("zero", 0_i64),
        KeyValue::new("negative", -42_i64),
        KeyValue::new("ratio", 0.25_f64),
        KeyValue::new("flag", true),
        KeyValue::new("off", false),
        KeyValue::new(
            "bools",
            opentelemetry::Value::Array(Array::Bool(vec![true, false])),
        ),
        KeyValue::new(
            "ints",
            opentelemetry::Value::Array(Array::I64(vec![1, -2, 300])),
        ),
        KeyValue::new("floats", opentelemetry::Value::Array(Array::F64(vec![1.5]))),
        KeyValue::new(
            "strings",
            opentelemetry::Value::Array(Array::String(vec![
                StringValue::from("a"),
                StringValue::from("b".repeat(300)),
            ])),
        ),
        KeyValue::new("long", "x".repeat(1000)),
    ]
}

/// A plain server span, the `n`th of a batch (shared with the exporter's
/// tests).
pub(crate) fn span(scope: &InstrumentationScope, n: u64) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_765_000_000_123_456_789 + n);
    SpanData {
        span_context: context(
            0x0af7651916cd43dd8448eb211c80319c,
            n + 1,
            true,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed("GET /index"),
        start_time: start,
        end_time: start + Duration::from_micros(250),
        attributes: vec![KeyValue::new("http.route", "/index")],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

fn full_span(scope: &InstrumentationScope) -> SpanData {
    let state: TraceState = "vendor=value,other=1".parse().unwrap();
    let mut events = SpanEvents::default();
    events.events.push(Event::new(
        "exception",
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_001),
        every_value(),
        3,
    ));
    events
        .events
        .push(Event::new("empty", SystemTime::UNIX_EPOCH, vec![], 0));
    events.dropped_count = 2;
    let mut links = SpanLinks::default();
    links.links.push(Link::new(
        context(7, 8, true, true, state.clone()),
        vec![KeyValue::new("link", 1_i64)],
        1,
    ));
    links.links.push(Link::new(
        context(9, 10, false, false, TraceState::NONE),
        vec![],
        0,
    ));
    links.dropped_count = 4;
    let mut span = span(scope, 100);
    span.span_context = context(u128::MAX - 5, u64::MAX - 1, true, false, state);
    span.parent_span_id = SpanId::from(0x1234);
    span.parent_span_is_remote = true;
    span.span_kind = SpanKind::Consumer;
    span.name = Cow::Owned("process orders".repeat(20));
    span.attributes = every_value();
    span.dropped_attributes_count = 5;
    span.events = events;
    span.links = links;
    span.status = Status::error("handler failed: timeout");
    span
}

fn reference(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans.to_vec(),
            &ResourceAttributesWithSchema::from(resource),
        ),
    }
}

fn assert_same(spans: &[SpanData], resource: &Resource) {
    let expected = reference(spans, resource);
    let mut ours = Vec::new();
    export_request(&mut ours, &EncodedResource::new(resource), spans);
    let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("decodes");
    assert_eq!(
        decoded, expected,
        "decoded request differs from the reference"
    );
    assert_eq!(ours, expected.encode_to_vec(), "bytes differ from prost's");
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("orders")
        .with_attributes([
            KeyValue::new("service.version", "1.2.3"),
            KeyValue::new("host.name", "pod-7"),
            KeyValue::new("replicas", 3_i64),
        ])
        .build()
}

#[test]
fn a_plain_server_span_matches_the_reference() {
    let scope = InstrumentationScope::builder("patron").build();
    assert_same(&[span(&scope, 0)], &resource());
}

#[test]
fn every_field_and_value_kind_matches_the_reference() {
    let scope = InstrumentationScope::builder("patron")
        .with_version("0.1.0")
        .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
        .with_attributes([KeyValue::new("scope.attr", "x")])
        .build();
    let other = InstrumentationScope::builder("user-lib").build();
    let spans = vec![
        full_span(&scope),
        span(&other, 1),
        span(&scope, 2),
        span(&other, 3),
    ];
    let with_schema = Resource::builder_empty()
        .with_schema_url(
            [KeyValue::new("service.name", "orders")],
            "https://example.com/s",
        )
        .build();
    assert_same(&spans, &with_schema);
    assert_same(&spans, &resource());
}

#[test]
fn a_batch_of_hundreds_of_spans_matches_the_reference() {
    let scope = InstrumentationScope::builder("patron").build();
    let spans: Vec<SpanData> = (0..600).map(|n| span(&scope, n)).collect();
    assert_same(&spans, &resource());
}

#[test]
fn an_empty_batch_and_an_empty_resource_match_the_reference() {
    assert_same(&[], &Resource::builder_empty().build());
}

/// patron's HTTP server span record and the SDK span it stands for (the
/// record shared with the queue's tests).
pub(crate) fn record(n: u64, extra: Option<Extra>) -> (ServerRecord, SpanData) {
    let scope = InstrumentationScope::builder(SCOPE).build();
    let mut sdk = span(&scope, n);
    let with_extra = extra.is_some();
    let path = if with_extra {
        "/orders/7"
    } else {
        "/orders/{id}"
    };
    sdk.name = Cow::Borrowed("GET /orders/{id}");
    sdk.attributes = vec![
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("http.route", "/orders/{id}"),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("url.path", path),
        KeyValue::new("correlation_id", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"),
    ];
    let mut fields = Fields {
        parent_span_id: SpanId::INVALID,
        parent_is_remote: false,
        name: sdk.name.clone(),
        attributes: Box::leak(route_attributes("GET", "/orders/{id}")),
        route: "/orders/{id}",
        path: with_extra.then(|| path.into()),
        correlation_id: http::HeaderValue::from_static("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"),
        start: sdk.start_time,
        status_code: None,
        status: Status::Unset,
        extra: None,
    };
    match extra {
        None => {
            fields.status_code = Some(200);
            sdk.attributes
                .push(KeyValue::new("http.response.status_code", 200_i64));
        }
        Some(extra) => {
            let full = full_span(&scope);
            sdk.span_context = full.span_context.clone();
            sdk.parent_span_id = full.parent_span_id;
            sdk.parent_span_is_remote = true;
            sdk.name = Cow::Owned("renamed by the handler".into());
            sdk.attributes.extend(extra.attributes.iter().cloned());
            sdk.dropped_attributes_count = extra.dropped_attributes;
            sdk.events.events = extra.events.clone();
            sdk.events.dropped_count = extra.dropped_events;
            sdk.links.links = extra.links.clone();
            sdk.links.dropped_count = extra.dropped_links;
            sdk.status = Status::error("handler failed: timeout");
            fields.parent_span_id = full.parent_span_id;
            fields.parent_is_remote = true;
            fields.name = sdk.name.clone();
            fields.status = sdk.status.clone();
            fields.extra = Some(Box::new(extra));
        }
    }
    let record = ServerRecord {
        span_context: sdk.span_context.clone(),
        fields,
        end: sdk.end_time,
    };
    (record, sdk)
}

fn assert_records_same(records: &[ServerRecord], spans: &[SpanData]) {
    // One resource: its attributes' order is a hash map's.
    let resource = resource();
    let expected = reference(spans, &resource);
    let mut ours = Vec::new();
    export_records(&mut ours, &EncodedResource::new(&resource), records);
    let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("decodes");
    assert_eq!(
        decoded, expected,
        "decoded records differ from the reference"
    );
    assert_eq!(ours, expected.encode_to_vec(), "bytes differ from prost's");
}

#[test]
fn a_server_record_encodes_as_the_sdk_span_it_replaces() {
    let (record, sdk) = record(0, None);
    assert_records_same(&[record], &[sdk]);
}

#[test]
fn what_users_add_to_a_server_record_is_encoded_too() {
    let full = full_span(&InstrumentationScope::builder(SCOPE).build());
    let extra = Extra {
        attributes: every_value(),
        dropped_attributes: 5,
        events: full.events.events.clone(),
        dropped_events: 2,
        links: full.links.links.clone(),
        dropped_links: 4,
    };
    let (record, sdk) = record(1, Some(extra));
    assert_records_same(&[record], &[sdk]);
}

#[test]
fn a_batch_of_server_records_matches_the_reference() {
    let (records, spans): (Vec<_>, Vec<_>) = (0..600).map(|n| record(n, None)).unzip();
    assert_records_same(&records, &spans);
}
