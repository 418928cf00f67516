//! AMQP consumers against the real RabbitMQ from `PATRON_TEST_AMQP_URL`:
//! acknowledgement, retries, every failure strategy, poison messages,
//! prefetch, concurrency, batches, reconnection and credentials. Each test
//! uses its own queues.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patron::consumer::amqp::AmqpConsumer;
use patron::consumer::{Batch, Message, Metadata, OnFailure, batch_handler_fn, handler_fn};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::amqp::{self, Broker};
use patron_tests::eventually;
use patron_tests::prom::metric;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Order {
    id: u32,
}

/// What handlers saw.
#[derive(Default)]
struct Probe {
    calls: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

impl Probe {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
    fn enter(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn acknowledges_on_success_and_exposes_the_message() {
    let Some(f) = amqp::Fixture::new("ack").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    for id in 0..5 {
        broker
            .publish(
                &queue,
                format!(r#"{{"id":{id}}}"#).as_bytes(),
                &[
                    ("X-Correlation-Id", &format!("corr-{id}")),
                    ("tenant", "acme"),
                ],
            )
            .await;
    }
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let q = queue.clone();
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |msg: Message<Json<Order>>| {
            let p = p.clone();
            let q = q.clone();
            async move {
                p.enter();
                let Metadata::Amqp(meta) = msg.metadata() else {
                    panic!("AMQP metadata expected")
                };
                assert_eq!(meta.queue, q);
                assert_eq!(meta.routing_key, q);
                assert!(!meta.redelivered);
                assert_eq!(msg.headers().get("tenant"), Some("acme"));
                assert_eq!(msg.correlation_id(), format!("corr-{}", msg.id));
                // The message's correlation id is the task's, for logs and clients.
                assert_eq!(
                    CorrelationId::current().map(|c| c.as_str().to_string()),
                    Some(msg.correlation_id().to_string())
                );
                p.seen.lock().unwrap().push(msg.id.to_string());
                p.leave();
                Ok::<(), patron::Error>(())
            }
        }),
    );
    let server = f.serve(consumer).await;
    assert!(
        eventually(WAIT, || async { probe.calls() == 5 }).await,
        "5 messages handled"
    );
    let labels = [("consumer", queue.as_str()), ("outcome", "ack")];
    assert!(
        eventually(WAIT, || async {
            metric(&server, "consumer_messages_total", &labels).await == 5.0
        })
        .await
    );
    let count = metric(
        &server,
        "consumer_message_duration_seconds_count",
        &[
            ("consumer", queue.as_str()),
            ("messaging_system", "rabbitmq"),
        ],
    )
    .await;
    assert_eq!(count, 5.0);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(broker.depth(&queue).await, 0, "every message acknowledged");
    let mut seen = probe.seen();
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4"]);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_then_dead_letters_with_error_headers() {
    let Some(f) = amqp::Fixture::new("retry").await else {
        return;
    };
    let f = f.with_dlq(".dead").await;
    let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
    broker
        .publish(&queue, br#"{"id":7}"#, &[("X-Correlation-Id", "c-7")])
        .await;
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |msg: Message<Json<Order>>| {
            let p = p.clone();
            async move {
                p.enter();
                p.seen.lock().unwrap().push(msg.attempt().to_string());
                p.leave();
                Err::<(), _>(patron::Error::msg(format!(
                    "ledger unavailable for {}",
                    msg.id
                )))
            }
        }),
    )
    .declare(true)
    .retries(2)
    .backoff(Duration::from_millis(10))
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    assert!(
        eventually(WAIT, || async { broker.depth(&dlq).await == 1 }).await,
        "the message reaches the DLQ"
    );
    assert_eq!(probe.calls(), 3, "retries + 1 attempts");
    assert_eq!(probe.seen(), ["1", "2", "3"]);
    let retries = metric(
        &server,
        "consumer_messages_total",
        &[("consumer", queue.as_str()), ("outcome", "retry")],
    )
    .await;
    assert_eq!(retries, 2.0);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(broker.depth(&queue).await, 0);
    let (body, headers) = broker.get(&dlq).await.expect("a dead letter");
    assert_eq!(body, br#"{"id":7}"#);
    assert!(
        headers["x-patron-error"].contains("ledger unavailable for 7"),
        "{headers:?}"
    );
    assert_eq!(headers["x-patron-attempts"], "3");
    assert_eq!(headers["x-patron-original-queue"], queue);
    assert_eq!(headers["x-patron-original-routing-key"], queue);
    assert_eq!(headers["x-patron-original-exchange"], "");
    assert_eq!(headers["X-Correlation-Id"], "c-7", "original headers kept");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_json_goes_to_the_dlq_without_retries() {
    let Some(f) = amqp::Fixture::new("poison").await else {
        return;
    };
    let f = f.with_dlq(".dlq").await;
    let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
    broker.publish(&queue, b"{not json", &[]).await;
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    // requeue would loop on a poison message: it becomes dlq.
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<Json<Order>>| {
            let p = p.clone();
            async move {
                p.enter();
                p.leave();
                Ok::<(), patron::Error>(())
            }
        }),
    )
    .declare(true)
    .retries(5)
    .on_failure(OnFailure::Requeue)
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { broker.depth(&dlq).await == 1 }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(probe.calls(), 0, "the handler never sees a poison message");
    let (body, headers) = broker.get(&dlq).await.expect("a dead letter");
    assert_eq!(body, b"{not json");
    assert_eq!(headers["x-patron-attempts"], "1", "no retries");
    assert!(
        headers["x-patron-error"].contains("invalid JSON"),
        "{headers:?}"
    );
    assert_eq!(broker.depth(&queue).await, 0);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requeue_redelivers_until_the_handler_succeeds() {
    let Some(f) = amqp::Fixture::new("requeue").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    broker.publish(&queue, b"hello", &[]).await;
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |msg: Message<String>| {
            let p = p.clone();
            async move {
                p.enter();
                let Metadata::Amqp(meta) = msg.metadata() else {
                    panic!()
                };
                p.seen
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", meta.redelivered, msg.deliveries()));
                p.leave();
                if p.calls() < 3 {
                    Err(patron::Error::msg("not yet"))
                } else {
                    Ok(())
                }
            }
        }),
    )
    .retries(0)
    .on_failure(OnFailure::Requeue);
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { probe.calls() == 3 }).await);
    let labels = [("consumer", queue.as_str()), ("outcome", "requeue")];
    assert!(
        eventually(WAIT, || async {
            metric(&server, "consumer_messages_total", &labels).await == 2.0
        })
        .await
    );
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(
        probe.seen(),
        ["false 1", "false 2", "false 3"],
        "put back as a counted copy, delivered again"
    );
    assert_eq!(broker.depth(&queue).await, 0);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_acknowledges_after_the_retries_and_panics_count_as_failures() {
    let Some(f) = amqp::Fixture::new("drop").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    broker.publish(&queue, b"x", &[]).await;
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<String>| {
            let p = p.clone();
            async move {
                p.enter();
                p.leave();
                if p.calls() == 1 {
                    panic!("a handler bug");
                }
                Err::<(), _>(patron::Error::msg("always"))
            }
        }),
    )
    .retries(1)
    .backoff(Duration::from_millis(5))
    .on_failure(OnFailure::Drop);
    let server = f.serve(consumer).await;
    let labels = [("consumer", queue.as_str()), ("outcome", "drop")];
    assert!(
        eventually(WAIT, || async {
            metric(&server, "consumer_messages_total", &labels).await == 1.0
        })
        .await
    );
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(probe.calls(), 2);
    assert_eq!(broker.depth(&queue).await, 0, "dropped means acknowledged");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_stops_the_service_and_leaves_the_message() {
    let Some(f) = amqp::Fixture::new("exit").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    broker.publish(&queue, b"fatal", &[]).await;
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(|_msg: Message<String>| async {
            Err::<(), _>(patron::Error::msg("schema mismatch"))
        }),
    )
    .name("exiting")
    .retries(0)
    .on_failure(OnFailure::Exit);
    let server = f.serve(consumer).await;
    let result = tokio::time::timeout(WAIT, server.join())
        .await
        .expect("the service stops on its own");
    let err = result.expect_err("the service fails").to_string();
    assert!(
        err.contains("exiting")
            && err.contains("on_failure = exit")
            && err.contains("schema mismatch"),
        "{err}"
    );
    assert!(
        eventually(WAIT, || async { broker.depth(&queue).await == 1 }).await,
        "the message stays in the queue"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_bounds_the_messages_in_flight() {
    let Some(f) = amqp::Fixture::new("prefetch").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    for i in 0..10 {
        broker.publish(&queue, i.to_string().as_bytes(), &[]).await;
    }
    let probe = Arc::new(Probe::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (p, g) = (probe.clone(), gate.clone());
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<String>| {
            let (p, g) = (p.clone(), g.clone());
            async move {
                p.enter();
                let _ = g.acquire().await.map(|permit| permit.forget());
                p.leave();
            }
        }),
    )
    .prefetch(3)
    .concurrency(10);
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { probe.calls() == 3 }).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        probe.calls(),
        3,
        "no fourth message before one is acknowledged"
    );
    assert_eq!(
        broker.depth(&queue).await,
        7,
        "the rest stays in the broker"
    );
    gate.add_permits(10);
    assert!(eventually(WAIT, || async { probe.calls() == 10 }).await);
    assert_eq!(probe.max_running.load(Ordering::SeqCst), 3);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(broker.depth(&queue).await, 0);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_runs_handlers_in_parallel() {
    let Some(f) = amqp::Fixture::new("parallel").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    for i in 0..8 {
        broker.publish(&queue, i.to_string().as_bytes(), &[]).await;
    }
    let probe = Arc::new(Probe::default());
    // Four handlers must be inside at once for any of them to finish.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let (p, b) = (probe.clone(), barrier.clone());
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<String>| {
            let (p, b) = (p.clone(), b.clone());
            async move {
                p.enter();
                let waited = tokio::time::timeout(Duration::from_secs(5), b.wait()).await;
                p.leave();
                waited
                    .map(|_| ())
                    .map_err(|_| patron::Error::msg("handlers did not run in parallel"))
            }
        }),
    )
    .concurrency(4)
    .retries(0)
    .on_failure(OnFailure::Drop);
    let server = f.serve(consumer).await;
    let labels = [("consumer", queue.as_str()), ("outcome", "ack")];
    assert!(
        eventually(WAIT, || async {
            metric(&server, "consumer_messages_total", &labels).await == 8.0
        })
        .await
    );
    assert_eq!(probe.max_running.load(Ordering::SeqCst), 4);
    server.shutdown().await.expect("clean shutdown");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_fill_or_time_out_and_settle_per_message() {
    let Some(f) = amqp::Fixture::new("batch").await else {
        return;
    };
    let f = f.with_dlq(".dlq").await;
    let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
    for word in ["a", "bad", "c", "d", "e", "f"] {
        broker.publish(&queue, word.as_bytes(), &[]).await;
    }
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = sizes.clone();
    let consumer = AmqpConsumer::batch(
        &queue,
        batch_handler_fn(move |batch: Batch<String>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(batch.len());
                for (i, msg) in batch.iter().enumerate() {
                    if msg.payload() == "bad" {
                        batch.nack(i, "bad word");
                    }
                }
                Ok::<(), patron::Error>(())
            }
        }),
        4,
        Duration::from_millis(300),
    )
    .declare(true)
    .on_failure(OnFailure::Dlq);
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { broker.depth(&dlq).await == 1 }).await);
    let acked = [("consumer", queue.as_str()), ("outcome", "ack")];
    assert!(
        eventually(WAIT, || async {
            metric(&server, "consumer_messages_total", &acked).await == 5.0
        })
        .await
    );
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(
        *sizes.lock().unwrap(),
        [4, 2],
        "a full batch, then one cut by the timeout"
    );
    let (body, headers) = broker.get(&dlq).await.expect("the nacked message");
    assert_eq!(body, b"bad");
    assert_eq!(headers["x-patron-error"], "bad word");
    assert_eq!(broker.depth(&queue).await, 0);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_connection_loss_and_reports_not_ready() {
    let Some(f) = amqp::Fixture::new("reconnect").await else {
        return;
    };
    let queue = f.queue.clone();
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |msg: Message<String>| {
            let p = p.clone();
            async move {
                p.enter();
                p.seen.lock().unwrap().push(msg.into_payload());
                p.leave();
            }
        }),
    );
    let server = f.serve(consumer).await;
    let client = reqwest::Client::new();
    let ready = || async {
        client
            .get(server.url("/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert!(
        eventually(WAIT, || async { ready().await == 200 }).await,
        "ready once consuming"
    );

    let publisher = Broker::connect(&f.url).await;
    for i in 0..10 {
        publisher
            .publish(&queue, format!("m{i}").as_bytes(), &[])
            .await;
    }
    assert!(eventually(WAIT, || async { probe.seen().len() >= 10 }).await);
    assert_eq!(
        amqp::close_connections_named(&queue),
        1,
        "the consumer's connection"
    );
    // The consumer waits at least 0.5 s before reconnecting: /ready says 503.
    let mut saw_503 = false;
    for _ in 0..100 {
        if ready().await == 503 {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_503, "/ready answered 503 while the broker was gone");
    let publisher = Broker::connect(&f.url).await;
    for i in 10..20 {
        publisher
            .publish(&queue, format!("m{i}").as_bytes(), &[])
            .await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            let seen = probe.seen();
            (0..20).all(|i| seen.contains(&format!("m{i}")))
        })
        .await,
        "the stream finishes after reconnecting"
    );
    assert!(
        eventually(WAIT, || async { ready().await == 200 }).await,
        "ready again"
    );
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(publisher.depth(&queue).await, 0);
    publisher.close().await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_never_appear_in_readiness_or_errors() {
    let Some(url) = amqp::url() else { return };
    // The right host with a wrong password.
    let Some(rest) = url.split('@').nth(1) else {
        panic!("PATRON_TEST_AMQP_URL has no credentials: {url}")
    };
    let bad = format!("amqp://guest:s3cr3t-pw@{rest}");
    let consumer = AmqpConsumer::new(
        "patron-test-never-consumed",
        handler_fn(|_m: Message<String>| async {}),
    );
    let mut service = Service::new("amqp-test")
        .with_consumers(std::iter::empty())
        .with_component(consumer.url(&bad));
    service.config_mut().shutdown_timeout = Duration::from_secs(2);
    let server = TestServer::start(service).await.unwrap();
    let client = reqwest::Client::new();
    let last = Arc::new(Mutex::new(String::new()));
    assert!(
        eventually(WAIT, || async {
            let r = client.get(server.url("/ready")).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            *last.lock().unwrap() = text.clone();
            status == 503 && text.contains("cannot connect")
        })
        .await,
        "{}",
        last.lock().unwrap()
    );
    let body = last.lock().unwrap().clone();
    assert!(!body.contains("s3cr3t-pw"), "{body}");
    assert!(body.contains("guest:***@"), "{body}");
    server.shutdown().await.expect("clean shutdown");

    // A URL lapin cannot read stops the service with the reason, at once,
    // instead of retrying a connection that can never open.
    let malformed = format!("amqp://guest:s3cr3t-pw@{rest}?frame_max=64k");
    let consumer = AmqpConsumer::new(
        "patron-test-never-consumed",
        handler_fn(|_m: Message<String>| async {}),
    );
    let service = Service::new("amqp-test")
        .with_consumers(std::iter::empty())
        .with_component(consumer.url(&malformed));
    let server = TestServer::start(service).await.unwrap();
    let err = tokio::time::timeout(WAIT, server.join())
        .await
        .expect("the service stops by itself")
        .expect_err("the bad URL is reported");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "AMQP consumer patron-test-never-consumed: invalid AMQP URL amqp://guest:***@{rest}?frame_max=64k: invalid digit found in string"
        )),
        "{text}"
    );
    assert!(!text.contains("s3cr3t-pw"), "{text}");
}

// A consumer declared with the attribute, run in-process.

struct Sink(Mutex<BTreeMap<u32, usize>>);

#[patron::consumer(
    amqp = "patron-test-macro",
    declare = true,
    retries = 0,
    concurrency = 2
)]
async fn macro_consumer(msg: Message<Json<Order>>, sink: Dep<Sink>) -> Result<(), patron::Error> {
    *sink.0.lock().unwrap().entry(msg.id).or_default() += 1;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_consumers_register_and_take_dependencies() {
    let Some(url) = amqp::url() else { return };
    let broker = Broker::connect(&url).await;
    broker.fresh_queue("patron-test-macro").await;
    let defs = patron_tests::registered("macro_consumer");
    assert_eq!(defs[0].destination, "patron-test-macro");

    // Without the dependency, start-up fails naming the consumer and type.
    let missing = Service::new("amqp-test").with_consumers(defs.clone());
    let err = TestServer::start(missing).await.unwrap_err().to_string();
    assert!(
        err.contains("macro_consumer") && err.contains("Dep<Sink>"),
        "{err}"
    );

    for id in 0..3 {
        let body = format!(r#"{{"id":{id}}}"#);
        broker
            .publish("patron-test-macro", body.as_bytes(), &[])
            .await;
    }
    let sink = Arc::new(Sink(Mutex::default()));
    let mut service = Service::new("amqp-test")
        .with_consumers(defs)
        .provide_arc(sink.clone());
    service.config_mut().amqp_url = patron::config::BrokerUrl::new(&url);
    let server = TestServer::start(service).await.unwrap();
    assert!(eventually(WAIT, || async { sink.0.lock().unwrap().len() == 3 }).await);
    let component = patron_tests::info_component(server.base_url(), "macro_consumer").await;
    assert_eq!(component["kind"], "amqp-consumer");
    assert_eq!(component["details"]["queue"], "patron-test-macro");
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(broker.depth("patron-test-macro").await, 0);
    broker.delete("patron-test-macro").await;
    broker.close().await;
}

/// Issue 17 item 1: with the DLQ missing (`declare = false`, a mistyped or
/// deleted queue) the broker returns the `mandatory` copy; the original
/// must stay unacknowledged, `/ready` must name the consumer and the DLQ,
/// and the copy must land once the DLQ exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_with_nowhere_to_go_keeps_the_original_and_fails_readiness() {
    let Some(f) = amqp::Fixture::new("dlq-missing").await else {
        return;
    };
    let f = f.with_dlq(".dlq").await;
    let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
    broker.publish(&queue, b"{not json", &[]).await;
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(|_msg: Message<Json<Order>>| async { Ok::<(), patron::Error>(()) }),
    )
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    let http = reqwest::Client::new();
    let ready = || async {
        let r = http
            .get(server.url("/ready"))
            .send()
            .await
            .expect("GET /ready");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert!(
        eventually(WAIT, || async {
            let (status, body) = ready().await;
            status == 503 && body.contains(&format!("component:{queue}")) && body.contains(&dlq)
        })
        .await,
        "/ready names the consumer and the DLQ: {:?}",
        ready().await
    );
    // The original is neither acked nor dropped: it is held unacknowledged.
    assert_eq!(broker.depth(&dlq).await, 0, "no DLQ yet");
    let dead = metric(
        &server,
        "consumer_messages_total",
        &[("consumer", queue.as_str()), ("outcome", "dlq")],
    )
    .await;
    assert_eq!(dead, 0.0, "a returned dead letter does not count");
    // Create the DLQ: the held message lands there and readiness recovers.
    broker.fresh_queue(&dlq).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            broker.depth(&dlq).await == 1
        })
        .await,
        "the dead letter lands once the DLQ exists"
    );
    assert!(
        eventually(WAIT, || async { ready().await.0 == 200 }).await,
        "/ready recovers: {:?}",
        ready().await
    );
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(broker.depth(&queue).await, 0, "acked once dead-lettered");
    let (body, _) = broker.get(&dlq).await.expect("the dead letter");
    assert_eq!(body, b"{not json");
    f.finish().await;
}

/// Issue 17 item 1, at shutdown: a dead letter that cannot land sends the
/// original back to its queue; nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_dead_letter_goes_back_to_its_queue_at_shutdown() {
    let Some(f) = amqp::Fixture::new("dlq-held").await else {
        return;
    };
    let f = f.with_dlq(".nowhere").await;
    let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
    broker.publish(&queue, b"{not json", &[]).await;
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(|_msg: Message<Json<Order>>| async { Ok::<(), patron::Error>(()) }),
    )
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    let http = reqwest::Client::new();
    assert!(
        eventually(WAIT, || async {
            let r = http
                .get(server.url("/ready"))
                .send()
                .await
                .expect("GET /ready");
            r.status() == 503
        })
        .await
    );
    server.shutdown().await.expect("clean shutdown");
    assert!(
        eventually(WAIT, || async { broker.depth(&queue).await == 1 }).await,
        "the original is back in its queue"
    );
    f.finish().await;
}

/// Issue 17 item 2: the dead letter is the original — every property and
/// typed header — plus the `x-patron-*` headers, so it can be re-driven.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_a_faithful_copy_of_the_original() {
    use lapin::BasicProperties;
    use lapin::options::{BasicGetOptions, BasicPublishOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let Some(f) = amqp::Fixture::new("dlq-copy").await else {
        return;
    };
    let f = f.declared_dlq(".dlq").await;
    let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
    let mut nested = FieldTable::default();
    nested.insert("region".into(), AMQPValue::LongString("eu".into()));
    let mut headers = FieldTable::default();
    headers.insert("count".into(), AMQPValue::LongInt(42));
    headers.insert("flag".into(), AMQPValue::Boolean(true));
    headers.insert("nested".into(), AMQPValue::FieldTable(nested.clone()));
    headers.insert(
        "list".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString("a".into())].into()),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("identity".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr-9".into())
        .with_reply_to("replies".into())
        .with_message_id("msg-9".into())
        .with_timestamp(1_700_000_000)
        .with_type("order.created".into())
        .with_app_id("shop".into());
    broker
        .channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            br#"{"id":9}"#,
            props.clone(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(|_msg: Message<Json<Order>>| async {
            Err::<(), _>(patron::Error::msg("always fails"))
        }),
    )
    .retries(0)
    .dlq(&dlq);
    let server = f.serve(consumer).await;
    assert!(eventually(WAIT, || async { broker.depth(&dlq).await == 1 }).await);
    server.shutdown().await.expect("clean shutdown");
    let got = broker
        .channel
        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("a dead letter");
    let p = &got.delivery.properties;
    assert_eq!(got.delivery.data, br#"{"id":9}"#);
    assert_eq!(p.content_type(), props.content_type());
    assert_eq!(p.content_encoding(), props.content_encoding());
    assert_eq!(p.priority(), props.priority());
    assert_eq!(p.correlation_id(), props.correlation_id());
    assert_eq!(p.reply_to(), props.reply_to());
    assert_eq!(p.message_id(), props.message_id());
    assert_eq!(p.timestamp(), props.timestamp());
    assert_eq!(p.kind(), props.kind());
    assert_eq!(p.app_id(), props.app_id());
    let h = p.headers().clone().expect("headers");
    let h = h.inner();
    assert_eq!(h.get("count"), Some(&AMQPValue::LongInt(42)));
    assert_eq!(h.get("flag"), Some(&AMQPValue::Boolean(true)));
    assert_eq!(h.get("nested"), Some(&AMQPValue::FieldTable(nested)));
    assert!(matches!(h.get("list"), Some(AMQPValue::FieldArray(a)) if a.as_slice().len() == 1));
    assert!(h.contains_key("x-patron-error"), "{h:?}");
    assert_eq!(h.get("x-patron-attempts"), Some(&AMQPValue::LongLongInt(1)));
    assert!(
        !h.contains_key("X-Correlation-Id"),
        "the correlation id stays a property, not a new header"
    );
    f.finish().await;
}

/// A consumer of `queue` whose handler always fails, counting its calls and
/// the delivery numbers it saw.
fn always_failing(queue: &str, probe: &Arc<Probe>) -> AmqpConsumer {
    let p = probe.clone();
    AmqpConsumer::new(
        queue,
        handler_fn(move |msg: Message<String>| {
            let p = p.clone();
            async move {
                p.enter();
                p.seen.lock().unwrap().push(msg.deliveries().to_string());
                p.leave();
                Err::<(), _>(patron::Error::msg("always fails"))
            }
        }),
    )
    .retries(0)
}

/// Issue 17 item 3: under `requeue` an always-failing message is delivered
/// at most `max_deliveries` times, counted across redeliveries, then goes
/// to the DLQ — or, with none named, is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn requeue_stops_at_max_deliveries() {
    for with_dlq in [true, false] {
        let Some(f) = amqp::Fixture::new("max-deliveries").await else {
            return;
        };
        let f = f.declared_dlq(".dlq").await;
        let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
        broker.publish(&queue, b"poison pill", &[]).await;
        let probe = Arc::new(Probe::default());
        let mut consumer = always_failing(&queue, &probe)
            .on_failure(OnFailure::Requeue)
            .max_deliveries(3);
        if with_dlq {
            consumer = consumer.dlq(&dlq);
        }
        let server = f.serve(consumer).await;
        let outcome = if with_dlq { "dlq" } else { "drop" };
        let labels = [("consumer", queue.as_str()), ("outcome", outcome)];
        assert!(
            eventually(WAIT, || async {
                metric(&server, "consumer_messages_total", &labels).await == 1.0
            })
            .await,
            "{outcome} after the last delivery"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.shutdown().await.expect("clean shutdown");
        assert_eq!(probe.seen(), ["1", "2", "3"], "delivered 3 times, counted");
        assert_eq!(broker.depth(&queue).await, 0);
        if with_dlq {
            let (body, headers) = broker.get(&dlq).await.expect("a dead letter");
            assert_eq!(body, b"poison pill");
            assert!(
                headers["x-patron-error"].contains("max_deliveries = 3"),
                "{headers:?}"
            );
        } else {
            assert_eq!(broker.depth(&dlq).await, 0);
        }
        f.finish().await;
    }
}

/// Issue 17 item 3: `exit` puts the message back counted, so a classic
/// queue's message that stops the service is, on the next run, on its
/// last allowed delivery: it is dropped instead of stopping the service
/// again.
#[tokio::test(flavor = "multi_thread")]
async fn exit_is_counted_across_service_runs() {
    let Some(f) = amqp::Fixture::new("exit-counted").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    broker.publish(&queue, b"fatal", &[]).await;
    let probe = Arc::new(Probe::default());
    let run = || {
        always_failing(&queue, &probe)
            .on_failure(OnFailure::Exit)
            .max_deliveries(2)
    };
    let first = f.serve(run()).await;
    let stopped = tokio::time::timeout(WAIT, first.join())
        .await
        .expect("the first run stops on its own");
    assert!(stopped.is_err(), "exit stops the service");
    assert!(eventually(WAIT, || async { broker.depth(&queue).await == 1 }).await);
    let second = f.serve(run()).await;
    let labels = [("consumer", queue.as_str()), ("outcome", "drop")];
    assert!(
        eventually(WAIT, || async {
            metric(&second, "consumer_messages_total", &labels).await == 1.0
        })
        .await,
        "dropped on its last allowed delivery"
    );
    second
        .shutdown()
        .await
        .expect("the second run goes on and stops cleanly");
    assert_eq!(probe.seen(), ["1", "2"]);
    assert_eq!(broker.depth(&queue).await, 0);
    f.finish().await;
}

/// Issue 17 item 3: a message that arrives past the limit (here a quorum
/// queue's `x-delivery-count` of 20) never reaches the handler.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_past_max_deliveries_never_reaches_the_handler() {
    let Some(f) = amqp::Fixture::new("past-limit").await else {
        return;
    };
    let f = f.declared_dlq(".dlq").await;
    let (broker, queue, dlq) = (&f.broker, f.queue.clone(), f.dlq().to_string());
    broker
        .publish(&queue, b"old", &[("x-delivery-count", "20")])
        .await;
    let probe = Arc::new(Probe::default());
    let server = f.serve(always_failing(&queue, &probe).dlq(&dlq)).await;
    assert!(eventually(WAIT, || async { broker.depth(&dlq).await == 1 }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(probe.calls(), 0, "the handler never saw it");
    let (_, headers) = broker.get(&dlq).await.expect("a dead letter");
    assert!(
        headers["x-patron-error"].contains("delivered 21 times"),
        "{headers:?}"
    );
    f.finish().await;
}

// Shutdown with a message in its handler. With `concurrency = 1` (the
// default) the consumer's own task runs each handler; these pin down that
// it waits for the handler as a spawned one's drain would, and gives up on
// it after the shutdown timeout without acknowledging it.

#[tokio::test(flavor = "multi_thread")]
async fn a_message_in_its_handler_at_shutdown_finishes_and_is_acknowledged() {
    let Some(f) = amqp::Fixture::new("drain-finish").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    broker.publish(&queue, b"slow", &[]).await;
    let probe = Arc::new(Probe::default());
    let p = Arc::clone(&probe);
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |_msg: Message<String>| {
            let p = Arc::clone(&p);
            async move {
                p.enter();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                p.seen.lock().unwrap().push("finished".into());
                p.leave();
            }
        }),
    )
    .url(&f.url);
    let server = patron_tests::serve_consumer("amqp-test", consumer, Duration::from_secs(10)).await;
    assert!(eventually(WAIT, || async { probe.calls() == 1 }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(probe.seen(), ["finished"], "the handler ran to its end");
    assert_eq!(
        broker.depth(&queue).await,
        0,
        "its message was acknowledged"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_stuck_past_the_shutdown_timeout_is_abandoned_and_redelivered() {
    let Some(f) = amqp::Fixture::new("drain-stuck").await else {
        return;
    };
    let (broker, queue) = (&f.broker, f.queue.clone());
    broker.publish(&queue, b"m0", &[]).await;
    broker.publish(&queue, b"m1", &[]).await;
    let probe = Arc::new(Probe::default());
    let p = Arc::clone(&probe);
    let consumer = AmqpConsumer::new(
        &queue,
        handler_fn(move |msg: Message<String>| {
            let p = Arc::clone(&p);
            async move {
                p.enter();
                let body: String = (*msg).clone();
                p.seen.lock().unwrap().push(body.clone());
                if body == "m1" {
                    std::future::pending::<()>().await;
                }
            }
        }),
    )
    .url(&f.url);
    let server = patron_tests::serve_consumer("amqp-test", consumer, Duration::from_secs(1)).await;
    assert!(eventually(WAIT, || async { probe.calls() == 2 }).await);
    patron_tests::shuts_down_within(server, Duration::from_secs(8)).await;
    assert_eq!(probe.seen(), ["m0", "m1"]);
    assert!(
        eventually(WAIT, || async { broker.depth(&queue).await == 1 }).await,
        "m1 is back in the queue, m0 is not"
    );
    assert_eq!(
        broker.get(&queue).await.map(|(body, _)| body),
        Some(b"m1".to_vec())
    );
    f.finish().await;
}
