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
            let subset: Vec<Delivery> = pending.iter().map(|&i| deliveries[i].clone()).collect();
            let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
                handler.call(&subset, attempt, &self.deps)
            }));
            let (marks, result) = match called {
                Ok((cx, call)) => {
                    for (j, e) in &cx.poison {
                        let index = pending[*j];
                        verdicts[index] = Some(self.fail(
                            self.policy.on_poison(),
                            &e.to_string(),
                            attempt,
                            true,
                            &deliveries[index],
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
            };
            let mut rest = Vec::new();
            for (j, mark) in marks.into_iter().enumerate() {
                let index = pending[j];
                if verdicts[index].is_some() {
                    continue;
                }
                match mark {
                    Mark::Ack => verdicts[index] = Some(Verdict::Ack),
                    Mark::Nack(reason) => {
                        verdicts[index] = Some(self.fail(
                            self.policy.on_failure,
                            &reason,
                            attempt,
                            false,
                            &deliveries[index],
                            false,
                        ));
                    }
                    Mark::Pending => rest.push(index),
                }
            }
            match result {
                Ok(()) => {
                    for i in rest.drain(..) {
                        verdicts[i] = Some(Verdict::Ack);
                    }
                }
                Err(error) if attempt > self.policy.retries => {
                    for i in rest.drain(..) {
                        verdicts[i] = Some(self.fail(
                            self.policy.on_failure,
                            &error,
                            attempt,
                            false,
                            &deliveries[i],
                            false,
                        ));
                    }
                }
                Err(error) => {
                    let wait = self.policy.delay(attempt);
                    self.metrics.retry.inc_by(rest.len() as u64);
                    tracing::warn!(
                        consumer = %self.consumer,
                        error = %error,
                        attempt,
                        messages = rest.len(),
                        retry_in_ms = wait.as_millis() as u64,
                        "batch handler failed; retrying the unacknowledged messages"
                    );
                    let stopped = tokio::select! {
                        _ = stop.cancelled() => true,
                        _ = tokio::time::sleep(wait) => false,
                    };
                    if stopped {
                        for i in rest.drain(..) {
                            verdicts[i] = Some(Verdict::Release);
                        }
                    }
                }
            }
            pending = rest;
            attempt += 1;
        }
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Verdict::Release))
            .collect()
    }
}
