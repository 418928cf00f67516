//! The wait between two tries to reach a broker: doubling from a minimum
//! to a maximum, but capped at [`RECENT_CAP`] while the broker answered
//! within the last [`RECENT`]. A broker that was just up (a restart, a
//! failover) is most likely back within seconds, and a consumer must not
//! sleep through its return: patron promises readiness back within 2 s of
//! the broker's.

use std::time::{Duration, Instant};

/// How long a broker counts as recently up after it last answered.
pub(crate) const RECENT: Duration = Duration::from_secs(300);
/// The longest wait while the broker was recently up.
pub(crate) const RECENT_CAP: Duration = Duration::from_millis(1500);

/// Reconnect or retry waits for one broker connection.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    last_up: Option<Instant>,
}

impl Backoff {
    /// Waits from `min`, doubling, to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
            last_up: None,
        }
    }

    /// The broker answered: the next wait starts again from the minimum.
    pub(crate) fn up(&mut self) {
        self.next = self.min;
        self.last_up = Some(Instant::now());
    }

    /// The wait before the next try, and doubles the one after.
    pub(crate) fn next(&mut self) -> Duration {
        self.next_at(Instant::now())
    }

    fn next_at(&mut self, now: Instant) -> Duration {
        let recently_up = self
            .last_up
            .is_some_and(|up| now.saturating_duration_since(up) < RECENT);
        let cap = if recently_up {
            self.max.min(RECENT_CAP)
        } else {
            self.max
        };
        let wait = self.next.min(cap);
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_maximum_when_never_up() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let waits: Vec<u64> = (0..7).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    }

    #[test]
    fn stays_short_while_the_broker_was_recently_up() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        b.up();
        let now = Instant::now();
        let waits: Vec<u64> = (0..5).map(|_| b.next_at(now).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 1500, 1500, 1500]);
        let later = now + RECENT + Duration::from_secs(1);
        assert_eq!(
            b.next_at(later),
            Duration::from_secs(10),
            "long gone: full backoff"
        );
        b.up();
        assert_eq!(b.next(), Duration::from_millis(500), "reset on success");
    }
}
