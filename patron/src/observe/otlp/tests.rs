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
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use prost::Message;

use super::{OtlpConfig, OtlpExporter, QueueConfig, QueueProcessor, RecordQueue};

/// What the receiver saw: each request's decoded body and headers.
type Seen = Arc<Mutex<Vec<(ExportTraceServiceRequest, HeaderMap)>>>;

/// A receiver answering the first `fail` requests with `status` (and
/// `Retry-After: 0` when asked), then 200. Runs on a runtime of its own.
fn receiver(
    fail: usize,
    status: StatusCode,
    retry_after: bool,
) -> (String, Seen, Arc<AtomicUsize>) {
    receiver_holding(fail, status, retry_after, None)
}

/// A receiver that records what it is sent and answers 200 once `release`
/// is set, holding each request until then.
fn held_receiver(release: &Arc<AtomicBool>) -> (String, Seen) {
    let (url, seen, _) = receiver_holding(0, StatusCode::OK, false, Some(release.clone()));
    (url, seen)
}

/// [`receiver`], holding each request (after recording it) until `hold`,
/// when given, is set.
fn receiver_holding(
    fail: usize,
    status: StatusCode,
    retry_after: bool,
    hold: Option<Arc<AtomicBool>>,
) -> (String, Seen, Arc<AtomicUsize>) {
    let seen: Seen = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (sink, count) = (seen.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let (sink, count, hold) = (sink.clone(), count.clone(), hold.clone());
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                sink.lock().unwrap().push((request, headers));
                while hold.as_ref().is_some_and(|h| !h.load(Ordering::SeqCst)) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
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

/// Waits up to ten seconds for the receiver to have seen `n` spans.
fn wait_for(seen: &Seen, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while span_count(seen) < n && std::time::Instant::now() < deadline {
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

fn exporter(cfg: OtlpConfig) -> Arc<OtlpExporter> {
    let resource = Resource::builder_empty()
        .with_service_name("orders")
        .build();
    OtlpExporter::new(cfg, &resource).unwrap()
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
    exporter.export_now(&spans(300)).unwrap();
    exporter.export_now(&spans(2)).unwrap();
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
    exporter.export_now(&spans(5)).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two 503s, then 200");
    assert_eq!(seen.lock().unwrap().len(), 3);

    let (url, _, calls) = receiver(1, StatusCode::TOO_MANY_REQUESTS, true);
    let exporter = self::exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]));
    exporter.export_now(&spans(1)).unwrap();
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
    let err = exporter.export_now(&spans(4)).unwrap_err();
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
    let err = exporter.export_now(&spans(1)).unwrap_err();
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
    let err = exporter.export_now(&spans(1)).unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn after_shutdown_nothing_is_sent() {
    let (url, _, calls) = receiver(0, StatusCode::OK, false);
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]));
    exporter.shut_down().unwrap();
    let err = exporter.export_now(&spans(1)).unwrap_err();
    assert!(matches!(err, OTelSdkError::AlreadyShutdown), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Queue settings holding `queue` spans, sending batches of `batch`, and
/// with a ten-minute delay: only a full batch, a flush or the shutdown
/// sends.
fn batching(queue: usize, batch: usize) -> QueueConfig {
    QueueConfig {
        delay: Duration::from_secs(600),
        queue,
        batch,
    }
}

/// A record queue exporting to `url`, with [`batching`]'s settings.
fn record_queue(url: &str, queue: usize, batch: usize) -> RecordQueue {
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", url)]));
    RecordQueue::start(exporter, batching(queue, batch)).unwrap()
}

#[test]
fn the_record_queue_sends_a_full_batch_at_once_and_the_rest_on_shutdown() {
    let (url, seen, calls) = receiver(0, StatusCode::OK, false);
    let queue = record_queue(&url, 8, 3);
    for n in 0..4 {
        queue.push(super::encode::tests::record(n, None).0);
    }
    // The full batch goes without waiting for the delay.
    wait_for(&seen, 3);
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
    let release = Arc::new(AtomicBool::new(false));
    let (url, seen) = held_receiver(&release);
    let queue = record_queue(&url, 4, 2);
    let record = |n| super::encode::tests::record(n, None).0;
    // A full batch: the worker takes both and waits on the held receiver.
    queue.push(record(0));
    queue.push(record(1));
    wait_for(&seen, 2);
    assert_eq!(span_count(&seen), 2, "the first batch is sent");
    // The queue holds four more while the worker is busy; the fifth is
    // dropped and counted.
    for n in 2..7 {
        queue.push(record(n));
    }
    assert_eq!(queue.dropped(), 1, "one record more than the queue holds");
    release.store(true, Ordering::SeqCst);
    queue.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(span_count(&seen), 6, "every queued record is sent");
    assert_eq!(queue.dropped(), 1);
}

#[test]
fn the_span_processor_flushes_on_demand_and_on_shutdown_and_then_refuses() {
    let (url, seen, calls) = receiver(0, StatusCode::OK, false);
    let exporter = exporter(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]));
    let processor = QueueProcessor::start(exporter, batching(8, 8)).unwrap();
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
