//! [`AmqpPublisher`]: an instrumented RabbitMQ publisher over lapin, with
//! publisher confirms.
//!
//! - [`publish`](AmqpPublisher::publish) returns once the broker confirmed
//!   the message: `Ok` means RabbitMQ took responsibility for it. Messages
//!   are `mandatory`, so one that no queue would receive is an
//!   [`PublishError::Unroutable`] error instead of silently dropped, and
//!   persistent (delivery mode 2) unless [`Publishing::transient`].
//! - Headers carry `traceparent`, `baggage` and `X-Correlation-Id` from the
//!   current request or message (headers the caller set win); the AMQP
//!   `correlation_id` property is set too, plus a fresh `message_id` and a
//!   timestamp.
//! - A span per publish (`otel.kind = producer`, `messaging.system =
//!   rabbitmq`, exchange and routing key) and
//!   `amqp_publish_duration_seconds{exchange, outcome}` with outcome
//!   `confirmed`, `nacked`, `unroutable` or `error`.
//! - One connection and channel, opened on first use (or by
//!   [`AmqpPublisher::connect`]) and reopened on the next publish after
//!   the broker closed them. Given to the service with
//!   [`with_client`](crate::Service::with_client), `/ready` reports whether
//!   the broker can be reached, and the connection is closed at shutdown.
//!   It asks for 16 KiB frames unless the URL sets `?frame_max=`, as the
//!   consumers do (see `PATRON_AMQP_URL` in docs/configuration.md).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use prometheus::HistogramVec;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::capture::{Sent, SentMessage};
use crate::config::{BrokerUrl, Config};
use crate::error::Error;
use crate::observe::metrics;

/// How long connecting, or waiting for one confirm, may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One message to publish: exchange, routing key, body, properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publishing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    persistent: bool,
}

impl Publishing {
    /// A message for `exchange` with `routing_key`.
    pub fn new(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        Publishing {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body: body.into(),
            content_type: None,
            headers: Vec::new(),
            persistent: true,
        }
    }

    /// A message straight to `queue` (through the default exchange).
    pub fn to_queue(queue: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Publishing::new("", queue, body)
    }

    /// A message whose body is `value` as JSON, with content type
    /// `application/json` so patron consumers decode it.
    pub fn json<T: Serialize + ?Sized>(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        value: &T,
    ) -> Result<Self, PublishError> {
        let (exchange, routing_key) = (exchange.into(), routing_key.into());
        let body = serde_json::to_vec(value).map_err(|e| PublishError::Encode {
            destination: destination(&exchange, &routing_key),
            reason: e.to_string(),
        })?;
        Ok(Publishing::new(exchange, routing_key, body).content_type("application/json"))
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Adds a string header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Delivery mode 1: the broker may lose the message on restart.
    pub fn transient(mut self) -> Self {
        self.persistent = false;
        self
    }
}

/// `exchange "x" key "k"`, or `queue "q"` for the default exchange.
fn destination(exchange: &str, routing_key: &str) -> String {
    if exchange.is_empty() {
        format!("queue {routing_key:?}")
    } else {
        format!("exchange {exchange:?} (routing key {routing_key:?})")
    }
}

/// Why a publish failed. Every message names the broker or the
/// destination.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection or channel could not be opened.
    #[error("RabbitMQ at {url}: {reason}")]
    Connect {
        /// The broker URL, password hidden.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The body could not be encoded as JSON.
    #[error("AMQP publish to {destination}: cannot encode the message as JSON: {reason}")]
    Encode {
        /// Exchange and routing key.
        destination: String,
        /// serde_json's error.
        reason: String,
    },
    /// Sending failed or the confirm did not come (the connection broke or
    /// timed out): the message may or may not have arrived.
    #[error("AMQP publish to {destination}: {reason}")]
    Publish {
        /// Exchange and routing key.
        destination: String,
        /// What failed.
        reason: String,
    },
    /// The broker refused the message (nack).
    #[error("AMQP publish to {destination}: the broker did not accept the message (nack)")]
    Nacked {
        /// Exchange and routing key.
        destination: String,
    },
    /// No queue is bound for this routing key: the message was returned.
    #[error("AMQP publish to {destination}: unroutable, no queue receives it ({reply})")]
    Unroutable {
        /// Exchange and routing key.
        destination: String,
        /// The broker's reply text.
        reply: String,
    },
}

/// An instrumented RabbitMQ publisher. Cheap to clone (one shared
/// connection).
///
/// ```no_run
/// use patron::client::amqp::{AmqpPublisher, Publishing};
/// use patron::prelude::*;
///
/// #[derive(serde::Serialize)]
/// struct Order { id: u64 }
///
/// #[patron::route(POST "/orders/{id}")]
/// async fn order(Path(id): Path<u64>, mq: Dep<AmqpPublisher>) -> Result<StatusCode, patron::Error> {
///     mq.publish(&Publishing::json("", "orders", &Order { id })?).await?;
///     Ok(StatusCode::ACCEPTED)
/// }
///
/// #[patron::main]
/// async fn main(service: Service) -> patron::Result<Service> {
///     let mq = AmqpPublisher::from_config(service.current_config()); // PATRON_AMQP_URL
///     Ok(service.with_client(mq))
/// }
/// ```
#[derive(Clone)]
pub struct AmqpPublisher {
    url: BrokerUrl,
    open: Arc<Mutex<Option<Open>>>,
    /// Set by [`AmqpPublisher::capturing`]: record instead of publishing.
    capture: Option<Sent>,
}

/// The connection and its confirm-mode channel.
struct Open {
    connection: Connection,
    channel: Channel,
}

impl fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    /// A publisher to `url` that connects on first use.
    pub fn new(url: BrokerUrl) -> Self {
        AmqpPublisher {
            url,
            open: Arc::new(Mutex::new(None)),
            capture: None,
        }
    }

    /// A publisher for tests that records each message in `sent` — with the
    /// headers and correlation id it would carry — instead of publishing it,
    /// and reports it confirmed. It connects to nothing.
    ///
    /// ```
    /// use patron::client::amqp::{AmqpPublisher, Publishing};
    /// use patron::client::capture::Sent;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> patron::Result<()> {
    /// let sent = Sent::new();
    /// let mq = AmqpPublisher::capturing(&sent);
    /// mq.publish(&Publishing::to_queue("invoices", "42")).await?;
    /// assert_eq!(sent.to("invoices")[0].body, "42");
    /// # Ok(())
    /// # }
    /// ```
    pub fn capturing(sent: &Sent) -> Self {
        AmqpPublisher {
            capture: Some(sent.clone()),
            ..AmqpPublisher::new(BrokerUrl::new("amqp://capturing.invalid"))
        }
    }

    /// A publisher to `PATRON_AMQP_URL` that connects on first use.
    pub fn from_config(config: &Config) -> Self {
        AmqpPublisher::new(config.amqp_url.clone())
    }

    /// A publisher to `url`, connected now: start-up fails when the broker
    /// cannot be reached.
    pub async fn connect(url: BrokerUrl) -> Result<Self, PublishError> {
        let publisher = AmqpPublisher::new(url);
        publisher.channel().await?;
        Ok(publisher)
    }

    /// The open channel, opening connection and channel when there are
    /// none or the broker closed them.
    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut open = self.open.lock().await;
        if let Some(o) = open.as_ref()
            && o.connection.status().connected()
            && o.channel.status().connected()
        {
            return Ok(o.channel.clone());
        }
        let fail = |reason: String| PublishError::Connect {
            url: self.url.redacted(),
            reason,
        };
        let uri = self
            .url
            .amqp_uri()
            .map_err(|e| fail(format!("invalid URL: {}", e.reason)))?;
        let properties =
            ConnectionProperties::default().with_connection_name("patron publisher".into());
        let connection = tokio::time::timeout(TIMEOUT, Connection::connect_uri(uri, properties))
            .await
            .map_err(|_| {
                fail(format!(
                    "no connection within {}",
                    humantime::format_duration(TIMEOUT)
                ))
            })?
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| fail(format!("cannot open a channel: {e}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| fail(format!("cannot turn on publisher confirms: {e}")))?;
        *open = Some(Open {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// Publishes `message` and waits for the broker's confirm.
    pub async fn publish(&self, message: &Publishing) -> Result<(), PublishError> {
        let exchange = message.exchange.as_str();
        let span = tracing::debug_span!(
            "AMQP publish",
            otel.name = %format_args!("publish {}", if exchange.is_empty() { "(default)" } else { exchange }),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.destination.name = %exchange,
            messaging.rabbitmq.destination.routing_key = %message.routing_key,
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .confirmed(message, &span)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(()) => "confirmed",
            Err(PublishError::Nacked { .. }) => "nacked",
            Err(PublishError::Unroutable { .. }) => "unroutable",
            Err(_) => "error",
        };
        super::finish_call(
            &span,
            result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
            duration_histogram(),
            &[exchange, outcome],
            started,
        );
        result
    }

    async fn confirmed(
        &self,
        message: &Publishing,
        span: &tracing::Span,
    ) -> Result<(), PublishError> {
        let to = || destination(&message.exchange, &message.routing_key);
        let (all_headers, correlation_id) = span.in_scope(|| headers(message));
        if let Some(sent) = &self.capture {
            sent.record(captured(message, all_headers));
            return Ok(());
        }
        let channel = self.channel().await?;
        let text = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
        let mut headers = FieldTable::default();
        for (name, value) in &all_headers {
            headers.insert(name.as_str().into(), text(value));
        }
        let mut properties = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(if message.persistent { 2 } else { 1 })
            .with_message_id(uuid::Uuid::new_v4().to_string().into())
            .with_timestamp(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
        if let Some(id) = correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        if let Some(ct) = &message.content_type {
            properties = properties.with_content_type(ct.as_str().into());
        }
        let publish = async {
            channel
                .basic_publish(
                    message.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &message.body,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = tokio::time::timeout(TIMEOUT, publish)
            .await
            .map_err(|_| PublishError::Publish {
                destination: to(),
                reason: format!("no confirm within {}", humantime::format_duration(TIMEOUT)),
            })?
            .map_err(|e| PublishError::Publish {
                destination: to(),
                reason: e.to_string(),
            })?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(PublishError::Unroutable {
                    destination: to(),
                    reply: format!("{} {}", returned.reply_code, returned.reply_text.as_str()),
                })
            }
            Confirmation::Nack(None) => Err(PublishError::Nacked { destination: to() }),
            Confirmation::NotRequested => Err(PublishError::Publish {
                destination: to(),
                reason: "publisher confirms are off on this channel".to_string(),
            }),
        }
    }
}

/// Managed by the service: `/ready` (re)opens the connection if needed,
/// shutdown closes it.
impl crate::client::Client for AmqpPublisher {
    fn name(&self) -> String {
        "amqp publisher".to_string()
    }

    fn has_readiness(&self) -> bool {
        true
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        async {
            if self.capture.is_some() {
                return Ok(());
            }
            self.channel().await.map(|_| ()).map_err(Error::from)
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        async {
            let Some(open) = self.open.lock().await.take() else {
                return Ok(());
            };
            if open.connection.status().connected() {
                open.connection
                    .close(200, "patron publisher closing".into())
                    .await
                    .map_err(|e| {
                        Error::msg(format!("RabbitMQ at {}: cannot close: {e}", self.url))
                    })?;
            }
            Ok(())
        }
        .boxed()
    }
}

/// The message's headers plus the propagated trace context and correlation
/// id (unless set on the message), and the correlation id for the
/// property.
fn headers(message: &Publishing) -> (Vec<(String, String)>, Option<String>) {
    let propagated = crate::observe::trace::propagated(|name| {
        message
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    });
    let mut all: Vec<(String, String)> = propagated
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    all.extend(message.headers.iter().cloned());
    let correlation_id = message
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(crate::context::X_CORRELATION_ID.as_str()))
        .map(|(_, v)| v.clone())
        .or_else(|| {
            propagated
                .get(crate::context::X_CORRELATION_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    (all, correlation_id)
}

/// What a capturing publisher records for `message`.
fn captured(message: &Publishing, headers: Vec<(String, String)>) -> SentMessage {
    let (destination, routing_key) = if message.exchange.is_empty() {
        (message.routing_key.clone(), None)
    } else {
        (message.exchange.clone(), Some(message.routing_key.clone()))
    };
    SentMessage {
        system: "rabbitmq",
        destination,
        routing_key,
        key: None,
        body: message.body.clone().into(),
        headers: headers.into_iter().collect(),
        content_type: message.content_type.clone(),
    }
}

fn duration_histogram() -> Option<&'static HistogramVec> {
    static HISTOGRAM: OnceLock<Option<HistogramVec>> = OnceLock::new();
    metrics::global().duration_histogram(
        &HISTOGRAM,
        "amqp_publish_duration_seconds",
        "Time from publishing an AMQP message to the broker's confirm, by outcome.",
        &["exchange", "outcome"],
    )
}
