//! The runtime defaults that files outside a service must agree with:
//! `patron new` writes them into the Dockerfile and the Kubernetes
//! manifests (ports, probe paths, the shutdown timeout a grace period must
//! exceed), and patron's runtime uses these same constants.

/// The HTTP port when `PATRON_HTTP_DEFAULT_PORT` is unset.
pub const HTTP_PORT: u16 = 50000;

/// The gRPC port when `PATRON_GRPC_PORT` is unset (feature `grpc`).
pub const GRPC_PORT: u16 = 50001;

/// The liveness endpoint: 200 while the process runs.
pub const ALIVE_PATH: &str = "/alive";

/// The readiness endpoint: 503 until every component is ready and from the
/// moment shutdown begins.
pub const READY_PATH: &str = "/ready";

/// The Prometheus metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// The service information endpoint (name, version, components).
pub const INFO_PATH: &str = "/info";

/// How long in-flight work may take to finish on shutdown when
/// `PATRON_SHUTDOWN_TIMEOUT` is unset, in seconds.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// The environment variable whose value at build time `#[patron::main]`
/// compiles in as the service's version (as Go's `-ldflags -X
/// main.version=…`); unset or empty, the crate's version.
pub const BUILD_VERSION_VAR: &str = "PATRON_SERVICE_VERSION";
