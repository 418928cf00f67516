//! Carrying out a verdict on one RabbitMQ message: ack, the counted copy put
//! back on its queue, and the dead letter published `mandatory` and confirmed,
//! tried again until the broker accepts it.

#[allow(unused_imports)]
use super::*;

/// What a handler task needs to carry out its verdict.
pub(super) struct Outlet {
    pub(super) running: Arc<Running>,
    pub(super) conn: Arc<Connection>,
    /// The confirm-mode channel dead letters go through; replaced when the
    /// broker closed it.
    pub(super) publisher: std::sync::Mutex<Option<Channel>>,
    pub(super) dlq: Option<String>,
    pub(super) declare: bool,
    pub(super) readiness: Readiness,
}

impl Outlet {
    /// Runs `handler` on one delivery through the pipeline and settles it
    /// by the verdict.
    pub(super) async fn handle(
        &self,
        handler: &dyn MessageHandler,
        delivery: lapin::message::Delivery,
    ) {
        let (model, acker, props) = convert(&self.running.queue, delivery);
        let verdict = self
            .running
            .pipeline
            .process(handler, &model, &self.running.stop)
            .await;
        self.settle(&model, &acker, &props, verdict).await;
    }

    pub(super) async fn settle(
        &self,
        delivery: &Delivery,
        acker: &lapin::Acker,
        props: &BasicProperties,
        verdict: Verdict,
    ) {
        let consumer = &self.running.pipeline.consumer;
        let result = match verdict {
            Verdict::Ack | Verdict::Drop => acker.ack(BasicAckOptions::default()).await,
            Verdict::Requeue | Verdict::Release => self.give_back(delivery, acker, props).await,
            Verdict::DeadLetter { reason, attempts } => {
                if self
                    .dead_letter_until_accepted(delivery, props, &reason, attempts)
                    .await
                {
                    acker.ack(BasicAckOptions::default()).await
                } else {
                    acker.nack(requeue()).await
                }
            }
            Verdict::Exit(reason) => {
                // Counted, it comes back as its next delivery when the
                // service runs again; uncounted, the closing channel
                // returns it.
                let result = if self.counts_deliveries() {
                    self.give_back(delivery, acker, props).await
                } else {
                    Ok(true)
                };
                self.running.stop.exit(reason);
                result
            }
        };
        if let Err(e) = result {
            tracing::warn!(consumer = %consumer, error = %e, "cannot settle the message with the broker; it will be redelivered");
        }
    }

    /// Whether deliveries are counted (`max_deliveries` above 0).
    pub(super) fn counts_deliveries(&self) -> bool {
        self.running.pipeline.policy.max_deliveries > 0
    }

    /// Gives the message back to its queue. Counting deliveries, a copy
    /// with `x-patron-deliveries` goes to the end of the queue and the
    /// original is acked once the broker confirmed the copy (a classic
    /// queue counts nothing itself); otherwise, or when the copy fails,
    /// `basic.nack` with requeue.
    pub(super) async fn give_back(
        &self,
        delivery: &Delivery,
        acker: &lapin::Acker,
        props: &BasicProperties,
    ) -> Result<bool, lapin::Error> {
        if !self.counts_deliveries() {
            return acker.nack(requeue()).await;
        }
        let count = AMQPValue::LongLongInt(i64::from(delivery.deliveries()));
        let copy = copy_properties(props, [(DELIVERIES, count)], CopyFor::Redelivery);
        let published = match self.channel().await {
            Ok(channel) => publish_copy(&channel, &self.running.queue, delivery.body(), copy).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => acker.ack(BasicAckOptions::default()).await,
            Err(e) => {
                tracing::warn!(consumer = %self.running.pipeline.consumer, error = %e, "cannot put a counted copy back on the queue; returning the original uncounted");
                acker.nack(requeue()).await
            }
        }
    }

    /// Publishes the dead letter until the broker accepts it into the DLQ
    /// (`true`) or the service stops (`false`: the original goes back to
    /// its queue). Meanwhile the consumer is not ready, naming the DLQ.
    pub(super) async fn dead_letter_until_accepted(
        &self,
        delivery: &Delivery,
        props: &BasicProperties,
        reason: &str,
        attempts: u32,
    ) -> bool {
        dead_letter::until_accepted(
            &self.running.pipeline,
            &self.readiness,
            &self.running.stop,
            || self.dead_letter(delivery, props, reason, attempts),
            || true,
        )
        .await
    }

    /// The DLQ channel, reopened when the broker closed it (declaring the
    /// DLQ first under `declare`).
    pub(super) async fn channel(&self) -> Result<Channel, String> {
        let current = self
            .publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(ch) = current
            && ch.status().connected()
        {
            return Ok(ch);
        }
        let ch = confirm_channel(&self.conn)
            .await
            .map_err(|e| e.to_string())?;
        if self.declare
            && let Some(dlq) = &self.dlq
        {
            declare_queue(&ch, dlq).await.map_err(|e| e.to_string())?;
        }
        *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(ch.clone());
        Ok(ch)
    }

    pub(super) async fn dead_letter(
        &self,
        d: &Delivery,
        original: &BasicProperties,
        reason: &str,
        attempts: u32,
    ) -> Result<(), String> {
        let Some(dlq) = &self.dlq else {
            return Err("no DLQ is configured".into());
        };
        let channel = self.channel().await?;
        let (exchange, routing_key) = match d.metadata() {
            Metadata::Amqp(m) => (m.exchange.clone(), m.routing_key.clone()),
            _ => (String::new(), String::new()),
        };
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        let reason = truncate_reason(reason);
        let extra = [
            (dlq_headers::ERROR, text(&reason)),
            (
                dlq_headers::ATTEMPTS,
                AMQPValue::LongLongInt(i64::from(attempts)),
            ),
            (dlq_headers::QUEUE, text(&self.running.queue)),
            (dlq_headers::EXCHANGE, text(&exchange)),
            (dlq_headers::ROUTING_KEY, text(&routing_key)),
            (dlq_headers::CONSUMER, text(&self.running.pipeline.consumer)),
            (dlq_headers::FAILED_AT, AMQPValue::LongLongInt(now_millis())),
        ];
        let props = copy_properties(original, extra, CopyFor::DeadLetter);
        publish_copy(&channel, dlq, d.body(), props).await
    }
}

/// Publishes `body` to `queue` through the default exchange, `mandatory`,
/// and waits for the broker's confirm: `Ok` only once the broker accepted
/// it into an existing queue.
pub(super) async fn publish_copy(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), String> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await
        .map_err(|e| format!("publishing to queue {queue:?} failed: {e}"))?
        .await
        .map_err(|e| format!("queue {queue:?} did not confirm the message: {e}"))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(format!(
            "the broker returned the message: {} {} (does queue {queue:?} exist?)",
            returned.reply_code, returned.reply_text
        )),
        Confirmation::Nack(None) => Err(format!(
            "the broker refused the message for queue {queue:?}"
        )),
        Confirmation::NotRequested => Err("the channel is not in confirm mode".into()),
    }
}
