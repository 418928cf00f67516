//! `patron::test::Broker`, the in-memory broker: the outcome table — ack,
//! retries then DLQ, poison, drop, requeue up to the delivery limit, exit —
//! run on the in-memory broker and on the real RabbitMQ with the same
//! consumer, and the outcomes, handler calls, metrics and dead letters
//! compared. Also: `#[patron::consumer]`s with provided dependencies, and
//! clear errors for what the broker cannot run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use patron::consumer::amqp::AmqpConsumer;
use patron::consumer::{Message, OnFailure, batch_handler_fn, handler_fn};
use patron::prelude::*;
use patron::test::{Broker, Outcome};
use patron_tests::{amqp, eventually, prom};

#[derive(Deserialize, Serialize, schemars::JsonSchema)]
struct Command {
    act: String,
}

/// A handler that succeeds on `{"act":"ok"}` and fails otherwise, counting
/// its calls.
fn handler(calls: &Arc<AtomicU32>) -> impl patron::consumer::MessageHandler {
    let calls = Arc::clone(calls);
    handler_fn(move |msg: Message<Json<Command>>| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            match msg.act.as_str() {
                "ok" => Ok(()),
                other => Err(patron::Error::msg(format!("cannot {other}"))),
            }
        }
    })
}

/// One row of the outcome table.
struct Scenario {
    name: &'static str,
    body: &'static [u8],
    configure: fn(AmqpConsumer, &str) -> AmqpConsumer,
    /// The `outcome` label of `consumer_messages_total` it ends with.
    outcome: &'static str,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "ok",
            body: br#"{"act":"ok"}"#,
            configure: |c, dlq| c.retries(2).backoff(Duration::from_millis(10)).dlq(dlq),
            outcome: "ack",
        },
        Scenario {
            name: "retries-then-dlq",
            body: br#"{"act":"fail"}"#,
            configure: |c, dlq| c.retries(2).backoff(Duration::from_millis(10)).dlq(dlq),
            outcome: "dlq",
        },
        Scenario {
            name: "poison",
            body: b"not json",
            configure: |c, dlq| c.retries(2).backoff(Duration::from_millis(10)).dlq(dlq),
            outcome: "dlq",
        },
        Scenario {
            name: "drop",
            body: br#"{"act":"fail"}"#,
            configure: |c, _| {
                c.retries(1)
                    .backoff(Duration::from_millis(10))
                    .on_failure(OnFailure::Drop)
            },
            outcome: "drop",
        },
        Scenario {
            name: "requeue-limit",
            body: br#"{"act":"fail"}"#,
            configure: |c, dlq| {
                c.retries(0)
                    .on_failure(OnFailure::Requeue)
                    .max_deliveries(3)
                    .dlq(dlq)
            },
            outcome: "dlq",
        },
    ]
}

/// `consumer_messages_total` of `consumer`, by outcome.
fn outcomes(samples: &[prom::Sample], consumer: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|(name, labels, _)| {
            name == "consumer_messages_total"
                && labels.get("consumer").map(String::as_str) == Some(consumer)
        })
        .filter(|(_, _, v)| *v > 0.0)
        .map(|(_, labels, v)| (labels["outcome"].clone(), *v))
        .collect()
}

/// The outcomes that settle a message (not `retry` or `requeue`, which
/// come before).
fn terminal(outcomes: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    outcomes
        .iter()
        .filter(|(k, _)| *k != "retry" && *k != "requeue")
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The `x-patron-*` headers a dead letter must carry, with the values that
/// do not depend on time.
fn patron_headers(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-patron-") && *k != "x-patron-failed-at")
        .filter(|(k, _)| !k.starts_with("x-patron-original-") || *k == "x-patron-original-queue")
        .filter(|(k, _)| *k != "x-patron-deliveries")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outcome_table_is_the_same_in_memory_and_on_rabbitmq() {
    for scenario in scenarios() {
        let Some(f) = amqp::Fixture::new(scenario.name).await else {
            return;
        };
        let f = f.declared_dlq(".dlq").await;
        let (queue, dlq) = (f.queue.clone(), f.dlq().to_string());
        let consumer = |calls: &Arc<AtomicU32>| {
            (scenario.configure)(AmqpConsumer::new(&queue, handler(calls)), &dlq)
        };

        // In memory.
        let memory_calls = Arc::new(AtomicU32::new(0));
        let broker = Broker::new(Service::new("memory").with_consumers([]))
            .unwrap()
            .with_consumer(consumer(&memory_calls))
            .unwrap();
        let report = broker.publish(&queue).body(scenario.body).await.unwrap();
        let memory_outcomes = outcomes(&prom::parse(&broker.metrics().render()), &queue);
        let memory_dead = broker.dead_letters(&dlq);

        // On RabbitMQ.
        let real_calls = Arc::new(AtomicU32::new(0));
        let server = f.serve(consumer(&real_calls)).await;
        f.broker.publish(&queue, scenario.body, &[]).await;
        let client = reqwest::Client::new();
        let settled = eventually(Duration::from_secs(20), || async {
            let samples = prom::scrape(&client, &server.url("/metrics")).await;
            terminal(&outcomes(&samples, &queue)).values().sum::<f64>() >= 1.0
        })
        .await;
        assert!(settled, "{}: RabbitMQ settled the message", scenario.name);
        let samples = prom::scrape(&client, &server.url("/metrics")).await;
        let real_outcomes = outcomes(&samples, &queue);
        server.shutdown().await.unwrap();

        let expected = BTreeMap::from([(scenario.outcome.to_string(), 1.0)]);
        assert_eq!(
            terminal(&memory_outcomes),
            expected,
            "{}: in memory",
            scenario.name
        );
        assert_eq!(
            memory_outcomes, real_outcomes,
            "{}: outcomes and retries, in memory and on RabbitMQ",
            scenario.name
        );
        assert_eq!(
            memory_calls.load(Ordering::SeqCst),
            real_calls.load(Ordering::SeqCst),
            "{}: handler calls",
            scenario.name
        );
        assert_eq!(report.calls, memory_calls.load(Ordering::SeqCst));
        match scenario.outcome {
            "dlq" => {
                assert!(
                    matches!(&report.outcome, Outcome::DeadLettered { dlq: d, .. } if *d == dlq),
                    "{}: {report:?}",
                    scenario.name
                );
                let (body, headers) = f.broker.get(&dlq).await.expect("a dead letter on RabbitMQ");
                assert_eq!(memory_dead.len(), 1, "{}", scenario.name);
                assert_eq!(memory_dead[0].body, body, "{}", scenario.name);
                assert_eq!(
                    patron_headers(&memory_dead[0].headers),
                    patron_headers(&headers),
                    "{}: dead-letter headers",
                    scenario.name
                );
            }
            "ack" => assert_eq!(report.outcome, Outcome::Acked),
            "drop" => assert_eq!(report.outcome, Outcome::Dropped),
            other => panic!("no expectation for {other}"),
        }
        assert_eq!(f.broker.depth(&queue).await, 0, "{}", scenario.name);
        f.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_stops_the_consumer_in_memory_as_on_rabbitmq() {
    let Some(f) = amqp::Fixture::new("memory-exit").await else {
        return;
    };
    let queue = f.queue.clone();
    let consumer = |calls: &Arc<AtomicU32>| {
        AmqpConsumer::new(&queue, handler(calls))
            .retries(0)
            .on_failure(OnFailure::Exit)
    };
    let memory_calls = Arc::new(AtomicU32::new(0));
    let broker = Broker::new(Service::new("memory").with_consumers([]))
        .unwrap()
        .with_consumer(consumer(&memory_calls))
        .unwrap();
    let report = broker
        .publish(&queue)
        .json(&Command { act: "stop".into() })
        .await
        .unwrap();
    assert!(
        matches!(&report.outcome, Outcome::Exited { error } if error.contains("cannot stop")),
        "{report:?}"
    );
    let after = broker
        .publish(&queue)
        .body(&br#"{"act":"ok"}"#[..])
        .await
        .unwrap();
    assert_eq!(after.outcome, Outcome::NotConsumed);

    let real_calls = Arc::new(AtomicU32::new(0));
    let server = f.serve(consumer(&real_calls)).await;
    f.broker.publish(&queue, br#"{"act":"stop"}"#, &[]).await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), server.join())
        .await
        .expect("the service stops on exit");
    assert!(stopped.unwrap_err().to_string().contains("cannot stop"));
    assert_eq!(f.broker.depth(&queue).await, 1, "the message stays");
    assert_eq!(memory_calls.load(Ordering::SeqCst), 1);
    assert_eq!(real_calls.load(Ordering::SeqCst), 1);
    f.finish().await;
}

// A consumer declared with the attribute, taking a provided dependency.

struct Ledger(std::sync::Mutex<Vec<String>>);

#[patron::consumer(amqp = "patron-test-memory-ledger", retries = 1, backoff = "10ms")]
async fn record_entry(msg: Message<Json<Command>>, ledger: Dep<Ledger>) -> patron::Result<()> {
    if msg.act == "refuse" {
        return Err(patron::Error::msg("refused"));
    }
    ledger.0.lock().unwrap().push(msg.act.clone());
    Ok(())
}

#[tokio::test]
async fn registered_consumers_run_with_their_dependencies() {
    let ledger = Arc::new(Ledger(std::sync::Mutex::default()));
    let service = Service::new("memory")
        .with_consumers(patron_tests::registered("record_entry"))
        .provide_arc(Arc::clone(&ledger));
    let broker = Broker::new(service).unwrap();
    let ok = broker
        .publish("patron-test-memory-ledger")
        .json(&Command {
            act: "credit".into(),
        })
        .header("x-correlation-id", "c-1")
        .await
        .unwrap();
    assert_eq!(
        (ok.outcome, ok.calls, ok.deliveries),
        (Outcome::Acked, 1, 1)
    );
    assert_eq!(*ledger.0.lock().unwrap(), ["credit"]);
    // AMQP's default without a DLQ: requeue, delivered again up to
    // `max_deliveries` (10 by default), then dropped.
    let refused = broker
        .publish("patron-test-memory-ledger")
        .json(&Command {
            act: "refuse".into(),
        })
        .await
        .unwrap();
    assert_eq!(refused.outcome, Outcome::Dropped);
    assert_eq!(refused.deliveries, 10);
    assert_eq!(refused.calls, 20, "two calls (one retry) per delivery");
    assert_eq!(*ledger.0.lock().unwrap(), ["credit"]);
}

#[tokio::test]
async fn a_message_requeued_without_a_limit_is_reported_at_the_redelivery_limit() {
    let calls = Arc::new(AtomicU32::new(0));
    let consumer = AmqpConsumer::new("endless", handler(&calls))
        .retries(0)
        .on_failure(OnFailure::Requeue)
        .max_deliveries(0);
    let broker = Broker::new(Service::new("memory").with_consumers([]))
        .unwrap()
        .with_consumer(consumer)
        .unwrap()
        .redelivery_limit(5);
    let report = broker
        .publish("endless")
        .body(&br#"{"act":"fail"}"#[..])
        .await
        .unwrap();
    assert_eq!(
        (report.outcome, report.deliveries, report.calls),
        (Outcome::Requeued, 5, 5)
    );
}

#[tokio::test]
async fn what_the_broker_cannot_run_is_a_clear_error() {
    // A dependency the service does not provide, as at start-up.
    let missing = Broker::new(
        Service::new("memory").with_consumers(patron_tests::registered("record_entry")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("record_entry") && missing.contains("Dep<Ledger>"),
        "{missing}"
    );

    // A batch consumer.
    let batch = AmqpConsumer::batch(
        "batch",
        batch_handler_fn(|_b: patron::consumer::Batch<String>| async {
            Ok::<(), patron::Error>(())
        }),
        10,
        Duration::from_secs(1),
    );
    let err = Broker::new(Service::new("memory").with_consumers([]))
        .unwrap()
        .with_consumer(batch)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch handlers"), "{err}");

    // A destination nobody consumes.
    let calls = Arc::new(AtomicU32::new(0));
    let broker = Broker::new(Service::new("memory").with_consumers([]))
        .unwrap()
        .with_consumer(AmqpConsumer::new("known", handler(&calls)))
        .unwrap();
    let err = broker
        .publish("unknown")
        .body("x")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"unknown\"") && err.contains("known"),
        "{err}"
    );
}
