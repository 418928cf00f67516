//! {{name}}: a patron service. `cargo run` serves it on port {{port}} with
//! health ({{alive}}, {{ready}}), Prometheus metrics ({{metrics}}), JSON logs
//! with correlation ids, and traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use patron::prelude::*;

// `cargo run --features dynamic-linking` links patron from a shared library:
// the rebuild after an edit links in a fraction of the time. A crate is
// linked only when the code names it, hence this line.
#[cfg(feature = "dynamic-linking")]
use patron_dylib as _;

/// Greets by name: `GET /hello/ada` answers `hello, ada`.
#[patron::route(GET "/hello/{name}")]
async fn hello(Path(name): Path<String>) -> String {
    tracing::info!(%name, "greeted"); // the log line carries the correlation id
    format!("hello, {name}")
}
