//! Observability: structured logs and Prometheus metrics; traces plug in here.

pub mod log;
pub mod metrics;
