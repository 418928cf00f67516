//! `patron::client::kafka::KafkaProducer` against the real Kafka-compatible
//! broker (`PATRON_TEST_KAFKA_BROKERS`): a patron route produces, a patron
//! consumer receives the caller's trace and correlation id; fire-and-forget
//! failures reach the callback; a full queue pushes back; shutdown flushes
//! what is queued, and reports what it could not deliver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use patron::client::kafka::{Failure, KafkaProducer, ProduceError, Record};
use patron::consumer::kafka::KafkaConsumer;
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::roundtrip::{Received, assert_carried, post};
use patron_tests::{eventually, free_port, prom};
use rdkafka::producer::Producer;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

use patron_tests::kafka::brokers;

use patron_tests::unique;

/// The topic the `/emit` route produces to (known once the test started).
struct Topic(String);

#[patron::route(POST "/emit")]
async fn emit(
    producer: Dep<KafkaProducer>,
    topic: Dep<Topic>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, patron::Error> {
    let record = Record::json(topic.0.clone(), &body)?.key("k1");
    let delivered = producer.send(&record).await?;
    Ok(Json(
        json!({ "partition": delivered.partition, "offset": delivered.offset }),
    ))
}

fn delivered(topic: &str) -> f64 {
    prom::global(
        "kafka_producer_delivery_duration_seconds_count",
        &[("topic", topic), ("outcome", "delivered")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_produces_and_the_consumer_sees_its_trace_and_correlation_id() {
    let Some(brokers) = brokers() else { return };
    let topic = unique("produce");
    // Created before the consumer subscribes: a consumer whose first
    // metadata request misses the topic sees it only at librdkafka's next
    // metadata refresh (5 minutes), and this test once waited in vain.
    patron_tests::kafka::create_topic(&brokers, &topic, 1).await;
    let received = Received::default();
    let consumer =
        KafkaConsumer::new([topic.as_str()], unique("group"), received.handler()).brokers(&brokers);
    let producer = KafkaProducer::builder(&brokers).build().unwrap();
    let service = Service::new("kafka-producer-test")
        .with_consumers(std::iter::empty())
        .with_component(consumer)
        .with_client(producer)
        .provide(Topic(topic.clone()));
    let server = TestServer::start(service).await.unwrap();

    let answer: Value = post(
        &server.url("/emit"),
        "corr-kafka-producer",
        &json!({ "order": 7 }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["offset"], 0, "{answer}");
    assert_carried(
        &received.first(WAIT).await,
        &json!({ "order": 7 }),
        "corr-kafka-producer",
    );
    assert_eq!(delivered(&topic), 1.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_flushes_fire_and_forget_records() {
    let Some(brokers) = brokers() else { return };
    let topic = unique("flush");
    // Records wait 3 s in the local queue: only the flush sends them before
    // the service has stopped.
    let producer = KafkaProducer::builder(&brokers)
        .set("linger.ms", "3000")
        .on_failure(|f| panic!("not delivered: {}", f.error))
        .build()
        .unwrap();
    let server = TestServer::start(
        Service::new("kafka-flush-test")
            .with_consumers(std::iter::empty())
            .with_client(producer.clone())
            .provide(Topic(String::new())),
    )
    .await
    .unwrap();
    for i in 0..100 {
        producer
            .spawn_send(Record::new(topic.clone(), format!("r{i}")).key("one"))
            .unwrap();
    }
    server.shutdown().await.unwrap();
    assert_eq!(producer.inner().in_flight_count(), 0);
    assert_eq!(delivered(&topic), 100.0);
    let brokers2 = brokers.clone();
    let stored =
        tokio::task::spawn_blocking(move || patron_tests::kafka::stored(&brokers2, &topic))
            .await
            .unwrap();
    let expected: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    assert_eq!(stored, expected, "all 100, in order (one key)");
}

/// A producer to a port nobody listens on.
fn unreachable() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undelivered_fire_and_forget_record_reaches_the_failure_callback() {
    let failures: Arc<Mutex<Vec<Failure>>> = Arc::default();
    let sink = failures.clone();
    let producer = KafkaProducer::builder(unreachable())
        .set("message.timeout.ms", "1000")
        .on_failure(move |f| sink.lock().unwrap().push(f))
        .build()
        .unwrap();
    let record = Record::new("nowhere", "lost?").key("k").header("h", "v");
    producer.spawn_send(record.clone()).unwrap();
    assert!(eventually(WAIT, || async { !failures.lock().unwrap().is_empty() }).await);
    let failure = failures.lock().unwrap().remove(0);
    assert_eq!(failure.record, record, "the record comes back whole");
    assert!(matches!(failure.error, ProduceError::Failed { .. }));
    let text = failure.error.to_string();
    assert!(
        text.starts_with("Kafka topic nowhere: the record was not delivered"),
        "{text}"
    );

    let err = producer.send(&record).await.unwrap_err();
    assert!(matches!(err, ProduceError::Failed { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_pushes_back_and_bad_settings_are_clear_errors() {
    let producer = KafkaProducer::builder(unreachable())
        .set("queue.buffering.max.messages", "1")
        .build()
        .unwrap();
    producer.spawn_send(Record::new("t", "first")).unwrap();
    let err = producer.spawn_send(Record::new("t", "second")).unwrap_err();
    assert!(matches!(err, ProduceError::Rejected { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("Kafka topic t: the record could not be queued"),
        "{err}"
    );

    let err = KafkaProducer::builder("127.0.0.1:9092")
        .set("acks", "banana")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("Kafka producer for 127.0.0.1:9092"),
        "{text}"
    );
    assert!(text.contains("acks"), "{text}");

    let unencodable: std::collections::HashMap<(i32, i32), i32> = [((1, 2), 3)].into();
    let err = Record::json("t", &unencodable).unwrap_err();
    assert!(matches!(err, ProduceError::Encode { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("Kafka topic t: cannot encode the record as JSON: key must be a string"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn records_left_at_shutdown_fail_the_shutdown_naming_the_producer() {
    let producer = KafkaProducer::builder(unreachable())
        .flush_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let server = TestServer::start(
        Service::new("kafka-undelivered-test")
            .with_consumers(std::iter::empty())
            .with_client(producer.clone())
            .provide(Topic(String::new())),
    )
    .await
    .unwrap();
    producer.spawn_send(Record::new("t", "stuck")).unwrap();
    let err = server.shutdown().await.unwrap_err().to_string();
    assert!(
        err.contains("kafka producer: Kafka producer for 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("1 records not delivered"), "{err}");
}

/// Issue 17 item 9: a producer whose brokers cannot be reached shows on
/// `/ready`, and a send fails within the default delivery timeout (5 s),
/// not librdkafka's minutes; with the broker there, `/ready` is 200.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_producer_fails_readiness_and_sends_fail_within_the_delivery_timeout() {
    let producer = KafkaProducer::builder(unreachable()).build().unwrap();
    let server = TestServer::start(
        Service::new("kafka-producer-ready-test")
            .with_consumers(std::iter::empty())
            .with_client(producer.clone())
            .provide(Topic(String::new())),
    )
    .await
    .unwrap();
    let ready = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("kafka producer") && body.contains("metadata"),
        "{body}"
    );
    let started = std::time::Instant::now();
    let err = producer
        .send(&Record::new("nowhere", "late"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ProduceError::Failed { .. }), "{err}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(10),
        "failed after {took:?}, the 5 s delivery timeout"
    );
    let _ = server.shutdown().await;

    let Some(brokers) = brokers() else { return };
    let producer = KafkaProducer::builder(&brokers).build().unwrap();
    let server = TestServer::start(
        Service::new("kafka-producer-ready-test")
            .with_consumers(std::iter::empty())
            .with_client(producer)
            .provide(Topic(String::new())),
    )
    .await
    .unwrap();
    let ready = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    server.shutdown().await.unwrap();
}
