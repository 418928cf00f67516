//! [`SqsSender`]: instrumented SQS sends over aws-sdk-sqs — one message or
//! a batch.
//!
//! - Queues are named (`orders`) or given as URLs; names are resolved once
//!   with `GetQueueUrl` and cached.
//! - Every message carries `traceparent`, `baggage` and `X-Correlation-Id`
//!   from the current request or message as string message attributes
//!   (attributes the caller set win), which patron's SQS consumer reads.
//! - [`send_batch`](SqsSender::send_batch) takes any number of messages,
//!   sends them ten per `SendMessageBatch` call, and reports each
//!   message that SQS refused by its index, so the caller can retry exactly
//!   those.
//! - A span per call (`otel.kind = producer`, `messaging.system =
//!   aws_sqs`, queue, batch size) and
//!   `sqs_send_duration_seconds{queue, outcome}` with outcome `ok`,
//!   `partial` (some batch entries refused) or `error`.
//! - Checked before any network I/O: at most 10 message attributes, a
//!   delay of at most 15 minutes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use prometheus::HistogramVec;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::capture::{Sent, SentMessage};
use crate::config::Config;
use crate::observe::metrics;

/// The most entries one `SendMessageBatch` call takes.
pub const BATCH_LIMIT: usize = 10;

/// The most message attributes SQS accepts on one message.
pub const ATTRIBUTE_LIMIT: usize = 10;

/// The longest delay SQS accepts.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// A client from the AWS environment (credentials, region), pointed at
/// `endpoint` when one is configured.
pub(crate) async fn default_client(endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// One message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsMessage {
    body: String,
    attributes: Vec<(String, String)>,
    delay: Option<Duration>,
    group_id: Option<String>,
    deduplication_id: Option<String>,
}

impl SqsMessage {
    /// A message with `body`.
    pub fn new(body: impl Into<String>) -> Self {
        SqsMessage {
            body: body.into(),
            attributes: Vec::new(),
            delay: None,
            group_id: None,
            deduplication_id: None,
        }
    }

    /// A message whose body is `value` as JSON, with a `content-type`
    /// attribute of `application/json` so patron consumers decode it.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, SqsError> {
        let body = serde_json::to_string(value).map_err(|e| SqsError::Encode {
            reason: e.to_string(),
        })?;
        Ok(SqsMessage::new(body).attribute("content-type", "application/json"))
    }

    /// Adds a string message attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// Delays delivery (whole seconds, at most [`MAX_DELAY`]).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The message group of a FIFO queue.
    pub fn group_id(mut self, id: impl Into<String>) -> Self {
        self.group_id = Some(id.into());
        self
    }

    /// The deduplication id on a FIFO queue without content-based
    /// deduplication.
    pub fn deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.deduplication_id = Some(id.into());
        self
    }

    /// The body.
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// Why a send failed. Every message names the queue.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// The body could not be encoded as JSON.
    #[error("SQS message: cannot encode the body as JSON: {reason}")]
    Encode {
        /// serde_json's error.
        reason: String,
    },
    /// The message breaks an SQS limit; nothing was sent.
    #[error("SQS queue {queue}: {reason}")]
    Invalid {
        /// The queue.
        queue: String,
        /// The limit broken.
        reason: String,
    },
    /// The queue URL could not be found.
    #[error("SQS queue {queue}: cannot resolve its URL: {reason}")]
    Resolve {
        /// The queue name.
        queue: String,
        /// The SDK's error with its context.
        reason: String,
    },
    /// The call failed as a whole. (Not named `Send`: a public item of
    /// that name makes rustc spell `std::marker::Send` in full in every
    /// user's diagnostics.)
    #[error("SQS queue {queue}: {operation} failed: {reason}")]
    Call {
        /// The queue.
        queue: String,
        /// `SendMessage` or `SendMessageBatch`.
        operation: &'static str,
        /// The SDK's error with its context.
        reason: String,
    },
}

/// What [`SqsSender::send_batch`] did with each message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchSent {
    /// `(index in the input, message id)` of each message sent.
    pub sent: Vec<(usize, String)>,
    /// Each message SQS refused.
    pub failed: Vec<BatchFailure>,
}

/// One message of a batch that SQS refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Its index in the input.
    pub index: usize,
    /// SQS's error code.
    pub code: String,
    /// SQS's explanation.
    pub reason: String,
    /// Whether the message itself is at fault (retrying it unchanged will
    /// fail again).
    pub sender_fault: bool,
}

/// Instrumented SQS sends. Cheap to clone.
///
/// ```no_run
/// use patron::client::sqs::{SqsMessage, SqsSender};
/// use patron::prelude::*;
///
/// #[patron::route(POST "/invoices/{id}/send")]
/// async fn queue_invoice(Path(id): Path<u64>, sqs: Dep<SqsSender>) -> Result<StatusCode, patron::Error> {
///     sqs.send("invoices", &SqsMessage::json(&serde_json::json!({ "invoice": id }))?).await?;
///     Ok(StatusCode::ACCEPTED)
/// }
///
/// #[patron::main]
/// async fn main(service: Service) -> patron::Result<Service> {
///     // The AWS environment (region, credentials), and PATRON_SQS_ENDPOINT.
///     let sqs = SqsSender::from_config(service.current_config()).await;
///     Ok(service.with_client(sqs))
/// }
/// ```
#[derive(Clone)]
pub struct SqsSender {
    client: Client,
    urls: Arc<Mutex<HashMap<String, String>>>,
    /// Set by [`SqsSender::capturing`]: record instead of sending.
    capture: Option<Sent>,
}

impl fmt::Debug for SqsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsSender").finish_non_exhaustive()
    }
}

impl SqsSender {
    /// Sends with `client`.
    pub fn new(client: Client) -> Self {
        SqsSender {
            client,
            urls: Arc::default(),
            capture: None,
        }
    }

    /// A sender for tests that records each message in `sent` — with the
    /// attributes it would carry (trace context, correlation id), checked
    /// against SQS's limits — instead of sending it, and answers with a
    /// fresh message id. Its [`client`](Self::client) talks to nothing.
    ///
    /// ```
    /// use patron::client::capture::Sent;
    /// use patron::client::sqs::{SqsMessage, SqsSender};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> patron::Result<()> {
    /// let sent = Sent::new();
    /// let sqs = SqsSender::capturing(&sent);
    /// sqs.send("invoices", &SqsMessage::new("42").attribute("tenant", "acme")).await?;
    /// assert_eq!(sent.to("invoices")[0].headers["tenant"], "acme");
    /// # Ok(())
    /// # }
    /// ```
    pub fn capturing(sent: &Sent) -> Self {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url("http://capturing.invalid")
            .build();
        SqsSender {
            capture: Some(sent.clone()),
            ..SqsSender::new(Client::from_conf(config))
        }
    }

    /// Records `message` for `queue` when capturing: its id, else `None`.
    fn captured(
        &self,
        queue: &str,
        message: &SqsMessage,
        attributes: &HashMap<String, MessageAttributeValue>,
    ) -> Option<String> {
        let sent = self.capture.as_ref()?;
        sent.record(SentMessage {
            system: "aws_sqs",
            destination: queue.to_string(),
            routing_key: None,
            key: None,
            body: message.body.clone().into(),
            headers: attributes
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                .collect(),
            content_type: None,
        });
        Some(uuid::Uuid::new_v4().to_string())
    }

    /// A client from the AWS environment (region, credentials), pointed at
    /// `PATRON_SQS_ENDPOINT` when it is set — as the SQS consumer's.
    pub async fn from_config(config: &Config) -> Self {
        SqsSender::new(default_client(config.sqs_endpoint.as_deref()).await)
    }

    /// The SDK client, for calls this wrapper does not offer.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The URL of `queue` (a name, resolved once, or already a URL).
    async fn url(&self, queue: &str) -> Result<String, SqsError> {
        if queue.starts_with("https://") || queue.starts_with("http://") {
            return Ok(queue.to_string());
        }
        if let Some(url) = self.urls.lock().await.get(queue) {
            return Ok(url.clone());
        }
        let url = self
            .client
            .get_queue_url()
            .queue_name(queue)
            .send()
            .await
            .map_err(|e| SqsError::Resolve {
                queue: queue.to_string(),
                reason: DisplayErrorContext(&e).to_string(),
            })?
            .queue_url
            .ok_or_else(|| SqsError::Resolve {
                queue: queue.to_string(),
                reason: "the answer had no URL".to_string(),
            })?;
        self.urls
            .lock()
            .await
            .insert(queue.to_string(), url.clone());
        Ok(url)
    }

    /// Sends one message to `queue`; returns its message id.
    pub async fn send(&self, queue: &str, message: &SqsMessage) -> Result<String, SqsError> {
        let span = send_span(queue, 1);
        let started = Instant::now();
        let result = async {
            let attributes = attributes(queue, message)?;
            if let Some(id) = self.captured(queue, message, &attributes) {
                return Ok(id);
            }
            let url = self.url(queue).await?;
            let output = self
                .client
                .send_message()
                .queue_url(url)
                .message_body(&message.body)
                .set_message_attributes(Some(attributes))
                .set_delay_seconds(delay_seconds(message))
                .set_message_group_id(message.group_id.clone())
                .set_message_deduplication_id(message.deduplication_id.clone())
                .send()
                .await
                .map_err(|e| SqsError::Call {
                    queue: queue.to_string(),
                    operation: "SendMessage",
                    reason: DisplayErrorContext(&e).to_string(),
                })?;
            Ok(output.message_id.unwrap_or_default())
        }
        .instrument(span.clone())
        .await;
        finish(&span, queue, started, result.as_ref().err(), false);
        result
    }

    /// Sends `messages` to `queue`, ten per call. `Err` only when nothing
    /// of a call could be sent (or a message breaks a limit: then nothing is
    /// sent); messages refused one by one are in [`BatchSent::failed`].
    pub async fn send_batch(
        &self,
        queue: &str,
        messages: &[SqsMessage],
    ) -> Result<BatchSent, SqsError> {
        let span = send_span(queue, messages.len());
        let started = Instant::now();
        let result = self
            .batches(queue, messages, &span)
            .instrument(span.clone())
            .await;
        let partial = matches!(&result, Ok(sent) if !sent.failed.is_empty());
        finish(&span, queue, started, result.as_ref().err(), partial);
        result
    }

    async fn batches(
        &self,
        queue: &str,
        messages: &[SqsMessage],
        span: &tracing::Span,
    ) -> Result<BatchSent, SqsError> {
        if self.capture.is_some() {
            let mut result = BatchSent::default();
            for (index, m) in messages.iter().enumerate() {
                let attributes = span.in_scope(|| attributes(queue, m))?;
                if let Some(id) = self.captured(queue, m, &attributes) {
                    result.sent.push((index, id));
                }
            }
            return Ok(result);
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(index, m)| {
                let attributes = span.in_scope(|| attributes(queue, m))?;
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&m.body)
                    .set_message_attributes(Some(attributes))
                    .set_delay_seconds(delay_seconds(m))
                    .set_message_group_id(m.group_id.clone())
                    .set_message_deduplication_id(m.deduplication_id.clone())
                    .build()
                    .map_err(|e| SqsError::Invalid {
                        queue: queue.to_string(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let url = self.url(queue).await?;
        let mut result = BatchSent::default();
        for chunk in entries.chunks(BATCH_LIMIT) {
            let output = self
                .client
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| SqsError::Call {
                    queue: queue.to_string(),
                    operation: "SendMessageBatch",
                    reason: DisplayErrorContext(&e).to_string(),
                })?;
            for ok in output.successful() {
                if let Ok(index) = ok.id().parse() {
                    result.sent.push((index, ok.message_id().to_string()));
                }
            }
            for failed in output.failed() {
                if let Ok(index) = failed.id().parse() {
                    result.failed.push(BatchFailure {
                        index,
                        code: failed.code().to_string(),
                        reason: failed.message().unwrap_or_default().to_string(),
                        sender_fault: failed.sender_fault(),
                    });
                }
            }
        }
        result.sent.sort_unstable();
        result.failed.sort_unstable_by_key(|f| f.index);
        Ok(result)
    }
}

/// Managed by the service with `with_client`: nothing to flush, since
/// every send is awaited. On `/ready`: 503 naming it while SQS does not
/// answer a `ListQueues` call within 2 s (the credentials and endpoint
/// work, the service is up); a capturing sender is always ready.
impl crate::client::Client for SqsSender {
    fn name(&self) -> String {
        "sqs sender".to_string()
    }

    fn has_readiness(&self) -> bool {
        true
    }

    fn ready(&self) -> futures_util::future::BoxFuture<'_, Result<(), crate::error::Error>> {
        Box::pin(async move {
            if self.capture.is_some() {
                return Ok(());
            }
            let call = self.client.list_queues().max_results(1).send();
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(crate::error::Error::msg(format!(
                    "SQS does not answer: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                ))),
                Err(_) => Err(crate::error::Error::msg(
                    "SQS did not answer a ListQueues call within 2s",
                )),
            }
        })
    }
}

fn delay_seconds(message: &SqsMessage) -> Option<i32> {
    message
        .delay
        .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
}

/// The message's attributes plus the propagated trace context and
/// correlation id, checked against SQS's limits.
fn attributes(
    queue: &str,
    message: &SqsMessage,
) -> Result<HashMap<String, MessageAttributeValue>, SqsError> {
    let invalid = |reason: String| SqsError::Invalid {
        queue: queue.to_string(),
        reason,
    };
    if let Some(delay) = message.delay
        && delay > MAX_DELAY
    {
        return Err(invalid(format!(
            "a delay of {} is longer than SQS's 15 minutes",
            humantime::format_duration(delay)
        )));
    }
    let propagated = crate::observe::trace::propagated(|name| {
        message
            .attributes
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    });
    let mut pairs: Vec<(&str, &str)> = message
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (name, value) in &propagated {
        if let Ok(value) = value.to_str() {
            pairs.push((name.as_str(), value));
        }
    }
    if pairs.len() > ATTRIBUTE_LIMIT {
        return Err(invalid(format!(
            "{} message attributes ({} set, {} propagated for tracing); SQS takes at most {ATTRIBUTE_LIMIT}",
            pairs.len(),
            message.attributes.len(),
            pairs.len() - message.attributes.len()
        )));
    }
    pairs
        .into_iter()
        .map(|(name, value)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map(|v| (name.to_string(), v))
                .map_err(|e| invalid(format!("attribute {name}: {e}")))
        })
        .collect()
}

fn send_span(queue: &str, count: usize) -> tracing::Span {
    tracing::debug_span!(
        "SQS send",
        otel.name = %format_args!("send {queue}"),
        otel.kind = "producer",
        messaging.system = "aws_sqs",
        messaging.operation.type = "send",
        messaging.destination.name = %queue,
        messaging.batch.message_count = count,
        otel.status_code = tracing::field::Empty,
        error.message = tracing::field::Empty,
    )
}

fn finish(
    span: &tracing::Span,
    queue: &str,
    started: Instant,
    error: Option<&SqsError>,
    partial: bool,
) {
    let outcome = match error {
        Some(_) => "error",
        None if partial => "partial",
        None => "ok",
    };
    super::finish_call(
        span,
        error.map(|e| e as &dyn std::fmt::Display),
        duration_histogram(),
        &[queue, outcome],
        started,
    );
}

fn duration_histogram() -> Option<&'static HistogramVec> {
    static HISTOGRAM: OnceLock<Option<HistogramVec>> = OnceLock::new();
    metrics::global().duration_histogram(
        &HISTOGRAM,
        "sqs_send_duration_seconds",
        "Duration of SQS SendMessage and SendMessageBatch calls (all chunks of one send_batch), by outcome.",
        &["queue", "outcome"],
    )
}
