//! The SQS consumer (feature `sqs`, built on `aws-sdk-sqs`): an
//! [`SqsConsumer`] component that `#[patron::consumer(sqs = "queue")]`
//! creates, or that you build in code.
//!
//! - The queue URL (and the DLQ's) is resolved when the component starts,
//!   not when it is built; until it resolves, `/ready` is 503.
//! - Long polling (`wait`, 20 s by default) for up to `max_messages` (1–10)
//!   at a time, whenever a handler slot (`concurrency`) is free, with the
//!   `visibility` timeout set on each receive; received messages wait for a
//!   slot in order. Messages not started at shutdown are made visible again.
//! - `Ok` (and `drop`) delete the message through a batching deleter
//!   (`DeleteMessageBatch`, up to 10 entries or 50 ms); failed entries are
//!   logged and the message reappears after its visibility timeout.
//!   `requeue` sets the visibility to 0 for immediate redelivery; `dlq`
//!   sends a copy to the DLQ queue with `x-patron-*` attributes, then
//!   deletes the original. A queue with an SQS redrive policy dead-letters
//!   natively: use `on_failure = requeue` and let `maxReceiveCount` move it.
//! - Gauges of the queue's approximate visible, delayed and in-flight
//!   messages are refreshed every 15 s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use prometheus::{IntGauge, IntGaugeVec, Opts};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;
use super::common::{Common, common_builders};
use super::dead_letter;
use super::dlq_headers;
use super::handler::MessageHandler;
use super::message::{Delivery, Headers, Metadata, SqsMetadata};
use super::metrics::ConsumerMetrics;
use super::policy::{OnFailure, Policy};
use super::process::{Pipeline, Stopper, Verdict, drain, now_millis, truncate_reason};
use crate::component::{Component, ComponentContext, ComponentInfo, Readiness};
use crate::error::Error;

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);
/// SQS allows at most 10 message attributes.
const MAX_ATTRIBUTES: usize = 10;

/// An SQS consumer component.
///
/// ```no_run
/// use patron::consumer::sqs::SqsConsumer;
/// use patron::consumer::{handler_fn, Message};
/// use patron::prelude::*;
///
/// #[patron::main]
/// async fn main(service: Service) -> patron::Result<Service> {
///     let consumer = SqsConsumer::new("invoices", handler_fn(|msg: Message<String>| async move {
///         tracing::info!(body = %msg.payload(), "invoice received");
///         Ok::<(), patron::Error>(())
///     }))
///     .concurrency(4)
///     .dlq("invoices-dlq");
///     Ok(service.with_component(consumer))
/// }
/// ```
pub struct SqsConsumer {
    common: Common,
    queue: String,
    client: Option<Client>,
    wait: Duration,
    max_messages: i32,
    visibility: Duration,
    handler: Arc<dyn MessageHandler>,
}

impl SqsConsumer {
    /// A consumer of the queue named `queue`.
    pub fn new(queue: impl Into<String>, handler: impl MessageHandler) -> Self {
        let queue = queue.into();
        SqsConsumer {
            common: Common::new(queue.as_str()),
            queue,
            client: None,
            wait: Duration::from_secs(20),
            max_messages: 10,
            visibility: Duration::from_secs(30),
            handler: Arc::new(handler),
        }
    }

    common_builders!(
        unit: "handlers",
        on_failure: "`dlq` when a DLQ is named, else `requeue`",
        dlq: "a queue name; `<queue>-dlq` when `on_failure = dlq` names none"
    );

    /// The SQS client to use. Without one, the consumer uses the
    /// `aws_sdk_sqs::Client` the service `provide`s, else one built from the
    /// AWS environment (credentials, `AWS_REGION`) and `PATRON_SQS_ENDPOINT`.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Long-poll wait per receive, 0–20 s (20 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Messages per receive, 1–10 (10).
    pub fn max_messages(mut self, n: i32) -> Self {
        self.max_messages = n;
        self
    }

    /// Visibility timeout of received messages, 0–12 h (30 s): how long a
    /// message stays hidden from other consumers while it is processed.
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    fn checked_policy(&self) -> Result<Policy, Error> {
        let fail = |what: String| {
            Err(Error::msg(format!(
                "SQS consumer {} (queue {:?}): {what}",
                self.common.name, self.queue
            )))
        };
        if self.queue.is_empty() {
            return fail("the queue name is empty".into());
        }
        if !(1..=10).contains(&self.max_messages) {
            return fail(format!(
                "max_messages is {}; SQS allows 1 to 10",
                self.max_messages
            ));
        }
        if self.wait > Duration::from_secs(20) {
            return fail(format!("wait is {:?}; SQS allows 0 to 20 s", self.wait));
        }
        if self.visibility > Duration::from_secs(43_200) {
            return fail(format!(
                "visibility is {:?}; SQS allows 0 to 12 h",
                self.visibility
            ));
        }
        self.common
            .policy(OnFailure::Requeue, Some(format!("{}-dlq", self.queue)))
            .or_else(fail)
    }
}

/// A client from the AWS environment (credentials, region), pointed at
/// `endpoint` when one is configured.
pub(crate) async fn default_client(endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

struct Shared {
    pipeline: Pipeline,
    client: Client,
    queue_url: String,
    dlq_url: Option<String>,
    stop: Stopper,
    deletes: mpsc::Sender<(String, String)>,
    queue: String,
    readiness: Readiness,
}

/// What a dead letter copies from the original besides its body.
struct Original {
    /// The message attributes, with their data types.
    attributes: HashMap<String, MessageAttributeValue>,
    /// `MessageGroupId` (FIFO queues).
    group_id: Option<String>,
}

impl Component for SqsConsumer {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::new("sqs-consumer", &self.common.name)
            .detail("queue", self.queue.as_str())
            .detail("concurrency", self.common.concurrency)
            .detail("max_messages", self.max_messages)
    }

    async fn run(self, ctx: ComponentContext) -> Result<(), Error> {
        let policy = self.checked_policy()?;
        let client = match (&self.client, ctx.deps().get::<Client>()) {
            (Some(c), _) => c.clone(),
            (None, Some(provided)) => (*provided).clone(),
            (None, None) => default_client(ctx.config().sqs_endpoint.as_deref()).await,
        };
        let stop = ctx.shutdown().child_token();
        let readiness = ctx.readiness();
        readiness.not_ready(format!(
            "SQS consumer {}: resolving the queue URL",
            self.common.name
        ));
        // Resolve the queue URLs now, retrying while SQS is unreachable.
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let (queue_url, dlq_url) = loop {
            let resolved = async {
                let url = queue_url(&client, &self.queue).await?;
                let dlq = match &policy.dlq {
                    Some(d) => Some(queue_url(&client, d).await?),
                    None => None,
                };
                Ok::<_, String>((url, dlq))
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = resolved => match r {
                    Ok(urls) => break urls,
                    Err(e) => {
                        let reason = format!("SQS consumer {}: {e}", self.common.name);
                        readiness.not_ready(reason.clone());
                        tracing::warn!(consumer = %self.common.name, error = %reason, "cannot resolve the SQS queue; retrying");
                    }
                },
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        };
        let metrics =
            ConsumerMetrics::new(ctx.metrics(), &self.common.name, "aws_sqs", &self.queue)?;
        let (deletes, delete_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            pipeline: Pipeline {
                consumer: self.common.name.as_str().into(),
                system: "aws_sqs",
                destination: self.queue.as_str().into(),
                span_name: format!("{} process", self.queue).into(),
                policy,
                metrics,
                deps: Arc::clone(ctx.deps()),
                redelivers_in_process: false,
            },
            client: client.clone(),
            queue_url: queue_url.clone(),
            dlq_url,
            stop: Stopper::new(stop.clone()),
            deletes,
            queue: self.queue.clone(),
            readiness: readiness.clone(),
        });
        let deleter = tokio::spawn(run_deleter(
            client.clone(),
            queue_url.clone(),
            self.common.name.clone(),
            delete_rx,
        ));
        let gauges = QueueGauges::new(ctx.metrics(), &self.queue)?;
        let gauge_task = tokio::spawn(gauges.run(client.clone(), queue_url.clone(), stop.clone()));
        readiness.ready();
        tracing::info!(consumer = %self.common.name, queue = %self.queue, concurrency = self.common.concurrency, "consuming");

        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(self.common.concurrency));
        backoff.up();
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
            let receive = client
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(self.max_messages)
                .wait_time_seconds(if failing {
                    0
                } else {
                    self.wait.as_secs() as i32
                })
                .visibility_timeout(self.visibility.as_secs() as i32)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send();
            let received = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = receive => r,
            };
            let messages = match received {
                Ok(out) => {
                    if failing {
                        tracing::info!(consumer = %self.common.name, "SQS answers again");
                        readiness.ready();
                        failing = false;
                    }
                    backoff.up();
                    out.messages.unwrap_or_default()
                }
                Err(e) => {
                    let reason = format!(
                        "SQS consumer {}: receiving from {} failed: {}",
                        self.common.name,
                        self.queue,
                        aws_sdk_sqs::error::DisplayErrorContext(&e)
                    );
                    readiness.not_ready(reason.clone());
                    failing = true;
                    let delay = backoff.next();
                    tracing::warn!(consumer = %self.common.name, error = %reason, retry_in_ms = delay.as_millis() as u64, "SQS receive failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            let mut first = Some(first);
            let mut waiting = messages.into_iter();
            while let Some(message) = waiting.next() {
                let permit = match first.take() {
                    Some(p) => p,
                    None => tokio::select! {
                        biased;
                        _ = stop.cancelled() => {
                            // Not started: make them visible again at once.
                            for m in std::iter::once(message).chain(waiting.by_ref()) {
                                if let Some(r) = &m.receipt_handle {
                                    shared.release(r).await;
                                }
                            }
                            break;
                        }
                        p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    },
                };
                let shared = Arc::clone(&shared);
                let handler = Arc::clone(&self.handler);
                tracker.spawn(async move {
                    let (delivery, receipt, original) = convert(&shared.queue, message);
                    let verdict = shared
                        .pipeline
                        .process(&*handler, &delivery, &shared.stop)
                        .await;
                    shared.settle(&delivery, receipt, &original, verdict).await;
                    drop(permit);
                });
            }
        }
        drain(&tracker, ctx.config().shutdown_timeout, &self.common.name).await;
        gauge_task.abort();
        let result = shared.stop.result(&self.common.name);
        // The deleter flushes what is pending once every sender is gone.
        drop(shared);
        // Handlers past the shutdown timeout still hold senders: do not wait
        // for them long (the service aborts them soon after).
        if tokio::time::timeout(Duration::from_secs(2), deleter)
            .await
            .is_err()
        {
            tracing::warn!(consumer = %self.common.name, "pending SQS deletes were not flushed; those messages will be redelivered");
        }
        tracing::info!(consumer = %self.common.name, "SQS consumer stopped");
        result
    }
}

async fn queue_url(client: &Client, name: &str) -> Result<String, String> {
    client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot resolve the URL of queue {name:?}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?
        .queue_url
        .ok_or_else(|| format!("SQS returned no URL for queue {name:?}"))
}

impl Shared {
    async fn settle(
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

    async fn delete(&self, id: String, receipt: String) {
        if self.deletes.send((id, receipt)).await.is_err() {
            tracing::warn!(consumer = %self.pipeline.consumer, "the SQS deleter stopped; the message will be redelivered");
        }
    }

    async fn release(&self, receipt: &str) {
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

    async fn dead_letter(
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
async fn run_deleter(
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

async fn delete_batch(
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

/// The dead letter's attributes: the original's first, with their data
/// types, then as many of `patron`'s as SQS's limit of 10 leaves room for;
/// the names of those left out come second.
fn dead_letter_attributes<const N: usize>(
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
fn convert(queue: &str, m: aws_sdk_sqs::types::Message) -> (Delivery, Option<String>, Original) {
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
struct QueueGauges {
    visible: IntGauge,
    delayed: IntGauge,
    in_flight: IntGauge,
}

impl QueueGauges {
    fn new(metrics: &crate::observe::metrics::Metrics, queue: &str) -> Result<Self, Error> {
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

    async fn run(self, client: Client, queue_url: String, stop: CancellationToken) {
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
