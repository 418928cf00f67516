//! Waiting out a broker that cannot be reached, the same way for every
//! consumer: `/ready` answers 503 with the reason, one log line says what
//! failed and when the next try is, and the wait — cut short by shutdown —
//! grows by [`Backoff`] until the broker answers again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::component::Readiness;

/// How loud a failed try is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// Expected now and then (a broker restart): WARN.
    Transient,
    /// Something broke that patron works around (a fatal client error): ERROR.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Fatal,
}

/// One consumer's tries to reach its broker.
#[derive(Debug)]
pub(crate) struct Reconnect {
    consumer: String,
    readiness: Readiness,
    stop: CancellationToken,
    backoff: Backoff,
}

impl Reconnect {
    /// Waits from `min`, doubling, to `max` (see [`Backoff`]) for
    /// `consumer`, reporting on `readiness` and ending at `stop`.
    pub(crate) fn new(
        consumer: &str,
        readiness: Readiness,
        stop: CancellationToken,
        min: Duration,
        max: Duration,
    ) -> Self {
        Reconnect {
            consumer: consumer.to_string(),
            readiness,
            stop,
            backoff: Backoff::new(min, max),
        }
    }

    /// The broker answered: the next wait starts again from the minimum.
    pub(crate) fn up(&mut self) {
        self.backoff.up();
    }

    /// A try failed for `reason`: `/ready` names it, a log line says `what`
    /// happens next, then the wait. `false` when shutdown came first (the
    /// caller stops trying).
    pub(crate) async fn failed(&mut self, severity: Severity, reason: String, what: &str) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        let delay = self.backoff.next();
        let retry_in_ms = delay.as_millis() as u64;
        match severity {
            Severity::Transient => {
                tracing::warn!(consumer = %self.consumer, error = %reason, retry_in_ms, "{what}")
            }
            Severity::Fatal => {
                tracing::error!(consumer = %self.consumer, error = %reason, retry_in_ms, "{what}")
            }
        }
        self.readiness.not_ready(reason);
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnect(stop: &CancellationToken) -> (Reconnect, Readiness) {
        let readiness = Readiness::new("consumer");
        let r = Reconnect::new(
            "c",
            readiness.clone(),
            stop.clone(),
            Duration::from_millis(10),
            Duration::from_millis(40),
        );
        (r, readiness)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_try_reports_the_reason_and_waits_longer_each_time() {
        let stop = CancellationToken::new();
        let (mut r, readiness) = reconnect(&stop);
        let started = tokio::time::Instant::now();
        assert!(
            r.failed(Severity::Transient, "broker away".into(), "retrying")
                .await
        );
        assert!(
            r.failed(Severity::Transient, "broker away".into(), "retrying")
                .await
        );
        assert!(
            r.failed(Severity::Fatal, "broker away".into(), "retrying")
                .await
        );
        assert_eq!(started.elapsed(), Duration::from_millis(10 + 20 + 40));
        assert_eq!(readiness.problem().as_deref(), Some("broker away"));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let stop = CancellationToken::new();
        let (mut r, _) = reconnect(&stop);
        stop.cancel();
        assert!(
            !r.failed(Severity::Transient, "broker away".into(), "retrying")
                .await
        );
    }
}
