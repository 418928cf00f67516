//! Consumer metrics, shared by every broker: processing duration, messages
//! by outcome and messages in flight, labelled by consumer, broker and
//! destination. Handles are resolved once when a consumer starts, so a
//! message does no label lookup.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::error::Error;
use crate::observe::metrics::{DURATION_BUCKETS, Metrics};

const LABELS: &[&str] = &["consumer", "messaging_system", "messaging_destination_name"];

/// The metric families every consumer shares.
struct Families {
    duration: HistogramVec,
    messages: IntCounterVec,
    in_flight: IntGaugeVec,
}

fn err(what: &str, e: prometheus::Error) -> Error {
    Error::msg(format!("cannot create the consumer {what} metric: {e}"))
}

/// One consumer's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerMetrics {
    pub duration: Histogram,
    pub ack: IntCounter,
    pub retry: IntCounter,
    pub dlq: IntCounter,
    pub requeue: IntCounter,
    pub drop: IntCounter,
    pub exit: IntCounter,
    /// Kafka batches deduplicated by key: records replaced by a later
    /// record with the same key in the same batch.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub superseded: IntCounter,
    pub in_flight: IntGauge,
}

impl ConsumerMetrics {
    /// The handles for one consumer, registering the families on first use.
    pub(crate) fn new(
        metrics: &Metrics,
        consumer: &str,
        system: &str,
        destination: &str,
    ) -> Result<Self, Error> {
        let families = Families {
            duration: metrics.shared("consumer_message_duration_seconds", || {
                HistogramVec::new(
                    HistogramOpts::new(
                        "consumer_message_duration_seconds",
                        "Time from receiving a message to its outcome, retries included.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    LABELS,
                )
                .map_err(|e| err("duration", e))
            })?,
            messages: metrics.shared("consumer_messages_total", || {
                let mut labels = LABELS.to_vec();
                labels.push("outcome");
                IntCounterVec::new(
                    Opts::new(
                        "consumer_messages_total",
                        "Messages by outcome: ack, retry (one per in-process retry), dlq, requeue, drop, exit, superseded (left out of a batch deduplicated by key).",
                    ),
                    &labels,
                )
                .map_err(|e| err("outcome", e))
            })?,
            in_flight: metrics.shared("consumer_messages_in_flight", || {
                IntGaugeVec::new(
                    Opts::new("consumer_messages_in_flight", "Messages being processed."),
                    LABELS,
                )
                .map_err(|e| err("in-flight", e))
            })?,
        };
        let labels = [consumer, system, destination];
        let outcome = |o: &str| {
            families
                .messages
                .with_label_values(&[consumer, system, destination, o])
        };
        Ok(ConsumerMetrics {
            duration: families.duration.with_label_values(&labels),
            ack: outcome("ack"),
            retry: outcome("retry"),
            dlq: outcome("dlq"),
            requeue: outcome("requeue"),
            drop: outcome("drop"),
            exit: outcome("exit"),
            superseded: outcome("superseded"),
            in_flight: families.in_flight.with_label_values(&labels),
        })
    }
}
