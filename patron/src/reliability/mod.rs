//! Reliability patterns, one line each: a [`CircuitBreaker`], [`Retry`]
//! with exponential backoff and full jitter, a [`RateLimit`] (token
//! bucket) and a [`Bulkhead`] (concurrency limit).
//!
//! Each works on its own around any future, and each is also a tower
//! [`Layer`](tower::Layer) (see [`layer`]), so they compose with any tower
//! service and with each other:
//!
//! ```
//! use std::time::Duration;
//! use patron::reliability::{Bulkhead, CircuitBreaker, RateLimit, Retry};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(Retry::new(3).backoff(Duration::from_millis(1), Duration::from_millis(5)))
//!     .layer(CircuitBreaker::new("pricing"))
//!     .layer(RateLimit::per_second("pricing", 50))
//!     .layer(Bulkhead::new("pricing", 8))
//!     .service(service_fn(|sku: u32| async move { Ok::<_, std::io::Error>(sku * 2) }));
//! assert_eq!(svc.oneshot(21).await.unwrap(), 42);
//! # }
//! ```
//!
//! Circuit breaker metrics (`circuit_breaker_state`,
//! `circuit_breaker_transitions_total`) live in the process-wide registry
//! every service's `/metrics` also serves, since a breaker is a plain value
//! made before (or without) a service.

mod circuit;
pub mod layer;
mod limit;
pub(crate) mod retry;

pub use circuit::{CircuitBreaker, CircuitError, CircuitOpen, CircuitPermit, CircuitState};
pub use limit::{Bulkhead, BulkheadFull, RateLimit, RateLimited};
pub use retry::Retry;

#[cfg(test)]
mod tests;
