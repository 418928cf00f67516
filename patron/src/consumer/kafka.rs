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
use super::kafka_queue::{self, Record, RecordQueue};
use super::message::{Delivery, Headers, KafkaMetadata, Metadata};
use super::metrics::{ConsumerMetrics, Tally};
use super::policy::{OnFailure, Policy};
use super::process::{Pipeline, Stopper, Verdict, drain, now_millis, truncate_reason};
use crate::client::kafka::LogContext;
use crate::client::kafka_log::client_config;
use crate::component::{Component, ComponentContext, ComponentInfo, Readiness};
use crate::error::Error;

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
    /// Tests turn the record queue off to exercise the consumer queue's
    /// path.
    #[cfg(test)]
    record_queue: bool,
}

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
            #[cfg(test)]
            record_queue: true,
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
        #[cfg(test)]
        return self.record_queue;
        #[cfg(not(test))]
        true
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

/// Commits on revocation, stops revoked partitions' workers and tracks
/// readiness.
struct Context {
    partitions: Partitions,
    readiness: Readiness,
    name: String,
    /// `kafka_consumer_assigned_partitions{consumer}`.
    assigned: IntGauge,
    /// Notified on each client error.
    errors: Arc<Notify>,
    /// librdkafka said all brokers are down; cleared by a metadata probe.
    brokers_down: Arc<AtomicBool>,
    /// How many partitions the client owns, as the rebalances said.
    owned: AtomicUsize,
    /// The session's record queue, which assigned partitions are forwarded
    /// to (weak: the session drops it before the client).
    records: OnceLock<Weak<RecordQueue>>,
    /// Records that came through the consumer's own queue.
    #[cfg(test)]
    copied: AtomicUsize,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::client::kafka_log::forward(&self.name, level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // rdkafka reports a fatal error with its underlying code, so the
        // receive loop asks the client whether it is in a fatal state.
        self.errors.notify_one();
        tracing::warn!(consumer = %self.name, error = %error, reason, "Kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            // Until a metadata request answers again (the receive loop
            // probes every 0.5 s): a group that survived the outage
            // assigns nothing anew, so no rebalance would clear it.
            self.readiness.set_problem(
                BROKERS_DOWN,
                format!("Kafka consumer {}: all brokers are down", self.name),
            );
            self.brokers_down.store(true, Ordering::Release);
        }
    }
}

impl Context {
    /// Sends the records of newly assigned partitions to the record queue;
    /// called before the assignment starts their fetches, as librdkafka
    /// requires.
    fn forward(&self, assigned: &TopicPartitionList) {
        let Some(records) = self.records.get().and_then(Weak::upgrade) else {
            return;
        };
        for p in assigned.elements() {
            if !records.forward(p.topic(), p.partition()) {
                tracing::debug!(consumer = %self.name, topic = p.topic(), partition = p.partition(), "partition not forwarded to the record queue; its records come one at a time");
            }
        }
    }

    /// Stops the revoked partitions' workers and commits what they
    /// finished: the partitions' next owner continues from there.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let mut list = TopicPartitionList::new();
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(topic, partition), state| {
                if revoked.find_partition(topic, *partition).is_none() {
                    return true;
                }
                // First stop the worker from recording progress (it stops
                // before its next record), then take what it recorded.
                state.revoked.store(true, Ordering::Release);
                add_next(&mut list, topic, *partition, state);
                false
            });
        if list.count() > 0
            && let Err(e) = consumer.commit(&list, CommitMode::Sync)
        {
            tracing::warn!(consumer = %self.name, error = %e, "committing before a rebalance failed; those messages will be redelivered");
        }
    }
}

impl ConsumerContext for Context {
    /// Counts the partitions the client will own (for the gauge and the
    /// log of `post_rebalance`) while the group still answers: any request
    /// to librdkafka's group (`assignment()`, `rebalance_protocol()`) made
    /// after rdkafka applied the rebalance can block for good, because the
    /// group of a closing client may terminate as soon as its partitions
    /// are unassigned (a static member has no group to leave) and then
    /// drops requests unanswered, while they wait without a timeout.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let before = self.owned.load(Ordering::Relaxed);
        let owned = match rebalance {
            Rebalance::Assign(assigned) if cooperative => before + assigned.count(),
            Rebalance::Assign(assigned) => assigned.count(),
            Rebalance::Revoke(revoked) if cooperative => before.saturating_sub(revoked.count()),
            // An eager revocation, or an error, after which rdkafka
            // unassigns everything (an error under the cooperative
            // protocol, which librdkafka does not raise, would leave the
            // count as it was).
            Rebalance::Revoke(_) => 0,
            Rebalance::Error(_) if cooperative => before,
            Rebalance::Error(_) => 0,
        };
        self.owned.store(owned, Ordering::Relaxed);
        match rebalance {
            Rebalance::Revoke(revoked) => self.revoke(consumer, revoked),
            Rebalance::Assign(assigned) => self.forward(assigned),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let owned = self.owned.load(Ordering::Relaxed);
        self.assigned.set(i64::try_from(owned).unwrap_or(i64::MAX));
        if let Rebalance::Assign(assigned) = rebalance {
            tracing::info!(consumer = %self.name, assigned = assigned.count(), owned, "partitions assigned");
            self.readiness.ready();
        }
    }
}

/// Drops a client in a fatal state off the runtime: librdkafka skips the
/// group close of a failed client but still joins its threads, which
/// blocks for a moment, so a thread of its own waits instead of a runtime
/// worker.
fn close_fatal(consumer: Arc<StreamConsumer<Context>>, name: &str) {
    let spawned = std::thread::Builder::new()
        .name("patron-kafka-close".into())
        .spawn(move || drop(consumer));
    if let Err(e) = spawned {
        tracing::warn!(consumer = %name, error = %e, "cannot start a thread to close the failed Kafka client; leaking it");
    }
}

/// The offsets to commit.
fn offsets(partitions: &Partitions) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), state) in partitions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        add_next(&mut list, topic, *partition, state);
    }
    list
}

/// Adds the partition's next offset to commit to `list`, if its worker
/// finished a record.
fn add_next(list: &mut TopicPartitionList, topic: &str, partition: i32, state: &PartitionState) {
    let next = state.next.load(Ordering::Acquire);
    if next != NOTHING {
        let _ = list.add_partition_offset(topic, partition, Offset::Offset(next));
    }
}

impl Component for KafkaConsumer {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::new("kafka-consumer", &self.common.name)
            .detail("topics", self.topics.clone())
            .detail("group", self.group.as_str())
            .detail("concurrency", self.common.concurrency)
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
        let shared = Arc::new(Shared {
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
        let mut delay = RECREATE_MIN;
        while let Some(fatal) = session.run().await? {
            // librdkafka does not recover from a fatal error: the client is
            // recreated, or the service stops when the strategy is `exit`.
            let reason = format!("Kafka consumer {name}: fatal client error: {fatal}");
            if policy.on_failure == OnFailure::Exit {
                tracing::error!(consumer = %name, error = %fatal, "fatal Kafka client error; stopping (on_failure = exit)");
                shared.stop.exit(reason);
                break;
            }
            tracing::error!(consumer = %name, error = %fatal, retry_in = ?delay, "fatal Kafka client error; recreating the client");
            ctx.readiness().not_ready(reason);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RECREATE_MAX);
        }
        tracing::info!(consumer = %name, "Kafka consumer stopped");
        shared.stop.result(name)
    }
}

/// What one client's life (from creation to shutdown or a fatal error)
/// needs; the progress and the workers' flags outlive it.
struct Session<'a> {
    consumer: &'a KafkaConsumer,
    ctx: &'a ComponentContext,
    brokers: String,
    shared: Arc<Shared>,
    partitions: Partitions,
    assigned: IntGauge,
    lag: IntGaugeVec,
}

impl Session<'_> {
    /// Consumes with a new client until shutdown (`None`) or a fatal client
    /// error (its description). In both cases in-flight records finish
    /// first and, at shutdown, what finished is committed.
    async fn run(&self) -> Result<Option<String>, Error> {
        let c = self.consumer;
        let name = c.common.name.as_str();
        let stop = &*self.shared.stop;
        let readiness = self.ctx.readiness();
        readiness.not_ready(format!("Kafka consumer {name}: joining group {}", c.group));
        let fatal = CancellationToken::new();
        let errors = Arc::new(Notify::new());
        let brokers_down = Arc::new(AtomicBool::new(false));
        let probing = Arc::new(AtomicBool::new(false));
        let mut config = client_config(&self.brokers);
        config
            .set("group.id", &c.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in &c.settings {
            config.set(k, v);
        }
        let consumer = config
            .create_with_context::<Context, StreamConsumer<Context>>(Context {
                partitions: Arc::clone(&self.partitions),
                readiness: readiness.clone(),
                name: name.to_string(),
                assigned: self.assigned.clone(),
                errors: Arc::clone(&errors),
                brokers_down: Arc::clone(&brokers_down),
                owned: AtomicUsize::new(0),
                records: OnceLock::new(),
                #[cfg(test)]
                copied: Default::default(),
            })
            .map_err(|e| {
                Error::msg(format!(
                    "Kafka consumer {name}: cannot create the client: {e}"
                ))
            })?;
        let consumer = Arc::new(consumer);
        #[cfg(test)]
        tests::created(&consumer);
        // SAFETY: the queue is dropped before the client: explicitly below
        // on every way out after this point, and the context holds it
        // weakly.
        let records = match c
            .wants_record_queue()
            .then(|| unsafe { RecordQueue::new(consumer.client().native_ptr()) })
        {
            Some(Some(created)) => {
                let records = Arc::new(created);
                let _ = consumer.context().records.set(Arc::downgrade(&records));
                Some(records)
            }
            Some(None) => {
                tracing::warn!(consumer = %name, "librdkafka could not create a record queue; records come one at a time");
                None
            }
            None => None,
        };
        let topics: Vec<&str> = c.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            drop(records);
            return Err(Error::msg(format!(
                "Kafka consumer {name}: cannot subscribe to {topics:?}: {e}"
            )));
        }
        let tracker = TaskTracker::new();
        // By topic, then partition: a record finds its worker without
        // allocating a key.
        let mut workers: HashMap<String, HashMap<i32, Lane>> = HashMap::new();
        let mut ticks = Ticks::new();
        tracing::info!(consumer = %name, topics = ?c.topics, group = %c.group, "consuming");
        let mut stream = consumer.stream();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = fatal.cancelled() => break,
                _ = errors.notified() => {
                    if consumer.client().fatal_error().is_some() {
                        fatal.cancel();
                    }
                }
                _ = ticks.commit.tick() => self.commit(&consumer),
                _ = ticks.lag.tick() => self.refresh_lag(&consumer),
                _ = ticks.probe.tick(), if brokers_down.load(Ordering::Acquire) => {
                    probe_brokers(&consumer, &brokers_down, &probing, readiness);
                }
                // Rebalances, errors and the records of partitions that
                // could not be forwarded to the record queue.
                received = stream.next() => {
                    // Take what else librdkafka already holds without
                    // waiting, and hand it to the workers in runs: one
                    // channel send and one wake-up per run, not per record.
                    let mut chunk = Vec::new();
                    let mut errors = Vec::new();
                    match received {
                        Some(Ok(message)) => chunk.push(Record::copied(&message)),
                        Some(Err(e)) => errors.push(e),
                        None => break,
                    }
                    while errors.is_empty() && chunk.len() < CHUNK {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(message))) => chunk.push(Record::copied(&message)),
                            Some(Some(Err(e))) => errors.push(e),
                            Some(None) | None => break,
                        }
                    }
                    #[cfg(test)]
                    consumer.context().copied.fetch_add(chunk.len(), Ordering::Relaxed);
                    if !self.dispatch(&consumer, &mut ticks, chunk, &mut workers, &tracker).await {
                        break;
                    }
                    self.receive_errors(errors, &fatal);
                }
                () = ready(records.as_deref()) => {
                    let (mut chunk, mut errors) = (Vec::new(), Vec::new());
                    if let Some(records) = &records {
                        records.take(&mut chunk, &mut errors);
                    }
                    if !self.dispatch(&consumer, &mut ticks, chunk, &mut workers, &tracker).await {
                        break;
                    }
                    self.receive_errors(errors, &fatal);
                }
            }
        }
        drop(stream);
        // Stop feeding the workers, let in-flight messages finish.
        drop(workers);
        drain(&tracker, self.ctx.config().shutdown_timeout, name).await;
        // Before the client goes (records still held by abandoned workers
        // keep the client alive themselves).
        drop(records);
        if fatal.is_cancelled() {
            // The client is unusable; what finished since the last commit
            // is redelivered to whoever owns the partitions next.
            self.forget_partitions();
            let fatal = consumer
                .client()
                .fatal_error()
                .map(|(code, reason)| format!("{code}: {reason}"))
                .unwrap_or_else(|| "the client reported a fatal error".into());
            close_fatal(consumer, name);
            return Ok(Some(fatal));
        }
        // The final commit, leaving the group and the close (which serves
        // the revocation) each wait on the broker inside librdkafka: off the
        // runtime, so that its workers keep serving meanwhile (`/health`,
        // other components) and the service's shutdown deadline can still
        // give up on a close that does not end.
        let list = offsets(&self.partitions);
        let owner = name.to_string();
        let closed = tokio::task::spawn_blocking(move || {
            if list.count() > 0
                && let Err(e) = consumer.commit(&list, CommitMode::Sync)
            {
                tracing::warn!(consumer = %owner, error = %e, "the final commit failed; the last messages will be redelivered");
            }
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
        self.assigned.set(0);
        closed.map_err(|e| {
            Error::msg(format!(
                "Kafka consumer {name}: closing the client failed: {e}"
            ))
        })?;
        Ok(None)
    }

    /// Logs receive errors; a fatal one ends the session.
    fn receive_errors(&self, errors: Vec<KafkaError>, fatal: &CancellationToken) {
        let name = &self.consumer.common.name;
        for e in errors {
            match e {
                // Only reported when `enable.partition.eof` is set.
                KafkaError::PartitionEOF(partition) => {
                    tracing::debug!(consumer = %name, partition, "reached the end of a partition");
                }
                // librdkafka returns a fatal error of the group consumer
                // from the poll, as error code `Fatal`.
                e if matches!(e, KafkaError::MessageConsumptionFatal(_))
                    || e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) =>
                {
                    tracing::error!(consumer = %name, error = %e, "fatal Kafka consume error");
                    fatal.cancel();
                }
                e => tracing::warn!(consumer = %name, error = %e, "Kafka receive error"),
            }
        }
    }

    /// Hands `chunk` (records in the order librdkafka returned them) to the
    /// partitions' workers, a run of records of one partition at a time,
    /// starting a worker for a partition that has none (or a revoked one).
    /// A task worker gets each run in one channel send; an inline worker
    /// handles it before this returns. False when shutdown interrupted it.
    async fn dispatch(
        &self,
        consumer: &Arc<StreamConsumer<Context>>,
        ticks: &mut Ticks,
        chunk: Vec<Record>,
        workers: &mut HashMap<String, HashMap<i32, Lane>>,
        tracker: &TaskTracker,
    ) -> bool {
        let c = self.consumer;
        let mut rest = chunk;
        while let Some(first) = rest.first() {
            // The run is `rest`'s head of one partition's records; most
            // chunks are one run, which `split_off` leaves in place.
            let len = 1 + rest[1..]
                .iter()
                .take_while(|m| m.same_partition(first))
                .count();
            let tail = rest.split_off(len);
            let run = std::mem::replace(&mut rest, tail);
            let partition = run[0].partition();
            let topic = run[0].topic();
            let partitions = match workers.get_mut(topic) {
                Some(p) => p,
                None => workers.entry(topic.to_string()).or_default(),
            };
            let lane = match partitions.entry(partition) {
                Entry::Occupied(e) if !e.get().state().revoked.load(Ordering::Acquire) => {
                    e.into_mut()
                }
                entry => {
                    let lane =
                        Lane::start(&self.shared, c, tracker, (topic.to_string(), partition));
                    entry.insert_entry(lane).into_mut()
                }
            };
            match lane {
                Lane::Task { tx, .. } => {
                    let run = Run {
                        records: run,
                        client: Arc::clone(consumer),
                    };
                    let sent = tokio::select! {
                        _ = self.shared.stop.cancelled() => return false,
                        sent = tx.send(run) => sent,
                    };
                    if sent.is_err() {
                        tracing::warn!(consumer = %c.common.name, "a partition worker stopped; its messages will be redelivered");
                    }
                }
                Lane::Inline {
                    worker,
                    handler,
                    tally,
                } => {
                    if !self
                        .inline(consumer, ticks, worker, &**handler, tally, &run)
                        .await
                    {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Handles `run` in the receive task, one record after the other.
    /// While a handler waits, the commits and the lag go on at their
    /// intervals. At shutdown a record still in its handler after the
    /// shutdown timeout is abandoned, uncommitted, as a task worker's would
    /// be. False when shutdown interrupted it.
    async fn inline(
        &self,
        consumer: &Arc<StreamConsumer<Context>>,
        ticks: &mut Ticks,
        worker: &Worker,
        handler: &dyn MessageHandler,
        tally: &mut Tally,
        run: &[Record],
    ) -> bool {
        let stop = &self.shared.stop;
        let limit = self.ctx.config().shutdown_timeout;
        tally.begin_run();
        let went_on = {
            // Handlers that finish at once complete the whole run in its
            // first poll: no timer is polled per record.
            let records = async {
                for message in run {
                    if !worker.handle(handler, message, tally).await {
                        break;
                    }
                }
            };
            let abandoned = async {
                stop.cancelled().await;
                tokio::time::sleep(limit).await;
            };
            tokio::pin!(records, abandoned);
            loop {
                tokio::select! {
                    biased;
                    () = &mut records => break !stop.is_cancelled(),
                    () = &mut abandoned => {
                        tracing::warn!(consumer = %self.consumer.common.name, "the message in its handler did not finish within the shutdown timeout; the broker will redeliver it");
                        break false;
                    }
                    _ = ticks.commit.tick() => self.commit(consumer),
                    _ = ticks.lag.tick() => self.refresh_lag(consumer),
                }
            }
        };
        tally.end_run();
        went_on
    }

    /// Refreshes `kafka_consumer_lag` off the runtime: fetching the
    /// watermarks blocks on the network.
    fn refresh_lag(&self, consumer: &Arc<StreamConsumer<Context>>) {
        let (consumer, partitions, lag, name) = (
            Arc::clone(consumer),
            Arc::clone(&self.partitions),
            self.lag.clone(),
            self.consumer.common.name.clone(),
        );
        tokio::task::spawn_blocking(move || record_lag(&consumer, &partitions, &lag, &name));
    }

    /// Commits the recorded progress without waiting for the broker.
    fn commit(&self, consumer: &StreamConsumer<Context>) {
        let list = offsets(&self.partitions);
        if list.count() > 0
            && let Err(e) = consumer.commit(&list, CommitMode::Async)
        {
            tracing::warn!(consumer = %self.consumer.common.name, error = %e, "committing offsets failed; retrying at the next interval");
        }
    }

    /// Drops the progress and stops the workers of every partition: a new
    /// client starts from the group's committed offsets.
    fn forget_partitions(&self) {
        for (_, state) in self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            state.revoked.store(true, Ordering::Release);
        }
        self.assigned.set(0);
    }
}

struct Shared {
    pipeline: Pipeline,
    partitions: Partitions,
    producer: Option<FutureProducer<LogContext>>,
    dlq: Option<String>,
    stop: Stopper,
    permits: Arc<Semaphore>,
    readiness: Readiness,
}

/// The receive loop's periodic work.
struct Ticks {
    commit: Interval,
    lag: Interval,
    /// While all brokers are down: how often to ask whether one is back.
    probe: Interval,
}

impl Ticks {
    fn new() -> Ticks {
        let mut commit = tokio::time::interval(COMMIT_INTERVAL);
        let mut lag = tokio::time::interval(LAG_INTERVAL);
        // A tick missed while a run was handled fires once, not in a burst.
        commit.set_missed_tick_behavior(MissedTickBehavior::Delay);
        lag.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticks { commit, lag, probe }
    }
}

/// Asks the brokers for metadata on the blocking pool (at most one probe at
/// a time); an answer clears the "all brokers are down" readiness problem.
fn probe_brokers(
    consumer: &Arc<StreamConsumer<Context>>,
    brokers_down: &Arc<AtomicBool>,
    probing: &Arc<AtomicBool>,
    readiness: &Readiness,
) {
    if probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (consumer, down, probing, readiness) = (
        Arc::clone(consumer),
        Arc::clone(brokers_down),
        Arc::clone(probing),
        readiness.clone(),
    );
    tokio::task::spawn_blocking(move || {
        if consumer
            .client()
            .fetch_metadata(None, PROBE_TIMEOUT)
            .is_ok()
            && down.swap(false, Ordering::AcqRel)
        {
            readiness.clear_problem(BROKERS_DOWN);
            tracing::info!(consumer = %consumer.context().name, "Kafka brokers answer again");
        }
        probing.store(false, Ordering::Release);
    });
}

/// Records on their way to a task worker, with the client they came from,
/// which must outlive them (fields drop in order).
struct Run {
    records: Vec<Record>,
    client: Arc<StreamConsumer<Context>>,
}

/// Records a batch worker received but did not hand out yet, with their
/// client, which must outlive them (fields drop in order).
#[derive(Default)]
struct Pending {
    records: std::collections::VecDeque<Record>,
    client: Option<Arc<StreamConsumer<Context>>>,
}

impl Pending {
    fn add(&mut self, run: Run) {
        self.records.extend(run.records);
        self.client = Some(run.client);
    }
}

/// Resolves when the record queue may hold records; never without one.
async fn ready(records: Option<&RecordQueue>) {
    match records {
        Some(records) => records.ready().await,
        None => std::future::pending().await,
    }
}

/// The most records taken from librdkafka in one go without waiting.
const CHUNK: usize = kafka_queue::MAX_TAKE;

/// One partition's worker, as the receive loop sees it.
enum Lane {
    /// A task fed through a channel: used when partitions are processed
    /// concurrently, and for batches (which wait for their records).
    Task {
        tx: mpsc::Sender<Run>,
        state: Arc<PartitionState>,
    },
    /// One record at a time (`concurrency = 1`, single-record handlers):
    /// the receive task handles the records itself, as a hand-written poll
    /// loop would — no copy, channel or wake-up per record.
    Inline {
        worker: Worker,
        handler: Arc<dyn MessageHandler>,
        tally: Tally,
    },
}

impl Lane {
    fn start(
        shared: &Arc<Shared>,
        consumer: &KafkaConsumer,
        tracker: &TaskTracker,
        partition: Partition,
    ) -> Lane {
        let state = Arc::new(PartitionState {
            next: AtomicI64::new(NOTHING),
            revoked: AtomicBool::new(false),
        });
        let topic: Arc<str> = partition.0.as_str().into();
        shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, Arc::clone(&state));
        let worker = Worker {
            shared: Arc::clone(shared),
            state: Arc::clone(&state),
            topic,
        };
        if let Handler::Single(handler) = &consumer.handler
            && consumer.common.concurrency == 1
        {
            return Lane::Inline {
                tally: Tally::new(&shared.pipeline.metrics),
                worker,
                handler: Arc::clone(handler),
            };
        }
        // Runs of up to CHUNK records: at most 8 × CHUNK held per partition.
        let (tx, rx) = mpsc::channel(8);
        match &consumer.handler {
            Handler::Single(handler) => tracker.spawn(worker.single(rx, Arc::clone(handler))),
            Handler::Batch {
                handler,
                size,
                timeout,
            } => tracker.spawn(worker.batches(
                rx,
                Arc::clone(handler),
                *size,
                *timeout,
                consumer.dedup,
            )),
        };
        Lane::Task { tx, state }
    }

    /// The partition's state, shared with its worker.
    fn state(&self) -> &PartitionState {
        match self {
            Lane::Task { state, .. } => state,
            Lane::Inline { worker, .. } => &worker.state,
        }
    }
}

/// Handles one partition's records in order. It stops after a failure
/// that stops the service, at shutdown and when the partition is revoked.
struct Worker {
    shared: Arc<Shared>,
    /// The partition's next offset to commit and revocation flag.
    state: Arc<PartitionState>,
    /// The partition's topic, shared by its records' metadata.
    topic: Arc<str>,
}

impl Worker {
    /// Whether to go on with the next record: not when stopping (records
    /// not started stay uncommitted and are redelivered) or revoked.
    fn proceed(&self) -> bool {
        !self.shared.stop.is_stopping() && !self.state.revoked.load(Ordering::Acquire)
    }

    async fn single(self, mut rx: mpsc::Receiver<Run>, handler: Arc<dyn MessageHandler>) {
        let mut tally = Tally::new(&self.shared.pipeline.metrics);
        while let Some(run) = rx.recv().await {
            // One permit per run: `concurrency` bounds the partitions being
            // processed at once.
            let Ok(_permit) = Arc::clone(&self.shared.permits).acquire_owned().await else {
                return;
            };
            tally.begin_run();
            for message in &run.records {
                if !self.handle(&*handler, message, &mut tally).await {
                    return;
                }
            }
            tally.end_run();
        }
    }

    /// Handles one record and records the progress; false when the worker
    /// must stop. Its time and outcome go to `tally`, whose run the
    /// caller began.
    async fn handle(
        &self,
        handler: &dyn MessageHandler,
        message: &Record,
        tally: &mut Tally,
    ) -> bool {
        if !self.proceed() {
            return false;
        }
        let mut delivery = convert(message, &self.topic);
        loop {
            let verdict = self
                .shared
                .pipeline
                .process_counted(handler, &delivery, &self.shared.stop, tally)
                .await;
            // Kafka cannot give a record back: under a delivery limit,
            // `exit` is a requeue (`redelivers_in_process`) carried out here,
            // counted, until the limit turns the verdict into the DLQ or a
            // drop (`Policy::give_back`).
            let policy = &self.shared.pipeline.policy;
            if verdict != Verdict::Requeue {
                return self.settle(message, verdict).await;
            }
            let deliveries = delivery.deliveries() + 1;
            let wait = policy.delay(deliveries - 1);
            tracing::warn!(
                consumer = %self.shared.pipeline.consumer,
                deliveries,
                max_deliveries = policy.max_deliveries,
                retry_in_ms = wait.as_millis() as u64,
                "delivering the failed record again in-process"
            );
            tokio::select! {
                _ = self.shared.stop.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            if !self.proceed() {
                return false;
            }
            delivery = delivery.with_deliveries(deliveries);
        }
    }

    async fn batches(
        self,
        mut rx: mpsc::Receiver<Run>,
        handler: Arc<dyn BatchHandler>,
        size: usize,
        timeout: Duration,
        dedup: bool,
    ) {
        // Records received but not yet in a batch, in offset order.
        let mut pending = Pending::default();
        loop {
            if pending.records.is_empty() {
                match rx.recv().await {
                    Some(run) => pending.add(run),
                    None => break,
                }
            }
            let deadline = tokio::time::Instant::now() + timeout;
            while pending.records.len() < size {
                tokio::select! {
                    biased;
                    next = rx.recv() => match next {
                        Some(run) => pending.add(run),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let take = pending.records.len().min(size);
            let records: Vec<Record> = pending.records.drain(..take).collect();
            if !self.proceed() {
                break;
            }
            let Ok(_permit) = Arc::clone(&self.shared.permits).acquire_owned().await else {
                break;
            };
            let kept = if dedup {
                last_per_key(&records)
            } else {
                (0..records.len()).collect()
            };
            let superseded = records.len() - kept.len();
            if superseded > 0 {
                self.shared
                    .pipeline
                    .metrics
                    .superseded
                    .inc_by(superseded as u64);
            }
            let deliveries: Vec<Delivery> = kept
                .iter()
                .map(|&i| convert(&records[i], &self.topic))
                .collect();
            let verdicts = self
                .shared
                .pipeline
                .process_batch(&*handler, &deliveries, &self.shared.stop)
                .await;
            // In offset order; a superseded record is done with the batch.
            let mut outcome: Vec<Option<Verdict>> = vec![None; records.len()];
            for (i, verdict) in kept.into_iter().zip(verdicts) {
                outcome[i] = Some(verdict);
            }
            for (message, verdict) in records.iter().zip(outcome) {
                let done = match verdict {
                    Some(verdict) => self.settle(message, verdict).await,
                    None => self.record(message),
                };
                if !done {
                    return;
                }
            }
        }
    }

    /// Carries out `verdict` and records the progress; false when the
    /// worker must stop.
    async fn settle(&self, message: &Record, verdict: Verdict) -> bool {
        let shared = &self.shared;
        let done = match verdict {
            Verdict::Ack | Verdict::Drop => true,
            Verdict::DeadLetter { reason, attempts } => {
                self.dead_letter_until_accepted(message, &reason, attempts)
                    .await
            }
            Verdict::Exit(reason) => {
                shared.stop.exit(reason);
                false
            }
            // Shutdown during a retry wait (Kafka has no requeue): leave it
            // uncommitted.
            Verdict::Requeue | Verdict::Release => false,
        };
        done && self.record(message)
    }

    /// Produces the dead letter until the broker accepts it (`true`), or
    /// the service stops or the partition is revoked (`false`: the record
    /// stays uncommitted and is delivered again). Meanwhile the partition
    /// holds (its order is kept) and the consumer is not ready.
    async fn dead_letter_until_accepted(
        &self,
        message: &Record,
        reason: &str,
        attempts: u32,
    ) -> bool {
        let shared = &self.shared;
        dead_letter::until_accepted(
            &shared.pipeline,
            &shared.readiness,
            &shared.stop,
            || dead_letter(shared, message, reason, attempts),
            || self.proceed(),
        )
        .await
    }

    /// Records `message` as done unless the partition was revoked; false
    /// when it was. A record that finishes while the revocation commits
    /// may land in a state already taken out of the shared map: it is then
    /// not committed, and the partition's next owner handles it again.
    fn record(&self, message: &Record) -> bool {
        if self.state.revoked.load(Ordering::Acquire) {
            return false;
        }
        self.state
            .next
            .store(message.offset() + 1, Ordering::Release);
        true
    }
}

/// The indexes of the records a batch deduplicated by key keeps: the last
/// record of each key and every record without one, in offset order.
fn last_per_key(records: &[Record]) -> Vec<usize> {
    let mut last: HashMap<&[u8], usize> = HashMap::new();
    for (i, m) in records.iter().enumerate() {
        if let Some(key) = m.key() {
            last.insert(key, i);
        }
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, m)| m.key().is_none_or(|k| last.get(k) == Some(i)))
        .map(|(i, _)| i)
        .collect()
}

async fn dead_letter(
    shared: &Shared,
    m: &Record,
    reason: &str,
    attempts: u32,
) -> Result<(), String> {
    let (Some(producer), Some(topic)) = (&shared.producer, &shared.dlq) else {
        return Err("no DLQ topic is configured".into());
    };
    let mut original = Vec::new();
    m.for_each_header(|key, value| original.push((key.to_string(), value.map(<[u8]>::to_vec))));
    let mut headers = OwnedHeaders::new_with_capacity(original.len() + 7);
    for (key, value) in &original {
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let reason = truncate_reason(reason);
    let attempts = attempts.to_string();
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let failed_at = now_millis().to_string();
    // The copy gets its own timestamp, so the DLQ's retention counts from
    // the failure; the original's is kept here.
    let timestamp = m.timestamp().map(|t| t.to_string()).unwrap_or_default();
    for (key, value) in [
        (dlq_headers::ERROR, reason.as_str()),
        (dlq_headers::ATTEMPTS, attempts.as_str()),
        ("x-patron-original-topic", m.topic()),
        ("x-patron-original-partition", partition.as_str()),
        ("x-patron-original-offset", offset.as_str()),
        (dlq_headers::CONSUMER, &shared.pipeline.consumer),
        (dlq_headers::FAILED_AT, failed_at.as_str()),
        ("x-patron-original-timestamp", timestamp.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    if let Some(payload) = m.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| format!("producing to DLQ topic {topic:?} failed: {e}"))
}

/// A Kafka record as patron's [`Delivery`].
fn convert(m: &Record, topic: &Arc<str>) -> Delivery {
    let mut headers = Headers::new();
    m.for_each_header(|key, value| {
        if let Some(value) = value {
            headers.insert(key, value.to_vec());
        }
    });
    let metadata = KafkaMetadata {
        topic: Arc::clone(topic),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        timestamp: m.timestamp(),
    };
    Delivery::with_header_content_type(
        m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        Metadata::Kafka(metadata),
    )
}

/// The lag gauge family, shared by the service's Kafka consumers.
fn lag_gauges(metrics: &crate::observe::metrics::Metrics) -> Result<IntGaugeVec, Error> {
    metrics.shared("kafka_consumer_lag", || {
        IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_lag",
                "Records behind: the partition's high watermark minus the next offset to commit.",
            ),
            &["consumer", "topic", "partition"],
        )
        .map_err(|e| Error::msg(format!("cannot create the Kafka lag gauge: {e}")))
    })
}

/// The assigned-partitions gauge family, shared by the service's Kafka
/// consumers.
fn assigned_gauge(metrics: &crate::observe::metrics::Metrics) -> Result<IntGaugeVec, Error> {
    metrics.shared("kafka_consumer_assigned_partitions", || {
        IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_assigned_partitions",
                "Partitions the consumer group currently assigns to this instance.",
            ),
            &["consumer"],
        )
        .map_err(|e| Error::msg(format!("cannot create the Kafka assignment gauge: {e}")))
    })
}

fn record_lag(
    consumer: &StreamConsumer<Context>,
    partitions: &Partitions,
    lag: &IntGaugeVec,
    name: &str,
) {
    let positions: Vec<((String, i32), i64)> = partitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, state)| (k.clone(), state.next.load(Ordering::Acquire)))
        .filter(|(_, next)| *next != NOTHING)
        .collect();
    for ((topic, partition), next) in positions {
        match consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2)) {
            Ok((_, high)) => lag
                .with_label_values(&[name, topic.as_str(), partition.to_string().as_str()])
                .set((high - next).max(0)),
            Err(e) => {
                tracing::debug!(consumer = %name, topic, partition, error = %e, "cannot read the high watermark")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Fatal client errors, injected with librdkafka's
    //! `rd_kafka_test_fatal_error` into a consumer on the real broker from
    //! `PATRON_TEST_KAFKA_BROKERS` (the tansu broker cannot be made to
    //! fence a member), and which queue records come through. The other
    //! Kafka tests are in `tests/tests/kafka.rs`.
    //!
    //! A consumer only has fatal errors as a static group member
    //! (`group.instance.id`, see `static_member`) or with the KIP-848
    //! protocol: librdkafka checks for them only then when it destroys a
    //! client, so a fatal error injected into any other consumer makes its
    //! destruction wait forever on a spinning main thread.

    use std::sync::Weak;

    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;

    use super::*;
    use crate::consumer::{Message, handler_fn};
    use crate::service::Service;
    use crate::test::TestServer;

    /// Every client a session created in this test process.
    static CREATED: Mutex<Vec<Weak<StreamConsumer<Context>>>> = Mutex::new(Vec::new());

    pub(super) fn created(consumer: &Arc<StreamConsumer<Context>>) {
        CREATED.lock().unwrap().push(Arc::downgrade(consumer));
    }

    fn brokers() -> Option<String> {
        match std::env::var("PATRON_TEST_KAFKA_BROKERS") {
            Ok(b) if !b.is_empty() => Some(b),
            _ if std::env::var("PATRON_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("PATRON_TEST_KAFKA_BROKERS is not set and PATRON_TEST_REQUIRE_SERVICES=1")
            }
            _ => {
                println!("SKIPPED (no PATRON_TEST_KAFKA_BROKERS: a Kafka-compatible broker)");
                None
            }
        }
    }

    async fn topic(brokers: &str) -> String {
        topic_with(brokers, 1).await
    }

    async fn topic_with(brokers: &str, partitions: i32) -> String {
        let topic = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("broker.address.family", "v4")
            .create()
            .unwrap();
        let created = admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        created.into_iter().for_each(|r| {
            r.unwrap();
        });
        topic
    }

    async fn produce(brokers: &str, topic: &str, body: &str) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("broker.address.family", "v4")
            .create()
            .unwrap();
        producer
            .send(
                FutureRecord::<str, str>::to(topic).payload(body),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    /// Waits until `n` clients were created and the last one has its
    /// partition, then returns it (weakly: the session must drop the last
    /// reference, since dropping a client blocks while it closes).
    async fn assigned_client(n: usize) -> Weak<StreamConsumer<Context>> {
        for _ in 0..400 {
            let last = {
                let created = CREATED.lock().unwrap();
                (created.len() == n)
                    .then(|| created.last().cloned())
                    .flatten()
            };
            if let Some(weak) = last
                && let Some(c) = weak.upgrade()
            {
                let assigned = c.assignment().map(|a| a.count() > 0).unwrap_or(false);
                drop(c);
                if assigned {
                    return weak;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("client {n} was not created or got no partition within 40 s");
    }

    /// Injects a fatal error; the reference taken for it is released on a
    /// thread of its own, in case it is the last one.
    fn inject_fatal(consumer: &Weak<StreamConsumer<Context>>) {
        let consumer = consumer.upgrade().expect("the client is alive");
        raise_fatal(&consumer);
        std::thread::spawn(move || drop(consumer));
    }

    fn raise_fatal(consumer: &StreamConsumer<Context>) {
        let reason = c"injected by a patron test";
        // SAFETY: the client pointer is valid while `consumer` lives and the
        // reason is a NUL-terminated string librdkafka copies.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                consumer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED,
                reason.as_ptr(),
            );
        }
    }

    fn service(consumer: KafkaConsumer) -> Service {
        let consumer = consumer
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000");
        let mut service = Service::new("kafka-unit").with_component(consumer);
        service.config_mut().shutdown_timeout = Duration::from_secs(10);
        service
    }

    /// Produces `n` keyed records (`r0`, `r1`, …, spread over the topic's
    /// partitions by key), each with header `h: v<i>`.
    async fn produce_with_headers(brokers: &str, topic: &str, n: usize) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("broker.address.family", "v4")
            .create()
            .unwrap();
        for i in 0..n {
            let (key, body, value) = (format!("k{i}"), format!("r{i}"), format!("v{i}"));
            let headers = OwnedHeaders::new().insert(Header {
                key: "h",
                value: Some(value.as_str()),
            });
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(&key)
                        .payload(&body)
                        .headers(headers),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }

    /// Consumes 20 records from a 3-partition topic and returns what the
    /// handler saw (`body=header`, sorted) and how many records came
    /// through the consumer's own queue.
    async fn consume_twenty(record_queue: bool) -> Option<(Vec<String>, usize)> {
        let brokers = brokers()?;
        let topic = topic_with(&brokers, 3).await;
        let group = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = Arc::clone(&seen);
        let handler = handler_fn(move |msg: Message<String>| {
            let header = msg.headers().get("h").unwrap_or("none").to_string();
            s.lock()
                .unwrap()
                .push(format!("{}={header}", msg.payload()));
            async {}
        });
        let mut consumer = KafkaConsumer::new([topic.as_str()], group, handler).brokers(&brokers);
        consumer.record_queue = record_queue;
        let server = TestServer::start(service(consumer)).await.unwrap();
        let client = assigned_client(1).await;
        produce_with_headers(&brokers, &topic, 20).await;
        until_seen(&seen, 20).await;
        let copied = client
            .upgrade()
            .map(|c| c.context().copied.load(Ordering::Relaxed))
            .unwrap_or_default();
        server.shutdown().await.expect("clean shutdown");
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        Some((seen, copied))
    }

    fn twenty() -> Vec<String> {
        let mut all: Vec<String> = (0..20).map(|i| format!("r{i}=v{i}")).collect();
        all.sort();
        all
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn records_come_through_the_record_queue() {
        let Some((seen, copied)) = consume_twenty(true).await else {
            return;
        };
        assert_eq!(seen, twenty(), "each record once, with its header");
        assert_eq!(copied, 0, "no record came one at a time");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_a_record_queue_records_come_through_the_consumer_queue() {
        let Some((seen, copied)) = consume_twenty(false).await else {
            return;
        };
        assert_eq!(seen, twenty(), "each record once, with its header");
        assert_eq!(copied, 20, "every record came one at a time");
    }

    fn recorder(seen: Arc<Mutex<Vec<String>>>) -> impl MessageHandler {
        handler_fn(move |msg: Message<String>| {
            let seen = Arc::clone(&seen);
            async move { seen.lock().unwrap().push(msg.into_payload()) }
        })
    }

    /// What a test's handler saw, in order.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// A service consuming a new topic with [`recorder`] as a static group
    /// member (`group.instance.id`), the kind of consumer that can have a
    /// fatal error (e.g. when another member fences its instance id).
    async fn static_member(brokers: &str, on_failure: OnFailure) -> (String, Seen, TestServer) {
        let topic = topic(brokers).await;
        let group = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
        let instance = format!("patron-unit-{}", uuid::Uuid::new_v4().simple());
        let seen: Seen = Arc::default();
        let consumer = KafkaConsumer::new([topic.as_str()], group, recorder(Arc::clone(&seen)))
            .brokers(brokers)
            .on_failure(on_failure)
            .set("group.instance.id", instance);
        let server = TestServer::start(service(consumer)).await.unwrap();
        (topic, seen, server)
    }

    /// Waits (up to 30 s) until the handler saw `n` records.
    async fn until_seen(seen: &Seen, n: usize) {
        for _ in 0..300 {
            if seen.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_static_group_member_shuts_down_cleanly() {
        let Some(brokers) = brokers() else { return };
        let (topic, seen, server) = static_member(&brokers, OnFailure::Exit).await;
        assigned_client(1).await;
        produce(&brokers, &topic, "one").await;
        until_seen(&seen, 1).await;
        // The group of a static member terminates as soon as the client
        // unassigns its partitions at close; nothing may wait on it then.
        let stopped = tokio::time::timeout(Duration::from_secs(30), server.shutdown())
            .await
            .expect("the service stops within 30 s");
        stopped.expect("clean shutdown");
        assert_eq!(*seen.lock().unwrap(), ["one"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_fatal_client_error_stops_the_service_under_exit() {
        let Some(brokers) = brokers() else { return };
        let (_, _, server) = static_member(&brokers, OnFailure::Exit).await;
        inject_fatal(&assigned_client(1).await);
        let ended = tokio::time::timeout(Duration::from_secs(30), server.join())
            .await
            .expect("the service stops");
        let err = ended.expect_err("a service error").to_string();
        assert!(err.contains("fatal client error"), "{err}");
        assert!(err.contains("injected by a patron test"), "{err}");
        assert_eq!(CREATED.lock().unwrap().len(), 1, "no client recreated");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_fatal_client_error_recreates_the_client_under_skip() {
        let Some(brokers) = brokers() else { return };
        let (topic, seen, server) = static_member(&brokers, OnFailure::Drop).await;
        produce(&brokers, &topic, "before").await;
        let first = assigned_client(1).await;
        until_seen(&seen, 1).await;
        // Let the periodic commit record "before".
        tokio::time::sleep(COMMIT_INTERVAL * 2).await;
        inject_fatal(&first);
        // A second client joins the group and continues after "before".
        assigned_client(2).await;
        produce(&brokers, &topic, "after").await;
        until_seen(&seen, 2).await;
        server.shutdown().await.expect("clean shutdown");
        assert_eq!(*seen.lock().unwrap(), ["before", "after"]);
    }
}
