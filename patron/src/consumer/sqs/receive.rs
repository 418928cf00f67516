//! The receive side of one SQS consumer: resolving the queue URLs while SQS
//! is unreachable, the long-poll loop that receives whenever a handler slot
//! is free, and handing each message to a handler task.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message as SqsMessage, MessageSystemAttributeName};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{QueueShared, SqsConsumer, convert, queue_url};
use crate::consumer::reconnect::{Reconnect, Severity};

impl SqsConsumer {
    /// The URLs of the queue and of `dlq`, retried with backoff while SQS
    /// cannot answer; `None` when shutdown came first.
    pub(super) async fn resolve_urls(
        &self,
        client: &Client,
        dlq: Option<&str>,
        stop: &CancellationToken,
        reconnect: &mut Reconnect,
    ) -> Option<(String, Option<String>)> {
        loop {
            let resolved = async {
                let url = queue_url(client, &self.queue).await?;
                let dlq = match dlq {
                    Some(d) => Some(queue_url(client, d).await?),
                    None => None,
                };
                Ok::<_, String>((url, dlq))
            };
            let reason = tokio::select! {
                _ = stop.cancelled() => return None,
                r = resolved => match r {
                    Ok(urls) => return Some(urls),
                    Err(e) => format!("SQS consumer {}: {e}", self.common.name),
                },
            };
            let what = "cannot resolve the SQS queue; retrying";
            if !reconnect.failed(Severity::Transient, reason, what).await {
                return None;
            }
        }
    }

    /// Receives until `stop`, spawning one handler task per message on
    /// `tracker`, at most `concurrency` at a time.
    pub(super) async fn receive_loop(
        &self,
        shared: &Arc<QueueShared>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        mut reconnect: Reconnect,
    ) {
        let permits = Arc::new(Semaphore::new(self.common.concurrency));
        // After a failed receive, poll without waiting until one succeeds:
        // a long poll would keep `/ready` at 503 for up to `wait` after SQS
        // is back.
        let mut failing = false;
        loop {
            // Receive only when a handler slot is free; then take up to
            // `max_messages`, which wait their turn for a slot in order, as
            // AMQP's prefetch does.
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let received = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = self.receive(shared, failing) => r,
            };
            match received {
                Ok(messages) => {
                    if failing {
                        tracing::info!(consumer = %self.common.name, "SQS answers again");
                        shared.readiness.ready();
                        failing = false;
                    }
                    reconnect.up();
                    self.dispatch(shared, tracker, stop, &permits, first, messages)
                        .await;
                }
                Err(reason) => {
                    failing = true;
                    let what = "SQS receive failed; retrying";
                    if !reconnect.failed(Severity::Transient, reason, what).await {
                        break;
                    }
                }
            }
        }
    }

    /// One `ReceiveMessage` call: a long poll unless the last one `failing`.
    async fn receive(
        &self,
        shared: &QueueShared,
        failing: bool,
    ) -> Result<Vec<SqsMessage>, String> {
        let wait = if failing {
            0
        } else {
            self.wait.as_secs() as i32
        };
        shared
            .client
            .receive_message()
            .queue_url(&shared.queue_url)
            .max_number_of_messages(self.max_messages)
            .wait_time_seconds(wait)
            .visibility_timeout(self.visibility.as_secs() as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map(|out| out.messages.unwrap_or_default())
            .map_err(|e| {
                format!(
                    "SQS consumer {}: receiving from {} failed: {}",
                    self.common.name,
                    self.queue,
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            })
    }

    /// Starts a handler task for each of `messages` as slots free up, the
    /// first in the slot `first` already holds; at `stop`, those not
    /// started are made visible again at once.
    async fn dispatch(
        &self,
        shared: &Arc<QueueShared>,
        tracker: &TaskTracker,
        stop: &CancellationToken,
        permits: &Arc<Semaphore>,
        first: OwnedSemaphorePermit,
        messages: Vec<SqsMessage>,
    ) {
        let mut first = Some(first);
        let mut waiting = messages.into_iter();
        while let Some(message) = waiting.next() {
            let permit = match first.take() {
                Some(p) => p,
                None => tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        for m in std::iter::once(message).chain(waiting.by_ref()) {
                            if let Some(r) = &m.receipt_handle {
                                shared.release(r).await;
                            }
                        }
                        return;
                    }
                    p = Arc::clone(permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                },
            };
            let shared = Arc::clone(shared);
            let handler = Arc::clone(&self.handler);
            // Boxed: a handler's future is large, and tokio moves a spawned
            // future several times while it sets up the task (a copy of every
            // byte each time); boxed, those moves are pointer-sized.
            tracker.spawn(Box::pin(async move {
                let (delivery, receipt, original) = convert(&shared.queue, message);
                let verdict = shared
                    .pipeline
                    .process(&*handler, &delivery, &shared.stop)
                    .await;
                shared.settle(&delivery, receipt, &original, verdict).await;
                drop(permit);
            }));
        }
    }
}

/// Waits briefly for the delete batcher to flush what is pending (it ends
/// once every sender is gone). Handlers past the shutdown timeout still hold
/// senders: do not wait for them long (the service aborts them soon after).
pub(super) async fn flush_deletes(deleter: JoinHandle<()>, consumer: &str) {
    if tokio::time::timeout(Duration::from_secs(2), deleter)
        .await
        .is_err()
    {
        tracing::warn!(consumer = %consumer, "pending SQS deletes were not flushed; those messages will be redelivered");
    }
}
