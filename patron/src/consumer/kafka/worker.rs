//! A partition's worker: its records in order through the pipeline, the
//! in-process redelivery under `exit`, dead letters, the progress it records,
//! and the lag gauges.

#[allow(unused_imports)]
use super::*;

/// Handles one partition's records in order. It stops after a failure
/// that stops the service, at shutdown and when the partition is revoked.
pub(super) struct Worker {
    pub(super) shared: Arc<SessionShared>,
    /// The partition's next offset to commit and revocation flag.
    pub(super) state: Arc<PartitionState>,
    /// The partition's topic, shared by its records' metadata.
    pub(super) topic: Arc<str>,
}

impl Worker {
    /// Whether to go on with the next record: not when stopping (records
    /// not started stay uncommitted and are redelivered) or revoked.
    pub(super) fn proceed(&self) -> bool {
        !self.shared.stop.is_stopping() && !self.state.revoked.load(Ordering::Acquire)
    }

    pub(super) async fn single(
        self,
        mut rx: mpsc::Receiver<Run>,
        handler: Arc<dyn MessageHandler>,
    ) {
        let mut tally = Tally::new(&self.shared.pipeline.metrics);
        while let Some(run) = rx.recv().await {
            // One permit per run: `concurrency` bounds the partitions being
            // processed at once.
            let Ok(_permit) = Arc::clone(&self.shared.permits).acquire_owned().await else {
                return;
            };
            tally.begin_run();
            for message in &run.records {
                if !self.handle(&*handler, message, &mut tally).await {
                    return;
                }
            }
            tally.end_run();
        }
    }

    /// Handles one record and records the progress; false when the worker
    /// must stop. Its time and outcome go to `tally`, whose run the
    /// caller began.
    pub(super) async fn handle(
        &self,
        handler: &dyn MessageHandler,
        message: &Record,
        tally: &mut Tally,
    ) -> bool {
        if !self.proceed() {
            return false;
        }
        let mut delivery = convert(message, &self.topic);
        loop {
            let verdict = self
                .shared
                .pipeline
                .process_counted(handler, &delivery, &self.shared.stop, tally)
                .await;
            // Kafka cannot give a record back: under a delivery limit,
            // `exit` is a requeue (`redelivers_in_process`) carried out here,
            // counted, until the limit turns the verdict into the DLQ or a
            // drop (`Policy::give_back`).
            let policy = &self.shared.pipeline.policy;
            if verdict != Verdict::Requeue {
                return self.settle(message, verdict).await;
            }
            let deliveries = delivery.deliveries() + 1;
            let wait = policy.delay(deliveries - 1);
            tracing::warn!(
                consumer = %self.shared.pipeline.consumer,
                deliveries,
                max_deliveries = policy.max_deliveries,
                retry_in_ms = wait.as_millis() as u64,
                "delivering the failed record again in-process"
            );
            tokio::select! {
                _ = self.shared.stop.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            if !self.proceed() {
                return false;
            }
            delivery = delivery.with_deliveries(deliveries);
        }
    }

    pub(super) async fn batches(
        self,
        mut rx: mpsc::Receiver<Run>,
        handler: Arc<dyn BatchHandler>,
        size: usize,
        timeout: Duration,
        dedup: bool,
    ) {
        // Records received but not yet in a batch, in offset order.
        let mut pending = Pending::default();
        loop {
            if pending.records.is_empty() {
                match rx.recv().await {
                    Some(run) => pending.add(run),
                    None => break,
                }
            }
            let deadline = tokio::time::Instant::now() + timeout;
            while pending.records.len() < size {
                tokio::select! {
                    biased;
                    next = rx.recv() => match next {
                        Some(run) => pending.add(run),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let take = pending.records.len().min(size);
            let records: Vec<Record> = pending.records.drain(..take).collect();
            if !self.proceed() {
                break;
            }
            let Ok(_permit) = Arc::clone(&self.shared.permits).acquire_owned().await else {
                break;
            };
            let kept = if dedup {
                last_per_key(&records)
            } else {
                (0..records.len()).collect()
            };
            let superseded = records.len() - kept.len();
            if superseded > 0 {
                self.shared
                    .pipeline
                    .metrics
                    .superseded
                    .inc_by(superseded as u64);
            }
            let deliveries: Vec<Delivery> = kept
                .iter()
                .map(|&i| convert(&records[i], &self.topic))
                .collect();
            let verdicts = self
                .shared
                .pipeline
                .process_batch(&*handler, &deliveries, &self.shared.stop)
                .await;
            // In offset order; a superseded record is done with the batch.
            let mut outcome: Vec<Option<Verdict>> = vec![None; records.len()];
            for (i, verdict) in kept.into_iter().zip(verdicts) {
                outcome[i] = Some(verdict);
            }
            for (message, verdict) in records.iter().zip(outcome) {
                let done = match verdict {
                    Some(verdict) => self.settle(message, verdict).await,
                    None => self.record(message),
                };
                if !done {
                    return;
                }
            }
        }
    }

    /// Carries out `verdict` and records the progress; false when the
    /// worker must stop.
    pub(super) async fn settle(&self, message: &Record, verdict: Verdict) -> bool {
        let shared = &self.shared;
        let done = match verdict {
            Verdict::Ack | Verdict::Drop => true,
            Verdict::DeadLetter { reason, attempts } => {
                self.dead_letter_until_accepted(message, &reason, attempts)
                    .await
            }
            Verdict::Exit(reason) => {
                shared.stop.exit(reason);
                false
            }
            // Shutdown during a retry wait (Kafka has no requeue): leave it
            // uncommitted.
            Verdict::Requeue | Verdict::Release => false,
        };
        done && self.record(message)
    }

    /// Produces the dead letter until the broker accepts it (`true`), or
    /// the service stops or the partition is revoked (`false`: the record
    /// stays uncommitted and is delivered again). Meanwhile the partition
    /// holds (its order is kept) and the consumer is not ready.
    pub(super) async fn dead_letter_until_accepted(
        &self,
        message: &Record,
        reason: &str,
        attempts: u32,
    ) -> bool {
        let shared = &self.shared;
        dead_letter::until_accepted(
            &shared.pipeline,
            &shared.readiness,
            &shared.stop,
            || dead_letter(shared, message, reason, attempts),
            || self.proceed(),
        )
        .await
    }

    /// Records `message` as done unless the partition was revoked; false
    /// when it was. A record that finishes while the revocation commits
    /// may land in a state already taken out of the shared map: it is then
    /// not committed, and the partition's next owner handles it again.
    pub(super) fn record(&self, message: &Record) -> bool {
        if self.state.revoked.load(Ordering::Acquire) {
            return false;
        }
        self.state
            .next
            .store(message.offset() + 1, Ordering::Release);
        true
    }
}

/// The indexes of the records a batch deduplicated by key keeps: the last
/// record of each key and every record without one, in offset order.
pub(super) fn last_per_key(records: &[Record]) -> Vec<usize> {
    let mut last: HashMap<&[u8], usize> = HashMap::new();
    for (i, m) in records.iter().enumerate() {
        if let Some(key) = m.key() {
            last.insert(key, i);
        }
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, m)| m.key().is_none_or(|k| last.get(k) == Some(i)))
        .map(|(i, _)| i)
        .collect()
}

pub(super) async fn dead_letter(
    shared: &SessionShared,
    m: &Record,
    reason: &str,
    attempts: u32,
) -> Result<(), String> {
    let (Some(producer), Some(topic)) = (&shared.producer, &shared.dlq) else {
        return Err("no DLQ topic is configured".into());
    };
    let mut original = Vec::new();
    m.for_each_header(|key, value| original.push((key.to_string(), value.map(<[u8]>::to_vec))));
    let mut headers = OwnedHeaders::new_with_capacity(original.len() + 7);
    for (key, value) in &original {
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let reason = truncate_reason(reason);
    let attempts = attempts.to_string();
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let failed_at = now_millis().to_string();
    // The copy gets its own timestamp, so the DLQ's retention counts from
    // the failure; the original's is kept here.
    let timestamp = m.timestamp().map(|t| t.to_string()).unwrap_or_default();
    for (key, value) in [
        (dlq_headers::ERROR, reason.as_str()),
        (dlq_headers::ATTEMPTS, attempts.as_str()),
        ("x-patron-original-topic", m.topic()),
        ("x-patron-original-partition", partition.as_str()),
        ("x-patron-original-offset", offset.as_str()),
        (dlq_headers::CONSUMER, &shared.pipeline.consumer),
        (dlq_headers::FAILED_AT, failed_at.as_str()),
        ("x-patron-original-timestamp", timestamp.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    if let Some(payload) = m.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| format!("producing to DLQ topic {topic:?} failed: {e}"))
}

/// A Kafka record as patron's [`Delivery`].
pub(super) fn convert(m: &Record, topic: &Arc<str>) -> Delivery {
    let mut headers = Headers::new();
    m.for_each_header(|key, value| {
        if let Some(value) = value {
            headers.insert(key, value.to_vec());
        }
    });
    let metadata = KafkaMetadata {
        topic: Arc::clone(topic),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        timestamp: m.timestamp(),
    };
    Delivery::with_header_content_type(
        m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        Metadata::Kafka(metadata),
    )
}

/// The lag gauge family, shared by the service's Kafka consumers.
pub(super) fn lag_gauges(metrics: &crate::observe::metrics::Metrics) -> Result<IntGaugeVec, Error> {
    metrics.shared("kafka_consumer_lag", || {
        IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_lag",
                "Records behind: the partition's high watermark minus the next offset to commit.",
            ),
            &["consumer", "topic", "partition"],
        )
        .map_err(|e| Error::msg(format!("cannot create the Kafka lag gauge: {e}")))
    })
}

/// The assigned-partitions gauge family, shared by the service's Kafka
/// consumers.
pub(super) fn assigned_gauge(
    metrics: &crate::observe::metrics::Metrics,
) -> Result<IntGaugeVec, Error> {
    metrics.shared("kafka_consumer_assigned_partitions", || {
        IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_assigned_partitions",
                "Partitions the consumer group currently assigns to this instance.",
            ),
            &["consumer"],
        )
        .map_err(|e| Error::msg(format!("cannot create the Kafka assignment gauge: {e}")))
    })
}

pub(super) fn record_lag(
    consumer: &StreamConsumer<Context>,
    partitions: &Partitions,
    lag: &IntGaugeVec,
    name: &str,
) {
    let positions: Vec<((String, i32), i64)> = partitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, state)| (k.clone(), state.next.load(Ordering::Acquire)))
        .filter(|(_, next)| *next != NOTHING)
        .collect();
    for ((topic, partition), next) in positions {
        match consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2)) {
            Ok((_, high)) => lag
                .with_label_values(&[name, topic.as_str(), partition.to_string().as_str()])
                .set((high - next).max(0)),
            Err(e) => {
                tracing::debug!(consumer = %name, topic, partition, error = %e, "cannot read the high watermark")
            }
        }
    }
}
