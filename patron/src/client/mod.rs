//! Instrumented clients: plain values to `provide` to the service and take
//! as `Dep<T>`, each propagating trace context and correlation id and
//! recording a span and a duration metric per call.
//!
//! - [`http`] (feature `http-client`): reqwest with optional retry,
//!   circuit breaker and rate limit.

#[cfg(feature = "http-client")]
pub mod http;
