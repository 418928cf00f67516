//! [`Retry`]: calls an operation again after a failure, with exponential
//! backoff and full jitter, bounded by attempts and elapsed time, only for
//! errors a predicate calls retryable, and never waiting past cancellation.
//!
//! Full jitter (a delay drawn uniformly from zero to the exponential
//! bound) spreads the retries of many callers that failed together, so
//! they do not hit the recovering dependency at the same instant.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What [`Retry::run_with`] does after an attempt.
pub(crate) enum Next {
    /// The outcome is final.
    Done,
    /// Try again, after this wait or else the backoff delay.
    Retry(Option<Duration>),
}

/// A retry policy; cheap to clone and reusable for any number of calls.
///
/// ```
/// use std::time::Duration;
/// use patron::reliability::Retry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let retry = Retry::new(5)
///     .backoff(Duration::from_millis(1), Duration::from_millis(10))
///     .max_elapsed(Duration::from_secs(2));
/// let mut calls = 0;
/// let result: Result<&str, &str> = retry
///     .run(|attempt| {
///         calls += 1;
///         async move { if attempt < 3 { Err("busy") } else { Ok("done") } }
///     })
///     .await;
/// assert_eq!(result, Ok("done"));
/// assert_eq!(calls, 3);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Retry {
    max_attempts: u32,
    initial: Duration,
    max_delay: Duration,
    max_elapsed: Option<Duration>,
    cancel: Option<CancellationToken>,
}

impl Retry {
    /// At most `max_attempts` calls (the first one included; at least 1),
    /// waiting up to 100 ms before the second, doubling up to 10 s.
    pub fn new(max_attempts: u32) -> Self {
        Retry {
            max_attempts: max_attempts.max(1),
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_elapsed: None,
            cancel: None,
        }
    }

    /// The bound of the first wait and the largest bound; the bound
    /// doubles after each attempt and each wait is drawn from zero to it.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max_delay = max.max(initial);
        self
    }

    /// Gives up when this much time passed since the first call: no wait
    /// extends past it, so the last attempt starts before it.
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// Stops waiting when `token` is cancelled (e.g. the service's
    /// shutdown): the last error is returned at once and no attempt starts
    /// after the cancellation. An attempt already running is not
    /// interrupted.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Runs `op` (given the attempt number, from 1) until it succeeds or
    /// the policy gives up; every error is retryable.
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_if(op, |_| true).await
    }

    /// Like [`run`](Self::run), retrying only errors for which `retryable`
    /// returns true; others are returned at once.
    pub async fn run_if<T, E, F, Fut>(&self, op: F, retryable: impl Fn(&E) -> bool) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(op, |result| match result {
            Err(e) if retryable(e) => Next::Retry(None),
            _ => Next::Done,
        })
        .await
    }

    /// The retry loop every form shares: runs `op` until `next` says the
    /// outcome is final or the policy gives up, waiting the backoff delay —
    /// or the wait `next` asks for (a server's `Retry-After`), giving up
    /// when that wait would end past `max_elapsed`.
    pub(crate) async fn run_with<T, F, Fut>(&self, mut op: F, next: impl Fn(&T) -> Next) -> T
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = T>,
    {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let outcome = op(attempt).await;
            let Next::Retry(asked) = next(&outcome) else {
                return outcome;
            };
            if attempt >= self.max_attempts {
                return outcome;
            }
            let mut wait = asked.unwrap_or_else(|| self.delay(attempt));
            if let Some(limit) = self.max_elapsed {
                let left = limit.saturating_sub(started.elapsed());
                if left.is_zero() || asked.is_some_and(|asked| asked > left) {
                    return outcome;
                }
                wait = wait.min(left);
            }
            tracing::debug!(attempt, wait = ?wait, "retrying after a failure");
            if !self.wait(wait).await {
                return outcome;
            }
            attempt += 1;
        }
    }

    /// Sleeps `wait`; false when cancelled before or during it.
    async fn wait(&self, wait: Duration) -> bool {
        match &self.cancel {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => false,
                _ = tokio::time::sleep(wait) => true,
            },
            None => {
                tokio::time::sleep(wait).await;
                true
            }
        }
    }

    /// The wait after attempt `attempt`: uniform in [0, min(max, initial ×
    /// 2^(attempt-1))].
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        let bound = self.initial.saturating_mul(factor).min(self.max_delay);
        bound.mul_f64(fastrand::f64())
    }
}
