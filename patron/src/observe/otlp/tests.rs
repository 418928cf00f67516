//! The exporter against a real HTTP receiver on a port of its own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry::InstrumentationScope;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use prost::Message;

use super::{OtlpConfig, OtlpExporter, QueueConfig, QueueProcessor, RecordQueue, SharedExporter};

/// What the receiver saw: each request's decoded body and headers.
type Seen = Arc<Mutex<Vec<(ExportTraceServiceRequest, HeaderMap)>>>;

/// A receiver answering the first `fail` requests with `status` (and
/// `Retry-After: 0` when asked), then 200. Runs on a runtime of its own.
fn receiver(
    fail: usize,
    status: StatusCode,
    retry_after: bool,
) -> (String, Seen, Arc<AtomicUsize>) {
    let seen: Seen = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (sink, count) = (seen.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let (sink, count) = (sink.clone(), count.clone());
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                sink.lock().unwrap().push((request, headers));
                let mut out = HeaderMap::new();
                if retry_after {
                    out.insert("retry-after", "0".parse().unwrap());
                }
                if n < fail {
                    (status, out)
                } else {
                    (StatusCode::OK, out)
                }
            }
        }),
    );
    (serve(app), seen, calls)
}

/// A receiver that counts the spans it is sent and holds every request
/// until `release` is set.
fn held_receiver() -> (String, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let spans = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let (count, hold) = (spans.clone(), release.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let (count, hold) = (count.clone(), hold.clone());
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let n: usize = request
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum();
                count.fetch_add(n, Ordering::SeqCst);
                while !hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                StatusCode::OK
            }
        }),
    );
    (serve(app), spans, release)
}

/// Serves `app` on a port of its own, on a runtime of its own; its URL.
fn serve(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

/// Waits up to ten seconds for `count` to reach `n`.
fn wait_for(count: &AtomicUsize, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn config(pairs: &[(&str, &str)]) -> OtlpConfig {
    super::config::from_pairs(pairs).unwrap()
}

fn spans(n: u64) -> Vec<SpanData> {
    let scope = InstrumentationScope::builder("patron").build();
    (0..n)
        .map(|i| super::encode::tests::span(&scope, i))
        .collect()
}

fn exporter(cfg: OtlpConfig) -> SharedExporter {
    let resource = Resource::builder_empty()
        .with_service_name("orders")
        .build();
    SharedExporter(OtlpExporter::new(cfg, &resource).unwrap())
}

/// Runs an export: it completes on its first poll (the batch processor's
/// thread blocks inside it).
fn run(
    export: impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult>,
) -> opentelemetry_sdk::error::OTelSdkResult {
    futures_util::FutureExt::now_or_never(export).expect("export completes on its first poll")
}

fn span_count(seen: &Seen) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .flat_map(|(r, _)| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

#[test]
fn a_batch_arrives_whole_with_the_configured_headers_and_resource() {
    let (url, seen, calls) = receiver(0, StatusCode::OK, false);
    let exporter = exporter(config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret"),
    ]));
    run(exporter.export(spans(300))).unwrap();
    run(exporter.export(spans(2))).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(span_count(&seen), 302);
    let seen = seen.lock().unwrap();
    let (request, headers) = &seen[0];
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["api-key"], "s3cret");
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
}

#[test]
fn throttling_and_unavailability_are_retried_until_delivered() {
    let (url, seen, calls) = receiver(2, StatusCode::SERVICE_UNAVAILABLE, false);
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]));
    run(exporter.export(spans(5))).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two 503s, then 200");
    assert_eq!(seen.lock().unwrap().len(), 3);

    let (url, _, calls) = receiver(1, StatusCode::TOO_MANY_REQUESTS, true);
    let exporter = self::exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]));
    run(exporter.export(spans(1))).unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "429 with Retry-After, then 200"
    );
}

#[test]
fn a_rejected_batch_is_not_retried_and_the_error_says_where_and_why() {
    let (url, _, calls) = receiver(usize::MAX, StatusCode::BAD_REQUEST, false);
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]));
    let err = run(exporter.export(spans(4))).unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let text = err.to_string();
    assert!(
        text.contains("400") && text.contains(&url) && text.contains("4 spans lost"),
        "{text}"
    );
}

#[test]
fn a_receiver_that_is_down_is_retried_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let exporter = exporter(config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
    ]));
    let started = std::time::Instant::now();
    let err = run(exporter.export(spans(1))).unwrap_err();
    let took = started.elapsed();
    // Three back-offs of 100, 200 and 400 ms (plus jitter) before giving up.
    assert!(took >= Duration::from_millis(700), "gave up after {took:?}");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.to_lowercase().contains("refused"),
        "{text}"
    );

    let exporter = self::exporter(config(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "150"),
    ]));
    let err = run(exporter.export(spans(1))).unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn after_shutdown_nothing_is_sent() {
    let (url, _, calls) = receiver(0, StatusCode::OK, false);
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]));
    exporter.shutdown().unwrap();
    let err = run(exporter.export(spans(1))).unwrap_err();
    assert!(matches!(err, OTelSdkError::AlreadyShutdown), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A record queue exporting to `url`, holding `queue` records, sending
/// batches of `batch`, and with a ten-minute delay: only a full batch or
/// the shutdown sends.
fn record_queue(url: &str, queue: usize, batch: usize) -> RecordQueue {
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", url)])).0;
    let batching = QueueConfig {
        delay: Duration::from_secs(600),
        queue,
        batch,
    };
    RecordQueue::start(exporter, batching).unwrap()
}

#[test]
fn the_record_queue_sends_a_full_batch_at_once_and_the_rest_on_shutdown() {
    let (url, seen, calls) = receiver(0, StatusCode::OK, false);
    let queue = record_queue(&url, 8, 3);
    for n in 0..4 {
        queue.push(super::encode::tests::record(n, None).0);
    }
    // The full batch goes without waiting for the delay.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while span_count(&seen) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(span_count(&seen), 3, "one batch of three");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    queue.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(span_count(&seen), 4, "the fourth is flushed on shutdown");
    let names: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(r, _)| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.iter().map(|s| s.name.clone()))
        .collect();
    assert!(names.iter().all(|n| n == "GET /orders/{id}"), "{names:?}");
    queue.push(super::encode::tests::record(9, None).0);
    assert_eq!(queue.dropped(), 1, "a span ended after shutdown is dropped");
    assert_eq!(span_count(&seen), 4);
}

#[test]
fn a_full_record_queue_drops_and_counts_what_does_not_fit() {
    let (url, spans, release) = held_receiver();
    let queue = record_queue(&url, 4, 2);
    let record = |n| super::encode::tests::record(n, None).0;
    // A full batch: the worker takes both and waits on the held receiver.
    queue.push(record(0));
    queue.push(record(1));
    wait_for(&spans, 2);
    assert_eq!(spans.load(Ordering::SeqCst), 2, "the first batch is sent");
    // The queue holds four more while the worker is busy; the fifth is
    // dropped and counted.
    for n in 2..7 {
        queue.push(record(n));
    }
    assert_eq!(queue.dropped(), 1, "one record more than the queue holds");
    release.store(true, Ordering::SeqCst);
    queue.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(
        spans.load(Ordering::SeqCst),
        6,
        "every queued record is sent"
    );
    assert_eq!(queue.dropped(), 1);
}

#[test]
fn the_span_processor_flushes_on_demand_and_on_shutdown_and_then_refuses() {
    let (url, seen, calls) = receiver(0, StatusCode::OK, false);
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)])).0;
    let batching = QueueConfig {
        delay: Duration::from_secs(600),
        queue: 8,
        batch: 8,
    };
    let processor = QueueProcessor::start(exporter, batching).unwrap();
    let mut ended = spans(3).into_iter();
    processor.on_end(ended.next().unwrap());
    processor.on_end(ended.next().unwrap());
    processor.force_flush().unwrap();
    assert_eq!(span_count(&seen), 2, "a flush sends what is queued");
    processor.on_end(ended.next().unwrap());
    processor
        .shutdown_with_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(span_count(&seen), 3, "shutdown sends the rest");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // After shutdown a span is dropped, and a second shutdown or a flush
    // says it was shut down, as the SDK's batch processor does.
    processor.on_end(spans(1).remove(0));
    let again = processor.shutdown_with_timeout(Duration::from_secs(1));
    assert!(
        matches!(again, Err(OTelSdkError::AlreadyShutdown)),
        "{again:?}"
    );
    let flushed = processor.force_flush();
    assert!(
        matches!(flushed, Err(OTelSdkError::AlreadyShutdown)),
        "{flushed:?}"
    );
    assert_eq!(span_count(&seen), 3);
}
