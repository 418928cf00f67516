//! One client's life: the receive loop that hands records to the partitions'
//! workers (or runs them inline), the commit, lag and broker-probe ticks, and
//! the end of the session at shutdown or on a fatal client error.

#[allow(unused_imports)]
use super::*;

/// What one client's life (from creation to shutdown or a fatal error)
/// needs; the progress and the workers' flags outlive it.
pub(super) struct Session<'a> {
    pub(super) consumer: &'a KafkaConsumer,
    pub(super) ctx: &'a ComponentContext,
    pub(super) brokers: String,
    pub(super) shared: Arc<SessionShared>,
    pub(super) partitions: Partitions,
    pub(super) assigned: IntGauge,
    pub(super) lag: IntGaugeVec,
}

/// A client of one session and what its callbacks and receive loop share.
/// The record queue is declared before the client so that it is dropped
/// first.
struct Live {
    records: Option<Arc<RecordQueue>>,
    consumer: Arc<StreamConsumer<Context>>,
    /// Cancelled when the client reports a fatal error.
    fatal: CancellationToken,
    /// Woken by the client's error callback.
    errors: Arc<Notify>,
    /// Set while the client cannot reach any broker.
    brokers_down: Arc<AtomicBool>,
    /// Set while a broker probe is in flight.
    probing: Arc<AtomicBool>,
}

impl Session<'_> {
    /// Consumes with a new client until shutdown (`None`) or a fatal client
    /// error (its description). In both cases in-flight records finish
    /// first and, at shutdown, what finished is committed.
    pub(super) async fn run(&self) -> Result<Option<String>, Error> {
        let c = self.consumer;
        let name = c.common.name.as_str();
        self.ctx
            .readiness()
            .not_ready(format!("Kafka consumer {name}: joining group {}", c.group));
        let live = self.connect()?;
        let tracker = TaskTracker::new();
        tracing::info!(consumer = %name, topics = ?c.topics, group = %c.group, "consuming");
        // Returns with the workers dropped: nothing feeds them any more.
        self.receive(&live, &tracker).await;
        drain(&tracker, self.ctx.config().shutdown_timeout, name).await;
        let Live {
            records,
            consumer,
            fatal,
            ..
        } = live;
        // Before the client goes (records still held by abandoned workers
        // keep the client alive themselves).
        drop(records);
        if fatal.is_cancelled() {
            // The client is unusable; what finished since the last commit
            // is redelivered to whoever owns the partitions next.
            self.forget_partitions();
            let fatal = consumer
                .client()
                .fatal_error()
                .map(|(code, reason)| format!("{code}: {reason}"))
                .unwrap_or_else(|| "the client reported a fatal error".into());
            close_fatal(consumer, name);
            return Ok(Some(fatal));
        }
        self.close(consumer).await?;
        Ok(None)
    }

    /// A new client in the group, with its record queue when one is wanted,
    /// subscribed to the topics.
    fn connect(&self) -> Result<Live, Error> {
        let c = self.consumer;
        let name = c.common.name.as_str();
        let errors = Arc::new(Notify::new());
        let brokers_down = Arc::new(AtomicBool::new(false));
        let mut config = client_config(&self.brokers);
        config
            .set("group.id", &c.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in &c.settings {
            config.set(k, v);
        }
        let consumer = config
            .create_with_context::<Context, StreamConsumer<Context>>(Context {
                partitions: Arc::clone(&self.partitions),
                readiness: self.ctx.readiness().clone(),
                name: name.to_string(),
                assigned: self.assigned.clone(),
                errors: Arc::clone(&errors),
                brokers_down: Arc::clone(&brokers_down),
                owned: AtomicUsize::new(0),
                records: OnceLock::new(),
                copied: Default::default(),
            })
            .map_err(|e| {
                Error::msg(format!(
                    "Kafka consumer {name}: cannot create the client: {e}"
                ))
            })?;
        let consumer = Arc::new(consumer);
        if let Some(observe) = &c.seams.on_client {
            observe(&consumer);
        }
        let records = self.record_queue(&consumer);
        let topics: Vec<&str> = c.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            drop(records);
            return Err(Error::msg(format!(
                "Kafka consumer {name}: cannot subscribe to {topics:?}: {e}"
            )));
        }
        Ok(Live {
            records,
            consumer,
            fatal: CancellationToken::new(),
            errors,
            brokers_down,
            probing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The queue the partitions' records are forwarded to, when the consumer
    /// wants one and librdkafka can create it.
    fn record_queue(&self, consumer: &StreamConsumer<Context>) -> Option<Arc<RecordQueue>> {
        if !self.consumer.wants_record_queue() {
            return None;
        }
        // SAFETY: the queue is dropped before the client: `Live` declares it
        // first and `run` drops it explicitly before the client on every way
        // out; the context holds it weakly.
        match unsafe { RecordQueue::new(consumer.client().native_ptr()) } {
            Some(created) => {
                let records = Arc::new(created);
                let _ = consumer.context().records.set(Arc::downgrade(&records));
                Some(records)
            }
            None => {
                tracing::warn!(consumer = %self.consumer.common.name, "librdkafka could not create a record queue; records come one at a time");
                None
            }
        }
    }

    /// Hands records to the workers and serves the ticks until shutdown, a
    /// fatal client error, or a worker that cannot take more.
    async fn receive(&self, live: &Live, tracker: &TaskTracker) {
        let stop = &*self.shared.stop;
        let consumer = &live.consumer;
        // By topic, then partition: a record finds its worker without
        // allocating a key.
        let mut workers: HashMap<String, HashMap<i32, Lane>> = HashMap::new();
        let mut ticks = Ticks::new();
        let mut stream = consumer.stream();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = live.fatal.cancelled() => break,
                _ = live.errors.notified() => {
                    if consumer.client().fatal_error().is_some() {
                        live.fatal.cancel();
                    }
                }
                _ = ticks.commit.tick() => self.commit(consumer),
                _ = ticks.lag.tick() => self.refresh_lag(consumer),
                _ = ticks.probe.tick(), if live.brokers_down.load(Ordering::Acquire) => {
                    probe_brokers(consumer, &live.brokers_down, &live.probing, self.ctx.readiness());
                }
                // Rebalances, errors and the records of partitions that
                // could not be forwarded to the record queue.
                received = stream.next() => {
                    // Take what else librdkafka already holds without
                    // waiting, and hand it to the workers in runs: one
                    // channel send and one wake-up per run, not per record.
                    let mut chunk = Vec::new();
                    let mut errors = Vec::new();
                    match received {
                        Some(Ok(message)) => chunk.push(Record::copied(&message)),
                        Some(Err(e)) => errors.push(e),
                        None => break,
                    }
                    while errors.is_empty() && chunk.len() < CHUNK {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(message))) => chunk.push(Record::copied(&message)),
                            Some(Some(Err(e))) => errors.push(e),
                            Some(None) | None => break,
                        }
                    }
                    consumer.context().copied.fetch_add(chunk.len(), Ordering::Relaxed);
                    if !self.dispatch(consumer, &mut ticks, chunk, &mut workers, tracker).await {
                        break;
                    }
                    self.receive_errors(errors, &live.fatal);
                }
                () = ready(live.records.as_deref()) => {
                    let (mut chunk, mut errors) = (Vec::new(), Vec::new());
                    if let Some(records) = &live.records {
                        records.take(&mut chunk, &mut errors);
                    }
                    if !self.dispatch(consumer, &mut ticks, chunk, &mut workers, tracker).await {
                        break;
                    }
                    self.receive_errors(errors, &live.fatal);
                }
            }
        }
    }

    /// The final commit, leaving the group and the close (which serves the
    /// revocation) each wait on the broker inside librdkafka: off the
    /// runtime, so that its workers keep serving meanwhile (`/health`, other
    /// components) and the service's shutdown deadline can still give up on
    /// a close that does not end.
    async fn close(&self, consumer: Arc<StreamConsumer<Context>>) -> Result<(), Error> {
        let name = self.consumer.common.name.as_str();
        let list = offsets(&self.partitions);
        let owner = name.to_string();
        let closed = tokio::task::spawn_blocking(move || {
            if list.count() > 0
                && let Err(e) = consumer.commit(&list, CommitMode::Sync)
            {
                tracing::warn!(consumer = %owner, error = %e, "the final commit failed; the last messages will be redelivered");
            }
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
        self.assigned.set(0);
        closed.map_err(|e| {
            Error::msg(format!(
                "Kafka consumer {name}: closing the client failed: {e}"
            ))
        })
    }

    /// Logs receive errors; a fatal one ends the session.
    pub(super) fn receive_errors(&self, errors: Vec<KafkaError>, fatal: &CancellationToken) {
        let name = &self.consumer.common.name;
        for e in errors {
            match e {
                // Only reported when `enable.partition.eof` is set.
                KafkaError::PartitionEOF(partition) => {
                    tracing::debug!(consumer = %name, partition, "reached the end of a partition");
                }
                // librdkafka returns a fatal error of the group consumer
                // from the poll, as error code `Fatal`.
                e if matches!(e, KafkaError::MessageConsumptionFatal(_))
                    || e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) =>
                {
                    tracing::error!(consumer = %name, error = %e, "fatal Kafka consume error");
                    fatal.cancel();
                }
                e => tracing::warn!(consumer = %name, error = %e, "Kafka receive error"),
            }
        }
    }

    /// Hands `chunk` (records in the order librdkafka returned them) to the
    /// partitions' workers, a run of records of one partition at a time,
    /// starting a worker for a partition that has none (or a revoked one).
    /// A task worker gets each run in one channel send; an inline worker
    /// handles it before this returns. False when shutdown interrupted it.
    pub(super) async fn dispatch(
        &self,
        consumer: &Arc<StreamConsumer<Context>>,
        ticks: &mut Ticks,
        chunk: Vec<Record>,
        workers: &mut HashMap<String, HashMap<i32, Lane>>,
        tracker: &TaskTracker,
    ) -> bool {
        let c = self.consumer;
        let mut rest = chunk;
        while let Some(first) = rest.first() {
            // The run is `rest`'s head of one partition's records; most
            // chunks are one run, which `split_off` leaves in place.
            let len = 1 + rest[1..]
                .iter()
                .take_while(|m| m.same_partition(first))
                .count();
            let tail = rest.split_off(len);
            let run = std::mem::replace(&mut rest, tail);
            let partition = run[0].partition();
            let topic = run[0].topic();
            let partitions = match workers.get_mut(topic) {
                Some(p) => p,
                None => workers.entry(topic.to_string()).or_default(),
            };
            let lane = match partitions.entry(partition) {
                Entry::Occupied(e) if !e.get().state().revoked.load(Ordering::Acquire) => {
                    e.into_mut()
                }
                entry => {
                    let lane =
                        Lane::start(&self.shared, c, tracker, (topic.to_string(), partition));
                    entry.insert_entry(lane).into_mut()
                }
            };
            match lane {
                Lane::Task { tx, .. } => {
                    let run = Run {
                        records: run,
                        client: Arc::clone(consumer),
                    };
                    let sent = tokio::select! {
                        _ = self.shared.stop.cancelled() => return false,
                        sent = tx.send(run) => sent,
                    };
                    if sent.is_err() {
                        tracing::warn!(consumer = %c.common.name, "a partition worker stopped; its messages will be redelivered");
                    }
                }
                Lane::Inline {
                    worker,
                    handler,
                    tally,
                } => {
                    if !self
                        .inline(consumer, ticks, worker, &**handler, tally, &run)
                        .await
                    {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Handles `run` in the receive task, one record after the other.
    /// While a handler waits, the commits and the lag go on at their
    /// intervals. At shutdown a record still in its handler after the
    /// shutdown timeout is abandoned, uncommitted, as a task worker's would
    /// be. False when shutdown interrupted it.
    pub(super) async fn inline(
        &self,
        consumer: &Arc<StreamConsumer<Context>>,
        ticks: &mut Ticks,
        worker: &Worker,
        handler: &dyn MessageHandler,
        tally: &mut Tally,
        run: &[Record],
    ) -> bool {
        let stop = &self.shared.stop;
        let limit = self.ctx.config().shutdown_timeout;
        tally.begin_run();
        let went_on = {
            // Handlers that finish at once complete the whole run in its
            // first poll: no timer is polled per record.
            let records = async {
                for message in run {
                    if !worker.handle(handler, message, tally).await {
                        break;
                    }
                }
            };
            let abandoned = async {
                stop.cancelled().await;
                tokio::time::sleep(limit).await;
            };
            tokio::pin!(records, abandoned);
            loop {
                tokio::select! {
                    biased;
                    () = &mut records => break !stop.is_cancelled(),
                    () = &mut abandoned => {
                        tracing::warn!(consumer = %self.consumer.common.name, "the message in its handler did not finish within the shutdown timeout; the broker will redeliver it");
                        break false;
                    }
                    _ = ticks.commit.tick() => self.commit(consumer),
                    _ = ticks.lag.tick() => self.refresh_lag(consumer),
                }
            }
        };
        tally.end_run();
        went_on
    }

    /// Drops the progress and stops the workers of every partition: a new
    /// client starts from the group's committed offsets.
    pub(super) fn forget_partitions(&self) {
        for (_, state) in self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            state.revoked.store(true, Ordering::Release);
        }
        self.assigned.set(0);
    }
}

/// What the receive loop and every partition worker of a session share.
pub(super) struct SessionShared {
    pub(super) pipeline: Pipeline,
    pub(super) partitions: Partitions,
    pub(super) producer: Option<FutureProducer<LogContext>>,
    pub(super) dlq: Option<String>,
    pub(super) stop: Stopper,
    pub(super) permits: Arc<Semaphore>,
    pub(super) readiness: Readiness,
}

/// The receive loop's periodic work.
pub(super) struct Ticks {
    pub(super) commit: Interval,
    pub(super) lag: Interval,
    /// While all brokers are down: how often to ask whether one is back.
    pub(super) probe: Interval,
}

impl Ticks {
    pub(super) fn new() -> Ticks {
        let mut commit = tokio::time::interval(COMMIT_INTERVAL);
        let mut lag = tokio::time::interval(LAG_INTERVAL);
        // A tick missed while a run was handled fires once, not in a burst.
        commit.set_missed_tick_behavior(MissedTickBehavior::Delay);
        lag.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticks { commit, lag, probe }
    }
}

/// Asks the brokers for metadata on the blocking pool (at most one probe at
/// a time); an answer clears the "all brokers are down" readiness problem.
pub(super) fn probe_brokers(
    consumer: &Arc<StreamConsumer<Context>>,
    brokers_down: &Arc<AtomicBool>,
    probing: &Arc<AtomicBool>,
    readiness: &Readiness,
) {
    if probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (consumer, down, probing, readiness) = (
        Arc::clone(consumer),
        Arc::clone(brokers_down),
        Arc::clone(probing),
        readiness.clone(),
    );
    tokio::task::spawn_blocking(move || {
        if consumer
            .client()
            .fetch_metadata(None, PROBE_TIMEOUT)
            .is_ok()
            && down.swap(false, Ordering::AcqRel)
        {
            readiness.clear_problem(BROKERS_DOWN);
            tracing::info!(consumer = %consumer.context().name, "Kafka brokers answer again");
        }
        probing.store(false, Ordering::Release);
    });
}

/// Records on their way to a task worker, with the client they came from,
/// which must outlive them (fields drop in order).
pub(super) struct Run {
    pub(super) records: Vec<Record>,
    pub(super) client: Arc<StreamConsumer<Context>>,
}

/// Records a batch worker received but did not hand out yet, with their
/// client, which must outlive them (fields drop in order).
#[derive(Default)]
pub(super) struct Pending {
    pub(super) records: std::collections::VecDeque<Record>,
    pub(super) client: Option<Arc<StreamConsumer<Context>>>,
}

impl Pending {
    pub(super) fn add(&mut self, run: Run) {
        self.records.extend(run.records);
        self.client = Some(run.client);
    }
}

/// Resolves when the record queue may hold records; never without one.
pub(super) async fn ready(records: Option<&RecordQueue>) {
    match records {
        Some(records) => records.ready().await,
        None => std::future::pending().await,
    }
}

/// The most records taken from librdkafka in one go without waiting.
pub(super) const CHUNK: usize = queue::MAX_TAKE;

/// One partition's worker, as the receive loop sees it.
pub(super) enum Lane {
    /// A task fed through a channel: used when partitions are processed
    /// concurrently, and for batches (which wait for their records).
    Task {
        tx: mpsc::Sender<Run>,
        state: Arc<PartitionState>,
    },
    /// One record at a time (`concurrency = 1`, single-record handlers):
    /// the receive task handles the records itself, as a hand-written poll
    /// loop would — no copy, channel or wake-up per record.
    Inline {
        worker: Worker,
        handler: Arc<dyn MessageHandler>,
        tally: Tally,
    },
}

impl Lane {
    pub(super) fn start(
        shared: &Arc<SessionShared>,
        consumer: &KafkaConsumer,
        tracker: &TaskTracker,
        partition: Partition,
    ) -> Lane {
        let state = Arc::new(PartitionState {
            next: AtomicI64::new(NOTHING),
            revoked: AtomicBool::new(false),
        });
        let topic: Arc<str> = partition.0.as_str().into();
        shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, Arc::clone(&state));
        let worker = Worker {
            shared: Arc::clone(shared),
            state: Arc::clone(&state),
            topic,
        };
        if let Handler::Single(handler) = &consumer.handler
            && consumer.common.concurrency == 1
        {
            return Lane::Inline {
                tally: Tally::new(&shared.pipeline.metrics),
                worker,
                handler: Arc::clone(handler),
            };
        }
        // Runs of up to CHUNK records: at most 8 × CHUNK held per partition.
        let (tx, rx) = mpsc::channel(8);
        match &consumer.handler {
            Handler::Single(handler) => tracker.spawn(worker.single(rx, Arc::clone(handler))),
            Handler::Batch {
                handler,
                size,
                timeout,
            } => tracker.spawn(worker.batches(
                rx,
                Arc::clone(handler),
                *size,
                *timeout,
                consumer.dedup,
            )),
        };
        Lane::Task { tx, state }
    }

    /// The partition's state, shared with its worker.
    pub(super) fn state(&self) -> &PartitionState {
        match self {
            Lane::Task { state, .. } => state,
            Lane::Inline { worker, .. } => &worker.state,
        }
    }
}
