//! [`Batch<T>`]: the messages a batch consumer handler receives, with
//! per-message `ack` and `nack` that the consumer applies when the handler
//! returns.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::handler::{BatchHandler, MessageHandler};
use super::message::{Decode, DecodeError, Delivery, Message};

/// How a consumer calls its handler: a message at a time, or in batches of
/// up to `size` cut after `timeout` from the first message.
pub(crate) enum Handler {
    Single(Arc<dyn MessageHandler>),
    Batch {
        handler: Arc<dyn BatchHandler>,
        size: usize,
        timeout: Duration,
    },
}

impl Handler {
    /// The largest number of messages one call takes, once the batch
    /// settings are checked.
    pub(crate) fn checked_size(&self) -> Result<usize, String> {
        match self {
            Handler::Single(_) => Ok(1),
            Handler::Batch { size: 0, .. } => Err("the batch size must be at least 1".into()),
            Handler::Batch { timeout, .. } if timeout.is_zero() => {
                Err("the batch timeout must be greater than zero".into())
            }
            Handler::Batch { size, .. } => Ok(*size),
        }
    }
}

/// What the handler said about one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Nothing: the handler's return value decides.
    Pending,
    /// Acknowledge, whatever the handler returns.
    Ack,
    /// Failed for this reason: apply `on_failure` now, without retries.
    Nack(String),
}

type Marks = Arc<Mutex<Vec<Mark>>>;

/// A batch of decoded messages.
///
/// When the handler returns `Ok`, every message it did not
/// [`nack`](Batch::nack) is acknowledged. When it returns `Err`, the
/// messages it did not [`ack`](Batch::ack) are retried together, then go to
/// `on_failure`. A nacked message goes to `on_failure` at once.
///
/// ```
/// use patron::consumer::Batch;
/// use patron::prelude::*;
///
/// async fn store(batch: Batch<String>) -> Result<(), patron::Error> {
///     for (i, msg) in batch.iter().enumerate() {
///         if msg.payload().is_empty() {
///             batch.nack(i, "empty line");
///         }
///     }
///     Ok(())
/// }
/// ```
pub struct Batch<T> {
    messages: Vec<Message<T>>,
    /// Index into the deliveries of each message.
    origin: Vec<usize>,
    marks: Marks,
}

impl<T> Batch<T> {
    /// A batch of messages built in code, for calling a handler directly in
    /// a unit test.
    pub fn new(messages: Vec<Message<T>>) -> Self {
        let n = messages.len();
        Batch {
            messages,
            origin: (0..n).collect(),
            marks: Arc::new(Mutex::new(vec![Mark::Pending; n])),
        }
    }

    /// Decodes `deliveries`; those that fail are reported in the context
    /// and left out of the batch.
    pub(crate) fn decode(deliveries: &[Delivery], attempt: u32) -> (Self, BatchCx)
    where
        T: Decode,
    {
        let mut messages = Vec::with_capacity(deliveries.len());
        let mut origin = Vec::with_capacity(deliveries.len());
        let mut poison = Vec::new();
        for (i, d) in deliveries.iter().enumerate() {
            match d.decode::<T>(attempt) {
                Ok(m) => {
                    messages.push(m);
                    origin.push(i);
                }
                Err(e) => poison.push((i, e)),
            }
        }
        let marks: Marks = Arc::new(Mutex::new(vec![Mark::Pending; deliveries.len()]));
        let cx = BatchCx {
            poison,
            marks: Arc::clone(&marks),
        };
        (
            Batch {
                messages,
                origin,
                marks,
            },
            cx,
        )
    }

    /// The number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages, in delivery order.
    pub fn messages(&self) -> &[Message<T>] {
        &self.messages
    }

    /// Iterates over the messages.
    pub fn iter(&self) -> std::slice::Iter<'_, Message<T>> {
        self.messages.iter()
    }

    /// Acknowledges message `index` even if the handler then returns `Err`.
    /// Out-of-range indexes are ignored.
    pub fn ack(&self, index: usize) {
        self.mark(index, Mark::Ack);
    }

    /// Marks message `index` failed: it goes to `on_failure` without
    /// retries, even if the handler returns `Ok`. Out-of-range indexes are
    /// ignored.
    pub fn nack(&self, index: usize, reason: impl fmt::Display) {
        self.mark(index, Mark::Nack(reason.to_string()));
    }

    fn mark(&self, index: usize, mark: Mark) {
        if let Some(&at) = self.origin.get(index) {
            let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = marks.get_mut(at) {
                *slot = mark;
            }
        }
    }
}

impl<'a, T> IntoIterator for &'a Batch<T> {
    type Item = &'a Message<T>;
    type IntoIter = std::slice::Iter<'a, Message<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.messages.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

/// What the consumer learns from one batch call besides the handler's
/// result: payloads that did not decode and the handler's marks, by
/// delivery index.
#[derive(Debug)]
pub struct BatchCx {
    pub(crate) poison: Vec<(usize, DecodeError)>,
    marks: Marks,
}

impl BatchCx {
    /// The marks, once the handler has returned.
    pub(crate) fn marks(&self) -> Vec<Mark> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Builds a [`Batch`] argument; implemented for `Batch<T>` only.
#[diagnostic::on_unimplemented(
    message = "with `batch = N`, the handler takes `Batch<T>` (e.g. `Batch<Json<Order>>`), not `{Self}`",
    label = "expected `Batch<T>`"
)]
pub trait FromBatch: Sized {
    /// Decodes the batch.
    fn from_batch(deliveries: &[Delivery], attempt: u32) -> (Self, BatchCx);
}

impl<T: Decode> FromBatch for Batch<T> {
    fn from_batch(deliveries: &[Delivery], attempt: u32) -> (Self, BatchCx) {
        Batch::decode(deliveries, attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{Headers, Metadata};

    #[test]
    fn poison_is_left_out_and_marks_map_to_deliveries() {
        let ds: Vec<Delivery> = [&b"a"[..], &[0xff], b"c"]
            .iter()
            .map(|b| Delivery::new(b.to_vec(), None, Headers::new(), Metadata::None))
            .collect();
        let (batch, cx) = Batch::<String>::decode(&ds, 1);
        assert_eq!(batch.len(), 2);
        assert_eq!(cx.poison.len(), 1);
        assert_eq!(cx.poison[0].0, 1);
        batch.nack(1, "bad c");
        batch.ack(0);
        batch.ack(9);
        assert_eq!(
            cx.marks(),
            vec![Mark::Ack, Mark::Pending, Mark::Nack("bad c".into())]
        );
    }
}
