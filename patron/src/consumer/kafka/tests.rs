//! The Kafka consumer's unit tests against the broker from
//! `PATRON_TEST_KAFKA_BROKERS`: static membership, fatal client errors, the
//! record queue and the inline path.

//! Fatal client errors, injected with librdkafka's
//! `rd_kafka_test_fatal_error` into a consumer on the real broker from
//! `PATRON_TEST_KAFKA_BROKERS` (the tansu broker cannot be made to
//! fence a member), and which queue records come through. The other
//! Kafka tests are in `tests/tests/kafka.rs`.
//!
//! A consumer only has fatal errors as a static group member
//! (`group.instance.id`, see `static_member`) or with the KIP-848
//! protocol: librdkafka checks for them only then when it destroys a
//! client, so a fatal error injected into any other consumer makes its
//! destruction wait forever on a spinning main thread.

use std::sync::Weak;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use super::*;
use crate::consumer::{Message, handler_fn};
use crate::service::Service;
use crate::test::TestServer;

/// Every client a session created in this test process.
static CREATED: Mutex<Vec<Weak<StreamConsumer<Context>>>> = Mutex::new(Vec::new());

fn created(consumer: &Arc<StreamConsumer<Context>>) {
    CREATED.lock().unwrap().push(Arc::downgrade(consumer));
}

fn brokers() -> Option<String> {
    match std::env::var("PATRON_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var("PATRON_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("PATRON_TEST_KAFKA_BROKERS is not set and PATRON_TEST_REQUIRE_SERVICES=1")
        }
        _ => {
            println!("SKIPPED (no PATRON_TEST_KAFKA_BROKERS: a Kafka-compatible broker)");
            None
        }
    }
}

async fn topic(brokers: &str) -> String {
    topic_with(brokers, 1).await
}

async fn topic_with(brokers: &str, partitions: i32) -> String {
    let topic = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    created.into_iter().for_each(|r| {
        r.unwrap();
    });
    topic
}

async fn produce(brokers: &str, topic: &str, body: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<str, str>::to(topic).payload(body),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

/// Waits until `n` clients were created and the last one has its
/// partition, then returns it (weakly: the session must drop the last
/// reference, since dropping a client blocks while it closes).
async fn assigned_client(n: usize) -> Weak<StreamConsumer<Context>> {
    for _ in 0..400 {
        let last = {
            let created = CREATED.lock().unwrap();
            (created.len() == n)
                .then(|| created.last().cloned())
                .flatten()
        };
        if let Some(weak) = last
            && let Some(c) = weak.upgrade()
        {
            let assigned = c.assignment().map(|a| a.count() > 0).unwrap_or(false);
            drop(c);
            if assigned {
                return weak;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("client {n} was not created or got no partition within 40 s");
}

/// Injects a fatal error; the reference taken for it is released on a
/// thread of its own, in case it is the last one.
fn inject_fatal(consumer: &Weak<StreamConsumer<Context>>) {
    let consumer = consumer.upgrade().expect("the client is alive");
    raise_fatal(&consumer);
    std::thread::spawn(move || drop(consumer));
}

fn raise_fatal(consumer: &StreamConsumer<Context>) {
    let reason = c"injected by a patron test";
    // SAFETY: the client pointer is valid while `consumer` lives and the
    // reason is a NUL-terminated string librdkafka copies.
    unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            consumer.client().native_ptr(),
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED,
            reason.as_ptr(),
        );
    }
}

/// A service running `consumer`, whose clients are recorded for
/// [`assigned_client`].
fn service(mut consumer: KafkaConsumer) -> Service {
    consumer.seams.on_client = Some(Arc::new(created));
    let consumer = consumer
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    let mut service = Service::new("kafka-unit").with_component(consumer);
    service.config_mut().shutdown_timeout = Duration::from_secs(10);
    service
}

/// Produces `n` keyed records (`r0`, `r1`, …, spread over the topic's
/// partitions by key), each with header `h: v<i>`.
async fn produce_with_headers(brokers: &str, topic: &str, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    for i in 0..n {
        let (key, body, value) = (format!("k{i}"), format!("r{i}"), format!("v{i}"));
        let headers = OwnedHeaders::new().insert(Header {
            key: "h",
            value: Some(value.as_str()),
        });
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&key)
                    .payload(&body)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// Consumes 20 records from a 3-partition topic and returns what the
/// handler saw (`body=header`, sorted) and how many records came
/// through the consumer's own queue.
async fn consume_twenty(record_queue: bool) -> Option<(Vec<String>, usize)> {
    let brokers = brokers()?;
    let topic = topic_with(&brokers, 3).await;
    let group = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = Arc::clone(&seen);
    let handler = handler_fn(move |msg: Message<String>| {
        let header = msg.headers().get("h").unwrap_or("none").to_string();
        s.lock()
            .unwrap()
            .push(format!("{}={header}", msg.payload()));
        async {}
    });
    let mut consumer = KafkaConsumer::new([topic.as_str()], group, handler).brokers(&brokers);
    consumer.seams.no_record_queue = !record_queue;
    let server = TestServer::start(service(consumer)).await.unwrap();
    let client = assigned_client(1).await;
    produce_with_headers(&brokers, &topic, 20).await;
    until_seen(&seen, 20).await;
    let copied = client
        .upgrade()
        .map(|c| c.context().copied.load(Ordering::Relaxed))
        .unwrap_or_default();
    server.shutdown().await.expect("clean shutdown");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    Some((seen, copied))
}

fn twenty() -> Vec<String> {
    let mut all: Vec<String> = (0..20).map(|i| format!("r{i}=v{i}")).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn records_come_through_the_record_queue() {
    let Some((seen, copied)) = consume_twenty(true).await else {
        return;
    };
    assert_eq!(seen, twenty(), "each record once, with its header");
    assert_eq!(copied, 0, "no record came one at a time");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_record_queue_records_come_through_the_consumer_queue() {
    let Some((seen, copied)) = consume_twenty(false).await else {
        return;
    };
    assert_eq!(seen, twenty(), "each record once, with its header");
    assert_eq!(copied, 20, "every record came one at a time");
}

fn recorder(seen: Arc<Mutex<Vec<String>>>) -> impl MessageHandler {
    handler_fn(move |msg: Message<String>| {
        let seen = Arc::clone(&seen);
        async move { seen.lock().unwrap().push(msg.into_payload()) }
    })
}

/// What a test's handler saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A service consuming a new topic with [`recorder`] as a static group
/// member (`group.instance.id`), the kind of consumer that can have a
/// fatal error (e.g. when another member fences its instance id).
async fn static_member(brokers: &str, on_failure: OnFailure) -> (String, Seen, TestServer) {
    let topic = topic(brokers).await;
    let group = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
    let instance = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
    let seen: Seen = Arc::default();
    let consumer = KafkaConsumer::new([topic.as_str()], group, recorder(Arc::clone(&seen)))
        .brokers(brokers)
        .on_failure(on_failure)
        .set("group.instance.id", instance);
    let server = TestServer::start(service(consumer)).await.unwrap();
    (topic, seen, server)
}

/// Waits (up to 30 s) until the handler saw `n` records.
async fn until_seen(seen: &Seen, n: usize) {
    for _ in 0..300 {
        if seen.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_group_member_shuts_down_cleanly() {
    let Some(brokers) = brokers() else { return };
    let (topic, seen, server) = static_member(&brokers, OnFailure::Exit).await;
    assigned_client(1).await;
    produce(&brokers, &topic, "one").await;
    until_seen(&seen, 1).await;
    // The group of a static member terminates as soon as the client
    // unassigns its partitions at close; nothing may wait on it then.
    let stopped = tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("the service stops within 30 s");
    stopped.expect("clean shutdown");
    assert_eq!(*seen.lock().unwrap(), ["one"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_client_error_stops_the_service_under_exit() {
    let Some(brokers) = brokers() else { return };
    let (_, _, server) = static_member(&brokers, OnFailure::Exit).await;
    inject_fatal(&assigned_client(1).await);
    let ended = tokio::time::timeout(Duration::from_secs(30), server.join())
        .await
        .expect("the service stops");
    let err = ended.expect_err("a service error").to_string();
    assert!(err.contains("fatal client error"), "{err}");
    assert!(err.contains("injected by a patron test"), "{err}");
    assert_eq!(CREATED.lock().unwrap().len(), 1, "no client recreated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_client_error_recreates_the_client_under_skip() {
    let Some(brokers) = brokers() else { return };
    let (topic, seen, server) = static_member(&brokers, OnFailure::Drop).await;
    produce(&brokers, &topic, "before").await;
    let first = assigned_client(1).await;
    until_seen(&seen, 1).await;
    // Let the periodic commit record "before".
    tokio::time::sleep(COMMIT_INTERVAL * 2).await;
    inject_fatal(&first);
    // A second client joins the group and continues after "before".
    assigned_client(2).await;
    produce(&brokers, &topic, "after").await;
    until_seen(&seen, 2).await;
    server.shutdown().await.expect("clean shutdown");
    assert_eq!(*seen.lock().unwrap(), ["before", "after"]);
}
