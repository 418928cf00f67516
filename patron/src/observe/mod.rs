//! Observability: structured logs now; metrics and traces plug in here.

pub mod log;
