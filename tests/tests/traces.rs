//! OpenTelemetry traces against a real OTLP/HTTP receiver started in the
//! test: it decodes `/v1/traces` with `opentelemetry-proto`. The service is
//! the `custom` example in a child process, configured only through the
//! standard `OTEL_*` variables.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use patron_tests::otlp::{attr, hex, receiver, spans, string};
use patron_tests::{Proc, eventually};

const CUSTOM: &str = env!("CARGO_BIN_EXE_custom");
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

async fn traced_request(proc: &Proc, correlation: &str) {
    let resp = reqwest::Client::new()
        .get(proc.url("/report?delay_ms=1"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-correlation-id", correlation)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_span_continues_the_incoming_trace() {
    let (endpoint, received) = receiver().await;
    let proc = Proc::spawn(
        CUSTOM,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    proc.wait_alive().await;
    traced_request(&proc, "otel-1").await;
    let arrived = eventually(Duration::from_secs(10), || {
        let found = spans(&received)
            .iter()
            .any(|(s, _)| s.name == "GET /report");
        async move { found }
    })
    .await;
    assert!(arrived, "no span exported; stderr {:?}", proc.stderr());
    let all = spans(&received);
    let (span, resource) = all
        .iter()
        .find(|(s, _)| hex(&s.trace_id) == TRACE_ID && s.name == "GET /report")
        .expect("a server span in the caller's trace");
    assert_eq!(hex(&span.parent_span_id), PARENT_ID);
    assert_eq!(span.name, "GET /report");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        string(&span.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        string(&span.attributes, "http.route").as_deref(),
        Some("/report")
    );
    assert_eq!(
        int(&span.attributes, "http.response.status_code"),
        Some(200),
        "{:?}",
        span.attributes
    );
    assert_eq!(
        string(&span.attributes, "url.path").as_deref(),
        Some("/report")
    );
    assert_eq!(
        string(&span.attributes, "url.scheme").as_deref(),
        Some("http")
    );
    assert_eq!(
        string(&span.attributes, "correlation_id").as_deref(),
        Some("otel-1")
    );
    assert_eq!(string(resource, "service.name").as_deref(), Some("custom"));
    assert_eq!(
        string(resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(string(resource, "host.name").is_some_and(|h| !h.is_empty()));

    // A span the handler opens is a child of the server span, in its trace.
    let child = eventually(Duration::from_secs(10), || {
        let found = spans(&received)
            .iter()
            .any(|(s, _)| s.name == "render report");
        async move { found }
    })
    .await;
    assert!(child, "the handler's own span was not exported");
    let all = spans(&received);
    let (child, _) = all
        .iter()
        .find(|(s, _)| s.name == "render report")
        .expect("handler span");
    assert_eq!(hex(&child.trace_id), TRACE_ID);
    assert_eq!(
        child.parent_span_id, span.span_id,
        "child of the server span"
    );

    // An outgoing call from inside the request continues the trace as a
    // child of the server span.
    let out: serde_json::Value = reqwest::Client::new()
        .get(proc.url("/outbound"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tp = out["traceparent"].as_str().expect("traceparent injected");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], TRACE_ID, "{tp}");
    assert_ne!(
        parts[2], PARENT_ID,
        "the callee's parent is this service's span: {tp}"
    );
    assert_eq!(parts[3], "01");

    // Log lines inside the request carry the trace and span ids.
    let logs = proc.json_logs();
    let line = logs
        .iter()
        .find(|l| l["message"] == "building report")
        .expect("handler log line");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span_id"], hex(&span.span_id));
    assert_eq!(line["correlation_id"], "otel-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_off_exports_nothing() {
    let (endpoint, received) = receiver().await;
    let mut proc = Proc::spawn(
        CUSTOM,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    );
    proc.wait_alive().await;
    traced_request(&proc, "off-1").await;
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        spans(&received).is_empty(),
        "sampler always_off exported spans"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_flushed_on_graceful_shutdown() {
    let (endpoint, received) = receiver().await;
    // A batch delay far longer than the test: only the shutdown flush can deliver.
    let mut proc = Proc::spawn(
        CUSTOM,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    proc.wait_alive().await;
    traced_request(&proc, "flush-1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(spans(&received).is_empty(), "exported before shutdown");
    proc.signal(libc::SIGTERM);
    assert_eq!(
        proc.wait_exit(Duration::from_secs(15)),
        Some(0),
        "stderr {:?}",
        proc.stderr()
    );
    let all = spans(&received);
    assert!(
        all.iter().any(|(s, _)| hex(&s.trace_id) == TRACE_ID),
        "the span was flushed on shutdown; stderr {:?}; stdout {:?}",
        proc.stderr(),
        proc.stdout()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sampler_is_a_start_up_error() {
    let mut proc = Proc::spawn(CUSTOM, &[("OTEL_TRACES_SAMPLER", "sometimes")]);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(1));
    let stderr = proc.stderr().join("\n");
    assert!(
        stderr.contains("OTEL_TRACES_SAMPLER") && stderr.contains("sometimes"),
        "{stderr}"
    );
}

/// Issue 17 item 7: for a sampled request the DEBUG `request served` line
/// and the status-error ERROR line carry the trace and span ids of the
/// request's span, the ids operators join logs to traces with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_status_error_lines_carry_trace_ids() {
    let (endpoint, _received) = receiver().await;
    let mut proc = Proc::spawn(
        CUSTOM,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("PATRON_LOG_LEVEL", "debug"),
            ("PATRON_HTTP_STATUS_ERROR_LOGGING", "400"),
        ],
    );
    proc.wait_alive().await;
    traced_request(&proc, "served-1").await;
    let bad = reqwest::Client::new()
        .get(proc.url("/report?delay_ms=soon"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-correlation-id", "failed-1")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let _ = bad.text().await;
    let line = |message: &'static str, correlation: &'static str| {
        let logs = proc.json_logs();
        logs.into_iter()
            .find(|l| l["message"] == message && l["correlation_id"] == correlation)
    };
    let found = eventually(Duration::from_secs(5), || {
        let both = line("request served", "served-1").is_some()
            && line("request failed", "failed-1").is_some();
        async move { both }
    })
    .await;
    assert!(found, "{:?}", proc.stdout());
    for (message, correlation) in [
        ("request served", "served-1"),
        ("request failed", "failed-1"),
    ] {
        let l = line(message, correlation).unwrap();
        assert_eq!(l["trace_id"], TRACE_ID, "{message}: {l}");
        let span_id = l["span_id"].as_str().unwrap_or_default();
        assert!(
            span_id.len() == 16 && span_id != PARENT_ID,
            "{message} carries the request span's own id: {l}"
        );
    }
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Issue 17 item 8: a `traceparent` whose ids have the wrong length is no
/// parent: the request starts a new trace (OpenTelemetry's own parser would
/// pad a short trace id with zeros and continue it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_with_a_short_trace_id_is_no_parent() {
    let (endpoint, received) = receiver().await;
    let mut proc = Proc::spawn(
        CUSTOM,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ],
    );
    proc.wait_alive().await;
    let short = &TRACE_ID[..31];
    let resp = reqwest::Client::new()
        .get(proc.url("/outbound"))
        .header("traceparent", format!("00-{short}-{PARENT_ID}-01"))
        .header("x-correlation-id", "short-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let shown = resp.text().await.unwrap();
    assert!(
        !shown.contains(short),
        "the bad traceparent is not passed on: {shown}"
    );
    let arrived = eventually(Duration::from_secs(10), || {
        let n = spans(&received).len();
        async move { n > 0 }
    })
    .await;
    assert!(
        arrived,
        "a root span is exported; stderr {:?}",
        proc.stderr()
    );
    for (span, _) in spans(&received) {
        assert!(span.parent_span_id.is_empty(), "no parent: {span:?}");
        assert!(
            !hex(&span.trace_id).contains(short),
            "a new trace: {span:?}"
        );
    }
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0));
}
