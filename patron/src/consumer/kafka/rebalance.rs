//! The rdkafka client context of a consumer: rebalance callbacks that commit
//! what revoked partitions finished and forward new partitions to the record
//! queue, client errors and readiness.

#[allow(unused_imports)]
use super::*;

/// Commits on revocation, stops revoked partitions' workers and tracks
/// readiness.
pub(super) struct Context {
    pub(super) partitions: Partitions,
    pub(super) readiness: Readiness,
    pub(super) name: String,
    /// `kafka_consumer_assigned_partitions{consumer}`.
    pub(super) assigned: IntGauge,
    /// Notified on each client error.
    pub(super) errors: Arc<Notify>,
    /// librdkafka said all brokers are down; cleared by a metadata probe.
    pub(super) brokers_down: Arc<AtomicBool>,
    /// How many partitions the client owns, as the rebalances said.
    pub(super) owned: AtomicUsize,
    /// The session's record queue, which assigned partitions are forwarded
    /// to (weak: the session drops it before the client).
    pub(super) records: OnceLock<Weak<RecordQueue>>,
    /// Records that came through the consumer's own queue (copied one at
    /// a time: a partition the record queue could not take).
    pub(super) copied: AtomicUsize,
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
    pub(super) fn forward(&self, assigned: &TopicPartitionList) {
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
    pub(super) fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
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
pub(super) fn close_fatal(consumer: Arc<StreamConsumer<Context>>, name: &str) {
    let spawned = std::thread::Builder::new()
        .name("patron-kafka-close".into())
        .spawn(move || drop(consumer));
    if let Err(e) = spawned {
        tracing::warn!(consumer = %name, error = %e, "cannot start a thread to close the failed Kafka client; leaking it");
    }
}
