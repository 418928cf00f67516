//! What every broker does with a dead letter the broker refuses: keep the
//! original (unacknowledged, uncommitted or in flight), say why at ERROR,
//! hold a named readiness problem so `/ready` names the consumer, and try
//! the copy again until it lands or the service stops. A dead letter counts
//! (`outcome="dlq"`) only once the broker accepted it.

#[cfg(any(feature = "amqp", feature = "kafka"))]
use std::future::Future;
#[cfg(any(feature = "amqp", feature = "kafka"))]
use std::time::Duration;

#[cfg(any(feature = "amqp", feature = "kafka"))]
use tokio_util::sync::CancellationToken;

#[cfg(any(feature = "amqp", feature = "kafka"))]
use super::backoff::Backoff;

use super::process::Pipeline;
use crate::component::Readiness;

/// The readiness problem key of a DLQ that refuses messages.
pub(crate) const PROBLEM: &str = "dead-letter";
/// The first wait before dead-lettering again; it doubles up to [`RETRY_MAX`].
#[cfg(any(feature = "amqp", feature = "kafka"))]
const RETRY_MIN: Duration = Duration::from_secs(1);
#[cfg(any(feature = "amqp", feature = "kafka"))]
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The broker accepted a dead letter: counted, and the consumer's DLQ
/// problem (if any) is cleared.
pub(crate) fn accepted(pipeline: &Pipeline, readiness: &Readiness) {
    readiness.clear_problem(PROBLEM);
    pipeline.dead_lettered();
}

/// The broker refused a dead letter: logged at ERROR and held as the
/// consumer's readiness problem.
pub(crate) fn refused(pipeline: &Pipeline, readiness: &Readiness, error: &str, next_try: &str) {
    let consumer = &pipeline.consumer;
    tracing::error!(consumer = %consumer, error = %error, next_try, "cannot dead-letter the message; it stays with the broker and is dead-lettered again");
    readiness.set_problem(
        PROBLEM,
        format!("consumer {consumer} cannot dead-letter messages: {error}"),
    );
}

/// Calls `publish` until it succeeds (`true`), or the consumer stops or
/// `still_wanted` says no after a wait (`false`: the message stays with
/// the broker and is delivered again). Waits 1 s, doubling to 30 s.
#[cfg(any(feature = "amqp", feature = "kafka"))]
pub(crate) async fn until_accepted<Fut>(
    pipeline: &Pipeline,
    readiness: &Readiness,
    stop: &CancellationToken,
    mut publish: impl FnMut() -> Fut,
    still_wanted: impl Fn() -> bool,
) -> bool
where
    Fut: Future<Output = Result<(), String>>,
{
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        match publish().await {
            Ok(()) => {
                accepted(pipeline, readiness);
                return true;
            }
            Err(e) => {
                let wait = backoff.next();
                refused(
                    pipeline,
                    readiness,
                    &e,
                    &format!("in {} ms", wait.as_millis()),
                );
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
                if !still_wanted() {
                    return false;
                }
            }
        }
    }
}
