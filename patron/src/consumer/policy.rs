//! The outcome model every broker shares: how many times a failing message
//! is retried in-process, how long to wait between tries, and what happens
//! to it afterwards ([`OnFailure`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What happens to a message whose handler still fails after `retries`
/// in-process retries, or whose payload does not decode.
///
/// | `on_failure` | handler error, after retries | payload that does not decode |
/// |---|---|---|
/// | `dlq` | published to the DLQ with error headers, then acked | same, with no retries |
/// | `requeue` | given back to the broker for redelivery, counted | to the DLQ if one is named, else dropped |
/// | `drop` | acked and logged at ERROR | same, with no retries |
/// | `exit` | given back (Kafka: delivered again in-process); the service stops with an error | same, with no retries |
///
/// A give-back (`requeue`, `exit`) on the message's last allowed delivery
/// ([`Policy::max_deliveries`]), or a message arriving past it, goes to the
/// DLQ when one is named and is dropped with an ERROR line otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Publish to the dead-letter destination, then acknowledge.
    Dlq,
    /// Return the message to the broker for redelivery.
    Requeue,
    /// Acknowledge and log at ERROR level: the message is lost on purpose.
    Drop,
    /// Leave the message unacknowledged and stop the service with an error.
    Exit,
}

impl OnFailure {
    /// The spelling used in `on_failure = "…"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Dlq => "dlq",
            OnFailure::Requeue => "requeue",
            OnFailure::Drop => "drop",
            OnFailure::Exit => "exit",
        }
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OnFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "dlq" => Ok(OnFailure::Dlq),
            "requeue" => Ok(OnFailure::Requeue),
            "drop" => Ok(OnFailure::Drop),
            "exit" => Ok(OnFailure::Exit),
            other => Err(format!(
                "unknown failure strategy `{other}`; expected dlq, requeue, drop or exit"
            )),
        }
    }
}

/// Retries and failure strategy of one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// In-process retries after the first failed call (3).
    pub retries: u32,
    /// How many times one message may be delivered, counted across
    /// redeliveries (10; 0 for no limit): see [`Policy::give_back`].
    pub max_deliveries: u32,
    /// The first retry's base delay; it doubles each retry, with jitter,
    /// up to 30 s (100ms).
    pub backoff: Duration,
    /// What happens after the last retry (`dlq` when a DLQ is named, else
    /// `requeue`).
    pub on_failure: OnFailure,
    /// The dead-letter destination: for AMQP a queue name, published to
    /// through the default exchange (`<queue>.dlq` when `on_failure = dlq`
    /// names none).
    pub dlq: Option<String>,
}

/// The longest wait between two in-process retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retries: 3,
            max_deliveries: 10,
            backoff: Duration::from_millis(100),
            on_failure: OnFailure::Requeue,
            dlq: None,
        }
    }
}

impl Policy {
    /// The wait before retry number `retry` (1-based): `backoff × 2^(retry-1)`
    /// capped at [`MAX_BACKOFF`], of which a random half is jitter, so that
    /// consumers failing together do not retry together.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let full = self.backoff.saturating_mul(factor).min(MAX_BACKOFF);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Whether delivery number `deliveries` (1-based) is past the limit:
    /// such a message is not handled at all ([`Policy::past_limit`]).
    pub fn over_limit(&self, deliveries: u32) -> bool {
        self.max_deliveries > 0 && deliveries > self.max_deliveries
    }

    /// What becomes of a message past its delivery limit: the DLQ when
    /// one is named, else it is dropped.
    pub fn past_limit(&self) -> OnFailure {
        if self.dlq.is_some() {
            OnFailure::Dlq
        } else {
            OnFailure::Drop
        }
    }

    /// The strategy for a message that failed on delivery number
    /// `deliveries`: `strategy`, unless it gives the message back
    /// (`requeue`, `exit`) on its last allowed delivery — then
    /// [`Policy::past_limit`].
    pub fn give_back(&self, strategy: OnFailure, deliveries: u32) -> OnFailure {
        let gives_back = matches!(strategy, OnFailure::Requeue | OnFailure::Exit);
        if gives_back && self.max_deliveries > 0 && deliveries >= self.max_deliveries {
            self.past_limit()
        } else {
            strategy
        }
    }

    /// What happens to a poison message (payload that does not decode):
    /// `requeue` would redeliver it forever, so it becomes `dlq` when a DLQ
    /// is named and `drop` otherwise.
    pub fn on_poison(&self) -> OnFailure {
        match self.on_failure {
            OnFailure::Requeue if self.dlq.is_some() => OnFailure::Dlq,
            OnFailure::Requeue => OnFailure::Drop,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_a_cap() {
        let p = Policy {
            backoff: Duration::from_millis(100),
            ..Policy::default()
        };
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(p.delay(40) <= MAX_BACKOFF);
        }
    }

    #[test]
    fn the_last_allowed_delivery_gives_nothing_back() {
        let mut p = Policy::default();
        assert_eq!(p.max_deliveries, 10);
        assert_eq!(p.give_back(OnFailure::Requeue, 9), OnFailure::Requeue);
        assert_eq!(p.give_back(OnFailure::Requeue, 10), OnFailure::Drop);
        assert_eq!(p.give_back(OnFailure::Exit, 10), OnFailure::Drop);
        assert_eq!(p.give_back(OnFailure::Dlq, 10), OnFailure::Dlq);
        assert!(!p.over_limit(10) && p.over_limit(11));
        p.dlq = Some("d".into());
        assert_eq!(p.give_back(OnFailure::Exit, 12), OnFailure::Dlq);
        p.max_deliveries = 0;
        assert_eq!(p.give_back(OnFailure::Exit, 1_000), OnFailure::Exit);
        assert!(!p.over_limit(1_000));
    }

    #[test]
    fn poison_never_requeues() {
        let mut p = Policy::default();
        assert_eq!(p.on_poison(), OnFailure::Drop);
        p.dlq = Some("x.dlq".into());
        assert_eq!(p.on_poison(), OnFailure::Dlq);
        p.on_failure = OnFailure::Exit;
        assert_eq!(p.on_poison(), OnFailure::Exit);
        assert!(
            "nope"
                .parse::<OnFailure>()
                .unwrap_err()
                .contains("dlq, requeue, drop or exit")
        );
    }
}
