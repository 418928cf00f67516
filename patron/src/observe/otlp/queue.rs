//! Batching finished spans to the OTLP exporter on a thread of their own,
//! as the SDK's batch processor does and with the same `OTEL_BSP_*`
//! settings: a bounded queue (a full queue drops and counts), a batch sent
//! when it reaches the batch size or when the schedule delay passes, and
//! everything left flushed on shutdown. A request only puts its span in
//! the queue; the worker is woken by a separate control message once a
//! batch is full, so requests pay for no wake-up in between.
//!
//! Two queues run on it: patron's HTTP server spans ([`ServerRecord`]s,
//! [`RecordQueue`]) and every other span, the SDK's [`SpanData`], through
//! [`QueueProcessor`], which takes the place of the SDK's
//! `BatchSpanProcessor`.
//!
//! The queue is a `VecDeque` behind a mutex, which grows to the most spans
//! it has held. A bounded channel (`sync_channel`, what the SDK's batch
//! processor uses) allocates and writes each of its slots when it is made:
//! 2,048 records of 272 bytes, or of the SDK's larger `SpanData`, memory
//! each service kept whether it exported a span or not. Boxing the records
//! to shrink the slots cost more per span than the lock (a record freed on
//! the worker's thread leaves the request thread's allocator cache empty).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::OtlpExporter;
use super::record::ServerRecord;

/// What a queue batches, and how a batch of it is exported.
pub(crate) trait Exportable: Send + Sized + 'static {
    /// What the queue's warnings call its items.
    const WHAT: &'static str;
    /// The worker thread's name.
    const THREAD: &'static str;
    /// Exports one batch.
    fn export(exporter: &OtlpExporter, batch: &[Self]) -> OTelSdkResult;
}

impl Exportable for ServerRecord {
    const WHAT: &'static str = "HTTP server spans";
    const THREAD: &'static str = "patron-http-spans";
    fn export(exporter: &OtlpExporter, batch: &[Self]) -> OTelSdkResult {
        exporter.export_records(batch)
    }
}

impl Exportable for SpanData {
    const WHAT: &'static str = "spans";
    const THREAD: &'static str = "patron-spans";
    fn export(exporter: &OtlpExporter, batch: &[Self]) -> OTelSdkResult {
        exporter.export_now(batch)
    }
}

/// The queue of patron's HTTP server spans.
pub(crate) type RecordQueue = SpanQueue<ServerRecord>;

/// The SDK's defaults for `OTEL_BSP_SCHEDULE_DELAY` (ms),
/// `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
const DEFAULT_DELAY: Duration = Duration::from_millis(5000);
const DEFAULT_QUEUE: usize = 2048;
const DEFAULT_BATCH: usize = 512;

/// The batch settings, read from the same variables as the SDK's batch
/// processor; a value that does not parse is ignored, as there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QueueConfig {
    pub(crate) delay: Duration,
    pub(crate) queue: usize,
    pub(crate) batch: usize,
}

impl QueueConfig {
    pub(crate) fn from_env(lookup: &impl Fn(&str) -> Option<String>) -> Self {
        let number = |var: &str| lookup(var).and_then(|v| v.trim().parse::<u64>().ok());
        let queue = number("OTEL_BSP_MAX_QUEUE_SIZE")
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_QUEUE);
        let batch = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_BATCH)
            .min(queue);
        QueueConfig {
            delay: number("OTEL_BSP_SCHEDULE_DELAY").map_or(DEFAULT_DELAY, Duration::from_millis),
            queue,
            batch,
        }
    }
}

/// Messages to the worker besides the records themselves.
#[derive(Debug)]
enum Control {
    /// A batch is full.
    Export,
    /// Export everything queued and answer.
    Flush(SyncSender<()>),
    /// Export everything queued, answer, and stop.
    Shutdown(SyncSender<()>),
}

/// What the requests and the worker share.
#[derive(Debug)]
struct Shared<T> {
    /// The queued spans.
    records: Mutex<Records<T>>,
    /// Whether an `Export` message is on its way.
    kick_sent: AtomicBool,
}

/// The queue proper, under the lock.
#[derive(Debug)]
struct Records<T> {
    queued: VecDeque<T>,
    /// Set when the worker stops: later spans are dropped.
    closed: bool,
}

impl<T> Shared<T> {
    fn new() -> Self {
        Shared {
            records: Mutex::new(Records {
                queued: VecDeque::new(),
                closed: false,
            }),
            kick_sent: AtomicBool::new(false),
        }
    }

    /// The spans. A thread that panicked while holding the lock cannot
    /// have left the queue half-changed (`push_back` and `drain` do not
    /// panic midway), so a poisoned lock is taken as it is.
    fn records(&self) -> MutexGuard<'_, Records<T>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The producing side, held by the running exporter.
#[derive(Debug)]
pub(crate) struct SpanQueue<T> {
    control: SyncSender<Control>,
    shared: Arc<Shared<T>>,
    queue: usize,
    batch: usize,
    dropped: AtomicU64,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Exportable> SpanQueue<T> {
    /// Starts the worker thread exporting through `exporter`.
    pub(crate) fn start(
        exporter: Arc<OtlpExporter>,
        config: QueueConfig,
    ) -> Result<Self, std::io::Error> {
        let (control, control_rx) = sync_channel(64);
        let shared = Arc::new(Shared::new());
        let worker = Worker {
            control: control_rx,
            shared: shared.clone(),
            exporter,
            config,
            batch: Vec::with_capacity(config.batch),
        };
        let handle = std::thread::Builder::new()
            .name(T::THREAD.into())
            .spawn(move || worker.run())?;
        Ok(SpanQueue {
            control,
            shared,
            queue: config.queue,
            batch: config.batch,
            dropped: AtomicU64::new(0),
            worker: Mutex::new(Some(handle)),
        })
    }

    /// Queues a finished span; drops it (counted) when the queue is full or
    /// the exporter has shut down.
    pub(crate) fn push(&self, record: T) {
        let queued = {
            let mut records = self.shared.records();
            if records.closed || records.queued.len() >= self.queue {
                None
            } else {
                records.queued.push_back(record);
                Some(records.queued.len())
            }
        };
        match queued {
            Some(queued) => {
                if queued >= self.batch
                    && !self.shared.kick_sent.load(Ordering::Relaxed)
                    && !self.shared.kick_sent.swap(true, Ordering::Relaxed)
                    && self.control.try_send(Control::Export).is_err()
                {
                    self.shared.kick_sent.store(false, Ordering::Relaxed);
                }
            }
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Spans dropped so far.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Exports what is queued now, waiting at most `timeout` for it.
    pub(crate) fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (done, finished) = sync_channel(1);
        if self.control.send(Control::Flush(done)).is_err() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        finished
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }

    /// Exports what is queued and stops the worker, waiting at most
    /// `timeout`. Spans ended afterwards are dropped. An error when it was
    /// stopped already or the export took longer (which is also printed:
    /// the logs may be gone by then).
    pub(crate) fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        let (done, finished) = sync_channel(1);
        if self.control.send(Control::Shutdown(done)).is_err() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let result = match finished.recv_timeout(timeout) {
            Ok(()) => {
                let handle = self.worker.lock().ok().and_then(|mut w| w.take());
                if let Some(handle) = handle {
                    let _ = handle.join();
                }
                Ok(())
            }
            Err(_) => {
                eprintln!(
                    "warning: exporting the last {} took longer than {timeout:?}",
                    T::WHAT
                );
                Err(OTelSdkError::Timeout(timeout))
            }
        };
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            eprintln!(
                "warning: {dropped} {} were dropped because the export queue was full",
                T::WHAT
            );
        }
        result
    }
}

/// The SDK's spans (everything but the HTTP server spans) batched on a
/// [`SpanQueue`]: the SDK's `BatchSpanProcessor` with the same settings
/// and behaviour, whose queue grows instead of being made whole at
/// start-up. The exporter is shut down with the processor, as the SDK's
/// processor shuts down its exporter.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    queue: SpanQueue<SpanData>,
    exporter: Arc<OtlpExporter>,
}

impl QueueProcessor {
    /// Starts the processor's worker thread, exporting through `exporter`.
    pub(crate) fn start(
        exporter: Arc<OtlpExporter>,
        config: QueueConfig,
    ) -> Result<Self, std::io::Error> {
        Ok(QueueProcessor {
            queue: SpanQueue::start(exporter.clone(), config)?,
            exporter,
        })
    }
}

/// How long `force_flush` waits, as the SDK's batch processor does.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.queue.push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.queue.flush(FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let queued = self.queue.shutdown(timeout);
        let exporter = self.exporter.shut_down();
        queued.and(exporter)
    }
}

/// The consuming side, on its own thread.
struct Worker<T> {
    control: Receiver<Control>,
    shared: Arc<Shared<T>>,
    exporter: Arc<OtlpExporter>,
    config: QueueConfig,
    batch: Vec<T>,
}

impl<T: Exportable> Worker<T> {
    fn run(mut self) {
        let mut next = Instant::now() + self.config.delay;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match self.control.recv_timeout(wait) {
                Ok(Control::Export) => {
                    self.shared.kick_sent.store(false, Ordering::Relaxed);
                    self.export_batch();
                }
                Ok(Control::Flush(done)) => {
                    self.export_all();
                    let _ = done.send(());
                }
                Ok(Control::Shutdown(done)) => {
                    self.shared.records().closed = true;
                    self.export_all();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.export_all();
                    next = Instant::now() + self.config.delay;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.shared.records().closed = true;
                    self.export_all();
                    return;
                }
            }
        }
    }

    /// Exports what was queued when called, in batches.
    fn export_all(&mut self) {
        let mut left = self.shared.records().queued.len();
        while left > 0 {
            let sent = self.export_batch();
            if sent == 0 {
                break;
            }
            left = left.saturating_sub(sent);
        }
    }

    /// Exports up to one batch; returns how many records it took.
    fn export_batch(&mut self) -> usize {
        {
            let mut records = self.shared.records();
            let take = records.queued.len().min(self.config.batch);
            self.batch.extend(records.queued.drain(..take));
        }
        let taken = self.batch.len();
        if taken == 0 {
            return 0;
        }
        if let Err(e) = T::export(&self.exporter, &self.batch) {
            tracing::warn!(
                target: "patron::trace",
                error = %e,
                "exporting {taken} {} failed",
                T::WHAT
            );
        }
        self.batch.clear();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::trace::tests::with;

    #[test]
    fn batch_settings_follow_the_sdk_variables() {
        assert_eq!(
            QueueConfig::from_env(&with(&[])),
            QueueConfig {
                delay: DEFAULT_DELAY,
                queue: DEFAULT_QUEUE,
                batch: DEFAULT_BATCH
            }
        );
        let set = QueueConfig::from_env(&with(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
        ]));
        assert_eq!(set.delay, Duration::from_millis(100));
        assert_eq!(set.queue, 64);
        assert_eq!(set.batch, 64, "a batch never exceeds the queue");
        let bad = QueueConfig::from_env(&with(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ]));
        assert_eq!((bad.delay, bad.queue), (DEFAULT_DELAY, DEFAULT_QUEUE));
    }
}
