//! [`KafkaProducer`]: an instrumented Kafka producer over rdkafka's
//! `FutureProducer`.
//!
//! - [`send`](KafkaProducer::send) waits for the broker's acknowledgement
//!   and says where the record landed; [`spawn_send`](KafkaProducer::spawn_send)
//!   returns once the record is queued, and a record that then fails to be
//!   delivered is handed back — record and error — to the failure callback
//!   set with [`KafkaProducerBuilder::on_failure`] (logged at ERROR when
//!   there is none), so nothing is lost silently.
//! - Every record carries `traceparent`, `baggage` and `X-Correlation-Id`
//!   from the current request or message (headers the caller set win), so
//!   the consumer's span and logs join the producer's trace.
//! - A span per send (`otel.kind = producer`, `messaging.system = kafka`,
//!   topic, partition, offset) and
//!   `kafka_producer_delivery_duration_seconds{topic, outcome}` with
//!   outcome `delivered`, `failed` (the broker or the local timeout said
//!   no) or `rejected` (it could not even be queued).
//! - Safe defaults: `enable.idempotence=true` (so `acks=all` and retries
//!   never duplicate or reorder), a 5 s delivery timeout
//!   ([`DELIVERY_TIMEOUT`], `message.timeout.ms`;
//!   [`KafkaProducerBuilder::delivery_timeout`]); any librdkafka setting can
//!   be changed with [`KafkaProducerBuilder::set`].
//! - Given to the service with [`with_client`](crate::Service::with_client),
//!   it joins `/ready`: 503 naming it while no broker answers a metadata
//!   request within 2 s.
//! - Given to the service with [`with_client`](crate::Service::with_client),
//!   the producer is flushed at shutdown, after the consumers stopped:
//!   records still queued are delivered (or reported to the failure
//!   callback) before the process exits.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use prometheus::HistogramVec;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::capture::{Sent, SentMessage};
pub use super::kafka_log::LogContext;
use crate::config::Config;
use crate::error::Error;
use crate::observe::metrics;

/// Bootstrap brokers when neither code nor `PATRON_KAFKA_BROKERS` names any.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// How long [`KafkaProducer::send`] waits for room in a full local queue
/// before failing.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the flush at shutdown waits for queued records by default.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a record may take to be delivered, retries included, before
/// it fails (`message.timeout.ms`; librdkafka's own default is 300 s): a
/// route producing to an unreachable broker fails within this, not after
/// minutes.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the readiness check waits for the brokers' metadata.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// One record to send: topic, optional key, payload and headers. Built by
/// value and kept by the caller for [`KafkaProducer::send`], so a failed
/// send can be retried or stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("key", &self.key.as_deref().map(String::from_utf8_lossy))
            .field("payload_bytes", &self.payload.len())
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl Record {
    /// A record with `payload` for `topic`, no key, no headers.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Record {
            topic: topic.into(),
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
        }
    }

    /// A record whose payload is `value` as JSON, with
    /// `content-type: application/json` so patron consumers decode it.
    pub fn json<T: Serialize + ?Sized>(
        topic: impl Into<String>,
        value: &T,
    ) -> Result<Self, ProduceError> {
        let topic = topic.into();
        let payload = serde_json::to_vec(value).map_err(|e| ProduceError::Encode {
            topic: topic.clone(),
            reason: e.to_string(),
        })?;
        Ok(Record::new(topic, payload).header("content-type", "application/json"))
    }

    /// Sets the key: records with one key go to one partition, in order.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header (a name may repeat, as Kafka allows).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The key, if any.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The headers set on the record (not the propagated trace headers,
    /// which are added when it is sent).
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The partition.
    pub partition: i32,
    /// The record's offset in it.
    pub offset: i64,
}

/// Why a send failed. Every message names the topic.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The producer could not be created (bad settings).
    #[error("Kafka producer for {brokers}: {source}")]
    Create {
        /// The bootstrap brokers.
        brokers: String,
        /// rdkafka's error.
        source: KafkaError,
    },
    /// The value could not be encoded as JSON.
    #[error("Kafka topic {topic}: cannot encode the record as JSON: {reason}")]
    Encode {
        /// The topic.
        topic: String,
        /// serde_json's error.
        reason: String,
    },
    /// The record could not be queued (the local queue is full, or the
    /// record is too large).
    #[error("Kafka topic {topic}: the record could not be queued: {source}")]
    Rejected {
        /// The topic.
        topic: String,
        /// rdkafka's error.
        source: KafkaError,
    },
    /// The broker refused the record, or it was not acknowledged within
    /// `message.timeout.ms`.
    #[error("Kafka topic {topic}: the record was not delivered: {source}")]
    Failed {
        /// The topic.
        topic: String,
        /// rdkafka's error.
        source: KafkaError,
    },
}

/// A record that [`KafkaProducer::spawn_send`] could not deliver, handed to
/// the failure callback so the application can retry, store or count it.
#[derive(Debug)]
pub struct Failure {
    /// The record, as it was given.
    pub record: Record,
    /// Why it failed.
    pub error: ProduceError,
}

type FailureFn = Arc<dyn Fn(Failure) + Send + Sync>;

/// An instrumented Kafka producer. Cheap to clone (one shared client).
///
/// ```no_run
/// use patron::client::kafka::{KafkaProducer, Record};
/// use patron::prelude::*;
///
/// #[derive(serde::Serialize)]
/// struct Paid { order: u64 }
///
/// #[patron::route(POST "/orders/{id}/paid")]
/// async fn paid(Path(id): Path<u64>, events: Dep<KafkaProducer>) -> Result<StatusCode, patron::Error> {
///     let record = Record::json("payments", &Paid { order: id })?.key(id.to_string());
///     events.send(&record).await?; // waits for the broker's ack
///     Ok(StatusCode::NO_CONTENT)
/// }
///
/// #[patron::main]
/// async fn main(service: Service) -> patron::Result<Service> {
///     let events = KafkaProducer::builder_from_config(service.current_config())
///         .on_failure(|failed| tracing::error!(error = %failed.error, "event lost: store it"))
///         .build()?;
///     Ok(service.with_client(events))
/// }
/// ```
#[derive(Clone)]
pub struct KafkaProducer {
    inner: FutureProducer<LogContext>,
    brokers: Arc<str>,
    on_failure: Option<FailureFn>,
    flush_timeout: Duration,
    pending: TaskTracker,
    /// Set by [`KafkaProducer::capturing`]: record instead of sending.
    capture: Option<Sent>,
}

impl fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KafkaProducer`].
pub struct KafkaProducerBuilder {
    brokers: String,
    settings: Vec<(String, String)>,
    on_failure: Option<FailureFn>,
    flush_timeout: Duration,
    delivery_timeout: Duration,
}

impl fmt::Debug for KafkaProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaProducerBuilder")
            .field("brokers", &self.brokers)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KafkaProducerBuilder {
    /// Sets a librdkafka producer setting (`linger.ms`, `compression.type`,
    /// `acks`, …), overriding patron's defaults.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Calls `callback` for each record given to
    /// [`spawn_send`](KafkaProducer::spawn_send) that was not delivered.
    /// To receive failures on a channel, send them from the callback.
    pub fn on_failure(mut self, callback: impl Fn(Failure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(callback));
        self
    }

    /// How long a record may take to be delivered before it fails
    /// ([`DELIVERY_TIMEOUT`]; librdkafka's `message.timeout.ms`).
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// How long the flush at shutdown waits for queued records
    /// ([`FLUSH_TIMEOUT`]).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Creates the producer. It connects in the background: this does no
    /// network I/O, and sends made before the brokers answer wait in the
    /// queue.
    pub fn build(self) -> Result<KafkaProducer, ProduceError> {
        let mut config = super::kafka_log::client_config(&self.brokers);
        config.set("enable.idempotence", "true").set(
            "message.timeout.ms",
            self.delivery_timeout.as_millis().max(1).to_string(),
        );
        for (k, v) in &self.settings {
            config.set(k, v);
        }
        let context = LogContext::new(format!("kafka producer {}", self.brokers));
        let inner = config
            .create_with_context(context)
            .map_err(|source| ProduceError::Create {
                brokers: self.brokers.clone(),
                source,
            })?;
        Ok(KafkaProducer {
            inner,
            brokers: self.brokers.into(),
            on_failure: self.on_failure,
            flush_timeout: self.flush_timeout,
            pending: TaskTracker::new(),
            capture: None,
        })
    }
}

impl KafkaProducer {
    /// A builder for a producer to `brokers` (comma-separated).
    pub fn builder(brokers: impl Into<String>) -> KafkaProducerBuilder {
        KafkaProducerBuilder {
            brokers: brokers.into(),
            settings: Vec::new(),
            on_failure: None,
            flush_timeout: FLUSH_TIMEOUT,
            delivery_timeout: DELIVERY_TIMEOUT,
        }
    }

    /// A builder for a producer to `PATRON_KAFKA_BROKERS` (or
    /// [`DEFAULT_BROKERS`]), the consumers' brokers.
    pub fn builder_from_config(config: &Config) -> KafkaProducerBuilder {
        KafkaProducer::builder(
            config
                .kafka_brokers
                .clone()
                .unwrap_or_else(|| DEFAULT_BROKERS.to_string()),
        )
    }

    /// A producer with the defaults to `PATRON_KAFKA_BROKERS` (or
    /// [`DEFAULT_BROKERS`]).
    pub fn from_config(config: &Config) -> Result<KafkaProducer, ProduceError> {
        KafkaProducer::builder_from_config(config).build()
    }

    /// A producer for tests that records each record in `sent` — key,
    /// payload and the headers it would carry (trace context, correlation
    /// id) — instead of sending it, and reports it delivered (partition 0,
    /// offsets counting up). Its [`inner`](Self::inner) producer has no
    /// brokers.
    ///
    /// ```
    /// use patron::client::capture::Sent;
    /// use patron::client::kafka::{KafkaProducer, Record};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> patron::Result<()> {
    /// let sent = Sent::new();
    /// let events = KafkaProducer::capturing(&sent)?;
    /// events.send(&Record::new("payments", "paid").key("order-7")).await?;
    /// let recorded = &sent.to("payments")[0];
    /// assert_eq!(recorded.key.as_deref(), Some(&b"order-7"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn capturing(sent: &Sent) -> Result<KafkaProducer, ProduceError> {
        let mut producer = KafkaProducer::builder("").build()?;
        producer.capture = Some(sent.clone());
        Ok(producer)
    }

    /// Records `record` when capturing; where it was "stored", else `None`.
    fn captured(&self, record: &Record, span: &tracing::Span) -> Option<Delivered> {
        let sent = self.capture.as_ref()?;
        let mut headers = std::collections::BTreeMap::new();
        span.in_scope(|| {
            each_header(record, |k, v| {
                headers.insert(k.to_string(), String::from_utf8_lossy(v).into_owned());
            })
        });
        let offset = sent.record(SentMessage {
            system: "kafka",
            destination: record.topic.clone(),
            routing_key: None,
            key: record.key.clone(),
            body: record.payload.clone().into(),
            content_type: headers.get("content-type").cloned(),
            headers,
        }) as i64;
        Some(Delivered {
            partition: 0,
            offset,
        })
    }

    /// Sends `record` and waits until the broker acknowledged it (waiting
    /// up to [`QUEUE_TIMEOUT`] for room when the local queue is full).
    pub async fn send(&self, record: &Record) -> Result<Delivered, ProduceError> {
        let span = produce_span(&record.topic);
        let started = Instant::now();
        let topic = record.topic.as_str();
        if let Some(delivered) = self.captured(record, &span) {
            let result = Ok(delivered);
            finish(&span, topic, started, &result);
            return result;
        }
        let future = span.in_scope(|| to_send(record));
        let result = self
            .inner
            .send(future, QUEUE_TIMEOUT)
            .instrument(span.clone())
            .await;
        let result = match result {
            Ok(d) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((source, _)) if is_rejection(&source) => Err(ProduceError::Rejected {
                topic: topic.to_string(),
                source,
            }),
            Err((source, _)) => Err(ProduceError::Failed {
                topic: topic.to_string(),
                source,
            }),
        };
        finish(&span, topic, started, &result);
        result
    }

    /// Queues `record` and returns at once; delivery happens in the
    /// background. `Err` only when it cannot be queued (the queue is full:
    /// back-pressure for the caller). A record that later fails goes to the
    /// failure callback. Must be called inside a Tokio runtime.
    pub fn spawn_send(&self, record: Record) -> Result<(), ProduceError> {
        let span = produce_span(&record.topic);
        let started = Instant::now();
        if let Some(delivered) = self.captured(&record, &span) {
            finish(&span, &record.topic, started, &Ok(delivered));
            return Ok(());
        }
        let future = span.in_scope(|| to_send(&record));
        let delivery = match self.inner.send_result(future) {
            Ok(delivery) => delivery,
            Err((source, _)) => {
                let result: Result<Delivered, _> = Err(ProduceError::Rejected {
                    topic: record.topic.clone(),
                    source,
                });
                finish(&span, &record.topic, started, &result);
                return result.map(|_| ());
            }
        };
        let on_failure = self.on_failure.clone();
        self.pending.spawn(
            async move {
                let result = match delivery.await {
                    Ok(Ok(d)) => Ok(Delivered {
                        partition: d.partition,
                        offset: d.offset,
                    }),
                    Ok(Err((source, _))) => Err(ProduceError::Failed {
                        topic: record.topic.clone(),
                        source,
                    }),
                    Err(_) => Err(ProduceError::Failed {
                        topic: record.topic.clone(),
                        source: KafkaError::Canceled,
                    }),
                };
                finish(&span, &record.topic, started, &result);
                if let Err(error) = result {
                    let failure = Failure { record, error };
                    match &on_failure {
                        Some(callback) => callback(failure),
                        None => tracing::error!(
                            topic = %failure.record.topic,
                            error = %failure.error,
                            "Kafka record lost: not delivered and no on_failure callback is set"
                        ),
                    }
                }
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// Waits until every queued record is delivered or failed (failure
    /// callbacks included), at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let producer = self.inner.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| Error::msg(format!("Kafka producer flush: {e}")))?;
        // The delivery tasks finish once librdkafka reported every record.
        let waited = tokio::time::timeout(timeout, async {
            while !self.pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if let Err(e) = flushed {
            return Err(Error::msg(format!(
                "Kafka producer for {}: {} records not delivered within {}: {e}",
                self.brokers,
                self.inner.in_flight_count(),
                humantime::format_duration(timeout)
            )));
        }
        if waited.is_err() {
            return Err(Error::msg(format!(
                "Kafka producer for {}: {} delivery reports still pending after {}",
                self.brokers,
                self.pending.len(),
                humantime::format_duration(timeout)
            )));
        }
        Ok(())
    }

    /// The underlying rdkafka producer, for what this wrapper does not
    /// offer (transactions, metadata). Sends through it are not
    /// instrumented; its librdkafka logs go to `tracing` ([`LogContext`]).
    pub fn inner(&self) -> &FutureProducer<LogContext> {
        &self.inner
    }
}

/// Managed by the service: on `/ready` (a metadata request answered within
/// 2 s), and flushed at shutdown (after the consumers stopped), failing the
/// shutdown if records are left undelivered.
impl crate::client::Client for KafkaProducer {
    fn name(&self) -> String {
        "kafka producer".to_string()
    }

    fn has_readiness(&self) -> bool {
        true
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        let producer = self.inner.clone();
        let brokers = Arc::clone(&self.brokers);
        let capturing = self.capture.is_some();
        async move {
            if capturing {
                return Ok(());
            }
            let answered = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, READY_TIMEOUT)
                    .map(|_| ())
            })
            .await;
            match answered {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::msg(format!(
                    "Kafka brokers {brokers} did not answer a metadata request within {}: {e}",
                    humantime::format_duration(READY_TIMEOUT)
                ))),
                Err(e) => Err(Error::msg(format!("the Kafka readiness check failed: {e}"))),
            }
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.flush(self.flush_timeout).boxed()
    }
}

/// Queue-full and too-large errors: the record never left this process.
fn is_rejection(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::QueueFull | RDKafkaErrorCode::MessageSizeTooLarge)
    ) && matches!(e, KafkaError::MessageProduction(_))
}

fn produce_span(topic: &str) -> tracing::Span {
    tracing::debug_span!(
        "Kafka produce",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.message = tracing::field::Empty,
    )
}

/// `record` as rdkafka sends it, with [`headers`]; called inside the
/// produce span, so the propagated parent is that span.
fn to_send(record: &Record) -> FutureRecord<'_, [u8], [u8]> {
    let future = FutureRecord::to(&record.topic)
        .payload(&record.payload[..])
        .headers(headers(record));
    match &record.key {
        Some(key) => future.key(&key[..]),
        None => future,
    }
}

/// The record's headers plus the propagated trace context and correlation
/// id, unless the record sets them itself.
fn headers(record: &Record) -> OwnedHeaders {
    // `insert` takes the headers by value: hold them in an `Option` to move
    // them through the closure without a placeholder allocation.
    let mut headers = Some(OwnedHeaders::new_with_capacity(record.headers.len() + 3));
    each_header(record, |key, value| {
        headers = headers.take().map(|h| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
    });
    headers.unwrap_or_default()
}

/// Calls `f` with each header [`headers`] sends, in order: the record's,
/// then the propagated ones it does not set.
fn each_header(record: &Record, mut f: impl FnMut(&str, &[u8])) {
    let propagated = crate::observe::trace::propagated(|name| {
        record
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    });
    for (name, value) in &record.headers {
        f(name, value);
    }
    for (name, value) in &propagated {
        f(name.as_str(), value.as_bytes());
    }
}

fn finish(
    span: &tracing::Span,
    topic: &str,
    started: Instant,
    result: &Result<Delivered, ProduceError>,
) {
    let outcome = match result {
        Ok(d) => {
            span.record("messaging.destination.partition.id", d.partition);
            span.record("messaging.kafka.offset", d.offset);
            "delivered"
        }
        Err(ProduceError::Rejected { .. }) => "rejected",
        Err(_) => "failed",
    };
    super::finish_call(
        span,
        result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        duration_histogram(),
        &[topic, outcome],
        started,
    );
}

fn duration_histogram() -> Option<&'static HistogramVec> {
    static HISTOGRAM: OnceLock<Option<HistogramVec>> = OnceLock::new();
    metrics::global().duration_histogram(
        &HISTOGRAM,
        "kafka_producer_delivery_duration_seconds",
        "Time from sending a Kafka record to its delivery report, by outcome.",
        &["topic", "outcome"],
    )
}
