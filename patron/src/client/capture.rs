//! Capturing producers for tests: an [`AmqpPublisher`](super::amqp::AmqpPublisher),
//! [`KafkaProducer`](super::kafka::KafkaProducer) or
//! [`SqsSender`](super::sqs::SqsSender) made with `capturing(&sent)` records
//! each message — with the headers patron adds (trace context, correlation
//! id) — in a [`Sent`] instead of sending it, and reports success. A test
//! provides it to the service in place of the real one and asserts on what
//! the handlers would have sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A message a capturing producer recorded instead of sending.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentMessage {
    /// `rabbitmq`, `kafka` or `aws_sqs`.
    pub system: &'static str,
    /// Where it was going: the AMQP exchange (the queue, for the default
    /// exchange), the Kafka topic, or the SQS queue.
    pub destination: String,
    /// AMQP: the routing key.
    pub routing_key: Option<String>,
    /// Kafka: the record's key.
    pub key: Option<Vec<u8>>,
    /// The body.
    pub body: Bytes,
    /// The headers (AMQP, Kafka) or message attributes (SQS) as text,
    /// including what patron propagates: `x-correlation-id`, `traceparent`.
    pub headers: BTreeMap<String, String>,
    /// The content type, when set.
    pub content_type: Option<String>,
}

impl SentMessage {
    /// The body parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            crate::Error::msg(format!(
                "the message sent to {} is not the JSON expected: {e}",
                self.destination
            ))
        })
    }
}

/// What capturing producers recorded, oldest first. Cheap to clone: clones
/// share the record.
#[derive(Debug, Clone, Default)]
pub struct Sent(Arc<Mutex<Vec<SentMessage>>>);

impl Sent {
    /// An empty record.
    pub fn new() -> Self {
        Sent::default()
    }

    /// Every message recorded.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.lock().clone()
    }

    /// The messages recorded for `destination`.
    pub fn to(&self, destination: &str) -> Vec<SentMessage> {
        self.lock()
            .iter()
            .filter(|m| m.destination == destination)
            .cloned()
            .collect()
    }

    /// How many messages were recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.lock().clear();
    }

    #[cfg_attr(
        not(any(feature = "amqp", feature = "kafka", feature = "sqs")),
        allow(dead_code)
    )]
    /// Records `message`; how many were recorded for its destination
    /// before it (a Kafka offset), counted under the same lock.
    pub(crate) fn record(&self, message: SentMessage) -> usize {
        let mut all = self.lock();
        let earlier = all
            .iter()
            .filter(|m| m.destination == message.destination)
            .count();
        all.push(message);
        earlier
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SentMessage>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
