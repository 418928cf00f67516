//! Kafka consumers against the real Kafka-compatible broker (tansu) from
//! `PATRON_TEST_KAFKA_BROKERS`: commits after success, `exit` leaves the
//! offset uncommitted, per-partition order under concurrency, and the DLQ.
//! Unique topics and groups per test; waits are on conditions (a group join
//! takes seconds).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use patron::consumer::kafka::KafkaConsumer;
use patron::consumer::{Message, Metadata, OnFailure, handler_fn};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::eventually;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(40);

use patron_tests::kafka::{Fixture, brokers, produce, producer, serve};
use patron_tests::unique;

type Seen = Arc<Mutex<Vec<(i32, i64, String)>>>;

fn recorder(seen: Seen, fail_on: Option<&'static str>) -> impl patron::consumer::MessageHandler {
    handler_fn(move |msg: Message<String>| {
        let seen = seen.clone();
        async move {
            let Metadata::Kafka(meta) = msg.metadata() else {
                panic!("Kafka metadata")
            };
            let (partition, offset) = (meta.partition, meta.offset);
            if Some(msg.payload().as_str()) == fail_on {
                return Err(patron::Error::msg(format!(
                    "cannot handle {}",
                    msg.payload()
                )));
            }
            seen.lock()
                .unwrap()
                .push((partition, offset, msg.into_payload()));
            Ok(())
        }
    })
}

/// Produces `record` to partition 0, starts a consumer in `group`, and
/// returns what it received (after a short grace for anything older).
async fn restart_after_new_record(
    brokers: &str,
    topic: &str,
    group: &str,
    record: &str,
) -> Vec<String> {
    produce(&producer(brokers), topic, 0, record).await;
    let again: Seen = Arc::default();
    let server =
        serve(KafkaConsumer::new([topic], group, recorder(again.clone(), None)).brokers(brokers))
            .await;
    assert!(eventually(WAIT, || async { !again.lock().unwrap().is_empty() }).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.shutdown().await.expect("clean shutdown");
    payloads(&again)
}

fn payloads(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, _, p)| p.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_after_success_and_a_restart_resumes_after_them() {
    let Some(f) = Fixture::numbered("commit", 5).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let seen: Seen = Arc::default();
    let first = serve(
        KafkaConsumer::new([topic.as_str()], &group, recorder(seen.clone(), None))
            .brokers(&brokers),
    )
    .await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 5 }).await);
    // The worker counts a run's records itself and adds them to the shared
    // metrics when the run ends: all five, each with its duration, and
    // nothing left in flight.
    let metric = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let url = first.url("/metrics");
        async move {
            let samples = patron_tests::prom::scrape(&reqwest::Client::new(), &url).await;
            patron_tests::prom::value(&samples, name, labels)
        }
    };
    assert!(
        eventually(WAIT, || async {
            metric("consumer_messages_total", &[("outcome", "ack")]).await == Some(5.0)
        })
        .await
    );
    assert_eq!(
        metric("consumer_message_duration_seconds_count", &[]).await,
        Some(5.0)
    );
    assert_eq!(metric("consumer_messages_in_flight", &[]).await, Some(0.0));
    first.shutdown().await.expect("clean shutdown");
    assert_eq!(payloads(&seen), ["m0", "m1", "m2", "m3", "m4"]);

    // The group's committed offset is after m4: a restart sees only new records.
    assert_eq!(
        restart_after_new_record(&brokers, &topic, &group, "m5").await,
        ["m5"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_without_a_delivery_limit_leaves_the_offset_uncommitted_and_a_restart_redelivers() {
    let Some(f) = Fixture::numbered("exit", 4).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let seen: Seen = Arc::default();
    let failing = serve(
        KafkaConsumer::new([topic.as_str()], &group, recorder(seen.clone(), Some("m2")))
            .brokers(&brokers)
            .retries(0)
            .on_failure(OnFailure::Exit)
            .max_deliveries(0),
    )
    .await;
    let result = tokio::time::timeout(WAIT, failing.join())
        .await
        .expect("the service stops on its own");
    let err = result.expect_err("exit fails the service").to_string();
    assert!(err.contains("cannot handle m2"), "{err}");
    assert_eq!(payloads(&seen), ["m0", "m1"]);

    let again: Seen = Arc::default();
    let second = serve(
        KafkaConsumer::new([topic.as_str()], &group, recorder(again.clone(), None))
            .brokers(&brokers),
    )
    .await;
    assert!(eventually(WAIT, || async { again.lock().unwrap().len() == 2 }).await);
    second.shutdown().await.expect("clean shutdown");
    assert_eq!(
        payloads(&again),
        ["m2", "m3"],
        "m2 was not committed, m0 and m1 were"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keeps_order_within_each_partition_under_concurrency() {
    let Some(f) = Fixture::new("order", 3).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let p = producer(&brokers);
    for i in 0..30 {
        produce(&p, &topic, i % 3, &format!("p{}-{:02}", i % 3, i / 3)).await;
    }
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let consumer = KafkaConsumer::new(
        [topic.as_str()],
        &group,
        handler_fn(move |msg: Message<String>| {
            let s = s.clone();
            async move {
                let Metadata::Kafka(meta) = msg.metadata() else {
                    panic!()
                };
                let (partition, offset) = (meta.partition, meta.offset);
                // Uneven work, so partitions interleave.
                tokio::time::sleep(Duration::from_millis(u64::from(offset as u32 % 3) * 3)).await;
                s.lock()
                    .unwrap()
                    .push((partition, offset, msg.into_payload()));
            }
        }),
    )
    .brokers(&brokers)
    .concurrency(3);
    let server = serve(consumer).await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 30 }).await);
    server.shutdown().await.expect("clean shutdown");
    let seen = seen.lock().unwrap().clone();
    for partition in 0..3 {
        let in_partition: Vec<&String> = seen
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, _, body)| body)
            .collect();
        let mut sorted = in_partition.clone();
        sorted.sort();
        assert_eq!(in_partition, sorted, "partition {partition} kept its order");
        assert_eq!(in_partition.len(), 10);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_with_error_headers_then_commits() {
    let Some(f) = Fixture::new("dlq", 1).await else {
        return;
    };
    let f = f.with_dlq(".dlq").await;
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let dlq = f.dlq().to_string();
    let p = producer(&brokers);
    for body in ["ok-1", "bad", "ok-2"] {
        produce(&p, &topic, 0, body).await;
    }
    let seen: Seen = Arc::default();
    let server = serve(
        KafkaConsumer::new(
            [topic.as_str()],
            &group,
            recorder(seen.clone(), Some("bad")),
        )
        .brokers(&brokers)
        .retries(1)
        .backoff(Duration::from_millis(5))
        .dlq(&dlq),
    )
    .await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 2 }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(
        payloads(&seen),
        ["ok-1", "ok-2"],
        "the failed record did not block the partition"
    );

    let dead =
        patron_tests::kafka::first_record(&brokers, &dlq, WAIT).expect("a record in the DLQ topic");
    assert_eq!(dead.payload, "bad");
    assert_eq!(dead.text("x-patron-attempts"), "2");
    assert!(
        dead.text("x-patron-error").contains("cannot handle bad"),
        "{dead:?}"
    );
    assert_eq!(dead.text("x-patron-original-topic"), topic);
    assert_eq!(dead.text("x-patron-original-offset"), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_commits_the_failed_record_and_goes_on() {
    let Some(f) = Fixture::new("skip", 1).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let p = producer(&brokers);
    for body in ["a", "bad", "c"] {
        produce(&p, &topic, 0, body).await;
    }
    let seen: Seen = Arc::default();
    let server = serve(
        KafkaConsumer::new(
            [topic.as_str()],
            &group,
            recorder(seen.clone(), Some("bad")),
        )
        .brokers(&brokers)
        .retries(0)
        .on_failure(OnFailure::Drop),
    )
    .await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 2 }).await);
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(payloads(&seen), ["a", "c"]);
    // Committed past the skipped record: a restart sees nothing old.
    assert_eq!(
        restart_after_new_record(&brokers, &topic, &group, "d").await,
        ["d"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_record_is_lost_or_skipped_across_a_stop() {
    let Some(f) = Fixture::new("stop", 2).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let p = producer(&brokers);
    for i in 0..1000 {
        produce(&p, &topic, i % 2, &format!("{i:04}")).await;
    }
    let seen: Seen = Arc::default();
    let slow = |seen: Seen| {
        handler_fn(move |msg: Message<String>| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_micros(500)).await;
                let Metadata::Kafka(meta) = msg.metadata() else {
                    panic!()
                };
                let (partition, offset) = (meta.partition, meta.offset);
                seen.lock()
                    .unwrap()
                    .push((partition, offset, msg.into_payload()));
            }
        })
    };
    let first = serve(
        KafkaConsumer::new([topic.as_str()], &group, slow(seen.clone()))
            .brokers(&brokers)
            .concurrency(2),
    )
    .await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() >= 300 }).await);
    first.shutdown().await.expect("clean shutdown");
    let before = seen.lock().unwrap().len();
    assert!(before < 1000, "stopped midway ({before})");
    let second = serve(
        KafkaConsumer::new([topic.as_str()], &group, slow(seen.clone()))
            .brokers(&brokers)
            .concurrency(2),
    )
    .await;
    let distinct = || {
        let mut all = payloads(&seen);
        all.sort();
        all.dedup();
        all.len()
    };
    assert!(
        eventually(Duration::from_secs(60), || async { distinct() == 1000 }).await,
        "every record processed at least once ({} of 1000)",
        distinct()
    );
    second.shutdown().await.expect("clean shutdown");
    let total = seen.lock().unwrap().len();
    println!(
        "first run {before}, total {total}, processed twice: {}",
        total - 1000
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_stuck_at_shutdown_is_abandoned_uncommitted_and_redelivered() {
    let Some(f) = Fixture::numbered("stuck", 2).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let started: Seen = Arc::default();
    let s = started.clone();
    let consumer = KafkaConsumer::new(
        [topic.as_str()],
        &group,
        handler_fn(move |msg: Message<String>| {
            s.lock().unwrap().push((0, 0, msg.payload().clone()));
            let stuck = msg.payload() == "m1";
            async move {
                if stuck {
                    std::future::pending::<()>().await;
                }
            }
        }),
    )
    .brokers(&brokers)
    // As in `start`: the restart's rebalance waits out this member's session.
    .set("session.timeout.ms", "6000")
    .set("heartbeat.interval.ms", "1000");
    let mut service = Service::new("kafka-test")
        .with_consumers(std::iter::empty())
        .with_component(consumer);
    service.config_mut().shutdown_timeout = Duration::from_secs(1);
    let server = TestServer::start(service).await.expect("service starts");
    assert!(eventually(WAIT, || async { started.lock().unwrap().len() == 2 }).await);
    patron_tests::shuts_down_within(server, Duration::from_secs(8)).await;
    assert_eq!(
        committed(&brokers, &group, &topic).await,
        Some(1),
        "m0 committed, m1 not"
    );
    assert_eq!(
        restart_after_new_record(&brokers, &topic, &group, "m2").await,
        ["m1", "m2"]
    );
}

/// The group's committed offset of `topic`'s partition 0, as the broker
/// holds it (an offset fetch; the asking client joins no group).
async fn committed(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let (brokers, group, topic) = (brokers.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("broker.address.family", "v4")
            .create()
            .ok()?;
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(&topic, 0);
        let list = c.committed_offsets(list, Duration::from_secs(5)).ok()?;
        list.find_partition(&topic, 0)?.offset().to_raw()
    })
    .await
    .ok()
    .flatten()
}

// Also: a handler that waits (here at the default concurrency 1, where the
// receive task runs the handler itself) holds up neither the lag nor the
// commit of what finished before it.
#[tokio::test(flavor = "multi_thread")]
async fn reports_the_lag_per_partition() {
    let Some(f) = Fixture::numbered("lag", 10).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(Mutex::new(0));
    let (g, d) = (gate.clone(), done.clone());
    let consumer = KafkaConsumer::new(
        [topic.as_str()],
        &group,
        handler_fn(move |msg: Message<String>| {
            let (g, d) = (g.clone(), d.clone());
            async move {
                if msg.payload() == "m5" {
                    let _ = g.acquire().await.map(|p| p.forget());
                }
                *d.lock().unwrap() += 1;
            }
        }),
    )
    .name("lagging")
    .brokers(&brokers);
    let server = serve(consumer).await;
    assert!(eventually(WAIT, || async { *done.lock().unwrap() == 5 }).await);
    let http = reqwest::Client::new();
    let lag = || async {
        let samples = patron_tests::prom::scrape(&http, &server.url("/metrics")).await;
        patron_tests::prom::value(
            &samples,
            "kafka_consumer_lag",
            &[
                ("consumer", "lagging"),
                ("topic", topic.as_str()),
                ("partition", "0"),
            ],
        )
    };
    assert!(
        eventually(Duration::from_secs(15), || async {
            lag().await == Some(5.0)
        })
        .await,
        "5 records behind while m5 is stuck: {:?}",
        lag().await
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            committed(&brokers, &group, &topic).await == Some(5)
        })
        .await,
        "m0..m4 committed while m5 is stuck: {:?}",
        committed(&brokers, &group, &topic).await
    );
    gate.add_permits(1);
    assert!(
        eventually(Duration::from_secs(15), || async {
            lag().await == Some(0.0)
        })
        .await
    );
    server.shutdown().await.expect("clean shutdown");
}

// A consumer declared with the attribute; it also checks that trace context
// and correlation id from record headers reach the handler's task.

struct Sink(Mutex<Vec<(String, http::HeaderMap)>>);

#[patron::consumer(kafka = "patron-test-macro-kafka", group = "patron-test-macro-group", retries = 0, on_failure = skip)]
async fn kafka_macro_consumer(msg: Message<String>, sink: Dep<Sink>) {
    let mut outgoing = http::HeaderMap::new();
    patron::observe::trace::inject(&mut outgoing);
    sink.0.lock().unwrap().push((msg.into_payload(), outgoing));
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_consumers_carry_trace_context_from_headers() {
    let Some(brokers) = brokers() else { return };
    let topic = "patron-test-macro-kafka";
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("broker.address.family", "v4")
        .create()
        .expect("admin client");
    // The topic may exist from an earlier run (the group's offsets too).
    let _ = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await;
    let defs = patron_tests::registered("kafka_macro_consumer");
    assert_eq!(defs[0].broker, "kafka");
    let sink = Arc::new(Sink(Mutex::default()));
    let mut service = Service::new("kafka-test")
        .with_consumers(defs)
        .provide_arc(sink.clone());
    service.config_mut().kafka_brokers = Some(brokers.clone());
    service.config_mut().shutdown_timeout = Duration::from_secs(10);
    let server = TestServer::start(service).await.unwrap();

    let marker = unique("traced");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "traceparent",
            value: Some(traceparent),
        })
        .insert(rdkafka::message::Header {
            key: "X-Correlation-Id",
            value: Some("corr-kafka"),
        });
    producer(&brokers)
        .send(
            FutureRecord::<str, str>::to(topic)
                .payload(&marker)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    let found = || {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| *p == marker)
            .map(|(_, h)| h.clone())
    };
    assert!(eventually(WAIT, || async { found().is_some() }).await);
    server.shutdown().await.expect("clean shutdown");
    let outgoing = found().unwrap();
    assert_eq!(outgoing["traceparent"], traceparent);
    assert_eq!(outgoing["x-correlation-id"], "corr-kafka");
}

/// Produces `body` to partition 0, with `key` and the producer timestamp
/// `stamp` (milliseconds) when given.
async fn produce_keyed(
    p: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    body: &str,
    stamp: Option<i64>,
) {
    let mut record = FutureRecord::<str, str>::to(topic)
        .partition(0)
        .payload(body);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(stamp) = stamp {
        record = record.timestamp(stamp);
    }
    p.send(record, Duration::from_secs(10))
        .await
        .expect("produce");
}

#[tokio::test(flavor = "multi_thread")]
async fn hands_the_handler_each_records_metadata_and_correlation_id() {
    let Some(f) = Fixture::new("metadata", 1).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let p = producer(&brokers);
    let stamp = 1_700_000_000_123;
    for (key, body) in [(Some("order-7"), "first"), (None, "second")] {
        produce_keyed(&p, &topic, key, body, Some(stamp)).await;
    }
    let seen: Arc<Mutex<Vec<Metadata>>> = Arc::default();
    // (the message's correlation id, CorrelationId::current()) per record.
    type Ids = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let ids: Ids = Arc::default();
    let (s, i) = (seen.clone(), ids.clone());
    let server = serve(
        KafkaConsumer::new(
            [topic.as_str()],
            &group,
            handler_fn(move |msg: Message<String>| {
                s.lock().unwrap().push(msg.metadata().clone());
                let i = i.clone();
                async move {
                    // Generated (no header): the same id in the message and
                    // in the task-local context that log lines read.
                    let current = CorrelationId::current().map(|c| c.as_str().to_string());
                    i.lock()
                        .unwrap()
                        .push((msg.correlation_id().to_string(), current));
                    Ok::<(), patron::Error>(())
                }
            }),
        )
        .brokers(&brokers),
    )
    .await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 2 }).await);
    server.shutdown().await.expect("clean shutdown");
    let seen = seen.lock().unwrap();
    let meta: Vec<_> = seen
        .iter()
        .map(|m| match m {
            Metadata::Kafka(k) => k.clone(),
            other => panic!("Kafka metadata expected, got {other:?}"),
        })
        .collect();
    for (offset, m) in meta.iter().enumerate() {
        assert_eq!(&*m.topic, topic.as_str());
        assert_eq!(m.partition, 0);
        assert_eq!(m.offset, offset as i64);
        assert_eq!(m.timestamp, Some(stamp));
    }
    assert_eq!(meta[0].key.as_deref(), Some(&b"order-7"[..]));
    assert_eq!(meta[1].key, None);
    let ids = ids.lock().unwrap();
    for (id, current) in ids.iter() {
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(current.as_deref(), Some(id.as_str()));
    }
    assert_ne!(ids[0].0, ids[1].0);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_keep_the_last_record_per_key_and_commit_the_replaced_ones() {
    let Some(f) = Fixture::new("batch", 1).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let p = producer(&brokers);
    let keys = [
        Some("a"),
        Some("b"),
        Some("a"),
        Some("c"),
        Some("b"),
        Some("a"),
        Some("a"),
        Some("d"),
        None,
        Some("d"),
    ];
    for (i, key) in keys.iter().enumerate() {
        produce_keyed(&p, &topic, *key, &format!("r{i}"), None).await;
    }
    let batches: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let b = batches.clone();
    let consumer = KafkaConsumer::batch(
        [topic.as_str()],
        &group,
        patron::consumer::batch_handler_fn(move |batch: patron::consumer::Batch<String>| {
            let b = b.clone();
            async move {
                let payloads = batch.iter().map(|m| m.payload().clone()).collect();
                b.lock().unwrap().push(payloads);
            }
        }),
        5,
        // Long enough that both batches fill from the records already there.
        Duration::from_secs(10),
    )
    .dedup_by_key(true)
    .name("deduped")
    .brokers(&brokers);
    let server = serve(consumer).await;
    assert!(eventually(WAIT, || async { batches.lock().unwrap().len() == 2 }).await);
    // Offsets 0–4 keep a@2, c@3, b@4; offsets 5–9 keep a@6, the keyless r8, d@9.
    assert_eq!(
        *batches.lock().unwrap(),
        [vec!["r2", "r3", "r4"], vec!["r6", "r8", "r9"]]
    );
    let samples =
        patron_tests::prom::scrape(&reqwest::Client::new(), &server.url("/metrics")).await;
    let count = |outcome: &str| {
        patron_tests::prom::value(
            &samples,
            "consumer_messages_total",
            &[("consumer", "deduped"), ("outcome", outcome)],
        )
    };
    assert_eq!(count("superseded"), Some(4.0));
    assert_eq!(count("ack"), Some(6.0));
    server.shutdown().await.expect("clean shutdown");

    // Every record, the replaced ones included, was committed.
    assert_eq!(
        restart_after_new_record(&brokers, &topic, &group, "r10").await,
        ["r10"]
    );
}

/// One member of a two-instance group: what it processed, by partition.
struct Member {
    seen: Seen,
    server: TestServer,
}

async fn member(
    brokers: &str,
    topic: &str,
    group: &str,
    name: &str,
    strategy: Option<&str>,
) -> Member {
    let seen: Seen = Arc::default();
    let mut consumer = KafkaConsumer::new([topic], group, recorder(seen.clone(), None))
        .name(name)
        .concurrency(4)
        .brokers(brokers);
    if let Some(strategy) = strategy {
        consumer = consumer.set("partition.assignment.strategy", strategy);
    }
    Member {
        server: serve(consumer).await,
        seen,
    }
}

async fn assigned(member: &Member, name: &str) -> Option<f64> {
    let samples =
        patron_tests::prom::scrape(&reqwest::Client::new(), &member.server.url("/metrics")).await;
    patron_tests::prom::value(
        &samples,
        "kafka_consumer_assigned_partitions",
        &[("consumer", name)],
    )
}

fn partitions(seen: &Seen) -> std::collections::BTreeSet<i32> {
    seen.lock().unwrap().iter().map(|(p, _, _)| *p).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_instance_group_splits_partitions_without_duplicates() {
    two_instances_split_partitions(None).await;
}

/// The same under incremental (cooperative) rebalancing, where partitions
/// move one assignment at a time: each newly assigned partition must still
/// reach the consumer's record queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_two_instance_group_splits_partitions_under_cooperative_rebalancing() {
    two_instances_split_partitions(Some("cooperative-sticky")).await;
}

/// Two members of one group (with `strategy` as the partition assignment
/// strategy, librdkafka's default when `None`) split a 4-partition topic
/// without duplicates; when one leaves, the other takes its partitions
/// over from its commits.
async fn two_instances_split_partitions(strategy: Option<&str>) {
    let Some(f) = Fixture::new("group-split", 4).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let a = member(&brokers, &topic, &group, "a", strategy).await;
    let b = member(&brokers, &topic, &group, "b", strategy).await;
    // Wait until the group settled with both members owning partitions.
    let settled = || async {
        let (x, y) = (assigned(&a, "a").await, assigned(&b, "b").await);
        matches!((x, y), (Some(x), Some(y)) if x > 0.0 && y > 0.0 && x + y == 4.0)
    };
    assert!(
        eventually(Duration::from_secs(60), settled).await,
        "both members own partitions: a {:?}, b {:?}",
        assigned(&a, "a").await,
        assigned(&b, "b").await
    );

    let p = producer(&brokers);
    for i in 0..200 {
        produce(&p, &topic, i % 4, &format!("m{i}")).await;
    }
    let total = || a.seen.lock().unwrap().len() + b.seen.lock().unwrap().len();
    assert!(eventually(WAIT, || async { total() >= 200 }).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut all = payloads(&a.seen);
    all.extend(payloads(&b.seen));
    all.sort();
    let unique_count = {
        let mut u = all.clone();
        u.dedup();
        u.len()
    };
    assert_eq!(
        (all.len(), unique_count),
        (200, 200),
        "each record once, no rebalance meanwhile"
    );
    let (pa, pb) = (partitions(&a.seen), partitions(&b.seen));
    assert!(!pa.is_empty() && !pb.is_empty(), "a {pa:?}, b {pb:?}");
    assert!(pa.is_disjoint(&pb), "a {pa:?}, b {pb:?}");

    // b leaves: it commits what it processed, a takes its partitions over
    // and goes on from there; nothing is lost.
    b.server.shutdown().await.expect("clean shutdown");
    for i in 200..300 {
        produce(&p, &topic, i % 4, &format!("m{i}")).await;
    }
    let seen_all = || {
        let mut got = payloads(&a.seen);
        got.extend(payloads(&b.seen));
        (200..300).all(|i| got.contains(&format!("m{i}")))
    };
    assert!(eventually(Duration::from_secs(60), || async { seen_all() }).await);
    assert_eq!(assigned(&a, "a").await, Some(4.0));
    let mut after = payloads(&a.seen);
    after.extend(payloads(&b.seen));
    let before_rebalance: usize = after
        .iter()
        .filter(|p| p[1..].parse::<i32>().unwrap() < 200)
        .count();
    // b committed everything it had processed, so a redelivers nothing of
    // b's; a re-processes at most one in-flight record per own partition,
    // revoked in the rebalance.
    assert!(
        before_rebalance <= 200 + 4,
        "{} records of the first 200 processed again",
        before_rebalance - 200
    );
    a.server.shutdown().await.expect("clean shutdown");
}

/// Issue 17 item 3: Kafka cannot give a record back, so under the default
/// `exit` with a delivery limit the record is delivered again in-process,
/// counted, and after `max_deliveries` it is dropped (no DLQ named) and
/// committed instead of crash-looping the service.
#[tokio::test(flavor = "multi_thread")]
async fn exit_delivers_a_failing_record_again_up_to_max_deliveries_then_drops_it() {
    let Some(f) = Fixture::new("exit-limit", 1).await else {
        return;
    };
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let p = producer(&brokers);
    for body in ["a", "bad", "c"] {
        produce(&p, &topic, 0, body).await;
    }
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let server = serve(
        KafkaConsumer::new(
            [topic.as_str()],
            &group,
            handler_fn(move |msg: Message<String>| {
                let s = s.clone();
                async move {
                    s.lock()
                        .unwrap()
                        .push(format!("{} {}", msg.payload(), msg.deliveries()));
                    if msg.payload() == "bad" {
                        return Err(patron::Error::msg("cannot handle bad"));
                    }
                    Ok(())
                }
            }),
        )
        .brokers(&brokers)
        .retries(0)
        .backoff(Duration::from_millis(5))
        .max_deliveries(3),
    )
    .await;
    assert!(eventually(WAIT, || async { seen.lock().unwrap().len() == 5 }).await);
    let labels = [("consumer", topic.as_str()), ("outcome", "drop")];
    let samples =
        patron_tests::prom::scrape(&reqwest::Client::new(), &server.url("/metrics")).await;
    assert_eq!(
        patron_tests::prom::value(&samples, "consumer_messages_total", &labels),
        Some(1.0),
        "dropped once"
    );
    let again = [("consumer", topic.as_str()), ("outcome", "requeue")];
    assert_eq!(
        patron_tests::prom::value(&samples, "consumer_messages_total", &again),
        Some(2.0),
        "delivered again twice, not counted as exits"
    );
    server
        .shutdown()
        .await
        .expect("the service did not stop on its own");
    assert_eq!(
        seen.lock().unwrap().clone(),
        ["a 1", "bad 1", "bad 2", "bad 3", "c 1"]
    );
    assert_eq!(
        restart_after_new_record(&brokers, &topic, &group, "d").await,
        ["d"],
        "committed past the dropped record"
    );
}

/// Issue 17 item 1: a dead letter the producer refuses (here: the copy,
/// with its headers, is over the DLQ producer's 1 MB limit) holds the
/// partition uncommitted and `/ready` names the consumer, instead of
/// stopping the service; after a restart the record is delivered again.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_dead_letter_holds_the_partition_and_fails_readiness() {
    let Some(f) = Fixture::new("dlq-refused", 1).await else {
        return;
    };
    let f = f.with_dlq(".dlq").await;
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let dlq = f.dlq().to_string();
    let big: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("broker.address.family", "v4")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    let huge = "x".repeat(999_900);
    big.send(
        FutureRecord::<str, str>::to(&topic)
            .partition(0)
            .payload(&huge),
        Duration::from_secs(10),
    )
    .await
    .expect("produce the big record");
    produce(&producer(&brokers), &topic, 0, "after").await;
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let s = seen.clone();
    let server = serve(
        KafkaConsumer::new(
            [topic.as_str()],
            &group,
            handler_fn(move |msg: Message<String>| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(msg.payload().len());
                    if msg.payload().len() > 1000 {
                        return Err(patron::Error::msg("too big to handle"));
                    }
                    Ok(())
                }
            }),
        )
        .brokers(&brokers)
        .retries(0)
        .dlq(&dlq),
    )
    .await;
    let http = reqwest::Client::new();
    let ready = || async {
        let r = http.get(server.url("/ready")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert!(
        eventually(WAIT, || async {
            let (status, body) = ready().await;
            status == 503
                && body.contains(&format!("component:{topic}"))
                && body.contains("dead-letter")
        })
        .await,
        "{:?}",
        ready().await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        [999_900],
        "the partition holds: the next record waits"
    );
    server
        .shutdown()
        .await
        .expect("the service did not stop on its own");
    let again: Seen = Arc::default();
    let second = serve(
        KafkaConsumer::new([topic.as_str()], &group, recorder(again.clone(), None))
            .brokers(&brokers),
    )
    .await;
    assert!(eventually(WAIT, || async { again.lock().unwrap().len() == 2 }).await);
    second.shutdown().await.expect("clean shutdown");
    assert_eq!(
        again.lock().unwrap()[0].1,
        0,
        "the held record was not committed"
    );
}

/// Issue 17 item 2: a Kafka dead letter keeps the original key, every
/// header (a null-valued one too) and, in a header, the original timestamp.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_keeps_key_headers_and_timestamp() {
    use rdkafka::message::{Header, OwnedHeaders};
    let Some(f) = Fixture::new("dlq-copy", 1).await else {
        return;
    };
    let f = f.with_dlq(".dlq").await;
    let (brokers, topic, group) = (f.brokers.clone(), f.topic.clone(), f.group.clone());
    let dlq = f.dlq().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "tenant",
            value: Some("acme"),
        })
        .insert(Header::<&str> {
            key: "empty",
            value: None,
        });
    producer(&brokers)
        .send(
            FutureRecord::<str, str>::to(&topic)
                .partition(0)
                .key("order-7")
                .payload("bad")
                .timestamp(1_700_000_000_000)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    let seen: Seen = Arc::default();
    let server = serve(
        KafkaConsumer::new(
            [topic.as_str()],
            &group,
            recorder(seen.clone(), Some("bad")),
        )
        .brokers(&brokers)
        .retries(0)
        .dlq(&dlq),
    )
    .await;
    let dead = patron_tests::kafka::first_record(&brokers, &dlq, WAIT);
    server.shutdown().await.expect("clean shutdown");
    let dead = dead.expect("a dead letter");
    assert_eq!(dead.key.as_deref(), Some(&b"order-7"[..]));
    let get = |name: &str| dead.header(name);
    assert_eq!(get("tenant"), Some(Some(b"acme".to_vec())));
    assert_eq!(get("empty"), Some(None), "a null header stays null");
    assert_eq!(
        get("x-patron-original-timestamp"),
        Some(Some(b"1700000000000".to_vec()))
    );
}
