//! Asynchronous consumers: one message model and one outcome model for every
//! broker.
//!
//! A handler is an `async fn` that takes a [`Message<T>`] (or, with
//! `batch = N`, a [`Batch<T>`]) plus any `Dep<T>`, and returns
//! `Result<(), E>`:
//!
//! - `Ok` acknowledges the message. Nothing is acknowledged before the
//!   handler returned `Ok`, so delivery is at-least-once.
//! - `Err` retries in-process, `retries` times, waiting `backoff` doubled
//!   each time with jitter; then [`OnFailure`] decides: `dlq`, `requeue`,
//!   `drop` or `exit`.
//! - A payload that does not decode is never retried: it goes straight to
//!   the failure strategy, with `requeue` turned into `dlq` (when a DLQ is
//!   named) or `drop`, so it cannot loop.
//!
//! Each message runs in its own span (`otel.kind = consumer`), whose parent
//! is the W3C `traceparent` in the message headers, and every log line the
//! handler writes carries the message's correlation id (`X-Correlation-Id`,
//! generated when absent). Outgoing calls made with patron's clients pass
//! both on.
//!
//! ```
//! use patron::consumer::Message;
//! use patron::prelude::*;
//!
//! #[derive(Deserialize, schemars::JsonSchema)]
//! struct Payment { id: u64, amount: f64 }
//!
//! # #[cfg(feature = "amqp")]
//! #[patron::consumer(amqp = "payments", retries = 3, backoff = "100ms", dlq = "payments.dlq")]
//! async fn record(msg: Message<Json<Payment>>) -> Result<(), patron::Error> {
//!     tracing::info!(id = msg.id, amount = msg.amount, "payment recorded");
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! Consumers can also be built in code, e.g. when the queue name is only
//! known at run time: see [`amqp::AmqpConsumer`] (feature `amqp`) and
//! [`handler_fn`].

// Without a broker feature, the parts only brokers use are unused.
#[cfg(any(feature = "amqp", feature = "sqs", feature = "kafka"))]
// Kafka uses only the plain doubling (dead letters), not the "recently up" cap.
#[cfg_attr(not(any(feature = "amqp", feature = "sqs")), allow(dead_code))]
mod backoff;
#[cfg(any(feature = "amqp", feature = "sqs", feature = "kafka"))]
mod dead_letter;
mod describe;
#[cfg(any(feature = "amqp", feature = "sqs", feature = "kafka"))]
// Kafka never reports the broker up (its client reconnects on its own).
#[cfg_attr(not(any(feature = "amqp", feature = "sqs")), allow(dead_code))]
mod reconnect;
// AMQP and Kafka consumers take batches.
#[cfg_attr(not(any(feature = "amqp", feature = "kafka")), allow(dead_code))]
mod batch;
#[cfg_attr(
    not(any(feature = "amqp", feature = "sqs", feature = "kafka")),
    allow(dead_code, unused_macros)
)]
pub(crate) mod common;
mod handler;
mod memory;
mod message;
#[cfg_attr(
    not(any(feature = "amqp", feature = "sqs", feature = "kafka")),
    allow(dead_code)
)]
pub(crate) mod metrics;
mod policy;
#[cfg_attr(
    not(any(feature = "amqp", feature = "sqs", feature = "kafka")),
    allow(dead_code)
)]
pub(crate) mod process;
pub(crate) mod registry;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "sqs")]
pub mod sqs;

pub use batch::{Batch, BatchCx, FromBatch};
pub use handler::{
    BatchHandler, ConsumerOutput, FnBatchHandler, FnHandler, FromDelivery, FromDeps, HandlerError,
    MessageHandler, batch_handler_fn, handler_fn,
};
#[doc(hidden)]
pub use memory::InMemoryConsumer;
#[cfg(feature = "protobuf")]
pub use message::Protobuf;
pub use message::{
    AmqpMetadata, Decode, DecodeError, Delivery, Headers, Message, Metadata, SqsMetadata,
};
pub use policy::{MAX_BACKOFF, OnFailure, Policy};

/// Header (AMQP) or attribute (SQS) names patron writes on a dead-lettered
/// message.
pub mod dlq_headers {
    /// The last error, as text.
    pub const ERROR: &str = "x-patron-error";
    /// How many times the handler was called.
    pub const ATTEMPTS: &str = "x-patron-attempts";
    /// The queue the message was consumed from.
    pub const QUEUE: &str = "x-patron-original-queue";
    /// The exchange it was published to.
    pub const EXCHANGE: &str = "x-patron-original-exchange";
    /// The routing key it was published with.
    pub const ROUTING_KEY: &str = "x-patron-original-routing-key";
    /// The consumer (handler) that failed.
    pub const CONSUMER: &str = "x-patron-consumer";
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub const FAILED_AT: &str = "x-patron-failed-at";
    /// AMQP: the original `user_id` property, which RabbitMQ would refuse
    /// on a copy published by another user.
    pub const ORIGINAL_USER_ID: &str = "x-patron-original-user-id";
    /// AMQP: the original `expiration` property; a dead letter does not
    /// expire (as with RabbitMQ's own dead-lettering).
    pub const ORIGINAL_EXPIRATION: &str = "x-patron-original-expiration";
}
