//! lapin deliveries as patron's: headers read as text, the delivery count
//! from what earlier deliveries left, and the properties a copy of a message
//! (dead letter or counted redelivery) carries.

#[allow(unused_imports)]
use super::*;

/// The header counting a message's deliveries on the copies patron puts
/// back on its queue (what this delivery's number was).
pub(super) const DELIVERIES: &str = "x-patron-deliveries";

/// Which delivery this is, from what earlier deliveries left: patron's
/// `x-patron-deliveries` on a copy it put back, a quorum queue's
/// `x-delivery-count` of returns; 1 when neither is there.
pub(super) fn deliveries(headers: Option<&FieldTable>) -> u32 {
    let Some(table) = headers else { return 1 };
    let number = |name: &str| -> u32 {
        match table.inner().get(name) {
            Some(v) => value_bytes(v)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.trim().parse::<i64>().ok())
                .map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
            None => 0,
        }
    };
    number(DELIVERIES)
        .max(number("x-delivery-count"))
        .saturating_add(1)
}

/// What a copy of a message is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyFor {
    /// The DLQ: persistent, and it does not expire.
    DeadLetter,
    /// Its own queue again, counted: as the original was.
    Redelivery,
}

pub(super) fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        multiple: false,
    }
}

/// A copy's properties: the original's, every one with its type, and its
/// headers plus `extra` — except `user_id`, which moves to an
/// `x-patron-original-user-id` header (RabbitMQ refuses a `user_id` not the
/// publisher's own). A dead letter also moves `expiration` to a header (it
/// must not expire) and is persistent; a redelivery keeps both as they were.
pub(super) fn copy_properties<'a>(
    original: &BasicProperties,
    extra: impl IntoIterator<Item = (&'a str, AMQPValue)>,
    purpose: CopyFor,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    if let Some(user) = original.user_id() {
        headers.insert(
            dlq_headers::ORIGINAL_USER_ID.into(),
            AMQPValue::LongString(user.as_str().into()),
        );
    }
    if let Some(expiration) = original.expiration()
        && purpose == CopyFor::DeadLetter
    {
        headers.insert(
            dlq_headers::ORIGINAL_EXPIRATION.into(),
            AMQPValue::LongString(expiration.as_str().into()),
        );
    }
    for (k, v) in extra {
        headers.insert(k.into(), v);
    }
    let mut props = BasicProperties::default().with_headers(headers);
    let o = original;
    match (purpose, o.delivery_mode()) {
        (CopyFor::DeadLetter, _) => props = props.with_delivery_mode(2),
        (CopyFor::Redelivery, Some(mode)) => props = props.with_delivery_mode(*mode),
        (CopyFor::Redelivery, None) => {}
    }
    if purpose == CopyFor::Redelivery
        && let Some(v) = o.expiration()
    {
        props = props.with_expiration(v.clone());
    }
    if let Some(v) = o.content_type() {
        props = props.with_content_type(v.clone());
    }
    if let Some(v) = o.content_encoding() {
        props = props.with_content_encoding(v.clone());
    }
    if let Some(v) = o.priority() {
        props = props.with_priority(*v);
    }
    if let Some(v) = o.correlation_id() {
        props = props.with_correlation_id(v.clone());
    }
    if let Some(v) = o.reply_to() {
        props = props.with_reply_to(v.clone());
    }
    if let Some(v) = o.message_id() {
        props = props.with_message_id(v.clone());
    }
    if let Some(v) = o.timestamp() {
        props = props.with_timestamp(*v);
    }
    if let Some(v) = o.kind() {
        props = props.with_type(v.clone());
    }
    if let Some(v) = o.app_id() {
        props = props.with_app_id(v.clone());
    }
    if let Some(v) = o.cluster_id() {
        props = props.with_cluster_id(v.clone());
    }
    props
}

/// A lapin delivery as patron's [`Delivery`], plus its acker and its
/// original properties (for a faithful dead letter).
pub(super) fn convert(
    queue: &str,
    d: lapin::message::Delivery,
) -> (Delivery, lapin::Acker, BasicProperties) {
    let mut headers = Headers::new();
    if let Some(table) = d.properties.headers() {
        for (k, v) in table.inner() {
            if let Some(bytes) = value_bytes(v) {
                headers.insert(k.as_str(), bytes);
            }
        }
    }
    if headers.get("X-Correlation-Id").is_none()
        && let Some(id) = d.properties.correlation_id()
    {
        headers.insert("X-Correlation-Id", id.as_str().to_string());
    }
    let count = deliveries(d.properties.headers().as_ref());
    let mut metadata = AmqpMetadata::new(queue, d.exchange.as_str(), d.routing_key.as_str());
    metadata.delivery_tag = d.delivery_tag;
    metadata.redelivered = d.redelivered;
    metadata.message_id = d.properties.message_id().as_ref().map(|m| m.to_string());
    let content_type = d
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_string());
    let delivery = Delivery::new(
        Bytes::from(d.data),
        content_type.as_deref(),
        headers,
        Metadata::Amqp(metadata),
    )
    .with_deliveries(count);
    (delivery, d.acker, d.properties)
}

/// A header value as bytes: strings as they are, numbers and booleans as
/// decimal text; tables and arrays are skipped.
pub(super) fn value_bytes(v: &AMQPValue) -> Option<Vec<u8>> {
    Some(match v {
        AMQPValue::LongString(s) => s.as_bytes().to_vec(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
        AMQPValue::ByteArray(b) => b.as_slice().to_vec(),
        AMQPValue::Boolean(b) => b.to_string().into_bytes(),
        AMQPValue::ShortShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongLongInt(n) => n.to_string().into_bytes(),
        AMQPValue::Float(n) => n.to_string().into_bytes(),
        AMQPValue::Double(n) => n.to_string().into_bytes(),
        AMQPValue::Timestamp(n) => n.to_string().into_bytes(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::handler_fn;

    pub(super) fn consumer() -> AmqpConsumer {
        AmqpConsumer::new(
            "orders",
            handler_fn(|_m: crate::consumer::Message<String>| async {}),
        )
    }

    #[test]
    pub(super) fn a_dead_letter_keeps_every_property_and_typed_header() {
        let mut nested = FieldTable::default();
        nested.insert("k".into(), AMQPValue::LongInt(5));
        let mut headers = FieldTable::default();
        headers.insert("count".into(), AMQPValue::LongLongInt(42));
        headers.insert("flag".into(), AMQPValue::Boolean(true));
        headers.insert("table".into(), AMQPValue::FieldTable(nested.clone()));
        headers.insert(
            "list".into(),
            AMQPValue::FieldArray(vec![AMQPValue::ShortString("a".into())].into()),
        );
        let original = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers)
            .with_delivery_mode(1)
            .with_priority(7)
            .with_correlation_id("corr".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_type("order.created".into())
            .with_user_id("alice".into())
            .with_app_id("shop".into())
            .with_cluster_id("c1".into());
        let copy = copy_properties(
            &original,
            [(dlq_headers::ATTEMPTS, AMQPValue::LongLongInt(3))],
            CopyFor::DeadLetter,
        );
        assert_eq!(copy.content_type(), original.content_type());
        assert_eq!(copy.content_encoding(), original.content_encoding());
        assert_eq!(copy.priority(), &Some(7));
        assert_eq!(copy.correlation_id(), original.correlation_id());
        assert_eq!(copy.reply_to(), original.reply_to());
        assert_eq!(copy.message_id(), original.message_id());
        assert_eq!(copy.timestamp(), &Some(1_700_000_000));
        assert_eq!(copy.kind(), original.kind());
        assert_eq!(copy.app_id(), original.app_id());
        assert_eq!(copy.cluster_id(), original.cluster_id());
        assert_eq!(copy.delivery_mode(), &Some(2), "a dead letter persists");
        assert_eq!(copy.user_id(), &None, "RabbitMQ refuses a foreign user_id");
        assert_eq!(copy.expiration(), &None, "a dead letter does not expire");
        let h = copy.headers().clone().unwrap();
        let h = h.inner();
        assert_eq!(h.get("count"), Some(&AMQPValue::LongLongInt(42)));
        assert_eq!(h.get("flag"), Some(&AMQPValue::Boolean(true)));
        assert_eq!(h.get("table"), Some(&AMQPValue::FieldTable(nested)));
        assert!(matches!(h.get("list"), Some(AMQPValue::FieldArray(a)) if a.as_slice().len() == 1));
        assert_eq!(
            h.get(dlq_headers::ORIGINAL_USER_ID),
            Some(&AMQPValue::LongString("alice".into()))
        );
        assert_eq!(
            h.get(dlq_headers::ORIGINAL_EXPIRATION),
            Some(&AMQPValue::LongString("60000".into()))
        );
        assert_eq!(
            h.get(dlq_headers::ATTEMPTS),
            Some(&AMQPValue::LongLongInt(3))
        );
    }

    #[test]
    pub(super) fn settings_default_and_validate() {
        let s = consumer().settings().unwrap();
        assert_eq!(s.prefetch, 10);
        assert_eq!(s.policy.on_failure, OnFailure::Requeue);
        let s = consumer()
            .dlq("orders.dead")
            .concurrency(3)
            .settings()
            .unwrap();
        assert_eq!(s.policy.on_failure, OnFailure::Dlq);
        assert_eq!(s.prefetch, 30);
        let s = consumer().on_failure(OnFailure::Dlq).settings().unwrap();
        assert_eq!(s.policy.dlq.as_deref(), Some("orders.dlq"));
        let err = consumer()
            .concurrency(0)
            .settings()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("orders") && err.contains("concurrency"),
            "{err}"
        );
        let b = AmqpConsumer::batch(
            "b",
            crate::consumer::batch_handler_fn(|_b: crate::consumer::Batch<String>| async {}),
            50,
            Duration::from_secs(1),
        );
        let err = b.prefetch(10).settings().unwrap_err().to_string();
        assert!(err.contains("smaller than the batch size 50"), "{err}");
    }
}
