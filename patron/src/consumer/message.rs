//! The message model every broker shares: a raw [`Delivery`] as it came off
//! the wire, and the [`Message<T>`] a handler receives, whose payload is
//! decoded by [`Decode`] on each attempt.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::HeaderValue;
use serde::de::DeserializeOwned;

use crate::context::correlation;

/// Message headers (AMQP headers, Kafka record headers, SQS message
/// attributes), by name. Values are kept as bytes; numbers and booleans
/// from AMQP are stored as their decimal text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    map: BTreeMap<String, Bytes>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a header, replacing an earlier value with the same name.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.map.insert(name.into(), value.into());
    }

    /// The value of `name` as text, if present and valid UTF-8. Names are
    /// matched exactly first, then ignoring ASCII case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The raw value of `name`.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        if let Some(v) = self.map.get(name) {
            return Some(v);
        }
        self.map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Every header, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Lets the tracer read a message's `traceparent` and `baggage`.
impl opentelemetry::propagation::Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        Headers::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.iter().map(|(k, _)| k).collect()
    }
}

/// Where a message came from, by broker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Metadata {
    /// A RabbitMQ delivery.
    Amqp(AmqpMetadata),
    /// An SQS message.
    Sqs(SqsMetadata),
    /// A Kafka record.
    Kafka(KafkaMetadata),
    /// A message built in code, e.g. with [`Message::new`] in a unit test.
    None,
}

/// What RabbitMQ says about a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AmqpMetadata {
    /// The queue it was consumed from.
    pub queue: String,
    /// The exchange it was published to (empty for the default exchange).
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The delivery tag on the consumer's channel.
    pub delivery_tag: u64,
    /// Whether the broker delivered it before (requeued or unacked when a
    /// connection closed).
    pub redelivered: bool,
    /// The `message_id` property, when the publisher set one.
    pub message_id: Option<String>,
}

impl AmqpMetadata {
    /// Metadata for a delivery, for brokers and tests.
    pub fn new(
        queue: impl Into<String>,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        AmqpMetadata {
            queue: queue.into(),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            ..Default::default()
        }
    }
}

/// Where a Kafka record sits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KafkaMetadata {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record's key.
    pub key: Option<Vec<u8>>,
    /// The record's timestamp, in milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
}

/// What SQS says about a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SqsMetadata {
    /// The queue's name.
    pub queue: String,
    /// The message id SQS assigned.
    pub message_id: String,
    /// How many times SQS handed the message out (`ApproximateReceiveCount`).
    pub receive_count: u32,
    /// When it was sent, in milliseconds since the Unix epoch (`SentTimestamp`).
    pub sent_timestamp: Option<u64>,
}

/// A message as received, before decoding: the body, headers, content type,
/// correlation id and broker metadata. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub(crate) body: Bytes,
    pub(crate) envelope: Arc<Envelope>,
}

/// Everything about a message but its body, in one allocation that the
/// delivery, every [`Message`] decoded from it and the handler's task-local
/// context share.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    content_type: Option<Box<str>>,
    headers: Headers,
    /// Read from `X-Correlation-Id`, or generated, when first asked for:
    /// most messages have their id read by nobody.
    correlation_id: OnceLock<HeaderValue>,
    metadata: Metadata,
    /// Which delivery of the message this is, counted across redeliveries
    /// as far as the broker tells (1 for the first).
    deliveries: u32,
}

impl Envelope {
    fn new(content_type: Option<Box<str>>, headers: Headers, metadata: Metadata) -> Arc<Self> {
        Arc::new(Envelope {
            content_type,
            headers,
            correlation_id: OnceLock::new(),
            metadata,
            deliveries: 1,
        })
    }

    /// The correlation id: `X-Correlation-Id` when usable, else generated
    /// (once; every later call returns the same id).
    pub(crate) fn correlation_id(&self) -> &HeaderValue {
        self.correlation_id
            .get_or_init(|| correlation::from_bytes(self.headers.get_bytes("X-Correlation-Id")))
    }

    /// Header `name` as an HTTP header value, when present and valid.
    pub(crate) fn header_value(&self, name: &str) -> Option<HeaderValue> {
        self.headers
            .get_bytes(name)
            .and_then(|v| HeaderValue::from_bytes(v).ok())
    }
}

impl crate::context::MessageScope for Envelope {
    fn correlation_id(&self) -> &HeaderValue {
        Envelope::correlation_id(self)
    }

    fn header_value(&self, name: &str) -> Option<HeaderValue> {
        Envelope::header_value(self, name)
    }
}

impl Delivery {
    /// A delivery. The correlation id is read from the `X-Correlation-Id`
    /// header, or generated when absent or unusable (when first asked for).
    pub fn new(
        body: impl Into<Bytes>,
        content_type: Option<&str>,
        headers: Headers,
        metadata: Metadata,
    ) -> Self {
        Delivery {
            body: body.into(),
            envelope: Envelope::new(content_type.map(Box::from), headers, metadata),
        }
    }

    /// A delivery whose content type is its `content-type` header (Kafka
    /// records, SQS messages).
    #[cfg(any(feature = "kafka", feature = "sqs"))]
    pub(crate) fn with_header_content_type(
        body: impl Into<Bytes>,
        headers: Headers,
        metadata: Metadata,
    ) -> Self {
        let content_type = headers.get("content-type").map(Box::from);
        Delivery {
            body: body.into(),
            envelope: Envelope::new(content_type, headers, metadata),
        }
    }

    /// The same delivery, as delivery number `deliveries` of its message
    /// (what the broker counted across redeliveries).
    pub fn with_deliveries(mut self, deliveries: u32) -> Self {
        Arc::make_mut(&mut self.envelope).deliveries = deliveries.max(1);
        self
    }

    /// Which delivery of its message this is: 1 the first time, more when
    /// the broker redelivered it (AMQP: patron's `x-patron-deliveries` or a
    /// quorum queue's `x-delivery-count`; SQS: `ApproximateReceiveCount`;
    /// Kafka: in-process redeliveries of the record).
    pub fn deliveries(&self) -> u32 {
        self.envelope.deliveries
    }

    /// The raw body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The content type the publisher set.
    pub fn content_type(&self) -> Option<&str> {
        self.envelope.content_type.as_deref()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.envelope.headers
    }

    /// The correlation id (from `X-Correlation-Id`, or generated).
    pub fn correlation_id(&self) -> &str {
        correlation::text(self.envelope.correlation_id())
    }

    /// What the handler's task-local context is made of.
    pub(crate) fn envelope(&self) -> &Arc<Envelope> {
        &self.envelope
    }

    /// Where the message came from.
    pub fn metadata(&self) -> &Metadata {
        &self.envelope.metadata
    }

    /// Decodes the payload as `T`.
    pub fn decode<T: Decode>(&self, attempt: u32) -> Result<Message<T>, DecodeError> {
        let payload = T::decode(&self.body, self.content_type())?;
        Ok(Message {
            payload,
            envelope: Arc::clone(&self.envelope),
            attempt,
        })
    }
}

/// A message a consumer handler receives: the decoded payload plus headers,
/// correlation id, broker metadata and the attempt number.
///
/// `Message<Json<T>>` dereferences to `T`, so `msg.field` reads the payload.
///
/// ```
/// use patron::consumer::Message;
/// use patron::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Order { id: u64 }
///
/// let msg = Message::new(Json(Order { id: 7 }));
/// assert_eq!(msg.id, 7);
/// assert_eq!(msg.attempt(), 1);
/// assert_eq!(msg.correlation_id().len(), 36); // generated
/// ```
pub struct Message<T> {
    payload: T,
    envelope: Arc<Envelope>,
    attempt: u32,
}

impl<T> Message<T> {
    /// A message with this payload and no headers, for calling a handler
    /// directly in a unit test. It gets a fresh correlation id.
    pub fn new(payload: T) -> Self {
        Message {
            payload,
            envelope: Envelope::new(None, Headers::new(), Metadata::None),
            attempt: 1,
        }
    }

    /// Replaces the headers (the correlation id is read from them again).
    pub fn with_headers(mut self, headers: Headers) -> Self {
        let envelope = Arc::make_mut(&mut self.envelope);
        envelope.correlation_id = OnceLock::new();
        envelope.headers = headers;
        self
    }

    /// The decoded payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The headers as published.
    pub fn headers(&self) -> &Headers {
        &self.envelope.headers
    }

    /// The correlation id: `X-Correlation-Id` from the headers, or a
    /// generated one. It is on every log line the handler writes.
    pub fn correlation_id(&self) -> &str {
        correlation::text(self.envelope.correlation_id())
    }

    /// Broker metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.envelope.metadata
    }

    /// 1 for the first call, 2 for the first in-process retry, …
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Which delivery of this message this is, counted across redeliveries
    /// by the broker (1 the first time); `attempt` counts the in-process
    /// retries within one delivery.
    pub fn deliveries(&self) -> u32 {
        self.envelope.deliveries
    }
}

impl<T> Deref for Message<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.payload
    }
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("payload", &self.payload)
            .field("correlation_id", self.envelope.correlation_id())
            .field("attempt", &self.attempt)
            .field("metadata", &self.envelope.metadata)
            .finish_non_exhaustive()
    }
}

/// A payload that could not be decoded. Such a message is never retried: it
/// goes straight to the failure strategy (see [`crate::consumer::OnFailure`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot decode the message payload as {target}: {reason}")]
pub struct DecodeError {
    target: &'static str,
    reason: String,
}

impl DecodeError {
    /// A decode failure for the payload type `target`.
    pub fn new(target: &'static str, reason: impl Into<String>) -> Self {
        DecodeError {
            target,
            reason: reason.into(),
        }
    }
}

/// How a payload type is decoded from a message body.
///
/// Implemented for `Json<T>` (JSON, any `T: Deserialize`), `Bytes`,
/// `Vec<u8>`, `String` (UTF-8) and, with the `protobuf` feature,
/// [`Protobuf<T>`](crate::consumer::Protobuf).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a message payload type",
    label = "cannot decode a message into this",
    note = "use `Json<T>` (T: Deserialize), `Bytes`, `Vec<u8>`, `String`, or implement `patron::consumer::Decode`"
)]
pub trait Decode: Sized {
    /// Decodes `body`, whose publisher set `content_type` (if any).
    fn decode(body: &Bytes, content_type: Option<&str>) -> Result<Self, DecodeError>;
}

impl<T: DeserializeOwned> Decode for axum::Json<T> {
    fn decode(body: &Bytes, content_type: Option<&str>) -> Result<Self, DecodeError> {
        let target = std::any::type_name::<T>();
        if let Some(ct) = content_type {
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if !essence.is_empty() && !essence.to_ascii_lowercase().contains("json") {
                return Err(DecodeError::new(
                    target,
                    format!("the content type is `{ct}`, not JSON"),
                ));
            }
        }
        serde_json::from_slice(body)
            .map(axum::Json)
            .map_err(|e| DecodeError::new(target, format!("invalid JSON: {e}")))
    }
}

impl Decode for Bytes {
    fn decode(body: &Bytes, _: Option<&str>) -> Result<Self, DecodeError> {
        Ok(body.clone())
    }
}

impl Decode for Vec<u8> {
    fn decode(body: &Bytes, _: Option<&str>) -> Result<Self, DecodeError> {
        Ok(body.to_vec())
    }
}

impl Decode for String {
    fn decode(body: &Bytes, _: Option<&str>) -> Result<Self, DecodeError> {
        String::from_utf8(body.to_vec())
            .map_err(|e| DecodeError::new("String", format!("the body is not UTF-8: {e}")))
    }
}

/// A protobuf payload, decoded with `prost`.
#[cfg(feature = "protobuf")]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Protobuf<T>(pub T);

#[cfg(feature = "protobuf")]
impl<T> Deref for Protobuf<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(feature = "protobuf")]
impl<T: prost::Message + Default> Decode for Protobuf<T> {
    fn decode(body: &Bytes, _: Option<&str>) -> Result<Self, DecodeError> {
        T::decode(body.as_ref()).map(Protobuf).map_err(|e| {
            DecodeError::new(std::any::type_name::<T>(), format!("invalid protobuf: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        id: u64,
    }

    fn delivery(body: &'static str, ct: Option<&str>, headers: Headers) -> Delivery {
        Delivery::new(body, ct, headers, Metadata::None)
    }

    #[test]
    fn decodes_json_and_keeps_the_correlation_id() {
        let mut h = Headers::new();
        h.insert("X-Correlation-Id", "abc");
        let d = delivery(r#"{"id":3}"#, Some("application/json; charset=utf-8"), h);
        let m: Message<axum::Json<Order>> = d.decode(2).unwrap();
        assert_eq!(m.id, 3);
        assert_eq!(m.correlation_id(), "abc");
        assert_eq!(m.attempt(), 2);
        assert_eq!(m.headers().get("x-correlation-id"), Some("abc"));
    }

    #[test]
    fn rejects_bad_json_and_wrong_content_type_with_context() {
        let err = delivery("{", None, Headers::new())
            .decode::<axum::Json<Order>>(1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Order") && err.contains("invalid JSON"),
            "{err}"
        );
        let err = delivery(r#"{"id":1}"#, Some("text/xml"), Headers::new())
            .decode::<axum::Json<Order>>(1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`text/xml`, not JSON"), "{err}");
        let err = Delivery::new(vec![0xff, 0xfe], None, Headers::new(), Metadata::None)
            .decode::<String>(1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn generates_a_correlation_id_when_absent_once_for_all_who_ask() {
        let d = delivery("x", None, Headers::new());
        // Asked for first by a message decoded from it, then by the
        // delivery and by a clone: one id, generated once.
        let m: Message<String> = d.clone().decode(1).unwrap();
        assert_eq!(m.payload(), "x");
        let id = m.correlation_id().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(d.correlation_id(), id);
        assert_eq!(d.decode::<String>(2).unwrap().correlation_id(), id);
        assert_ne!(delivery("y", None, Headers::new()).correlation_id(), id);

        let mut h = Headers::new();
        h.insert("x-correlation-id", "from-the-header");
        let m: Message<String> = delivery("z", None, h).decode(1).unwrap();
        assert_eq!(m.correlation_id(), "from-the-header");
        // Replacing the headers reads the id from the new ones.
        let m = m.with_headers(Headers::new());
        assert_eq!(m.correlation_id().len(), 36);
    }

    #[cfg(feature = "protobuf")]
    #[test]
    fn decodes_protobuf() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Ping {
            #[prost(uint64, tag = "1")]
            id: u64,
        }
        let body = prost::Message::encode_to_vec(&Ping { id: 9 });
        let d = Delivery::new(body, None, Headers::new(), Metadata::None);
        let m: Message<Protobuf<Ping>> = d.decode(1).unwrap();
        assert_eq!(m.id, 9);
        let bad = Delivery::new(vec![0xff, 0xff, 0xff], None, Headers::new(), Metadata::None);
        let err = bad.decode::<Protobuf<Ping>>(1).unwrap_err().to_string();
        assert!(err.contains("invalid protobuf"), "{err}");
    }
}
