//! How a consumer stops: the shutdown token, the reason an `exit` verdict
//! records, and (with Kafka) a lock-free flag the hot path reads.

#[allow(unused_imports)]
use super::*;

/// A running consumer's stop switch: cancelled at shutdown, or by the first
/// `exit` verdict, whose reason becomes the consumer's error. It
/// dereferences to its cancellation token.
pub(crate) struct Stopper {
    token: CancellationToken,
    reason: std::sync::Mutex<Option<String>>,
    #[cfg(feature = "kafka")]
    flag: StopFlag,
}

impl Stopper {
    /// A stop switch on `token` (with Kafka, started in a runtime: it
    /// spawns the flag's watcher).
    pub(crate) fn new(token: CancellationToken) -> Self {
        Stopper {
            #[cfg(feature = "kafka")]
            flag: StopFlag::watch(&token),
            token,
            reason: std::sync::Mutex::new(None),
        }
    }

    /// Whether stopping began: a lock-free read, which may lag the token's
    /// cancellation by a task wake-up. For the Kafka worker's check before
    /// every record: asking the token takes its mutex.
    #[cfg(feature = "kafka")]
    pub(crate) fn is_stopping(&self) -> bool {
        self.flag.set.load(Ordering::Acquire)
    }

    /// Stops the consumer because of `reason`; the first reason wins.
    pub(crate) fn exit(&self, reason: String) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.token.cancel();
    }

    /// What the consumer's `run` returns once it stopped.
    pub(crate) fn result(&self, consumer: &str) -> Result<(), Error> {
        match self.reason.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(reason) => Err(Error::msg(format!(
                "consumer {consumer} stopped the service (on_failure = exit): {reason}"
            ))),
            None => Ok(()),
        }
    }
}

/// A flag a watcher task sets once a token is cancelled; the task is
/// aborted when the flag goes.
#[cfg(feature = "kafka")]
struct StopFlag {
    set: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "kafka")]
impl StopFlag {
    fn watch(token: &CancellationToken) -> StopFlag {
        let set = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn({
            let (token, set) = (token.clone(), Arc::clone(&set));
            async move {
                token.cancelled().await;
                set.store(true, Ordering::Release);
            }
        });
        StopFlag { set, watcher }
    }
}

#[cfg(feature = "kafka")]
impl Drop for StopFlag {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl std::ops::Deref for Stopper {
    type Target = CancellationToken;
    fn deref(&self) -> &CancellationToken {
        &self.token
    }
}

/// Waits for a consumer's in-flight handlers, at most `limit`; any still
/// running then are left unacknowledged, for the broker to redeliver.
pub(crate) async fn drain(
    tracker: &tokio_util::task::TaskTracker,
    limit: std::time::Duration,
    consumer: &str,
) {
    tracker.close();
    if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
        tracing::warn!(
            consumer,
            "in-flight messages did not finish within the shutdown timeout; the broker will redeliver them"
        );
    }
}

#[cfg(all(test, feature = "kafka"))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Waits (at most 5 s) until `stop` reports stopping.
    async fn until_stopping(stop: &Stopper) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !stop.is_stopping() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("is_stopping turns true");
    }

    #[tokio::test]
    async fn a_stopper_reports_its_parent_tokens_cancellation() {
        let shutdown = CancellationToken::new();
        let stop = Stopper::new(shutdown.child_token());
        tokio::task::yield_now().await;
        assert!(!stop.is_stopping(), "not stopping before the cancel");
        shutdown.cancel();
        until_stopping(&stop).await;
        assert!(stop.is_cancelled());
        assert!(stop.result("c").is_ok(), "a shutdown is no error");
    }

    #[tokio::test]
    async fn a_stopper_reports_an_exit_and_keeps_its_first_reason() {
        let stop = Stopper::new(CancellationToken::new());
        stop.exit("first".into());
        stop.exit("second".into());
        until_stopping(&stop).await;
        let err = stop.result("c").expect_err("an exit is an error");
        assert!(err.to_string().contains("first"), "{err}");
        assert!(!err.to_string().contains("second"), "{err}");
    }
}
