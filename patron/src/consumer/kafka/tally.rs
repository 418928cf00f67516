//! A partition worker's own count of its messages ([`Tally`]) and
//! processing counted in it: what lets a Kafka worker handle a run of
//! records with no shared-metric update or clock read per record.

use std::time::{Duration, Instant};

use prometheus::IntGauge;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use tokio_util::sync::CancellationToken;

use crate::consumer::handler::MessageHandler;
use crate::consumer::message::Delivery;
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::process::{Pipeline, Verdict};

/// A worker's own count of acknowledged messages and their durations,
/// for a worker that handles runs of messages one after the other. The
/// count is added to the shared metrics in one go ([`Tally::flush`])
/// instead of with several atomic operations per message, and the run, not
/// each message, moves the in-flight gauge (one message of a run is in
/// its handler at any time). Dropping it flushes what is left.
///
/// Messages whose handler finished at once are timed in groups: the clock
/// is read when a group of up to [`GROUP`] such messages closes, not per
/// message (a clock read costs about as much as a small handler), and each
/// message of the group is observed at the group's average. The sum is
/// exact, and so is every bucket count whenever the group took less than
/// the histogram's first bucket (each message took at most the group's
/// time). A group slower than [`SLOW_GROUP`] switches the rest of the run
/// to one clock read per message, so at most one group of a run can be
/// spread over the wrong buckets. A message whose handler had to wait, or
/// failed, is timed by itself from the moment it did.
pub(crate) struct Tally {
    duration: LocalHistogram,
    ack: LocalIntCounter,
    in_flight: IntGauge,
    running: bool,
    /// When the open group began: the run's start or the previous
    /// group's (or separately timed message's) end.
    since: Option<Instant>,
    /// Messages acknowledged at once since `since`, not yet observed.
    grouped: u32,
    /// Every message is timed by itself for the rest of the run.
    one_by_one: bool,
}

/// The most messages finishing at once that share one clock read.
const GROUP: u32 = 32;

/// A group that took this long makes the rest of the run time each
/// message by itself: its messages average 30 µs or more, so a clock
/// read per message costs under 0.1 %.
const SLOW_GROUP: Duration = Duration::from_millis(1);

impl Tally {
    /// An empty tally over `metrics`.
    pub(crate) fn new(metrics: &ConsumerMetrics) -> Tally {
        Tally {
            duration: metrics.duration.local(),
            ack: metrics.ack.local(),
            in_flight: metrics.in_flight.clone(),
            running: false,
            since: None,
            grouped: 0,
            one_by_one: false,
        }
    }

    /// A run begins: one message is in flight until [`Tally::end_run`],
    /// and the first message's time starts now.
    pub(crate) fn begin_run(&mut self) {
        if !self.running {
            self.running = true;
            self.in_flight.inc();
        }
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// The run ended: its last group observed, nothing in flight,
    /// everything counted flushed.
    pub(crate) fn end_run(&mut self) {
        if self.grouped > 0 {
            self.close_group();
        }
        self.since = None;
        self.one_by_one = false;
        if self.running {
            self.running = false;
            self.in_flight.dec();
        }
        self.flush();
    }

    /// One message acknowledged as soon as its handler was called; its
    /// time is observed when its group closes.
    pub(crate) fn ack_at_once(&mut self) {
        self.grouped += 1;
        if self.grouped >= GROUP || self.one_by_one {
            self.close_group();
        }
    }

    /// The current message's handler has to wait (or failed): everything
    /// counted is flushed before the wait. Returns when the message
    /// started, from which it is timed by itself: the previous message's
    /// end, or, if messages that finished at once are waiting to be
    /// observed, now (their group closes here and holds this message's
    /// first call).
    pub(crate) fn interrupt(&mut self) -> Instant {
        let started = match self.since {
            Some(since) if self.grouped == 0 => since,
            _ => self.close_group(),
        };
        self.flush();
        started
    }

    /// The message timed by itself since [`Tally::interrupt`] ended at
    /// `ended` after `seconds`; acknowledged when `acked` (else its
    /// outcome is counted elsewhere). The next message's time starts there.
    pub(crate) fn timed(&mut self, ended: Instant, seconds: f64, acked: bool) {
        if acked {
            self.duration.observe(seconds);
            self.ack.inc();
        }
        self.since = Some(ended);
    }

    /// Observes the open group at its average and starts the next one
    /// now; returns now.
    fn close_group(&mut self) -> Instant {
        let now = Instant::now();
        let since = self.since.replace(now).unwrap_or(now);
        if self.grouped > 0 {
            let took = now.saturating_duration_since(since);
            let each = took.as_secs_f64() / f64::from(self.grouped);
            for _ in 0..self.grouped {
                self.duration.observe(each);
            }
            self.ack.inc_by(u64::from(self.grouped));
            self.grouped = 0;
            if took >= SLOW_GROUP {
                self.one_by_one = true;
            }
        }
        now
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

impl Pipeline {
    /// [`Pipeline::process`] for a worker handling runs of messages one after
    /// the other (Kafka), counted in `tally`, whose run the caller began
    /// and which moves the in-flight gauge. A message acknowledged as soon
    /// as its handler was called joins the tally's group of such messages
    /// (no clock read of its own); one whose handler has to wait or fails
    /// is timed by itself. The tally is flushed before any wait, so what
    /// it holds is never older than the current burst of messages.
    pub(crate) async fn process_counted(
        &self,
        handler: &dyn MessageHandler,
        delivery: &Delivery,
        stop: &CancellationToken,
        tally: &mut Tally,
    ) -> Verdict {
        let mut waited = None;
        let verdict = self
            .verdict(handler, delivery, stop, || waited = Some(tally.interrupt()))
            .await;
        match waited {
            // Only an acknowledgement comes without a wait (`verdict`).
            None => tally.ack_at_once(),
            Some(started) => {
                let ended = Instant::now();
                let seconds = ended.saturating_duration_since(started).as_secs_f64();
                let acked = verdict == Verdict::Ack;
                tally.timed(ended, seconds, acked);
                if !acked {
                    self.observe(&verdict, seconds);
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;

    fn shared() -> ConsumerMetrics {
        ConsumerMetrics::new(&Metrics::new(), "orders", "kafka", "orders").expect("metrics")
    }

    /// New shared metrics and a tally over them with a run begun.
    fn running() -> (ConsumerMetrics, Tally) {
        let shared = shared();
        let mut tally = Tally::new(&shared);
        tally.begin_run();
        (shared, tally)
    }

    #[test]
    fn a_tally_reaches_the_shared_metrics_when_its_run_ends() {
        let (shared, mut tally) = running();
        tally.begin_run();
        assert_eq!(shared.in_flight.get(), 1, "one run, one message in flight");
        let now = Instant::now();
        tally.timed(now, 0.002, true);
        tally.timed(now, 0.004, true);
        tally.timed(now, 0.5, false);
        assert_eq!(shared.ack.get(), 0);
        assert_eq!(shared.duration.get_sample_count(), 0);
        tally.end_run();
        assert_eq!(shared.in_flight.get(), 0);
        assert_eq!(
            shared.ack.get(),
            2,
            "the unacknowledged one is counted elsewhere"
        );
        assert_eq!(shared.duration.get_sample_count(), 2);
        assert!((shared.duration.get_sample_sum() - 0.006).abs() < 1e-9);
        tally.end_run();
        assert_eq!(shared.in_flight.get(), 0, "a second end changes nothing");
        assert_eq!(shared.ack.get(), 2);
    }

    #[test]
    fn a_dropped_tally_flushes_and_leaves_nothing_in_flight() {
        let (shared, mut tally) = running();
        tally.ack_at_once();
        drop(tally);
        assert_eq!(shared.in_flight.get(), 0);
        assert_eq!(shared.ack.get(), 1);
        assert_eq!(shared.duration.get_sample_count(), 1);
    }

    /// The shared histogram's count in its first bucket.
    fn first_bucket(shared: &ConsumerMetrics) -> u64 {
        use prometheus::core::Collector;
        let families = shared.duration.collect();
        families[0].get_metric()[0].get_histogram().get_bucket()[0].cumulative_count()
    }

    #[test]
    fn messages_done_at_once_share_one_timing_spread_over_the_group() {
        let began = Instant::now();
        let (shared, mut tally) = running();
        for _ in 0..5 {
            tally.ack_at_once();
        }
        tally.end_run();
        let bound = began.elapsed().as_secs_f64();
        assert_eq!(shared.ack.get(), 5);
        assert_eq!(shared.duration.get_sample_count(), 5);
        let sum = shared.duration.get_sample_sum();
        assert!(
            sum > 0.0 && sum <= bound,
            "the group's time, {sum} s, within {bound} s"
        );
        assert_eq!(first_bucket(&shared), 5, "each took less than the group");
    }

    #[test]
    fn a_full_group_is_observed_without_waiting_for_the_run_to_end() {
        let (shared, mut tally) = running();
        for _ in 0..GROUP - 1 {
            tally.ack_at_once();
        }
        tally.flush();
        assert_eq!(shared.ack.get(), 0, "the group is still open");
        tally.ack_at_once();
        tally.flush();
        assert_eq!(shared.ack.get(), u64::from(GROUP));
        assert_eq!(shared.duration.get_sample_count(), u64::from(GROUP));
        assert_eq!(shared.in_flight.get(), 1, "the run goes on");
    }

    #[test]
    fn after_a_slow_group_the_run_times_each_message_by_itself() {
        let (shared, mut tally) = running();
        std::thread::sleep(SLOW_GROUP * 2);
        tally.ack_at_once();
        let interrupted = tally.interrupt();
        assert_eq!(shared.ack.get(), 1, "an interruption flushes the group");
        assert!(shared.duration.get_sample_sum() >= (SLOW_GROUP * 2).as_secs_f64());
        assert!(tally.one_by_one);
        tally.timed(interrupted, 0.001, true);
        tally.ack_at_once();
        tally.flush();
        assert_eq!(shared.ack.get(), 3, "no group is kept open any more");
        tally.end_run();
        tally.begin_run();
        assert!(!tally.one_by_one, "a new run groups again");
        tally.ack_at_once();
        tally.flush();
        assert_eq!(shared.ack.get(), 3);
    }

    #[test]
    fn an_interrupted_message_starts_where_the_previous_one_ended() {
        let (shared, mut tally) = running();
        let ended = Instant::now();
        tally.timed(ended, 0.001, true);
        assert_eq!(tally.interrupt(), ended, "no group open: no clock read");
        tally.ack_at_once();
        let later = tally.interrupt();
        assert!(later >= ended, "a group open: it closes now");
        assert_eq!(tally.grouped, 0);
        assert_eq!(shared.ack.get(), 2, "both flushed before the wait");
    }
}
