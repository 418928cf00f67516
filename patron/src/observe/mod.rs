//! Observability: structured logs, Prometheus metrics and OpenTelemetry traces.

pub mod log;
pub mod metrics;
pub(crate) mod otlp;
pub(crate) mod profile;
pub(crate) mod protobuf;
#[cfg(feature = "grpc")]
pub(crate) mod rpc;
pub mod trace;
