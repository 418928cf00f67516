//! The Kafka consumer (feature `kafka`, built on `rdkafka` with its bundled
//! librdkafka): a [`KafkaConsumer`] component for one consumer group.
//!
//! - Offsets are committed only for messages whose handler returned `Ok`
//!   (or that were skipped or dead-lettered), in order per partition: each
//!   assigned partition has one worker that handles its messages one after
//!   the other, so offset N+1 is never committed while N is unfinished.
//! - Records are taken from librdkafka up to 256 at a time, from a queue
//!   each assigned partition is forwarded to, not
//!   one poll each.
//! - `concurrency` bounds how many partitions are processed at once. With
//!   `concurrency = 1` and a single-record handler the receive task
//!   handles the records itself, without a channel or waking another task.
//! - Commits are asynchronous every second, synchronous when partitions are
//!   revoked and at shutdown.
//! - `kafka_consumer_lag{consumer, topic, partition}`: high watermark minus
//!   the next offset to commit, for the partitions this instance processed,
//!   refreshed every 5 s.
//! - Batches ([`KafkaConsumer::batch`]): each partition's worker collects up
//!   to `size` records of its partition (cut after `timeout`), so a batch
//!   holds one partition's records in order and commits stay in order.
//!   [`KafkaConsumer::dedup_by_key`] hands the handler only the last record
//!   of each key in a batch; the replaced ones are committed with it
//!   (`consumer_messages_total{outcome="superseded"}`).
//! - A revoked partition's worker stops before its next record and records
//!   no more progress: the partition's next owner continues from the
//!   offset committed at the revocation.
//! - Failure strategies: `dlq` (produce to the DLQ topic with `x-patron-*`
//!   headers, then commit), `drop` — Kafka's "skip" — (commit and go on),
//!   `exit` (leave it uncommitted and stop the service). `requeue` does not
//!   exist for Kafka and is refused at start.
//! - Connection problems are left to librdkafka (`/ready` is 503 while all
//!   brokers are down). A fatal client error, which librdkafka does not
//!   recover from, follows the failure strategy: `exit` stops the service
//!   with the error; `dlq` and `skip` recreate the client (after 1 s,
//!   doubling to 30 s, `/ready` 503 meanwhile), which continues from the
//!   group's committed offsets.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use prometheus::{IntGauge, IntGaugeVec, Opts};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::Handler;
use super::common::{Common, common_builders};
use super::dead_letter;
use super::dlq_headers;
use super::handler::{BatchHandler, MessageHandler};
use super::message::{Delivery, Headers, KafkaMetadata, Metadata};
use super::metrics::ConsumerMetrics;
use super::policy::{OnFailure, Policy};
use super::process::{Pipeline, Stopper, Verdict, drain, now_millis, truncate_reason};
use super::reconnect::{Reconnect, Severity};
use crate::client::kafka::LogContext;
use crate::client::kafka_log::client_config;
use crate::component::{Component, ComponentContext, ComponentInfo, Readiness};
use crate::error::Error;
use queue::{Record, RecordQueue};

const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// First wait before recreating a client after a fatal error; doubled up
/// to [`RECREATE_MAX`].
const RECREATE_MIN: Duration = Duration::from_secs(1);
/// How often a consumer whose brokers are all down asks for metadata.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one such metadata request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The readiness problem key of "all brokers are down".
const BROKERS_DOWN: &str = "brokers-down";
const RECREATE_MAX: Duration = Duration::from_secs(30);

/// A partition, as (topic, partition).
type Partition = (String, i32);

/// What the rebalance callback and the commits share with each
/// partition's current worker, which updates it without a lock.
struct PartitionState {
    /// The next offset to commit ([`NOTHING`] until the worker finished a
    /// record).
    next: AtomicI64,
    /// Set when the partition is revoked: the worker stops and records no
    /// more progress.
    revoked: AtomicBool,
}

/// `PartitionState::next` before the worker finished a record.
const NOTHING: i64 = -1;

/// The state of each partition that has a worker.
type Partitions = Arc<Mutex<HashMap<Partition, Arc<PartitionState>>>>;

/// A Kafka consumer-group component.
pub struct KafkaConsumer {
    common: Common,
    topics: Vec<String>,
    group: String,
    brokers: Option<String>,
    settings: Vec<(String, String)>,
    handler: Handler,
    dedup: bool,
    seams: Seams,
}

/// What this module's tests change or observe in a consumer. The defaults
/// are production's; keeping them in a value of their own leaves no
/// test-only branch in the consumer's code.
#[derive(Clone, Default)]
struct Seams {
    /// Take every record through the consumer's own queue, one at a time,
    /// instead of a record queue (the fallback path).
    no_record_queue: bool,
    /// Called with each client a session creates.
    on_client: Option<ClientObserver>,
}

/// See [`Seams::on_client`].
type ClientObserver = Arc<dyn Fn(&Arc<StreamConsumer<Context>>) + Send + Sync>;

impl KafkaConsumer {
    /// A consumer of `topics` in consumer group `group`.
    pub fn new<T: Into<String>>(
        topics: impl IntoIterator<Item = T>,
        group: impl Into<String>,
        handler: impl MessageHandler,
    ) -> Self {
        Self::with_handler(topics, group, Handler::Single(Arc::new(handler)))
    }

    /// A consumer of `topics` in group `group` that calls `handler` with up
    /// to `size` records of one partition, or fewer when `timeout` passed
    /// since the first one arrived.
    pub fn batch<T: Into<String>>(
        topics: impl IntoIterator<Item = T>,
        group: impl Into<String>,
        handler: impl BatchHandler,
        size: usize,
        timeout: Duration,
    ) -> Self {
        Self::with_handler(
            topics,
            group,
            Handler::Batch {
                handler: Arc::new(handler),
                size,
                timeout,
            },
        )
    }

    fn with_handler<T: Into<String>>(
        topics: impl IntoIterator<Item = T>,
        group: impl Into<String>,
        handler: Handler,
    ) -> Self {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        KafkaConsumer {
            common: Common::new(topics.join(",")),
            topics,
            group: group.into(),
            brokers: None,
            settings: Vec::new(),
            handler,
            dedup: false,
            seams: Seams::default(),
        }
    }

    /// In a batch consumer, hands the handler only the last record of each
    /// key in a batch, in order; records without a key are all kept. The
    /// replaced records are committed with the batch. For compacted-topic
    /// style updates where only the latest value per key matters.
    pub fn dedup_by_key(mut self, dedup: bool) -> Self {
        self.dedup = dedup;
        self
    }

    common_builders!(
        unit: "partitions",
        on_failure: "`Dlq`, `Drop` — Kafka's skip — or `Exit`; `Dlq` when a DLQ topic is named, else `Exit`",
        dlq: "a topic"
    );

    /// The bootstrap brokers, instead of `PATRON_KAFKA_BROKERS`.
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = Some(brokers.into());
        self
    }

    /// A librdkafka setting passed through (e.g. `session.timeout.ms`).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Whether sessions take records through a record queue: always,
    /// except in tests of the consumer queue's path.
    fn wants_record_queue(&self) -> bool {
        !self.seams.no_record_queue
    }

    /// The in-memory test broker's form of this consumer, with the policy
    /// it would run with.
    #[doc(hidden)]
    pub fn in_memory(&self) -> Result<super::InMemoryConsumer, Error> {
        let policy = self.checked_policy()?;
        super::InMemoryConsumer::new(
            &self.common.name,
            "kafka",
            self.topics.clone(),
            policy,
            &self.handler,
            true,
        )
    }

    fn checked_policy(&self) -> Result<Policy, Error> {
        let fail = |what: &str| {
            Err(Error::msg(format!(
                "Kafka consumer {} (topics {:?}, group {:?}): {what}",
                self.common.name, self.topics, self.group
            )))
        };
        if self.topics.is_empty() || self.topics.iter().any(|t| t.is_empty()) {
            return fail("a topic name is empty");
        }
        if self.group.is_empty() {
            return fail("the group is empty");
        }
        let policy = match self.common.policy(OnFailure::Exit, None) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        };
        if policy.on_failure == OnFailure::Requeue {
            return fail("Kafka has no requeue; use dlq, drop (skip) or exit");
        }
        if let Err(e) = self.handler.checked_size() {
            return fail(&e);
        }
        if self.dedup && matches!(self.handler, Handler::Single(_)) {
            return fail("dedup_by_key applies to batch consumers (KafkaConsumer::batch)");
        }
        Ok(policy)
    }
}

impl Component for KafkaConsumer {
    fn info(&self) -> ComponentInfo {
        self.common.describe(
            ComponentInfo::new("kafka-consumer", &self.common.name)
                .detail("topics", self.topics.clone())
                .detail("group", self.group.as_str()),
        )
    }

    async fn run(self, ctx: ComponentContext) -> Result<(), Error> {
        let policy = self.checked_policy()?;
        let name = self.common.name.as_str();
        let brokers = self
            .brokers
            .clone()
            .or_else(|| ctx.config().kafka_brokers.clone())
            .unwrap_or_else(|| crate::client::kafka::DEFAULT_BROKERS.to_string());
        let producer = match &policy.dlq {
            Some(_) => {
                let context = LogContext::new(format!("Kafka consumer {name} (DLQ producer)"));
                Some(
                    client_config(&brokers)
                        .create_with_context(context)
                        .map_err(|e| {
                            Error::msg(format!(
                                "Kafka consumer {name}: cannot create the DLQ producer: {e}"
                            ))
                        })?,
                )
            }
            None => None,
        };
        let destination = self.topics.join(",");
        let metrics = ConsumerMetrics::new(ctx.metrics(), name, "kafka", &destination)?;
        let stop = ctx.shutdown().child_token();
        let partitions: Partitions = Arc::default();
        let shared = Arc::new(SessionShared {
            pipeline: Pipeline {
                consumer: name.into(),
                system: "kafka",
                destination: destination.as_str().into(),
                span_name: format!("{destination} process").into(),
                policy: policy.clone(),
                metrics,
                deps: Arc::clone(ctx.deps()),
                redelivers_in_process: true,
            },
            partitions: Arc::clone(&partitions),
            readiness: ctx.readiness().clone(),
            producer,
            dlq: policy.dlq.clone(),
            stop: Stopper::new(stop.clone()),
            permits: Arc::new(Semaphore::new(self.common.concurrency)),
        });
        let session = Session {
            consumer: &self,
            ctx: &ctx,
            brokers,
            shared: Arc::clone(&shared),
            partitions,
            assigned: assigned_gauge(ctx.metrics())?.with_label_values(&[name]),
            lag: lag_gauges(ctx.metrics())?,
        };
        let mut reconnect = Reconnect::new(
            name,
            ctx.readiness().clone(),
            stop.clone(),
            RECREATE_MIN,
            RECREATE_MAX,
        );
        while let Some(fatal) = session.run().await? {
            // librdkafka does not recover from a fatal error: the client is
            // recreated, or the service stops when the strategy is `exit`.
            let reason = format!("Kafka consumer {name}: fatal client error: {fatal}");
            if policy.on_failure == OnFailure::Exit {
                tracing::error!(consumer = %name, error = %fatal, "fatal Kafka client error; stopping (on_failure = exit)");
                shared.stop.exit(reason);
                break;
            }
            let what = "fatal Kafka client error; recreating the client";
            if !reconnect.failed(Severity::Fatal, reason, what).await {
                break;
            }
        }
        tracing::info!(consumer = %name, "Kafka consumer stopped");
        shared.stop.result(name)
    }
}

mod dlq;
mod lag;
mod progress;
mod queue;
mod rebalance;
mod session;
mod tally;
#[cfg(test)]
mod tests;
mod worker;

use lag::*;
use progress::*;
use rebalance::*;
use session::*;
use tally::*;
use worker::*;
