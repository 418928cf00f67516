//! Carrying out a verdict on one SQS message: deletes through a batching
//! deleter, visibility 0 for a requeue, and the dead letter with the
//! original's typed attributes.

#[allow(unused_imports)]
use super::*;

impl QueueShared {
    pub(super) async fn settle(
        &self,
        delivery: &Delivery,
        receipt: Option<String>,
        original: &Original,
        verdict: Verdict,
    ) {
        let consumer = &self.pipeline.consumer;
        let Some(receipt) = receipt else {
            tracing::error!(consumer = %consumer, "SQS message without a receipt handle; it cannot be acknowledged");
            return;
        };
        let id = match delivery.metadata() {
            Metadata::Sqs(m) => m.message_id.clone(),
            _ => String::new(),
        };
        match verdict {
            Verdict::Ack | Verdict::Drop => self.delete(id, receipt).await,
            Verdict::Requeue | Verdict::Release => self.release(&receipt).await,
            Verdict::DeadLetter { reason, attempts } => {
                match self
                    .dead_letter(delivery, original, &reason, attempts)
                    .await
                {
                    Ok(()) => {
                        dead_letter::accepted(&self.pipeline, &self.readiness);
                        self.delete(id, receipt).await;
                    }
                    // Left in flight: SQS shows it again after its
                    // visibility timeout, a natural wait before the next try.
                    Err(e) => dead_letter::refused(
                        &self.pipeline,
                        &self.readiness,
                        &e,
                        "after the visibility timeout",
                    ),
                }
            }
            Verdict::Exit(reason) => self.stop.exit(reason),
        }
    }

    pub(super) async fn delete(&self, id: String, receipt: String) {
        if self.deletes.send((id, receipt)).await.is_err() {
            tracing::warn!(consumer = %self.pipeline.consumer, "the SQS deleter stopped; the message will be redelivered");
        }
    }

    pub(super) async fn release(&self, receipt: &str) {
        if let Err(e) = self
            .client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
        {
            tracing::warn!(consumer = %self.pipeline.consumer, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot make the message visible again; SQS redelivers it after its visibility timeout");
        }
    }

    pub(super) async fn dead_letter(
        &self,
        d: &Delivery,
        original: &Original,
        reason: &str,
        attempts: u32,
    ) -> Result<(), String> {
        let Some(dlq_url) = &self.dlq_url else {
            return Err("no DLQ is configured".into());
        };
        let (message_id, receive_count) = match d.metadata() {
            Metadata::Sqs(m) => (m.message_id.clone(), m.receive_count),
            _ => (String::new(), 0),
        };
        let patron = [
            (dlq_headers::ERROR, truncate_reason(reason)),
            (dlq_headers::ATTEMPTS, attempts.to_string()),
            (dlq_headers::QUEUE, self.queue.clone()),
            (dlq_headers::CONSUMER, self.pipeline.consumer.to_string()),
            (dlq_headers::FAILED_AT, now_millis().to_string()),
            ("x-patron-original-message-id", message_id.clone()),
            ("x-patron-deliveries", receive_count.to_string()),
        ];
        let (attributes, left_out) = dead_letter_attributes(&original.attributes, patron)?;
        if !left_out.is_empty() {
            tracing::warn!(consumer = %self.pipeline.consumer, left_out = ?left_out, "SQS allows 10 message attributes: these patron attributes were not added to the dead letter (the original's come first)");
        }
        let body = String::from_utf8_lossy(d.body()).into_owned();
        let mut send = self
            .client
            .send_message()
            .queue_url(dlq_url)
            .message_body(body)
            .set_message_attributes(Some(attributes));
        if dlq_url.ends_with(".fifo") {
            // A FIFO DLQ needs a group; the original's keeps its order.
            let group = original
                .group_id
                .clone()
                .unwrap_or_else(|| self.pipeline.consumer.to_string());
            send = send
                .message_group_id(group)
                .message_deduplication_id(message_id);
        }
        send.send().await.map(|_| ()).map_err(|e| {
            format!(
                "sending to the DLQ failed: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
    }
}

/// Deletes acknowledged messages in batches of up to 10, at most 50 ms
/// after the first of a batch; ends, after a last flush, when every sender
/// is gone.
pub(super) async fn run_deleter(
    client: Client,
    queue_url: String,
    consumer: String,
    mut rx: mpsc::Receiver<(String, String)>,
) {
    let mut batch: Vec<(String, String)> = Vec::with_capacity(10);
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut closed = false;
        while batch.len() < 10 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                next = rx.recv() => match next {
                    Some(entry) => batch.push(entry),
                    None => { closed = true; break; }
                },
            }
        }
        delete_batch(&client, &queue_url, &consumer, &mut batch).await;
        if closed {
            break;
        }
    }
}

pub(super) async fn delete_batch(
    client: &Client,
    queue_url: &str,
    consumer: &str,
    batch: &mut Vec<(String, String)>,
) {
    let entries: Vec<DeleteMessageBatchRequestEntry> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, (_, receipt))| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt)
                .build()
                .ok()
        })
        .collect();
    let result = client
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await;
    match result {
        Ok(out) => {
            for failed in out.failed() {
                let message_id = failed
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| batch.get(i))
                    .map(|(id, _)| id.as_str())
                    .unwrap_or_default();
                tracing::error!(
                    consumer = %consumer,
                    message_id,
                    code = failed.code(),
                    error = failed.message().unwrap_or_default(),
                    "SQS did not delete an acknowledged message; it will be redelivered"
                );
            }
        }
        Err(e) => tracing::error!(
            consumer = %consumer,
            messages = batch.len(),
            error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
            "deleting acknowledged SQS messages failed; they will be redelivered"
        ),
    }
    batch.clear();
}
