//! The Kafka consumer (feature `kafka`, built on `rdkafka` with its bundled
//! librdkafka): a [`KafkaConsumer`] component for one consumer group.
//!
//! - Offsets are committed only for messages whose handler returned `Ok`
//!   (or that were skipped or dead-lettered), in order per partition: each
//!   assigned partition has one worker that handles its messages one after
//!   the other, so offset N+1 is never committed while N is unfinished.
//! - `concurrency` bounds how many partitions are processed at once.
//! - Commits are asynchronous every second, synchronous when partitions are
//!   revoked and at shutdown.
//! - `kafka_consumer_lag{consumer, topic, partition}`: high watermark minus
//!   the next offset to commit, for the partitions this instance processed,
//!   refreshed every 5 s.
//! - Failure strategies: `dlq` (produce to the DLQ topic with `x-patron-*`
//!   headers, then commit), `drop` — Kafka's "skip" — (commit and go on),
//!   `exit` (leave it uncommitted and stop the service). `requeue` does not
//!   exist for Kafka and is refused at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntGaugeVec, Opts};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use super::common::{Common, common_builders};
use super::dlq_headers;
use super::handler::MessageHandler;
use super::message::{Delivery, Headers, KafkaMetadata, Metadata};
use super::metrics::ConsumerMetrics;
use super::policy::{OnFailure, Policy};
use super::process::{Pipeline, Stopper, Verdict, drain, now_millis, truncate_reason};
use crate::component::{Component, ComponentContext, ComponentInfo, Readiness};
use crate::error::Error;

const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Next offset to commit, by (topic, partition).
type Progress = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// A Kafka consumer-group component.
pub struct KafkaConsumer {
    common: Common,
    topics: Vec<String>,
    group: String,
    brokers: Option<String>,
    settings: Vec<(String, String)>,
    handler: Arc<dyn MessageHandler>,
}

impl KafkaConsumer {
    /// A consumer of `topics` in consumer group `group`.
    pub fn new<T: Into<String>>(
        topics: impl IntoIterator<Item = T>,
        group: impl Into<String>,
        handler: impl MessageHandler,
    ) -> Self {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        KafkaConsumer {
            common: Common::new(topics.join(",")),
            topics,
            group: group.into(),
            brokers: None,
            settings: Vec::new(),
            handler: Arc::new(handler),
        }
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
        Ok(policy)
    }
}

/// Commits on revocation and tracks readiness.
struct Context {
    progress: Progress,
    readiness: Readiness,
    name: String,
}

impl ClientContext for Context {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(consumer = %self.name, error = %error, reason, "Kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.readiness.not_ready(format!(
                "Kafka consumer {}: all brokers are down",
                self.name
            ));
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let list = offsets(&self.progress, Some(revoked));
            if list.count() > 0
                && let Err(e) = consumer.commit(&list, CommitMode::Sync)
            {
                tracing::warn!(consumer = %self.name, error = %e, "committing before a rebalance failed; those messages will be redelivered");
            }
            // The partitions' next owner commits them from now on.
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            progress.retain(|(topic, partition), _| {
                revoked.find_partition(topic, *partition).is_none()
            });
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            tracing::info!(consumer = %self.name, partitions = assigned.count(), "partitions assigned");
            self.readiness.ready();
        }
    }
}

/// The offsets to commit, optionally only for `within`'s partitions.
fn offsets(progress: &Progress, within: Option<&TopicPartitionList>) -> TopicPartitionList {
    let progress = progress.lock().unwrap_or_else(|p| p.into_inner());
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in progress.iter() {
        let wanted = within.is_none_or(|w| w.find_partition(topic, *partition).is_some());
        if wanted {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
    }
    list
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
        let brokers = self
            .brokers
            .clone()
            .or_else(|| ctx.config().kafka_brokers.clone())
            .unwrap_or_else(|| "127.0.0.1:9092".to_string());
        let progress: Progress = Arc::default();
        let readiness = ctx.readiness().clone();
        readiness.not_ready(format!(
            "Kafka consumer {}: joining group {}",
            self.common.name, self.group
        ));
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &brokers)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("broker.address.family", "v4");
        for (k, v) in &self.settings {
            config.set(k, v);
        }
        let consumer = config
            .create_with_context::<Context, StreamConsumer<Context>>(Context {
                progress: Arc::clone(&progress),
                readiness: readiness.clone(),
                name: self.common.name.clone(),
            })
            .map_err(|e| {
                Error::msg(format!(
                    "Kafka consumer {}: cannot create the client: {e}",
                    self.common.name
                ))
            })?;
        let consumer = Arc::new(consumer);
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            Error::msg(format!(
                "Kafka consumer {}: cannot subscribe to {topics:?}: {e}",
                self.common.name
            ))
        })?;
        let producer: Option<FutureProducer> = match &policy.dlq {
            Some(_) => Some(
                ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("broker.address.family", "v4")
                    .create()
                    .map_err(|e| {
                        Error::msg(format!(
                            "Kafka consumer {}: cannot create the DLQ producer: {e}",
                            self.common.name
                        ))
                    })?,
            ),
            None => None,
        };
        let destination = self.topics.join(",");
        let metrics =
            ConsumerMetrics::new(ctx.metrics(), &self.common.name, "kafka", &destination)?;
        let stop = ctx.shutdown().child_token();
        let shared = Arc::new(Shared {
            pipeline: Pipeline {
                consumer: self.common.name.as_str().into(),
                system: "kafka",
                destination: destination.as_str().into(),
                span_name: format!("{destination} process").into(),
                policy: policy.clone(),
                metrics,
                deps: Arc::clone(ctx.deps()),
            },
            handler: Arc::clone(&self.handler),
            progress: Arc::clone(&progress),
            producer,
            dlq: policy.dlq.clone(),
            stop: Stopper::new(stop.clone()),
            permits: Arc::new(Semaphore::new(self.common.concurrency)),
        });
        let tracker = TaskTracker::new();
        let mut workers: HashMap<(String, i32), mpsc::Sender<OwnedMessage>> = HashMap::new();
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        let lag = lag_gauges(ctx.metrics())?;
        let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
        tracing::info!(consumer = %self.common.name, topics = ?self.topics, group = %self.group, "consuming");
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = commit_tick.tick() => {
                    let list = offsets(&progress, None);
                    if list.count() > 0 && let Err(e) = consumer.commit(&list, CommitMode::Async) {
                        tracing::warn!(consumer = %self.common.name, error = %e, "committing offsets failed; retrying at the next interval");
                    }
                }
                _ = lag_tick.tick() => {
                    let (consumer, progress, lag, name) =
                        (Arc::clone(&consumer), Arc::clone(&progress), lag.clone(), self.common.name.clone());
                    // fetch_watermarks blocks on the network.
                    tokio::task::spawn_blocking(move || record_lag(&consumer, &progress, &lag, &name));
                }
                received = consumer.recv() => match received {
                    Ok(message) => {
                        let message = message.detach();
                        let key = (message.topic().to_string(), message.partition());
                        let worker = workers.entry(key).or_insert_with(|| {
                            let (tx, rx) = mpsc::channel(256);
                            tracker.spawn(partition_worker(Arc::clone(&shared), rx));
                            tx
                        });
                        let sent = tokio::select! {
                            _ = stop.cancelled() => break,
                            sent = worker.send(message) => sent,
                        };
                        if sent.is_err() {
                            tracing::warn!(consumer = %self.common.name, "a partition worker stopped; its messages will be redelivered");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %self.common.name, error = %e, "Kafka receive error");
                    }
                }
            }
        }
        // Stop feeding the workers, let in-flight messages finish, commit.
        drop(workers);
        drain(&tracker, ctx.config().shutdown_timeout, &self.common.name).await;
        let list = offsets(&progress, None);
        if list.count() > 0
            && let Err(e) = consumer.commit(&list, CommitMode::Sync)
        {
            tracing::warn!(consumer = %self.common.name, error = %e, "the final commit failed; the last messages will be redelivered");
        }
        consumer.unsubscribe();
        tracing::info!(consumer = %self.common.name, "Kafka consumer stopped");
        shared.stop.result(&self.common.name)
    }
}

struct Shared {
    pipeline: Pipeline,
    handler: Arc<dyn MessageHandler>,
    progress: Progress,
    producer: Option<FutureProducer>,
    dlq: Option<String>,
    stop: Stopper,
    permits: Arc<Semaphore>,
}

/// Handles one partition's messages in order; after a failure that stops
/// the service, it processes nothing more.
async fn partition_worker(shared: Arc<Shared>, mut rx: mpsc::Receiver<OwnedMessage>) {
    while let Some(message) = rx.recv().await {
        if shared.stop.is_cancelled() {
            // Not started: left uncommitted, redelivered to the next owner.
            break;
        }
        let Ok(_permit) = Arc::clone(&shared.permits).acquire_owned().await else {
            break;
        };
        let delivery = convert(&message);
        let verdict = shared
            .pipeline
            .process(&*shared.handler, &delivery, &shared.stop)
            .await;
        let done = match verdict {
            Verdict::Ack | Verdict::Drop => true,
            Verdict::DeadLetter { reason, attempts } => {
                match dead_letter(&shared, &message, &reason, attempts).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(consumer = %shared.pipeline.consumer, error = %e, "cannot dead-letter the message; stopping so that it is not skipped");
                        shared.stop.exit(e);
                        false
                    }
                }
            }
            Verdict::Exit(reason) => {
                shared.stop.exit(reason);
                false
            }
            // Shutdown during a retry wait (Kafka has no requeue): leave it
            // uncommitted.
            Verdict::Requeue | Verdict::Release => false,
        };
        if !done {
            break;
        }
        let mut progress = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.insert(
            (message.topic().to_string(), message.partition()),
            message.offset() + 1,
        );
    }
}

async fn dead_letter(
    shared: &Shared,
    m: &OwnedMessage,
    reason: &str,
    attempts: u32,
) -> Result<(), String> {
    let (Some(producer), Some(topic)) = (&shared.producer, &shared.dlq) else {
        return Err("no DLQ topic is configured".into());
    };
    let mut headers = OwnedHeaders::new();
    if let Some(original) = m.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let reason = truncate_reason(reason);
    let attempts = attempts.to_string();
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let failed_at = now_millis().to_string();
    for (key, value) in [
        (dlq_headers::ERROR, reason.as_str()),
        (dlq_headers::ATTEMPTS, attempts.as_str()),
        ("x-patron-original-topic", m.topic()),
        ("x-patron-original-partition", partition.as_str()),
        ("x-patron-original-offset", offset.as_str()),
        (dlq_headers::CONSUMER, &shared.pipeline.consumer),
        (dlq_headers::FAILED_AT, failed_at.as_str()),
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
fn convert(m: &OwnedMessage) -> Delivery {
    let mut headers = Headers::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            if let Some(v) = h.value {
                headers.insert(h.key, v.to_vec());
            }
        }
    }
    let metadata = KafkaMetadata {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        timestamp: m.timestamp().to_millis(),
    };
    let content_type = headers.get("content-type").map(str::to_string);
    Delivery::new(
        m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        content_type.as_deref(),
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

fn record_lag(
    consumer: &StreamConsumer<Context>,
    progress: &Progress,
    lag: &IntGaugeVec,
    name: &str,
) {
    let positions: Vec<((String, i32), i64)> = progress
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), *v))
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
