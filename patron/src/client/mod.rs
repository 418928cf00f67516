//! Instrumented clients: plain values to give the service with
//! [`Service::with_client`](crate::Service::with_client) and take as
//! `Dep<T>`, each propagating trace context and correlation id and
//! recording a span and a duration metric per call.
//!
//! - [`http`] (feature `http-client`): reqwest with optional retry,
//!   circuit breaker and rate limit.
//! - [`sql`] (feature `sql`): a PostgreSQL pool over sqlx whose queries are
//!   spans and a histogram, with a readiness check.
//! - [`kafka`] (feature `kafka`): a producer over rdkafka, awaited or
//!   fire-and-forget, flushed at shutdown.
//! - [`amqp`] (feature `amqp`): a RabbitMQ publisher over lapin with
//!   publisher confirms.
//! - [`sqs`] (feature `sqs`): send and batch send over aws-sdk-sqs.
//! - [`redis`] (feature `redis`): a reconnecting Redis connection whose
//!   commands are spans and a histogram, with a readiness check.
//! - [`grpc`] (feature `grpc`): a tonic channel with propagation, spans,
//!   metrics, retry, circuit breaker and rate limit.
//! - [`capture`]: the producers' test mode, recording what they would send.
//!
//! A client given to `with_client` is provided as a dependency, its
//! readiness (if it has one) joins `GET /ready`, and it is closed — flushed,
//! for producers — after every component has stopped, so a consumer that
//! produces can finish its last message first.

use futures_util::future::BoxFuture;

use crate::error::Error;

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod capture;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http-client")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub(crate) mod kafka_log;
pub(crate) mod produces;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sql")]
pub mod sql;
#[cfg(feature = "sqs")]
pub mod sqs;

/// What the service needs from a client to manage it: a name for logs and
/// `/ready`, an optional readiness check, and how to close it.
///
/// patron's clients implement it; implement it for your own clients to have
/// them checked and closed the same way.
pub trait Client: Send + Sync + 'static {
    /// A short name for logs, `/ready` and errors, such as `sql` or
    /// `kafka producer`.
    fn name(&self) -> String;

    /// Whether [`ready`](Self::ready) means anything; when `false` the
    /// client adds no check to `/ready`.
    fn has_readiness(&self) -> bool {
        false
    }

    /// Checks that the client can do its work now (a database ping, an
    /// open broker connection). Runs on each `GET /ready`.
    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    /// Flushes what is pending and releases connections. Called once, at
    /// shutdown, after every component has stopped; bounded by
    /// `PATRON_SHUTDOWN_TIMEOUT`. Nothing by default, for clients whose
    /// calls are all awaited and whose connections close when dropped.
    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// The service a `{service}.discover` URL host names: such URLs go to the
/// service's instances (feature `discovery`).
#[cfg(any(feature = "http-client", feature = "grpc"))]
pub(crate) fn logical_service(host: &str) -> Option<&str> {
    host.strip_suffix(".discover").filter(|s| !s.is_empty())
}

/// Ends one client call's telemetry: marks `span` failed with the error's
/// message when there is one, and observes the time since `started` in
/// `histogram` (when it could be registered) under `labels`.
#[cfg(any(
    feature = "amqp",
    feature = "kafka",
    feature = "sql",
    feature = "sqs",
    feature = "redis"
))]
pub(crate) fn finish_call(
    span: &tracing::Span,
    error: Option<&dyn std::fmt::Display>,
    histogram: Option<&prometheus::HistogramVec>,
    labels: &[&str],
    started: std::time::Instant,
) {
    if let Some(e) = error {
        span.record("otel.status_code", "ERROR");
        span.record("error.message", tracing::field::display(e));
    }
    if let Some(h) = histogram {
        h.with_label_values(labels)
            .observe(started.elapsed().as_secs_f64());
    }
}
