//! The RabbitMQ consumer (feature `amqp`, built on `lapin`): an
//! [`AmqpConsumer`] component that `#[patron::consumer(amqp = "queue")]`
//! creates, or that you build in code.
//!
//! - One connection per consumer, from `PATRON_AMQP_URL` unless
//!   [`AmqpConsumer::url`] sets one. When it drops, the consumer reports
//!   not-ready on `/ready` and reconnects with backoff (0.5 s doubling to
//!   10 s, at most 1.5 s while the broker was up in the last 5 minutes);
//!   messages it had not acknowledged are redelivered by the broker. The
//!   connection asks for 16 KiB frames unless the URL sets `?frame_max=`,
//!   which keeps lapin's per-connection buffers (32 frames each way) at
//!   1 MiB; a URL lapin cannot read stops the service at start.
//! - `prefetch` is the channel QoS; `concurrency` handlers run in parallel.
//!   With `concurrency = 1` and a single-message handler the consuming task
//!   runs each handler itself, without a task, permit or wake-up per
//!   message.
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
use lapin::Confirmation;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::Handler;
use super::common::{Common, common_builders};
use super::dead_letter;
use super::dlq_headers;
use super::handler::{BatchHandler, MessageHandler};
use super::message::{AmqpMetadata, Delivery, Headers, Metadata};
use super::metrics::ConsumerMetrics;
use super::policy::{OnFailure, Policy};
use super::process::{Pipeline, Stopper, Verdict, now_millis, truncate_reason};
use super::reconnect::{Reconnect, Severity};
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

    /// The in-memory test broker's form of this consumer, with the policy
    /// it would run with.
    #[doc(hidden)]
    pub fn in_memory(&self) -> Result<super::InMemoryConsumer, Error> {
        let settings = self.settings()?;
        super::InMemoryConsumer::new(
            &self.common.name,
            "rabbitmq",
            vec![self.queue.clone()],
            settings.policy,
            &self.handler,
            false,
        )
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
        let mut info = self.common.describe(
            ComponentInfo::new("amqp-consumer", &self.common.name)
                .detail("queue", self.queue.as_str()),
        );
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
        let uri = url
            .amqp_uri()
            .map_err(|e| Error::msg(format!("AMQP consumer {}: {e}", self.common.name)))?;
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
            uri: &uri,
            ctx: &ctx,
            running: &running,
            tracker: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(self.common.concurrency)),
        };
        let mut reconnect = Reconnect::new(
            &self.common.name,
            ctx.readiness().clone(),
            CancellationToken::clone(&running.stop),
            RECONNECT_MIN,
            RECONNECT_MAX,
        );
        ctx.readiness()
            .not_ready(format!("AMQP consumer {}: connecting", self.common.name));
        while let Err(e) = session.run(&mut reconnect).await {
            let reason = format!("AMQP consumer {} ({}): {e}", self.common.name, url);
            let lost = "AMQP connection lost; reconnecting";
            if !reconnect.failed(Severity::Transient, reason, lost).await {
                break;
            }
        }
        session.drain(ctx.config().shutdown_timeout).await;
        running.stop.result(&self.common.name)
    }
}

mod copies;
mod outlet;
mod session;

use copies::*;
use outlet::*;
use session::*;
