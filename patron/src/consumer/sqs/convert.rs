//! SQS messages as patron's deliveries, what a dead letter copies from them,
//! and the queue-depth gauges.

#[allow(unused_imports)]
use super::*;

/// The dead letter's attributes: the original's first, with their data
/// types, then as many of `patron`'s as SQS's limit of 10 leaves room for;
/// the names of those left out come second.
pub(super) fn dead_letter_attributes<const N: usize>(
    original: &HashMap<String, MessageAttributeValue>,
    patron: [(&'static str, String); N],
) -> Result<(HashMap<String, MessageAttributeValue>, Vec<&'static str>), String> {
    let mut attributes = original.clone();
    let mut left_out = Vec::new();
    for (name, value) in patron {
        if attributes.len() >= MAX_ATTRIBUTES {
            left_out.push(name);
            continue;
        }
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| format!("cannot build attribute {name}: {e}"))?;
        attributes.insert(name.to_string(), value);
    }
    Ok((attributes, left_out))
}

/// An SQS message as patron's [`Delivery`], plus its receipt handle and
/// what a dead letter copies.
pub(super) fn convert(
    queue: &str,
    m: aws_sdk_sqs::types::Message,
) -> (Delivery, Option<String>, Original) {
    let mut headers = Headers::new();
    if let Some(attrs) = &m.message_attributes {
        for (k, v) in attrs {
            if let Some(s) = v.string_value() {
                headers.insert(k.as_str(), s.to_string());
            } else if let Some(b) = v.binary_value() {
                headers.insert(k.as_str(), b.as_ref().to_vec());
            }
        }
    }
    let system = m.attributes.as_ref();
    let get = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name));
    let receive_count = get(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let metadata = SqsMetadata {
        queue: queue.to_string(),
        message_id: m.message_id.clone().unwrap_or_default(),
        receive_count,
        sent_timestamp: get(MessageSystemAttributeName::SentTimestamp).and_then(|v| v.parse().ok()),
    };
    let delivery = Delivery::with_header_content_type(
        m.body.unwrap_or_default(),
        headers,
        Metadata::Sqs(metadata),
    )
    .with_deliveries(receive_count);
    let original = Original {
        group_id: get(MessageSystemAttributeName::MessageGroupId).cloned(),
        attributes: m.message_attributes.unwrap_or_default(),
    };
    (delivery, m.receipt_handle, original)
}

/// The queue's approximate message counts, as gauges.
pub(super) struct QueueGauges {
    pub(super) visible: IntGauge,
    pub(super) delayed: IntGauge,
    pub(super) in_flight: IntGauge,
}

impl QueueGauges {
    pub(super) fn new(
        metrics: &crate::observe::metrics::Metrics,
        queue: &str,
    ) -> Result<Self, Error> {
        let vec = metrics.shared("sqs_queue_messages", || {
            IntGaugeVec::new(
                Opts::new(
                    "sqs_queue_messages",
                    "Approximate messages in an SQS queue by state (visible, delayed, in_flight), refreshed every 15 s.",
                ),
                &["queue", "state"],
            )
            .map_err(|e| Error::msg(format!("cannot create the SQS queue gauge: {e}")))
        })?;
        Ok(QueueGauges {
            visible: vec.with_label_values(&[queue, "visible"]),
            delayed: vec.with_label_values(&[queue, "delayed"]),
            in_flight: vec.with_label_values(&[queue, "in_flight"]),
        })
    }

    pub(super) async fn run(self, client: Client, queue_url: String, stop: CancellationToken) {
        let mut tick = tokio::time::interval(GAUGE_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = client
                .get_queue_attributes()
                .queue_url(&queue_url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await;
            let Ok(out) = result else { continue };
            let Some(attrs) = out.attributes() else {
                continue;
            };
            let value = |name: QueueAttributeName| {
                attrs
                    .get(&name)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            self.visible
                .set(value(QueueAttributeName::ApproximateNumberOfMessages));
            self.delayed.set(value(
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ));
            self.in_flight.set(value(
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ));
        }
    }
}
