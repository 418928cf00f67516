//! Batching finished HTTP server spans ([`ServerRecord`]s) to the OTLP
//! exporter on a thread of their own, as the SDK's batch processor does
//! for its spans and with the same `OTEL_BSP_*` settings: a bounded queue
//! (a full queue drops and counts), a batch sent when it reaches the batch
//! size or when the schedule delay passes, and everything left flushed on
//! shutdown. A request only puts its record in the queue; the worker is
//! woken by a separate control message once a batch is full, so requests
//! pay for no wake-up in between.
//!
//! The queue is a `VecDeque` behind a mutex, which grows to the most
//! records it has held. A bounded channel (`sync_channel`) allocates and
//! writes each of its slots when it is made: 2,048 records of 272 bytes,
//! half a megabyte each service kept whether it exported a span or not.
//! Boxing the records to shrink the slots cost more per span than the lock
//! (a record freed on the worker's thread leaves the request thread's
//! allocator cache empty).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::OtlpExporter;
use super::record::ServerRecord;

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
    /// Export everything queued, answer, and stop.
    Shutdown(SyncSender<()>),
}

/// What the requests and the worker share.
#[derive(Debug, Default)]
struct Shared {
    /// The queued records.
    records: Mutex<Records>,
    /// Whether an `Export` message is on its way.
    kick_sent: AtomicBool,
}

/// The queue proper, under the lock.
#[derive(Debug, Default)]
struct Records {
    queued: VecDeque<ServerRecord>,
    /// Set when the worker stops: later records are dropped.
    closed: bool,
}

impl Shared {
    /// The records. A request that panicked while holding the lock cannot
    /// have left the queue half-changed (`push_back` and `drain` do not
    /// panic midway), so a poisoned lock is taken as it is.
    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The producing side, held by the running exporter.
#[derive(Debug)]
pub(crate) struct RecordQueue {
    control: SyncSender<Control>,
    shared: Arc<Shared>,
    queue: usize,
    batch: usize,
    dropped: AtomicU64,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl RecordQueue {
    /// Starts the worker thread exporting through `exporter`.
    pub(crate) fn start(
        exporter: Arc<OtlpExporter>,
        config: QueueConfig,
    ) -> Result<Self, std::io::Error> {
        let (control, control_rx) = sync_channel(64);
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            control: control_rx,
            shared: shared.clone(),
            exporter,
            config,
            batch: Vec::with_capacity(config.batch),
        };
        let handle = std::thread::Builder::new()
            .name("patron-http-spans".into())
            .spawn(move || worker.run())?;
        Ok(RecordQueue {
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
    pub(crate) fn push(&self, record: ServerRecord) {
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

    /// Exports what is queued and stops the worker, waiting at most
    /// `timeout`. Spans ended afterwards are dropped.
    pub(crate) fn shutdown(&self, timeout: Duration) {
        let (done, finished) = sync_channel(1);
        if self.control.send(Control::Shutdown(done)).is_err() {
            return; // already stopped
        }
        match finished.recv_timeout(timeout) {
            Ok(()) => {
                let handle = self.worker.lock().ok().and_then(|mut w| w.take());
                if let Some(handle) = handle {
                    let _ = handle.join();
                }
            }
            Err(_) => eprintln!(
                "warning: exporting the last HTTP server spans took longer than {timeout:?}"
            ),
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            eprintln!(
                "warning: {dropped} HTTP server spans were dropped because the export queue was full"
            );
        }
    }
}

/// The consuming side, on its own thread.
struct Worker {
    control: Receiver<Control>,
    shared: Arc<Shared>,
    exporter: Arc<OtlpExporter>,
    config: QueueConfig,
    batch: Vec<ServerRecord>,
}

impl Worker {
    fn run(mut self) {
        let mut next = Instant::now() + self.config.delay;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match self.control.recv_timeout(wait) {
                Ok(Control::Export) => {
                    self.shared.kick_sent.store(false, Ordering::Relaxed);
                    self.export_batch();
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
        if let Err(e) = self.exporter.export_records(&self.batch) {
            tracing::warn!(
                target: "patron::trace",
                error = %e,
                "exporting {taken} HTTP server spans failed"
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
