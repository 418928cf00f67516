//! A batch handler's run through the pipeline: one span for the batch,
//! retries of the messages the handler neither acked nor nacked, and one
//! verdict per message.

#[allow(unused_imports)]
use super::*;

impl Pipeline {
    /// Runs a batch handler on `deliveries`; one verdict per delivery.
    #[cfg_attr(not(any(feature = "amqp", feature = "kafka")), allow(dead_code))]
    pub(crate) async fn process_batch(
        &self,
        handler: &dyn BatchHandler,
        deliveries: &[Delivery],
        stop: &CancellationToken,
    ) -> Vec<Verdict> {
        let started = Instant::now();
        let n = deliveries.len() as i64;
        self.metrics.in_flight.add(n);
        let span = tracing::debug_span!(
            "message batch",
            otel.name = %self.span_name,
            otel.kind = "consumer",
            messaging.system = self.system,
            messaging.operation.type = "process",
            messaging.destination.name = %self.destination,
            messaging.batch.message_count = n,
        );
        let cx = RequestContext::Known(Box::new(KnownContext {
            correlation_id: crate::context::correlation::from_bytes(None),
            traceparent: None,
            baggage: None,
        }));
        let verdicts = REQUEST
            .scope(
                cx,
                self.batch_attempts(handler, deliveries, stop)
                    .instrument(span),
            )
            .await;
        self.metrics.in_flight.sub(n);
        let seconds = started.elapsed().as_secs_f64();
        for v in &verdicts {
            self.observe(v, seconds);
        }
        verdicts
    }

    /// Calls `handler` until every delivery has a verdict: first on all of
    /// them, then on those it left pending (neither acked nor nacked) while
    /// retries remain.
    #[cfg_attr(not(any(feature = "amqp", feature = "kafka")), allow(dead_code))]
    pub(super) async fn batch_attempts(
        &self,
        handler: &dyn BatchHandler,
        deliveries: &[Delivery],
        stop: &CancellationToken,
    ) -> Vec<Verdict> {
        let mut verdicts: Vec<Option<Verdict>> = vec![None; deliveries.len()];
        let mut pending: Vec<usize> = (0..deliveries.len()).collect();
        let mut attempt = 1;
        while !pending.is_empty() {
            let attempted = Attempt {
                deliveries,
                pending: &pending,
                attempt,
            };
            let (marks, result) = self.batch_call(handler, &attempted, &mut verdicts).await;
            let rest = self.apply_marks(&attempted, marks, &mut verdicts);
            pending = self
                .after_batch_call(&attempted, result, rest, stop, &mut verdicts)
                .await;
            attempt += 1;
        }
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Verdict::Release))
            .collect()
    }

    /// One call of `handler` on the pending deliveries: their marks and the
    /// handler's result (a panic is a failure). Messages the handler
    /// reported as poison get their verdict at once.
    async fn batch_call(
        &self,
        handler: &dyn BatchHandler,
        at: &Attempt<'_>,
        verdicts: &mut [Option<Verdict>],
    ) -> (Vec<Mark>, Result<(), String>) {
        let subset: Vec<Delivery> = at
            .pending
            .iter()
            .map(|&i| at.deliveries[i].clone())
            .collect();
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            handler.call(&subset, at.attempt, &self.deps)
        }));
        match called {
            Ok((cx, call)) => {
                for (j, e) in &cx.poison {
                    let index = at.pending[*j];
                    verdicts[index] = Some(self.fail(
                        self.policy.on_poison(),
                        &e.to_string(),
                        at.attempt,
                        true,
                        &at.deliveries[index],
                        false,
                    ));
                }
                let result = match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(panic) => Err(panicked(panic.as_ref())),
                };
                (cx.marks(), result)
            }
            Err(panic) => (
                vec![Mark::Pending; subset.len()],
                Err(panicked(panic.as_ref())),
            ),
        }
    }

    /// Verdicts for the messages the handler acked or nacked; the indexes
    /// of those it left pending.
    fn apply_marks(
        &self,
        at: &Attempt<'_>,
        marks: Vec<Mark>,
        verdicts: &mut [Option<Verdict>],
    ) -> Vec<usize> {
        let mut rest = Vec::new();
        for (j, mark) in marks.into_iter().enumerate() {
            let index = at.pending[j];
            if verdicts[index].is_some() {
                continue;
            }
            match mark {
                Mark::Ack => verdicts[index] = Some(Verdict::Ack),
                Mark::Nack(reason) => {
                    verdicts[index] = Some(self.fail(
                        self.policy.on_failure,
                        &reason,
                        at.attempt,
                        false,
                        &at.deliveries[index],
                        false,
                    ));
                }
                Mark::Pending => rest.push(index),
            }
        }
        rest
    }

    /// What becomes of the messages left pending after a call that ended
    /// with `result`: acked on success, failed once retries are spent, else
    /// retried after the backoff (released at shutdown). Returns those to
    /// call the handler on again.
    async fn after_batch_call(
        &self,
        at: &Attempt<'_>,
        result: Result<(), String>,
        rest: Vec<usize>,
        stop: &CancellationToken,
        verdicts: &mut [Option<Verdict>],
    ) -> Vec<usize> {
        let error = match result {
            Ok(()) => {
                for i in rest {
                    verdicts[i] = Some(Verdict::Ack);
                }
                return Vec::new();
            }
            Err(error) => error,
        };
        if at.attempt > self.policy.retries {
            for i in rest {
                verdicts[i] = Some(self.fail(
                    self.policy.on_failure,
                    &error,
                    at.attempt,
                    false,
                    &at.deliveries[i],
                    false,
                ));
            }
            return Vec::new();
        }
        let wait = self.policy.delay(at.attempt);
        self.metrics.retry.inc_by(rest.len() as u64);
        tracing::warn!(
            consumer = %self.consumer,
            error = %error,
            attempt = at.attempt,
            messages = rest.len(),
            retry_in_ms = wait.as_millis() as u64,
            "batch handler failed; retrying the unacknowledged messages"
        );
        tokio::select! {
            _ = stop.cancelled() => {
                for i in rest {
                    verdicts[i] = Some(Verdict::Release);
                }
                Vec::new()
            }
            _ = tokio::time::sleep(wait) => rest,
        }
    }
}

/// One call of a batch handler: the whole batch, the indexes it is called
/// on and which try this is (from 1).
struct Attempt<'a> {
    deliveries: &'a [Delivery],
    pending: &'a [usize],
    attempt: u32,
}
