//! Observability: structured logs, Prometheus metrics and OpenTelemetry traces.

pub mod log;
pub mod metrics;
#[cfg(feature = "grpc")]
pub(crate) mod rpc;
pub mod trace;
