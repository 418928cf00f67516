//! [`RateLimit`] (governor's token bucket, GCRA) and [`Bulkhead`] (a
//! bound on concurrent calls): each waits for room or fails fast.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The rate limit refused a call that would have exceeded it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limit {name:?} exceeded; the next call is allowed in {retry_after:?}")]
pub struct RateLimited {
    /// The limit's name.
    pub name: Arc<str>,
    /// When a call would be allowed.
    pub retry_after: Duration,
}

/// A token-bucket rate limit shared by its clones: `per_second` calls a
/// second on average, bursts of up to `burst`.
///
/// ```
/// use patron::reliability::RateLimit;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limit = RateLimit::per_second("accounting", 100).burst(10);
/// limit.until_ready().await; // waits for a token
/// assert!(limit.check().is_ok()); // or fails fast with RateLimited
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimit {
    name: Arc<str>,
    limiter: Arc<DefaultDirectRateLimiter>,
    quota: Quota,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .finish()
    }
}

impl RateLimit {
    /// `per_second` calls a second (at least 1), with a burst of the same.
    pub fn per_second(name: impl Into<String>, per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        Self::with_quota(name, Quota::per_second(rate))
    }

    /// Any governor quota, e.g. `Quota::per_minute(…)` or
    /// `Quota::with_period(…)`.
    pub fn with_quota(name: impl Into<String>, quota: Quota) -> Self {
        RateLimit {
            name: name.into().into(),
            limiter: Arc::new(DefaultDirectRateLimiter::direct(quota)),
            quota,
        }
    }

    /// The largest burst (at least 1).
    pub fn burst(self, burst: u32) -> Self {
        let quota = self
            .quota
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self::with_quota(self.name.to_string(), quota)
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes a token now, or says how long until one is available.
    pub fn check(&self) -> Result<(), RateLimited> {
        self.limiter.check().map_err(|not_until| RateLimited {
            name: Arc::clone(&self.name),
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// Waits until a token is available and takes it.
    pub async fn until_ready(&self) {
        self.limiter.until_ready().await;
    }
}

/// The bulkhead refused a call: every slot was busy (for the whole
/// `max_wait`, when one is set).
#[derive(Debug, Clone, thiserror::Error)]
#[error("bulkhead {name:?} is full ({limit} calls in flight)")]
pub struct BulkheadFull {
    /// The bulkhead's name.
    pub name: Arc<str>,
    /// Its concurrency limit.
    pub limit: usize,
}

/// A concurrency limit shared by its clones, so that one slow dependency
/// cannot take every task of the service.
///
/// ```
/// use std::time::Duration;
/// use patron::reliability::Bulkhead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bulkhead = Bulkhead::new("reports", 2).max_wait(Duration::ZERO);
/// let first = bulkhead.acquire().await.unwrap();
/// let second = bulkhead.acquire().await.unwrap();
/// assert!(bulkhead.acquire().await.is_err()); // full: fails fast
/// drop((first, second));
/// assert_eq!(bulkhead.call(async { 7 }).await.unwrap(), 7);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Bulkhead {
    name: Arc<str>,
    limit: usize,
    slots: Arc<Semaphore>,
    max_wait: Option<Duration>,
}

impl Bulkhead {
    /// At most `limit` calls at once (at least 1); others wait for a slot.
    pub fn new(name: impl Into<String>, limit: usize) -> Self {
        let limit = limit.max(1);
        Bulkhead {
            name: name.into().into(),
            limit,
            slots: Arc::new(Semaphore::new(limit)),
            max_wait: None,
        }
    }

    /// Waits at most this long for a slot, then fails with [`BulkheadFull`];
    /// `Duration::ZERO` fails fast.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Takes a slot, held until the returned permit is dropped.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, BulkheadFull> {
        let full = || BulkheadFull {
            name: Arc::clone(&self.name),
            limit: self.limit,
        };
        let slots = Arc::clone(&self.slots);
        match self.max_wait {
            None => slots.acquire_owned().await.map_err(|_| full()),
            Some(wait) if wait.is_zero() => slots.try_acquire_owned().map_err(|_| full()),
            Some(wait) => match tokio::time::timeout(wait, slots.acquire_owned()).await {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(full()),
            },
        }
    }

    /// Runs `call` in a slot.
    pub async fn call<T>(&self, call: impl Future<Output = T>) -> Result<T, BulkheadFull> {
        let _slot = self.acquire().await?;
        Ok(call.await)
    }
}
