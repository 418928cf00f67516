//! One connection's worth of consuming: connect, open and prepare the
//! channel (QoS, declarations, binding), subscribe, hand deliveries to
//! handler tasks until shutdown or a broker error, then cancel, drain and
//! close.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::{AmqpConsumer, CONNECT_TIMEOUT, Outlet, Running, Settings, convert};
use crate::component::ComponentContext;
use crate::config::BrokerUrl;
use crate::consumer::batch::Handler;
use crate::consumer::handler::{BatchHandler, MessageHandler};
use crate::consumer::process::drain;
use crate::consumer::reconnect::Reconnect;

/// One connection's worth of consuming.
pub(super) struct Session<'a> {
    pub(super) consumer: &'a AmqpConsumer,
    pub(super) settings: &'a Settings,
    pub(super) url: &'a BrokerUrl,
    /// `url` as lapin opens it, with patron's frame size.
    pub(super) uri: &'a AMQPUri,
    pub(super) ctx: &'a ComponentContext,
    pub(super) running: &'a Arc<Running>,
    pub(super) tracker: TaskTracker,
    pub(super) permits: Arc<Semaphore>,
}

/// A broker error, with what patron was doing when it happened.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
pub(super) struct SessionError {
    doing: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

pub(super) fn during<E: std::error::Error + Send + Sync + 'static>(
    doing: impl Into<String>,
) -> impl FnOnce(E) -> SessionError {
    let doing = doing.into();
    move |e| SessionError {
        doing,
        source: Box::new(e),
    }
}

impl Session<'_> {
    /// Consumes over one connection until shutdown (`Ok`) or until the
    /// connection fails (`Err`, the caller reconnects).
    pub(super) async fn run(&self, reconnect: &mut Reconnect) -> Result<(), SessionError> {
        let c = self.consumer;
        let Some(conn) = self.connect().await? else {
            return Ok(());
        };
        let channel = self.prepare(&conn).await?;
        let conn = Arc::new(conn);
        let dlq = self.settings.policy.dlq.clone();
        let publisher = match &dlq {
            Some(_) => Some(confirm_channel(&conn).await?),
            None => None,
        };
        // The consumer's name, unique among the service's consumers, each
        // on a channel of its own (a tag need only be unique per channel).
        // lapin hashes the tag three times per delivery (SipHash, ~15
        // instructions per 8 bytes): a random suffix cost more per message
        // than it told an operator, who sees each connection in RabbitMQ's
        // management UI anyway.
        let tag = c.common.name.as_str();
        let mut deliveries = channel
            .basic_consume(
                c.queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(during(format!("cannot consume from queue {:?}", c.queue)))?;
        self.ctx.readiness().ready();
        reconnect.up();
        tracing::info!(consumer = %c.common.name, queue = %c.queue, prefetch = self.settings.prefetch, concurrency = c.common.concurrency, "consuming");

        let outlet = Arc::new(Outlet {
            running: Arc::clone(self.running),
            conn: Arc::clone(&conn),
            publisher: std::sync::Mutex::new(publisher),
            dlq,
            declare: c.declare,
            readiness: self.ctx.readiness().clone(),
        });
        let subscription = self
            .deliver(&mut deliveries, &outlet, &channel, tag)
            .await?;
        self.close(&channel, &conn, tag, subscription).await;
        Ok(())
    }

    /// A connection to the broker; `None` when shutdown came first.
    async fn connect(&self) -> Result<Option<Connection>, SessionError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("patron {}", self.consumer.common.name).into());
        let connect = Connection::connect_uri(self.uri.clone(), props);
        tokio::select! {
            _ = self.running.stop.cancelled() => Ok(None),
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => Ok(Some(r
                .map_err(during("connecting timed out"))?
                .map_err(during(format!("cannot connect to {}", self.url)))?)),
        }
    }

    /// The consuming channel with its prefetch set, the queues declared when
    /// asked, and the queue bound to its exchange when one is named.
    async fn prepare(&self, conn: &Connection) -> Result<Channel, SessionError> {
        let c = self.consumer;
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
        if c.declare {
            declare_queue(&channel, &c.queue).await?;
            if let Some(dlq) = &self.settings.policy.dlq {
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
        Ok(channel)
    }

    /// Hands deliveries to handler tasks, one handler slot each, until
    /// shutdown (`Ok`) or a broker error.
    async fn deliver(
        &self,
        deliveries: &mut Consumer,
        outlet: &Arc<Outlet>,
        channel: &Channel,
        tag: &str,
    ) -> Result<Subscription, SessionError> {
        let stop = &self.running.stop;
        if let Handler::Single(handler) = &self.consumer.handler
            && self.consumer.common.concurrency == 1
        {
            return self
                .deliver_inline(deliveries, outlet, &**handler, channel, tag)
                .await;
        }
        loop {
            let permit = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Subscription::Open),
                p = Arc::clone(&self.permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(Subscription::Open),
                },
            };
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Subscription::Open),
                d = deliveries.next() => next_delivery(d)?,
            };
            match &self.consumer.handler {
                Handler::Single(handler) => {
                    self.spawn_single(Arc::clone(handler), outlet, first, permit)
                }
                Handler::Batch {
                    handler,
                    size,
                    timeout,
                } => {
                    let Some(batch) = self.fill(deliveries, first, *size, *timeout).await? else {
                        return Ok(Subscription::Open);
                    };
                    self.spawn_batch(Arc::clone(handler), outlet, batch, permit);
                }
            }
        }
    }

    /// One delivery at a time (`concurrency = 1`, a single-message
    /// handler): this task handles each delivery itself, as a hand-written
    /// consume loop would, with no task, permit or wake-up per message.
    /// Shutdown goes as with spawned handlers: the subscription is
    /// cancelled at once, the message in its handler may finish and be
    /// acknowledged within the shutdown timeout, and after it is abandoned
    /// unacknowledged (the broker redelivers it).
    async fn deliver_inline(
        &self,
        deliveries: &mut Consumer,
        outlet: &Outlet,
        handler: &dyn MessageHandler,
        channel: &Channel,
        tag: &str,
    ) -> Result<Subscription, SessionError> {
        let limit = self.ctx.config().shutdown_timeout;
        // One wait for shutdown for the whole loop, not one per message.
        let stopped = self.running.stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let delivery = tokio::select! {
                biased;
                () = &mut stopped => return Ok(Subscription::Open),
                d = deliveries.next() => next_delivery(d)?,
            };
            let work = outlet.handle(handler, delivery);
            tokio::pin!(work);
            tokio::select! {
                biased;
                () = &mut work => continue,
                () = &mut stopped => {}
            }
            // Shutdown while the handler runs: no more deliveries, and the
            // shutdown timeout for the handler to finish.
            let (_, finished) = tokio::join!(
                self.cancel(channel, tag),
                tokio::time::timeout(limit, &mut work)
            );
            if finished.is_err() {
                tracing::warn!(consumer = %self.consumer.common.name, "the message in its handler did not finish within the shutdown timeout; the broker will redeliver it");
            }
            return Ok(Subscription::Cancelled);
        }
    }

    /// Runs `handler` on one delivery and settles it.
    fn spawn_single(
        &self,
        handler: Arc<dyn MessageHandler>,
        outlet: &Arc<Outlet>,
        delivery: lapin::message::Delivery,
        permit: OwnedSemaphorePermit,
    ) {
        let outlet = Arc::clone(outlet);
        // Boxed: a handler's future is large, and tokio moves a spawned
        // future several times while it sets up the task (a copy of every
        // byte each time); boxed, those moves are pointer-sized.
        self.tracker.spawn(Box::pin(async move {
            outlet.handle(&*handler, delivery).await;
            drop(permit);
        }));
    }

    /// `first` and the deliveries that follow it, up to `size` of them or
    /// until `timeout` has passed; `None` at shutdown.
    async fn fill(
        &self,
        deliveries: &mut Consumer,
        first: lapin::message::Delivery,
        size: usize,
        timeout: Duration,
    ) -> Result<Option<Vec<lapin::message::Delivery>>, SessionError> {
        let mut raw = vec![first];
        let deadline = tokio::time::Instant::now() + timeout;
        while raw.len() < size {
            tokio::select! {
                biased;
                _ = self.running.stop.cancelled() => return Ok(None),
                _ = tokio::time::sleep_until(deadline) => break,
                d = deliveries.next() => raw.push(next_delivery(d)?),
            }
        }
        Ok(Some(raw))
    }

    /// Runs the batch `handler` on `raw` and settles each delivery by its
    /// own verdict.
    fn spawn_batch(
        &self,
        handler: Arc<dyn BatchHandler>,
        outlet: &Arc<Outlet>,
        raw: Vec<lapin::message::Delivery>,
        permit: OwnedSemaphorePermit,
    ) {
        let outlet = Arc::clone(outlet);
        // Boxed: a handler's future is large, and tokio moves a spawned
        // future several times while it sets up the task (a copy of every
        // byte each time); boxed, those moves are pointer-sized.
        self.tracker.spawn(Box::pin(async move {
            let mut models = Vec::with_capacity(raw.len());
            let mut ackers = Vec::with_capacity(raw.len());
            for d in raw {
                let (model, acker, props) = convert(&outlet.running.queue, d);
                models.push(model);
                ackers.push((acker, props));
            }
            let verdicts = outlet
                .running
                .pipeline
                .process_batch(&*handler, &models, &outlet.running.stop)
                .await;
            for ((model, (acker, props)), verdict) in models.iter().zip(&ackers).zip(verdicts) {
                outlet.settle(model, acker, props, verdict).await;
            }
            drop(permit);
        }));
    }

    /// Stops delivery, lets in-flight handlers acknowledge, then closes:
    /// prefetched messages no handler started return to the queue.
    async fn close(
        &self,
        channel: &Channel,
        conn: &Connection,
        tag: &str,
        subscription: Subscription,
    ) {
        let name = &self.consumer.common.name;
        if let Subscription::Open = subscription {
            self.cancel(channel, tag).await;
        }
        self.drain(self.ctx.config().shutdown_timeout).await;
        let _ = channel.close(200, "shutdown".into()).await;
        let _ = conn.close(200, "shutdown".into()).await;
        tracing::info!(consumer = %name, "AMQP consumer stopped");
    }

    /// Stops the broker's deliveries to this consumer (`basic.cancel`).
    async fn cancel(&self, channel: &Channel, tag: &str) {
        if let Err(e) = channel
            .basic_cancel(tag.into(), BasicCancelOptions::default())
            .await
        {
            tracing::warn!(consumer = %self.consumer.common.name, error = %e, "cancelling the AMQP subscription failed");
        }
    }

    /// Waits for in-flight handlers, at most `limit`.
    pub(super) async fn drain(&self, limit: Duration) {
        drain(&self.tracker, limit, &self.consumer.common.name).await;
        self.tracker.reopen();
    }
}

/// Whether the subscription is still open when delivery ends.
pub(super) enum Subscription {
    Open,
    /// Already cancelled, at shutdown, while a handler was running.
    Cancelled,
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
pub(super) async fn confirm_channel(conn: &Connection) -> Result<Channel, SessionError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(during("cannot open the DLQ channel"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(during("cannot enable publisher confirms"))?;
    Ok(ch)
}

pub(super) async fn declare_queue(channel: &Channel, queue: &str) -> Result<(), SessionError> {
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
