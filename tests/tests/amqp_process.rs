//! AMQP consumers in a real service process (`amqp_consumers`, attribute
//! consumers configured by `PATRON_AMQP_URL`): no message lost across a
//! SIGTERM and restart, and trace context from message headers.

use std::collections::BTreeSet;
use std::time::Duration;

use patron_tests::amqp::{self, Broker};
use patron_tests::otlp::{hex, receiver, spans, string};
use patron_tests::{Proc, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_amqp_consumers");
const ORDERS: &str = env!("CARGO_BIN_EXE_orders");

fn processed(proc: &Proc) -> Vec<u64> {
    proc.json_logs()
        .iter()
        .filter(|l| l["message"] == "processed")
        .filter_map(|l| l["id"].as_u64())
        .collect()
}

/// Both tests use the binary's fixed queues, so they run one after the other.
#[tokio::test(flavor = "multi_thread")]
async fn amqp_service_process() {
    let Some(url) = amqp::url() else { return };
    no_loss_across_a_stop(&url).await;
    trace_context_from_headers(&url).await;
    orders_example(&url).await;
}

/// The `orders` example: orders published through its HTTP route are
/// consumed with the request's correlation id; a failing order is retried
/// and dead-lettered.
async fn orders_example(url: &str) {
    let broker = Broker::connect(url).await;
    broker.fresh_queue("orders").await;
    broker.fresh_queue("orders.dlq").await;
    let mut proc = Proc::spawn(ORDERS, &[("PATRON_AMQP_URL", url)]);
    proc.wait_alive().await;
    let client = reqwest::Client::new();
    for (body, id) in [
        (r#"{"id":1,"amount":9.5}"#, "order-1"),
        (r#"{"id":2,"amount":-1}"#, "order-2"),
    ] {
        place_order(&client, &proc, body.to_string(), id).await;
    }
    let stats = || order_stats(&client, &proc);
    assert!(
        eventually(Duration::from_secs(20), || async {
            stats().await["orders"] == 1
        })
        .await
    );
    assert_eq!(stats().await["last_correlation_id"], "order-1");
    assert!(
        eventually(Duration::from_secs(20), || async {
            broker.depth("orders.dlq").await == 1
        })
        .await,
        "the negative order is dead-lettered after its retries"
    );
    let (_, headers) = broker.get("orders.dlq").await.expect("the failed order");
    assert_eq!(headers["x-patron-attempts"], "4");
    assert!(
        headers["x-patron-error"].contains("negative amount"),
        "{headers:?}"
    );
    let retried = proc
        .json_logs()
        .iter()
        .filter(|l| {
            l["message"] == "message handler failed; retrying" && l["correlation_id"] == "order-2"
        })
        .count();
    assert_eq!(
        retried, 3,
        "three logged retries carrying the order's correlation id"
    );
    large_orders_in_little_memory(&proc, &broker, &client).await;
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(20)), Some(0));
    broker.delete("orders").await;
    broker.delete("orders.dlq").await;
    broker.close().await;
}

async fn no_loss_across_a_stop(url: &str) {
    let broker = Broker::connect(url).await;
    broker.fresh_queue("patron-test-stop").await;
    broker.fresh_queue("patron-test-trace").await;
    for id in 0..1000 {
        broker
            .publish(
                "patron-test-stop",
                format!(r#"{{"id":{id}}}"#).as_bytes(),
                &[],
            )
            .await;
    }
    let env = [("PATRON_AMQP_URL", url), ("PATRON_SHUTDOWN_TIMEOUT", "10s")];
    let mut first = Proc::spawn(BIN, &env);
    first.wait_alive().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            processed(&first).len() >= 300
        })
        .await,
        "the first run processes messages"
    );
    first.signal(libc::SIGTERM);
    assert_eq!(
        first.wait_exit(Duration::from_secs(20)),
        Some(0),
        "clean stop"
    );
    let before = processed(&first);
    assert!(
        before.len() < 1000,
        "stopped midway ({} processed)",
        before.len()
    );
    let left = broker.depth("patron-test-stop").await;
    assert!(left > 0, "messages remain for the second run");
    assert!(
        left as usize + before.len() >= 1000,
        "every message is either processed or still queued: {} + {left}",
        before.len()
    );

    let mut second = Proc::spawn(BIN, &env);
    second.wait_alive().await;
    let all = || {
        let mut ids: BTreeSet<u64> = before.iter().copied().collect();
        ids.extend(processed(&second));
        ids
    };
    assert!(
        eventually(Duration::from_secs(60), || async { all().len() == 1000 }).await,
        "every message is processed at least once ({} of 1000)",
        all().len()
    );
    second.signal(libc::SIGTERM);
    assert_eq!(second.wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(
        broker.depth("patron-test-stop").await,
        0,
        "none remains in the queue"
    );
    let duplicates = before.len() + processed(&second).len() - 1000;
    println!(
        "first run: {} processed; second run: {}; redelivered twice: {duplicates}",
        before.len(),
        processed(&second).len()
    );
    broker.delete("patron-test-stop").await;
    broker.close().await;
}

async fn trace_context_from_headers(url: &str) {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_ID: &str = "00f067aa0ba902b7";
    let broker = Broker::connect(url).await;
    broker.fresh_queue("patron-test-trace").await;
    let (otlp, received) = receiver().await;
    let mut proc = Proc::spawn(
        BIN,
        &[
            ("PATRON_AMQP_URL", url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "amqp-consumers"),
        ],
    );
    proc.wait_alive().await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    broker
        .publish(
            "patron-test-trace",
            b"hello",
            &[
                ("traceparent", &traceparent),
                ("X-Correlation-Id", "corr-trace-1"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            spans(&received)
                .iter()
                .any(|(s, _)| s.name == "patron-test-trace process")
        })
        .await,
        "the message span is exported"
    );
    let (span, _) = spans(&received)
        .into_iter()
        .find(|(s, _)| s.name == "patron-test-trace process")
        .unwrap();
    assert_eq!(hex(&span.trace_id), TRACE_ID, "same trace as the publisher");
    assert_eq!(
        hex(&span.parent_span_id),
        PARENT_ID,
        "the publisher's span is the parent"
    );
    assert_eq!(span.kind, 5, "SPAN_KIND_CONSUMER");
    assert_eq!(
        string(&span.attributes, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        string(&span.attributes, "messaging.destination.name").as_deref(),
        Some("patron-test-trace")
    );
    assert_eq!(
        string(&span.attributes, "correlation_id").as_deref(),
        Some("corr-trace-1")
    );
    let line = proc
        .json_logs()
        .into_iter()
        .find(|l| l["message"] == "traced message")
        .expect("the handler's log line");
    assert_eq!(line["correlation_id"], "corr-trace-1");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span_id"].as_str(), Some(hex(&span.span_id).as_str()));
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(20)), Some(0));
    broker.delete("patron-test-trace").await;
    broker.close().await;
}

/// Places an order through `orders`' route (`POST /orders`), which answers
/// 202 once the broker confirmed it.
async fn place_order(client: &reqwest::Client, proc: &Proc, body: String, correlation_id: &str) {
    let status = client
        .post(proc.url("/orders"))
        .header("content-type", "application/json")
        .header("x-correlation-id", correlation_id)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
}

/// What `orders` has recorded (`GET /orders/stats`).
async fn order_stats(client: &reqwest::Client, proc: &Proc) -> serde_json::Value {
    client
        .get(proc.url("/orders/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Both of `orders`' connections (the consumer's and the publisher's) are
/// open: each has a receive and a send buffer of 32 frames, which lapin
/// fills with zeros when the broker's 128 KiB frame is taken. Large orders
/// published to its queue (100 of 64 KiB and one of 1 MiB: many frames
/// each) and 50 through its route all arrive, and the process's anonymous
/// memory stays far below the 16 MiB those buffers alone held.
async fn large_orders_in_little_memory(proc: &Proc, broker: &Broker, client: &reqwest::Client) {
    let idle = proc.status_kb("RssAnon");
    let pad = "x".repeat(64 * 1024);
    for id in 100..200 {
        let body = format!(r#"{{"id":{id},"amount":1,"pad":"{pad}"}}"#);
        broker.publish("orders", body.as_bytes(), &[]).await;
    }
    let large = format!(r#"{{"id":200,"amount":2,"pad":"{}"}}"#, "y".repeat(1 << 20));
    broker.publish("orders", large.as_bytes(), &[]).await;
    for id in 300..350 {
        let body = format!(r#"{{"id":{id},"amount":4}}"#);
        place_order(client, proc, body, &format!("order-{id}")).await;
    }
    let stats = || order_stats(client, proc);
    let expected = 1 + 100 + 1 + 50;
    assert!(
        eventually(Duration::from_secs(30), || async {
            stats().await["orders"] == expected
        })
        .await,
        "all {expected} orders recorded: {}",
        stats().await
    );
    assert_eq!(stats().await["total"], 9.5 + 100.0 + 2.0 + 200.0);
    let busy = proc.status_kb("RssAnon");
    eprintln!(
        "orders RssAnon: {idle} kB idle with both connections open, {busy} kB after the large orders"
    );
    assert!(idle < 8 * 1024, "{idle} kB anonymous memory at idle");
    assert!(
        busy < 12 * 1024,
        "{busy} kB anonymous memory after the large orders"
    );
}
