//! The RabbitMQ consumer (feature `amqp`, built on `lapin`): an
//! [`AmqpConsumer`] component that `#[patron::consumer(amqp = "queue")]`
//! creates, or that you build in code.
//!
//! - One connection per consumer, from `PATRON_AMQP_URL` unless
//!   [`AmqpConsumer::url`] sets one. When it drops, the consumer reports
//!   not-ready on `/ready` and reconnects with backoff (0.5 s doubling to
//!   10 s, at most 1.5 s while the broker was up in the last 5 minutes);
//!   messages it had not acknowledged are redelivered by the broker.
//! - `prefetch` is the channel QoS; `concurrency` handlers run in parallel.
//! - Dead-lettered messages are copies of the original — body, every
//!   property and typed header — plus `x-patron-*` headers, published
//!   `mandatory` to the DLQ queue through the default exchange on a
//!   confirm-mode channel. The original is acknowledged only once the broker
//!   confirmed the copy into an existing queue. A copy the broker returns
//!   (no such queue) or refuses keeps the original unacknowledged: an ERROR
//!   line says why, `/ready` names the consumer and the DLQ, and the copy is
//!   retried (1 s doubling to 30 s) until it lands or the service stops,
//!   when the original goes back to its queue.
//! - Shutdown cancels the subscription (`basic.cancel`), lets in-flight
//!   handlers finish and acknowledge (bounded by the shutdown timeout), then
//!   closes the channel: prefetched messages no handler started go back to
//!   the queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;
use super::batch::Handler;
use super::common::{Common, common_builders};
use super::dead_letter;
use super::dlq_headers;
use super::handler::{BatchHandler, MessageHandler};
use super::message::{AmqpMetadata, Delivery, Headers, Metadata};
use super::metrics::ConsumerMetrics;
use super::policy::{OnFailure, Policy};
use super::process::{Pipeline, Stopper, Verdict, drain, now_millis, truncate_reason};
use crate::component::{Component, ComponentContext, ComponentInfo, Readiness};
use crate::config::BrokerUrl;
use crate::error::Error;

const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A RabbitMQ consumer component.
///
/// ```no_run
/// use patron::consumer::amqp::AmqpConsumer;
/// use patron::consumer::{handler_fn, Message, OnFailure};
/// use patron::prelude::*;
///
/// #[patron::main]
/// async fn main(service: Service) -> patron::Result<Service> {
///     let queue = format!("orders-{}", std::env::var("REGION").unwrap_or_default());
///     let consumer = AmqpConsumer::new(&queue, handler_fn(|msg: Message<String>| async move {
///         tracing::info!(body = %msg.payload(), "received");
///         Ok::<(), patron::Error>(())
///     }))
///     .declare(true)
///     .prefetch(20)
///     .concurrency(4)
///     .on_failure(OnFailure::Dlq);
///     Ok(service.with_component(consumer))
/// }
/// ```
pub struct AmqpConsumer {
    common: Common,
    queue: String,
    url: Option<BrokerUrl>,
    exchange: Option<(String, String)>,
    declare: bool,
    prefetch: Option<u16>,
    handler: Handler,
}

impl AmqpConsumer {
    /// A consumer of `queue` that calls `handler` for each message.
    pub fn new(queue: impl Into<String>, handler: impl MessageHandler) -> Self {
        Self::with_handler(queue.into(), Handler::Single(Arc::new(handler)))
    }

    /// A consumer of `queue` that calls `handler` with up to `size`
    /// messages, or fewer when `timeout` passed since the first one arrived.
    pub fn batch(
        queue: impl Into<String>,
        handler: impl BatchHandler,
        size: usize,
        timeout: Duration,
    ) -> Self {
        Self::with_handler(
            queue.into(),
            Handler::Batch {
                handler: Arc::new(handler),
                size,
                timeout,
            },
        )
    }

    fn with_handler(queue: String, handler: Handler) -> Self {
        AmqpConsumer {
            common: Common::new(queue.as_str()),
            queue,
            url: None,
            exchange: None,
            declare: false,
            prefetch: None,
            handler,
        }
    }

    common_builders!(
        unit: "handlers (or batches)",
        on_failure: "`dlq` when a DLQ is named, else `requeue`",
        dlq: "a queue, published to through the default exchange; `<queue>.dlq` when `on_failure = dlq` names none"
    );

    /// The broker URL, instead of `PATRON_AMQP_URL`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(BrokerUrl::new(url));
        self
    }

    /// Binds the queue to `exchange` with `routing_key` at start. The
    /// exchange must exist.
    pub fn exchange(mut self, exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        self.exchange = Some((exchange.into(), routing_key.into()));
        self
    }

    /// Declares the queue (durable), its binding and the DLQ queue at start.
    pub fn declare(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// The channel's prefetch (QoS): unacknowledged messages the broker
    /// sends ahead. Default `10 × concurrency`, at least the batch size
    /// times `concurrency`.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// The settings in effect, checked.
    fn settings(&self) -> Result<Settings, Error> {
        let fail = |what: String| {
            Err(Error::msg(format!(
                "AMQP consumer {} (queue {:?}): {what}",
                self.common.name, self.queue
            )))
        };
        if self.queue.is_empty() {
            return fail("the queue name is empty".into());
        }
        let policy = match self
            .common
            .policy(OnFailure::Requeue, Some(format!("{}.dlq", self.queue)))
        {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let concurrency = self.common.concurrency;
        let batch = match self.handler.checked_size() {
            Ok(size) => size,
            Err(e) => return fail(e),
        };
        let needed = batch.saturating_mul(concurrency);
        let prefetch = match self.prefetch {
            Some(0) => return fail("prefetch must be at least 1".into()),
            Some(p) if usize::from(p) < batch => {
                return fail(format!(
                    "prefetch {p} is smaller than the batch size {batch}, so a batch could never fill; raise prefetch"
                ));
            }
            Some(p) => p,
            None => u16::try_from(needed.max(10 * concurrency)).unwrap_or(u16::MAX),
        };
        Ok(Settings { prefetch, policy })
    }
}

#[derive(Debug)]
struct Settings {
    prefetch: u16,
    policy: Policy,
}

/// What every task of a running consumer shares.
struct Running {
    pipeline: Pipeline,
    stop: Stopper,
    queue: String,
}

impl Component for AmqpConsumer {
    fn info(&self) -> ComponentInfo {
        let mut info = ComponentInfo::new("amqp-consumer", &self.common.name)
            .detail("queue", self.queue.as_str())
            .detail("concurrency", self.common.concurrency);
        if let Some((exchange, key)) = &self.exchange {
            info = info
                .detail("exchange", exchange.as_str())
                .detail("routing_key", key.as_str());
        }
        if let Handler::Batch { size, .. } = &self.handler {
            info = info.detail("batch", *size);
        }
        info
    }

    async fn run(self, ctx: ComponentContext) -> Result<(), Error> {
        let settings = self.settings()?;
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| ctx.config().amqp_url.clone());
        let metrics =
            ConsumerMetrics::new(ctx.metrics(), &self.common.name, "rabbitmq", &self.queue)?;
        let running = Arc::new(Running {
            pipeline: Pipeline {
                consumer: self.common.name.as_str().into(),
                system: "rabbitmq",
                destination: self.queue.as_str().into(),
                span_name: format!("{} process", self.queue).into(),
                policy: settings.policy.clone(),
                metrics,
                deps: Arc::clone(ctx.deps()),
                redelivers_in_process: false,
            },
            stop: Stopper::new(ctx.shutdown().child_token()),
            queue: self.queue.clone(),
        });
        let session = Session {
            consumer: &self,
            settings: &settings,
            url: &url,
            ctx: &ctx,
            running: &running,
            tracker: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(self.common.concurrency)),
        };
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        ctx.readiness()
            .not_ready(format!("AMQP consumer {}: connecting", self.common.name));
        loop {
            match session.run(&mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    if running.stop.is_cancelled() {
                        break;
                    }
                    let reason = format!("AMQP consumer {} ({}): {e}", self.common.name, url);
                    ctx.readiness().not_ready(reason.clone());
                    let delay = backoff.next();
                    tracing::warn!(
                        consumer = %self.common.name,
                        error = %reason,
                        retry_in_ms = delay.as_millis() as u64,
                        "AMQP connection lost; reconnecting"
                    );
                    tokio::select! {
                        _ = running.stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        session.drain(ctx.config().shutdown_timeout).await;
        running.stop.result(&self.common.name)
    }
}

/// One connection's worth of consuming.
struct Session<'a> {
    consumer: &'a AmqpConsumer,
    settings: &'a Settings,
    url: &'a BrokerUrl,
    ctx: &'a ComponentContext,
    running: &'a Arc<Running>,
    tracker: TaskTracker,
    permits: Arc<Semaphore>,
}

/// A broker error, with what patron was doing when it happened.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
struct SessionError {
    doing: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn during<E: std::error::Error + Send + Sync + 'static>(
    doing: impl Into<String>,
) -> impl FnOnce(E) -> SessionError {
    let doing = doing.into();
    move |e| SessionError {
        doing,
        source: Box::new(e),
    }
}

impl Session<'_> {
    async fn run(&self, backoff: &mut Backoff) -> Result<(), SessionError> {
        let c = self.consumer;
        let stop = &self.running.stop;
        let props = ConnectionProperties::default()
            .with_connection_name(format!("patron {}", c.common.name).into());
        let conn = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(self.url.expose(), props)) => r
                .map_err(during("connecting timed out"))?
                .map_err(during(format!("cannot connect to {}", self.url)))?,
        };
        let channel = conn
            .create_channel()
            .await
            .map_err(during("cannot open a channel"))?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await
            .map_err(during(format!(
                "cannot set prefetch {}",
                self.settings.prefetch
            )))?;
        let dlq = self.settings.policy.dlq.clone();
        if c.declare {
            declare_queue(&channel, &c.queue).await?;
            if let Some(dlq) = &dlq {
                declare_queue(&channel, dlq).await?;
            }
        }
        if let Some((exchange, key)) = &c.exchange {
            channel
                .queue_bind(
                    c.queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(during(format!(
                    "cannot bind queue {:?} to exchange {exchange:?} with routing key {key:?} (the exchange must exist)",
                    c.queue
                )))?;
        }
        let conn = Arc::new(conn);
        let publisher = match &dlq {
            Some(_) => Some(confirm_channel(&conn).await?),
            None => None,
        };
        let tag = format!("{}-{}", c.common.name, uuid::Uuid::new_v4().simple());
        let mut consumer = channel
            .basic_consume(
                c.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(during(format!("cannot consume from queue {:?}", c.queue)))?;
        self.ctx.readiness().ready();
        backoff.up();
        tracing::info!(consumer = %c.common.name, queue = %c.queue, prefetch = self.settings.prefetch, concurrency = c.common.concurrency, "consuming");

        let shared = Arc::new(Outlet {
            running: Arc::clone(self.running),
            conn: Arc::clone(&conn),
            publisher: std::sync::Mutex::new(publisher),
            dlq,
            declare: c.declare,
            readiness: self.ctx.readiness().clone(),
        });
        let result: Result<(), SessionError> = async {
            loop {
                let permit = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    p = Arc::clone(&self.permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    },
                };
                let first = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    d = consumer.next() => next_delivery(d)?,
                };
                match &c.handler {
                    Handler::Single(handler) => {
                        let handler = Arc::clone(handler);
                        let shared = Arc::clone(&shared);
                        self.tracker.spawn(async move {
                            let (model, acker, props) = convert(&shared.running.queue, first);
                            let verdict = shared
                                .running
                                .pipeline
                                .process(&*handler, &model, &shared.running.stop)
                                .await;
                            shared.settle(&model, &acker, &props, verdict).await;
                            drop(permit);
                        });
                    }
                    Handler::Batch {
                        handler,
                        size,
                        timeout,
                    } => {
                        let mut raw = vec![first];
                        let deadline = tokio::time::Instant::now() + *timeout;
                        while raw.len() < *size {
                            tokio::select! {
                                biased;
                                _ = stop.cancelled() => return Ok(()),
                                _ = tokio::time::sleep_until(deadline) => break,
                                d = consumer.next() => raw.push(next_delivery(d)?),
                            }
                        }
                        let handler = Arc::clone(handler);
                        let shared = Arc::clone(&shared);
                        self.tracker.spawn(async move {
                            let mut models = Vec::with_capacity(raw.len());
                            let mut ackers = Vec::with_capacity(raw.len());
                            for d in raw {
                                let (model, acker, props) = convert(&shared.running.queue, d);
                                models.push(model);
                                ackers.push((acker, props));
                            }
                            let verdicts = shared
                                .running
                                .pipeline
                                .process_batch(&*handler, &models, &shared.running.stop)
                                .await;
                            for ((model, (acker, props)), verdict) in
                                models.iter().zip(&ackers).zip(verdicts)
                            {
                                shared.settle(model, acker, props, verdict).await;
                            }
                            drop(permit);
                        });
                    }
                }
            }
        }
        .await;
        if result.is_ok() {
            // Stop delivery, let in-flight handlers acknowledge, then close:
            // prefetched messages no handler started return to the queue.
            if let Err(e) = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
            {
                tracing::warn!(consumer = %c.common.name, error = %e, "cancelling the AMQP subscription failed");
            }
            self.drain(self.ctx.config().shutdown_timeout).await;
            let _ = channel.close(200, "shutdown".into()).await;
            let _ = conn.close(200, "shutdown".into()).await;
            tracing::info!(consumer = %c.common.name, "AMQP consumer stopped");
        }
        result
    }

    /// Waits for in-flight handlers, at most `limit`.
    async fn drain(&self, limit: Duration) {
        drain(&self.tracker, limit, &self.consumer.common.name).await;
        self.tracker.reopen();
    }
}

fn next_delivery(
    next: Option<Result<lapin::message::Delivery, lapin::Error>>,
) -> Result<lapin::message::Delivery, SessionError> {
    match next {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(during("the connection failed")(e)),
        None => Err(SessionError {
            doing: "the subscription ended".into(),
            source: "the broker cancelled the consumer (was the queue deleted?)".into(),
        }),
    }
}

/// A new channel on `conn` in publisher-confirm mode, for dead letters.
async fn confirm_channel(conn: &Connection) -> Result<Channel, SessionError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(during("cannot open the DLQ channel"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(during("cannot enable publisher confirms"))?;
    Ok(ch)
}

async fn declare_queue(channel: &Channel, queue: &str) -> Result<(), SessionError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
        .map_err(during(format!("cannot declare queue {queue:?}")))
}

/// What a handler task needs to carry out its verdict.
struct Outlet {
    running: Arc<Running>,
    conn: Arc<Connection>,
    /// The confirm-mode channel dead letters go through; replaced when the
    /// broker closed it.
    publisher: std::sync::Mutex<Option<Channel>>,
    dlq: Option<String>,
    declare: bool,
    readiness: Readiness,
}

impl Outlet {
    async fn settle(
        &self,
        delivery: &Delivery,
        acker: &lapin::Acker,
        props: &BasicProperties,
        verdict: Verdict,
    ) {
        let consumer = &self.running.pipeline.consumer;
        let result = match verdict {
            Verdict::Ack | Verdict::Drop => acker.ack(BasicAckOptions::default()).await,
            Verdict::Requeue | Verdict::Release => self.give_back(delivery, acker, props).await,
            Verdict::DeadLetter { reason, attempts } => {
                if self
                    .dead_letter_until_accepted(delivery, props, &reason, attempts)
                    .await
                {
                    acker.ack(BasicAckOptions::default()).await
                } else {
                    acker.nack(requeue()).await
                }
            }
            Verdict::Exit(reason) => {
                // Counted, it comes back as its next delivery when the
                // service runs again; uncounted, the closing channel
                // returns it.
                let result = if self.counts_deliveries() {
                    self.give_back(delivery, acker, props).await
                } else {
                    Ok(true)
                };
                self.running.stop.exit(reason);
                result
            }
        };
        if let Err(e) = result {
            tracing::warn!(consumer = %consumer, error = %e, "cannot settle the message with the broker; it will be redelivered");
        }
    }

    /// Whether deliveries are counted (`max_deliveries` above 0).
    fn counts_deliveries(&self) -> bool {
        self.running.pipeline.policy.max_deliveries > 0
    }

    /// Gives the message back to its queue. Counting deliveries, a copy
    /// with `x-patron-deliveries` goes to the end of the queue and the
    /// original is acked once the broker confirmed the copy (a classic
    /// queue counts nothing itself); otherwise, or when the copy fails,
    /// `basic.nack` with requeue.
    async fn give_back(
        &self,
        delivery: &Delivery,
        acker: &lapin::Acker,
        props: &BasicProperties,
    ) -> Result<bool, lapin::Error> {
        if !self.counts_deliveries() {
            return acker.nack(requeue()).await;
        }
        let count = AMQPValue::LongLongInt(i64::from(delivery.deliveries()));
        let copy = copy_properties(props, [(DELIVERIES, count)], CopyFor::Redelivery);
        let published = match self.channel().await {
            Ok(channel) => publish_copy(&channel, &self.running.queue, delivery.body(), copy).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => acker.ack(BasicAckOptions::default()).await,
            Err(e) => {
                tracing::warn!(consumer = %self.running.pipeline.consumer, error = %e, "cannot put a counted copy back on the queue; returning the original uncounted");
                acker.nack(requeue()).await
            }
        }
    }

    /// Publishes the dead letter until the broker accepts it into the DLQ
    /// (`true`) or the service stops (`false`: the original goes back to
    /// its queue). Meanwhile the consumer is not ready, naming the DLQ.
    async fn dead_letter_until_accepted(
        &self,
        delivery: &Delivery,
        props: &BasicProperties,
        reason: &str,
        attempts: u32,
    ) -> bool {
        dead_letter::until_accepted(
            &self.running.pipeline,
            &self.readiness,
            &self.running.stop,
            || self.dead_letter(delivery, props, reason, attempts),
            || true,
        )
        .await
    }

    /// The DLQ channel, reopened when the broker closed it (declaring the
    /// DLQ first under `declare`).
    async fn channel(&self) -> Result<Channel, String> {
        let current = self
            .publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(ch) = current
            && ch.status().connected()
        {
            return Ok(ch);
        }
        let ch = confirm_channel(&self.conn)
            .await
            .map_err(|e| e.to_string())?;
        if self.declare
            && let Some(dlq) = &self.dlq
        {
            declare_queue(&ch, dlq).await.map_err(|e| e.to_string())?;
        }
        *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(ch.clone());
        Ok(ch)
    }

    async fn dead_letter(
        &self,
        d: &Delivery,
        original: &BasicProperties,
        reason: &str,
        attempts: u32,
    ) -> Result<(), String> {
        let Some(dlq) = &self.dlq else {
            return Err("no DLQ is configured".into());
        };
        let channel = self.channel().await?;
        let (exchange, routing_key) = match d.metadata() {
            Metadata::Amqp(m) => (m.exchange.clone(), m.routing_key.clone()),
            _ => (String::new(), String::new()),
        };
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        let reason = truncate_reason(reason);
        let extra = [
            (dlq_headers::ERROR, text(&reason)),
            (
                dlq_headers::ATTEMPTS,
                AMQPValue::LongLongInt(i64::from(attempts)),
            ),
            (dlq_headers::QUEUE, text(&self.running.queue)),
            (dlq_headers::EXCHANGE, text(&exchange)),
            (dlq_headers::ROUTING_KEY, text(&routing_key)),
            (dlq_headers::CONSUMER, text(&self.running.pipeline.consumer)),
            (dlq_headers::FAILED_AT, AMQPValue::LongLongInt(now_millis())),
        ];
        let props = copy_properties(original, extra, CopyFor::DeadLetter);
        publish_copy(&channel, dlq, d.body(), props).await
    }
}

/// Publishes `body` to `queue` through the default exchange, `mandatory`,
/// and waits for the broker's confirm: `Ok` only once the broker accepted
/// it into an existing queue.
async fn publish_copy(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), String> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await
        .map_err(|e| format!("publishing to queue {queue:?} failed: {e}"))?
        .await
        .map_err(|e| format!("queue {queue:?} did not confirm the message: {e}"))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(format!(
            "the broker returned the message: {} {} (does queue {queue:?} exist?)",
            returned.reply_code, returned.reply_text
        )),
        Confirmation::Nack(None) => Err(format!(
            "the broker refused the message for queue {queue:?}"
        )),
        Confirmation::NotRequested => Err("the channel is not in confirm mode".into()),
    }
}

/// The header counting a message's deliveries on the copies patron puts
/// back on its queue (what this delivery's number was).
const DELIVERIES: &str = "x-patron-deliveries";

/// Which delivery this is, from what earlier deliveries left: patron's
/// `x-patron-deliveries` on a copy it put back, a quorum queue's
/// `x-delivery-count` of returns; 1 when neither is there.
fn deliveries(headers: Option<&FieldTable>) -> u32 {
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
enum CopyFor {
    /// The DLQ: persistent, and it does not expire.
    DeadLetter,
    /// Its own queue again, counted: as the original was.
    Redelivery,
}

fn requeue() -> BasicNackOptions {
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
fn copy_properties<'a>(
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
fn convert(queue: &str, d: lapin::message::Delivery) -> (Delivery, lapin::Acker, BasicProperties) {
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
fn value_bytes(v: &AMQPValue) -> Option<Vec<u8>> {
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

    fn consumer() -> AmqpConsumer {
        AmqpConsumer::new(
            "orders",
            handler_fn(|_m: crate::consumer::Message<String>| async {}),
        )
    }

    #[test]
    fn a_dead_letter_keeps_every_property_and_typed_header() {
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
    fn settings_default_and_validate() {
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
