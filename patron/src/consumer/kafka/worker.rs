//! A partition's worker: its records in order through the pipeline, the
//! in-process redelivery under `exit`, and the progress it records (dead
//! letters are in `dlq.rs`, the lag in `lag.rs`).

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
