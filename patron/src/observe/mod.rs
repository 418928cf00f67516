//! Observability: structured logs, Prometheus metrics and OpenTelemetry traces.

pub mod log;
pub mod metrics;
pub mod trace;
