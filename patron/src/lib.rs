//! # patron
//!
//! A framework for microservices: write plain `async fn`s, put an attribute
//! on each, and get a production service — an HTTP server with health and
//! info endpoints, correlation ids, structured logs, timeouts, body limits,
//! panic recovery, authentication and graceful shutdown — assembled through
//! registration, with no manual wiring.
//!
//! ```no_run
//! use patron::prelude::*;
//!
//! #[derive(Deserialize, schemars::JsonSchema)]
//! struct Calc { wealth: f64, nisab: f64 }
//!
//! #[derive(Serialize, schemars::JsonSchema)]
//! struct Zakat { zakat_due: f64, is_eligible: bool }
//!
//! #[patron::route(GET "/index")]
//! async fn index() -> &'static str { "hello" }
//!
//! #[patron::route(POST "/calculate", auth = ApiKey, timeout = "2s")]
//! async fn calculate(Json(c): Json<Calc>) -> Result<Json<Zakat>, patron::Error> {
//!     let eligible = c.wealth >= c.nisab;
//!     let zakat_due = if eligible { (c.wealth - c.nisab) * 0.025 } else { 0.0 };
//!     Ok(Json(Zakat { zakat_due, is_eligible: eligible }))
//! }
//!
//! #[patron::main]
//! async fn main(service: Service) -> patron::Result<Service> {
//!     Ok(service.provide(ApiKey::from_env("PATRON_API_KEYS")?))
//! }
//! ```
//!
//! ## How it fits together
//!
//! - [`route`] registers a handler in a registry linked into the binary.
//!   The function itself is untouched and can be called from unit tests.
//! - [`main`] builds the runtime, reads [`config::Config`] from `PATRON_*`
//!   variables, sets up logging, runs your body to configure the
//!   [`Service`], validates it (duplicate routes, missing `Dep<T>`s and
//!   authenticators are start-up errors, reported before any port opens)
//!   and runs it until SIGINT/SIGTERM.
//! - Handlers take axum extractors plus [`Dep<T>`] for anything the
//!   service [`provide`](Service::provide)d, and return anything
//!   `IntoResponse`, including `Result<T, patron::Error>`. Errors and
//!   extractor rejections become RFC 9457 problem bodies.
//! - [`component::Component`]s run beside the HTTP server and stop with it.
//! - [`test::TestServer`] runs a service in-process for tests.

#![warn(missing_docs)]

mod cache;
pub mod client;
pub mod component;
pub mod config;
pub mod consumer;
mod context;
mod contract;
mod deps;
mod describe;
#[cfg(feature = "discovery")]
pub mod discovery;
mod error;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod http;
pub mod observe;
mod panic;
pub mod reliability;
mod service;
pub mod test;

#[doc(hidden)]
pub mod __private;

#[doc(hidden)]
pub use consumer::registry::{ConsumerDef, consumers as registered_consumers};
pub use deps::{Dep, Deps};
pub use error::{Error, PROBLEM_JSON, Result};
pub use http::registry::RouteDef;
pub use service::{BoundService, MainOutput, Service, ServiceError, StartupError};

/// Registers an `async fn` as an HTTP route.
///
/// # Grammar
///
/// ```text
/// #[patron::route(METHOD "/path" (, key = value)*)]
/// METHOD     := GET | POST | PUT | PATCH | DELETE | HEAD | OPTIONS
/// "/path"    := starts with `/`; parameters as `{name}`, a catch-all as `{*rest}` at the end
/// auth       = Type            // implements patron::http::Authenticator; the service must provide one
/// middleware = [f, g]          // axum `from_fn` functions, run in this order, after auth
/// trace      = false           // no request span for this route
/// timeout    = "2s"            // 503 past it (default PATRON_HTTP_HANDLER_TIMEOUT)
/// body_limit = "1MiB"          // 413 past it (default PATRON_HTTP_BODY_LIMIT)
/// ```
///
/// The handler must be a non-generic `async fn` whose arguments are axum
/// extractors or [`Dep<T>`], and whose future is `Send`. Mistakes are
/// compile errors on the offending token.
///
/// ```
/// use patron::prelude::*;
///
/// async fn audit(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
///     next.run(req).await
/// }
///
/// #[patron::route(GET "/users/{id}", middleware = [audit], timeout = "2s")]
/// async fn user(Path(id): Path<u32>) -> Result<String, patron::Error> {
///     if id == 0 {
///         return Err(patron::Error::not_found("no user 0"));
///     }
///     Ok(format!("user {id}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Still an ordinary function:
/// assert_eq!(user(Path(7)).await.unwrap(), "user 7");
/// # }
/// ```
pub use patron_macros::route;

/// Registers an `async fn` as a message consumer: a component of the
/// service, started with it and stopped gracefully with it.
///
/// # Grammar
///
/// ```text
/// #[patron::consumer(amqp = "queue" (, key = value)*)]
/// exchange      = "name"     // bind the queue to this exchange (which must exist)
/// routing_key   = "key"      // the binding's routing key ("" by default; needs `exchange`)
/// declare       = true       // declare the queue (durable) and the DLQ at start
/// prefetch      = 20         // channel QoS (default 10 × concurrency, at least batch × concurrency)
/// concurrency   = 4          // handlers running at once (1)
/// retries       = 3          // in-process retries after a failure (3)
/// backoff       = "100ms"    // first retry delay, doubled each retry, with jitter (100ms)
/// on_failure    = dlq        // dlq | requeue | drop | exit (dlq when `dlq` is set, else requeue)
/// dlq           = "name"     // dead-letter queue (`<queue>.dlq` for `on_failure = dlq`)
/// batch         = 100        // the handler takes Batch<T> of up to 100 messages
/// batch_timeout = "1s"       // a batch waits at most this long after its first message (1s)
///
/// #[patron::consumer(sqs = "queue" (, key = value)*)]
/// wait          = "20s"      // long-poll wait, 0–20 s (20s)
/// max_messages  = 10         // messages per receive, 1–10 (10)
/// visibility    = "30s"      // visibility timeout, 0–12 h (30s)
/// concurrency, retries, backoff, on_failure (dlq | requeue | drop | exit), dlq
///
/// #[patron::consumer(kafka = "topic" | ["a", "b"], group = "g" (, key = value)*)]
/// concurrency, retries, backoff, dlq (a topic), batch, batch_timeout
/// on_failure    = skip       // dlq | skip | exit (dlq when `dlq` is set, else exit)
/// dedup_by_key  = true       // with `batch`: only the last record per key in a batch
/// ```
///
/// The handler is a non-generic `async fn` that takes one
/// [`Message<T>`](consumer::Message) (or, with `batch`, one
/// [`Batch<T>`](consumer::Batch)) and any number of [`Dep<T>`], and returns
/// `()` or `Result<(), E>`. `T` is `Json<U>`, `String`, `Bytes`, `Vec<u8>`
/// or any [`consumer::Decode`]. Broker addresses come from
/// `PATRON_AMQP_URL`, `PATRON_SQS_ENDPOINT` (or the AWS environment) and
/// `PATRON_KAFKA_BROKERS`; the broker's cargo feature (`amqp`, `sqs`,
/// `kafka`) must be on. See [`consumer`](mod@consumer) for the outcome model.
///
/// ```
/// use patron::prelude::*;
///
/// #[derive(Deserialize, schemars::JsonSchema)]
/// struct Payment { id: u64 }
///
/// struct Ledger;
///
/// # #[cfg(feature = "amqp")]
/// #[patron::consumer(amqp = "payments", declare = true, concurrency = 4, retries = 2, dlq = "payments.dlq")]
/// async fn record(msg: Message<Json<Payment>>, ledger: Dep<Ledger>) -> Result<(), patron::Error> {
///     let _ = (&*ledger, msg.id);
///     Ok(())
/// }
///
/// # #[cfg(feature = "amqp")]
/// #[patron::consumer(amqp = "audit", batch = 50, batch_timeout = "500ms", prefetch = 100)]
/// async fn audit(batch: Batch<String>) -> Result<(), patron::Error> {
///     for (i, line) in batch.iter().enumerate() {
///         if line.payload().is_empty() {
///             batch.nack(i, "empty audit line");
///         }
///     }
///     Ok(())
/// }
/// # fn main() {}
/// ```
pub use patron_macros::consumer;

/// Declares a destination the service publishes to and the payload it
/// sends there: `patron::producer!(kafka = "orders.placed", payload =
/// Json<Placed>)` (or `amqp = "queue"`, `sqs = "queue"`; payload
/// `Json<T>`, `String`, `Bytes`). With the `openapi` feature the AsyncAPI
/// document shows it as a `send` operation with the payload's schema, next
/// to the consumers' `receive` operations; `T` then derives
/// `schemars::JsonSchema`. It declares, it does not publish: sending still
/// goes through the clients (`AmqpPublisher`, `KafkaProducer`,
/// `SqsSender`), which take the destination per call.
///
/// ```
/// use patron::prelude::*;
///
/// #[derive(Serialize, schemars::JsonSchema)]
/// struct Placed { id: u64 }
///
/// patron::producer!(kafka = "orders.placed", payload = Json<Placed>);
/// patron::producer!(sqs = "audit-log", payload = String);
/// # fn main() {}
/// ```
///
/// A broker other than `amqp`, `kafka` or `sqs`, a destination name the
/// broker would refuse, or a missing `payload` is a compile error that says
/// so.
pub use patron_macros::producer;

/// Registers the `impl` of a tonic-generated service trait as a gRPC
/// service, served by the gRPC server component (feature `grpc`).
///
/// ```text
/// #[patron::grpc(key = value, …)]      // every key optional
/// auth       = ApiKey                   // an Authenticator the service provides
/// timeout    = "5s"                     // default call timeout (PATRON_GRPC_HANDLER_TIMEOUT)
/// descriptor = pb::FILE_DESCRIPTOR_SET  // encoded descriptors, for reflection
/// ```
///
/// Put it above `#[tonic::async_trait]`. The implementing type is taken
/// from the service's provided values (`service.provide(MyGreeter::new(…))`);
/// start-up fails, naming it, when it is missing. The trait must be named
/// through its `*_server` module (`greeter_server::Greeter`) or imported
/// with its server type (`GreeterServer`) in scope.
///
/// ```text
/// #[patron::grpc(auth = ApiKey)]
/// #[tonic::async_trait]
/// impl greeter_server::Greeter for MyGreeter { … }
/// ```
///
/// The `examples/greeter` service shows the whole of it; see the `grpc`
/// module.
pub use patron_macros::grpc;

/// Turns `async fn main` into a service entry point.
///
/// Two forms:
///
/// - `async fn main()` (or returning `patron::Result<()>`): a service named
///   after the binary, with every route in the registry and all defaults.
/// - `async fn main(service: Service) -> patron::Result<Service>`: configure
///   the service (dependencies, components, middleware, checks, hooks)
///   and return it.
///
/// A failure at any step prints the error and exits with code 1.
pub use patron_macros::main;

/// Passes a consumer registration through when the `kafka` feature is on.
#[cfg(feature = "kafka")]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_kafka {
    ($($item:tt)*) => { $($item)* };
}

/// Stops a consumer registration with an error naming the feature to enable.
#[cfg(not(feature = "kafka"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_kafka {
    ($($item:tt)*) => {
        ::core::compile_error!(
            "`#[patron::consumer(kafka = …)]` needs patron's `kafka` cargo feature: \
             in Cargo.toml, write `patron = { version = \"…\", features = [\"kafka\"] }`"
        );
    };
}

/// Passes a consumer registration through when the `sqs` feature is on.
#[cfg(feature = "sqs")]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_sqs {
    ($($item:tt)*) => { $($item)* };
}

/// Stops a consumer registration with an error naming the feature to enable.
#[cfg(not(feature = "sqs"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_sqs {
    ($($item:tt)*) => {
        ::core::compile_error!(
            "`#[patron::consumer(sqs = …)]` needs patron's `sqs` cargo feature: \
             in Cargo.toml, write `patron = { version = \"…\", features = [\"sqs\"] }`"
        );
    };
}

/// Passes a gRPC registration through when the `grpc` feature is on.
#[cfg(feature = "grpc")]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_grpc {
    ($($item:tt)*) => { $($item)* };
}

/// Stops a gRPC registration with an error naming the feature to enable.
#[cfg(not(feature = "grpc"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_grpc {
    ($($item:tt)*) => {
        ::core::compile_error!(
            "`#[patron::grpc]` needs patron's `grpc` cargo feature: \
             in Cargo.toml, write `patron = { version = \"…\", features = [\"grpc\"] }`"
        );
    };
}

/// Passes a consumer registration through when the `amqp` feature is on.
#[cfg(feature = "amqp")]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_amqp {
    ($($item:tt)*) => { $($item)* };
}

/// Stops a consumer registration with an error naming the feature to enable.
#[cfg(not(feature = "amqp"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __patron_require_amqp {
    ($($item:tt)*) => {
        ::core::compile_error!(
            "`#[patron::consumer(amqp = …)]` needs patron's `amqp` cargo feature: \
             in Cargo.toml, write `patron = { version = \"…\", features = [\"amqp\"] }`"
        );
    };
}

/// The names most services need.
pub mod prelude {
    pub use crate::component::{Component, ComponentContext, ComponentInfo};
    pub use crate::consumer::{Batch, Message};
    pub use crate::http::{ApiKey, Authenticator, CorrelationId};
    pub use crate::observe::metrics::Metrics;
    pub use crate::{Dep, Error, Service};
    pub use axum::Json;
    pub use axum::extract::{Path, Query};
    pub use http::{HeaderMap, Method, StatusCode};
    pub use serde::{Deserialize, Serialize};
}

#[doc(hidden)]
pub use http as __http;

/// The `tracing` crate patron logs through: `patron::tracing::info!(…)`
/// works without a dependency of your own, and its lines carry the
/// request's or message's correlation id like any other.
#[doc(no_inline)]
pub use tracing;

/// The README's and the guides' snippets, tested. They include consumers,
/// clients and gRPC, so they need the `amqp`, `sqs`, `kafka`,
/// `http-client`, `sql`, `grpc` and `redis` features (on in workspace test
/// runs).
#[cfg(all(
    doctest,
    feature = "amqp",
    feature = "sqs",
    feature = "kafka",
    feature = "http-client",
    feature = "sql",
    feature = "grpc",
    feature = "redis",
    feature = "discovery"
))]
mod doc_snippets {
    #[doc = include_str!("../../README.md")]
    pub struct Readme;

    #[doc = include_str!("../../docs/consumers.md")]
    pub struct ConsumersGuide;

    #[doc = include_str!("../../docs/clients.md")]
    pub struct ClientsGuide;

    #[doc = include_str!("../../docs/reliability.md")]
    pub struct ReliabilityGuide;

    #[doc = include_str!("../../docs/testing.md")]
    pub struct TestingGuide;

    #[doc = include_str!("../../docs/grpc.md")]
    pub struct GrpcGuide;

    #[doc = include_str!("../../docs/http.md")]
    pub struct HttpGuide;

    #[doc = include_str!("../../docs/discovery.md")]
    pub struct DiscoveryGuide;
}
