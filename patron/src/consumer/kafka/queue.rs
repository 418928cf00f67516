//! Taking Kafka records from librdkafka in batches.
//!
//! rdkafka's `StreamConsumer` hands out one record per poll, and each poll
//! is one trip through librdkafka's event queue (a lock, clock reads, an
//! event object and an `Arc` per record), most of what a hand-written loop
//! costs. Here each assigned partition's fetch queue is
//! forwarded to a [`RecordQueue`] of our own, which is drained up to a few
//! hundred records at a time with `rd_kafka_consume_batch_queue`; the
//! consumer's own queue still carries rebalances, errors and commit results
//! and is polled as before.
//!
//! librdkafka only forwards a partition's records to another queue if asked
//! before its fetch starts, so [`RecordQueue::forward`] is called for each
//! partition from the rebalance callback, before the assignment takes
//! effect. A partition it could not forward keeps delivering through the
//! consumer's queue, which is still read (as [`Record::copied`]).

use std::ffi::{CStr, CString, c_void};
use std::ptr::{NonNull, null, null_mut};
use std::sync::Arc;

use rdkafka::bindings as rd;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _, OwnedMessage};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use tokio::sync::Notify;

/// The most records [`RecordQueue::take`] takes at once.
pub(crate) const MAX_TAKE: usize = 256;

/// An application queue in one client that assigned partitions' records
/// are forwarded to. Dropped before the client (it is only valid while
/// the client is).
pub(crate) struct RecordQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    client: NonNull<rd::rd_kafka_t>,
    /// Notified by librdkafka (from its threads) when the queue goes from
    /// empty to non-empty.
    ready: Arc<Notify>,
}

// SAFETY: librdkafka queues and handles are thread-safe; the pointers are
// only passed to librdkafka functions documented as callable from any
// thread.
unsafe impl Send for RecordQueue {}
// SAFETY: as above; `&RecordQueue` only calls thread-safe functions.
unsafe impl Sync for RecordQueue {}

/// Called by librdkafka, with the queue's lock held, when a record (or an
/// error) lands in the empty queue.
unsafe extern "C" fn wake(_client: *mut rd::rd_kafka_t, ready: *mut c_void) {
    // SAFETY: `ready` is the `Notify` the queue owns; the callback is
    // disabled before that is dropped.
    unsafe { (*(ready as *const Notify)).notify_one() };
}

impl RecordQueue {
    /// A new queue in `client` (librdkafka's handle, which must outlive
    /// the queue). `None` if librdkafka could not make one.
    ///
    /// # Safety
    /// `client` is a live consumer handle that is destroyed only after the
    /// returned queue was dropped.
    pub(crate) unsafe fn new(client: *mut rd::rd_kafka_t) -> Option<RecordQueue> {
        let client = NonNull::new(client)?;
        // SAFETY: `client` is live (the caller's promise).
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) })?;
        let ready = Arc::new(Notify::new());
        // SAFETY: the queue is live; the opaque pointer stays valid until
        // the callback is disabled in `drop`.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(wake),
                Arc::as_ptr(&ready) as *mut c_void,
            )
        };
        Some(RecordQueue {
            queue,
            client,
            ready,
        })
    }

    /// Sends `topic`/`partition`'s records to this queue from its next
    /// fetch start on; false if librdkafka does not know the partition.
    pub(crate) fn forward(&self, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: the client is live while the queue is; the partition
        // queue handle is released right after use.
        unsafe {
            let fetched =
                rd::rd_kafka_queue_get_partition(self.client.as_ptr(), topic.as_ptr(), partition);
            if fetched.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(fetched, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(fetched);
        }
        true
    }

    /// Resolves when records (or errors) may be waiting.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Takes up to [`MAX_TAKE`] waiting records without blocking, in the
    /// order librdkafka queued them, into `records`, and consume errors
    /// into `errors`. When it took that many, more may wait: the queue
    /// wakes [`Self::ready`] again itself.
    pub(crate) fn take(&self, records: &mut Vec<Record>, errors: &mut Vec<KafkaError>) {
        let mut taken = [null_mut::<rd::rd_kafka_message_t>(); MAX_TAKE];
        // SAFETY: the queue is live and `taken` has room for `MAX_TAKE`
        // pointers.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, taken.as_mut_ptr(), MAX_TAKE)
        };
        let n = usize::try_from(n).unwrap_or(0).min(MAX_TAKE);
        records.reserve(n);
        for &message in &taken[..n] {
            let Some(message) = NonNull::new(message) else {
                continue;
            };
            // SAFETY: librdkafka handed this message to us; it is ours to
            // destroy, once.
            match unsafe { Record::take(message) } {
                Ok(record) => records.push(record),
                Err(e) => errors.push(e),
            }
        }
        if n == MAX_TAKE {
            // The callback only fires on empty → non-empty.
            self.ready.notify_one();
        }
    }
}

impl Drop for RecordQueue {
    fn drop(&mut self) {
        // SAFETY: disabling takes the queue's lock, so no callback runs
        // after it returns and the `Notify` may go; the queue handle is
        // released once. Partitions still forwarded here hold their own
        // reference to the queue inside librdkafka.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}

/// One Kafka record, owned: taken from a [`RecordQueue`] (librdkafka's
/// message, destroyed on drop) or copied from the consumer's queue.
pub(crate) struct Record(Source);

enum Source {
    Native {
        message: NonNull<rd::rd_kafka_message_t>,
        /// The parsed headers (owned by the message), null when none.
        headers: *const rd::rd_kafka_headers_t,
    },
    Copied(OwnedMessage),
}

// SAFETY: a librdkafka message may be read and destroyed from any thread;
// the record only reads it (its headers were parsed when it was taken, the
// one lazily mutating call), so shared references are fine too.
unsafe impl Send for Record {}
// SAFETY: as above.
unsafe impl Sync for Record {}

impl Record {
    /// The record `message` holds, or its error (the message destroyed).
    ///
    /// # Safety
    /// `message` came from librdkafka and is not destroyed elsewhere.
    unsafe fn take(message: NonNull<rd::rd_kafka_message_t>) -> Result<Record, KafkaError> {
        // SAFETY: the message is live.
        let m = unsafe { message.as_ref() };
        if m.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            let code = RDKafkaErrorCode::from(m.err);
            let partition = m.partition;
            // SAFETY: ours to destroy, once.
            unsafe { rd::rd_kafka_message_destroy(message.as_ptr()) };
            return Err(match code {
                RDKafkaErrorCode::PartitionEOF => KafkaError::PartitionEOF(partition),
                RDKafkaErrorCode::Fatal => KafkaError::MessageConsumptionFatal(code),
                _ => KafkaError::MessageConsumption(code),
            });
        }
        let mut headers = null_mut();
        // SAFETY: the message is live; the headers it returns are owned by
        // it. A record without headers returns an error code and no list.
        let parsed = unsafe { rd::rd_kafka_message_headers(message.as_ptr(), &mut headers) };
        if parsed != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            headers = null_mut();
        }
        Ok(Record(Source::Native { message, headers }))
    }

    /// A copy of a record the consumer's own queue returned.
    pub(crate) fn copied(message: &BorrowedMessage<'_>) -> Record {
        Record(Source::Copied(message.detach()))
    }

    /// The record's topic.
    pub(crate) fn topic(&self) -> &str {
        match &self.0 {
            Source::Native { message, .. } => {
                // SAFETY: a consumed message's topic handle and its name
                // live as long as the message.
                let name = unsafe { rd::rd_kafka_topic_name(message.as_ref().rkt) };
                if name.is_null() {
                    return "";
                }
                // SAFETY: a NUL-terminated name owned by the topic handle.
                unsafe { CStr::from_ptr(name) }.to_str().unwrap_or_default()
            }
            Source::Copied(m) => m.topic(),
        }
    }

    /// Whether `other` is a record of the same topic and partition.
    pub(crate) fn same_partition(&self, other: &Record) -> bool {
        if self.partition() != other.partition() {
            return false;
        }
        match (&self.0, &other.0) {
            // SAFETY: both messages live as long as their records. One
            // client has one topic handle per topic.
            (Source::Native { message: a, .. }, Source::Native { message: b, .. }) => unsafe {
                a.as_ref().rkt == b.as_ref().rkt
            },
            _ => self.topic() == other.topic(),
        }
    }

    /// The record's partition.
    pub(crate) fn partition(&self) -> i32 {
        match &self.0 {
            // SAFETY: the message lives as long as the record.
            Source::Native { message, .. } => unsafe { message.as_ref() }.partition,
            Source::Copied(m) => m.partition(),
        }
    }

    /// The record's offset.
    pub(crate) fn offset(&self) -> i64 {
        match &self.0 {
            // SAFETY: the message lives as long as the record.
            Source::Native { message, .. } => unsafe { message.as_ref() }.offset,
            Source::Copied(m) => m.offset(),
        }
    }

    /// The record's key, if it has one.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        match &self.0 {
            // SAFETY: the message lives as long as the record; `key`
            // points to `key_len` bytes it owns.
            Source::Native { message, .. } => unsafe {
                let m = message.as_ref();
                bytes(m.key, m.key_len)
            },
            Source::Copied(m) => m.key(),
        }
    }

    /// The record's value, if it has one.
    pub(crate) fn payload(&self) -> Option<&[u8]> {
        match &self.0 {
            // SAFETY: the message lives as long as the record; `payload`
            // points to `len` bytes it owns.
            Source::Native { message, .. } => unsafe {
                let m = message.as_ref();
                bytes(m.payload, m.len)
            },
            Source::Copied(m) => m.payload(),
        }
    }

    /// The record's timestamp in milliseconds since the Unix epoch, when
    /// it has one.
    pub(crate) fn timestamp(&self) -> Option<i64> {
        match &self.0 {
            Source::Native { message, .. } => {
                let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                // SAFETY: the message is live.
                let millis = unsafe { rd::rd_kafka_message_timestamp(message.as_ptr(), &mut kind) };
                (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
                    && millis >= 0)
                    .then_some(millis)
            }
            Source::Copied(m) => m.timestamp().to_millis(),
        }
    }

    /// Calls `each` with every header's name and value, in record order.
    pub(crate) fn for_each_header(&self, mut each: impl FnMut(&str, Option<&[u8]>)) {
        match &self.0 {
            Source::Native { headers, .. } => {
                if headers.is_null() {
                    return;
                }
                // SAFETY: the list is owned by the message, which is live.
                let count = unsafe { rd::rd_kafka_header_cnt(*headers) };
                for i in 0..count {
                    let (mut name, mut value, mut size) = (null(), null(), 0);
                    // SAFETY: `i` is in range; the name and value point
                    // into the list.
                    let found = unsafe {
                        rd::rd_kafka_header_get_all(*headers, i, &mut name, &mut value, &mut size)
                    };
                    if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                        continue;
                    }
                    // SAFETY: a NUL-terminated name owned by the list.
                    let Ok(name) = unsafe { CStr::from_ptr(name) }.to_str() else {
                        continue;
                    };
                    // SAFETY: `value` points to `size` bytes owned by the
                    // list, or is null for a header without a value.
                    each(name, unsafe { bytes(value, size) });
                }
            }
            Source::Copied(m) => {
                if let Some(headers) = m.headers() {
                    for h in headers.iter() {
                        each(h.key, h.value);
                    }
                }
            }
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Source::Native { message, .. } = self.0 {
            // SAFETY: the record owns the message (its headers with it).
            unsafe { rd::rd_kafka_message_destroy(message.as_ptr()) };
        }
    }
}

/// `len` bytes at `data`, or `None` for a null pointer.
///
/// # Safety
/// A non-null `data` points to `len` readable bytes that outlive `'a`.
unsafe fn bytes<'a>(data: *const c_void, len: usize) -> Option<&'a [u8]> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    Some(unsafe { std::slice::from_raw_parts(data as *const u8, len) })
}
