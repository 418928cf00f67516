//! {{name}}: a patron service. `cargo run` serves it on port {{port}} with
//! health ({{alive}}, {{ready}}), Prometheus metrics ({{metrics}}), JSON logs
//! with correlation ids, and traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use patron::prelude::*;

/// Greets by name: `GET /hello/ada` answers `hello, ada`.
#[patron::route(GET "/hello/{name}")]
async fn hello(Path(name): Path<String>) -> String {
    tracing::info!(%name, "greeted"); // the log line carries the correlation id
    format!("hello, {name}")
}
