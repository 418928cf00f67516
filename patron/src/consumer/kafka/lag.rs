//! Consumer lag and assignment: the `kafka_consumer_lag` gauge (high
//! watermark minus the next offset to commit, refreshed off the runtime)
//! and `kafka_consumer_assigned_partitions`.

#[allow(unused_imports)]
use super::*;

/// The lag gauge family, shared by the service's Kafka consumers.
pub(super) fn lag_gauges(metrics: &crate::observe::metrics::Metrics) -> Result<IntGaugeVec, Error> {
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
pub(super) fn assigned_gauge(
    metrics: &crate::observe::metrics::Metrics,
) -> Result<IntGaugeVec, Error> {
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

/// Sets each partition's lag from its high watermark (blocks on the
/// network: called off the runtime).
pub(super) fn record_lag(
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

impl Session<'_> {
    /// Refreshes `kafka_consumer_lag` off the runtime: fetching the
    /// watermarks blocks on the network.
    pub(super) fn refresh_lag(&self, consumer: &Arc<StreamConsumer<Context>>) {
        let (consumer, partitions, lag, name) = (
            Arc::clone(consumer),
            Arc::clone(&self.partitions),
            self.lag.clone(),
            self.consumer.common.name.clone(),
        );
        tokio::task::spawn_blocking(move || record_lag(&consumer, &partitions, &lag, &name));
    }
}
