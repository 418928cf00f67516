//! Kafka helpers for tests: the broker address, creating topics,
//! producing to them, and reading back what a topic holds.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The brokers, or `None` (test skipped) when `PATRON_TEST_KAFKA_BROKERS`
/// is unset and services are not required.
pub fn brokers() -> Option<String> {
    crate::service("PATRON_TEST_KAFKA_BROKERS", "a Kafka-compatible broker")
}

/// A plain producer, as an independent client would use.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .expect("producer")
}

/// Produces `body` to `partition` of `topic`, waiting for the broker's ack.
pub async fn produce(p: &FutureProducer, topic: &str, partition: i32, body: &str) {
    p.send(
        FutureRecord::<str, str>::to(topic)
            .partition(partition)
            .payload(body),
        Duration::from_secs(10),
    )
    .await
    .expect("produce");
}

/// A new one-partition topic holding records `m0` … `m{n-1}`, and a new
/// group name: (topic, group).
pub async fn numbered_topic(brokers: &str, what: &str, n: usize) -> (String, String) {
    let (topic, group) = (crate::unique(what), crate::unique("group"));
    create_topic(brokers, &topic, 1).await;
    let p = producer(brokers);
    for i in 0..n {
        produce(&p, &topic, 0, &format!("m{i}")).await;
    }
    (topic, group)
}

/// A consumer of a group of its own, reading from the beginning.
fn reader(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set(
            "group.id",
            format!("patron-test-reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a reader")
}

/// The payloads stored in `topic`, read from the beginning until none
/// arrives for 2 s. (tansu's watermarks count a batch as one record, so
/// the records are read, not counted from offsets.)
pub fn stored(brokers: &str, topic: &str) -> Vec<String> {
    let consumer = reader(brokers);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut payloads = Vec::new();
    let mut idle_since = std::time::Instant::now();
    while idle_since.elapsed() < Duration::from_secs(if payloads.is_empty() { 20 } else { 2 }) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            payloads.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            idle_since = std::time::Instant::now();
        }
    }
    payloads
}

/// A record as read back: key, payload and headers (name, value or null),
/// in order.
#[derive(Debug, Clone)]
pub struct ReadBack {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload, as text.
    pub payload: String,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ReadBack {
    /// The first header named `name`: `Some(None)` for a null value.
    pub fn header(&self, name: &str) -> Option<Option<Vec<u8>>> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Header `name` as text ("" when null or missing).
    pub fn text(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.header(name).flatten().unwrap_or_default()).into_owned()
    }
}

/// The first record of `topic` (from the beginning), waiting at most
/// `timeout`; `None` when none came.
pub fn first_record(brokers: &str, topic: &str, timeout: Duration) -> Option<ReadBack> {
    use rdkafka::message::Headers as _;
    let reader = reader(brokers);
    reader.subscribe(&[topic]).expect("subscribe");
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            return Some(ReadBack {
                key: m.key().map(<[u8]>::to_vec),
                payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
        }
    }
    None
}

/// The high watermark of partition 0 of `topic`: 0 when nothing was ever
/// stored there. (tansu counts a produced batch as one record, so this
/// says "empty or not", not how many.)
pub fn high_watermark(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    high
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .expect("admin client");
    let result = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    for r in result {
        r.expect("topic created");
    }
}

/// Runs `consumer` alone in a test service with a 10-second shutdown
/// timeout and a short group session, so that a group whose previous member
/// died rebalances fast.
pub async fn serve(consumer: patron::consumer::kafka::KafkaConsumer) -> patron::test::TestServer {
    let consumer = consumer
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    crate::serve_consumer("kafka-test", consumer, Duration::from_secs(10)).await
}

/// One test's Kafka set-up: the brokers, a new topic and group of its own
/// and, when asked, a dead-letter topic named after it. Topics are left
/// behind (tansu keeps them in memory).
pub struct Fixture {
    /// The brokers from `PATRON_TEST_KAFKA_BROKERS`.
    pub brokers: String,
    /// The consumed topic, `patron-test-{prefix}-…`.
    pub topic: String,
    /// A consumer group no other test uses.
    pub group: String,
    dlq: Option<String>,
}

impl Fixture {
    /// `None` (the test is skipped) without a broker; else a new topic of
    /// `partitions` partitions named after `prefix`, and a new group.
    pub async fn new(prefix: &str, partitions: i32) -> Option<Fixture> {
        let brokers = brokers()?;
        let (topic, group) = (crate::unique(prefix), crate::unique("group"));
        create_topic(&brokers, &topic, partitions).await;
        Some(Fixture {
            brokers,
            topic,
            group,
            dlq: None,
        })
    }

    /// `None` (the test is skipped) without a broker; else a new
    /// one-partition topic holding records `m0` … `m{n-1}`, as
    /// [`numbered_topic`] makes, and a new group.
    pub async fn numbered(prefix: &str, n: usize) -> Option<Fixture> {
        let brokers = brokers()?;
        let (topic, group) = numbered_topic(&brokers, prefix, n).await;
        Some(Fixture {
            brokers,
            topic,
            group,
            dlq: None,
        })
    }

    /// Creates a one-partition dead-letter topic `{topic}{suffix}`.
    pub async fn with_dlq(mut self, suffix: &str) -> Fixture {
        let dlq = format!("{}{suffix}", self.topic);
        create_topic(&self.brokers, &dlq, 1).await;
        self.dlq = Some(dlq);
        self
    }

    /// The dead-letter topic's name.
    pub fn dlq(&self) -> &str {
        self.dlq
            .as_deref()
            .expect("Fixture::with_dlq creates the DLQ")
    }

    /// Produces `body` to `partition` of the topic.
    pub async fn produce(&self, partition: i32, body: &str) {
        produce(&producer(&self.brokers), &self.topic, partition, body).await;
    }

    /// Runs `consumer`, pointed at these brokers, as [`serve`] does.
    pub async fn serve(
        &self,
        consumer: patron::consumer::kafka::KafkaConsumer,
    ) -> patron::test::TestServer {
        serve(consumer.brokers(&self.brokers)).await
    }
}
