//! Consumer metrics, shared by every broker: processing duration, messages
//! by outcome and messages in flight, labelled by consumer, broker and
//! destination. Handles are resolved once when a consumer starts, so a
//! message does no label lookup.

use prometheus::local::{LocalHistogram, LocalIntCounter};
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

/// A worker's own count of acknowledged messages and their durations,
/// for a worker that handles runs of messages one after the other. The
/// count is added to the shared metrics in one go ([`Tally::flush`])
/// instead of with several atomic operations per message, and the run, not
/// each message, moves the in-flight gauge (one message of a run is in
/// its handler at any time). Dropping it flushes what is left.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) struct Tally {
    duration: LocalHistogram,
    ack: LocalIntCounter,
    in_flight: IntGauge,
    running: bool,
}

#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
impl Tally {
    /// An empty tally over `metrics`.
    pub(crate) fn new(metrics: &ConsumerMetrics) -> Tally {
        Tally {
            duration: metrics.duration.local(),
            ack: metrics.ack.local(),
            in_flight: metrics.in_flight.clone(),
            running: false,
        }
    }

    /// A run begins: one message is in flight until [`Tally::end_run`].
    pub(crate) fn begin_run(&mut self) {
        if !self.running {
            self.running = true;
            self.in_flight.inc();
        }
    }

    /// The run ended: nothing in flight, everything counted flushed.
    pub(crate) fn end_run(&mut self) {
        if self.running {
            self.running = false;
            self.in_flight.dec();
        }
        self.flush();
    }

    /// One acknowledged message that took `seconds`.
    pub(crate) fn ack(&mut self, seconds: f64) {
        self.duration.observe(seconds);
        self.ack.inc();
    }

    /// Adds everything counted so far to the shared metrics.
    pub(crate) fn flush(&mut self) {
        self.duration.flush();
        self.ack.flush();
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.end_run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> ConsumerMetrics {
        ConsumerMetrics::new(&Metrics::new(), "orders", "kafka", "orders").expect("metrics")
    }

    #[test]
    fn a_tally_reaches_the_shared_metrics_when_its_run_ends() {
        let shared = shared();
        let mut tally = Tally::new(&shared);
        tally.begin_run();
        tally.begin_run();
        assert_eq!(shared.in_flight.get(), 1, "one run, one message in flight");
        tally.ack(0.002);
        tally.ack(0.004);
        assert_eq!(shared.ack.get(), 0);
        assert_eq!(shared.duration.get_sample_count(), 0);
        tally.end_run();
        assert_eq!(shared.in_flight.get(), 0);
        assert_eq!(shared.ack.get(), 2);
        assert_eq!(shared.duration.get_sample_count(), 2);
        assert!((shared.duration.get_sample_sum() - 0.006).abs() < 1e-9);
        tally.end_run();
        assert_eq!(shared.in_flight.get(), 0, "a second end changes nothing");
        assert_eq!(shared.ack.get(), 2);
    }

    #[test]
    fn a_dropped_tally_flushes_and_leaves_nothing_in_flight() {
        let shared = shared();
        let mut tally = Tally::new(&shared);
        tally.begin_run();
        tally.ack(0.001);
        drop(tally);
        assert_eq!(shared.in_flight.get(), 0);
        assert_eq!(shared.ack.get(), 1);
        assert_eq!(shared.duration.get_sample_count(), 1);
    }
}
