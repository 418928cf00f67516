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
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::common::{Common, common_builders};
use super::dead_letter;
use super::dlq_headers;
use super::handler::MessageHandler;
use super::message::{Delivery, Headers, Metadata, SqsMetadata};
use super::metrics::ConsumerMetrics;
use super::policy::{OnFailure, Policy};
use super::process::{Pipeline, Stopper, Verdict, drain, now_millis, truncate_reason};
use super::reconnect::Reconnect;
use crate::client::sqs::default_client;
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

    /// The in-memory test broker's form of this consumer, with the policy
    /// it would run with.
    #[doc(hidden)]
    pub fn in_memory(&self) -> Result<super::InMemoryConsumer, Error> {
        let policy = self.checked_policy()?;
        super::InMemoryConsumer::new(
            &self.common.name,
            "aws_sqs",
            vec![self.queue.clone()],
            policy,
            &super::batch::Handler::Single(Arc::clone(&self.handler)),
            false,
        )
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

/// What the receive loop, the handler tasks and the delete batcher of one
/// queue share.
struct QueueShared {
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
        self.common.describe(
            ComponentInfo::new("sqs-consumer", &self.common.name)
                .detail("queue", self.queue.as_str())
                .detail("max_messages", self.max_messages),
        )
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
        let mut reconnect = Reconnect::new(
            &self.common.name,
            readiness.clone(),
            stop.clone(),
            RETRY_MIN,
            RETRY_MAX,
        );
        let Some((queue_url, dlq_url)) = self
            .resolve_urls(&client, policy.dlq.as_deref(), &stop, &mut reconnect)
            .await
        else {
            return Ok(());
        };
        let metrics =
            ConsumerMetrics::new(ctx.metrics(), &self.common.name, "aws_sqs", &self.queue)?;
        let (deletes, delete_rx) = mpsc::channel(1024);
        let shared = Arc::new(QueueShared {
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
        let gauge_task = tokio::spawn(gauges.run(client, queue_url, stop.clone()));
        readiness.ready();
        tracing::info!(consumer = %self.common.name, queue = %self.queue, concurrency = self.common.concurrency, "consuming");

        let tracker = TaskTracker::new();
        reconnect.up();
        self.receive_loop(&shared, &tracker, &stop, reconnect).await;
        drain(&tracker, ctx.config().shutdown_timeout, &self.common.name).await;
        gauge_task.abort();
        let result = shared.stop.result(&self.common.name);
        // The deleter flushes what is pending once every sender is gone.
        drop(shared);
        flush_deletes(deleter, &self.common.name).await;
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

mod convert;
mod receive;
mod settle;

use convert::*;
use receive::*;
use settle::*;
