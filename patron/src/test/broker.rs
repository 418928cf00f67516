//! An in-memory broker for testing consumers without RabbitMQ, Kafka or SQS:
//! [`Broker`] runs consumers on in-memory destinations through the same
//! pipeline as the real brokers — decoding, retries with backoff, the
//! failure strategy, the delivery limit, dead letters with their
//! `x-patron-*` headers, the consumer metrics — and reports what became of
//! each message.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::consumer::InMemoryConsumer;
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::process::{Pipeline, Verdict, now_millis, truncate_reason};
use crate::consumer::registry::ConsumerDef;
use crate::consumer::{Delivery, HandlerError, Headers, MessageHandler, Metadata, dlq_headers};
use crate::deps::Deps;
use crate::error::Error;
use crate::observe::metrics::Metrics;
use crate::service::Service;

/// How often a message that keeps being given back is delivered before
/// [`Outcome::Requeued`] is reported, by default. A real broker would go on
/// delivering it.
const REDELIVERY_LIMIT: u32 = 20;

/// What became of a published message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Acknowledged after the handler succeeded.
    Acked,
    /// Acknowledged without success (`on_failure = drop`, or past the
    /// delivery limit without a DLQ).
    Dropped,
    /// Copied to the dead-letter destination `dlq` (see
    /// [`Broker::dead_letters`]) and acknowledged.
    DeadLettered {
        /// The dead-letter destination.
        dlq: String,
        /// The `x-patron-error` it carries.
        error: String,
    },
    /// Still given back after the broker's redelivery limit
    /// ([`Broker::redelivery_limit`]): a real broker would deliver it again.
    Requeued,
    /// `on_failure = exit`: left with the broker, and the consumer stopped
    /// (a real service would stop with this error).
    Exited {
        /// Why.
        error: String,
    },
    /// Its consumer had stopped (after an earlier `exit`): it waits in the
    /// destination.
    NotConsumed,
}

/// What a [`Broker`] did with one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// How many times the handler ran on it (0 when it never decoded).
    pub calls: u32,
    /// How many times it was delivered (more than one when given back).
    pub deliveries: u32,
}

/// A message as it sits in a destination: a dead letter, with the original
/// headers and the `x-patron-*` ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The body.
    pub body: Bytes,
    /// The headers, as text (invalid UTF-8 replaced).
    pub headers: BTreeMap<String, String>,
}

/// A consumer the in-memory [`Broker`] can run: the AMQP, SQS and Kafka
/// consumers built in code.
pub trait InMemory {
    /// Its in-memory form, with the policy it would run with.
    #[doc(hidden)]
    fn in_memory(&self) -> Result<InMemoryConsumer, Error>;
}

#[cfg(feature = "amqp")]
impl InMemory for crate::consumer::amqp::AmqpConsumer {
    fn in_memory(&self) -> Result<InMemoryConsumer, Error> {
        crate::consumer::amqp::AmqpConsumer::in_memory(self)
    }
}

#[cfg(feature = "sqs")]
impl InMemory for crate::consumer::sqs::SqsConsumer {
    fn in_memory(&self) -> Result<InMemoryConsumer, Error> {
        crate::consumer::sqs::SqsConsumer::in_memory(self)
    }
}

#[cfg(feature = "kafka")]
impl InMemory for crate::consumer::kafka::KafkaConsumer {
    fn in_memory(&self) -> Result<InMemoryConsumer, Error> {
        crate::consumer::kafka::KafkaConsumer::in_memory(self)
    }
}

/// Consumers running on in-memory destinations.
///
/// [`Broker::new`] takes the service's `#[patron::consumer]`s (all that are
/// registered, or those named with `Service::with_consumers`) and the
/// values it `provide`s; [`Broker::with_consumer`] adds one built in code.
/// [`publish`](Self::publish) hands a message to the destination's
/// consumer and returns once it is settled, with its [`Report`]. Messages
/// are handled one at a time, in publishing order; retry waits are real
/// `tokio` sleeps, so a test with long backoffs runs under
/// `#[tokio::test(start_paused = true)]`.
pub struct Broker {
    consumers: Vec<Running>,
    by_destination: HashMap<String, usize>,
    deps: Arc<Deps>,
    metrics: Metrics,
    stop: CancellationToken,
    dead_letters: Mutex<BTreeMap<String, Vec<StoredMessage>>>,
    redelivery_limit: u32,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("destinations", &self.by_destination.keys())
            .finish_non_exhaustive()
    }
}

/// One consumer on one destination.
struct Running {
    pipeline: Pipeline,
    handler: Counting,
    /// Set by an `exit` verdict: the consumer no longer takes messages.
    exited: Mutex<Option<String>>,
}

impl Broker {
    /// The service's `#[patron::consumer]`s on in-memory destinations, with
    /// the values the service `provide`s. A consumer that needs a value the
    /// service does not provide is an error here, as at start-up.
    pub fn new(service: Service) -> Result<Broker, Error> {
        let defs: Vec<&'static ConsumerDef> = match &service.consumers {
            Some(c) => c.clone(),
            None => crate::consumer::registry::consumers(),
        };
        let mut deps = service.deps;
        deps.insert(service.metrics.clone());
        crate::service::validate::check_consumer_deps(&defs, &deps)?;
        let mut broker = Broker {
            consumers: Vec::new(),
            by_destination: HashMap::new(),
            deps: Arc::new(deps),
            metrics: Metrics::new(),
            stop: CancellationToken::new(),
            dead_letters: Mutex::default(),
            redelivery_limit: REDELIVERY_LIMIT,
        };
        for def in defs {
            let memory = (def.build)().memory.map_err(|e| {
                Error::msg(format!(
                    "consumer {} ({}): {e}",
                    def.handler,
                    def.location()
                ))
            })?;
            broker.add(memory)?;
        }
        Ok(broker)
    }

    /// Adds `consumer`, built in code, on its destinations.
    pub fn with_consumer(mut self, consumer: impl InMemory) -> Result<Broker, Error> {
        self.add(consumer.in_memory()?)?;
        Ok(self)
    }

    /// Reports [`Outcome::Requeued`] for a message given back this many
    /// times (20 unless set) instead of delivering it again.
    pub fn redelivery_limit(mut self, deliveries: u32) -> Broker {
        self.redelivery_limit = deliveries.max(1);
        self
    }

    fn add(&mut self, consumer: InMemoryConsumer) -> Result<(), Error> {
        let handler = Arc::clone(&consumer.handler);
        for destination in &consumer.destinations {
            if let Some(&other) = self.by_destination.get(destination) {
                return Err(Error::msg(format!(
                    "consumers {} and {} both consume {destination:?}; the in-memory broker gives each destination one consumer",
                    self.consumers[other].pipeline.consumer, consumer.name
                )));
            }
            let metrics =
                ConsumerMetrics::new(&self.metrics, &consumer.name, consumer.system, destination)?;
            let pipeline = Pipeline {
                consumer: consumer.name.as_str().into(),
                system: consumer.system,
                destination: destination.as_str().into(),
                span_name: format!("{destination} process").into(),
                policy: consumer.policy.clone(),
                metrics,
                deps: Arc::clone(&self.deps),
                redelivers_in_process: consumer.redelivers_in_process,
            };
            self.by_destination
                .insert(destination.clone(), self.consumers.len());
            self.consumers.push(Running {
                pipeline,
                handler: Counting {
                    inner: Arc::clone(&handler),
                    calls: AtomicU32::new(0),
                },
                exited: Mutex::new(None),
            });
        }
        Ok(())
    }

    /// A message to `destination`, sent when awaited: the report comes back
    /// once the message is settled.
    pub fn publish<'a>(&'a self, destination: &str) -> Publish<'a> {
        Publish {
            broker: self,
            destination: destination.to_string(),
            body: Bytes::new(),
            headers: Headers::new(),
            content_type: None,
            invalid: None,
        }
    }

    /// The dead letters in `dlq`, oldest first.
    pub fn dead_letters(&self, dlq: &str) -> Vec<StoredMessage> {
        lock(&self.dead_letters)
            .get(dlq)
            .cloned()
            .unwrap_or_default()
    }

    /// The registry holding the consumers' metrics
    /// (`consumer_messages_total{consumer, outcome}`, …), as `/metrics` would
    /// show them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn deliver(&self, message: Publish<'_>) -> Result<Report, Error> {
        let Publish {
            destination,
            body,
            headers,
            content_type,
            invalid,
            ..
        } = message;
        if let Some(why) = invalid {
            return Err(Error::msg(format!("publishing to {destination:?}: {why}")));
        }
        let Some(&index) = self.by_destination.get(&destination) else {
            let known: Vec<&String> = self.by_destination.keys().collect();
            return Err(Error::msg(format!(
                "no consumer of {destination:?} in the in-memory broker (destinations: {known:?})"
            )));
        };
        let running = &self.consumers[index];
        if lock(&running.exited).is_some() {
            return Ok(Report {
                outcome: Outcome::NotConsumed,
                calls: 0,
                deliveries: 0,
            });
        }
        let calls_before = running.handler.calls.load(Ordering::Relaxed);
        let mut deliveries = 1;
        let outcome = loop {
            let delivery = Delivery::new(
                body.clone(),
                content_type.as_deref(),
                headers.clone(),
                Metadata::None,
            )
            .with_deliveries(deliveries);
            let verdict = running
                .pipeline
                .process(&running.handler, &delivery, &self.stop)
                .await;
            match verdict {
                Verdict::Ack => break Outcome::Acked,
                Verdict::Drop => break Outcome::Dropped,
                Verdict::Requeue | Verdict::Release => {
                    if deliveries >= self.redelivery_limit {
                        break Outcome::Requeued;
                    }
                    deliveries += 1;
                }
                Verdict::DeadLetter { reason, attempts } => {
                    break self.dead_letter(running, &destination, &delivery, &reason, attempts)?;
                }
                Verdict::Exit(reason) => {
                    *lock(&running.exited) = Some(reason.clone());
                    break Outcome::Exited { error: reason };
                }
            }
        };
        Ok(Report {
            outcome,
            calls: running.handler.calls.load(Ordering::Relaxed) - calls_before,
            deliveries,
        })
    }

    /// Stores the dead letter of `delivery` — its body and headers plus the
    /// `x-patron-*` ones — in the consumer's DLQ, and counts it.
    fn dead_letter(
        &self,
        running: &Running,
        destination: &str,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Result<Outcome, Error> {
        let pipeline = &running.pipeline;
        let Some(dlq) = pipeline.policy.dlq.clone() else {
            return Err(Error::msg(format!(
                "consumer {} dead-lettered a message but names no DLQ",
                pipeline.consumer
            )));
        };
        let error = truncate_reason(reason);
        let mut headers: BTreeMap<String, String> = delivery
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        for (name, value) in [
            (dlq_headers::ERROR, error.clone()),
            (dlq_headers::ATTEMPTS, attempts.to_string()),
            (dlq_headers::QUEUE, destination.to_string()),
            (dlq_headers::CONSUMER, pipeline.consumer.to_string()),
            (dlq_headers::FAILED_AT, now_millis().to_string()),
        ] {
            headers.insert(name.to_string(), value);
        }
        lock(&self.dead_letters)
            .entry(dlq.clone())
            .or_default()
            .push(StoredMessage {
                body: delivery.body().clone(),
                headers,
            });
        pipeline.dead_lettered();
        Ok(Outcome::DeadLettered { dlq, error })
    }
}

/// A message being published to a [`Broker`]; awaiting it delivers it.
#[must_use = "a message is published only when awaited"]
pub struct Publish<'a> {
    broker: &'a Broker,
    destination: String,
    body: Bytes,
    headers: Headers,
    content_type: Option<String>,
    invalid: Option<String>,
}

impl Publish<'_> {
    /// The body, as it is.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The body, `value` serialized as JSON, with the content type
    /// `application/json`.
    pub fn json(mut self, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.body = bytes.into();
                self.content_type = Some("application/json".into());
            }
            Err(e) => {
                self.invalid
                    .get_or_insert(format!("the JSON body does not serialize: {e}"));
            }
        }
        self
    }

    /// Adds the header `name: value` (`x-correlation-id`, `traceparent`, …).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name, value.as_bytes().to_vec());
        self
    }

    /// Sets the content type (AMQP's property; a header for Kafka and SQS).
    pub fn content_type(mut self, content_type: &str) -> Self {
        self.content_type = Some(content_type.to_string());
        self
    }
}

impl<'a> IntoFuture for Publish<'a> {
    type Output = Result<Report, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.broker.deliver(self))
    }
}

/// The consumer's handler, counting the calls that ran (not those whose
/// payload did not decode).
struct Counting {
    inner: Arc<dyn MessageHandler>,
    calls: AtomicU32,
}

impl MessageHandler for Counting {
    fn call(
        &self,
        delivery: &Delivery,
        attempt: u32,
        deps: &Arc<Deps>,
    ) -> Result<BoxFuture<'static, Result<(), Error>>, HandlerError> {
        let call = self.inner.call(delivery, attempt, deps)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(call)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
