//! SQS consumers against the real SQS-compatible server (moto) from
//! `PATRON_TEST_SQS_ENDPOINT`: delete on success, visibility redelivery on
//! requeue, DLQ after retries, early return of a long poll, no loss across a
//! stop, and trace context from message attributes. Each test uses its own
//! queues.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patron::consumer::sqs::SqsConsumer;
use patron::consumer::{Message, Metadata, OnFailure, handler_fn};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::{eventually, prom, sqs};

const WAIT: Duration = Duration::from_secs(20);

type Seen = Arc<Mutex<Vec<(String, u32)>>>;

/// A dead-lettered message: body and string attributes.
type DeadLetter = (String, std::collections::BTreeMap<String, String>);

#[tokio::test(flavor = "multi_thread")]
async fn deletes_on_success_and_exposes_metadata() {
    let Some(f) = sqs::Fixture::new("ok").await else {
        return;
    };
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    for i in 0..3 {
        sqs::send(
            &client,
            &url,
            &format!("m{i}"),
            &[("X-Correlation-Id", &format!("c{i}"))],
        )
        .await;
    }
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(move |msg: Message<String>| {
            let s = s.clone();
            async move {
                let Metadata::Sqs(meta) = msg.metadata() else {
                    panic!("SQS metadata")
                };
                assert!(!meta.message_id.is_empty());
                assert!(meta.sent_timestamp.is_some());
                assert_eq!(msg.correlation_id(), format!("c{}", &msg.payload()[1..]));
                let count = meta.receive_count;
                s.lock().unwrap().push((msg.into_payload(), count));
            }
        }),
    )
    .wait(Duration::from_secs(1));
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 3 }).await);
    assert!(
        eventually(WAIT, || async { sqs::depth(&client, &url).await == (0, 0) }).await,
        "every message deleted"
    );
    let http = reqwest::Client::new();
    let samples = prom::scrape(&http, &server.url("/metrics")).await;
    assert_eq!(
        prom::value(
            &samples,
            "consumer_messages_total",
            &[("consumer", queue.as_str()), ("outcome", "ack")]
        ),
        Some(3.0)
    );
    assert!(
        prom::value(
            &samples,
            "sqs_queue_messages",
            &[("queue", queue.as_str()), ("state", "visible")]
        )
        .is_some(),
        "queue-depth gauges are published"
    );
    server.shutdown().await.expect("clean shutdown");
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, [("m0".into(), 1), ("m1".into(), 1), ("m2".into(), 1)]);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requeue_makes_the_message_visible_again() {
    let Some(f) = sqs::Fixture::new("requeue").await else {
        return;
    };
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    sqs::send(&client, &url, "again", &[]).await;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(move |msg: Message<String>| {
            let s = s.clone();
            async move {
                let Metadata::Sqs(meta) = msg.metadata() else {
                    panic!()
                };
                let count = meta.receive_count;
                s.lock().unwrap().push((msg.into_payload(), count));
                if count < 2 {
                    Err(patron::Error::msg("not yet"))
                } else {
                    Ok(())
                }
            }
        }),
    )
    .wait(Duration::from_secs(1))
    // A long visibility: only the explicit release makes it come back fast.
    .visibility(Duration::from_secs(120))
    .retries(0)
    .on_failure(OnFailure::Requeue);
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 2 }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(
        *seen.lock().unwrap(),
        [("again".to_string(), 1), ("again".to_string(), 2)]
    );
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await == (0, 0) }).await);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_after_the_retries() {
    let Some(f) = sqs::Fixture::new("dlq").await else {
        return;
    };
    let f = f.with_dlq("-dead").await;
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    let (dlq, dlq_url) = f.dlq();
    sqs::send(&client, &url, r#"{"id":1}"#, &[("tenant", "acme")]).await;
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<String>| {
            let c = c.clone();
            async move {
                *c.lock().unwrap() += 1;
                Err::<(), _>(patron::Error::msg("invoice service down"))
            }
        }),
    )
    .wait(Duration::from_secs(1))
    .retries(2)
    .backoff(Duration::from_millis(10))
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    let dead: Arc<Mutex<Option<DeadLetter>>> = Arc::default();
    assert!(
        eventually(WAIT, || async {
            if dead.lock().unwrap().is_none() {
                let got = sqs::take(&client, &dlq_url).await;
                *dead.lock().unwrap() = got;
            }
            dead.lock().unwrap().is_some()
        })
        .await
    );
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await == (0, 0) }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(*calls.lock().unwrap(), 3, "retries + 1 attempts");
    let (body, attrs) = dead.lock().unwrap().clone().unwrap();
    assert_eq!(body, r#"{"id":1}"#);
    assert_eq!(attrs["x-patron-attempts"], "3");
    assert!(
        attrs["x-patron-error"].contains("invoice service down"),
        "{attrs:?}"
    );
    assert_eq!(attrs["x-patron-original-queue"], queue);
    assert_eq!(attrs["tenant"], "acme", "original attributes kept");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_returns_as_soon_as_a_message_arrives() {
    let Some(f) = sqs::Fixture::new("longpoll").await else {
        return;
    };
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    let seen: Arc<Mutex<Option<Instant>>> = Arc::default();
    let s = seen.clone();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<String>| {
            let s = s.clone();
            async move {
                *s.lock().unwrap() = Some(Instant::now());
            }
        }),
    );
    // The default 20 s wait: the consumer is parked in a long poll.
    let server = f.serve(consumer).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = Instant::now();
    sqs::send(&client, &url, "wake up", &[]).await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().is_some() }).await);
    let latency = seen.lock().unwrap().unwrap() - sent;
    assert!(
        latency < Duration::from_secs(5),
        "handled {latency:?} after sending, well before the 20 s poll ended"
    );
    server.shutdown().await.expect("clean shutdown");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_message_is_lost_across_a_stop() {
    let Some(f) = sqs::Fixture::new("stop").await else {
        return;
    };
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    for i in 0..200 {
        sqs::send(&client, &url, &i.to_string(), &[]).await;
    }
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let consumer = |seen: Arc<Mutex<Vec<u32>>>| {
        SqsConsumer::new(
            &queue,
            handler_fn(move |msg: Message<String>| {
                let seen = seen.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    seen.lock().unwrap().push(msg.payload().parse().unwrap());
                }
            }),
        )
        .wait(Duration::from_secs(1))
        // Messages a cancelled receive handed out come back quickly.
        .visibility(Duration::from_secs(2))
        .concurrency(4)
    };
    let first = f.serve(consumer(seen.clone())).await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() >= 60 }).await);
    first.shutdown().await.expect("clean shutdown");
    let before = seen.lock().unwrap().len();
    assert!(before < 200, "stopped midway ({before})");
    let second = f.serve(consumer(seen.clone())).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            let mut ids = seen.lock().unwrap().clone();
            ids.sort();
            ids.dedup();
            ids.len() == 200
        })
        .await,
        "every message processed at least once"
    );
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await == (0, 0) }).await);
    second.shutdown().await.expect("clean shutdown");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attributes_carry_the_trace_context_and_correlation_id() {
    let Some(f) = sqs::Fixture::new("trace").await else {
        return;
    };
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    sqs::send(
        &client,
        &url,
        "traced",
        &[
            ("traceparent", traceparent),
            ("X-Correlation-Id", "corr-sqs"),
        ],
    )
    .await;
    let outgoing: Arc<Mutex<Option<http::HeaderMap>>> = Arc::default();
    let o = outgoing.clone();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<String>| {
            let o = o.clone();
            async move {
                // What a client call made by this handler would send on.
                let mut headers = http::HeaderMap::new();
                patron::observe::trace::inject(&mut headers);
                *o.lock().unwrap() = Some(headers);
            }
        }),
    )
    .wait(Duration::from_secs(1));
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { outgoing.lock().unwrap().is_some() }).await);
    server.shutdown().await.expect("clean shutdown");
    let headers = outgoing.lock().unwrap().clone().unwrap();
    assert_eq!(headers["traceparent"], traceparent);
    assert_eq!(headers["x-correlation-id"], "corr-sqs");
    f.finish().await;
}

// A consumer declared with the attribute, run in-process with the client the
// service provides.

struct Sink(Mutex<Vec<String>>);

#[patron::consumer(
    sqs = "patron-test-macro-sqs",
    wait = "1s",
    max_messages = 5,
    visibility = "10s",
    concurrency = 2,
    retries = 0
)]
async fn sqs_macro_consumer(msg: Message<String>, sink: Dep<Sink>) -> Result<(), patron::Error> {
    sink.0.lock().unwrap().push(msg.into_payload());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_consumers_use_the_provided_client() {
    let Some(endpoint) = sqs::endpoint() else {
        return;
    };
    let client = sqs::client(&endpoint);
    let url = sqs::create(&client, "patron-test-macro-sqs").await;
    let _ = client.purge_queue().queue_url(&url).send().await;
    for i in 0..4 {
        sqs::send(&client, &url, &format!("m{i}"), &[]).await;
    }
    let defs = patron_tests::registered("sqs_macro_consumer");
    assert_eq!(defs[0].broker, "sqs");
    let sink = Arc::new(Sink(Mutex::default()));
    let service = Service::new("sqs-test")
        .with_consumers(defs)
        .provide(client.clone())
        .provide_arc(sink.clone());
    let server = TestServer::start(service).await.unwrap();
    assert!(eventually(WAIT, || async { sink.0.lock().unwrap().len() == 4 }).await);
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await == (0, 0) }).await);
    let component = patron_tests::info_component(server.base_url(), "sqs_macro_consumer").await;
    assert_eq!(component["kind"], "sqs-consumer");
    server.shutdown().await.expect("clean shutdown");
    sqs::delete(&client, &url).await;
}

/// Issue 17 item 3: under `requeue` an always-failing SQS message is
/// delivered at most `max_deliveries` times (SQS's `ApproximateReceiveCount`
/// counts them), then dropped when no DLQ is named.
#[tokio::test(flavor = "multi_thread")]
async fn requeue_stops_at_max_deliveries() {
    let Some(f) = sqs::Fixture::new("max-deliveries").await else {
        return;
    };
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    sqs::send(&client, &url, "poison", &[]).await;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(move |msg: Message<String>| {
            let s = s.clone();
            async move {
                let deliveries = msg.deliveries();
                s.lock().unwrap().push((msg.into_payload(), deliveries));
                Err::<(), _>(patron::Error::msg("always fails"))
            }
        }),
    )
    .wait(Duration::from_secs(1))
    .visibility(Duration::from_secs(120))
    .retries(0)
    .on_failure(OnFailure::Requeue)
    .max_deliveries(3);
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await == (0, 0) }).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let samples = prom::scrape(&reqwest::Client::new(), &server.url("/metrics")).await;
    let labels = [("consumer", queue.as_str()), ("outcome", "drop")];
    assert_eq!(
        prom::value(&samples, "consumer_messages_total", &labels),
        Some(1.0)
    );
    server.shutdown().await.expect("clean shutdown");
    let expected: Vec<(String, u32)> = (1..=3).map(|n| ("poison".to_string(), n)).collect();
    assert_eq!(
        *seen.lock().unwrap(),
        expected,
        "delivered 3 times, counted"
    );
    f.finish().await;
}

/// Issue 17 item 1: a DLQ that SQS refuses (deleted after the consumer
/// resolved it) keeps the message in the queue, `/ready` names the
/// consumer, and once the DLQ is back the dead letter lands and readiness
/// recovers.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_dead_letter_stays_in_the_queue_and_fails_readiness() {
    let Some(f) = sqs::Fixture::new("dlq-refused").await else {
        return;
    };
    let f = f.with_dlq("-dlq").await;
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    let (dlq, dlq_url) = f.dlq();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(|_msg: Message<Json<serde_json::Value>>| async { Ok::<(), patron::Error>(()) }),
    )
    .wait(Duration::from_secs(1))
    .visibility(Duration::from_secs(2))
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    let http = reqwest::Client::new();
    let ready = || async {
        let r = http.get(server.url("/ready")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert!(eventually(WAIT, || async { ready().await.0 == 200 }).await);
    sqs::delete(&client, &dlq_url).await;
    sqs::send(&client, &url, "not json", &[]).await;
    assert!(
        eventually(WAIT, || async {
            let (status, body) = ready().await;
            status == 503
                && body.contains(&format!("component:{queue}"))
                && body.contains("dead-letter")
        })
        .await,
        "{:?}",
        ready().await
    );
    let (visible, in_flight) = sqs::depth(&client, &url).await;
    assert_eq!(visible + in_flight, 1, "the message stays in the queue");
    let dlq_url = sqs::create(&client, &dlq).await;
    let dead: Arc<Mutex<Option<DeadLetter>>> = Arc::default();
    assert!(
        eventually(Duration::from_secs(30), || async {
            if dead.lock().unwrap().is_none() {
                let got = sqs::take(&client, &dlq_url).await;
                *dead.lock().unwrap() = got;
            }
            dead.lock().unwrap().is_some()
        })
        .await,
        "the dead letter lands once the DLQ is back"
    );
    assert!(eventually(WAIT, || async { ready().await.0 == 200 }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(dead.lock().unwrap().clone().unwrap().0, "not json");
    assert!(eventually(WAIT, || async { sqs::depth(&client, &url).await == (0, 0) }).await);
    f.finish().await;
}

/// Issue 17 item 2: the SQS dead letter keeps the original attributes with
/// their data types, and adds as many `x-patron-*` as the limit of 10
/// leaves room for.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_keeps_typed_attributes_within_the_limit() {
    use aws_sdk_sqs::types::MessageAttributeValue;
    let Some(f) = sqs::Fixture::new("dlq-typed").await else {
        return;
    };
    let f = f.with_dlq("-dlq").await;
    let (client, queue, url) = (f.client.clone(), f.queue.clone(), f.url.clone());
    let (dlq, dlq_url) = f.dlq();
    let mut send = client.send_message().queue_url(&url).message_body("x");
    send = send.message_attributes(
        "amount",
        MessageAttributeValue::builder()
            .data_type("Number")
            .string_value("42.5")
            .build()
            .unwrap(),
    );
    send = send.message_attributes(
        "blob",
        MessageAttributeValue::builder()
            .data_type("Binary")
            .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0u8, 159, 146, 150]))
            .build()
            .unwrap(),
    );
    for i in 0..6 {
        send = send.message_attributes(
            format!("a{i}"),
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(format!("v{i}"))
                .build()
                .unwrap(),
        );
    }
    send.send().await.unwrap();
    let consumer = SqsConsumer::new(
        &queue,
        handler_fn(|_msg: Message<String>| async {
            Err::<(), _>(patron::Error::msg("always fails"))
        }),
    )
    .wait(Duration::from_secs(1))
    .retries(0)
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    let mut got = None;
    let deadline = Instant::now() + WAIT;
    while got.is_none() && Instant::now() < deadline {
        let out = client
            .receive_message()
            .queue_url(&dlq_url)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        got = out.messages.and_then(|m| m.into_iter().next());
    }
    server.shutdown().await.expect("clean shutdown");
    let attrs = got
        .expect("a dead letter")
        .message_attributes
        .unwrap_or_default();
    assert_eq!(attrs.len(), 10, "{attrs:?}");
    assert_eq!(attrs["amount"].data_type(), "Number");
    assert_eq!(attrs["amount"].string_value(), Some("42.5"));
    assert_eq!(attrs["blob"].data_type(), "Binary");
    assert_eq!(
        attrs["blob"].binary_value().map(|b| b.as_ref().to_vec()),
        Some(vec![0u8, 159, 146, 150])
    );
    for i in 0..6 {
        assert_eq!(
            attrs[&format!("a{i}")].string_value(),
            Some(format!("v{i}").as_str())
        );
    }
    assert!(attrs.contains_key("x-patron-error") && attrs.contains_key("x-patron-attempts"));
    f.finish().await;
}
