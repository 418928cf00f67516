//! The broker-neutral part of consuming: one message (or batch) through the
//! handler with its span, correlation id, retries and metrics, ending in a
//! [`Verdict`] the broker code carries out. All outcome logic lives here, so
//! every broker behaves the same.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
#[cfg(feature = "kafka")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::batch::Mark;
use super::handler::{BatchHandler, HandlerError, MessageHandler};
use super::message::Delivery;
use super::metrics::ConsumerMetrics;
use super::policy::{OnFailure, Policy};
use crate::context::{KnownContext, REQUEST, RequestContext, in_message_context};
use crate::deps::Deps;
use crate::error::Error;
use crate::observe::trace;
use crate::panic::panic_message;

/// What to do with a message once processing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Acknowledge (AMQP ack, Kafka commit, SQS delete).
    Ack,
    /// `on_failure = requeue`: give it back for redelivery.
    Requeue,
    /// Shut down while it waited for a retry: give it back, not a failure.
    Release,
    /// Publish to the DLQ with these details, then acknowledge.
    DeadLetter { reason: String, attempts: u32 },
    /// Acknowledge without success (logged at ERROR already).
    Drop,
    /// Leave it unacknowledged and stop the service with this error.
    Exit(String),
}

/// One handler call, once started.
enum Call {
    /// It finished: `Ok`, or why not.
    Done(Result<(), Failure>),
    /// Its future is still running.
    Running(BoxFuture<'static, Result<(), Error>>),
}

/// Why a handler call did not succeed.
enum Failure {
    /// The payload does not decode: never retried.
    Poison(String),
    /// The handler returned an error or panicked.
    Failed(String),
}

/// Everything one consumer needs to process messages.
pub(crate) struct Pipeline {
    pub consumer: Arc<str>,
    pub system: &'static str,
    pub destination: Arc<str>,
    pub span_name: Arc<str>,
    pub policy: Policy,
    pub metrics: ConsumerMetrics,
    pub deps: Arc<Deps>,
    /// The broker cannot take a message back (Kafka): under a delivery
    /// limit, `exit` becomes [`Verdict::Requeue`], which the broker code
    /// carries out by delivering the message again itself, counted.
    pub redelivers_in_process: bool,
}

impl Pipeline {
    /// Runs `handler` on `delivery` until success or the failure strategy,
    /// with the shared metrics updated for this one message (AMQP, SQS).
    #[cfg_attr(not(any(feature = "amqp", feature = "sqs")), allow(dead_code))]
    pub(crate) async fn process(
        &self,
        handler: &dyn MessageHandler,
        delivery: &Delivery,
        stop: &CancellationToken,
    ) -> Verdict {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let verdict = self.verdict(handler, delivery, stop, || ()).await;
        self.metrics.in_flight.dec();
        self.observe(&verdict, started.elapsed().as_secs_f64());
        verdict
    }

    /// The verdict on `delivery`.
    ///
    /// The first call is started and polled once right here, inside the
    /// message's context and span: a handler that finishes at once (most
    /// do, or their first await is ready) costs no task-local scope, span
    /// wrapper or retry state machine around it. Anything else — a pending
    /// handler, a failure, a retry — continues in [`Self::attempts`], after
    /// `before_wait`.
    pub(crate) async fn verdict(
        &self,
        handler: &dyn MessageHandler,
        delivery: &Delivery,
        stop: &CancellationToken,
        before_wait: impl FnOnce(),
    ) -> Verdict {
        if self.policy.over_limit(delivery.deliveries()) {
            before_wait();
            return self.past_limit(delivery);
        }
        let span = self.span(delivery);
        let first = std::future::poll_fn(|task| {
            Poll::Ready(in_message_context(delivery.envelope(), || {
                span.in_scope(|| self.start(handler, delivery, 1, task))
            }))
        })
        .await;
        let verdict = match first {
            Call::Done(Ok(())) => Verdict::Ack,
            first => {
                before_wait();
                REQUEST
                    .scope(
                        request_context(delivery),
                        self.attempts(handler, delivery, stop, first)
                            .instrument(span.clone()),
                    )
                    .await
            }
        };
        if matches!(verdict, Verdict::Ack) {
            span.record("otel.status_code", "OK");
        } else {
            span.record("otel.status_code", "ERROR");
        }
        verdict
    }

    /// One message's duration and outcome, in the shared metrics.
    pub(crate) fn observe(&self, verdict: &Verdict, seconds: f64) {
        self.metrics.duration.observe(seconds);
        self.count(verdict, 1);
    }

    /// Calls the handler (attempt `attempt`) and polls its future once;
    /// a panic in either counts as a failure.
    fn start(
        &self,
        handler: &dyn MessageHandler,
        delivery: &Delivery,
        attempt: u32,
        task: &mut Context<'_>,
    ) -> Call {
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            handler.call(delivery, attempt, &self.deps)
        }));
        let mut call = match called {
            Ok(Ok(call)) => call,
            Ok(Err(HandlerError::Decode(e))) => {
                return Call::Done(Err(Failure::Poison(e.to_string())));
            }
            Ok(Err(HandlerError::Failed(e))) => {
                return Call::Done(Err(Failure::Failed(e.to_string())));
            }
            Err(panic) => return Call::Done(Err(Failure::Failed(panicked(panic.as_ref())))),
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(task))) {
            Ok(Poll::Pending) => Call::Running(call),
            Ok(Poll::Ready(result)) => Call::Done(finished(Ok(result))),
            Err(panic) => Call::Done(finished(Err(panic))),
        }
    }

    /// Finishes `first` (attempt 1), then retries until success or the
    /// failure strategy. Runs inside the message's context and span.
    async fn attempts(
        &self,
        handler: &dyn MessageHandler,
        delivery: &Delivery,
        stop: &CancellationToken,
        first: Call,
    ) -> Verdict {
        let mut attempt = 1;
        let mut call = first;
        loop {
            let outcome = match call {
                Call::Done(outcome) => outcome,
                Call::Running(future) => finished(AssertUnwindSafe(future).catch_unwind().await),
            };
            let error = match outcome {
                Ok(()) => return Verdict::Ack,
                Err(Failure::Poison(e)) => {
                    return self.fail(self.policy.on_poison(), &e, attempt, true, delivery, true);
                }
                Err(Failure::Failed(e)) => e,
            };
            if attempt > self.policy.retries {
                return self.fail(
                    self.policy.on_failure,
                    &error,
                    attempt,
                    false,
                    delivery,
                    true,
                );
            }
            let wait = self.policy.delay(attempt);
            self.metrics.retry.inc();
            tracing::warn!(
                consumer = %self.consumer,
                error = %error,
                attempt,
                retry_in_ms = wait.as_millis() as u64,
                "message handler failed; retrying"
            );
            tokio::select! {
                _ = stop.cancelled() => {
                    tracing::info!(consumer = %self.consumer, "shutting down during a retry wait; returning the message to the broker");
                    return Verdict::Release;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            attempt += 1;
            call = std::future::poll_fn(|task| {
                Poll::Ready(self.start(handler, delivery, attempt, task))
            })
            .await;
        }
    }

    /// A message delivered more often than `max_deliveries` allows: not
    /// handled; to the DLQ when one is named, else dropped.
    fn past_limit(&self, delivery: &Delivery) -> Verdict {
        let deliveries = delivery.deliveries();
        let max = self.policy.max_deliveries;
        let reason = format!(
            "delivered {deliveries} times, more than max_deliveries = {max}; not handled again"
        );
        match self.policy.past_limit() {
            OnFailure::Dlq => {
                tracing::error!(consumer = %self.consumer, deliveries, max_deliveries = max, "message delivered more often than max_deliveries; sending it to the dead-letter queue");
                Verdict::DeadLetter {
                    reason,
                    attempts: 0,
                }
            }
            _ => {
                tracing::error!(consumer = %self.consumer, deliveries, max_deliveries = max, "message delivered more often than max_deliveries and no DLQ is named; dropping it");
                Verdict::Drop
            }
        }
    }

    /// Applies `strategy` to a message that failed `attempts` times on
    /// `delivery` — [`Policy::give_back`]: not a give-back on its last
    /// allowed delivery. `single`: a single-message handler's, which a
    /// broker that redelivers in process may deliver again.
    fn fail(
        &self,
        strategy: OnFailure,
        reason: &str,
        attempts: u32,
        poison: bool,
        delivery: &Delivery,
        single: bool,
    ) -> Verdict {
        let what = if poison {
            "message payload cannot be decoded"
        } else {
            "message handler failed"
        };
        let deliveries = delivery.deliveries();
        let capped = self.policy.give_back(strategy, deliveries);
        if capped != strategy {
            let max = self.policy.max_deliveries;
            let reason =
                format!("{reason} (on delivery {deliveries}, the last of max_deliveries = {max})");
            return match capped {
                OnFailure::Dlq => {
                    tracing::error!(consumer = %self.consumer, error = %reason, attempts, deliveries, "{what} on its last allowed delivery; sending it to the dead-letter queue instead of {strategy}");
                    Verdict::DeadLetter { reason, attempts }
                }
                _ => {
                    tracing::error!(consumer = %self.consumer, error = %reason, attempts, deliveries, "{what} on its last allowed delivery and no DLQ is named; dropping it instead of {strategy}");
                    Verdict::Drop
                }
            };
        }
        match strategy {
            OnFailure::Dlq => {
                tracing::error!(consumer = %self.consumer, error = %reason, attempts, "{what}; sending it to the dead-letter queue");
                Verdict::DeadLetter {
                    reason: reason.to_string(),
                    attempts,
                }
            }
            OnFailure::Requeue => {
                tracing::warn!(consumer = %self.consumer, error = %reason, attempts, "{what}; returning it to the queue");
                Verdict::Requeue
            }
            OnFailure::Drop => {
                tracing::error!(consumer = %self.consumer, error = %reason, attempts, "{what}; dropping it");
                Verdict::Drop
            }
            OnFailure::Exit
                if single && self.redelivers_in_process && self.policy.max_deliveries > 0 =>
            {
                tracing::warn!(consumer = %self.consumer, error = %reason, attempts, deliveries, max_deliveries = self.policy.max_deliveries, "{what}; delivering it again");
                Verdict::Requeue
            }
            OnFailure::Exit => {
                tracing::error!(consumer = %self.consumer, error = %reason, attempts, "{what}; stopping the service");
                Verdict::Exit(reason.to_string())
            }
        }
    }

    fn count(&self, verdict: &Verdict, n: u64) {
        let counter = match verdict {
            Verdict::Ack => &self.metrics.ack,
            Verdict::Requeue | Verdict::Release => &self.metrics.requeue,
            // Counted by the broker code once the broker accepted the copy
            // ([`Self::dead_lettered`]): a copy that never landed is no
            // dead letter.
            Verdict::DeadLetter { .. } => return,
            Verdict::Drop => &self.metrics.drop,
            Verdict::Exit(_) => &self.metrics.exit,
        };
        counter.inc_by(n);
    }

    /// Counts one message whose dead-letter copy the broker accepted.
    pub(crate) fn dead_lettered(&self) {
        self.metrics.dlq.inc();
    }

    fn span(&self, delivery: &Delivery) -> tracing::Span {
        let sampled =
            !trace::enabled() || trace::sample_parent(delivery.headers().get_bytes("traceparent"));
        if !sampled {
            return tracing::Span::none();
        }
        let span = tracing::debug_span!(
            "message",
            otel.name = %self.span_name,
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = self.system,
            messaging.operation.type = "process",
            messaging.destination.name = %self.destination,
            messaging.consumer.name = %self.consumer,
            correlation_id = delivery.correlation_id(),
            patron.sampled = tracing::field::Empty,
        );
        if trace::enabled() && !span.is_disabled() {
            span.record("patron.sampled", true);
            // A malformed traceparent yields an empty context: a new root.
            let _ = span.set_parent(trace::extract_from(delivery.headers()));
        }
        span
    }
}

/// How a handler's future ended: its result, or the panic it raised.
fn finished(ended: std::thread::Result<Result<(), Error>>) -> Result<(), Failure> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Failed(e.to_string())),
        Err(panic) => Err(Failure::Failed(panicked(panic.as_ref()))),
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    format!("the handler panicked: {}", panic_message(panic))
}

/// The task-local context of one message: its correlation id and incoming
/// trace headers, so log lines and outgoing calls carry them. They are read
/// from the message when first asked for.
fn request_context(d: &Delivery) -> RequestContext {
    RequestContext::Message(Arc::clone(d.envelope()) as _)
}

/// `reason`, cut to at most 4 KiB on a character boundary, for DLQ headers.
pub(crate) fn truncate_reason(reason: &str) -> String {
    let mut cut = reason.len().min(4096);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    reason[..cut].to_string()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

mod batch;
mod stop;

#[allow(unused_imports)] // no broker feature: nothing stops
pub(crate) use stop::*;
