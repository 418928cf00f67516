//! Dead letters: the copy of a failed record (key, headers, the
//! `x-patron-*` headers) produced to the DLQ topic, and holding the
//! partition until the broker accepts it.

#[allow(unused_imports)]
use super::*;

impl Worker {
    /// Produces the dead letter until the broker accepts it (`true`), or
    /// the service stops or the partition is revoked (`false`: the record
    /// stays uncommitted and is delivered again). Meanwhile the partition
    /// holds (its order is kept) and the consumer is not ready.
    pub(super) async fn dead_letter_until_accepted(
        &self,
        message: &Record,
        reason: &str,
        attempts: u32,
    ) -> bool {
        let shared = &self.shared;
        dead_letter::until_accepted(
            &shared.pipeline,
            &shared.readiness,
            &shared.stop,
            || dead_letter(shared, message, reason, attempts),
            || self.proceed(),
        )
        .await
    }
}

pub(super) async fn dead_letter(
    shared: &SessionShared,
    m: &Record,
    reason: &str,
    attempts: u32,
) -> Result<(), String> {
    let (Some(producer), Some(topic)) = (&shared.producer, &shared.dlq) else {
        return Err("no DLQ topic is configured".into());
    };
    let mut original = Vec::new();
    m.for_each_header(|key, value| original.push((key.to_string(), value.map(<[u8]>::to_vec))));
    let mut headers = OwnedHeaders::new_with_capacity(original.len() + 7);
    for (key, value) in &original {
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let reason = truncate_reason(reason);
    let attempts = attempts.to_string();
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let failed_at = now_millis().to_string();
    // The copy gets its own timestamp, so the DLQ's retention counts from
    // the failure; the original's is kept here.
    let timestamp = m.timestamp().map(|t| t.to_string()).unwrap_or_default();
    for (key, value) in [
        (dlq_headers::ERROR, reason.as_str()),
        (dlq_headers::ATTEMPTS, attempts.as_str()),
        ("x-patron-original-topic", m.topic()),
        ("x-patron-original-partition", partition.as_str()),
        ("x-patron-original-offset", offset.as_str()),
        (dlq_headers::CONSUMER, &shared.pipeline.consumer),
        (dlq_headers::FAILED_AT, failed_at.as_str()),
        ("x-patron-original-timestamp", timestamp.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    if let Some(payload) = m.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| format!("producing to DLQ topic {topic:?} failed: {e}"))
}
